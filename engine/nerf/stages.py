"""The NeRF's training stages (../shared/REFERENCE.md "Model"): what each one optimises and its losses for a step.

head   rays inside each frame's head box (more of them in the lip and eye boxes, the eye box's in frames
       drawn by the lids' state), rendered over the
       frame's torso plate; uncertainty-weighted L1, the head's opacity outside its mask, region
       attention sparsity; the occupancy grid re-measured every few steps. The audio code is first
       fitted to the tracked mouth curves alone, then kept on them by a small readout loss through
       the head and lip stages (engine/nerf/field.py says why).
lip    the whole lip box of a frame, its eyes-and-brows box, and random patches in turn (L1, + LPIPS
       when its weights are present), fine-tuning the head's parameters at a lower learning rate.
torso  the 2D pose-conditioned torso network over the background plate.

A stage names its optimizer and gives that optimizer's parameter groups (hash grid, networks), and
returns its losses for a step as a dict of named, weighted terms (weights in TrainingConfig); the
trainer's loop sums them and steps the optimizer.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from . import losses
from .dataset import pose_vector, resize_square


class Stage(ABC):
    """One stage, run by the trainer (`trainer`: the data, model, optimizers and random draws it shares)."""
    name = ""
    optimizer = ""          # the trainer's optimizer this stage steps (stages may share one)
    lr_scale = 1.0          # of the preset's learning rates
    heldout = True          # the held-out PSNR is measured during the stage

    def __init__(self, trainer):
        self.trainer = trainer
        self.config = trainer.preset.training

    def steps(self) -> int:
        """The stage's step count: the preset's `<name>_steps`."""
        return getattr(self.trainer.preset, f"{self.name}_steps")

    def budget_share(self) -> float:
        """The stage's share of Preset.time_budget_s: TrainingConfig's `<name>_budget`."""
        return getattr(self.config, f"{self.name}_budget")

    @abstractmethod
    def parameter_groups(self) -> tuple[list, list]:
        """(hash-grid parameters, network parameters) of this stage's optimizer."""

    @abstractmethod
    def losses(self, step: int) -> dict[str, torch.Tensor]:
        """Step `step`'s named loss terms, each already weighted; the trainer sums them in this order."""


