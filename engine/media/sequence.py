"""Image sequences: a plate delivered as numbered frames (PNG, JPEG, TIFF, DPX, OpenEXR), found, checked and
encoded once into a working copy that the rest of the engine reads as a clip.

Named the way compositing tools write them: `shot/plate.####.exr` (one # a digit of padding), `plate.%04d.png`,
or the folder that holds them. The working copy is H.264 at 4:4:4 and a quality no eye tells from the frames
(every pass of preprocessing, and the full-frame render's paste-back, reads it as a clip); an OpenEXR plate is
scene-linear light and is given the sRGB curve on the way in, as a viewer shows it.
"""
from __future__ import annotations

import os
import re
import subprocess
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import EngineError
from ..files import disk_full, partial_path, require_free_space
from ..progress import Progress
from .ffmpeg import ffmpeg_exe, file_argument, probe

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dpx", ".exr", ".bmp", ".tga")
_PLACEHOLDER = re.compile(r"#+|%(0\d+)?d")
_NUMBERED = re.compile(r"^(.*?)(\d+)(\.[^.]+)$")   # the last run of digits before the extension
WORKING_COPY_CRF = 12          # x264 at 4:4:4: 47.6-50.5 dB against a plate's PNG frames (bench_preprocess.py --plate)
WORKING_COPY_BYTES_PER_PIXEL = 0.5   # an upper estimate of that copy's size, for the free-space check
# OpenEXR holds scene-linear light; read as it is, a face is dark and its shadows crushed
SCENE_LINEAR_TO_SRGB = ("zscale=transferin=linear:transfer=iec61966-2-1:primariesin=709:primaries=709:"
                        "matrixin=gbr:matrix=gbr,format=gbrp")


def is_scene_linear(sequence_name: str | Path) -> bool:
    """Whether a sequence's frames hold scene-linear light (OpenEXR), read through the sRGB curve: its working
    copy, and a subject's renders, are then sRGB pictures whatever colour space the plate is shown in."""
    return Path(sequence_name).suffix.lower() == ".exr"


def is_image_sequence(path: str | Path) -> bool:
    """Whether `path` names an image sequence: a folder, or a frame-number placeholder in the name of a picture
    file that is not there itself (a clip named "Interview #3.mov" is a clip)."""
    path = Path(path)
    if path.is_dir():
        return True
    return (not path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
            and _last_placeholder(path.name) is not None)


def _last_placeholder(name: str):
    """The frame-number placeholder nearest the extension (`take#1_####.png`: the second)."""
    found = list(_PLACEHOLDER.finditer(name))
    return found[-1] if found else None


@dataclass(frozen=True)
class ImageSequence:
    """Frames folder/prefix + number + suffix, numbered first .. first + count - 1 but for the numbers in the
    `gaps` (start, end: numbers start .. end - 1), each number written with at least `digits` digits (0: as it
    comes). Gaps as ranges: a stray frame numbered far from the rest costs no memory."""
    folder: Path
    prefix: str
    suffix: str
    digits: int
    first: int
    count: int
    gaps: tuple[tuple[int, int], ...] = ()

    def part(self, start: int, count: int) -> "ImageSequence":
        """Its frames first + start .. first + start + count - 1 (the part of a plate an edit uses)."""
        first = self.first + start
        end = first + count
        return replace(self, first=first, count=count,
                       gaps=tuple((max(a, first), min(b, end)) for a, b in self.gaps if a < end and b > first))

    def require_every_frame(self) -> None:
        """Refuses the sequence where a frame is missing: read past a gap, every later frame would be late (a
        plate's missing frame is an error in its delivery)."""
        if self.gaps:
            missing, last = sum(b - a for a, b in self.gaps), self.first + self.count - 1
            raise EngineError(f"{self.name}: {missing} of frames {self.first}-{last} are missing (the first "
                              f"{self.gaps[0][0]})", "render or copy the missing frames in, or use only the frames "
                              "on one side of the gap (--start and --end; an image strip of those frames)",
                              path=str(self.frame_path(self.gaps[0][0])))

    @property
    def name(self) -> str:
        """The sequence as users write it: folder/plate.####.exr (plate.#.exr where the numbers are unpadded)."""
        return str(self.folder / f"{self.prefix}{'#' * max(1, self.digits)}{self.suffix}")

    def frame_path(self, number: int) -> Path:
        return self.folder / f"{self.prefix}{number:0{self.digits}d}{self.suffix}"

    @property
    def ffmpeg_pattern(self) -> str:
        """The image2 demuxer's name for it (a % of the path doubled, as the demuxer reads it)."""
        digits = f"%0{self.digits}d" if self.digits else "%d"
        return file_argument(self.folder / self.prefix).replace("%", "%%") + digits + self.suffix.replace("%", "%%")


