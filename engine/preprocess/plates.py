"""The background plate and the torso images (REFERENCE steps 4 and 5).

Plate: for each pixel, the colour from the sampled frame where that pixel is farthest from the
person (so the person's edge and shadow never bleed in); pixels the person covers in every sample
are filled in from the pixels around them (Telea inpainting: smoother than SyncTalk's copy of the
nearest seen pixel, which leaves streaks where the head moves).

Torso image: the frame with the head replaced by the plate, and the neck continued upward with the
mean neck colour, so that when the rendered head moves a little there is skin under it, not a hole.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..subject.format import LABEL_BACKGROUND, LABEL_HEAD, LABEL_NECK

PLATE_EVERY = 20            # SyncTalk samples every 20th frame
PERSON_MARGIN = 0.02        # grow the person by this share of the crop: soft edges and halos stay out
INPAINT_RADIUS = 3
HEAD_MARGIN = 0.01          # the head is removed with this margin (share of the crop): no hair halo
NECK_FILL_HEIGHT = 0.25     # how far above the neck's top the gap is filled, in face heights


class BackgroundPlate:
    """Accumulates sampled frames; `plate()` gives the (S, S, 3) uint8 background."""

    def __init__(self, size: int):
        self.distance = np.zeros((size, size), np.float32)
        self.colour = np.zeros((size, size, 3), np.uint8)
        margin = max(1, int(round(PERSON_MARGIN * size)))
        self._grow = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))

    def add(self, rgb: np.ndarray, person: np.ndarray) -> None:
        """person: (S, S) bool, True on the person (any of head, neck, torso)."""
        grown = cv2.dilate(person.astype(np.uint8), self._grow)
        distance = cv2.distanceTransform(1 - grown, cv2.DIST_L2, 5)
        farther = distance > self.distance
        self.distance[farther] = distance[farther]
        self.colour[farther] = rgb[farther]

    def plate(self) -> np.ndarray:
        hidden = self.distance == 0
        if hidden.all():  # the person covered the whole crop in every sample
            return self.colour.copy()
        return cv2.inpaint(self.colour, hidden.astype(np.uint8), INPAINT_RADIUS, cv2.INPAINT_TELEA)


def torso_image(rgb: np.ndarray, labels: np.ndarray, plate: np.ndarray, face_height: float) -> np.ndarray:
    """(S, S, 3) uint8: head replaced by the plate, neck gap filled upward with the mean neck colour."""
    torso = rgb.copy()
    head = labels == LABEL_HEAD
    margin = max(1, int(round(HEAD_MARGIN * labels.shape[0])))
    grown = cv2.dilate(head.astype(np.uint8), np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)).astype(bool)
    removed = grown & ((labels == LABEL_HEAD) | (labels == LABEL_BACKGROUND))
    torso[removed] = plate[removed]
    neck = labels == LABEL_NECK
    if not neck.any():
        return torso
    colour = rgb[neck].mean(axis=0)
    reach = max(1, int(round(NECK_FILL_HEIGHT * face_height)))
    columns = np.flatnonzero(neck.any(axis=0))
    tops = neck[:, columns].argmax(axis=0)  # first neck row in each column
    rows = np.arange(labels.shape[0])[:, None]
    fill = np.zeros_like(neck)
    fill[:, columns] = (rows < tops[None, :]) & (rows >= tops[None, :] - reach)
    fill &= head
    torso[fill] = np.round(colour).astype(np.uint8)
    return torso
