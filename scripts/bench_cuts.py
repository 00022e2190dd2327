"""Cuts found in the clips of ../shared, by the picture alone and with the face (engine/preprocess/shots.py).

    python scripts/bench_cuts.py [CLIP ...]

For each clip (default: the 87 of ../shared/data/video and ../shared/data/corpus), every frame at 25 fps is
reduced to the thumbnail preprocess keeps and analysed by MediaPipe's FaceLandmarker (at most 640 px); the
shots are then told by `ShotDetector` without and with the face's steps. Prints the clips where any cut is
found, and the cuts the face adds (about 3 minutes on 2 cores). The footage is for research and evaluation.
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from engine.face.landmarker import FaceLandmarker  # noqa: E402
from engine.media.video import open_clip, read_frames  # noqa: E402
from engine.preprocess.shots import ShotDetector, face_steps  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
FPS = 25.0
MAX_SIDE = 640


def thumbnails_and_landmarks(clip: Path) -> tuple[ShotDetector, np.ndarray, np.ndarray]:
    info = open_clip(clip)
    scale = min(1.0, MAX_SIDE / max(info.width, info.height))
    thumbs, landmarks, found = ShotDetector(), [], []
    with FaceLandmarker() as landmarker:
        for index, frame in enumerate(read_frames(clip, FPS, info)):
            thumbs.add(frame)
            if scale < 1.0:
                frame = cv2.resize(frame, (round(info.width * scale), round(info.height * scale)),
                                   interpolation=cv2.INTER_AREA)
            observation = landmarker.analyse(frame, timestamp_ms=round(index * 1000 / FPS))
            landmarks.append(observation.landmarks)
            found.append(observation.faces > 0)
    return thumbs, np.stack(landmarks), np.array(found)


def main() -> None:
    clips = [Path(a) for a in sys.argv[1:]] or sorted(
        p for folder in (DATA / "video", DATA / "corpus") for p in folder.iterdir() if p.suffix in (".mp4", ".mpg"))
    added = 0
    for clip in clips:
        thumbs, landmarks, found = thumbnails_and_landmarks(clip)
        picture = thumbs.shots(FPS).starts
        with_face = thumbs.shots(FPS, face_steps(landmarks, found)).starts
        if len(with_face) > 1:
            new = sorted(set(with_face) - set(picture))
            added += len(new)
            print(f"{clip.name}: {len(picture)} shots from the picture, {len(with_face)} with the face; "
                  f"the face adds cuts at frames {new}", flush=True)
    print(f"{len(clips)} clips; the face added {added} cuts")


if __name__ == "__main__":
    main()
