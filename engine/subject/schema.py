"""subject.json as typed records, checked when read.

A subject folder can come from a colleague, an older version or a hand edit, so every value is
checked against limits that make sense (frames and splits inside the frames that exist, fps in
(0, 240], a crop box inside the source clip, model files inside the subject's model folder) and a
failure is one EngineError naming the file, the field and what to do. `to_dict()` writes the layout
that `from_dict()` reads; keys this version does not know are kept, so nothing is lost on a rewrite.

Format versions: 1 (the only one so far). A crop box written as [x0, y0, x1, y1] (early subjects)
or a source given as a bare path string still read.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import EngineError

FORMAT = "synctalk-subject"
VERSION = 1
MAX_FPS = 240.0
MAX_SIZE = 4096
REPROCESS = "preprocess the clip again (python -m engine preprocess CLIP -o SUBJECT)"


class _Checker:
    """Reads fields of one JSON object, raising one EngineError per bad field."""

    def __init__(self, data, path: Path, where: str = ""):
        self.path, self.where = Path(path), where
        if not isinstance(data, dict):
            self.fail("", f"must be an object, not {type(data).__name__}")
        self.data = data

    def fail(self, name: str, problem: str, hint: str | None = None):
        field_name = f"{self.where}.{name}".strip(".") if name else (self.where or "the top level")
        raise EngineError(f"{self.path}: field '{field_name}' {problem}",
                          hint or f"correct it by hand if you edited the file, else {REPROCESS}", path=str(self.path))

    def sub(self, name: str, required: bool = True) -> "_Checker | None":
        value = self.data.get(name)
        if value is None:
            if required:
                self.fail(name, "is missing")
            return None
        return _Checker(value, self.path, f"{self.where}.{name}".strip("."))

    def number(self, name: str, low: float, high: float, required: bool = True, integer: bool = False,
               low_open: bool = False, default=None):
        value = self.data.get(name)
        if value is None:
            if required:
                self.fail(name, "is missing")
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
            self.fail(name, f"must be {'a whole number' if integer else 'a number'}, not {value!r}"[:200])
        if not math.isfinite(value) or value < low or value > high or (low_open and value == low):
            bracket = "(" if low_open else "["
            self.fail(name, f"is {value!r}, outside {bracket}{low:g}, {high:g}]")
        return int(value) if integer else float(value)

    def text(self, name: str, required: bool = True, default: str | None = None, limit: int = 4096):
        value = self.data.get(name)
        if value is None:
            if required:
                self.fail(name, "is missing")
            return default
        if not isinstance(value, str) or len(value) > limit:
            self.fail(name, f"must be text of at most {limit} characters")
        return value

    def flag(self, name: str) -> bool:
        """A true/false field, false where it is left out."""
        value = self.data.get(name, False)
        if not isinstance(value, bool):
            self.fail(name, f"must be true or false, not {value!r}"[:200])
        return value

    def listing(self, name: str, required: bool = False) -> list:
        value = self.data.get(name)
        if value is None:
            if required:
                self.fail(name, "is missing")
            return []
        if not isinstance(value, list):
            self.fail(name, f"must be a list, not {type(value).__name__}")
        return value

    def extra(self, known) -> dict:
        return {k: v for k, v in self.data.items() if k not in known}


@dataclass(frozen=True)
class CropBox:
    """Where the square crop came from in the source clip: source pixels x..x+width, y..y+height."""
    x: int
    y: int
    width: int
    height: int

    @property
    def x0(self) -> int:
        return self.x

    @property
    def y0(self) -> int:
        return self.y

    @property
    def x1(self) -> int:
        return self.x + self.width

    @property
    def y1(self) -> int:
        return self.y + self.height

    def cut(self, frame: np.ndarray, size: int) -> np.ndarray:
        """The box's pixels resized to (size, size): area filter when shrinking, cubic when growing."""
        import cv2
        patch = frame[self.y:self.y1, self.x:self.x1]
        if (self.width, self.height) == (size, size):
            return np.ascontiguousarray(patch)
        interpolation = cv2.INTER_AREA if size < max(self.width, self.height) else cv2.INTER_CUBIC
        return cv2.resize(patch, (size, size), interpolation=interpolation)

    def to_dict(self) -> dict:
        return {"x": self.x, "y": self.y, "width": self.width, "height": self.height}

    @classmethod
    def from_dict(cls, value, path: Path, source: "Source | None" = None) -> "CropBox":
        if isinstance(value, list) and len(value) == 4:  # early subjects: [x0, y0, x1, y1]
            value = {"x": value[0], "y": value[1], "width": _difference(value[2], value[0]),
                     "height": _difference(value[3], value[1])}
        c = _Checker(value, path, "crop_box")
        limit = MAX_SIZE * 16
        box = cls(c.number("x", 0, limit, integer=True), c.number("y", 0, limit, integer=True),
                  c.number("width", 1, limit, integer=True), c.number("height", 1, limit, integer=True))
        if source is not None and source.width and source.height and \
                (box.x1 > source.width or box.y1 > source.height):
            c.fail("", f"{box.to_dict()} reaches outside the {source.width}x{source.height} source clip")
        return box


