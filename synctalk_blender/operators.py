"""The operators: Train Subject, Audio to Rig, Render into Sequencer, Cancel, Download Models.

Each one checks its input first (a clear message and nothing changed when something is wrong),
then runs engine commands as a Job. `execute()` runs the job to the end (background mode, scripts,
tests); `invoke()` starts it and polls it from a modal timer: status-bar text, panel progress, Esc
cancels. Scene changes (keys, strips) happen only when the job succeeded, at the end, so one undo
step undoes them and a failed or cancelled job leaves the file as it was.
"""
from __future__ import annotations

import functools
import json
import random
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import bpy
import numpy as np

from . import sequencer
from .jobs import Job, JobBusy, current_job, engine_jobs, import_engine
from .keyframes import fcurves_of
from .mapping import map_names
from .properties import preferences, settings, subjects_dir
from .rig import HeadTarget, curves_from_rig, key_take, shape_key_names, shape_key_path
from .takes import in_tweak_mode


class UserError(Exception):
    """Bad input: the message is shown in Blender's report and nothing is changed."""


def scene_fps(scene) -> float:
    """The scene's frame rate, exact for NTSC rates (30 / 1.001 = 29.97)."""
    return scene.render.fps / scene.render.fps_base


def _subject_folder(context) -> Path:
    folder = settings(context).subject
    if not folder:
        raise UserError("no subject chosen: train one with Train Subject or pick a subject folder")
    path = Path(bpy.path.abspath(folder))
    if not (path / "subject.json").is_file():
        raise UserError(f"{path} is not a subject folder (no subject.json): train the subject first")
    return path


def by_session_uid(collection, uid: int):
    """The data-block of `collection` (bpy.data.objects, .scenes) with this session id, or None: it follows a
    rename, and is not another block given the name meanwhile."""
    return next((block for block in collection if block.session_uid == uid), None)


def _existing_file(path: Path, what: str) -> Path:
    """The file, absolute: a path relative to Blender's folder (an unsaved .blend's '//') means nothing to the
    engine's child, which runs elsewhere, and one beginning with '-' would read as an option there."""
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    return path.absolute()


def _head_target(context) -> HeadTarget | None:
    s = settings(context)
    if s.head_object is None:
        return None
    if s.head_bone:
        if s.head_object.type != "ARMATURE":
            raise UserError(f"'{s.head_object.name}' is not an armature, so it has no bone '{s.head_bone}'")
        if s.head_bone not in s.head_object.pose.bones:
            raise UserError(f"armature '{s.head_object.name}' has no bone '{s.head_bone}'")
    return HeadTarget(s.head_object, s.head_bone)


def _rig_object(context):
    obj = context.active_object
    if obj is None:
        raise UserError("no active object: select the mesh that has the face's shape keys")
    if not shape_key_names(obj):
        raise UserError(f"'{obj.name}' has no shape keys: make the mesh with the face's shape keys the active object")
    return obj


def table_rows(s) -> dict:
    """The panel's mapping table as {ARKit: [shape keys]}."""
    return {row.arkit: [n.strip() for n in row.shapes.split(",") if n.strip()] for row in s.mapping_rows}


def mapping_table(s) -> dict | None:
    """The mapping table when the Names setting is Mapping Table (None otherwise)."""
    if s.mapping != "TABLE":
        return None
    table = table_rows(s)
    if not any(table.values()):
        raise UserError("the mapping table is empty: fill it from a preset first (Edit as Table)")
    return table


def mapping_for(context, obj):
    from engine.arkit import ARKIT_NAMES
    s = settings(context)
    return map_names(ARKIT_NAMES, shape_key_names(obj), s.mapping, s.prefix, mapping_table(s))


def _mapping(context, obj):
    mapping = mapping_for(context, obj)
    if not mapping.targets:
        raise UserError(f"none of the 52 ARKit names matches a shape key of '{obj.name}': "
                        "check the Names preset and the Prefix")
    return mapping


def rig_meshes(context) -> tuple[list, list]:
    """([(mesh, mapping)], [names of selected meshes nothing maps to]): the active mesh first, then the
    other selected meshes with shape keys (teeth, tongue, eyes, lashes...)."""
    active = _rig_object(context)
    others = [o for o in context.selected_objects if o != active and shape_key_names(o)]
    meshes, skipped = [(active, _mapping(context, active))], []
    keyed = {active.data.shape_keys}
    for obj in others:
        if obj.data.shape_keys in keyed:   # a linked duplicate (Alt+D): its shape keys are keyed already
            continue
        keyed.add(obj.data.shape_keys)
        mapping = mapping_for(context, obj)
        if mapping.targets:
            meshes.append((obj, mapping))
        else:
            skipped.append(obj.name)
    return meshes, skipped


