"""Preferences (models, device, subjects folder) and the per-scene settings of the panels."""
from __future__ import annotations

import os
from pathlib import Path

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty,
                       StringProperty)

from .jobs import import_engine
from .mapping import PRESETS

import_engine()
from engine.nerf.presets import PRESETS as TRAINING_PRESETS  # noqa: E402  (the owner of the presets)

PACKAGE = __package__

TRAIN_PRESETS = tuple((p.name, p.name.title(), p.description) for p in TRAINING_PRESETS.values())


class SyncTalkPreferences(bpy.types.AddonPreferences):
    bl_idname = PACKAGE

    models_dir: StringProperty(
        name="Models Folder", subtype="DIR_PATH", default="",
        description="Folder holding the pretrained models (face landmarker, segmenter, Whisper); "
                    "empty: $SYNCTALK_MODELS, then the engine's cache")
    subjects_dir: StringProperty(
        name="Subjects Folder", subtype="DIR_PATH", default="",
        description="Where trained subjects are stored; empty: $SYNCTALK_SUBJECTS, else SyncTalk/subjects "
                    "in your home folder")
    device: EnumProperty(
        name="Device", default="auto",
        items=(("auto", "Automatic", "CUDA when a GPU is present, else the CPU"),
               ("cpu", "CPU", "Always the CPU"),
               ("cuda", "CUDA", "An NVIDIA GPU")))

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "models_dir")
        row = layout.row()
        row.operator("synctalk.download_models", icon="IMPORT")
        layout.prop(self, "subjects_dir")
        layout.prop(self, "device")


class _Defaults:
    models_dir = ""
    subjects_dir = ""
    device = "auto"


def preferences():
    """The add-on's preferences, or the defaults when it is registered by a script (tests)."""
    addon = bpy.context.preferences.addons.get(PACKAGE)
    return addon.preferences if addon is not None else _Defaults()


def subjects_dir() -> Path:
    """The preference, else $SYNCTALK_SUBJECTS (scripts, render nodes, tests), else ~/SyncTalk/subjects."""
    folder = preferences().subjects_dir or os.environ.get("SYNCTALK_SUBJECTS", "")
    return Path(bpy.path.abspath(folder)).absolute() if folder else Path.home() / "SyncTalk" / "subjects"


class SyncTalkTakeTarget(bpy.types.PropertyGroup):
    """One ID a take keyed: an object's shape keys, or the object itself (head pose)."""
    obj: PointerProperty(type=bpy.types.Object)
    shape_keys: BoolProperty(default=True)
    action: PointerProperty(type=bpy.types.Action)


class SyncTalkTake(bpy.types.PropertyGroup):
    """A take: the actions one Audio to Rig run (or a Live Link import) made, one per keyed ID."""
    line: StringProperty(name="Line", description="The sound strip or file the take speaks")
    frame_start: FloatProperty(name="Start")
    frame_end: FloatProperty(name="End")
    seed: IntProperty(name="Seed", description="Blink and head-motion seed of the take")
    source: StringProperty(name="Source", description="The model or file the take came from")
    # A Live Link Face take keeps its timecode: the first frame's, counted at timecode_rate (0: none).
    timecode_frame: IntProperty()
    timecode_rate: FloatProperty()
    targets: CollectionProperty(type=SyncTalkTakeTarget)


def _row_edited(row, context):
    # Editing a row means the table is what the next run uses.
    if context.scene.synctalk.mapping != "TABLE":
        context.scene.synctalk.mapping = "TABLE"


class SyncTalkMappingRow(bpy.types.PropertyGroup):
    """One row of the mapping table: an ARKit curve and the shape keys it drives (comma-separated)."""
    arkit: StringProperty(name="ARKit")
    shapes: StringProperty(name="Shape Keys", update=_row_edited,
                           description="Shape keys this curve drives, separated by commas; empty: not keyed")


# A recording with a microphone on each speaker holds one voice on each side.
CHANNEL_ITEMS = (("BOTH", "Both", "The recording's channels together"),
                 ("LEFT", "Left", "The left channel alone: the voice on that side of a dialogue recorded with one "
                                  "speaker on each channel (two microphones, an interview, a podcast)"),
                 ("RIGHT", "Right", "The right channel alone: the voice on that side of a dialogue recorded with "
                                    "one speaker on each channel"))


