"""Which training frames a step learns from.

Two kinds of weight are mixed: a fixed one by how rare the frame's face state is in the clip
(SubjectData.training_frame_weights: blinks, wide vowels, pouts), and one that follows how badly the field
still draws the frame's moving parts, measured on the rays the steps that drew the frame rendered there (the
lips for the steps' frames; the eyes' rays have a draw of their own, with the lids' and brows' errors).
The fixed weights know only the states that have a curve; the measured ones also find what the curves miss
or what this person does that no bin foresaw, and they move on once a frame is learnt.
(cnn2_anchor, a `preview` head trained busy with the fixed weights alone: its eight training frames that
pout hardest, drawn 1.7 times as often as uniformly, rendered a near-neutral mouth, face 27.9-28.5 dB
against 30.9 on a spread of its training frames.)
"""
from __future__ import annotations

import numpy as np

# Share of the draws that follow the measured error. It is taken from the fixed weights' uniform part only,
# so the rare states keep their draws: taken from all of the fixed weights (aa4b01c), cnn2_anchor's wide
# jaw was drawn less and the head's mouth driven from speech opened less (amplitude 0.94 -> 0.69 busy).
ERROR_SHARE = 0.3
# A new measurement's weight against the frame's previous one: a measurement is a hundred-odd random rays.
NEW_MEASUREMENT = 0.5


class FrameDraws:
    """Draw probabilities of the training frames (rows 0..n-1)."""

    def __init__(self, fixed_weights: np.ndarray, max_boost: float, uniform_share: float):
        """fixed_weights: by rarity, of which `uniform_share` was spread evenly (at least ERROR_SHARE)."""
        self.fixed = np.asarray(fixed_weights, np.float64) / np.sum(fixed_weights)
        self.error_share = min(ERROR_SHARE, uniform_share)
        self.max_boost = max_boost              # no frame drawn more than this many times as often as uniformly
        self.error = np.full(len(self.fixed), np.nan)  # last mean squared error of each frame's moving parts

    def __len__(self) -> int:
        return len(self.fixed)

    def record(self, rows: np.ndarray, errors: np.ndarray) -> None:
        """Mean squared errors just measured on training rows `rows` (distinct)."""
        rows, errors = np.asarray(rows), np.asarray(errors, np.float64)
        previous = self.error[rows]
        self.error[rows] = np.where(np.isfinite(previous),
                                    (1 - NEW_MEASUREMENT) * previous + NEW_MEASUREMENT * errors, errors)

    def probabilities(self) -> np.ndarray:
        measured = np.isfinite(self.error)
        if not measured.any():
            return self.fixed
        error = np.where(measured, self.error, self.error[measured].mean())  # not yet seen: the typical frame
        total = error.sum()
        if total <= 0:
            return self.fixed
        n = len(self)
        weights = np.maximum(self.fixed - self.error_share / n, 0.0) + self.error_share * error / total
        weights = np.minimum(weights, self.max_boost / n)
        return weights / weights.sum()

    def draw(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """`count` distinct rows (all of them when there are fewer)."""
        return rng.choice(len(self), size=min(count, len(self)), replace=False, p=self.probabilities())

    @staticmethod
    def per_frame_errors(slot: np.ndarray, squared_error: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(slots that have rays, their mean squared error) from per-ray errors of rays in slots 0..count-1."""
        rays = np.bincount(slot, minlength=count)
        sums = np.bincount(slot, weights=squared_error, minlength=count)
        seen = rays > 0
        return np.nonzero(seen)[0], sums[seen] / rays[seen]
