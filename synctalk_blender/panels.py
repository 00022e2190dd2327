"""Sidebar panels: Train and Render in the Sequencer, Audio to Rig in the 3D View; each shows the job."""
from __future__ import annotations

from pathlib import Path

import bpy

from .jobs import current_job
from .operators import driving_rig


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
            layout.label(text="Uses the selected movie strip", icon="SEQUENCE")
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
        layout.prop(s, "rgba")
        if s.subject:
            rig, source = driving_rig(context, Path(bpy.path.abspath(s.subject)))
            first, *why = source.replace("; ", ": ").split(": ")   # one short line each: a label does not wrap
            layout.label(text=f"Driven by {first}", icon="SHAPEKEY_DATA" if rig is not None else "INFO")
            for line in why:
                layout.label(text=line)
        layout.operator("synctalk.render_to_sequencer", icon="RENDER_ANIMATION")
        draw_job(layout)


class SYNCTALK_PT_audio_to_rig(bpy.types.Panel):
    bl_label = "Audio to Rig"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "SyncTalk"

    def draw(self, context):
        s = context.scene.synctalk
        layout = self.layout
        layout.prop(s, "audio")
        if not s.audio:
            layout.label(text="Uses the selected sound strip", icon="SOUND")
        layout.prop(s, "generic")
        if not s.generic:
            layout.prop(s, "subject")
        col = layout.column(heading="Shape Keys")
        col.prop(s, "mapping")
        col.prop(s, "prefix")
        col.prop(s, "replace")
        col = layout.column(heading="Head Pose")
        col.prop(s, "head_object")
        if s.head_object is not None and s.head_object.type == "ARMATURE":
            col.prop_search(s, "head_bone", s.head_object.pose, "bones")
        layout.operator("synctalk.audio_to_rig", icon="SHAPEKEY_DATA")
        if s.last_report:
            layout.label(text=s.last_report)
        draw_job(layout)


classes = (SYNCTALK_PT_train, SYNCTALK_PT_render, SYNCTALK_PT_audio_to_rig)
