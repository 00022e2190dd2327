"""`python demo.py [--clip C --audio A] [-o OUTDIR] [--preset P]`: the whole chain on a default input
that needs no download, from the repository root.

With no --clip, the subject is made from the engine's built-in input (engine.demo: a photograph that
ships with scikit-image, animated to generated speech). Then each step is an engine job (engine.jobs):
preprocess -> train -> animate (new speech) -> render, its progress shown here; and the Blender half
(`python -m synctalk_blender.demo_scene`, a child with the bpy module) writes a .blend holding the sound
strip and the rendered strip aligned in the sequencer and a rig keyed with the curves.

It lives beside the two packages because it is the one program that uses both: the engine never refers
to the Blender side.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

from engine import jobs
from engine.cli import add_progress_option, run_command
from engine.demo import FPS, make_default_input
from engine.errors import EngineError
from engine.nerf.presets import PRESETS

ROOT = Path(__file__).resolve().parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python demo.py", description="the whole chain (preprocess, train, animate, "
                                     "render, a .blend) on a default input that needs no download")
    parser.add_argument("--clip", type=Path, help="your own clip of one person talking (default: the built-in one)")
    parser.add_argument("--audio", type=Path, help="speech to animate and render (default: generated speech, "
                                                   "or the clip's own sound with --clip)")
    parser.add_argument("-o", "--output", type=Path, default=Path("synctalk-demo"), help="output folder")
    parser.add_argument("--preset", choices=list(PRESETS), default="demo",
                        help="training preset (default: demo): "
                             + "; ".join(f"{p.name}: {p.description}" for p in PRESETS.values()))
    parser.add_argument("--size", type=int, default=None,
                        help="subject resolution (default: 128 for the built-in clip, the crop's own for --clip)")
    parser.add_argument("--seconds", type=float, default=12.0, help="length of the built-in clip")
    parser.add_argument("--speech-seconds", type=float, default=4.0, help="length of the built-in new speech")
    add_progress_option(parser)
    return parser


def step(progress, name: str, argv: list[str]) -> dict:
    """One engine command as a job, its progress shown through ours; its result, or its error raised."""
    progress.info(f"demo: {name}")
    state = jobs.Job(name, [argv], on_event=jobs.Relay(progress)).wait()
    if state.error:
        raise EngineError(f"demo step '{name}' failed: {state.error['message']}", state.error["hint"],
                          state.error["path"])
    return state.result


def blender_scene(progress, audio: Path, video: Path, curves: Path, subject: Path, blend: Path) -> None:
    """The Blender half, in a child with the bpy module (Blender state stays out of this process)."""
    progress.info("demo: blender scene")
    argv = [sys.executable, "-m", "synctalk_blender.demo_scene", "--audio", str(audio), "--render", str(video),
            "--curves", str(curves), "--subject", str(subject), "--fps", str(FPS), "-o", str(blend)]
    # Its stdout (a summary) is not ours to pass on: in jsonl mode only events may reach our stdout.
    done = subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL)
    if done.returncode != 0:
        raise EngineError(f"demo step 'blender scene' failed (exit code {done.returncode})",
                          f"run it alone to see why: {shlex.join(argv)}")


def run(args, progress) -> dict:
    started = time.monotonic()
    out = args.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.clip is None:
        clip, audio = make_default_input(out / "input", args.seconds, args.speech_seconds, progress)
        audio = args.audio.resolve() if args.audio else audio
        size = args.size or 128
    else:
        clip = args.clip.resolve()
        if not clip.is_file():
            raise EngineError(f"{clip}: clip not found", "give the path of a video of one person talking", path=clip)
        audio = args.audio.resolve() if args.audio else None
        size = args.size
    subject = out / "subject"
    step(progress, "preprocess", jobs.preprocess_argv(clip, subject, fps=FPS, size=size))
    step(progress, "train", jobs.train_argv(subject, preset=args.preset))
    audio = audio or subject / "audio.wav"
    curves = out / "speech.stcurves"
    step(progress, "animate", jobs.animate_argv(audio, curves, subject=subject, fps=FPS))
    video = out / "demo.mp4"
    step(progress, "render", jobs.render_argv(subject, audio, video, curves=curves))
    blend = out / "demo.blend"
    blender_scene(progress, audio, video, curves, subject, blend)
    result = {"video": str(video), "blend": str(blend), "subject": str(subject), "curves": str(curves),
              "seconds": round(time.monotonic() - started, 1)}
    if progress.mode != "jsonl":
        print(f"\nDemo done in {result['seconds']:.0f} s.\n  Watch:  {video}\n  Open in Blender:  {blend}  "
              "(Video Editing: the speech and the rendered strip; the Face mesh carries the ARKit keys)\n"
              f"  Subject (reuse it in the extension's panels):  {subject}", file=sys.stderr)
        if args.preset in ("tiny", "demo"):
            print(f"  The {args.preset} preset is a quick look; --preset preview trains a sharper likeness "
                  "(under 40 minutes on a 2-core CPU).", file=sys.stderr)
    return result


if __name__ == "__main__":
    sys.exit(run_command(run, build_parser().parse_args()))
