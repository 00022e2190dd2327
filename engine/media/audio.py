"""One loader for every audio input: any container, codec, sample rate or channel count -> mono float32.

soundfile (libsndfile) reads wav in all its forms (8/16/24/32-bit integer, float, WAVE_FORMAT_EXTENSIBLE,
which Python's `wave` rejects), flac, ogg and mp3; anything else (m4a, aac, the audio track of
mp4/mov/mkv/webm), and every file of more than two channels, is decoded by ffmpeg into a pipe as float wav
with its channels kept, so that both paths mix channels down the same way (their mean; ffmpeg's own downmix is
3 dB louder). ffmpeg knows each format's channel order and names it in the wav's channel mask: a surround
mix (a film's 5.1 or 7.1) is read from its centre channel, where such mixes put the dialogue. A dialogue
recorded with one voice on each side (two lavalier microphones on a stereo recorder, an interview or a
podcast) is read from the side its speaker is on where `channel` names it (`CHANNELS`), its gain shared with
the other side's as an automatic dialogue mixer shares it: each microphone also hears the other voice, 10-30 dB
down, and that bleed would move this speaker's mouth while the other one talks.
A wav whose header promises more audio than the file holds is reported as truncated.

Memory stays bounded for any length (a 3-hour podcast is an ordinary input): `open_audio` reads the
file once in blocks to check it and to measure its channels, and `Audio.chunks` then streams it again,
mixed down and resampled (soxr's streaming resampler gives the same samples as its one-shot form).
`load_audio` is the whole-file form for short inputs (a subject's clip, tests).
"""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import EngineError
from ..files import atomic_output, require_input_file
from .ffmpeg import MediaInfo, ffmpeg_exe, file_argument, probe

SAMPLE_RATE = 16000
CHUNK_SECONDS = 10          # what one decoded block holds: a few MB at any rate and channel count
_SILENCE_RMS = 1e-4         # below this in every channel the file is treated as silent (about -80 dBFS)
_QUIET_CHANNEL = 1e-3       # a channel with less than this share of the loudest one's energy is left out
_CANCELLED = 0.5            # channels whose mean keeps less than this share of 1/n of their energy cancel
_DIALOGUE_CHANNEL = 0.1     # a centre channel with this share of the loudest one's energy carries the dialogue
_FRONT_CENTRE = 0x4         # the centre channel's bit in a wav's channel mask (WAVE_FORMAT_EXTENSIBLE)
CHANNELS = ("left", "right")  # a channel read alone: the first or second of a file (front left / right of surround)
_SHARE_SMOOTHING_S = 0.02   # the time constant of the channels' power in gain sharing: longer than a voice's period
# Two voices on two sides: over the 50-ms windows within 30 dB of the loudest, the left/right balance's 10th to
# 90th percentile spans this many dB or more. One voice on both sides spans 0-3.3 dB (the 42 stereo files of
# ../shared, and one actor on a lavalier and a boom); dialogues with 10-30 dB of bleed 29-59 dB.
_TWO_VOICES_DB = 12.0


