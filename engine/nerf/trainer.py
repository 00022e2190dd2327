"""Training a subject's head: the NeRF stages of engine/nerf/stages.py (head, lip fine-tuning, torso)
run by one loop that sums each step's named losses and steps the stage's optimizer.

The trainer owns what the stages share: the subject's data, the model and its optimizers, the random
frame draws, rendering pixels over the torso plates, the held-out figures, and the time budget; once
the stages are done, a head trained on the mouth curves has its mouth's gain measured (mouth_gain.py).
Checkpoints (one safetensors file, atomic) every `checkpoint_every` steps, at each stage's end and
on Ctrl-C/SIGTERM; `resume=True` continues from the last one.
"""
from __future__ import annotations

import functools
import operator
import time
from dataclasses import replace

import numpy as np
import torch

from ..arkit import ARKIT_INDEX
from ..errors import EngineError
from ..progress import Progress
from ..subject.format import Subject
from ..subject.schema import HeadRecord
from . import losses
from .checkpoint import load_checkpoint, load_weights, save_checkpoint, save_weights
from .config import BOX_HI, BOX_LO, EncodingConfig, HeadConfig, TrainingRecord, parse_head, read_head_json, write_head_json
from .dataset import (MAX_DRAW_BOOST, RARE_STATE_SHARE, SubjectData, audio_features, expression_indices,
                      follows_mouth_curves, working_size)
from .device import ThreadTuner, pick_device
from .draws import FrameDraws
from .encoding import tcnn_available
from .model import HeadModel
from .presets import Preset
from .raymarch import Rays, pixel_rays
from .stages import STAGE_TYPES, STAGES