class HeadStage(Stage):
    name = optimizer = "head"

    def parameter_groups(self) -> tuple[list, list]:
        field = self.trainer.model.field
        grid_params = list(field.encoding.parameters())
        grid_ids = {id(p) for p in grid_params}
        return grid_params, [p for p in field.parameters() if id(p) not in grid_ids]

    def losses(self, step: int) -> dict[str, torch.Tensor]:
        trainer, data, config = self.trainer, self.trainer.data, self.config
        if step >= config.grid_warmup_steps and step % trainer.preset.grid_update_every == 0:
            self.update_grid(step)
        if step == 0:
            self.fit_audio_code()
        # The eyes' rays go to frames of their own draw (closed lids more often: Trainer.eye_frames).
        rows = trainer.frames(trainer.preset.frames_per_step)
        eye_rows = trainer.eye_frames(len(rows))
        per_frame = trainer.preset.rays_per_step // len(rows)
        lip_count, eye_count = int(per_frame * config.lip_box_rays), int(per_frame * config.eye_box_rays)
        lip = data.pixels_in_boxes(rows, data.lip_box, lip_count, trainer.rng)
        eye_slot, eye_x, eye_y = data.pixels_in_boxes(eye_rows, data.eye_box, eye_count, trainer.rng)
        head = data.pixels_in_boxes(rows, data.head_box, per_frame - lip_count - eye_count, trainer.rng)
        slot = np.concatenate([lip[0], eye_slot + len(rows), head[0]])
        x, y = np.concatenate([lip[1], eye_x, head[1]]), np.concatenate([lip[2], eye_y, head[2]])
        out, pred, target, frame_rows = trainer.render_pixels(np.concatenate([rows, eye_rows]), slot, x, y,
                                                              training=True)
        lips, eyes = slice(0, len(lip[0])), slice(len(lip[0]), len(lip[0]) + len(eye_slot))
        trainer.record_errors(trainer.draws, rows, slot[lips], pred[lips], target[lips])
        trainer.record_errors(trainer.eye_draws, eye_rows, eye_slot, pred[eyes], target[eyes])
        outside = torch.from_numpy(~data.head_mask[frame_rows, y, x]).to(trainer.device).float()
        terms = {"photometric": losses.uncertainty_weighted_l1(pred, target, out.uncertainty),
                 "outside_opacity": config.outside_opacity * (out.opacity * outside).mean()}
        if out.attention is not None and len(out.attention):
            terms["attention_sparsity"] = config.attention_sparsity * out.attention.mean()
        terms["audio_readout"] = config.audio_readout * self.audio_loss()
        return terms

    def update_grid(self, step: int) -> None:
        trainer = self.trainer
        rows = trainer.frames(8)
        audio, expressions, _ = trainer.data.conditioning(rows, trainer.device)
        with torch.no_grad():
            codes = trainer.model.frame_codes(audio, expressions)

            def density(points01):
                pick = torch.randint(len(codes), (len(points01),), device=trainer.device)
                return trainer.model.field.density_at(points01.to(trainer.device), codes[pick])

            # After the warm-up an eighth of the cells a time: a quarter cost 18 % of a CPU head step, and
            # an eighth trained 15-24 % more steps in the same time; held-out image, eye and tracked-mouth figures level
            # or better, the mouth from the audio 0.02-0.03 lower (README).
            fraction = 1.0 if step < 2 * self.config.grid_warmup_steps else 0.125
            trainer.model.grid.update(density, fraction=fraction)

    def audio_loss(self) -> torch.Tensor:
        """Mean squared error of the mouth curves read out of the audio code, on random training frames."""
        trainer = self.trainer
        if trainer.model.field.mouth_readout is None:
            return torch.zeros((), device=trainer.device)
        index = trainer.data.frames[trainer.frames(self.config.audio_batch)]
        windows = torch.from_numpy(trainer.data.audio_windows[index]).to(trainer.device)
        # Dropout by a uniform draw: torch's dropout draws its mask with bernoulli_, on a CPU about twice as
        # slow for these 524,288 values (a few percent of a head step).
        kept = torch.rand(windows.shape, device=windows.device) >= self.config.audio_dropout
        windows = windows * kept / (1 - self.config.audio_dropout)
        target = torch.from_numpy(trainer.mouth[index]).to(trainer.device)
        return ((trainer.model.mouth_from_audio(windows) - target) ** 2).mean()

    def fit_audio_code(self) -> None:
        """Before the NeRF: shape the audio code on the mouth curves alone (seconds on a CPU)."""
        trainer = self.trainer
        if trainer.model.field.mouth_readout is None:
            return
        optimizer = trainer.optimizers[self.optimizer]
        steps = self.config.audio_warmup_steps
        with trainer.progress.stage("audio code from the mouth curves", steps) as bar:
            for _ in range(steps):
                trainer.set_lr(optimizer, 0.0)
                loss = trainer.optimise(optimizer, {"audio_readout": self.audio_loss()})
                bar.advance(1, loss=round(loss, 4))
        trainer.metrics["audio_mouth_r"] = trainer.audio_mouth_correlation()


