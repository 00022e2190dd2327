"""Takes, whole characters, name presets and Live Link Face CSV in Blender, against the real bpy module
(and, for the operator run, a real engine child with the generic model on real speech)."""
import numpy as np
import pytest

from conftest import select_only, shared_file

bpy = pytest.importorskip("bpy")
from engine.arkit import ARKIT_NAMES
from engine.curves import Curves
from synctalk_blender import sequencer
from synctalk_blender.demo_scene import arkit_head
from synctalk_blender.keyframes import fcurves_of
from synctalk_blender.mapping import map_names
from synctalk_blender.rig import key_take

# Shape-key names of real rigs, written out as the tools name them (not taken from the presets):
# Character Creator 4 Extended (its facial profile; extra shapes no ARKit curve drives included).
CC4_EXTENDED = """Brow_Raise_Inner_L Brow_Raise_Inner_R Brow_Raise_Outer_L Brow_Raise_Outer_R Brow_Drop_L Brow_Drop_R
Brow_Compress_L Brow_Compress_R Eye_Blink_L Eye_Blink_R Eye_Squint_L Eye_Squint_R Eye_Wide_L Eye_Wide_R
Eye_L_Look_L Eye_R_Look_L Eye_L_Look_R Eye_R_Look_R Eye_L_Look_Up Eye_R_Look_Up Eye_L_Look_Down Eye_R_Look_Down
Ear_Up_L Ear_Up_R Nose_Sneer_L Nose_Sneer_R Nose_Nostril_Raise_L Nose_Nostril_Raise_R Cheek_Raise_L Cheek_Raise_R
Cheek_Suck_L Cheek_Suck_R Cheek_Puff_L Cheek_Puff_R Mouth_Smile_L Mouth_Smile_R Mouth_Smile_Sharp_L
Mouth_Smile_Sharp_R Mouth_Frown_L Mouth_Frown_R Mouth_Stretch_L Mouth_Stretch_R Mouth_Dimple_L Mouth_Dimple_R
Mouth_Press_L Mouth_Press_R Mouth_Tighten_L Mouth_Tighten_R Mouth_Up_Upper_L Mouth_Up_Upper_R Mouth_Down_Lower_L
Mouth_Down_Lower_R Mouth_Shrug_Upper Mouth_Shrug_Lower Mouth_Close Mouth_L Mouth_R Mouth_Funnel_Up_L
Mouth_Funnel_Up_R Mouth_Funnel_Down_L Mouth_Funnel_Down_R Mouth_Pucker_Up_L Mouth_Pucker_Up_R Mouth_Pucker_Down_L
Mouth_Pucker_Down_R Mouth_Roll_In_Upper_L Mouth_Roll_In_Upper_R Mouth_Roll_In_Lower_L Mouth_Roll_In_Lower_R
Mouth_Roll_Out_Upper_L Mouth_Roll_Out_Upper_R Mouth_Roll_Out_Lower_L Mouth_Roll_Out_Lower_R Jaw_Open Jaw_Forward
Jaw_L Jaw_R Tongue_Out Tongue_Up Tongue_Down V_Open V_Explosive V_Tight_O""".split()
# VRoid Studio's face mesh.
VROID = """Fcl_ALL_Neutral Fcl_ALL_Angry Fcl_ALL_Fun Fcl_ALL_Joy Fcl_ALL_Sorrow Fcl_ALL_Surprised Fcl_BRW_Angry
Fcl_BRW_Fun Fcl_BRW_Joy Fcl_BRW_Sorrow Fcl_BRW_Surprised Fcl_EYE_Natural Fcl_EYE_Angry Fcl_EYE_Close
Fcl_EYE_Close_R Fcl_EYE_Close_L Fcl_EYE_Fun Fcl_EYE_Joy Fcl_EYE_Joy_R Fcl_EYE_Joy_L Fcl_EYE_Sorrow Fcl_EYE_Surprised
Fcl_EYE_Spread Fcl_EYE_Iris_Hide Fcl_EYE_Highlight_Hide Fcl_MTH_Close Fcl_MTH_Up Fcl_MTH_Down Fcl_MTH_Angry
Fcl_MTH_Small Fcl_MTH_Large Fcl_MTH_Neutral Fcl_MTH_Fun Fcl_MTH_Joy Fcl_MTH_Sorrow Fcl_MTH_Surprised
Fcl_MTH_SkinFung Fcl_MTH_SkinFung_R Fcl_MTH_SkinFung_L Fcl_MTH_A Fcl_MTH_I Fcl_MTH_U Fcl_MTH_E Fcl_MTH_O
Fcl_HA_Hide Fcl_HA_Fung1 Fcl_HA_Fung1_Low Fcl_HA_Fung1_Up Fcl_HA_Fung2 Fcl_HA_Short""".split()
# Character Creator 3+ (ARKit profile), numbered.
CC3 = [f"A{i:02d}_{n}" for i, n in enumerate("""Brow_Inner_Up Brow_Down_Left Brow_Down_Right Brow_Outer_Up_Left
Brow_Outer_Up_Right Eye_Look_Up_Left Eye_Look_Up_Right Eye_Look_Down_Left Eye_Look_Down_Right Eye_Look_Out_Left
Eye_Look_In_Left Eye_Look_In_Right Eye_Look_Out_Right Eye_Blink_Left Eye_Blink_Right Eye_Squint_Left
Eye_Squint_Right Eye_Wide_Left Eye_Wide_Right Cheek_Puff Cheek_Squint_Left Cheek_Squint_Right Nose_Sneer_Left
Nose_Sneer_Right Jaw_Open Jaw_Forward Jaw_Left Jaw_Right Mouth_Funnel Mouth_Pucker Mouth_Left Mouth_Right
Mouth_Roll_Upper Mouth_Roll_Lower Mouth_Shrug_Upper Mouth_Shrug_Lower Mouth_Close Mouth_Smile_Left
Mouth_Smile_Right Mouth_Frown_Left Mouth_Frown_Right Mouth_Dimple_Left Mouth_Dimple_Right Mouth_Upper_Up_Left
Mouth_Upper_Up_Right Mouth_Lower_Down_Left Mouth_Lower_Down_Right Mouth_Press_Left Mouth_Press_Right
Mouth_Stretch_Left Mouth_Stretch_Right Tongue_Out""".split(), start=1)]
# Face Cap's export.
FACE_CAP = [n.replace("Left", "_L").replace("Right", "_R") for n in ARKIT_NAMES]
# MetaHuman's face-rig curves (each of the 52 ARKit curves has one or more).
METAHUMAN = ["CTRL_expressions_" + n for n in """browDownL browDownR browLateralL browLateralR browRaiseInL
browRaiseInR browRaiseOuterL browRaiseOuterR eyeBlinkL eyeBlinkR eyeWidenL eyeWidenR eyeSquintInnerL
eyeSquintInnerR eyeCheekRaiseL eyeCheekRaiseR eyeLookUpL eyeLookUpR eyeLookDownL eyeLookDownR eyeLookLeftL
eyeLookLeftR eyeLookRightL eyeLookRightR noseWrinkleL noseWrinkleR mouthCheekBlowL mouthCheekBlowR jawOpen jawFwd
jawLeft jawRight mouthLeft mouthRight mouthUpperLipRollInL mouthUpperLipRollInR mouthLowerLipRollInL
mouthLowerLipRollInR mouthUpperLipRollOutL mouthUpperLipRollOutR mouthLowerLipRollOutL mouthLowerLipRollOutR
mouthDimpleL mouthDimpleR mouthCornerPullL mouthCornerPullR mouthCornerDepressL mouthCornerDepressR
mouthUpperLipRaiseL mouthUpperLipRaiseR mouthLowerLipDepressL mouthLowerLipDepressR mouthPressUL mouthPressUR
mouthPressDL mouthPressDR mouthStretchL mouthStretchR mouthFunnelUL mouthFunnelUR mouthFunnelDL mouthFunnelDR
mouthLipsPurseUL mouthLipsPurseUR mouthLipsPurseDL mouthLipsPurseDR mouthLipsTogetherUL mouthLipsTogetherUR
mouthLipsTogetherDL mouthLipsTogetherDR tongueOut""".split()]


