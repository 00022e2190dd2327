"""The full-resolution frames of the subject's source clip, for pasting the render back into them.

A render asks for the frames its replay walks, in order (`replayed_frames`): forwards through the training
frames, then backwards, and so on (ping-pong). The clip is decoded once, forwards, as the render goes, and a
decoded frame is kept only while a later request still wants it (the way back, or a frame asked twice at a
higher frame rate), in a temporary memory-mapped file sized for the most frames kept at once: a render that
walks forwards keeps one frame, where keeping every frame it replays took 25 MB a frame of a 4K clip.
"""
from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import EngineError
from ..files import preallocated_memmap, remove_leftovers, require_free_space, temp_prefix


class _Keeping:
    """Which decoded frames wait for a later request (the rule the plan and the render share)."""

    def __init__(self, requests: list[int]):
        self.remaining = Counter(requests)   # requests of each frame not yet served
        self.next = min(requests)            # the frame the decoder gives next

    def passed(self, index: int):
        """The frames the decoder gives up to `index`, each with whether a later request wants it."""
        while self.next <= index:
            frame, self.next = self.next, self.next + 1
            yield frame, frame != index and self.remaining[frame] > 0

    def served(self, index: int) -> bool:
        """Counts a request of `index` served; whether a later one wants it again."""
        self.remaining[index] -= 1
        return self.remaining[index] > 0


def most_kept(requests: list[int]) -> int:
    """The most frames kept at once while serving `requests` in order."""
    keeping, kept, most = _Keeping(requests), set(), 0
    for index in requests:
        if index not in kept:
            kept.update(frame for frame, keep in keeping.passed(index) if keep)
        (kept.add if keeping.served(index) else kept.discard)(index)
        most = max(most, len(kept))
    return most


class SourceFrames:
    """The source clip's frames for the subject frames `requests`, served in that order (`source[index]`, each
    index the next request). Use as a context manager."""

    def __init__(self, path: Path, fps: float, first: int, requests, video_stream: int = 0):
        from ..media.video import open_clip, read_frames
        info = open_clip(path, video_stream)
        self.path, self.width, self.height = Path(path), info.width, info.height
        self._requests = [int(i) for i in requests]
        self._position, self._slot, self._tmp, self._frames, self._reader = 0, {}, None, None, None
        if not self._requests:
            return
        slots = most_kept(self._requests)
        if slots:
            remove_leftovers(tempfile.gettempdir())  # what a killed render left
            require_free_space(tempfile.gettempdir(), slots * self.height * self.width * 3,
                               f"keeping {slots} source frames for the full-frame render's way back through its "
                               "frames (or render with --crop)")
            self._tmp = tempfile.TemporaryDirectory(prefix=temp_prefix("source"))
            try:
                self._frames = preallocated_memmap(Path(self._tmp.name) / "frames.u8", np.uint8,
                                                   (slots, self.height, self.width, 3))
            except BaseException:
                self._tmp.cleanup()
                raise
        self._free = list(range(slots))
        self._keeping = _Keeping(self._requests)
        low, high = min(self._requests), max(self._requests)
        self._reader = read_frames(path, fps, info, first + low, high - low + 1)

    def __getitem__(self, index: int) -> np.ndarray:
        index = int(index)
        if self._position >= len(self._requests) or self._requests[self._position] != index:
            raise ValueError(f"source frame {index} asked out of the order planned")
        self._position += 1
        if index in self._slot:
            frame = self._frames[self._slot[index]]
        else:
            for passed, keep in self._keeping.passed(index):
                frame = next(self._reader, None)
                if frame is None:
                    raise EngineError(f"{self.path}: the clip ends before subject frame {passed}",
                                      "the source clip changed since preprocessing; render with --crop or "
                                      "preprocess again", path=str(self.path))
                if keep:
                    self._keep(passed, frame)
        if self._keeping.served(index):
            if index not in self._slot:
                self._keep(index, frame)
        elif index in self._slot:
            frame = frame.copy()   # its slot is given to the next frame kept
            self._free.append(self._slot.pop(index))
        return frame

    def _keep(self, index: int, frame: np.ndarray) -> None:
        slot = self._free.pop()
        self._frames[slot] = frame
        self._slot[index] = slot

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._frames = None
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
