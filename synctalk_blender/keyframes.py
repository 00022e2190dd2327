"""Writing curves as keyframes, in bulk, into a new action.

`keyframe_points.add(n)` + `foreach_set` writes 52 curves x 1,500 keys in milliseconds, where
`keyframe_insert` per frame takes tens of seconds. Blender 4.4+ keeps F-curves in slotted actions
(action -> slot -> layer -> strip -> channelbag -> fcurves); 4.2 and 4.3 have `action.fcurves`.

A write goes into a NEW action named after the audio strip and assigned to the ID:
- keep (default): the new action starts as a copy of the ID's current action, so its other
  channels and its keys outside the written frame range still play; the old action itself is
  left untouched in the file (with a fake user, so saving never drops it).
- replace: the new action holds only the written curves.
"""
from __future__ import annotations

from dataclasses import dataclass

import bpy
import numpy as np

# Enum indices for foreach_set: interpolation (CONSTANT, LINEAR, ...), handle types (FREE, ..., AUTO_CLAMPED).
LINEAR = 1
AUTO_CLAMPED = 4
_KEPT_FLOAT2 = ("co", "handle_left", "handle_right")
_KEPT_ENUM = ("interpolation", "handle_left_type", "handle_right_type")


@dataclass
class Channel:
    data_path: str       # e.g. 'key_blocks["jawOpen"].value' or 'pose.bones["head"].rotation_euler'
    index: int
    values: np.ndarray   # (N,) one value per frame


def has_slotted_actions() -> bool:
    return bpy.app.version >= (4, 4, 0)


def _id_type(id_block) -> str:
    return id_block.id_type  # 'KEY', 'OBJECT', ...


def _assign_new_action(id_block, name: str, replace: bool):
    anim = id_block.animation_data or id_block.animation_data_create()
    old = anim.action
    if old is not None and not replace:
        action = old.copy()
        action.name = name
        old.use_fake_user = True
    else:
        action = bpy.data.actions.new(name)
    return assign_action(id_block, action)


def assign_action(id_block, action):
    """Make `action` the ID's animation (with a slot for this ID in 4.4+); returns it."""
    anim = id_block.animation_data or id_block.animation_data_create()
    anim.action = action
    if has_slotted_actions():
        slot = anim.action_slot
        if slot is None:
            slot = next((s for s in action.slots if s.target_id_type in (_id_type(id_block), "UNSPECIFIED")), None) \
                or action.slots.new(id_type=_id_type(id_block), name=id_block.name)
            anim.action_slot = slot
    return action


def fcurves_of(id_block):
    """The F-curve collection of the ID's assigned action (and slot, in 4.4+), or None."""
    anim = id_block.animation_data
    if anim is None or anim.action is None:
        return None
    if has_slotted_actions():
        if anim.action_slot is None:
            return None
        return _channelbag(anim.action, anim.action_slot).fcurves
    return anim.action.fcurves


def _channelbag(action, slot):
    """The slot's channelbag in the action's first layer and keyframe strip, made when missing
    (bpy_extras.anim_utils has a helper for this only from 5.0)."""
    layer = action.layers[0] if len(action.layers) else action.layers.new("Layer")
    strip = layer.strips[0] if len(layer.strips) else layer.strips.new(type="KEYFRAME")
    return strip.channelbag(slot, ensure=True)


def _read_points(fcurve) -> dict:
    n = len(fcurve.keyframe_points)
    data = {}
    for prop in _KEPT_FLOAT2:
        buf = np.empty(2 * n, np.float32)
        fcurve.keyframe_points.foreach_get(prop, buf)
        data[prop] = buf.reshape(n, 2)
    for prop in _KEPT_ENUM:
        buf = np.empty(n, np.int32)
        fcurve.keyframe_points.foreach_get(prop, buf)
        data[prop] = buf
    return data


def _write_fcurve(fcurve, frames: np.ndarray, values: np.ndarray, keep_outside: bool) -> None:
    co = np.stack([frames, values], axis=1).astype(np.float32)
    n = len(co)
    # New keys need only their position and interpolation (handles are auto-clamped and placed by update()).
    points = {"co": co, "interpolation": np.full(n, LINEAR, np.int32)}
    if keep_outside and len(fcurve.keyframe_points):
        # Keys outside the written range survive as they were (handles and interpolation included).
        old = _read_points(fcurve)
        points.update(handle_left=co, handle_right=co, handle_left_type=np.full(n, AUTO_CLAMPED, np.int32),
                      handle_right_type=np.full(n, AUTO_CLAMPED, np.int32))
        outside = (old["co"][:, 0] < frames[0] - 0.5) | (old["co"][:, 0] > frames[-1] + 0.5)
        merged = {prop: np.concatenate([old[prop][outside], points[prop]]) for prop in points}
        order = np.argsort(merged["co"][:, 0], kind="stable")
        points = {prop: value[order] for prop, value in merged.items()}
    fcurve.keyframe_points.clear()
    fcurve.keyframe_points.add(len(points["co"]))
    for prop, value in points.items():
        fcurve.keyframe_points.foreach_set(prop, np.ascontiguousarray(value).ravel())
    fcurve.update()


def write_channels(id_block, channels: list[Channel], start_frame: float, frame_step: float,
                   action_name: str, replace: bool = False):
    """Key every channel at frames start_frame + i * frame_step in a new action; returns the action."""
    action = _assign_new_action(id_block, action_name, replace)
    write_into_action(id_block, channels, start_frame, frame_step, keep_outside=not replace)
    return action


def write_into_action(id_block, channels: list[Channel], start_frame: float, frame_step: float,
                      keep_outside: bool = True) -> None:
    """Key every channel into the ID's assigned action, over the frames the channel covers."""
    fcurves = fcurves_of(id_block)
    for channel in channels:
        values = np.asarray(channel.values, np.float32)
        frames = (start_frame + np.arange(len(values), dtype=np.float64) * frame_step).astype(np.float32)
        fcurve = fcurves.find(channel.data_path, index=channel.index) or \
            fcurves.new(channel.data_path, index=channel.index)
        _write_fcurve(fcurve, frames, values, keep_outside=keep_outside)


def remove_keys_between(fcurve, first: float, last: float) -> int:
    """Delete the F-curve's keys on frames first..last (inclusive); returns how many went."""
    old = _read_points(fcurve)
    kept = (old["co"][:, 0] < first - 1e-3) | (old["co"][:, 0] > last + 1e-3)
    removed = int((~kept).sum())
    if removed:
        fcurve.keyframe_points.clear()
        fcurve.keyframe_points.add(int(kept.sum()))
        for prop, value in old.items():
            fcurve.keyframe_points.foreach_set(prop, np.ascontiguousarray(value[kept]).ravel())
        fcurve.update()
    return removed


def read_channel(id_block, data_path: str, index: int, frames: np.ndarray) -> np.ndarray | None:
    """Values of one animated channel at `frames` (evaluated, so hand edits and any interpolation
    count), or None when the ID has no such F-curve."""
    fcurves = fcurves_of(id_block)
    fcurve = None if fcurves is None else fcurves.find(data_path, index=index)
    if fcurve is None:
        return None
    return np.array([fcurve.evaluate(float(f)) for f in frames], np.float32)