def _rig(name, shape_names):
    """A mesh with these shape keys (Basis first), linked and selected."""
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    obj.select_set(True)
    obj.shape_key_add(name="Basis", from_mix=False)
    for shape in shape_names:
        obj.shape_key_add(name=shape, from_mix=False)
    return obj


def _curves(n, seed, fps=25.0):
    rng = np.random.default_rng(seed)
    rotation = 0.1 * rng.standard_normal((n, 3)).astype(np.float32)
    return Curves(fps, rng.random((n, 52), dtype=np.float32), rotation)


def _points(id_block, shape):
    fcurve = fcurves_of(id_block).find(f'key_blocks["{shape}"].value')
    co = np.empty(2 * len(fcurve.keyframe_points), np.float32)
    fcurve.keyframe_points.foreach_get("co", co)
    return co.reshape(-1, 2)


@pytest.mark.parametrize("preset, names, expected", [
    ("CC4", CC4_EXTENDED, 52), ("VROID", VROID, 25), ("METAHUMAN", METAHUMAN, 52), ("CC3", CC3, 52),
    ("FACECAP", FACE_CAP, 52), ("ARKIT", list(ARKIT_NAMES), 52), ("RPM", list(ARKIT_NAMES), 52),
    ("ROKOKO", list(ARKIT_NAMES), 52),
])
def test_presets_map_their_rigs_and_automatic_finds_the_same(preset, names, expected):
    mapping = map_names(ARKIT_NAMES, ["Basis"] + names, preset)
    print(f"{preset}: {len(mapping.targets)} of 52 ARKit curves mapped")
    assert len(mapping.targets) == expected and len(mapping.missing) == 52 - expected
    assert all(shape in names for shapes in mapping.targets.values() for shape in shapes)
    assert map_names(ARKIT_NAMES, ["Basis"] + names, "AUTO").targets == mapping.targets


