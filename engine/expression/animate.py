"""Speech -> Curves: the expression model's face, generated blinks and gaze shifts, head motion, smoothing, intensity.

`Animator` holds what loading costs (the audio encoders and the expression model, the subject's blink
and head statistics) so that several files can be animated after one load; `animate` is the one-call form.
The model runs at the frame rate it was trained at and its curves are resampled to the asked fps.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..arkit import ARKIT_NAMES
from ..audio.features import as_speech
from ..audio.vad import voice_activity
from ..curves import Curves
from ..errors import EngineError
from .blinks import BLINK_CHANNELS, BlinkModel, apply_blinks
from .gaze import apply_gaze
from .headmotion import HEAD_MODES, MotionStats, generate, replay, subject_head_motion
from .model import ExpressionNet
from .predict import MOUTH_INDEX, ModelInputs, predict_speech

# --intensity regions: which blendshapes each name scales (around the rest pose); "head" scales head motion.
REGIONS = {
    "mouth": ("mouth",), "jaw": ("jaw",), "brows": ("brow",), "eyes": ("eye",),
    "cheeks": ("cheek",), "nose": ("nose",), "tongue": ("tongue",),
}
MAX_LEAD_FRAMES = 12  # half a second at 24 fps: further off, the mouth says another syllable


def expression_model_path(subject, encoder: str | None = None) -> Path:
    """The subject's trained expression model: for `encoder`, or the one training recorded last."""
    if encoder is None:
        record = subject.model("expression")
        if record is None:
            raise EngineError(f"{subject.root}: the subject has no expression model",
                              "train it (`python -m engine train SUBJECT`), or use --generic", path=str(subject.root))
        return subject.root / record.file
    path = subject.expression_model_path(encoder)
    if not path.is_file():
        raise EngineError(f"{subject.root}: no expression model for the '{encoder}' encoder",
                          f"train one with that encoder, or leave --encoder out", path=str(path))
    return path


class Animator:
    """model_path: a generic model retrained with `train-generic` (implies generic)."""

    def __init__(self, subject=None, generic: bool = False, encoder: str | None = None, models_dir=None,
                 model_path=None):
        generic = generic or model_path is not None
        if subject is None and not generic:
            raise EngineError("animate needs a subject or --generic", "pass --subject SUBJECT_DIR or --generic")
        self.subject = None if generic else subject
        if self.subject is None:
            from .generic import load_generic_model
            self.model = load_generic_model(model_path)
            if encoder is not None and encoder != self.model.config.encoder:
                raise EngineError(f"the generic model uses the '{self.model.config.encoder}' encoder, not '{encoder}'",
                                  "leave --encoder out with --generic")
            self.blinks = BlinkModel()
        else:
            self.model = ExpressionNet.load(expression_model_path(subject, encoder))
            blink = subject.tracks["blendshapes"][:, list(BLINK_CHANNELS)]
            self.blinks = BlinkModel.from_curves(blink, subject.fps)
        self.inputs = ModelInputs.of(self.model, models_dir)
        self._head = None  # the subject's recorded head motion, read on first use

    def __call__(self, speech, fps: float = 25.0, smooth: float = 0.0, intensity: dict | None = None,
                 head: str | None = None, seed: int = 0, blink_rate: float | None = None,
                 n_frames: int | None = None, progress=None, lead: float = 0.0) -> Curves:
        """Curves at fps for speech (16 kHz samples, an opened file or a SpeechFeatures), n_frames long
        (default: the frames the speech covers). seed: this take's blinks, gaze and generated motion;
        blink_rate: blinks a minute (default: the subject's, or a typical 17); intensity["head"] scales
        the head motion; lead: frames the mouth and jaw move ahead of the sound (lead_mouth)."""
        check_frame_rate(fps)
        head = head or ("replay" if self.subject is not None else "generate")
        if head not in HEAD_MODES:
            raise EngineError(f"unknown head mode '{head}'", f"choose one of {', '.join(HEAD_MODES)}")
        speech = as_speech(speech)
        n_frames = speech.n_frames(fps) if n_frames is None else n_frames
        if not abs(lead) <= MAX_LEAD_FRAMES:  # NaN too
            raise EngineError(f"a mouth lead of {lead:g} frames is out of range",
                              f"use -{MAX_LEAD_FRAMES} to {MAX_LEAD_FRAMES} frames (animators lead by 1 or 2)")
        weights = lead_mouth(predict_speech(self.model, self.inputs, speech, fps, 0, n_frames, progress), lead)
        activity = voice_activity(speech, fps, n_frames)
        blinks = self.blinks
        if blink_rate is not None:
            if not 0 < blink_rate <= 60:
                raise EngineError(f"blink rate {blink_rate} a minute is out of range",
                                  "use 1 to 60 (people blink 10-25 times a minute)")
            blinks = replace(blinks, rate_per_s=blink_rate / 60)
        weights = apply_gaze(apply_blinks(weights, blinks, fps, seed), activity, fps, seed)
        rotation, translation = self._head_motion(head, n_frames, fps, seed)
        if smooth > 0:
            from scipy.ndimage import gaussian_filter1d
            weights = gaussian_filter1d(weights, smooth, axis=0, mode="nearest")
        weights, rotation, translation = scale_regions(weights, rotation, translation,
                                                       self.model.rest_pose.numpy(), intensity or {})
        return Curves(fps, np.clip(weights, 0, 1), rotation, translation)

    def _head_motion(self, mode: str, n_frames: int, fps: float, seed: int):
        if mode == "none":
            return np.zeros((n_frames, 3), np.float32), np.zeros((n_frames, 3), np.float32)
        if self.subject is None:
            return generate(MotionStats.typical(), n_frames, fps, seed)  # replay needs a subject
        if self._head is None:
            self._head = subject_head_motion(self.subject)
        rotation, translation = self._head
        if mode == "replay":
            return replay(rotation, translation, self.subject.fps, n_frames, fps)
        return generate(MotionStats.measure(rotation, translation, self.subject.fps), n_frames, fps, seed)


