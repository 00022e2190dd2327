"""The stabilizer's inputs straight from a clip, its frame used as the crop (benchmarks and tests;
the preprocessing pipeline gathers them from its own crops)."""
from __future__ import annotations

import numpy as np

from ..face.landmarker import FaceLandmarker
from ..media.video import read_frames


def observe_clip(clip, max_frames: int | None = None, fps: float = 25):
    """(gray (N,H,W) uint8, landmarks (N,478,3), transforms (N,4,4), valid (N,) bool) of `clip`."""
    import cv2
    gray, landmarks, transforms, valid = [], [], [], []
    with FaceLandmarker() as landmarker:
        for index, rgb in enumerate(read_frames(clip, fps)):
            if max_frames is not None and index == max_frames:
                break
            seen = landmarker.analyse(rgb)
            gray.append(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
            landmarks.append(seen.landmarks)
            transforms.append(seen.transform)
            valid.append(seen.faces == 1)
    return np.array(gray), np.array(landmarks), np.array(transforms), np.array(valid)
