"""Without a terminal (logs, render farms, Blender's background mode) progress is a plain line at
least every 10 s (here a shorter interval), and warnings are printed in every progress mode: the
engine's log mode, its command line's default off a terminal, and the Blender side's run_to_end."""
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import shared_file
from engine.progress import Progress

ROOT = Path(__file__).resolve().parent.parent


def test_log_mode_speaks_through_a_step_that_never_advances():
    out = io.StringIO()
    progress = Progress("log", log_stream=out, log_interval_s=0.1)
    with progress.stage("train head", 4) as stage:
        stage.advance(1, psnr=21.5)
        time.sleep(0.8)                        # one long step: only the heartbeat speaks
        progress.warn("the clip is short")
        stage.advance(3)
    time.sleep(0.3)                            # a closed stage is not repeated
    lines = out.getvalue().splitlines()
    assert lines[0] == "train head: 0/4 (0 %), 0m00s in"
    beats = [line for line in lines if line.startswith("train head: 1/4 (25 %), ETA ")]
    assert len(beats) >= 2 and all(line.endswith(", psnr 21.5") for line in beats)
    assert "warning: the clip is short" in lines
    assert re.fullmatch(r"train head: 4/4 done in 0m0\ds, psnr 21.5", lines[-1])


def test_log_mode_speaks_through_the_rest_of_a_stage_after_a_stage_inside_it():
    out = io.StringIO()
    progress = Progress("log", log_stream=out, log_interval_s=0.1)
    with progress.stage("train head", 4) as head:
        with progress.stage("audio code", 2) as warm_up:   # training's warm-up inside its head stage
            warm_up.advance(2)
        head.advance(1)
        time.sleep(0.5)                        # the head stage's long steps: the heartbeat speaks for it again
        after = out.getvalue().splitlines()
        head.advance(3)
    assert "audio code: 2/2 done in 0m00s" in after
    assert sum(line.startswith("train head: 1/4 (25 %), ETA ") for line in after) >= 2


def test_warnings_are_printed_in_every_mode():
    for mode in ("bar", "log", "quiet"):
        out = io.StringIO()
        progress = Progress(mode, log_stream=out)
        progress.warn("no source clip")
        assert out.getvalue() == "warning: no source clip\n", mode
        assert progress.warnings == ["no source clip"]
    stream = io.StringIO()
    Progress("jsonl", stream).warn("no source clip")
    assert json.loads(stream.getvalue()) == {"event": "warning", "message": "no source clip"}


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory):
    """2 s of a real clip: preprocessing it is quick and warns that it is short."""
    from engine.media.ffmpeg import ffmpeg_exe
    clip = tmp_path_factory.mktemp("clips") / "may2.mp4"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-y", "-i", str(shared_file("video", "may_5s.mp4")),
                    "-t", "2", "-c:v", "libx264", "-c:a", "aac", str(clip)], check=True)
    return clip


def test_command_line_without_a_terminal_prints_plain_progress_and_warnings(short_clip, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "engine", "preprocess", str(short_clip), "-o", str(tmp_path / "may"),
                           "--size", "64"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert "analyse frames: 0/50 (0 %), 0m00s in" in lines
    assert any(re.fullmatch(r"analyse frames: 50/50 done in \dm\d\ds", line) for line in lines)
    assert any(line.startswith("warning: the clip is 2.0 s long") for line in lines)
    assert f"subject: {tmp_path / 'may'}" in proc.stdout.splitlines()   # the result, on stdout as before


def test_job_run_to_the_end_logs_progress_and_warnings(short_clip, tmp_path):
    pytest.importorskip("bpy")
    from synctalk_blender.jobs import Job
    log = io.StringIO()
    job = Job("Train may", [["preprocess", str(short_clip), "-o", str(tmp_path / "may"), "--size", "64"]])
    state = job.run_to_end(timeout_s=600, log=log, log_interval_s=0.5)
    assert state.result is not None, state.error
    lines = log.getvalue().splitlines()
    progress_lines = [line for line in lines if re.fullmatch(r"SyncTalk Train may: [a-z:, ]+ \d+/\d+.*", line)]
    assert len(progress_lines) >= 2, lines
    assert any(line.startswith("SyncTalk Train may: the clip is 2.0 s long") for line in lines)
    assert lines[-1] == "SyncTalk Train may: Done"
