"""Running the ffmpeg that imageio-ffmpeg ships: argument lists only, never a shell string."""
from __future__ import annotations

import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import EngineError
from ..files import require_input_file


def ffmpeg_exe() -> str:
    import imageio_ffmpeg
    return imageio_ffmpeg.get_ffmpeg_exe()


def file_argument(path: str | Path) -> str:
    """A file as ffmpeg and libsndfile must be given it: its absolute path, so that a relative name is never read
    as something else: beginning with '-' as an option (an output folder '-takes'), holding ':' as a protocol
    ('take1:a/line.m4a'), or '-' alone as standard input."""
    return str(Path(path).absolute())


@dataclass
class MediaInfo:
    path: str
    duration: float | None
    has_video: bool
    width: int = 0
    height: int = 0
    fps: float = 0.0
    video_codec: str = ""
    audio_codec: str = ""
    sample_rate: int = 0
    audio_tracks: int = 0   # a camera's clip may hold several (one a microphone input); players play the first
    container: str = ""
    pixel_aspect: tuple[int, int] = (1, 1)  # the video's sample aspect ratio (SAR) where its pixels are not square
    interlaced: bool = False  # fields of two instants in each frame (broadcast 1080i, DV, older camcorders)
    # The first frame's time after the container's first timestamp: a camera file or a broadcast capture often
    # starts its sound and its picture apart, and a player keeps them where they are stamped.
    video_lead: float = 0.0
    start: float = 0.0        # the container's first timestamp, in seconds (an MPEG-TS often starts at 1.4)
    # A high-dynamic-range transfer ("hlg": a phone's HDR video, broadcast HDR; "pq": HDR10), "" for SDR.
    hdr: str = ""
    # Which of the file's video streams the above describe, counted as ffmpeg's `0:v:N` and Blender's movie
    # strip Stream Index count them (a cover picture counts; a file from a two-lens camera holds two).
    video_stream: int = 0

    @property
    def has_audio(self) -> bool:
        return self.audio_tracks > 0

    @property
    def still_image(self) -> bool:
        """A picture (PNG, JPEG, ...), whatever its file name says: ffmpeg reads it as an image pipe."""
        return self.container == "image2" or self.container.endswith("_pipe")


_CONTAINER = re.compile(r"Input #0, ([\w,]+), from")
_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_VIDEO = re.compile(r"Stream #\S+.*?: Video: (\w+).*?, (\d{2,5})x(\d{2,5})")
_FPS = re.compile(r"([\d.]+)(k?) (?:fps|tbr)")
_ROTATION = re.compile(r"Display Matrix: rotation of (-?[\d.]+) degrees")
_SAR = re.compile(r"\[SAR (\d+):(\d+) DAR")
_STREAM_START = re.compile(r", start (-?[\d.]+)")          # a stream's first timestamp, where ffmpeg gives it
_START = re.compile(r"Duration: .*?, start: (-?[\d.]+)")     # the container's first timestamp
_INTERLACED = re.compile(r"\b(?:top|bottom) (?:coded )?first\b")   # the field order ffmpeg reports
_HDR = {"arib-std-b67": "hlg", "smpte2084": "pq"}   # the transfer characteristics ffmpeg names
# Frames of a clip whose pixels are not square are stretched to square ones as they are decoded; this
# width follows from ffmpeg's input width (iw) and sample aspect ratio (sar), as the filter computes it.
SQUARE_PIXELS = "scale=trunc(iw*sar/2)*2:ih,setsar=1"
_AUDIO = re.compile(r"Stream #\S+.*?: Audio: (\w+).*?(\d+) Hz")


def probe(path: str | Path, video_stream: int | None = None) -> MediaInfo:
    """What a media file holds, read from ffmpeg's stream report (imageio-ffmpeg ships no ffprobe); its video
    stream number `video_stream` (None: the first that is not a cover picture)."""
    path = Path(path)
    require_input_file(path, "the clip")
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", file_argument(path)],
                          capture_output=True, text=True, errors="replace")
    report = proc.stderr
    if "moov atom not found" in report and _starts_like_mp4(path):
        raise EngineError(f"{path}: the recording was never finished: its index (the mp4's 'moov' atom) is missing, "
                          "as when a camera or phone stops without closing the file (a flat battery, a full card)",
                          "recover it (the camera's own repair, or a tool such as untrunc given a good clip from the "
                          "same camera) and use the recovered file", path=str(path))
    if "Invalid data found" in report or "Stream #" not in report:
        raise EngineError(f"{path}: not a readable video or audio file",
                          "use a common container (mp4, mov, mkv, webm, wav, mp3, flac, ogg, m4a)",
                          path=str(path))
    info = MediaInfo(str(path), None, False)
    if m := _CONTAINER.search(report):
        info.container = m.group(1).split(",")[0]
    if m := _DURATION.search(report):
        h, mnt, s = m.groups()
        info.duration = int(h) * 3600 + int(mnt) * 60 + float(s)
    if m := _START.search(report):
        info.start = float(m.group(1))
    in_video = False  # lines of the video stream's block: its side data says how a player turns it
    video_streams = 0
    for line in report.splitlines():
        if m := _VIDEO.search(line):
            number, video_streams = video_streams, video_streams + 1
        if m and not info.has_video and (number == video_stream if video_stream is not None
                                         else "attached pic" not in line):
            info.has_video = in_video = True
            info.video_stream = number
            info.video_codec, info.width, info.height = m.group(1), int(m.group(2)), int(m.group(3))
            if f := _FPS.search(line):
                info.fps = float(f.group(1)) * (1000 if f.group(2) else 1)
            info.interlaced = bool(_INTERLACED.search(line))
            info.hdr = next((kind for name, kind in _HDR.items() if name in line), "")
            if t := _STREAM_START.search(line):
                info.video_lead = max(0.0, float(t.group(1)) - info.start)
            if a := _SAR.search(line):
                num, den = int(a.group(1)), int(a.group(2))
                if num and den:  # 0:1 means unknown: square
                    info.pixel_aspect = (num // math.gcd(num, den), den // math.gcd(num, den))
            continue
        if "Stream #" in line:
            in_video = False
        if m := _AUDIO.search(line):
            if not info.has_audio:   # the first track's
                info.audio_codec, info.sample_rate = m.group(1), int(m.group(2))
            info.audio_tracks += 1
        elif in_video and (m := _ROTATION.search(line)) and round(float(m.group(1))) % 180 == 90:
            # A phone filming upright stores its frames sideways and a rotation to show them by; ffmpeg
            # decodes them turned (every command here reads frames through it), so they are this size.
            info.width, info.height = info.height, info.width
            info.pixel_aspect = info.pixel_aspect[::-1]
    if video_stream is not None and not info.has_video:
        raise EngineError(f"{path}: has no video stream {video_stream} (it holds {video_streams}, numbered from 0)",
                          "choose one of its streams (Blender: the movie strip's Stream Index)", path=str(path))
    if info.pixel_aspect != (1, 1):  # the size SQUARE_PIXELS gives
        num, den = info.pixel_aspect
        info.width = int(info.width * (num / den) / 2) * 2
    return info


def _starts_like_mp4(path: Path) -> bool:
    """Whether the file begins with an MP4/QuickTime box (what a recording cut off before its index still has)."""
    with open(path, "rb") as file:
        return file.read(8)[4:8] in (b"ftyp", b"mdat", b"wide", b"free", b"skip")
