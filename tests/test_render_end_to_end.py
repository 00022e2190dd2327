"""render and evaluate on a real subject (3 s of may_5s at 96 px) with a `tiny`-preset model (conftest).

The NeRF is the expensive part on CPU: each test renders only a handful of frames.
"""
import json
import shutil

import cv2
import numpy as np
import pytest

from engine.cli import main
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


def test_split_render_equals_whole_render(subject, speech, tmp_path):
    turn = len(subject.split("train"))  # the ping-pong turns at the last training frame: straddle it
    for folder, frames in (("whole", f"{turn - 1}:{turn + 2}"), ("pieces", f"{turn - 1}:{turn}"),
                           ("pieces", f"{turn}:{turn + 2}")):
        run_engine("render", subject.root, "--audio", speech, "-o", tmp_path / folder, "--frames", frames)
    whole = sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert whole == [f"{i:06d}.png" for i in range(turn - 1, turn + 2)]
    assert sorted(p.name for p in (tmp_path / "pieces").iterdir()) == whole
    for name in whole:
        assert np.array_equal(read_png(tmp_path / "whole" / name), read_png(tmp_path / "pieces" / name)), name
    # Full frame by default: the 512-px source frame, with only the face changed.
    assert read_png(tmp_path / "whole" / whole[0]).shape == (512, 512, 3)


def test_render_mp4_at_crop_size_carries_the_speech(subject, speech, tmp_path):
    out = tmp_path / "speech.mp4"
    run_engine("render", subject.root, "--audio", speech, "-o", out, "--crop", "--frames", "0:3")
    info = probe(out)
    assert (info.width, info.height) == (96, 96) and info.has_audio and info.video_codec == "h264"
    assert info.duration == pytest.approx(0.12, abs=0.05)


def test_rendered_face_joins_the_frame_without_a_seam(subject):
    from engine.audio.features import frame_features, get_encoder, windows
    from engine.media.audio import load_audio
    from engine.nerf.model import TalkingHead
    from engine.portrait.composite import face_layer, over_frame
    from test_portrait import edge_band, gradient_energy
    head = TalkingHead.load(subject, device="cpu")
    encoder = get_encoder(head.audio_encoder)
    features = windows(frame_features(encoder.encode(load_audio(subject.audio_path)), encoder.rate, subject.fps,
                                      subject.n_frames), head.audio_window)
    pasted, source = 0.0, 0.0
    for index in subject.split("test")[:2]:
        frame, mask = subject.frame(index), subject.face_mask(index)
        render = head.render(int(index), features[index])
        band = edge_band(mask, 4)
        pasted += gradient_energy(over_frame(face_layer(render, frame, mask), frame), band)
        source += gradient_energy(frame, band)
    assert pasted <= source * 1.02


def test_curves_drive_blendshapes_and_poses(subject, speech, tmp_path):
    from engine.curves import Curves
    from engine.media.audio import load_audio
    from engine.render.driving import drive_speech, ping_pong
    from engine.tracking.headpose import head_motion_from_poses, reference_pose
    tracks = subject.tracks
    replay = ping_pong(200, subject.split("train"))
    rotation, translation = head_motion_from_poses(tracks["pose"][replay], reference_pose(tracks["pose"]))
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
    assert report["frames"][0]["index"] == int(subject.split("test")[0])
    for region in ("face", "portrait", "raw"):
        assert 5 < summary[region]["psnr"] < 60 and 0 < summary[region]["ssim"] <= 1
    # Pasting onto the truth copies everything outside the face: it can only score higher than the raw render.
    assert summary["portrait"]["psnr"] > summary["raw"]["psnr"]
    grid = read_png(tmp_path / "report" / "comparison.png")
    assert grid.shape[1] == 3 * 96 and grid.shape[0] > 2 * 96
    assert read_png(tmp_path / "report" / "mouth_opening.png").shape[2] in (3, 4)
