"""Cuts in an edited clip: where one shot ends and the next begins, found from the frames themselves.

Interviews, vlogs and news clips are edited: a jump cut moves the head from one frame to the next (a take
later, or zoomed in), a dip to white carries a few frames of neither shot, a second take can change the
light and the shirt. Three of the four long corpus clips the benchmark trains on hold cuts (cnn2_anchor a
zoom, speech_coach twelve jump cuts and a second take, David_Cameron dips to white). What follows a
cut must not be joined to what precedes it: keypoint tracks end there (optical flow across a cut pairs
different points of the face), the head-pose prior does not smooth across it, a frame's appearance code is
read from its own shot, the frames of a transition are excluded, and the held-out frames lie in a shot the
head also trains on (`held_out_stretch`).

A cut is a frame that differs from the one before far more than the frames around it differ from theirs
(CUT_RATIO times the median over CONTEXT frames either side) and by much in itself (CUT_LEVEL grey levels,
the mean over a THUMB x THUMB thumbnail of the whole frame). Measured on the shared clips at 25 fps: in the
83 single-shot ones no frame does both (those that differ by 12 levels or more do so by at most 5.5 times
their surroundings; those 6 times their surroundings by at most 8.9 levels); the cuts in the others by
12.5-59 levels and 6.8-59 times. Cuts at most FADE_STEP_S apart are one transition (each frame of a fade
differs from the last), and so is a piece between cuts shorter than MAX_TRANSITION_S (a flash frame): their
frames belong to no shot. A transition after which the picture differs from the one before by less than
CUT_LEVEL (a few black frames, something passing the lens, a dip to white back to nearly the same framing:
David_Cameron's second, 6.6 levels) is no cut: its frames stay in their shot, and losing the face there is
engine.preprocess.gaps' to handle.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .gaps import span_text, timestamp

THUMB = 32
CUT_LEVEL = 12.0
CUT_RATIO = 6.0
CONTEXT = 12
FADE_STEP_S = 0.12
MAX_TRANSITION_S = 0.5
HELD_OUT_FRACTION = 1 / 11   # SyncTalk's: the last 1/11 of the frames are held out
MIN_TRAIN_S = 1.0            # a shot with held-out frames keeps at least this much of itself to train on


@dataclass
class Shots:
    starts: list[int]                     # first frame of each shot; the first is 0
    transitions: list[tuple[int, int]]    # [start, end) frames between two shots (a fade), excluded

    def warnings(self, fps: float) -> list[str]:
        if len(self.starts) < 2:
            return []
        cuts = ", ".join(timestamp(s / fps) for s in self.starts[1:7]) + (" ..." if len(self.starts) > 7 else "")
        text = (f"the clip cuts between {len(self.starts)} shots (at {cuts}); the head is tracked in each "
                "on its own")
        if self.transitions:
            frames = sum(end - start for start, end in self.transitions)
            spans = ", ".join(span_text(start, end, fps) for start, end in self.transitions[:6])
            text += f", and the {frames} frames of the transitions at {spans} are excluded from training"
        return [text + ". A clip of one continuous shot trains best"]


class ShotDetector:
    """Fed every frame in order (add), then says where the shots are (shots)."""

    def __init__(self):
        self._thumbs: list[np.ndarray] = []   # 1 KB a frame (a 3-hour clip: 270 MB less than its landmarks)

    def add(self, frame_rgb: np.ndarray) -> None:
        grey = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)
        self._thumbs.append(cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA))

    def shots(self, fps: float) -> Shots:
        return find_shots(np.stack(self._thumbs) if self._thumbs else np.zeros((0, THUMB, THUMB), np.uint8), fps)


def _difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def find_shots(thumbs: np.ndarray, fps: float) -> Shots:
    """Shots from the frames' THUMB x THUMB grey thumbnails (uint8, in order)."""
    differences = np.array([_difference(a, b) for a, b in zip(thumbs[1:], thumbs[:-1])])  # [k]: k+1 vs k
    n = len(differences)
    cuts = []
    for k in range(n):
        around = np.r_[differences[max(0, k - CONTEXT):k], differences[k + 1:k + 1 + CONTEXT]]
        typical = max(float(np.median(around)), 1.0) if len(around) else 1.0
        if differences[k] >= CUT_LEVEL and differences[k] >= CUT_RATIO * typical:
            cuts.append(k + 1)
    step, gap = max(1, int(round(FADE_STEP_S * fps))), max(1, int(round(MAX_TRANSITION_S * fps)))
    pieces, transitions, start, k = [], [], 0, 0
    while k < len(cuts):
        first = last = cuts[k]
        while k + 1 < len(cuts) and cuts[k + 1] - last <= step:
            k += 1
            last = cuts[k]
        k += 1
        if last > first and _difference(thumbs[first - 1], thumbs[last]) < CUT_LEVEL:
            continue  # the picture comes back as it was: no cut
        pieces.append((start, first))
        if last > first:
            transitions.append((first, last))
        start = last
    pieces.append((start, n + 1))
    starts = []
    for start, end in pieces:
        if end - start < gap and len(pieces) > 1:
            transitions.append((start, end))
        elif not starts:
            starts.append(0)  # the first shot also holds any transition frames before it
        else:
            starts.append(start)
    return Shots(starts or [0], sorted(transitions))


def held_out_stretch(n_frames: int, shot_starts: list[int], fps: float) -> tuple[int, int]:
    """[start, end) frames to hold out: HELD_OUT_FRACTION of the clip, at its end as SyncTalk does, unless a shot
    there would then have (almost) no frame to train on. A held-out frame in a shot the head never saw scores the
    head on light and clothes it could not know (speech_coach's last shot, a second take in another shirt, began
    30 frames into its held-out tail), and the render replays trained frames. Then the stretch ends the latest
    shot long enough to hold it and keep MIN_TRAIN_S of its frames for training (the frames after it train)."""
    count = n_frames - int(round(n_frames * (1 - HELD_OUT_FRACTION)))
    keep = int(round(MIN_TRAIN_S * fps))
    bounds = list(zip(shot_starts, list(shot_starts[1:]) + [n_frames]))

    def trains_enough(start: int, end: int) -> bool:
        return all((b - a) - (min(b, end) - max(a, start)) >= keep for a, b in bounds if a < end and b > start)

    if count == 0 or trains_enough(n_frames - count, n_frames):
        return n_frames - count, n_frames
    for a, b in reversed(bounds):
        if b - a - count >= keep:
            return b - count, b
    return n_frames - count, n_frames  # no shot is long enough: the clip's end, as for a single shot
