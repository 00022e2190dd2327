"""The job protocol and its runner (engine.jobs) on real `python -m engine` children: results, errors
with hints, a crash, a Ctrl-C that cancels the child, stdout that carries events only, and the argument
builders checked against each command's own parser. No bpy here: the Blender adapter is
tests/test_blender_jobs.py."""
import ast
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, shared_file
from engine import jobs
from engine.cli import build_parser
from engine.progress import Progress


def test_every_event_the_engine_writes_is_declared_with_its_fields():
    stream = io.StringIO()
    progress = Progress("jsonl", stream)
    with progress.stage("train head", 2) as stage:
        stage.advance(2, loss=0.5)
    progress.info("resuming at head step 500")
    progress.warn("the clip is short")
    progress.error("bad clip", "use another", "/x.mp4")
    progress.cancelled()
    progress.result(subject="/tmp/s")
    found = [jobs.decode(line) for line in stream.getvalue().splitlines()]
    assert [e["event"] for e in found] == ["stage", "progress", "info", "warning", "error", "cancelled", "result"]
    assert set(e["event"] for e in found) == set(jobs.EVENT_TYPES)
    for item in found:
        assert set(jobs.EVENT_TYPES[item["event"]].fields) <= set(item)
    state = jobs.JobState()
    for item in found:
        state.apply(item)
    assert state.messages == ["resuming at head step 500", "the clip is short"] and state.warnings == ["the clip is short"]
    with pytest.raises(ValueError, match="needs hint, path"):
        jobs.event(jobs.ERROR, message="no hint")
    # What a reader must not take for an event: a stray print, a foreign JSON line, a field missing.
    for line in ("Downloading...", '{"status": "ok"}', '{"event": "progress", "stage": "x"}', "[1, 2]"):
        assert jobs.decode(line) is None, line


def test_result_of_a_real_child():
    state = jobs.Job("models", [jobs.models_argv()]).wait(timeout_s=120)
    assert state.finished and state.returncode == jobs.EXIT_OK and state.error is None
    assert state.result["face_landmarker"].startswith(os.environ["SYNCTALK_MODELS"])
    assert state.summary() == "Done"


def test_error_event_reaches_the_reader_with_its_hint(tmp_path, monkeypatch):
    monkeypatch.delenv("SYNCTALK_MODELS", raising=False)
    monkeypatch.setenv("SYNCTALK_CACHE", str(tmp_path / "cache"))   # an empty cache, downloads off
    state = jobs.Job("models", [jobs.models_argv(models_dir=tmp_path / "nowhere")]).wait(timeout_s=120)
    assert state.returncode == jobs.EXIT_ERROR and state.result is None
    assert "face_landmarker" in state.error["message"] and "SYNCTALK_MODELS" in state.error["hint"]
    assert state.summary().startswith("Failed: model 'face_landmarker' not found")


def test_a_child_that_dies_without_an_error_event_is_reported_with_its_stderr():
    # argparse exits before the protocol starts: no event, exit code 2, the usage on stderr.
    state = jobs.Job("bad", [["models", "--no-such-option"]]).wait(timeout_s=120)
    assert state.finished and state.returncode == 2
    assert state.error["message"] == "the engine stopped unexpectedly (exit code 2)"
    assert "unrecognized arguments: --no-such-option" in state.error["hint"]


def test_commands_run_one_after_another_and_stop_at_the_first_failure(tmp_path, monkeypatch):
    state = jobs.Job("two", [jobs.models_argv(), ["models", "--no-such-option"]]).wait(timeout_s=120)
    assert state.returncode == 2 and state.result is None and "unexpectedly" in state.error["message"]
    models = os.environ["SYNCTALK_MODELS"]
    monkeypatch.delenv("SYNCTALK_MODELS")
    monkeypatch.setenv("SYNCTALK_CACHE", str(tmp_path / "cache"))
    commands = [jobs.models_argv(models_dir=tmp_path / "nowhere"), jobs.models_argv(models_dir=models)]
    state = jobs.Job("two", commands).wait(timeout_s=120)
    assert state.returncode == 2 and state.result is None      # the second, which would succeed, never ran


