"""Figures of the Head-Sync stabilizer (issue 2, step 6) on a real clip, the frame used as the crop:

  head-pose jitter raw (MediaPipe) against stabilised, keypoint and landmark reprojection RMSE,
  keypoints kept, focal length, how closely the stabilised angles follow the raw ones, and the
  stabilizer's own time (wall and CPU; MediaPipe's analysis is timed apart).

Usage: .venv/bin/python scripts/bench_stabilizer.py [CLIP] [--frames N]
Timings on a shared machine are inflated by other work: the script prints the load average.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("SYNCTALK_MODELS", str(ROOT.parent / "shared" / "models"))

import numpy as np  # noqa: E402

from engine.progress import Progress  # noqa: E402
from engine.tracking import stabilize  # noqa: E402
from engine.tracking.headpose import head_motion_from_poses, reference_pose  # noqa: E402
from engine.tracking.observations import observe_clip  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip", nargs="?", default=str(ROOT.parent / "shared" / "data" / "video" / "lieu_60s.mp4"))
    parser.add_argument("--frames", type=int, default=None, help="only the first N frames")
    args = parser.parse_args()

    started = time.perf_counter()
    gray, landmarks, transforms, valid = observe_clip(args.clip, args.frames)
    analysed = time.perf_counter()
    print(f"{args.clip}: {len(gray)} frames {gray.shape[2]}x{gray.shape[1]}, "
          f"MediaPipe analysis {analysed - started:.1f} s")

    cpu_before, wall_before = time.process_time(), time.perf_counter()
    result = stabilize(gray, landmarks, transforms, valid, gray.shape[1],
                       Progress("bar"))
    wall, cpu = time.perf_counter() - wall_before, time.process_time() - cpu_before

    raw, stab = result.jitter["raw"], result.jitter["stabilised"]
    print(f"stabilizer time: {wall:.1f} s wall, {cpu:.1f} s CPU (load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores)")
    print(f"jitter rotation: raw {raw['rotation_deg']:.4f} deg, stabilised {stab['rotation_deg']:.4f} deg "
          f"(ratio {stab['rotation_deg'] / raw['rotation_deg']:.2f})")
    print(f"jitter translation: raw {raw['translation']:.5f} dm, stabilised {stab['translation']:.5f} dm "
          f"(ratio {stab['translation'] / raw['translation']:.2f})")
    print(f"reprojection RMSE: keypoints {result.reprojection_rmse_px:.3f} px, "
          f"MediaPipe rigid landmarks {result.landmark_rmse_px:.3f} px; keypoint tracks {result.keypoints}")
    print(f"intrinsics: {json.dumps({k: round(v, 2) for k, v in result.intrinsics.items()})}")
    reference = reference_pose(result.pose_raw)
    raw_angles = np.degrees(head_motion_from_poses(result.pose_raw, reference)[0])
    angles = np.degrees(head_motion_from_poses(result.pose, reference)[0])
    for axis, name in enumerate(("pitch", "yaw", "roll")):
        print(f"{name}: raw range {np.ptp(raw_angles[:, axis]):.1f} deg, stabilised {np.ptp(angles[:, axis]):.1f} "
              f"deg, correlation {np.corrcoef(raw_angles[:, axis], angles[:, axis])[0, 1]:.3f}, "
              f"std ratio {angles[:, axis].std() / raw_angles[:, axis].std():.2f}")


if __name__ == "__main__":
    main()
