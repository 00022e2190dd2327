"""The subject folder, version 1 (subject.json's fields: engine/subject/schema.py).

    subject.json          format name and version, fps, crop size, crop box in the source clip,
                          intrinsics, source checksum, split, gaps, warnings, the first frame of
                          each shot (an edited clip's cuts), which models exist
    audio.wav             the clip's speech, 16 kHz mono
    source.mp4            where the subject was made from an image sequence: its working copy (the clip
                          that full-frame renders paste into; media/sequence.py)
    tracks.safetensors    per-frame arrays (N = frames):
                            landmarks       (N, 478, 3) float32, x and y in crop pixels
                            blendshapes     (N, 52) float32, ARKit order, jawOpen floored by the lip gap
                                            (engine/preprocess/jaw.py), smoothed
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
    model/                written by training: head.safetensors + head.json (the talking head),
                          expression-ENCODER.safetensors (speech -> blendshapes), checkpoint.safetensors
                          while the head trains; each recorded in subject.json "models" once written
    cache/                derived data kept between runs (audio features), safe to delete

Every write is atomic: a whole subject is built in a sibling temporary folder and renamed into
place; later single-file writes (model, subject.json) go to a temporary name and are renamed.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from ..errors import EngineError
from ..files import atomic_write_image, atomic_write_json, atomic_write_tensors, partial_folder
from .schema import FORMAT, REPROCESS, VERSION, CropBox, SubjectMeta

LABEL_BACKGROUND, LABEL_HEAD, LABEL_NECK, LABEL_TORSO = 0, 1, 2, 3
IMAGE_FOLDERS = ("frames", "parsing", "facemask", "torso")
META_FILE, TRACKS_FILE, AUDIO_FILE = "subject.json", "tracks.safetensors", "audio.wav"
SOURCE_COPY = "source.mp4"
MODEL_DIR = "model"
BACKGROUND_FILE, PREVIEW_FILE, CACHE_DIR = "background.png", "preview.png", "cache"
# What the folder holds of its own; anything else in it is the user's (Blender's renders/, say): preprocessing
# again keeps it, and a render never writes into the folder's own entries.
OWN_ENTRIES = (*IMAGE_FOLDERS, META_FILE, TRACKS_FILE, AUDIO_FILE, SOURCE_COPY, MODEL_DIR, BACKGROUND_FILE,
               PREVIEW_FILE, CACHE_DIR)
HEAD_WEIGHTS, HEAD_CONFIG, CHECKPOINT = "head.safetensors", "head.json", "checkpoint.safetensors"

__all__ = ["FORMAT", "VERSION", "CropBox", "Subject", "SubjectMeta", "SubjectWriter", "expression_file", "frame_name"]


def frame_name(index: int) -> str:
    return f"{index:06d}.png"


def expression_file(encoder: str) -> str:
    """One expression model per audio encoder, so a subject can hold several side by side."""
    return f"expression-{encoder}.safetensors"


def read_meta(root: Path) -> SubjectMeta:
    """subject.json, checked (its frame count against the tracks' too)."""
    path = root / META_FILE
    if not path.is_file():
        raise EngineError(f"{root} is not a subject folder (no {META_FILE})",
                          "run `python -m engine preprocess CLIP -o FOLDER` first", path=str(root))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineError(f"{path}: not valid JSON ({exc})", f"undo the hand edit, or {REPROCESS}",
                          path=str(path)) from exc
    return SubjectMeta.from_dict(data, path, tracked_frames(root))


def tracked_frames(root: Path) -> int | None:
    """Frames in tracks.safetensors, from its header alone (None when it holds no per-frame array)."""
    from safetensors import safe_open
    path = root / TRACKS_FILE
    if not path.is_file():
        raise EngineError(f"{path}: missing", REPROCESS, path=str(path))
    try:
        with safe_open(str(path), "numpy") as f:
            shapes = [f.get_slice(k).get_shape() for k in f.keys()]
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise EngineError(f"{path}: unreadable ({exc})", REPROCESS, path=str(path)) from exc
    return shapes[0][0] if shapes and shapes[0] else None


class SubjectWriter:
    """Builds a subject in a temporary sibling folder; `commit()` swaps it into place.

    If the process dies before commit, the destination is untouched (an older subject stays
    whole) and the leftover temporary folder is removed by the next run (which holds the
    subject's lock, so no other writer's folder is removed).
    """

    def __init__(self, destination: str | Path):
        self.destination = Path(destination).resolve()
        self.destination.parent.mkdir(parents=True, exist_ok=True)
        self.root = partial_folder(self.destination)
        # This subject's own, by their name's start (no glob: a name may hold [] or *, which matched other
        # subjects' folders); the subject's lock is held, so no other writer of it is running.
        ours = self.root.name[:self.root.name.index(".partial-") + len(".partial-")]
        for stale in self.destination.parent.iterdir():
            if stale.name.startswith(ours) and stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        # not mkdtemp, whose folder is its owner's alone: this one becomes the subject, which colleagues open too
        self.root.mkdir()
        for sub in IMAGE_FOLDERS:
            (self.root / sub).mkdir()

    def image_path(self, folder: str, index: int) -> Path:
        return self.root / folder / frame_name(index)

    def write_image(self, folder: str, index: int, image_bgr: np.ndarray, params: list | None = None) -> None:
        atomic_write_image(self.image_path(folder, index), image_bgr, params)

    def write_tracks(self, tracks: dict[str, np.ndarray]) -> None:
        atomic_write_tensors(self.root / TRACKS_FILE, tracks)

    def write_meta(self, meta: SubjectMeta) -> None:
        atomic_write_json(self.root / META_FILE, meta.to_dict())

    @property
    def audio_path(self) -> Path:
        return self.root / AUDIO_FILE

    def commit(self) -> Path:
        """Check what was written reads back as a subject, then swap it into place."""
        Subject(self.root)
        if self.destination.exists():
            if not (self.destination / META_FILE).is_file() and any(self.destination.iterdir()):
                self.abort()
                raise EngineError(f"{self.destination} exists and is not a subject folder",
                                  "choose an empty or new output folder", path=str(self.destination))
            old = self.destination.with_name(f".{self.destination.name}.partial-old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.destination, old)
            os.replace(self.root, self.destination)
            for entry in old.iterdir():   # the user's files beside the subject's own stay where they were
                if entry.name not in OWN_ENTRIES:
                    os.replace(entry, self.destination / entry.name)
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
    """A subject folder: its checked subject.json (`meta`), its files, and its trained models."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.meta = read_meta(self.root)
        self._tracks = None

    # Shape of the data
    @property
    def n_frames(self) -> int:
        return self.meta.frames

    @property
    def fps(self) -> float:
        return self.meta.fps

    @property
    def size(self) -> int:
        return self.meta.size

    @property
    def intrinsics(self) -> dict:
        if self.meta.intrinsics is None:
            raise EngineError(f"{self.root / META_FILE}: field 'intrinsics' is missing", REPROCESS,
                              path=str(self.root / META_FILE))
        return self.meta.intrinsics

    def holds(self, path: str | Path) -> bool:
        """Whether `path` is the folder itself, one of its own entries (OWN_ENTRIES) or lies in one."""
        try:
            relative = Path(path).resolve().relative_to(self.root.resolve())
        except ValueError:
            return False
        return not relative.parts or relative.parts[0] in OWN_ENTRIES

    @property
    def cache_dir(self) -> Path:
        """Derived data kept between runs (audio features keyed by the audio's checksum); safe to delete."""
        return self.root / CACHE_DIR

    def split(self, name: str) -> np.ndarray:
        """Frame indices of 'train' or 'test', without the excluded frames."""
        return self.meta.split.frames(name)

    def shot_of(self, frames) -> np.ndarray:
        """Which shot of the clip each of `frames` lies in (0 for a clip of one shot)."""
        return np.searchsorted(np.asarray(self.meta.shots), np.asarray(frames), side="right") - 1

    # Files
    @property
    def audio_path(self) -> Path:
        return self.root / AUDIO_FILE

    @property
    def model_dir(self) -> Path:
        return self.root / MODEL_DIR

    @property
    def head_weights_path(self) -> Path:
        return self.model_dir / HEAD_WEIGHTS

    @property
    def head_config_path(self) -> Path:
        return self.model_dir / HEAD_CONFIG

    @property
    def checkpoint_path(self) -> Path:
        return self.model_dir / CHECKPOINT

    def expression_model_path(self, encoder: str) -> Path:
        return self.model_dir / expression_file(encoder)

    def relative(self, path: Path) -> str:
        """How subject.json names a file of the subject (model/NAME)."""
        return Path(path).relative_to(self.root).as_posix()

    # Trained models
    def model(self, kind: str):
        """The record of the trained model `kind` ('head', 'expression'), or None when there is none
        or its files are gone (a record is only as true as the files it names)."""
        record = self.meta.models.get(kind)
        if record is None or not hasattr(record, "to_dict"):
            return None
        files = [record.weights, record.config] if kind == "head" else [record.file]
        return record if all((self.root / f).is_file() for f in files) else None

    def record_model(self, kind: str, record) -> None:
        """Record a model just written. subject.json is read again first: another stage or command
        may have recorded its own model since this Subject was opened."""
        meta = read_meta(self.root)
        meta.models[kind] = record
        atomic_write_json(self.root / META_FILE, meta.to_dict())
        self.meta = meta

    # Per-frame data
    @property
    def tracks(self) -> dict[str, np.ndarray]:
        if self._tracks is None:
            from safetensors.numpy import load_file
            self._tracks = load_file(str(self.root / TRACKS_FILE))
        return self._tracks

    def _image(self, folder: str, index: int, flags: int) -> np.ndarray:
        import cv2
        path = self.root / folder / frame_name(index)
        image = cv2.imread(str(path), flags)
        if image is None:
            raise EngineError(f"{path}: missing or unreadable", REPROCESS, path=str(path))
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
        path = self.root / BACKGROUND_FILE
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise EngineError(f"{path}: missing", REPROCESS, path=str(path))
        return image[..., ::-1].copy()
