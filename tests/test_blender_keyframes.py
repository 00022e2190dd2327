"""Keyframe writing, name mapping and the sequencer helpers, against the real bpy module."""
import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
pytestmark = pytest.mark.blender


from conftest import select_only
from engine.arkit import ARKIT_NAMES
from engine.curves import Curves
from synctalk_blender import sequencer
from synctalk_blender.demo_scene import arkit_head
from synctalk_blender.keyframes import Channel, fcurves_of, write_channels
from synctalk_blender.mapping import map_names
from synctalk_blender.rig import HeadTarget, curves_from_rig, key_curves


def _curves(n=1500, fps=25.0, seed=0):
    rng = np.random.default_rng(seed)
    rotation = np.stack([np.linspace(-0.1, 0.1, n), 0.2 * np.sin(np.arange(n) / 20), np.zeros(n)], 1)
    translation = np.stack([np.zeros(n), np.linspace(0, 0.01, n), np.zeros(n)], 1)
    return Curves(fps, rng.random((n, 52), dtype=np.float32), rotation, translation)


def _fcurve_points(id_block, path, index=0):
    fcurve = fcurves_of(id_block).find(path, index=index)
    co = np.empty(2 * len(fcurve.keyframe_points), np.float32)
    fcurve.keyframe_points.foreach_get("co", co)
    return co.reshape(-1, 2)


def test_52_curves_keyed_with_exact_values_frames_and_one_new_action(scene):
    face = arkit_head("Face", ARKIT_NAMES)
    curves = _curves()
    mapping = map_names(ARKIT_NAMES, [k.name for k in face.data.shape_keys.key_blocks])
    assert not mapping.missing
    written = key_curves(face, curves, mapping, start_frame=101, scene_fps=25.0, line="line01")
    key = face.data.shape_keys
    action = key.animation_data.action
    assert action.name == written["actions"]["Face"] == "line01 take 1"
    assert len(fcurves_of(key)) == 52
    for i in (0, 17, 51):
        points = _fcurve_points(key, f'key_blocks["{ARKIT_NAMES[i]}"].value')
        assert len(points) == 1500
        np.testing.assert_allclose(points[:, 0], 101 + np.arange(1500))
        np.testing.assert_allclose(points[:, 1], curves.weights[:, i], atol=1e-6)
    # The keys evaluate to the values (linear keys, no overshoot between frames).
    scene.frame_set(101 + 700)
    assert key.key_blocks["jawOpen"].value == pytest.approx(curves.weights[700, ARKIT_NAMES.index("jawOpen")], abs=1e-5)


def test_existing_keys_are_kept_in_a_new_take_unless_replace_and_old_action_survives(scene):
    face = arkit_head("Face", ARKIT_NAMES)
    key = face.data.shape_keys
    key.key_blocks["jawOpen"].value = 0.9
    key.key_blocks["jawOpen"].keyframe_insert("value", frame=5000)   # outside the written range
    key.key_blocks["jawOpen"].keyframe_insert("value", frame=200)    # inside it
    old = key.animation_data.action
    mapping = map_names(ARKIT_NAMES, [k.name for k in key.key_blocks])
    key_curves(face, _curves(300), mapping, 101, 25.0, "take2")
    assert key.animation_data.action.name == "take2 take 1" and key.animation_data.action != old
    frames = _fcurve_points(key, 'key_blocks["jawOpen"].value')[:, 0]
    assert len(frames) == 301 and frames[-1] == 5000 and np.all(np.diff(frames) > 0)
    assert len(_old_points(old, key)) == 2   # the animator's action is untouched, and listed as a take
    assert [t.name for t in scene.synctalk.takes] == ["before take2 take 1", "take2 take 1"]
    assert scene.synctalk.takes[0].targets[0].action == old
    actions = len(bpy.data.actions)
    key_curves(face, _curves(300), mapping, 101, 25.0, "take2", replace=True)   # into the current take
    assert len(bpy.data.actions) == actions and key.animation_data.action.name == "take2 take 1"
    assert len(_fcurve_points(key, 'key_blocks["jawOpen"].value')) == 301


def _old_points(action, key):
    from synctalk_blender.keyframes import _channelbag, has_slotted_actions
    if has_slotted_actions():
        fcurves = _channelbag(action, action.slots[0]).fcurves
    else:
        fcurves = action.fcurves
    return fcurves.find('key_blocks["jawOpen"].value').keyframe_points


def test_ntsc_frame_rate_and_resampled_curves_land_on_scene_frames(scene):
    scene.render.fps, scene.render.fps_base = 30, 1.001
    face = arkit_head("Face", ARKIT_NAMES)
    key = face.data.shape_keys
    written = write_channels(key, [Channel('key_blocks["jawOpen"].value', 0, np.linspace(0, 1, 50))],
                             start_frame=10, frame_step=(30 / 1.001) / 25.0, action_name="a")
    frames = _fcurve_points(key, 'key_blocks["jawOpen"].value')[:, 0]
    assert written.name == "a"
    assert frames[0] == 10 and frames[-1] == pytest.approx(10 + 49 * 29.97003 / 25, abs=1e-3)


