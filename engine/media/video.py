"""Decoding a clip to RGB frames at a constant frame rate, and encoding frames to H.264 + AAC."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import EngineError
from ..files import disk_full, partial_path
from .ffmpeg import SQUARE_PIXELS, MediaInfo, ffmpeg_exe, file_argument, probe

DEINTERLACE = "bwdif=mode=send_frame:deint=interlaced"   # frames marked progressive pass untouched
# HDR to SDR: the picture made linear (100 nits at 1.0), its BT.2020 primaries taken to BT.709's, then mobius
# keeps every tone up to SDR white as it is (a face's) and rolls off only the highlights above it.
TONE_MAP = ("zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,tonemap=tonemap=mobius:desat=0,"
            "zscale=t=bt709:m=bt709:r=tv,format=yuv420p")


def open_clip(path: str | Path, video_stream: int | None = None) -> MediaInfo:
    """Probe a clip and check it has a video stream (its number `video_stream`; None: its first picture's)."""
    info = probe(path, video_stream)
    if info.still_image:
        raise EngineError(f"{path}: is a still picture ({info.video_codec or info.container}), not a video clip",
                          "pick a video of the person talking (mp4, mov, mkv, webm)", path=str(path))
    if not info.has_video or info.width == 0:
        raise EngineError(f"{path}: has no video stream", "pick a video clip (mp4, mov, mkv, webm)", path=str(path))
    return info


def read_frames(path: str | Path, fps: float, info: MediaInfo | None = None, first: int = 0,
                count: int | None = None) -> Iterator[np.ndarray]:
    """Yield (H, W, 3) uint8 RGB frames resampled to a constant `fps` (frames dropped or repeated): those
    numbered `first` to `first + count` (None: to the end) at that rate, frame 0 the clip's first."""
    info = info or open_clip(path)
    w, h = info.width, info.height
    filters = f"fps={fps}" + (f",{SQUARE_PIXELS}" if info.pixel_aspect != (1, 1) else "")
    if info.hdr:
        # Read as stored, a phone's HDR video (HLG) is dark and grey: lieu_60s made HLG, 15.4 dB against the frames
        # it was made from and 2/3 of their level; tone-mapped, 30.2 dB and the same level.
        filters = f"{TONE_MAP},{filters}"
    if info.interlaced:
        # One picture per frame, at its first field's instant: a frame of two fields combs whatever moves
        # (the mouth most), and the face tracker reads the comb (lieu_60s interlaced: jawOpen r 0.93 against
        # the progressive frames as read, 0.98 deinterlaced). Fields first, before anything else.
        filters = f"{DEINTERLACE},{filters}"
    if first or count is not None:
        # numbered after the rate change, so frame k is the k-th of a whole read
        end = f":end_frame={first + count}" if count is not None else ""
        filters += f",trim=start_frame={first}{end}"
    # Restamped from 0: the constant-rate output pads a picture that starts after the container (a camera's
    # picture after its sound, a second angle cut in later) with copies of its first frame, and pads the frames
    # before `first` the same way; frame 0 is the stream's first, where its sound's sample 0 lies (media.audio).
    filters += ",setpts=PTS-STARTPTS"
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-i", file_argument(path),
           "-map", f"0:v:{info.video_stream}", "-vf", filters, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    frame_bytes = w * h * 3
    count = 0
    try:
        while True:
            buf = proc.stdout.read(frame_bytes)
            if len(buf) < frame_bytes:
                break
            count += 1
            yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace").strip()
        proc.stderr.close()
        proc.wait()
    if count == 0:
        raise EngineError(f"{path}: no frame could be decoded ({err.splitlines()[-1] if err else 'empty stream'})",
                          "check that the clip plays; re-encode it to H.264 mp4 if it does not", path=str(path))


class VideoWriter:
    """Frames in, an H.264 mp4 out (yuv420p, so every player opens it), optionally with an audio track.

    Writes to a temporary file and renames it on `close()`, so an interrupted render leaves no
    half-written video behind.
    """

    def __init__(self, path: str | Path, width: int, height: int, fps: float,
                 audio: str | Path | None = None, crf: int = 18):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = partial_path(self.path)
        self.size = (width, height)
        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "-"]
        if audio is not None:
            cmd += ["-i", file_argument(audio), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac", "-b:a", "160k",
                    "-shortest"]
        # Even dimensions are required by yuv420p; pad by one pixel when needed.
        cmd += ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-preset", "veryfast",
                "-crf", str(crf), "-pix_fmt", "yuv420p", "-movflags", "+faststart", file_argument(self.tmp)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        if frame.shape[:2] != (self.size[1], self.size[0]) or frame.dtype != np.uint8:
            raise ValueError(f"frame {frame.shape} {frame.dtype} does not match {self.size} uint8")
        try:
            self.proc.stdin.write(np.ascontiguousarray(frame[..., :3]).tobytes())
        except BrokenPipeError:  # ffmpeg stopped (a full disk, most often): its own message says why
            self._failed(self._end())
        self.frames += 1

    def close(self) -> Path:
        err = self._end()
        if self.proc.returncode != 0 or self.frames == 0:
            self._failed(err)
        os.replace(self.tmp, self.path)
        return self.path

    def _end(self) -> str:
        """Close ffmpeg's input and wait for it; returns what it printed."""
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        err = self.proc.stderr.read().decode(errors="replace").strip()
        self.proc.stderr.close()
        self.proc.wait()
        return err

    def _failed(self, err: str):
        self.tmp.unlink(missing_ok=True)
        if "No space left on device" in err:
            raise disk_full(self.path)
        raise EngineError(f"{self.path}: encoding failed: {err or 'no frames'}",
                          "check that the output folder is writable", path=str(self.path))

    def abort(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float, audio: str | Path | None = None) -> Path:
    frames = iter(frames)
    first = next(frames)
    with VideoWriter(path, first.shape[1], first.shape[0], fps, audio) as writer:
        writer.write(first)
        for frame in frames:
            writer.write(frame)
    return Path(path)
