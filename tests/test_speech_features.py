"""Speech -> per-frame features: one entry point, exact block-wise encoding, ranges, the subject cache,
and streamed audio of any length in bounded memory."""
import subprocess

import numpy as np
import pytest

from conftest import shared_file
from engine.audio import spectrum
from engine.audio.features import MelEncoder, SpeechFeatures, frame_count, get_encoder, windows
from engine.audio.vad import SpeechBandEnergy, voice_activity
from engine.media.audio import CHUNK_SECONDS, Audio, load_audio
from engine.media.ffmpeg import ffmpeg_exe


@pytest.fixture(scope="module")
def speech():
    return load_audio(shared_file("audio", "en_60s.wav"))


class SmallBlocks(MelEncoder):
    """The mel encoder cut into 7-s blocks, so that a minute of speech crosses eight block edges."""
    block = 7 * 16000


@pytest.mark.parametrize("n_fft, hop, pad_mode", [(400, 160, "reflect"), (512, 160, "constant"), (800, 200, "constant")])
def test_stft_equals_torch_stft(speech, n_fft, hop, pad_mode):
    import torch
    clip = speech[:16000 * 3]
    ours = spectrum.stft(clip, n_fft, hop, pad_mode)
    theirs = torch.stft(torch.from_numpy(clip).double(), n_fft, hop, window=torch.hann_window(n_fft, dtype=torch.float64),
                        center=True, pad_mode=pad_mode, return_complex=True).numpy()
    assert ours.shape == theirs.shape == (n_fft // 2 + 1, 1 + len(clip) // hop)
    np.testing.assert_allclose(ours, theirs, atol=1e-4 * np.abs(theirs).max())


def test_mel_filters_follow_the_slaney_scale_with_unit_area():
    assert spectrum.hz_to_mel(1000.0) == pytest.approx(15.0)
    assert spectrum.hz_to_mel(6400.0) == pytest.approx(15.0 + 27.0)  # 27 mels per factor 6.4 above 1 kHz
    hz = np.array([0.0, 200.0, 999.0, 1000.0, 3000.0, 8000.0])
    np.testing.assert_allclose(spectrum.mel_to_hz(spectrum.hz_to_mel(hz)), hz, atol=1e-9)
    n_fft, sample_rate = 4096, 16000  # fine bins, so a sum over them measures each triangle's area
    filters = spectrum.mel_filters(sample_rate, n_fft, 40, fmin=55, fmax=7600)
    bin_hz = sample_rate / n_fft
    np.testing.assert_allclose(filters.sum(axis=1) * bin_hz, 1.0, rtol=0.05)
    peaks = spectrum.fft_frequencies(sample_rate, n_fft)[filters.argmax(axis=1)]
    centres = spectrum.mel_to_hz(np.linspace(spectrum.hz_to_mel(55), spectrum.hz_to_mel(7600), 42))[1:-1]
    np.testing.assert_allclose(peaks, centres, atol=bin_hz)


@pytest.mark.parametrize("encoder", [SmallBlocks(), SpeechBandEnergy()], ids=["mel", "speech-band"])
def test_block_by_block_encoding_equals_the_whole_file(speech, encoder):
    whole = encoder.encode(speech)
    blocked = SpeechFeatures(speech).encoded(encoder, 0, encoder.n_features(len(speech)))
    assert blocked.shape == whole.shape
    np.testing.assert_allclose(blocked, whole, atol=1e-5)


def test_whisper_windows_stand_alone(speech):
    """Each 30 s window is its own log-mel, so any stretch encodes alone as in the whole file."""
    encoder = get_encoder("whisper")
    whole = encoder.encode(speech[: 16000 * 45])
    later = SpeechFeatures(speech[: 16000 * 45]).encoded(encoder, 1600, 2250)
    np.testing.assert_allclose(later, whole[1600:2250], atol=1e-5)


def test_a_range_of_frames_equals_that_slice_of_the_whole(speech):
    encoder = SmallBlocks()
    for fps in (25, 29.97):
        n = frame_count(len(speech), fps)
        whole = SpeechFeatures(speech).windows(encoder, fps, 8)
        assert whole.shape == (n, 8, encoder.dim)
        for start, stop in ((0, 3), (400, 461), (n - 5, n)):
            piece = SpeechFeatures(speech).windows(encoder, fps, 8, start, stop)
            np.testing.assert_allclose(piece, whole[start:stop], atol=1e-5)
        # The windows are those of the per-frame features: one gathering, edges held.
        np.testing.assert_array_equal(whole, windows(SpeechFeatures(speech).per_frame(encoder, fps), 8))


def test_one_frame_count_for_every_stage(speech):
    encoder = MelEncoder()
    for fps in (23.976, 24, 25, 29.97, 30, 50, 60):
        n = frame_count(len(speech), fps)
        assert n == int(np.floor(len(speech) / 16000 * fps + 1e-6))
        assert len(SpeechFeatures(speech).per_frame(encoder, fps)) == n
        assert len(voice_activity(speech, fps)) == n


def test_subject_cache_is_keyed_by_the_audio_checksum(tmp_path, speech):
    from engine.media.audio import write_wav
    encoder = MelEncoder()
    cache = tmp_path / "cache"
    path = write_wav(tmp_path / "speech.wav", speech[: 16000 * 5])
    first = SpeechFeatures(path, cache).per_frame(encoder, 25)
    files = sorted(cache.iterdir())
    assert len(files) == 1 and "mel-25.0fps-125-" in files[0].name
    np.testing.assert_array_equal(SpeechFeatures(path, cache).per_frame(encoder, 25), first)
    # Other audio at the same path is another key: the cached features are never served for it.
    write_wav(path, speech[16000 * 10: 16000 * 15])
    other = SpeechFeatures(path, cache).per_frame(encoder, 25)
    assert len(list(cache.iterdir())) == 2 and not np.allclose(other, first)
    # A damaged cache file is recomputed.
    for file in cache.iterdir():
        file.write_bytes(b"not a tensor file")
    np.testing.assert_allclose(SpeechFeatures(path, cache).per_frame(encoder, 25), other)
    # Each side of a two-voice recording is a key of its own (Render reads one voice of a dialogue).
    import soundfile
    soundfile.write(str(path), np.stack([speech[: 16000 * 5], speech[16000 * 10: 16000 * 15]], 1), 16000)
    sides = {side: SpeechFeatures(path, cache, channel=side).per_frame(encoder, 25) for side in ("left", "right")}
    assert not np.allclose(sides["left"], sides["right"])
    for side, features in sides.items():
        np.testing.assert_array_equal(SpeechFeatures(path, cache, channel=side).per_frame(encoder, 25), features)


def _stereo_44k(tmp_path) -> np.ndarray:
    """Real speech as (n, 2) float32 at 44.1 kHz, the commonest shape of a long recording."""
    import soundfile
    path = tmp_path / "stereo.wav"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(shared_file("audio", "zh_8s.wav")), "-ar", "44100",
                    "-ac", "2", str(path)], check=True)
    return soundfile.read(str(path), dtype="float32", always_2d=True)[0]