class LipStage(HeadStage):
    """Fine-tunes the head (its optimizer), in turns of four steps: a frame's whole lip box, its whole
    eyes-and-brows box, its lip box again, a random patch in its head box. The eyes have their turn
    because heads whose budget cut their steps had not learnt to blink (eye-opening r 0.12-0.26 after
    3,100-3,600 of 7,000 head steps, on a machine half as fast as the one that blinked with every step;
    an L2 photometric loss was being tried in those two trainings); the eyes' turn draws its frame as the
    head stage's eye rays do (Trainer.eye_frames)."""
    TURNS = ("lip_box", "eye_box", "lip_box", None)  # None: a random patch
    name = "lip"

    @property
    def lr_scale(self) -> float:
        return self.config.lip_lr_scale

    def losses(self, step: int) -> dict[str, torch.Tensor]:
        trainer, data = self.trainer, self.trainer.data
        turn = self.TURNS[step % len(self.TURNS)]
        draws = trainer.eye_draws if turn == "eye_box" else trainer.draws
        row = draws.draw(trainer.rng, 1)
        if turn is not None:
            box = getattr(data, turn)[row[0]]
        else:
            patch = max(self.config.lip_min_patch, data.size // 8)
            hx0, hy0, hx1, hy1 = data.head_box[row[0]]
            x0 = int(trainer.rng.integers(hx0, max(hx0 + 1, hx1 - patch)))
            y0 = int(trainer.rng.integers(hy0, max(hy0 + 1, hy1 - patch)))
            box = (x0, y0, min(data.size, x0 + patch), min(data.size, y0 + patch))
        x, y = data.box_pixels(box)
        slot = np.zeros(len(x), np.int64)
        out, pred, target, _ = trainer.render_pixels(row, slot, x, y, training=True)
        if turn is not None:
            trainer.record_errors(draws, row, slot, pred, target)
        terms = {"l1": losses.l1(pred, target)}
        if trainer.lpips is not None:
            shape = (1, int(box[3] - box[1]), int(box[2] - box[0]), 3)
            as_image = lambda t: t.reshape(shape).permute(0, 3, 1, 2) * 2 - 1  # noqa: E731
            terms["lpips"] = self.config.lip_lpips * trainer.lpips(as_image(pred), as_image(target)).mean()
        terms["audio_readout"] = self.config.audio_readout * self.audio_loss()
        return terms


class TorsoStage(Stage):
    name = optimizer = "torso"
    heldout = False

    def parameter_groups(self) -> tuple[list, list]:
        torso = self.trainer.model.torso
        return list(torso.canvas.parameters()), [p for n, p in torso.named_parameters() if not n.startswith("canvas.")]

    def losses(self, step: int) -> dict[str, torch.Tensor]:
        trainer, data, device, s = self.trainer, self.trainer.data, self.trainer.device, self.trainer.data.size
        rows = trainer.frames(trainer.preset.frames_per_step)
        per_frame = trainer.preset.torso_rays // len(rows)
        slot = np.repeat(np.arange(len(rows)), per_frame)
        x, y = trainer.rng.integers(0, s, len(slot)), trainer.rng.integers(0, s, len(slot))
        frame_rows = rows[slot]
        uv = torch.from_numpy(np.stack([(x + 0.5) / s, (y + 0.5) / s], -1).astype(np.float32)).to(device)
        poses = torch.from_numpy(pose_vector(data.poses[data.frames[frame_rows]], data.reference_pose)).to(device)
        latents = trainer.model.torso_latents_for(torch.from_numpy(frame_rows).to(device))
        rgb, alpha = trainer.model.torso(uv, poses, latents)
        background = torch.from_numpy(self.background[y, x]).to(device)
        pred = rgb * alpha[:, None] + (1 - alpha[:, None]) * background
        target = torch.from_numpy(data.torso[frame_rows, y, x].astype(np.float32) / 255.0).to(device)
        return {"l1": losses.l1(pred, target)}

    @property
    def background(self) -> np.ndarray:
        if not hasattr(self, "_background"):
            trainer = self.trainer
            self._background = resize_square(trainer.subject.background(), trainer.data.size).astype(np.float32) / 255.0
        return self._background


STAGE_TYPES = (HeadStage, LipStage, TorsoStage)
STAGES = tuple(stage.name for stage in STAGE_TYPES)
