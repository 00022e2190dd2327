"""Training clips for the generic expression model: which clips, whose voice, and what each one teaches.

A clip gives two aligned per-frame sequences at the model's frame rate: the audio features the model
reads (engine.expression.predict.frame_inputs: encoder features + voice activity) and the 52
blendshapes MediaPipe's FaceLandmarker captures from the video (Savitzky-Golay 5/3 smoothed, as
preprocessing does). Capturing costs about as long as the clip plays, so each clip's capture is cached
once in a cache folder (keyed by the file's content and the frame rate), and its features per encoder.

Speakers: a folder's MANIFEST.tsv (columns `file` and `speaker`, as ../shared/data/corpus has) says who
speaks in each file; without one, every file is its own speaker. Cross-validation folds keep a
speaker's clips together.

Each clip also teaches at other speeds (`SPEEDS`): its sound played 10 % slower and faster (pitch, formants
and tempo move together, as between one voice and another), its face's curves stretched to match. Trained
on a few dozen voices, the network should hear speech rather than the voices (speed perturbation, as
speaker-independent speech recognisers train); on scripts/bench_generic.py's folds it raised the raw
jawOpen r on unseen speakers a little (0.476 -> 0.484, mean of three seeds; mouth r 0.352 -> 0.355).
"""
from __future__ import annotations

import csv
import hashlib
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import EngineError
from ..files import atomic_output, sha256_of

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".mpg", ".avi")
SPEEDS = (0.9, 1.1)  # the speeds each clip is also played at for training (1 is the clip as it is)
_CACHE_VERSION = 3   # the face captures': 3 since HDR clips are read tone-mapped (engine.media.video)
# The per-frame inputs' own version (the face captures, slow to make again, keep theirs): 2 since voice
# activity's floor follows a quiet recording's level (engine.audio.vad), 3 since a clip's sound starts at
# its first frame (engine.media.audio), 4 with that floor 30 dB under the loudest part, not 36, 5 since a
# surround mix is read from its centre channel.
_INPUTS_VERSION = 5


@dataclass
class ClipSource:
    path: Path
    speaker: str


@dataclass
class TrainingClip:
    name: str
    speaker: str
    inputs: np.ndarray       # (N, dim + 1) per-frame audio features, the last column voice activity
    blendshapes: np.ndarray  # (N, 52) captured, smoothed, ARKit order
    valid: np.ndarray        # (N,) bool: exactly one face seen
    fps: float
    speed: float = 1.0       # how fast its sound plays against the original's (SPEEDS)
    variants: tuple["TrainingClip", ...] = ()  # the same clip at the other SPEEDS (training only)

    @property
    def activity(self) -> np.ndarray:
        return self.inputs[:, -1]


def find_clips(paths) -> list[ClipSource]:
    """Clip files from files and folders (a folder's video files, sorted), with their speakers."""
    sources = []
    for path in map(Path, paths):
        if path.is_dir():
            speakers = _manifest_speakers(path)
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
            sources += [ClipSource(p, speakers.get(p.name, p.stem)) for p in files]
        elif path.is_file():
            sources.append(ClipSource(path, _manifest_speakers(path.parent).get(path.name, path.stem)))
        else:
            raise EngineError(f"{path}: no such clip or folder", "pass video clips or folders of them", path=str(path))
    if not sources:
        raise EngineError(f"no video clips in {', '.join(map(str, paths))}",
                          f"pass clips ({', '.join(VIDEO_SUFFIXES)}) of people speaking to camera")
    return sources


def _manifest_speakers(folder: Path) -> dict[str, str]:
    manifest = folder / "MANIFEST.tsv"
    if not manifest.is_file():
        return {}
    try:   # utf-8-sig: a spreadsheet program's UTF-8 starts with a byte-order mark
        with manifest.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except UnicodeDecodeError as exc:
        raise EngineError(f"{manifest}: is not UTF-8 text ({exc.reason} at byte {exc.start})",
                          "save it again as UTF-8 (a spreadsheet's \"UTF-8 tab-separated\" export)",
                          path=str(manifest)) from None
    if rows and not {"file", "speaker"} <= set(rows[0]):
        raise EngineError(f"{manifest}: needs the columns 'file' and 'speaker'", "fix the header, or remove the file",
                          path=str(manifest))
    return {row["file"]: row["speaker"] for row in rows}


