"""Speech -> per-frame audio features: the encoders' one interface, and the one way to align them to frames.

An encoder turns 16 kHz mono samples into features at its own rate (`encode`). Every stage that needs
speech as video frames (the NeRF's training and rendering, the expression model, evaluation) asks a
`SpeechFeatures` for them, so there is one frame count (`frame_count`), one linear resampler
(`resample`, values sampled at each frame's centre, also used for curves), and one window gathering
(`window_positions`), whose size comes from the model's config.

Bounded memory for any length: features are encoded block by block from the audio stream (each
encoder declares its block and the context a feature depends on, so a block encoded alone gives the
same features as the whole file), only the blocks a range of frames needs are encoded, and the last
few blocks are kept for the next request. Whole-speech features are cached in the subject folder,
keyed by the audio file's checksum (and the channel read, where one is), the encoder and the frame rate.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import EngineError
from ..media.audio import SAMPLE_RATE, Audio, as_audio, open_audio, two_voices_warning
from .spectrum import mel_filters, stft

# bump when the features of an encoder change, so old caches are not read (2: a video's sound starts at its
# first frame, engine.media.audio; 3: a surround mix is read from its centre channel; 4: an MPEG transport or
# program stream's sound keeps its delay after the picture)
CACHE_VERSION = 4
CACHE_FILES = 8           # whole-speech feature files kept per subject (the oldest go first)
_KEPT_BLOCKS = 4          # encoded blocks kept for the next request (a range's neighbours, another stage)
FRAMES_AT_ONCE_SECONDS = 60  # frames interpolated per step of a long request


class AudioEncoder(Protocol):
    name: str
    key: str      # name + weights identity: what the cache is keyed by
    dim: int      # feature size
    rate: float   # features per second
    block: int    # samples encoded together, a whole number of features
    context: int  # samples each side that a block's features depend on (a whole number of features)

    def encode(self, samples: np.ndarray) -> np.ndarray:
        """(n_features(len(samples)), dim) float32 at `rate` per second, from 16 kHz mono float32 samples."""

    def n_features(self, n_samples: int) -> int:
        """How many features `encode` gives for n_samples."""


class MelEncoder:
    """The log-mel baseline, with SyncTalk's parameters (80 mels, 80 frames/s, values in [-4, 4])."""

    name = key = "mel"
    dim = 80
    rate = SAMPLE_RATE / 200
    block = 30 * SAMPLE_RATE
    context = 600  # the 800-sample FFT window (centred) and the pre-emphasis's previous sample

    def encode(self, samples: np.ndarray) -> np.ndarray:
        emphasised = np.append(samples[0], samples[1:] - 0.97 * samples[:-1])
        spec = np.abs(stft(emphasised, 800, 200))
        mel = mel_filters(SAMPLE_RATE, 800, 80, fmin=55, fmax=7600) @ spec
        db = 20 * np.log10(np.maximum(1e-5, mel)) - 20
        normalised = np.clip(8 * (db + 100) / 100 - 4, -4, 4)
        return normalised.T.astype(np.float32)

    def n_features(self, n_samples: int) -> int:
        return n_samples // 200 + 1


def encoder_names() -> list[str]:
    return list(_ENCODERS)


_LOADED: dict = {}


def get_encoder(name: str, models_dir=None) -> AudioEncoder:
    """The named encoder, loaded once per process (train's NeRF and expression stages share it)."""
    if name not in _ENCODERS:
        raise EngineError(f"unknown audio encoder '{name}'", f"choose one of {', '.join(_ENCODERS)}")
    where = (name, str(models_dir), os.environ.get("SYNCTALK_MODELS"), os.environ.get("SYNCTALK_AVE"))
    if where not in _LOADED:
        _LOADED[where] = _ENCODERS[name](models_dir)
    return _LOADED[where]


def _whisper(models_dir):
    from .whisper import WhisperEncoder
    return WhisperEncoder(models_dir)


def _whisper_mid(models_dir):
    from .whisper import WhisperLayerEncoder
    return WhisperLayerEncoder(models_dir)


