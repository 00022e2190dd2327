"""`python -m engine render SUBJECT --audio SPEECH [--curves CURVES] -o OUT`: the subject speaking SPEECH.

Frames are driven by the speech (and by the curves when given), rendered by the subject's trained
talking head, and composited into the subject's own frame: pasted back into the full-resolution
source clip by default, or at the crop size with --crop.
"""
from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

from ..audio.features import SpeechFeatures
from ..cli import add_channel_option
from ..errors import EngineError
from ..subject.format import Subject
from .driving import drive_speech, parse_range, replayed_frames
from .output import FORMATS, choose_format, open_output
from .pipeline import Framing, frames

# A lower bound of the output's size per pixel, to refuse a render the disk cannot hold before it starts:
# PNG of a rendered face compresses to about half of its raw RGB(A); H.264 at crf 18 to far less.
OUTPUT_BYTES_PER_PIXEL = {"png": 1.0, "rgba": 1.0, "mp4": 0.01}
PIECE_FRAMES = 1500  # frames driven at once (1 minute at 25 fps: about 25 MB of `whisper` audio windows)


def configure(parser) -> None:
    parser.add_argument("subject", type=Path, help="subject folder with a trained model")
    parser.add_argument("--audio", type=Path, required=True, help="speech to say (wav, mp3, flac, m4a, a video...)")
    add_channel_option(parser)
    parser.add_argument("--curves", type=Path, default=None,
                        help="blendshape and head-pose curves (.stcurves or Live Link Face .csv); "
                             "default: replay the subject's own expressions and head motion")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="an .mp4 file, or a folder for a PNG sequence")
    parser.add_argument("--frames", default=None, metavar="A:B",
                        help="render only frames A to B-1 (0-based), e.g. one render-farm piece")
    parser.add_argument("--fps", type=float, default=None,
                        help="frame rate of the render, e.g. the edit's 24 or 29.97 (default: the subject's); "
                             "the frames are driven at this rate, so they stay on the sound")
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
    from ..files import remove_leftovers, require_output_file
    from ..lock import JobLock

    subject = Subject(args.subject)
    fps = subject.fps if args.fps is None else args.fps
    if not 0 < fps <= 240:
        raise EngineError(f"--fps {args.fps:g} is out of range", "use a frame rate such as 24, 25, 29.97 or 30")
    fmt = choose_format(args.format, args.output)
    _refuse_writing_over_inputs(args.output, subject, args)
    if fmt == "mp4":
        require_output_file(args.output)
    with JobLock(args.output, "render"):
        remove_leftovers(args.output.parent)
        if fmt != "mp4":
            remove_leftovers(args.output)
        return _render(subject, fmt, fps, args, progress)


def _refuse_writing_over_inputs(output: Path, subject: Subject, args) -> None:
    """A render never writes over what it reads: the speech, the curves, the subject's clip or the subject's own
    files (a folder of its own beside them, as Blender's renders/, is fine)."""
    source = subject.meta.source
    inputs = {"the speech it renders (--audio)": args.audio, "the curves that drive it (--curves)": args.curves,
              "the subject's source clip": source and source.clip_in(subject.root)}
    for what, path in inputs.items():
        if path is not None and Path(path).resolve() == output.resolve():
            raise EngineError(f"{output}: is {what}", "name another output", path=str(output))
    if subject.holds(output):
        raise EngineError(f"{output}: is one of the subject's own files or folders", "render to a folder of its "
                          f"own (e.g. {subject.root / 'renders'})", path=str(output))


def _render(subject: Subject, fmt: str, fps: float, args, progress) -> dict:
    from ..curves import Curves
    from ..files import require_free_space
    from ..nerf.talking_head import TalkingHead

    speech = SpeechFeatures(args.audio, subject.cache_dir, progress, channel=args.channel, track=args.audio_track,
                             from_first_sample=args.audio_from_first_sample)
    curves = Curves.load(args.curves) if args.curves is not None else None
    head = TalkingHead.load(subject, device=args.device)
    progress.info(f"audio features: {head.audio_encoder}")
    total = speech.n_frames(fps)
    start, stop = parse_range(args.frames, total)
    count = stop - start
    rgba = fmt == "rgba"

    def driving_of(first: int, end: int):
        return drive_speech(subject, speech, head.audio_encoder, head.audio_window, curves,
                            curves_path=args.curves, progress=progress,
                            mouth_from_speech=head.follows_mouth_curves, fps=fps, start=first, stop=end)

    with ExitStack() as stack:
        # the subject frames the render pastes into, in the order it does
        framing = Framing(subject, args.full_frame, replayed_frames(subject, fps, start, stop), progress, stack,
                          rgba=rgba)
        width, height = framing.size(head.size)
        require_free_space(args.output.parent, count * width * height * OUTPUT_BYTES_PER_PIXEL[fmt],
                           f"rendering {count} frames of {width}x{height}")
        output = open_output(fmt, args.output, width, height, fps, args.audio, start, count, args.audio_track,
                             args.audio_from_first_sample)
        started = time.monotonic()
        try:
            with progress.stage("render", count) as stage:
                # Driven a piece at a time: a frame's audio window is kilobytes, a 3-hour speech's are gigabytes.
                # A piece's frames get exactly the inputs they get in a whole render (drive_speech's range).
                done = 0
                for first in range(start, stop, PIECE_FRAMES):
                    for number, image in frames(head, driving_of(first, min(first + PIECE_FRAMES, stop)),
                                                framing, rgba):
                        output.write(number, image)
                        done += 1
                        stage.advance(fps=done / max(time.monotonic() - started, 1e-9))
        except BaseException:
            output.abort()
            raise
        path = output.close()
    if fmt != "mp4":   # frames of an earlier, longer render of other speech would play on after this one's
        stale = [p for p in path.glob("*.png") if p.stem.isdigit() and int(p.stem) >= total]
        if stale:
            progress.warn(f"{path}: holds {len(stale)} frames numbered past this speech's {total} (from an earlier "
                          "render): remove them, or render into an empty folder")
    elapsed = time.monotonic() - started
    return {"output": str(path), "format": fmt, "frames": [start, stop], "total_frames": total,
            "width": width, "height": height, "full_frame": framing.full, "fps": fps, "channel": args.channel,
            "audio_track": args.audio_track, "render_fps": round(count / max(elapsed, 1e-9), 3)}
