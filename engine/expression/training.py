"""Training the per-subject expression model: the subject's speech -> its own captured blendshapes.

Targets are tracks["blendshapes"] (MediaPipe's, smoothed) on the training frames; the held-out
frames (subject.split('test')) are only scored. The model is saved as
SUBJECT/model/expression-ENCODER.safetensors and recorded in subject.json "models" ("expression": the
one trained last, which animate uses unless asked for another encoder).

The model reads, beside its encoder's features, the generic model's 52 weights (its output before the
output map): the generic model has heard dozens of speakers, the subject's clip a few seconds to a few
minutes of one. A linear window fitted on one clip predicts its jaw fairly well but its other mouth curves
poorly; the generic model's curves agree with each other. The contiguous cross-validation on the training
frames chooses how much the prior counts (PRIOR_GAINS, 0 leaving it out), and the prior is read as late as
the clip's picture trails its sound (clip_offset). On nine corpus clips of 10-97 s (first 80 % fitted,
last 20 % scored, a generic model that never heard the speaker): jawOpen r 0.447 -> 0.555, the moving
mouth curves' r 0.371 -> 0.462. Rendered through heads trained on five people (every held-out frame,
mouth driven from the speech) the mouth's r is unchanged on average (0.670 -> 0.669): speech_coach
0.60 -> 0.69, Trump 0.41 -> 0.45, cnn2 0.76 -> 0.76, lieu 0.84 -> 0.83, David Cameron 0.73 -> 0.62.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, replace

import numpy as np
import torch

from ..arkit import ARKIT_INDEX
from ..audio.features import DEFAULT_ENCODER, get_encoder, subject_speech
from ..errors import EngineError
from ..progress import Progress
from ..subject.schema import ExpressionRecord
from .model import N_OUT, ExpressionConfig, ExpressionNet
from .predict import MOUTH_INDEX, ModelInputs, frame_inputs, model_windows, predict_weights, prior_output


JAW = ARKIT_INDEX["jawOpen"]
_FOLDS = 5
_RIDGE_GRID = (300.0, 1000.0, 3000.0, 10000.0, 30000.0, 100000.0)
MAX_MOUTH_GAIN = 3.0  # a curve the audio barely predicts is not blown up into noise
# How much more the generic model's 52 weights may count than the encoder's 512 features per frame (the
# cross-validation picks; 0: not at all): a few seconds of a subject favour the prior, a minute its own.
PRIOR_GAINS = (0.0, 2.0, 4.0, 8.0)


def train_expression(subject, progress: Progress, encoder: str | None = None, models_dir=None,
                     generic_model=None) -> dict:
    """Train, score on held-out frames, save under SUBJECT/model/, record in subject.json; returns the metrics.

    generic_model: the generic model the subject's model reads as its prior (default: the bundled one)."""
    from .generic import load_generic_model
    name = encoder or DEFAULT_ENCODER
    started = time.monotonic()
    targets = subject.tracks["blendshapes"].astype(np.float32)
    valid = subject.tracks.get("valid", np.ones(len(targets), np.uint8)) > 0
    train = np.array([i for i in subject.split("train") if valid[i]], np.int64)
    test = np.array([i for i in subject.split("test") if valid[i]], np.int64)
    if len(train) < 50:
        raise EngineError(f"{subject.root}: only {len(train)} usable training frames",
                          "preprocess a longer clip (at least 10 s of speech)", path=str(subject.root))
    speech = subject_speech(subject)
    prior = load_generic_model(generic_model)
    prior_inputs = ModelInputs.of(prior, models_dir)
    lag = clip_offset(prior, prior_inputs, speech, targets, train, subject.fps)
    inputs = ModelInputs(get_encoder(name, models_dir), prior, prior_inputs, lag)
    per_frame, activity = frame_inputs(speech, inputs, subject.fps, subject.n_frames)

    config = ExpressionConfig(encoder=name, dim=inputs.encoder.dim, fps=subject.fps, prior=asdict(prior.config),
                              prior_lag=lag)
    model = fit(model_windows(per_frame, config.window, config.lead), targets, train, config, progress)
    model.prior.load_state_dict(prior.state_dict())
    metrics = score(model, per_frame, activity, targets, test) if len(test) else {}

    path = subject.expression_model_path(name)
    model.save(path, {"metrics": json.dumps(metrics), "trained_on": str(subject.root.name),
                      "prior_sources": prior.metadata.get("sources", "[]"),
                      "prior_use": prior.metadata.get("use", "")})
    subject.record_model("expression", ExpressionRecord(
        subject.relative(path), name, config.window, model.config.ridge, int(len(train)), int(len(test)), metrics,
        round(time.monotonic() - started, 1)))
    fitted = {"prior_gain": model.config.prior_gain, "prior_lag": lag}
    return {"expression_" + k: v for k, v in (metrics | fitted).items()}


