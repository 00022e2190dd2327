"""Frames where the face is lost, and frames with more than one person: found, filled or refused.

SyncTalk's preprocessing crashes on a frame with no face. Here a short loss (a blink of the
detector, a hand passing) is filled by interpolating the tracks from its neighbours and marked
valid=2; a longer one is excluded from training (valid=0) and reported by time; a clip with no
usable face, or with two people in much of it, is refused with the times to look at.
"""
from __future__ import annotations

import numpy as np

from ..errors import EngineError

VALID_SEEN, VALID_INTERPOLATED, VALID_EXCLUDED = 1, 2, 0
MAX_SHORT_GAP_S = 0.2          # lost for at most this long: interpolated
SEVERAL_PEOPLE_SHARE = 0.1     # 2+ faces in at least this share of frames: refused
MIN_USABLE_SHARE = 0.25        # fewer frames with a face than this share: refused
MIN_USABLE_S = 1.0


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index ranges where `mask` is True."""
    padded = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def timestamp(seconds: float) -> str:
    minutes, rest = divmod(max(seconds, 0.0), 60)
    return f"{int(minutes):02d}:{rest:04.1f}"


def span_text(start: int, end: int, fps: float, offset_s: float = 0.0) -> str:
    """Frames start..end as clip times (`offset_s`: where frame 0 lies in the clip, for a span of it)."""
    return f"{timestamp(offset_s + start / fps)}-{timestamp(offset_s + end / fps)}"


def check_one_person(face_counts: np.ndarray, rate: float, path, offset_s: float = 0.0) -> list[str]:
    """Refuse a clip where two or more faces are seen in a sizeable share of frames; warn for a few.

    face_counts: faces per sampled frame, `rate` samples a second, the first `offset_s` into the clip.
    """
    several = face_counts >= 2
    if not several.any():
        return []
    spans = runs(several)
    listed = ", ".join(span_text(s, e, rate, offset_s) for s, e in spans[:5]) + (" ..." if len(spans) > 5 else "")
    if several.mean() >= SEVERAL_PEOPLE_SHARE:
        raise EngineError(
            f"{path}: more than one face is visible in {several.mean():.0%} of the clip (at {listed})",
            "use a clip with one person in the picture, or crop or trim the clip to one person", path=str(path))
    return [f"a second face was seen at {listed}; the largest face was used"]


def classify(found: np.ndarray, fps: float, path, offset_s: float = 0.0) -> tuple[np.ndarray, list[dict], list[str]]:
    """valid per frame (1 seen, 2 interpolated, 0 excluded), the gaps, and warnings for the user.

    A gap touching the start or end of the clip has no face on one side to interpolate from, so it
    is excluded whatever its length.
    """
    n = len(found)
    valid = np.where(found, VALID_SEEN, VALID_EXCLUDED).astype(np.uint8)
    gaps, warnings = [], []
    max_short = max(1, int(round(MAX_SHORT_GAP_S * fps)))
    for start, end in runs(~found):
        inner = start > 0 and end < n
        short = inner and end - start <= max_short
        if short:
            valid[start:end] = VALID_INTERPOLATED
        gaps.append(gap_record(start, end, fps, "interpolated" if short else "excluded"))
    interpolated = [g for g in gaps if g["kind"] == "interpolated"]
    excluded = [g for g in gaps if g["kind"] == "excluded"]
    if interpolated:
        warnings.append(f"the face was lost briefly at {_listing(interpolated, fps, offset_s)}; "
                        f"{sum(g['end_frame'] - g['start_frame'] for g in interpolated)} frames interpolated")
    if excluded:
        warnings.append(f"the face was lost at {_listing(excluded, fps, offset_s)}; those "
                        f"{sum(g['end_frame'] - g['start_frame'] for g in excluded)} frames are excluded from training")
    if n < MIN_USABLE_S * fps:
        raise EngineError(f"{path}: the clip is only {n / fps:.1f} s long ({n} frames at {fps:g} fps)",
                          f"use a clip of at least {MIN_USABLE_S:g} s (10 s or more of speech trains well)",
                          path=str(path))
    usable = int((valid > 0).sum())
    if usable < max(MIN_USABLE_SHARE * n, MIN_USABLE_S * fps):
        raise EngineError(
            f"{path}: a face is visible in only {usable} of {n} frames (lost at {_listing(excluded, fps, offset_s)})",
            "use a clip where the person's face stays in the picture; trim the parts without it",
            path=str(path))
    return valid, gaps, warnings


def gap_record(start: int, end: int, fps: float, kind: str) -> dict:
    """subject.json's record of frames start..end-1 set apart (kind: interpolated, excluded, transition)."""
    return {"start_frame": start, "end_frame": end, "start": round(start / fps, 3), "end": round(end / fps, 3),
            "kind": kind}


def _listing(gaps: list[dict], fps: float, offset_s: float, most: int = 6) -> str:
    text = ", ".join(span_text(g["start_frame"], g["end_frame"], fps, offset_s) for g in gaps[:most])
    return text + (f" and {len(gaps) - most} more" if len(gaps) > most else "")


def fill_lost(values: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Linear interpolation over time of each component of `values` (N, ...) across frames
    without a face; frames before the first / after the last face hold the nearest one."""
    seen = np.flatnonzero(found)
    flat = values.reshape(len(values), -1).astype(np.float64)
    frames = np.arange(len(values))
    filled = np.stack([np.interp(frames, seen, flat[seen, k]) for k in range(flat.shape[1])], axis=1)
    return filled.reshape(values.shape).astype(values.dtype)


def fill_lost_transforms(transforms: np.ndarray, found: np.ndarray) -> np.ndarray:
    """As fill_lost for (N, 4, 4) rigid transforms, with the rotations made orthonormal again."""
    filled = fill_lost(transforms, found)
    for i in np.flatnonzero(~found):
        u, _, vt = np.linalg.svd(filled[i, :3, :3])
        rotation = u @ vt
        if np.linalg.det(rotation) < 0:
            rotation = u @ np.diag([1, 1, -1]) @ vt
        filled[i, :3, :3] = rotation
    return filled
