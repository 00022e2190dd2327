"""Lip sync on several people, quiet and busy (issue 9): train `preview`, evaluate, render at full frame.

    python scripts/bench_lipsync.py [CLIP ...] [--work DIR] [--conditions quiet,busy] [--expression all]

For each clip (default: lieu_60s and four corpus clips of 10-97 s, three of them 512 px and more), the
clip is preprocessed once, then for each condition a copy of the subject is trained with
`python -m engine train --preset preview`, scored with `python -m engine evaluate --limit 45`, and
100 frames of new speech are rendered full frame with `python -m engine render`. "busy" keeps one of
the cores spinning in another process for the whole run of that condition; "shared" starts no spinner
of its own, for a run that shares the machine with other work (a second bench_lipsync on other clips,
with its own --work: each then keeps a core busy for the other); the loads printed say how busy it was. A table per clip is printed
with the issue's targets; everything is also written to WORK/results.json.

The footage of ../shared is for research and evaluation; nothing trained here is shipped.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
DEFAULT_CLIPS = [DATA / "video" / "lieu_60s.mp4", DATA / "corpus" / "cnn2_anchor_en_71s_DFRF.mp4",
                 DATA / "corpus" / "David_Cameron_en_97s_jihoTerm.mp4",
                 DATA / "corpus" / "speech_coach_man_en_46s_satyaDub.mp4",
                 DATA / "corpus" / "Donald_Trump_en_10s_MimicTalk.mp4"]
SPEECH = DATA / "audio" / "en_60s.wav"
RENDER_FRAMES = 100
# (figure, key in the results, target as text, test)
TARGETS = [
    ("mouth-opening r, tracked mouth curves", "mouth_open_correlation", ">= 0.65", lambda v: v >= 0.65),
    ("mouth-opening r, mouth curves from the audio", "speech_mouth_open_correlation", ">= 0.55", lambda v: v >= 0.55),
    ("inner-lip gap amplitude ratio (tracked)", "mouth_amplitude_ratio", "0.75-1.25", lambda v: 0.75 <= v <= 1.25),
    ("inner-lip gap amplitude ratio (audio)", "speech_mouth_amplitude_ratio", "0.75-1.25",
     lambda v: 0.75 <= v <= 1.25),
    ("mouth best lag, frames (tracked / audio)", "lags", "0", None),
    ("truth's inner-lip gap spread in the scored frames, px at 512", "mouth_truth_spread", "", None),
    ("eye-opening r", "eye_open_correlation", ">= 0.6", lambda v: v >= 0.6),
    ("deepest tracked blink in the scored frames (0-1)", "deepest_blink", "", None),
    ("face-region PSNR, dB", "face_psnr", ">= 29", lambda v: v >= 29),
    ("LMD, px at 512", "lmd", "", None),
    ("training wall time, min", "train_minutes", "<= 40", lambda v: v <= 40),
    ("head / lip / torso steps done", "steps", "", None),
    ("mouth gain: kept; [gain, training frames' amplitude, face PSNR] tried", "mouth_gain", "", None),
    ("evaluate, 45 frames, min", "evaluate_minutes", "<= 3", lambda v: v <= 3),
    ("render full frame, frames/s", "render_fps", ">= 2", lambda v: v >= 2),
]


def engine(*args: str) -> tuple[dict, float]:
    """Run `python -m engine ARGS --progress jsonl`; -> (its result event, wall seconds)."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "engine", *args, "--progress", "jsonl"], cwd=ROOT,
                          capture_output=True, text=True)
    seconds = time.monotonic() - started
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    result = next((e for e in reversed(events) if e.get("event") == "result"), None)
    if done.returncode != 0 or result is None:
        raise SystemExit(f"engine {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-2000:]}\n"
                         f"{done.stderr[-2000:]}")
    return result, seconds


def _spin() -> None:
    while True:
        pass


