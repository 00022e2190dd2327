"""Shared test set-up: real footage and models from ../shared, found the way the product finds them; one
tiny subject (preprocessed, and trained) shared by the whole session; the Blender scene fixture.

Markers (pytest.ini): `slow` (footage, training, rendering: minutes), `blender` (the bpy module), `gpu`
(CUDA). The fast layer: `pytest -m "not slow and not blender"`."""
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


# The Python that runs engine children: the Blender 5.3 run's own venv has bpy but not the engine's packages
# (tests/test_blender_5x.py points SYNCTALK_PYTHON at .venv's).
ENGINE_PYTHON = os.environ.get("SYNCTALK_PYTHON") or sys.executable


def interruptible() -> None:
    """Popen's preexec_fn for a child that a test stops with Ctrl-C (SIGINT): a shell without job control
    starts background commands (a CI script run with `&`) with SIGINT ignored, their children inherit that,
    and Python then leaves it ignored; a terminal's foreground job, which these tests stand for, has it."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def shared_file(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"{path} not present (tests read real footage from ../shared)")
    return path


def run_engine(*argv) -> subprocess.CompletedProcess:
    """`python -m engine ARGV --progress jsonl` in a child process, its raw output kept (tests of what the
    child writes; engine.jobs.Job runs it as Blender and the demo do)."""
    from engine.jobs import child_environment
    return subprocess.run([ENGINE_PYTHON, "-m", "engine", *map(str, argv), "--progress", "jsonl"], cwd=ROOT,
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
    proc = run_engine("preprocess", tiny_clip, "-o", tiny_clip.parent / "subject", "--size", "96")
    assert proc.returncode == 0, proc.stderr
    return tiny_clip.parent / "subject"


@pytest.fixture(scope="session")
def tiny_trained(tiny_subject) -> Path:
    """A copy of the tiny subject with every stage trained (`tiny` preset, mel features), once per session."""
    folder = tiny_subject.parent / "trained"
    shutil.copytree(tiny_subject, folder)
    proc = run_engine("train", folder, "--preset", "tiny", "--audio-encoder", "mel")
    assert proc.returncode == 0, proc.stderr
    return folder


# Fixtures that preprocess, train or analyse footage: a test that uses one is slow.
FOOTAGE_FIXTURES = {"tiny_clip", "tiny_subject", "tiny_trained", "subject_dir", "trained", "may_subject",
                    "lieu_clip", "clips", "subject", "default_input"}


def pytest_collection_modifyitems(items):
    """A test that uses a footage fixture is slow, whether or not its module says so."""
    for item in items:
        if FOOTAGE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


# Blender (the real bpy module)
def _install_extension_zip(zip_path: str) -> None:
    """Make `synctalk_blender` the extension installed from the zip into Blender's user repository, as a
    user installs it, so the Blender tests run against the built zip (tests/test_blender_5x.py sets
    SYNCTALK_TEST_EXTENSION_ZIP for its inner runs in bpy 5.1, 5.2 and 5.3)."""
    import importlib

    import bpy
    assert bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                                    enable_on_install=False) == {"FINISHED"}
    installed = importlib.import_module("bl_ext.user_default.synctalk")
    for file in Path(installed.__file__).parent.glob("*.py"):
        if file.stem != "__init__":
            sys.modules[f"synctalk_blender.{file.stem}"] = importlib.import_module(f"{installed.__name__}.{file.stem}")
    sys.modules["synctalk_blender"] = installed


if os.environ.get("SYNCTALK_TEST_EXTENSION_ZIP"):
    _install_extension_zip(os.environ["SYNCTALK_TEST_EXTENSION_ZIP"])


@pytest.fixture
def scene():
    """An empty scene at 25 fps with the extension registered (unregistered afterwards)."""
    bpy = pytest.importorskip("bpy")
    import synctalk_blender
    bpy.ops.wm.read_factory_settings(use_empty=True)
    synctalk_blender.register()
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 25, 1.0
    yield scene
    synctalk_blender.unregister()


def select_only(scene, strip):
    from synctalk_blender import sequencer
    for other in sequencer.strips(scene, all_levels=True):
        other.select = False
    strip.select = True
    scene.sequence_editor.active_strip = strip
