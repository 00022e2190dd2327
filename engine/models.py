"""Finding the pretrained model files: a setting, an environment variable, the cache, a download.

Order: the folder passed in (the Blender preference or `--models`), then $SYNCTALK_MODELS, then the
engine's cache ($SYNCTALK_CACHE, else $XDG_CACHE_HOME/synctalk, else ~/.cache/synctalk). When none
has the file and downloads are allowed (not SYNCTALK_OFFLINE=1), it is fetched from its official
source into the cache, checked against its SHA-256, and moved into place only when it matches.
"""
from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import EngineError
from .files import atomic_output, is_disk_full


@dataclass(frozen=True)
class ModelFile:
    relpath: str  # path inside a models folder
    url: str
    sha256: str


_WHISPER = "https://huggingface.co/Systran/faster-whisper-base/resolve/main/"
MODEL_FILES = {
    "face_landmarker": [ModelFile(
        "face_landmarker.task",
        "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task",
        "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff")],
    "selfie_segmenter": [ModelFile(
        "selfie_segmenter.tflite",
        "https://storage.googleapis.com/mediapipe-models/image_segmenter/selfie_segmenter/float16/latest/selfie_segmenter.tflite",
        "191ac9529ae506ee0beefa6b2c945a172dab9d07d1e802a290a4e4038226658b")],
    "whisper-base": [
        ModelFile("whisper-base/config.json", _WHISPER + "config.json",
                  "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
        ModelFile("whisper-base/model.bin", _WHISPER + "model.bin",
                  "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"),
        ModelFile("whisper-base/tokenizer.json", _WHISPER + "tokenizer.json",
                  "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"),
        ModelFile("whisper-base/vocabulary.txt", _WHISPER + "vocabulary.txt",
                  "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"),
    ],
}


def cache_dir() -> Path:
    if os.environ.get("SYNCTALK_CACHE"):
        return Path(os.environ["SYNCTALK_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "synctalk"


def search_dirs(models_dir: str | os.PathLike | None = None) -> list[Path]:
    dirs = [Path(models_dir)] if models_dir else []
    if os.environ.get("SYNCTALK_MODELS"):
        dirs.append(Path(os.environ["SYNCTALK_MODELS"]))
    dirs.append(cache_dir() / "models")
    return dirs


def find_model(name: str, models_dir: str | os.PathLike | None = None, download: bool | None = None) -> Path:
    """Path of model `name` (a file, or a folder for whisper-base); raises EngineError if absent."""
    files = MODEL_FILES[name]
    top = Path(files[0].relpath).parts[0]
    for folder in search_dirs(models_dir):
        if all((folder / f.relpath).is_file() for f in files):
            return folder / top
    if download is None:
        download = os.environ.get("SYNCTALK_OFFLINE", "") not in ("1", "true", "yes")
    looked = ", ".join(str(d) for d in search_dirs(models_dir))
    if not download:
        raise EngineError(
            f"model '{name}' not found (looked in {looked})",
            "set SYNCTALK_MODELS (or the extension's Models folder preference) to a folder holding "
            f"{', '.join(f.relpath for f in files)}, or allow downloads (unset SYNCTALK_OFFLINE)")
    target = cache_dir() / "models"
    for f in files:
        if not (target / f.relpath).is_file():
            _download(f, target / f.relpath)
    return target / top


def _download(f: ModelFile, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with atomic_output(dest) as partial:
        try:
            with urllib.request.urlopen(f.url, timeout=60) as response, open(partial, "wb") as out:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        except OSError as exc:
            if is_disk_full(exc):
                raise
            raise EngineError(
                f"could not download {f.relpath} from {f.url}: {exc}",
                "on a machine without internet, copy the model files into a folder and set SYNCTALK_MODELS to it",
                path=str(dest)) from exc
        if digest.hexdigest() != f.sha256:
            raise EngineError(f"download of {f.relpath} has the wrong checksum ({digest.hexdigest()})",
                              "try again later; if it persists the official file has changed", path=f.url)
