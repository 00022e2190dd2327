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
the mean over a THUMB x THUMB thumbnail of the whole frame). A jump cut in the same framing (a vlog cut
between takes against one wall) changes the picture less, 6-12 levels, as fast motion can: there the face
decides, a cut when its landmarks also jump, by FACE_JUMP of the face's size and FACE_JUMP_RATIO times
their median step around it. Measured at 25 fps on the 87 clips of ../shared (thumbnails, and MediaPipe's
landmarks on every frame): the picture alone finds the 12.5-59-level cuts; with the face it also finds 13
jump cuts of 6.9-11.9 levels in speech_coach, 3 in cnn2_anchor and one each in latentsync_demo3 and
dhlive_000001 (each seen in the frames: the take changes), whose faces jump 0.041-0.21 of their size and
4.5-29 times their steps around; of the other frames that change by 6 levels and 6 times their
surroundings, the face moves at most 0.028 of its size, or 0.035 at 3.7 times its steps around
(David_Cameron's fade-in). Cuts at most FADE_STEP_S apart are one transition (each frame of a fade differs
from the last), and so is a piece between cuts shorter than MAX_TRANSITION_S (a flash frame): their
frames belong to no shot. A transition after which the picture differs from the one before by less than
CUT_LEVEL (a few black frames, something passing the lens, a dip to white back to nearly the same framing:
David_Cameron's second, 6.6 levels) is no cut: its frames stay in their shot, and losing the face there is
engine.preprocess.gaps' to handle.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..arkit import ARKIT_INDEX
from ..expression.blinks import BLINK_CHANNELS, blink_frames
from .gaps import runs, span_text, timestamp

THUMB = 32
CUT_LEVEL = 12.0
CUT_RATIO = 6.0
FACE_CUT_LEVEL = 6.0     # from here to CUT_LEVEL a change of the picture is a cut only if the face jumps too
FACE_JUMP = 0.035        # mean landmark step from one frame to the next, in face sizes
FACE_JUMP_RATIO = 4.0
CONTEXT = 12
FADE_STEP_S = 0.12
MAX_TRANSITION_S = 0.5
HELD_OUT_FRACTION = 1 / 11   # SyncTalk's: the last 1/11 of the frames are held out
MIN_TRAIN_S = 1.0            # a shot with held-out frames keeps at least this much of itself to train on
MIN_VOICED = 0.5             # share of the held-out frames with voice: speech with its pauses is 0.75-1
VOICED_SLACK = 0.1           # off the clip's end, the latest stretch this close to the most voiced one
MIN_MOTION = 0.5             # the held-out jaw's spread, of the median over the clip's stretches of that length


@dataclass
class Shots:
    starts: list[int]                     # first frame of each shot; the first is 0
    transitions: list[tuple[int, int]]    # [start, end) frames between two shots (a fade), excluded

    def warnings(self, fps: float, offset_s: float = 0.0) -> list[str]:
        """What to tell the user, in clip times (`offset_s`: where frame 0 lies in the clip)."""
        if len(self.starts) < 2:
            return []
        cuts = ", ".join(timestamp(offset_s + s / fps) for s in self.starts[1:7]) + (" ..." if len(self.starts) > 7 else "")
        text = (f"the clip cuts between {len(self.starts)} shots (at {cuts}); the head is tracked in each "
                "on its own")
        if self.transitions:
            frames = sum(end - start for start, end in self.transitions)
            spans = ", ".join(span_text(start, end, fps, offset_s) for start, end in self.transitions[:6])
            text += f", and the {frames} frames of the transitions at {spans} are excluded from training"
        return [text + ". A clip of one continuous shot trains best"]


class ShotDetector:
    """Fed every frame in order (add), then says where the shots are (shots)."""

    def __init__(self):
        self._thumbs: list[np.ndarray] = []   # 1 KB a frame (a 3-hour clip: 270 MB less than its landmarks)

    def add(self, frame_rgb: np.ndarray) -> None:
        grey = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)
        self._thumbs.append(cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA))

    def shots(self, fps: float, face_steps: np.ndarray | None = None) -> Shots:
        thumbs = np.stack(self._thumbs) if self._thumbs else np.zeros((0, THUMB, THUMB), np.uint8)
        return find_shots(thumbs, fps, face_steps)


def face_steps(landmarks: np.ndarray, found: np.ndarray) -> np.ndarray:
    """(n - 1,) how far the face moves from each frame to the next: the mean 2D step of its landmarks over
    the face's size (the root of its box's area), NaN where either frame has no face."""
    xy = landmarks[..., :2].astype(np.float32)
    size = np.sqrt(np.ptp(xy[..., 0], axis=1) * np.ptp(xy[..., 1], axis=1))
    steps = np.linalg.norm(xy[1:] - xy[:-1], axis=2).mean(axis=1) / np.maximum(size[:-1], 1.0)
    steps[~(found[1:] & found[:-1])] = np.nan
    return steps


def _difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def _around(values: np.ndarray, k: int) -> np.ndarray:
    """The CONTEXT values either side of values[k], without it and without NaNs."""
    around = np.r_[values[max(0, k - CONTEXT):k], values[k + 1:k + 1 + CONTEXT]]
    return around[np.isfinite(around)]