def test_one_curve_to_several_shape_keys_and_several_curves_to_one(scene):
    cc4, vroid = _rig("CC4", CC4_EXTENDED), _rig("VRoid", VROID)
    mapping = map_names(ARKIT_NAMES, CC4_EXTENDED)
    assert mapping.targets["browInnerUp"] == ["Brow_Raise_Inner_L", "Brow_Raise_Inner_R"]
    assert len(mapping.targets["mouthFunnel"]) == 4
    curves = _curves(40, 1)
    key_take(scene, [(cc4, mapping), (vroid, map_names(ARKIT_NAMES, VROID))], curves, 1, 25.0, "line")
    inner = curves.weights[:, ARKIT_NAMES.index("browInnerUp")]
    for side in "LR":
        np.testing.assert_allclose(_points(cc4.data.shape_keys, f"Brow_Raise_Inner_{side}")[:, 1], inner, atol=1e-6)
    smiles = curves.weights[:, [ARKIT_NAMES.index("mouthSmileLeft"), ARKIT_NAMES.index("mouthSmileRight")]]
    np.testing.assert_allclose(_points(vroid.data.shape_keys, "Fcl_MTH_Joy")[:, 1], smiles.mean(axis=1), atol=1e-6)


def test_takes_are_kept_switchable_and_hand_edits_never_silently_lost(scene):
    face = arkit_head("Face", ARKIT_NAMES)
    key = face.data.shape_keys
    mapping = map_names(ARKIT_NAMES, [k.name for k in key.key_blocks])
    first, second, third = _curves(100, 1), _curves(100, 2), _curves(100, 3)
    key_take(scene, [(face, mapping)], first, 101, 25.0, "line01")
    take1 = key.animation_data.action
    fcurves_of(key).find('key_blocks["jawOpen"].value').keyframe_points[49].co.y = 0.99   # a hand edit, frame 150
    written = key_take(scene, [(face, mapping)], second, 101, 25.0, "line01")
    assert "hand edits on Face (1 curves: jawOpen) kept in 'line01 take 1'" in written["notes"]
    take2 = key.animation_data.action
    assert take2 != take1 and take2.name == "line01 take 2"
    jaw = ARKIT_NAMES.index("jawOpen")
    assert _points(key, "jawOpen")[49, 1] == pytest.approx(second.weights[49, jaw], abs=1e-6)
    # Every action is a listed take: nothing left over, nothing that saving would drop.
    assert [t.name for t in scene.synctalk.takes] == ["line01 take 1", "line01 take 2"]
    assert len(bpy.data.actions) == 2 and all(a.users > 0 for a in bpy.data.actions)
    assert bpy.ops.synctalk.switch_take(index=0) == {"FINISHED"}
    assert key.animation_data.action == take1
    scene.frame_set(150)
    assert key.key_blocks["jawOpen"].value == pytest.approx(0.99, abs=1e-5)   # the hand edit plays again
    # Replacing keys is an explicit choice: into the playing take, no new action, and the report says what went.
    written = key_take(scene, [(face, mapping)], third, 101, 25.0, "line01", replace=True)
    assert "overwritten in 'line01 take 1' (Replace Keys is on)" in written["notes"]
    assert len(bpy.data.actions) == 2 and key.animation_data.action == take1
    assert _points(key, "jawOpen")[49, 1] == pytest.approx(third.weights[49, jaw], abs=1e-6)
    assert bpy.ops.synctalk.switch_take(index=1) == {"FINISHED"} and key.animation_data.action == take2
    scene.synctalk.take_index = 0
    assert bpy.ops.synctalk.delete_take() == {"FINISHED"}
    assert len(bpy.data.actions) == 1 and [t.name for t in scene.synctalk.takes] == ["line01 take 2"]
    # Another line elsewhere on the timeline writes over no edited key: nothing to report, the edit carries over.
    fcurves_of(key).find('key_blocks["jawOpen"].value').keyframe_points[9].co.y = 0.97   # frame 110
    written = key_take(scene, [(face, mapping)], _curves(50, 4), 1000, 25.0, "line02")
    assert "hand edits" not in written["notes"] and key.animation_data.action.name == "line02 take 1"
    assert _points(key, "jawOpen")[9].tolist() == pytest.approx([110, 0.97])


