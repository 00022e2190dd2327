"""`python -m engine train SUBJECT_DIR --preset preview|standard|paper`: train a subject's talking head.

Runs the NeRF stages (head, lip, torso), then the subject's audio -> blendshape model
(engine.expression.training). Ctrl-C or SIGTERM stops with a checkpoint; `--resume` continues.
"""
from __future__ import annotations

import time

from .presets import PRESETS
from .trainer import STAGES

ALL_STAGES = STAGES + ("expression",)


def configure(parser) -> None:
    parser.add_argument("subject", help="a preprocessed subject folder")
    parser.add_argument("--preset", choices=list(PRESETS), default="preview",
                        help="preview: 2-core CPU, under 45 min on a 60 s clip; standard/paper: GPU")
    parser.add_argument("--audio-encoder", choices=["mel", "whisper", "ave"], default=None,
                        help="per-frame audio features the head listens to (default: the engine's default encoder)")
    parser.add_argument("--expression", choices=["upper", "all"], default="upper",
                        help="blendshapes the head is conditioned on: SyncTalk's 7 upper-face values, or all 52")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--stages", default=",".join(ALL_STAGES),
                        help=f"comma-separated subset of {','.join(ALL_STAGES)}")


def run(args, progress) -> dict:
    from ..errors import EngineError
    from ..subject.format import Subject
    from .presets import get_preset
    from .trainer import Trainer

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(ALL_STAGES))
    if unknown:
        raise EngineError(f"unknown stage(s) {', '.join(unknown)}", f"choose from {','.join(ALL_STAGES)}")
    started = time.monotonic()
    subject = Subject(args.subject)
    trainer = Trainer(subject, get_preset(args.preset), progress, audio_encoder=args.audio_encoder,
                      device=args.device, expression=args.expression, resume=args.resume)
    result = trainer.run(stages=[s for s in stages if s in STAGES])
    if "expression" in stages:
        from ..expression.training import train_expression
        result["expression"] = train_expression(Subject(args.subject), progress, encoder=trainer.model.config["audio_encoder"])
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    return result