def clip_offset(prior, prior_inputs: ModelInputs, speech, targets: np.ndarray, train: np.ndarray, fps: float) -> int:
    """Frames the subject's tracked jaw trails the jaw the prior predicts from its sound, on the training
    frames (negative: leads it). A clip's picture can be a few frames off its sound; the subject's model
    reads the prior that much late, so the prior lines up with the face it learns (on David_Cameron's clip,
    3 frames off, the prior read at lag 0 lowered the rendered mouth's r from the speech)."""
    from .generic import best_sync
    predicted = prior_output(prior, prior_inputs, speech, fps, 0, len(targets))
    used = np.zeros(len(targets), bool)
    used[train] = True
    return best_sync(predicted[:, JAW], targets[:, JAW], used).lag


def fit(inputs: np.ndarray, targets: np.ndarray, train: np.ndarray, config: ExpressionConfig,
        progress: Progress, ridges=_RIDGE_GRID, prior_gains=PRIOR_GAINS) -> ExpressionNet:
    """Fit an ExpressionNet on inputs[train] -> targets[train]: ridge regression, its strength (and the weight
    of the prior's columns, where the model has a prior) chosen by contiguous 5-fold cross-validation on the
    training frames (held-out frames untouched; one choice: no cross-validation)."""
    model = ExpressionNet(replace(config))  # its own config: the fit records its choices there
    flat = inputs[train].reshape(-1, inputs.shape[-1])
    model.feature_mean.copy_(torch.from_numpy(flat.mean(0)))
    model.feature_std.copy_(torch.from_numpy(flat.std(0)).clamp_min(1e-3))
    model.rest_pose.copy_(torch.from_numpy(rest_pose(targets[train])))
    gains = prior_gains if config.prior else (1.0,)
    mean_pose = targets[train].mean(0)
    y = (targets[train] - mean_pose).astype(np.float32)
    choices = [(g, r) for g in gains for r in ridges]
    folds = np.array_split(np.arange(len(train)), _FOLDS) if len(choices) > 1 else []
    errors = np.zeros(len(choices))
    # Mouth and jaw are what audio drives; each counts in units of its own spread, so small curves count.
    scale = np.maximum(y[:, MOUTH_INDEX].std(0), 1e-3)
    unseen = np.zeros((len(choices), len(train), len(MOUTH_INDEX)), np.float32)  # out-of-fold predictions
    with progress.stage("expression", total=len(gains) * len(folds) + 1) as stage:
        for g, gain in enumerate(gains):
            a = _design(model, inputs[train], gain)
            for fold in folds:
                keep = np.setdiff1d(np.arange(len(a)), fold)
                for k, w in enumerate(_ridge(a[keep], y[keep], ridges), start=g * len(ridges)):
                    unseen[k, fold] = (a[fold] @ w)[:, MOUTH_INDEX]
                    residual = (unseen[k, fold] - y[fold][:, MOUTH_INDEX]) / scale
                    errors[k] += (residual ** 2).sum()
                stage.advance(1)
        best = int(np.argmin(errors))
        gain, ridge = choices[best]
        a = _design(model, inputs[train], gain)
        (w,) = _ridge(a, y, [ridge])
        if gain > 0 and config.prior:  # the model scales the prior's columns itself, through feature_std
            model.feature_std[config.dim:config.dim + N_OUT] /= gain
        stage.advance(1, ridge=ridge, prior_gain=gain)
    if folds:
        # Ridge regression predicts the mean of what a sound could mean, so on speech it has not heard its
        # mouth moves with a fraction of the person's spread (a mumbled render). Scaling each mouth curve by
        # its spread over the spread of the out-of-fold predictions gives the mouth back its range; a
        # correlation is unchanged by it. On a short clip the fold models, each fitted on a few seconds,
        # say little and the gain overshoots: it is bounded so that the model never moves more than the
        # person on the speech it was fitted to.
        spread = y[:, MOUTH_INDEX].std(0)
        fitted = (a @ w)[:, MOUTH_INDEX].std(0)
        mouth_gain = np.minimum(spread / np.maximum(unseen[best].std(0), 1e-6), spread / np.maximum(fitted, 1e-6))
        w[:, MOUTH_INDEX] *= np.clip(mouth_gain, 1.0, MAX_MOUTH_GAIN)
    model.config.ridge, model.config.prior_gain = ridge, gain if config.prior else 0.0
    with torch.no_grad():
        model.window.weight.copy_(torch.from_numpy(w.T.astype(np.float32)))
        model.window.bias.copy_(torch.from_numpy(mean_pose.astype(np.float32)))
    return model.eval()


