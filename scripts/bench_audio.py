"""Figures for the audio half (issue 4): accuracy per encoder, silence, speed, audio-video offsets.

    python scripts/bench_audio.py [--subject /work/subjects/lieu] [--ave ave.safetensors] [--json out.json]

1. Per encoder (whisper, ave, mel): the subject's expression model trained on its training frames,
   scored on its held-out frames: Pearson r of jawOpen and MAE over the mouth and jaw blendshapes.
2. Silence: for each file in ../shared/data/audio, mean predicted jawOpen in pauses (voice activity
   < 0.1) and in speech (> 0.9), with the subject's model and with the generic one.
3. Speed: 60 s of speech to curves (model load reported apart), on the threads this machine gives.
4. Offsets: the ave sync similarity of each clip in ../shared/data/video against its mouth crops
   with the audio shifted by -10..10 frames; the best offset should be 0.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
os.environ.setdefault("SYNCTALK_MODELS", str(SHARED / "models"))

import numpy as np  # noqa: E402

from engine.arkit import ARKIT_INDEX  # noqa: E402
from engine.errors import EngineError  # noqa: E402
from engine.progress import Progress  # noqa: E402

JAW = ARKIT_INDEX["jawOpen"]


def light_copy(subject_dir: Path, into: Path) -> Path:
    """What expression training reads (subject.json, tracks, audio), so the shared subject is never written."""
    from engine.subject.format import AUDIO_FILE, META_FILE, TRACKS_FILE
    into.mkdir(parents=True)
    for name in (META_FILE, TRACKS_FILE, AUDIO_FILE):
        shutil.copy2(subject_dir / name, into / name)
    return into


def accuracy(subject_dir: Path, work: Path) -> tuple[dict, Path]:
    from engine.expression.training import train_expression
    from engine.subject.format import Subject
    subject = Subject(light_copy(subject_dir, work / subject_dir.name))
    figures = {}
    for encoder in ("whisper", "ave", "mel"):
        started = time.monotonic()
        try:
            metrics = train_expression(subject, Progress("quiet"), encoder=encoder)
        except EngineError as exc:
            figures[encoder] = {"skipped": exc.message}
            continue
        figures[encoder] = {k.replace("expression_", ""): v for k, v in metrics.items()}
        figures[encoder]["train_s"] = round(time.monotonic() - started, 1)
        print(f"  {encoder:8s} jawOpen r {metrics['expression_jaw_open_r']:.3f}   mouth/jaw MAE "
              f"{metrics['expression_mouth_mae']:.4f}   ({metrics['expression_frames']} held-out frames, "
              f"trained in {figures[encoder]['train_s']} s)", flush=True)
    return figures, subject.root


def silence(subject_root: Path) -> dict:
    from engine.audio.vad import voice_activity
    from engine.expression.animate import Animator
    from engine.media.audio import load_audio
    from engine.subject.format import Subject
    animators = {"subject": Animator(Subject(subject_root), encoder="whisper"), "generic": Animator(generic=True)}
    figures = {}
    for path in sorted((SHARED / "data" / "audio").glob("*")):
        samples = load_audio(path)
        activity = voice_activity(samples, 25)
        row = {}
        for name, animator in animators.items():
            jaw = animator(samples, 25, head="none").weights[:len(activity), JAW]
            a = activity[:len(jaw)]
            row[name] = {"pause": round(float(jaw[a < 0.1].mean()), 4) if (a < 0.1).any() else None,
                         "speech": round(float(jaw[a > 0.9].mean()), 4)}
        row["pause_fraction"] = round(float((activity < 0.1).mean()), 3)
        figures[path.name] = row
        print(f"  {path.name:30s} pauses {row['pause_fraction']:.0%}   jawOpen pause/speech: subject "
              f"{row['subject']['pause']}/{row['subject']['speech']}   generic "
              f"{row['generic']['pause']}/{row['generic']['speech']}", flush=True)
    return figures


def speed(subject_root: Path) -> dict:
    import torch
    from engine.expression.animate import Animator
    from engine.media.audio import load_audio
    from engine.subject.format import Subject
    started = time.monotonic()
    animator = Animator(Subject(subject_root), encoder="whisper")
    load_s = time.monotonic() - started
    samples = load_audio(SHARED / "data" / "audio" / "en_60s.wav")
    animator(samples[:16000 * 5], 25)  # first-call costs are part of loading
    load_s = time.monotonic() - started
    runs, cpu = [], []
    for _ in range(2):
        started, cpu_started = time.monotonic(), time.process_time()
        animator(samples, 25)
        runs.append(time.monotonic() - started)
        cpu.append(time.process_time() - cpu_started)
    # CPU time (all threads) does not grow when other processes share the cores, wall time does.
    figures = {"audio_s": round(len(samples) / 16000, 1), "load_s": round(load_s, 2),
               "animate_s": round(min(runs), 2), "animate_cpu_s": round(min(cpu), 2),
               "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
               "load_average": round(os.getloadavg()[0], 1)}
    print(f"  {figures['audio_s']} s of speech -> curves in {figures['animate_s']} s wall (best of 2; "
          f"{figures['animate_cpu_s']} s of CPU time over all threads), model load {figures['load_s']} s; "
          f"{figures['cpus']} CPUs, load average {figures['load_average']}", flush=True)
    return figures


def offsets(ave_path: Path | None) -> dict:
    from engine.audio.ave import WEIGHT_FILES
    from engine.audio.ave_training import load_sync_model, sync_offsets, video_clip
    from engine.models import search_dirs
    candidates = [ave_path] if ave_path else [d / WEIGHT_FILES[0] for d in search_dirs()]
    found = next((p for p in candidates if p and p.is_file()), None)
    if found is None:
        print("  skipped: no ave.safetensors (run `python -m engine train-ave ...`)")
        return {"skipped": "no ave weights"}
    model = load_sync_model(found)
    figures = {}
    for path in sorted((SHARED / "data" / "video").glob("*.mp4")):
        scores = sync_offsets(model, video_clip(path))
        best = max(scores, key=scores.get)
        figures[path.name] = {"best_offset_frames": best, "at_0": scores[0], "at_best": scores[best],
                              "mean_other": round(float(np.mean([v for k, v in scores.items() if abs(k) >= 3])), 4),
                              "scores": scores}
        print(f"  {path.name:18s} best offset {best:+d} frames   similarity at 0 {scores[0]:.3f}, at best "
              f"{scores[best]:.3f}, mean at |offset|>=3 {figures[path.name]['mean_other']:.3f}", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subject", type=Path, default=Path("/work/subjects/lieu"))
    parser.add_argument("--ave", type=Path, default=None, help="train-ave weights (else found like the encoder)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.ave:
        os.environ["SYNCTALK_AVE"] = str(args.ave)
    report = {}
    with tempfile.TemporaryDirectory() as work:
        print(f"1. held-out accuracy on {args.subject.name} (per encoder)")
        report["accuracy"], subject_root = accuracy(args.subject, Path(work))
        print("2. silence: mean predicted jawOpen in pauses vs in speech")
        report["silence"] = silence(subject_root)
        print("3. speed (whisper, 60 s of speech)")
        report["speed"] = speed(subject_root)
    print("4. audio-video offset check (ave sync similarity vs audio shift)")
    report["offsets"] = offsets(args.ave)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
