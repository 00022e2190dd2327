"""Frames of a render: the driving inputs through the talking head, then into the subject's frame.

Three kinds of frame:
- "crop": the head pasted onto the subject's crop frame (Portrait-Sync, at the crop size);
- "full": the head pasted straight into the full-resolution source frame through the crop box;
- "rgba": head and torso over transparency, at the crop size or placed in a source-sized canvas.
"""
from __future__ import annotations

from contextlib import ExitStack
from typing import Iterator

import numpy as np

from ..files import sha256_of
from ..portrait.composite import as_uint8, face_layer, over_frame, paste_back, rgba_into_source
from ..portrait.source import SourceFrames
from ..subject.format import CropBox, Subject
from .driving import Driving


class Framing:
    """Where rendered heads go: the crop, or the full source frame (when the source clip is available)."""

    def __init__(self, subject: Subject, full_frame: bool, replayed, progress, stack: ExitStack,
                 rgba: bool = False):
        self.subject = subject
        self.source: SourceFrames | None = None
        self.box: CropBox | None = None
        self.canvas: tuple[int, int] | None = None  # (width, height) of the source, for RGBA
        if not full_frame:
            return
        source, box = subject.meta.source, subject.meta.crop_box
        if box is None or source is None:
            progress.warn(f"{subject.root / 'subject.json'} records no source clip or crop box; "
                          "rendering at the crop size")
            return
        path = source.clip_in(subject.root)
        if not path.is_file():
            progress.warn(f"source clip {path} not found; rendering at the crop size "
                          "(put the clip back there to get full-frame output)")
            return
        if source.sha256 is not None and sha256_of(path) != source.sha256:
            progress.warn(f"source clip {path} changed since preprocessing (checksum differs); "
                          "rendering at the crop size")
            return
        self.box = box
        if rgba:
            from ..media.video import open_clip
            info = open_clip(path, source.video_stream)
            self.canvas = (info.width, info.height)
        else:
            self.source = stack.enter_context(SourceFrames(path, subject.fps, source.first_frame, replayed,
                                                           source.video_stream))

    @property
    def full(self) -> bool:
        return self.box is not None

    def size(self, crop_size: int) -> tuple[int, int]:
        """(width, height) of the output frames."""
        if self.source is not None:
            return self.source.width, self.source.height
        if self.canvas is not None:
            return self.canvas
        return crop_size, crop_size

    def composite(self, render: np.ndarray, index: int, face_mask: np.ndarray) -> np.ndarray:
        frame = self.subject.frame(index)
        layer = face_layer(render, frame, face_mask)
        if self.source is not None:
            return paste_back(layer, self.source[index], self.box)
        return over_frame(layer, frame)

    def place_rgba(self, rgba: np.ndarray) -> np.ndarray:
        if self.canvas is not None:
            return rgba_into_source(rgba, self.box, *self.canvas)
        return as_uint8(rgba)


def render_frame(head, driving: Driving, j: int, rgba: bool = False, within: np.ndarray | None = None) -> np.ndarray:
    return head.render(int(driving.frame_index[j]), driving.audio[j], blendshapes=driving.blendshapes[j],
                       pose=driving.poses[j], rgba=rgba, within=within)


def head_renders(head, driving: Driving, face_only: bool = True,
                 rgba: bool = False) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """(j, render, face mask) for each frame j of `driving`, in order, several frames at once on a CPU
    (device.frames_at_once). face_only: only the face mask's pixels of the head are rendered; rgba:
    head and torso over transparency, with no mask."""
    from ..nerf.device import frames_at_once, in_order
    workers = frames_at_once(head.device)

    def render(j: int):
        face_mask = None if rgba else head.subject.face_mask(int(driving.frame_index[j]))
        return j, render_frame(head, driving, j, rgba=rgba, within=face_mask if face_only else None), face_mask

    yield from in_order(render, len(driving), workers)


def frames(head, driving: Driving, framing: Framing, rgba: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """(frame number in the whole render, uint8 image) for each frame of `driving`.

    A composited frame keeps only the face of the render (Portrait-Sync), so only the face is rendered:
    the hair, ears and neck would be thrown away (on a 512-px subject about half the head's rays)."""
    for j, image, face_mask in head_renders(head, driving, rgba=rgba):
        if rgba:
            yield driving.first + j, framing.place_rgba(image)
        else:
            yield driving.first + j, framing.composite(image, int(driving.frame_index[j]), face_mask)
