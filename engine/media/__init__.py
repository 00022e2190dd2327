"""Media I/O: decoding clips and audio with ffmpeg (from imageio-ffmpeg), encoding H.264 + AAC."""
from __future__ import annotations

from pathlib import Path

from ..errors import EngineError


def checked_span(path: Path, start_s: float | None, end_s: float | None, duration: float | None,
                 what: str = "clip") -> tuple[float, float | None]:
    """(start, end) seconds of a span of a file that lasts `duration` (None: unknown), the end held inside it
    (a strip's handle dragged past its content means its end); refuses a span that is empty or outside it."""
    start, end = start_s or 0.0, end_s
    if not start >= 0 or (end is not None and not end > start) or (duration and start >= duration):
        length = f"{duration:.2f} s long" if duration else "of unknown length"
        until = "its end" if end is None else f"{end:g} s"
        raise EngineError(f"{path}: the span from {start:g} s to {until} is not inside the {what} ({length})",
                          f"give a start before the end, both within the {what}", path=str(path))
    if end is not None and duration:
        end = min(end, duration)
    return start, end
