"""Training a subject's head: the head stage, lip fine-tuning, and the torso stage (REFERENCE.md "Model").

head   rays inside each frame's head box (more of them in the lip and eye boxes), rendered over the
       frame's torso plate; uncertainty-weighted L1; the occupancy grid re-measured every few steps.
       The audio code is first fitted to the tracked mouth curves alone, then kept on them by a small
       readout loss through the head and lip stages (engine/nerf/field.py says why).
lip    alternates the whole lip box of a frame and random patches (L1, + LPIPS when its weights
       are present), at a lower learning rate.
torso  the 2D pose-conditioned torso network over the background plate.

Checkpoints (one safetensors file, atomic) every `checkpoint_every` steps, at each stage's end and
on Ctrl-C/SIGTERM; `resume=True` continues from the last one.
"""
from __future__ import annotations

import json
import time

import numpy as np
import torch

from ..arkit import ARKIT_INDEX
from ..errors import EngineError
from ..progress import Progress
from ..files import atomic_write_json
from ..subject.format import Subject
from ..subject.schema import HeadRecord
from . import losses
from .checkpoint import load_checkpoint, load_weights, save_checkpoint, save_weights
from .dataset import SubjectData, audio_features, expression_indices, pose_vector, resize_square, working_size
from .encoding import tcnn_available
from .model import HeadModel, choose_cpu_threads, pick_device
from .presets import Preset
from .raymarch import Rays, pixel_rays

STAGES = ("head", "lip", "torso")
GRID_WARMUP_STEPS = 64       # every allowed cell stays occupied until the field has learnt something
OUTSIDE_OPACITY_WEIGHT = 1e-2  # keeps the head's opacity off the torso and background
ATTENTION_SPARSITY = 1e-4      # region attention: audio acts where it must, not everywhere
BUDGET_SHARE = {"head": 0.70, "lip": 0.22, "torso": 0.08}  # of Preset.time_budget_s
# Of the head stage's rays, the shares drawn inside the lip box and the eyes-and-brows box: the parts that
# move are a few percent of the head, and uniform rays would leave them to the mean face.
REGION_RAY_SHARE = {"lip_box": 0.25, "eye_box": 0.10}
AUDIO_SUPERVISION = 0.1        # weight of the mouth-curves readout of the audio code
AUDIO_BATCH, AUDIO_DROPOUT = 128, 0.3  # frames per readout step; input dropout against over-fitting the clip
AUDIO_WARMUP_STEPS = 500       # readout-only steps before the NeRF starts
EXPRESSION_MIN_STD = 0.02     # curves that barely move stay small after standardising (tracking noise ~0.005)
BOX_LO, BOX_HI = (-1.3, -1.5, -1.3), (1.3, 1.6, 1.0)  # decimetres, MediaPipe's canonical head frame


