"""render and evaluate on a real subject (3 s of may_5s at 96 px) with a `tiny`-preset model (conftest).

The NeRF is the expensive part on CPU: each test renders only a handful of frames.
"""
import json
import re
import shutil
import subprocess

import cv2
import numpy as np
import pytest

from conftest import shared_file
from engine.arkit import ARKIT_INDEX
from engine.cli import main
from engine.evaluation.heldout import lid_closure, scoring_window
from engine.media.ffmpeg import probe
from engine.files import atomic_write_json
from engine.subject.format import Subject, read_meta

pytestmark = pytest.mark.slow


def run_engine(*argv: str) -> None:
    assert main([*map(str, argv), "--progress", "quiet"]) == 0


@pytest.fixture(scope="module")
def subject(tiny_trained):
    """The session's tiny subject, trained (3 s of may_5s at 96 px, from its 512-px source)."""
    return Subject(tiny_trained)


@pytest.fixture(scope="module")
def speech():
    from conftest import shared_file
    return shared_file("audio", "zh_8s.wav")


def read_png(path):
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image


def test_split_render_equals_whole_render(subject, speech, tmp_path, monkeypatch):
    import engine.render.command
    turn = len(subject.split("train"))  # the ping-pong turns at the last training frame: straddle it
    for folder, frames in (("whole", f"{turn - 1}:{turn + 2}"), ("pieces", f"{turn - 1}:{turn}"),
                           ("pieces", f"{turn}:{turn + 2}")):
        run_engine("render", subject.root, "--audio", speech, "-o", tmp_path / folder, "--frames", frames)
    # One command that drives its frames two at a time (a long speech's audio windows are never all in memory).
    monkeypatch.setattr(engine.render.command, "PIECE_FRAMES", 2)
    run_engine("render", subject.root, "--audio", speech, "-o", tmp_path / "driven",
               "--frames", f"{turn - 1}:{turn + 2}")
    whole = sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert whole == [f"{i:06d}.png" for i in range(turn - 1, turn + 2)]
    for folder in ("pieces", "driven"):
        assert sorted(p.name for p in (tmp_path / folder).iterdir()) == whole
        for name in whole:
            assert np.array_equal(read_png(tmp_path / "whole" / name), read_png(tmp_path / folder / name)), name
    # Full frame by default: the 512-px source frame, with only the face changed.
    assert read_png(tmp_path / "whole" / whole[0]).shape == (512, 512, 3)


def test_render_mp4_at_crop_size_carries_the_speech(subject, speech, tmp_path):
    out = tmp_path / "speech.mp4"
    run_engine("render", subject.root, "--audio", speech, "-o", out, "--crop", "--frames", "0:3")
    info = probe(out)
    assert (info.width, info.height) == (96, 96) and info.has_audio and info.video_codec == "h264"
    assert info.duration == pytest.approx(0.12, abs=0.05)


def test_render_speaks_one_voice_of_a_dialogue_recording(subject, speech, tmp_path):
    """`render --channel right`: the head is driven by the right side of a stereo recording as by its voice alone
    (the left holds another voice, as the right's microphone hears it), and the mp4 carries the sound."""
    import soundfile
    from engine.audio.features import SpeechFeatures
    from engine.media.audio import load_audio
    from engine.render.driving import drive_speech
    from engine.nerf.talking_head import TalkingHead
    voice = load_audio(speech)
    other = load_audio(shared_file("audio", "en_60s.wav"))[:len(voice)]
    dialogue = tmp_path / "dialogue.wav"
    soundfile.write(str(dialogue), np.stack([other, voice + 0.05 * other], 1), 16000)
    out = tmp_path / "right.mp4"
    assert main(["render", str(subject.root), "--audio", str(dialogue), "--channel", "right", "-o", str(out),
                 "--crop", "--frames", "0:3", "--progress", "quiet"]) == 0
    assert probe(out).has_audio
    head = TalkingHead.load(subject)
    drive = lambda source: drive_speech(subject, source, head.audio_encoder, head.audio_window,  # noqa: E731
                                        stop=10).audio
    right = SpeechFeatures(dialogue, subject.cache_dir, channel="right")
    np.testing.assert_allclose(drive(right), drive(voice), atol=0.05 * np.abs(drive(voice)).max())
    assert not np.allclose(drive(SpeechFeatures(dialogue, channel="left")), drive(voice),
                           atol=0.05 * np.abs(drive(voice)).max())


