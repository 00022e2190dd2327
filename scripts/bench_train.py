"""Figures for the NeRF (issue 3): encoding cost, training cost and held-out PSNR, render speed.

    python scripts/bench_train.py encoding
        tri-plane hash grid, 65,536 points: forward+backward with the hand-written backward vs autograd's
    python scripts/bench_train.py training SUBJECT [--run]
        training wall time, steps/s and held-out PSNR of the subject's trained model (as recorded by
        `python -m engine train`); --run trains it first with --preset preview
    python scripts/bench_train.py render SUBJECT [--frames 10]
        frames/s of TalkingHead.render at the subject's size (the NeRF at its working size, Preset.max_size)

The machine is shared: timings are inflated by other jobs; the load average is printed with them.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import torch



def load() -> str:
    return "load average %.1f %.1f %.1f on %d cores" % (*os.getloadavg(), os.cpu_count())


def bench_encoding(repeats: int = 5) -> None:
    from engine.nerf.encoding import TriPlaneEncoding
    from engine.nerf.device import choose_cpu_threads
    print(f"torch threads: {choose_cpu_threads()} ({load()})")
    points = torch.rand(65536, 3)
    results = {}
    for name, naive in (("hand-written backward (index_add_)", False), ("autograd backward of the gather", True)):
        encoding = TriPlaneEncoding(naive_backward=naive)
        times = []
        for _ in range(repeats + 1):
            started = time.perf_counter()
            out = encoding(points)
            out.backward(torch.ones_like(out))
            times.append(time.perf_counter() - started)
        results[name] = float(np.median(times[1:]))
        print(f"{name}: {results[name]:.3f} s forward+backward (median of {repeats})")
    fast, naive = results.values()
    print(f"autograd / hand-written: {naive / fast:.2f}x")


def bench_training(subject_dir: str, run: bool) -> None:
    if run:
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "engine", "train", subject_dir, "--preset", "preview"], check=True)
        print(f"train command wall time: {time.monotonic() - started:.0f} s ({load()})")
    from engine.nerf.config import read_head_json
    from engine.subject.format import Subject
    config, record = read_head_json(Subject(subject_dir).head_config_path)
    metrics = record.metrics
    print(f"preset: {config.preset}, audio encoder: {config.audio_encoder}, stages: {list(record.stages_done)}")
    print(f"NeRF training time: {record.train_seconds:.0f} s ({record.train_seconds / 60:.1f} min)")
    for stage in ("head", "lip", "torso"):
        if f"{stage}_steps_per_s" in metrics:
            print(f"{stage} stage: {metrics.get(f'{stage}_steps', '?')} steps, {metrics[f'{stage}_steps_per_s']} steps/s")
    print(f"held-out PSNR (head box of one held-out frame, over its torso plate): {metrics.get('heldout_psnr')} dB")


def bench_render(subject_dir: str, frames: int) -> None:
    from engine.nerf.talking_head import TalkingHead
    from engine.subject.format import Subject
    subject = Subject(subject_dir)
    head = TalkingHead.load(subject, device="auto")
    print(f"device: {head.device}, threads: {torch.get_num_threads()} ({load()})")
    rng = np.random.default_rng(0)
    window = rng.standard_normal((head.audio_window, head.config.audio_dim)).astype(np.float32)
    test = subject.split("test")
    indices = [int(test[i % len(test)]) for i in range(frames)]
    head.render(indices[0], window)  # warm-up
    seconds = []
    for index in indices:
        started = time.perf_counter()
        head.render(index, window)
        seconds.append(time.perf_counter() - started)
    # The median frame: the machines are shared, and a neighbour's burst should not count against us.
    median = float(np.median(seconds))
    print(f"render at {head.size}x{head.size} (NeRF at {head.work_size}): {1 / median:.2f} frames/s for the median frame "
          f"({median:.3f} s), {frames / sum(seconds):.2f} frames/s over all {frames} frames")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("encoding")
    p = sub.add_parser("training")
    p.add_argument("subject")
    p.add_argument("--run", action="store_true")
    p = sub.add_parser("render")
    p.add_argument("subject")
    p.add_argument("--frames", type=int, default=10)
    args = parser.parse_args()
    if args.what == "encoding":
        bench_encoding()
    elif args.what == "training":
        bench_training(args.subject, args.run)
    else:
        bench_render(args.subject, args.frames)


if __name__ == "__main__":
    main()
