"""Voice activity from the audio itself: where someone speaks, per video frame, in [0, 1].

Energy in the speech band (300-3400 Hz) against the file's own noise floor and speech level, so it
adapts to quiet and noisy recordings alike. A continuous sound without pauses is speech only above an
absolute level (room tone, hiss or a file of low noise is silence); in a recording with pauses the
least that can be speech follows its loudest part down (a recording made at low gain, its speech
at -60 dBFS, is still speech), to a floor. Hysteresis and a short hangover keep word gaps and trailing
consonants inside speech, and a small ramp makes the gate open and close smoothly.
"""
from __future__ import annotations

import numpy as np

from ..media.audio import SAMPLE_RATE
from .spectrum import fft_frequencies, stft

_HOP = 160          # 10 ms analysis frames
_FFT = 512
_OPEN = 0.2         # fraction of the way from noise floor to speech level (in dB) that opens the gate
_CLOSE = 0.1        # ... and that closes it again (low: quiet speech is still speech)
_HANGOVER_S = 0.2   # speech continues this long after the energy drops (trailing consonants)
_MIN_PAUSE_S = 0.3  # shorter drops are gaps between words, not pauses
_QUIETEST_SPEECH_DBFS = -50.0  # a continuous sound below this (speech-band RMS) is not speech: room tone is about -60
# In a recording with pauses, what lies this far below its loudest speech (97th percentile) is not speech; at
# ordinary levels (-10 to -20 dBFS) the absolute level above decides. 36 let a clip's silent tail open the gate
# (humanomni_zh's: noise bursts 9 dB over its floor, 36 dB under its loudest part); speech 40 dB too quiet
# still reads as at its level with 30 (jawOpen r 0.98).
_BELOW_LOUDEST_DB = 30.0
_NOISE_FLOOR_DBFS = -80.0      # nothing quieter is speech (a 16-bit file's dither lies at -96)
# speech_band_db of a band-limited signal of RMS 1: one-sided sum of |STFT|^2 = FFT size * sum(window^2) / 2
_FULL_SCALE_DB = 10 * np.log10(_FFT * (0.375 * _FFT) / 2)


class SpeechBandEnergy:
    """Speech-band energy in dB, 100 values per second, as a feature stream (engine.audio.features
    computes it a block at a time, so any length fits in memory)."""

    name = key = "speech-band-energy"
    dim = 1
    rate = SAMPLE_RATE / _HOP
    block = 30 * SAMPLE_RATE
    context = 2 * _HOP  # the 512-sample FFT window, centred

    def encode(self, samples: np.ndarray) -> np.ndarray:
        spec = np.abs(stft(samples, _FFT, _HOP)) ** 2
        freqs = fft_frequencies(SAMPLE_RATE, _FFT)
        band = (freqs >= 300) & (freqs <= 3400)
        return (10 * np.log10(spec[band].sum(axis=0) + 1e-10))[:, None].astype(np.float32)

    def n_features(self, n_samples: int) -> int:
        return n_samples // _HOP + 1


def voice_activity(speech, fps: float, n_frames: int | None = None) -> np.ndarray:
    """(n_frames,) float32 in [0, 1]: 1 where there is speech at that video frame, 0 in pauses.

    speech: a SpeechFeatures, or 16 kHz samples."""
    from .features import as_speech
    speech = as_speech(speech)
    meter = SpeechBandEnergy()
    energy = speech.encoded(meter, 0, meter.n_features(len(speech)))[:, 0].astype(np.float64)
    floor, level = np.percentile(energy, 10), np.percentile(energy, 97)
    if level - floor < 6:  # no dynamics at all: one continuous sound, speech if loud enough, else room tone
        active = energy > _FULL_SCALE_DB + _QUIETEST_SPEECH_DBFS
    else:
        quietest = _FULL_SCALE_DB + max(_NOISE_FLOOR_DBFS,
                                        min(_QUIETEST_SPEECH_DBFS, level - _FULL_SCALE_DB - _BELOW_LOUDEST_DB))
        open_at = max(floor + _OPEN * (level - floor), quietest)
        close_at = max(floor + _CLOSE * (level - floor), quietest)
        active = np.zeros(len(energy), bool)
        on = False
        for i, e in enumerate(energy):  # hysteresis: open above open_at, close below close_at
            on = e > open_at if not on else e > close_at
            active[i] = on
        active = _fill_short_runs(active, value=False, max_len=int(_MIN_PAUSE_S * 100))
        active = _extend(active, int(_HANGOVER_S * 100))
    if n_frames is None:
        n_frames = speech.n_frames(fps)
    # Fraction of each video frame's span that is speech, then a 3-frame ramp for smooth opening.
    edges = np.round(np.arange(n_frames + 1) / fps * 100).astype(np.int64)
    cumulative = np.concatenate([[0], np.cumsum(active)])
    edges = np.clip(edges, 0, len(active))
    span = np.maximum(edges[1:] - edges[:-1], 1)
    per_frame = (cumulative[edges[1:]] - cumulative[edges[:-1]]) / span
    return np.convolve(np.pad(per_frame, 1, mode="edge"), np.ones(3) / 3, mode="valid").astype(np.float32)


def _fill_short_runs(mask: np.ndarray, value: bool, max_len: int) -> np.ndarray:
    """Runs of `value` no longer than max_len that sit between two runs of the other value are flipped."""
    out = mask.copy()
    change = np.flatnonzero(np.diff(mask.astype(np.int8))) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(mask)]])
    for s, e in zip(starts, ends):
        if mask[s] == value and e - s <= max_len and s > 0 and e < len(mask):
            out[s:e] = not value
    return out


def _extend(mask: np.ndarray, frames: int) -> np.ndarray:
    """Each active run continues `frames` longer."""
    out = mask.copy()
    for shift in range(1, frames + 1):
        out[shift:] |= mask[:-shift]
    return out


def pause_cuts(activity: np.ndarray, min_pause_frames: int) -> list[int]:
    """Frames at which to cut a recording into lines: the middle of each pause of `min_pause_frames` or more
    that lies between two stretches of speech (`activity` from voice_activity; silence before the first word
    and after the last stays with its line)."""
    spoken = activity > 0.5
    cuts = []
    change = np.flatnonzero(np.diff(spoken.astype(np.int8))) + 1
    starts, ends = np.concatenate([[0], change]), np.concatenate([change, [len(spoken)]])
    for s, e in zip(starts, ends):
        if not spoken[s] and s > 0 and e < len(spoken) and e - s >= min_pause_frames:
            cuts.append(int((s + e) // 2))
    return cuts
