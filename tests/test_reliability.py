"""Nothing breaks, nothing is lost (issue 12): files checked on load, training state kept, one job at a
time per subject and output, full disks, messages that tell the truth.

Each case runs the real engine (in a child process where a crash must not take pytest down) on the
shared tiny subject or small real clips, and asserts the message and that nothing the user had was lost.
The full-disk cases mount a size-limited tmpfs (this needs root) and are skipped, with the reason,
where that is not possible.
"""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from conftest import ENGINE_PYTHON, ROOT, events, interruptible, run_engine
from engine.curves import Curves
from engine.errors import EngineError
from engine.jobs import ERROR, STAGE, child_environment, decode
from engine.subject import Subject


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def error_of(proc) -> dict:
    """The run's one error event; no traceback anywhere."""
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    found = [e for e in events(proc) if e["event"] == "error"]
    assert len(found) == 1, proc.stdout
    return found[0]


def copy_of(folder: Path, tmp_path: Path, name: str = "subject") -> Path:
    shutil.copytree(folder, tmp_path / name)
    return tmp_path / name


def partials(folder: Path) -> list[Path]:
    return [p for p in Path(folder).rglob(".*") if ".partial" in p.name]


def source_temp_folders(pid: int) -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"synctalk-source-{pid}-*"))


