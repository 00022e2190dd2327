"""Curves <-> a rig: 52 ARKit weights on shape keys, the head pose on a bone or an object.

Head pose axes: the engine's head frame has x to the subject's left, y up, z out of the face, with
pitch positive looking up. A head bone pointing up (+Y along the bone, roll 0) has the same axes
as that frame; an object facing Blender's front view (-Y) has x = X, y = Z, z = -Y.
"""
from __future__ import annotations

from dataclasses import dataclass

import bpy
import numpy as np
from mathutils import Euler, Quaternion, Vector

from .keyframes import Channel, read_channel
from .mapping import Mapping

# Custom property on the head bone or object: the rotation (w, x, y, z) and location the pose is keyed on.
_REST = "synctalk_rest"


def shape_key_names(obj) -> list[str]:
    """Shape-key names of a mesh, without the basis; [] when it has none."""
    key = getattr(obj.data, "shape_keys", None) if obj is not None and obj.data is not None else None
    if key is None:
        return []
    return [block.name for block in key.key_blocks[1:]]


def shape_key_path(name: str) -> str:
    return f'key_blocks["{bpy.utils.escape_identifier(name)}"].value'


@dataclass
class HeadTarget:
    """Where the head pose goes: a pose bone of an armature, or an object's own transform."""
    obj: object
    bone: str = ""

    @property
    def is_bone(self) -> bool:
        return bool(self.bone)

    def _prefix(self) -> str:
        return f'pose.bones["{bpy.utils.escape_identifier(self.bone)}"].' if self.is_bone else ""

    def _owner(self):
        return self.obj.pose.bones[self.bone] if self.is_bone else self.obj

    def _to_local(self, rotation: np.ndarray, translation: np.ndarray):
        """(pitch, yaw, roll) and head-frame metres -> Euler XYZ and location in the target's axes."""
        pitch, yaw, roll = rotation.T
        tx, ty, tz = translation.T
        if self.is_bone:
            return np.stack([-pitch, yaw, roll], 1), np.stack([tx, ty, tz], 1)
        return np.stack([-pitch, -roll, yaw], 1), np.stack([tx, -tz, ty], 1)

    def _from_local(self, euler: np.ndarray, location: np.ndarray):
        if self.is_bone:
            return np.stack([-euler[:, 0], euler[:, 1], euler[:, 2]], 1), location.copy()
        return (np.stack([-euler[:, 0], euler[:, 2], -euler[:, 1]], 1),
                np.stack([location[:, 0], location[:, 2], -location[:, 1]], 1))

    def channels(self, rotation: np.ndarray, translation: np.ndarray) -> list[Channel]:
        """Channels for the pose on top of the target's rest: its current rotation and location,
        remembered on the target so that reading the curves back is relative to the same rest."""
        owner, prefix = self._owner(), self._prefix()
        rest_rotation = self._rest()[0] if _REST in owner else _quaternion_of(owner)
        rest_location = self._rest()[1] if _REST in owner else np.array(owner.location, np.float32)
        owner[_REST] = [float(v) for v in (*rest_rotation, *rest_location)]
        euler, location = self._to_local(rotation, translation)
        channels = [Channel(prefix + "location", i, rest_location[i] + location[:, i]) for i in range(3)]
        rotations = [rest_rotation @ Euler(tuple(e), "XYZ").to_quaternion() for e in euler]
        mode = owner.rotation_mode
        if mode == "QUATERNION":
            values = np.array([tuple(q) for q in rotations], np.float32)
            channels += [Channel(prefix + "rotation_quaternion", i, values[:, i]) for i in range(4)]
        elif mode == "AXIS_ANGLE":
            values = np.array([(q.angle, *q.axis) for q in rotations], np.float32)
            channels += [Channel(prefix + "rotation_axis_angle", i, values[:, i]) for i in range(4)]
        else:
            values = np.array([tuple(q.to_euler(mode)) for q in rotations], np.float32)
            channels += [Channel(prefix + "rotation_euler", i, values[:, i]) for i in range(3)]
        return channels

    def _rest(self):
        """(rotation quaternion, location) the pose was keyed on top of; identity for an unkeyed bone."""
        owner = self._owner()
        if _REST in owner:
            values = list(owner[_REST])
            return Quaternion(values[:4]), np.array(values[4:], np.float32)
        if self.is_bone:
            return Quaternion(), np.zeros(3, np.float32)
        return None

    def read(self, frames: np.ndarray):
        """(rotation, translation) of the animated pose at `frames` relative to the rest (an object
        never keyed by Audio to Rig: relative to its first frame); None when the rotation is not animated."""
        owner, prefix = self._owner(), self._prefix()
        mode = owner.rotation_mode
        path, size = {"QUATERNION": ("rotation_quaternion", 4), "AXIS_ANGLE": ("rotation_axis_angle", 4)}.get(
            mode, ("rotation_euler", 3))
        rot = [read_channel(self.obj, prefix + path, i, frames) for i in range(size)]
        loc = [read_channel(self.obj, prefix + "location", i, frames) for i in range(3)]
        if all(r is None for r in rot):
            return None
        current = [getattr(owner, path)[i] for i in range(size)]
        rot = np.stack([r if r is not None else np.full(len(frames), current[i], np.float32)
                        for i, r in enumerate(rot)], 1)
        location = np.stack([l if l is not None else np.full(len(frames), owner.location[i], np.float32)
                             for i, l in enumerate(loc)], 1)
        if mode == "QUATERNION":
            quats = [Quaternion(tuple(q)).normalized() for q in rot]
        elif mode == "AXIS_ANGLE":
            quats = [Quaternion(Vector(tuple(q[1:])), q[0]) for q in rot]
        else:
            quats = [Euler(tuple(e), mode).to_quaternion() for e in rot]
        rest = self._rest() or (quats[0], location[0])
        rest_inv = rest[0].inverted()
        euler = np.array([tuple((rest_inv @ q).to_euler("XYZ")) for q in quats], np.float32)
        rotation, translation = self._from_local(euler, location - rest[1])
        return rotation.astype(np.float32), translation.astype(np.float32)


