"""Where rendered frames go: an H.264 + AAC mp4 with the speech, or a PNG sequence (RGB or RGBA).

PNG files are named by their frame number in the whole render (000000.png ...), so the pieces of a
split render (`--frames A:B`) fill one folder and join without a gap; each file is written to a
temporary name and renamed. The mp4 of a range carries that range's slice of the speech.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from ..errors import EngineError
from ..files import atomic_write_image, partial_path
from ..media.audio import open_audio, write_wav
from ..media.video import VideoWriter

FORMATS = ("mp4", "png", "rgba")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv")
MUX_RATE = 48000


def choose_format(requested: str | None, out: Path) -> str:
    if requested is None and out.suffix and out.suffix.lower() not in VIDEO_SUFFIXES:
        raise EngineError(f"{out}: a render is written as an mp4 (.mp4, .mov, .mkv) or a folder of PNG frames",
                          "name the output e.g. speech.mp4, or give a folder name without an extension",
                          path=str(out))
    if requested is None:
        return "mp4" if out.suffix.lower() in VIDEO_SUFFIXES else "png"
    if requested == "mp4" and out.suffix.lower() not in VIDEO_SUFFIXES:
        raise EngineError(f"{out}: an mp4 render needs a file name ending in .mp4",
                          "name the output e.g. speech.mp4, or use --format png for a folder of frames",
                          path=str(out))
    if requested in ("png", "rgba") and out.suffix:
        raise EngineError(f"{out}: a {requested} render writes a folder of frames, not a file",
                          "give a folder name without an extension", path=str(out))
    return requested


class PngSequence:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.written = 0

    def write(self, number: int, image: np.ndarray) -> None:
        code = cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR
        atomic_write_image(self.folder / f"{number:06d}.png", cv2.cvtColor(image, code))
        self.written += 1

    def close(self) -> Path:
        return self.folder

    def abort(self) -> None:
        """Frames already written stay: each is whole, and a re-run overwrites them."""


class Mp4Output:
    """The frames with the matching slice of the speech (AAC), written atomically by VideoWriter."""

    def __init__(self, path: Path, width: int, height: int, fps: float, speech: Path, first: int, count: int,
                 track: int = 1, from_first_sample: bool = False):
        # The sound covers the frames' whole time or more (ffmpeg's -shortest dropped the last frame where it
        # fell a fraction of a sample short, as at 23.976 and 29.97 fps, or where the speech ends inside it).
        start = int(round(first / fps * MUX_RATE))
        length = math.ceil(count / fps * MUX_RATE)
        samples = open_audio(speech, MUX_RATE, allow_silent=True, track=track,
                             from_first_sample=from_first_sample).read(start, start + length)
        samples = np.pad(samples, (0, length - len(samples)))
        path.parent.mkdir(parents=True, exist_ok=True)
        self._audio = partial_path(path.with_suffix(".wav"))
        write_wav(self._audio, samples, MUX_RATE)
        self._video = VideoWriter(path, width, height, fps, audio=self._audio)

    def write(self, number: int, image: np.ndarray) -> None:
        self._video.write(image)

    def close(self) -> Path:
        try:
            return self._video.close()
        finally:
            self._audio.unlink(missing_ok=True)

    def abort(self) -> None:
        self._video.abort()
        self._audio.unlink(missing_ok=True)


def open_output(fmt: str, out: Path, width: int, height: int, fps: float, speech: Path, first: int, count: int,
                track: int = 1, from_first_sample: bool = False):
    """`speech`'s audio track `track` goes into an mp4 (as the render heard it: from_first_sample, open_audio)."""
    if fmt == "mp4":
        return Mp4Output(out, width, height, fps, speech, first, count, track, from_first_sample)
    return PngSequence(out)