class BusyCore:
    """Another process keeping one core busy, as a user's other work would."""

    def __enter__(self):
        self.process = multiprocessing.Process(target=_spin, daemon=True)
        self.process.start()
        return self

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.join()


def load() -> str:
    return "load %.1f %.1f %.1f on %d cores" % (*os.getloadavg(), os.cpu_count())


def run_condition(base: Path, condition: str, expression: str, work: Path) -> dict:
    subject = work / f"{base.name}-{condition}"
    if subject.exists():
        shutil.rmtree(subject)
    shutil.copytree(base, subject, ignore=shutil.ignore_patterns("model"))
    figures: dict = {"load_before": load()}
    trained, seconds = engine("train", str(subject), "--preset", "preview", "--expression", expression)
    figures["train_minutes"] = round(seconds / 60, 1)
    figures["steps"] = " / ".join(str(trained.get(f"{stage}_steps", "?")) for stage in ("head", "lip", "torso"))
    figures["mouth_gain"] = f"{trained.get('mouth_gain')}; {trained.get('mouth_gain_measure')}" + (
        f" on {trained['mouth_gain_frames']} frames" if "mouth_gain_frames" in trained else "") + (
        ", no time for the next gain (extrapolated)" if trained.get("mouth_gain_out_of_time") else "") + (
        f", {trained['mouth_gain_past_psnr_bound']} past the PSNR bound" if trained.get("mouth_gain_past_psnr_bound") else "")
    figures["load_training"] = load()
    scores, seconds = engine("evaluate", str(subject), "-o", str(work / f"{subject.name}-report"), "--limit", "45")
    figures.update(scores)
    figures["evaluate_minutes"] = round(seconds / 60, 2)
    figures["lags"] = f"{scores.get('mouth_best_lag')} / {scores.get('speech_mouth_best_lag')}"
    rendered, seconds = engine("render", str(subject), "--audio", str(SPEECH), "-o", str(work / f"{subject.name}.mp4"),
                               "--frames", f"0:{RENDER_FRAMES}")
    figures["render_fps"] = round(RENDER_FRAMES / seconds, 2)
    figures["render_size"] = f"{rendered['width']}x{rendered['height']}"
    figures["load_after"] = load()
    return figures


def print_table(clip: str, results: dict) -> None:
    conditions = list(results)
    print(f"\n## {clip}")
    print("| figure | " + " | ".join(conditions) + " | target |")
    print("| --- | " + " | ".join("---" for _ in conditions) + " | --- |")
    for name, key, target, test in TARGETS:
        cells = []
        for condition in conditions:
            value = results[condition].get(key)
            if isinstance(value, float):
                mark = "" if test is None else (" ok" if test(value) else " MISSED")
                cells.append(f"{value:.3f}{mark}")
            else:
                cells.append(str(value))
        print(f"| {name} | " + " | ".join(cells) + f" | {target} |")
    for condition in conditions:
        r = results[condition]
        print(f"{condition}: {r.get('render_size')}; {r['load_before']} before, {r['load_training']} after "
              f"training, {r['load_after']} at the end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="*", type=Path, default=DEFAULT_CLIPS)
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "bench_lipsync")
    parser.add_argument("--conditions", default="quiet,busy", help="of quiet, busy, shared")
    parser.add_argument("--expression", default="all", choices=("all", "upper"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results_path = args.work / "results.json"
    everything = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for clip in args.clips:
        base = args.work / clip.stem
        if not (base / "subject.json").is_file():
            _, seconds = engine("preprocess", str(clip), "-o", str(base))
            print(f"preprocessed {clip.name} in {seconds:.0f} s ({load()})", flush=True)
        results = everything.setdefault(clip.stem, {})
        for condition in args.conditions.split(","):
            if condition == "busy":
                with BusyCore():
                    results[condition] = run_condition(base, condition, args.expression, args.work)
            else:
                results[condition] = run_condition(base, condition, args.expression, args.work)
            results_path.write_text(json.dumps(everything, indent=1))
        print_table(clip.stem, results)


if __name__ == "__main__":
    main()
