"""`python -m engine animate SPEECH --subject SUBJECT_DIR | --generic -o CURVES`: speech -> ARKit curves."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..audio.features import encoder_names
from ..cli import add_channel_option
from ..errors import EngineError
from ..files import require_output_file
from .headmotion import HEAD_MODES


def configure(parser) -> None:
    parser.add_argument("speech", help="audio or video file with the speech (wav, flac, mp3, ogg, m4a, mp4, mov, ...)")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--subject", help="a trained subject folder: its own expression model, blinks and head motion")
    who.add_argument("--generic", action="store_true", help="the bundled model that works for any voice")
    who.add_argument("--model", help="a generic model retrained with `python -m engine train-generic`")
    parser.add_argument("-o", "--output", required=True,
                        help="curves file: .csv (Live Link Face) or .stcurves (lossless, with head translation)")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate of the curves (default 25)")
    parser.add_argument("--start", type=float, default=None, metavar="SECONDS",
                        help="animate the speech from this time on (default: its start); the curves' first frame "
                             "is this time")
    parser.add_argument("--end", type=float, default=None, metavar="SECONDS",
                        help="... up to this time (default: its end), e.g. one line of a long recording")
    add_channel_option(parser)
    parser.add_argument("--smooth", type=float, default=0.0, help="Gaussian smoothing, sigma in frames (default 0: off)")
    parser.add_argument("--intensity", default="",
                        help="per-region scale around the rest pose, e.g. mouth=1.2,brows=0.8 "
                             "(regions: mouth, jaw, brows, eyes, cheeks, nose, tongue; head=0.5 halves the head motion)")
    parser.add_argument("--head", choices=HEAD_MODES, default=None,
                        help="head motion: replay the subject's (default with --subject), generate (default with "
                             "--generic), or none")
    parser.add_argument("--encoder", choices=encoder_names(), default=None,
                        help="use the subject's expression model trained with this audio encoder")
    parser.add_argument("--seed", type=int, default=None,
                        help="this take's seed for blink timing and generated head motion (default: a new one each "
                             "run, printed in the result so the take can be made again)")
    parser.add_argument("--blink-rate", type=float, default=None,
                        help="blinks a minute (default: the subject's own rate, or 17)")
    parser.add_argument("--lead", type=float, default=0.0, metavar="FRAMES",
                        help="move the mouth and jaw this many frames ahead of the sound (negative: behind; "
                             "default 0; animators often lead by 1 or 2)")
    parser.add_argument("--models", default=None, help="folder with the pretrained models (else $SYNCTALK_MODELS)")


def run(args, progress) -> dict:
    from ..audio.features import SpeechFeatures
    from ..subject.format import Subject
    from .animate import Animator, check_frame_rate, parse_intensity
    output = Path(args.output)
    if output.suffix.lower() not in (".csv", ".stcurves"):
        raise EngineError(f"{output}: unknown curves format", "name the output .csv or .stcurves", path=str(output))
    require_output_file(output)
    intensity = parse_intensity(args.intensity)
    check_frame_rate(args.fps)   # before the speech is read
    if args.seed is not None and not 0 <= args.seed < 2 ** 32:
        raise EngineError(f"--seed {args.seed} is out of range", "use a whole number from 0 to 4294967295")
    started = time.monotonic()
    subject = Subject(args.subject) if args.subject else None
    animator = Animator(subject, args.generic, args.encoder, args.models, args.model)
    loaded = time.monotonic()
    speech = SpeechFeatures.of_span(args.speech, args.start, args.end, progress, args.channel, args.audio_track,
                                    args.audio_from_first_sample)
    seed = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy % 2 ** 31)
    curves = animator(speech, args.fps, args.smooth, intensity, args.head, seed, args.blink_rate, progress=progress,
                      lead=args.lead)
    curves.save(output)
    if output.suffix.lower() == ".csv" and args.fps != round(args.fps):
        drift = len(curves) / round(args.fps) - len(curves) / args.fps
        progress.warn(f"{output}: a Live Link Face CSV counts whole frame rates: read back, these {args.fps:g}-fps "
                      f"curves play at {round(args.fps)} and drift {abs(drift):.2f} s by their end; .stcurves keeps "
                      "the rate")
    return {"output": str(output), "frames": len(curves), "fps": curves.fps,
            "seconds_audio": round(speech.audio.seconds, 2), "start_s": args.start or 0.0, "channel": args.channel,
            "audio_track": args.audio_track,
            "encoder": animator.model.config.encoder, "seed": seed, "lead": args.lead,
            "blinks": animator.blinks.as_dict(), "load_s": round(loaded - started, 2),
            "animate_s": round(time.monotonic() - loaded, 2)}

