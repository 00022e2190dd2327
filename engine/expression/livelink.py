"""Live Link Face CSV: the take format of Epic's Live Link Face app, which animators exchange.

Layout, as the app exports it: `Timecode,BlendShapeCount,` then the 52 ARKit names with a capital
first letter, in the app's column order (which differs from ARKit's enumeration in two places:
JawRight before JawLeft and MouthRight before MouthLeft), then HeadYaw, HeadPitch, HeadRoll,
LeftEyeYaw, LeftEyePitch, LeftEyeRoll, RightEyeYaw, RightEyePitch, RightEyeRoll.
BlendShapeCount is 61 (52 + 9 angles). Timecode is HH:MM:SS:FF.fff (non-drop-frame, FF counted at
the nominal frame rate, .fff the sub-frame). Angles are in radians. Columns are read by name, so a
file with another column order, lower-case names or without the angle columns still reads.

A take read with `read_livelink_take` keeps its first timecode (as a frame count at the nominal rate;
the sub-frame is dropped) and its eye angles, so that writing it back with them gives the same
timecodes and angles. Curves alone write from 00:00:00:00 with eye angles 0 (gaze is then carried by
the eyeLook* blendshapes).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..arkit import ARKIT_INDEX, ARKIT_NAMES
from ..errors import EngineError
from ..files import atomic_output

_SWAPPED = {"jawLeft": "jawRight", "jawRight": "jawLeft", "mouthLeft": "mouthRight", "mouthRight": "mouthLeft"}
# The app's column order: ARKit's, with the two left/right pairs swapped in place.
LLF_BLENDSHAPES = tuple(_SWAPPED.get(n, n)[0].upper() + _SWAPPED.get(n, n)[1:] for n in ARKIT_NAMES)
HEAD_COLUMNS = ("HeadYaw", "HeadPitch", "HeadRoll")
EYE_COLUMNS = ("LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll", "RightEyeYaw", "RightEyePitch", "RightEyeRoll")
HEADER = ("Timecode", "BlendShapeCount", *LLF_BLENDSHAPES, *HEAD_COLUMNS, *EYE_COLUMNS)
_STANDARD_RATES = (24, 25, 30, 48, 50, 60, 120)
MAX_FIELD = 64   # characters in one cell: a number or a column name is far shorter


def timecode(frame: int, fps: float) -> str:
    """Non-drop-frame timecode of a frame: HH:MM:SS:FF.000 with FF counted at the nominal rate. A time of day:
    it wraps at 24 hours, both ways (a frame before 0 is just before midnight)."""
    base = max(1, round(fps))
    seconds, ff = divmod(int(frame) % (24 * 3600 * base), base)
    minutes, ss = divmod(seconds, 60)
    hh, mm = divmod(minutes, 60)
    return f"{hh:02d}:{mm:02d}:{ss:02d}:{ff:02d}.000"


def timecode_frames(code: str, fps: float) -> int:
    """HH:MM:SS:FF[.fff] -> frames since 00:00:00:00 at the nominal rate (the sub-frame dropped). Raises
    ValueError for what is not a time of day (an hour of 24 or more, a minute of 60, a field of 30 digits)."""
    fields = code.strip().split(":")
    if len(fields) != 4:
        raise ValueError(f"{code.strip()[:40]!r} is not a timecode (HH:MM:SS:FF)")
    hh, mm, ss, ff = (int(field) for field in (*fields[:3], fields[3].split(".")[0]))
    if not (0 <= hh < 24 and 0 <= mm < 60 and 0 <= ss < 60 and 0 <= ff < 1000):
        raise ValueError(f"{code.strip()[:40]!r} is not a time of day")
    return ((hh * 60 + mm) * 60 + ss) * max(1, round(fps)) + ff


@dataclass
class LiveLinkTake:
    curves: object            # engine.curves.Curves
    first_frame: int          # the first row's timecode, in frames at the nominal rate
    eye_angles: np.ndarray    # (N, 6) radians, in EYE_COLUMNS order


def write_livelink_csv(path: str | Path, curves, first_frame: int = 0, eye_angles: np.ndarray | None = None) -> Path:
    """Write `curves` (engine.curves.Curves) as a Live Link Face CSV, atomically; the first row's
    timecode is `first_frame` frames after 00:00:00:00, eye angles (N, 6) default to 0."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    order = [ARKIT_INDEX[n[0].lower() + n[1:]] for n in LLF_BLENDSHAPES]
    pitch, yaw, roll = curves.head_rotation.T
    eyes = np.zeros((len(curves), len(EYE_COLUMNS)), np.float32) if eye_angles is None else eye_angles
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        for i in range(len(curves)):
            values = [f"{v:.6f}" for v in curves.weights[i, order]]
            angles = [f"{v:.6f}" for v in (yaw[i], pitch[i], roll[i], *eyes[i])]
            writer.writerow([timecode(first_frame + i, curves.fps), len(LLF_BLENDSHAPES) + 9, *values, *angles])
    return path


def read_livelink_csv(path: str | Path, fps: float | None = None):
    """Read a Live Link Face CSV into Curves; fps is inferred from the timecodes when not given."""
    return read_livelink_take(path, fps).curves


