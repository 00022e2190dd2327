"""Portrait-Sync: the rendered face pasted onto the subject's own frame, with no visible seam.

The original pastes the render with the soft face mask at the crop size, which leaves a visible edge
wherever the render's colour drifts from the frame's. Here:
1. the mask is eroded and then blurred, so the blend ramp is wide and lies inside the face
   (`face_alpha`);
2. the render's colour is matched to the frame's along that ramp: the frame-minus-render difference
   measured in the ramp is spread smoothly over the face (normalised convolution, a cheap relative of
   Poisson blending) and added to the render (`match_colour`), so the two agree where they meet;
3. the matched render is blended over the crop frame (`over_frame`), or warped straight into the
   full-resolution source frame through the crop box (`paste_back`), so everything outside the face
   keeps the source's full detail instead of a down- and re-upsampled copy.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..subject.schema import CropBox

# Feather width as a share of the face's size (square root of its area): wide enough to hide a
# colour step, narrow enough to keep the jaw line the render drew.
FEATHER_SHARE = 0.06
# Colour correction is a low-frequency field: computed at a quarter of the resolution.
_CORRECTION_DOWNSCALE = 4


@dataclass
class FaceLayer:
    """The render ready to paste: colour-matched RGB (S, S, 3) float32 in [0, 1] and its alpha (S, S)."""
    colour: np.ndarray
    alpha: np.ndarray


def face_size(face_mask: np.ndarray) -> float:
    return float(np.sqrt(max((face_mask > 0.5).sum(), 1)))


def face_alpha(face_mask: np.ndarray) -> np.ndarray:
    """Feathered alpha (H, W) float32: 1 inside the face, a smooth ramp that reaches 0 at the mask's edge."""
    hard = (face_mask > 0.5).astype(np.uint8)
    radius = max(2, int(round(FEATHER_SHARE * face_size(face_mask))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    inner = cv2.erode(hard, kernel).astype(np.float32)
    # A Gaussian of sigma r/2 spreads the eroded edge over about +-r: 0 near the original edge.
    alpha = cv2.GaussianBlur(inner, (0, 0), sigmaX=radius / 2, borderType=cv2.BORDER_CONSTANT)
    return np.clip(alpha, 0.0, 1.0) * (face_mask > 0)


def match_colour(render: np.ndarray, frame: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The render plus a smooth offset that cancels its colour difference to the frame along the ramp."""
    ramp = 4 * alpha * (1 - alpha)  # 1 where alpha is 0.5, 0 in the inside and outside
    if ramp.sum() < 1e-3:
        return render
    h, w = alpha.shape
    small = (max(1, w // _CORRECTION_DOWNSCALE), max(1, h // _CORRECTION_DOWNSCALE))
    difference = (frame - render) * ramp[..., None]
    numerator = cv2.resize(difference, small, interpolation=cv2.INTER_AREA)
    denominator = cv2.resize(ramp, small, interpolation=cv2.INTER_AREA)
    # Wide enough that the whole face interior is reached from its rim.
    sigma = face_size(alpha) / 3 / _CORRECTION_DOWNSCALE
    numerator = cv2.GaussianBlur(numerator, (0, 0), sigma)
    denominator = cv2.GaussianBlur(denominator, (0, 0), sigma)
    offset = numerator / np.maximum(denominator, 1e-4)[..., None]
    offset = cv2.resize(offset, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(render + offset, 0.0, 1.0)


def as_float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)


def as_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


def face_layer(render: np.ndarray, frame: np.ndarray, face_mask: np.ndarray,
               colour_match: bool = True) -> FaceLayer:
    """The render (S, S, 3) float [0, 1] prepared for pasting onto `frame` (S, S, 3) with `face_mask`."""
    alpha = face_alpha(face_mask)
    colour = as_float(render)
    if colour_match:
        colour = match_colour(colour, as_float(frame), alpha)
    return FaceLayer(colour, alpha)


def over_frame(layer: FaceLayer, frame: np.ndarray) -> np.ndarray:
    """The layer over the crop frame: (S, S, 3) uint8."""
    a = layer.alpha[..., None]
    return as_uint8(as_float(frame) * (1 - a) + layer.colour * a)


def _crop_to_source_map(box: CropBox, crop_size: int, left: int, top: int) -> np.ndarray:
    """Affine map from destination pixels (starting at source pixel left, top) to crop pixels.

    Pixel centres are aligned the way cv2.resize aligns them: crop + 0.5 = (source + 0.5 - x0) * S / w.
    """
    sx = crop_size / (box.x1 - box.x0)
    sy = crop_size / (box.y1 - box.y0)
    return np.array([[sx, 0, (left + 0.5 - box.x0) * sx - 0.5],
                     [0, sy, (top + 0.5 - box.y0) * sy - 0.5]], np.float64)


def _warp_into_source(image: np.ndarray, box: CropBox, left: int, top: int, right: int, bottom: int,
                      interpolation: int) -> np.ndarray:
    """The crop-space `image` resampled onto source pixels [left, right) x [top, bottom)."""
    matrix = _crop_to_source_map(box, image.shape[0], left, top)
    return cv2.warpAffine(image, matrix, (right - left, bottom - top),
                          flags=interpolation | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)


def _source_rect(box: CropBox, crop_size: int, crop_rect, width: int, height: int):
    """Source pixel rectangle covering `crop_rect` (x0, y0, x1, y1 in crop pixels), clipped to the frame."""
    sx = (box.x1 - box.x0) / crop_size
    sy = (box.y1 - box.y0) / crop_size
    left = max(0, int(np.floor(box.x0 + crop_rect[0] * sx)) - 1)
    top = max(0, int(np.floor(box.y0 + crop_rect[1] * sy)) - 1)
    right = min(width, int(np.ceil(box.x0 + crop_rect[2] * sx)) + 1)
    bottom = min(height, int(np.ceil(box.y0 + crop_rect[3] * sy)) + 1)
    return left, top, right, bottom


def paste_back(layer: FaceLayer, source: np.ndarray, box: CropBox) -> np.ndarray:
    """The layer blended into the full-resolution source frame (H, W, 3) uint8; only the face changes."""
    out = source.copy()
    ys, xs = np.nonzero(layer.alpha > 1e-3)
    if len(xs) == 0:
        return out
    size = layer.alpha.shape[0]
    left, top, right, bottom = _source_rect(box, size, (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1),
                                            source.shape[1], source.shape[0])
    if right <= left or bottom <= top:
        return out
    colour = _warp_into_source(layer.colour, box, left, top, right, bottom, cv2.INTER_CUBIC)
    alpha = _warp_into_source(layer.alpha, box, left, top, right, bottom, cv2.INTER_LINEAR)
    a = np.clip(alpha, 0, 1)[..., None]
    region = as_float(source[top:bottom, left:right])
    out[top:bottom, left:right] = as_uint8(region * (1 - a) + np.clip(colour, 0, 1) * a)
    return out


def rgba_into_source(rgba: np.ndarray, box: CropBox, width: int, height: int) -> np.ndarray:
    """An (S, S, 4) float RGBA crop placed on a transparent (height, width, 4) uint8 canvas."""
    canvas = np.zeros((height, width, 4), np.uint8)
    size = rgba.shape[0]
    left, top, right, bottom = _source_rect(box, size, (0, 0, size, size), width, height)
    if right <= left or bottom <= top:
        return canvas
    # Premultiplied, so that colour does not bleed from transparent pixels when resampling.
    premultiplied = np.concatenate([rgba[..., :3] * rgba[..., 3:], rgba[..., 3:]], axis=2).astype(np.float32)
    matrix = _crop_to_source_map(box, size, left, top)
    warped = cv2.warpAffine(premultiplied, matrix, (right - left, bottom - top),
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=0)
    alpha = np.clip(warped[..., 3:], 0, 1)
    colour = np.where(alpha > 1e-6, warped[..., :3] / np.maximum(alpha, 1e-6), 0)
    canvas[top:bottom, left:right] = as_uint8(np.concatenate([colour, alpha], axis=2))
    return canvas