def _difference(a, b):
    return a - b if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None


def span_frames(start_s: float, end_s: float | None, fps: float) -> tuple[int, int | None]:
    """A span of a clip in seconds as subject frames at `fps`: the first (Source.first_frame) and how many
    (None: to the clip's end)."""
    first = int(round(start_s * fps))
    return first, None if end_s is None else max(1, int(round(end_s * fps)) - first)


@dataclass
class Source:
    """The clip the subject was made from (for full-frame renders and the checksum check). `path` is relative to
    the subject folder where the clip lies in it: an image sequence's working copy (`sequence` names the frames)."""
    path: str
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    duration: float | None = None
    first_frame: int = 0        # the subject's frame 0 in the clip (a trimmed subject)
    audio: str | None = None    # the recording its speech came from, where not the clip's own track
    audio_offset: float = 0.0   # ... that recording's (or the clip's own track's) second at the clip's first frame
    audio_channel: str | None = None   # the side of a two-microphone recording read alone (media.audio.CHANNELS)
    audio_track: int = 1        # which of that recording's (or the clip's) audio tracks, from 1
    audio_from_first_sample: bool = False   # ... its seconds counted from the track's first sample (a Blender
    #                                         sound strip's), not from the picture's first frame
    video_stream: int = 0       # which of the clip's video streams, from 0 (ffmpeg's 0:v:N)
    sequence: str | None = None  # the image sequence (plate.####.exr) whose working copy `path` is ...
    sequence_first: int | None = None   # ... from this frame number of it on (None: its first), as first_frame
    #                                       and audio_offset count it
    extra: dict = field(default_factory=dict)

    def clip_in(self, subject_root: Path) -> Path:
        """The clip's path, a working copy's found in the subject folder wherever that has moved."""
        return Path(subject_root) / self.path

    def to_dict(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if k != "extra" and v is not None}
        if not self.first_frame:
            data.pop("first_frame")
        if not self.audio_offset:
            data.pop("audio_offset")
        if self.audio_track == 1:
            data.pop("audio_track")
        if not self.audio_from_first_sample:
            data.pop("audio_from_first_sample")
        if not self.video_stream:
            data.pop("video_stream")
        return {**data, **self.extra}

    @classmethod
    def from_dict(cls, value, path: Path) -> "Source":
        if isinstance(value, str):
            value = {"path": value}
        c = _Checker(value, path, "source")
        sha = c.text("sha256", required=False)
        if sha is not None and (len(sha) != 64 or any(ch not in "0123456789abcdef" for ch in sha)):
            c.fail("sha256", "is not a SHA-256 hex digest")
        if (channel := c.text("audio_channel", required=False)) not in (None, "left", "right"):
            c.fail("audio_channel", f"must be left or right, not {channel!r}"[:200])
        return cls(path=c.text("path"), sha256=sha,
                   width=c.number("width", 1, MAX_SIZE * 16, required=False, integer=True),
                   height=c.number("height", 1, MAX_SIZE * 16, required=False, integer=True),
                   fps=c.number("fps", 0, 1000, required=False, low_open=True),
                   duration=c.number("duration", 0, 1e7, required=False),
                   first_frame=c.number("first_frame", 0, 1e9, required=False, integer=True, default=0),
                   audio=c.text("audio", required=False),
                   audio_offset=c.number("audio_offset", -1e7, 1e7, required=False, default=0.0),
                   audio_channel=channel, sequence=c.text("sequence", required=False),
                   sequence_first=c.number("sequence_first", 0, 2 ** 53, required=False, integer=True),
                   audio_track=c.number("audio_track", 1, 64, required=False, integer=True, default=1),
                   audio_from_first_sample=c.flag("audio_from_first_sample"),
                   video_stream=c.number("video_stream", 0, 1000, required=False, integer=True, default=0),
                   extra=c.extra(("path", "sha256", "width", "height", "fps", "duration", "first_frame", "audio",
                                  "audio_offset", "audio_channel", "sequence", "sequence_first", "audio_track",
                                  "audio_from_first_sample", "video_stream")))


