"""`python -m engine train-ave SUBJECT_DIR... -o ave.safetensors`: train the `ave` audio encoder on subject clips."""
from __future__ import annotations

from pathlib import Path


def configure(parser) -> None:
    parser.add_argument("subjects", nargs="+", help="preprocessed subject folders (their frames, landmarks, audio)")
    parser.add_argument("-o", "--output", required=True,
                        help="weights file (.safetensors); put it in the models folder, or point SYNCTALK_AVE at it, "
                             "to use the 'ave' encoder")
    parser.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    parser.add_argument("--batch", type=int, default=32, help="pairs per step (default 32)")
    parser.add_argument("--replace", action="store_true", help="replace OUTPUT if it exists (else it is kept)")
    parser.add_argument("--seed", type=int, default=0)


def run(args, progress) -> dict:
    import torch
    from ..files import require_new_model_file
    from ..subject.format import Subject
    from .ave_training import save_sync_model, subject_clip, train_ave
    output = Path(args.output)
    require_new_model_file(output, "ave.safetensors", args.replace)
    subjects = [Subject(path) for path in args.subjects]
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    with progress.stage("mouth crops", total=len(subjects)) as stage:
        clips = []
        for subject in subjects:
            clips.append(subject_clip(subject))
            stage.advance(1)
    model, metrics = train_ave(clips, progress, args.steps, args.batch, args.seed)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_sync_model(model, output, {"subjects": ",".join(s.root.name for s in subjects), "steps": str(args.steps)})
    return {"output": str(output), "frames": int(sum(len(c.crops) for c in clips)), **metrics}
