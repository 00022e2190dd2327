"""The generic expression model: any voice -> ARKit weights, without a subject.

Trained by `python -m engine train-generic` on clips of many speakers (engine.expression.corpus): a
TemporalNet learns each speaker's blendshapes normalised to that speaker's own range (0 at the
speaker's 5th percentile, 1 at the 95th), so that one person's habitually small mouth does not teach
the model to mumble, from each clip as it is and played 10 % slower and faster (corpus.SPEEDS). Its output
is then mapped to weights a rig expects:

- spread: a least-squares model regresses towards the mean, so its output moves less than the real
  face; its output in speech (on speakers held out in the cross-validation) is mapped to the capture's,
  quantile to quantile for the curves an ARKit capture calibrates (below), with the same mean and spread
  for the others (a straight line keeps their correlation; `calibration` says why);
- range: a typical speaker's MediaPipe range per curve, except where a real ARKit (iPhone, Live Link
  Face) capture of speech says what ARKit gives (ARKIT_SPEECH), which MediaPipe underestimates
  several-fold for the jaw and the closed lips.

Footage of many sources is not always in sync: a clip's sound can lead or trail its picture by a few
frames, and a dubbed or generated clip's mouth does not follow its sound at all. Before a model is
fitted, each clip is checked by a model trained on the other half of the speakers (`check_sync`): its
captured jaw is shifted by the lag at which it best follows that model's prediction (at most
MAX_SYNC_LAG frames), and a clip whose jaw follows no shift of it (r < MIN_SYNC_R) is left out. A model
of a handful of voices cannot judge another's sync: with fewer than MIN_SYNC_SPEAKERS speakers the
clips are used as they are.

Scores come from speaker-disjoint k-fold cross-validation (no speaker in both a training and a test
fold), per speaker the model never heard; they are stored in the model file's metadata.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..arkit import ARKIT_INDEX, ARKIT_NAMES
from ..errors import EngineError
from .corpus import TrainingClip
from .model import N_OUT, ExpressionConfig, TemporalNet, load_model
from .predict import MOUTH_INDEX, POSTURE_INDEX

GENERIC_MODEL = Path(__file__).with_name("generic.safetensors")
# Whisper's middle layers (engine.audio.whisper): on unseen speakers they predict the mouth better than its
# output (cross-validated raw jawOpen r 0.487 against 0.447, mouth r 0.360 against 0.319).
GENERIC_ENCODER = "whisper-mid"
USE_NOTE = ("trained on public research clips (talking-head and lip-reading demo and benchmark videos, see the "
            "sources); for research and evaluation; for a production, retrain it on footage you hold the rights "
            "to with `python -m engine train-generic`")

# ARKit weights in speech, from a public iPhone Live Link Face take (JMTechArt/Pipeline-Examples,
# "Blender/Blender Example Files/MySlate_3_Jason_Millers_iPhone.csv", 5.5 s of speech): percentile -> weight.
ARKIT_SPEECH = {"jawOpen": {50: 0.16, 90: 0.67}, "mouthClose": {90: 0.24}, "mouthFunnel": {90: 0.41}}

MOUTH = MOUTH_INDEX
# Where the eyes look in these clips is where the camera stood, not what the voice does: the model keeps
# them straight ahead, and engine.expression.gaze moves them.
GAZE = np.array([i for i, n in enumerate(ARKIT_NAMES) if n.startswith("eyeLook")])
JAW = ARKIT_INDEX["jawOpen"]
_LOW, _HIGH = 5, 95      # percentiles that span a speaker's range
_MIN_RANGE = 0.02        # a curve that moves less than this is not normalised up (it would be noise)
_KNOTS = np.array([0, 1, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 99, 100], float)  # output map
MAX_SYNC_LAG = 4         # frames (160 ms at 25 fps) a clip's sound may be off its picture
MIN_SYNC_R = 0.2         # a clip whose jaw follows its audio less than this at every lag is left out
MIN_SYNC_SPEAKERS = 20   # speakers needed for the check (each half's model hears 10 or more)
_CHUNK = 48              # frames per training sequence (1.9 s at 25 fps)
_BATCH = 16


def load_generic_model(path: str | Path | None = None):
    """The bundled generic model, or a retrained one at `path`."""
    path = Path(path) if path else GENERIC_MODEL
    if not path.is_file():
        raise EngineError(f"{path}: the generic expression model is missing",
                          "reinstall the extension, or train one with `python -m engine train-generic`",
                          path=str(path))
    return load_model(path)


def curve_weights() -> np.ndarray:
    """How much each curve counts in training: the mouth and jaw most; blinks and gaze are generated, not learnt."""
    weight = np.full(N_OUT, 0.5, np.float32)
    weight[MOUTH] = 1.0
    for i, name in enumerate(ARKIT_NAMES):
        if name.startswith(("eyeBlink", "eyeLook")) or name == "tongueOut":  # MediaPipe has no tongue
            weight[i] = 0.0
        elif name.startswith("eye"):
            weight[i] = 0.25
    return weight


@dataclass
class SpeakerRange:
    low: np.ndarray    # (52,) the speaker's 5th percentile per curve
    span: np.ndarray   # (52,) 95th - 5th percentile (at least _MIN_RANGE)

    def normalise(self, weights: np.ndarray) -> np.ndarray:
        return (weights - self.low) / self.span


def speaker_ranges(clips: list[TrainingClip]) -> dict[str, SpeakerRange]:
    ranges = {}
    for speaker in sorted({c.speaker for c in clips}):
        frames = np.concatenate([c.blendshapes[c.valid] for c in clips if c.speaker == speaker])
        if len(frames) == 0:
            continue
        low, high = np.percentile(frames, _LOW, axis=0), np.percentile(frames, _HIGH, axis=0)
        ranges[speaker] = SpeakerRange(low.astype(np.float32), np.maximum(high - low, _MIN_RANGE).astype(np.float32))
    return ranges


def unusable_because(clip: TrainingClip) -> str | None:
    """Why a clip cannot train the model (too short for a training sequence, a face in under half its frames:
    one face, exactly), or None."""
    if len(clip.blendshapes) < _CHUNK:
        return f"shorter than a training sequence ({_CHUNK / clip.fps:.1f} s)"
    if clip.valid.mean() < 0.5:
        return f"one face in only {clip.valid.mean():.0%} of its frames (people speaking to camera, one at a time)"
    return None


def usable(clips: list[TrainingClip]) -> list[TrainingClip]:
    return [c for c in clips if unusable_because(c) is None]


def train_network(clips: list[TrainingClip], ranges: dict[str, SpeakerRange], config: ExpressionConfig,
                  steps: int, seed: int = 0, stage=None) -> TemporalNet:
    """Fit a TemporalNet to the clips' normalised blendshapes (its output calibration left at identity)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = TemporalNet(config)
    frames = np.concatenate([c.inputs for c in clips])
    model.feature_mean.copy_(torch.from_numpy(frames.mean(0)))
    model.feature_std.copy_(torch.from_numpy(frames.std(0)).clamp_min(1e-3))
    targets = [ranges[c.speaker].normalise(c.blendshapes).astype(np.float32) for c in clips]
    # Each speaker counts by the square root of how long it talks: the long clips do not drown the rest.
    speaker_frames = {s: sum(len(c.inputs) for c in clips if c.speaker == s) for s in ranges}
    p = np.array([len(c.inputs) / speaker_frames[c.speaker] ** 0.5 for c in clips])
    p /= p.sum()
    weight = torch.from_numpy(curve_weights())
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    model.train()
    for step in range(steps):
        x, y, m = [], [], []
        for k in rng.choice(len(clips), _BATCH, p=p):
            start = rng.integers(0, len(clips[k].inputs) - _CHUNK + 1)
            x.append(clips[k].inputs[start:start + _CHUNK])
            y.append(targets[k][start:start + _CHUNK])
            m.append(clips[k].valid[start:start + _CHUNK])
        x, y = torch.from_numpy(np.stack(x)), torch.from_numpy(np.stack(y))
        mask = torch.from_numpy(np.stack(m)).float()[..., None]
        loss = ((model(x) - y) ** 2 * weight * mask).sum() / (mask.sum() * weight.sum()).clamp_min(1)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if stage is not None and step % 100 == 99:
            stage.advance(100, loss=round(loss.item(), 4))
    return model.eval()


