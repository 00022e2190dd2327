"""The generic expression model: any voice -> ARKit weights, without a subject.

Same network as the per-subject model, trained by scripts/train_generic.py on several real clips
(their captured blendshapes from FaceLandmarker, smoothed as preprocessing does), and shipped with
the engine as generic.safetensors (tens of KB). Each clip's last 1/11 is held out for scoring.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import EngineError
from .model import ExpressionConfig, ExpressionNet

GENERIC_MODEL = Path(__file__).with_name("generic.safetensors")


def load_generic_model() -> ExpressionNet:
    if not GENERIC_MODEL.is_file():
        raise EngineError(f"{GENERIC_MODEL}: the generic expression model is missing from this install",
                          "reinstall the extension, or run scripts/train_generic.py", path=str(GENERIC_MODEL))
    return ExpressionNet.load(GENERIC_MODEL)


@dataclass
class CapturedClip:
    name: str
    samples: np.ndarray      # 16 kHz mono speech
    blendshapes: np.ndarray  # (N, 52) smoothed, ARKit order
    valid: np.ndarray        # (N,) bool: one face seen
    fps: float


def capture_clip(path, fps: float = 25.0) -> CapturedClip:
    """Blendshape targets for a clip, straight from FaceLandmarker (Savitzky-Golay 5/3 as SyncTalk)."""
    from scipy.signal import savgol_filter
    from ..face.landmarker import FaceLandmarker
    from ..media.audio import load_audio
    from ..media.video import read_frames
    weights, valid = [], []
    with FaceLandmarker() as landmarker:
        for rgb in read_frames(path, fps):
            seen = landmarker.analyse(rgb)
            weights.append(seen.blendshapes)
            valid.append(seen.faces == 1)
    weights = np.array(weights, np.float32)
    if len(weights) >= 5:
        weights = np.clip(savgol_filter(weights, 5, 3, axis=0), 0, 1).astype(np.float32)
    return CapturedClip(Path(path).stem, load_audio(path), weights, np.array(valid), fps)


def train_generic(clips: list[CapturedClip], encoder_name: str, progress, unseen_speakers: bool = False):
    """Fit on the first 10/11 of every clip; returns the model and held-out metrics (per clip and pooled).

    With unseen_speakers, also fits once per clip without that clip at all and scores on all of it:
    how the model does on a voice it has never heard ("unseen_speaker" per clip).
    """
    from ..audio.features import get_encoder
    from .predict import frame_inputs, model_windows
    encoder = get_encoder(encoder_name)
    config = ExpressionConfig(encoder=encoder_name, dim=encoder.dim, fps=clips[0].fps)
    data = []
    for clip in clips:
        per_frame, activity = frame_inputs(clip.samples, encoder, clip.fps, len(clip.blendshapes))
        data.append((model_windows(per_frame, config.window, config.lead), per_frame, activity))
    tails = [np.arange(len(c.blendshapes)) >= len(c.blendshapes) * 10 // 11 for c in clips]
    model, metrics = _fit_and_score(clips, data, config, progress, [~t for t in tails], tails)
    if unseen_speakers:
        for k, clip in enumerate(clips):
            train = [np.full(len(c.blendshapes), j != k) for j, c in enumerate(clips)]
            test = [np.full(len(c.blendshapes), j == k) for j, c in enumerate(clips)]
            metrics[clip.name]["unseen_speaker"] = _fit_and_score(clips, data, config, progress, train, test)[1]["all"]
    return model, metrics


def _fit_and_score(clips, data, config, progress, train_masks, test_masks):
    """Fit on the frames train_masks select (valid ones), score on those test_masks select, per clip and pooled."""
    from .predict import predict_weights
    from .training import compare, fit
    offsets = np.cumsum([0] + [len(c.blendshapes) for c in clips])
    train = np.concatenate([o + np.flatnonzero(m & c.valid) for o, m, c in zip(offsets, train_masks, clips)])
    model = fit(np.concatenate([d[0] for d in data]), np.concatenate([c.blendshapes for c in clips]), train,
                config, progress)
    metrics, predicted_all, captured_all = {}, [], []
    for clip, (_, per_frame, activity), mask in zip(clips, data, test_masks):
        frames = np.flatnonzero(mask & clip.valid)
        if len(frames) == 0:
            continue
        predicted = predict_weights(model, per_frame, activity)[frames]
        metrics[clip.name] = compare(predicted, clip.blendshapes[frames])
        predicted_all.append(predicted)
        captured_all.append(clip.blendshapes[frames])
    metrics["all"] = compare(np.concatenate(predicted_all), np.concatenate(captured_all))
    return model, metrics
