"""Training the per-subject expression model: the subject's speech -> its own captured blendshapes.

Targets are tracks["blendshapes"] (MediaPipe's, smoothed) on the training frames; the held-out
frames (subject.split('test')) are only scored. The model is saved as
SUBJECT/model/expression-ENCODER.safetensors and recorded in subject.json "models" ("expression": the
one trained last, which animate uses unless asked for another encoder).
"""
from __future__ import annotations

import json
import time

import numpy as np
import torch

from ..arkit import ARKIT_INDEX
from ..audio.features import DEFAULT_ENCODER, get_encoder, subject_speech
from ..errors import EngineError
from ..progress import Progress
from ..subject.schema import ExpressionRecord
from .model import ExpressionConfig, ExpressionNet
from .predict import MOUTH_INDEX, frame_inputs, model_windows, predict_weights


_FOLDS = 5
_RIDGE_GRID = (300.0, 1000.0, 3000.0, 10000.0, 30000.0, 100000.0)
MAX_MOUTH_GAIN = 3.0  # a curve the audio barely predicts is not blown up into noise


def train_expression(subject, progress: Progress, encoder: str | None = None, models_dir=None) -> dict:
    """Train, score on held-out frames, save under SUBJECT/model/, record in subject.json; returns the metrics."""
    name = encoder or DEFAULT_ENCODER
    started = time.monotonic()
    audio_encoder = get_encoder(name, models_dir)
    per_frame, activity = frame_inputs(subject_speech(subject), audio_encoder, subject.fps, subject.n_frames)
    targets = subject.tracks["blendshapes"].astype(np.float32)
    valid = subject.tracks.get("valid", np.ones(len(targets), np.uint8)) > 0
    train = np.array([i for i in subject.split("train") if valid[i]], np.int64)
    test = np.array([i for i in subject.split("test") if valid[i]], np.int64)
    if len(train) < 50:
        raise EngineError(f"{subject.root}: only {len(train)} usable training frames",
                          "preprocess a longer clip (at least 10 s of speech)", path=str(subject.root))

    config = ExpressionConfig(encoder=name, dim=audio_encoder.dim, fps=subject.fps)
    model = fit(model_windows(per_frame, config.window, config.lead), targets, train, config, progress)
    metrics = score(model, per_frame, activity, targets, test) if len(test) else {}

    path = subject.expression_model_path(name)
    model.save(path, {"metrics": json.dumps(metrics), "trained_on": str(subject.root.name)})
    subject.record_model("expression", ExpressionRecord(
        subject.relative(path), name, config.window, config.ridge, int(len(train)), int(len(test)), metrics,
        round(time.monotonic() - started, 1)))
    return {"expression_" + k: v for k, v in metrics.items()}


def fit(inputs: np.ndarray, targets: np.ndarray, train: np.ndarray, config: ExpressionConfig,
        progress: Progress, ridges=_RIDGE_GRID) -> ExpressionNet:
    """Fit an ExpressionNet on inputs[train] -> targets[train]: ridge regression, its strength chosen
    among `ridges` by contiguous 5-fold cross-validation on the training frames (held-out frames untouched;
    one strength: no cross-validation)."""
    model = ExpressionNet(config)
    flat = inputs[train].reshape(-1, inputs.shape[-1])
    model.feature_mean.copy_(torch.from_numpy(flat.mean(0)))
    model.feature_std.copy_(torch.from_numpy(flat.std(0)).clamp_min(1e-3))
    model.rest_pose.copy_(torch.from_numpy(rest_pose(targets[train])))
    a = model.standardised(inputs[train]).astype(np.float32)  # float32: twice as fast, ample for ridge
    mean_pose = targets[train].mean(0)
    y = (targets[train] - mean_pose).astype(np.float32)
    folds = np.array_split(np.arange(len(a)), _FOLDS) if len(ridges) > 1 else []
    errors = np.zeros(len(ridges))
    # Mouth and jaw are what audio drives; each counts in units of its own spread, so small curves count.
    scale = np.maximum(y[:, MOUTH_INDEX].std(0), 1e-3)
    unseen = np.zeros((len(ridges), len(a), len(MOUTH_INDEX)), np.float32)  # out-of-fold predictions
    with progress.stage("expression", total=len(folds) + 1) as stage:
        for fold in folds:
            keep = np.setdiff1d(np.arange(len(a)), fold)
            for k, w in enumerate(_ridge(a[keep], y[keep], ridges)):
                unseen[k, fold] = (a[fold] @ w)[:, MOUTH_INDEX]
                residual = (unseen[k, fold] - y[fold][:, MOUTH_INDEX]) / scale
                errors[k] += (residual ** 2).sum()
            stage.advance(1)
        best = int(np.argmin(errors))
        (w,) = _ridge(a, y, [ridges[best]])
        stage.advance(1, ridge=ridges[best])
    if folds:
        # Ridge regression predicts the mean of what a sound could mean, so on speech it has not heard its
        # mouth moves with a fraction of the person's spread (a mumbled render). Scaling each mouth curve by
        # its spread over the spread of the out-of-fold predictions gives the mouth back its range; a
        # correlation is unchanged by it. On a short clip the fold models, each fitted on a few seconds,
        # say little and the gain overshoots: it is bounded so that the model never moves more than the
        # person on the speech it was fitted to.
        spread = y[:, MOUTH_INDEX].std(0)
        fitted = (a @ w)[:, MOUTH_INDEX].std(0)
        gain = np.minimum(spread / np.maximum(unseen[best].std(0), 1e-6), spread / np.maximum(fitted, 1e-6))
        w[:, MOUTH_INDEX] *= np.clip(gain, 1.0, MAX_MOUTH_GAIN)
    model.config.ridge = ridges[best]
    with torch.no_grad():
        model.window.weight.copy_(torch.from_numpy(w.T.astype(np.float32)))
        model.window.bias.copy_(torch.from_numpy(mean_pose.astype(np.float32)))
    return model.eval()


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

