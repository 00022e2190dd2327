"""The generic expression model: silence is silence, ARKit-scale output, train-generic on real clips
(scored on speakers it never heard), blinks and gaze that vary per take."""
import json
import subprocess

import numpy as np
import pytest

from conftest import shared_file
from engine.arkit import ARKIT_INDEX, MOUTH_AND_JAW
from engine.errors import EngineError
from engine.expression.animate import Animator
from engine.expression.blinks import BlinkModel, blink_curves, blink_times
from engine.expression.gaze import gaze_path
from engine.media.audio import load_audio
from engine.media.ffmpeg import ffmpeg_exe

JAW = ARKIT_INDEX["jawOpen"]
MOUTH = [ARKIT_INDEX[n] for n in MOUTH_AND_JAW]


def _noise(seconds: float, dbfs: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(int(16000 * seconds))
    return (noise / np.sqrt(np.mean(noise ** 2)) * 10 ** (dbfs / 20)).astype(np.float32)


@pytest.fixture(scope="module")
def generic():
    return Animator(generic=True)


def test_room_tone_gives_a_closed_relaxed_mouth(generic):
    curves = generic(_noise(3, -60), 25, seed=0)
    rest = generic.model.rest_pose.numpy()
    assert curves.weights[:, JAW].max() <= 0.02
    # The lips rest as the corpus' speakers' lips rest in their pauses: a little pressed, not smiling.
    for side in ("Left", "Right"):
        assert 0.02 <= rest[ARKIT_INDEX[f"mouthPress{side}"]] <= 0.2 and rest[ARKIT_INDEX[f"mouthSmile{side}"]] <= 0.05
    np.testing.assert_allclose(curves.weights[:, MOUTH], np.broadcast_to(rest[MOUTH], (len(curves), len(MOUTH))),
                               atol=0.02)
    # Speech, then the same room tone: the mouth moves, then closes once the hangover is over.
    speech = load_audio(shared_file("audio", "en_60s.wav"))[16000 * 20: 16000 * 24]
    jaw = generic(np.concatenate([speech, _noise(2, -60)]), 25, seed=0).weights[:, JAW]
    assert jaw[:100].max() > 0.3 and jaw[115:].max() <= 0.02


def test_a_recording_made_at_low_gain_still_moves_the_mouth(generic):
    """Speech recorded 40 dB too quietly (about -59 dBFS, a field recorder set for headroom) moves the mouth as
    the same speech at its level does; the room tone of the test above, as quiet, stays shut."""
    speech = load_audio(shared_file("audio", "en_60s.wav"))[16000 * 20: 16000 * 30]
    loud = generic(speech, 25, seed=0).weights[:, JAW]
    quiet = generic(speech * 10 ** (-40 / 20), 25, seed=0).weights[:, JAW]
    assert np.corrcoef(loud, quiet)[0, 1] > 0.9 and abs(quiet.mean() - loud.mean()) < 0.2 * loud.mean()


def test_generic_output_is_on_the_arkit_capture_scale(generic):
    """In speech the jaw spans what an iPhone capture of speech spans (median 0.16, 90th percentile 0.67
    in the take the model is calibrated to), not MediaPipe's few hundredths."""
    curves = generic(load_audio(shared_file("audio", "en_60s.wav")), 25, seed=0)
    jaw = curves.weights[:, JAW]
    assert 0.35 <= np.percentile(jaw, 90) <= 0.95
    assert 0.03 <= np.median(jaw) <= 0.4
    assert curves.weights[:, ARKIT_INDEX["mouthClose"]].max() > 0.1  # the lips close on some sounds
    assert curves.weights.min() >= 0 and curves.weights.max() <= 1


def test_only_the_arkit_calibrated_curves_are_reshaped_the_others_map_by_a_straight_line(generic):
    """jawOpen, mouthClose and mouthFunnel take the shape of a real ARKit capture of speech (quantile to
    quantile); the other curves, which mostly rest and peak now and then, keep their correlation with a
    straight line that gives them the capture's mean and spread (the model's knots, where not clipped)."""
    from engine.expression.generic import ARKIT_SPEECH
    knots_in, knots_out = generic.model.output_knots_in.numpy(), generic.model.output_knots_out.numpy()

    def slopes(name):
        i = ARKIT_INDEX[name]
        inside = (knots_out[i] > 1e-4) & (knots_out[i] < 1 - 1e-4)
        return np.diff(knots_out[i][inside]) / np.diff(knots_in[i][inside])
    for name in ("mouthPucker", "mouthPressLeft", "mouthUpperUpLeft", "mouthSmileRight", "mouthLowerDownLeft"):
        s = slopes(name)
        assert len(s) >= 3 and s.min() > 0 and s.max() - s.min() <= 0.05 * np.median(s), name
    for name in ARKIT_SPEECH:
        s = slopes(name)
        assert s.max() > 1.5 * s.min(), name


def test_train_generic_scores_unseen_speakers_and_animate_uses_the_model(tmp_path, capsys):
    """train-generic on six real speakers (speakers from the corpus MANIFEST), each also played slower and
    faster, speaker-disjoint folds;
    the model then follows a seventh speaker's jaw, captured from that speaker's own video (one recorded
    like four of the six: so little data does not carry over to other settings)."""
    from engine.cli import main
    from engine.expression.generic import JAW as jaw
    clips = [shared_file("corpus", f"GRID_spk{s}_en_3s_LipNet.mpg") for s in "BCDE"]
    clips += [shared_file("video", "aoc_8s.mp4"), shared_file("video", "may_5s.mp4")]
    model, cache = tmp_path / "studio.safetensors", tmp_path / "cache"
    silent_take = tmp_path / "b-roll.mp4"   # a clip without sound among the footage: skipped, and said so
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-i", str(clips[-1]), "-t", "2", "-an", str(silent_take)],
                   check=True)
    title_card = tmp_path / "title-card.mp4"   # sound, but no face: skipped, and not listed as a source
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:duration=3",
                    "-f", "lavfi", "-i", "sine=duration=3", "-shortest", str(title_card)], check=True)
    code = main(["train-generic", *map(str, clips), str(silent_take), str(title_card), "-o", str(model), "--cache",
                 str(cache), "--folds", "3", "--steps", "300", "--progress", "jsonl"])
    out = capsys.readouterr()
    assert code == 0, out.err
    result = json.loads(out.out.strip().splitlines()[-1])
    assert result["speakers"] == 6 and result["clips"] == 6
    assert [s["path"] for s in result["skipped"]] == [str(silent_take), str(title_card)]
    assert "no audio" in result["skipped"][0]["error"] and "one face in only 0%" in result["skipped"][1]["error"]
    assert "b-roll.mp4" in out.out.replace(out.out.strip().splitlines()[-1], "")   # the warning, before the result
    assert result["cross_validation"]["speakers"] == 6
    assert result["cross_validation"]["jaw_open_r_mean"] > 0.25
    # Each face captured once (reused by the next run, whatever its encoder; the title card's too, so that a
    # rerun skips it at once), the sound's features apart.
    assert len(list(cache.glob("*-face-*.npz"))) == 7
    assert len(list(cache.glob("*-whisper-base-layer3-*.npz"))) == 7 * 3  # at 1x, 0.9x and 1.1x
    code = main(["train-generic", *map(str, clips), "-o", str(model), "--cache", str(cache), "--progress", "jsonl"])
    out = capsys.readouterr()
    error = json.loads(out.out.strip().splitlines()[-1])
    assert code != 0 and error["path"] == str(model) and "--replace" in error["hint"]  # the model is kept
    from engine.expression.model import load_model
    loaded = load_model(model)
    assert loaded.config.arch == "temporal" and "research" in loaded.metadata["use"]
    assert len(json.loads(loaded.metadata["sources"])) == 6
    # An unseen speaker: the model's jawOpen against the jawOpen FaceLandmarker captures from his video.
    from engine.audio.features import get_encoder
    from engine.expression.corpus import ClipSource, load_clip
    unseen = shared_file("corpus", "GRID_spkH_en_3s_LipNet.mpg")
    held_out = load_clip(ClipSource(unseen, "GRID_spkH"), get_encoder("whisper"))
    curves = Animator(model_path=model)(load_audio(unseen), 25, seed=0)
    n = min(len(curves), len(held_out.blendshapes))
    r = np.corrcoef(curves.weights[:n, jaw], held_out.blendshapes[:n, jaw])[0, 1]
    assert r > 0.4
    code = main(["animate", str(shared_file("audio", "zh_8s.wav")), "--model", str(model), "-o",
                 str(tmp_path / "take.csv"), "--seed", "5", "--blink-rate", "30", "--progress", "jsonl"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert json.loads(out.out.strip().splitlines()[-1])["seed"] == 5


def test_a_clip_whose_face_trails_its_sound_is_lined_up_and_one_out_of_sync_is_left_out(tmp_path):
    """The sync check of train-generic on a real capture (may_5s): the clip's own captured jaw stands for a
    perfect prediction; the same face 3 frames late is found 3 frames late and shifted back; another
    person's face under that sound follows it at no lag and is left out."""
    from dataclasses import replace
    from engine.audio.features import DEFAULT_ENCODER, get_encoder
    from engine.expression.corpus import ClipSource, load_clip
    from engine.expression.generic import JAW as jaw, best_sync, shifted
    encoder = get_encoder(DEFAULT_ENCODER)
    may = load_clip(ClipSource(shared_file("video", "may_5s.mp4"), "may"), encoder, cache_dir=tmp_path)
    aoc = load_clip(ClipSource(shared_file("video", "aoc_8s.mp4"), "aoc"), encoder, cache_dir=tmp_path)
    predicted = may.blendshapes[:, jaw]
    assert best_sync(predicted, may.blendshapes[:, jaw], may.valid).lag == 0 and best_sync(predicted, may.blendshapes[:, jaw], may.valid).r > 0.99
    late = replace(may, blendshapes=np.roll(may.blendshapes, 3, axis=0), valid=np.roll(may.valid, 3))
    check = best_sync(predicted, late.blendshapes[:, jaw], late.valid)
    assert check.lag == 3 and check.in_sync
    # The cross-validation's scores say so too: per speaker the lag of the best r, and the in-sync mean.
    from engine.expression.generic import score_speakers, speaker_ranges, summarise
    named = [replace(may, speaker="in sync"), replace(late, speaker="3 frames late")]
    identity = {"offset": np.zeros(52), "scale": np.ones(52)}
    scores = score_speakers(named, [may.blendshapes] * 2, speaker_ranges(named), identity)
    assert scores["in sync"]["jaw_best_lag"] == 0 and scores["3 frames late"]["jaw_best_lag"] == 3
    summary = summarise(scores)
    assert summary["in_sync_speakers"] == 1 and summary["jaw_open_r_in_sync_mean"] > 0.99
    lined_up = shifted(late, check.lag)
    both = lined_up.valid & may.valid
    assert both.sum() >= len(may.valid) - 10 and not lined_up.valid[-3:].any()
    np.testing.assert_array_equal(lined_up.blendshapes[both], may.blendshapes[both])
    early = replace(may, blendshapes=np.roll(may.blendshapes, -2, axis=0), valid=np.roll(may.valid, -2))
    assert best_sync(predicted, early.blendshapes[:, jaw], early.valid).lag == -2 and not shifted(early, -2).valid[:2].any()
    n = min(len(may.valid), len(aoc.valid))
    dubbed = replace(may, blendshapes=aoc.blendshapes[:n], valid=aoc.valid[:n])
    assert not best_sync(predicted[:n], dubbed.blendshapes[:, jaw], dubbed.valid).in_sync


def test_each_clip_also_trains_played_slower_and_faster_with_its_face_stretched_to_match(tmp_path):
    """Speed perturbation on a real clip (may_5s): at 0.9x and 1.1x the sound's features (its voice activity
    here) and the captured face both move to the new timeline, so they stay in step; the variants' features
    are cached like the clip's; a clip's lag to its sound scales with the speed when it is lined up."""
    from engine.audio.features import get_encoder, resample
    from engine.expression.corpus import SPEEDS, ClipSource, load_clip
    from engine.expression.generic import lined_up
    encoder = get_encoder("whisper-mid")
    source = ClipSource(shared_file("video", "may_5s.mp4"), "may")
    clip = load_clip(source, encoder, cache_dir=tmp_path, speeds=SPEEDS)
    assert [v.speed for v in clip.variants] == [0.9, 1.1] and clip.speed == 1.0
    n = len(clip.inputs)
    for v in clip.variants:
        assert len(v.inputs) == len(v.blendshapes) == len(v.valid) == round(n / v.speed)
        # Back on the clip's own timeline, the variant's sound and face are the clip's.
        back = lambda values: resample(values, clip.fps / v.speed, clip.fps, 0, n - 2)
        assert np.corrcoef(back(v.activity), clip.activity[:n - 2])[0, 1] > 0.9
        jaw, jaw_back = clip.blendshapes[:n - 2, JAW], back(v.blendshapes)[:, JAW]
        assert np.corrcoef(jaw_back, jaw)[0, 1] > 0.98 and np.abs(jaw_back - jaw).mean() < 0.01
        assert not np.allclose(v.inputs[:n // 2, :-1], clip.inputs[:n // 2, :-1], atol=0.1)  # another voice
    assert len(list(tmp_path.glob("may_5s-whisper-base-layer3-in*-x*.npz"))) == 2
    again = load_clip(source, encoder, cache_dir=tmp_path, speeds=SPEEDS)
    np.testing.assert_array_equal(again.variants[1].inputs, clip.variants[1].inputs)
    # Lined up with its sound, a face 8 frames late at 1x is 8.9 frames late at 0.9x and 7.3 at 1.1x.
    for lined, original, lag in zip(lined_up(clip, 8), (clip, *clip.variants), (8, 9, 7)):
        np.testing.assert_array_equal(lined.blendshapes[0], original.blendshapes[lag])
        assert len(lined.inputs) == len(original.inputs) and not lined.valid[-lag:].any()


def test_blinks_close_fully_vary_per_take_and_the_eyes_differ_now_and_then():
    model = BlinkModel()  # the generic model's: typical rate, lids closing fully
    first, second = blink_curves(model, 25 * 120, 25, seed=1), blink_curves(model, 25 * 120, 25, seed=2)
    times = blink_times(model, 120, seed=1)
    assert not np.array_equal(times[:5], blink_times(model, 120, seed=2)[:5])
    peaks = [first[int(t * 25): int(t * 25) + 8].max(axis=0) for t in times[:-1]]
    assert np.min(peaks) >= 0.85 and np.max(peaks) >= 0.95  # every blink shuts the lids
    apart = np.abs(first[:, 0] - first[:, 1]) > 0.2
    assert 0 < apart.mean() < 0.05  # one eye leads by a frame in some blinks, not in most
    assert not np.array_equal(first, second)


def test_gaze_shifts_more_while_speaking_and_both_eyes_move_together(generic):
    activity = np.concatenate([np.ones(25 * 60), np.zeros(25 * 60)]).astype(np.float32)
    path = gaze_path(activity, 25, seed=3)
    moves = np.abs(np.diff(path, axis=0)).sum(1) > 0.01
    assert moves[:25 * 60].sum() > moves[25 * 60:].sum()
    assert 0.03 < path[:, 0].std() < 0.3  # a few degrees, not a stare and not rolling eyes
    curves = generic(load_audio(shared_file("audio", "zh_8s.wav")), 25, seed=3)
    left = curves.weights[:, ARKIT_INDEX["eyeLookOutLeft"]] - curves.weights[:, ARKIT_INDEX["eyeLookInLeft"]]
    right = curves.weights[:, ARKIT_INDEX["eyeLookInRight"]] - curves.weights[:, ARKIT_INDEX["eyeLookOutRight"]]
    assert left.std() > 0.02 and np.corrcoef(left, right)[0, 1] > 0.8  # the model adds a little of its own per eye


def test_animate_takes_one_line_of_a_long_recording(tmp_path, capsys):
    """`animate --start --end`: the curves begin at the line's start and last as long as it, and their
    mouth moves where the line has speech and rests in its pauses."""
    from engine.cli import main
    from engine.curves import Curves
    speech = shared_file("audio", "en_60s.wav")
    out = tmp_path / "line.stcurves"
    assert main(["animate", str(speech), "--generic", "-o", str(out), "--start", "20.5", "--end", "31",
                 "--fps", "24", "--progress", "jsonl"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    curves = Curves.load(out)
    assert result["start_s"] == 20.5 and result["frames"] == len(curves) == 252 and curves.fps == 24
    line = load_audio(speech)[20500 * 16:31000 * 16]
    hop = 16000 // 24
    db = 20 * np.log10(np.array([np.sqrt(np.mean(line[i * hop:(i + 1) * hop] ** 2)) + 1e-9
                                 for i in range(len(curves))]) / np.abs(line).max())
    jaw = curves.weights[:, JAW]
    speaking, quiet = db > db.max() - 20, db < db.max() - 35
    assert speaking.sum() > 50 and quiet.sum() > 5
    assert jaw[speaking].mean() > 2 * jaw[quiet].mean() + 0.05
    assert main(["animate", str(speech), "--generic", "-o", str(tmp_path / "x.stcurves"), "--start", "70"]) == 2
    assert "not inside the audio (60.00 s long)" in capsys.readouterr().err


def test_long_speech_is_predicted_in_blocks_that_match_the_whole(generic, monkeypatch):
    """Both model kinds predict a block at a time with the context their weights depend on: small blocks
    give the same curves as one block over the whole speech."""
    from engine.audio.features import SpeechFeatures
    from engine.expression import predict
    speech = SpeechFeatures(load_audio(shared_file("audio", "en_60s.wav"))[:16000 * 12])
    whole = predict.predict_speech(generic.model, generic.inputs, speech, 25.0)
    monkeypatch.setattr(predict, "FRAMES_AT_ONCE", 37)
    blocks = predict.predict_speech(generic.model, generic.inputs, speech, 25.0)
    assert np.abs(blocks - whole).max() < 1e-5


def test_each_voice_of_a_dialogue_recorded_on_two_channels_moves_only_its_own_mouth(generic, tmp_path, capsys):
    """`animate --channel left|right`: a dialogue with a microphone on each speaker, one on each side of a stereo
    file (turns of 4 s, each microphone hearing the other voice 15 dB down and 3 ms late, and its own noise).
    Each side's jaw follows its speaker as that speaker alone gives it and rests while the other one talks; read
    as both channels, every mouth talks in both speakers' turns. Also as AAC in m4a (decoded by ffmpeg)."""
    import soundfile
    from engine.audio.features import SpeechFeatures
    from engine.cli import main
    from engine.curves import Curves
    a = load_audio(shared_file("audio", "en_60s.wav"))[16000 * 20: 16000 * 36]
    b = np.resize(load_audio(shared_file("audio", "fr_12s_48k_stereo.wav")), len(a))
    turn = (np.arange(len(a)) // (4 * 16000)) % 2 == 0
    a_alone, b_alone = a * turn, b * ~turn
    b_alone *= np.sqrt(np.mean(a_alone[turn] ** 2) / np.mean(b_alone[~turn] ** 2))
    late = lambda x: np.concatenate([np.zeros(48, np.float32), x[:-48]])  # noqa: E731
    bleed = 10 ** (-15 / 20)
    left = a_alone + bleed * late(b_alone) + _noise(16, -55, seed=1)
    right = b_alone + bleed * late(a_alone) + _noise(16, -55, seed=2)
    dialogue = tmp_path / "dialogue.wav"
    soundfile.write(str(dialogue), np.stack([left, right], 1), 16000, subtype="PCM_16")
    m4a = tmp_path / "dialogue.m4a"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(dialogue), "-c:a", "aac", "-b:a", "128k", str(m4a)],
                   check=True)
    a_turns = (np.arange(400) // 100) % 2 == 0          # 25 fps: 4-s turns
    settled = (np.arange(400) % 100 >= 15) & (np.arange(400) % 100 < 90)  # past the hangover, before the lips part
    mixed = generic(dialogue, 25, seed=0).weights[:, JAW]
    assert mixed[~a_turns].mean() > 0.1 and mixed[a_turns].mean() > 0.1   # before: one mouth for both voices
    for alone, side, own in ((a_alone, "left", a_turns), (b_alone, "right", ~a_turns)):
        reference = generic(alone, 25, seed=0).weights[:, JAW]
        for path in (dialogue, m4a):
            jaw = generic(SpeechFeatures(path, channel=side), 25, seed=0).weights[:, JAW]
            n = min(len(jaw), len(reference))
            assert np.corrcoef(jaw[:n], reference[:n])[0, 1] > 0.9, (side, path.suffix)
            other = ~own[:n] & settled[:n]
            assert jaw[:n][other].max() < 0.05 < jaw[:n][own[:n]].mean(), (side, path.suffix)
    out = tmp_path / "right.stcurves"
    assert main(["animate", str(m4a), "--generic", "-o", str(out), "--progress", "jsonl"]) == 0   # both: a warning
    warnings = [json.loads(line)["message"] for line in capsys.readouterr().out.splitlines()
                if json.loads(line)["event"] == "warning"]
    assert len(warnings) == 1 and "two channels hold different voices" in warnings[0] and str(m4a) in warnings[0]
    assert main(["animate", str(m4a), "--generic", "-o", str(out), "--start", "2", "--end", "9",
                 "--progress", "jsonl"]) == 0                          # a line of it: still one warning, the file's
    warnings = [json.loads(line)["message"] for line in capsys.readouterr().out.splitlines()
                if json.loads(line)["event"] == "warning"]
    assert len(warnings) == 1 and warnings[0].startswith(f"{m4a}: ")
    assert main(["animate", str(m4a), "--generic", "-o", str(out), "--channel", "right", "--start", "4",
                 "--end", "8", "--progress", "jsonl"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    result = json.loads(printed[-1])
    assert result["channel"] == "right" and Curves.load(out).weights[:, JAW].mean() > 0.1   # B's turn
    assert not any(json.loads(line)["event"] == "warning" for line in printed)
    mono = tmp_path / "mono.wav"
    soundfile.write(str(mono), left, 16000)
    assert main(["animate", str(mono), "--generic", "-o", str(out), "--channel", "left"]) == 2
    assert f"{mono}: has one channel" in capsys.readouterr().err


def test_a_studio_manifest_saved_by_a_spreadsheet_is_read_or_refused_by_name(tmp_path):
    """MANIFEST.tsv as a spreadsheet saves it: UTF-8 with a byte-order mark (read: its header was not found
    before), or Latin-1 (refused with the file named: a UnicodeDecodeError traceback before)."""
    from engine.expression.corpus import _manifest_speakers
    manifest = tmp_path / "MANIFEST.tsv"
    manifest.write_bytes("file\tspeaker\nana.mp4\tJosé\n".encode("utf-8-sig"))
    assert _manifest_speakers(tmp_path) == {"ana.mp4": "José"}
    manifest.write_bytes("file\tspeaker\nana.mp4\tJosé\n".encode("latin-1"))
    with pytest.raises(EngineError, match=r"MANIFEST.tsv: is not UTF-8 text .*at byte 24"):
        _manifest_speakers(tmp_path)