def load_clip(source: ClipSource, encoder, fps: float = 25.0, cache_dir: Path | None = None,
              speeds: tuple[float, ...] = ()) -> TrainingClip:
    """The clip's features and captured blendshapes, from the cache where it holds them (none: captured now),
    with its variants at `speeds` (`played_at`).

    The capture (slow: about as long as the clip plays) and the audio features (seconds) are cached apart,
    both keyed by the file's content, so that trying another encoder, or the same files at another path or
    after a copy, does not capture the faces again."""
    key = _content_key(source.path, fps) if cache_dir else None
    face = _cached(cache_dir, f"{source.path.stem}-face-{key}", lambda: capture_face(source.path, fps))
    n_frames = len(face["blendshapes"])
    features = _cached(cache_dir, f"{source.path.stem}-{encoder.key}-in{_INPUTS_VERSION}-{key}",
                       lambda: {"inputs": clip_inputs(source.path, encoder, fps, n_frames)})
    clip = TrainingClip(source.path.stem, source.speaker, features["inputs"], face["blendshapes"], face["valid"], fps)
    variants = tuple(played_at(clip, source.path, encoder, speed, cache_dir, key) for speed in speeds if speed != 1)
    return replace(clip, variants=variants)


def played_at(clip: TrainingClip, path: Path, encoder, speed: float, cache_dir: Path | None,
              key: str) -> TrainingClip:
    """`clip` (from `path`) with its sound played `speed` times as fast (resampled: pitch and tempo together)
    and its face's curves resampled to the new timeline; its features cached like load_clip's (`key`: the
    file's content key)."""
    import soxr
    from ..audio.features import resample
    from ..media.audio import SAMPLE_RATE, load_audio
    from .predict import ModelInputs, frame_inputs
    n_frames = int(round(len(clip.blendshapes) / speed))

    def features():
        samples = soxr.resample(load_audio(path), SAMPLE_RATE * speed, SAMPLE_RATE)
        return {"inputs": frame_inputs(samples, ModelInputs(encoder), clip.fps, n_frames)[0]}
    inputs = _cached(cache_dir, f"{path.stem}-{encoder.key}-in{_INPUTS_VERSION}-x{speed:g}-{key}", features)["inputs"]
    # the original frames pass at fps * speed: each new frame takes the curves at its centre
    blendshapes = resample(clip.blendshapes, clip.fps * speed, clip.fps, 0, n_frames)
    valid = resample(clip.valid.astype(np.float32), clip.fps * speed, clip.fps, 0, n_frames) > 0.999
    return replace(clip, name=f"{clip.name}@{speed:g}x", inputs=inputs, blendshapes=blendshapes, valid=valid,
                   speed=speed)


def capture_face(path: Path, fps: float) -> dict[str, np.ndarray]:
    """{"blendshapes": (N, 52) smoothed as preprocessing smooths them, "valid": (N,) exactly one face seen}."""
    from scipy.signal import savgol_filter
    from ..face.landmarker import FaceLandmarker
    from ..media.audio import open_audio
    from ..media.video import read_frames
    open_audio(path)   # its sound checked first: a clip without usable sound is refused before the capture
    weights, valid = [], []
    with FaceLandmarker() as landmarker:
        for k, rgb in enumerate(read_frames(path, fps)):
            seen = landmarker.analyse(rgb, int(round(k * 1000 / fps)))
            weights.append(seen.blendshapes)
            valid.append(seen.faces == 1)
    weights = np.array(weights, np.float32)
    if len(weights) >= 5:
        weights = np.clip(savgol_filter(weights, 5, 3, axis=0), 0, 1).astype(np.float32)
    return {"blendshapes": weights, "valid": np.array(valid, bool)}


def clip_inputs(path: Path, encoder, fps: float, n_frames: int) -> np.ndarray:
    """(n_frames, dim + 1) the model's per-frame inputs from the clip's sound."""
    from ..media.audio import load_audio
    from .predict import ModelInputs, frame_inputs
    return frame_inputs(load_audio(path), ModelInputs(encoder), fps, n_frames)[0]


def _cached(cache_dir: Path | None, name: str, compute) -> dict[str, np.ndarray]:
    """The arrays saved under cache_dir/name.npz, else computed (and saved whole, never half-written)."""
    if cache_dir is None:
        return compute()
    path = Path(cache_dir) / f"{name}.npz"
    if path.is_file():
        try:
            with np.load(path) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # a damaged cache file is computed again
            pass
    arrays = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        np.savez(tmp, **arrays)
    return arrays


def _content_key(path: Path, fps: float) -> str:
    return hashlib.sha1(f"{_CACHE_VERSION}|{sha256_of(path)}|{fps}".encode()).hexdigest()[:12]
