"""Head tracking: bundle adjustment on synthetic data, head-pose conversions, the stabilizer on real footage."""
import numpy as np
import pytest

from conftest import shared_file
from engine.errors import EngineError
from engine.progress import Progress
from engine.tracking import StabilizerResult, stabilize
from engine.tracking.bundle_adjust import BundleSettings, Observations, bundle_adjust, project
from engine.tracking.headpose import (head_motion_from_poses, jitter, poses_from_head_motion, reference_pose,
                                      rotation_from_vector, vector_from_rotation)
from engine.tracking.observations import observe_clip


def _synthetic_scene(rng, n_frames=120, n_points=60, focal=300.0):
    """A head turning and nodding in front of a camera; points on a head-sized blob (decimetres)."""
    time = np.arange(n_frames) / 25
    rotations = np.stack([0.25 * np.sin(1.3 * time), 0.35 * np.sin(0.7 * time), 0.08 * np.sin(2 * time)], 1)
    translations = np.stack([0.1 * np.sin(time), 0.05 * np.cos(1.1 * time), -2.5 + 0.1 * np.sin(0.5 * time)], 1)
    points = rng.normal(size=(n_points, 3)) * [0.5, 0.6, 0.3]
    return rotations, translations, points, focal


def test_bundle_adjustment_recovers_poses_points_and_focal():
    rng = np.random.default_rng(0)
    rotations, translations, points, focal = _synthetic_scene(rng)
    n, p = len(rotations), len(points)
    anchors = np.arange(12)  # seen in every frame, held weakly at their true place (fixes the gauge)
    # The other points are seen in 12-frame windows, as the stabilizer's track segments are.
    frames, ids = [np.repeat(np.arange(n), len(anchors))], [np.tile(anchors, n)]
    for j in range(len(anchors), p):
        start = rng.integers(0, n - 12)
        frames.append(np.arange(start, start + 12))
        ids.append(np.full(12, j))
    frame, point = np.concatenate(frames), np.concatenate(ids)
    uv, _ = project(rotations, translations, points, focal, 128.0, 128.0, frame, point)
    observed = Observations(frame, point, uv + rng.normal(scale=0.3, size=uv.shape), np.ones(len(frame)))
    start_points = points + rng.normal(scale=0.1, size=points.shape)
    result = bundle_adjust(rotations + rng.normal(scale=0.02, size=rotations.shape),
                           translations + rng.normal(scale=0.05, size=translations.shape),
                           start_points, 250.0, 128.0, 128.0, observed, anchors, points[anchors],
                           BundleSettings(focal_prior=0.0, tolerance=1e-7, iterations=30))
    assert abs(result.focal - focal) < 0.05 * focal
    assert np.degrees(np.abs(result.rotations - rotations)).max() < 0.5
    assert np.abs(result.translations - translations).max() < 0.03
    point_error = np.linalg.norm(result.points - points, axis=1)  # world units: 0.01 = 1 mm
    assert np.median(point_error) < 0.02 and point_error.max() < 0.15  # short tracks: depth is the loose part
    rms = np.sqrt((result.residuals ** 2).sum(1).mean())
    assert rms < 0.5  # 0.3 px noise per axis is 0.42 px RMS as a 2D error


def test_the_pose_prior_does_not_smooth_across_a_cut():
    """An edited clip jumps between shots: the head is somewhere else from one frame to the next. Told where
    the cut is, the bundle adjustment keeps the jump; the smoothness prior would otherwise bend the poses
    on both sides of it towards each other."""
    rng = np.random.default_rng(1)
    rotations, translations, points, focal = _synthetic_scene(rng, n_frames=80)
    cut = 40
    translations[cut:] += [0.25, -0.1, 0.4]   # the next shot: the head further right, lower, nearer
    rotations[cut:, 1] += 0.3
    n = len(rotations)
    anchors = np.arange(12)
    frames, ids = [np.repeat(np.arange(n), len(anchors))], [np.tile(anchors, n)]
    for j in range(len(anchors), len(points)):  # keypoint tracks of 12 frames, none across the cut
        start = rng.choice([rng.integers(0, cut - 12), rng.integers(cut, n - 12)])
        frames.append(np.arange(start, start + 12))
        ids.append(np.full(12, j))
    frame, point = np.concatenate(frames), np.concatenate(ids)
    uv, _ = project(rotations, translations, points, focal, 128.0, 128.0, frame, point)
    observed = Observations(frame, point, uv + rng.normal(scale=0.3, size=uv.shape), np.ones(len(frame)))
    settings = BundleSettings(refine_focal=False)  # the stabilizer's prior

    def error_at_the_cut(breaks):
        result = bundle_adjust(rotations, translations, points, focal, 128.0, 128.0, observed, anchors,
                               points[anchors], settings, breaks=breaks)
        return np.abs(result.translations - translations)[cut - 2:cut + 2].max()

    assert error_at_the_cut([0, cut]) < 0.005
    assert error_at_the_cut([0]) > 0.05  # 0.22 units (a tenth of the head's distance): the cut smoothed over


def test_head_motion_round_trip_and_reference():
    rng = np.random.default_rng(1)
    n = 50
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, :3, :3] = rotation_from_vector(rng.normal(scale=0.3, size=(n, 3)))
    c2w[:, :3, 3] = rng.normal(size=(n, 3)) + [0, 0, 2.5]
    reference = reference_pose(c2w)
    rotation, translation = head_motion_from_poses(c2w, reference)
    assert np.allclose(poses_from_head_motion(rotation, translation, reference), c2w, atol=1e-5)
    # Back again: angles survive the trip too.
    again = head_motion_from_poses(poses_from_head_motion(rotation, translation, reference), reference)
    assert np.allclose(again[0], rotation, atol=1e-5) and np.allclose(again[1], translation, atol=1e-5)
    # The reference pose itself is the rest position.
    r0, t0 = head_motion_from_poses(reference[None], reference)
    assert np.allclose(r0, 0, atol=1e-9) and np.allclose(t0, 0, atol=1e-9)