def _quaternion_of(owner) -> Quaternion:
    mode = owner.rotation_mode
    if mode == "QUATERNION":
        return Quaternion(owner.rotation_quaternion)
    if mode == "AXIS_ANGLE":
        angle, *axis = owner.rotation_axis_angle
        return Quaternion(Vector(axis), angle)
    return owner.rotation_euler.to_quaternion()


def shape_channels(curves, mapping: Mapping) -> list[Channel]:
    """One channel per mapped shape key: its ARKit curve, or the mean of the curves that share it."""
    from engine.arkit import ARKIT_INDEX
    return [Channel(shape_key_path(shape), 0, curves.weights[:, [ARKIT_INDEX[a] for a in arkits]].mean(axis=1))
            for shape, arkits in mapping.shapes().items()]


def key_take(scene, meshes, curves, start_frame: float, scene_fps: float, line: str, head: HeadTarget | None = None,
             replace: bool = False, clear_stale: bool = False, seed: int = 0, source: str = "",
             extra_channels: list[Channel] = ()) -> dict:
    """Key the curves as one take on every (mesh, mapping) in `meshes` and on the head target;
    `extra_channels` (custom properties, e.g. Live Link eye angles) go on the first mesh's shape keys."""
    from .takes import TakeWriter
    step = scene_fps / curves.fps
    end = start_frame + (len(curves) - 1) * step
    writer = TakeWriter(scene, line, start_frame, end, replace, clear_stale, seed, source)
    actions, keyed = {}, 0
    for k, (obj, mapping) in enumerate(meshes):
        channels = shape_channels(curves, mapping) + (list(extra_channels) if k == 0 else [])
        actions[obj.name] = writer.key(obj, channels, step).name
        keyed += len(channels)
    if head is not None:
        channels = head.channels(curves.head_rotation, curves.head_translation)
        actions[f"{head.obj.name} (head)"] = writer.key(head.obj, channels, step, shape_keys=False).name
    notes = writer.finish()
    return {"take": writer.name, "actions": actions, "frames": len(curves), "curves": keyed, "end": end,
            "notes": notes}


def key_curves(obj, curves, mapping: Mapping, start_frame: float, scene_fps: float, line: str,
               replace: bool = False, head: HeadTarget | None = None) -> dict:
    """Key the curves on one mesh (and the head target) as a take of `line` in the current scene."""
    return key_take(bpy.context.scene, [(obj, mapping)], curves, start_frame, scene_fps, line, head, replace)


def curves_from_rig(obj, mapping: Mapping, frames: np.ndarray, scene_fps: float, head: HeadTarget | None = None):
    """Curves read back from the rig's animation (so hand edits count): unmapped or unanimated
    shapes are 0, the pose comes from the head target when it is animated."""
    return curves_from_meshes([(obj, mapping)], frames, scene_fps, head)


def curves_from_meshes(meshes, frames: np.ndarray, scene_fps: float, head: HeadTarget | None = None):
    """As curves_from_rig over several (mesh, mapping): each ARKit curve from the first mesh that maps it
    (read from its first shape key)."""
    from engine.arkit import ARKIT_INDEX
    from engine.curves import Curves
    weights = np.zeros((len(frames), 52), np.float32)
    done = set()
    for obj, mapping in meshes:
        key = obj.data.shape_keys
        for arkit, shapes in mapping.targets.items():
            if arkit in done:
                continue
            values = read_channel(key, shape_key_path(shapes[0]), 0, frames)
            if values is not None:
                weights[:, ARKIT_INDEX[arkit]] = np.clip(values, 0.0, 1.0)
                done.add(arkit)
    rotation = translation = None
    if head is not None:
        pose = head.read(frames)
        if pose is not None:
            rotation, translation = pose
    return Curves(scene_fps, weights, rotation, translation)
