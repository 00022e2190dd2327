"""Audio in (every format an animator has), the three encoders, frame alignment and voice activity."""
import shutil
import subprocess

import numpy as np
import pytest
import torch

from conftest import shared_file
from engine.audio.ave import AudioBranch, AveEncoder, map_original_keys
from engine.audio.features import frame_count, get_encoder, resample, windows
from engine.audio.vad import voice_activity
from engine.errors import EngineError
from engine.media.audio import load_audio, open_audio, write_wav
from engine.media.ffmpeg import ffmpeg_exe

AUDIO = ("de_9s_24bit_extensible.wav", "en_60s.wav", "en_6s_noisy_cafeteria.wav", "fr_12s_48k_stereo.wav", "zh_8s.wav")


def _ffmpeg(*args):
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def speech_2s(tmp_path_factory):
    """2 s of real stereo 48 kHz speech, the source every format below is made from."""
    path = tmp_path_factory.mktemp("audio") / "source.wav"
    _ffmpeg("-i", str(shared_file("audio", "fr_12s_48k_stereo.wav")), "-ss", "3", "-t", "2", str(path))
    return path


@pytest.mark.parametrize("name", AUDIO)
def test_shared_audio_files_load_as_16k_mono(name):
    samples = load_audio(shared_file("audio", name))
    assert samples.ndim == 1 and samples.dtype == np.float32 and len(samples) > 16000 * 5
    assert 0.01 < np.abs(samples).max() < 2


@pytest.mark.parametrize("name,args", [
    ("u8.wav", ["-c:a", "pcm_u8"]), ("s16.wav", ["-c:a", "pcm_s16le"]), ("s24.wav", ["-c:a", "pcm_s24le"]),
    ("s32.wav", ["-c:a", "pcm_s32le"]), ("f32.wav", ["-c:a", "pcm_f32le"]), ("f64.wav", ["-c:a", "pcm_f64le"]),
    ("x.flac", []), ("x.ogg", ["-c:a", "libopus"]), ("x.mp3", ["-c:a", "libmp3lame"]), ("x.m4a", ["-c:a", "aac"]),
    ("x.aac", ["-c:a", "aac"]), ("mono22k.wav", ["-ac", "1", "-ar", "22050"]), ("six.wav", ["-ac", "6"]),
])
def test_every_audio_format_gives_the_same_signal(speech_2s, tmp_path, name, args):
    reference = load_audio(speech_2s)
    path = tmp_path / name
    _ffmpeg("-i", str(speech_2s), *args, str(path))
    samples = load_audio(path)
    assert abs(len(samples) - len(reference)) < 1600  # codecs pad a little
    n = min(len(samples), len(reference))
    level = np.sqrt(np.mean(samples[:n] ** 2)) / np.sqrt(np.mean(reference[:n] ** 2))
    assert 0.8 < level < 1.25, f"{name}: level {level:.2f} of the wav's"


@pytest.mark.parametrize("container", ["mp4", "mov", "mkv"])
def test_audio_track_of_a_video(speech_2s, tmp_path, container):
    path = tmp_path / f"clip.{container}"
    _ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=64x64:d=2", "-i", str(speech_2s), "-c:v", "libx264",
            "-c:a", "aac", "-shortest", str(path))
    samples, reference = load_audio(path), load_audio(speech_2s)
    n = min(len(samples), len(reference))
    assert n > 1.5 * 16000
    assert np.corrcoef(samples[:n], reference[:n])[0, 1] > 0.9