@dataclass
class SyncCheck:
    lag: int    # frames the clip's face trails its sound (negative: leads it)
    r: float    # jawOpen r, prediction vs capture, at that lag

    @property
    def in_sync(self) -> bool:
        return self.r >= MIN_SYNC_R


def check_sync(clips: list[TrainingClip], config: ExpressionConfig, steps: int, seed: int = 0) -> list[SyncCheck]:
    """Per clip, the lag at which its captured jaw best follows the jaw predicted from its audio by a model
    trained on the other half of the speakers, and the r there."""
    checks = [None] * len(clips)
    for test in speaker_folds(clips, 2):
        train = [c for c, t in zip(clips, test) if not t]
        model = train_network(train, speaker_ranges(train), config, steps, seed)
        for k in np.flatnonzero(test):
            checks[k] = best_sync(model.normalised(clips[k].inputs)[:, JAW], clips[k].blendshapes[:, JAW],
                                  clips[k].valid)
    return checks


def best_sync(predicted: np.ndarray, captured: np.ndarray, valid: np.ndarray) -> SyncCheck:
    """The lag within MAX_SYNC_LAG at which a captured curve best follows a predicted one (both per frame),
    on the frames where `valid`."""
    m = MAX_SYNC_LAG
    valid, truth = valid[m:-m], captured[m:-m]
    rs = [_r(np.roll(predicted, lag)[m:-m][valid], truth[valid]) for lag in range(-m, m + 1)]
    return SyncCheck(int(np.argmax(rs)) - m, float(max(rs)))