def keyable_rig(context) -> tuple[list, list, HeadTarget | None]:
    """rig_meshes and the head target, for an operator that keys them. Blender saves no change to data
    linked from another file: keys on it would play until the file is reloaded, then be gone. Refused up
    front, with the way to make it local."""
    meshes, skipped = rig_meshes(context)
    head = _head_target(context)
    owners = [(obj, obj.data.shape_keys) for obj, _ in meshes] + ([(head.obj, head.obj)] if head else [])
    linked = [(obj, id_block.library) for obj, id_block in owners if id_block.library is not None]
    if linked:
        names = ", ".join(f"'{obj.name}'" for obj, _ in linked)
        raise UserError(f"{names} is linked from {linked[0][1].filepath}: keys on it would be lost when this file "
                        "is saved; make it a library override (Object > Library Override > Make > Selected & "
                        "Content) and run again")
    tweaked = [obj for obj, id_block in owners if in_tweak_mode(id_block)]
    if tweaked:
        raise UserError(f"'{tweaked[0].name}' is in the NLA editor's tweak mode: leave it (Tab in the NLA editor) "
                        "and run again")
    return meshes, skipped, head


def driven_shapes(meshes) -> list[str]:
    """The mapped shape keys a driver sets ('Mesh: shape'): a driver overrides keys, so those keys do not play."""
    driven = []
    for obj, mapping in meshes:
        data = obj.data.shape_keys.animation_data
        paths = {d.data_path for d in data.drivers if not d.mute} if data is not None else set()
        driven += [f"{obj.name}: {shape}" for shape in mapping.shapes() if shape_key_path(shape) in paths]
    return driven


def missing_names(meshes) -> list[str]:
    """The ARKit names no mesh has a shape key for."""
    from engine.arkit import ARKIT_NAMES
    return [n for n in ARKIT_NAMES if all(n not in mapping.targets for _, mapping in meshes)]


def keying_report(context, meshes, skipped) -> str:
    """Sets the panel's report and missing list; returns the report."""
    s = settings(context)
    missing = missing_names(meshes)
    report = f"{52 - len(missing)} of 52 ARKit curves keyed on {', '.join(o.name for o, _ in meshes)}"
    if skipped:
        report += f" ({', '.join(skipped)}: no shape key maps, not keyed)"
    driven = driven_shapes(meshes)
    if driven:
        shown = ", ".join(driven[:4]) + (" ..." if len(driven) > 4 else "")
        report += (f"; {len(driven)} keyed shape keys are set by drivers, which override keys ({shown}): mute "
                   "those drivers, or key the controls they read")
    s.last_report = report + (f"; {len(missing)} with no shape key (listed below)" if missing else "")
    s.last_missing = ", ".join(missing)
    return s.last_report


class _EngineJobOperator:
    """The job life cycle shared by the operators; subclasses give `prepare` and `finish`."""
    bl_options = {"REGISTER", "UNDO"}

    def prepare(self, context) -> tuple[str, list[list[str]]]:
        raise NotImplementedError

    def finish(self, context, result: dict) -> str:
        raise NotImplementedError

    def cleanup(self) -> None:
        """Remove the job's scratch folder (`_tmp`: a packed sound written out, curves for the engine), if any."""
        if getattr(self, "_tmp", None):
            shutil.rmtree(self._tmp, ignore_errors=True)

    def _start(self, context):
        import_engine()
        self._scene_uid = context.scene.session_uid   # the job's result goes to this scene, whichever is shown then
        try:
            label, commands = self.prepare(context)
            prefs = preferences()
            self._job = Job(label, commands, prefs.models_dir, prefs.device).start()
        except (UserError, JobBusy, ValueError) as exc:
            self.report({"ERROR"}, str(exc))
            self.cleanup()
            return None
        return self._job

    def execute(self, context):
        job = self._start(context)
        if job is None:
            return {"CANCELLED"}
        job.run_to_end()
        return self._end(context)

    def invoke(self, context, event):
        job = self._start(context)
        if job is None:
            return {"CANCELLED"}
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def cancel(self, context):
        """Blender ends the operator without its job's end (a file loaded, the window closed): the job is stopped,
        its result unused (what it would key or place may be gone), its scratch folder removed."""
        self._job.cancel()
        context.window_manager.event_timer_remove(self._timer)
        if context.workspace is not None:
            context.workspace.status_text_set(None)
        self.cleanup()

    def modal(self, context, event):
        if event.type == "ESC" and event.value == "PRESS":
            self._job.cancel()
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        state = self._job.poll()
        if context.workspace is not None:
            context.workspace.status_text_set(f"SyncTalk {self._job.label}: {state.summary()}  (Esc to cancel)")
        for area in context.screen.areas if context.screen else ():
            if area.type in ("SEQUENCE_EDITOR", "VIEW_3D", "STATUSBAR"):
                area.tag_redraw()
        if not state.finished:
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        if context.workspace is not None:
            context.workspace.status_text_set(None)
        return self._end(context)

    def _end(self, context):
        state = self._job.state
        if state.error or state.cancelled:   # what the engine warned of before it stopped, then why it stopped
            self._report_warnings(state)
        try:
            if state.error:
                hint = f" ({state.error['hint']})" if state.error.get("hint") else ""
                self.report({"ERROR"}, f"{self._job.label} failed: {state.error['message']}{hint}")
                return {"CANCELLED"}
            if state.cancelled:
                self.report({"WARNING"}, f"{self._job.label} cancelled")
                return {"CANCELLED"}
            scene = by_session_uid(bpy.data.scenes, self._scene_uid)
            if scene is None:
                raise UserError(f"{self._job.label}: the scene it was run in was deleted meanwhile: nothing was "
                                "changed")
            with context.temp_override(scene=scene):   # the user may have switched scenes meanwhile
                message = self.finish(bpy.context, state.result or {})
        except UserError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        finally:
            self.cleanup()
        self.report({"INFO"}, message)
        self._report_warnings(state)   # after the outcome: the status bar shows the last report
        return {"FINISHED"}

    def _report_warnings(self, state) -> None:
        """The engine's warnings (a short clip, a dialogue's two voices read as one...), each in the Info log."""
        for warning in state.warnings:
            self.report({"WARNING"}, warning)


