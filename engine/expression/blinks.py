"""Eye blinks that look natural whatever the audio: the subject's own rate, duration and depth, placed at random.

Audio says nothing about blinks, so they are not predicted: a blink model is measured on the
subject's captured eyeBlink curves (how often, how long, how deep, the open-eye level) and blinks are
then placed stochastically (gamma-distributed intervals, reproducible with a seed: a take's seed
gives that take's blinks, another seed other times). Without a subject, typical human values are used
(about 17 blinks a minute, 0.25 s each) and the lids close fully, as ARKit capture has them. Each
blink's depth varies a little, and now and then one eye leads the other by a frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..arkit import ARKIT_INDEX

BLINK_CHANNELS = (ARKIT_INDEX["eyeBlinkLeft"], ARKIT_INDEX["eyeBlinkRight"])
_MIN_INTERVAL_S = 0.8  # nobody blinks twice in less than this
_DEPTH_RANGE = (0.9, 1.0)  # each blink's depth, as a fraction of closed - open
_MIN_BLINK_DEPTH = 0.15  # closed - open level under which a capture holds no blink, only lid jitter
_ONE_EYE_LEADS = 0.25  # chance that a blink starts a frame earlier in one eye than in the other


@dataclass
class BlinkModel:
    rate_per_s: float = 17 / 60
    duration_s: float = 0.25
    open_level: float = 0.05   # eyeBlink weight with the eyes open
    closed_level: float = 1.0  # eyeBlink weight at the bottom of a blink (a subject's: as MediaPipe saw it)

    @classmethod
    def from_curves(cls, blink: np.ndarray, fps: float) -> "BlinkModel":
        """Measure rate, duration and depth from (N, 2) captured eyeBlinkLeft/Right curves."""
        open_level, closed_level = _lid_levels(blink)
        above = np.concatenate([[False], blink_frames(blink), [False]])
        starts = np.flatnonzero(~above[:-1] & above[1:])
        ends = np.flatnonzero(above[:-1] & ~above[1:])
        seconds = len(blink) / fps
        if len(starts) == 0 or seconds <= 0:  # no blink visible in the capture: the human defaults
            return cls(open_level=open_level)
        # For the blink shape of blink_curves (sine close over 40%, cosine open) the full duration is
        # 1.5 times the width at half depth.
        duration = float(np.clip(1.5 * np.median(ends - starts) / fps, 0.1, 0.6))
        rate = float(np.clip(len(starts) / seconds, 2 / 60, 50 / 60))
        return cls(rate, duration, open_level, closed_level)

    def as_dict(self) -> dict:
        return {"rate_per_min": round(self.rate_per_s * 60, 1), "duration_s": round(self.duration_s, 3),
                "open_level": round(self.open_level, 3), "closed_level": round(self.closed_level, 3)}


def _lid_levels(blink: np.ndarray) -> tuple[float, float]:
    """The open and the closed level of (N, 2) captured eyeBlinkLeft/Right curves."""
    both = blink.mean(axis=1)
    return float(np.percentile(both, 30)), float(np.percentile(both, 99.5))


def blink_frames(blink: np.ndarray) -> np.ndarray:
    """(N,) bool: the frames of (N, 2) captured eyeBlinkLeft/Right curves where the lids are more than half-way
    from open to closed, as BlinkModel.from_curves counts blinks; none where the capture shows no blink."""
    open_level, closed_level = _lid_levels(blink)
    if closed_level - open_level < _MIN_BLINK_DEPTH:
        return np.zeros(len(blink), bool)
    return blink.mean(axis=1) > (open_level + closed_level) / 2


def blink_times(model: BlinkModel, seconds: float, seed: int) -> np.ndarray:
    """Start times (s) of blinks over `seconds`: gamma intervals (shape 2) around the model's mean rate."""
    rng = np.random.default_rng(seed)
    mean_interval = 1 / model.rate_per_s
    times, t = [], rng.uniform(0.3, mean_interval)  # the first blink comes at a random point
    while t < seconds:
        times.append(t)
        t += max(_MIN_INTERVAL_S, rng.gamma(2.0, mean_interval / 2))
    return np.array(times)


def blink_curves(model: BlinkModel, n_frames: int, fps: float, seed: int) -> np.ndarray:
    """(n_frames, 2) eyeBlinkLeft/Right: open level with blinks (fast close, slower open) at random times."""
    rng = np.random.default_rng([seed, 1])  # not the stream blink_times draws from
    t = np.arange(n_frames) / fps
    depth = np.zeros((n_frames, 2))
    close = model.duration_s * 0.4  # closing is quicker than opening
    for start in blink_times(model, n_frames / fps, seed):
        peak = rng.uniform(*_DEPTH_RANGE)
        starts = np.full(2, start)
        if rng.random() < _ONE_EYE_LEADS:
            starts[rng.integers(2)] -= 1 / fps
        for eye, begin in enumerate(starts):
            phase = t - begin
            closing = (phase >= 0) & (phase < close)
            opening = (phase >= close) & (phase < model.duration_s)
            shape = np.zeros(n_frames)
            shape[closing] = np.sin(0.5 * np.pi * phase[closing] / close)
            shape[opening] = np.cos(0.5 * np.pi * (phase[opening] - close) / (model.duration_s - close))
            depth[:, eye] = np.maximum(depth[:, eye], peak * shape)
    return (model.open_level + (model.closed_level - model.open_level) * depth).astype(np.float32)


def apply_blinks(weights: np.ndarray, model: BlinkModel, fps: float, seed: int) -> np.ndarray:
    """Weights with the eyeBlink channels replaced by generated blinks."""
    out = weights.copy()
    out[:, list(BLINK_CHANNELS)] = blink_curves(model, len(weights), fps, seed)
    return out
