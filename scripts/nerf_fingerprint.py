"""The numbers of one seeded NeRF training, to check that a change of the code leaves them alone.

    python scripts/nerf_fingerprint.py SUBJECT [--head-steps N] [--lip-steps N] [--torso-steps N]

Trains the `tiny` preset (step counts as given) on a copy of the preprocessed SUBJECT (its model is
not touched), seed 0, on the CPU with one torch thread, then continues the trained head with the lip
stage alone (--stages lip's path) and renders one frame at the frame's own pose and one at another.
Prints, per stage, its steps, first and last loss and a checksum of every step's loss and held-out
PSNR; a checksum of every saved tensor; and the renders' checksums. Run it on two checkouts (or
before and after a change) and compare the output: a refactor prints the same lines. `--head-steps
140` reaches the occupancy grid's updates (from step 64), which the preset's 40 steps do not.
One torch thread: with two, the measured thread choice can differ between runs and sums change order.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

os.cpu_count = lambda: 1  # choose_cpu_threads measures 1 thread only (it still draws what it draws)

from engine.nerf.checkpoint import load_weights  # noqa: E402
from engine.nerf.presets import get_preset  # noqa: E402
from engine.nerf.talking_head import TalkingHead  # noqa: E402
from engine.nerf.trainer import Trainer  # noqa: E402
from engine.progress import Progress, Stage  # noqa: E402
from engine.subject.format import Subject  # noqa: E402


class RecordingProgress(Progress):
    """Quiet progress that keeps every step's metrics (the jsonl mode sends at most 5 a second)."""

    def __init__(self):
        super().__init__("quiet")
        self.steps: list[tuple[str, int, dict]] = []

    def stage(self, name: str, total: int | None = None) -> Stage:
        progress = self

        class Recording(Stage):
            def advance(self, n: int = 1, **metrics) -> None:
                progress.steps.append((name, self.done + n, {k: v for k, v in metrics.items() if k != "steps_per_s"}))
                super().advance(n, **metrics)

        return Recording(self, name, total)


def digest(values) -> str:
    return hashlib.sha256(repr(values).encode()).hexdigest()[:16]


def train(subject: Subject, preset, continue_stages=None, stages=None) -> None:
    progress = RecordingProgress()
    trainer = Trainer(subject, preset, progress, audio_encoder="mel", device="cpu", seed=0,
                      continue_stages=continue_stages)
    trainer.run(stages=stages or ("head", "lip", "torso"))
    subject.checkpoint_path.unlink(missing_ok=True)
    for name in dict.fromkeys(stage for stage, _, _ in progress.steps):
        steps = [(done, metrics) for stage, done, metrics in progress.steps if stage == name]
        losses = [metrics.get("loss") for _, metrics in steps]
        if losses[-1] is None:  # not a training stage (loading, carving)
            continue
        print(f"  {name}: {len(steps)} steps, loss {losses[0]} .. {losses[-1]}, all steps {digest(steps)}")
    tensors, _ = load_weights(subject.head_weights_path)
    print(f"  weights: {digest([(k, hashlib.sha256(v.numpy().tobytes()).hexdigest()) for k, v in sorted(tensors.items())])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("subject", type=Path, help="a preprocessed subject folder")
    parser.add_argument("--head-steps", type=int, default=None)
    parser.add_argument("--lip-steps", type=int, default=None)
    parser.add_argument("--torso-steps", type=int, default=None)
    args = parser.parse_args()
    preset = get_preset("tiny")
    preset = dataclasses.replace(preset, head_steps=args.head_steps or preset.head_steps,
                                 lip_steps=args.lip_steps or preset.lip_steps,
                                 torso_steps=args.torso_steps or preset.torso_steps)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / args.subject.name
        shutil.copytree(args.subject, copy, ignore=shutil.ignore_patterns("model", "cache"))
        subject = Subject(copy)
        torch.manual_seed(0)
        print("train head, lip, torso:")
        train(subject, preset)
        torch.manual_seed(1)
        print("continue with the lip stage:")
        train(Subject(copy), preset, continue_stages=["lip"], stages=("lip",))
        head = TalkingHead.load(Subject(copy), device="cpu")
        window = np.random.default_rng(0).uniform(-4, 4, (head.audio_window, head.config.audio_dim)).astype(np.float32)
        own = head.render(3, window)
        pose = subject.tracks["pose"][3].copy()
        pose[0, 3] += 0.05
        moved = head.render(3, window, blendshapes=np.zeros(52, np.float32), pose=pose, rgba=True)
        print(f"renders: own pose {digest(own.tobytes())} (mean {own.mean():.6f}), "
              f"another pose {digest(moved.tobytes())} (mean {moved.mean():.6f})")


if __name__ == "__main__":
    main()