def test_ctrl_c_while_waiting_cancels_the_child_cleanly(tmp_path):
    """A real preprocess, interrupted as Ctrl-C interrupts a script waiting on it; its progress is shown
    through this process's log-mode Progress on the way (the demo's Relay)."""
    clip = shared_file("video", "lieu_60s.mp4")
    out = tmp_path / "lieu"
    log = io.StringIO()
    job = jobs.Job("preprocess", [jobs.preprocess_argv(clip, out, size=128)],
                   on_event=jobs.Relay(Progress("log", log_stream=log)))

    def interrupt_after_some_frames(state):
        if state.stage == "analyse frames" and state.done >= 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        job.wait(timeout_s=300, tick=interrupt_after_some_frames)
    state = job.state
    assert state.cancelled and state.returncode == jobs.EXIT_CANCELLED and state.error is None
    assert not out.exists() and not list(tmp_path.glob(".lieu.partial-*"))   # nothing half-written
    lines = log.getvalue().splitlines()
    assert any(line.startswith("analyse frames: 0/") for line in lines), lines


CHANNEL_CHILD = """
import os, subprocess, sys
from engine import jobs
with jobs.event_channel() as events:
    print("a stray print")
    sys.__stdout__.write("a write to the original stdout\\n")
    sys.__stdout__.flush()
    subprocess.run([sys.executable, "-c", "print('a program the command starts')"], check=True)
    events.write(jobs.encode(jobs.event(jobs.RESULT, ok=True)))
print("after the command: stdout again")
"""


