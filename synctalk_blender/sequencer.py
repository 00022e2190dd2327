"""The Video Sequencer across versions: Blender 5.0 calls strips `strips`, 4.2-4.5 `sequences`; 5.1
renamed a strip's timing (the old names warn, and go in 6.0): frame_start -> content_start,
frame_duration -> content_duration, frame_final_start / frame_final_end -> left_handle / right_handle."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import bpy


def strips(scene, all_levels: bool = False):
    """The scene's strip collection (top level, or every level inside meta strips)."""
    editor = scene.sequence_editor or scene.sequence_editor_create()
    if hasattr(editor, "strips"):
        return editor.strips_all if all_levels else editor.strips
    return editor.sequences_all if all_levels else editor.sequences


def active_strip(scene):
    editor = scene.sequence_editor
    if editor is None:
        return None
    return editor.active_strip


def selected_strip(scene, *kinds: str):
    """The active strip if it is of one of the types `kinds` ('SOUND', 'MOVIE', 'IMAGE'), else the only selected
    one of them.

    Raises ValueError with a message for the user when there is none, or the choice is ambiguous.
    """
    kind = " or ".join(k.lower() for k in kinds)
    editor = scene.sequence_editor
    if editor is None:
        raise ValueError(f"no {kind} strip: the scene has no sequencer strips")
    active = editor.active_strip
    if active is not None and active.select and active.type in kinds:
        return active
    chosen = [s for s in strips(scene, all_levels=True) if s.select and s.type in kinds]
    if len(chosen) == 1:
        return chosen[0]
    if chosen:
        raise ValueError(f"{len(chosen)} {kind} strips are selected; make one of them active")
    if active is not None and active.select:
        raise ValueError(f"the active strip '{active.name}' is a {active.type.lower()} strip, "
                         f"not a {kind} strip")
    raise ValueError(f"no {kind} strip selected: select one in the Sequencer")


def image_files(strip) -> list[Path]:
    """The frames an image strip shows, in order (an image sequence: a plate's numbered frames)."""
    folder = Path(bpy.path.abspath(strip.directory))
    return [folder / element.filename for element in strip.elements]


def shown_image_files(strip) -> tuple[list[Path], int]:
    """The frames of an image strip the edit shows (its visible handles', all of them where it is retimed), and
    the index of the first among the strip's elements: frames it hides need not exist yet."""
    files = image_files(strip)
    if retimed(strip):
        return files, 0
    start, end = visible_handles(strip)
    first = content_start(strip)
    shown = slice(max(0, math.floor(start - first)), max(0, math.ceil(end - first)))
    return files[shown], shown.start


def strip_rate(strip, scene_fps: float) -> float:
    """The scene frames a second of a picture strip's file plays over. An image strip shows a frame per scene
    frame. A movie strip shows a frame of its file per scene frame (its own rate), unless it plays at its real
    speed: Add > Movie's Adjust Playback Rate (on by default) stretches a file of another rate than the scene's
    to as many scene frames as its seconds take. Blender's Python API does not say which; the strip's length
    does (the file's frames, or its seconds at the scene's rate)."""
    if strip.type != "MOVIE":
        return scene_fps
    if not strip.fps:   # Blender could not open the file (its movie at that Stream Index): it shows no frames
        raise ValueError(f"movie strip '{strip.name}': Blender cannot play its file {strip_file(strip)} (video "
                         f"stream {strip.stream_index}); set the strip's Stream Index to one the file holds, or "
                         "re-encode the file")
    if math.isclose(strip.fps, scene_fps, rel_tol=1e-5) or not (frames := _file_frames(strip)):
        return strip.fps
    length = content_duration(strip)
    real_speed = abs(math.log(length * strip.fps / (frames * scene_fps))) < abs(math.log(length / frames))
    return scene_fps if real_speed else strip.fps


def _file_frames(strip) -> float | None:
    """How many frames a movie strip's file holds at its rate (its length times its rate; None: not known)."""
    from engine.errors import EngineError
    from engine.media.ffmpeg import probe
    try:
        info = probe(strip_file(strip), strip.stream_index)
    except EngineError as exc:
        raise ValueError(f"movie strip '{strip.name}': {exc.message} ({exc.hint})") from exc
    return info.duration * info.fps if info.duration and info.fps else None


def selected_sound_strips(scene) -> list:
    """The selected sound strips in the order they play (each a line of dialogue, say). Raises ValueError with a
    message for the user when there is none."""
    chosen = [s for s in strips(scene, all_levels=True) if s.select and s.type == "SOUND"]
    if not chosen:
        selected_strip(scene, "SOUND")   # says why: no strip, or the active one is of another kind
    return sorted(chosen, key=lambda s: (visible_handles(s)[0], s.channel))


def strip_file(strip) -> Path:
    """Absolute path of a sound or movie strip's file."""
    if strip.type == "SOUND":
        path = _sound_of(strip).filepath
    elif strip.type == "MOVIE":
        path = strip.filepath
    else:
        raise ValueError(f"strip '{strip.name}' is a {strip.type.lower()} strip")
    return Path(bpy.path.abspath(path))


