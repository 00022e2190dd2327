"""A trained head's configuration (SUBJECT/model/head.json), typed and checked when read.

`HeadConfig` says what the head's modules are and how to render them: everything `HeadModel` is
built from, fixed when training starts and never changed after. `TrainingRecord` says how far its
training went (stages, held-out figures, time); head.json holds both, one flat JSON object:

    audio_encoder        per-frame audio features the head listens to ('mel', 'whisper', 'ave')
    audio_dim            width of one frame's feature
    audio_window         frames of features around a video frame that make its audio code
    expression           the blendshape set: 'upper' (SyncTalk's 7 brow and blink curves) or 'all'
    expression_indices   ARKit indices of that set, in the order the field reads them
    encoding             the tri-plane hash grid (levels, features, base/finest resolution, log2 table size)
    grid_resolution      cells a side of the occupancy grid over the head's box
    box_lo, box_hi       the head's box (decimetres, MediaPipe's canonical head frame)
    samples              stratified candidates a ray (before the occupancy grid drops empty ones)
    size                 the NeRF's working resolution in pixels (Preset.max_size; the subject may be larger)
    intrinsics           the camera at that size (fx, fy, cx, cy)
    n_latents            per-frame latent codes, one a training frame
    train_frames         the subject's frame index of each latent row
    reference_pose       the mean training pose (4x4 camera-to-world) the torso is conditioned relative to
    preset               the training preset's name
    audio_supervision    ARKit indices of the mouth curves read out of the audio code (absent before it existed)
    use_tcnn             whether tiny-cuda-nn's grid trained it; the weights are saved in one layout either
                         way (encoding.py), so only a checkpoint's optimizer state depends on it
    stages_done, metrics, train_seconds    the TrainingRecord

A file with a key this version does not know, or without one it needs, is refused with an EngineError
naming the file: a head is rendered exactly as it was trained, or not at all.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import EngineError

RETRAIN = "train the subject again (python -m engine train SUBJECT)"
BOX_LO, BOX_HI = (-1.3, -1.5, -1.3), (1.3, 1.6, 1.0)  # the head's box: decimetres, MediaPipe's canonical head frame


@dataclass(frozen=True)
class EncodingConfig:
    """The tri-plane hash grid (encoding.TriPlaneEncoding's arguments)."""
    levels: int = 12
    features: int = 1
    base_resolution: int = 64
    finest_resolution: int = 512
    log2_table: int = 14


@dataclass(frozen=True)
class HeadConfig:
    """What a head is made of; the module docstring describes each field."""
    audio_encoder: str
    audio_dim: int
    audio_window: int
    expression: str
    expression_indices: tuple[int, ...]
    encoding: EncodingConfig
    grid_resolution: int
    box_lo: tuple[float, float, float]
    box_hi: tuple[float, float, float]
    samples: int
    size: int
    intrinsics: dict[str, float]
    n_latents: int
    train_frames: tuple[int, ...]
    reference_pose: tuple[tuple[float, ...], ...]
    preset: str
    audio_supervision: tuple[int, ...] = ()
    use_tcnn: bool = False

    def to_dict(self) -> dict:
        """The JSON object (lists for tuples), keys in head.json's order."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data, path: Path) -> "HeadConfig":
        """The config of `data` (a head.json object or a checkpoint's config), checked; EngineError names `path`."""
        values = _known(data, path, {f.name for f in fields(cls)})
        read = _Reader(values, path)
        encoding = read.get("encoding", dict)
        try:
            encoding = EncodingConfig(**{k: int(v) for k, v in encoding.items()})
        except (TypeError, ValueError):
            read.fail("encoding", f"must hold whole numbers {', '.join(f.name for f in fields(EncodingConfig))}")
        return cls(
            audio_encoder=read.get("audio_encoder", str), audio_dim=read.get("audio_dim", int),
            audio_window=read.get("audio_window", int), expression=read.get("expression", str),
            expression_indices=read.numbers("expression_indices", int), encoding=encoding,
            grid_resolution=read.get("grid_resolution", int), box_lo=read.numbers("box_lo", float, 3),
            box_hi=read.numbers("box_hi", float, 3), samples=read.get("samples", int), size=read.get("size", int),
            intrinsics=read.intrinsics(),
            n_latents=read.get("n_latents", int), train_frames=read.numbers("train_frames", int),
            reference_pose=read.matrix("reference_pose"),
            preset=read.get("preset", str),
            audio_supervision=read.numbers("audio_supervision", int, default=()),
            use_tcnn=read.get("use_tcnn", bool, default=False))


@dataclass(frozen=True)
class TrainingRecord:
    """How far a saved head was trained: its stages, held-out figures and NeRF training time."""
    stages_done: tuple[str, ...] = ()
    metrics: dict = field(default_factory=dict)
    train_seconds: float = 0.0


def read_head_json(path: Path) -> tuple[HeadConfig, TrainingRecord]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise EngineError(f"{path}: unreadable head configuration ({exc})", RETRAIN, path=str(path)) from exc
    return parse_head(data, path)


def parse_head(data, path: Path) -> tuple[HeadConfig, TrainingRecord]:
    """head.json's object -> its config and training record (a checkpoint's config may carry the record too)."""
    record_keys = {f.name for f in fields(TrainingRecord)}
    _known(data, path, {f.name for f in fields(HeadConfig)} | record_keys)
    config = HeadConfig.from_dict({k: v for k, v in data.items() if k not in record_keys}, path)
    read = _Reader(data, path)
    return config, TrainingRecord(read.numbers("stages_done", str, default=()),
                                  dict(read.get("metrics", dict, default={})),
                                  float(read.get("train_seconds", (int, float), default=0.0)))


def write_head_json(path: Path, config: HeadConfig, record: TrainingRecord) -> None:
    from ..files import atomic_write_json
    atomic_write_json(path, {**config.to_dict(), "stages_done": list(record.stages_done),
                             "metrics": record.metrics, "train_seconds": record.train_seconds})


def _known(data, path: Path, names: set[str]) -> dict:
    if not isinstance(data, dict):
        raise EngineError(f"{path}: the head configuration must be a JSON object", RETRAIN, path=str(path))
    unknown = sorted(set(data) - names)
    if unknown:
        raise EngineError(f"{path}: unknown head configuration key(s) {', '.join(unknown)}",
                          "it was written by another version of the engine: use that version, or " + RETRAIN,
                          path=str(path))
    return data


class _Reader:
    """Typed reads of one head configuration object; each failure is one EngineError naming the file and key."""

    def __init__(self, data: dict, path: Path):
        self.data, self.path = data, path

    def fail(self, key: str, problem: str):
        raise EngineError(f"{self.path}: head configuration key '{key}' {problem}", RETRAIN, path=str(self.path))

    def get(self, key: str, kind, default=None):
        if key not in self.data:
            if default is None:
                self.fail(key, "is missing")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            self.fail(key, f"must be {' or '.join(k.__name__ for k in kinds)}, not {type(value).__name__}")
        return value

    def intrinsics(self) -> dict[str, float]:
        values = self.get("intrinsics", dict)
        if not {"fx", "fy", "cx", "cy"} <= set(values) or any(
                not isinstance(v, (int, float)) or isinstance(v, bool) for v in values.values()):
            self.fail("intrinsics", "must give the numbers fx, fy, cx and cy")
        return {k: float(v) for k, v in values.items()}

    def matrix(self, key: str) -> tuple[tuple[float, ...], ...]:
        rows = self.get(key, list)
        if len(rows) != 4 or any(not isinstance(row, list) or len(row) != 4 or any(
                not isinstance(v, (int, float)) or isinstance(v, bool) for v in row) for row in rows):
            self.fail(key, "must be a 4x4 matrix of numbers")
        return tuple(tuple(float(v) for v in row) for row in rows)

    def numbers(self, key: str, kind, length: int | None = None, default=None) -> tuple:
        """A list of `kind` values (whole numbers count as floats) -> a tuple of them."""
        values = self.get(key, list, default=None if default is None else list(default))
        accepted = (int, float) if kind is float else kind
        if any(not isinstance(v, accepted) or isinstance(v, bool) for v in values) or (length and len(values) != length):
            self.fail(key, f"must be a list of {length or 'any number of'} {kind.__name__} values")
        return tuple(kind(v) for v in values)
