"""Shared set-up for the Blender tests (the real `bpy` module): a fresh empty scene with the
extension registered, and scene helpers. Holds no tests itself.

With SYNCTALK_TEST_EXTENSION_ZIP set (tests/test_blender_53.py does), `synctalk_blender` is the
extension installed from that zip into Blender's user repository, as a user installs it, so the
same tests run against the built zip."""
import importlib
import os
import sys
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy")

if os.environ.get("SYNCTALK_TEST_EXTENSION_ZIP"):
    assert bpy.ops.extensions.package_install_files(
        filepath=os.environ["SYNCTALK_TEST_EXTENSION_ZIP"], repo="user_default", enable_on_install=False) == {"FINISHED"}
    _installed = importlib.import_module("bl_ext.user_default.synctalk")
    for _file in Path(_installed.__file__).parent.glob("*.py"):
        if _file.stem != "__init__":
            sys.modules[f"synctalk_blender.{_file.stem}"] = importlib.import_module(f"{_installed.__name__}.{_file.stem}")
    sys.modules["synctalk_blender"] = _installed

import synctalk_blender  # noqa: E402


@pytest.fixture
def scene():
    """An empty scene at 25 fps with the extension registered (unregistered afterwards)."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    synctalk_blender.register()
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 25, 1.0
    yield scene
    synctalk_blender.unregister()


def select_only(scene, strip):
    for other in synctalk_blender.sequencer.strips(scene, all_levels=True):
        other.select = False
    strip.select = True
    scene.sequence_editor.active_strip = strip
