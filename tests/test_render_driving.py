"""Render inputs and outputs that need no trained model: ping-pong replay, curve resampling, ranges, writers."""
import cv2
import numpy as np
import pytest

from engine.curves import Curves
from engine.errors import EngineError
from engine.media.ffmpeg import probe
from engine.audio.features import frame_count
from engine.render.driving import Driving, parse_range, ping_pong, resample_curves
from engine.render.output import Mp4Output, PngSequence, choose_format


def test_ping_pong_walks_forward_and_back_like_the_original():
    train = np.array([10, 11, 12, 13])
    assert ping_pong(11, train).tolist() == [10, 11, 12, 13, 13, 12, 11, 10, 10, 11, 12]
    # A piece of a long render has the same phase as the whole.
    assert ping_pong(30, train)[17:23].tolist() == ping_pong(23, train)[17:].tolist()


def test_driving_slices_keep_their_place_in_the_whole():
    n = 10
    whole = Driving(25.0, np.arange(n), np.random.rand(n, 8, 4).astype(np.float32), np.random.rand(n, 52),
                    np.tile(np.eye(4), (n, 1, 1)))
    piece = whole.slice(3, 7).slice(1, 3)
    assert piece.first == 4 and len(piece) == 2
    assert np.array_equal(piece.audio, whole.audio[4:6])


def test_frame_ranges():
    assert parse_range(None, 100) == (0, 100)
    assert parse_range("10:20", 100) == (10, 20)
    assert parse_range(":20", 100) == (0, 20)
    assert parse_range("90:", 100) == (90, 100)
    assert parse_range("90:200", 100) == (90, 100)
    for bad in ("5", "a:b", "20:10", "100:120"):
        with pytest.raises(EngineError):
            parse_range(bad, 100)
    assert frame_count(16000 * 2, 25) == 50
    assert frame_count(16000 * 2 + 100, 25) == 50
    assert frame_count(16000 * 2 - 1, 25) == 49


def test_curves_are_resampled_to_the_subject_rate():
    t = (np.arange(120) + 0.5) / 60.0              # 2 s of curves at 60 fps, each value at its frame's centre
    weights = np.zeros((120, 52), np.float32)
    weights[:, 17] = t / 2                          # jawOpen ramps 0 -> 1
    rotation = np.stack([np.sin(t), t, -t], axis=1)
    curves = Curves(60.0, weights, rotation, np.zeros((120, 3)))
    w, r, tr = resample_curves(curves, 25.0, 50)
    frame_times = (np.arange(50) + 0.5) / 25.0
    assert np.allclose(w[:, 17], frame_times / 2, atol=1e-6)
    assert np.allclose(r[:, 1], frame_times, atol=1e-6)
    assert np.allclose(r[:, 0], np.sin(frame_times), atol=1e-3)  # linear interpolation of a smooth curve
    assert tr.shape == (50, 3)


def test_short_curves_hold_their_last_value_and_say_so():
    from engine.progress import Progress
    curves = Curves(25.0, np.full((10, 52), 0.3, np.float32))
    progress = Progress("quiet")
    w, _, _ = resample_curves(curves, 25.0, 20, progress, "short.stcurves")
    assert np.allclose(w, 0.3) and len(w) == 20
    assert progress.warnings and "short.stcurves" in progress.warnings[0]
    # ... but only where the frames rendered pass their end: keys of a line trimmed short of its file's end
    quiet = Progress("quiet")
    w, _, _ = resample_curves(curves, 25.0, 200, quiet, "line.stcurves", 0, 10)
    assert len(w) == 10 and not quiet.warnings


def test_output_format_follows_the_name(tmp_path):
    assert choose_format(None, tmp_path / "a.mp4") == "mp4"
    assert choose_format(None, tmp_path / "frames") == "png"
    assert choose_format("rgba", tmp_path / "frames") == "rgba"
    with pytest.raises(EngineError):
        choose_format("mp4", tmp_path / "frames")
    with pytest.raises(EngineError):
        choose_format("png", tmp_path / "a.mp4")


def test_mp4_of_a_range_carries_that_slice_of_the_speech(tmp_path):
    from conftest import shared_file
    speech = shared_file("video", "may_5s.mp4")    # any file with a sound track
    out = tmp_path / "piece.mp4"
    writer = Mp4Output(out, 64, 48, 25.0, speech, first=25, count=50)  # frames 25..74: 1 s to 3 s
    for k in range(50):
        writer.write(25 + k, np.full((48, 64, 3), 5 * k, np.uint8))
    writer.close()
    info = probe(out)
    assert info.has_video and info.has_audio and (info.width, info.height) == (64, 48)
    assert info.duration == pytest.approx(2.0, abs=0.1)
    assert not list(tmp_path.glob(".*"))            # no temporary audio or partial video left


@pytest.mark.parametrize("fps,first,count,speech", [(30000 / 1001, 31, 59, "zh_8s.wav"), (23.976, 0, 95, "zh_8s.wav"),
                                                    (59.94, 0, 93, "zh_8s.wav"), (25.0, 100, 26, "may_5s.mp4")])
def test_mp4_keeps_every_frame_at_ntsc_rates_and_to_the_speechs_end(tmp_path, fps, first, count, speech):
    """At 23.976, 29.97 and 59.94 fps a range's time is a fraction of a sample longer than its slice of the
    speech, and ffmpeg's -shortest dropped the last frame (a farm render joined from pieces lost one a piece);
    the same where the last frame starts as the speech ends (may_5s: 5.0 s, frames 100-125 at 25 fps)."""
    from conftest import shared_file
    from engine.media.video import read_frames
    out = tmp_path / "piece.mp4"
    writer = Mp4Output(out, 32, 32, fps, shared_file("video" if speech.endswith("mp4") else "audio", speech),
                       first=first, count=count)
    for k in range(count):
        writer.write(first + k, np.full((32, 32, 3), 2 * k, np.uint8))
    writer.close()
    assert sum(1 for _ in read_frames(out, fps)) == count


def test_png_sequence_names_frames_by_their_place_in_the_whole(tmp_path):
    sequence = PngSequence(tmp_path / "frames")
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 100
    sequence.write(42, rgba)
    back = cv2.imread(str(tmp_path / "frames" / "000042.png"), cv2.IMREAD_UNCHANGED)
    assert back.shape == (8, 8, 4) and back[0, 0].tolist() == [0, 0, 200, 100]  # BGRA on disk
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["000042.png"]