def test_a_shorter_line_drops_the_old_keys_past_it_only_when_asked(scene):
    face = arkit_head("Face", ARKIT_NAMES)
    key = face.data.shape_keys
    mapping = map_names(ARKIT_NAMES, [k.name for k in key.key_blocks])
    key_take(scene, [(face, mapping)], _curves(300, 1), 101, 25.0, "line01")          # frames 101-400
    written = key_take(scene, [(face, mapping)], _curves(200, 2), 101, 25.0, "line01")   # now 101-300
    assert "keyed over frames 101-400 before" in written["notes"] and "still play" in written["notes"]
    assert _points(key, "jawOpen")[-1, 0] == 400
    written = key_take(scene, [(face, mapping)], _curves(200, 3), 101, 25.0, "line01", clear_stale=True)
    assert "removed" in written["notes"]
    frames = _points(key, "jawOpen")[:, 0]
    assert frames[0] == 101 and frames[-1] == 300 and len(frames) == 200
    assert len(_points(key, "eyeBlinkLeft")) == 200
    # The earlier takes still hold their keys.
    assert len(scene.synctalk.takes) == 3


def test_whole_character_and_panel_controls_in_one_operator_call(scene):
    wav = shared_file("audio", "zh_8s.wav")
    strip = sequencer.add_sound(scene, wav, frame_start=5, channel=1)
    select_only(scene, strip)
    lashes = _rig("Eyelashes", ["eyeBlink_L", "eyeBlink_R"])
    teeth = _rig("Teeth", ["Jaw_Open"])
    tongue = _rig("Tongue", ["tongueOut", "Jaw_Open"])
    eyes = _rig("Eyes", ["eyeLookUpLeft", "eyeLookUpRight", "eyeLookDownLeft", "eyeLookDownRight"])
    body = _rig("Body", ["Breathe"])                 # selected, but nothing maps: reported, not keyed
    face = arkit_head("Face", ARKIT_NAMES)            # the active mesh
    head = bpy.data.objects.new("HeadControl", None)
    scene.collection.objects.link(head)
    s = scene.synctalk
    s.generic, s.head_object = True, head
    s.new_seed, s.seed, s.blink_rate, s.smooth = False, 7, 30.0, 1.0
    s.intensity_jaw, s.head_motion = 0.0, 0.0
    assert bpy.ops.synctalk.audio_to_rig() == {"FINISHED"}    # one operator call: one undo step
    take = s.takes[-1]
    assert take.name == f"{strip.name} take 1" and take.seed == 7 and s.seed == 7
    keyed = {(t.obj.name, t.shape_keys) for t in take.targets}
    assert keyed == {("Face", True), ("Eyelashes", True), ("Teeth", True), ("Tongue", True), ("Eyes", True),
                     ("HeadControl", False)}
    assert body.data.shape_keys.animation_data is None
    assert "Body: no shape key maps" in s.last_report and not s.last_missing
    # Intensity 0 holds the jaw at its rest pose on every mesh; head motion 0 holds the head still.
    for obj, shape in ((face, "jawOpen"), (teeth, "Jaw_Open"), (tongue, "Jaw_Open")):
        jaw = _points(obj.data.shape_keys, shape)
        assert len(jaw) > 150 and jaw[0, 0] == 5 and np.ptp(jaw[:, 1]) < 1e-6
    np.testing.assert_allclose(_points(lashes.data.shape_keys, "eyeBlink_L")[:, 1],
                               _points(face.data.shape_keys, "eyeBlinkLeft")[:, 1], atol=1e-6)
    assert np.ptp(_points(face.data.shape_keys, "eyeBlinkLeft")[:, 1]) > 0.3   # blinks still happen
    assert len(_points(eyes.data.shape_keys, "eyeLookUpLeft")) == len(_points(face.data.shape_keys, "jawOpen"))
    rotation = fcurves_of(head).find("rotation_euler", index=0)
    values = [rotation.evaluate(f) for f in range(5, 150)]
    assert np.ptp(values) < 1e-6


