"""A plate delivered as numbered frames (PNG, OpenEXR) instead of a video file: found by its pattern or folder,
checked for missing frames, encoded once into a working copy that the subject keeps, and pasted back into by a
full-frame render wherever the subject folder has moved. Real ffmpeg, real MediaPipe."""
import json
import shutil
import subprocess
from contextlib import ExitStack
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import events, run_engine, shared_file
from engine.errors import EngineError
from engine.media.audio import load_audio
from engine.media.ffmpeg import ffmpeg_exe
from engine.media.sequence import encode_working_copy, find_image_sequence, image_sequence_of_files, is_image_sequence
from engine.media.video import read_frames
from engine.progress import Progress
from engine.subject.schema import SubjectMeta


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255 ** 2 / np.mean((a.astype(float) - b.astype(float)) ** 2)))


def _png_plate(folder: Path, seconds: float, first: int = 1001) -> Path:
    """lieu's first `seconds` as plate.NNNN.png numbered from `first`, and its sound beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    lieu = shared_file("video", "lieu_60s.mp4")
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-i", str(lieu), "-t", str(seconds), "-start_number",
                    str(first), str(folder).replace("%", "%%") + "/plate.%04d.png"], check=True)
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-i", str(lieu), "-t", str(seconds), "-vn",
                    str(folder.parent / "plate.wav")], check=True)
    return folder / "plate.####.png"


def _touch(folder: Path, names) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_a_plate_is_named_by_its_pattern_or_its_folder(tmp_path):
    _touch(tmp_path / "sh010", [f"plate.{n:04d}.exr" for n in range(1001, 1011)] + ["notes.txt"]
           + [f"._plate.{n:04d}.exr" for n in range(1001, 1004)])   # a Mac's AppleDouble files on a shared drive
    for name in ("sh010", "sh010/plate.####.exr", "sh010/plate.%04d.exr"):
        sequence = find_image_sequence(tmp_path / name)
        assert (sequence.first, sequence.count, sequence.digits) == (1001, 10, 4)
        assert sequence.name == str(tmp_path / "sh010" / "plate.####.exr")
        assert sequence.ffmpeg_pattern == str(tmp_path / "sh010" / "plate.%04d.exr")
    # frames numbered without padding, and an image strip's list of them
    _touch(tmp_path / "raw", [f"f{n}.png" for n in range(1, 13)])
    sequence = find_image_sequence(tmp_path / "raw")
    assert (sequence.first, sequence.count, sequence.digits, sequence.ffmpeg_pattern) == (
        1, 12, 0, str(tmp_path / "raw" / "f%d.png"))
    files = [tmp_path / "sh010" / f"plate.{n:04d}.exr" for n in range(1001, 1011)]
    assert image_sequence_of_files(files).name == str(tmp_path / "sh010" / "plate.####.exr")
    # %d names padded frames by their own padding; a # before the frame number's is the name's
    assert find_image_sequence(tmp_path / "sh010" / "plate.%d.exr").ffmpeg_pattern.endswith("plate.%04d.exr")
    _touch(tmp_path / "takes", [f"take#1_{n:04d}.png" for n in range(1, 4)] + ["Interview #3.mov"])
    assert find_image_sequence(tmp_path / "takes" / "take#1_####.png").count == 3
    assert is_image_sequence(tmp_path / "takes" / "take#1_####.png")
    assert not is_image_sequence(tmp_path / "takes" / "Interview #3.mov")   # a clip named with a #


@pytest.mark.parametrize("names,where,words", [
    (["a.0001.png", "a.0002.png", "b.0001.png", "b.0002.png"], ".", "holds 2 image sequences"),
    (["readme.txt"], ".", "holds no numbered image frames"),
    (["plate.0001.png"], "plate.%03d.png", "no frames match it"),
])
def test_a_folder_or_pattern_of_no_single_run_is_refused(tmp_path, names, where, words):
    _touch(tmp_path / "plate", names)
    with pytest.raises(EngineError, match=words):
        find_image_sequence(tmp_path / "plate" / where)


def test_a_gap_in_a_plate_refuses_only_the_part_of_it_that_spans_the_gap(tmp_path):
    """A plate's missing frame is an error in its delivery where the edit uses it (read past it, every later
    frame would be late), and none elsewhere: a long plate whose later frames are not rendered yet, say."""
    _touch(tmp_path, [f"plate.{n:04d}.png" for n in (1, 2, 3, 6, 7)])
    plate = find_image_sequence(tmp_path / "plate.####.png")
    assert (plate.first, plate.count, plate.gaps) == (1, 7, ((4, 6),))
    assert plate.part(0, 3).gaps == () and plate.part(4, 3).gaps == ((5, 6),) and plate.part(5, 2).first == 6
    plate.part(0, 3).require_every_frame()
    for refused in (plate.part(2, 3), plate):
        with pytest.raises(EngineError, match=r"plate.####.png: 2 of frames \d-\d are missing \(the first 4\)"):
            refused.require_every_frame()
    with pytest.raises(EngineError, match=r"2 of frames 1-7 are missing \(the first 4\)") as refused:
        encode_working_copy(plate, 25, tmp_path / "copy.mp4", Progress("quiet"))
    assert refused.value.path == str(tmp_path / "plate.0004.png")
    with pytest.raises(EngineError, match=r"2 of frames 1-7 are missing \(the first 4\)"):   # an image strip's
        image_sequence_of_files(sorted(tmp_path.glob("plate.*.png")))
    _touch(tmp_path, ["plate.99999999.png"])   # a stray frame numbered far off: its gap is one range
    assert find_image_sequence(tmp_path).gaps == ((4, 6), (8, 99999999))


def test_an_image_strip_of_frames_that_are_not_one_run_or_not_in_order_is_refused(tmp_path):
    _touch(tmp_path, ["a.0001.png", "a.0002.png", "b.0003.png", "f1.png", "f2.png", "f10.png"])
    with pytest.raises(EngineError, match="not one numbered sequence"):
        image_sequence_of_files([tmp_path / n for n in ("a.0001.png", "a.0002.png", "b.0003.png")])
    # frames listed by name, not number (f10 before f2), as the strip would play them
    for n in range(3, 10):
        (tmp_path / f"f{n}.png").write_bytes(b"")
    by_name = sorted(tmp_path.glob("f*.png"))
    with pytest.raises(EngineError, match=r"play out of their numbers' order \(f2.png after f10.png\)"):
        image_sequence_of_files(by_name)
    assert image_sequence_of_files(sorted(by_name, key=lambda f: int(f.stem[1:]))).count == 10


def test_the_working_copy_keeps_the_frames_and_shows_an_exr_plate_as_a_viewer_does(tmp_path):
    plate = _png_plate(tmp_path / "100% take 2 インタビュー", 0.4)   # a % in the path, as ffmpeg's patterns use it
    copy = encode_working_copy(find_image_sequence(plate), 25, tmp_path / "png.mp4", Progress("quiet"))
    frames = list(read_frames(copy, 25))
    png = [cv2.imread(str(plate.parent / f"plate.{1001 + k:04d}.png"))[..., ::-1] for k in range(10)]
    assert len(frames) == 10 and min(_psnr(f, p) for f, p in zip(frames, png)) > 38
    # The same frames as an OpenEXR plate: scene-linear light, as a renderer or a conform writes it.
    (tmp_path / "exr").mkdir()
    for k, image in enumerate(png[:3]):
        srgb = image.astype(np.float32) / 255
        linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4).astype(np.float32)
        h, w = linear.shape[:2]
        subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgbf32le", "-s",
                        f"{w}x{h}", "-i", "-", "-c:v", "exr", str(tmp_path / "exr" / f"sh010.{k + 1:03d}.exr")],
                       input=linear.tobytes(), check=True)
    copy = encode_working_copy(find_image_sequence(tmp_path / "exr"), 24, tmp_path / "exr.mp4", Progress("quiet"))
    frames = list(read_frames(copy, 24))
    assert len(frames) == 3
    # (read as stored, without the sRGB curve, these frames scored 12.0 dB against the PNGs)
    assert min(_psnr(f, p) for f, p in zip(frames, png)) > 38
    assert abs(frames[0].mean() - png[0].mean()) < 1.5


def test_a_plate_whose_frames_differ_in_size_or_do_not_decode_is_refused(tmp_path):
    """ffmpeg would scale a frame of another size (a proxy among the plate's) to the first's and skip one that
    does not decode: each is refused, naming the plate, and no working copy is left behind."""
    for size, first in (("320x240", 1), ("400x300", 6)):
        subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc=size={size}:rate=25",
                        "-frames:v", "5", "-start_number", str(first), str(tmp_path / "p.%04d.png")], check=True)
    with pytest.raises(EngineError, match=r"p.####.png: its frames are not all one size \(320x240, 400x300\)"):
        encode_working_copy(find_image_sequence(tmp_path), 25, tmp_path / "copy.mp4", Progress("quiet"))
    for n in range(6, 11):
        (tmp_path / f"p.{n:04d}.png").unlink()
    (tmp_path / "p.0003.png").write_bytes(b"not a picture")
    with pytest.raises(EngineError, match=r"p.0003.png: does not decode \(.*\); 4 of .*p.####.png's 5 frames"):
        encode_working_copy(find_image_sequence(tmp_path), 25, tmp_path / "copy.mp4", Progress("quiet"))
    # a part of the plate with frames after it: ffmpeg reads on to the next one and counts the frames all there
    with pytest.raises(EngineError, match=r"p.0003.png: does not decode"):
        encode_working_copy(find_image_sequence(tmp_path).part(0, 4), 25, tmp_path / "copy.mp4", Progress("quiet"))
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("p.")) == []


@pytest.mark.slow
def test_a_subject_is_made_from_a_plate_and_keeps_its_working_copy(tmp_path):
    from engine.render.pipeline import Framing
    from engine.subject import Subject
    plate = _png_plate(tmp_path / "plate", 3.0)
    subject = tmp_path / "subjects" / "plate"
    # a plate has neither a frame rate nor a sound of its own
    for argv, words in (([], "an image sequence has no frame rate of its own"),
                        (["--sequence-fps", "25"], "an image sequence has no sound")):
        proc = run_engine("preprocess", plate, "-o", subject, *argv)
        assert proc.returncode != 0 and words in proc.stdout
    proc = run_engine("preprocess", shared_file("video", "may_5s.mp4"), "-o", subject, "--sequence-fps", "25")
    assert proc.returncode != 0 and "--sequence-fps is for an image sequence" in proc.stdout
    # frames missing outside the span used (1003; 1072 on): only the span's 2.2 s are encoded and checked
    for n in (1003, *range(1072, 1076)):
        (plate.parent / f"plate.{n}.png").unlink()
    (plate.parent / "plate.1075.png").write_bytes(b"")   # the run's last, a frame not rendered yet
    # times in messages are the plate's (its working copy starts at its frame 1011, 0.4 s in)
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-i", str(tmp_path / "plate.wav"), "-t", "1",
                    str(tmp_path / "short.wav")], check=True)
    proc = run_engine("preprocess", plate, "-o", subject, "--sequence-fps", "25", "--audio", tmp_path / "short.wav",
                      "--start", "0.4", "--end", "2.6", "--size", "64")
    assert proc.returncode != 0 and "covers 0.00-1.00 s of the clip plate.####.png, which plays 0.40-2.60 s" in proc.stdout
    proc = run_engine("preprocess", plate, "-o", subject, "--sequence-fps", "25", "--audio",
                      tmp_path / "plate.wav", "--start", "0.4", "--end", "2.6", "--size", "64")
    assert proc.returncode == 0, proc.stderr
    assert any(e["event"] == "progress" and e.get("stage") == "image sequence" for e in events(proc))
    assert sorted(p.name for p in subject.parent.iterdir()) == ["plate"]   # no working files left beside it
    meta = Subject(subject).meta
    source = meta.source
    assert (source.path, source.sequence, source.sequence_first, source.first_frame) == (
        "source.mp4", str(plate), 1011, 0)
    assert (source.width, source.height, source.fps, meta.frames) == (256, 256, 25.0, 55)
    assert source.audio_offset == pytest.approx(0.4)   # the recording's second at the copy's first frame
    heard, recorded = load_audio(subject / "audio.wav"), load_audio(tmp_path / "plate.wav")[int(0.4 * 16000):]
    assert np.corrcoef(heard[:30000], recorded[:30000])[0, 1] > 0.99
    written = json.loads((subject / "subject.json").read_text())
    assert SubjectMeta.from_dict(written, subject / "subject.json").to_dict() == written   # read back as written
    # The subject moved (a project handed on): the full-frame render still finds its plate.
    moved = shutil.move(str(subject), tmp_path / "handed_on")
    with ExitStack() as stack:
        framing = Framing(Subject(moved), True, [0, 1, 2], Progress("quiet"), stack)
        assert framing.full and framing.size(64) == (256, 256)
        served = [framing.source[k] for k in range(3)]
    for k, frame in enumerate(served):   # subject frame k is the plate's frame 1001 + 10 + k
        assert _psnr(frame, cv2.imread(str(plate.parent / f"plate.{1011 + k}.png"))[..., ::-1]) > 38
