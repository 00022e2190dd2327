"""SyncTalk for Blender: the extension's Blender side (the only code that imports bpy).

Three operators drive the engine (`python -m engine ...`) in child processes: Train Subject,
Audio to Rig and Render into Sequencer. Installed as an extension, the engine package sits in
this folder; in a development checkout it is the repository's engine/ beside this package.
"""
import bpy

from . import jobs, operators, panels, properties, rig_operators


def register():
    properties.register()
    for cls in operators.classes + rig_operators.classes + panels.classes:
        bpy.utils.register_class(cls)


def unregister():
    jobs.stop_current_job()     # a child left running would key or render into nothing
    for cls in reversed(operators.classes + rig_operators.classes + panels.classes):
        bpy.utils.unregister_class(cls)
    properties.unregister()