def _ave(models_dir):
    from .ave import AveEncoder
    return AveEncoder.find(models_dir)


# The first is the default: chosen by scripts/bench_audio.py (held-out jawOpen correlation on lieu_60s).
_ENCODERS = {
    "whisper": _whisper,
    "whisper-mid": _whisper_mid,
    "ave": _ave,
    "mel": lambda models_dir: MelEncoder(),
}
DEFAULT_ENCODER = "whisper"


# ---------------------------------------------------------------- frames and time

def frame_count(n_samples: int, fps: float, sample_rate: int = SAMPLE_RATE) -> int:
    """Video frames covered by n_samples of speech: whole frames only, so the video never outlasts it."""
    return max(1, int(np.floor(n_samples / sample_rate * fps + 1e-6)))


def frame_positions(rate: float, fps: float, start: int, stop: int, n_values: int) -> np.ndarray:
    """Where the centres of frames start..stop-1 (at fps) fall among n_values values at `rate`
    (value i stands for the interval around its centre (i + 0.5) / rate), held at both ends."""
    if rate == fps:  # exactly the frames themselves, so that equal rates interpolate nothing
        return np.clip(np.arange(start, stop), 0, max(n_values - 1, 0)).astype(np.float64)
    centres = (np.arange(start, stop) + 0.5) / fps * rate - 0.5
    return np.clip(centres, 0, max(n_values - 1, 0))


