"""Face parsing without BiSeNet: head, neck, torso and background from MediaPipe's landmarks and person mask.

SyncTalk runs a 19-class BiSeNet and merges its classes into head / neck / torso / background. No
BiSeNet weights ship with any package we can install, so the regions are built from what we have:

  head        the face oval (a polygon through MediaPipe's silhouette landmarks), plus the person
              pixels above the jaw line and within a band around the face (hair, ears)
  neck        person pixels under the jaw, between the jaw corners, down to about half a face
              height, whose colour matches the face's skin (so a collar or scarf is not neck)
  torso       the rest of the person
  background  everything else

and the soft face-only paste-back mask: the face oval with its jaw edge pushed down a few pixels,
blurred 9x9 (as SyncTalk does), so a rendered face blends into the original frame without a seam.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..subject.format import LABEL_BACKGROUND, LABEL_HEAD, LABEL_NECK, LABEL_TORSO

# MediaPipe's face silhouette, clockwise from the top of the forehead (10) through the chin (152).
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
# The lower half of the silhouette, from one cheek (454) round the chin to the other (234).
JAW = FACE_OVAL[FACE_OVAL.index(454):FACE_OVAL.index(234) + 1]
JAW_CORNERS = (397, 172)   # the angles of the mandible (gonion), left and right in the image
CHIN, FOREHEAD = 152, 10

PERSON_THRESHOLD = 0.5
NECK_DEPTH = 0.6           # how far below the chin the neck may reach, in face heights
HAIR_REACH = 1.0           # how far beside the face centre hair may reach, in face widths
SKIN_HUE_DEGREES = 30.0    # skin: chroma within this angle of the face's ...
SKIN_MIN_CHROMA = 0.3      # ... and at least this share of its strength
NECK_CLOSE = 0.06          # holes in the neck up to this share of the crop are filled
FACE_MASK_BLUR = 9         # SyncTalk's paste-back mask blur (9x9)


@dataclass
class FaceGeometry:
    """The measures of one face that the region rules use, in crop pixels."""
    oval: np.ndarray        # (36, 2) int32 polygon
    jaw: np.ndarray         # (21, 2) float32, ordered from one cheek round the chin to the other
    centre_x: float
    width: float
    height: float           # forehead top to chin
    chin_y: float
    corner_y: float         # mean height of the jaw corners

    @classmethod
    def from_landmarks(cls, landmarks: np.ndarray) -> "FaceGeometry":
        xy = landmarks[:, :2].astype(np.float32)
        oval = xy[list(FACE_OVAL)]
        return cls(oval=np.round(oval).astype(np.int32), jaw=xy[list(JAW)],
                   centre_x=float(oval[:, 0].mean()), width=float(np.ptp(oval[:, 0])),
                   height=float(xy[CHIN, 1] - xy[FOREHEAD, 1]), chin_y=float(xy[CHIN, 1]),
                   corner_y=float(xy[list(JAW_CORNERS), 1].mean()))

    def jaw_line(self, width: int) -> np.ndarray:
        """(width,) the y of the jaw under each image column, never above the jaw corners' height.

        Hair and ears beside the face above this line belong to the head; anything under it is
        neck, torso or background.
        """
        jaw = self.jaw[np.argsort(self.jaw[:, 0])]
        columns = np.arange(width, dtype=np.float32)
        line = np.interp(columns, jaw[:, 0], jaw[:, 1], left=self.corner_y, right=self.corner_y)
        return np.maximum(line, self.corner_y)


def face_region(geometry: FaceGeometry, shape: tuple[int, int]) -> np.ndarray:
    region = np.zeros(shape, np.uint8)
    cv2.fillPoly(region, [geometry.oval], 1)
    return region.astype(bool)


def skin_match(rgb: np.ndarray, face: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Pixels of `region` coloured like the face's skin, allowing for shadow.

    Chroma (Cr, Cb about neutral grey) keeps its direction in shadow but shrinks towards grey, so a
    pixel is skin when its chroma points the face's way (within SKIN_HUE_DEGREES), has at least
    SKIN_MIN_CHROMA of the face's strength (grey, navy or black clothes fail), and is no brighter
    than the face's bright side (a warm-tinted white collar fails). Only the region's box is converted.
    """
    match = np.zeros(face.shape, bool)
    left, top, width, height = cv2.boundingRect(region.astype(np.uint8))
    inner = cv2.erode(face.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    samples = rgb[inner if inner.sum() > 50 else face][::4]
    if width == 0 or len(samples) == 0:
        return match
    samples = cv2.cvtColor(samples[None], cv2.COLOR_RGB2YCrCb)[0].astype(np.float32)
    skin = np.median(samples[:, 1:], axis=0) - 128.0
    strength = float(np.dot(skin, skin))
    if strength < 4.0:  # a grey face (black-and-white footage): chroma says nothing
        return match
    brightest = np.percentile(samples[:, 0], 90) + 10.0
    bottom, right = top + height, left + width
    ycrcb = cv2.cvtColor(rgb[top:bottom, left:right], cv2.COLOR_RGB2YCrCb).astype(np.float32)
    chroma = ycrcb[..., 1:] - 128.0
    along = chroma @ skin / strength                                    # 1.0 = as strong as the face
    across = np.abs(chroma[..., 0] * skin[1] - chroma[..., 1] * skin[0]) / strength
    hue_ok = across <= np.tan(np.radians(SKIN_HUE_DEGREES)) * along
    match[top:bottom, left:right] = (along >= SKIN_MIN_CHROMA) & hue_ok & (ycrcb[..., 0] <= brightest)
    return match & region


def parse(rgb: np.ndarray, landmarks: np.ndarray, person_mask: np.ndarray) -> np.ndarray:
    """(H, W) uint8 labels (0 background, 1 head, 2 neck, 3 torso) for one crop.

    rgb: (H, W, 3) uint8; landmarks: (478, 3) crop pixels; person_mask: (H, W) float in [0, 1].
    """
    h, w = person_mask.shape
    geometry = FaceGeometry.from_landmarks(landmarks)
    face = face_region(geometry, (h, w))
    person = person_mask > PERSON_THRESHOLD
    rows = np.arange(h, dtype=np.float32)[:, None]
    cols = np.arange(w, dtype=np.float32)[None, :]
    above_jaw = rows < geometry.jaw_line(w)[None, :]
    near_face = np.abs(cols - geometry.centre_x) <= HAIR_REACH * geometry.width
    head = face | (person & above_jaw & near_face)

    corners_x = np.sort(landmarks[list(JAW_CORNERS), 0])
    band = ((cols >= corners_x[0]) & (cols <= corners_x[1]) &
            (rows <= geometry.chin_y + NECK_DEPTH * geometry.height))
    candidates = person & ~head & band
    neck = _keep_touching(_open(skin_match(rgb, face, candidates)), head)
    # Deep shadow right under the chin is too dark to read as skin: close such holes in the neck.
    neck = _close(neck | head, max(3, int(NECK_CLOSE * h) | 1)) & candidates

    labels = np.full((h, w), LABEL_BACKGROUND, np.uint8)
    labels[person] = LABEL_TORSO
    labels[neck] = LABEL_NECK
    labels[head] = LABEL_HEAD
    return labels


def _open(mask: np.ndarray) -> np.ndarray:
    return cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)).astype(bool)


def _close(mask: np.ndarray, size: int) -> np.ndarray:
    """Morphological closing (a square kernel: separable, so fast at any size)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (size, size))
    return cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, kernel).astype(bool)


def _keep_touching(mask: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """The parts of `mask` connected to `anchor` (the neck hangs from the head; stray skin-coloured
    patches on the clothes are dropped)."""
    count, components = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return mask
    grown = cv2.dilate(anchor.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    touching = np.unique(components[grown & mask])
    return np.isin(components, touching[touching > 0])


def face_mask(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 0..255 soft face-only paste-back mask: the face oval, jaw pushed down, blurred."""
    h, w = shape
    geometry = FaceGeometry.from_landmarks(landmarks)
    push = max(2, round(max(h, w) / 128))  # "a few pixels": 4 at 512
    oval = landmarks[list(FACE_OVAL), :2].astype(np.float32).copy()
    below_corners = oval[:, 1] > geometry.corner_y
    oval[below_corners, 1] += push
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(oval).astype(np.int32)], 255)
    return cv2.GaussianBlur(mask, (FACE_MASK_BLUR, FACE_MASK_BLUR), 0)