@dataclass
class Split:
    """Frames [test_start, test_end) are held out; the others in [train_start, train_end) train; `excluded`
    are in neither. The held-out stretch is the clip's end, or inside the training range where the end of an
    edited clip is a shot too short to train on, or holds too little to score: silence, a still jaw, no blink
    (engine.preprocess.shots.held_out_stretch)."""
    train: tuple[int, int]
    test: tuple[int, int]
    excluded: list[int] = field(default_factory=list)

    def frames(self, name: str) -> np.ndarray:
        """Frame indices of 'train' or 'test', without the excluded frames."""
        start, end = getattr(self, name)
        frames = np.arange(start, end, dtype=np.int64)
        if name == "train":
            frames = frames[(frames < self.test[0]) | (frames >= self.test[1])]
        return frames[~np.isin(frames, self.excluded)]

    def to_dict(self) -> dict:
        return {"train": list(self.train), "test": list(self.test), "excluded": list(self.excluded)}

    @classmethod
    def from_dict(cls, value, path: Path, frames: int) -> "Split":
        c = _Checker(value, path, "split")
        ranges = []
        for name in ("train", "test"):
            pair = c.data.get(name)
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                      for v in pair)):
                c.fail(name, f"must be two whole numbers [start, end], not {str(pair)[:80]}")
            if not 0 <= pair[0] <= pair[1] <= frames:
                c.fail(name, f"is {pair}, outside the subject's {frames} frames")
            ranges.append((pair[0], pair[1]))
        excluded = c.listing("excluded")
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < frames for v in excluded):
            c.fail("excluded", f"must list frame numbers 0..{frames - 1}")
        return cls(ranges[0], ranges[1], sorted(set(excluded)))


@dataclass
class HeadRecord:
    """The trained talking head (engine.nerf)."""
    weights: str
    config: str
    preset: str
    audio_encoder: str
    stages: list[str]
    heldout_psnr: float | None = None
    train_seconds: float | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "extra"} | self.extra

    @classmethod
    def from_dict(cls, value, path: Path) -> "HeadRecord":
        c = _Checker(value, path, "models.head")
        stages = c.listing("stages", required=True)
        if not all(isinstance(s, str) for s in stages):
            c.fail("stages", "must list stage names")
        return cls(_model_file(c, "weights"), _model_file(c, "config"), c.text("preset"), c.text("audio_encoder"),
                   stages, c.number("heldout_psnr", -1e3, 1e3, required=False),
                   c.number("train_seconds", 0, 1e9, required=False),
                   c.extra(("weights", "config", "preset", "audio_encoder", "stages", "heldout_psnr", "train_seconds")))


@dataclass
class ExpressionRecord:
    """The subject's speech -> blendshapes model (engine.expression)."""
    file: str
    encoder: str
    window: int
    ridge: float
    train_frames: int
    test_frames: int
    metrics: dict = field(default_factory=dict)
    seconds: float | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "extra"} | self.extra

    @classmethod
    def from_dict(cls, value, path: Path) -> "ExpressionRecord":
        c = _Checker(value, path, "models.expression")
        metrics = c.data.get("metrics") or {}
        if not isinstance(metrics, dict):
            c.fail("metrics", "must be an object")
        return cls(_model_file(c, "file"), c.text("encoder"), c.number("window", 1, 1000, integer=True),
                   c.number("ridge", 0, 1e12), c.number("train_frames", 0, 1e9, integer=True),
                   c.number("test_frames", 0, 1e9, integer=True), metrics,
                   c.number("seconds", 0, 1e9, required=False),
                   c.extra(("file", "encoder", "window", "ridge", "train_frames", "test_frames", "metrics", "seconds")))


MODEL_RECORDS = {"head": HeadRecord, "expression": ExpressionRecord}


