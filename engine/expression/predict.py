"""From speech to per-frame ARKit weights with a trained expression model.

The model sees, per video frame, a window of audio features plus voice activity. Its output is
then gated by that voice activity: in pauses the mouth and jaw go to the model's rest pose, so a
closed mouth in silence does not depend on the model having learnt it. The gate opens LIPS_LEAD_S
before each onset of voice: the lips part and close for a first sound before it is heard (on the
corpus' unseen speakers the jaw's r rose from 0.378 to 0.395 with 2 frames of lead, with pauses still
at a tenth of speech).

Two gates, for two kinds of mouth curve. The curves that open the mouth (OPENING_CURVES: jaw, lips
apart, rounded, stretched) shut in a pause, but not for a gap between words (WORD_GAP_S): a jaw that
snaps shut for every 0.2-s gap chatters. The lips' posture (pressed, rolled, smiling, to one side)
is what a face holds through the pauses of a passage and relaxes in a silence (PHRASE_GAP_S); it rests
in long silence and room tone, where a model's output is meaningless (the generic model smiles at
0.6 at -60 dBFS noise). On the corpus' unseen speakers (speaker-disjoint folds, the generic model)
the two gates raised jawOpen r from 0.446 to 0.457 and the mouth curves' r from 0.319 to 0.336, with
the mouth in pauses at 0.15 of speech (0.06 before; the people's own at 0.66).

How long the gate waits into a pause is the model's `pause_hold_s`. The generic model shuts the mouth
at once: it has not heard this voice's pauses, and a rig's mouth should rest when the sound stops. A
subject's own model has: it reads voice activity and learnt from the person's footage what their mouth
does in a pause (a news anchor's stays parted between sentences), so its gate holds for a while and
then closes, which keeps long silences shut; silence before the first voice is shut from the start (a
linear model fitted on speech and its short pauses knows nothing of room tone: Trump's opened its jaw
to 0.23 in it). On nine corpus clips of 10-97 s (first 80 % fitted, the rest scored) shutting at
once gave jawOpen r 0.552 and mouth r 0.458, with the mouth in pauses at 0.18 of speech where the
people's own was at 0.74; holding 0.5 s and closing over the next 0.5 s gave 0.618 and 0.485, pauses
at 0.72.
"""
from __future__ import annotations

import numpy as np

from ..arkit import ARKIT_INDEX, ARKIT_NAMES, MOUTH_AND_JAW
from ..audio.features import as_speech, frame_positions, get_encoder, interpolate, windows
from ..audio.vad import voice_activity

MOUTH_INDEX = np.array([ARKIT_NAMES.index(n) for n in MOUTH_AND_JAW])
OPENING_CURVES = ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthLowerDownLeft", "mouthLowerDownRight",
                  "mouthUpperUpLeft", "mouthUpperUpRight", "mouthStretchLeft", "mouthStretchRight")
OPENING_INDEX = np.array([ARKIT_INDEX[n] for n in OPENING_CURVES])
POSTURE_INDEX = np.setdiff1d(MOUTH_INDEX, OPENING_INDEX)  # the other mouth and jaw curves
WORD_GAP_S = 0.4     # a gap in the voice this short is between words: the mouth does not shut for it
PHRASE_GAP_S = 2.0   # the lips' posture holds through pauses this short, and relaxes in longer silence
LIPS_LEAD_S = 0.08  # the mouth moves this long before the voice starts
PAUSE_CLOSE_S = 0.5  # a gate that holds into a pause (pause_hold_s) closes over this long after
FRAMES_AT_ONCE = 1500  # frames predicted per step: their windows are about 25 MB with 512-d features


class ModelInputs:
    """What an expression model reads per frame: its encoder's features, the weights of its prior where it
    has one (a subject's model reading the generic model, engine.expression.training), and voice activity."""

    def __init__(self, encoder, prior=None, prior_inputs: "ModelInputs | None" = None, prior_lag: int = 0):
        self.encoder = encoder
        self.prior, self.prior_inputs, self.prior_lag = prior, prior_inputs, prior_lag

    @classmethod
    def of(cls, model, models_dir=None) -> "ModelInputs":
        encoder = get_encoder(model.config.encoder, models_dir)
        prior = getattr(model, "prior", None)
        if prior is None:
            return cls(encoder)
        return cls(encoder, prior, cls.of(prior, models_dir), model.config.prior_lag)

    def per_frame(self, speech, fps: float, start: int, stop: int, activity: np.ndarray) -> np.ndarray:
        """(stop - start, inputs_per_frame) float32 for frames start..stop-1 at fps; activity: all frames' at fps."""
        parts = [speech.per_frame(self.encoder, fps, start, stop)]
        if self.prior is not None:
            parts.append(prior_output(self.prior, self.prior_inputs, speech, fps, start, stop, self.prior_lag))
        parts.append(activity[start:stop, None])
        return np.concatenate(parts, axis=1).astype(np.float32)


def prior_output(prior, inputs: ModelInputs, speech, fps: float, start: int, stop: int, lag: int = 0) -> np.ndarray:
    """(stop - start, 52): a prior's output before its map and gate, `lag` frames late (frame t reads its t - lag)."""
    return predict_speech(prior, inputs, speech, fps, start - lag, stop - lag, normalised=True)