def test_render_speaks_the_audio_track_it_is_given_and_carries_that_track(subject, speech, tmp_path):
    """`render --audio-track 2` on a recording of two tracks (another voice on the first): the head speaks the
    second, and the mp4 carries it."""
    from engine.media.audio import load_audio, write_wav
    from engine.media.ffmpeg import ffmpeg_exe
    voice = load_audio(speech)
    other = load_audio(shared_file("audio", "en_60s.wav"))[:len(voice)]
    first, second, recording = tmp_path / "first.wav", tmp_path / "second.wav", tmp_path / "recording.mka"
    write_wav(first, other)
    write_wav(second, voice)
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(first), "-i", str(second), "-map", "0:a", "-map", "1:a",
                    "-c:a", "flac", str(recording)], check=True)
    out = tmp_path / "second.mp4"
    assert main(["render", str(subject.root), "--audio", str(recording), "--audio-track", "2", "-o", str(out),
                 "--crop", "--frames", "0:10", "--progress", "quiet"]) == 0
    carried = load_audio(out)
    n = min(len(carried), len(voice))
    assert n > 0.3 * 16000 and np.corrcoef(carried[:n], voice[:n])[0, 1] > 0.95
    # the head speaks the second track: its frames are those of a render of that voice alone, not of the first
    frames = {}
    for name, argv in (("track", [str(recording), "--audio-track", "2"]), ("voice", [str(second)]),
                       ("first", [str(recording)])):
        assert main(["render", str(subject.root), "--audio", *argv, "-o", str(tmp_path / name), "--format", "png",
                     "--crop", "--frames", "0:3", "--progress", "quiet"]) == 0
        frames[name] = [cv2.imread(str(p)).astype(float) for p in sorted((tmp_path / name).glob("*.png"))]
    assert len(frames["track"]) == 3
    # (the tiny test head moves little: its frames from the first track differ by 0.008-0.12 levels on average,
    # from one training of it to the next and from frame to frame; the same voice's, read either way, by none: the
    # 8-bit frames are equal. So the first track's differ at all, a few levels summed over the frame.)
    same = [np.abs(a - b).mean() for a, b in zip(frames["track"], frames["voice"])]
    other = [np.abs(a - b).mean() for a, b in zip(frames["track"], frames["first"])]
    assert max(same) < 0.0005 and min(other) > 0.002


def test_rendered_face_joins_the_frame_without_a_seam(subject):
    from engine.audio.features import get_encoder, subject_speech
    from engine.nerf.talking_head import TalkingHead
    from engine.portrait.composite import face_layer, over_frame
    from test_portrait import edge_band, gradient_energy
    head = TalkingHead.load(subject, device="cpu")
    features = subject_speech(subject).windows(get_encoder(head.audio_encoder), subject.fps, head.audio_window,
                                               n_frames=subject.n_frames)
    # Training cached the subject's features in the subject folder, keyed by its audio's checksum.
    from engine.files import sha256_of
    cached = list(subject.cache_dir.glob(f"features-v*-mel-*-{sha256_of(subject.audio_path)[:24]}.safetensors"))
    assert len(cached) == 1
    pasted, source = 0.0, 0.0
    for index in subject.split("test")[:2]:
        frame, mask = subject.frame(index), subject.face_mask(index)
        render = head.render(int(index), features[index])
        band = edge_band(mask, 4)
        pasted += gradient_energy(over_frame(face_layer(render, frame, mask), frame), band)
        source += gradient_energy(frame, band)
    assert pasted <= source * 1.02


