"""Training the `ave` encoder SyncNet-style on subject clips, and scoring audio-video sync with it.

A sample is 0.2 s of mouth (5 grey lower-face crops) and a 0.2 s mel window. A batch holds windows
from one clip at random times: each mouth's own audio is its positive, and the batch's other audio
windows plus its own audio shifted 3 to 15 frames are its negatives. The two branches' cosine
similarity, scaled to logits, is trained contrastively (cross-entropy over the candidates, both ways
for the in-batch pairs), which gets off chance far sooner on a CPU budget than SyncNet's pairwise
binary cross-entropy. The held-out frames of each subject (its split('test')) measure sync accuracy:
how often a mouth scores higher with its own audio than with shifted audio. `sync_offsets` scores a clip's audio against its
mouth at shifted offsets: the best offset should be 0; another best offset means the sound is early or late.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import EngineError
from ..media.audio import load_audio
from ..progress import Progress
from .ave import CROP_H, CROP_W, FACE_FRAMES, SyncModel, mel_windows
from .features import MelEncoder

_MIN_SHIFT, _MAX_SHIFT = 3, 15  # frames: a shifted negative is clearly out of sync, yet the same speech


@dataclass
class SyncClip:
    """What training and scoring need from one clip: mouth crops, mel, frame rate, usable frames."""
    name: str
    crops: np.ndarray   # (N, 48, 96) uint8
    mel: np.ndarray     # (T, 80) float32 at 80 per second
    fps: float
    valid: np.ndarray   # (N,) bool
    train: np.ndarray   # frame indices where a 5-frame window may start (training)
    test: np.ndarray    # ... (held out)


def mouth_crop(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(48, 96) grey lower face: centred on the mouth, as wide as the face at the cheeks."""
    import cv2
    mouth = landmarks[[13, 14, 61, 291], :2].mean(0)
    width = max(8.0, float(np.linalg.norm(landmarks[454, :2] - landmarks[234, :2])))
    scale = CROP_W / width
    # Affine map: mouth centre -> crop centre, face width -> crop width.
    matrix = np.array([[scale, 0, CROP_W / 2 - scale * mouth[0]], [0, scale, CROP_H / 2 - scale * mouth[1]]])
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.warpAffine(grey, matrix, (CROP_W, CROP_H), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def subject_clip(subject) -> SyncClip:
    landmarks = subject.tracks["landmarks"]
    valid = subject.tracks.get("valid", np.ones(subject.n_frames, np.uint8)) == 1
    crops = np.stack([mouth_crop(subject.frame(i), landmarks[i]) for i in range(subject.n_frames)])
    mel = MelEncoder().encode(load_audio(subject.audio_path))
    return _clip(str(subject.root.name), crops, mel, subject.fps, valid, subject.split("train"), subject.split("test"))


def video_clip(path, fps: float = 25.0) -> SyncClip:
    """A clip straight from a video file (FaceLandmarker on every frame): for the offset check."""
    from ..face.landmarker import FaceLandmarker
    from ..media.video import read_frames
    crops, valid = [], []
    with FaceLandmarker() as landmarker:
        for rgb in read_frames(path, fps):
            seen = landmarker.analyse(rgb)
            crops.append(mouth_crop(rgb, seen.landmarks) if seen.faces else np.zeros((CROP_H, CROP_W), np.uint8))
            valid.append(seen.faces == 1)
    n = len(crops)
    mel = MelEncoder().encode(load_audio(path))
    return _clip(str(path), np.stack(crops), mel, fps, np.array(valid), np.arange(n), np.arange(n))


def _clip(name, crops, mel, fps, valid, train, test) -> SyncClip:
    n = len(crops)
    whole = np.array([k for k in range(n - FACE_FRAMES + 1) if valid[k:k + FACE_FRAMES].all()], np.int64)
    in_split = lambda frames: np.intersect1d(whole, np.asarray(frames)[np.asarray(frames) <= n - FACE_FRAMES])
    return SyncClip(name, crops, mel, fps, valid, in_split(train), in_split(test))


def mouth_windows(clip: SyncClip, starts: np.ndarray) -> torch.Tensor:
    """(N, 5, 48, 96) mouth crops of the 5 frames from each start, in [-1, 1]."""
    index = starts[:, None] + np.arange(FACE_FRAMES)[None, :]
    return torch.from_numpy(clip.crops[index].astype(np.float32) / 127.5 - 1.0)


def audio_windows(clip: SyncClip, starts: np.ndarray) -> torch.Tensor:
    """(N, 1, 80, 16) mel windows covering the same 0.2 s as mouth_windows(starts)."""
    return torch.from_numpy(mel_windows(clip.mel, (starts + FACE_FRAMES / 2) / clip.fps))


def batch(clip: SyncClip, starts: np.ndarray, shifts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Mel windows `shifts` frames away from the mouth windows starting at `starts`, and those mouth windows."""
    return audio_windows(clip, starts + shifts), mouth_windows(clip, starts)


def train_ave(clips: list[SyncClip], progress: Progress, steps: int = 300, batch_size: int = 32,
              seed: int = 0) -> tuple[SyncModel, dict]:
    """Contrastive sync training; returns the model and its held-out accuracy."""
    usable = [c for c in clips if len(c.train) > 0]
    if not usable:
        raise EngineError("no clip has 5 consecutive frames with one face to train on",
                          "give subjects preprocessed from clips with a visible face")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = SyncModel()
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-4)
    weights = np.array([len(c.train) for c in usable], np.float64)
    model.train()
    with progress.stage("train-ave", total=steps) as stage:
        for step in range(steps):
            clip = usable[rng.choice(len(usable), p=weights / weights.sum())]
            starts = rng.choice(clip.train, batch_size, replace=len(clip.train) < batch_size)
            loss = contrastive_loss(model, clip, starts, _random_shifts(rng, batch_size))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            stage.advance(1, loss=float(loss.detach()))
    model.eval()
    return model, held_out_accuracy(model, clips, seed)


def contrastive_loss(model: SyncModel, clip: SyncClip, starts: np.ndarray, shifts: np.ndarray) -> torch.Tensor:
    """Cross-entropy of each mouth over [its audio, the batch's other audio, its own audio shifted]."""
    mel, crops = batch(clip, starts, np.zeros(len(starts), np.int64))
    shifted_mel, _ = batch(clip, starts, shifts)
    a = torch.nn.functional.normalize(model.audio(torch.cat([mel, shifted_mel])), dim=1)
    v = torch.nn.functional.normalize(model.face(crops), dim=1)
    n = len(starts)
    in_batch = v @ a[:n].T                                    # (n, n): diagonal in sync
    own_shifted = (v * a[n:]).sum(1, keepdim=True)            # (n, 1): same mouth, audio moved away
    logits = torch.cat([in_batch, own_shifted], 1) * model.logit_scale.exp()
    target = torch.arange(n)
    return (torch.nn.functional.cross_entropy(logits, target)
            + torch.nn.functional.cross_entropy(in_batch.T * model.logit_scale.exp(), target)) / 2


def _random_shifts(rng, n: int) -> np.ndarray:
    return rng.integers(_MIN_SHIFT, _MAX_SHIFT + 1, n) * rng.choice([-1, 1], n)


def held_out_accuracy(model: SyncModel, clips: list[SyncClip], seed: int = 0) -> dict:
    """On held-out windows: how often in-sync scores above a shifted one (same mouth), and the mean similarities."""
    rng = np.random.default_rng(seed + 1)
    wins, synced, shifted = [], [], []
    for clip in clips:
        if len(clip.test) == 0:
            continue
        starts = clip.test
        with torch.inference_mode():
            s_sync = model.similarity(*batch(clip, starts, np.zeros(len(starts), np.int64))).numpy()
            s_shift = model.similarity(*batch(clip, starts, _random_shifts(rng, len(starts)))).numpy()
        wins.append(s_sync > s_shift)
        synced.append(s_sync)
        shifted.append(s_shift)
    if not wins:
        return {}
    return {"sync_pair_accuracy": round(float(np.concatenate(wins).mean()), 3),
            "similarity_in_sync": round(float(np.concatenate(synced).mean()), 3),
            "similarity_shifted": round(float(np.concatenate(shifted).mean()), 3)}


def sync_offsets(model: SyncModel, clip: SyncClip, offsets=range(-10, 11)) -> dict[int, float]:
    """Mean sync similarity of the clip's audio shifted by each offset (frames; + = audio taken later).

    Each mouth window and each audio position is embedded once; shifting is then a change of pairing.
    """
    starts = clip.test if len(clip.test) else clip.train
    offsets = np.asarray(list(offsets), np.int64)
    positions = np.arange(starts.min() + offsets.min(), starts.max() + offsets.max() + 1)
    with torch.inference_mode():
        faces = torch.cat([model.face(mouth_windows(clip, starts[i:i + 128])) for i in range(0, len(starts), 128)])
        audio = torch.cat([model.audio(audio_windows(clip, positions[i:i + 128]))
                           for i in range(0, len(positions), 128)])
    faces = torch.nn.functional.normalize(faces, dim=1).numpy()
    audio = torch.nn.functional.normalize(audio, dim=1).numpy()
    scores = {}
    for offset in offsets:
        paired = audio[starts + offset - positions[0]]
        scores[int(offset)] = round(float((faces * paired).sum(1).mean()), 4)
    return scores


def save_sync_model(model: SyncModel, path, metadata: dict) -> None:
    from ..subject.format import atomic_write_tensors
    from .ave import FORMAT
    tensors = {}
    for prefix, module in (("audio.", model.audio), ("face.", model.face)):
        tensors.update({prefix + k: v.detach().contiguous().numpy() for k, v in module.state_dict().items()})
    tensors["logit_scale"] = model.logit_scale.detach().reshape(1).numpy()
    atomic_write_tensors(path, tensors, {"format": FORMAT, "trained": time.strftime("%Y-%m-%d"), **metadata})


def load_sync_model(path) -> SyncModel:
    """Both branches from a train-ave file (the original's .pth has no face branch: it cannot score sync)."""
    from safetensors.torch import load_file
    tensors = load_file(str(path))
    model = SyncModel()
    model.audio.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("audio.")})
    model.face.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("face.")})
    with torch.no_grad():
        model.logit_scale.copy_(tensors["logit_scale"][0])
    return model.eval()
