"""Shared test set-up: real footage and models from ../shared, found the way the product finds them."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"

# Tests find the models the way the product does: through the environment variable.
os.environ.setdefault("SYNCTALK_MODELS", str(SHARED / "models"))
os.environ.setdefault("SYNCTALK_OFFLINE", "1")


def shared_file(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"{path} not present (tests read real footage from ../shared)")
    return path


def run_engine(*argv) -> subprocess.CompletedProcess:
    """`python -m engine ARGV --progress jsonl` in a child process, its raw output kept (tests of what the
    child writes; engine.jobs.Job runs it as Blender and the demo do)."""
    from engine.jobs import child_environment
    return subprocess.run([sys.executable, "-m", "engine", *map(str, argv), "--progress", "jsonl"], cwd=ROOT,
                          capture_output=True, text=True, env=child_environment())


def events(proc: subprocess.CompletedProcess) -> list[dict]:
    """The run's events; every line of its stdout must be one."""
    from engine.jobs import decode
    found = [decode(line) for line in proc.stdout.splitlines()]
    assert None not in found, f"a line on stdout is not an event: {proc.stdout[-2000:]}"
    return found


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    """The first 3 s of may_5s (H.264 + AAC, 512 px; the expression model needs 50 training frames):
    the source of the shared tiny subject."""
    from engine.media.ffmpeg import ffmpeg_exe
    clip = tmp_path_factory.mktemp("tiny") / "may_3s.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(shared_file("video", "may_5s.mp4")), "-t", "3",
                    "-c:v", "libx264", "-c:a", "aac", str(clip)], check=True)
    return clip


@pytest.fixture(scope="session")
def tiny_subject(tiny_clip) -> Path:
    """The tiny clip preprocessed at 96 px, once per session. Tests copy it before changing it."""
    from engine.preprocess.pipeline import preprocess
    preprocess(tiny_clip, tiny_clip.parent / "subject", size=96)
    return tiny_clip.parent / "subject"


@pytest.fixture(scope="session")
def tiny_trained(tiny_subject) -> Path:
    """A copy of the tiny subject with every stage trained (`tiny` preset, mel features), once per session."""
    folder = tiny_subject.parent / "trained"
    shutil.copytree(tiny_subject, folder)
    proc = run_engine("train", folder, "--preset", "tiny", "--audio-encoder", "mel")
    assert proc.returncode == 0, proc.stderr
    return folder
