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

from ..arkit import ARKIT_INDEX, MOUTH_AND_JAW
from ..audio.features import DEFAULT_ENCODER, get_encoder
from ..errors import EngineError
from ..media.audio import load_audio
from ..progress import Progress
from .model import ExpressionConfig, ExpressionNet
from .predict import MOUTH_INDEX, frame_inputs, model_windows, predict_weights


def model_file(encoder: str) -> str:
    """One model per encoder, so a subject can hold several side by side."""
    return f"expression-{encoder}.safetensors"

_SILENT = 0.1  # voice activity below this counts as a pause when measuring the rest pose


def train_expression(subject, progress: Progress, encoder: str | None = None, models_dir=None,
                     steps: int = 600, seed: int = 0) -> dict:
    """Train, score on held-out frames, save under SUBJECT/model/, record in subject.json; returns the metrics."""
    name = encoder or DEFAULT_ENCODER
    started = time.monotonic()
    audio_encoder = get_encoder(name, models_dir)
    samples = load_audio(subject.audio_path)
    per_frame, activity = frame_inputs(samples, audio_encoder, subject.fps, subject.n_frames)
    targets = subject.tracks["blendshapes"].astype(np.float32)
    valid = subject.tracks.get("valid", np.ones(len(targets), np.uint8)) > 0
    train = np.array([i for i in subject.split("train") if valid[i]], np.int64)
    test = np.array([i for i in subject.split("test") if valid[i]], np.int64)
    if len(train) < 50:
        raise EngineError(f"{subject.root}: only {len(train)} usable training frames",
                          "preprocess a longer clip (at least 10 s of speech)", path=str(subject.root))

    config = ExpressionConfig(encoder=name, dim=audio_encoder.dim, fps=subject.fps)
    model = fit(model_windows(per_frame, config.window, config.lead), targets, train, activity, config, progress, steps, seed)
    metrics = score(model, per_frame, activity, targets, test) if len(test) else {}

    path = subject.model_dir / model_file(name)
    model.save(path, {"metrics": json.dumps(metrics), "trained_on": str(subject.root.name)})
    record = {"file": f"model/{model_file(name)}", "encoder": name, "window": config.window,
              "train_frames": int(len(train)), "test_frames": int(len(test)), "metrics": metrics,
              "seconds": round(time.monotonic() - started, 1)}
    models = {**_models_on_disk(subject), "expression": record}
    subject.update_meta(models=models)
    return {"expression_" + k: v for k, v in metrics.items()}


def fit(inputs: np.ndarray, targets: np.ndarray, train: np.ndarray, activity: np.ndarray,
        config: ExpressionConfig, progress: Progress, steps: int = 600, seed: int = 0,
        batch: int = 128) -> ExpressionNet:
    """Fit an ExpressionNet on inputs[train] -> targets[train] (Adam, weighted MSE, fixed step count)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = ExpressionNet(config)
    x = torch.from_numpy(inputs[train])
    y = torch.from_numpy(targets[train])
    flat = x.reshape(-1, x.shape[-1])
    model.feature_mean.copy_(flat.mean(0))
    model.feature_std.copy_(flat.std(0).clamp_min(1e-3))
    model.target_mean.copy_(y.mean(0))
    model.target_std.copy_(y.std(0).clamp_min(1e-3))
    model.rest_pose.copy_(torch.from_numpy(rest_pose(targets[train], activity[train])))
    # Mouth and jaw are what audio drives; the rest is mostly noise from the audio's point of view.
    channel_weight = torch.full((targets.shape[1],), 0.3)
    channel_weight[torch.from_numpy(MOUTH_INDEX)] = 1.0
    channel_weight[ARKIT_INDEX["jawOpen"]] = 3.0
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small only loses time to thread hand-offs (10x on a busy CPU)
    try:
        _train_steps(model, x, y, channel_weight, progress, steps, batch, rng)
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def _train_steps(model, x, y, channel_weight, progress, steps, batch, rng) -> None:
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps)
    with progress.stage("expression", total=steps) as stage:
        for step in range(steps):
            pick = torch.from_numpy(rng.integers(0, len(x), min(batch, len(x))))
            noisy = x[pick] + 0.1 * model.feature_std * torch.randn_like(x[pick])  # feature noise: less memorising
            standardised = (y[pick] - model.target_mean) / model.target_std
            loss = (((model(noisy) - standardised) ** 2) * channel_weight).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            if step % 50 == 49 or step == steps - 1:
                stage.advance(50 if step % 50 == 49 else (step % 50) + 1, loss=float(loss.detach()))


def rest_pose(targets: np.ndarray, activity: np.ndarray) -> np.ndarray:
    """The subject's face when not speaking: mean over its silent frames (low percentile if it never pauses)."""
    silent = activity < _SILENT
    if silent.sum() >= 10:
        return targets[silent].mean(0).astype(np.float32)
    return np.percentile(targets, 10, axis=0).astype(np.float32)


def score(model: ExpressionNet, per_frame: np.ndarray, activity: np.ndarray, targets: np.ndarray,
          frames: np.ndarray) -> dict:
    """Held-out figures: Pearson r of jawOpen and mean absolute error over the mouth and jaw blendshapes."""
    predicted = predict_weights(model, per_frame, activity)[frames]
    return compare(predicted, targets[frames])


def compare(predicted: np.ndarray, captured: np.ndarray) -> dict:
    jaw = ARKIT_INDEX["jawOpen"]
    r = float(np.corrcoef(predicted[:, jaw], captured[:, jaw])[0, 1]) if captured[:, jaw].std() > 0 else 0.0
    mae = float(np.abs(predicted[:, MOUTH_INDEX] - captured[:, MOUTH_INDEX]).mean())
    return {"jaw_open_r": round(r, 4), "mouth_mae": round(mae, 4), "frames": int(len(captured))}


def _models_on_disk(subject) -> dict:
    """subject.json's "models" as on disk now (another stage may have written since `subject` was read)."""
    path = subject.root / "subject.json"
    return json.loads(path.read_text()).get("models", {}) if path.is_file() else subject.meta.get("models", {})