ADAM = dict(betas=(0.9, 0.99), eps=1e-15)
NET_WEIGHT_DECAY = 1e-6  # the networks' (the hash grids have none)
MEASURED_AFTER = ("head", "lip")  # stages that change the face: the mouth's gain is measured after them


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
            trained, record = read_head_json(subject.head_config_path)
            if trained.preset != preset.name:
                raise EngineError(f"the trained head was made with preset '{trained.preset}'",
                                  f"a stage subset continues it: train with --preset {trained.preset} "
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
        base = parse_head(header["config"], self.checkpoint_path)[0] if header else trained
        encoder = base.audio_encoder if base else (audio_encoder or DEFAULT_ENCODER)
        expression = base.expression if base else expression

        with progress.stage(f"audio features ({encoder})", 1) as stage:
            audio = audio_features(subject, encoder)
            stage.advance()
        size = base.size if base else working_size(subject.size, preset.max_size)
        self.data = SubjectData(subject, audio, expression, max_frames=preset.max_frames, progress=progress, size=size)
        config = base if base else self._config(encoder, expression, audio.shape[1])
        if trained and not header:  # a saved head is in the canonical layout: train it on this machine's grid
            config = replace(config, use_tcnn=self._tcnn())
        # A checkpoint's optimizer state is in the layout of the grid that trained it: resume on that one.
        self.model = HeadModel(config, use_tcnn=config.use_tcnn).to(self.device)
        self.stages = {stage.name: stage(self) for stage in STAGE_TYPES}
        self.optimizers = self._optimizers()
        # TrainingConfig.audio_code_dropout applies to heads whose mouth follows the curves.
        self.follows_mouth_curves = follows_mouth_curves(config.expression_indices)
        self.audio_code_dropout = preset.training.audio_code_dropout if self.follows_mouth_curves else 0.0
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
            self.stages_done = [s for s in record.stages_done if s not in continue_stages]
            self.metrics, self.seconds = dict(record.metrics), record.train_seconds
            progress.info(f"continuing the trained head: keeping {', '.join(self.stages_done) or 'no stage'}, "
                          f"training {', '.join(continue_stages)}")
        else:
            train_audio = torch.from_numpy(audio[self.data.train_frames])
            self.model.audio_mean.copy_(train_audio.mean(0))
            self.model.audio_std.copy_(train_audio.std(0).clamp(min=1e-3))
            train_expressions = torch.from_numpy(self.data.expressions[self.data.train_frames])
            self.model.set_expression_scale(train_expressions, preset.training.expression_min_std)
            with progress.stage("carving the head's space", 1) as stage:
                self.model.grid.carve(self.data.carve(self.model.grid))
                stage.advance()
        self._choose_threads()
        self.rng = np.random.default_rng(seed + self.step + 100_000 * len(self.stages_done))
        # A resumed training measures the frames' errors afresh.
        self.draws = FrameDraws(self.data.frame_weights, MAX_DRAW_BOOST, 1 - RARE_STATE_SHARE)
        self.eye_draws = FrameDraws(self.data.eye_weights, MAX_DRAW_BOOST, 1 - RARE_STATE_SHARE)
        self.lpips = losses.load_lpips(self.device)
        if self.lpips is None:
            progress.info("LPIPS weights not present: the lip stage uses L1 only")
        self.eval_row = self.data.n_train + len(self.data.test_frames) // 2
        self.row_shot = torch.from_numpy(subject.shot_of(self.data.train_frames)).to(self.device)
        self.shot_sizes = torch.bincount(self.row_shot).clamp_min(1)  # training frames per shot
        self.mouth = self.data.mouth_targets(list(self.model.config.audio_supervision))

    def _tcnn(self) -> bool:
        return self.device.type == "cuda" and tcnn_available()

    def _config(self, encoder: str, expression: str, audio_dim: int) -> HeadConfig:
        data = self.data
        return HeadConfig(
            audio_encoder=encoder, audio_dim=int(audio_dim), audio_window=8, expression=expression,
            expression_indices=tuple(expression_indices(expression)), encoding=EncodingConfig(**self.preset.encoding),
            grid_resolution=self.preset.grid_resolution, box_lo=BOX_LO, box_hi=BOX_HI, samples=self.preset.samples,
            size=data.size, intrinsics=dict(data.intrinsics), n_latents=data.n_train,
            train_frames=tuple(int(f) for f in data.train_frames),
            reference_pose=tuple(tuple(row) for row in data.reference_pose.tolist()), preset=self.preset.name,
            audio_supervision=tuple(data.mouth_channels()), use_tcnn=self._tcnn())

    def _optimizers(self) -> dict:
        """One AdamW per optimizer the stages name, over the parameter groups its first stage gives."""
        optimizers = {}
        for stage in self.stages.values():
            if stage.optimizer not in optimizers:
                grid_params, net_params = stage.parameter_groups()
                optimizers[stage.optimizer] = torch.optim.AdamW(
                    [{"params": grid_params, "lr": self.preset.lr_grid, "weight_decay": 0.0},
                     {"params": net_params, "lr": self.preset.lr_net, "weight_decay": NET_WEIGHT_DECAY}], **ADAM)
        return optimizers

    def _choose_threads(self) -> None:
        self.thread_tuner = ThreadTuner() if self.device.type == "cpu" else None
        if self.thread_tuner:
            self.metrics["cpu_threads"] = self.thread_tuner.start()

    # The loop
    def run(self, stages=STAGES) -> dict:
        try:
            for name, stage in self.stages.items():
                if name not in stages or name in self.stages_done:
                    continue
                if self.stage != name:
                    self.stage, self.step, self.stage_seconds = name, 0, 0.0
                if name in MEASURED_AFTER:  # the field changes: its mouth's gain is measured again after
                    self.model.set_mouth_gain(1.0)
                    for key in [k for k in self.metrics if k.startswith("mouth_gain")]:
                        del self.metrics[key]
                total = stage.steps()
                if self.thread_tuner:
                    self.thread_tuner.new_work()
                with self.progress.stage(f"train {name}", total) as bar:
                    if self.step:
                        bar.advance(self.step)
                    started, started_step, seconds_before = time.monotonic(), self.step, self.seconds
                    stage_seconds_before = self.stage_seconds
                    budget = self.allowance(name)
                    metrics: dict = {}
                    while self.step < total:
                        # How far through the stage: by steps, or by its time budget when that runs out first.
                        done = self.step / total
                        if budget:
                            done = max(done, self.stage_seconds / budget)
                        if done >= 1.0:
                            self.progress.info(f"{name}: time budget reached at step {self.step} of {total}")
                            break
                        step_started = time.monotonic()
                        loss = self._step(stage, done)
                        if self.thread_tuner and self.thread_tuner.done(time.monotonic() - step_started):
                            self.metrics["cpu_threads"] = self.thread_tuner.threads
                            self.progress.info(f"{name} step {self.step}: {self.thread_tuner.threads} CPU thread(s) "
                                               "from here (a trial of that count ran faster)")
                        self.step += 1
                        elapsed = time.monotonic() - started
                        self.seconds = seconds_before + elapsed
                        self.stage_seconds = stage_seconds_before + elapsed
                        metrics = {"loss": round(loss, 5), "steps_per_s": round((self.step - started_step) / elapsed, 3)}
                        if stage.heldout and (self.step % self.preset.eval_every == 0 or self.step == total):
                            self.metrics["heldout_psnr"] = round(self.heldout_psnr(), 2)
                            self.metrics["audio_mouth_r"] = self.audio_mouth_correlation()
                            metrics["psnr"] = self.metrics["heldout_psnr"]
                        bar.advance(1, **metrics)
                        if self.step % self.preset.checkpoint_every == 0 and self.step < total:
                            self.save_checkpoint()
                    if "psnr" not in metrics and stage.heldout:
                        self.metrics["heldout_psnr"] = round(self.heldout_psnr(), 2)
                    self.metrics[f"{name}_steps_per_s"] = metrics.get("steps_per_s")
                    if self.thread_tuner:  # the count it ended on, and how often a trial of the other changed it
                        self.metrics["cpu_threads"] = self.thread_tuner.threads
                        self.metrics["cpu_thread_switches"] = self.thread_tuner.switches
                    self.metrics[f"{name}_steps"] = self.step
                    self.metrics[f"{name}_seconds"] = round(self.stage_seconds, 1)
                self.stages_done.append(name)
                self.save_checkpoint()
            if self.follows_mouth_curves and "head" in self.stages_done and "mouth_gain" not in self.metrics:
                self.measure_mouth_gain()
        except KeyboardInterrupt:
            self.save_checkpoint()
            self.progress.info(f"stopped: checkpoint saved at {self.stage} step {self.step}; continue with --resume")
            raise
        return self.finish()

    # The time budget
    def share(self, name: str) -> float:
        """Stage `name`'s share of Preset.time_budget_s ("mouth_gain": the gain measure's)."""
        config = self.preset.training
        if name == "mouth_gain":
            return config.mouth_gain_budget
        share = self.stages[name].budget_share()
        if name == "head" and not self.follows_mouth_curves:
            share += config.mouth_gain_budget  # no gain to measure: the time goes to the mouth the head learns
        return share

    def allowance(self, name: str) -> float | None:
        """Seconds stage `name` ("mouth_gain": the gain measure) may take: its share of the time budget and
        what the stages before it left of theirs. A head that reaches its steps early leaves them to the lip
        stage, which a fixed share cut short (lieu_60s quiet: every head step, then 2,391 of 2,500 lip steps);
        the whole training still keeps to the budget. None: no budget."""
        total = self.preset.time_budget_s
        if not total:
            return None
        before = STAGES if name == "mouth_gain" else STAGES[:STAGES.index(name)]
        unused = sum(max(0.0, total * self.share(s) - self.metrics[f"{s}_seconds"]) for s in before
                     if s in self.stages_done and f"{s}_seconds" in self.metrics)
        return total * self.share(name) + unused

    def measure_mouth_gain(self) -> None:
        """Set the trained head's mouth gain from renders of its training frames (engine/nerf/mouth_gain.py)."""
        from .mouth_gain import measure_mouth_gain
        from .talking_head import TalkingHead
        self.model.eval()
        record = TrainingRecord(tuple(self.stages_done), self.metrics, round(self.seconds, 1))
        head = TalkingHead(self.subject, self.model, record, self.device)
        measured = measure_mouth_gain(self.subject, head, self.data.audio_windows, self.data.train_frames, self.progress,
                                      self.allowance("mouth_gain"))
        self.model.train()
        self.metrics["mouth_gain"] = measured["gain"]
        self.metrics["mouth_gain_measure"] = measured.get("tried") or measured.get("skipped")
        if "skipped" in measured:
            self.progress.info(f"mouth gain 1.0: {measured['skipped']}")
            return
        self.metrics["mouth_gain_frames"] = measured["frames"]
        if measured.get("out_of_time"):
            self.metrics["mouth_gain_out_of_time"] = True
        if measured.get("past_psnr_bound"):  # the gain tried whose face PSNR fell past the bound
            self.metrics["mouth_gain_past_psnr_bound"] = measured["past_psnr_bound"]
        self.progress.info(f"mouth gain {measured['gain']}: " + "; ".join(
            f"x{g}: opens {r} of the person's, face PSNR {p} dB" for g, r, p in measured["tried"])
            + f" ({measured['frames']} training frames"
            + ("; no time for the next gain, extrapolated from the last two)" if measured.get("out_of_time") else ")"))

    # One step
    def _step(self, stage, done: float) -> float:
        """One step of `stage`, `done` the fraction of it behind us: its losses, summed, step its optimizer."""
        optimizer = self.optimizers[stage.optimizer]
        self.set_lr(optimizer, done, stage.lr_scale)
        return self.optimise(optimizer, stage.losses(self.step))

    @staticmethod
    def optimise(optimizer, terms: dict[str, torch.Tensor]) -> float:
        """Sum the named loss terms (in order), backpropagate and step; -> the summed loss."""
        loss = functools.reduce(operator.add, terms.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def set_lr(self, optimizer, done: float, scale: float = 1.0) -> None:
        """Exponential decay to TrainingConfig.lr_decay over the stage; `done` is the fraction of it behind us."""
        decay = self.preset.training.lr_decay ** done
        for group, base in zip(optimizer.param_groups, (self.preset.lr_grid, self.preset.lr_net)):
            group["lr"] = base * scale * decay

    def frames(self, count: int) -> np.ndarray:
        """`count` distinct random training rows (all of them when there are fewer), rare face states and
        frames whose lips the field still draws badly drawn more often (engine/nerf/draws.py); the eyes'
        rays have their own draw (eye_frames)."""
        return self.draws.draw(self.rng, count)

    def eye_frames(self, count: int) -> np.ndarray:
        """`count` distinct random training rows for the eyes-and-brows box: closed lids drawn more often
        (SubjectData.eye_frame_weights), and frames whose eyes the field still draws badly."""
        return self.eye_draws.draw(self.rng, count)

    @staticmethod
    def record_errors(draws: FrameDraws, rows: np.ndarray, slot: np.ndarray, pred: torch.Tensor,
                      target: torch.Tensor) -> None:
        """Tell `draws` how badly rays of frames rows[slot], lying on their moving parts, were drawn."""
        squared = ((pred.detach() - target) ** 2).mean(dim=1).cpu().numpy()
        seen, errors = FrameDraws.per_frame_errors(slot, squared, len(rows))
        draws.record(rows[seen], errors)

    def render_pixels(self, rows: np.ndarray, slot: np.ndarray, x: np.ndarray, y: np.ndarray, training: bool):
        """Head rendered over the torso plates for pixels (x, y) of frames rows[slot]; -> (output, pred, target, under).

        In training, rays inside the frame's lip and eye boxes see the mean latent of the frame's shot, not
        the frame's own: the latents are there to absorb lighting and exposure drift, and around the mouth
        and eyes a free 4-d code per frame would absorb the lips and the blinks themselves (held-out frames,
        which get their neighbours' mean code, would then render an average mouth and open eyes); this way
        only the audio and expression codes can explain them. (The shot's mean, not the clip's: the shots
        of an edited clip differ in light.)
        """
        data, device = self.data, self.device
        audio, expressions, poses = data.conditioning(rows, device)
        neutral = None
        noise = self.preset.training.expression_noise
        if training and noise:  # TrainingConfig.expression_noise says why
            expressions = expressions + torch.from_numpy(
                self.rng.normal(0.0, noise, tuple(expressions.shape)).astype(np.float32)).to(device)
        if training and self.audio_code_dropout:  # these frames' mouths must come from their curves
            neutral = torch.from_numpy(self.rng.random(len(rows)) < self.audio_code_dropout).to(device)
        codes = self.model.frame_codes(audio, expressions, neutral)
        latents = self.model.latents_for(torch.from_numpy(rows).to(device))
        slot_t = torch.from_numpy(slot).to(device)
        xf, yf = (torch.from_numpy(v.astype(np.float32)).to(device) for v in (x, y))
        origins, directions = pixel_rays(poses[slot_t], data.intrinsics, xf, yf)
        frame = slot_t
        if training:
            boxed = data.inside(data.lip_box[rows[slot]], x, y) | data.inside(data.eye_box[rows[slot]], x, y)
            in_boxes = torch.from_numpy(boxed).to(device)
            codes, latents = torch.cat([codes, codes]), torch.cat([latents, self.shot_mean_latents(rows)])
            frame = slot_t + len(rows) * in_boxes.long()
        out = self.model.render_head(Rays(origins, directions, frame), codes, latents, self.preset.samples,
                                     perturb=training, training=training)
        frame_rows = rows[slot]
        target = torch.from_numpy(data.rgb[frame_rows, y, x].astype(np.float32) / 255.0).to(device)
        under = torch.from_numpy(data.torso[frame_rows, y, x].astype(np.float32) / 255.0).to(device)
        pred = out.rgb + (1.0 - out.opacity[:, None]) * under
        return out, pred, target, frame_rows

    def shot_mean_latents(self, rows: np.ndarray) -> torch.Tensor:
        """(len(rows), latent_dim): the mean latent over the training frames of each row's shot."""
        table = self.model.field.latents.weight
        sums = table.new_zeros(len(self.shot_sizes), table.shape[1]).index_add(0, self.row_shot, table)
        return (sums / self.shot_sizes[:, None])[self.row_shot[torch.from_numpy(rows).to(self.device)]]

    @torch.no_grad()
    def audio_mouth_correlation(self) -> float | None:
        """Held-out correlation of jawOpen read out of the audio code with the tracked jawOpen."""
        channels = list(self.model.config.audio_supervision)
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

    @torch.no_grad()
    def heldout_psnr(self) -> float:
        """PSNR of the head box of one held-out frame, rendered over its torso plate."""
        data, row = self.data, self.eval_row
        x, y = data.box_pixels(data.head_box[row])
        preds, targets = [], []
        for start in range(0, len(x), 8192):
            xs, ys = x[start:start + 8192], y[start:start + 8192]
            _, pred, target, _ = self.render_pixels(np.array([row]), np.zeros(len(xs), np.int64), xs, ys,
                                                    training=False)
            preds.append(pred)
            targets.append(target)
        return losses.psnr(torch.cat(preds), torch.cat(targets))

    # Saving
    def header(self) -> dict:
        return {"preset": self.preset.name, "config": self.model.config.to_dict(), "stages_done": self.stages_done,
                "stage": self.stage, "step": self.step, "metrics": self.metrics, "seconds": round(self.seconds, 1),
                "stage_seconds": round(self.stage_seconds, 1)}

    def save_checkpoint(self) -> None:
        save_checkpoint(self.checkpoint_path, self.model, self.optimizers, self.header())

    def finish(self) -> dict:
        """Write the final weights and config, record the model in subject.json (the train command drops
        the checkpoint once its last stage is done, so a cancel in the expression stage can resume)."""
        weights, config_path = self.subject.head_weights_path, self.subject.head_config_path
        save_weights(weights, self.model.state_dict(), {"preset": self.preset.name})
        write_head_json(config_path, self.model.config,
                        TrainingRecord(tuple(self.stages_done), self.metrics, round(self.seconds, 1)))
        self.subject.record_model("head", HeadRecord(
            self.subject.relative(weights), self.subject.relative(config_path), self.preset.name,
            self.model.config.audio_encoder, list(self.stages_done), self.metrics.get("heldout_psnr"), round(self.seconds, 1)))
        return {"model": str(weights), "train_seconds": round(self.seconds, 1), **self.metrics}