def _sound_of(strip):
    """A sound strip's sound data-block; a strip whose sound was deleted (in the Outliner's Blender File view,
    say) is refused by name: it plays nothing."""
    if strip.sound is None:
        raise ValueError(f"sound strip '{strip.name}' has no sound (its sound data was deleted): add its file "
                         "to the Sequencer again")
    return strip.sound


def _renamed(strip) -> bool:
    return "left_handle" in strip.bl_rna.properties


def content_start(strip) -> float:
    """The frame where the strip's content begins (a sound's first sample): trimming moves only the handles."""
    return strip.content_start if _renamed(strip) else strip.frame_start


def content_duration(strip) -> int:
    """The length of the strip's content in frames, before trimming."""
    return strip.content_duration if _renamed(strip) else strip.frame_duration


def handles(strip) -> tuple[int, int]:
    """The visible range: its first frame and the first frame after it."""
    return (strip.left_handle, strip.right_handle) if _renamed(strip) else (strip.frame_final_start,
                                                                              strip.frame_final_end)


def enclosing_metas(strip) -> list:
    """The meta strips `strip` lies in, innermost first (a line grouped with its picture, say)."""
    metas = [m for m in strips(strip.id_data, all_levels=True) if m.type == "META"]
    chain, inner = [], strip
    while (outer := next((m for m in metas if any(c.name == inner.name for c in m.strips)), None)) is not None:
        chain.append(outer)
        inner = outer
    return chain


def visible_handles(strip) -> tuple[int, int]:
    """What the edit shows or plays of a strip: its handles, within those of the meta strips it lies in (a meta
    strip's trim hides its content's frames and silences its sound; Blender's mixdown says so)."""
    left, right = handles(strip)
    for meta in enclosing_metas(strip):
        outer_left, outer_right = handles(meta)
        left, right = max(left, outer_left), min(right, outer_right)
    return left, right


def top_level(strip):
    """The strip, or the outermost meta strip holding it: what lies in the scene's own channels."""
    metas = enclosing_metas(strip)
    return metas[-1] if metas else strip


def retimed(strip) -> bool:
    """Whether the strip plays its file at another speed (retiming keys)."""
    return len(getattr(strip, "retiming_keys", ())) > 0


def sound_file(strip, folder: Path) -> Path:
    """The file a sound strip plays: where the .blend holds the sound itself (packed, as a file received from
    someone else often does), a copy written into `folder`; else its file on disk."""
    sound = _sound_of(strip)
    if sound.packed_file is None:
        return strip_file(strip)
    # Named by its suffix alone (which tells the decoder what it holds): the names a .blend gives a sound can
    # hold '..' and slashes, and a crafted file's wrote outside `folder`.
    suffix = Path(bpy.path.basename(sound.filepath)).suffix
    path = Path(folder) / ("sound" + (suffix if re.fullmatch(r"\.\w{1,8}", suffix, re.ASCII) else ".wav"))
    path.write_bytes(sound.packed_file.data)
    return path


@dataclass
class HeardSound:
    """The part of a sound strip's file the edit plays: seconds start_s..end_s of the file, its second t heard
    at scene frame origin + t * fps (origin is where the file begins, which may lie before the strip)."""
    origin: float
    first_frame: int   # the first whole frame where it is heard: file second start_s
    start_s: float
    end_s: float
    fps: float
    whole: bool

    @property
    def span(self) -> tuple[float, float] | None:
        """The seconds to give the engine, or None for the whole file."""
        return None if self.whole else (self.start_s, self.end_s)

    @property
    def frames(self) -> tuple[int, int]:
        """The heard part as frames A..B-1 of the file at fps (frame i at second i / fps)."""
        return int(round(self.start_s * self.fps)), int(round(self.end_s * self.fps))


def heard_sound(strip, fps: float) -> HeardSound:
    """What a sound strip plays at the scene's fps: its content moved by its sound offset (seconds, later
    when positive), between its visible handles. Raises ValueError for a retimed strip (its speed varies
    along it)."""
    if retimed(strip):
        raise ValueError(f"sound strip '{strip.name}' is retimed (it plays its sound at another speed): reset its "
                         "retiming (Strip > Retiming > Reset Retiming), or render the edit's sound to a file "
                         "(Render > Render Audio)")
    first = content_start(strip)
    origin = first + getattr(strip, "sound_offset", 0.0) * fps
    left, right = visible_handles(strip)
    first_heard = math.ceil(max(left, origin) - 1e-6)   # keys on whole frames, whatever the offset
    start_s, end_s = (first_heard - origin) / fps, (right - origin) / fps
    if end_s <= start_s:
        raise ValueError(f"sound strip '{strip.name}' plays none of its sound: its sound offset moves the sound "
                         "past the strip, or the meta strip it lies in is trimmed past it")
    whole = origin == first and left <= first and right >= first + content_duration(strip)
    return HeardSound(origin, first_heard, start_s, end_s, fps, whole)


