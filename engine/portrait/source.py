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
from ..files import preallocated_memmap, remove_leftovers, require_free_space, temp_prefix


class SourceFrames:
    """Random access to the source clip's frames `indices` (subject frame numbers). Use as a context manager."""

    def __init__(self, path: Path, fps: float, first: int, indices, progress=None):
        from ..media.video import open_clip, read_frames
        info = open_clip(path)
        self.width, self.height = info.width, info.height
        wanted = sorted({int(i) for i in indices})
        self._slot = {index: slot for slot, index in enumerate(wanted)}
        remove_leftovers(tempfile.gettempdir())  # what a killed render left
        require_free_space(tempfile.gettempdir(), len(wanted) * self.height * self.width * 3,
                           f"keeping {len(wanted)} source frames for the full-frame render (or render with --crop)")
        self._tmp = tempfile.TemporaryDirectory(prefix=temp_prefix("source"))
        try:
            self._frames = preallocated_memmap(Path(self._tmp.name) / "frames.u8", np.uint8,
                                               (max(len(wanted), 1), self.height, self.width, 3))
        except BaseException:
            self._tmp.cleanup()
            raise
        stage = progress.stage("decode source", len(wanted)) if progress is not None else None
        remaining = set(wanted)
        if wanted:
            with closing(read_frames(path, fps, info, first, wanted[-1] + 1)) as frames:
                for index, frame in enumerate(frames):
                    if index in remaining:
                        self._frames[self._slot[index]] = frame
                        remaining.discard(index)
                        if stage is not None:
                            stage.advance()
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
        self._frames = None
        self._tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
