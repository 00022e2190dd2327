"""From speech to per-frame ARKit weights with a trained expression model.

The model sees, per video frame, a window of audio features plus voice activity. Its output is
then gated by that voice activity: in pauses the mouth and jaw go to the subject's rest pose
(measured on its own silent frames), so a closed mouth in silence does not depend on the model
having learnt it.
"""
from __future__ import annotations

import numpy as np

from ..arkit import ARKIT_NAMES, MOUTH_AND_JAW
from ..audio.features import as_speech, window_index, windows
from ..audio.vad import voice_activity

MOUTH_INDEX = np.array([ARKIT_NAMES.index(n) for n in MOUTH_AND_JAW])
FRAMES_AT_ONCE = 1500  # frames predicted per step: their windows are about 25 MB with 512-d features


def frame_inputs(speech, encoder, fps: float, n_frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame features (n_frames, dim + 1) (the last column is voice activity), and that activity (n_frames,).

    speech: a SpeechFeatures, or 16 kHz samples."""
    speech = as_speech(speech)
    n_frames = speech.n_frames(fps) if n_frames is None else n_frames
    per_frame = speech.per_frame(encoder, fps, 0, n_frames)
    activity = voice_activity(speech, fps, n_frames)
    return np.concatenate([per_frame, activity[:, None]], axis=1), activity


def model_windows(per_frame: np.ndarray, window: int, lead: int) -> np.ndarray:
    """(n_frames, window, dim + 1) float32, the model's input: `window` frames centred `lead` frames ahead."""
    return np.ascontiguousarray(windows(per_frame, window, lead), dtype=np.float32)


def gate_silence(weights: np.ndarray, activity: np.ndarray, rest_pose: np.ndarray) -> np.ndarray:
    """Mouth and jaw blended towards the rest pose where there is no voice."""
    out = weights.copy()
    a = activity[:, None]
    out[:, MOUTH_INDEX] = a * weights[:, MOUTH_INDEX] + (1 - a) * rest_pose[MOUTH_INDEX]
    return out


def predict_weights(model, per_frame: np.ndarray, activity: np.ndarray) -> np.ndarray:
    """(n_frames, 52) gated weights from `frame_inputs`' output."""
    raw = model.predict(model_windows(per_frame, model.config.window, model.config.lead))
    return gate_silence(raw, activity, model.rest_pose.numpy())


def predict_speech(model, encoder, speech, progress=None) -> np.ndarray:
    """(n_frames, 52) gated weights at the model's frame rate for a speech of any length.

    A step of frames at a time, each from only the features its windows touch, so memory stays bounded."""
    speech = as_speech(speech)
    fps, window, lead = model.config.fps, model.config.window, model.config.lead
    n = speech.n_frames(fps)
    activity = voice_activity(speech, fps, n)
    weights = np.empty((n, len(ARKIT_NAMES)), np.float32)
    steps = range(0, n, FRAMES_AT_ONCE)
    stage = progress.stage("expression", len(steps)) if progress is not None and len(steps) > 1 else None
    for start in steps:
        stop = min(start + FRAMES_AT_ONCE, n)
        index = window_index(np.arange(start, stop), window, lead, n)
        lo, hi = int(index.min()), int(index.max()) + 1
        per_frame = np.concatenate([speech.per_frame(encoder, fps, lo, hi), activity[lo:hi, None]], axis=1)
        raw = model.predict(np.ascontiguousarray(per_frame[index - lo], dtype=np.float32))
        weights[start:stop] = gate_silence(raw, activity[start:stop], model.rest_pose.numpy())
        if stage:
            stage.advance()
    if stage:
        stage.close()
    return weights