class Audio:
    """A speech file opened for streaming: mono float32 at `sample_rate`, `len(audio)` samples."""

    channel: str | None = None   # the side read alone (CHANNELS), or None for the mixdown
    track = 1                    # which of the file's audio tracks, counted from 1 as players number them
    from_first_sample = False    # sample 0 is the track's first, not the sound at the picture's first frame (a
                                 # container's track, where the two can differ; open_audio)
    two_voices = False           # read as a mixdown, its sides hold different voices at different times (a dialogue)

    def __init__(self, path: Path, native_rate: int, channels: np.ndarray, n_native: int, sample_rate: int,
                 decoder, channel: str | None = None, two_voices: bool = False, track: int = 1,
                 from_first_sample: bool = False):
        self.path, self.native_rate, self.sample_rate = path, native_rate, sample_rate
        self.channel, self.two_voices, self.track = channel, two_voices, track
        self.from_first_sample = from_first_sample
        self._channels = channels          # the channels the mixdown averages (unused where a side is read)
        self._decoder = decoder            # () -> iterator of (n, all channels) float32 blocks
        self.n_samples = _resampled_length(n_native, native_rate, sample_rate)
        self._cursor, self._held, self._held_from = None, np.zeros(0, np.float32), 0  # where `read` goes on

    def __len__(self) -> int:
        return self.n_samples

    @property
    def seconds(self) -> float:
        return self.n_samples / self.sample_rate

    def chunks(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """Consecutive mono blocks covering samples [start, stop), read from the start of the file."""
        stop = self.n_samples if stop is None else min(stop, self.n_samples)
        position = 0
        for block in self._mono_blocks():
            end = position + len(block)
            if end > start and position < stop:
                yield block[max(0, start - position): stop - position]
            position = end
            if position >= stop:
                return

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Samples [start, stop) as one array, for spans that fit in memory.

        Reads go on from where the last one stopped (what it held from its start on is kept), so
        consecutive spans cost one pass over the file; a span before the last one reads from the start."""
        stop = self.n_samples if stop is None else min(stop, self.n_samples)
        if self._cursor is None or start < self._held_from:
            self._cursor, self._held, self._held_from = self._mono_blocks(), np.zeros(0, np.float32), 0
        parts = [self._held[max(0, start - self._held_from):]]
        position = self._held_from + len(self._held)  # the next sample the cursor gives
        while position < stop and (block := next(self._cursor, None)) is not None:
            if position + len(block) > start:
                parts.append(block[max(0, start - position):])
            position += len(block)
        self._held = np.concatenate(parts)
        self._held_from = position - len(self._held)
        return self._held[:stop - start]

    def span(self, start_s: float | None, end_s: float | None) -> "Audio":
        """Seconds start_s..end_s (None: from the start / to the end) as an Audio of their own, streamed from
        this one: a line of a long recording costs the line. Refuses a span outside the audio."""
        from . import checked_span
        where = self.path or "the audio"
        start, end = checked_span(where, start_s, end_s, self.seconds, "audio")
        end = self.seconds if end is None else end
        span = AudioSpan(self, int(round(start * self.sample_rate)), int(round(end * self.sample_rate)))
        if len(span) < self.sample_rate // 10:
            raise EngineError(f"{where}: the span from {start:g} s to {end:g} s holds less than 0.1 s of audio",
                              "give a longer span", path=str(where))
        return span

    def _mono_blocks(self) -> Iterator[np.ndarray]:
        """The whole file, mixed down and resampled, cut or padded to exactly n_samples."""
        import soxr
        resampler = (soxr.ResampleStream(self.native_rate, self.sample_rate, 1, dtype="float32")
                     if self.native_rate != self.sample_rate else None)
        emitted = 0
        share = _GainShare(self.native_rate, CHANNELS.index(self.channel)) if self.channel else None
        for block in self._decoder():
            mono = np.ascontiguousarray(share(block) if share else block[:, self._channels].mean(axis=1), np.float32)
            if resampler is not None:
                mono = resampler.resample_chunk(mono, last=False)
            mono = mono[:self.n_samples - emitted]
            emitted += len(mono)
            if len(mono):
                yield mono
        if resampler is not None:
            tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)[:self.n_samples - emitted]
            emitted += len(tail)
            if len(tail):
                yield tail
        if emitted < self.n_samples:  # the codec gave a few samples fewer on this pass than it counted
            yield np.zeros(self.n_samples - emitted, np.float32)


class _GainShare:
    """One side of a two-microphone dialogue, streamed block by block: its samples times the square of its share
    of the two sides' power (a gain-sharing automatic mixer's gain, squared). Where only the other speaker
    talks, this side holds their voice 10-30 dB down and gets 0.1-9 % of the power: the bleed drops another
    40-120 dB, under what the voice activity reads as speech (30 dB under the loudest); where only this speaker
    talks, the share is near 1; both at once, each about half (-12 dB: still speech). The two sides' recording
    levels must be within the microphones' separation of each other (a recorder's channels set alike): a side
    set 20 dB hotter than the other hears the other speaker's bleed louder than that speaker's own side does."""

    def __init__(self, rate: int, side: int):
        self.side, self.decay = side, float(np.exp(-1.0 / (rate * _SHARE_SMOOTHING_S)))
        self.state = np.zeros((1, 2))   # the smoothed power of both sides, carried from block to block

    def __call__(self, block: np.ndarray) -> np.ndarray:
        from scipy.signal import lfilter
        both = block[:, :2].astype(np.float64)
        power, self.state = lfilter([1 - self.decay], [1, -self.decay], both ** 2, axis=0, zi=self.state)
        share = power[:, self.side] / np.maximum(power.sum(axis=1), 1e-20)
        return both[:, self.side] * share ** 2


class SamplesAudio(Audio):
    """Samples already in memory (16 kHz mono), behind the same interface as a file."""

    def __init__(self, samples: np.ndarray, sample_rate: int = SAMPLE_RATE):
        self.path, self.native_rate, self.sample_rate = None, sample_rate, sample_rate
        self.samples = np.ascontiguousarray(samples, np.float32)
        self.n_samples = len(self.samples)

    def _mono_blocks(self) -> Iterator[np.ndarray]:
        step = CHUNK_SECONDS * self.sample_rate
        for i in range(0, max(self.n_samples, 1), step):
            yield self.samples[i:i + step]

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        return self.samples[start:stop]


class AudioSpan(Audio):
    """Samples [start, stop) of another Audio. It has no file of its own (path None), so no feature cache
    keyed by the file can hand it the features of another part."""

    def __init__(self, source: Audio, start: int, stop: int):
        self.path, self.native_rate, self.sample_rate = None, source.sample_rate, source.sample_rate
        self.channel, self.two_voices = source.channel, source.two_voices
        self._source, self._start = source, start
        self.n_samples = max(0, min(stop, len(source)) - start)
        self._cursor, self._held, self._held_from = None, np.zeros(0, np.float32), 0

    def _mono_blocks(self) -> Iterator[np.ndarray]:
        yield from self._source.chunks(self._start, self._start + self.n_samples)


def as_audio(audio) -> Audio:
    """An Audio for an Audio or for 16 kHz mono samples in memory."""
    return audio if isinstance(audio, Audio) else SamplesAudio(audio)


def _resampled_length(n: int, rate: int, sample_rate: int) -> int:
    """soxr's output length for n input samples (its streaming and one-shot forms agree)."""
    return n if rate == sample_rate else int(np.floor(n * sample_rate / rate + 0.5))