def shifted(clip: TrainingClip, lag: int) -> TrainingClip:
    """The clip with its captured face moved `lag` frames earlier, so that it lines up with its sound."""
    if lag == 0:
        return clip
    valid = np.roll(clip.valid, -lag)
    if lag > 0:  # the frames rolled round from the other end
        valid[-lag:] = False
    else:
        valid[:-lag] = False
    return replace(clip, blendshapes=np.roll(clip.blendshapes, -lag, axis=0), valid=valid)


def train_synchronised(clips: list[TrainingClip], ranges: dict[str, SpeakerRange], config: ExpressionConfig,
                       steps: int, seed: int = 0, stage=None) -> tuple[TemporalNet, list[SyncCheck]]:
    """A TemporalNet fitted to the clips that are in sync, each lined up with its sound (check_sync); the
    checks are None where there are too few speakers to make them."""
    if len({c.speaker for c in clips}) < MIN_SYNC_SPEAKERS:
        return train_network([v for c in clips for v in lined_up(c, 0)], ranges, config, steps, seed, stage), None
    checks = check_sync(clips, config, steps, seed)
    kept = [v for c, s in zip(clips, checks) if s.in_sync for v in lined_up(c, s.lag)]
    return train_network(kept, ranges, config, steps, seed, stage), checks


def lined_up(clip: TrainingClip, lag: int) -> list[TrainingClip]:
    """The clip with its face moved `lag` frames earlier (`shifted`), and its variants at other speeds
    (engine.expression.corpus.SPEEDS) alike, their lag scaled to their timeline."""
    return [shifted(clip, lag)] + [shifted(v, int(round(lag / v.speed))) for v in usable(list(clip.variants))]