def test_mapping_table_edits_and_a_saved_user_preset_drive_the_keys(scene, tmp_path, monkeypatch):
    monkeypatch.setenv("SYNCTALK_PRESETS", str(tmp_path))
    cc4 = _rig("CC4", CC4_EXTENDED + ["My_Jaw"])
    bpy.context.view_layer.objects.active = cc4
    s = scene.synctalk
    assert bpy.ops.synctalk.mapping_fill(preset="CC4") == {"FINISHED"}
    assert s.mapping == "TABLE" and len(s.mapping_rows) == 52
    rows = {row.arkit: row for row in s.mapping_rows}
    assert rows["browInnerUp"].shapes == "Brow_Raise_Inner_L, Brow_Raise_Inner_R"
    rows["jawOpen"].shapes = "My_Jaw"
    assert bpy.ops.synctalk.mapping_save(name="Studio rig") == {"FINISHED"}
    assert (tmp_path / "Studio_rig.json").is_file()
    s.mapping = "AUTO"
    s.mapping_rows.clear()
    assert bpy.ops.synctalk.mapping_fill(preset="USER:Studio_rig") == {"FINISHED"}
    from synctalk_blender.operators import mapping_for
    mapping = mapping_for(bpy.context, cc4)
    assert mapping.targets["jawOpen"] == ["My_Jaw"] and len(mapping.targets) == 52