def engine_child(*argv) -> subprocess.Popen:
    """A raw child (these tests kill it); engine.jobs.Job is the runner the product uses."""
    return subprocess.Popen([sys.executable, "-m", "engine", *map(str, argv), "--progress", "jsonl"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_environment(),
                            preexec_fn=interruptible)


def wait_for_stage(process: subprocess.Popen, stage: str) -> None:
    for line in process.stdout:
        item = decode(line)
        if item["event"] == STAGE.name and item["stage"] == stage:
            return
    raise AssertionError(f"the job ended before its '{stage}' stage: {process.stderr.read()}")


@contextmanager
def small_disk(folder: Path, size: str):
    """A tmpfs of `size` at `folder`: a disk that fills."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here ({mounted.stderr.strip() or 'mount failed'}); "
                    "the full-disk cases need one (run as root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, leave: int = 0) -> Path:
    """Take all the free space of `folder`'s filesystem but `leave` bytes."""
    filler = folder / "filler"
    free = shutil.disk_usage(folder).free - leave
    with open(filler, "wb") as handle:
        if free > 0:
            os.posix_fallocate(handle.fileno(), 0, free)
    return filler


# subject.json: every bad value one message naming the file and the field
@pytest.mark.parametrize("change,field", [
    ({"frames": -1}, "frames"),
    ({"frames": 10 ** 12}, "frames"),
    ({"frames": 10}, "frames"),                      # fewer than the tracks hold
    ({"split": {"train": [0, 10 ** 9], "test": [0, 0], "excluded": []}}, "split.train"),
    ({"fps": 0}, "fps"),
    ({"fps": "25"}, "fps"),
    ({"source": {"path": "clip.mp4", "audio_from_first_sample": "yes"}}, "source.audio_from_first_sample"),
    ({"crop_box": {"x": 0, "y": 0, "width": 10 ** 9, "height": 10 ** 9}}, "crop_box.width"),
    ({"crop_box": {"x": 100, "y": 0, "width": 500, "height": 500}}, "crop_box"),   # beyond the 512-px source
    ({"models": {"head": {"weights": "../../elsewhere.safetensors", "config": "model/head.json", "preset": "tiny",
                          "audio_encoder": "mel", "stages": ["head"]}}}, "models.head.weights"),
])
def test_subject_json_is_checked_on_load(tiny_subject, tmp_path, change, field):
    subject = copy_of(tiny_subject, tmp_path)
    meta_path = subject / "subject.json"
    meta = {**json.loads(meta_path.read_text()), **change}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(EngineError) as caught:
        Subject(subject)
    assert f"field '{field}'" in caught.value.message and str(meta_path) in caught.value.message
    assert caught.value.hint
    # The command line says the same, once, without a traceback.
    error = error_of(run_engine("render", subject, "--audio", subject / "audio.wav", "-o", tmp_path / "out.mp4"))
    assert f"field '{field}'" in error["message"] and error["path"] == str(meta_path)


# Curves files
def live_link_rows(tmp_path: Path, frames: int = 30) -> list[list[str]]:
    path = Curves(25, np.random.default_rng(0).random((frames, 52))).save(tmp_path / "take.csv")
    return [line.split(",") for line in path.read_text().splitlines()]


def write_rows(path: Path, rows) -> Path:
    path.write_text("\n".join(",".join(row) for row in rows) + "\n")
    return path


@pytest.mark.parametrize("cell,expected", [("nan", "JawOpen is nan"), ("inf", "JawOpen is inf"),
                                           ("-inf", "JawOpen is -inf"), ("7" * 1000, "a field of 1000 characters"),
                                           ("7" * 200_000, "cannot read as CSV")])
def test_curves_csv_values_are_checked(tmp_path, cell, expected):
    rows = live_link_rows(tmp_path)
    rows[3][rows[0].index("JawOpen")] = cell
    with pytest.raises(EngineError, match=expected) as caught:
        Curves.load(write_rows(tmp_path / "bad.csv", rows))
    assert str(tmp_path / "bad.csv") in caught.value.message


@pytest.mark.parametrize("frame_field,rate", [("-1", "0"), ("-5", "-4")])
def test_curves_csv_timecodes_that_give_no_frame_rate(tmp_path, frame_field, rate):
    rows = live_link_rows(tmp_path)
    for k, row in enumerate(rows[1:]):   # two seconds whose frame field never counts up
        row[0] = f"00:00:0{k % 2}:{frame_field}.000"
    with pytest.raises(EngineError, match=f"field 'Timecode' gives a frame rate of {rate}"):
        Curves.load(write_rows(tmp_path / "bad.csv", rows))


def stcurves(path: Path, fps="25", **tensors) -> Path:
    from safetensors.numpy import save_file
    from engine.arkit import ARKIT_NAMES
    arrays = {"weights": np.full((10, 52), 0.5, np.float32), "head_rotation": np.zeros((10, 3), np.float32),
              "head_translation": np.zeros((10, 3), np.float32)}
    arrays.update(tensors)
    save_file({k: v for k, v in arrays.items() if v is not None}, str(path),
              metadata={"format": "synctalk-curves", "version": "1", "fps": fps, "names": ",".join(ARKIT_NAMES)})
    return path


@pytest.mark.parametrize("fps,tensors,expected", [
    ("0", {}, "field 'fps' gives a frame rate of 0"),
    ("nan", {}, "field 'fps' gives a frame rate of nan"),
    ("inf", {}, "field 'fps' gives a frame rate of inf"),
    ("-25", {}, "field 'fps' gives a frame rate of -25"),
    ("fast", {}, "field 'fps' is 'fast', not a number"),
    ("25", {"weights": np.zeros((10, 51), np.float32)}, "field 'weights' has shape"),
    ("25", {"head_rotation": np.zeros((10, 2), np.float32)}, "field 'head_rotation' has shape"),
    ("25", {"head_translation": np.zeros((9, 3), np.float32)}, "field 'head_translation' has shape"),
    ("25", {"head_translation": None}, "field 'head_translation' is missing"),
    ("25", {"weights": np.full((10, 52), np.nan, np.float32)}, "field 'weights' holds nan at frame 0"),
])
def test_stcurves_are_checked(tmp_path, fps, tensors, expected):
    path = stcurves(tmp_path / "bad.stcurves", fps, **tensors)
    with pytest.raises(EngineError, match=expected) as caught:
        Curves.load(path)
    assert str(path) in caught.value.message


def test_stcurves_weights_are_clipped_like_the_csv_reader(tmp_path):
    weights = np.linspace(-0.5, 1.5, 520, dtype=np.float32).reshape(10, 52)
    curves = Curves.load(stcurves(tmp_path / "loud.stcurves", weights=weights))
    assert curves.weights.min() == 0 and curves.weights.max() == 1
    np.testing.assert_array_equal(curves.weights, np.clip(weights, 0, 1))


# Training never throws away a trained model or progress
def test_stage_subset_keeps_the_trained_head(tiny_trained, tmp_path):
    subject = copy_of(tiny_trained, tmp_path)
    head = Subject(subject).model("head")
    weights = digest(subject / head.weights)
    proc = run_engine("train", subject, "--preset", "tiny", "--stages", "expression")
    assert proc.returncode == 0, proc.stderr
    after = Subject(subject)
    assert digest(subject / head.weights) == weights and after.model("head") == head
    assert after.model("expression") is not None
    # A NeRF stage subset continues the trained head and keeps the stages it does not run.
    proc = run_engine("train", subject, "--preset", "tiny", "--stages", "torso")
    assert proc.returncode == 0, proc.stderr
    assert any(e["event"] == "info" and e["message"].startswith("continuing the trained head: keeping head, lip")
               for e in events(proc))
    assert Subject(subject).model("head").stages == ["head", "lip", "torso"]


def _checkpoint_of(subject: Path, continue_stages=None) -> Path:
    """A real checkpoint, as training writes it (at the start of training, or after the NeRF stages)."""
    from engine.nerf.presets import get_preset
    from engine.nerf.trainer import Trainer
    from engine.progress import Progress
    trainer = Trainer(Subject(subject), get_preset("tiny"), Progress("quiet"), audio_encoder="mel",
                      continue_stages=continue_stages)
    trainer.save_checkpoint()
    return trainer.checkpoint_path


def test_training_over_a_checkpoint_asks_for_resume_or_restart(tiny_subject, tmp_path):
    subject = copy_of(tiny_subject, tmp_path)
    checkpoint = _checkpoint_of(subject)
    kept = digest(checkpoint)
    error = error_of(run_engine("train", subject, "--preset", "tiny", "--audio-encoder", "mel"))
    assert "unfinished training" in error["message"] and "--resume" in error["hint"] and "--restart" in error["hint"]
    assert digest(checkpoint) == kept


def test_a_cancel_in_the_expression_stage_resumes_there(tiny_trained, tmp_path):
    subject = copy_of(tiny_trained, tmp_path)
    head = Subject(subject).model("head")
    # What a cancel during the expression stage leaves: the head saved, its checkpoint kept, no expression model.
    checkpoint = _checkpoint_of(subject, continue_stages=[])
    (subject / Subject(subject).model("expression").file).unlink()
    assert Subject(subject).model("expression") is None
    proc = run_engine("train", subject, "--preset", "tiny", "--resume")
    assert proc.returncode == 0, proc.stderr
    after = Subject(subject)
    assert after.model("expression") is not None and after.model("head").stages == head.stages
    assert not checkpoint.exists()
    # With the checkpoint gone, --resume after the head is done still goes on with the stages after it.
    (subject / after.model("expression").file).unlink()
    proc = run_engine("train", subject, "--preset", "tiny", "--resume")
    assert proc.returncode == 0, proc.stderr
    assert any("resuming with the stages after it" in e.get("message", "") for e in events(proc))
    assert Subject(subject).model("expression") is not None


# One job at a time per subject and per output
def test_a_second_train_is_refused_and_a_killed_ones_lock_taken_over(tiny_subject, tmp_path):
    subject = copy_of(tiny_subject, tmp_path)
    first = engine_child("train", subject, "--preset", "tiny", "--audio-encoder", "mel", "--stages", "head")
    try:
        wait_for_stage(first, "train head")
        error = error_of(run_engine("train", subject, "--preset", "tiny", "--audio-encoder", "mel"))
        assert "in use by another job: train" in error["message"] and f"process {first.pid}" in error["message"]
    finally:
        first.kill()
        first.communicate()
    lock = subject.with_name(f".{subject.name}.lock")
    assert lock.is_file()   # what the SIGKILL left
    proc = run_engine("train", subject, "--preset", "tiny", "--audio-encoder", "mel", "--stages", "expression")
    assert proc.returncode == 0, proc.stderr
    assert not lock.exists()


def test_a_second_render_to_one_output_is_refused_and_a_killed_ones_files_removed(tiny_trained, tmp_path):
    out = tmp_path / "out.mp4"
    speech = tiny_trained / "audio.wav"
    first = engine_child("render", tiny_trained, "--audio", speech, "-o", out, "--frames", "0:60")
    try:
        wait_for_stage(first, "render")
        error = error_of(run_engine("render", tiny_trained, "--audio", speech, "-o", out, "--frames", "0:2"))
        assert "in use by another job: render" in error["message"] and f"process {first.pid}" in error["message"]
        # A render into another file goes ahead meanwhile.
        assert run_engine("render", tiny_trained, "--audio", speech, "-o", tmp_path / "other.mp4",
                          "--frames", "0:2", "--crop").returncode == 0
    finally:
        first.kill()
        first.communicate()
    left = partials(tmp_path) + source_temp_folders(first.pid)
    assert left, "the killed render left nothing to clean up: the case is not exercised"
    proc = run_engine("render", tiny_trained, "--audio", speech, "-o", out, "--frames", "0:2")
    assert proc.returncode == 0, proc.stderr
    assert not partials(tmp_path) and not source_temp_folders(first.pid)
    assert not out.with_name(f".{out.name}.lock").exists()


def test_only_this_machines_killed_leftovers_are_removed_and_long_names_take_partial_ones(tmp_path):
    """A folder on a shared drive holds other machines' work in progress (a farm's pieces of one render): their
    partial files stay, whatever their process ids mean here; this machine's killed ones go. A subject named
    with glob characters clears only its own leftovers (`Interview [2]` removed `Interview 2`'s, `*` every
    subject's). An output name of 240 characters, which the file system takes, has a partial name it takes."""
    from engine.files import atomic_output, partial_folder, partial_path, remove_leftovers
    from engine.subject.format import SubjectWriter
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()                                           # a process id that is no longer running
    mine = partial_path(tmp_path / "take.mp4").name
    killed_here = tmp_path / mine.replace(f"-{os.getpid()}-", f"-{gone.pid}-")
    tag = mine.split(f"-{os.getpid()}-")[1][:4]           # this machine's
    elsewhere = "0000" if tag != "0000" else "1111"
    other_machine = tmp_path / killed_here.name.replace(f"-{gone.pid}-{tag}", f"-{gone.pid}-{elsewhere}")
    for path in (killed_here, other_machine):
        path.write_bytes(b"partial")
    assert remove_leftovers(tmp_path) == [killed_here] and other_machine.exists()
    other_subject = partial_folder(tmp_path / "Interview 2")
    other_subject.mkdir()
    for name in ("Interview [2]", "*"):
        SubjectWriter(tmp_path / name).abort()
    assert other_subject.is_dir()
    long_name = tmp_path / ("n" * 240 + ".csv")
    with atomic_output(long_name) as tmp:
        tmp.write_text("frame\n")
    assert long_name.read_text() == "frame\n"
    from conftest import shared_file
    error = error_of(run_engine("animate", shared_file("audio", "zh_8s.wav"), "--generic", "-o",
                                tmp_path / ("n" * 300 + ".csv")))       # one the file system refuses
    assert "the name is longer than the file system takes" in error["message"]


def test_an_interrupted_render_leaves_no_temporary_file(tiny_trained, tmp_path):
    out = tmp_path / "out.mp4"
    from conftest import shared_file
    # A minute of speech: the render cannot be over before the signal comes.
    render = engine_child("render", tiny_trained, "--audio", shared_file("audio", "en_60s.wav"), "-o", out)
    wait_for_stage(render, "render")
    render.send_signal(signal.SIGINT)
    render.communicate(timeout=120)
    assert render.returncode == 130
    assert not out.exists() and list(tmp_path.iterdir()) == [] and not source_temp_folders(render.pid)


# Full disks
def test_preprocess_on_a_full_disk_is_one_message(tiny_clip, tmp_path):
    with small_disk(tmp_path / "disk", "1m") as disk:
        error = error_of(run_engine("preprocess", tiny_clip, "-o", disk / "subject", "--size", "96"))
        assert "needs about" in error["message"] and "free" in error["message"]   # refused before the work
        assert list(disk.iterdir()) == []
    with small_disk(tmp_path / "disk2", "3m") as disk:   # passes the estimate, fills up while writing
        proc = run_engine("preprocess", tiny_clip, "-o", disk / "subject", "--size", "96")
        assert proc.returncode != -signal.SIGBUS
        error = error_of(proc)
        assert "the disk is full" in error["message"]
        assert list(disk.iterdir()) == []   # no half-written subject, no temporary folder


def test_an_output_the_file_system_refuses_is_one_message(tmp_path):
    """A folder on the output's way that is a file, or a folder this user may not write: an error event naming
    the path (what Blender shows), not a traceback."""
    from conftest import shared_file
    (tmp_path / "notes").write_text("a file, not a folder")
    speech = shared_file("audio", "zh_8s.wav")
    error = error_of(run_engine("animate", speech, "--generic", "-o", tmp_path / "notes" / "line.csv"))
    assert error["message"] == f"{tmp_path / 'notes'}: is in the way (a file or folder of that name exists)"
    assert error["path"] == str(tmp_path / "notes")
    error = error_of(run_engine("preprocess", speech.parent.parent / "video" / "may_5s.mp4", "-o",
                                tmp_path / "notes" / "subject"))
    assert "notes" in error["message"] and error["hint"]


def test_another_users_subject_renders_without_writing_its_cache(tiny_trained):
    """A subject on a read-only share (or another user's): render reads it and writes only its own output; the
    feature cache it cannot write is skipped (a PermissionError traceback before). Run as the unprivileged user
    'nobody' where the tests run as root (CI), which the file system does not refuse anything."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the engine as another user")
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    from engine.jobs import child_environment
    if subprocess.run([*nobody, str(ENGINE_PYTHON), "-c", "import engine"], cwd=ROOT, capture_output=True,
                      env=child_environment()).returncode != 0:
        pytest.skip("the checkout or its venv is not readable by another user here")
    from conftest import shared_file
    with tempfile.TemporaryDirectory() as folder:   # /tmp: a folder 'nobody' may write its render into
        out = Path(folder)
        out.chmod(0o777)
        from engine.media.audio import load_audio, write_wav
        speech = write_wav(out / "line.wav", load_audio(shared_file("audio", "zh_8s.wav"))[:16000])   # 1 s
        speech.chmod(0o644)
        subject = shutil.copytree(tiny_trained, out / "subject")   # owned by root: read-only to 'nobody'
        for path in [subject, *subject.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        proc = subprocess.run([*nobody, str(ENGINE_PYTHON), "-m", "engine", "render", str(subject), "--audio",
                               str(speech), "-o", str(out / "take.mp4"), "--crop", "--progress", "quiet"],
                              cwd=ROOT, capture_output=True, text=True,
                              env={**child_environment(), "HOME": folder})
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert (out / "take.mp4").stat().st_uid == 65534


def test_training_on_a_full_disk_keeps_its_last_checkpoint(tiny_subject, tmp_path):
    from engine.nerf.checkpoint import load_weights
    with small_disk(tmp_path / "disk", "40m") as disk:
        subject = copy_of(tiny_subject, disk)
        checkpoint = _checkpoint_of(subject)
        # Checked before the work: no room for the next checkpoint.
        filler = fill(disk, leave=checkpoint.stat().st_size // 2)
        error = error_of(run_engine("train", subject, "--preset", "tiny", "--resume", "--stages", "head"))
        assert "checkpoints needs about" in error["message"]
        filler.unlink()
        # Caught where it happens: the disk fills while training.
        training = engine_child("train", subject, "--preset", "tiny", "--resume", "--stages", "head")
        wait_for_stage(training, "train head")
        fill(disk)
        rest, errors = training.communicate(timeout=300)
        assert training.returncode == 2 and "Traceback" not in errors
        error = [e for e in map(decode, rest.splitlines()) if e["event"] == ERROR.name][-1]
        assert "the disk is full" in error["message"] and "the last checkpoint is kept" in error["hint"]
        _, header = load_weights(checkpoint)           # the last good checkpoint, whole
        assert header["stage"] == "head"
        assert not partials(subject)


def test_render_on_a_full_disk_is_one_message(tiny_trained, tmp_path):
    # Measured on the tiny subject: a 96-px PNG frame is about 17 kB, a full-frame (512 px) mp4 frame
    # with its speech about 4 kB; the speech waits to be muxed in a temporary WAV of 3.84 kB a frame.
    speech = tiny_trained / "audio.wav"
    with small_disk(tmp_path / "disk", "512k") as disk:   # less than 60 frames of PNG (estimated 553 kB)
        error = error_of(run_engine("render", tiny_trained, "--audio", speech, "-o", disk / "frames",
                                    "--frames", "0:60", "--crop"))
        assert "rendering 60 frames of 96x96 needs about" in error["message"]   # refused before the work
        filler = fill(disk, leave=120_000)   # room for the estimate of 10 frames (92 kB), not for the frames
        error = error_of(run_engine("render", tiny_trained, "--audio", speech, "-o", disk / "frames",
                                    "--frames", "0:10", "--crop"))
        assert "the disk is full" in error["message"] and not partials(disk)
        frames = sorted((disk / "frames").iterdir())
        assert frames and all(f.stat().st_size > 10_000 for f in frames)   # each frame written is whole
        shutil.rmtree(disk / "frames")
        filler.unlink()
        fill(disk, leave=107_000)   # room for the estimate (52 kB) and the 20 frames' WAV (77 kB), not the video
        error = error_of(run_engine("render", tiny_trained, "--audio", speech, "-o", disk / "out.mp4",
                                    "--frames", "0:20"))
        assert "the disk is full" in error["message"] and error["path"] == str(disk / "out.mp4")
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]   # no video, no temporary WAV, no lock


# Messages that tell the truth
@pytest.mark.slow
def test_a_picture_named_mp4_is_called_a_picture(tmp_path):
    import cv2
    picture = tmp_path / "clip.mp4"
    cv2.imwrite(str(tmp_path / "face.png"), np.full((64, 64, 3), 128, np.uint8))
    (tmp_path / "face.png").rename(picture)
    error = error_of(run_engine("preprocess", picture, "-o", tmp_path / "subject"))
    assert "is a still picture (png), not a video clip" in error["message"]


@pytest.mark.slow
def test_a_truncated_clip_is_called_truncated(tmp_path):
    from conftest import shared_file
    from engine.media.ffmpeg import ffmpeg_exe
    whole = tmp_path / "whole.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(shared_file("video", "may_5s.mp4")), "-c", "copy",
                    "-movflags", "+faststart", str(whole)], check=True)
    truncated = tmp_path / "copy.mp4"
    truncated.write_bytes(whole.read_bytes()[:whole.stat().st_size * 2 // 5])   # a copy that stopped early
    proc = run_engine("preprocess", truncated, "-o", tmp_path / "subject", "--size", "64")
    assert proc.returncode == 0, proc.stderr
    warnings = [e["message"] for e in events(proc) if e["event"] == "warning"]
    assert any("of the clip's 5.0 s could be decoded: the file looks truncated" in w for w in warnings), warnings


def _first_part_encoded(source, out, *options):
    """0.4 s of `source` re-encoded to `out` (H.264), with extra ffmpeg output options."""
    from engine.media.ffmpeg import ffmpeg_exe
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(source), "-t", "0.4", "-c:v", "libx264", "-crf", "12",
                    *options, str(out)], check=True)


def _turned_for_display(clip, out):
    """`clip` with a Display Matrix that tells a player to turn it a quarter (the frames are not touched)."""
    from engine.media.ffmpeg import ffmpeg_exe
    subprocess.run([ffmpeg_exe(), "-v", "error", "-display_rotation", "90", "-i", str(clip), "-c", "copy", str(out)],
                   check=True)


def test_a_phones_upright_clip_decodes_upright(tmp_path):
    """A phone filming upright stores sideways frames and a rotation to show them by (Display Matrix);
    every frame the engine reads must be the picture a player shows, at that size."""
    from conftest import shared_file
    from engine.media.video import open_clip, read_frames
    source = shared_file("corpus", "speech_coach_man_en_46s_satyaDub.mp4")  # 406x720, upright
    upright, sideways, phone = tmp_path / "upright.mp4", tmp_path / "sideways.mp4", tmp_path / "phone.mp4"
    _first_part_encoded(source, upright)
    _first_part_encoded(source, sideways, "-vf", "transpose=1")  # turned a quarter clockwise
    _turned_for_display(sideways, phone)  # ... and shown turned back
    info = open_clip(phone)
    assert (info.width, info.height) == (406, 720)
    shown, expected = next(read_frames(phone, 25.0, info)), next(read_frames(upright, 25.0))
    assert shown.shape == expected.shape == (720, 406, 3)
    assert np.abs(shown.astype(float) - expected).mean() < 3


def test_a_clip_of_non_square_pixels_decodes_at_the_shape_it_is_shown(tmp_path):
    """Anamorphic footage (DV, HDV, some broadcast) stores narrow pixels and a sample aspect ratio; the
    engine reads it stretched to square pixels, as a player shows it, also when it is turned."""
    from conftest import shared_file
    from engine.media.video import open_clip, read_frames
    source = shared_file("video", "may_5s.mp4")  # 512x512, square pixels
    square, narrow, turned = tmp_path / "square.mp4", tmp_path / "narrow.mp4", tmp_path / "turned.mp4"
    _first_part_encoded(source, square)
    _first_part_encoded(source, narrow, "-vf", "scale=384:512,setsar=4/3")  # shown 512x512
    _turned_for_display(narrow, turned)
    info = open_clip(narrow)
    assert (info.width, info.height) == (512, 512)
    shown, expected = next(read_frames(narrow, 25.0, info)), next(read_frames(square, 25.0))
    assert shown.shape == expected.shape and np.abs(shown.astype(float) - expected).mean() < 3
    info = open_clip(turned)
    assert info.width == info.height and next(read_frames(turned, 25.0, info)).shape == (info.height, info.width, 3)


def test_an_interlaced_clip_is_read_one_picture_a_frame(tmp_path):
    """Interlaced footage (broadcast 1080i, DV) holds two instants a frame, one in the even lines and one in the
    odd: read as it is, whatever moves is combed, and the face tracker reads the comb. The engine reads such a
    clip deinterlaced, close to the progressive frames it was made from."""
    from dataclasses import replace
    from conftest import shared_file
    from engine.media.ffmpeg import ffmpeg_exe
    from engine.media.video import open_clip, read_frames
    source = shared_file("video", "lieu_60s.mp4")
    interlaced, progressive = tmp_path / "interlaced.mp4", tmp_path / "progressive.mp4"
    cut = [ffmpeg_exe(), "-v", "error", "-ss", "4", "-i", str(source), "-t", "2"]
    # each frame: the even lines of one source frame, the odd lines of the next (12.5 frames/s)
    subprocess.run([*cut, "-vf", "tinterlace=interleave_top", "-c:v", "libx264", "-crf", "12",
                    "-flags", "+ildct+ilme", "-x264opts", "tff=1", str(interlaced)], check=True)
    subprocess.run([*cut, "-vf", "select=not(mod(n\\,2)),setpts=N/12.5/TB", "-r", "12.5", "-c:v", "libx264",
                    "-crf", "12", str(progressive)], check=True)
    info = open_clip(interlaced)
    assert info.interlaced and not open_clip(progressive).interlaced

    def frames(path, info=None):
        return np.stack(list(read_frames(path, 12.5, info))).astype(np.float32)

    def comb(x):   # how far each odd line lies from the mean of the even lines around it
        return float(np.abs(x[:, 0:-2:2] + x[:, 2::2] - 2 * x[:, 1:-1:2]).mean())
    truth, read, combed = frames(progressive), frames(interlaced, info), frames(interlaced, replace(info, interlaced=False))
    assert comb(combed) > 1.4 * comb(truth) and comb(read) < 1.1 * comb(truth)
    assert np.abs(read - truth).mean() < 0.8 * np.abs(combed - truth).mean()


@pytest.mark.parametrize("transfer", ["arib-std-b67", "smpte2084"])
def test_an_hdr_clip_is_read_tone_mapped(tmp_path, transfer):
    """A phone films HDR by default (HLG, 10-bit HEVC, BT.2020); HDR10 is PQ. Read as stored its values are
    taken for SDR ones: the face comes out dark and grey. The engine reads it tone-mapped to SDR, close to
    the SDR frames it was made from (here, 2 s of lieu_60s taken to HDR by zscale)."""
    from dataclasses import replace
    from conftest import shared_file
    from engine.media.ffmpeg import ffmpeg_exe
    from engine.media.video import open_clip, read_frames
    source, hdr = shared_file("video", "lieu_60s.mp4"), tmp_path / "hdr.mov"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-ss", "4", "-i", str(source), "-t", "2", "-vf",
                    f"zscale=tin=bt709:min=bt709:pin=bt709:rin=tv:t={transfer}:m=bt2020nc:p=bt2020:r=tv:npl=100,"
                    "format=yuv420p10le", "-c:v", "libx265",
                    "-x265-params", "log-level=error", "-color_primaries", "bt2020", "-color_trc", transfer,
                    "-colorspace", "bt2020nc", str(hdr)], check=True)
    info = open_clip(hdr)
    assert info.hdr == {"arib-std-b67": "hlg", "smpte2084": "pq"}[transfer]
    truth = np.stack(list(read_frames(source, 25.0, first=100, count=50))).astype(np.float32)
    read = np.stack(list(read_frames(hdr, 25.0, info))).astype(np.float32)
    as_stored = np.stack(list(read_frames(hdr, 25.0, replace(info, hdr="")))).astype(np.float32)

    def psnr(x):
        return float(10 * np.log10(255 ** 2 / np.mean((x - truth) ** 2)))
    assert psnr(read) > 26 and psnr(read) > psnr(as_stored) + 6, (psnr(read), psnr(as_stored))
    assert abs(read.mean() - truth.mean()) < 8
    assert not open_clip(source).hdr


@pytest.mark.slow
def test_a_half_second_clip_is_called_short(tmp_path):
    from conftest import shared_file
    from engine.media.ffmpeg import ffmpeg_exe
    clip = tmp_path / "short.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(shared_file("video", "may_5s.mp4")), "-t", "0.5",
                    "-c:v", "libx264", "-c:a", "aac", str(clip)], check=True)
    error = error_of(run_engine("preprocess", clip, "-o", tmp_path / "subject", "--size", "64"))
    assert "the clip is only 0.5 s long (13 frames at 25 fps)" in error["message"]
    assert "visible in only" not in error["message"]
