"""The Blender half of the demo, and the rig it (and the tests) key: a head mesh with the 52 ARKit
shape keys.

    python -m synctalk_blender.demo_scene --audio A --render R --curves C --subject S -o demo.blend

builds a .blend whose sequencer holds the sound strip and the rendered strip aligned, and whose
rig is keyed with the curves `python -m engine animate` wrote.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import bpy
import numpy as np

# Where on a unit sphere head (front = -Y, up = +Z) each family of shapes acts, and which way it
# pushes: (centre, radius, direction). Sides: +X is the subject's left.
_REGIONS = {
    "jaw": ((0.0, -0.8, -0.55), 0.55, (0.0, 0.1, -0.35)),
    "mouth": ((0.0, -0.9, -0.35), 0.35, (0.0, -0.05, -0.08)),
    "eye": ((0.33, -0.85, 0.2), 0.2, (0.0, 0.0, -0.08)),
    "brow": ((0.33, -0.85, 0.42), 0.22, (0.0, 0.0, 0.1)),
    "cheek": ((0.5, -0.7, -0.1), 0.3, (0.08, -0.08, 0.0)),
    "nose": ((0.0, -1.0, 0.0), 0.2, (0.0, -0.05, 0.05)),
    "tongue": ((0.0, -0.95, -0.4), 0.15, (0.0, -0.15, 0.0)),
}


def _shape_offsets(name: str, verts: np.ndarray) -> np.ndarray:
    """A displacement for an ARKit shape: its family's region, mirrored for Right, opened for jawOpen."""
    family = next(f for f in _REGIONS if name.startswith(f))
    centre, radius, direction = (np.array(v, np.float32) if not np.isscalar(v) else v for v in _REGIONS[family])
    centre, direction = centre.copy(), direction.copy()
    if name.endswith("Right"):
        centre[0], direction[0] = -centre[0], -direction[0]
    elif not name.endswith("Left") and family in ("eye", "brow", "cheek"):
        centre[0] = 0.0  # browInnerUp, cheekPuff: the middle
    if name in ("jawOpen", "mouthClose"):
        direction = direction * (1.0 if name == "jawOpen" else -0.5)
    if "Smile" in name or "UpperUp" in name:
        direction = np.array([0.05 * np.sign(centre[0] or 1), 0.0, 0.08], np.float32)
    weight = np.clip(1.0 - np.linalg.norm(verts - centre, axis=1) / radius, 0.0, 1.0)[:, None]
    return weight * direction


def arkit_head(name: str = "Face", arkit_names=None):
    """A sphere head with one shape key per ARKit name (Basis first), linked to the scene and active."""
    if arkit_names is None:
        from .jobs import import_engine
        import_engine()
        from engine.arkit import ARKIT_NAMES as arkit_names
    mesh = bpy.data.meshes.new(name)
    import bmesh
    bm = bmesh.new()
    bmesh.ops.create_uvsphere(bm, u_segments=32, v_segments=16, radius=1.0)
    bm.to_mesh(mesh)
    bm.free()
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    obj.select_set(True)
    verts = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", verts)
    verts = verts.reshape(-1, 3)
    obj.shape_key_add(name="Basis", from_mix=False)
    for shape in arkit_names:
        block = obj.shape_key_add(name=shape, from_mix=False)
        block.data.foreach_set("co", (verts + _shape_offsets(shape, verts)).ravel())
    return obj


def build_demo_blend(audio: Path, render: Path, curves_path: Path, subject: Path, output: Path,
                     fps: float = 25.0) -> dict:
    """The demo's .blend: the sound strip and the rendered strip aligned, and the rig keyed with the
    curves (the same code Audio to Rig uses once its engine job is done)."""
    from . import register, sequencer
    from .jobs import import_engine
    from .mapping import map_names
    from .rig import key_curves, shape_key_names
    import_engine()
    from engine.arkit import ARKIT_NAMES
    from engine.curves import Curves
    bpy.ops.wm.read_factory_settings(use_empty=True)
    register()
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = int(round(fps)), 1.0
    sound = sequencer.add_sound(scene, audio, frame_start=1, channel=1, name="speech")
    rendered = sequencer.add_movie(scene, render, frame_start=1, channel=sequencer.free_channel_above(scene, sound),
                                   name="speech render")
    sequencer.set_handles(rendered, *sequencer.handles(sound))
    first, after = sequencer.handles(sound)
    scene.frame_start, scene.frame_end = first, after - 1
    scene.sequence_editor.active_strip = sound
    rig = arkit_head("Face", ARKIT_NAMES)
    mapping = map_names(ARKIT_NAMES, shape_key_names(rig))
    curves = Curves.load(curves_path)
    written = key_curves(rig, curves, mapping, sequencer.content_start(sound), fps, sound.name, replace=False)
    scene.synctalk.subject = str(subject)
    scene.synctalk.last_report = mapping.report()
    output.parent.mkdir(parents=True, exist_ok=True)
    # Relative paths, so the .blend keeps working when the output folder is moved as a whole.
    bpy.ops.wm.save_as_mainfile(filepath=str(output), relative_remap=True)
    return {"blend": str(output), "rig": rig.name, "strip_frames": sequencer.handles(sound)[1] - sequencer.handles(sound)[0],
            "keyed_frames": written["frames"], "curves": written["curves"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Build the demo's .blend")
    parser.add_argument("--audio", type=Path, required=True)
    parser.add_argument("--render", type=Path, required=True)
    parser.add_argument("--curves", type=Path, required=True)
    parser.add_argument("--subject", type=Path, required=True)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    result = build_demo_blend(args.audio.resolve(), args.render.resolve(), args.curves.resolve(),
                              args.subject.resolve(), args.output.resolve(), args.fps)
    import json
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
