"""Head motion for new speech: replayed from the subject's stabilised track, or generated.

- replay: the original's way: the subject's own head motion (from tracks["pose"], as the rig sees it
  with the camera held at the mean pose), walked back and forth to cover any length.
- generate: smooth random motion (low-passed Gaussian noise, seeded) with the subject's per-axis
  spread and tempo, or typical values without a subject.
Rotation is (pitch, yaw, roll) in radians and translation in metres, as in engine.curves.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import EngineError

HEAD_MODES = ("replay", "generate", "none")


@dataclass
class MotionStats:
    rotation_std: np.ndarray       # (3,) radians
    translation_std: np.ndarray    # (3,) metres
    time_constant_s: float         # how slowly the head drifts

    @classmethod
    def typical(cls) -> "MotionStats":
        """A calm speaker: a few degrees of nodding and turning, a few millimetres of sway."""
        return cls(np.radians([2.5, 3.0, 1.5]), np.array([0.004, 0.003, 0.004]), 0.6)

    @classmethod
    def measure(cls, rotation: np.ndarray, translation: np.ndarray, fps: float) -> "MotionStats":
        return cls(rotation.std(0), translation.std(0), _time_constant(rotation, fps))


def main_shot(subject) -> tuple[int, int]:
    """[start, end) frames of the subject's shot with the most frames where the face was found (the whole clip
    for one shot). An edited clip's shots frame the person differently (after a zoom the head is larger and
    lower): head motion is measured in one of them, and a render replays its frames under the rig's poses."""
    valid = subject.tracks.get("valid", np.ones(subject.n_frames, np.uint8)) > 0
    edges = list(subject.meta.shots) + [subject.n_frames]
    counts = [int(valid[a:b].sum()) for a, b in zip(edges, edges[1:])]
    k = int(np.argmax(counts))
    return edges[k], edges[k + 1]


def subject_reference_pose(subject, poses: np.ndarray | None = None) -> np.ndarray:
    """The camera pose the rig's head motion is measured from: the mean over the main shot's valid frames."""
    from ..tracking.headpose import reference_pose
    poses = subject.tracks["pose"] if poses is None else poses
    start, end = main_shot(subject)
    valid = subject.tracks.get("valid", np.ones(len(poses), np.uint8))[start:end] > 0
    return reference_pose(poses[start:end][valid])


def subject_head_motion(subject) -> tuple[np.ndarray, np.ndarray]:
    """(rotation, translation) per frame of the subject's main shot, from the stabilised poses (raw ones if not
    stabilised)."""
    from ..tracking.headpose import head_motion_from_poses
    tracks = subject.tracks
    poses = tracks.get("pose", tracks.get("pose_raw"))
    if poses is None:
        raise EngineError(f"{subject.root}: the subject has no head poses", "preprocess the clip again, "
                          "or use --head generate", path=str(subject.root))
    start, end = main_shot(subject)
    rotation, translation = head_motion_from_poses(poses[start:end], subject_reference_pose(subject, poses))
    return rotation.astype(np.float32), translation.astype(np.float32)


def replay(rotation: np.ndarray, translation: np.ndarray, source_fps: float, n_frames: int,
           fps: float) -> tuple[np.ndarray, np.ndarray]:
    """The recorded motion walked forward then backward (no jump at the turn), resampled to `fps`."""
    n = len(rotation)
    position = np.arange(n_frames) / fps * source_fps  # in source frames, fractional
    period = 2 * (n - 1) if n > 1 else 1
    folded = np.mod(position, period)
    folded = np.where(folded > n - 1, period - folded, folded)
    return _interpolate(rotation, folded), _interpolate(translation, folded)


def generate(stats: MotionStats, n_frames: int, fps: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random motion with the given spread and tempo."""
    rng = np.random.default_rng(seed)
    sigma = max(1.0, stats.time_constant_s * fps / 2)
    rotation = _smooth_noise(rng, n_frames, sigma) * stats.rotation_std
    translation = _smooth_noise(rng, n_frames, sigma) * stats.translation_std
    return rotation.astype(np.float32), translation.astype(np.float32)


def _smooth_noise(rng, n_frames: int, sigma: float) -> np.ndarray:
    """(n_frames, 3) Gaussian-filtered white noise, rescaled to unit spread and zero mean."""
    from scipy.ndimage import gaussian_filter1d
    pad = int(4 * sigma)
    noise = gaussian_filter1d(rng.standard_normal((n_frames + 2 * pad, 3)), sigma, axis=0)[pad:pad + n_frames]
    noise -= noise.mean(0)
    return noise / np.maximum(noise.std(0), 1e-8)


def _time_constant(x: np.ndarray, fps: float) -> float:
    """Lag (s) at which the autocorrelation of the motion falls below 1/e, averaged over axes."""
    lags = []
    for axis in x.T:
        a = axis - axis.mean()
        if a.std() < 1e-9 or len(a) < 10:
            continue
        corr = np.correlate(a, a, "full")[len(a) - 1:] / (a.var() * len(a))
        below = np.flatnonzero(corr < 1 / np.e)
        lags.append(below[0] / fps if len(below) else len(a) / fps)
    return float(np.clip(np.mean(lags), 0.1, 5.0)) if lags else MotionStats.typical().time_constant_s


def _interpolate(values: np.ndarray, position: np.ndarray) -> np.ndarray:
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, len(values) - 1)
    t = (position - low)[:, None]
    return (values[low] * (1 - t) + values[high] * t).astype(np.float32)
