"""Jobs started from Blender (synctalk_blender.jobs over engine.jobs, whose protocol and runner
tests/test_jobs.py covers): the preferences reach the child, one job at a time, cancel, wheels' programs,
the training presets from their owner."""
import os
import time

import pytest

from conftest import shared_file
from synctalk_blender.jobs import Job, JobBusy

pytestmark = pytest.mark.blender


def test_models_preference_reaches_the_child(tmp_path, monkeypatch):
    models = os.environ["SYNCTALK_MODELS"]
    monkeypatch.delenv("SYNCTALK_MODELS")                             # only the preference says where
    monkeypatch.setenv("SYNCTALK_CACHE", str(tmp_path / "cache"))
    state = Job("models", [["models"]], models_dir=models).run_to_end(timeout_s=120)
    assert state.error is None and state.result["face_landmarker"].startswith(models)


def test_cancel_stops_preprocess_cleanly_and_never_blocks_the_poll(tmp_path):
    clip = shared_file("video", "lieu_60s.mp4")
    out = tmp_path / "lieu"
    job = Job("Train lieu", [["preprocess", str(clip), "-o", str(out), "--size", "128"]]).start()
    with pytest.raises(JobBusy):
        Job("second", [["models"]]).start()
    longest = 0.0
    deadline = time.monotonic() + 120
    while job.state.done < 50 and not job.state.finished and time.monotonic() < deadline:
        started = time.perf_counter()
        job.poll()
        longest = max(longest, time.perf_counter() - started)
        time.sleep(0.02)
    assert job.state.stage and job.state.total and not job.state.finished, job.state
    job.cancel()
    state = job.run_to_end(timeout_s=60)
    assert state.cancelled and state.returncode == 130 and state.error is None
    assert not out.exists() and not list(tmp_path.glob(".lieu.partial-*"))   # nothing half-written
    print(f"longest poll while the child ran: {longest * 1000:.2f} ms")
    Job("after", [["models"]]).start().run_to_end(timeout_s=120)   # the slot is free again


def test_a_job_nobody_polls_any_more_frees_the_slot_when_it_ends_and_stops_when_the_extension_goes(tmp_path):
    """A job whose operator Blender dropped (a file loaded while it ran: the modal handler goes, nothing polls
    the job again) kept every later job refused until Blender restarted; Cancel did not free it either. The
    slot is free once its child has ended. Disabling the extension stops a running child."""
    import synctalk_blender
    from synctalk_blender.jobs import current_job
    orphan = Job("orphan", [["models"]]).start()
    orphan._process.wait(timeout=120)                        # it ended; no operator saw it
    Job("next", [["models"]]).start().run_to_end(timeout_s=120)
    running = Job("long", [["animate", str(shared_file("audio", "en_60s.wav")), "--generic", "-o",
                           str(tmp_path / "take.csv")]]).start()
    synctalk_blender.register()
    synctalk_blender.unregister()
    assert current_job() is running
    deadline = time.monotonic() + 30
    while not running.poll().finished and time.monotonic() < deadline:
        time.sleep(0.1)
    assert running.state.cancelled, running.state


def test_an_operator_blender_drops_stops_its_job_and_removes_its_folder(tmp_path):
    """Blender calls a modal operator's `cancel` when it drops it (a file loaded, the window closed): the job's
    child stops, its timer goes, its scratch folder goes. Background bpy has no window manager to run a modal
    operator in, so the context here is a stand-in that records the timer's removal (the one fake: the rest is
    the operators' own class and a real engine child)."""
    from types import SimpleNamespace

    from synctalk_blender.operators import _EngineJobOperator
    operator = _EngineJobOperator()
    operator._tmp = tmp_path / "scratch"
    operator._tmp.mkdir()
    (operator._tmp / "sound.wav").write_bytes(b"a packed sound written out")
    take = tmp_path / "take.csv"
    operator._job = Job("long", [["animate", str(shared_file("audio", "en_60s.wav")), "--generic", "-o",
                                  str(take)]]).start()
    operator._timer, removed = "the job's timer", []
    operator.cancel(SimpleNamespace(window_manager=SimpleNamespace(event_timer_remove=removed.append), workspace=None))
    state = operator._job.run_to_end(timeout_s=60)
    assert state.cancelled and removed == ["the job's timer"]
    assert not operator._tmp.exists() and not take.exists()


def test_programs_unpacked_from_wheels_are_made_executable(tmp_path):
    from synctalk_blender.jobs import make_wheel_programs_executable
    program = tmp_path / "imageio_ffmpeg" / "binaries" / "ffmpeg-linux-x86_64-v9.0.2"
    program.parent.mkdir(parents=True)
    program.write_bytes(b"\x7fELF")
    program.chmod(0o644)                         # as Blender's wheel unpacking leaves it
    (program.parent / "README.md").write_text("not a program")
    (program.parent / "README.md").chmod(0o644)
    assert make_wheel_programs_executable([tmp_path]) == [program]
    assert program.stat().st_mode & 0o111 and not (program.parent / "README.md").stat().st_mode & 0o111
    assert make_wheel_programs_executable([tmp_path]) == []      # already fine: nothing to do


def test_training_presets_are_the_engines_own():
    from engine.nerf.presets import PRESETS
    from synctalk_blender.properties import TRAIN_PRESETS
    assert [(name, description) for name, _, description in TRAIN_PRESETS] == \
        [(p.name, p.description) for p in PRESETS.values()]
