"""Operators on the rig that need no engine job: takes (switch, delete), the name-mapping table
(fill from a preset, save as a preset) and Live Link Face CSV import and export.

The CSV format belongs to the engine (engine/expression/livelink.py); these operators move it between
files and the rig: blendshapes to the mapped shape keys, head angles to the head target, eye angles to
custom properties on the first mesh's shape keys (LeftEyeYaw ... RightEyeRoll), the first timecode to
the take, so an import exported again gives back the same timecodes and angles.
"""
from __future__ import annotations

import os
from pathlib import Path

import bpy
import numpy as np
from bpy.props import EnumProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ExportHelper, ImportHelper

from . import takes
from .jobs import import_engine
from .keyframes import Channel, read_channel
from .mapping import map_names
from .mapping_presets import BUILTIN, save_user_preset, user_presets
from .operators import UserError, _head_target, keyable_rig, keying_report, rig_meshes, scene_fps, table_rows
from .properties import settings
from .rig import curves_from_meshes, key_take, shape_key_names


def user_presets_dir() -> Path:
    """$SYNCTALK_PRESETS (scripts, tests), else synctalk/mapping_presets in Blender's user config folder."""
    folder = os.environ.get("SYNCTALK_PRESETS")
    return Path(folder) if folder else Path(bpy.utils.user_resource("CONFIG", path="synctalk/mapping_presets"))


def _preset_tables() -> dict:
    return {**BUILTIN, **{f"USER:{k}": v for k, v in user_presets(user_presets_dir()).items()}}


_preset_items_cache = []   # Blender needs the item strings of a dynamic enum kept alive


def _preset_items(self, context):
    _preset_items_cache[:] = [(key, label, description) for key, (label, description, _) in _preset_tables().items()]
    return _preset_items_cache


def _refused_in_tweak_mode(operator, take) -> bool:
    """Reports and returns True where an object of the take is in the NLA's tweak mode (its action cannot be set)."""
    if tweaked := takes.tweaked_object(take):
        operator.report({"ERROR"}, f"'{tweaked}' is in the NLA editor's tweak mode: leave it (Tab) first")
    return tweaked is not None


class SYNCTALK_OT_switch_take(bpy.types.Operator):
    """Play the selected take: its actions become the ones on its meshes and head"""
    bl_idname = "synctalk.switch_take"
    bl_label = "Switch Take"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(default=-1, description="Take to switch to; -1: the one selected in the list")

    def execute(self, context):
        s = settings(context)
        index = self.index if self.index >= 0 else s.take_index
        if not 0 <= index < len(s.takes):
            self.report({"ERROR"}, "no take selected")
            return {"CANCELLED"}
        take = s.takes[index]
        if _refused_in_tweak_mode(self, take):
            return {"CANCELLED"}
        changed = takes.switch_take(take)
        self.report({"INFO"}, f"take '{take.name}' plays ({changed} animations switched)")
        return {"FINISHED"}


class SYNCTALK_OT_delete_take(bpy.types.Operator):
    """Delete the selected take and its actions"""
    bl_idname = "synctalk.delete_take"
    bl_label = "Delete Take"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        s = settings(context)
        if not 0 <= s.take_index < len(s.takes):
            self.report({"ERROR"}, "no take selected")
            return {"CANCELLED"}
        name = s.takes[s.take_index].name
        if _refused_in_tweak_mode(self, s.takes[s.take_index]):
            return {"CANCELLED"}
        takes.delete_take(context.scene, s.take_index)
        self.report({"INFO"}, f"take '{name}' deleted")
        return {"FINISHED"}

    def invoke(self, context, event):
        return context.window_manager.invoke_confirm(self, event)


class SYNCTALK_OT_mapping_fill(bpy.types.Operator):
    """Fill the mapping table from a preset, with the shape keys the selected meshes have, to edit it"""
    bl_idname = "synctalk.mapping_fill"
    bl_label = "Edit as Table"
    bl_options = {"REGISTER", "UNDO"}

    preset: EnumProperty(name="Preset", items=_preset_items)

    def execute(self, context):
        import_engine()
        from engine.arkit import ARKIT_NAMES
        s = settings(context)
        table = _preset_tables()[self.preset][2]
        meshes = [o for o in {context.active_object, *context.selected_objects} if o is not None and shape_key_names(o)]
        found = {name: [] for name in ARKIT_NAMES}
        for obj in meshes:
            for arkit, shapes in map_names(ARKIT_NAMES, shape_key_names(obj), table=table).targets.items():
                found[arkit] += [n for n in shapes if n not in found[arkit]]
        s.mapping_rows.clear()
        for name in ARKIT_NAMES:
            row = s.mapping_rows.add()
            row.arkit = name
            # No mesh selected: the preset's own names, to edit before keying.
            row.shapes = ", ".join(found[name] if meshes else table.get(name, ()))
        s.mapping = "TABLE"
        label = _preset_tables()[self.preset][0]
        mapped = sum(1 for v in found.values() if v)
        self.report({"INFO"}, f"table filled from {label}: {mapped} of 52 found on {len(meshes)} meshes" if meshes
                    else f"table filled with {label}'s names (no mesh selected)")
        return {"FINISHED"}


