"""The engine's foundation: model lookup, media I/O, progress protocol, CLI error handling, curves files."""
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED, shared_file
from engine.arkit import ARKIT_NAMES
from engine.curves import Curves
from engine.errors import EngineError
from engine.media.ffmpeg import probe
from engine.media.video import VideoWriter, read_frames
from engine.models import find_model
from engine.progress import Progress

ROOT = Path(__file__).resolve().parent.parent


def test_models_found_through_setting_then_environment(tmp_path, monkeypatch):
    assert find_model("face_landmarker").parent == Path(SHARED / "models")
    # An explicit folder (the Blender preference) wins over the environment variable.
    (tmp_path / "selfie_segmenter.tflite").write_bytes(b"x")
    assert find_model("selfie_segmenter", tmp_path) == tmp_path / "selfie_segmenter.tflite"


def test_missing_model_offline_names_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNCTALK_MODELS", str(tmp_path / "empty"))
    monkeypatch.setenv("SYNCTALK_CACHE", str(tmp_path / "cache"))
    with pytest.raises(EngineError) as err:
        find_model("whisper-base", download=False)
    assert "whisper-base" in err.value.message and "SYNCTALK_MODELS" in err.value.hint


def test_decode_resamples_to_constant_rate():
    clip = shared_file("video", "may_5s.mp4")
    info = probe(clip)
    assert (info.width, info.height, info.has_audio) == (512, 512, True)
    frames25 = sum(1 for _ in read_frames(clip, 25, info))
    frames30 = sum(1 for _ in read_frames(clip, 30, info))
    assert frames25 == pytest.approx(125, abs=1) and frames30 == pytest.approx(150, abs=1)


def test_video_writer_muxes_h264_and_aac(tmp_path):
    clip = shared_file("video", "may_5s.mp4")
    frames = [f[::4, ::4] for _, f in zip(range(25), read_frames(clip, 25))]
    out = tmp_path / "out.mp4"
    with VideoWriter(out, 128, 128, 25, audio=shared_file("audio", "zh_8s.wav")) as writer:
        for frame in frames:
            writer.write(frame)
    info = probe(out)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert not list(tmp_path.glob(".*partial*"))
    decoded = list(read_frames(out, 25))
    assert len(decoded) == 25
    # H.264 at crf 18 is close to the input.
    assert np.abs(decoded[10].astype(float) - frames[10]).mean() < 4


def test_writer_failure_leaves_no_file(tmp_path):
    out = tmp_path / "never.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(out, 64, 64, 25) as writer:
            writer.write(np.zeros((64, 64, 3), np.uint8))
            raise RuntimeError("render crashed")
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("content", [b"", b"this is not a video at all\n" * 10])
def test_bad_media_files_get_clear_errors(tmp_path, content):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(content)
    with pytest.raises(EngineError) as err:
        probe(bad)
    assert str(bad) in err.value.message


def test_progress_jsonl_protocol():
    stream = io.StringIO()
    progress = Progress("jsonl", stream)
    with progress.stage("train", total=3) as stage:
        for step in range(3):
            stage.advance(loss=1.0 / (step + 1))
    progress.warn("clip is short")
    progress.result(subject="/tmp/s")
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert events[0] == {"event": "stage", "stage": "train", "total": 3}
    last_progress = [e for e in events if e["event"] == "progress"][-1]
    assert last_progress["done"] == 3 and last_progress["metrics"]["loss"] == pytest.approx(1 / 3)
    assert events[-2] == {"event": "warning", "message": "clip is short"}
    assert events[-1] == {"event": "result", "subject": "/tmp/s"}


def test_cli_reports_errors_without_traceback(tmp_path):
    env = {"SYNCTALK_MODELS": str(tmp_path), "SYNCTALK_CACHE": str(tmp_path / "c"), "SYNCTALK_OFFLINE": "1",
           "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "engine", "models", "--progress", "jsonl"], cwd=ROOT,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    error = json.loads(proc.stdout.splitlines()[-1])
    assert error["event"] == "error" and "face_landmarker" in error["message"] and error["hint"]


def test_curves_file_round_trip_is_lossless(tmp_path):
    rng = np.random.default_rng(0)
    curves = Curves(29.97, rng.random((40, 52)), rng.normal(size=(40, 3)), rng.normal(size=(40, 3)))
    loaded = Curves.load(curves.save(tmp_path / "take.stcurves"))
    assert loaded.fps == 29.97
    for name in ("weights", "head_rotation", "head_translation"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(curves, name))
    assert len(ARKIT_NAMES) == 52 and ARKIT_NAMES[0] == "eyeBlinkLeft" and ARKIT_NAMES[-1] == "tongueOut"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_models_and_curves_files_get_the_mode_of_any_new_file(tmp_path, umask, mode):
    """safetensors writes owner-only files; ours (an expression model, a take's curves) follow the umask, so a
    model trained into a studio's shared folder opens for the colleagues who can read that folder."""
    import os
    import stat
    from engine.expression.model import ExpressionConfig, ExpressionNet
    previous = os.umask(umask)
    try:
        model = ExpressionNet(ExpressionConfig(encoder="mel", dim=4)).save(tmp_path / "studio.safetensors")
        take = Curves(25, np.zeros((5, 52)), np.zeros((5, 3)), np.zeros((5, 3))).save(tmp_path / "take.stcurves")
    finally:
        os.umask(previous)
    assert [stat.S_IMODE(path.stat().st_mode) for path in (model, take)] == [mode, mode]


def test_a_subject_folder_gets_the_mode_of_any_new_folder(tiny_subject):
    """The subject is built in a temporary folder renamed into place: not an owner-only one (mkdtemp's)."""
    import os
    import stat
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(tiny_subject.stat().st_mode) == 0o777 & ~umask


def test_foreign_file_is_not_taken_for_curves(tmp_path):
    bogus = tmp_path / "take.stcurves"
    bogus.write_bytes(b"\x00" * 64)
    with pytest.raises(EngineError):
        Curves.load(bogus)


ALLOCATION_CHURN = """
import ctypes, resource, sys
from engine.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
SIZE = 64 * 2**20

def churn():
    block = libc.malloc(SIZE)
    ctypes.memset(block, 1, SIZE)  # touch every page, as a tensor being filled does
    libc.free(block)

churn()  # once before counting: the kept case takes its pages here
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    churn()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the setting is glibc's")
def test_engine_process_keeps_freed_memory_instead_of_faulting_it_in_again():
    # 20 blocks of 64 MiB allocated, filled and freed in turn: by default each is mapped anew and faulted in
    # page by page (16,384 faults apiece; 32 with transparent huge pages always on); with the engine's
    # setting they reuse the first block's pages.
    def faults(mode):
        out = subprocess.run([sys.executable, "-c", ALLOCATION_CHURN, mode], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
        return out[0] == "True", int(out[1])
    applied, kept = faults("keep")
    _, default = faults("default")
    assert applied
    assert default >= 20 * 16
    assert kept < default / 10
    source = (ROOT / "engine" / "__main__.py").read_text()
    assert source.index("keep_freed_memory()") < source.index("main()")
