"""`python -m engine train-generic CLIPS_OR_FOLDER... -o MODEL`: train the generic (any voice) expression model.

The clips are people speaking to camera (the more speakers the better); a folder's MANIFEST.tsv (columns
`file`, `speaker`) says who speaks in which file, else each file is one speaker. The model is scored by
speaker-disjoint cross-validation (printed, and stored in the model file); `animate --model MODEL` and the
extension's preferences use it.
"""
from __future__ import annotations

from pathlib import Path


def configure(parser) -> None:
    parser.add_argument("clips", nargs="+", help="video clips of people speaking to camera, or folders of them")
    parser.add_argument("-o", "--output", required=True, help="model file (.safetensors)")
    parser.add_argument("--cache", default=None,
                        help="folder for each clip's captured blendshapes and audio features, so that a rerun skips "
                             "the capture (default: the engine's cache folder)")
    parser.add_argument("--folds", type=int, default=5, help="speaker-disjoint cross-validation folds (default 5)")
    parser.add_argument("--steps", type=int, default=1000, help="training steps per model (default 1000)")
    parser.add_argument("--encoder", default=None, help="audio encoder (default: whisper-mid, Whisper's middle layers)")
    parser.add_argument("--replace", action="store_true", help="replace OUTPUT if it exists (else it is kept)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default=None, help="folder with the pretrained models (else $SYNCTALK_MODELS)")


def run(args, progress) -> dict:
    import torch
    from ..audio.features import get_encoder
    from ..errors import EngineError
    from ..files import require_new_model_file
    from ..models import cache_dir
    from .corpus import SPEEDS, find_clips, load_clip
    from .generic import GENERIC_ENCODER, save_generic, train_generic, unusable_because
    output = Path(args.output)
    require_new_model_file(output, "studio.safetensors", args.replace)
    if args.folds < 2 or args.steps < 100:
        raise EngineError("--folds must be at least 2 and --steps at least 100", "use e.g. --folds 5 --steps 1000")
    sources = find_clips(args.clips)
    encoder = get_encoder(args.encoder or GENERIC_ENCODER, args.models)
    cache = Path(args.cache) if args.cache else cache_dir() / "clips"
    torch.set_num_threads(1)  # layers this small run fastest on one thread (two were several times slower)
    clips, used, skipped = [], [], []
    with progress.stage("capture", total=len(sources)) as stage:
        for source in sources:
            # one unusable file in a folder of footage (no sound, unreadable, no face) does not stop the others
            try:
                clip = load_clip(source, encoder, cache_dir=cache, speeds=SPEEDS)
                why = unusable_because(clip)
                refusal = why and f"{source.path}: {why}"
            except EngineError as error:
                if error.path != str(source.path):
                    raise
                refusal = error.message
            if refusal:
                skipped.append({"path": str(source.path), "error": refusal})
                progress.warn(f"skipped {refusal}")
            else:
                clips.append(clip)
                used.append(source)   # the model file lists these as its sources
            stage.advance(1)
    if not clips:
        raise EngineError("none of the clips could be used (each was skipped, see above)",
                          "pass clips of people speaking to camera, with their sound")
    model, report = train_generic(clips, encoder, progress, args.folds, args.steps, args.seed)
    save_generic(model, output, report, [f"{s.path.name}\t{s.speaker}" for s in used])
    return {"output": str(output), **{k: v for k, v in report.items() if k != "calibration"},
            "cross_validation": report["cross_validation"]["summary"], "skipped": skipped}
