"""Portrait-Sync compositing on real frames: no seam at the mask edge, exact paste-back geometry."""
import itertools

import cv2
import numpy as np
import pytest

from engine.portrait.composite import (FaceLayer, as_float, as_uint8, face_alpha, face_layer, over_frame,
                                       paste_back, rgba_into_source)
from engine.subject import CropBox


@pytest.fixture(scope="module")
def faces():
    """Real lieu_60s frames with their soft face masks (built the way preprocessing builds them)."""
    from conftest import shared_file
    from engine.face.landmarker import FaceLandmarker
    from engine.face.parsing import face_mask
    from engine.media.video import read_frames
    frames = list(itertools.islice(read_frames(shared_file("video", "lieu_60s.mp4"), 25), 0, 80, 10))
    with FaceLandmarker() as landmarker:
        masks = [face_mask(landmarker.analyse(f).landmarks, f.shape[:2]).astype(np.float32) / 255 for f in frames]
    return frames, masks


def nerf_like(frame: np.ndarray) -> np.ndarray:
    """Another real frame made to look like a NeRF render of it: softer and off in colour."""
    image = as_float(frame) * np.array([1.08, 1.03, 0.97], np.float32) + 0.03
    return np.clip(cv2.GaussianBlur(image, (0, 0), 1.0), 0, 1)


def edge_band(mask: np.ndarray, width: int) -> np.ndarray:
    hard = (mask > 0.5).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    return (cv2.dilate(hard, kernel) - cv2.erode(hard, kernel)) > 0


def gradient_energy(image: np.ndarray, band: np.ndarray) -> float:
    g = as_float(image)
    gx, gy = cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)
    return float((gx ** 2 + gy ** 2).sum(axis=2)[band].mean())


def test_paste_leaves_no_seam_at_the_mask_edge(faces):
    frames, masks = faces
    source, pasted, hard = [], [], []
    for k in range(len(frames) - 4):
        frame, mask, render = frames[k], masks[k], nerf_like(frames[k + 4])
        band = edge_band(mask, 8)  # the mask's edge and the blend ramp inside it
        source.append(gradient_energy(frame, band))
        result = over_frame(face_layer(render, frame, mask), frame)
        pasted.append(gradient_energy(result, band))
        # Outside the face mask the frame is untouched.
        assert np.array_equal(result[mask == 0], frame[mask == 0])
        # The measure does see a seam: a hard paste of the same render.
        hard.append(gradient_energy(as_uint8(np.where(mask[..., None] > 0.5, render, as_float(frame))), band))
        assert pasted[-1] <= source[-1] * 1.02
    assert sum(pasted) <= sum(source)
    assert sum(hard) > sum(source) * 1.1


def test_colour_matching_removes_a_colour_step(faces):
    frames, masks = faces
    frame, mask = frames[0], masks[0]
    render = np.clip(as_float(frame) + np.array([0.08, 0.04, -0.05], np.float32), 0, 1)  # same face, off colour
    layer = face_layer(render, frame, mask)
    inside = layer.alpha > 0.99
    assert np.abs(layer.colour[inside] - as_float(frame)[inside]).mean() < 0.01
    plain = face_layer(render, frame, mask, colour_match=False)
    assert np.abs(plain.colour[inside] - as_float(frame)[inside]).mean() > 0.05


def test_alpha_is_feathered_inside_the_face(faces):
    _, masks = faces
    alpha = face_alpha(masks[0])
    assert alpha.max() == pytest.approx(1.0, abs=1e-3)
    assert np.all(alpha[masks[0] == 0] == 0)
    ramp = (alpha > 0.02) & (alpha < 0.98)
    assert ramp.sum() > 0.15 * (masks[0] > 0.5).sum()  # a wide ramp, not a hard edge


@pytest.fixture(scope="module")
def source_frame():
    """A 512x512 real source frame (may_5s): the full-resolution frame a 256-px crop came from."""
    from conftest import shared_file
    from engine.media.video import read_frames
    frames = read_frames(shared_file("video", "may_5s.mp4"), 25)
    frame = next(frames).copy()
    frames.close()
    return frame


def marker_layer(size: int, square: tuple[int, int, int]) -> FaceLayer:
    """Opaque white square (x, y, side) in crop pixels on an otherwise transparent layer."""
    x, y, side = square
    colour = np.zeros((size, size, 3), np.float32)
    alpha = np.zeros((size, size), np.float32)
    colour[y:y + side, x:x + side] = 1.0
    alpha[y - 4:y + side + 4, x - 4:x + side + 4] = 1.0
    return FaceLayer(colour, alpha)