def frame_inputs(speech, inputs: ModelInputs, fps: float, n_frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame inputs (n_frames, inputs_per_frame) (the last column is voice activity), and that activity (n_frames,).

    speech: a SpeechFeatures, or 16 kHz samples."""
    speech = as_speech(speech)
    n_frames = speech.n_frames(fps) if n_frames is None else n_frames
    activity = voice_activity(speech, fps, n_frames)
    return inputs.per_frame(speech, fps, 0, n_frames, activity), activity


def model_windows(per_frame: np.ndarray, window: int, lead: int) -> np.ndarray:
    """(n_frames, window, inputs_per_frame) float32, the model's input: `window` frames centred `lead` frames ahead."""
    return np.ascontiguousarray(windows(per_frame, window, lead), dtype=np.float32)


def gate_opening(activity: np.ndarray, fps: float, hold_s: float = 0.0, bridge_s: float = 0.0) -> np.ndarray:
    """How open the gate is, per frame at fps: voice activity with each gap in the voice of at most bridge_s
    filled, each onset moved LIPS_LEAD_S earlier, and held open for hold_s into each pause, then closing over
    the next PAUSE_CLOSE_S."""
    opening = activity.copy()
    frame = np.arange(len(activity))
    voiced = activity >= 0.5
    last_voiced = np.maximum.accumulate(np.where(voiced, frame, -1))
    if bridge_s > 0:
        next_voiced = np.minimum.accumulate(np.where(voiced, frame, len(frame))[::-1])[::-1]
        gap = (last_voiced >= 0) & (next_voiced < len(frame)) & ((next_voiced - last_voiced - 1) / fps <= bridge_s)
        opening[gap] = 1
    if hold_s > 0:
        # seconds since the voice stopped; before the first voice there is no pause to hold, only silence
        quiet_for = np.where(last_voiced >= 0, (frame - last_voiced) / fps, np.inf)
        held = np.clip(1 - (quiet_for - hold_s) / PAUSE_CLOSE_S, 0, 1).astype(opening.dtype)
        opening = np.maximum(opening, held)
    for k in range(1, int(round(LIPS_LEAD_S * fps)) + 1):
        opening[:-k] = np.maximum(opening[:-k], activity[k:])
    return opening


def silence_gates(activity: np.ndarray, fps: float, hold_s: float = 0.0) -> np.ndarray:
    """(n_frames, 2): the gate of the curves that open the mouth, and that of the lips' posture."""
    return np.stack([gate_opening(activity, fps, hold_s, WORD_GAP_S),
                     gate_opening(activity, fps, hold_s, PHRASE_GAP_S)], axis=1)


def gate_silence(weights: np.ndarray, gates: np.ndarray, rest_pose: np.ndarray) -> np.ndarray:
    """Mouth and jaw blended towards the rest pose where their gate (silence_gates) is closed."""
    out = weights.copy()
    for columns, a in ((OPENING_INDEX, gates[:, :1]), (POSTURE_INDEX, gates[:, 1:])):
        out[:, columns] = a * weights[:, columns] + (1 - a) * rest_pose[columns]
    return out


def predict_weights(model, per_frame: np.ndarray, activity: np.ndarray) -> np.ndarray:
    """(n_frames, 52) gated weights from `frame_inputs`' output."""
    return gate_silence(model.frame_weights(per_frame), silence_gates(activity, model.config.fps, model.pause_hold_s),
                        model.rest_pose.numpy())


def predict_speech(model, inputs: ModelInputs, speech, fps: float | None = None, start: int = 0,
                   stop: int | None = None, progress=None, normalised: bool = False) -> np.ndarray:
    """(stop - start, 52) gated weights for frames start..stop-1 at fps (default: the model's own rate);
    normalised: a temporal model's output before its output map and the gate (what a subject's model reads
    of its prior: on the corpus it predicts the subject better than the mapped, gated weights).

    The model runs at its own rate on the frames those need, a block at a time, each block with the
    context its weights depend on (`model.context`), from only the features it touches (memory stays
    bounded for any length); its output is resampled to fps."""
    speech = as_speech(speech)
    model_fps = model.config.fps
    fps = model_fps if fps is None else fps
    stop = speech.n_frames(fps) if stop is None else stop
    n = speech.n_frames(model_fps)
    positions = frame_positions(model_fps, fps, start, stop, n)  # where the asked frames fall among the model's
    first, last = int(np.floor(positions.min())), min(int(np.floor(positions.max())) + 2, n)
    activity = voice_activity(speech, model_fps, n)
    gates = silence_gates(activity, model_fps, model.pause_hold_s)
    before, after = model.context
    weights = np.empty((last - first, len(ARKIT_NAMES)), np.float32)
    steps = range(first, last, FRAMES_AT_ONCE)
    stage = progress.stage("expression", len(steps)) if progress is not None and len(steps) > 1 else None
    for step in steps:
        end = min(step + FRAMES_AT_ONCE, last)
        lo, hi = max(0, step - before), min(n, end + after)
        per_frame = inputs.per_frame(speech, model_fps, lo, hi, activity)
        if normalised:
            weights[step - first:end - first] = model.normalised(per_frame)[step - lo:end - lo]
        else:
            raw = model.frame_weights(per_frame)[step - lo:end - lo]
            weights[step - first:end - first] = gate_silence(raw, gates[step:end], model.rest_pose.numpy())
        if stage:
            stage.advance()
    if stage:
        stage.close()
    return interpolate(weights, positions - first)
