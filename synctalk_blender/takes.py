"""Takes: every Audio to Rig run keys a new take, earlier takes stay and can be switched back to.

A take is one action per keyed ID (each mesh's shape keys, the head bone's armature or head object),
listed in the scene (`scene.synctalk.takes`), which also keeps the actions in the file: no run leaves
an action nobody lists. A new take starts as a copy of the ID's current action (other lines, other
channels and keys outside this line keep playing) with this line's frames keyed anew; the action it
was copied from is left untouched (an action the animator made before is listed as a take too).

Replace Keys writes into the current take instead (an explicit choice). Hand edits are detected,
never silently lost: each take action remembers a fingerprint of the keys it wrote; when a run
starts from a take whose keys inside the line no longer match, the report names the edited curves
and where they are kept. When a line was keyed before over more frames than it has now (a shorter
strip), the old keys past it are removed only with Remove Keys Past the Line; otherwise the report
says they still play.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import bpy
import numpy as np

from .keyframes import Channel, assign_action, fcurves_of, remove_keys_between, write_channels, write_into_action

# JSON on a take's action: the line, the frames keyed (start, end), the frames the line's keys cover
# (extent: wider when an earlier, longer run left keys) and fingerprints of the written keys.
TAKE_PROP = "synctalk_take"


def target_id(target):
    """The ID a take target animates: the object's shape keys, or the object."""
    if target.obj is None:
        return None
    return target.obj.data.shape_keys if target.shape_keys else target.obj


def in_tweak_mode(id_block) -> bool:
    """Whether the ID's NLA is in tweak mode: the strip being edited holds its action, which cannot be set."""
    return bool(id_block is not None and id_block.animation_data and id_block.animation_data.use_tweak_mode)


def tweaked_object(take) -> str | None:
    """The name of an object of the take whose animation is in the NLA's tweak mode (None: none is)."""
    return next((t.obj.name for t in take.targets if in_tweak_mode(target_id(t))), None)


def action_info(action) -> dict | None:
    text = action.get(TAKE_PROP) if action is not None else None
    return json.loads(text) if text else None


def _fingerprint(fcurve, first: float, last: float) -> str:
    n = len(fcurve.keyframe_points)
    co = np.empty(2 * n, np.float32)
    fcurve.keyframe_points.foreach_get("co", co)
    co = co.reshape(n, 2)
    inside = co[(co[:, 0] >= first - 1e-3) & (co[:, 0] <= last + 1e-3)]
    return hashlib.blake2b(np.round(inside, 5).tobytes(), digest_size=8).hexdigest()


def edited_curves(id_block, action) -> list[str]:
    """Data paths of `action`'s written curves whose keys inside its line were changed since it was keyed."""
    info = action_info(action)
    fcurves = fcurves_of(id_block) if id_block.animation_data and id_block.animation_data.action == action else None
    if info is None or fcurves is None:
        return []
    edited = []
    for path, stamp in info["keys"].items():
        data_path, _, index = path.rpartition("#")
        fcurve = fcurves.find(data_path, index=int(index))
        if fcurve is None or _fingerprint(fcurve, info["start"], info["end"]) != stamp:
            edited.append(data_path)
    return edited


def _curve_label(data_path: str) -> str:
    """'key_blocks["jawOpen"].value' -> 'jawOpen'; other paths as they are."""
    return data_path.split('"')[1] if data_path.startswith("key_blocks[") else data_path


def active_take(scene):
    """The take whose actions are the ones playing (the last one in the list when several match)."""
    for take in reversed(scene.synctalk.takes):
        ids = [(target_id(t), t.action) for t in take.targets]
        if ids and all(i is not None and i.animation_data and i.animation_data.action == a for i, a in ids):
            return take
    return None


def switch_take(take) -> int:
    """Make the take's actions the ones playing; returns how many IDs changed."""
    changed = 0
    for target in take.targets:
        id_block = target_id(target)
        if id_block is None or target.action is None:
            continue
        if id_block.animation_data is None or id_block.animation_data.action != target.action:
            assign_action(id_block, target.action)
            changed += 1
    return changed


def delete_take(scene, index: int) -> None:
    """Remove a take and its actions (the IDs that played them are left without an action)."""
    take = scene.synctalk.takes[index]
    actions = [t.action for t in take.targets if t.action is not None]
    for target in take.targets:
        id_block = target_id(target)
        if id_block is not None and id_block.animation_data and id_block.animation_data.action == target.action:
            id_block.animation_data.action = None
    scene.synctalk.takes.remove(index)
    listed = {t.action for other in scene.synctalk.takes for t in other.targets}
    for action in actions:
        if action not in listed:
            bpy.data.actions.remove(action)
    scene.synctalk.take_index = min(scene.synctalk.take_index, len(scene.synctalk.takes) - 1)


def _listed(scene, action) -> bool:
    return any(t.action == action for take in scene.synctalk.takes for t in take.targets)