def test_in_jsonl_mode_only_events_reach_stdout():
    proc = subprocess.run([sys.executable, "-c", CHANNEL_CHILD], cwd=ROOT, capture_output=True, text=True,
                          env=jobs.child_environment(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ['{"event": "result", "ok": true}', "after the command: stdout again"]
    for stray in ("a stray print", "a write to the original stdout", "a program the command starts"):
        assert stray in proc.stderr


def _parsed(argv):
    return build_parser(argv[0]).parse_args(argv)


def test_argument_builders_speak_each_commands_own_parser(tmp_path):
    args = _parsed(jobs.preprocess_argv(tmp_path / "a clip.mp4", tmp_path / "s", fps=30 / 1.001, size=256))
    assert (args.clip, args.output, args.fps, args.size) == (str(tmp_path / "a clip.mp4"), str(tmp_path / "s"),
                                                              30 / 1.001, 256)   # the NTSC rate exactly
    defaults = _parsed(jobs.preprocess_argv("c.mp4", "s"))
    assert defaults.fps == 25.0 and defaults.size is None
    assert (defaults.audio, defaults.audio_offset, defaults.channel, defaults.audio_track) == (None, 0.0, None, 1)
    assert defaults.sequence_fps is None and defaults.video_stream is None and not defaults.audio_from_first_sample
    args = _parsed(jobs.preprocess_argv("c.mp4", "s", audio="r.wav", audio_offset=-1.25, channel="left", track=2))
    assert (args.audio, args.audio_offset, args.channel, args.audio_track) == ("r.wav", -1.25, "left", 2)
    args = _parsed(jobs.preprocess_argv(tmp_path / "sh010" / "plate.####.exr", "s", sequence_fps=24, audio="r.wav"))
    assert (args.clip, args.sequence_fps) == (str(tmp_path / "sh010" / "plate.####.exr"), 24.0)
    assert _parsed(jobs.preprocess_argv("c.mp4", "s", audio_offset=0.5)).audio_offset == 0.5   # the own track
    assert _parsed(jobs.preprocess_argv("c.mp4", "s", video_stream=1)).video_stream == 1
    assert _parsed(jobs.preprocess_argv("c.mp4", "s", audio="r.mp4", from_first_sample=True)).audio_from_first_sample

    args = _parsed(jobs.train_argv("s", preset="tiny", device="cpu", expression="all", resume=True,
                                   audio_encoder="mel", stages="head,lip", generic_model=tmp_path / "studio.safetensors"))
    assert (args.subject, args.preset, args.device, args.expression, args.resume, args.audio_encoder, args.stages,
            args.generic_model) == ("s", "tiny", "cpu", "all", True, "mel", "head,lip", str(tmp_path / "studio.safetensors"))
    defaults = _parsed(jobs.train_argv("s"))
    assert not defaults.resume and defaults.generic_model is None

    from engine.expression.animate import parse_intensity
    args = _parsed(jobs.animate_argv("speech.wav", "c.stcurves", subject="s", fps=24, seed=7, smooth=1.5,
                                     intensity={"mouth": 1.2, "jaw": 1.0, "head": 0.5}, blink_rate=20, lead=1.5))
    assert (args.speech, args.subject, args.generic, args.output, args.fps, args.seed, args.smooth,
            args.blink_rate, args.lead) == ("speech.wav", "s", False, "c.stcurves", 24.0, 7, 1.5, 20.0, 1.5)
    assert parse_intensity(args.intensity) == {"mouth": 1.2, "head": 0.5}   # unchanged regions left out
    args = _parsed(jobs.animate_argv("speech.wav", "c.csv", generic=True, blink_rate=0))
    assert args.generic and args.blink_rate is None and args.intensity == "" and args.smooth == 0.0 and args.lead == 0
    assert _parsed(jobs.animate_argv("speech.wav", "c.csv", model="m.safetensors")).model == "m.safetensors"
    args = _parsed(jobs.animate_argv("speech.wav", "c.csv", generic=True, span=(1.5, 4.25)))
    assert (args.start, args.end) == (1.5, 4.25)
    assert _parsed(jobs.animate_argv("speech.wav", "c.csv", generic=True)).start is None
    assert _parsed(jobs.animate_argv("speech.wav", "c.csv", generic=True)).channel is None
    assert _parsed(jobs.animate_argv("speech.wav", "c.csv", generic=True, channel="right")).channel == "right"
    assert _parsed(jobs.animate_argv("speech.wav", "c.csv", generic=True, track=3)).audio_track == 3
    assert not _parsed(jobs.animate_argv("speech.wav", "c.csv", generic=True)).audio_from_first_sample
    assert _parsed(jobs.animate_argv("s.mp4", "c.csv", generic=True, from_first_sample=True)).audio_from_first_sample
    with pytest.raises(ValueError):
        jobs.animate_argv("speech.wav", "c.csv", subject="s", generic=True)

    args = _parsed(jobs.render_argv("s", "a.wav", "out", curves="c.stcurves", device="cpu", output_format="rgba"))
    assert (args.subject, args.audio, args.output, args.curves, args.device, args.format) == \
        (Path("s"), Path("a.wav"), Path("out"), Path("c.stcurves"), "cpu", "rgba")
    assert _parsed(jobs.render_argv("s", "a.wav", "o.mp4", frames=(12, 40))).frames == "12:40"
    assert _parsed(jobs.render_argv("s", "a.wav", "o.mp4")).channel is None
    assert _parsed(jobs.render_argv("s", "a.wav", "o.mp4", channel="left")).channel == "left"
    assert _parsed(jobs.render_argv("s", "a.wav", "o.mp4", track=2)).audio_track == 2
    assert _parsed(jobs.render_argv("s", "a.mp4", "o.mp4", from_first_sample=True)).audio_from_first_sample
    args = _parsed(jobs.lines_argv("dialogue.wav", 24, span=(2.0, 9.5), min_pause=0.8, channel="left", track=2))
    assert (args.speech, args.fps, args.start, args.end, args.min_pause, args.channel, args.audio_track) == (
        "dialogue.wav", 24.0, 2.0, 9.5, 0.8, "left", 2)
    assert _parsed(jobs.lines_argv("take.mov", 24, from_first_sample=True)).audio_from_first_sample
    args = _parsed(jobs.evaluate_argv("s", "report", device="cpu", limit=10))
    assert (args.subject, args.output, args.device, args.limit) == (Path("s"), Path("report"), "cpu", 10)
    args = _parsed(jobs.models_argv(fetch=True, models_dir="/m"))
    assert args.fetch and args.models == "/m"


def test_the_protocol_loads_without_torch_and_the_engine_never_refers_to_blender():
    light = subprocess.run([sys.executable, "-c", "import sys, engine.jobs, engine.nerf.presets; "
                                                  "print([m for m in ('torch', 'bpy') if m in sys.modules])"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert light.stdout.strip() == "[]", light.stderr      # Blender's UI imports these
    for path in (ROOT / "engine").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [node.value] if isinstance(node, ast.Constant) and isinstance(node.value, str) else []
            assert not any(n.split(".")[0] in ("bpy", "synctalk_blender") for n in names), (path, node.lineno)

