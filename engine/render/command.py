"""`python -m engine render SUBJECT --audio SPEECH [--curves CURVES] -o OUT`: the subject speaking SPEECH.

Frames are driven by the speech (and by the curves when given), rendered by the subject's trained
talking head, and composited into the subject's own frame: pasted back into the full-resolution
source clip by default, or at the crop size with --crop.
"""
from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from ..audio.features import SpeechFeatures
from ..subject.format import Subject
from .driving import drive_speech, parse_range
from .output import FORMATS, choose_format, open_output
from .pipeline import Framing, frames

# A lower bound of the output's size per pixel, to refuse a render the disk cannot hold before it starts:
# PNG of a rendered face compresses to about half of its raw RGB(A); H.264 at crf 18 to far less.
OUTPUT_BYTES_PER_PIXEL = {"png": 1.0, "rgba": 1.0, "mp4": 0.01}


def configure(parser) -> None:
    parser.add_argument("subject", type=Path, help="subject folder with a trained model")
    parser.add_argument("--audio", type=Path, required=True, help="speech to say (wav, mp3, flac, m4a, a video...)")
    parser.add_argument("--curves", type=Path, default=None,
                        help="blendshape and head-pose curves (.stcurves or Live Link Face .csv); "
                             "default: replay the subject's own expressions and head motion")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="an .mp4 file, or a folder for a PNG sequence")
    parser.add_argument("--frames", default=None, metavar="A:B",
                        help="render only frames A to B-1 (0-based), e.g. one render-farm piece")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="mp4 (H.264 + AAC), png (RGB sequence) or rgba (head and torso over transparency, "
                             "PNG sequence); default from the output name")
    framing = parser.add_mutually_exclusive_group()
    framing.add_argument("--full-frame", dest="full_frame", action="store_true", default=True,
                         help="paste into the full-resolution source frame (default)")
    framing.add_argument("--crop", dest="full_frame", action="store_false",
                         help="output the subject's crop only")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def run(args, progress) -> dict:
    from ..files import remove_leftovers
    from ..lock import JobLock

    subject = Subject(args.subject)
    fmt = choose_format(args.format, args.output)
    with JobLock(args.output, "render"):
        remove_leftovers(args.output.parent)
        if fmt != "mp4":
            remove_leftovers(args.output)
        return _render(subject, fmt, args, progress)


def _render(subject: Subject, fmt: str, args, progress) -> dict:
    from ..curves import Curves
    from ..files import require_free_space
    from ..nerf.model import TalkingHead

    speech = SpeechFeatures(args.audio, subject.cache_dir, progress)
    curves = Curves.load(args.curves) if args.curves is not None else None
    head = TalkingHead.load(subject, device=args.device)
    progress.info(f"audio features: {head.audio_encoder}")
    driving = drive_speech(subject, speech, head.audio_encoder, head.audio_window, curves,
                           curves_path=args.curves, progress=progress,
                           mouth_from_speech=head.follows_mouth_curves)
    total = len(driving)
    start, stop = parse_range(args.frames, total)
    driving = driving.slice(start, stop)
    rgba = fmt == "rgba"

    with ExitStack() as stack:
        framing = Framing(subject, args.full_frame, np.unique(driving.frame_index), progress, stack, rgba=rgba)
        width, height = framing.size(head.size)
        require_free_space(args.output.parent, len(driving) * width * height * OUTPUT_BYTES_PER_PIXEL[fmt],
                           f"rendering {len(driving)} frames of {width}x{height}")
        output = open_output(fmt, args.output, width, height, subject.fps, args.audio, start, len(driving))
        started = time.monotonic()
        try:
            with progress.stage("render", len(driving)) as stage:
                for done, (number, image) in enumerate(frames(head, driving, framing, rgba), 1):
                    output.write(number, image)
                    stage.advance(fps=done / max(time.monotonic() - started, 1e-9))
        except BaseException:
            output.abort()
            raise
        path = output.close()
    elapsed = time.monotonic() - started
    return {"output": str(path), "format": fmt, "frames": [start, stop], "total_frames": total,
            "width": width, "height": height, "full_frame": framing.full, "fps": subject.fps,
            "render_fps": round(len(driving) / max(elapsed, 1e-9), 3)}