def interpolate(values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Linear interpolation of values (T, ...) at fractional indices (any shape) -> positions.shape + (...)."""
    flat = np.asarray(positions).reshape(-1)
    low = np.floor(flat).astype(np.int64)
    high = np.minimum(low + 1, len(values) - 1)
    t = (flat - low).reshape(-1, *([1] * (values.ndim - 1))).astype(np.float32)
    out = (values[low] * (1 - t) + values[high] * t).astype(np.float32)
    return out.reshape(*np.shape(positions), *values.shape[1:])


def resample(values: np.ndarray, rate: float, fps: float, start: int = 0, stop: int | None = None) -> np.ndarray:
    """(stop - start, ...): values at `rate` per second, linearly interpolated at the centres of frames
    start..stop-1 at fps (default: all the frames they cover). Past the last value the last value is held."""
    stop = frame_count(len(values), fps, rate) if stop is None else stop
    return interpolate(values, frame_positions(rate, fps, start, stop, len(values)))


def window_positions(centres: np.ndarray, size: int, lead: int, n_frames: int) -> np.ndarray:
    """(len(centres), size) frame positions: the `size` frames around each centre (a frame position, integer or
    fractional), `lead` frames ahead, held at the edges. Integer centres give integer indices."""
    around = np.clip(np.asarray(centres)[:, None] + (np.arange(size) - size // 2)[None, :], 0, n_frames - 1)
    return np.minimum(around + lead, n_frames - 1)


def windows(per_frame: np.ndarray, size: int, lead: int = 0) -> np.ndarray:
    """(n_frames, size, dim): for each frame, the `size` frames around it (`lead` ahead), edges repeated."""
    return per_frame[window_positions(np.arange(len(per_frame)), size, lead, len(per_frame))]


# ---------------------------------------------------------------- the one entry point

class SpeechFeatures:
    """One speech (a file, or 16 kHz samples in memory) as per-frame features of any encoder at any fps.

    cache_dir: where whole-speech features are kept between runs (a subject's cache folder), or None.
    channel: for a file, the side read alone (`media.audio.CHANNELS`: one voice of a two-person recording);
    track: which of its audio tracks, from 1; from_first_sample: its second 0 at the track's first sample, as
    a Blender sound strip plays it (`media.audio.open_audio`).
    """

    def __init__(self, audio, cache_dir: Path | None = None, progress=None, channel: str | None = None,
                 track: int = 1, from_first_sample: bool = False):
        if isinstance(audio, (str, Path)):
            self.audio: Audio = open_audio(audio, progress=progress, channel=channel, track=track,
                                           from_first_sample=from_first_sample)
            if progress is not None and (warning := two_voices_warning(self.audio)):
                progress.warn(warning)
        elif channel is not None or track != 1 or from_first_sample:
            raise ValueError("a channel or track is chosen when a file is opened: open_audio(path, channel=...)")
        else:
            self.audio = as_audio(audio)
        self.cache_dir, self.progress = cache_dir, progress
        self._blocks: OrderedDict = OrderedDict()  # (encoder key, block) -> features, the last few
        self._whole: dict = {}                     # (encoder key, fps, n_frames) -> (n_frames, dim)
        self._checksum: str | None = None

    @classmethod
    def of_span(cls, path, start: float | None, end: float | None, progress=None, channel: str | None = None,
                track: int = 1, from_first_sample: bool = False) -> "SpeechFeatures":
        """A file's speech from second `start` to `end` (None: its start, its end): one line of a recording."""
        speech = cls(path, progress=progress, channel=channel, track=track, from_first_sample=from_first_sample)
        if start is None and end is None:
            return speech
        return cls(speech.audio.span(start, end), progress=progress)

    def __len__(self) -> int:
        return len(self.audio)

    def n_frames(self, fps: float) -> int:
        # to within half a sample: a line cut at a frame's edge (Blender's strip at 29.97 fps) ends on the sample
        # nearest it, which may fall short of it
        return frame_count(len(self.audio) + 0.5, fps)

    def per_frame(self, encoder: AudioEncoder, fps: float, start: int = 0, stop: int | None = None) -> np.ndarray:
        """(stop - start, dim): the features at the centres of frames start..stop-1 at fps.

        Frames past the end of the speech hold its last features. Those of the whole speech are kept for
        the next request, and in cache_dir for the next run."""
        stop = self.n_frames(fps) if stop is None else stop
        for (key, rate, n), values in self._whole.items():
            if key == encoder.key and rate == float(fps) and n >= stop:
                return values[start:stop]
        if start > 0 or stop < self.n_frames(fps):
            return self._compute(encoder, fps, start, stop)
        if self.cache_dir is not None and self.audio.path is not None:
            values = self._cached(encoder, fps, stop)
        else:
            values = self._compute(encoder, fps, 0, stop)
        self._whole[(encoder.key, float(fps), stop)] = values  # the next stage of this run reuses them
        return values

    def windows(self, encoder: AudioEncoder, fps: float, size: int, start: int = 0, stop: int | None = None,
                lead: int = 0, n_frames: int | None = None, video_fps: float | None = None) -> np.ndarray:
        """(stop - start, size, dim): windows of `size` frames at fps (the model's rate; `lead` frames ahead)
        for frames start..stop-1 of a video at video_fps (default fps), computed from only the frames they touch.

        n_frames: the frames at fps the windows are held inside (default: those the speech covers). At another
        video rate each window is centred on the frame's time and interpolated between the model's frames,
        so that it spans the same time as in training."""
        n = self.n_frames(fps) if n_frames is None else n_frames
        video_fps = fps if video_fps is None else video_fps
        stop = (n if video_fps == fps else self.n_frames(video_fps)) if stop is None else stop
        positions = window_positions(frame_positions(fps, video_fps, start, stop, n), size, lead, n)
        lo, hi = int(np.floor(positions.min())), min(int(np.floor(positions.max())) + 2, n)
        return interpolate(self.per_frame(encoder, fps, lo, hi), positions - lo)

    def _compute(self, encoder: AudioEncoder, fps: float, start: int, stop: int) -> np.ndarray:
        """Frames start..stop-1, a minute at a time: only a few encoded blocks are held at once."""
        n_values = encoder.n_features(len(self.audio))
        out = np.empty((stop - start, encoder.dim), np.float32)
        step = max(1, int(FRAMES_AT_ONCE_SECONDS * fps))
        pieces = range(start, stop, step)
        stage = (self.progress.stage(f"audio features ({encoder.name})", len(pieces))
                 if self.progress is not None and len(pieces) > 4 else None)  # long requests only, not each step
        for a in pieces:
            b = min(a + step, stop)
            positions = frame_positions(encoder.rate, fps, a, b, n_values)
            first = int(np.floor(positions.min()))
            last = min(int(np.floor(positions.max())) + 2, n_values)
            out[a - start: b - start] = interpolate(self.encoded(encoder, first, last), positions - first)
            if stage:
                stage.advance()
        if stage:
            stage.close()
        return out

    def encoded(self, encoder: AudioEncoder, first: int, stop: int) -> np.ndarray:
        """(stop - first, dim): the encoder's own features first..stop-1, from the blocks that hold them."""
        per_block = int(round(encoder.block * encoder.rate / SAMPLE_RATE))
        blocks = range(first // per_block, (stop - 1) // per_block + 1)
        stage = (self.progress.stage(f"audio features ({encoder.name})", len(blocks))
                 if self.progress is not None and len(blocks) > 4 else None)  # a long pass, not one step
        parts = []
        for b in blocks:
            key = (encoder.key, b)
            if key not in self._blocks:
                self._keep(key, self._encode_block(encoder, b, per_block))
            self._blocks.move_to_end(key)
            parts.append(self._blocks[key])
            if stage:
                stage.advance()
        if stage:
            stage.close()
        offset = blocks[0] * per_block
        return np.concatenate(parts)[first - offset: stop - offset]

    def _encode_block(self, encoder: AudioEncoder, b: int, per_block: int) -> np.ndarray:
        """Block b's features, encoded from the block and the context around it (what the whole file gives)."""
        lo = max(0, b * encoder.block - encoder.context)
        hi = min(len(self.audio), (b + 1) * encoder.block + encoder.context)
        skip = int(round((b * encoder.block - lo) * encoder.rate / SAMPLE_RATE))
        return encoder.encode(self.audio.read(lo, hi))[skip: skip + per_block]

    def _keep(self, key, features: np.ndarray) -> None:
        self._blocks[key] = features
        while len(self._blocks) > _KEPT_BLOCKS:
            self._blocks.popitem(last=False)

    def _cached(self, encoder: AudioEncoder, fps: float, stop: int) -> np.ndarray:
        from safetensors.numpy import load_file

        from ..files import sha256_of
        from ..subject.format import atomic_write_tensors
        if self._checksum is None:
            self._checksum = sha256_of(self.audio.path)
        side = f"-{self.audio.channel}" if self.audio.channel else ""   # one file, two voices
        side += f"-track{self.audio.track}" if self.audio.track > 1 else ""
        side += "-own" if self.audio.from_first_sample else ""           # from the track's own first sample
        name = (f"features-v{CACHE_VERSION}-{encoder.key}-{float(fps)!r}fps-{stop}-{self._checksum[:24]}{side}"
                ".safetensors")
        path = Path(self.cache_dir) / name
        features = None
        if path.is_file():
            try:
                features = load_file(str(path))["features"]
            except Exception:  # a damaged cache file is recomputed, never trusted
                features = None
        try:   # a cache, not a need: a subject on a read-only share, or another user's, renders all the same
            if features is None or features.shape != (stop, encoder.dim):
                features = self._compute(encoder, fps, 0, stop)
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_tensors(path, {"features": features})
                _prune(path.parent)
            else:
                os.utime(path)  # most recently used: pruned last
        except PermissionError:
            pass
        return features


def _prune(folder: Path) -> None:
    files = sorted(folder.glob("features-*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[CACHE_FILES:]:
        old.unlink(missing_ok=True)


def as_speech(speech) -> SpeechFeatures:
    """A SpeechFeatures for a SpeechFeatures, an opened Audio, a file path or 16 kHz samples."""
    return speech if isinstance(speech, SpeechFeatures) else SpeechFeatures(speech)


def subject_speech(subject, progress=None) -> SpeechFeatures:
    """The subject's own speech (SUBJECT/audio.wav), with its feature cache."""
    return SpeechFeatures(subject.audio_path, subject.cache_dir, progress)
