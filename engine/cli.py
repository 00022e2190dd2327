"""`python -m engine COMMAND ...`: one subcommand per stage; each lives in its stage's `command` module.

A command module has `configure(parser)` to add its arguments and `run(args, progress) -> dict`,
whose dict becomes the final `result` event. Modules are imported only when their command runs,
so `--help` stays fast and does not load torch.
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
from contextlib import nullcontext
from pathlib import Path

from .errors import EngineError
from .files import disk_full, is_disk_full, path_failure
from .jobs import EXIT_CANCELLED, EXIT_ERROR, EXIT_OK, event_channel
from .progress import Progress

COMMANDS = {
    "preprocess": ("engine.preprocess.command", "turn a clip of one person talking into a subject folder"),
    "train": ("engine.nerf.train_command", "train the talking-head model of a subject"),
    "render": ("engine.render.command", "render a subject speaking an audio file, composited into its frame"),
    "evaluate": ("engine.evaluation.command", "score a subject on its held-out frames"),
    "animate": ("engine.expression.command", "turn speech into ARKit blendshape and head-pose curves"),
    "lines": ("engine.audio.lines_command", "find where a recording's pauses cut it into lines"),
    "train-generic": ("engine.expression.generic_command", "train the generic (any voice) expression model on clips"),
    "train-ave": ("engine.audio.ave_command", "train the audio-visual sync encoder on subject clips"),
    "models": ("engine.models_command", "show where the pretrained models are found, or fetch them"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s module is imported to add its arguments (None: all of them)."""
    parser = argparse.ArgumentParser(
        prog="python -m engine",
        description="SyncTalk engine: talking-head subjects from clips, curves from speech, renders into edits.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in available_commands().items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_progress_option(p)
        p.set_defaults(_module=module)
        if command is None or name == command:
            importlib.import_module(module).configure(p)
    return parser


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--progress", choices=["bar", "log", "jsonl", "quiet"], default=None,
                        help="progress display: a bar on a terminal (default there), plain lines at least every "
                             "10 s without one (default there: logs, render farms), JSON lines for programs "
                             "(engine.jobs declares them)")


def add_channel_option(parser: argparse.ArgumentParser) -> None:
    """`--channel left|right`, `--audio-track N` and `--audio-from-first-sample`, for the commands that read
    speech."""
    from .media.audio import CHANNELS
    parser.add_argument("--channel", choices=CHANNELS, default=None,
                        help="read one side of a stereo recording alone: one voice of a dialogue recorded with a "
                             "speaker on each channel (default: both)")
    parser.add_argument("--audio-track", type=_track_number, default=1, metavar="N",
                        help="read the recording's audio track N, counted from 1 as players number them: a "
                             "camera's second input, a screen recording's microphone track (default: 1)")
    parser.add_argument("--audio-from-first-sample", action="store_true",
                        help="count a video file's sound from its track's first sample, as a Blender sound strip "
                             "plays it (default: from its first picture, as a player plays the file; the two "
                             "differ where its sound and picture start apart)")


def _track_number(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"{text!r} is not a track number (1, 2, ...)")
    return int(text)


def available_commands() -> dict:
    """The commands whose stage module is present in this build."""
    root = Path(__file__).resolve().parent.parent
    return {name: entry for name, entry in COMMANDS.items()
            if (root / (entry[0].replace(".", "/") + ".py")).is_file()}


def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The first word that names a command picks the one module to import (--help stays light).
    command = next((word for word in argv if word in COMMANDS), "")
    args = build_parser(command).parse_args(argv)
    return run_command(_run_stage_command, args)


def _run_stage_command(args, progress) -> dict:
    return importlib.import_module(args._module).run(args, progress)


def run_command(run, args) -> int:
    """`run(args, progress) -> dict` as a command: progress shown as `args.progress` asks (default: a bar on
    a terminal, plain lines without one), bad input as one message, SIGTERM and Ctrl-C as a clean cancel,
    the dict as the result; returns the exit code."""
    mode = args.progress or ("bar" if sys.stderr.isatty() else "log")
    # A cancel from Blender (SIGTERM) unwinds like Ctrl-C, so cleanup and checkpoints run.
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    if hasattr(signal, "SIGBREAK"):  # Windows: Blender's cancel sends CTRL_BREAK to the job's process group
        signal.signal(signal.SIGBREAK, _terminate_as_interrupt)
    with event_channel() if mode == "jsonl" else nullcontext(None) as events:
        progress = Progress(mode, events)
        try:
            result = run(args, progress)
        except EngineError as exc:
            progress.error(exc.message, exc.hint, exc.path)
            return EXIT_ERROR
        except OSError as exc:  # a full disk where no writer of ours caught it (a library writing on its own)
            failure = disk_full(exc.filename or Path.cwd()) if is_disk_full(exc) else path_failure(exc)
            if failure is None:
                raise
            progress.error(failure.message, failure.hint, failure.path)
            return EXIT_ERROR
        except KeyboardInterrupt:
            progress.cancelled()
            return EXIT_CANCELLED
        finally:
            progress.close()   # the log mode's heartbeat ends with the command
        progress.result(**(result or {}))
    if mode != "jsonl" and result:
        for key, value in result.items():
            print(f"{key}: {value}")
    return EXIT_OK
