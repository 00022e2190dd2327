"""One loader for every audio input: any container, codec, sample rate or channel count -> mono float32.

soundfile (libsndfile) reads wav in all its forms (including WAVE_FORMAT_EXTENSIBLE, which Python's
`wave` rejects), flac, ogg and mp3; anything else (m4a, aac, the audio track of mp4/mov/mkv/webm)
is decoded by ffmpeg.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import EngineError
from .ffmpeg import probe, run_ffmpeg

SAMPLE_RATE = 16000
_SILENCE_RMS = 1e-4  # below this the whole file is treated as silent (about -80 dBFS)


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE, allow_silent: bool = False) -> np.ndarray:
    """Mono float32 samples in [-1, 1] at `sample_rate`; raises EngineError on bad input."""
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"{path}: file not found", "check the path", path=str(path))
    if path.stat().st_size == 0:
        raise EngineError(f"{path}: the file is empty", "export the audio again", path=str(path))
    samples, rate = _read_soundfile(path)
    if samples is None:
        samples, rate = _read_ffmpeg(path, sample_rate), sample_rate
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if rate != sample_rate:
        import soxr
        samples = soxr.resample(samples, rate, sample_rate).astype(np.float32)
    if samples.size < sample_rate // 10:
        raise EngineError(f"{path}: holds less than 0.1 s of audio", "use a longer recording", path=str(path))
    if not allow_silent and float(np.sqrt(np.mean(samples ** 2))) < _SILENCE_RMS:
        raise EngineError(f"{path}: the audio is silent", "check the recording level or pick another file",
                          path=str(path))
    return samples


def _read_soundfile(path: Path):
    import soundfile
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=False)
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        return None, None
    return data, rate


def _read_ffmpeg(path: Path, sample_rate: int) -> np.ndarray:
    info = probe(path)
    if not info.has_audio:
        raise EngineError(f"{path}: has no audio track",
                          "pick a file with sound, or add the speech as a separate audio file", path=str(path))
    raw = run_ffmpeg(["-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar", str(sample_rate),
                      "-f", "f32le", "-"], "decode the audio", path)
    samples = np.frombuffer(raw, np.float32)
    if samples.size == 0:
        raise EngineError(f"{path}: the audio track decodes to nothing (truncated file?)",
                          "export the audio again", path=str(path))
    return samples


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """16-bit PCM wav, written to a temporary name and renamed, so it is never half-written."""
    import soundfile
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    soundfile.write(str(tmp), np.clip(samples, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)
    return path
