"""SyncTalk engine: preprocessing, the talking-head NeRF, audio-driven curves, compositing, evaluation.

A library with a command line (`python -m engine --help`). It never imports bpy.
"""
__version__ = "0.1.0"
