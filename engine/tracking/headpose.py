"""Head pose: rotation helpers, camera poses <-> rig head motion, and the jitter measure.

Camera poses are camera-to-world 4x4 matrices in the OpenGL/NeRF convention (the camera looks down -z,
+y is up), with world = the head's canonical frame (MediaPipe's canonical face model: x towards the
subject's left, y up, z out of the face) in decimetres.

Head motion is what a rig sees with the camera held still at a reference pose: the head moves by
H_i = c2w_ref @ inv(c2w_i), a rigid motion of the head about its canonical origin.
  rotation (pitch, yaw, roll) radians, as in engine.curves: H = Ry(yaw) @ Rx(-pitch) @ Rz(roll), so
    + pitch looks up, + yaw turns to the subject's left, + roll tilts the head towards its right shoulder;
  translation in metres (1 world unit = 1 dm), relative to the reference (mean) head position.
"""
from __future__ import annotations

import numpy as np

DM_PER_M = 10.0


def hat(v: np.ndarray) -> np.ndarray:
    """(..., 3) vectors -> (..., 3, 3) cross-product matrices."""
    z = np.zeros(v.shape[:-1])
    x, y, w = v[..., 0], v[..., 1], v[..., 2]
    return np.stack([np.stack([z, -w, y], -1), np.stack([w, z, -x], -1), np.stack([-y, x, z], -1)], -2)


def rotation_from_vector(r: np.ndarray) -> np.ndarray:
    """Rodrigues: (..., 3) axis-angle -> (..., 3, 3) rotation matrices."""
    r = np.asarray(r, np.float64)
    theta = np.linalg.norm(r, axis=-1)[..., None, None]
    k = hat(r)
    small = theta < 1e-8
    safe = np.where(small, 1.0, theta)
    a = np.where(small, 1.0, np.sin(safe) / safe)
    b = np.where(small, 0.5, (1 - np.cos(safe)) / safe ** 2)
    return np.eye(3) + a * k + b * (k @ k)


def vector_from_rotation(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 3) axis-angle (angles below pi)."""
    m = np.asarray(m, np.float64)
    cos = np.clip((np.trace(m, axis1=-2, axis2=-1) - 1) / 2, -1.0, 1.0)
    theta = np.arccos(cos)[..., None]
    axis = np.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1)
    sin = np.sin(theta)
    return np.where(sin < 1e-8, axis / 2, axis * theta / (2 * np.where(sin < 1e-8, 1.0, sin)))


def mean_rotation(m: np.ndarray) -> np.ndarray:
    """Chordal L2 mean of (N, 3, 3) rotations: the rotation nearest to their arithmetic mean."""
    u, _, vt = np.linalg.svd(np.asarray(m, np.float64).mean(0))
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def reference_pose(c2w: np.ndarray) -> np.ndarray:
    """Mean camera pose (4, 4): mean rotation and mean camera position."""
    c2w = np.asarray(c2w, np.float64)
    ref = np.eye(4)
    ref[:3, :3] = mean_rotation(c2w[:, :3, :3])
    ref[:3, 3] = c2w[:, :3, 3].mean(0)
    return ref


def _euler_yxz(m: np.ndarray) -> np.ndarray:
    """(N, 3, 3) = Ry(a) @ Rx(b) @ Rz(c) -> (N, 3) angles (a, b, c)."""
    b = np.arcsin(np.clip(-m[:, 1, 2], -1.0, 1.0))
    a = np.arctan2(m[:, 0, 2], m[:, 2, 2])
    c = np.arctan2(m[:, 1, 0], m[:, 1, 1])
    return np.stack([a, b, c], -1)


def _rotation_yxz(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    one, zero = np.ones_like(a), np.zeros_like(a)
    ry = np.stack([np.stack([ca, zero, sa], -1), np.stack([zero, one, zero], -1), np.stack([-sa, zero, ca], -1)], -2)
    rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, cb, -sb], -1), np.stack([zero, sb, cb], -1)], -2)
    rz = np.stack([np.stack([cc, -sc, zero], -1), np.stack([sc, cc, zero], -1), np.stack([zero, zero, one], -1)], -2)
    return ry @ rx @ rz


def head_motion_from_poses(c2w: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera poses -> head motion seen from the reference camera.

    Returns rotation (N, 3) radians (pitch, yaw, roll) and translation (N, 3) metres.
    """
    c2w = np.asarray(c2w, np.float64)
    motion = np.asarray(reference, np.float64)[None] @ np.linalg.inv(c2w)
    yaw, neg_pitch, roll = _euler_yxz(motion[:, :3, :3]).T
    rotation = np.stack([-neg_pitch, yaw, roll], -1)
    return rotation, motion[:, :3, 3] / DM_PER_M


def poses_from_head_motion(rotation: np.ndarray, translation: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Head motion (pitch, yaw, roll radians; metres) -> (N, 4, 4) float32 camera-to-world poses.

    The exact inverse of head_motion_from_poses for |pitch| < 90 degrees.
    """
    rotation = np.asarray(rotation, np.float64)
    motion = np.tile(np.eye(4), (len(rotation), 1, 1))
    motion[:, :3, :3] = _rotation_yxz(rotation[:, 1], -rotation[:, 0], rotation[:, 2])
    motion[:, :3, 3] = np.asarray(translation, np.float64) * DM_PER_M
    # H = ref @ inv(c2w)  =>  c2w = inv(H) @ ref
    return (np.linalg.inv(motion) @ np.asarray(reference, np.float64)[None]).astype(np.float32)


def jitter(c2w: np.ndarray, shot_starts=(0,)) -> dict:
    """Mean absolute second difference over frames of the head rotation angles (degrees) and of the head
    translation (decimetres, the world unit), both as seen from the mean camera pose. Within shots: the
    head's jump at a cut of an edited clip is no jitter."""
    c2w = np.asarray(c2w, np.float64)
    within = np.ones(max(len(c2w) - 2, 0), bool)  # [i]: frames i, i+1, i+2 lie in one shot
    for start in shot_starts:
        within[max(start - 2, 0):start] = False
    if not within.any():
        return {"rotation_deg": 0.0, "translation": 0.0}
    rotation, translation = head_motion_from_poses(c2w, reference_pose(c2w))
    return {"rotation_deg": _mean_abs_second_difference(np.degrees(rotation), within),
            "translation": _mean_abs_second_difference(translation * DM_PER_M, within)}


def _mean_abs_second_difference(x: np.ndarray, within: np.ndarray) -> float:
    return float(np.abs(x[2:] - 2 * x[1:-1] + x[:-2])[within].mean())