class Trainer:
    def __init__(self, subject: Subject, preset: Preset, progress: Progress, audio_encoder: str | None = None,
                 device: str = "auto", expression: str = "upper", resume: bool = False, seed: int = 0,
                 continue_stages: list[str] | None = None):
        """`continue_stages`: train only these stages on top of the subject's trained head, keeping the others."""
        self.subject, self.preset, self.progress = subject, preset, progress
        self.device = pick_device(device)
        self.checkpoint_path = subject.checkpoint_path
        header = trained = None
        if continue_stages is not None:
            trained = json.loads(subject.head_config_path.read_text())
            if trained["preset"] != preset.name:
                raise EngineError(f"the trained head was made with preset '{trained['preset']}'",
                                  f"a stage subset continues it: train with --preset {trained['preset']} "
                                  "(or all stages to replace it)", path=str(subject.head_config_path))
        if resume:
            if not self.checkpoint_path.is_file():
                raise EngineError(f"{self.checkpoint_path}: no checkpoint to resume from",
                                  "train without --resume", path=str(self.checkpoint_path))
            _, header = load_weights(self.checkpoint_path)
            if header["preset"] != preset.name:
                raise EngineError(f"the checkpoint was made with preset '{header['preset']}'",
                                  f"resume with --preset {header['preset']}", path=str(self.checkpoint_path))
        from ..audio.features import DEFAULT_ENCODER
        base = header["config"] if header else trained
        encoder = base["audio_encoder"] if base else (audio_encoder or DEFAULT_ENCODER)
        expression = base["expression"] if base else expression

        with progress.stage(f"audio features ({encoder})", 1) as stage:
            audio = audio_features(subject, encoder)
            stage.advance()
        size = base["size"] if base else working_size(subject.size, preset.max_size)
        self.data = SubjectData(subject, audio, expression, max_frames=preset.max_frames, progress=progress, size=size)
        config = base if base else self._config(encoder, expression, audio.shape[1])
        if trained and not header:  # a saved head is in the canonical layout: train it on this machine's grid
            config = {**config, "use_tcnn": self.device.type == "cuda" and tcnn_available()}
        self.model = HeadModel(config).to(self.device)
        self.optimizers = self._optimizers()
        self.stages_done: list[str] = []
        self.stage, self.step = STAGES[0], 0
        self.metrics: dict = {}
        self.seconds = 0.0
        self.stage_seconds = 0.0
        if header:
            header = load_checkpoint(self.checkpoint_path, self.model, self.optimizers, self.device)
            self.stages_done, self.stage, self.step = header["stages_done"], header["stage"], header["step"]
            self.metrics, self.seconds = header.get("metrics", {}), header.get("seconds", 0.0)
            self.stage_seconds = header.get("stage_seconds", 0.0)
            progress.info(f"resuming at {self.stage} step {self.step}")
        elif trained:
            self.model.load_weights(load_weights(subject.head_weights_path, self.device)[0])
            self.stages_done = [s for s in trained.get("stages_done", []) if s not in continue_stages]
            self.metrics, self.seconds = dict(trained.get("metrics", {})), trained.get("train_seconds", 0.0)
            progress.info(f"continuing the trained head: keeping {', '.join(self.stages_done) or 'no stage'}, "
                          f"training {', '.join(continue_stages)}")
        else:
            train_audio = torch.from_numpy(audio[self.data.train_frames])
            self.model.audio_mean.copy_(train_audio.mean(0))
            self.model.audio_std.copy_(train_audio.std(0).clamp(min=1e-3))
            train_expressions = torch.from_numpy(self.data.expressions[self.data.train_frames])
            self.model.expression_mean.copy_(train_expressions.mean(0))
            self.model.expression_std.copy_(train_expressions.std(0).clamp(min=EXPRESSION_MIN_STD))
            with progress.stage("carving the head's space", 1) as stage:
                self.model.grid.carve(self.data.carve(self.model.grid))
                stage.advance()
        self._choose_threads()
        self.rng = np.random.default_rng(seed + self.step + 100_000 * len(self.stages_done))
        self.lpips = losses.load_lpips(self.device)
        if self.lpips is None:
            progress.info("LPIPS weights not present: the lip stage uses L1 only")
        self.eval_row = self.data.n_train + len(self.data.test_frames) // 2
        self.mouth = self.data.mouth_targets(self.model.config.get("audio_supervision", []))

    def _config(self, encoder: str, expression: str, audio_dim: int) -> dict:
        data = self.data
        return {"audio_encoder": encoder, "audio_dim": int(audio_dim), "audio_window": 8,
                "expression": expression, "expression_indices": expression_indices(expression),
                "encoding": dict(self.preset.encoding), "grid_resolution": self.preset.grid_resolution,
                "box_lo": list(BOX_LO), "box_hi": list(BOX_HI), "samples": self.preset.samples,
                "size": data.size, "intrinsics": data.intrinsics, "n_latents": data.n_train,
                "train_frames": [int(f) for f in data.train_frames],
                "reference_pose": data.reference_pose.tolist(), "preset": self.preset.name,
                "audio_supervision": data.mouth_channels(),
                "use_tcnn": self.device.type == "cuda" and tcnn_available()}

    def _optimizers(self) -> dict:
        field = self.model.field
        grid_params = list(field.encoding.parameters())
        grid_ids = {id(p) for p in grid_params}
        net_params = [p for p in field.parameters() if id(p) not in grid_ids]
        adam = dict(betas=(0.9, 0.99), eps=1e-15)
        return {"head": torch.optim.AdamW([{"params": grid_params, "lr": self.preset.lr_grid, "weight_decay": 0.0},
                                           {"params": net_params, "lr": self.preset.lr_net, "weight_decay": 1e-6}], **adam),
                "torso": torch.optim.AdamW([{"params": list(self.model.torso.canvas.parameters()),
                                             "lr": self.preset.lr_grid, "weight_decay": 0.0},
                                            {"params": [p for n, p in self.model.torso.named_parameters()
                                                        if not n.startswith("canvas.")],
                                             "lr": self.preset.lr_net, "weight_decay": 1e-6}], **adam)}

    def _choose_threads(self) -> None:
        if self.device.type == "cpu":
            self.metrics["cpu_threads"] = choose_cpu_threads()

    # The loop
    def run(self, stages=STAGES) -> dict:
        steps_of = {"head": self.preset.head_steps, "lip": self.preset.lip_steps, "torso": self.preset.torso_steps}
        step_fn = {"head": self.head_step, "lip": self.lip_step, "torso": self.torso_step}
        try:
            for name in STAGES:
                if name not in stages or name in self.stages_done:
                    continue
                if self.stage != name:
                    self.stage, self.step, self.stage_seconds = name, 0, 0.0
                total = steps_of[name]
                with self.progress.stage(f"train {name}", total) as bar:
                    if self.step:
                        bar.advance(self.step)
                    started, started_step, seconds_before = time.monotonic(), self.step, self.seconds
                    stage_seconds_before = self.stage_seconds
                    budget = self.preset.time_budget_s * BUDGET_SHARE[name] if self.preset.time_budget_s else None
                    metrics: dict = {}
                    while self.step < total:
                        # How far through the stage: by steps, or by its time budget when that runs out first.
                        done = self.step / total
                        if budget:
                            done = max(done, self.stage_seconds / budget)
                        if done >= 1.0:
                            self.progress.info(f"{name}: time budget reached at step {self.step} of {total}")
                            break
                        loss = step_fn[name](self.step, done)
                        self.step += 1
                        elapsed = time.monotonic() - started
                        self.seconds = seconds_before + elapsed
                        self.stage_seconds = stage_seconds_before + elapsed
                        metrics = {"loss": round(loss, 5), "steps_per_s": round((self.step - started_step) / elapsed, 3)}
                        if name != "torso" and (self.step % self.preset.eval_every == 0 or self.step == total):
                            self.metrics["heldout_psnr"] = round(self.heldout_psnr(), 2)
                            self.metrics["audio_mouth_r"] = self.audio_mouth_correlation()
                            metrics["psnr"] = self.metrics["heldout_psnr"]
                        bar.advance(1, **metrics)
                        if self.step % self.preset.checkpoint_every == 0 and self.step < total:
                            self.save_checkpoint()
                            self._choose_threads()  # the machine's load changes; re-measure
                    if "psnr" not in metrics and name != "torso":
                        self.metrics["heldout_psnr"] = round(self.heldout_psnr(), 2)
                    self.metrics[f"{name}_steps_per_s"] = metrics.get("steps_per_s")
                    self.metrics[f"{name}_steps"] = self.step
                self.stages_done.append(name)
                self.save_checkpoint()
        except KeyboardInterrupt:
            self.save_checkpoint()
            self.progress.info(f"stopped: checkpoint saved at {self.stage} step {self.step}; continue with --resume")
            raise
        return self.finish()

    # One step of each stage
    def _set_lr(self, optimizer, done: float, scale: float = 1.0) -> None:
        """Exponential decay to a tenth over the stage; `done` is the fraction of the stage behind us."""
        decay = 0.1 ** done
        for group, base in zip(optimizer.param_groups, (self.preset.lr_grid, self.preset.lr_net)):
            group["lr"] = base * scale * decay

    def _frames(self, count: int) -> np.ndarray:
        return self.rng.choice(self.data.n_train, size=min(count, self.data.n_train), replace=False)

    def _render_pixels(self, rows: np.ndarray, slot: np.ndarray, x: np.ndarray, y: np.ndarray, training: bool):
        """Head rendered over the torso plates for pixels (x, y) of frames rows[slot]; -> (output, pred, target, under).

        In training, rays inside the frame's lip box see the mean per-frame latent, not the frame's own:
        the latents are there to absorb lighting and exposure drift, and around the mouth a free 4-d code
        per frame would absorb the mouth itself (held-out frames, which get the mean code, would then
        render an average mouth); this way only the audio and expression codes can explain it.
        """
        data, device = self.data, self.device
        audio, expressions, poses = data.conditioning(rows, device)
        codes = self.model.frame_codes(audio, expressions)
        latents = self.model.latents_for(torch.from_numpy(rows).to(device))
        slot_t = torch.from_numpy(slot).to(device)
        xf, yf = (torch.from_numpy(v.astype(np.float32)).to(device) for v in (x, y))
        origins, directions = pixel_rays(poses[slot_t], data.intrinsics, xf, yf)
        frame = slot_t
        if training:
            in_lips = torch.from_numpy(data.inside(data.lip_box[rows[slot]], x, y)).to(device)
            mean = self.model.field.latents.weight.mean(dim=0, keepdim=True).expand_as(latents)
            codes, latents = torch.cat([codes, codes]), torch.cat([latents, mean])
            frame = slot_t + len(rows) * in_lips.long()
        out = self.model.render_head(Rays(origins, directions, frame), codes, latents, self.preset.samples,
                                     perturb=training, training=training)
        frame_rows = rows[slot]
        target = torch.from_numpy(data.rgb[frame_rows, y, x].astype(np.float32) / 255.0).to(device)
        under = torch.from_numpy(data.torso[frame_rows, y, x].astype(np.float32) / 255.0).to(device)
        pred = out.rgb + (1.0 - out.opacity[:, None]) * under
        return out, pred, target, frame_rows

    def _update_grid(self) -> None:
        rows = self._frames(8)
        audio, expressions, _ = self.data.conditioning(rows, self.device)
        with torch.no_grad():
            codes = self.model.frame_codes(audio, expressions)

            def density(points01):
                pick = torch.randint(len(codes), (len(points01),), device=self.device)
                return self.model.field.density_only(points01.to(self.device), codes[pick])

            self.model.grid.update(density, fraction=1.0 if self.step < 2 * GRID_WARMUP_STEPS else 0.25)

    def head_step(self, step: int, done: float) -> float:
        optimizer = self.optimizers["head"]
        self._set_lr(optimizer, done)
        if step >= GRID_WARMUP_STEPS and step % self.preset.grid_update_every == 0:
            self._update_grid()
        if step == 0:
            self.fit_audio_code()
        rows = self._frames(self.preset.frames_per_step)
        per_frame = self.preset.rays_per_step // len(rows)
        counts = {box: int(per_frame * share) for box, share in REGION_RAY_SHARE.items()}
        counts["head_box"] = per_frame - sum(counts.values())
        parts = [self.data.pixels_in_boxes(rows, getattr(self.data, box), count, self.rng)
                 for box, count in counts.items()]
        slot, x, y = (np.concatenate(arrays) for arrays in zip(*parts))
        out, pred, target, frame_rows = self._render_pixels(rows, slot, x, y, training=True)
        outside = torch.from_numpy(~self.data.head_mask[frame_rows, y, x]).to(self.device).float()
        loss = (losses.uncertainty_weighted_l1(pred, target, out.uncertainty)
                + OUTSIDE_OPACITY_WEIGHT * (out.opacity * outside).mean())
        if out.attention is not None and len(out.attention):
            loss = loss + ATTENTION_SPARSITY * out.attention.mean()
        loss = loss + AUDIO_SUPERVISION * self.audio_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def lip_step(self, step: int, done: float) -> float:
        """Even steps: a frame's whole lip box; odd steps: a random patch in a frame's head box."""
        optimizer = self.optimizers["head"]
        self._set_lr(optimizer, done, scale=0.2)
        data = self.data
        row = self._frames(1)
        if step % 2 == 0:
            box = data.lip_box[row[0]]
        else:
            patch = max(16, data.size // 8)
            hx0, hy0, hx1, hy1 = data.head_box[row[0]]
            x0 = int(self.rng.integers(hx0, max(hx0 + 1, hx1 - patch)))
            y0 = int(self.rng.integers(hy0, max(hy0 + 1, hy1 - patch)))
            box = (x0, y0, min(data.size, x0 + patch), min(data.size, y0 + patch))
        x, y = data.box_pixels(box)
        out, pred, target, _ = self._render_pixels(row, np.zeros(len(x), np.int64), x, y, training=True)
        loss = losses.l1(pred, target)
        if self.lpips is not None:
            shape = (1, int(box[3] - box[1]), int(box[2] - box[0]), 3)
            as_image = lambda t: t.reshape(shape).permute(0, 3, 1, 2) * 2 - 1  # noqa: E731
            loss = loss + 0.01 * self.lpips(as_image(pred), as_image(target)).mean()
        loss = loss + AUDIO_SUPERVISION * self.audio_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def audio_loss(self) -> torch.Tensor:
        """Mean squared error of the mouth curves read out of the audio code, on random training frames."""
        if self.model.field.mouth_readout is None:
            return torch.zeros((), device=self.device)
        index = self.data.frames[self._frames(AUDIO_BATCH)]
        windows = torch.from_numpy(self.data.audio_windows[index]).to(self.device)
        windows = torch.nn.functional.dropout(windows, AUDIO_DROPOUT, training=True)
        target = torch.from_numpy(self.mouth[index]).to(self.device)
        return ((self.model.mouth_from_audio(windows) - target) ** 2).mean()

    def fit_audio_code(self) -> None:
        """Before the NeRF: shape the audio code on the mouth curves alone (seconds on a CPU)."""
        if self.model.field.mouth_readout is None:
            return
        optimizer = self.optimizers["head"]
        with self.progress.stage("audio code from the mouth curves", AUDIO_WARMUP_STEPS) as bar:
            for _ in range(AUDIO_WARMUP_STEPS):
                self._set_lr(optimizer, 0.0)
                loss = self.audio_loss()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.advance(1, loss=round(float(loss.detach()), 4))
        self.metrics["audio_mouth_r"] = self.audio_mouth_correlation()

    @torch.no_grad()
    def audio_mouth_correlation(self) -> float | None:
        """Held-out correlation of jawOpen read out of the audio code with the tracked jawOpen."""
        channels = self.model.config.get("audio_supervision", [])
        test = self.data.test_frames
        if ARKIT_INDEX["jawOpen"] not in channels or len(test) < 3:
            return None
        column = channels.index(ARKIT_INDEX["jawOpen"])
        windows = torch.from_numpy(self.data.audio_windows[test]).to(self.device)
        predicted = self.model.mouth_from_audio(windows)[:, column].cpu().numpy()
        truth = self.mouth[test, column]
        if predicted.std() < 1e-8 or truth.std() < 1e-8:
            return None
        return round(float(np.corrcoef(predicted, truth)[0, 1]), 3)

    def torso_step(self, step: int, done: float) -> float:
        optimizer = self.optimizers["torso"]
        self._set_lr(optimizer, done)
        data, device, s = self.data, self.device, self.data.size
        rows = self._frames(self.preset.frames_per_step)
        per_frame = self.preset.torso_rays // len(rows)
        slot = np.repeat(np.arange(len(rows)), per_frame)
        x, y = self.rng.integers(0, s, len(slot)), self.rng.integers(0, s, len(slot))
        frame_rows = rows[slot]
        uv = torch.from_numpy(np.stack([(x + 0.5) / s, (y + 0.5) / s], -1).astype(np.float32)).to(device)
        poses = torch.from_numpy(pose_vector(data.poses[data.frames[frame_rows]], data.reference_pose)).to(device)
        latents = self.model.torso_latents_for(torch.from_numpy(frame_rows).to(device))
        rgb, alpha = self.model.torso(uv, poses, latents)
        background = torch.from_numpy(self.background[y, x]).to(device)
        pred = rgb * alpha[:, None] + (1 - alpha[:, None]) * background
        target = torch.from_numpy(data.torso[frame_rows, y, x].astype(np.float32) / 255.0).to(device)
        loss = losses.l1(pred, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    @property
    def background(self) -> np.ndarray:
        if not hasattr(self, "_background"):
            self._background = resize_square(self.subject.background(), self.data.size).astype(np.float32) / 255.0
        return self._background

    @torch.no_grad()
    def heldout_psnr(self) -> float:
        """PSNR of the head box of one held-out frame, rendered over its torso plate."""
        data, row = self.data, self.eval_row
        x, y = data.box_pixels(data.head_box[row])
        preds, targets = [], []
        for start in range(0, len(x), 8192):
            xs, ys = x[start:start + 8192], y[start:start + 8192]
            _, pred, target, _ = self._render_pixels(np.array([row]), np.zeros(len(xs), np.int64), xs, ys,
                                                     training=False)
            preds.append(pred)
            targets.append(target)
        return losses.psnr(torch.cat(preds), torch.cat(targets))

    # Saving
    def header(self) -> dict:
        return {"preset": self.preset.name, "config": self.model.config, "stages_done": self.stages_done,
                "stage": self.stage, "step": self.step, "metrics": self.metrics, "seconds": round(self.seconds, 1),
                "stage_seconds": round(self.stage_seconds, 1)}

    def save_checkpoint(self) -> None:
        save_checkpoint(self.checkpoint_path, self.model, self.optimizers, self.header())

    def finish(self) -> dict:
        """Write the final weights and config, record the model in subject.json (the train command drops
        the checkpoint once its last stage is done, so a cancel in the expression stage can resume)."""
        weights, config_path = self.subject.head_weights_path, self.subject.head_config_path
        config = {**self.model.config, "stages_done": self.stages_done, "metrics": self.metrics,
                  "train_seconds": round(self.seconds, 1)}
        self.model.config = config
        save_weights(weights, self.model.state_dict(), {"preset": self.preset.name})
        atomic_write_json(config_path, config)
        self.subject.record_model("head", HeadRecord(
            self.subject.relative(weights), self.subject.relative(config_path), self.preset.name,
            config["audio_encoder"], list(self.stages_done), self.metrics.get("heldout_psnr"), round(self.seconds, 1)))
        return {"model": str(weights), "train_seconds": round(self.seconds, 1), **self.metrics}