def _delay(samples: np.ndarray, reference: np.ndarray) -> float:
    """Seconds by which `reference` lies later in `samples` (negative: earlier), by cross-correlation."""
    size = 1 << int(np.ceil(np.log2(len(samples) + len(reference))))
    correlation = np.fft.irfft(np.fft.rfft(samples, size) * np.conj(np.fft.rfft(reference, size)), size)
    lag = int(np.argmax(correlation))
    return (lag if lag < size // 2 else lag - size) / 16000


@pytest.mark.parametrize("late,seconds,container", [("audio", 0.5, "mp4"), ("video", 0.3, "mp4"), ("audio", 0.3, "m2ts")])
def test_a_clips_sound_lines_up_with_its_first_frame_where_the_streams_start_apart(tmp_path, late, seconds,
                                                                                   container):
    """Camera files and broadcast captures often stamp their sound to start after the picture or before it; a
    player keeps each where it is stamped (an AVCHD camcorder's .m2ts too: an MPEG transport stream, whose
    sound's delay ffmpeg drops when it decodes the sound alone). The sound read from the clip starts at its
    first frame's time:
    padded with silence where the sound starts later, cut where the picture does; and frame 0 is the picture's
    first, read whole or from a later frame on (a whole read was padded with copies of it, `seconds` of them)."""
    from engine.media.ffmpeg import probe
    from engine.media.video import read_frames
    clip, shifted = tmp_path / "clip.mp4", tmp_path / f"{late}_late.{container}"
    _ffmpeg("-ss", "4", "-i", str(shared_file("video", "lieu_60s.mp4")), "-t", "4", "-c:v", "libx264", "-c:a", "aac",
            str(clip))
    offset = ["-itsoffset", str(seconds)]
    # the picture from the first input, the sound from the second, the later one stamped `seconds` later
    inputs = (["-i", str(clip), *offset, "-i", str(clip)] if late == "audio" else
              [*offset, "-i", str(clip), "-i", str(clip)])
    _ffmpeg(*inputs, "-map", "0:v", "-map", "1:a", "-c", "copy", str(shifted))
    assert probe(shifted).video_lead == (seconds if late == "video" else 0.0)
    original, moved = load_audio(clip), load_audio(shifted)
    lag = int(seconds * 16000) * (1 if late == "audio" else -1)   # where the clip's sound lies in the moved one
    n = 16000 * 3
    if lag > 0:
        assert np.abs(moved[:lag - 800]).max() < 1e-4            # silence until the sound starts
        aligned = np.corrcoef(moved[lag:lag + n], original[:n])[0, 1]
    else:
        aligned = np.corrcoef(moved[:n], original[-lag:-lag + n])[0, 1]
    assert aligned > 0.99
    # As a Blender sound strip plays the file (tests/test_blender_operators.py holds the engine to Blender's
    # mixdown): from the track's first sample, `seconds` later or earlier than the first picture's time; within
    # the AAC encoder's priming (1024 samples at 48 kHz), which the remux keeps and Blender plays too.
    own = open_audio(shifted, from_first_sample=True).read()
    assert abs(_delay(own, original)) <= 0.022 and abs(abs(_delay(moved, original)) - seconds) <= 0.022
    frames, moved_frames = list(read_frames(clip, 25.0)), list(read_frames(shifted, 25.0))
    assert len(moved_frames) == len(frames)
    assert all(np.array_equal(moved_frames[k], frames[k]) for k in (0, 5, 30))
    assert np.array_equal(next(read_frames(shifted, 25.0, first=5, count=1)), frames[5])


def test_a_channel_with_inverted_polarity_does_not_cancel_the_voice(speech_2s, tmp_path):
    """Stereo whose right channel is the left one inverted (a miswired cable): the mean of the two is silence,
    so the loudest channel is read alone; ordinary stereo is still their mean."""
    inverted = tmp_path / "inverted.wav"
    _ffmpeg("-i", str(speech_2s), "-af", "pan=stereo|c0=c0|c1=-1*c0", str(inverted))
    left = tmp_path / "left.wav"
    _ffmpeg("-i", str(speech_2s), "-af", "pan=mono|c0=c0", str(left))
    samples, reference = load_audio(inverted), load_audio(left)
    assert abs(np.corrcoef(samples, reference)[0, 1]) > 0.99
    assert 0.9 < np.sqrt(np.mean(samples ** 2)) / np.sqrt(np.mean(reference ** 2)) < 1.1
    right = tmp_path / "right.wav"
    _ffmpeg("-i", str(speech_2s), "-af", "pan=mono|c0=c1", str(right))
    np.testing.assert_allclose(load_audio(speech_2s), (reference + load_audio(right)) / 2, atol=1e-4)


@pytest.mark.parametrize("name,args", [("film.wav", []), ("film.flac", []), ("film.ogg", ["-c:a", "libvorbis"]),
                                       ("film.mkv", ["-c:a", "ac3", "-b:a", "448k"])])
def test_a_surround_mix_is_read_from_its_dialogue_channel(speech_2s, tmp_path, name, args):
    """A film's 5.1 mix: the dialogue in the centre channel, another voice and noise (music and effects) in
    the five others. The mixdown is the centre alone, whatever order the format keeps its channels in (Vorbis
    stores the centre second, wav and FLAC third); a surround file with a silent centre is the mean as before."""
    dialogue, scene = tmp_path / "dialogue.wav", tmp_path / "scene.wav"
    _ffmpeg("-i", str(speech_2s), "-ac", "1", str(dialogue))
    _ffmpeg("-ss", "1", "-i", str(shared_file("audio", "zh_8s.wav")), "-t", "2", "-ac", "1", "-ar", "48000",
            "-af", "volume=0.7", str(scene))
    film = tmp_path / name
    _ffmpeg("-i", str(dialogue), "-i", str(scene), "-filter_complex",
            "[1]asplit=5[l][r][lfe][ls][rs];[l]volume=0.9[l2];[r]volume=-0.8[r2];"
            "[0][l2][r2][lfe][ls][rs]join=inputs=6:channel_layout=5.1:map=1.0-FL|2.0-FR|0.0-FC|3.0-LFE|4.0-BL|5.0-BR",
            *args, str(film))
    samples, reference, other = load_audio(film), load_audio(dialogue), load_audio(scene)
    n = min(len(samples), len(reference), len(other))
    assert np.corrcoef(samples[:n], reference[:n])[0, 1] > 0.95
    assert abs(np.corrcoef(samples[:n], other[:n])[0, 1]) < 0.2
    no_centre = tmp_path / f"no_centre{film.suffix}"
    _ffmpeg("-i", str(film), "-af", "pan=5.1|FL=FL|FR=FR|FC=0*FC|LFE=LFE|BL=BL|BR=BR", *args, str(no_centre))
    assert abs(np.corrcoef(load_audio(no_centre)[:n], other[:n])[0, 1]) > 0.5


def test_a_dialogue_with_a_microphone_on_each_speaker_is_told_from_one_voice_on_two_sides(tmp_path):
    """Two voices taking turns, each on its own side with the other 15 dB down, are found (`two_voices`, and a
    warning that names the file and --channel where they are read together); one voice on both sides is not:
    every stereo file of ../shared, and one speaker on a lavalier and a boom (6 ms later, filtered, 8 dB down,
    over the room's noise)."""
    import soundfile
    from scipy.signal import lfilter
    from engine.media.audio import two_voices_warning
    a = load_audio(shared_file("audio", "en_60s.wav"))[16000 * 20:16000 * 32]
    b = np.resize(load_audio(shared_file("audio", "zh_8s.wav")), len(a))
    turn = (np.arange(len(a)) // (3 * 16000)) % 2 == 0
    a, b = a * turn, b * ~turn
    dialogue = tmp_path / "dialogue.wav"
    soundfile.write(str(dialogue), np.stack([a + 0.18 * b, b + 0.18 * a], 1), 16000)
    heard = open_audio(dialogue)
    assert heard.two_voices and str(dialogue) in two_voices_warning(heard) and "--channel" in two_voices_warning(heard)
    assert two_voices_warning(open_audio(dialogue, channel="left")) is None      # one side chosen: nothing to say
    voice = load_audio(shared_file("audio", "en_60s.wav"))[:16000 * 12]
    noise = np.random.default_rng(0).normal(0, 10 ** (-45 / 20), len(voice))
    boom = lfilter([0.3, 0.3], [1, -0.4], np.concatenate([np.zeros(96), voice[:-96]])) * 10 ** (-8 / 20) + noise
    lav_and_boom = tmp_path / "lav_and_boom.wav"
    soundfile.write(str(lav_and_boom), np.stack([voice, boom], 1), 16000)
    one_side, one_side_and_noise = tmp_path / "one_side.wav", tmp_path / "one_side_and_noise.wav"
    soundfile.write(str(one_side), np.stack([a + b, np.zeros_like(a)], 1), 16000)   # a camera's second input off
    soundfile.write(str(one_side_and_noise), np.stack([a + b, noise[:len(a)] * 10 ** (-35 / 20)], 1), 16000)
    for path in (lav_and_boom, one_side, one_side_and_noise, shared_file("audio", "fr_12s_48k_stereo.wav"),
                 shared_file("video", "lieu_60s.mp4"), shared_file("corpus", "humanomni_zh_speaker_zh_16s_HumanOmni.mp4")):
        assert not open_audio(path).two_voices, path


def test_a_camera_clip_whose_first_audio_track_is_silent_names_the_track_to_read(speech_2s, tmp_path):
    """A camera's clip with two audio tracks, the first silent (its input was off) and the speech on the second:
    players, Blender and the engine play the first, so the error says so and names the track to read; read
    (`--audio-track 2`), it is the speech, and the features cache keeps it apart from the first."""
    from engine.audio.features import SpeechFeatures
    clip = tmp_path / "camera.mov"
    _ffmpeg("-f", "lavfi", "-i", "anullsrc=r=48000:cl=mono", "-i", str(speech_2s), "-map", "0:a", "-map", "1:a",
            "-t", "2", "-c:a", "pcm_s16le", str(clip))
    with pytest.raises(EngineError, match="its first audio track is silent \\(it has 2") as error:
        open_audio(clip)
    assert "--audio-track 2" in error.value.hint and str(clip) in str(error.value)
    second, speech = open_audio(clip, track=2).read(), load_audio(speech_2s)
    assert abs(len(second) - len(speech)) <= 16 and np.corrcoef(second[:len(speech)], speech[:len(second)])[0, 1] > 0.99
    features = SpeechFeatures(clip, tmp_path / "cache", track=2)
    assert features.per_frame(get_encoder("mel"), 25).std() > 0
    assert [p.name.endswith("-track2.safetensors") for p in (tmp_path / "cache").iterdir()] == [True]
    with pytest.raises(EngineError, match="has 2 audio tracks, so no track 3") as error:
        open_audio(clip, track=3)
    assert "from 1 to 2" in error.value.hint
    with pytest.raises(EngineError, match="has 1 audio track, so no track 2"):   # a wav, read by libsndfile at 1
        open_audio(speech_2s, track=2)
    silent = tmp_path / "silent.wav"
    _ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "1", str(silent))
    with pytest.raises(EngineError, match="the audio is silent"):   # one track: the message as before
        open_audio(silent)


def test_a_span_of_a_recording_streams_exactly_its_samples():
    """A line of a long recording (Audio to Rig on a trimmed strip) is read from the file as it streams."""
    path = shared_file("audio", "fr_12s_48k_stereo.wav")   # 48 kHz: the span's samples come through the resampler
    whole = load_audio(path)
    span = open_audio(path).span(3.25, 7.5)
    assert len(span) == int(4.25 * 16000) and span.path is None   # no feature cache keyed by the whole file
    np.testing.assert_array_equal(span.read(), whole[52000:120000])
    np.testing.assert_array_equal(np.concatenate(list(span.chunks())), whole[52000:120000])
    np.testing.assert_array_equal(span.read(16000, 16100), whole[68000:68100])
    assert len(open_audio(path).span(10.0, 99.0)) == len(whole) - 160000   # a handle past the end: to the end
    # a line cut at frame edges of a 29.97-fps edit (frames 0-50) ends on the sample nearest its last edge,
    # a third of a sample short of it: it still covers its 50 frames
    from engine.audio.features import SpeechFeatures
    fps = 30 / 1.001
    assert SpeechFeatures(open_audio(path).span(0.0, 50 / fps)).n_frames(fps) == 50
    for start, end, words in ((13.0, None, "not inside the audio"), (5.0, 5.0, "not inside the audio"),
                              (-1.0, 3.0, "not inside the audio"), (4.0, 4.05, "less than 0.1 s")):
        with pytest.raises(EngineError, match=words) as error:
            open_audio(path).span(start, end)
        assert str(path) in str(error.value)


def test_bad_inputs_get_clear_errors(speech_2s, tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all")
    silent = write_wav(tmp_path / "silent.wav", np.zeros(32000, np.float32))
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(speech_2s.read_bytes()[: speech_2s.stat().st_size // 2])
    no_audio = tmp_path / "picture.mp4"
    _ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=64x64:d=1", "-c:v", "libx264", str(no_audio))
    folder = tmp_path / "takes.wav"   # a folder named like a file: the recordings are inside it
    folder.mkdir()
    cases = {empty: "empty", text: "not a readable", silent: "silent", truncated: "truncated",
             no_audio: "no audio track", tmp_path / "missing.wav": "not found", folder: "is a folder"}
    for path, words in cases.items():
        with pytest.raises(EngineError) as info:
            load_audio(path)
        assert words in info.value.message and str(path) in info.value.message


@pytest.mark.slow
def test_whisper_encoder_windows_and_trims_padding():
    encoder = get_encoder("whisper")
    speech = load_audio(shared_file("audio", "en_60s.wav"))
    short = encoder.encode(speech[: 16000 * 3])
    assert short.shape == (150, 512) and np.isfinite(short).all()
    long = encoder.encode(speech[: 16000 * 33])  # two 30 s windows, the second mostly padding
    assert long.shape == (1650, 512)
    # The second window's features are speech, not the flat features of padding.
    assert long[1500:].std(0).mean() > 0.5 * long[:1500].std(0).mean()


@pytest.mark.slow
def test_whisper_mid_is_whispers_encoder_run_in_torch():
    """All six layers in torch (from model.bin's float16 weights) give what CTranslate2 gives (int8), so
    the reader and the layers are right; `whisper-mid` stops after the third."""
    from engine.audio.whisper import ENCODER_LAYERS, WhisperLayerEncoder
    speech = load_audio(shared_file("audio", "zh_8s.wav"))
    reference = get_encoder("whisper").encode(speech)
    whole = WhisperLayerEncoder(layers=ENCODER_LAYERS).encode(speech)
    assert whole.shape == reference.shape
    assert np.corrcoef(whole.ravel(), reference.ravel())[0, 1] > 0.99
    mid = get_encoder("whisper-mid").encode(speech)
    assert mid.shape == reference.shape and np.isfinite(mid).all()
    assert abs(np.corrcoef(mid.ravel(), reference.ravel())[0, 1]) < 0.9  # another layer's features


def test_a_damaged_ctranslate2_file_is_refused_with_its_name(tmp_path):
    from engine.audio.ct2_weights import read_tensors
    from engine.models import find_model
    with open(find_model("whisper-base") / "model.bin", "rb") as f:
        head = f.read(300_000)  # the header and the first tensors, cut inside one
    damaged = tmp_path / "model.bin"
    damaged.write_bytes(head)
    with pytest.raises(EngineError) as info:
        read_tensors(damaged, "encoder/")
    assert str(damaged) in info.value.message and "CTranslate2" in info.value.message
    foreign = tmp_path / "foreign.bin"
    foreign.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(EngineError):
        read_tensors(foreign, "encoder/")


def test_mel_encoder_and_alignment_to_any_fps():
    encoder = get_encoder("mel")
    features = encoder.encode(load_audio(shared_file("audio", "zh_8s.wav")))
    assert features.shape[1] == 80 and abs(len(features) - 8 * encoder.rate) <= 2
    for fps in (25, 24, 30, 29.97):
        per_frame = resample(features, encoder.rate, fps)
        assert len(per_frame) == frame_count(len(features), fps, encoder.rate)
        assert windows(per_frame, 8).shape == (len(per_frame), 8, 80)


def test_ave_loads_the_original_checkpoint_format(tmp_path):
    """The original ships a torch state dict of its audio branch with `N.conv_block.0|1.*` keys."""
    torch.manual_seed(0)
    branch = AudioBranch().eval()
    original = {}
    for key, value in branch.state_dict().items():
        _, index, part, rest = key.split(".", 3)
        original[f"{index}.conv_block.{0 if part == 'conv' else 1}.{rest}"] = value
    path = tmp_path / "audio_visual_encoder.pth"
    torch.save(original, path)
    assert set(map_original_keys(original)) == set(branch.state_dict())
    encoder = AveEncoder.load(path)
    speech = load_audio(shared_file("audio", "zh_8s.wav"))[: 16000 * 2]
    features = encoder.encode(speech)
    assert features.shape == (50, 512)
    with torch.inference_mode():
        from engine.audio.ave import mel_windows
        direct = branch(torch.from_numpy(mel_windows(get_encoder("mel").encode(speech), np.array([0.5 / 25]))))
    np.testing.assert_allclose(features[0], direct[0].numpy(), rtol=1e-4, atol=1e-5)


def test_ave_without_weights_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNCTALK_MODELS", str(tmp_path))
    monkeypatch.setenv("SYNCTALK_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SYNCTALK_AVE", raising=False)
    with pytest.raises(EngineError) as info:
        get_encoder("ave")
    assert "train-ave" in info.value.hint


def test_voice_activity_finds_pauses():
    speech = load_audio(shared_file("audio", "en_60s.wav"))[16000 * 10: 16000 * 14]
    gap = np.zeros(16000, np.float32) + 1e-4 * np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    audio = np.concatenate([speech, gap, speech])
    activity = voice_activity(audio, 25)
    assert len(activity) == 225
    assert activity[108:122].max() < 0.1  # inside the inserted second of silence (after the 0.2 s hangover)
    assert activity[:100].mean() > 0.7 and activity[130:].mean() > 0.7


def test_relative_names_ffmpeg_would_read_as_something_else_are_files(speech_2s, tmp_path, monkeypatch):
    """Relative names that ffmpeg reads as an option ('-x.m4a', an output folder '-takes'), a protocol
    ('take1:a.m4a') or standard input ('-'; libsndfile too) are the files they name."""
    from engine.media.ffmpeg import probe
    from engine.media.video import VideoWriter, read_frames
    monkeypatch.chdir(tmp_path)
    reference = load_audio(speech_2s)
    shutil.copy(speech_2s, tmp_path / "-")
    _ffmpeg("-i", str(speech_2s), "-c:a", "aac", str(tmp_path / "take1:a.m4a"))
    for name in ("-", "take1:a.m4a"):
        heard = load_audio(name)
        n = min(len(heard), len(reference))
        assert np.corrcoef(heard[:n], reference[:n])[0, 1] > 0.99, name
    for out in ("-takes/line.mp4", "c:d.mp4"):
        with VideoWriter(out, 32, 32, 25, audio="take1:a.m4a") as writer:
            for k in range(10):
                writer.write(np.full((32, 32, 3), 20 * k, np.uint8))
        assert probe(out).has_audio and sum(1 for _ in read_frames(out, 25)) == 10
