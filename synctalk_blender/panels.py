"""Sidebar panels: Train and Render in the Sequencer, Audio to Rig in the 3D View; each shows the job."""
from __future__ import annotations

from pathlib import Path

import bpy

from .jobs import current_job
from .operators import driving_rig
from .takes import active_take


SHOWN_WARNINGS = 3   # the engine's warnings the panel lists under a finished job; all are in the Info log


def short_warning(message: str) -> str:
    """A warning as one panel line shows it: the file it names by its name alone, so what to do is not cut off."""
    where, sep, what = message.partition(": ")
    if sep and ("/" in where or "\\" in where):
        return f"{Path(where).name}: {what}"
    return message


def draw_job(layout) -> None:
    """The current (or last) job: a progress bar, stage/step/metrics/ETA, and Cancel while it runs."""
    job = current_job()
    if job is None:
        return
    state = job.state
    box = layout.box()
    if state.finished:
        box.label(text=f"{job.label}: {state.summary()}", icon="ERROR" if state.error else "INFO")
        if state.error and state.error.get("hint"):
            box.label(text=state.error["hint"])
        for warning in state.warnings[:SHOWN_WARNINGS]:
            box.label(text=short_warning(warning), icon="ERROR")
        if len(state.warnings) > SHOWN_WARNINGS:
            box.label(text=f"... and {len(state.warnings) - SHOWN_WARNINGS} more (Info editor)")
        return
    if hasattr(box, "progress"):  # Blender 4.0+
        box.progress(factor=state.fraction, type="BAR", text=f"{job.label}: {state.summary()}")
    else:
        box.label(text=f"{job.label}: {state.summary()}")
    box.operator("synctalk.cancel_job", icon="CANCEL")


class _SequencerPanel:
    bl_space_type = "SEQUENCE_EDITOR"
    bl_region_type = "UI"
    bl_category = "SyncTalk"


class SYNCTALK_PT_train(_SequencerPanel, bpy.types.Panel):
    bl_label = "Train Subject"

    def draw(self, context):
        s = context.scene.synctalk
        layout = self.layout
        layout.prop(s, "clip")
        if not s.clip:
            layout.label(text="Uses the selected movie or image strip (and sound strip)", icon="SEQUENCE")
        row = layout.row()
        row.prop(s, "clip_channel")
        row.prop(s, "clip_track")
        layout.prop(s, "subject_name")
        layout.prop(s, "preset")
        layout.prop(s, "rig_drives_mouth")
        layout.prop(s, "size")
        layout.operator("synctalk.train_subject", icon="PLAY")
        draw_job(layout)


class SYNCTALK_PT_render(_SequencerPanel, bpy.types.Panel):
    bl_label = "Render into Sequencer"

    def draw(self, context):
        s = context.scene.synctalk
        layout = self.layout
        layout.prop(s, "subject")
        layout.prop(s, "speech_channel")
        layout.prop(s, "rgba")
        if s.subject:
            rig, source = driving_rig(context, Path(bpy.path.abspath(s.subject)))
            first, *why = source.replace("; ", ": ").split(": ")   # one short line each: a label does not wrap
            layout.label(text=f"Driven by {first}", icon="SHAPEKEY_DATA" if rig is not None else "INFO")
            for line in why:
                layout.label(text=line)
        layout.operator("synctalk.render_to_sequencer", icon="RENDER_ANIMATION")
        draw_job(layout)


class SYNCTALK_UL_takes(bpy.types.UIList):
    """Takes: the playing one marked, with its seed and source."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0):
        playing = active_take(context.scene) == item
        row = layout.row(align=True)
        row.label(text=item.name, icon="PLAY" if playing else "ACTION")
        if item.line:
            row.label(text=f"seed {item.seed}" if item.seed else item.source)


class SYNCTALK_UL_mapping(bpy.types.UIList):
    """The mapping table: an ARKit name, the shape keys it drives (editable), and whether any was given."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0):
        split = layout.split(factor=0.4)
        split.label(text=item.arkit, icon="CHECKMARK" if item.shapes.strip() else "ERROR")
        split.prop(item, "shapes", text="", emboss=True)


def draw_missing(layout, s) -> None:
    """The ARKit names the last run found no shape key for, one a line (in columns)."""
    if not s.last_missing:
        return
    names = s.last_missing.split(", ")
    box = layout.box()
    box.label(text=f"No shape key for {len(names)} ARKit curves:", icon="ERROR")
    flow = box.grid_flow(row_major=True, columns=2, even_columns=True, align=True)
    for name in names:
        flow.label(text=name)


class _AudioToRigPanel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "SyncTalk"


