"""build.py: the linux zip (no wheels, for speed) passes Blender's validator, installs into the
headless bpy module with package_install_files, and its operators register."""
import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("bpy")

import build  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

INSTALL = """
import bpy, json, sys
result = bpy.ops.extensions.package_install_files(filepath=sys.argv[1], repo="user_default", enable_on_install=True)
module = sys.modules["bl_ext.user_default.synctalk"]
from pathlib import Path
engine_dir = Path(module.__file__).parent / "engine"
print(json.dumps({"result": sorted(result), "addons": list(bpy.context.preferences.addons.keys()),
                  "operators": [hasattr(bpy.ops.synctalk, n) for n in ("train_subject", "audio_to_rig", "render_to_sequencer",
                                "cancel_job", "switch_take", "mapping_fill", "import_livelink", "export_livelink")],
                  "panels": [hasattr(bpy.types, n) for n in ("SYNCTALK_PT_train", "SYNCTALK_PT_render", "SYNCTALK_PT_audio_to_rig")],
                  "device": bpy.context.preferences.addons["bl_ext.user_default.synctalk"].preferences.device,
                  "engine": (engine_dir / "__main__.py").is_file(), "engine_root": str(module.jobs.engine_root())}))
"""


def test_linux_zip_validates_installs_and_registers(tmp_path):
    zips = build.build(["linux-x64"], with_wheels=False, output_dir=tmp_path / "dist", staging=tmp_path / "stage")
    assert [z.name for z in zips] == ["synctalk-0.1.0-linux_x64-blender4.2-5.0.zip"]
    with zipfile.ZipFile(zips[0]) as archive:
        names = set(archive.namelist())
        manifest = tomllib.loads(archive.read("blender_manifest.toml").decode())
    assert {"__init__.py", "jobs.py", "engine/__main__.py", "engine/cli.py", "blender_manifest.toml"} <= names
    assert not any("__pycache__" in n for n in names)
    assert manifest["id"] == "synctalk" and manifest["platforms"] == ["linux-x64"]
    assert manifest["blender_version_min"] == "4.2.0" and set(manifest["permissions"]) == {"files", "network"}
    assert manifest["blender_version_max"] == "5.1.0"     # its Python 3.11 wheels cannot load in 5.1+
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "blender"))  # a throwaway user profile
    out = subprocess.run([sys.executable, "-c", INSTALL, str(zips[0])], env=env, capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["result"] == ["FINISHED"]
    assert "bl_ext.user_default.synctalk" in report["addons"]
    assert all(report["operators"]) and all(report["panels"]) and report["device"] == "auto"
    assert report["engine"] and report["engine_root"].startswith(str(tmp_path / "blender"))


def test_staged_manifest_lists_wheels_but_never_numpy(tmp_path):
    wheels = [tmp_path / "tqdm-4.70.1-py3-none-any.whl", tmp_path / "soxr-1.1.0-cp311-cp311-win_amd64.whl"]
    for w in wheels:
        w.write_bytes(b"")
    staging = build.stage(["linux-x64", "windows-x64"], wheels, tmp_path / "stage")
    manifest = tomllib.loads((staging / "blender_manifest.toml").read_text())
    assert manifest["wheels"] == ["./wheels/tqdm-4.70.1-py3-none-any.whl", "./wheels/soxr-1.1.0-cp311-cp311-win_amd64.whl"]
    assert manifest["platforms"] == ["linux-x64", "windows-x64"]
    reqs = build.runtime_requirements()
    assert not any(r.startswith(("numpy", "bpy", "torch", "pytest")) for r in reqs)
    assert any(r.startswith("mediapipe") for r in reqs)


def test_each_blender_line_gets_its_versions_and_its_pins(tmp_path):
    staging = build.stage(["linux-x64"], [], tmp_path / "stage", build.BLENDER_LINES["5.1+"])
    manifest = tomllib.loads((staging / "blender_manifest.toml").read_text())
    assert manifest["blender_version_min"] == "5.1.0" and "blender_version_max" not in manifest
    # One pin set for both Pythons: only bpy and the numpy that bpy needs differ.
    assert build.numpy_pin("3.11").startswith("numpy==1.") and build.numpy_pin("3.13").startswith("numpy==2.")
    assert [p for p in build.pins("3.11") if p.startswith("bpy==")] == ["bpy==5.0.1"]
    assert [p for p in build.pins("3.13") if p.startswith("bpy==")] == ["bpy==5.3.0"]
    assert build.runtime_requirements("3.11") == build.runtime_requirements("3.13")
