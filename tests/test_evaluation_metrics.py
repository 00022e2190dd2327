"""Image and lip-sync metrics against known values and scikit-image."""
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from engine.evaluation import metrics


@pytest.fixture(scope="module")
def picture():
    """A real frame (smooth areas and edges), as float in [0, 1]."""
    from conftest import shared_file
    from engine.media.video import read_frames
    frames = read_frames(shared_file("video", "lieu_60s.mp4"), 25)
    image = next(frames).astype(np.float64) / 255
    frames.close()
    return image


def test_identical_images_score_perfectly(picture):
    assert metrics.ssim(picture, picture) == pytest.approx(1.0, abs=1e-12)
    assert metrics.ms_ssim(picture, picture) == pytest.approx(1.0, abs=1e-12)
    assert metrics.psnr(picture, picture) == float("inf")


def test_psnr_of_known_noise():
    rng = np.random.default_rng(0)
    grey = np.full((256, 256, 3), 0.5)
    noisy = grey + rng.normal(0, 0.05, grey.shape)  # MSE 0.0025 -> 26.02 dB
    assert metrics.psnr(noisy, grey) == pytest.approx(10 * np.log10(1 / 0.0025), abs=0.05)
    # Only the masked half is noisy: PSNR over the mask sees the noise, over the other half none.
    half = grey.copy()
    half[:, :128] = noisy[:, :128]
    left = np.zeros((256, 256), bool)
    left[:, :128] = True
    assert metrics.psnr(half, grey, left) == pytest.approx(metrics.psnr(noisy[:, :128], grey[:, :128]), abs=1e-9)
    assert metrics.psnr(half, grey, ~left) == float("inf")


def test_ssim_matches_scikit_image(picture):
    rng = np.random.default_rng(1)
    noisy = np.clip(picture + rng.normal(0, 0.04, picture.shape), 0, 1)
    ours = metrics.ssim(noisy, picture)
    reference = structural_similarity(noisy, picture, channel_axis=2, data_range=1.0, gaussian_weights=True,
                                      sigma=1.5, use_sample_covariance=False)
    assert ours == pytest.approx(reference, abs=1e-9)
    assert ours < 0.99


def test_scores_fall_monotonically_with_noise(picture):
    rng = np.random.default_rng(2)
    picture = picture[64:192, 64:192]
    noise = rng.normal(0, 1, picture.shape)
    scores = [(metrics.psnr(d, picture), metrics.ssim(d, picture), metrics.ms_ssim(d, picture))
              for d in (np.clip(picture + s * noise, 0, 1) for s in (0.01, 0.03, 0.1, 0.3))]
    for better, worse in zip(scores, scores[1:]):
        assert all(b > w for b, w in zip(better, worse)), (better, worse)


def test_ms_ssim_uses_fewer_scales_on_small_images(picture):
    assert metrics.ms_ssim_scales(256, 256) == 5
    assert metrics.ms_ssim_scales(100, 120) == 4
    assert metrics.ms_ssim_scales(12, 40) == 1
    small = picture[80:180, 60:180]
    rng = np.random.default_rng(3)
    blurred = np.clip(small + rng.normal(0, 0.05, small.shape), 0, 1)
    value = metrics.ms_ssim(blurred, small)
    assert 0 < value < 1
    with pytest.raises(ValueError):
        metrics.ssim(small[:8, :8], small[:8, :8])


def test_face_box_covers_the_mask_and_fits_a_window():
    mask = np.zeros((256, 256), np.float32)
    mask[100:150, 90:130] = 1
    x0, y0, x1, y1 = metrics.mask_box(mask)
    assert x0 <= 90 and y0 <= 100 and x1 >= 130 and y1 >= 150
    assert x1 - x0 < 60 and y1 - y0 < 70
    assert metrics.mask_box(np.zeros((64, 64))) is None


def test_landmark_distance_and_mouth_opening_in_pixels_at_512():
    rng = np.random.default_rng(4)
    landmarks = rng.uniform(50, 200, (478, 3)).astype(np.float32)
    moved = landmarks.copy()
    moved[:, 0] += 3
    moved[:, 1] += 4  # 5 px at 256 -> 10 px at 512
    assert metrics.landmark_distance(moved, landmarks, 256) == pytest.approx(10.0, abs=1e-4)
    landmarks[metrics.UPPER_INNER_LIP, :2] = (128, 150)
    landmarks[metrics.LOWER_INNER_LIP, :2] = (128, 156)
    assert metrics.mouth_opening(landmarks, 256) == pytest.approx(12.0)
    assert len(set(metrics.MOUTH_LANDMARKS)) == 40


def test_correlation_is_undefined_for_a_constant_series():
    t = np.linspace(0, 6, 50)
    assert metrics.correlation(np.sin(t), 2 * np.sin(t) + 1) == pytest.approx(1.0)
    assert metrics.correlation(np.sin(t), -np.sin(t)) == pytest.approx(-1.0)
    assert metrics.correlation(np.ones(50), np.sin(t)) is None


def test_eye_opening_sees_a_real_blink():
    """lieu_60s: frame 1453 is mid-blink, frame 1363 has open eyes (checked by eye in the evaluation grid)."""
    from conftest import shared_file
    from engine.face.landmarker import FaceLandmarker
    from engine.media.video import read_frames
    wanted = {1363: None, 1453: None}
    for index, rgb in enumerate(read_frames(shared_file("video", "lieu_60s.mp4"), 25)):
        if index in wanted:
            wanted[index] = rgb
        if index >= max(wanted):
            break
    with FaceLandmarker() as landmarker:
        gaps = {index: metrics.eye_opening(landmarker.analyse(rgb).landmarks, rgb.shape[0]) for index, rgb in wanted.items()}
    assert gaps[1453] < 0.5 * gaps[1363]
    assert 5 < gaps[1363] < 40  # an open eye's lid gap, in pixels of a 512-px frame


def test_amplitude_ratio_and_best_lag_of_a_late_half_size_mouth():
    rng = np.random.default_rng(3)
    truth = np.convolve(rng.random(120), np.ones(4) / 4, mode="same")  # a mouth opening over 120 frames
    late_small = 0.5 * np.concatenate([truth[:2], truth[:-2]])         # half the spread, two frames late
    assert metrics.amplitude_ratio(late_small, truth) == pytest.approx(0.5, abs=0.03)
    assert metrics.best_lag(late_small, truth) == 2
    assert metrics.best_lag(truth, truth) == 0
    early = np.concatenate([truth[3:], truth[-3:]])
    assert metrics.best_lag(early, truth) == -3
    assert metrics.amplitude_ratio(truth, np.ones(10)) is None


def test_the_summary_says_how_far_the_truth_mouth_moves():
    """The amplitude ratio divides by the truth's spread: the summary gives that spread (frames where
    either face is missing left out), so a ratio over a mouth that hardly moves can be read as noise."""
    from engine.evaluation.heldout import Evaluation
    truth = [10.0, 14.0, float("nan"), 6.0, 12.0]
    render = [9.0, 13.0, 11.0, float("nan"), 10.0]
    summary = Evaluation(mouth_truth=truth, mouth_render=render, eyes_truth=truth, eyes_render=render).summary()
    assert summary["mouth_truth_spread"] == pytest.approx(np.std([10.0, 14.0, 12.0]))
    assert summary["mouth_amplitude_ratio"] == pytest.approx(np.std([9.0, 13.0, 10.0]) / np.std([10.0, 14.0, 12.0]))
    assert Evaluation().summary()["mouth_truth_spread"] is None