def lead_mouth(weights: np.ndarray, frames: float) -> np.ndarray:
    """The mouth and jaw curves moved `frames` earlier (negative: later), linearly interpolated and held at the
    ends. A mouth a frame or two ahead of its sound reads as in sync on screen, as animators key it; and where
    sound and picture meet is not one number (the footage the models learnt from disagrees by a few frames,
    README), so the take's timing is the animator's to set."""
    if frames == 0:
        return weights
    out = weights.copy()
    frame = np.arange(len(weights), dtype=np.float64)
    for i in MOUTH_INDEX:
        out[:, i] = np.interp(frame + frames, frame, weights[:, i])
    return out


def scale_regions(weights, rotation, translation, rest_pose, intensity: dict):
    """Scale each named region's movement away from the rest pose (weights) or from still (head)."""
    weights = weights.copy()
    for region, factor in intensity.items():
        if region == "head":
            rotation, translation = rotation * factor, translation * factor
            continue
        if region not in REGIONS:
            raise EngineError(f"unknown intensity region '{region}'",
                              f"use some of {', '.join([*REGIONS, 'head'])}, e.g. mouth=1.2,brows=0.8")
        columns = [i for i, n in enumerate(ARKIT_NAMES) if n.startswith(REGIONS[region])]
        weights[:, columns] = rest_pose[columns] + factor * (weights[:, columns] - rest_pose[columns])
    return weights, rotation, translation


def check_frame_rate(fps: float) -> None:
    """Curves' frame rate: above 0 and at most 240 (NaN refused too)."""
    if not 0 < fps <= 240:
        raise EngineError(f"frame rate {fps} is out of range", "use a frame rate such as 24, 25, 30 or 29.97")


def parse_intensity(text: str | None) -> dict:
    """'mouth=1.2,brows=0.8' -> {'mouth': 1.2, 'brows': 0.8}."""
    out = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        name, _, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise EngineError(f"bad --intensity item '{item}'", "write it as region=factor, e.g. mouth=1.2") from None
        if not 0 <= out[name.strip()] <= 10:   # NaN too
            raise EngineError(f"--intensity item '{item}' is out of range", "use a factor from 0 to 10 (1: as "
                              "the model gives it)")
    return out

