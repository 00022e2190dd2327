"""Does the demo's face talk (issue 9, item 5)? How far the rendered mouth follows the speech that drove it.

    python scripts/bench_demo.py [DEMO_DIR]      (default: synctalk-demo, where `python demo.py` writes)

MediaPipe reads the inner-lip gap on every frame of DEMO_DIR/demo.mp4 (as `evaluate` reads a render) and it is
set against the jawOpen of DEMO_DIR/speech.stcurves, the curves the frames were rendered with: r at lag 0, the
lag at which it follows best, and the gap's spread (px at 512; a shut mouth moves under about 1 px). Also
prints the head's training (steps done, steps/s, seconds a stage) from its subject, which says whether the
time budget cut the head short. Measured in docs/MEASUREMENTS.md: r 0.70-0.74 with every head step, 0.36 with
620 (a machine at a third of its speed before the budget's carry-over), 0.74 with 732 after it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.arkit import ARKIT_INDEX  # noqa: E402
from engine.curves import Curves  # noqa: E402
from engine.evaluation import metrics  # noqa: E402
from engine.face.landmarker import FaceLandmarker  # noqa: E402
from engine.media.video import open_clip, read_frames  # noqa: E402
from engine.nerf.config import read_head_json  # noqa: E402
from engine.subject.format import Subject  # noqa: E402


def lip_gaps(video: Path) -> np.ndarray:
    """(frames,) inner-lip gap per frame, px at 512; NaN where no face is found."""
    info = open_clip(video)
    gaps = []
    with FaceLandmarker() as marks:
        for i, frame in enumerate(read_frames(video, info.fps, info)):
            seen = marks.analyse(frame, int(round(i * 1000 / info.fps)))
            gaps.append(metrics.mouth_opening(seen.landmarks, frame.shape[0]) if seen.faces else np.nan)
    return np.array(gaps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo_dir", type=Path, nargs="?", default=Path("synctalk-demo"))
    folder = parser.parse_args().demo_dir
    subject = Subject(folder / "subject")
    _, record = read_head_json(subject.head_config_path)
    m = record.metrics
    for stage in ("head", "lip", "torso"):
        print(f"{stage}: {m.get(f'{stage}_steps')} steps at {m.get(f'{stage}_steps_per_s')} steps/s"
              + (f", {m[f'{stage}_seconds']} s" if f"{stage}_seconds" in m else ""))
    gaps = lip_gaps(folder / "demo.mp4")
    jaw = Curves.load(folder / "speech.stcurves").weights[:, ARKIT_INDEX["jawOpen"]]
    n = min(len(gaps), len(jaw))
    seen = np.isfinite(gaps[:n])
    r = metrics.correlation(gaps[:n][seen], jaw[:n][seen])
    lag = metrics.best_lag(np.nan_to_num(gaps[:n], nan=float(np.nanmean(gaps))), jaw[:n])
    print(f"render's inner-lip gap against the speech's jawOpen: r {r if r is None else round(r, 3)} at lag 0, "
          f"best lag {lag}; the gap's spread {np.nanstd(gaps):.2f} px at 512 over {int(seen.sum())} of {n} frames")


if __name__ == "__main__":
    main()