def train_arguments(subject: Path, s, resume: bool = False) -> list[str]:
    """The engine's `train` command for the scene settings `s`."""
    generic = _existing_file(Path(bpy.path.abspath(s.model_file)), "model file") if s.model_file else None
    return engine_jobs.train_argv(subject, preset=s.preset, device=preferences().device,
                                  expression="all" if s.rig_drives_mouth else None, resume=resume,
                                  generic_model=generic)


class SYNCTALK_OT_train_subject(_EngineJobOperator, bpy.types.Operator):
    """Turn a clip of one person talking into a trained subject (preprocess, then train)"""
    bl_idname = "synctalk.train_subject"
    bl_label = "Train Subject"

    def prepare(self, context):
        s = settings(context)
        span, self._note, sound, self._strip_name = None, "", {}, ""
        fps = scene_fps(context.scene)
        if s.clip:
            clip = _existing_file(Path(bpy.path.abspath(s.clip)), "clip")
            if not _has_sound(clip):
                raise UserError(f"{clip.name} has no sound: add it to the Sequencer with the sound recorded beside "
                                "it, select both strips and clear the Clip field")
        else:
            clip, span, sound = self._picture_strip(context.scene, fps)
        if channel := side(s.clip_channel):   # the person's voice on one side of a two-microphone recording
            sound["channel"] = channel
        if s.clip_track > 1:                  # ... or on another of its audio tracks
            sound["track"] = s.clip_track
        name = re.sub(r"[^\w.-]+", "_", s.subject_name or self._strip_name or clip.stem)
        if not name.strip("."):   # "." and ".." name the Subjects folder itself and the one above it
            raise UserError(f"Subject Name '{name}' is not a folder name: give the subject a name")
        self._subject = subjects_dir() / name
        from engine.subject.format import CHECKPOINT, META_FILE, MODEL_DIR
        if (self._subject / META_FILE).is_file():
            _check_same_footage(self._subject, clip, fps, span, sound)
            # Preprocessed already (an earlier run, maybe cancelled): train, from its checkpoint if it has one.
            resume = (self._subject / MODEL_DIR / CHECKPOINT).is_file()
            return f"Train {name}", [train_arguments(self._subject, s, resume)]
        # At the scene's frame rate, so renders line up frame for frame with the edit.
        preprocess = engine_jobs.preprocess_argv(clip, self._subject, fps=fps, size=s.size, span=span, **sound)
        return f"Train {name}", [preprocess, train_arguments(self._subject, s)]

    def _picture_strip(self, scene, fps: float) -> tuple[Path, tuple[float, float] | None, dict]:
        """The selected movie strip's file (or image strip's sequence), the part of it the edit shows (None: all),
        and how to read it: the sound strip it plays with where one is selected with it (preprocess's audio and
        audio_offset; none: the file's own), the video stream it shows."""
        lead = 0.0   # seconds of the clip before the strip's first frame: an image strip of part of a plate's frames
        try:
            try:   # a movie, where one is selected (a still image over it is not footage)
                strip = sequencer.selected_strip(scene, "MOVIE")
            except ValueError:
                strip = sequencer.selected_strip(scene, "MOVIE", "IMAGE")
            if strip.type == "IMAGE":
                (clip, span, lead), sound = _image_sequence(strip, fps), {"sequence_fps": fps}   # a frame per scene frame
                self._strip_name = strip.name
            else:
                clip, span = _existing_file(sequencer.strip_file(strip), "the movie strip's file"), None
                # the picture the strip shows, where its file holds several (Stream Index)
                sound = {"video_stream": strip.stream_index} if strip.stream_index else {}
        except ValueError as exc:
            raise UserError(f"{exc}, or choose a clip file") from exc
        try:
            # What the edit shows of the file: a strip trimmed to the person talking trains on that part.
            if sequencer.retimed(strip):
                self._note = " (the strip is retimed: its whole file was used)"
            elif strip.type == "MOVIE":
                span = sequencer.movie_span(strip, fps)
            # and the sound it plays with: a recorder's file synced under a camera's clip, say
            if (sound_strip := sequencer.sound_beside(scene, strip)) is not None:
                self._tmp = Path(tempfile.mkdtemp(prefix="synctalk-"))
                audio = _existing_file(sequencer.sound_file(sound_strip, self._tmp), f"sound of strip '{sound_strip.name}'")
                offset = sequencer.sound_offset(strip, sound_strip, fps) - lead
                # A sound strip plays its file from the track's first sample (where Add > Movie places it beside the
                # picture, by the streams' start times), not from its first picture as the engine reads a clip.
                sound["from_first_sample"] = True
                if audio.resolve() != clip.resolve() or abs(offset) > 0.5 / fps:   # else: the movie's own, in step
                    sound.update(audio=audio, audio_offset=offset)
                    self._note += f" (its sound from strip '{sound_strip.name}')"
            elif strip.type == "IMAGE" or not _has_sound(clip):
                raise UserError(f"{strip.type.lower()} strip '{strip.name}' has no sound: select the sound strip "
                                "that plays with it too (a sound recorder's file synced under it)")
        except ValueError as exc:
            raise UserError(str(exc)) from exc
        return clip, span, sound

    def finish(self, context, result):
        settings(context).subject = str(self._subject)
        return f"subject '{self._subject.name}' trained: {self._subject}{self._note}"


