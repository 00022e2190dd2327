"""One stable square crop for the whole clip, holding the head and shoulders.

The box is chosen once from where the face is over all frames (not per frame: a moving crop would
make the static background move and the NeRF would have to learn that). It is kept inside the
source frame: rather than padding with invented pixels (which the NeRF would learn as content), a
box that would leave the frame is shifted back in, and never made larger than the frame's short
side. Its position in source pixels is stored so renders can be pasted back at full resolution.
"""
from __future__ import annotations

import numpy as np

from ..subject.schema import CropBox

MAX_DEFAULT_SIZE = 512     # default output size: the crop's own resolution, capped here
HEAD_AND_SHOULDERS = 2.2   # crop side in face heights (forehead-to-chin) plus the head's travel
SHOULDER_SHIFT = 0.35      # the box centre sits this many face heights below the face centre


def choose_crop_box(face_boxes: np.ndarray, width: int, height: int) -> tuple[CropBox, bool]:
    """The crop for a clip of `width` x `height` given per-frame face boxes (M, 4) x0, y0, x1, y1
    (source pixels, frames with a face only). Returns the box and whether the face always fits in it.
    """
    # Robust extents: a few outlier frames (a bad detection) must not blow the box up.
    left, top = np.percentile(face_boxes[:, 0], 1), np.percentile(face_boxes[:, 1], 1)
    right, bottom = np.percentile(face_boxes[:, 2], 99), np.percentile(face_boxes[:, 3], 99)
    face_height = float(np.median(face_boxes[:, 3] - face_boxes[:, 1]))
    travel = max(right - left, bottom - top) - face_height
    side = HEAD_AND_SHOULDERS * face_height + max(travel, 0.0)
    side = int(round(min(side, width, height)))
    centre_x = (left + right) / 2
    centre_y = (top + bottom) / 2 + SHOULDER_SHIFT * face_height
    x = int(round(np.clip(centre_x - side / 2, 0, width - side)))
    y = int(round(np.clip(centre_y - side / 2, 0, height - side)))
    box = CropBox(x, y, side, side)
    fits = left >= x and top >= y and right <= x + side and bottom <= y + side
    return box, bool(fits)


def default_size(box: CropBox) -> int:
    return min(box.width, MAX_DEFAULT_SIZE)