@dataclass
class TakeWriter:
    """Keys one run onto several IDs as one take; `finish()` lists it and says what happened.

    The take records are added at the end: adding to a collection can move its items in memory."""
    scene: object
    line: str
    start: float
    end: float
    replace: bool = False
    clear_stale: bool = False
    seed: int = 0
    source: str = ""
    notes: list = field(default_factory=list)

    def __post_init__(self):
        number = 1 + sum(1 for t in self.scene.synctalk.takes if t.line == self.line)
        self.name = f"{self.line} take {number}"
        self._new = []      # (object, shape_keys, action) keyed into new actions
        self._before = []   # actions the animator made that no take lists yet

    def _previous_range(self, old_action):
        """(start, end) this line was keyed over before: from the current action, else the line's last take."""
        info = action_info(old_action)
        if info is not None and info.get("line") == self.line:
            return tuple(info["extent"])
        earlier = [t for t in self.scene.synctalk.takes if t.line == self.line]
        return (earlier[-1].frame_start, earlier[-1].frame_end) if earlier else None

    def key(self, obj, channels: list[Channel], frame_step: float, shape_keys: bool = True):
        """Key `channels` on the object's shape keys (shape_keys) or on the object itself; returns the action."""
        id_block = obj.data.shape_keys if shape_keys else obj
        old = id_block.animation_data.action if id_block.animation_data else None
        replace = self.replace and old is not None
        if replace and (old.library or old.override_library):
            # an action linked from another file: keys written into it would be gone once this file is saved
            self.notes.append(f"'{old.name}' on {obj.name} is linked from another file: keyed as a new take instead "
                              "of replacing its keys")
            replace = False
        # Only edits this run writes over count: on the curves it keys, inside its frames.
        info = action_info(old)
        overlaps = info is not None and info["start"] <= self.end + 0.5 and info["end"] >= self.start - 0.5
        written = {c.data_path for c in channels}
        edited = [p for p in edited_curves(id_block, old) if p in written] if overlaps else []
        if edited:
            where = f"overwritten in '{old.name}' (Replace Keys is on)" if replace else \
                f"kept in '{old.name}': switch back to it in Takes"
            shown = ", ".join(_curve_label(p) for p in edited[:6]) + (" ..." if len(edited) > 6 else "")
            self.notes.append(f"hand edits on {obj.name} ({len(edited)} curves: {shown}) {where}")
        previous = self._previous_range(old) if old is not None else None
        if replace:
            action = old
            write_into_action(id_block, channels, self.start, frame_step, keep_outside=True)
        else:
            if old is not None and not _listed(self.scene, old):
                self._before.append((obj, shape_keys, old))
            name = f"{self.name} {obj.name}" if self._new else self.name
            action = write_channels(id_block, channels, self.start, frame_step, name, replace=False)
            if old is not None:
                old.use_fake_user = False   # the take list keeps it in the file
            self._new.append((obj, shape_keys, action))
        extent = self._trim_stale(obj, id_block, channels, previous)
        self._stamp(id_block, action, channels, extent)
        return action

    def _trim_stale(self, obj, id_block, channels, previous) -> tuple:
        """Drop (or report) the keys an earlier, longer run of this line left outside it; returns the
        frames this line's keys now cover."""
        if previous is None or (previous[0] >= self.start - 0.5 and previous[1] <= self.end + 0.5):
            return self.start, self.end
        if not self.clear_stale:
            self.notes.append(f"{obj.name}: this line was keyed over frames {previous[0]:g}-{previous[1]:g} before; "
                              f"its keys outside {self.start:g}-{self.end:g} still play (Remove Keys Past the Line "
                              "deletes them)")
            return min(previous[0], self.start), max(previous[1], self.end)
        fcurves = fcurves_of(id_block)
        removed = 0
        for channel in channels:
            fcurve = fcurves.find(channel.data_path, index=channel.index)
            if fcurve is None:
                continue
            if previous[0] < self.start - 0.5:
                removed += remove_keys_between(fcurve, previous[0], self.start - 0.5)
            if previous[1] > self.end + 0.5:
                removed += remove_keys_between(fcurve, self.end + 0.5, previous[1])
        self.notes.append(f"{obj.name}: removed {removed} keys past the line")
        return self.start, self.end

    def _stamp(self, id_block, action, channels, extent) -> None:
        fcurves = fcurves_of(id_block)
        keys = {}
        for channel in channels:
            fcurve = fcurves.find(channel.data_path, index=channel.index)
            keys[f"{channel.data_path}#{channel.index}"] = _fingerprint(fcurve, self.start, self.end)
        action[TAKE_PROP] = json.dumps({"line": self.line, "start": self.start, "end": self.end,
                                        "extent": list(extent), "keys": keys})

    def _add_take(self, name: str, line: str, keyed: list, seed: int, source: str, frames: tuple):
        takes = self.scene.synctalk.takes
        take = takes.add()
        take.name, take.line, take.seed, take.source = name, line, seed, source
        take.frame_start, take.frame_end = frames
        for obj, shape_keys, action in keyed:
            target = take.targets.add()
            target.obj, target.shape_keys, target.action = obj, shape_keys, action

    def finish(self) -> str:
        """List the actions the animator had and the new take (selected); returns the notes as one line."""
        if self._before:
            ranges = np.array([action.frame_range for _, _, action in self._before])
            self._add_take(f"before {self.name}", "", self._before, 0, "the animation these meshes had",
                           (float(ranges[:, 0].min()), float(ranges[:, 1].max())))
        if self._new:
            self._add_take(self.name, self.line, self._new, self.seed, self.source, (self.start, self.end))
            self.scene.synctalk.take_index = len(self.scene.synctalk.takes) - 1
        return "; ".join(self.notes)
