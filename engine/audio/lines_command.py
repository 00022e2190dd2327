"""`python -m engine lines SPEECH [--start S --end E] [--min-pause 0.5]`: where a recording's pauses fall, to cut
it into lines (a dialogue on one microphone: each character keyed from their own lines)."""
from __future__ import annotations

from ..cli import add_channel_option
from ..errors import EngineError


def configure(parser) -> None:
    parser.add_argument("speech", help="audio or video file with the speech")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate the cuts are counted in (default 25)")
    parser.add_argument("--start", type=float, default=None, metavar="SECONDS",
                        help="read the speech from this time on (default: its start); frame 0 is this time")
    parser.add_argument("--end", type=float, default=None, metavar="SECONDS", help="... up to this time")
    parser.add_argument("--min-pause", type=float, default=0.5, metavar="SECONDS",
                        help="the shortest pause that ends a line (default 0.5; gaps between words are shorter)")
    add_channel_option(parser)


def run(args, progress) -> dict:
    from .features import SpeechFeatures
    from .vad import pause_cuts, voice_activity
    from ..subject.schema import MAX_FPS
    if not 0.1 <= args.min_pause <= 10:
        raise EngineError(f"--min-pause must be between 0.1 and 10 seconds, got {args.min_pause}", "use 0.5")
    if not 0 < args.fps <= MAX_FPS:
        raise EngineError(f"--fps must be above 0 and at most {MAX_FPS:g}, got {args.fps}", "use the scene's rate")
    speech = SpeechFeatures.of_span(args.speech, args.start, args.end, progress, args.channel, args.audio_track,
                                    args.audio_from_first_sample)
    n = speech.n_frames(args.fps)
    cuts = pause_cuts(voice_activity(speech, args.fps, n), round(args.min_pause * args.fps))
    bounds = [0, *cuts, n]
    return {"fps": args.fps, "frames": n, "cuts": cuts, "lines": [[a, b] for a, b in zip(bounds, bounds[1:])]}
