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


def train_generic(clips: list[CapturedClip], encoder_name: str, progress):
    """Train on the first 10/11 of every clip; returns the model and held-out metrics (pooled and per clip)."""
    from ..audio.features import get_encoder
    from .predict import frame_inputs, model_windows, predict_weights
    from .training import compare, fit
    encoder = get_encoder(encoder_name)
    config = ExpressionConfig(encoder=encoder_name, dim=encoder.dim, fps=clips[0].fps)
    inputs, per_frames, activities, targets, train, test = [], [], [], [], [], []
    offset = 0
    for clip in clips:
        per_frame, activity = frame_inputs(clip.samples, encoder, clip.fps, len(clip.blendshapes))
        n = len(per_frame)
        split = n * 10 // 11
        frames = np.arange(n)
        train.append(offset + frames[:split][clip.valid[:split]])
        test.append(frames[split:][clip.valid[split:]])
        inputs.append(model_windows(per_frame, config.window, config.lead))
        per_frames.append(per_frame)
        activities.append(activity)
        targets.append(clip.blendshapes)
        offset += n
    model = fit(np.concatenate(inputs), np.concatenate(targets), np.concatenate(train), config, progress)
    metrics, predicted_all, captured_all = {}, [], []
    for clip, per_frame, activity, target, frames in zip(clips, per_frames, activities, targets, test):
        predicted = predict_weights(model, per_frame, activity)[frames]
        metrics[clip.name] = compare(predicted, target[frames])
        predicted_all.append(predicted)
        captured_all.append(target[frames])
    metrics["all"] = compare(np.concatenate(predicted_all), np.concatenate(captured_all))
    return model, metrics