def test_an_edited_clip_is_replayed_and_measured_in_its_main_shot(subject, speech):
    """After a cut the person is framed differently (a zoom: a larger head): a render replays the frames of one
    shot, the one with the most frames, and the rig's head motion is measured from that shot's mean pose."""
    from engine.expression.headmotion import main_shot, subject_head_motion, subject_reference_pose
    from engine.media.audio import load_audio
    from engine.render.driving import drive_speech
    from engine.tracking.headpose import reference_pose
    cut = int(subject.n_frames * 0.3)
    subject.meta.shots = [0, cut]
    try:
        assert main_shot(subject) == (cut, subject.n_frames)
        driven = drive_speech(subject, load_audio(speech), "mel", 8)
        assert driven.frame_index.min() >= cut
        rotation, _ = subject_head_motion(subject)
        assert len(rotation) == subject.n_frames - cut
        valid = subject.tracks["valid"][cut:] > 0
        np.testing.assert_allclose(subject_reference_pose(subject), reference_pose(subject.tracks["pose"][cut:][valid]))
    finally:
        subject.meta.shots = [0]


def test_curves_drive_blendshapes_and_poses(subject, speech, tmp_path):
    from engine.curves import Curves
    from engine.media.audio import load_audio
    from engine.expression.headmotion import subject_reference_pose
    from engine.render.driving import drive_speech, ping_pong
    from engine.tracking.headpose import head_motion_from_poses
    tracks = subject.tracks
    replay = ping_pong(200, subject.split("train"))
    rotation, translation = head_motion_from_poses(tracks["pose"][replay], subject_reference_pose(subject))
    curves = Curves(subject.fps, tracks["blendshapes"][replay], rotation, translation)
    path = curves.save(tmp_path / "own.stcurves")
    samples = load_audio(speech)
    driven = drive_speech(subject, samples, "mel", 8, Curves.load(path))
    assert len(driven) == 200
    assert np.allclose(driven.poses, tracks["pose"][replay], atol=1e-4)
    assert np.allclose(driven.blendshapes, tracks["blendshapes"][replay], atol=1e-6)
    # Curves at another rate are resampled: the same motion at 50 fps drives the same poses.
    fine = Curves(2 * subject.fps, np.repeat(curves.weights, 2, 0), np.repeat(rotation, 2, 0),
                  np.repeat(translation, 2, 0))
    assert np.allclose(drive_speech(subject, samples, "mel", 8, fine).poses, driven.poses, atol=1e-4)
    run_engine("render", subject.root, "--audio", speech, "--curves", path, "-o", tmp_path / "driven",
               "--crop", "--frames", "0:2")
    assert len(list((tmp_path / "driven").glob("*.png"))) == 2


def test_rgba_render_is_head_and_torso_over_transparency(subject, speech, tmp_path):
    run_engine("render", subject.root, "--audio", speech, "-o", tmp_path / "crop", "--format", "rgba", "--crop",
               "--frames", "0:1")
    crop = read_png(tmp_path / "crop" / "000000.png")
    assert crop.shape == (96, 96, 4)
    parsing = subject.parsing(0)
    alpha = crop[..., 3]
    assert alpha[parsing == 0].mean() < 40 and alpha[parsing >= 2].mean() > 200
    run_engine("render", subject.root, "--audio", speech, "-o", tmp_path / "full", "--format", "rgba",
               "--frames", "0:1")
    assert read_png(tmp_path / "full" / "000000.png").shape == (512, 512, 4)


def test_missing_source_falls_back_to_the_crop(subject, speech, tmp_path):
    copy = tmp_path / "moved"
    shutil.copytree(subject.root, copy)
    meta = read_meta(copy)   # the clip was moved away since preprocessing
    meta.source.path = str(tmp_path / "gone.mp4")
    atomic_write_json(copy / "subject.json", meta.to_dict())
    run_engine("render", copy, "--audio", speech, "-o", tmp_path / "out", "--frames", "0:1")
    assert read_png(tmp_path / "out" / "000000.png").shape == (96, 96, 3)