def test_paste_back_puts_the_face_where_the_crop_came_from(source_frame):
    box = CropBox(96, 40, 384, 384)   # 384 px of source -> 256 px crop: scale 1.5
    crop = box.cut(source_frame, 256)   # as preprocessing cuts it
    out = paste_back(marker_layer(256, (100, 60, 20)), source_frame, box)
    ys, xs = np.nonzero(out.min(axis=2) == 255)
    # Crop pixels [100, 120) x [60, 80) cover source [96 + 150, 96 + 180) x [40 + 90, 40 + 120).
    assert abs(xs.min() - 246) <= 1 and abs(xs.max() + 1 - 276) <= 1
    assert abs(ys.min() - 130) <= 1 and abs(ys.max() + 1 - 160) <= 1
    # Only the layer's footprint changes; the rest keeps the source's full-resolution pixels.
    changed = np.any(out != source_frame, axis=2)
    assert changed[124:166, 240:282].any() and not changed[:120].any() and not changed[:, :236].any()
    # Pasting the crop itself back gives the source again, up to the down- and up-sampling.
    mask = np.zeros((256, 256), np.float32)
    mask[40:220, 40:220] = 1
    same = paste_back(FaceLayer(as_float(crop), mask), source_frame, box)
    region = (slice(40 + 75, 40 + 315), slice(96 + 75, 96 + 315))
    error = np.abs(same[region].astype(int) - source_frame[region].astype(int)).mean()
    assert error < 6


def test_paste_back_at_the_frame_edge_and_rgba_canvas(source_frame):
    box = CropBox(256, 256, 256, 256)           # the bottom-right quarter, scale 1
    out = paste_back(marker_layer(256, (236, 236, 20)), source_frame, box)
    assert out.shape == source_frame.shape
    assert np.all(out[492:512, 492:512] == 255)
    rgba = np.zeros((128, 128, 4), np.float32)
    rgba[32:64, 16:48] = (1.0, 0.5, 0.0, 1.0)
    canvas = rgba_into_source(rgba, CropBox(100, 50, 256, 256), 512, 400)   # scale 2
    assert canvas.shape == (400, 512, 4)
    opaque = np.nonzero(canvas[..., 3] == 255)
    assert (opaque[0].min(), opaque[0].max(), opaque[1].min(), opaque[1].max()) == (115, 176, 133, 194)
    assert np.all(canvas[canvas[..., 3] == 255][:, :3] == (255, 128, 0))
    assert canvas[..., 3].sum() < 255 * 70 * 70 and np.all(canvas[:100, ..., 3] == 0)


def test_source_frames_decode_once_forwards_and_keep_only_what_the_way_back_needs(monkeypatch):
    """A render's requests in order: forwards through the frames, back, and forwards again (the ping-pong
    replay), some asked twice in a row (a render at a higher frame rate). Each is the clip's frame; the clip is
    decoded once; a render that only walks forwards keeps no frame on disk (a 4K clip's took 25 MB a frame),
    the way back keeps what it will revisit; a request out of the planned order is refused."""
    from conftest import shared_file
    from engine.media import video
    from engine.portrait.source import SourceFrames, most_kept
    clip = shared_file("video", "lieu_60s.mp4")
    whole = list(itertools.islice(video.read_frames(clip, 25), 0, 40))
    decodes = []
    real_read = video.read_frames
    monkeypatch.setattr(video, "read_frames", lambda *a, **k: decodes.append(a) or real_read(*a, **k))
    forwards = [0, 1, 1, 2, 3, 3, 4, 6, 7]
    assert most_kept(forwards) == 1 and most_kept([0, 1, 2, 5, 9]) == 0
    there_and_back = list(range(10)) + list(range(9, -1, -1)) + list(range(4))
    assert most_kept(there_and_back) == 10
    for requests in (forwards, there_and_back, [0, 1, 2, 5, 9]):
        with SourceFrames(clip, 25, 20, requests) as source:
            assert (source._tmp is None) == (most_kept(requests) == 0)
            for index in requests:
                assert np.array_equal(source[index], whole[20 + index]), (requests, index)
    assert len(decodes) == 3                                       # one forward decode per render
    with SourceFrames(clip, 25, 20, [3, 1]) as source:
        source[3]
        with pytest.raises(ValueError, match="out of the order planned"):
            source[2]
