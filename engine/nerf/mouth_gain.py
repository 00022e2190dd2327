"""The mouth's gain: how far a trained head opens its mouth for its curves, measured after training.

A head trained on the mouth curves (`--expression all`) follows them closely but opens its mouth short
of the person's: cnn2_anchor's held-out inner-lip gap at r 0.96 but 0.67 of the truth's spread, and 0.76
on 45 frames it trained on. It is not the working resolution (the truth shrunk to 256 px and grown back
reads 1.02 of itself) nor a soft mouth (a blurred truth reads wider, not narrower): the field, fitted
with an L1 loss in a few thousand steps, draws the mouth's extremes short of the truth. It does follow
stronger curves: the same head with its standardised mouth curves times 1.5 opened 0.78, times 2 0.82,
at r 0.95 / 0.94 and face PSNR within 0.12 dB.

So once the head is trained it renders a spread of its own training frames at a ladder of gains,
MediaPipe reads the rendered and the true inner-lip gap (as `evaluate` does), and the gain at which
the rendered spread reaches the truth's is kept (HeadModel.expression_gain, on the mouth and jaw
curves only, applied after they are held inside the range the training frames showed, so that the gain
can take the mouth past the widest pose the field draws; the face PSNR the gain may cost is bounded). The
frames are training frames: the held-out ones are `evaluate`'s, and the measure must not have seen them.
"""
from __future__ import annotations

import time

import numpy as np

from ..render.driving import Driving

GAINS = (1.0, 1.5, 2.0, 2.5)  # tried in turn, until the rendered mouth opens as far as the person's
# Training frames rendered a gain, spread evenly over the clip. The ratio is a spread over a spread: on
# 32 frames four interleaved sets of the same head read 0.91-0.97 at gain 1 and 0.92-1.11 at gain 2
# (David_Cameron), and the set the measure used read 0.81 and chose 2.0, which opened the held-out mouth
# 1.23 of the truth's; 128 frames chose 1.33 there (1.12), and the same gains as 32 on cnn2_anchor and
# speech_coach. About 30-60 s a gain on 2 cores.
FRAMES = 128
# With a time allowance (the train command's budget), a few frames are rendered first to time them, and
# the measure takes as many frames as EXPECTED_GAINS passes fit in what is left, down to MIN_FRAMES; a
# gain whose pass would run past the allowance is not tried. On a machine half as fast as the one above,
# beside another training, 128 frames at four gains took 6 minutes and the train command 44 (target 40).
# The timing frames are few: on a busy machine cnn2_anchor's passes ran slower than they said, the third
# gain no longer fitted and the measure kept the second (1.5, opening 0.97 of the person's on its frames,
# 0.745 held out), so the passes are sized with a margin, each pass's own time decides whether the next
# fits, and a measure cut short by time extrapolates its last two gains (extrapolated_gain).
TIMING_FRAMES = 8
EXPECTED_GAINS = 3
TIMING_MARGIN = 1.25
MIN_FRAMES = 32
MIN_TRUTH_SPREAD = 3.0        # px at 512: a mouth that moves less than this gives a ratio of noise
MAX_PSNR_LOSS = 0.5           # dB of face PSNR a gain may cost against gain 1 on the same frames


def choose_gain(gains, ratios) -> float:
    """The gain at which the rendered spread over the truth's reaches 1, linear between the two tried
    gains around it; the tried gain with the largest ratio when none reaches 1; 1 when the first does."""
    for i, ratio in enumerate(ratios):
        if ratio >= 1.0:
            if i == 0:
                return float(gains[0])
            low, high = ratios[i - 1], ratio
            return float(gains[i - 1] + (gains[i] - gains[i - 1]) * (1.0 - low) / (high - low))
    return float(gains[int(np.argmax(ratios))])


def _along_line(a, b, floor: float) -> float | None:
    """On the line through two passes [gain, ratio, psnr], the gain where the ratio reaches 1 or the PSNR
    falls to `floor`, whichever comes first; None where the ratio did not grow from a to b."""
    (g0, r0, p0), (g1, r1, p1) = a, b
    if r1 <= r0:
        return None
    gain = g0 + (g1 - g0) * (1.0 - r0) / (r1 - r0)
    if p1 < p0:
        gain = min(gain, g0 + (g1 - g0) * (p0 - floor) / (p0 - p1))
    return gain


def extrapolated_gain(tried, next_gain: float) -> float:
    """The gain at which the line through the last two tried [gain, ratio, psnr] reaches ratio 1, for a
    measure stopped by its time before any gain reached it: no further than the next gain it would have
    tried, nor than where the same line through their PSNR loses MAX_PSNR_LOSS against the first gain.
    With under two gains, or a ratio that did not grow, the tried gain with the largest ratio."""
    best = choose_gain([t[0] for t in tried], [t[1] for t in tried])  # none reached 1: the largest ratio's
    gain = _along_line(tried[-2], tried[-1], tried[0][2] - MAX_PSNR_LOSS) if len(tried) >= 2 else None
    if gain is None:
        return best
    return float(max(min(gain, next_gain), tried[-1][0]))