def _image_sequence(strip, fps: float) -> tuple[Path, tuple[float, float], float]:
    """An image strip's frames as the engine names their sequence (folder/plate.####.exr); the seconds of it the
    edit shows, counted from the folder's first frame as the engine counts a plate's (a strip may show from a
    later frame of it); and the seconds the plate plays before the strip's first element (where the strip's own
    seconds start). The frames shown are checked: one numbered run, every frame on disk; those it hides are not
    (a plate still rendering, trimmed to the frames that exist)."""
    from engine.errors import EngineError
    from engine.media.sequence import find_image_sequence, image_sequence_of_files
    if len(strip.elements) < 2:
        raise UserError(f"image strip '{strip.name}' shows one still image: Train Subject needs the person talking "
                        "(a movie strip, or an image strip of the clip's frames)")
    files, first_shown = sequencer.shown_image_files(strip)
    if not files:
        raise UserError(f"image strip '{strip.name}' shows none of its frames: the meta strip it lies in is trimmed "
                        "past it")
    try:
        sequence = image_sequence_of_files(files)
        missing = next((f for f in files if not f.is_file()), None)
        if missing is not None:
            raise UserError(f"image strip '{strip.name}': frame {missing} not found (moved or not rendered yet)")
        plate = find_image_sequence(Path(sequence.name))
    except EngineError as exc:
        raise UserError(f"image strip '{strip.name}': {exc.message} ({exc.hint})") from exc
    start = (sequence.first - plate.first) / fps
    return Path(sequence.name), (start, start + len(files) / fps), start - first_shown / fps


def _has_sound(clip: Path) -> bool:
    """Whether a clip file has a sound track (a camera's clip recorded without one has none)."""
    from engine.errors import EngineError
    from engine.media.ffmpeg import probe
    try:
        return probe(clip).has_audio
    except EngineError as exc:
        raise UserError(f"{exc.message} ({exc.hint})") from exc


