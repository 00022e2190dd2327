"""From speech to per-frame ARKit weights with a trained expression model.

The model sees, per video frame, a window of audio features plus voice activity. Its output is
then gated by that voice activity: in pauses the mouth and jaw go to the subject's rest pose
(measured on its own silent frames), so a closed mouth in silence does not depend on the model
having learnt it.
"""
from __future__ import annotations

import numpy as np

from ..arkit import ARKIT_NAMES, MOUTH_AND_JAW
from ..audio.features import frame_features, windows
from ..audio.vad import voice_activity

MOUTH_INDEX = np.array([ARKIT_NAMES.index(n) for n in MOUTH_AND_JAW])


def frame_inputs(samples: np.ndarray, encoder, fps: float, n_frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame features (n_frames, dim + 1) (the last column is voice activity), and that activity (n_frames,)."""
    per_frame = frame_features(encoder.encode(samples), encoder.rate, fps, n_frames)
    activity = voice_activity(samples, fps, len(per_frame))
    return np.concatenate([per_frame, activity[:, None]], axis=1), activity


def model_windows(per_frame: np.ndarray, window: int, lead: int) -> np.ndarray:
    """(n_frames, window, dim + 1) float32, the model's input: `window` frames centred `lead` frames ahead."""
    ahead = per_frame[np.minimum(np.arange(len(per_frame)) + lead, len(per_frame) - 1)]
    return np.ascontiguousarray(windows(ahead, window), dtype=np.float32)


def gate_silence(weights: np.ndarray, activity: np.ndarray, rest_pose: np.ndarray) -> np.ndarray:
    """Mouth and jaw blended towards the rest pose where there is no voice."""
    out = weights.copy()
    a = activity[:, None]
    out[:, MOUTH_INDEX] = a * weights[:, MOUTH_INDEX] + (1 - a) * rest_pose[MOUTH_INDEX]
    return out


def predict_weights(model, per_frame: np.ndarray, activity: np.ndarray) -> np.ndarray:
    """(n_frames, 52) gated weights from `frame_inputs`' output."""
    return gate_silence(model.frame_weights(per_frame), activity, model.rest_pose.numpy())