class SyncTalkSceneSettings(bpy.types.PropertyGroup):
    # Train Subject
    clip: StringProperty(name="Clip", subtype="FILE_PATH",
                         description="Clip of one person talking; empty: the selected movie strip")
    subject_name: StringProperty(name="Name", description="Subject name; empty: the clip's file name")
    clip_channel: EnumProperty(name="Channel", default="BOTH", items=CHANNEL_ITEMS,
                               description="Which channel of the clip's sound is the person's voice (an interview "
                                           "recorded with a microphone on each speaker)")
    clip_track: IntProperty(name="Track", default=1, min=1, max=64,
                            description="Which of the clip's audio tracks is the person's voice: a camera's second "
                                        "input, a screen recording's microphone track (Blender and players play the "
                                        "first)")
    preset: EnumProperty(name="Preset", items=TRAIN_PRESETS, default="preview")
    rig_drives_mouth: BoolProperty(
        name="Rig Drives the Mouth", default=True,
        description="Also teach the head the mouth and jaw curves (all 52 blendshapes), so hand edits of jawOpen, "
                    "mouthFunnel... on the rig show up in renders (it also scored the better lip sync from audio). "
                    "Off: the mouth follows the audio alone, as in SyncTalk, and only the brow and blink curves "
                    "drive the face")
    size: IntProperty(name="Resolution", default=0, min=0, max=1024, subtype="PIXEL",
                      description="Size of the subject's square crop; 0: the crop's own, at most 512 "
                                  "(smaller trains and renders faster)")
    # The subject that Audio to Rig and Render use; set by Train Subject when it finishes.
    subject: StringProperty(name="Subject", subtype="DIR_PATH", description="A trained subject folder")
    # Audio to Rig
    audio: StringProperty(name="Audio", subtype="FILE_PATH",
                          description="Speech file; empty: the selected sound strip")
    speech_channel: EnumProperty(
        name="Channel", default="BOTH", items=CHANNEL_ITEMS,
        description="Which channel of the speech is this character's voice (Audio to Rig and Render)")
    min_pause: FloatProperty(name="Pause", default=0.5, min=0.1, max=10.0, unit="TIME_ABSOLUTE",
                             description="Split into Lines cuts at pauses this long or longer (seconds)")
    generic: BoolProperty(name="Generic Model", default=False,
                          description="Use the model that works for any voice instead of the subject's own")
    model_file: StringProperty(name="Model File", subtype="FILE_PATH",
                               description="A generic model retrained with `train-generic` (.safetensors); "
                                           "Train Subject also builds the subject's speech model on it; "
                                           "empty: the bundled one")
    mapping: EnumProperty(name="Names", items=PRESETS, default="AUTO",
                          description="How ARKit names are matched to shape keys")
    prefix: StringProperty(name="Prefix", description="A prefix the rig adds to every shape-key name")
    mapping_rows: CollectionProperty(type=SyncTalkMappingRow)
    mapping_index: IntProperty(name="Row")
    replace: BoolProperty(name="Replace Keys", default=False,
                          description="Overwrite this line's keys in the current take (hand edits there included) "
                                      "instead of keying a new take")
    clear_stale: BoolProperty(name="Remove Keys Past the Line", default=False,
                              description="When this line was keyed before and was longer, delete the old take's "
                                          "keys that no longer have sound under them")
    head_object: PointerProperty(name="Head", type=bpy.types.Object,
                                 description="Object or armature that receives the head pose (optional)")
    head_bone: StringProperty(name="Bone", description="Head bone of the armature")
    # Animation controls (the engine's `animate` options).
    intensity_mouth: FloatProperty(name="Mouth", default=1.0, min=0.0, max=10.0, soft_max=2.0)
    intensity_jaw: FloatProperty(name="Jaw", default=1.0, min=0.0, max=10.0, soft_max=2.0)
    intensity_brows: FloatProperty(name="Brows", default=1.0, min=0.0, max=10.0, soft_max=2.0)
    intensity_eyes: FloatProperty(name="Eyes", default=1.0, min=0.0, max=10.0, soft_max=2.0)
    intensity_cheeks: FloatProperty(name="Cheeks", default=1.0, min=0.0, max=10.0, soft_max=2.0)
    intensity_nose: FloatProperty(name="Nose", default=1.0, min=0.0, max=10.0, soft_max=2.0)
    intensity_tongue: FloatProperty(name="Tongue", default=1.0, min=0.0, max=10.0, soft_max=2.0)
    head_motion: FloatProperty(name="Head Motion", default=1.0, min=0.0, max=10.0, soft_max=2.0,
                               description="Scale of the head's movement (0: still)")
    smooth: FloatProperty(name="Smoothing", default=0.0, min=0.0, soft_max=4.0,
                          description="Gaussian smoothing of the curves, sigma in frames (0: off)")
    mouth_lead: FloatProperty(name="Mouth Lead", default=0.0, min=-12.0, max=12.0, soft_min=-3.0, soft_max=3.0,
                              description="Frames the mouth and jaw move ahead of the sound (negative: behind); "
                                          "animators often lead by 1 or 2")
    seed: IntProperty(name="Seed", default=0, min=0,
                      description="Seed of the blink timing and the generated head motion")
    new_seed: BoolProperty(name="New Seed Each Take", default=True,
                           description="Pick a new seed for every take (the take remembers it)")
    blink_rate: FloatProperty(name="Blinks / min", default=0.0, min=0.0, max=60.0,
                              description="Blinks a minute; 0: the model's own rate (the subject's, or about 17)")
    takes: CollectionProperty(type=SyncTalkTake)
    take_index: IntProperty(name="Take")
    last_report: StringProperty(name="Report", description="What the last Audio to Rig keyed")
    last_missing: StringProperty(name="Missing", description="ARKit names the last run found no shape key for")
    # Render into Sequencer
    rgba: BoolProperty(name="Transparent (RGBA)", default=False,
                       description="Render the head and torso over transparency as an image sequence")


def settings(context) -> SyncTalkSceneSettings:
    return context.scene.synctalk


classes = (SyncTalkPreferences, SyncTalkTakeTarget, SyncTalkTake, SyncTalkMappingRow, SyncTalkSceneSettings)


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.synctalk = PointerProperty(type=SyncTalkSceneSettings)


def unregister():
    del bpy.types.Scene.synctalk
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