def _check_same_footage(subject: Path, clip: Path, fps: float, span, sound: dict) -> None:
    """A subject folder of that name made from other footage (another file, another part of it, other sound:
    a recording by its file name and offset, as a packed sound is written out afresh) is not trained in its
    place: the user names the new subject or removes the old one."""
    from engine.subject.format import read_meta
    from engine.subject.schema import span_frames
    meta = read_meta(subject)
    first, frames = span_frames(*span, fps) if span else (0, None)
    source = meta.source
    same_file = source is not None and Path(source.sequence or source.path).resolve() == clip.resolve()
    # A plate's working copy starts at the part of it the subject was made from: its frames, and its sound's
    # offset, counted from the plate's first frame as the edit's are.
    lead_s = 0.0
    if same_file and source.sequence and source.sequence_first is not None:
        from engine.media.sequence import find_image_sequence
        lead_s = (source.sequence_first - find_image_sequence(clip).first) / (source.fps or meta.fps)   # at its rate
    if not same_file or source.video_stream != sound.get("video_stream", 0) or (
            source.first_frame + round(lead_s * meta.fps) != first) or (
            frames is not None and abs(meta.frames - frames) > 1):
        made_from = (source.sequence or source.path) if source else "unknown"
        raise UserError(f"a subject named '{subject.name}' was made from other footage ({made_from}); give this "
                        "one another Subject Name, or delete that folder to make it again")
    def recording(path) -> str | None:   # the clip's own track, whether named or not
        return None if path is None or Path(path).resolve() == clip.resolve() else Path(path).name
    had = (recording(source.audio), round(source.audio_offset - lead_s, 3), source.audio_channel, source.audio_track)
    wanted = (recording(sound.get("audio")), round(sound.get("audio_offset", 0.0), 3), sound.get("channel"),
              sound.get("track", 1))
    if had != wanted:
        made = (f"{had[0] or 'its own sound'} from {had[1]:g} s" if had[0] or had[1] else "the clip's own sound") + \
            (f", its {had[2]} channel" if had[2] else "") + (f", audio track {had[3]}" if had[3] > 1 else "")
        raise UserError(f"a subject named '{subject.name}' was made with other sound ({made}); give this one "
                        "another Subject Name, or delete that folder to make it again")


# The panel's intensity settings -> the engine's --intensity regions.
INTENSITY_REGIONS = ("mouth", "jaw", "brows", "eyes", "cheeks", "nose", "tongue")


def side(channel_setting: str) -> str | None:
    """A Channel setting as the engine's `--channel`: the side read alone, None for both."""
    return None if channel_setting == "BOTH" else channel_setting.lower()


def animation_arguments(s, seed: int) -> dict:
    """Smoothing, per-region intensity and head motion, seed, blink rate and mouth lead: engine_jobs.animate_argv's
    options."""
    intensity = {region: getattr(s, f"intensity_{region}") for region in INTENSITY_REGIONS}
    intensity["head"] = s.head_motion
    return {"seed": seed, "smooth": s.smooth, "intensity": intensity, "blink_rate": s.blink_rate,
            "lead": s.mouth_lead}


@dataclass
class SpokenLine:
    """A line Audio to Rig keys: its sound, the part of it heard (None: all), where its keys start, its curves;
    whether its seconds count from its track's first sample, as a sound strip plays a file (else from the file's
    first picture, as a player plays it: an audio file picked by hand)."""
    name: str
    audio: Path
    span: tuple[float, float] | None
    start_frame: float
    curves: Path
    seed: int
    from_first_sample: bool = True


class SYNCTALK_OT_audio_to_rig(_EngineJobOperator, bpy.types.Operator):
    """Key ARKit blendshape curves from speech as a new take on the selected meshes' shape keys (the active
    one first) and the head pose: one take for each selected sound strip (a character's lines)"""
    bl_idname = "synctalk.audio_to_rig"
    bl_label = "Audio to Rig"

    def prepare(self, context):
        s = settings(context)
        scene = context.scene
        meshes, self._skipped, head = keyable_rig(context)
        # kept by session id: the rig is looked up again when the job ends (it may be renamed, deleted, or undone,
        # meanwhile, and another object may take its name)
        self._meshes = [(obj.name, obj.session_uid, mapping) for obj, mapping in meshes]
        self._head = head and (head.obj.name, head.obj.session_uid, head.bone)
        self._fps = scene_fps(scene)
        self._tmp = Path(tempfile.mkdtemp(prefix="synctalk-"))
        # A seed a line: one seed would put the same blinks at the same moment of every line.
        seed = random.randrange(1, 100000) if s.new_seed else s.seed
        if s.audio:
            audio = _existing_file(Path(bpy.path.abspath(s.audio)), "audio file")
            self._lines = [SpokenLine(audio.stem, audio, None, scene.frame_current, self._tmp / "line0.stcurves", seed,
                                      from_first_sample=False)]
        else:
            self._lines = []
            try:
                for k, strip in enumerate(sequencer.selected_sound_strips(scene)):
                    heard = sequencer.heard_sound(strip, self._fps)
                    (folder := self._tmp / f"line{k}").mkdir()   # a packed sound is written out here
                    audio = _existing_file(sequencer.sound_file(strip, folder), f"sound of strip '{strip.name}'")
                    # What the edit plays: the keys cover the strip's visible part, where its sound is heard.
                    self._lines.append(SpokenLine(strip.name, audio, heard.span, heard.first_frame,
                                                  self._tmp / f"line{k}.stcurves", seed + k))
            except ValueError as exc:
                raise UserError(f"{exc}, or choose an audio file") from exc
        if not s.generic:
            who, self._source = {"subject": _subject_folder(context)}, Path(s.subject).name or "subject"
        elif s.model_file:
            model = _existing_file(Path(bpy.path.abspath(s.model_file)), "model file")
            who, self._source = {"model": model}, model.name
        else:
            who, self._source = {"generic": True}, "generic model"
        if channel := side(s.speech_channel):
            self._source += f", {channel} channel"   # the take says which voice it heard
        return "Audio to Rig", [engine_jobs.animate_argv(line.audio, line.curves, **who, fps=self._fps, span=line.span,
                                                         channel=channel, from_first_sample=line.from_first_sample,
                                                         **animation_arguments(s, line.seed))
                                for line in self._lines]

    def finish(self, context, result):
        from engine.curves import Curves
        s = settings(context)
        # The objects themselves, renamed or not: another object given a rig's name meanwhile is not keyed.
        kept = [(name, by_session_uid(bpy.data.objects, uid)) for name, uid, _ in self._meshes]
        head = self._head and (self._head[0], by_session_uid(bpy.data.objects, self._head[1]))
        if gone := [name for name, obj in kept + ([head] if head else []) if obj is None]:
            raise UserError(f"'{gone[0]}' was deleted while its curves were made: nothing was keyed; run Audio to "
                            "Rig again")
        if bare := [obj.name for _, obj in kept if obj.data.shape_keys is None]:
            raise UserError(f"'{bare[0]}' lost its shape keys while its curves were made: nothing was keyed")
        meshes = [(obj, mapping) for (_, obj), (_, _, mapping) in zip(kept, self._meshes)]
        head = head and HeadTarget(head[1], self._head[2])
        done, notes = [], ""
        for line in self._lines:   # in the order they play: each take starts from the one before
            curves = Curves.load(line.curves)
            written = key_take(context.scene, meshes, curves, line.start_frame, self._fps, line.name,
                               head, s.replace, s.clear_stale, line.seed, self._source)
            notes += f"; {written['notes']}" if written["notes"] else ""
            done.append(f"take '{written['take']}' (seed {line.seed}): {written['curves']} curves x "
                        f"{written['frames']} frames (frames {line.start_frame:g}-{written['end']:g})")
        s.seed = self._lines[0].seed
        report = keying_report(context, meshes, self._skipped)
        lines = f"{len(done)} lines: " if len(done) > 1 else ""
        return f"keyed {lines}{', '.join(done)}; {report}{notes}"