def sync_report(clips: list[TrainingClip], checks: list[SyncCheck] | None) -> dict:
    if checks is None:
        return {"checked": False, "why": f"fewer than {MIN_SYNC_SPEAKERS} speakers: clips used as they are"}
    return {"checked": True, "left_out": {c.name: round(s.r, 3) for c, s in zip(clips, checks) if not s.in_sync},
            "lags": {c.name: s.lag for c, s in zip(clips, checks) if s.in_sync and s.lag}}


def speaker_folds(clips: list[TrainingClip], folds: int) -> list[np.ndarray]:
    """Speaker-disjoint folds: each speaker's clips go to one fold, folds balanced by frame count."""
    totals = {}
    for c in clips:
        totals[c.speaker] = totals.get(c.speaker, 0) + len(c.inputs)
    load, fold_of = np.zeros(folds), {}
    for speaker in sorted(totals, key=lambda s: (-totals[s], s)):  # biggest first into the lightest fold
        fold_of[speaker] = int(np.argmin(load))
        load[fold_of[speaker]] += totals[speaker]
    return [np.array([fold_of[c.speaker] == f for c in clips]) for f in range(folds)]


def cross_validate(clips: list[TrainingClip], config: ExpressionConfig, folds: int, steps: int, progress,
                   seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per clip, from a model trained without that clip's speaker: its normalised output, and the weights
    as they ship (calibrated on the other folds' clips and outputs, silence-gated)."""
    from .predict import predict_weights
    masks = speaker_folds(clips, folds)
    models, outputs = [], [None] * len(clips)
    with progress.stage("cross-validation", total=folds * steps) as stage:
        for test in masks:
            train = [c for c, t in zip(clips, test) if not t]
            models.append(train_synchronised(train, speaker_ranges(train), config, steps, seed, stage)[0])
            for k in np.flatnonzero(test):
                outputs[k] = models[-1].normalised(clips[k].inputs)
    weights = [None] * len(clips)
    for model, test in zip(models, masks):
        others = np.flatnonzero(~test)
        train = [clips[k] for k in others]
        calibrate(model, calibration(train, speaker_ranges(train), [outputs[k] for k in others]))
        for k in np.flatnonzero(test):
            weights[k] = predict_weights(model, clips[k].inputs, clips[k].activity)
    return outputs, weights


def calibration(clips: list[TrainingClip], ranges: dict[str, SpeakerRange], outputs: list[np.ndarray]) -> dict:
    """The map from the network's output to rig weights, from the training clips and the network's output on
    them when their speakers were held out (`outputs`), per curve: the output in speech goes to the capture's
    (so the curve moves as much as the real face does: quantile to quantile for the curves ARKIT_SPEECH
    calibrates, the same mean and spread for the others), and the capture's normalised range to the rig's
    (ARKIT_SPEECH, else a typical speaker's MediaPipe range). Also the rest pose silence gives: the typical
    speaker's low end, except the lips' posture (engine.expression.predict), which rests where the
    speakers' lips are in their pauses (a little pressed and rolled in, not at their least)."""
    low = np.median([r.low for r in ranges.values()], axis=0)
    span = np.median([r.span for r in ranges.values()], axis=0)
    offset, scale = low.astype(np.float64), span.astype(np.float64)  # a typical speaker's MediaPipe range
    speech = [c.valid & (c.activity > 0.5) for c in clips]
    voiced = np.concatenate([ranges[c.speaker].normalise(c.blendshapes)[m] for c, m in zip(clips, speech)])
    predicted = np.concatenate([o[m] for o, m in zip(outputs, speech)])
    for name, quantiles in ARKIT_SPEECH.items():
        i = ARKIT_INDEX[name]
        points = sorted(quantiles.items())
        if len(points) == 1:  # one figure: the speaker's rest stays at the typical rest
            (q, value), = points
            scale[i] = (value - offset[i]) / max(np.percentile(voiced[:, i], q), 1e-3)
        else:
            (q0, v0), (q1, v1) = points[0], points[-1]
            z0, z1 = np.percentile(voiced[:, i], q0), np.percentile(voiced[:, i], q1)
            scale[i] = (v1 - v0) / max(z1 - z0, 1e-3)
            offset[i] = v0 - scale[i] * z0
    knots_in = np.percentile(predicted, _KNOTS, axis=0).T  # (52, knots)
    knots_in = np.maximum.accumulate(knots_in + np.arange(len(_KNOTS)) * 1e-6, axis=1)  # strictly increasing
    captured = np.percentile(voiced, _KNOTS, axis=0).T
    # The other curves rest in most frames and peak now and then; mapping the output's quantiles onto that
    # shape stretches the output's least certain, highest values and cost their r (cross-validated mouth r
    # 0.311 against 0.325). They get the capture's mean and spread in speech by a straight line instead.
    linear = np.setdiff1d(np.arange(N_OUT), [ARKIT_INDEX[name] for name in ARKIT_SPEECH])
    gain = voiced[:, linear].std(0) / np.maximum(predicted[:, linear].std(0), 1e-6)
    captured[linear] = (voiced[:, linear].mean(0) + gain * (knots_in[linear].T - predicted[:, linear].mean(0))).T
    knots_out = np.clip(offset[:, None] + scale[:, None] * captured, 0, 1)
    knots_out[GAZE] = 0.0
    rest = offset.copy()
    paused = np.concatenate([ranges[c.speaker].normalise(c.blendshapes)[c.valid & (c.activity < 0.01)] for c in clips])
    if len(paused):
        rest[POSTURE_INDEX] = offset[POSTURE_INDEX] + scale[POSTURE_INDEX] * np.median(paused[:, POSTURE_INDEX], axis=0)
    return {"offset": offset.astype(np.float32), "scale": scale.astype(np.float32),
            "rest": np.clip(rest, 0, 1).astype(np.float32),
            "knots_in": knots_in.astype(np.float32), "knots_out": knots_out.astype(np.float32)}


def calibrate(model: TemporalNet, mapping: dict) -> None:
    """Set the model's output map, and its rest pose (what silence shows, `calibration`)."""
    with torch.no_grad():
        model.output_knots_in.copy_(torch.from_numpy(mapping["knots_in"]))
        model.output_knots_out.copy_(torch.from_numpy(mapping["knots_out"]))
        model.rest_pose.copy_(torch.from_numpy(mapping["rest"]))


def score_speakers(clips: list[TrainingClip], weights: list[np.ndarray], ranges, mapping: dict,
                   min_motion: float = 0.02) -> dict:
    """Per speaker, weights (as shipped) against the captured blendshapes, on the frames with a face.

    jaw_open_r: Pearson r at lag 0; jaw_open_r_best_lag: the best r within +-4 frames, jaw_best_lag: where
    (negative: the capture leads the prediction; footage a few frames out of sync shows here); jaw_spread:
    standard deviation of the predicted jawOpen / that of the capture mapped to the same ARKit scale
    (the speaker's range -> `mapping`'s offset and scale); mouth_r: mean r over the mouth and jaw
    curves that move in the capture (standard deviation > min_motion).
    """
    offset, scale = np.array(mapping["offset"]), np.array(mapping["scale"])
    out = {}
    for speaker, (truth, predicted, raw) in _per_speaker(clips, weights, ranges).items():
        arkit = np.clip(offset + scale * truth, 0, 1)
        mouth = [i for i in MOUTH if raw[:, i].std() > min_motion]
        by_lag = [_r(np.roll(predicted[:, JAW], lag)[4:-4], raw[4:-4, JAW]) for lag in range(-4, 5)]
        out[speaker] = {
            "jaw_open_r": _r(predicted[:, JAW], raw[:, JAW]),
            "jaw_open_r_best_lag": max(by_lag), "jaw_best_lag": int(np.argmax(by_lag)) - 4,
            "jaw_spread": float(predicted[:, JAW].std() / max(arkit[:, JAW].std(), 1e-6)),
            "mouth_r": float(np.mean([_r(predicted[:, i], raw[:, i]) for i in mouth])) if mouth else float("nan"),
            "mouth_curves": len(mouth), "frames": int(len(raw))}
    return out


def summarise(per_speaker: dict) -> dict:
    """Means over speakers; in_sync: the speakers whose jaw follows the prediction best within a frame of lag 0
    (chosen by the same prediction, so a flattering selection: it shows how much the others' footage costs)."""
    rows = list(per_speaker.values())
    in_sync = [r["jaw_open_r"] for r in rows if abs(r["jaw_best_lag"]) <= 1]
    return {"speakers": len(rows), "in_sync_speakers": len(in_sync),
            "jaw_open_r_in_sync_mean": round(float(np.mean(in_sync)), 3) if in_sync else float("nan"),
            "jaw_open_r_mean": round(float(np.mean([r["jaw_open_r"] for r in rows])), 3),
            "jaw_open_r_best_lag_mean": round(float(np.mean([r["jaw_open_r_best_lag"] for r in rows])), 3),
            "jaw_spread_median": round(float(np.median([r["jaw_spread"] for r in rows])), 3),
            "mouth_r_mean": round(float(np.nanmean([r["mouth_r"] for r in rows])), 3)}


def _per_speaker(clips, outputs, ranges) -> dict:
    """speaker -> (normalised capture, output, raw capture) over the speaker's frames with a face."""
    grouped = {}
    for clip, output in zip(clips, outputs):
        valid = clip.valid
        grouped.setdefault(clip.speaker, []).append(
            (ranges[clip.speaker].normalise(clip.blendshapes[valid]), output[valid], clip.blendshapes[valid]))
    return {s: tuple(np.concatenate(part) for part in zip(*items)) for s, items in grouped.items()}


def _r(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or a.std() < 1e-9 or b.std() < 1e-9:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def train_generic(clips: list[TrainingClip], encoder, progress, folds: int = 5, steps: int = 1000,
                  seed: int = 0, width: int = 64):
    """Cross-validate (speaker-disjoint), then train on every clip and calibrate; returns (model, report)."""
    clips = usable(clips)
    speakers = sorted({c.speaker for c in clips})
    if len(speakers) < max(2, folds):
        raise EngineError(f"{len(speakers)} speakers with usable clips; speaker-disjoint {folds}-fold "
                          "cross-validation needs at least as many speakers as folds",
                          "add clips of more people, or lower --folds")
    started = time.monotonic()
    config = ExpressionConfig(encoder=encoder.name, dim=encoder.dim, fps=clips[0].fps, window=0, lead=0,
                              arch="temporal", width=width)
    ranges = speaker_ranges(clips)
    outputs, weights = cross_validate(clips, config, folds, steps, progress, seed)
    with progress.stage("final model", total=steps) as stage:
        model, checks = train_synchronised(clips, ranges, config, steps, seed, stage)
    mapping = calibration(clips, ranges, outputs)
    calibrate(model, mapping)
    per_speaker = score_speakers(clips, weights, ranges, mapping)
    report = {"cross_validation": {"folds": folds, "summary": summarise(per_speaker), "per_speaker": per_speaker},
              "sync": sync_report(clips, checks),
              "calibration": {k: np.round(v, 4).tolist() for k, v in mapping.items()},
              "clips": len(clips), "speakers": len(speakers), "frames": int(sum(len(c.inputs) for c in clips)),
              "steps": steps,
              "parameters": int(sum(p.numel() for p in model.parameters())),
              "seconds": round(time.monotonic() - started, 1)}
    return model, report


def save_generic(model: TemporalNet, path, report: dict, sources: list[str]) -> Path:
    return model.save(path, {"report": json.dumps(report), "sources": json.dumps(sources), "use": USE_NOTE,
                             "arkit_calibration": json.dumps(ARKIT_SPEECH)})
