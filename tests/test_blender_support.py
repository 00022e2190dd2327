"""Shared set-up for the Blender tests (the real `bpy` module): a fresh empty scene with the
extension registered, and scene helpers. Holds no tests itself."""
import pytest

bpy = pytest.importorskip("bpy")

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