class SYNCTALK_PT_audio_to_rig(_AudioToRigPanel, bpy.types.Panel):
    bl_label = "Audio to Rig"

    def draw(self, context):
        s = context.scene.synctalk
        layout = self.layout
        layout.prop(s, "audio")
        if not s.audio:
            layout.label(text="Uses the selected sound strips (a take each)", icon="SOUND")
            row = layout.row(align=True)
            row.operator("synctalk.split_lines", icon="SEQ_SEQUENCER")
            row.prop(s, "min_pause")
        layout.prop(s, "speech_channel")
        layout.prop(s, "generic")
        if s.generic:
            layout.prop(s, "model_file")
        else:
            layout.prop(s, "subject")
        obj = context.active_object
        meshes = [o.name for o in context.selected_objects if o != obj and getattr(o.data, "shape_keys", None)]
        layout.label(text=f"Keys: {', '.join([obj.name] + meshes) if obj is not None else 'select the face mesh'}",
                     icon="SHAPEKEY_DATA")
        col = layout.column(heading="Keys")
        col.prop(s, "replace")
        col.prop(s, "clear_stale")
        col = layout.column(heading="Head Pose")
        col.prop(s, "head_object")
        if s.head_object is not None and s.head_object.type == "ARMATURE":
            col.prop_search(s, "head_bone", s.head_object.pose, "bones")
        layout.operator("synctalk.audio_to_rig", icon="SHAPEKEY_DATA")
        if s.last_report:
            layout.label(text=s.last_report)
        draw_missing(layout, s)
        draw_job(layout)


class SYNCTALK_PT_audio_to_rig_takes(_AudioToRigPanel, bpy.types.Panel):
    bl_label = "Takes"
    bl_parent_id = "SYNCTALK_PT_audio_to_rig"

    def draw(self, context):
        s = context.scene.synctalk
        layout = self.layout
        layout.template_list("SYNCTALK_UL_takes", "", s, "takes", s, "take_index", rows=3)
        row = layout.row(align=True)
        row.operator("synctalk.switch_take", icon="PLAY")
        row.operator("synctalk.delete_take", icon="TRASH", text="")
        if 0 <= s.take_index < len(s.takes):
            take = s.takes[s.take_index]
            layout.label(text=f"frames {take.frame_start:g}-{take.frame_end:g}, {take.source}")


class SYNCTALK_PT_audio_to_rig_animation(_AudioToRigPanel, bpy.types.Panel):
    bl_label = "Animation"
    bl_parent_id = "SYNCTALK_PT_audio_to_rig"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        s = context.scene.synctalk
        layout = self.layout
        col = layout.column(heading="Intensity", align=True)
        for region in ("mouth", "jaw", "brows", "eyes", "cheeks", "nose", "tongue"):
            col.prop(s, f"intensity_{region}")
        layout.prop(s, "head_motion")
        layout.prop(s, "smooth")
        layout.prop(s, "mouth_lead")
        row = layout.row(align=True)
        row.prop(s, "seed")
        row.prop(s, "new_seed", text="", icon="FILE_REFRESH")
        layout.prop(s, "blink_rate")


class SYNCTALK_PT_audio_to_rig_names(_AudioToRigPanel, bpy.types.Panel):
    bl_label = "Names"
    bl_parent_id = "SYNCTALK_PT_audio_to_rig"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        s = context.scene.synctalk
        layout = self.layout
        layout.prop(s, "mapping")
        layout.prop(s, "prefix")
        row = layout.row(align=True)
        row.operator_menu_enum("synctalk.mapping_fill", "preset", text="Edit as Table", icon="PRESET")
        row.operator("synctalk.mapping_save", icon="FILE_TICK")
        if len(s.mapping_rows):
            layout.template_list("SYNCTALK_UL_mapping", "", s, "mapping_rows", s, "mapping_index", rows=6)


class SYNCTALK_PT_audio_to_rig_livelink(_AudioToRigPanel, bpy.types.Panel):
    bl_label = "Live Link Face"
    bl_parent_id = "SYNCTALK_PT_audio_to_rig"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        row = self.layout.row(align=True)
        row.operator("synctalk.import_livelink", text="Import CSV", icon="IMPORT")
        row.operator("synctalk.export_livelink", text="Export CSV", icon="EXPORT")


classes = (SYNCTALK_UL_takes, SYNCTALK_UL_mapping, SYNCTALK_PT_train, SYNCTALK_PT_render, SYNCTALK_PT_audio_to_rig,
           SYNCTALK_PT_audio_to_rig_takes, SYNCTALK_PT_audio_to_rig_animation, SYNCTALK_PT_audio_to_rig_names,
           SYNCTALK_PT_audio_to_rig_livelink)