def test_evaluate_writes_report_grid_and_plot(subject, tmp_path):
    run_engine("evaluate", subject.root, "-o", tmp_path / "report", "--limit", "3", "--samples", "2")
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    summary = report["summary"]
    assert summary["frames"] == 3 and len(report["frames"]) == 3
    scored = scoring_window(subject, subject.split("test"), 3)
    assert [f["index"] for f in report["frames"]] == scored.tolist()
    assert report["deepest_blink"] == round(float(lid_closure(subject, scored).max()), 3)
    for region in ("face", "portrait", "raw"):
        assert 5 < summary[region]["psnr"] < 60 and 0 < summary[region]["ssim"] <= 1
    # Pasting onto the truth copies everything outside the face: it can only score higher than the raw render.
    assert summary["portrait"]["psnr"] > summary["raw"]["psnr"]
    grid = read_png(tmp_path / "report" / "comparison.png")
    assert grid.shape[1] == 3 * 96 and grid.shape[0] > 2 * 96
    assert read_png(tmp_path / "report" / "mouth_opening.png").shape[2] in (3, 4)


def test_a_composited_frame_renders_only_the_face_and_looks_the_same(subject):
    """Portrait-Sync keeps only the face of a render: rendering only the face's pixels changes nothing
    in the composite, and leaves the hair and neck to the torso layer."""
    from engine.nerf.talking_head import TalkingHead
    from engine.portrait.composite import as_uint8, face_layer, over_frame
    from engine.render.driving import drive_frames
    from engine.render.pipeline import render_frame
    head = TalkingHead.load(subject, device="cpu")
    frames = subject.split("test")[:2]
    driving = drive_frames(subject, frames, head.audio_encoder, head.audio_window)
    for j, index in enumerate(frames):
        mask = subject.face_mask(int(index))
        whole, face_only = render_frame(head, driving, j), render_frame(head, driving, j, within=mask)
        assert np.abs(whole - face_only).max() > 0.05  # something outside the face was left out
        composites = [as_uint8(over_frame(face_layer(r, subject.frame(int(index)), mask), subject.frame(int(index))))
                      for r in (whole, face_only)]
        assert np.abs(composites[0].astype(int) - composites[1].astype(int)).max() <= 1


def test_the_scored_window_holds_a_blink_and_the_most_speech_of_the_held_out_frames(subject):
    held_out = subject.split("test")
    curves = subject.tracks["blendshapes"][held_out]
    closure = curves[:, [ARKIT_INDEX["eyeBlinkLeft"], ARKIT_INDEX["eyeBlinkRight"]]].mean(axis=1)
    jaw = curves[:, ARKIT_INDEX["jawOpen"]]
    half_deep = closure.min() + 0.5 * (closure.max() - closure.min())
    for count in (3, len(held_out) - 2):
        window = scoring_window(subject, held_out, count)
        assert len(window) == count and np.all(np.diff(window) == 1) and set(window) <= set(held_out)
        inside = np.isin(held_out, window)
        assert closure[inside].max() >= half_deep
        for start in range(len(held_out) - count + 1):  # no other window with such a blink moves the jaw more
            if closure[start:start + count].max() >= half_deep:
                assert jaw[start:start + count].std() <= jaw[inside].std() + 1e-9
    assert scoring_window(subject, held_out, len(held_out) + 5).tolist() == held_out.tolist()


def test_a_range_of_a_long_speech_drives_from_only_the_speech_it_needs(subject, tmp_path):
    """Frames 0:50 of an hour of streamed speech: the same driving as the first minute gives them, in a few MB."""
    import tracemalloc
    from engine.audio.features import SpeechFeatures
    from engine.render.driving import drive_speech
    from test_speech_features import _looped, _stereo_44k
    base = _stereo_44k(tmp_path)
    tracemalloc.start()
    try:
        piece = drive_speech(subject, SpeechFeatures(_looped(base, 3600)), "mel", 8, start=0, stop=50)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    minute = drive_speech(subject, SpeechFeatures(_looped(base, 60)), "mel", 8)
    assert len(piece) == 50 and piece.first == 0
    np.testing.assert_allclose(piece.audio, minute.audio[:50], atol=1e-5)
    np.testing.assert_array_equal(piece.frame_index, minute.frame_index[:50])
    assert peak < 64 * 2 ** 20, f"peak {peak / 2 ** 20:.0f} MB"


