"""Per-frame face analysis with MediaPipe Tasks: 478 landmarks, 52 ARKit blendshapes, a 4x4 head transform."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..arkit import from_mediapipe
from ..models import find_model


@dataclass
class FaceObservation:
    faces: int                 # how many faces MediaPipe found (0 means lost)
    landmarks: np.ndarray      # (478, 3) float32: x, y in pixels, z in MediaPipe's image-width units * width
    blendshapes: np.ndarray    # (52,) float32, ARKit order
    transform: np.ndarray      # (4, 4) float32 facial transformation: canonical face (cm) -> camera


class FaceLandmarker:
    """MediaPipe FaceLandmarker in VIDEO mode (frames in order, timestamps rising). Use as a context manager."""

    def __init__(self, models_dir=None, max_faces: int = 2):
        import mediapipe as mp
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions
        self._mp = mp
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(find_model("face_landmarker", models_dir))),
            running_mode=vision.RunningMode.VIDEO,
            # 2, so that a second person in the clip is seen and reported; and so that, with one person in
            # the picture, it detects anew in every frame: a face tracked from the previous frame (one asked
            # for) trails the picture by up to a frame in its jaw, a per-frame reading does not.
            num_faces=max_faces,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True)
        self._landmarker = vision.FaceLandmarker.create_from_options(options)
        self._timestamp_ms = 0

    def analyse(self, rgb: np.ndarray, timestamp_ms: int | None = None) -> FaceObservation:
        """Analyse one RGB uint8 frame; timestamps must increase (default: 40 ms steps)."""
        h, w = rgb.shape[:2]
        self._timestamp_ms = self._timestamp_ms + 40 if timestamp_ms is None else timestamp_ms
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        result = self._landmarker.detect_for_video(image, self._timestamp_ms)
        if not result.face_landmarks:
            return FaceObservation(0, np.zeros((478, 3), np.float32), np.zeros(52, np.float32),
                                   np.eye(4, dtype=np.float32))
        # The largest face is the subject when MediaPipe reports more than one.
        sizes = [np.ptp([p.x for p in face]) * np.ptp([p.y for p in face]) for face in result.face_landmarks]
        best = int(np.argmax(sizes))
        points = np.array([(p.x * w, p.y * h, p.z * w) for p in result.face_landmarks[best]], np.float32)
        return FaceObservation(len(result.face_landmarks), points,
                               from_mediapipe(result.face_blendshapes[best]),
                               np.asarray(result.facial_transformation_matrixes[best], np.float32))

    def close(self) -> None:
        self._landmarker.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class PersonSegmenter:
    """MediaPipe's selfie segmenter: a soft person mask (H, W) float32 in [0, 1]. Use as a context manager."""

    def __init__(self, models_dir=None):
        import mediapipe as mp
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions
        self._mp = mp
        options = vision.ImageSegmenterOptions(
            base_options=BaseOptions(model_asset_path=str(find_model("selfie_segmenter", models_dir))),
            running_mode=vision.RunningMode.IMAGE, output_confidence_masks=True, output_category_mask=False)
        self._segmenter = vision.ImageSegmenter.create_from_options(options)

    def person_mask(self, rgb: np.ndarray) -> np.ndarray:
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        masks = self._segmenter.segment(image).confidence_masks
        return np.asarray(masks[-1].numpy_view(), np.float32).reshape(rgb.shape[:2])

    def close(self) -> None:
        self._segmenter.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