def _model_file(c: _Checker, name: str) -> str:
    """A model file named relative to the subject, inside its model folder (never elsewhere on disk)."""
    value = c.text(name)
    parts = Path(value).parts
    if len(parts) != 2 or parts[0] != "model" or Path(value).is_absolute() or ".." in parts:
        c.fail(name, f"must name a file in the subject's model folder (model/NAME), not {value[:100]!r}")
    return value


@dataclass
class SubjectMeta:
    """The whole of subject.json."""
    fps: float
    frames: int
    size: int
    split: Split
    crop_box: CropBox | None = None
    source: Source | None = None
    intrinsics: dict | None = None      # fx, fy, cx, cy in crop pixels
    gaps: list = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stabilizer: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)   # kind -> HeadRecord | ExpressionRecord (a dict for other kinds)
    version: int = VERSION
    extra: dict = field(default_factory=dict)
    # First frame of each shot of an edited clip (engine.preprocess.shots); subjects made before: one shot.
    shots: list[int] = field(default_factory=lambda: [0])

    def to_dict(self) -> dict:
        data = {"format": FORMAT, "version": self.version, "fps": self.fps, "frames": self.frames, "size": self.size,
                "crop_box": self.crop_box.to_dict() if self.crop_box else None,
                "source": self.source.to_dict() if self.source else None,
                "intrinsics": self.intrinsics, "split": self.split.to_dict(), "gaps": self.gaps,
                "warnings": self.warnings, "stabilizer": self.stabilizer, "shots": self.shots,
                "models": {kind: record.to_dict() if hasattr(record, "to_dict") else record
                           for kind, record in self.models.items()}}
        return {**{k: v for k, v in data.items() if v is not None}, **self.extra}

    @classmethod
    def from_dict(cls, value, path: Path, frames_on_disk: int | None = None) -> "SubjectMeta":
        """`frames_on_disk`: the frames the subject's tracks hold, which `frames` must equal."""
        c = _Checker(value, path)
        if c.data.get("format") != FORMAT:
            raise EngineError(f"{path} is not a SyncTalk subject", REPROCESS, path=str(path))
        version = c.number("version", 0, 1e6, integer=True, required=False, default=0)
        if version > VERSION:
            raise EngineError(f"{path} was written by a newer version (format {version})", "update the extension",
                              path=str(path))
        fps = c.number("fps", 0, MAX_FPS, low_open=True)
        frames = c.number("frames", 1, 1e8, integer=True)
        if frames_on_disk is not None and frames != frames_on_disk:
            c.fail("frames", f"is {frames}, but the subject's tracks hold {frames_on_disk} frames")
        size = c.number("size", 16, MAX_SIZE, integer=True)
        source = Source.from_dict(c.data["source"], path) if c.data.get("source") is not None else None
        box = CropBox.from_dict(c.data["crop_box"], path, source) if c.data.get("crop_box") is not None else None
        intrinsics = None
        if c.data.get("intrinsics") is not None:
            k = c.sub("intrinsics")
            intrinsics = {name: k.number(name, 1e-3 if name.startswith("f") else -1e6, 1e6) for name in ("fx", "fy", "cx", "cy")}
        warnings = c.listing("warnings")
        if not all(isinstance(w, str) for w in warnings):
            c.fail("warnings", "must list texts")
        stabilizer = c.data.get("stabilizer") or {}
        if not isinstance(stabilizer, dict):
            c.fail("stabilizer", "must be an object")
        models = {}
        for kind, record in (c.sub("models").data if c.data.get("models") else {}).items():
            # A kind this version does not know is kept as it is, for the version that wrote it.
            models[kind] = MODEL_RECORDS[kind].from_dict(record, path) if kind in MODEL_RECORDS else record
        shots = c.listing("shots") or [0]
        if not (all(isinstance(f, int) and 0 <= f < frames for f in shots) and shots[0] == 0
                and all(a < b for a, b in zip(shots, shots[1:]))):
            c.fail("shots", f"must list increasing first frames of shots, from 0, below {frames}")
        known = ("format", "version", "fps", "frames", "size", "crop_box", "source", "intrinsics", "split",
                 "gaps", "warnings", "stabilizer", "models", "shots")
        return cls(fps, frames, size, Split.from_dict(c.sub("split").data, path, frames), box, source, intrinsics,
                   c.listing("gaps"), warnings, stabilizer, models, VERSION, c.extra(known), shots)
