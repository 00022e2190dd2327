"""Training clips for the generic expression model: which clips, whose voice, and what each one teaches.

A clip gives two aligned per-frame sequences at the model's frame rate: the audio features the model
reads (engine.expression.predict.frame_inputs: encoder features + voice activity) and the 52
blendshapes MediaPipe's FaceLandmarker captures from the video (Savitzky-Golay 5/3 smoothed, as
preprocessing does). Capturing costs about as long as the clip plays, so each clip's pair is cached
once (keyed by the file's size and modification time, the encoder and the frame rate) in a cache folder.

Speakers: a folder's MANIFEST.tsv (columns `file` and `speaker`, as ../shared/data/corpus has) says who
speaks in each file; without one, every file is its own speaker. Cross-validation folds keep a
speaker's clips together.
"""
from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import EngineError

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".mpg", ".avi")
_CACHE_VERSION = 1


@dataclass
class ClipSource:
    path: Path
    speaker: str


@dataclass
class TrainingClip:
    name: str
    speaker: str
    inputs: np.ndarray       # (N, dim + 1) per-frame audio features, the last column voice activity
    blendshapes: np.ndarray  # (N, 52) captured, smoothed, ARKit order
    valid: np.ndarray        # (N,) bool: exactly one face seen
    fps: float

    @property
    def activity(self) -> np.ndarray:
        return self.inputs[:, -1]


def find_clips(paths) -> list[ClipSource]:
    """Clip files from files and folders (a folder's video files, sorted), with their speakers."""
    sources = []
    for path in map(Path, paths):
        if path.is_dir():
            speakers = _manifest_speakers(path)
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
            sources += [ClipSource(p, speakers.get(p.name, p.stem)) for p in files]
        elif path.is_file():
            sources.append(ClipSource(path, _manifest_speakers(path.parent).get(path.name, path.stem)))
        else:
            raise EngineError(f"{path}: no such clip or folder", "pass video clips or folders of them", path=str(path))
    if not sources:
        raise EngineError(f"no video clips in {', '.join(map(str, paths))}",
                          f"pass clips ({', '.join(VIDEO_SUFFIXES)}) of people speaking to camera")
    return sources


def _manifest_speakers(folder: Path) -> dict[str, str]:
    manifest = folder / "MANIFEST.tsv"
    if not manifest.is_file():
        return {}
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if rows and not {"file", "speaker"} <= set(rows[0]):
        raise EngineError(f"{manifest}: needs the columns 'file' and 'speaker'", "fix the header, or remove the file",
                          path=str(manifest))
    return {row["file"]: row["speaker"] for row in rows}


def load_clip(source: ClipSource, encoder, fps: float = 25.0, cache_dir: Path | None = None) -> TrainingClip:
    """The clip's features and captured blendshapes, from the cache when it holds them."""
    cached = _cache_path(source.path, encoder.name, fps, cache_dir) if cache_dir else None
    if cached is not None and cached.is_file():
        with np.load(cached) as data:
            return TrainingClip(source.path.stem, source.speaker, data["inputs"], data["blendshapes"],
                                data["valid"], fps)
    clip = capture_clip(source, encoder, fps)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.stem}.partial.npz")
        np.savez(tmp, inputs=clip.inputs, blendshapes=clip.blendshapes, valid=clip.valid)
        os.replace(tmp, cached)
    return clip


def capture_clip(source: ClipSource, encoder, fps: float = 25.0) -> TrainingClip:
    """Blendshapes from every frame (FaceLandmarker) and the audio features for the same frames."""
    from scipy.signal import savgol_filter
    from ..face.landmarker import FaceLandmarker
    from ..media.audio import load_audio
    from ..media.video import read_frames
    from .predict import frame_inputs
    weights, valid = [], []
    with FaceLandmarker() as landmarker:
        for k, rgb in enumerate(read_frames(source.path, fps)):
            seen = landmarker.analyse(rgb, int(round(k * 1000 / fps)))
            weights.append(seen.blendshapes)
            valid.append(seen.faces == 1)
    weights = np.array(weights, np.float32)
    if len(weights) >= 5:
        weights = np.clip(savgol_filter(weights, 5, 3, axis=0), 0, 1).astype(np.float32)
    inputs, _ = frame_inputs(load_audio(source.path), encoder, fps, len(weights))
    return TrainingClip(source.path.stem, source.speaker, inputs.astype(np.float32), weights,
                        np.array(valid, bool), fps)


def _cache_path(path: Path, encoder: str, fps: float, cache_dir: Path) -> Path:
    stat = path.stat()
    key = f"{_CACHE_VERSION}|{path.name}|{stat.st_size}|{stat.st_mtime_ns}|{encoder}|{fps}"
    return Path(cache_dir) / f"{path.stem}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz"
