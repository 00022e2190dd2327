"""The Head-Sync stabilizer: MediaPipe's head poses refined by a bundle adjustment over rigid keypoints.

1. Raw poses: camera-to-world from MediaPipe's facial transforms (head -> camera, centimetres), world
   = the head's canonical frame in decimetres; the camera MediaPipe assumed is re-measured in crop pixels.
2. Rigid keypoints on the upper head tracked through the clip with optical flow (keypoints.py).
3. Bundle adjustment (bundle_adjust.py) of per-frame rotation and translation, the keypoints' 3D
   positions (initialised on the canonical face's depth) and the focal length. MediaPipe's rigid
   landmarks (nose, forehead, eye corners, cheekbones) join as weaker observations of points held
   weakly at the canonical face's vertices: they hold the world to the head's canonical frame and
   metric scale and anchor the poses over the whole clip, while the many keypoints remove their
   frame-to-frame jitter.
   Tracks that the solution cannot explain are dropped and it is solved again.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from ..errors import EngineError
from ..progress import Progress
from .bundle_adjust import BundleSettings, Observations, bundle_adjust
from .canonical import canonical_face, mediapipe_camera, rigid_landmarks
from .headpose import jitter, rotation_from_vector, vector_from_rotation
from .keypoints import Tracks, track_keypoints

CM_PER_WORLD_UNIT = 10.0      # world unit = decimetre
LANDMARK_WEIGHT = 0.3         # MediaPipe landmarks jitter more than optical-flow keypoints
OUTLIER_TRACK_RMS_PX = 2.0    # a track whose reprojection RMS exceeds this (x size/256) is dropped
OUTLIER_OBSERVATION_PX = 3.0  # so is any single observation this far off (x size/256)
# Tracks are cut into pieces this long: the bundle adjustment then solves each step exactly with a
# banded factorisation; the drift that longer tracks would also hold off is held by the landmarks.
TRACK_SEGMENT_FRAMES = 12


@dataclass
class StabilizerResult:
    pose: np.ndarray               # (N, 4, 4) float32 stabilised camera-to-world
    pose_raw: np.ndarray           # (N, 4, 4) float32 camera-to-world from MediaPipe alone
    intrinsics: dict               # fx, fy, cx, cy in crop pixels
    reprojection_rmse_px: float    # keypoints, after the bundle adjustment
    keypoints: int                 # tracks kept
    jitter: dict                   # {"raw": {...}, "stabilised": {...}}, see headpose.jitter
    landmark_rmse_px: float = 0.0  # MediaPipe's rigid landmarks against the stabilised poses


def _to_matrices(rotations: np.ndarray, translations: np.ndarray) -> np.ndarray:
    m = np.tile(np.eye(4), (len(rotations), 1, 1))
    m[:, :3, :3] = rotation_from_vector(rotations)
    m[:, :3, 3] = translations
    return m


def _fill_invalid(rotations: np.ndarray, translations: np.ndarray, valid: np.ndarray):
    """Poses of invalid frames interpolated from the valid ones (slerp; held constant past the ends)."""
    frames = np.flatnonzero(valid)
    times = np.clip(np.arange(len(valid)), frames[0], frames[-1])
    slerp = Slerp(frames, Rotation.from_rotvec(rotations[frames]))
    filled_r = slerp(times).as_rotvec()
    filled_t = np.stack([np.interp(times, frames, translations[frames, k]) for k in range(3)], 1)
    keep = valid[:, None]
    return np.where(keep, rotations, filled_r), np.where(keep, translations, filled_t)


def _initial_points(tracks: Tracks, landmarks: np.ndarray, rotations, translations, camera: dict) -> np.ndarray:
    """Back-project each track's first observation onto the canonical face's depth in that frame."""
    first = np.full(tracks.count, len(tracks.frame))
    np.minimum.at(first, tracks.track, np.arange(len(tracks.frame)))
    frame, uv = tracks.frame[first], tracks.uv[first]
    R = rotation_from_vector(rotations)[frame]
    t = translations[frame]
    vertices = canonical_face() / CM_PER_WORLD_UNIT
    depth = -(np.einsum("tij,kj->tki", R, vertices) + t[:, None])[..., 2]           # (T, 468)
    # Inverse-distance weighting of the three nearest landmarks' depths.
    distance = np.linalg.norm(landmarks[frame][:, :468, :2] - uv[:, None], axis=2)
    nearest = np.argsort(distance, axis=1)[:, :3]
    w = 1.0 / (np.take_along_axis(distance, nearest, 1) + 1.0)
    d = (np.take_along_axis(depth, nearest, 1) * w).sum(1) / w.sum(1)
    f = camera["fx"]
    in_camera = np.stack([(uv[:, 0] - camera["cx"]) / f * d, -(uv[:, 1] - camera["cy"]) / f * d, -d], 1)
    return np.einsum("tji,tj->ti", R, in_camera - t)  # R^T (P - t)


def _observations(tracks: Tracks, landmarks: np.ndarray, valid: np.ndarray, rigid: np.ndarray) -> Observations:
    """Keypoint observations (points 0..T-1) then landmark observations (points T..T+L-1)."""
    frames = np.flatnonzero(valid)
    lm_frame = np.repeat(frames, len(rigid))
    lm_point = tracks.count + np.tile(np.arange(len(rigid)), len(frames))
    lm_uv = landmarks[frames][:, rigid, :2].reshape(-1, 2)
    return Observations(
        frame=np.r_[tracks.frame, lm_frame], point=np.r_[tracks.track, lm_point],
        uv=np.r_[tracks.uv, lm_uv].astype(np.float64),
        weight=np.r_[np.ones(len(tracks.frame)), np.full(len(lm_frame), LANDMARK_WEIGHT)])


def _rms(errors: np.ndarray) -> float:
    return float(np.sqrt((errors ** 2).sum(1).mean())) if len(errors) else 0.0


def stabilize(gray_frames: np.ndarray, landmarks: np.ndarray, face_transform: np.ndarray, valid: np.ndarray,
              size: int, progress: Progress, settings: BundleSettings | None = None,
              shot_starts=(0,)) -> StabilizerResult:
    """Stabilised camera poses and intrinsics for (N, S, S) uint8 crop frames; see engine.tracking.

    shot_starts: the first frame of each shot of an edited clip: no keypoint track and no smoothness
    prior joins frames across a cut."""
    settings = settings or BundleSettings()
    gray_frames = np.asarray(gray_frames)
    landmarks = np.asarray(landmarks, np.float64)
    face_transform = np.asarray(face_transform, np.float64)
    valid = np.asarray(valid, bool)
    n = len(gray_frames)
    if gray_frames.shape[1:] != (size, size) or landmarks.shape[:2] != (n, 478) or len(valid) != n \
            or face_transform.shape != (n, 4, 4):
        raise ValueError(f"stabilize: inconsistent inputs {gray_frames.shape}, {landmarks.shape}, "
                         f"{face_transform.shape}, {valid.shape}, size {size}")
    if valid.sum() < 3:
        raise EngineError(f"the face was found in only {int(valid.sum())} of {n} frames, too few to track the head",
                          "use a clip where one face is visible throughout")

    # 1. Raw poses: head -> camera from MediaPipe, translation in world units.
    camera = mediapipe_camera(landmarks, face_transform, valid, size)
    raw_r = vector_from_rotation(face_transform[:, :3, :3])
    raw_t = face_transform[:, :3, 3] / CM_PER_WORLD_UNIT
    raw_r, raw_t = _fill_invalid(raw_r, raw_t, valid)
    pose_raw = np.linalg.inv(_to_matrices(raw_r, raw_t))

    # 2. Rigid keypoints.
    with progress.stage("stabilise: keypoint tracking", n) as stage:
        tracks = track_keypoints(gray_frames, landmarks, valid, size, stage=stage,
                                 shot_starts=shot_starts).segments(TRACK_SEGMENT_FRAMES)
    rigid = rigid_landmarks()
    landmark_points = canonical_face()[rigid] / CM_PER_WORLD_UNIT

    # 3. Bundle adjustment, twice: the second time without the tracks the first could not explain.
    scale = size / 256
    rotations, translations, focal = raw_r, raw_t, camera["fx"]
    key_points = _initial_points(tracks, landmarks, raw_r, raw_t, camera)
    with progress.stage("stabilise: bundle adjustment", 2) as stage:
        for round_ in range(2):
            observations = _observations(tracks, landmarks, valid, rigid)
            result = bundle_adjust(rotations, translations, np.r_[key_points, landmark_points], focal,
                                   camera["cx"], camera["cy"], observations,
                                   anchors=tracks.count + np.arange(len(rigid)), anchor_positions=landmark_points,
                                   settings=settings, breaks=shot_starts)
            rotations, translations, focal = result.rotations, result.translations, result.focal
            key_errors = result.residuals[:len(tracks.frame)]
            stage.advance(1, rmse_px=_rms(key_errors), keypoints=tracks.count, focal=focal)
            if round_ == 1:
                break
            # Drop the observations and the whole tracks the solution cannot explain.
            norm = np.linalg.norm(key_errors, axis=1)
            track_rms = np.sqrt(np.bincount(tracks.track, norm ** 2, tracks.count)
                                / np.maximum(np.bincount(tracks.track, minlength=tracks.count), 1))
            keep = (norm < OUTLIER_OBSERVATION_PX * scale) & (track_rms[tracks.track] < OUTLIER_TRACK_RMS_PX * scale)
            kept_ids = np.unique(tracks.track[keep])
            key_points = result.points[kept_ids]
            tracks = tracks.select(keep)
            kept = np.bincount(tracks.track, minlength=tracks.count) >= 2
            tracks = tracks.select(kept[tracks.track])
            key_points = key_points[kept]

    rotations, translations = _fill_invalid(rotations, translations, valid)
    pose = np.linalg.inv(_to_matrices(rotations, translations))
    intrinsics = {"fx": float(focal), "fy": float(focal), "cx": float(camera["cx"]), "cy": float(camera["cy"])}
    landmark_errors = result.residuals[len(tracks.frame):]
    return StabilizerResult(
        pose=pose.astype(np.float32), pose_raw=pose_raw.astype(np.float32), intrinsics=intrinsics,
        reprojection_rmse_px=_rms(key_errors), keypoints=int(tracks.count),
        jitter={"raw": jitter(pose_raw, shot_starts), "stabilised": jitter(pose, shot_starts)},
        landmark_rmse_px=_rms(landmark_errors))
