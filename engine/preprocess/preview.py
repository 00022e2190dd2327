"""preview.png: one image for a person to judge a subject at a glance.

Top: a contact sheet of frames spread over the clip, with the landmarks and the paste-back mask's
edge drawn (row 1) and the parsing coloured in (row 2), beside the background plate and a torso
image. Bottom: the head's rotation and translation through the clip, raw MediaPipe against the
stabilised track, with the frames where the face was lost shaded.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..files import atomic_output
from ..subject.format import BACKGROUND_FILE, PREVIEW_FILE, frame_name
from ..subject.schema import CropBox, SubjectMeta

TILE = 256
SAMPLES = 5
LABEL_COLOURS = np.array([[0, 0, 0], [230, 60, 60], [60, 200, 60], [60, 90, 230]], np.float32)


def write_preview(root: Path, meta: SubjectMeta, landmarks: np.ndarray, valid: np.ndarray,
                  pose_raw: np.ndarray, pose: np.ndarray) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sheet = contact_sheet(root, landmarks, valid, meta.fps)
    fig = plt.figure(figsize=(16, 11), dpi=100)
    grid = fig.add_gridspec(2, 2, height_ratios=[sheet.shape[0] / sheet.shape[1] * 16, 3.2])
    ax = fig.add_subplot(grid[0, :])
    ax.imshow(sheet)
    ax.set_axis_off()
    stabilizer = meta.stabilizer
    jitter = stabilizer.get("jitter", {})
    ax.set_title(f"{Path(meta.source.sequence or meta.source.path).name}: {meta.frames} frames at {meta.fps:g} fps, "
                 f"{meta.size} px crop of the source at {_box_text(meta.crop_box)}; "
                 f"{len(meta.split.excluded)} frames excluded, {len(meta.warnings)} warnings\n"
                 f"stabilizer: reprojection RMSE {stabilizer.get('reprojection_rmse_px', float('nan')):.2f} px "
                 f"over {stabilizer.get('keypoints', 0)} keypoints, focal {meta.intrinsics['fx']:.0f} px",
                 fontsize=11)

    times = np.arange(len(pose)) / meta.fps
    motions = {name: _head_motion(p) for name, p in (("raw", pose_raw), ("stabilised", pose))}
    for column, (what, unit, index, scale) in enumerate((("rotation", "degrees", 0, np.degrees(1.0)),
                                                          ("translation", "mm", 1, 1000.0))):
        axis = fig.add_subplot(grid[1, column])
        for k, (name, colour) in enumerate(zip(("pitch", "yaw", "roll") if index == 0 else ("x", "y", "z"),
                                               ("tab:red", "tab:green", "tab:blue"))):
            axis.plot(times, motions["raw"][index][:, k] * scale, color=colour, alpha=0.35, lw=0.8)
            axis.plot(times, motions["stabilised"][index][:, k] * scale, color=colour, lw=1.2,
                      label=f"{name}")
        for start, end in _lost_spans(valid):
            axis.axvspan(start / meta.fps, end / meta.fps, color="0.85", zorder=0)
        key = "rotation_deg" if index == 0 else "translation"
        axis.set_title(f"head {what} (faint: raw MediaPipe, solid: stabilised); jitter "
                       f"{_num(jitter, 'raw', key)} -> {_num(jitter, 'stabilised', key)}", fontsize=10)
        axis.set_xlabel("seconds")
        axis.set_ylabel(unit)
        axis.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path = root / PREVIEW_FILE
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)
    return path


def contact_sheet(root: Path, landmarks: np.ndarray, valid: np.ndarray, fps: float) -> np.ndarray:
    """(2 * TILE, (SAMPLES + 1) * TILE, 3) uint8 RGB."""
    usable = np.flatnonzero(valid > 0)
    picks = usable[np.linspace(0, len(usable) - 1, SAMPLES).round().astype(int)]
    top, bottom = [], []
    for index in picks:
        name = frame_name(index)
        frame = _read(root / "frames" / name, cv2.IMREAD_COLOR)[..., ::-1]
        labels = _read(root / "parsing" / name, cv2.IMREAD_GRAYSCALE)
        mask = _read(root / "facemask" / name, cv2.IMREAD_GRAYSCALE)
        scale = TILE / frame.shape[0]
        drawn = _tile(frame)
        contours, _ = cv2.findContours((mask > 127).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(drawn, [np.round(c * scale).astype(np.int32) for c in contours], -1, (255, 220, 0), 1)
        for x, y in landmarks[index, :, :2] * scale:
            cv2.circle(drawn, (int(round(x)), int(round(y))), 0, (255, 255, 255), -1)
        _label(drawn, f"{index} ({index / fps:.1f} s)")
        top.append(drawn)
        overlay = 0.5 * frame.astype(np.float32) + 0.5 * LABEL_COLOURS[labels]
        overlay[labels == 0] = frame[labels == 0] * 0.6
        bottom.append(_tile(overlay.astype(np.uint8)))
    middle = picks[len(picks) // 2]
    top.append(_tile(_read(root / BACKGROUND_FILE, cv2.IMREAD_COLOR)[..., ::-1]))
    bottom.append(_tile(_read(root / "torso" / frame_name(middle), cv2.IMREAD_COLOR)[..., ::-1]))
    _label(top[-1], "background plate")
    _label(bottom[-1], f"torso image {middle}")
    return np.vstack([np.hstack(top), np.hstack(bottom)])


def _label(tile: np.ndarray, text: str) -> None:
    """Yellow text with a dark outline, readable on any background."""
    for colour, thickness in (((0, 0, 0), 3), ((255, 255, 0), 1)):
        cv2.putText(tile, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, thickness, cv2.LINE_AA)


def _head_motion(poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from ..tracking.headpose import head_motion_from_poses, reference_pose
    return head_motion_from_poses(poses, reference_pose(poses))


def _lost_spans(valid: np.ndarray) -> list[tuple[int, int]]:
    from .gaps import runs
    return runs(valid != 1)


def _read(path: Path, flags: int) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    if image is None:
        raise FileNotFoundError(path)
    return image


def _tile(image: np.ndarray) -> np.ndarray:
    interpolation = cv2.INTER_AREA if image.shape[0] > TILE else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(image, (TILE, TILE), interpolation=interpolation))


def _box_text(box: CropBox) -> str:
    return f"({box.x}, {box.y}) {box.width}x{box.height}"


def _num(jitter: dict, which: str, key: str) -> str:
    value = jitter.get(which, {}).get(key)
    return "?" if value is None else f"{value:.3g}"
