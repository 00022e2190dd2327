"""Animation curves: 52 ARKit weights and a head pose per frame, at a frame rate.

Two file formats:
- `.stcurves` (this engine's own, lossless): safetensors with tensors `weights` (N, 52),
  `head_rotation` (N, 3) and `head_translation` (N, 3), float32, and metadata `format`,
  `version`, `fps` and `names` (the 52 ARKit names in order).
- `.csv`: Live Link Face CSV (see engine.expression.livelink), which animators exchange with Unreal,
  iPhone capture and other add-ons; it has no head translation.

Head rotation is (pitch, yaw, roll) in radians: pitch about the head's x axis (nodding, + looks
up), yaw about y (+ turns to the subject's left), roll about z. Head translation is in metres,
relative to the subject's mean head position.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .arkit import ARKIT_NAMES
from .errors import EngineError
from .files import atomic_write_tensors

FORMAT = "synctalk-curves"
VERSION = 1


@dataclass
class Curves:
    fps: float
    weights: np.ndarray                      # (N, 52) float32 in [0, 1], ARKit order
    head_rotation: np.ndarray = field(default=None)     # (N, 3) radians: pitch, yaw, roll
    head_translation: np.ndarray = field(default=None)  # (N, 3) metres

    def __post_init__(self):
        self.weights = np.asarray(self.weights, np.float32)
        n = len(self.weights)
        if self.weights.ndim != 2 or self.weights.shape[1] != len(ARKIT_NAMES):
            raise ValueError(f"weights must be (N, 52), got {self.weights.shape}")
        self.head_rotation = np.zeros((n, 3), np.float32) if self.head_rotation is None \
            else np.asarray(self.head_rotation, np.float32)
        self.head_translation = np.zeros((n, 3), np.float32) if self.head_translation is None \
            else np.asarray(self.head_translation, np.float32)

    def __len__(self) -> int:
        return len(self.weights)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.suffix.lower() == ".csv":
            from .expression.livelink import write_livelink_csv
            return write_livelink_csv(path, self)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_tensors(path, {"weights": self.weights, "head_rotation": self.head_rotation,
                                    "head_translation": self.head_translation},
                             {"format": FORMAT, "version": VERSION, "fps": repr(float(self.fps)),
                              "names": ",".join(ARKIT_NAMES)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Curves":
        path = Path(path)
        if not path.is_file():
            raise EngineError(f"{path}: curves file not found", "check the path", path=str(path))
        if path.suffix.lower() == ".csv":
            from .expression.livelink import read_livelink_csv
            return read_livelink_csv(path)
        from safetensors import safe_open
        try:
            with safe_open(str(path), "numpy") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # safetensors raises several types for a foreign file
            raise EngineError(f"{path}: not a curves file ({exc})",
                              "use a .stcurves file written by the engine or a Live Link Face .csv",
                              path=str(path)) from exc
        if meta.get("format") != FORMAT:
            raise EngineError(f"{path}: not a SyncTalk curves file", "use a .stcurves or Live Link Face .csv",
                              path=str(path))
        fps = checked_fps(_number(meta.get("fps"), path), path)
        names = meta.get("names", "")
        if len(names) > 4096 or not names:
            _bad(path, "names", "is missing or longer than the 52 ARKit names")
        names = names.split(",")
        rows = None
        arrays = {}
        for key, width in (("weights", len(names)), ("head_rotation", 3), ("head_translation", 3)):
            if key not in tensors:
                _bad(path, key, "is missing")
            values = tensors[key]
            rows = len(values) if rows is None else rows
            if values.ndim != 2 or values.shape != (rows, width) or rows == 0 or values.dtype.kind != "f":
                _bad(path, key, f"has shape {values.shape} ({values.dtype}), expected ({rows or 'N'}, {width}) floats")
            arrays[key] = checked_finite(values, path, key)
        weights = np.zeros((rows, len(ARKIT_NAMES)), np.float32)
        for i, name in enumerate(names):  # by name, so a future reorder cannot scramble curves
            if name in ARKIT_NAMES:
                weights[:, ARKIT_NAMES.index(name)] = arrays["weights"][:, i]
        return cls(fps, np.clip(weights, 0, 1), arrays["head_rotation"], arrays["head_translation"])


MAX_FPS = 240.0


def _bad(path: Path, name: str, problem: str):
    raise EngineError(f"{path}: field '{name}' {problem}",
                      "write the curves again (python -m engine animate ... -o FILE), or fix the tool that wrote them",
                      path=str(path))


def _number(text, path: Path) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        _bad(path, "fps", f"is {str(text)[:40]!r}, not a number")


def checked_fps(fps: float, path: Path, name: str = "fps") -> float:
    """A curves file's frame rate: finite and in (0, 240]."""
    if not (np.isfinite(fps) and 0 < fps <= MAX_FPS):
        _bad(path, name, f"gives a frame rate of {fps:g}; it must be above 0 and at most {MAX_FPS:g}")
    return float(fps)


def checked_finite(values: np.ndarray, path: Path, name: str) -> np.ndarray:
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        _bad(path, name, f"holds {values[bad][0]} at frame {row}; every value must be a finite number")
    return values.astype(np.float32)