def _design(model: ExpressionNet, inputs: np.ndarray, prior_gain: float) -> np.ndarray:
    """The standardised inputs the ridge regression fits, float32 (twice as fast as float64, ample for ridge),
    with the prior's columns scaled by prior_gain: a larger scale costs their weights less under the same
    ridge penalty, 0 leaves the prior out."""
    a = model.standardised(inputs).astype(np.float32)
    if model.config.prior:
        columns = a.reshape(len(a), model.config.window, model.config.inputs_per_frame)
        columns[:, :, model.config.dim:model.config.dim + N_OUT] *= prior_gain
    return a


def _ridge(a: np.ndarray, y: np.ndarray, strengths) -> list[np.ndarray]:
    """Ridge solutions (p, k) of a @ w ~ y for each strength, through the eigenvectors of the smaller Gram matrix."""
    if len(a) <= a.shape[1]:  # fewer frames than inputs: dual form, w = a.T (a a.T + l I)^-1 y
        values, vectors = np.linalg.eigh(a @ a.T)
        projected = vectors.T @ y
        return [a.T @ (vectors @ (projected / (values + s)[:, None])) for s in strengths]
    values, vectors = np.linalg.eigh(a.T @ a)
    projected = vectors.T @ (a.T @ y)
    return [vectors @ (projected / (values + s)[:, None]) for s in strengths]


def rest_pose(targets: np.ndarray) -> np.ndarray:
    """The subject's face with the mouth closed: the median over its 10% least open-jawed frames."""
    jaw = targets[:, ARKIT_INDEX["jawOpen"]]
    closed = jaw <= np.percentile(jaw, 10)
    return np.median(targets[closed], axis=0).astype(np.float32)


def score(model: ExpressionNet, per_frame: np.ndarray, activity: np.ndarray, targets: np.ndarray,
          frames: np.ndarray) -> dict:
    """Held-out figures: Pearson r of jawOpen and mean absolute error over the mouth and jaw blendshapes."""
    predicted = predict_weights(model, per_frame, activity)[frames]
    return compare(predicted, targets[frames])


def compare(predicted: np.ndarray, captured: np.ndarray) -> dict:
    jaw = ARKIT_INDEX["jawOpen"]
    r = float(np.corrcoef(predicted[:, jaw], captured[:, jaw])[0, 1]) if captured[:, jaw].std() > 0 else 0.0
    mae = float(np.abs(predicted[:, MOUTH_INDEX] - captured[:, MOUTH_INDEX]).mean())
    spread = float(predicted[:, jaw].std() / captured[:, jaw].std()) if captured[:, jaw].std() > 0 else 0.0
    return {"jaw_open_r": round(r, 4), "mouth_mae": round(mae, 4), "jaw_open_spread": round(spread, 3),
            "frames": int(len(captured))}

