"""The evaluation report: report.json, a ground-truth-beside-render grid, and the mouth-opening plot.

Every file is written to a temporary name and renamed, so a cancelled evaluation leaves either the
previous report or none.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..files import atomic_output, atomic_write_image, atomic_write_json
from .heldout import Evaluation

LABEL_HEIGHT = 22


def _labelled(image: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((LABEL_HEIGHT, image.shape[1], 3), 255, np.uint8)
    scale = 0.45 * max(image.shape[1], 256) / 256
    cv2.putText(bar, text, (4, LABEL_HEIGHT - 6), cv2.FONT_HERSHEY_SIMPLEX, min(scale, 0.6), (0, 0, 0), 1,
                cv2.LINE_AA)
    return np.concatenate([bar, image], axis=0)


def comparison_grid(samples) -> np.ndarray:
    """One row per sampled frame: ground truth | render (pasted) | absolute difference x4."""
    rows = []
    for index, truth, portrait in samples:
        difference = np.clip(np.abs(truth.astype(np.int16) - portrait.astype(np.int16)) * 4, 0, 255).astype(np.uint8)
        rows.append(np.concatenate([_labelled(truth, f"truth {index}"), _labelled(portrait, f"render {index}"),
                                    _labelled(difference, "diff x4")], axis=1))
    return np.concatenate(rows, axis=0)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    atomic_write_image(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _write_mouth_plot(path: Path, evaluation: Evaluation, indices, fps: float, correlation) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    seconds = np.asarray(indices) / fps
    figure, axis = plt.subplots(figsize=(9, 3.2), dpi=100)
    axis.plot(seconds, evaluation.mouth_truth, label="ground truth", color="black", linewidth=1.2)
    axis.plot(seconds, evaluation.mouth_render, label="render", color="tab:red", linewidth=1.2)
    axis.set_xlabel("time in the clip (s)")
    axis.set_ylabel("inner-lip gap (px at 512)")
    title = "mouth opening" + (f", correlation {correlation:.3f}" if correlation is not None else "")
    axis.set_title(title)
    axis.legend(loc="upper right")
    figure.tight_layout()
    try:
        with atomic_output(path) as tmp:
            figure.savefig(tmp, format="png")
    finally:
        plt.close(figure)


def _finite(values) -> list:
    """NaN (no face found) as null: JSON has no NaN."""
    return [float(v) if np.isfinite(v) else None for v in values]


def write_report(folder: Path, evaluation: Evaluation, fps: float, details: dict) -> dict:
    """Write the three files; returns the summary."""
    folder.mkdir(parents=True, exist_ok=True)
    summary = evaluation.summary()
    indices = [f["index"] for f in evaluation.frames]
    atomic_write_json(folder / "report.json", {**details, "summary": summary, "frames": evaluation.frames,
                                               "mouth_opening": {"truth": _finite(evaluation.mouth_truth),
                                                                 "render": _finite(evaluation.mouth_render)}})
    if evaluation.samples:
        _write_png(folder / "comparison.png", comparison_grid(evaluation.samples))
    _write_mouth_plot(folder / "mouth_opening.png", evaluation, indices, fps, summary["mouth_open_correlation"])
    return summary
