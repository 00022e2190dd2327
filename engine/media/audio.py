"""One loader for every audio input: any container, codec, sample rate or channel count -> mono float32.

soundfile (libsndfile) reads wav in all its forms (8/16/24/32-bit integer, float, WAVE_FORMAT_EXTENSIBLE,
which Python's `wave` rejects), flac, ogg and mp3; anything else (m4a, aac, the audio track of
mp4/mov/mkv/webm) is decoded by ffmpeg to a temporary float wav with its channels kept, so that both
paths mix channels down the same way (their mean; ffmpeg's own downmix is 3 dB louder).
A wav whose header promises more audio than the file holds is reported as truncated.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..errors import EngineError
from ..files import atomic_output
from .ffmpeg import probe, run_ffmpeg

SAMPLE_RATE = 16000
_SILENCE_RMS = 1e-4  # below this the whole file is treated as silent (about -80 dBFS)


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE, allow_silent: bool = False) -> np.ndarray:
    """Mono float32 samples (full scale 1.0) at `sample_rate`; raises EngineError on bad input."""
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"{path}: file not found", "check the path", path=str(path))
    if path.stat().st_size == 0:
        raise EngineError(f"{path}: the file is empty", "export the audio again", path=str(path))
    samples, rate = _read_soundfile(path)
    if samples is None:
        samples, rate = _read_ffmpeg(path)
    else:
        _check_wav_complete(path, rate, samples.shape[1] if samples.ndim == 2 else 1)
    if samples.ndim == 2:
        samples = _downmix(samples)
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


def _downmix(channels: np.ndarray) -> np.ndarray:
    """Mean of the channels that carry sound: an empty surround channel must not dilute the speech."""
    energy = np.mean(channels.astype(np.float64) ** 2, axis=0)
    active = energy > 1e-3 * energy.max() if energy.max() > 0 else np.ones(len(energy), bool)
    return channels[:, active].mean(axis=1)


def _read_soundfile(path: Path):
    import soundfile
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=False)
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        return None, None
    return data, rate


def _read_ffmpeg(path: Path):
    info = probe(path)
    if not info.has_audio:
        raise EngineError(f"{path}: has no audio track",
                          "pick a file with sound, or add the speech as a separate audio file", path=str(path))
    with tempfile.TemporaryDirectory(prefix="synctalk-audio-") as folder:
        decoded = Path(folder) / "decoded.wav"
        run_ffmpeg(["-i", str(path), "-map", "0:a:0", "-vn", "-c:a", "pcm_f32le", str(decoded)],
                   "decode the audio", path)
        samples, rate = _read_soundfile(decoded)
    if samples is None or samples.size == 0:
        raise EngineError(f"{path}: the audio track decodes to nothing (truncated file?)",
                          "export the audio again", path=str(path))
    return samples, rate


def _check_wav_complete(path: Path, rate: int, channels: int) -> None:
    """A RIFF/WAVE file whose data chunk is cut short: a copy or export that did not finish."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return
    offset = 12
    while offset + 8 <= len(head):
        chunk, size = head[offset:offset + 4], int.from_bytes(head[offset + 4:offset + 8], "little")
        if chunk == b"data":
            present = path.stat().st_size - (offset + 8)
            # 0 and 0xFFFFFFFF are written by streaming encoders that could not seek back: no promise to check.
            if 0 < size < 0xFFFFFFFF and present < size:
                bytes_per_second = _block_align(head, channels) * rate
                raise EngineError(
                    f"{path}: the file is truncated: its header promises {size / bytes_per_second:.2f} s of audio "
                    f"but it holds {present / bytes_per_second:.2f} s",
                    "copy or export the file again", path=str(path))
            return
        offset += 8 + size + (size & 1)


def _block_align(head: bytes, channels: int) -> int:
    """Bytes per sample frame, from the fmt chunk (16-bit if it cannot be found)."""
    at = head.find(b"fmt ")
    return max(1, int.from_bytes(head[at + 20:at + 22], "little") if at >= 0 else 2 * channels)


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """16-bit PCM wav, written to a temporary name and renamed, so it is never half-written."""
    import soundfile
    path = Path(path)
    with atomic_output(path) as tmp:
        soundfile.write(str(tmp), np.clip(samples, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return path