class SYNCTALK_OT_split_lines(_EngineJobOperator, bpy.types.Operator):
    """Cut the selected sound strip into lines at its pauses: a dialogue recorded on one microphone, each
    character then keyed from a selection of their own lines"""
    bl_idname = "synctalk.split_lines"
    bl_label = "Split into Lines"

    def prepare(self, context):
        s = settings(context)
        scene = context.scene
        self._fps = scene_fps(scene)
        try:
            strip = sequencer.selected_strip(scene, "SOUND")
            self._heard = sequencer.heard_sound(strip, self._fps)
        except ValueError as exc:
            raise UserError(str(exc)) from exc
        if sequencer.enclosing_metas(strip):
            raise UserError(f"sound strip '{strip.name}' lies in a meta strip: take it out (Ungroup) to split it")
        fcurves = fcurves_of(scene)
        if fcurves is not None and any(f'["{strip.name}"]' in f.data_path for f in fcurves):
            raise UserError(f"sound strip '{strip.name}' is animated (a fade of its volume, say), which its "
                            "lines would not keep: cut it by hand")
        # kept by name: the strip is looked up again when the job ends
        self._name, self._handles = strip.name, sequencer.handles(strip)
        self._tmp = Path(tempfile.mkdtemp(prefix="synctalk-"))
        audio = _existing_file(sequencer.sound_file(strip, self._tmp), f"sound of strip '{strip.name}'")
        self._min_pause = s.min_pause
        return "Split into Lines", [engine_jobs.lines_argv(audio, self._fps, self._heard.span, s.min_pause,
                                                           channel=side(s.speech_channel), from_first_sample=True)]

    def finish(self, context, result):
        name = self._name
        # The edit went on while the pauses were found: the strip is looked up again, and left alone if it changed.
        strip = next((s for s in sequencer.strips(context.scene, all_levels=True) if s.name == name), None)
        try:
            changed = strip is None or sequencer.handles(strip) != self._handles or \
                sequencer.heard_sound(strip, self._fps).origin != self._heard.origin
        except ValueError:   # retimed since
            changed = True
        if changed:
            raise UserError(f"sound strip '{name}' was moved, trimmed or removed while its pauses were found: "
                            "nothing was cut; run Split into Lines again")
        if not result["cuts"]:
            return f"'{name}' has no pause of {self._min_pause:g} s or more: left as it is (try a shorter Pause)"
        cuts = [self._heard.first_frame + cut for cut in result["cuts"]]   # the span's frame 0 is its first heard
        pieces = sequencer.split_sound_strip(strip, cuts, self._tmp)
        for piece in pieces:
            piece.select = True
        return (f"split '{name}' into {len(pieces)} lines at its pauses of {self._min_pause:g} s or more: select "
                "one character's lines for Audio to Rig")


