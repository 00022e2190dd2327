"""Figures for the NeRF (issue 3): encoding cost, training cost and held-out PSNR, render speed.

    python scripts/bench_train.py encoding
        tri-plane hash grid, 65,536 points: forward+backward with the hand-written backward vs autograd's
    python scripts/bench_train.py training SUBJECT [--run]
        training wall time, steps/s and held-out PSNR of the subject's trained model (as recorded by
        `python -m engine train`); --run trains it first with --preset preview
    python scripts/bench_train.py render SUBJECT [--frames 10]
        frames/s of TalkingHead.render at the subject's size (the NeRF at its working size, Preset.max_size)
    python scripts/bench_train.py face SUBJECT [--train-frames 20]
        where a trained head's face PSNR goes: on `evaluate`'s 45 held-out frames and on a spread of
        training frames, the face PSNR as scored, with the best shift of up to 3 px, with each frame's
        colours fitted to the truth (per channel gain and offset), and the mouth (the face mask's lowest
        38 %) apart from the rest. Training frames that score no better than held-out ones say the field
        is not fitted; a large gain from the shift says the poses, from the colour the appearance codes.
    python scripts/bench_train.py gain SUBJECT
        a trained head's mouth gain measured again (engine/nerf/mouth_gain.py, from gain 1, as `train` ends),
        then `evaluate`'s 45 held-out frames scored with it, the mouth from the tracked curves and from the
        speech: mouth r, amplitude ratio, face PSNR. The head on disk is not changed.
    python scripts/bench_train.py pixels SUBJECT [--size 512]
        the training data's pixels held in memory and mapped from disk (a long clip's, past
        dataset.IN_MEMORY_PIXELS), each loaded in a process of its own: the process's own (anonymous) memory
        after loading, the file pages mapped, the load time, and a head step's pixel gathers

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


def bench_face(subject_dir: str, train_frames: int) -> None:
    from engine.evaluation.heldout import scoring_window
    from engine.nerf.talking_head import TalkingHead
    from engine.render.driving import drive_frames
    from engine.subject.format import Subject
    subject = Subject(subject_dir)
    head = TalkingHead.load(subject, device="auto")
    trained = np.asarray(head.config.train_frames)
    for name, frames in (("held-out (evaluate's 45)", scoring_window(subject, subject.split("test"), 45)),
                         ("training", trained[np.linspace(0, len(trained) - 1, train_frames).round().astype(int)])):
        driving = drive_frames(subject, frames, head.audio_encoder, head.audio_window)
        rows = [_face_breakdown(subject, head, driving, j) for j in range(len(driving))]
        mean = np.mean(rows, axis=0)
        print(f"{name}, {len(rows)} frames: face PSNR {mean[0]:.2f} dB; best shift <= 3 px {mean[1]:.2f}; "
              f"colours fitted {mean[2]:.2f}; mouth {mean[3]:.2f}, rest of the face {mean[4]:.2f} ({load()})")


def bench_gain(subject_dir: str) -> None:
    from engine.audio.features import windows
    from engine.evaluation.heldout import evaluate, scoring_window
    from engine.nerf.dataset import audio_features
    from engine.nerf.mouth_gain import measure_mouth_gain
    from engine.nerf.talking_head import TalkingHead
    from engine.progress import Progress
    from engine.render.driving import drive_frames
    from engine.subject.format import Subject
    subject = Subject(subject_dir)
    head = TalkingHead.load(subject, device="auto")
    progress = Progress("quiet")
    audio = windows(audio_features(subject, head.audio_encoder).astype(np.float32), head.audio_window)
    print(f"gain on disk: {float(head.model.expression_gain.max()):.3f}")
    head.model.set_mouth_gain(1.0)
    started = time.monotonic()
    measured = measure_mouth_gain(subject, head, audio, np.asarray(head.config.train_frames), progress)
    print(f"measured again: {measured} in {time.monotonic() - started:.0f} s ({load()})")
    frames = scoring_window(subject, subject.split("test"), 45)
    for name, from_speech in (("tracked curves", False), ("curves from the speech", True)):
        driving = drive_frames(subject, frames, head.audio_encoder, head.audio_window, mouth_from_speech=from_speech)
        summary = evaluate(subject, head, driving, progress, samples=0, face_only=True).summary()
        print(f"held-out, {name}: mouth r {summary['mouth_open_correlation']:.3f}, amplitude "
              f"{summary['mouth_amplitude_ratio']:.3f}, face PSNR {summary['face']['psnr']:.2f} dB")


def _face_breakdown(subject, head, driving, j: int) -> list[float]:
    from engine.evaluation import metrics
    from engine.render.pipeline import render_frame
    index = int(driving.frame_index[j])
    mask = subject.face_mask(index) > 0.5
    render = np.clip(render_frame(head, driving, j, within=mask.astype(np.float32)), 0, 1)
    truth = subject.frame(index).astype(np.float32) / 255
    shifted = max(metrics.psnr(np.roll(render, (dy, dx), axis=(0, 1)), truth, mask)
                  for dy in range(-3, 4) for dx in range(-3, 4))
    fitted = render.copy()
    for c in range(3):
        a = np.stack([render[..., c][mask], np.ones(int(mask.sum()), np.float32)], 1)
        gain, offset = np.linalg.lstsq(a, truth[..., c][mask], rcond=None)[0]
        fitted[..., c] = render[..., c] * gain + offset
    rows = np.flatnonzero(mask.any(1))
    mouth = mask.copy()
    mouth[:rows[0] + int(0.62 * (rows[-1] - rows[0]))] = False
    return [metrics.psnr(render, truth, mask), shifted, metrics.psnr(np.clip(fitted, 0, 1), truth, mask),
            metrics.psnr(render, truth, mouth), metrics.psnr(render, truth, mask & ~mouth)]


def _memory_gb() -> dict:
    with open("/proc/self/status") as status:   # Linux
        fields = dict(line.split(":", 1) for line in status)
    return {k: int(fields[k].split()[0]) / 2 ** 20 for k in ("RssAnon", "RssFile")}


def bench_pixels(folder: str, size: int, where: str | None) -> None:
    if where is None:   # each way in a fresh process, so that one's memory does not count in the other's
        print(load())
        for way in ("memory", "disk"):
            subprocess.run([sys.executable, __file__, "pixels", folder, "--size", str(size), "--where", way],
                           check=True)
        return
    from engine.nerf import dataset
    from engine.subject.format import Subject
    dataset.IN_MEMORY_PIXELS = 0 if where == "disk" else 1 << 50
    subject = Subject(folder)
    before, started = _memory_gb(), time.monotonic()
    data = dataset.SubjectData(subject, np.zeros((subject.meta.frames, 4), np.float32), size=size)
    loaded, after = time.monotonic() - started, _memory_gb()
    rng, n = np.random.default_rng(0), len(data.frames)
    started = time.monotonic()
    for _ in range(2000):   # a `preview` head step's colours and torso plates under its rays
        rows, (y, x) = rng.integers(0, n, 1536), rng.integers(0, size, (2, 1536))
        data.rgb[rows, y, x].astype(np.float32), data.torso[rows, y, x].astype(np.float32)
    gather_ms = (time.monotonic() - started) / 2
    print(f"{where}: {n} frames at {size} px, loaded in {loaded:.1f} s; the process's own memory "
          f"{before['RssAnon']:.2f} -> {after['RssAnon']:.2f} GB, file pages mapped {after['RssFile']:.2f} GB; "
          f"a step's gathers {gather_ms:.3f} ms")


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
    p = sub.add_parser("face")
    p.add_argument("subject")
    p.add_argument("--train-frames", type=int, default=20)
    sub.add_parser("gain").add_argument("subject")
    p = sub.add_parser("pixels")
    p.add_argument("subject")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--where", choices=("memory", "disk"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.what == "encoding":
        bench_encoding()
    elif args.what == "training":
        bench_training(args.subject, args.run)
    elif args.what == "face":
        bench_face(args.subject, args.train_frames)
    elif args.what == "gain":
        bench_gain(args.subject)
    elif args.what == "pixels":
        bench_pixels(args.subject, args.size, args.where)
    else:
        bench_render(args.subject, args.frames)


if __name__ == "__main__":
    main()
