"""The subject folder, version 1.

    subject.json          format name and version, fps, crop size, crop box in the source clip,
                          intrinsics, source checksum, split, gaps, warnings, which models exist
    audio.wav             the clip's speech, 16 kHz mono
    tracks.safetensors    per-frame arrays (N = frames):
                            landmarks       (N, 478, 3) float32, x and y in crop pixels
                            blendshapes     (N, 52) float32, ARKit order, smoothed
                            blendshapes_raw (N, 52) float32, as MediaPipe gave them
                            face_transform  (N, 4, 4) float32, MediaPipe's canonical face (cm) -> camera
                            pose_raw        (N, 4, 4) float32, camera-to-world from face_transform alone
                            pose            (N, 4, 4) float32, camera-to-world after the Head-Sync stabilizer
                            valid           (N,) uint8: 1 face seen, 2 interpolated over a short gap, 0 excluded
      Poses use the OpenGL/NeRF convention (camera looks down -z, +y up); the world is the head's
      canonical frame in decimetres (MediaPipe's centimetres / 10), so the head fits in about [-1, 1]^3.
    frames/NNNNNN.png     the crop, RGB
    parsing/NNNNNN.png    labels: 0 background, 1 head (face and hair), 2 neck, 3 torso
    facemask/NNNNNN.png   the soft face-only paste-back mask, 0..255
    torso/NNNNNN.png      the frame with the head replaced by background and the neck gap filled
    background.png        the background plate
    preview.png           the contact sheet for a person to check the subject
    model/                written by training (safetensors weights + config json)
    cache/                derived data kept between runs (audio features), safe to delete

Every write is atomic: a whole subject is built in a sibling temporary folder and renamed into
place; later single-file writes (model, subject.json) go to a temporary name and are renamed.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import EngineError

FORMAT = "synctalk-subject"
VERSION = 1
LABEL_BACKGROUND, LABEL_HEAD, LABEL_NECK, LABEL_TORSO = 0, 1, 2, 3


def frame_name(index: int) -> str:
    return f"{index:06d}.png"


def atomic_write_json(path: str | Path, data: dict) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(data, indent=2, default=_jsonable))
    os.replace(tmp, path)


def atomic_write_tensors(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict | None = None) -> None:
    from safetensors.numpy import save_file
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp),
              metadata={k: str(v) for k, v in (metadata or {}).items()})
    os.replace(tmp, path)


def _jsonable(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")


class SubjectWriter:
    """Builds a subject in a temporary sibling folder; `commit()` swaps it into place.

    If the process dies before commit, the destination is untouched (an older subject stays
    whole) and the leftover temporary folder is removed by the next run.
    """

    def __init__(self, destination: str | Path):
        self.destination = Path(destination).resolve()
        self.destination.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.destination.parent.glob(f".{self.destination.name}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
        self.root = Path(tempfile.mkdtemp(prefix=f".{self.destination.name}.partial-",
                                          dir=self.destination.parent))
        for sub in ("frames", "parsing", "facemask", "torso"):
            (self.root / sub).mkdir()

    def commit(self) -> Path:
        if self.destination.exists():
            if not (self.destination / "subject.json").is_file() and any(self.destination.iterdir()):
                self.abort()
                raise EngineError(f"{self.destination} exists and is not a subject folder",
                                  "choose an empty or new output folder", path=str(self.destination))
            old = self.destination.with_name(f".{self.destination.name}.partial-old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.destination, old)
            os.replace(self.root, self.destination)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.root, self.destination)
        return self.destination

    def abort(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()


class Subject:
    """Read access to a subject folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta_path = self.root / "subject.json"
        if not meta_path.is_file():
            raise EngineError(f"{self.root} is not a subject folder (no subject.json)",
                              "run `python -m engine preprocess CLIP -o FOLDER` first", path=str(self.root))
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT:
            raise EngineError(f"{meta_path} is not a SyncTalk subject", "preprocess the clip again",
                              path=str(meta_path))
        if self.meta.get("version", 0) > VERSION:
            raise EngineError(f"{meta_path} was written by a newer version (format {self.meta['version']})",
                              "update the extension", path=str(meta_path))
        self._tracks = None

    # Shape of the data
    @property
    def n_frames(self) -> int:
        return int(self.meta["frames"])

    @property
    def fps(self) -> float:
        return float(self.meta["fps"])

    @property
    def size(self) -> int:
        return int(self.meta["size"])

    @property
    def intrinsics(self) -> dict:
        return self.meta["intrinsics"]

    @property
    def audio_path(self) -> Path:
        return self.root / "audio.wav"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def cache_dir(self) -> Path:
        """Derived data kept between runs (audio features keyed by the audio's checksum); safe to delete."""
        return self.root / "cache"

    def split(self, name: str) -> np.ndarray:
        """Frame indices of 'train' or 'test', without the excluded frames."""
        start, end = self.meta["split"][name]
        excluded = set(self.meta["split"].get("excluded", []))
        return np.array([i for i in range(start, end) if i not in excluded], np.int64)

    # Per-frame data
    @property
    def tracks(self) -> dict[str, np.ndarray]:
        if self._tracks is None:
            from safetensors.numpy import load_file
            self._tracks = load_file(str(self.root / "tracks.safetensors"))
        return self._tracks

    def _image(self, folder: str, index: int, flags: int) -> np.ndarray:
        import cv2
        path = self.root / folder / frame_name(index)
        image = cv2.imread(str(path), flags)
        if image is None:
            raise EngineError(f"{path}: missing or unreadable", "preprocess the clip again", path=str(path))
        return image

    def frame(self, index: int) -> np.ndarray:
        import cv2
        return self._image("frames", index, cv2.IMREAD_COLOR)[..., ::-1].copy()

    def torso(self, index: int) -> np.ndarray:
        import cv2
        return self._image("torso", index, cv2.IMREAD_COLOR)[..., ::-1].copy()

    def parsing(self, index: int) -> np.ndarray:
        import cv2
        return self._image("parsing", index, cv2.IMREAD_GRAYSCALE)

    def face_mask(self, index: int) -> np.ndarray:
        import cv2
        return self._image("facemask", index, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0

    def background(self) -> np.ndarray:
        import cv2
        path = self.root / "background.png"
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise EngineError(f"{path}: missing", "preprocess the clip again", path=str(path))
        return image[..., ::-1].copy()

    def update_meta(self, **changes) -> None:
        """Merge `changes` into subject.json (atomically)."""
        self.meta.update(changes)
        atomic_write_json(self.root / "subject.json", self.meta)