FRAME_RATES = (24000 / 1001, 24.0, 25.0, 30000 / 1001, 30.0, 50.0, 60.0)  # Blender's 23.976 and 29.97 are NTSC


def alignment_error(driving, samples, fps: float, seconds: float = 5.0) -> int:
    """Frames by which the driving's sound lags the sound at the frames' own times, over the last `seconds`:
    the lag that best lines up the loudness its audio windows carry with the loudness of the samples
    under each frame (the window's centre is the frame's own time)."""
    n = len(driving)
    edges = np.round(np.arange(n + 1) / fps * 16000).astype(int)
    loudness = np.array([np.log(np.mean(samples[a:b] ** 2) + 1e-8) for a, b in zip(edges[:-1], edges[1:])])
    carried = driving.audio[:, driving.audio.shape[1] // 2].mean(axis=1)  # the log-mel level of the frame itself
    last = int(seconds * fps)
    lags = range(-12, 13)
    score = [np.corrcoef(carried[n - last - 12: n - 12], loudness[n - last - 12 + lag: n - 12 + lag])[0, 1]
             for lag in lags]
    return lags[int(np.argmax(score))]


@pytest.mark.parametrize("fps", FRAME_RATES, ids=lambda f: f"{f:.3f}fps")
def test_frames_stay_on_the_sound_for_a_minute_at_any_frame_rate(subject, fps):
    """A minute of speech driven at the edit's frame rate: as many frames as the sound covers, and the
    last seconds' frames carry the sound at their own times (0 frames off; the subject is at 25 fps)."""
    from engine.media.audio import load_audio
    from engine.render.driving import drive_speech
    from conftest import shared_file
    samples = load_audio(shared_file("audio", "en_60s.wav"))
    assert len(samples) == 60 * 16000
    driving = drive_speech(subject, samples, "mel", 8, fps=fps)
    assert driving.fps == fps and len(driving) == int(np.floor(60 * fps + 1e-6))
    # The last frame starts before the sound ends and the next one would not: the strips end together.
    assert (len(driving) - 1) / fps < 60 <= (len(driving) + 1) / fps
    assert alignment_error(driving, samples, fps) == 0


def test_render_command_writes_the_edits_frame_rate(subject, speech, tmp_path):
    """`render --fps`: an mp4 at the scene's 29.97 fps, and PNGs numbered on that rate's frames to the end."""
    from engine.media.audio import load_audio
    fps = 30000 / 1001
    n = int(np.floor(len(load_audio(speech)) / 16000 * fps + 1e-6))
    run_engine("render", subject.root, "--audio", speech, "--fps", repr(fps), "--crop", "--frames", "0:3",
               "-o", tmp_path / "piece.mp4")
    assert probe(tmp_path / "piece.mp4").fps == pytest.approx(29.97, abs=0.01)
    run_engine("render", subject.root, "--audio", speech, "--fps", repr(fps), "--crop", "--frames", f"{n - 2}:",
               "-o", tmp_path / "end")
    assert sorted(p.name for p in (tmp_path / "end").iterdir()) == [f"{n - 2:06d}.png", f"{n - 1:06d}.png"]
    with pytest.raises(SystemExit):  # argparse refuses text; a rate out of range is one clear message
        run_engine("render", subject.root, "--audio", speech, "--fps", "fast", "-o", tmp_path / "x")
    assert main(["render", str(subject.root), "--audio", str(speech), "--fps", "0", "-o", str(tmp_path / "x"),
                 "--progress", "quiet"]) == 2
    (tmp_path / "cut.mp4").mkdir()   # an existing folder named like the video: refused before rendering
    assert main(["render", str(subject.root), "--audio", str(speech), "-o", str(tmp_path / "cut.mp4"),
                 "--progress", "quiet"]) == 2
    assert not list(tmp_path.glob(".cut.partial*"))


def test_a_render_never_writes_over_what_it_reads(subject, speech, tmp_path, capsys):
    """An output named like the speech, the subject's source clip or one of the subject's own files or folders is
    refused before anything is written (a render into the subject's frames/ broke the next render); a folder of
    its own in the subject (Blender's renders/) is fine. An output of another file type is refused too, not
    turned into a folder of frames under that name."""
    speech = shared_file("video", "may_5s.mp4")           # a clip's sound as the speech: named like an output
    copy = shutil.copy(speech, tmp_path / "line.mp4")
    clip = subject.meta.source.clip_in(subject.root)
    before = {path: path.stat().st_mtime_ns for path in (clip, subject.root / "frames" / "000000.png")}
    for output, words in ((copy, "is the speech it renders"), (clip, "is the subject's source clip"),
                          (subject.root / "frames", "is one of the subject's own files or folders"),
                          (tmp_path / "take.avi", "is written as an mp4 .* or a folder of PNG frames")):
        assert main(["render", str(subject.root), "--audio", str(copy), "-o", str(output), "--frames", "0:2",
                     "--progress", "quiet"]) == 2
        assert re.search(words, capsys.readouterr().err), words
    assert {path: path.stat().st_mtime_ns for path in before} == before and not (tmp_path / "take.avi").exists()
    assert load_audio_length(copy) == load_audio_length(speech)
    renders = subject.root / "renders" / "take.mp4"
    try:
        run_engine("render", subject.root, "--audio", copy, "-o", renders, "--frames", "0:2", "--crop")
        assert probe(renders).has_video
    finally:
        shutil.rmtree(subject.root / "renders")


def load_audio_length(path) -> int:
    from engine.media.audio import load_audio
    return len(load_audio(path))


def test_preprocessing_a_trained_subject_again_is_asked_for_and_keeps_the_users_files(subject, tmp_path, capsys):
    """Preprocess into a subject that holds a trained head: refused (the head would be dropped) unless --replace;
    with it, the subject is made anew and files of the user's in its folder (renders/) stay."""
    copy = shutil.copytree(subject.root, tmp_path / "may")
    (copy / "renders").mkdir()
    (copy / "renders" / "take1.mp4").write_bytes(b"a render of mine")
    clip = subject.meta.source.clip_in(subject.root)
    argv = ["preprocess", str(clip), "-o", str(copy), "--size", "64", "--end", "3", "--progress", "quiet"]
    assert main(argv) == 2
    assert "holds a trained head (model/), which preprocessing again would drop" in capsys.readouterr().err
    assert (copy / "model" / "head.safetensors").is_file()
    assert main([*argv, "--replace"]) == 0
    assert Subject(copy).size == 64 and not (copy / "model").exists()
    assert (copy / "renders" / "take1.mp4").read_bytes() == b"a render of mine"


def test_frames_an_earlier_longer_render_left_in_a_png_folder_are_named(subject, speech, tmp_path, capsys):
    """A folder of frames rendered again from shorter speech: the earlier render's frames past this one's end
    would play on after it; the render says so (frames of the same speech, a split render's pieces, are not)."""
    from engine.media.audio import load_audio, write_wav
    short = write_wav(tmp_path / "short.wav", load_audio(speech)[:16000])   # 25 frames
    run_engine("render", subject.root, "--audio", speech, "-o", tmp_path / "take", "--frames", "30:32", "--crop")
    run_engine("render", subject.root, "--audio", speech, "-o", tmp_path / "take", "--frames", "0:2", "--crop")
    assert "numbered past" not in capsys.readouterr().err
    run_engine("render", subject.root, "--audio", short, "-o", tmp_path / "take", "--frames", "0:2", "--crop")
    assert "holds 2 frames numbered past this speech's 25 (from an earlier render)" in capsys.readouterr().err