def _looped(base: np.ndarray, seconds: float, rate: int = 44100) -> Audio:
    """Speech looped to any length, generated block by block as a decoder gives it: never held whole."""
    n = int(seconds * rate)

    def blocks():
        for start in range(0, n, CHUNK_SECONDS * rate):
            yield base[(start + np.arange(min(CHUNK_SECONDS * rate, n - start))) % len(base)]

    return Audio(None, rate, np.arange(base.shape[1]), n, 16000, blocks)


def test_streamed_audio_is_mixed_resampled_and_encoded_in_bounded_memory(tmp_path):
    """An hour of 44.1 kHz stereo speech, streamed: voice activity over all of it and the features of its
    last frames take a few MB (the whole hour would be 230 MB at 16 kHz, 1.3 GB as decoded)."""
    import tracemalloc
    base = _stereo_44k(tmp_path)
    # Streamed in blocks, mixed down and resampled, it is what the one-shot load of the same samples gives.
    minute = _looped(base, 60)
    path = tmp_path / "minute.wav"
    import soundfile
    soundfile.write(str(path), np.concatenate(list(minute._decoder())), 44100, subtype="FLOAT")
    np.testing.assert_array_equal(minute.read(), load_audio(path))
    assert max(len(b) for b in minute.chunks()) <= 1.01 * CHUNK_SECONDS * 16000  # + the resampler's delay

    hour = _looped(base, 3600)
    encoder = MelEncoder()
    n = frame_count(len(hour), 25)
    tracemalloc.start()
    try:
        activity = voice_activity(hour, 25)
        last = SpeechFeatures(hour).windows(encoder, 25, 8, n - 10, n)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(activity) == n == 90_000 and last.shape == (10, 8, encoder.dim)
    assert peak < 64 * 2 ** 20, f"peak {peak / 2 ** 20:.0f} MB"
    # They are the features of those samples: the last 20 s of the hour, encoded on their own.
    tail = SpeechFeatures(hour.read(len(hour) - 20 * 16000))
    np.testing.assert_allclose(last, tail.windows(encoder, 25, 8, 490, 500), atol=1e-5)


def test_a_dialogue_is_cut_into_lines_in_its_pauses_and_nowhere_else(tmp_path):
    """Three lines recorded one after the other with pauses of 0.8 and 1.2 s between them, and the short gaps
    of running speech inside each: `lines` cuts in the middle of each long pause only."""
    from conftest import events, run_engine
    from engine.audio.vad import pause_cuts
    from engine.media.audio import write_wav
    assert pause_cuts(np.array([0, 1, 1, 0, 0, 0, 1, 0, 1, 0, 0]), 3) == [4]   # not the lead, tail or short gap
    rate = 16000
    en = load_audio(shared_file("audio", "en_60s.wav"))
    zh = load_audio(shared_file("audio", "zh_8s.wav"))
    silence = lambda seconds: np.zeros(int(seconds * rate), np.float32)  # noqa: E731
    dialogue = write_wav(tmp_path / "dialogue.wav", np.concatenate(
        [silence(0.5), en[:3 * rate], silence(0.8), zh[:3 * rate], silence(1.2), en[10 * rate:13 * rate], silence(0.5)]))
    proc = run_engine("lines", dialogue, "--fps", "25")
    assert proc.returncode == 0, proc.stderr
    result = [e for e in events(proc) if e["event"] == "result"][0]
    assert len(result["cuts"]) == 2, result
    for cut, (start, end) in zip(result["cuts"], [(3.5, 4.3), (7.3, 8.5)]):   # each pause, in seconds
        assert start * 25 < cut < end * 25
    assert result["lines"][0][0] == 0 and result["lines"][-1][1] == result["frames"]
