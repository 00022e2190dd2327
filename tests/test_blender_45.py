"""The Blender 4.2-4.5 code paths, against bpy 4.5 LTS from PyPI in its own venv (.venv-bpy45,
made by setup.sh): the keyframe, mapping, takes, Live Link and sequencer tests, and installing the built zip.
(bpy 4.2's PyPI build has no audio; 4.2/4.3's `action.fcurves` and `sequences` paths are the
same code as 4.5's `sequences` path and are covered in code, not here.)"""
import json
import os
import subprocess
from pathlib import Path

import pytest

import build
from test_build import INSTALL

ROOT = Path(__file__).resolve().parent.parent
BPY45 = ROOT / ".venv-bpy45" / "bin" / "python"

pytestmark = [pytest.mark.blender, pytest.mark.slow,
              pytest.mark.skipif(not BPY45.is_file(), reason="no .venv-bpy45 (setup.sh makes it)")]


def test_keyframes_mapping_and_sequencer_on_blender_4_5():
    # The takes tests too, less those that run an engine child (this venv has bpy, not torch).
    out = subprocess.run([str(BPY45), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_blender_keyframes.py",
                          "tests/test_blender_takes.py", "-k",
                          "not whole_character and not retrained and not while_its_curves_are_made"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    version = subprocess.run([str(BPY45), "-c", "import bpy; print(bpy.app.version_string)"],
                             capture_output=True, text=True, timeout=120).stdout
    assert version.startswith("4.5")


def test_extension_installs_and_registers_on_blender_4_5(tmp_path):
    zips = build.build(["linux-x64"], with_wheels=False, output_dir=tmp_path / "dist", staging=tmp_path / "stage")
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "blender"))
    out = subprocess.run([str(BPY45), "-c", INSTALL, str(zips[0])], env=env, capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["result"] == ["FINISHED"] and all(report["operators"]) and all(report["panels"])
