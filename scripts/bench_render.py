"""Render and evaluation figures: frames per second of the talking head and of the compositing, on CPU
(or the given device), and the held-out scores of a trained subject.

    python scripts/bench_render.py SUBJECT [SUBJECT ...] [--frames 20] [--device cpu] [--evaluate SUBJECT]

For each subject with a trained model it renders `--frames` frames driven by the subject's own audio
and reports the NeRF's frames per second, the Portrait-Sync paste at crop size and the paste-back into
the full-resolution source frame, and the whole pipeline; then the face-only renders a composited frame
needs, one at a time and a frame per core at once (what `render` and `evaluate` do on a CPU).
`--evaluate` runs the held-out evaluation (the `evaluate` command's work) and prints its summary.
Timings depend on the machine's load.
"""
from __future__ import annotations

import argparse
import json
import time
from contextlib import ExitStack
from pathlib import Path


from engine.audio.features import subject_speech  # noqa: E402
from engine.portrait.composite import face_layer, over_frame, paste_back  # noqa: E402
from engine.progress import Progress  # noqa: E402
from engine.render.driving import drive_speech  # noqa: E402
from engine.render.pipeline import Framing, head_renders, render_frame  # noqa: E402
from engine.subject.format import Subject  # noqa: E402


def bench_subject(path: Path, frames: int, device: str) -> dict:
    from engine.nerf.talking_head import TalkingHead
    subject = Subject(path)
    head = TalkingHead.load(subject, device=device)
    driving = drive_speech(subject, subject_speech(subject), head.audio_encoder, head.audio_window)
    driving = driving.slice(0, min(frames + 1, len(driving)))
    quiet = Progress("quiet")
    # Warm-up: first-call allocations, lazy weights, OpenCV's kernels.
    warm = render_frame(head, driving, 0)
    over_frame(face_layer(warm, subject.frame(0), subject.face_mask(0)), subject.frame(0))
    renders, nerf_s = [], 0.0
    for j in range(1, len(driving)):
        started = time.perf_counter()
        renders.append(render_frame(head, driving, j))
        nerf_s += time.perf_counter() - started
    indices = driving.frame_index[1:]
    crop_s = full_s = 0.0
    with ExitStack() as stack:
        framing = Framing(subject, True, indices, quiet, stack)
        for render, index in zip(renders, indices):
            frame, mask = subject.frame(int(index)), subject.face_mask(int(index))
            started = time.perf_counter()
            layer = face_layer(render, frame, mask)
            over_frame(layer, frame)
            crop_s += time.perf_counter() - started
            if framing.source is not None:
                source = framing.source[int(index)]   # decoded as the render goes: not the paste's time
                started = time.perf_counter()
                paste_back(face_layer(render, frame, mask), source, framing.box)
                full_s += time.perf_counter() - started
        source_size = framing.size(subject.size)
    n = len(renders)
    face = driving.slice(1, len(driving))
    started = time.perf_counter()
    for j in range(len(face)):
        render_frame(head, face, j, within=subject.face_mask(int(face.frame_index[j])))
    one_at_a_time_s = time.perf_counter() - started
    started = time.perf_counter()
    for _ in head_renders(head, face):
        pass
    at_once_s = time.perf_counter() - started
    result = {"subject": str(path), "size": subject.size, "device": device, "frames": n,
              "nerf_fps": n / nerf_s, "paste_crop_fps": n / crop_s,
              "pipeline_crop_fps": n / (nerf_s + crop_s),
              "face_one_at_a_time_fps": n / one_at_a_time_s, "face_at_once_fps": n / at_once_s}
    if full_s:
        result.update(source=f"{source_size[0]}x{source_size[1]}", paste_full_fps=n / full_s,
                      pipeline_full_fps=n / (nerf_s + full_s))
    return result


def bench_evaluation(path: Path, device: str, limit: int | None) -> dict:
    from engine.evaluation.heldout import evaluate
    from engine.nerf.talking_head import TalkingHead
    from engine.render.driving import drive_frames
    subject = Subject(path)
    head = TalkingHead.load(subject, device=device)
    held_out = subject.split("test")[:limit]
    driving = drive_frames(subject, held_out, head.audio_encoder, head.audio_window)
    started = time.perf_counter()
    summary = evaluate(subject, head, driving, Progress("quiet")).summary()
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return {"subject": str(path), "size": subject.size, "held_out_frames": len(held_out), **summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("subjects", nargs="*", type=Path, help="subject folders with trained models")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--evaluate", type=Path, action="append", default=[], metavar="SUBJECT")
    parser.add_argument("--limit", type=int, default=None, help="held-out frames to evaluate (default all)")
    args = parser.parse_args()
    import torch
    print(f"torch threads: {torch.get_num_threads()}", flush=True)
    for path in args.subjects:
        r = bench_subject(path, args.frames, args.device)
        line = (f"render {r['size']}x{r['size']} ({r['device']}, {r['frames']} frames): NeRF {r['nerf_fps']:.2f} fps, "
                f"paste at crop {r['paste_crop_fps']:.1f} fps, NeRF+paste {r['pipeline_crop_fps']:.2f} fps")
        if "paste_full_fps" in r:
            line += (f"; paste-back into {r['source']} {r['paste_full_fps']:.1f} fps, "
                     f"NeRF+paste-back {r['pipeline_full_fps']:.2f} fps")
        print(line, flush=True)
        print(f"face only: {r['face_one_at_a_time_fps']:.2f} fps one at a time, "
              f"{r['face_at_once_fps']:.2f} fps a frame per core at once", flush=True)
        print(json.dumps(r), flush=True)
    for path in args.evaluate:
        r = bench_evaluation(path, args.device, args.limit)
        print(f"held-out {path} ({r['held_out_frames']} frames, {r['size']} px): "
              f"face PSNR {r['face']['psnr']:.2f} dB, SSIM {r['face']['ssim']:.4f}, "
              f"MS-SSIM {r['face']['ms_ssim']:.4f}; full frame (pasted) PSNR {r['portrait']['psnr']:.2f} dB, "
              f"SSIM {r['portrait']['ssim']:.4f}, MS-SSIM {r['portrait']['ms_ssim']:.4f}; raw render PSNR "
              f"{r['raw']['psnr']:.2f} dB; LMD {r['lmd']}; mouth-opening correlation "
              f"{r['mouth_open_correlation']}", flush=True)
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