def _render_output(context, subject: Path, name: str, rgba: bool) -> Path:
    """Next to the .blend when it is saved (//synctalk/), else in the subject's renders/ folder."""
    folder = Path(bpy.path.abspath("//synctalk")) if bpy.data.filepath else subject / "renders"
    stem = re.sub(r"[^\w.-]+", "_", f"{name}_{subject.name}")
    return folder / stem if rgba else folder / f"{stem}.mp4"


def trained_curves(subject: Path) -> tuple[str, ...]:
    """The ARKit curves the subject's head was trained on (7 upper-face ones, or all 52 with Rig Drives
    the Mouth); () before training. Read from the model's configuration, cached while it is unchanged
    (the panel asks on every redraw)."""
    config = subject / "model" / "head.json"   # engine/nerf/model.py's CONFIG_FILE
    try:
        return _trained_curves(str(config), config.stat().st_mtime_ns)
    except (OSError, ValueError, KeyError, IndexError):
        return ()


@functools.lru_cache(maxsize=8)
def _trained_curves(config: str, mtime_ns: int) -> tuple[str, ...]:
    from engine.arkit import ARKIT_NAMES
    return tuple(ARKIT_NAMES[i] for i in json.loads(Path(config).read_text())["expression_indices"])


def driving_rig(context, subject: Path):
    """(the active object, or None) and a line saying what drives the render. The active object's curves
    drive it only when it has keys on curves the subject was trained on: an unkeyed rig would render
    all-zero curves (a shut mouth, no blinks), so then the audio alone drives it, and the line says why."""
    import_engine()
    obj = context.active_object
    if obj is None or not shape_key_names(obj):
        return None, "the audio alone (no active mesh with shape keys)"
    trained = trained_curves(subject)
    if not trained:
        return None, "the audio alone (the subject has no trained model yet)"
    try:
        targets = mapping_for(context, obj).targets
    except UserError:        # an empty mapping table: nothing maps, so nothing is keyed either
        targets = {}
    fcurves = fcurves_of(obj.data.shape_keys)
    # curves_from_rig reads each ARKit curve from its first shape key
    keyed = [name for name in trained if name in targets and fcurves is not None
             and (fcurve := fcurves.find(shape_key_path(targets[name][0]))) is not None and len(fcurve.keyframe_points)]
    if not keyed:
        return None, (f"the audio alone: '{obj.name}' has no keys on the {len(trained)} curves the subject was "
                      f"trained on ({', '.join(trained[:3])}, ...); key them with Audio to Rig to drive the render")
    return obj, f"the curves of '{obj.name}' ({len(keyed)} of the {len(trained)} curves the subject was trained on)"


def from_first_frame(curves, first: int):
    """Curves read from the rig over the sound's frames first.. as a file indexed from the sound's frame 0 (what
    `render --frames` reads): the rows before `first`, never rendered, repeat its first row."""
    from engine.curves import Curves
    pad = lambda values: np.concatenate([np.repeat(values[:1], first, axis=0), values])  # noqa: E731
    return Curves(curves.fps, pad(curves.weights), pad(curves.head_rotation), pad(curves.head_translation))