def test_live_link_csv_round_trip_keeps_values_timecode_and_eye_angles(scene, tmp_path, capfd):
    from engine.expression.livelink import read_livelink_take, timecode_frames, write_livelink_csv
    scene.render.fps, scene.render.fps_base = 30, 1.0
    rng = np.random.default_rng(5)
    n = 90
    curves = Curves(30.0, rng.random((n, 52), dtype=np.float32), 0.2 * rng.standard_normal((n, 3)).astype(np.float32))
    eyes = (0.1 * rng.standard_normal((n, 6))).astype(np.float32)
    source = write_livelink_csv(tmp_path / "take.csv", curves, timecode_frames("00:32:09:07.867", 30), eyes)
    face = arkit_head("Face", ARKIT_NAMES)
    head = bpy.data.objects.new("HeadControl", None)
    scene.collection.objects.link(head)
    scene.synctalk.head_object = head
    scene.frame_set(20)
    assert bpy.ops.synctalk.import_livelink(filepath=str(source)) == {"FINISHED"}
    assert _points(face.data.shape_keys, "jawOpen")[0, 0] == 20
    out = tmp_path / "export.csv"
    assert bpy.ops.synctalk.export_livelink(filepath=str(out)) == {"FINISHED"}
    back, original = read_livelink_take(out), read_livelink_take(source)
    assert back.first_frame == original.first_frame and len(back.curves) == n
    assert out.read_text().splitlines()[1].split(",")[0] == "00:32:09:07.000"
    np.testing.assert_allclose(back.curves.weights, original.curves.weights, atol=2e-6)
    np.testing.assert_allclose(back.curves.head_rotation, original.curves.head_rotation, atol=1e-4)
    np.testing.assert_allclose(back.eye_angles, original.eye_angles, atol=2e-6)
    # In a 25 fps scene the same take starts at the same time of day, counted in 25ths.
    scene.render.fps = 25
    assert bpy.ops.synctalk.export_livelink(filepath=str(out)) == {"FINISHED"}
    assert out.read_text().splitlines()[1].split(",")[0] == "00:32:09:06.000"
    scene.render.fps, scene.render.fps_base = 30, 1.001   # a 29.97 scene: written at 30, and said so
    assert bpy.ops.synctalk.export_livelink(filepath=str(out)) == {"FINISHED"}
    assert "read back, these 29.970-fps frames play at 30" in capfd.readouterr().out


def test_a_retrained_model_file_drives_the_keys_like_the_model_it_holds(scene, tmp_path):
    import shutil
    from engine.expression.generic import GENERIC_MODEL
    wav = shared_file("audio", "de_9s_24bit_extensible.wav")
    strip = sequencer.add_sound(scene, wav, frame_start=1, channel=1)
    select_only(scene, strip)
    face = arkit_head("Face", ARKIT_NAMES)
    s = scene.synctalk
    s.generic, s.new_seed, s.seed = True, False, 3
    s.model_file = str(tmp_path / "missing.safetensors")
    with pytest.raises(RuntimeError, match="model file not found"):
        bpy.ops.synctalk.audio_to_rig()
    assert len(s.takes) == 0 and face.data.shape_keys.animation_data is None
    s.model_file = ""
    assert bpy.ops.synctalk.audio_to_rig() == {"FINISHED"}
    bundled, blinks = _points(face.data.shape_keys, "jawOpen"), _points(face.data.shape_keys, "eyeBlinkLeft")
    s.model_file = str(shutil.copy(GENERIC_MODEL, tmp_path / "studio.safetensors"))
    assert bpy.ops.synctalk.audio_to_rig() == {"FINISHED"}
    assert s.takes[-1].source == "studio.safetensors" and s.takes[-1].name == f"{strip.name} take 2"
    np.testing.assert_allclose(_points(face.data.shape_keys, "jawOpen"), bundled, atol=1e-6)
    s.mouth_lead = 2.0  # the panel's Mouth Lead: the jaw two frames ahead of the sound, the blinks where they were
    assert bpy.ops.synctalk.audio_to_rig() == {"FINISHED"}
    ahead = _points(face.data.shape_keys, "jawOpen")
    np.testing.assert_array_equal(ahead[:, 0], bundled[:, 0])
    np.testing.assert_allclose(ahead[:-2, 1], bundled[2:, 1], atol=1e-6)
    np.testing.assert_allclose(_points(face.data.shape_keys, "eyeBlinkLeft"), blinks, atol=1e-6)