class SYNCTALK_OT_mapping_save(bpy.types.Operator):
    """Save the mapping table as your own preset (in Blender's user configuration folder)"""
    bl_idname = "synctalk.mapping_save"
    bl_label = "Save Preset"

    name: StringProperty(name="Name", default="My Rig")

    def execute(self, context):
        s = settings(context)
        table = table_rows(s)
        if not any(table.values()):
            self.report({"ERROR"}, "the mapping table is empty: fill it from a preset first")
            return {"CANCELLED"}
        try:
            path = save_user_preset(user_presets_dir(), self.name, table)
        except OSError as exc:
            self.report({"ERROR"}, f"cannot save the preset: {exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"preset '{self.name}' saved: {path}")
        return {"FINISHED"}

    def invoke(self, context, event):
        return context.window_manager.invoke_props_dialog(self)


def _eye_channels(eye_angles: np.ndarray) -> list[Channel]:
    from engine.expression.livelink import EYE_COLUMNS
    return [Channel(f'["{name}"]', 0, eye_angles[:, k]) for k, name in enumerate(EYE_COLUMNS)]


class SYNCTALK_OT_import_livelink(bpy.types.Operator, ImportHelper):
    """Key a Live Link Face CSV take on the selected meshes and the head, from the current frame"""
    bl_idname = "synctalk.import_livelink"
    bl_label = "Import Live Link Face CSV"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".csv"
    filter_glob: StringProperty(default="*.csv", options={"HIDDEN"})

    def execute(self, context):
        import_engine()
        from engine.errors import EngineError
        from engine.expression.livelink import EYE_COLUMNS, read_livelink_take
        try:
            meshes, skipped, head = keyable_rig(context)
            take = read_livelink_take(self.filepath)
        except (UserError, EngineError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        scene = context.scene
        key = meshes[0][0].data.shape_keys
        for name in EYE_COLUMNS:
            if name not in key:
                key[name] = 0.0   # the property the eye-angle curve animates
        line = Path(self.filepath).stem
        written = key_take(scene, meshes, take.curves, scene.frame_current, scene_fps(scene), line, head,
                           source=f"Live Link Face: {Path(self.filepath).name}",
                           extra_channels=_eye_channels(take.eye_angles))
        record = settings(context).takes[-1]
        record.timecode_frame, record.timecode_rate = take.first_frame, take.curves.fps
        report = keying_report(context, meshes, skipped)
        self.report({"INFO"}, f"imported {written['frames']} frames at {take.curves.fps:g} fps as take "
                              f"'{written['take']}'; {report}")
        return {"FINISHED"}


class SYNCTALK_OT_export_livelink(bpy.types.Operator, ExportHelper):
    """Write the selected meshes' curves (and the head and eye angles) as a Live Link Face CSV: the
    playing take's frames, else the scene's"""
    bl_idname = "synctalk.export_livelink"
    bl_label = "Export Live Link Face CSV"

    filename_ext = ".csv"
    filter_glob: StringProperty(default="*.csv", options={"HIDDEN"})

    def execute(self, context):
        import_engine()
        from engine.errors import EngineError
        from engine.expression.livelink import EYE_COLUMNS, write_livelink_csv
        scene = context.scene
        try:
            meshes, _ = rig_meshes(context)
            head = _head_target(context)
        except UserError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        fps = scene_fps(scene)
        playing = takes.active_take(scene)
        first, last = (playing.frame_start, playing.frame_end) if playing else (scene.frame_start, scene.frame_end)
        frames = np.arange(np.ceil(first - 1e-3), np.floor(last + 1e-3) + 1, dtype=np.float64)
        curves = curves_from_meshes(meshes, frames, fps, head)
        key = meshes[0][0].data.shape_keys
        eyes = np.zeros((len(frames), len(EYE_COLUMNS)), np.float32)
        for k, name in enumerate(EYE_COLUMNS):
            values = read_channel(key, f'["{name}"]', 0, frames)
            if values is not None:
                eyes[:, k] = values
        if playing is not None and playing.timecode_rate > 0:
            # The imported take's own timecode, counted on from its first frame (in seconds: the file's
            # frame rate may differ from the scene's).
            seconds = playing.timecode_frame / round(playing.timecode_rate) + (frames[0] - playing.frame_start) / fps
            first_code = int(round(seconds * round(fps)))
        else:
            first_code = int(frames[0])
        try:
            path = write_livelink_csv(self.filepath, curves, first_code, eyes)
        except (OSError, EngineError) as exc:
            self.report({"ERROR"}, f"cannot write {self.filepath}: {exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"wrote {len(frames)} frames (scene frames {frames[0]:g}-{frames[-1]:g}) to {path}")
        if fps != round(fps):
            self.report({"WARNING"}, f"Live Link Face CSV counts whole frame rates: read back, these {fps:.3f}-fps "
                                     f"frames play at {round(fps)}, {abs(round(fps) / fps - 1):.1%} fast")
        return {"FINISHED"}


classes = (SYNCTALK_OT_switch_take, SYNCTALK_OT_delete_take, SYNCTALK_OT_mapping_fill, SYNCTALK_OT_mapping_save,
           SYNCTALK_OT_import_livelink, SYNCTALK_OT_export_livelink)