def read_livelink_take(path: str | Path, fps: float | None = None) -> LiveLinkTake:
    """Read a Live Link Face CSV: the curves, the first timecode and the eye angles."""
    from ..curves import Curves, checked_fps
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:  # csv.Error: a field over csv's 128 kB limit
        raise EngineError(f"{path}: cannot read as CSV ({exc})", "export the take again as CSV", path=str(path)) from exc
    if not rows or not rows[0] or rows[0][0].strip().lower() != "timecode":
        raise EngineError(f"{path}: not a Live Link Face CSV (no Timecode column)",
                          "use a CSV exported by Live Link Face or written by the engine", path=str(path))
    header = [h.strip() for h in rows[0]]
    long_name = next((h for h in header if len(h) > MAX_FIELD), None)
    if long_name is not None:
        raise EngineError(f"{path}: line 1 has a column name of {len(long_name)} characters",
                          "use a Live Link Face CSV", path=str(path))
    lower = {h.lower(): i for i, h in enumerate(header)}
    columns = {name: lower.get(name.lower()) for name in ARKIT_NAMES}
    if all(c is None for c in columns.values()):
        raise EngineError(f"{path}: no ARKit blendshape columns", "use a Live Link Face CSV", path=str(path))
    body = [r for r in rows[1:] if r and any(cell.strip() for cell in r)]
    if not body:
        raise EngineError(f"{path}: has a header but no frames", "export the take again", path=str(path))
    weights = np.zeros((len(body), len(ARKIT_NAMES)), np.float32)
    rotation = np.zeros((len(body), 3), np.float32)
    eyes = np.zeros((len(body), len(EYE_COLUMNS)), np.float32)
    for row_number, row in enumerate(body, start=2):
        try:
            if any(len(cell) > MAX_FIELD for cell in row):
                raise ValueError(f"a field of {max(map(len, row))} characters (at most {MAX_FIELD})")
            for name, column in columns.items():
                if column is not None:
                    weights[row_number - 2, ARKIT_INDEX[name]] = _value(row, column, header)
            for k, name in enumerate(("HeadPitch", "HeadYaw", "HeadRoll")):
                if name.lower() in lower:
                    rotation[row_number - 2, k] = _value(row, lower[name.lower()], header)
            for k, name in enumerate(EYE_COLUMNS):
                if name.lower() in lower:
                    eyes[row_number - 2, k] = _value(row, lower[name.lower()], header)
        except (ValueError, IndexError) as exc:
            raise EngineError(f"{path}: line {row_number} is malformed ({exc})",
                              "check that the file is a complete Live Link Face export", path=str(path)) from exc
    fps = checked_fps(_infer_fps([r[0] for r in body]) if fps is None else fps, path, "Timecode")
    try:
        frames = _timecode_frames([r[0] for r in body], fps)
    except ValueError:   # not timecodes: one row a frame from 00:00:00:00
        frames = None
    if frames is not None and _dropped_or_repeated(frames, fps):
        weights, rotation, eyes = _on_their_frames(frames, weights, rotation, eyes)
    first = 0 if frames is None else int(frames[0])
    return LiveLinkTake(Curves(fps, np.clip(weights, 0, 1), rotation), first, eyes)


def _timecode_frames(codes: list[str], fps: float) -> np.ndarray:
    """The rows' frame numbers from their timecodes, on through midnight (a take past it)."""
    frames = np.array([timecode_frames(code, fps) for code in codes], np.int64)
    day = 24 * 3600 * max(1, round(fps))
    return frames + day * np.cumsum(np.r_[0, np.diff(frames) < -day // 2])


def _dropped_or_repeated(frames: np.ndarray, fps: float) -> bool:
    """Whether timecodes a frame apart skip or repeat a few: rows a phone dropped or wrote twice. Timecodes that
    stand still or jump back, or skip more than a second, are not a frame's each (a tool writing one timecode
    for all): such rows are read one a frame."""
    steps = np.diff(frames)
    if not len(steps) or np.all(steps == 1):
        return False
    return steps.min() >= 0 and steps.max() <= max(1, round(fps)) and np.mean(steps == 1) > 0.5


def _on_their_frames(frames: np.ndarray, *values: np.ndarray) -> tuple[np.ndarray, ...]:
    """Rows placed at their timecodes' frames: a row the phone dropped (a busy app, a hot phone) interpolated
    from its neighbours, a repeated timecode's row kept once (rows read one a frame run ahead of the sound)."""
    order = np.argsort(frames, kind="stable")
    kept = order[np.r_[True, np.diff(frames[order]) > 0]]
    grid = np.arange(frames[kept[0]], frames[kept[-1]] + 1)
    return tuple(np.stack([np.interp(grid, frames[kept], column[kept]) for column in v.T], 1).astype(np.float32)
                 for v in values)


def _value(row: list[str], column: int, header: list[str]) -> float:
    value = float(row[column])
    if not math.isfinite(value):
        raise ValueError(f"{header[column]} is {row[column]}, not a finite number")
    return value


def _infer_fps(codes: list[str]) -> float:
    """The nominal rate: the frame field wraps at it once a take is longer than a second (else 30 is assumed)."""
    try:
        fields = [c.split(":") for c in codes]
        frames = [int(f[3].split(".")[0]) for f in fields]
        seconds = {tuple(f[:3]) for f in fields}
    except (IndexError, ValueError):
        return 30.0
    largest = max(frames)
    if len(seconds) > 1:
        return float(largest + 1)
    return float(next((r for r in _STANDARD_RATES if r > max(largest, 29)), largest + 1))