def test_head_motion_sign_conventions():
    """+pitch looks up, +yaw turns to the subject's left (+x of the canonical head), translation in metres."""
    reference = np.eye(4)
    reference[2, 3] = 3.0  # camera 3 dm in front of the face, looking at it
    up = poses_from_head_motion(np.array([[0.2, 0, 0]]), np.zeros((1, 3)), reference)[0]
    left = poses_from_head_motion(np.array([[0, 0.2, 0]]), np.zeros((1, 3)), reference)[0]
    moved = poses_from_head_motion(np.zeros((1, 3)), np.array([[0.01, 0, 0]]), reference)[0]
    forward = np.array([0, 0, 1.0])  # the face's forward direction in the head frame

    def motion(pose):  # the head's rigid motion seen from the reference camera
        return reference @ np.linalg.inv(pose)
    assert (motion(up)[:3, :3] @ forward)[1] > 0.1       # looks up (+y)
    assert (motion(left)[:3, :3] @ forward)[0] > 0.1     # turns towards +x, the subject's left
    assert np.isclose(motion(moved)[0, 3], 0.1)          # 1 cm = 0.1 world units (dm)


def test_rotation_vector_conversions():
    r = np.random.default_rng(2).normal(scale=0.8, size=(100, 3))
    assert np.allclose(vector_from_rotation(rotation_from_vector(r)), r, atol=1e-8)


def test_jitter_measures_second_differences():
    n = 30
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, 2, 3] = 3.0
    assert jitter(c2w)["rotation_deg"] < 1e-9
    zigzag = c2w.copy()
    zigzag[:, 0, 3] += 0.01 * (-1) ** np.arange(n)  # camera x alternates: head moves 0.01 dm each way
    # |x+ - 2x- + x+| = 4 * 0.01 on the x axis, 0 on y and z; the mean runs over frames and axes.
    assert np.isclose(jitter(zigzag)["translation"], 0.04 / 3, rtol=1e-6)
    # A cut of an edited clip: the head's jump there is no jitter.
    cut = c2w.copy()
    cut[15:, 0, 3] += 0.5
    assert jitter(cut)["translation"] > 0.01 and jitter(cut, shot_starts=[0, 15])["translation"] < 1e-9


@pytest.fixture(scope="module")
def lieu_clip():
    """3.6 s (90 frames) of real footage with MediaPipe's analysis; the 256x256 frame is the crop."""
    return observe_clip(shared_file("video", "lieu_60s.mp4"), max_frames=90)


def test_stabilizer_on_real_footage(lieu_clip):
    gray, landmarks, transforms, valid = lieu_clip
    result = stabilize(gray, landmarks, transforms, valid, 256, Progress("quiet"))
    assert isinstance(result, StabilizerResult)
    assert result.pose.shape == (90, 4, 4) and result.pose.dtype == np.float32
    assert result.reprojection_rmse_px <= 1.5
    assert result.keypoints >= 50
    assert result.jitter["stabilised"]["rotation_deg"] < result.jitter["raw"]["rotation_deg"]
    assert result.jitter["stabilised"]["translation"] < result.jitter["raw"]["translation"]
    # Still the same head motion: the stabilised yaw follows the raw one closely.
    reference = reference_pose(result.pose_raw)
    raw_rotation, _ = head_motion_from_poses(result.pose_raw, reference)
    rotation, _ = head_motion_from_poses(result.pose, reference)
    # Still the same head motion (3.6 s of a man talking: yaw moves by a few degrees): the stabilised
    # angles follow the raw ones and keep most of their swing, only their jitter is gone.
    for axis in range(3):
        assert np.corrcoef(raw_rotation[:, axis], rotation[:, axis])[0, 1] > 0.75
        assert rotation[:, axis].std() > 0.4 * raw_rotation[:, axis].std()
    # Camera looks at the head: the head origin lies in front of every camera (-z in camera space).
    head_in_camera = np.linalg.inv(result.pose)[:, :3, 3]
    assert np.all(head_in_camera[:, 2] < 0)
    k = result.intrinsics
    assert k["fx"] == k["fy"] and 100 < k["fx"] < 2000 and abs(k["cx"] - 128) < 10 and abs(k["cy"] - 128) < 10


def test_stabilizer_fills_frames_without_a_face(lieu_clip):
    gray, landmarks, transforms, valid = (a[:40].copy() for a in lieu_clip)
    valid[15:20] = False
    landmarks[15:20] = 0
    transforms[15:20] = np.eye(4)
    result = stabilize(gray, landmarks, transforms, valid, 256, Progress("quiet"))
    assert np.all(np.isfinite(result.pose))
    # The gap's poses lie between their neighbours'.
    positions = result.pose[:, :3, 3]
    low, high = np.minimum(positions[14], positions[20]), np.maximum(positions[14], positions[20])
    assert np.all((positions[15:20] >= low - 1e-4) & (positions[15:20] <= high + 1e-4))


def test_stabilizer_refuses_a_clip_without_faces(lieu_clip):
    gray, landmarks, transforms, _ = (a[:10] for a in lieu_clip)
    with pytest.raises(EngineError):
        stabilize(gray, landmarks, transforms, np.zeros(10, bool), 256, Progress("quiet"))