def test_head_pose_round_trips_through_a_bone_and_an_object(scene):
    face = arkit_head("Face", ARKIT_NAMES)
    curves = _curves(120)
    mapping = map_names(ARKIT_NAMES, [k.name for k in face.data.shape_keys.key_blocks])
    armature = bpy.data.objects.new("Rig", bpy.data.armatures.new("Rig"))
    scene.collection.objects.link(armature)
    bpy.context.view_layer.objects.active = armature
    bpy.ops.object.mode_set(mode="EDIT")
    bone = armature.data.edit_bones.new("head")
    bone.head, bone.tail = (0, 0, 1.5), (0, 0, 1.8)
    bpy.ops.object.mode_set(mode="OBJECT")
    frames = 1 + np.arange(120, dtype=np.float64)
    for head in (HeadTarget(armature, "head"), HeadTarget(face)):
        key_curves(face, curves, mapping, 1, 25.0, "pose", replace=True, head=head)
        back = curves_from_rig(face, mapping, frames, 25.0, head)
        np.testing.assert_allclose(back.head_rotation, curves.head_rotation, atol=1e-4)
        np.testing.assert_allclose(back.head_translation, curves.head_translation, atol=1e-5)
        np.testing.assert_allclose(back.weights, curves.weights, atol=1e-5)


@pytest.mark.parametrize("style", [
    lambda n: n,                                                      # exact ARKit
    lambda n: "Face." + n,                                            # prefixed
    lambda n: "".join("_" + c.lower() if c.isupper() else c for c in n),   # snake_case
    lambda n: n.replace("Left", "_L").replace("Right", "_R"),         # side suffixes
])
def test_mapping_presets_find_common_rig_names(style):
    rig_names = ["Basis"] + [style(n) for n in ARKIT_NAMES]
    mapping = map_names(ARKIT_NAMES, rig_names, "AUTO")
    assert not mapping.missing
    assert all(mapping.targets[n] == [style(n)] for n in ARKIT_NAMES)


def test_mapping_reports_missing_names_and_exact_preset_is_strict():
    mapping = map_names(ARKIT_NAMES, ["Basis", "jawOpen", "Eye_Blink_L"], "ARKIT")
    assert mapping.targets == {"jawOpen": ["jawOpen"]} and len(mapping.missing) == 51
    assert "eyeBlinkLeft" in mapping.missing and "1 of 52" in mapping.report()
    mapping = map_names(ARKIT_NAMES, ["Basis", "jawOpen", "Eye_Blink_L"], "AUTO")
    assert mapping.targets == {"jawOpen": ["jawOpen"], "eyeBlinkLeft": ["Eye_Blink_L"]}


def test_free_channel_above_skips_busy_channels(scene):
    from conftest import shared_file
    wav = shared_file("audio", sorted(p.name for p in __import__("conftest").DATA.joinpath("audio").glob("*.wav"))[0])
    sound = sequencer.add_sound(scene, wav, frame_start=10, channel=2)
    other = sequencer.add_sound(scene, wav, frame_start=sequencer.handles(sound)[0], channel=3)
    assert sequencer.free_channel_above(scene, sound) == 4
    moved = "content_start" if hasattr(other, "content_start") else "frame_start"   # 5.1 renamed it
    setattr(other, moved, sequencer.handles(sound)[1] + 10)   # no longer overlapping
    assert sequencer.free_channel_above(scene, sound) == 3
    select_only(scene, sound)
    assert sequencer.selected_strip(scene, "SOUND") == sound
    with pytest.raises(ValueError, match="not a movie strip"):
        sequencer.selected_strip(scene, "MOVIE")


def test_a_strip_inside_meta_strips_shows_what_their_trims_leave(scene):
    """A sound grouped into a meta strip, itself inside another: the part of it the edit plays lies within
    every meta's handles, and what a new strip goes above is the outermost meta, in the scene's channels."""
    from conftest import shared_file
    sound = sequencer.add_sound(scene, shared_file("audio", "zh_8s.wav"), frame_start=10, channel=1)
    inner = sequencer.strips(scene).new_meta("Line", 2, 10)
    sound.move_to_meta(inner)
    sequencer.set_handles(inner, 10, 150)
    outer = sequencer.strips(scene).new_meta("Scene", 3, 10)
    inner.move_to_meta(outer)
    sequencer.set_handles(outer, 10, 150)
    sequencer.strips(scene).new_sound("busy", str(shared_file("audio", "zh_8s.wav")), 4, 100)
    assert sequencer.enclosing_metas(sound) == [inner, outer] and sequencer.top_level(sound) == outer
    sequencer.set_handles(inner, 20, 150)
    sequencer.set_handles(outer, 10, 120)
    assert sequencer.visible_handles(sound) == (20, 120)
    assert sequencer.free_channel_above(scene, sequencer.top_level(sound)) == 5
    sequencer.set_handles(outer, 130, 140)        # past its right handle: the right one moves first
    assert sequencer.handles(outer) == (130, 140)
