"""`python -m engine animate SPEECH --subject SUBJECT_DIR | --generic -o CURVES`: speech -> ARKit curves."""
from __future__ import annotations

import time
from pathlib import Path

from ..audio.features import encoder_names
from ..errors import EngineError
from .headmotion import HEAD_MODES


def configure(parser) -> None:
    parser.add_argument("speech", help="audio or video file with the speech (wav, flac, mp3, ogg, m4a, mp4, mov, ...)")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--subject", help="a trained subject folder: its own expression model, blinks and head motion")
    who.add_argument("--generic", action="store_true", help="the bundled model that works for any voice")
    who.add_argument("--model", help="a generic expression model file (.safetensors, e.g. one retrained on your actors)")
    parser.add_argument("-o", "--output", required=True,
                        help="curves file: .csv (Live Link Face) or .stcurves (lossless, with head translation)")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate of the curves (default 25)")
    parser.add_argument("--smooth", type=float, default=0.0, help="Gaussian smoothing, sigma in frames (default 0: off)")
    parser.add_argument("--intensity", default="",
                        help="per-region scale around the rest pose, e.g. mouth=1.2,brows=0.8 "
                             "(regions: mouth, jaw, brows, eyes, cheeks, nose, tongue, head)")
    parser.add_argument("--head", choices=HEAD_MODES, default=None,
                        help="head motion: replay the subject's (default with --subject), generate (default with "
                             "--generic), or none")
    parser.add_argument("--encoder", choices=encoder_names(), default=None,
                        help="use the subject's expression model trained with this audio encoder")
    parser.add_argument("--seed", type=int, default=0, help="seed for blink timing and generated head motion")
    parser.add_argument("--blink-rate", type=float, default=None,
                        help="blinks a minute (default: the subject's own, about 17 for the generic model)")
    parser.add_argument("--models", default=None, help="folder with the pretrained models (else $SYNCTALK_MODELS)")


def run(args, progress) -> dict:
    from ..media.audio import open_audio
    from ..subject.format import Subject
    from .animate import Animator, parse_intensity
    output = Path(args.output)
    if output.suffix.lower() not in (".csv", ".stcurves"):
        raise EngineError(f"{output}: unknown curves format", "name the output .csv or .stcurves", path=str(output))
    intensity = parse_intensity(args.intensity)
    started = time.monotonic()
    subject = Subject(args.subject) if args.subject else None
    animator = Animator(subject, args.generic or bool(args.model), args.encoder, args.models)
    if args.model:
        _use_model_file(animator, Path(args.model), args.models)
    if args.blink_rate is not None:
        if not 0 < args.blink_rate <= 60:
            raise EngineError(f"--blink-rate {args.blink_rate} is out of range", "give 1 to 60 blinks a minute")
        animator.blinks.rate_per_s = args.blink_rate / 60
    loaded = time.monotonic()
    speech = open_audio(args.speech)
    curves = animator(speech, args.fps, args.smooth, intensity, args.head, args.seed, progress=progress)
    curves.save(output)
    return {"output": str(output), "frames": len(curves), "fps": curves.fps,
            "seconds_audio": round(speech.seconds, 2), "encoder": animator.model.config.encoder,
            "blinks": animator.blinks.as_dict(), "load_s": round(loaded - started, 2),
            "animate_s": round(time.monotonic() - loaded, 2)}


def _use_model_file(animator, path: Path, models_dir) -> None:
    """Swap the animator's generic model for the one in `path` (and its audio encoder when it differs)."""
    from ..audio.features import get_encoder
    from .model import ExpressionNet
    if not path.is_file():
        raise EngineError(f"{path}: expression model not found", "check the Model File path", path=str(path))
    animator.model = ExpressionNet.load(path)
    if animator.model.config.encoder != animator.encoder.name:
        animator.encoder = get_encoder(animator.model.config.encoder, models_dir)
