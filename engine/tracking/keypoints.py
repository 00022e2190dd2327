"""Rigid keypoints on the head, tracked through the clip with pyramidal Lucas-Kanade optical flow.

Keypoints are only seeded where the head is rigid: the upper face (forehead, hairline, temples, nose,
cheekbones, the ears' roots), with the eyes and brows cut out; mouth and jaw lie below the region. A
track must pass a forward-backward check every frame and agree with the frame-to-frame motion of the
other tracks (RANSAC epipolar geometry), and it ends when it leaves the rigid region; new keypoints are seeded
whenever too few remain.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# MediaPipe face-mesh landmark ids.
# The face oval from one side of the face, over the forehead, to the other, at the nose's height.
UPPER_FACE_OVAL = [93, 234, 127, 162, 21, 54, 103, 67, 109, 10, 338, 297, 332, 284, 251, 389, 356, 454, 323]
# Closing the region under the cheekbones and the nose (above the mouth).
UNDER_CHEEKBONES = [425, 2, 205]
EYE_AND_BROW = [
    [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246,
     46, 53, 52, 65, 55, 70, 63, 105, 66, 107],
    [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466,
     276, 283, 282, 295, 285, 300, 293, 334, 296, 336],
]


@dataclass
class Tracks:
    """Keypoint observations: observation k saw track `track[k]` at pixel `uv[k]` in frame `frame[k]`."""
    frame: np.ndarray   # (M,) int
    track: np.ndarray   # (M,) int, 0..count-1
    uv: np.ndarray      # (M, 2) float64 pixels
    count: int

    def select(self, keep: np.ndarray) -> "Tracks":
        """Keep the observations where `keep` is True; renumber the tracks that remain."""
        ids, track = np.unique(self.track[keep], return_inverse=True)
        return Tracks(self.frame[keep], track, self.uv[keep], len(ids))

    def segments(self, length: int) -> "Tracks":
        """Cut every track into pieces spanning at most `length` frames, each a track of its own."""
        first = np.full(self.count, np.iinfo(np.int64).max)
        np.minimum.at(first, self.track, self.frame)
        piece = (self.frame - first[self.track]) // length
        ids, track = np.unique(np.stack([self.track, piece], 1), axis=0, return_inverse=True)
        return Tracks(self.frame, track.ravel(), self.uv, len(ids))


def rigid_region(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(size, size) uint8 mask of the rigid part of the head for one frame's (478, 2+) landmarks."""
    points = np.asarray(landmarks)[:, :2]
    outline = points[UPPER_FACE_OVAL + UNDER_CHEEKBONES]
    centre = points[[6]]  # nose bridge
    # Grow the upper outline outwards a little so the hairline, temples and ear roots are included.
    grown = centre + (outline - centre) * np.r_[[1.12] * len(UPPER_FACE_OVAL), [1.0] * len(UNDER_CHEEKBONES)][:, None]
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(grown).astype(np.int32)], 255)
    margin = max(2, int(round(0.03 * np.ptp(points[UPPER_FACE_OVAL, 0]))))
    for ids in EYE_AND_BROW:
        hole = np.zeros_like(mask)
        cv2.fillConvexPoly(hole, cv2.convexHull(np.round(points[ids]).astype(np.int32)), 255)
        mask[cv2.dilate(hole, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)) > 0] = 0
    return mask


def track_keypoints(gray: np.ndarray, landmarks: np.ndarray, valid: np.ndarray, size: int,
                    max_points: int = 100, stage=None, shot_starts=(0,)) -> Tracks:
    """Track rigid keypoints through (N, S, S) uint8 frames; invalid frames and the first frame of a shot
    (a cut) end every track."""
    n = len(gray)
    spacing = max(3, size // 48)
    window = (max(15, size // 12) | 1,) * 2
    lk = dict(winSize=window, maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
    fb_limit = 0.5 * size / 256          # forward-backward disagreement allowed, px
    motion_limit = 1.0 * size / 256      # distance from the epipolar line allowed, px
    frames, tracks, uvs = [], [], []
    points = np.zeros((0, 2), np.float32)
    ids = np.zeros(0, np.int64)
    next_id = 0
    previous = None
    cuts = set(int(f) for f in shot_starts)
    for t in range(n):
        if t in cuts or not valid[t]:
            points, ids, previous = points[:0], ids[:0], None
        if not valid[t]:
            if stage is not None:
                stage.advance(1)
            continue
        pyramid = gray[t]
        mask = rigid_region(landmarks[t], size)
        if previous is not None and len(points):
            forward, ok_f, _ = cv2.calcOpticalFlowPyrLK(previous, pyramid, points, None, **lk)
            backward, ok_b, _ = cv2.calcOpticalFlowPyrLK(pyramid, previous, forward, None, **lk)
            ok = (ok_f[:, 0] == 1) & (ok_b[:, 0] == 1) & (np.linalg.norm(backward - points, axis=1) < fb_limit)
            inside = np.zeros_like(ok)
            pix = np.round(forward).astype(np.int64)
            on_image = np.all((pix >= 0) & (pix < size), axis=1)
            inside[on_image] = mask[pix[on_image, 1], pix[on_image, 0]] > 0
            ok &= inside
            if ok.sum() >= 16:
                # Points on one rigid body obey a single epipolar geometry between two frames.
                _, agree = cv2.findFundamentalMat(points[ok], forward[ok], cv2.FM_RANSAC, motion_limit, 0.99)
                if agree is not None:
                    ok[np.flatnonzero(ok)[agree[:, 0] == 0]] = False
            points, ids = forward[ok], ids[ok]
        if len(points) < 0.75 * max_points:
            seed_mask = mask.copy()
            for p in points:
                cv2.circle(seed_mask, (int(round(p[0])), int(round(p[1]))), spacing, 0, -1)
            fresh = cv2.goodFeaturesToTrack(gray[t], max_points - len(points), 0.005, spacing,
                                            mask=seed_mask, blockSize=5)
            if fresh is not None:
                fresh = cv2.cornerSubPix(gray[t], fresh.astype(np.float32), (3, 3), (-1, -1),
                                         (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.01))[:, 0]
                points = np.concatenate([points, fresh])
                ids = np.concatenate([ids, np.arange(next_id, next_id + len(fresh))])
                next_id += len(fresh)
        frames.append(np.full(len(ids), t))
        tracks.append(ids)
        uvs.append(points.astype(np.float64))
        previous = pyramid
        if stage is not None:
            stage.advance(1, keypoints=int(len(points)))
    observed = Tracks(np.concatenate(frames), np.concatenate(tracks), np.concatenate(uvs), next_id)
    # A track seen in a single frame constrains nothing.
    lengths = np.bincount(observed.track, minlength=observed.count)
    return observed.select(lengths[observed.track] >= 2)