def bounded_gain(last, over, floor: float) -> float:
    """Between the last gain kept [gain, ratio, psnr] and the next one tried, `over`, whose face PSNR fell
    under `floor` (the first gain's less MAX_PSNR_LOSS): linear in both, the gain where the ratio reaches 1
    or where the PSNR reaches the floor, whichever comes first; the last gain kept where the next opened the
    mouth no further. (Kept at the last gain, speech_coach's mouth, 0.89 of the person's at 1.5 when 2.0 cost
    too much, opened 0.66-0.71 of the truth's held out.)"""
    gain = _along_line(last, over, floor)
    if gain is None:  # the mouth opened no further
        return float(last[0])
    return float(min(max(gain, last[0]), over[0]))


def calibration_frames(train_frames: np.ndarray, count: int = FRAMES) -> np.ndarray:
    return np.unique(train_frames[np.linspace(0, len(train_frames) - 1, min(count, len(train_frames))).astype(int)])


def frames_that_fit(seconds: float, frame_seconds: float) -> int:
    """Frames to measure on when EXPECTED_GAINS passes over them must fit in `seconds`."""
    return max(MIN_FRAMES, min(FRAMES, int(seconds / (frame_seconds * TIMING_MARGIN * EXPECTED_GAINS))))


def measure_mouth_gain(subject, head, audio_windows: np.ndarray, train_frames: np.ndarray, progress,
                       seconds: float | None = None) -> dict:
    """Render `train_frames`' spread at each of GAINS until the mouth opens as far as the person's, within
    `seconds` if given; set the chosen gain on head.model and return what was measured ({"gain", "frames",
    "tried": [[gain, ratio, psnr]...]}, or {"gain": 1.0, "skipped": why})."""
    from ..evaluation.heldout import evaluate
    tracks = subject.tracks

    def driving_of(frames: np.ndarray) -> Driving:
        return Driving(subject.fps, frames.astype(np.int64), audio_windows[frames].astype(np.float32),
                       tracks["blendshapes"][frames].astype(np.float32), tracks["pose"][frames].astype(np.float32))

    started = time.monotonic()
    frames = calibration_frames(train_frames)
    if seconds is not None:
        head.model.set_mouth_gain(GAINS[0])
        evaluate(subject, head, driving_of(calibration_frames(train_frames, TIMING_FRAMES)), progress, samples=0,
                 face_only=True, label="mouth gain: timing the renders")
        frame_seconds = (time.monotonic() - started) / TIMING_FRAMES
        frames = calibration_frames(train_frames, frames_that_fit(seconds - (time.monotonic() - started), frame_seconds))
    driving = driving_of(frames)
    tried, out_of_time, over = [], False, None
    for gain in GAINS:
        if tried and seconds is not None and time.monotonic() - started + pass_seconds > seconds:
            out_of_time = True
            break
        head.model.set_mouth_gain(gain)
        pass_started = time.monotonic()
        summary = evaluate(subject, head, driving, progress, samples=0, face_only=True,
                           label=f"mouth gain x{gain}").summary()
        pass_seconds = time.monotonic() - pass_started
        spread, ratio, psnr = summary["mouth_truth_spread"], summary["mouth_amplitude_ratio"], summary["face"]["psnr"]
        unread = spread is None or ratio is None or psnr is None
        if not tried and (unread or spread < MIN_TRUTH_SPREAD):  # at gain 1: nothing to calibrate on
            why = "no face found in the renders" if unread \
                else f"the mouth moves {spread:.1f} px in these frames (under {MIN_TRUTH_SPREAD})"
            return {"gain": 1.0, "skipped": why}
        measured = None if unread else [gain, round(ratio, 3), round(psnr, 2)]
        if tried and (unread or psnr < tried[0][2] - MAX_PSNR_LOSS):
            over = measured
            break
        tried.append(measured)
        if ratio >= 1.0:
            break
    if out_of_time and tried[-1][1] < 1.0:
        gain = round(extrapolated_gain(tried, GAINS[len(tried)]), 3)
    elif over and tried[-1][1] < 1.0:
        gain = round(bounded_gain(tried[-1], over, tried[0][2] - MAX_PSNR_LOSS), 3)
    else:
        gain = round(choose_gain([t[0] for t in tried], [t[1] for t in tried]), 3)
    head.model.set_mouth_gain(gain)
    return {"gain": gain, "frames": len(frames), "tried": tried, **({"out_of_time": True} if out_of_time else {}),
            **({"past_psnr_bound": over} if over else {})}