def find_image_sequence(path: str | Path) -> ImageSequence:
    """The sequence a pattern or a folder names (gaps are allowed: the part of it used is checked)."""
    path = Path(path)
    if path.is_dir():
        # hidden files left out: a Mac's AppleDouble twins (._plate.0001.exr) on a shared drive, say
        runs = _runs(path, [p.name for p in path.iterdir()
                            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")])
        if not runs:
            raise EngineError(f"{path}: is a folder, and holds no numbered image frames ({', '.join(IMAGE_SUFFIXES)})",
                              "pick a video clip in it, or the folder of a plate's numbered frames", path=str(path))
        if len(runs) > 1:
            names = ", ".join(sorted(Path(r.name).name for r in runs)[:4])
            raise EngineError(f"{path}: holds {len(runs)} image sequences ({names})",
                              f"name the one to use, e.g. {runs[0].name}", path=str(path))
        return runs[0]
    placeholder = _last_placeholder(path.name)
    if placeholder is None or not path.parent.is_dir():
        raise EngineError(f"{path}: no such image sequence", "check the folder and the frame-number placeholder "
                          "(plate.####.exr, plate.%04d.png)", path=str(path))
    prefix, suffix = path.name[:placeholder.start()], path.name[placeholder.end():]
    spec = placeholder.group(0)
    digits = len(spec) if spec.startswith("#") else int(placeholder.group(1) or 0)
    numbered = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix) + "$")
    written = []
    for p in path.parent.iterdir():
        if (m := numbered.match(p.name)) and (len(m.group(1)) == digits or not digits
                                              or (len(m.group(1)) > digits and m.group(1)[0] != "0")):
            written.append(m.group(1))
    if not written:
        raise EngineError(f"{path}: no frames match it", "check the file names' padding (#### is four digits)",
                          path=str(path))
    # %d gives no padding: the names' own (plate.%d.png naming plate.0001.png ...)
    return _sequence(path.parent, prefix, suffix, digits or _padding(written), [int(d) for d in written])


def image_sequence_of_files(files: list[Path]) -> ImageSequence:
    """The sequence a list of frames forms (an image strip's), refused unless they are one numbered run."""
    files = [Path(f) for f in files]
    folders = {f.parent for f in files}
    runs = _runs(files[0].parent, [f.name for f in files]) if len(folders) == 1 else []
    if len(runs) != 1 or runs[0].count - sum(b - a for a, b in runs[0].gaps) != len(files):
        raise EngineError(f"{files[0].parent}: the {len(files)} images are not one numbered sequence",
                          "use a strip of numbered frames from one folder (plate.0001.exr, plate.0002.exr, ...)",
                          path=str(files[0]))
    runs[0].require_every_frame()
    numbers = [int(_NUMBERED.match(f.name).group(2)) for f in files]
    if numbers != sorted(numbers):   # the strip plays them in its own order; the plate is read by number
        at = next(k for k in range(1, len(numbers)) if numbers[k] < numbers[k - 1])
        raise EngineError(f"{files[0].parent}: the images play out of their numbers' order ({files[at].name} "
                          f"after {files[at - 1].name})", "add the frames again in number order (as Blender's file "
                          "browser lists them), or renumber them in the order they play", path=str(files[at]))
    return runs[0]


def _runs(folder: Path, names: list[str]) -> list[ImageSequence]:
    """The numbered runs among `names`, gaps and all."""
    groups: dict[tuple[str, str], list[str]] = {}
    for name in names:
        if m := _NUMBERED.match(name):
            groups.setdefault((m.group(1), m.group(3)), []).append(m.group(2))
    return [_sequence(folder, prefix, suffix, _padding(digit_strings), [int(d) for d in digit_strings])
            for (prefix, suffix), digit_strings in sorted(groups.items())]


def _padding(digit_strings: list[str]) -> int:
    """The digits frame numbers are written with: padded where any has a leading zero, or all are written with
    as many digits; else 0 (as they come)."""
    widths = {len(d) for d in digit_strings}
    padded = any(d[0] == "0" and len(d) > 1 for d in digit_strings) or len(widths) == 1
    return min(widths) if padded else 0


