"""The jaw where MediaPipe's blendshapes lose it: the lips' parting as a floor under jawOpen.

MediaPipe's blendshape model can read a parted mouth as shut: behind tinted glasses, with the face
turned away, in a small face. One such clip (224 px, glasses, turned 20-25 degrees after its first
3 s) read jawOpen at a sixth of its earlier value per pixel of lip gap while the landmarks still
saw the lips part, and its expression model learnt a shut mouth. The landmarks' inner-lip gap does
not suffer that loss, and lips cannot part further than the jaw lets them, so the gap sets a floor:
each frame's jawOpen is at least what the clip's frames facing the camera show for that gap.

The gap is measured in 3-D (MediaPipe's z is in the same units as x) over the distance between the
outer eye corners, so that turning the head or moving nearer the camera does not change it.
"""
from __future__ import annotations

import numpy as np

from ..arkit import ARKIT_INDEX
from ..evaluation.metrics import LOWER_INNER_LIP, UPPER_INNER_LIP

JAW = ARKIT_INDEX["jawOpen"]
OUTER_EYE_CORNERS = (33, 263)
FACING_SHARE = 0.25     # the reference: the quarter of the frames facing the camera most...
OPEN_SHARE = 0.5        # ...and of those, the half with the lips parted most
MIN_REFERENCE_FRAMES = 12


def lip_gap(landmarks: np.ndarray) -> np.ndarray:
    """(N,) inner-lip gap over the outer eye corners' distance, both in 3-D."""
    gap = np.linalg.norm(landmarks[:, LOWER_INNER_LIP] - landmarks[:, UPPER_INNER_LIP], axis=-1)
    eyes = np.linalg.norm(landmarks[:, OUTER_EYE_CORNERS[0]] - landmarks[:, OUTER_EYE_CORNERS[1]], axis=-1)
    return np.where(eyes > 0, gap / np.maximum(eyes, 1e-9), 0.0)


def facing_camera(face_transform: np.ndarray) -> np.ndarray:
    """(N,) cosine of the angle between the face's forward axis and the direction to the camera."""
    forward = face_transform[:, :3, 2]
    return forward[:, 2] / np.maximum(np.linalg.norm(forward, axis=-1), 1e-9)


def jaw_per_gap(jaw: np.ndarray, gap: np.ndarray, facing: np.ndarray, seen: np.ndarray) -> float | None:
    """The clip's typical jawOpen per unit of lip gap, from its frames facing the camera most with the
    lips parted; None when too few frames show that (the blendshapes are then left as they are)."""
    if seen.sum() < MIN_REFERENCE_FRAMES / (FACING_SHARE * OPEN_SHARE):
        return None
    reference = seen & (facing >= np.quantile(facing[seen], 1 - FACING_SHARE))
    reference &= gap >= np.quantile(gap[reference], 1 - OPEN_SHARE)
    reference &= gap > 0
    if reference.sum() < MIN_REFERENCE_FRAMES:
        return None
    return float(np.median(jaw[reference] / gap[reference]))


def floor_jaw(blendshapes: np.ndarray, landmarks: np.ndarray, face_transform: np.ndarray,
              seen: np.ndarray) -> np.ndarray:
    """A copy of (N, 52) blendshapes whose jawOpen is at least the lip gap times the clip's jaw per gap.

    `seen` marks the frames where MediaPipe found the face (the reference is taken from those only).
    """
    out = np.array(blendshapes, np.float32)
    gap = lip_gap(np.asarray(landmarks, np.float64))
    slope = jaw_per_gap(out[:, JAW].astype(np.float64), gap, facing_camera(np.asarray(face_transform, np.float64)),
                        np.asarray(seen, bool))
    if slope is not None:
        out[:, JAW] = np.maximum(out[:, JAW], np.minimum(slope * gap, 1.0))
    return out
