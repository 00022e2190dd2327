"""The full-resolution frames of the subject's source clip, for pasting the render back into them.

The clip is decoded once, at the subject's frame rate, and only the frames a render needs are kept,
in a temporary memory-mapped file (a long 4K clip does not fit in memory; the ping-pong replay reads
frames backwards, which a decoder cannot do cheaply).
"""
from __future__ import annotations

import tempfile
from contextlib import closing
from pathlib import Path

import numpy as np

from ..errors import EngineError
from ..subject.format import Subject
from .composite import CropBox


def source_info(subject: Subject) -> tuple[Path | None, int, CropBox | None]:
    """(source clip path or None, index of the subject's frame 0 in the clip, crop box or None).

    Preprocessing keeps the whole clip (frame 0 is the clip's first frame at the subject's rate);
    a `first_frame` entry, if a trimmed subject records one, shifts that.
    """
    meta = subject.meta
    source = meta.get("source")
    path = source.get("path") if isinstance(source, dict) else source
    first = int(source.get("first_frame", 0)) if isinstance(source, dict) else 0
    box = CropBox.from_meta(meta["crop_box"]) if meta.get("crop_box") is not None else None
    return (Path(path) if path else None), first, box


class SourceFrames:
    """Random access to the source clip's frames `indices` (subject frame numbers). Use as a context manager."""

    def __init__(self, path: Path, fps: float, first: int, indices, progress=None):
        from ..media.video import open_clip, read_frames
        info = open_clip(path)
        self.width, self.height = info.width, info.height
        wanted = sorted({int(i) for i in indices})
        self._slot = {index: slot for slot, index in enumerate(wanted)}
        self._tmp = tempfile.TemporaryDirectory(prefix="synctalk-source-")
        self._frames = np.lib.format.open_memmap(Path(self._tmp.name) / "frames.npy", mode="w+", dtype=np.uint8,
                                                 shape=(max(len(wanted), 1), self.height, self.width, 3))
        stage = progress.stage("decode source", len(wanted)) if progress is not None else None
        remaining = set(wanted)
        last = wanted[-1] + first if wanted else -1
        with closing(read_frames(path, fps, info)) as frames:
            for clip_index, frame in enumerate(frames):
                index = clip_index - first
                if index in remaining:
                    self._frames[self._slot[index]] = frame
                    remaining.discard(index)
                    if stage is not None:
                        stage.advance()
                if clip_index >= last:
                    break
        if stage is not None:
            stage.close()
        if remaining:
            self.close()
            raise EngineError(f"{path}: the clip ends before subject frame {min(remaining)}",
                              "the source clip changed since preprocessing; render with --crop or preprocess again",
                              path=str(path))

    def __getitem__(self, index: int) -> np.ndarray:
        return self._frames[self._slot[int(index)]]

    def close(self) -> None:
        del self._frames
        self._tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
