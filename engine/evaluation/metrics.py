"""Image and lip-sync metrics: PSNR, SSIM, MS-SSIM, mouth-landmark distance, mouth-opening correlation.

SSIM follows Wang et al. 2004: an 11-tap Gaussian window (sigma 1.5), C1 = (0.01 L)^2, C2 = (0.03 L)^2,
statistics over the valid region only (no padding), channels averaged; it agrees with scikit-image's
`structural_similarity(..., gaussian_weights=True, use_sample_covariance=False)`.
MS-SSIM follows Wang et al. 2003: contrast-structure at each of 5 scales (2x2 average pooling between
them), luminance at the coarsest, weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333). An image too small
for 5 scales (the face box at 256 px) uses as many as fit, with the weights renormalised.
Images are float arrays in [0, 1], (H, W) or (H, W, C).
"""
from __future__ import annotations

import numpy as np

WINDOW_SIZE = 11
WINDOW_SIGMA = 1.5
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

# MediaPipe face-mesh lip landmarks: the outer contour, then the inner contour (20 each).
OUTER_LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
INNER_LIPS = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
MOUTH_LANDMARKS = OUTER_LIPS + INNER_LIPS
UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14
EYELIDS = ((159, 145), (386, 374))  # (upper, lower) lid at the middle of the left and right eye
LANDMARK_SCALE = 512  # LMD and mouth opening are in pixels of a 512-px frame, as the paper reports them


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB (peak 1.0); `mask` (H, W) weights the pixels (e.g. the face)."""
    diff = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2
    if mask is None:
        mse = diff.mean()
    else:
        weight = np.asarray(mask, np.float64)
        if diff.ndim == 3:
            weight = np.repeat(weight[..., None], diff.shape[2], axis=2)
        mse = (diff * weight).sum() / max(weight.sum(), 1e-12)
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))


def _as_channels(image: np.ndarray) -> np.ndarray:
    """(H, W[, C]) -> (H, W, C) float64."""
    x = np.asarray(image, np.float64)
    return x[..., None] if x.ndim == 2 else x


def _gaussian_taps() -> np.ndarray:
    x = np.arange(WINDOW_SIZE, dtype=np.float64) - WINDOW_SIZE // 2
    g = np.exp(-(x ** 2) / (2 * WINDOW_SIGMA ** 2))
    return g / g.sum()


def _filter(x: np.ndarray) -> np.ndarray:
    """Separable Gaussian filter of (H, W, C), kept to the valid region (where the window fits).

    OpenCV's separable filter in float64: PyTorch's grouped float64 conv2d on a CPU took 2-4 s for one
    512-px SSIM, and evaluation computes six of them a frame."""
    import cv2
    taps = _gaussian_taps()
    r = WINDOW_SIZE // 2
    out = np.stack([cv2.sepFilter2D(np.ascontiguousarray(x[..., c]), cv2.CV_64F, taps, taps,
                                    borderType=cv2.BORDER_REFLECT) for c in range(x.shape[2])], axis=-1)
    return out[r:x.shape[0] - r, r:x.shape[1] - r]


def _ssim_terms(x: np.ndarray, y: np.ndarray, data_range: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean SSIM and mean contrast-structure term, per channel, of (H, W, C) images."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = _filter(x), _filter(y)
    var_x = _filter(x * x) - mu_x ** 2
    var_y = _filter(y * y) - mu_y ** 2
    cov = _filter(x * y) - mu_x * mu_y
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1)
    return (luminance * cs_map).mean(axis=(0, 1)), cs_map.mean(axis=(0, 1))


def _half(x: np.ndarray) -> np.ndarray:
    """2x2 average pooling (an odd last row or column is dropped)."""
    h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    x = x[:h, :w]
    return (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2]) / 4


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if np.shape(a) != np.shape(b):
        raise ValueError(f"images differ in shape: {np.shape(a)} vs {np.shape(b)}")
    if min(np.shape(a)[:2]) < WINDOW_SIZE:
        raise ValueError(f"image {np.shape(a)[:2]} is smaller than the {WINDOW_SIZE}-px SSIM window")


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    _check_pair(a, b)
    value, _ = _ssim_terms(_as_channels(a), _as_channels(b), data_range)
    return float(value.mean())


def ms_ssim_scales(height: int, width: int) -> int:
    """How many of the 5 scales fit: the coarsest must still hold one SSIM window."""
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and min(height, width) // 2 ** scales >= WINDOW_SIZE:
        scales += 1
    return scales


def ms_ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    _check_pair(a, b)
    x, y = _as_channels(a), _as_channels(b)
    scales = ms_ssim_scales(*x.shape[:2])
    weights = np.array(MS_SSIM_WEIGHTS[:scales]) / sum(MS_SSIM_WEIGHTS[:scales])
    factors = []
    for scale in range(scales):
        value, cs = _ssim_terms(x, y, data_range)
        # Negative contrast-structure (anti-correlated images) would make the fractional power undefined.
        factors.append(np.maximum(value if scale == scales - 1 else cs, 0))
        if scale < scales - 1:
            x, y = _half(x), _half(y)
    stacked = np.stack(factors)  # (scales, channels)
    return float(np.prod(stacked ** weights[:, None], axis=0).mean())


def image_scores(render: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """PSNR, SSIM and MS-SSIM of one frame; with `mask` PSNR is over the mask's pixels."""
    return {"psnr": psnr(render, truth, mask), "ssim": ssim(render, truth), "ms_ssim": ms_ssim(render, truth)}


