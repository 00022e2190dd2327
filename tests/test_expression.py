"""Speech -> curves: per-subject training, animate (CLI), generic model, blinks, head motion, Live Link CSV."""
import json
import numpy as np
import pytest
import torch

from conftest import shared_file
from engine.arkit import ARKIT_INDEX, ARKIT_NAMES
from engine.curves import Curves
from engine.errors import EngineError
from engine.expression.animate import Animator, parse_intensity
from engine.expression.blinks import BLINK_CHANNELS, BlinkModel, blink_curves, blink_times
from engine.expression.headmotion import MotionStats, generate, replay
from engine.expression.livelink import (HEADER, read_livelink_csv, read_livelink_take, timecode, timecode_frames,
                                       write_livelink_csv)
from engine.media.audio import load_audio, write_wav
from engine.progress import Progress
from engine.subject import Split, Subject, SubjectMeta, SubjectWriter

JAW = ARKIT_INDEX["jawOpen"]


@pytest.fixture(scope="module")
def may_subject(tmp_path_factory):
    """A small real subject from may_5s: its frames, FaceLandmarker tracks and audio (no NeRF parts needed)."""
    from scipy.signal import savgol_filter
    from engine.face.landmarker import FaceLandmarker
    from engine.media.video import read_frames
    import cv2
    clip = shared_file("video", "may_5s.mp4")
    writer = SubjectWriter(tmp_path_factory.mktemp("subjects") / "may")
    weights, landmarks, transforms = [], [], []
    with FaceLandmarker() as landmarker:
        for i, rgb in enumerate(read_frames(clip, 25)):
            small = cv2.resize(rgb, (256, 256), interpolation=cv2.INTER_AREA)
            seen = landmarker.analyse(small)
            weights.append(seen.blendshapes)
            landmarks.append(seen.landmarks)
            transforms.append(seen.transform)
            writer.write_image("frames", i, small[..., ::-1])
    n = len(weights)
    write_wav(writer.audio_path, load_audio(clip))
    writer.write_meta(SubjectMeta(fps=25.0, frames=n, size=256, split=Split((0, n * 10 // 11), (n * 10 // 11, n))))
    poses = np.linalg.inv(np.array(transforms, np.float64)).astype(np.float32)
    writer.write_tracks({
        "blendshapes": np.clip(savgol_filter(np.array(weights), 5, 3, axis=0), 0, 1).astype(np.float32),
        "landmarks": np.array(landmarks, np.float32), "pose": poses, "valid": np.ones(n, np.uint8)})
    return Subject(writer.commit())


@pytest.fixture(scope="module")
def trained(may_subject):
    from engine.expression.training import train_expression
    metrics = train_expression(may_subject, Progress("quiet"), encoder="whisper")
    return Subject(may_subject.root), metrics


def _engine(capsys, *args):
    """Run a command in-process (the CLI's own main), returning its exit code, stdout and stderr."""
    from engine.cli import main
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_training_saves_and_records_the_model(trained):
    subject, metrics = trained
    record = subject.model("expression")
    assert (subject.root / record.file).is_file() and record.encoder == "whisper" and record.ridge > 0
    assert set(metrics) == {"expression_jaw_open_r", "expression_mouth_mae", "expression_jaw_open_spread",
                            "expression_frames", "expression_prior_gain", "expression_prior_lag"}
    assert metrics["expression_frames"] == len(subject.split("test"))
    assert 0 <= metrics["expression_mouth_mae"] < 0.2


def test_fitted_mouth_moves_with_the_full_spread_on_unseen_frames():
    """Half of jawOpen is predictable from the input, half is not: regression alone would move the mouth
    with about 0.7 of the truth's spread (less after ridge shrinkage); the fit gives it back its range."""
    from engine.expression.model import ExpressionConfig
    from engine.expression.training import fit
    rng = np.random.default_rng(0)
    config = ExpressionConfig(encoder="test", dim=16, window=8)

    def sample(n):
        inputs = rng.standard_normal((n, config.window, config.dim + 1)).astype(np.float32)
        targets = np.full((n, len(ARKIT_NAMES)), 0.05, np.float32)
        targets[:, JAW] = 0.3 + 0.1 * (inputs[:, 4, 0] + rng.standard_normal(n))
        return inputs, targets

    inputs, targets = sample(1500)
    model = fit(inputs, targets, np.arange(1500), config, Progress("quiet"))
    new_inputs, new_targets = sample(1000)
    predicted = model.predict(new_inputs)[:, JAW]
    assert np.corrcoef(predicted, new_targets[:, JAW])[0, 1] > 0.6
    assert 0.85 < predicted.std() / new_targets[:, JAW].std() < 1.25


def test_fitted_mouth_never_moves_more_than_the_person_on_a_short_clip():
    """On a few seconds the cross-validation's fold models say little and their spread is no guide: the
    gain is bounded so that the model moves no more than the person on the speech it was fitted to."""
    from engine.expression.model import ExpressionConfig
    from engine.expression.training import fit
    rng = np.random.default_rng(1)
    config = ExpressionConfig(encoder="test", dim=16, window=8)
    inputs = rng.standard_normal((250, config.window, config.dim + 1)).astype(np.float32)  # 10 s at 25 fps
    targets = np.full((250, len(ARKIT_NAMES)), 0.05, np.float32)
    targets[:, JAW] = 0.3 + 0.1 * (inputs[:, 4, 0] + rng.standard_normal(250))
    model = fit(inputs, targets, np.arange(250), config, Progress("quiet"))
    predicted = model.predict(inputs)[:, JAW]
    assert predicted.std() <= targets[:, JAW].std() * 1.01
    assert np.corrcoef(predicted, targets[:, JAW])[0, 1] > 0.5


def test_fit_leans_on_the_prior_when_a_subject_has_few_seconds():
    """Ten seconds of a subject: its encoder's features (here noise in 64 columns per frame) cannot be
    fitted from so little, the prior's jawOpen (here the truth plus noise) can. The fit weights the prior's
    columns up (kept in feature_std, so prediction applies it by itself) and follows the truth on new frames."""
    from engine.expression.model import N_OUT, ExpressionConfig, TemporalNet
    from engine.expression.training import fit
    rng = np.random.default_rng(2)
    generic = TemporalNet(ExpressionConfig(encoder="test", dim=8, window=0, lead=0, arch="temporal"))
    config = ExpressionConfig(encoder="test", dim=64, window=8, prior=vars(generic.config))
    assert config.inputs_per_frame == 64 + N_OUT + 1

    def sample(n):
        inputs = rng.standard_normal((n, config.window, config.inputs_per_frame)).astype(np.float32)
        targets = np.full((n, len(ARKIT_NAMES)), 0.05, np.float32)
        targets[:, JAW] = 0.3 + 0.1 * rng.standard_normal(n)
        inputs[:, 4, 64 + JAW] = (targets[:, JAW] - 0.3) / 0.1 + 0.5 * rng.standard_normal(n)
        return inputs, targets

    inputs, targets = sample(250)
    with_gains = fit(inputs, targets, np.arange(250), config, Progress("quiet"))
    flat = fit(inputs, targets, np.arange(250), config, Progress("quiet"), prior_gains=(1.0,))
    prior_std = with_gains.feature_std[64:64 + N_OUT].numpy()
    assert with_gains.config.prior_gain >= 2 and flat.config.prior_gain == 1
    assert np.allclose(prior_std * with_gains.config.prior_gain, flat.feature_std[64:64 + N_OUT].numpy())
    new_inputs, new_targets = sample(1000)
    r_gains = np.corrcoef(with_gains.predict(new_inputs)[:, JAW], new_targets[:, JAW])[0, 1]
    r_flat = np.corrcoef(flat.predict(new_inputs)[:, JAW], new_targets[:, JAW])[0, 1]
    assert r_gains > 0.5 and r_gains > r_flat + 0.1  # 0.57 against 0.43 when written


def test_the_prior_is_read_as_late_as_the_clips_picture_trails_its_sound():
    """A clip whose picture trails its sound by 2 frames: the measured offset is 2, and the prior read that late
    lines up with the face (real speech, the bundled generic model; the 'face' is its own jaw moved late)."""
    from engine.audio.features import SpeechFeatures
    from engine.expression.generic import load_generic_model
    from engine.expression.predict import ModelInputs, prior_output
    from engine.expression.training import clip_offset
    prior = load_generic_model()
    inputs = ModelInputs.of(prior)
    speech = SpeechFeatures(load_audio(shared_file("audio", "en_60s.wav"))[16000 * 20: 16000 * 30])
    on_time = prior_output(prior, inputs, speech, 25.0, 0, 250)
    face = np.zeros((250, len(ARKIT_NAMES)), np.float32)
    face[2:, JAW] = on_time[:-2, JAW]
    assert clip_offset(prior, inputs, speech, face, np.arange(10, 240), 25.0) == 2
    late = prior_output(prior, inputs, speech, 25.0, 0, 250, lag=2)
    np.testing.assert_allclose(late[10:240, JAW], face[10:240, JAW], atol=1e-5)


def test_a_subjects_model_keeps_its_own_copy_of_the_generic_model(trained, tmp_path):
    """The subject's model reads the generic model's output; the copy it was fitted with lives in its file,
    so a later generic model (or a removed retrained one) does not change the trained subject."""
    from engine.expression.animate import Animator
    from engine.expression.generic import load_generic_model
    from engine.expression.model import load_model
    subject, _ = trained
    model = load_model(subject.root / subject.model("expression").file)
    generic = load_generic_model()
    assert model.prior is not None and model.config.prior == vars(generic.config)
    assert "research" in model.metadata["prior_use"] and model.metadata["prior_sources"] == generic.metadata["sources"]
    for name, tensor in generic.state_dict().items():
        assert torch.equal(model.prior.state_dict()[name], tensor), name
    inputs = Animator(subject).inputs  # what animate and render feed the subject's model
    assert torch.equal(inputs.prior.head.weight, model.prior.head.weight)
    assert inputs.encoder.name == "whisper" and inputs.prior_inputs.encoder.name == generic.config.encoder


def test_animate_cli_writes_live_link_csv_at_any_fps(trained, tmp_path, capsys):
    subject, _ = trained
    out = tmp_path / "fr.csv"
    speech = shared_file("audio", "fr_12s_48k_stereo.wav")
    code, stdout, stderr = _engine(capsys, "animate", str(speech), "--subject", str(subject.root), "-o", str(out),
                                   "--fps", "29.97", "--intensity", "mouth=1.2,brows=0.8", "--progress", "jsonl")
    assert code == 0, stderr
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["event"] == "result" and result["frames"] == int(len(load_audio(speech)) / 16000 * 29.97)
    lines = out.read_text().splitlines()
    assert lines[0].split(",") == list(HEADER) and len(lines) == result["frames"] + 1
    assert lines[31].startswith("00:00:01:00.000,61,")  # non-drop-frame timecode at the nominal 30
    warnings = [json.loads(line)["message"] for line in stdout.splitlines() if '"warning"' in line]
    assert any("read back, these 29.97-fps curves play at 30 and drift 0.01 s" in w for w in warnings), warnings
    curves = Curves.load(out)
    assert curves.weights[:, JAW].max() > curves.weights[:, JAW].min() + 0.02  # the jaw moves
    assert np.abs(curves.head_rotation).max() > 0  # replayed head motion


def test_animate_stcurves_head_modes_and_seed(trained, tmp_path):
    subject, _ = trained
    animator = Animator(subject)
    speech = load_audio(shared_file("audio", "zh_8s.wav"))
    first = animator(speech, 24, head="generate", seed=3)
    again = animator(speech, 24, head="generate", seed=3)
    other = animator(speech, 24, head="generate", seed=4)
    still = animator(speech, 24, head="none", smooth=2)
    assert len(first) == 8 * 24
    np.testing.assert_array_equal(first.weights, again.weights)
    assert not np.array_equal(first.weights[:, BLINK_CHANNELS[0]], other.weights[:, BLINK_CHANNELS[0]])
    assert np.abs(still.head_rotation).max() == 0
    path = first.save(tmp_path / "zh.stcurves")
    loaded = Curves.load(path)
    np.testing.assert_array_equal(loaded.weights, first.weights)
    np.testing.assert_array_equal(loaded.head_translation, first.head_translation)


def test_mouth_lead_moves_only_the_mouth_and_jaw_keys(trained):
    subject, _ = trained
    animator = Animator(subject)
    speech = load_audio(shared_file("audio", "zh_8s.wav"))
    on_time = animator(speech, 24, head="none", seed=3)
    ahead = animator(speech, 24, head="none", seed=3, lead=2)
    jaw, blink = ARKIT_INDEX["jawOpen"], BLINK_CHANNELS[0]
    assert np.ptp(on_time.weights[:, jaw]) > 0.05
    np.testing.assert_allclose(ahead.weights[:-2, jaw], on_time.weights[2:, jaw], atol=1e-6)
    np.testing.assert_array_equal(ahead.weights[:, blink], on_time.weights[:, blink])
    behind = animator(speech, 24, head="none", seed=3, lead=-0.5)   # half a frame: interpolated
    np.testing.assert_allclose(behind.weights[1:, jaw], (on_time.weights[1:, jaw] + on_time.weights[:-1, jaw]) / 2,
                               atol=1e-6)


def test_generic_model_closes_the_mouth_in_pauses():
    speech = load_audio(shared_file("audio", "en_60s.wav"))[16000 * 20: 16000 * 24]
    audio = np.concatenate([speech, np.zeros(32000, np.float32), speech])
    curves = Animator(generic=True)(audio, 25)
    jaw = curves.weights[:, JAW]
    pause = jaw[110:145]  # inside the 2 s of silence (frames 100-150), after the hangover
    assert pause.max() < 0.05
    assert jaw[:100].mean() > pause.mean() + 0.01


def test_the_silence_gate_holds_into_a_pause_only_when_asked_and_never_before_the_first_voice():
    from engine.expression.predict import PAUSE_CLOSE_S, gate_opening
    fps = 25.0
    activity = np.concatenate([np.zeros(30), np.ones(50), np.zeros(60), np.ones(10)]).astype(np.float32)
    shut = gate_opening(activity, fps)
    assert shut[82:125].max() == 0 and shut[:20].max() == 0             # a pause shuts at once
    held = gate_opening(activity, fps, hold_s=0.4)
    assert held[:20].max() == 0                                          # silence before any voice: shut
    assert held[80:90].min() == 1                                        # 0.4 s into the pause: still open
    closing = held[90:90 + int(PAUSE_CLOSE_S * fps)]
    assert np.all(np.diff(closing) < 0) and held[80 + int((0.4 + PAUSE_CLOSE_S) * fps):138].max() == 0
    assert held[138:].min() == 1                                         # open before the next voice (the lead)


def test_the_mouth_does_not_shut_between_words_and_the_lips_posture_relaxes_only_in_a_long_silence():
    from engine.expression.predict import OPENING_INDEX, POSTURE_INDEX, gate_silence, silence_gates
    fps = 25.0
    # voice, a 0.2 s gap between words, voice, a 1.2 s pause, voice, 3 s of silence, voice
    pieces = [(0, 10), (1, 25), (0, 5), (1, 25), (0, 30), (1, 25), (0, 75), (1, 10)]
    activity = np.concatenate([np.full(n, v, np.float32) for v, n in pieces])
    gates = silence_gates(activity, fps)
    gap, pause, silence = slice(35, 40), slice(65, 93), slice(120, 193)  # each up to the next lead
    assert gates[:8].max() == 0                                     # before the first voice: shut
    assert gates[gap].min() == 1                                    # a gap between words: both open
    assert gates[pause, 0].max() == 0 and gates[pause, 1].min() == 1  # a pause: the mouth shuts, the posture holds
    assert gates[silence].max() == 0                                # a long silence: both rest
    weights = np.full((len(activity), len(ARKIT_NAMES)), 0.5, np.float32)
    rest = np.full(len(ARKIT_NAMES), 0.1, np.float32)
    gated = gate_silence(weights, gates, rest)
    assert np.all(gated[pause][:, OPENING_INDEX] == 0.1) and np.all(gated[pause][:, POSTURE_INDEX] == 0.5)
    assert np.all(gated[silence][:, POSTURE_INDEX] == 0.1)
    assert np.all(gated[:, ARKIT_INDEX["eyeBlinkLeft"]] == 0.5)    # only the mouth and jaw are gated


def test_a_subjects_model_holds_its_mouth_into_a_pause_and_keeps_room_tone_shut(trained):
    """A subject's model learnt what the person's mouth does in a pause, so its gate holds for a while
    (pause_hold_s); long silence and room tone still give the rest pose."""
    from engine.expression.predict import PAUSE_CLOSE_S
    subject, _ = trained
    animator = Animator(subject=subject)
    rest = animator.model.rest_pose.numpy()[JAW]
    rng = np.random.default_rng(0)
    tone = rng.standard_normal(16000 * 3).astype(np.float32) * 10 ** (-60 / 20)
    assert np.abs(animator(tone, 25, seed=0).weights[:, JAW] - rest).max() < 1e-4
    speech = load_audio(shared_file("audio", "en_60s.wav"))[16000 * 20: 16000 * 24]
    jaw = animator(np.concatenate([speech, tone]), 25, seed=0).weights[:, JAW]
    shut_after = 100 + int((0.2 + animator.model.pause_hold_s + PAUSE_CLOSE_S) * 25) + 2  # hangover, hold, close
    assert np.abs(jaw[shut_after:] - rest).max() < 1e-4
    assert jaw[:100].std() > 0.01


def test_animate_errors_are_clear(trained, tmp_path, capsys):
    subject, _ = trained
    code, _, stderr = _engine(capsys, "animate", str(tmp_path / "none.wav"), "--generic", "-o", str(tmp_path / "x.csv"))
    assert code == 2 and "not found" in stderr
    code, _, stderr = _engine(capsys, "animate", str(shared_file("audio", "zh_8s.wav")), "--subject",
                              str(subject.root), "--encoder", "mel", "-o", str(tmp_path / "x.csv"))
    assert code == 2 and "no expression model for the 'mel' encoder" in stderr
    code, _, stderr = _engine(capsys, "animate", str(shared_file("audio", "zh_8s.wav")), "--subject",
                              str(subject.root), "--lead", "40", "-o", str(tmp_path / "x.csv"))
    assert code == 2 and "a mouth lead of 40 frames is out of range" in stderr
    assert not (tmp_path / "x.csv").exists()
    folder = tmp_path / "take.csv"   # an existing folder given as the output: refused before any work
    folder.mkdir()
    code, _, stderr = _engine(capsys, "animate", str(shared_file("audio", "zh_8s.wav")), "--generic", "-o", str(folder))
    assert code == 2 and "is a folder" in stderr and not list(tmp_path.glob(".take.partial*"))
    with pytest.raises(EngineError):
        parse_intensity("mouth=loud")
    for bad in ("head=nan", "mouth=-1", "jaw=inf"):   # NaN head angles were written, which the reader refuses
        with pytest.raises(EngineError, match="out of range"):
            parse_intensity(bad)
    for argv in (["--seed", "-1"], ["--fps", "nan"]):
        code, _, stderr = _engine(capsys, "animate", str(shared_file("audio", "zh_8s.wav")), "--generic", "-o",
                                  str(tmp_path / "x.csv"), *argv)
        assert code == 2 and "is out of range" in stderr and "Traceback" not in stderr


def test_blinks_follow_the_measured_rate_and_duration():
    fps, model = 25.0, BlinkModel(rate_per_s=0.4, duration_s=0.28, open_level=0.1, closed_level=0.8)
    curves = blink_curves(model, 25 * 120, fps, seed=1)
    measured = BlinkModel.from_curves(curves, fps)
    assert abs(measured.rate_per_s - 0.4) < 0.1
    assert abs(measured.duration_s - 0.28) < 0.1
    assert abs(measured.open_level - 0.1) < 0.02 and abs(measured.closed_level - 0.8) < 0.05
    times = blink_times(model, 120, seed=1)
    assert np.diff(times).min() >= 0.8 - 1e-9
    np.testing.assert_array_equal(times, blink_times(model, 120, seed=1))


def test_head_replay_walks_back_and_forth_and_generate_matches_spread():
    t = np.linspace(0, 1, 50, dtype=np.float32)
    rotation = np.stack([t, -t, 2 * t], 1)
    translation = rotation * 0.01
    r, tr = replay(rotation, translation, 25, 300, 30)
    assert len(r) == 300 and np.abs(np.diff(r, axis=0)).max() < 0.05  # no jump at the turns
    assert r.max() <= 2.0 + 1e-6 and tr.shape == (300, 3)
    stats = MotionStats(np.array([0.03, 0.06, 0.02]), np.array([0.005, 0.004, 0.002]), 0.5)
    g, gt = generate(stats, 2000, 25, seed=0)
    np.testing.assert_allclose(g.std(0), stats.rotation_std, rtol=1e-3)
    np.testing.assert_allclose(gt.std(0), stats.translation_std, rtol=1e-3)


def test_live_link_csv_layout_and_tolerant_reading(tmp_path):
    assert HEADER[:2] == ("Timecode", "BlendShapeCount") and len(HEADER) == 2 + 52 + 9
    assert HEADER[16:20] == ("JawForward", "JawRight", "JawLeft", "JawOpen")  # the app's order
    assert HEADER[-9:-6] == ("HeadYaw", "HeadPitch", "HeadRoll")
    assert timecode(25 * 3661 + 7, 25) == "01:01:01:07.000"
    assert timecode(-5, 25) == "23:59:59:20.000"   # a time of day: keys before frame 0 are before midnight
    rng = np.random.default_rng(0)
    curves = Curves(25, rng.random((60, 52)), rng.normal(0, 0.1, (60, 3)))
    back = Curves.load(curves.save(tmp_path / "take.csv"))
    assert back.fps == 25 and len(back) == 60
    np.testing.assert_allclose(back.weights, curves.weights, atol=1e-6)
    np.testing.assert_allclose(back.head_rotation, curves.head_rotation, atol=1e-6)
    # A file from elsewhere: lower-case names, a subset of columns, no angles.
    other = tmp_path / "other.csv"
    other.write_text("Timecode,blendshapecount,jawOpen,eyeBlinkLeft\n00:00:00:00.000,2,0.5,0.25\n"
                     "00:00:00:01.000,2,0.6,0.0\n")
    read = read_livelink_csv(other)
    assert read.weights[1, JAW] == pytest.approx(0.6) and read.weights[0, ARKIT_NAMES.index("eyeBlinkLeft")] == 0.25
    bad = tmp_path / "bad.csv"
    bad.write_text("Timecode,BlendShapeCount,JawOpen\n00:00:00:00.000,1,wide\n")
    with pytest.raises(EngineError, match="line 2"):
        read_livelink_csv(bad)


def test_live_link_take_keeps_its_first_timecode_and_eye_angles(tmp_path):
    first = timecode_frames("10:41:53:17.533", 30)
    assert first == ((10 * 60 + 41) * 60 + 53) * 30 + 17
    rng = np.random.default_rng(1)
    eyes = rng.normal(0, 0.1, (40, 6)).astype(np.float32)
    path = write_livelink_csv(tmp_path / "take.csv", Curves(30, rng.random((40, 52))), first, eyes)
    rows = path.read_text().splitlines()
    assert rows[1].startswith("10:41:53:17.000,61,") and rows[14].startswith("10:41:54:00.000,")
    take = read_livelink_take(path)
    assert take.first_frame == first and take.curves.fps == 30
    np.testing.assert_allclose(take.eye_angles, eyes, atol=1e-6)
    # A phone drops a row now and then (a busy app), or writes one twice: rows go to their timecodes' frames,
    # a dropped one interpolated, so the take keeps its length and stays on the sound.
    gappy = tmp_path / "gappy.csv"
    gappy.write_text("\n".join([rows[0], *rows[1:11], rows[10], *rows[12:]]) + "\n")   # frame 9 twice, 10 dropped
    again = read_livelink_take(gappy)
    assert len(again.curves) == 40 and again.first_frame == first
    np.testing.assert_allclose(again.curves.weights[10], (take.curves.weights[9] + take.curves.weights[11]) / 2,
                               atol=1e-5)
    np.testing.assert_allclose(again.curves.weights[20:], take.curves.weights[20:], atol=1e-6)
    np.testing.assert_allclose(again.eye_angles[30], eyes[30], atol=1e-6)
    # Timecodes that are no time of day (an hour of 10^30: a traceback, then an overflow of the take's record in
    # Blender after its keys were written) are read as no timecodes: one row a frame from 00:00:00:00.
    for bad in ("1" + "0" * 30 + ":00:00:00.000", "24:00:00:00.000", "-1:00:00:00.000"):
        odd = tmp_path / "odd.csv"
        odd.write_text("\n".join([rows[0], *(bad + row[row.index(","):] for row in rows[1:])]) + "\n")
        assert read_livelink_take(odd).first_frame == 0 and len(read_livelink_take(odd).curves) == 40
        with pytest.raises(ValueError, match="not a"):
            timecode_frames(bad, 30)


def test_train_ave_cli_on_a_subject(may_subject, tmp_path, capsys):
    out = tmp_path / "ave.safetensors"
    code, _, stderr = _engine(capsys, "train-ave", str(may_subject.root), "-o", str(out), "--steps", "2", "--batch", "4")
    assert code == 0, stderr
    from engine.audio.ave import AveEncoder
    features = AveEncoder.load(out).encode(load_audio(may_subject.audio_path))
    assert features.shape == (int(len(load_audio(may_subject.audio_path)) / 16000 * 25), 512)
    # a second run keeps the trained weights unless asked to replace them
    trained = out.read_bytes()
    code, _, stderr = _engine(capsys, "train-ave", str(may_subject.root), "-o", str(out), "--steps", "2", "--batch", "4")
    assert code != 0 and "--replace" in stderr and out.read_bytes() == trained
    code, _, stderr = _engine(capsys, "train-ave", str(may_subject.root), "-o", str(out), "--steps", "2", "--batch", "4",
                              "--seed", "1", "--replace")
    assert code == 0, stderr
    assert out.read_bytes() != trained


def test_speech_drives_the_mouth_of_heads_trained_on_mouth_curves(trained):
    """Without curves, a head conditioned on the mouth curves gets them from the speech, not from replay."""
    from engine.expression.predict import MOUTH_INDEX
    from engine.render.driving import drive_speech
    subject, _ = trained
    speech = load_audio(shared_file("audio", "zh_8s.wav"))
    replayed = drive_speech(subject, speech, "mel", 8)
    spoken = drive_speech(subject, speech, "mel", 8, mouth_from_speech=True)
    others = np.setdiff1d(np.arange(len(ARKIT_NAMES)), MOUTH_INDEX)
    np.testing.assert_array_equal(spoken.blendshapes[:, others], replayed.blendshapes[:, others])
    np.testing.assert_array_equal(spoken.poses, replayed.poses)
    expected = Animator(subject)(speech, subject.fps, head="none").weights[:, MOUTH_INDEX]
    np.testing.assert_allclose(spoken.blendshapes[:, MOUTH_INDEX], expected[:len(spoken)], atol=1e-6)
    assert not np.allclose(spoken.blendshapes[:, JAW], replayed.blendshapes[:, JAW])
    # Held-out evaluation of such a head: the frames' own audio drives the mouth, the rest stays tracked.
    from engine.render.driving import drive_frames
    held_out = subject.split("test")
    scored = drive_frames(subject, held_out, "mel", 8, mouth_from_speech=True)
    own = Animator(subject)(load_audio(subject.audio_path), subject.fps, head="none").weights
    np.testing.assert_allclose(scored.blendshapes[:, MOUTH_INDEX], own[held_out][:, MOUTH_INDEX], atol=1e-6)
    np.testing.assert_array_equal(scored.blendshapes[:, others], subject.tracks["blendshapes"][held_out][:, others])
