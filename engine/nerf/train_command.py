"""`python -m engine train SUBJECT_DIR --preset preview|standard|paper`: train a subject's talking head.

Runs the NeRF stages (head, lip, torso), then the subject's audio -> blendshape model
(engine.expression.training, built on the generic model or --generic-model). Ctrl-C or SIGTERM stops with a checkpoint; `--resume` continues, from
any stage (the checkpoint is kept until the last stage is done). Nothing trained is thrown away
without being asked: an unfinished training is continued with --resume or dropped with --restart,
and a stage subset (--stages lip) continues the trained head, keeping the stages it does not run.
One train at a time per subject (engine.lock).
"""
from __future__ import annotations

import time

from .presets import PRESETS
from .stages import STAGES

ALL_STAGES = STAGES + ("expression",)
CHECKPOINTS_OF_ROOM = 2   # free space wanted before training: the checkpoint and its replacement


def configure(parser) -> None:
    parser.add_argument("subject", help="a preprocessed subject folder")
    parser.add_argument("--preset", choices=list(PRESETS), default="preview",
                        help="; ".join(f"{p.name}: {p.description}" for p in PRESETS.values()))
    parser.add_argument("--audio-encoder", choices=["mel", "whisper", "ave"], default=None,
                        help="per-frame audio features the head listens to (default: the engine's default encoder)")
    parser.add_argument("--expression", choices=["upper", "all"], default="upper",
                        help="blendshapes the head is conditioned on: SyncTalk's 7 upper-face values, or all 52")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue the unfinished training from its checkpoint")
    start.add_argument("--restart", action="store_true",
                       help="drop the unfinished training's checkpoint and start over")
    parser.add_argument("--generic-model", default=None,
                        help="a generic model retrained with `train-generic`: the subject's speech -> face model "
                             "builds on it (default: the bundled one); a copy is kept in the subject")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--stages", default=",".join(ALL_STAGES),
                        help=f"comma-separated subset of {','.join(ALL_STAGES)}; a subset on a trained subject "
                             "continues its head and keeps the stages it does not run")


def run(args, progress) -> dict:
    from ..errors import EngineError
    from ..files import remove_leftovers
    from ..lock import JobLock
    from ..subject.format import Subject

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(ALL_STAGES))
    if unknown or not stages:
        raise EngineError(f"unknown stage(s) {', '.join(unknown) or '(none given)'}",
                          f"choose from {','.join(ALL_STAGES)}")
    subject = Subject(args.subject)
    with JobLock(subject.root, "train"):
        remove_leftovers(subject.model_dir)
        return _train(subject, stages, args, progress)


def _train(subject, stages: list[str], args, progress) -> dict:
    from ..errors import EngineError
    from ..files import DiskFull
    from ..subject.format import Subject

    started = time.monotonic()
    nerf_stages = [s for s in STAGES if s in stages]
    checkpoint = subject.checkpoint_path
    head = subject.model("head")
    if args.restart:
        checkpoint.unlink(missing_ok=True)
    elif checkpoint.is_file() and nerf_stages and not args.resume:
        raise EngineError(f"{subject.root} has an unfinished training ({checkpoint.name})",
                          "continue it with --resume, or start over with --restart", path=str(checkpoint))
    result: dict = {}
    encoder = args.audio_encoder
    nerf_done = args.resume and not checkpoint.is_file() and head is not None and set(nerf_stages) <= set(head.stages)
    if nerf_done:  # cancelled in the expression stage after the head was saved
        progress.info(f"the head is trained ({', '.join(head.stages)}); resuming with the stages after it")
        encoder = head.audio_encoder
    elif nerf_stages:
        result = _train_head(subject, nerf_stages, head, args, progress)
        encoder = result.pop("audio_encoder")
    elif head is not None:  # --stages expression: the head is kept; the expression model uses its encoder
        encoder = head.audio_encoder
    if "expression" in stages:
        from ..expression.training import train_expression
        try:
            result["expression"] = train_expression(subject, progress, encoder=encoder,
                                                    generic_model=args.generic_model)
        except KeyboardInterrupt:
            if checkpoint.is_file():
                progress.info("stopped in the expression stage; the head is saved: continue with --resume")
            raise
        except DiskFull as exc:
            raise DiskFull(exc.message, "free some disk space, then run the expression stage again "
                                        "(--stages expression); the trained head is kept", exc.path) from exc
    checkpoint.unlink(missing_ok=True)
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    return result


def _train_head(subject, nerf_stages: list[str], head, args, progress) -> dict:
    from ..files import DiskFull, require_free_space
    from .presets import get_preset
    from .trainer import Trainer

    subset = set(nerf_stages) != set(STAGES)
    continue_stages = nerf_stages if subset and head is not None and not args.resume and not args.restart else None
    if head is not None and not subset and not args.resume:
        progress.info(f"{subject.root.name} has a trained head ({head.preset}, {', '.join(head.stages)}); "
                      "the new one replaces it when this training finishes")
    trainer = Trainer(subject, get_preset(args.preset), progress, audio_encoder=args.audio_encoder,
                      device=args.device, expression=args.expression, resume=args.resume,
                      continue_stages=continue_stages)
    checkpoint_bytes = sum(t.numel() * t.element_size() for t in trainer.model.state_dict().values()) * 3
    require_free_space(subject.model_dir, CHECKPOINTS_OF_ROOM * checkpoint_bytes, "training's checkpoints")
    try:
        result = trainer.run(stages=nerf_stages)
    except DiskFull as exc:
        kept = "the last checkpoint is kept: continue with --resume" if subject.checkpoint_path.is_file() \
            else "nothing was kept: train again"
        raise DiskFull(exc.message, f"free some disk space; {kept}", exc.path) from exc
    return {**result, "audio_encoder": trainer.model.config.audio_encoder}