def _face_jumps(face_steps: np.ndarray | None, k: int) -> bool:
    if face_steps is None or not np.isfinite(face_steps[k]):
        return False
    around = _around(face_steps, k)
    typical = float(np.median(around)) if len(around) else 0.0
    return bool(face_steps[k] >= FACE_JUMP and face_steps[k] >= FACE_JUMP_RATIO * typical)


def find_shots(thumbs: np.ndarray, fps: float, face_steps: np.ndarray | None = None) -> Shots:
    """Shots from the frames' THUMB x THUMB grey thumbnails (uint8, in order) and, where known, the face's
    steps between them (`face_steps`)."""
    differences = np.array([_difference(a, b) for a, b in zip(thumbs[1:], thumbs[:-1])])  # [k]: k+1 vs k
    n = len(differences)
    cuts = []
    for k in range(n):
        around = _around(differences, k)
        typical = max(float(np.median(around)), 1.0) if len(around) else 1.0
        if differences[k] < CUT_RATIO * typical:
            continue
        if differences[k] >= CUT_LEVEL or (differences[k] >= FACE_CUT_LEVEL and _face_jumps(face_steps, k)):
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


def held_out_stretch(n_frames: int, shot_starts: list[int], fps: float, voice: np.ndarray | None = None,
                     curves: np.ndarray | None = None) -> tuple[int, int]:
    """[start, end) frames to hold out: HELD_OUT_FRACTION of the clip, at its end as SyncTalk does, unless a shot
    there would then have (almost) no frame to train on, or the stretch holds too little to score. A held-out
    frame in a shot the head never saw scores the head on light and clothes it could not know (speech_coach's
    last shot, a second take in another shirt, began 30 frames into its held-out tail), and the render replays
    trained frames. Then the stretch ends the latest shot long enough to hold it and keep MIN_TRAIN_S of its
    frames for training (the frames after it train).

    voice: (n_frames,) voice activity (engine.audio.vad); curves: (n_frames, 52) the tracked ARKit curves.
    `evaluate` scores lip sync and blinks on the held-out frames, and both need something to score. A clip
    often ends once the speaker has stopped (a 16-s phone clip's last 1.2 s: a closed mouth in silence, 0.5 px
    of motion), or trails off (a 10-s clip's last 0.9 s: voiced, but the jaw moved a third as much as in the
    clip's other stretches, and the amplitude ratio divided by tracking noise); and a short clip's 1.2-1.4 s
    often fall between two blinks (two such clips scored their eyes on open lids). So the stretch is kept where
    it is voiced (MIN_VOICED), its jaw moves (MIN_MOTION) and it holds a whole blink (where the clip shows
    blinks); otherwise the latest of the most voiced stretches (within VOICED_SLACK of the most) that have all
    three and keep their shots' training frames is held out; failing that, one with voice and motion, then one
    with voice; a silent stretch gives way to the latest of the most voiced; where none trains enough, the
    stretch above."""
    count = n_frames - int(round(n_frames * (1 - HELD_OUT_FRACTION)))
    keep = int(round(MIN_TRAIN_S * fps))
    bounds = list(zip(shot_starts, list(shot_starts[1:]) + [n_frames]))

    def trains_enough(start: int, end: int) -> bool:
        return all((b - a) - (min(b, end) - max(a, start)) >= keep for a, b in bounds if a < end and b > start)

    start = n_frames - count
    if count and not trains_enough(start, n_frames):
        # the clip's end when no shot is long enough, as for a single shot
        start = next((b - count for a, b in reversed(bounds) if b - a - count >= keep), start)
    if count == 0 or voice is None:
        return start, start + count
    shares = _window_means(np.asarray(voice[:n_frames]) >= 0.5, count)
    voiced = shares >= MIN_VOICED
    everywhere = np.ones(len(shares), bool)
    moving = holds_blink = everywhere
    if curves is not None:
        jaw = np.asarray(curves[:n_frames, ARKIT_INDEX["jawOpen"]], np.float64)
        spread = np.sqrt(np.maximum(_window_means(jaw ** 2, count) - _window_means(jaw, count) ** 2, 0))
        moving = spread >= MIN_MOTION * np.median(spread)
        blinks = blink_frames(curves[:n_frames, list(BLINK_CHANNELS)])
        if blinks.any():
            holds_blink = _holds_a_whole_run(blinks, count)
    for allowed in (voiced & moving & holds_blink, voiced & moving, voiced, everywhere):
        if not allowed.any():
            continue
        if allowed[start] and voiced[start]:
            return start, start + count
        top = shares >= shares[allowed].max() - VOICED_SLACK
        for first in np.flatnonzero(allowed & top)[::-1]:  # latest first
            if trains_enough(first, first + count):
                return int(first), int(first) + count
    return start, start + count


def _window_means(values: np.ndarray, count: int) -> np.ndarray:
    """[first]: the mean of values[first:first + count]."""
    running = np.concatenate([[0], np.cumsum(values, dtype=np.float64)])
    return (running[count:] - running[:-count]) / count


def _holds_a_whole_run(flags: np.ndarray, count: int) -> np.ndarray:
    """[first]: whether [first, first + count) holds a whole run of set flags and an unset one either side
    (a blink's closing and opening are both scored)."""
    holds = np.zeros(len(flags) - count + 1, bool)
    for first, end in runs(flags):
        holds[max(end + 1 - count, 0):first] = True
    return holds