def _sequence(folder: Path, prefix: str, suffix: str, digits: int, numbers: list[int]) -> ImageSequence:
    numbers = sorted(set(numbers))
    gaps = tuple((a + 1, b) for a, b in zip(numbers, numbers[1:]) if b > a + 1)
    return ImageSequence(folder, prefix, suffix, digits, numbers[0], numbers[-1] - numbers[0] + 1, gaps)


def encode_working_copy(sequence: ImageSequence, fps: float, path: Path, progress: Progress) -> Path:
    """Encode the sequence at `fps` into `path` (an mp4), written under a temporary name and renamed at the end."""
    sequence.require_every_frame()
    first = probe(sequence.frame_path(sequence.first))   # readable, and its size for the disk check
    require_free_space(path.parent, int(sequence.count * first.width * first.height * WORKING_COPY_BYTES_PER_PIXEL),
                       f"a working copy of {sequence.name}'s {sequence.count} frames")
    linear = is_scene_linear(sequence.name)
    tmp = partial_path(path)
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "level+info", "-nostdin", "-y", "-nostats", "-progress", "pipe:1",
           "-framerate", repr(float(fps)), "-start_number", str(sequence.first),
           "-f", "image2", "-i", sequence.ffmpeg_pattern, "-frames:v", str(sequence.count), "-an",
           # showinfo first: the frames that decoded, by number, to name one that did not
           "-vf", "showinfo=checksum=0" + (f",{SCENE_LINEAR_TO_SRGB}" if linear else ""),
           "-c:v", "libx264", "-preset", "veryfast", "-crf", str(WORKING_COPY_CRF), "-pix_fmt", "yuv444p",
           "-movflags", "+faststart", file_argument(tmp)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
    report = _Report(proc.stderr)
    done = 0
    try:
        with progress.stage("image sequence", sequence.count) as stage:
            for line in proc.stdout:
                if line.startswith("frame=") and (frame := int(line[6:].strip() or 0)) > done:
                    stage.advance(frame - done)
                    done = frame
        proc.wait()
        report.join()
    except BaseException:
        proc.kill()
        proc.wait()
        tmp.unlink(missing_ok=True)
        raise
    finally:
        proc.stdout.close()
    sizes = {(first.width, first.height), *report.sizes}
    # ffmpeg goes on past a frame it cannot decode (to the plate's next frame after the part, where there is one)
    skipped = sorted(set(range(sequence.count)) - report.decoded) if proc.returncode == 0 else []
    if proc.returncode != 0 or done < sequence.count or len(sizes) > 1 or skipped:
        tmp.unlink(missing_ok=True)
        if any("No space left on device" in line for line in report.errors):
            raise disk_full(path)
        if len(sizes) > 1:   # ffmpeg would scale them to the first's: a proxy frame among the plate's, say
            listed = ", ".join(f"{w}x{h}" for w, h in sorted(sizes))
            raise EngineError(f"{sequence.name}: its frames are not all one size ({listed})",
                              "render or export the frames again at one size", path=sequence.name)
        message = report.errors[-1] if report.errors else "ffmpeg stopped"
        if skipped:
            bad = sequence.frame_path(sequence.first + skipped[0])
            raise EngineError(f"{bad}: does not decode ({message}); {done} of {sequence.name}'s {sequence.count} "
                              "frames could be encoded", "render or copy that frame again (check that it opens "
                              "in an image viewer)", path=str(bad))
        raise EngineError(f"{sequence.name}: {done} of its {sequence.count} frames could be encoded ({message})",
                          "check that every frame opens in an image viewer", path=sequence.name)
    os.replace(tmp, path)
    return path


class _Report(threading.Thread):
    """ffmpeg's messages (`-loglevel level+info`), read as they come so that its pipe never fills: the errors, the
    sizes its frames changed to, and the frames that decoded (showinfo's pts: the frame's place in the sequence)."""
    _RESIZED = re.compile(r"\[info\] Reconfiguring filter graph because video parameters changed to .*?(\d+)x(\d+)")
    _SHOWN = re.compile(r"\[Parsed_showinfo.*\bn: *\d+ pts: *(\d+)")

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream, self.errors, self.sizes, self.decoded = stream, [], set(), set()
        self.start()

    def run(self) -> None:
        for line in self.stream:
            if m := self._SHOWN.search(line):
                self.decoded.add(int(m.group(1)))
            elif m := self._RESIZED.search(line):
                self.sizes.add((int(m.group(1)), int(m.group(2))))
            elif "[error]" in line or "[fatal]" in line:
                self.errors = (self.errors + [line.split("]")[-1].strip()])[-5:]
        self.stream.close()