def test_replace_keys_never_writes_into_an_action_linked_from_another_file(scene, tmp_path):
    """A character linked from its own file and made a library override plays that file's action: Replace Keys
    would write into it, and the keys would be gone once this file is saved. It keys a new take instead, says so,
    and leaves the linked action as it was."""
    face = arkit_head("Face", ARKIT_NAMES)
    face.data.shape_keys.key_blocks["eyeBlinkLeft"].keyframe_insert("value", frame=1)
    library = tmp_path / "character.blend"
    bpy.data.libraries.write(str(library), {face})
    bpy.data.objects.remove(face)
    with bpy.data.libraries.load(str(library), link=True) as (_, linked):
        linked.objects = ["Face"]
    scene.collection.objects.link(linked.objects[0])
    face = linked.objects[0].override_create(remap_local_usages=True)
    face.data = face.data.override_create(remap_local_usages=True)
    key = face.data.shape_keys
    theirs = key.animation_data.action
    assert theirs.library is not None
    mapping = map_names(ARKIT_NAMES, [k.name for k in key.key_blocks])
    written = key_take(scene, [(face, mapping)], _curves(50, 1), 101, 25.0, "line01", replace=True)
    assert f"'{theirs.name}' on Face is linked from another file: keyed as a new take" in written["notes"]
    assert key.animation_data.action.library is None and key.animation_data.action.name == "line01 take 1"
    assert len(fcurves_of(key)) == 52
    assert [t.name for t in scene.synctalk.takes] == ["before line01 take 1", "line01 take 1"]
    assert bpy.ops.synctalk.switch_take(index=0) == {"FINISHED"}            # theirs again, as it was: one curve
    assert key.animation_data.action == theirs and len(fcurves_of(key)) == 1


def test_a_rig_in_the_nla_tweak_mode_is_refused_before_anything_runs(scene):
    """In the NLA editor's tweak mode the strip being edited holds the action, which cannot be set: Audio to Rig,
    Switch Take and Delete Take say so instead of failing half way (a take's action made, nothing assigned)."""
    strip = sequencer.add_sound(scene, shared_file("audio", "zh_8s.wav"), frame_start=1, channel=1)
    select_only(scene, strip)
    face = arkit_head("Face", ARKIT_NAMES)
    key = face.data.shape_keys
    mapping = map_names(ARKIT_NAMES, [k.name for k in key.key_blocks])
    key_take(scene, [(face, mapping)], _curves(50, 1), 1, 25.0, "line01")
    action = key.animation_data.action
    key.animation_data.nla_tracks.new().strips.new("line01", 1, action)
    key.animation_data.action = None
    key.animation_data.use_tweak_mode = True
    actions = len(bpy.data.actions)
    scene.synctalk.generic = True
    for operator in (bpy.ops.synctalk.audio_to_rig, bpy.ops.synctalk.switch_take, bpy.ops.synctalk.delete_take):
        scene.synctalk.take_index = 0
        with pytest.raises(RuntimeError, match="'Face' is in the NLA editor's tweak mode: leave it"):
            operator()
    assert len(bpy.data.actions) == actions and len(scene.synctalk.takes) == 1