def open_audio(path: str | Path, sample_rate: int = SAMPLE_RATE, allow_silent: bool = False,
               progress=None, channel: str | None = None, track: int = 1, video_stream: int | None = None,
               from_first_sample: bool = False) -> Audio:
    """The file checked and opened for streaming; raises EngineError on bad input.

    Reads the whole file once, in blocks, for its length and its channels' loudness (a stage of
    `progress` in blocks, when given). channel: one of CHANNELS to read that side alone, None for the mixdown.
    track: which of its audio tracks, from 1 (a camera's clip or a screen recording may hold several).
    video_stream: the picture whose first frame is sample 0, where a file holds several (None: its first).
    from_first_sample: sample 0 is the track's own first sample, as a Blender sound strip plays a file (Add >
    Movie places the sound strip where the sound starts beside the picture), not the sound at the picture's
    first frame, as a player plays it (the two differ where a file's streams start apart)."""
    path = Path(path)
    if channel is not None and channel not in CHANNELS:
        raise ValueError(f"channel {channel!r} is not one of {CHANNELS}")
    require_input_file(path, "the audio")
    info, centre = (_soundfile_info(path) if track == 1 else None), None   # libsndfile reads files of one track
    if info is not None:
        _check_wav_complete(path, *info)
    if info is not None and info[1] <= 2:
        rate, channels = info
        decoder = lambda: _soundfile_blocks(path, rate)  # noqa: E731
    else:  # libsndfile does not say which channel of a surround file is which; ffmpeg's wav header does
        rate, channels, centre, media = _ffmpeg_format(path, track, video_stream)
        timeline = None if from_first_sample else (media.start, media.video_lead)
        decoder = lambda: _ffmpeg_blocks(path, timeline, track)  # noqa: E731
    gram, n_native = np.zeros((channels, channels)), 0   # the channels' energies and cross-products
    sides = []             # a stereo file's two energies per 50-ms window, read as a mixdown (for _two_voices)
    window = max(1, rate // 20)
    stage = progress.stage("reading audio") if progress is not None else None
    for block in decoder():
        block = block.astype(np.float64)
        gram += block.T @ block
        n_native += len(block)
        if channels == 2 and channel is None:
            sides.append((block[:len(block) // window * window] ** 2).reshape(-1, window, 2).mean(axis=1))
        if stage:
            stage.advance()
    if stage:
        stage.close()
    if n_native == 0:
        raise EngineError(f"{path}: the audio track decodes to nothing (truncated file?)",
                          "export the audio again", path=str(path))
    energy = np.diag(gram)
    if channel is None:
        read = _mixed_channels(gram, centre)
    elif channels < 2:
        raise EngineError(f"{path}: has one channel, so no {channel} one to read alone",
                          "read both channels (the mix), or pick the recording with one voice on each side",
                          path=str(path))
    else:
        read = np.array([CHANNELS.index(channel)])
    audio = Audio(path, rate, read, n_native, sample_rate, decoder, channel, _two_voices(sides), track,
                  from_first_sample and info is None)
    if audio.n_samples < sample_rate // 10:
        raise EngineError(f"{path}: holds less than 0.1 s of audio", "use a longer recording", path=str(path))
    if not allow_silent and float(np.sqrt(energy[read].max() / n_native)) < _SILENCE_RMS:
        if track == 1 and info is None and (tracks := probe(path).audio_tracks) > 1:
            raise EngineError(f"{path}: its first audio track is silent (it has {tracks}; players, Blender and the "
                              "engine play the first: a camera's input that was off?)",
                              "read the track with the speech (--audio-track 2; Blender's Train Subject: Track)",
                              path=str(path))
        side = f"its {channel} channel" if channel else f"its audio track {track}" if track > 1 else "the audio"
        raise EngineError(f"{path}: {side} is silent",
                          "read the other channel or both" if channel else
                          "check the recording level or pick another file", path=str(path))
    return audio


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE, allow_silent: bool = False) -> np.ndarray:
    """The whole file as mono float32 samples (full scale 1.0) at `sample_rate`: for short inputs."""
    return open_audio(path, sample_rate, allow_silent).read()


def _two_voices(sides: list) -> bool:
    """Whether a stereo file's sides are loud at different times, as where each speaker of a dialogue has a
    microphone of their own (`sides`: per-window energies of both, in blocks)."""
    if not sides:
        return False
    energy = np.concatenate(sides) + 1e-12
    peaks = 10 * np.log10(energy.max(axis=0))
    if abs(peaks[0] - peaks[1]) > 30:   # one side silent or noise (a camera's second input off): one voice
        return False
    loudness = 10 * np.log10(energy.max(axis=1))
    active = loudness > max(loudness.max() - 30, -60)
    if active.sum() < 20:   # a second of sound, or less
        return False
    p10, p90 = np.percentile(10 * np.log10(energy[active, 0] / energy[active, 1]), [10, 90])
    return p90 - p10 >= _TWO_VOICES_DB


def two_voices_warning(audio: Audio) -> str | None:
    """What to tell the user where a dialogue's two voices are read together, else None."""
    if not audio.two_voices:   # (never set where one side is read)
        return None
    return (f"{audio.path}: its two channels hold different voices at different times (a dialogue recorded with "
            "a microphone on each speaker?), read here as one voice: read one speaker's with --channel left or right "
            "(Blender: Channel)")


def _mixed_channels(gram: np.ndarray, centre: int | None = None) -> np.ndarray:
    """The channels the mixdown averages: a surround mix's centre channel alone where it carries sound (films
    and broadcasts put the dialogue there, and music and effects around it, which averaged in would move the
    mouth too); else those that carry sound (an empty surround channel must not dilute the speech), or the
    loudest alone where averaging them cancels the sound: a channel wired with its polarity inverted (a
    miswired microphone cable) makes the mean of a voice and its negative, silence. Channels that share
    nothing (two microphones' noise) average to 1/n of their energy; one that cancels, to far less."""
    energy = np.diag(gram)
    if energy.max() <= 0:
        return np.arange(len(energy))
    if centre is not None and energy[centre] >= _DIALOGUE_CHANNEL * energy.max():
        return np.array([centre])
    active = np.flatnonzero(energy > _QUIET_CHANNEL * energy.max())
    mixed = gram[np.ix_(active, active)].sum() / len(active) ** 2
    if mixed < _CANCELLED / len(active) * energy[active].mean():
        return np.array([int(np.argmax(energy))])
    return active


def _soundfile_info(path: Path):
    """(rate, channels) when libsndfile reads the file, else None."""
    import soundfile
    try:
        info = soundfile.info(file_argument(path))
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        return None
    return int(info.samplerate), int(info.channels)


def _soundfile_blocks(path: Path, rate: int) -> Iterator[np.ndarray]:
    import soundfile
    with soundfile.SoundFile(file_argument(path)) as fh:
        while len(block := fh.read(CHUNK_SECONDS * rate, dtype="float32", always_2d=True)):
            yield block


def _ffmpeg_command(path: Path, timeline: tuple[float, float] | None, track: int) -> list[str]:
    """The sound as a player plays it beside the picture, where `timeline` is (the container's first timestamp,
    the first video frame's time after it): from that first timestamp (a track that starts later is padded with
    silence), then from the first frame's time on (sample 0 is frame 0's); where `timeline` is None, from the
    track's own first sample (gaps filled either way)."""
    if timeline is None:
        return _ffmpeg_wav_command(path, [], "aresample=async=1", track)
    origin, lead = timeline
    # The timestamps as the file stamps them, counted from the container's first: ffmpeg otherwise counts an
    # MPEG-TS or program stream's track from the track's own start, and a delay before its sound (a camcorder's
    # AVCHD file) was lost.
    filters = f"asetpts=PTS-({origin!r})/TB,aresample=async=1:first_pts=0"
    if lead:
        filters += f",atrim=start={lead!r},asetpts=PTS-STARTPTS"
    return _ffmpeg_wav_command(path, ["-copyts"], filters, track)


def _ffmpeg_wav_command(path: Path, options: list[str], filters: str, track: int) -> list[str]:
    return [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", *options, "-i", file_argument(path),
            "-map", f"0:a:{track - 1}", "-vn", "-af", filters, "-c:a", "pcm_f32le", "-f", "wav", "pipe:1"]


def _ffmpeg_format(path: Path, track: int, video_stream: int | None) -> tuple[int, int, int | None, MediaInfo]:
    """(rate, channels, the centre channel's index or None) of the audio track, from the header ffmpeg writes
    for it, and what probe says of the file with video stream `video_stream` (None: its first picture)."""
    info = probe(path, video_stream)
    if not info.has_audio:
        raise EngineError(f"{path}: has no audio track",
                          "pick a file with sound, or add the speech as a separate audio file", path=str(path))
    if track > info.audio_tracks:
        raise EngineError(f"{path}: has {info.audio_tracks} audio track{'s' if info.audio_tracks > 1 else ''}, "
                          f"so no track {track}", f"pick a track from 1 to {info.audio_tracks}", path=str(path))
    with _FfmpegWav(path, None, track) as wav:
        return wav.rate, wav.channels, wav.centre, info


def _ffmpeg_blocks(path: Path, timeline: tuple[float, float] | None, track: int) -> Iterator[np.ndarray]:
    with _FfmpegWav(path, timeline, track) as wav:
        yield from wav.blocks()


class _FfmpegWav:
    """ffmpeg decoding into a pipe as a float32 wav stream (whose header gives the rate and channels)."""

    def __init__(self, path: Path, timeline: tuple[float, float] | None, track: int):
        self.path = path
        self._errors = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(_ffmpeg_command(path, timeline, track), stdout=subprocess.PIPE,
                                      stderr=self._errors)
        self.rate, self.channels, self.centre = self._read_header()

    def _read_header(self) -> tuple[int, int, int | None]:
        out = self._proc.stdout
        if out.read(12)[8:12] != b"WAVE":
            self._fail()
        fmt = None
        while True:
            head = out.read(8)
            if len(head) < 8:
                self._fail()
            kind, size = head[:4], int.from_bytes(head[4:], "little")
            if kind == b"data":
                break
            body = out.read(size + (size & 1))
            if kind == b"fmt ":
                fmt = body
        if fmt is None:
            self._fail()
        channels = int.from_bytes(fmt[2:4], "little")
        # WAVE_FORMAT_EXTENSIBLE (which ffmpeg writes for more than two channels) lists the channels present
        # in the order of their mask bits, so the centre's index is the number of bits below its own.
        mask = int.from_bytes(fmt[20:24], "little") if len(fmt) >= 24 and fmt[0:2] == b"\xfe\xff" else 0
        centre = bin(mask & (_FRONT_CENTRE - 1)).count("1") if channels > 2 and mask & _FRONT_CENTRE else None
        return int.from_bytes(fmt[4:8], "little"), channels, centre

    def blocks(self) -> Iterator[np.ndarray]:
        frame_bytes = 4 * self.channels
        size = CHUNK_SECONDS * self.rate * frame_bytes
        while data := self._proc.stdout.read(size):
            data = data[:len(data) - len(data) % frame_bytes]
            yield np.frombuffer(data, np.float32).reshape(-1, self.channels)
        if self._proc.wait() != 0:
            self._fail()

    def _fail(self):
        self._proc.kill()
        self._proc.wait()
        self._errors.seek(0)
        tail = self._errors.read().decode(errors="replace").strip().splitlines()[-1:] or ["no audio decoded"]
        raise EngineError(f"{self.path}: ffmpeg could not decode the audio: {tail[0]}",
                          "check that the file plays in a media player; re-encode it if it does not",
                          path=str(self.path))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._proc.stdout.close()
        self._errors.close()


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
