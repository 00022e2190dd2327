"""Train the generic (any voice) expression model on the real clips and ship it in engine/expression/.

    python scripts/train_generic.py [CLIP ...] [--encoder whisper] [--unseen-speakers]

Default clips: every .mp4 in ../shared/data/video. Each clip's last 1/11 is held out; the held-out
Pearson r of jawOpen and the mouth/jaw MAE are printed per clip and pooled, and stored in the
model file's metadata. --unseen-speakers also scores each clip with a model fitted without it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.expression.generic import GENERIC_MODEL, capture_clip, train_generic  # noqa: E402
from engine.progress import Progress  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="*", type=Path)
    parser.add_argument("--encoder", default="whisper")
    parser.add_argument("--unseen-speakers", action="store_true",
                        help="also fit once per clip without it and score on all of it (a voice never heard)")
    parser.add_argument("-o", "--output", type=Path, default=GENERIC_MODEL)
    args = parser.parse_args()
    clips = args.clips or sorted((ROOT.parent / "shared" / "data" / "video").glob("*.mp4"))
    started = time.monotonic()
    captured = []
    for path in clips:
        captured.append(capture_clip(path))
        print(f"captured {path.name}: {len(captured[-1].blendshapes)} frames", flush=True)
    model, metrics = train_generic(captured, args.encoder, Progress("quiet"), args.unseen_speakers)
    model.save(args.output, {"metrics": json.dumps(metrics), "trained_on": ",".join(p.name for p in clips),
                             "held_out": "last 1/11 of each clip"})
    print(json.dumps(metrics, indent=1))
    print(f"saved {args.output} ({args.output.stat().st_size // 1024} KB) in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
