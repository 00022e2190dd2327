"""Gaze that moves: small eye shifts (saccades) at random times, more often while the voice is on.

Like blinks, audio does not say where someone looks, so gaze shifts are placed stochastically
(reproducible with the take's seed): a quick move (two or three frames) to a new direction near
straight ahead, held until the next one; a talker's eyes shift about every 1.5 s, a listener's about
every 3 s. Both eyes move together (looking left is the left eye's eyeLookOut and the right eye's
eyeLookIn). The shifts are added to the model's own eyeLook curves.
"""
from __future__ import annotations

import numpy as np

from ..arkit import ARKIT_INDEX

_INTERVAL_S = {"speaking": 1.5, "silent": 3.0}  # mean time between gaze shifts
_SPREAD = np.array([0.12, 0.06])   # (yaw, pitch) standard deviation of a gaze direction, in eyeLook weight
_MOVE_S = 0.08                     # a saccade takes this long
_LEFT = ("eyeLookOutLeft", "eyeLookInRight")   # both eyes to the subject's left
_RIGHT = ("eyeLookInLeft", "eyeLookOutRight")
_UP = ("eyeLookUpLeft", "eyeLookUpRight")
_DOWN = ("eyeLookDownLeft", "eyeLookDownRight")


def gaze_path(activity: np.ndarray, fps: float, seed: int) -> np.ndarray:
    """(n_frames, 2) gaze (yaw: + left, pitch: + up) in eyeLook weight, from per-frame voice activity."""
    rng = np.random.default_rng([seed, 2])  # a stream of its own: blinks and head motion use others
    n = len(activity)
    path = np.zeros((n, 2))
    current, frame = np.zeros(2), 0
    while frame < n:
        speaking = activity[frame] > 0.5
        hold = rng.exponential(_INTERVAL_S["speaking" if speaking else "silent"])
        end = min(n, frame + max(1, int(round(hold * fps))))
        target = np.clip(rng.normal(0, _SPREAD), -2.5 * _SPREAD, 2.5 * _SPREAD)
        move = max(1, int(round(_MOVE_S * fps)))
        ramp = np.minimum(1.0, (np.arange(end - frame) + 1) / move)[:, None]
        path[frame:end] = current + ramp * (target - current)
        current, frame = target, end
    return path.astype(np.float32)


def apply_gaze(weights: np.ndarray, activity: np.ndarray, fps: float, seed: int) -> np.ndarray:
    """Weights with gaze shifts added to the eyeLook curves (activity: per frame of `weights`)."""
    out = weights.copy()
    path = gaze_path(activity, fps, seed)
    for names, values in ((_LEFT, path[:, 0]), (_RIGHT, -path[:, 0]), (_UP, path[:, 1]), (_DOWN, -path[:, 1])):
        for name in names:
            out[:, ARKIT_INDEX[name]] += np.maximum(values, 0)
    return np.clip(out, 0, 1)