def test_a_rig_deleted_while_its_curves_are_made_is_not_keyed(scene, monkeypatch):
    """The edit goes on while the engine runs (or is undone): a mesh deleted meanwhile is named, nothing is keyed
    and no take is listed. A linked duplicate of the face (Alt+D: the same shape keys) is keyed once."""
    from synctalk_blender import jobs
    strip = sequencer.add_sound(scene, shared_file("audio", "zh_8s.wav"), frame_start=1, channel=1)
    sequencer.set_handles(strip, 1, 26)
    select_only(scene, strip)
    face = arkit_head("Face", ARKIT_NAMES)
    twin = bpy.data.objects.new("FaceTwin", face.data)
    scene.collection.objects.link(twin)
    twin.select_set(True)
    scene.synctalk.generic = True
    assert bpy.ops.synctalk.audio_to_rig() == {"FINISHED"}
    assert [t.obj.name for t in scene.synctalk.takes[-1].targets] == ["Face"]
    run_to_end = jobs.Job.run_to_end

    def deleted_meanwhile(job, *args, **kwargs):
        bpy.data.objects.remove(bpy.data.objects["FaceTwin"])
        bpy.data.objects.remove(bpy.data.objects["Face"])
        return run_to_end(job, *args, **kwargs)

    monkeypatch.setattr(jobs.Job, "run_to_end", deleted_meanwhile)
    takes, actions = len(scene.synctalk.takes), len(bpy.data.actions)
    with pytest.raises(RuntimeError, match="'Face' was deleted while its curves were made: nothing was keyed"):
        bpy.ops.synctalk.audio_to_rig()
    assert len(scene.synctalk.takes) == takes and len(bpy.data.actions) == actions


def test_a_rig_changed_while_its_curves_are_made_is_keyed_as_it_was_asked(scene, monkeypatch):
    """What the user does while the engine runs: the rig renamed and another mesh named as it was (the rig is
    keyed under its new name, the other left alone: it was keyed, with a report naming the rig, and the rig was
    not), the scene switched (the take goes to the rig's scene, not the one shown), the shape keys deleted (a
    message, not a traceback)."""
    from synctalk_blender import jobs
    strip = sequencer.add_sound(scene, shared_file("audio", "zh_8s.wav"), frame_start=1, channel=1)
    sequencer.set_handles(strip, 1, 26)
    select_only(scene, strip)
    face = arkit_head("Face", ARKIT_NAMES)
    scene.synctalk.generic = True
    other = bpy.data.scenes.new("Other")
    run_to_end = jobs.Job.run_to_end

    def changed_meanwhile(job, *args, **kwargs):
        face.name = "Face.old"
        stranger = bpy.data.objects.new("Face", bpy.data.meshes.new("stranger"))
        scene.collection.objects.link(stranger)
        stranger.shape_key_add(name="Basis")
        stranger.shape_key_add(name="smile")
        with bpy.context.temp_override(scene=other):   # the scene the user switched to
            assert bpy.context.scene == other and stranger.name == "Face"
            return run_to_end(job, *args, **kwargs)

    monkeypatch.setattr(jobs.Job, "run_to_end", changed_meanwhile)
    assert bpy.ops.synctalk.audio_to_rig() == {"FINISHED"}
    assert face.data.shape_keys.animation_data.action is not None
    assert bpy.data.objects["Face"].data.shape_keys.animation_data is None
    assert len(scene.synctalk.takes) == 1 and len(other.synctalk.takes) == 0
    assert "Face.old" in scene.synctalk.last_report

    def keys_deleted_meanwhile(job, *args, **kwargs):
        face.shape_key_clear()
        return run_to_end(job, *args, **kwargs)

    monkeypatch.setattr(jobs.Job, "run_to_end", keys_deleted_meanwhile)
    with pytest.raises(RuntimeError, match="'Face.old' lost its shape keys while its curves were made"):
        bpy.ops.synctalk.audio_to_rig()