def mask_box(mask: np.ndarray, threshold: float = 0.5, margin: float = 0.05) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) around the mask's pixels above `threshold`, grown by `margin` of its size;
    None when the mask is empty."""
    ys, xs = np.nonzero(mask > threshold)
    if len(xs) == 0:
        return None
    h, w = mask.shape
    grow = int(round(margin * max(xs.max() - xs.min(), ys.max() - ys.min())))
    x0, y0 = max(0, xs.min() - grow), max(0, ys.min() - grow)
    x1, y1 = min(w, xs.max() + 1 + grow), min(h, ys.max() + 1 + grow)
    # SSIM needs at least one full window.
    x1, y1 = max(x1, min(w, x0 + WINDOW_SIZE)), max(y1, min(h, y0 + WINDOW_SIZE))
    return int(x0), int(y0), int(x1), int(y1)


def landmark_distance(a: np.ndarray, b: np.ndarray, image_size: int) -> float:
    """Mean 2D distance between corresponding mouth landmarks, in pixels of a 512-px frame."""
    scale = LANDMARK_SCALE / image_size
    index = list(MOUTH_LANDMARKS)
    return float(np.linalg.norm((a[index, :2] - b[index, :2]) * scale, axis=1).mean())


def mouth_opening(landmarks: np.ndarray, image_size: int) -> float:
    """Inner-lip gap (upper to lower inner lip, mid-mouth) in pixels of a 512-px frame."""
    gap = landmarks[LOWER_INNER_LIP, :2] - landmarks[UPPER_INNER_LIP, :2]
    return float(np.linalg.norm(gap) * LANDMARK_SCALE / image_size)


def eye_opening(landmarks: np.ndarray, image_size: int) -> float:
    """Mean lid gap of the two eyes in pixels of a 512-px frame (blinks dip to near 0)."""
    gaps = [np.linalg.norm(landmarks[lower, :2] - landmarks[upper, :2]) for upper, lower in EYELIDS]
    return float(np.mean(gaps) * LANDMARK_SCALE / image_size)


def correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation; None when either series is constant (the correlation is undefined)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or a.std() < 1e-9 or b.std() < 1e-9:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def amplitude_ratio(render: np.ndarray, truth: np.ndarray) -> float | None:
    """Spread (standard deviation) of the rendered series over the truth's: a mouth that moves too
    little scores low here even when its correlation is fine. None when the truth does not move."""
    render, truth = np.asarray(render, np.float64), np.asarray(truth, np.float64)
    if len(truth) < 2 or truth.std() < 1e-9:
        return None
    return float(render.std() / truth.std())


def best_lag(render: np.ndarray, truth: np.ndarray, max_lag: int = 4) -> int | None:
    """The shift in frames at which render best follows truth: render[t] against truth[t - lag], so a
    positive lag means the render moves `lag` frames late. 0 is what synchronised output gives."""
    render, truth = np.asarray(render, np.float64), np.asarray(truth, np.float64)
    scores = {}
    for lag in range(-max_lag, max_lag + 1):
        a = render[lag:] if lag >= 0 else render[:lag]
        b = truth[:len(truth) - lag] if lag >= 0 else truth[-lag:]
        r = correlation(a, b) if len(a) > 2 * max_lag else None
        if r is not None:
            scores[lag] = r
    return max(scores, key=scores.get) if scores else None