def sound_beside(scene, movie):
    """The selected sound strip that plays with a movie strip (its own sound's strip, or a sound recorder's
    file synced under a camera's clip), or None where no selected one does. Raises ValueError for several."""
    left, right = visible_handles(movie)
    sounds = [s for s in strips(scene, all_levels=True) if s.select and s.type == "SOUND"
              and (heard := visible_handles(s))[0] < right and heard[1] > left]
    if len(sounds) > 1:
        raise ValueError(f"{len(sounds)} selected sound strips play with {movie.type.lower()} strip '{movie.name}': "
                         "select only the one that holds its speech")
    return sounds[0] if sounds else None


def sound_offset(movie, sound, fps: float) -> float:
    """The second of the sound strip's file that the edit plays with the movie file's (or image sequence's)
    second 0 (counted at the movie's first visible frame, where a movie played frame for frame at another rate
    than the scene's is in step)."""
    first_shown = max(visible_handles(movie)[0], content_start(movie))
    origin = heard_sound(sound, fps).origin          # raises for a retimed sound strip
    return (first_shown - origin) / fps - (first_shown - content_start(movie)) / strip_rate(movie, fps)


def movie_span(strip, scene_fps: float) -> tuple[float, float] | None:
    """The seconds of its file a movie strip (or of its frames an image strip) shows in a scene at `scene_fps`
    (start, end), or None where it shows all of it: the visible part's frames, counted from where the content
    starts, at the rate the strip plays its file (strip_rate)."""
    start, end = visible_handles(strip)
    if end <= start:
        raise ValueError(f"{strip.type.lower()} strip '{strip.name}' shows none of its file: the meta strip it "
                         "lies in is trimmed past it")
    first = content_start(strip)
    if start <= first and end >= first + content_duration(strip):
        return None
    rate = strip_rate(strip, scene_fps)
    return (max(0.0, (start - first) / rate), (end - first) / rate)


def set_handles(strip, start: int, end: int) -> None:
    """The strip's visible range, start..end-1; the right handle first where the left one moves past it (Blender
    keeps a strip at least a frame long, so the left handle would stop short of `start`)."""
    left, right = ("left_handle", "right_handle") if _renamed(strip) else ("frame_final_start", "frame_final_end")
    order = [(left, start), (right, end)]
    for name, value in (order[::-1] if start >= handles(strip)[1] else order):
        setattr(strip, name, value)


def split_sound_strip(strip, cuts, folder: Path) -> list:
    """Cut a sound strip that lies in the scene's own channels at the scene frames `cuts` into strips of the same
    sound, one a line, in its channel (the strip itself removed); returns them in order. `folder` receives its
    sound where the .blend holds it packed (a new strip is made from a file, then given the strip's sound)."""
    scene = strip.id_data
    left, right = handles(strip)
    bounds = [left, *sorted({int(c) for c in cuts if left < c < right}), right]
    path = sound_file(strip, folder)
    sound, channel, start = strip.sound, strip.channel, content_start(strip)
    kept = {name: getattr(strip, name) for name in ("sound_offset", "volume", "pan", "show_waveform", "mute",
                                                    "color_tag") if hasattr(strip, name)}
    above, name = free_channel_above(scene, strip), strip.name
    pieces = []
    for k, (first, end) in enumerate(zip(bounds, bounds[1:])):
        piece = strips(scene).new_sound(f"{name} line {k + 1}", str(path), above, math.floor(start))
        made, piece.sound = piece.sound, sound
        if made != sound and made.users == 0:
            bpy.data.sounds.remove(made)
        setattr(piece, "content_start" if _renamed(piece) else "frame_start", start)
        for prop, value in kept.items():
            setattr(piece, prop, value)
        set_handles(piece, first, end)
        pieces.append(piece)
    strips(scene).remove(strip)
    for piece in pieces:
        piece.channel = channel
    return pieces


def free_channel_above(scene, strip) -> int:
    """The lowest channel above `strip` that is empty over the strip's whole frame range."""
    return free_channel_over(scene, strip.channel, *handles(strip))


def free_channel_over(scene, channel: int, start: int, end: int) -> int:
    """The lowest channel above `channel` that is empty over frames start..end-1."""
    busy = {s.channel for s in strips(scene) if handles(s)[0] < end and handles(s)[1] > start}
    channel += 1
    while channel in busy:
        channel += 1
    return channel


def add_sound(scene, filepath: str | Path, frame_start: int, channel: int = 1, name: str | None = None):
    return strips(scene).new_sound(name or Path(filepath).stem, str(filepath), channel, frame_start)


def add_movie(scene, filepath: str | Path, frame_start: int, channel: int, name: str | None = None):
    """A movie strip scaled to fit the scene's resolution."""
    return strips(scene).new_movie(name or Path(filepath).stem, str(filepath), channel, frame_start, fit_method="FIT")


def add_image_sequence(scene, files: list[Path], frame_start: int, channel: int, name: str | None = None):
    """An image strip of `files` (sorted frames in one folder), e.g. an RGBA render."""
    files = sorted(files)
    strip = strips(scene).new_image(name or files[0].parent.name, str(files[0]), channel, frame_start,
                                    fit_method="FIT")
    for path in files[1:]:
        strip.elements.append(path.name)
    return strip