class SYNCTALK_OT_render_to_sequencer(_EngineJobOperator, bpy.types.Operator):
    """Render the subject speaking the selected sound strip, driven by the rig's curves, into a new strip"""
    bl_idname = "synctalk.render_to_sequencer"
    bl_label = "Render into Sequencer"

    def prepare(self, context):
        scene = context.scene
        s = settings(context)
        subject = self._subject = _subject_folder(context)
        self._fps = scene_fps(scene)
        try:
            sound = sequencer.selected_strip(scene, "SOUND")
            self._heard = heard = sequencer.heard_sound(sound, self._fps)
        except ValueError as exc:
            raise UserError(str(exc)) from exc
        self._tmp = Path(tempfile.mkdtemp(prefix="synctalk-"))
        audio = _existing_file(sequencer.sound_file(sound, self._tmp), f"sound of strip '{sound.name}'")
        rig_curves = None
        rig, self._source = driving_rig(context, subject)
        if rig is not None:
            # The rig's curves where the sound is heard, so hand edits are what gets rendered.
            first, end = heard.frames
            curves = curves_from_rig(rig, _mapping(context, rig), heard.origin + np.arange(first, end, dtype=np.float64),
                                     self._fps, _head_target(context))
            rig_curves = from_first_frame(curves, first).save(self._tmp / "rig.stcurves")
        elif context.active_object is not None and shape_key_names(context.active_object):
            self.report({"WARNING"}, f"rendering from {self._source}")
        self._rgba = s.rgba
        self._output = _render_output(context, subject, sound.name, s.rgba)
        # Where the render goes, kept now: the strip is looked up again when the job ends (the edit goes on).
        top = sequencer.top_level(sound)   # a meta's inside is not the scene's
        self._name, self._shown = sound.name, sequencer.visible_handles(sound)
        self._above = (top.channel, *sequencer.handles(top))
        return "Render", [engine_jobs.render_argv(subject, audio, self._output, curves=rig_curves,
                                                  device=preferences().device, fps=self._fps,
                                                  output_format="rgba" if s.rgba else "mp4",
                                                  frames=None if heard.whole else heard.frames,
                                                  channel=side(s.speech_channel), from_first_sample=True)]

    def finish(self, context, result):
        scene = context.scene
        channel = sequencer.free_channel_over(scene, *self._above)
        start = self._heard.first_frame   # the rendered frames are the heard ones
        if self._rgba:
            files = sorted(self._output.glob("*.png"))
            if not files:
                raise UserError(f"the render wrote no frames into {self._output}")
            strip = sequencer.add_image_sequence(scene, files, start, channel, name=f"{self._name} render")
        else:
            _existing_file(self._output, "rendered video")
            strip = sequencer.add_movie(scene, self._output, start, channel, name=f"{self._name} render")
        # Over the sound's visible part exactly (a frame of rounding short at an end holds the nearest frame).
        sequencer.set_handles(strip, *self._shown)
        # The render's pixels are in its footage's encoding (a log plate's, say): shown as that footage is shown.
        if (colorspace := _footage_colorspace(scene, self._subject)) is not None:
            strip.colorspace_settings.name = colorspace
        sound = next((s for s in sequencer.strips(scene, all_levels=True) if s.name == self._name), None)
        moved = "" if sound is not None and sequencer.visible_handles(sound) == self._shown else \
            f" (sound strip '{self._name}' was moved or removed while it rendered: placed where the sound was)"
        return f"rendered from {self._source} into strip '{strip.name}' on channel {channel}: {self._output}{moved}"


def _footage_colorspace(scene, subject: Path) -> str | None:
    """The Color Space of the scene's strip of the footage the subject was made from (its movie file, or an
    image strip of its plate's frames), where the engine read that footage's pixels as stored; None where the
    scene has no such strip, or the engine made SDR sRGB pictures of the footage (an OpenEXR plate's linear
    light, HDR video tone-mapped), which the render's default Color Space shows as they are."""
    from engine.errors import EngineError
    from engine.media.ffmpeg import probe
    from engine.media.sequence import image_sequence_of_files, is_scene_linear
    from engine.subject.format import read_meta
    source = read_meta(subject).source
    if source is None:
        return None
    footage = Path(source.sequence or source.path).resolve()
    try:
        if is_scene_linear(footage) if source.sequence else probe(footage).hdr:
            return None
    except EngineError:   # the footage is no longer where it was: no strip shows it either
        return None
    for strip in sequencer.strips(scene, all_levels=True):
        if strip.type == "MOVIE" and not source.sequence and sequencer.strip_file(strip).resolve() == footage and (
                strip.stream_index == source.video_stream):
            return strip.colorspace_settings.name
        if strip.type == "IMAGE" and source.sequence and len(strip.elements) > 1:
            try:
                if Path(image_sequence_of_files(sequencer.shown_image_files(strip)[0]).name).resolve() == footage:
                    return strip.colorspace_settings.name
            except EngineError:   # an image strip of other pictures
                continue
    return None


class SYNCTALK_OT_download_models(_EngineJobOperator, bpy.types.Operator):
    """Download the pretrained models that are missing, from their official sources (checksums verified)"""
    bl_idname = "synctalk.download_models"
    bl_label = "Download Missing Models"
    bl_options = {"REGISTER"}

    def prepare(self, context):
        folder = preferences().models_dir
        return "Download models", [engine_jobs.models_argv(fetch=True,
                                                           models_dir=bpy.path.abspath(folder) if folder else None)]

    def finish(self, context, result):
        return "models ready: " + ", ".join(f"{name}: {path}" for name, path in result.items())


class SYNCTALK_OT_cancel_job(bpy.types.Operator):
    """Stop the running SyncTalk job (a training run keeps its last checkpoint and can be resumed)"""
    bl_idname = "synctalk.cancel_job"
    bl_label = "Cancel"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        job = current_job()
        return job is not None and not job.state.finished

    def execute(self, context):
        job = current_job()
        job.cancel()
        job.poll()      # its end seen where no operator polls it any more (a file was loaded while it ran)
        return {"FINISHED"}


classes = (SYNCTALK_OT_train_subject, SYNCTALK_OT_audio_to_rig, SYNCTALK_OT_split_lines, SYNCTALK_OT_render_to_sequencer,
           SYNCTALK_OT_download_models, SYNCTALK_OT_cancel_job)
