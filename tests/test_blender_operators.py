"""The operators end to end against the real bpy module and real engine children, on real
material at a small size: Audio to Rig, Train Subject (tiny preset, cancel and resume), Render
into Sequencer, and the clear messages on bad input that leave the file as it was."""
import json
import shutil
import subprocess
import time

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
pytestmark = pytest.mark.blender


from conftest import select_only, shared_file
from engine.arkit import ARKIT_NAMES
from engine.jobs import preprocess_argv, train_argv
from engine.media.audio import load_audio, write_wav
from engine.media.ffmpeg import ffmpeg_exe, probe
from synctalk_blender import sequencer
from synctalk_blender.demo_scene import arkit_head
from synctalk_blender.jobs import Job
from synctalk_blender.keyframes import fcurves_of


def _keys(key, name):
    fcurve = fcurves_of(key).find(f'key_blocks["{name}"].value')
    co = np.empty(2 * len(fcurve.keyframe_points), np.float32)
    fcurve.keyframe_points.foreach_get("co", co)
    return co.reshape(-1, 2)


def _speech_and_pause_frames(samples, fps, n):
    """Frames with clear speech, and frames inside pauses of at least 0.3 s, from the audio's energy."""
    hop = 16000 / fps
    rms = np.array([np.sqrt(np.mean(samples[int(i * hop):int((i + 1) * hop)] ** 2) + 1e-12) for i in range(n)])
    db = 20 * np.log10(rms / rms.max())
    quiet = db < -35
    run = int(0.3 * fps)
    pause = np.array([quiet[max(0, i - run // 2):i + run // 2 + 1].all() for i in range(n)])
    return db > -20, pause


def test_audio_to_rig_keys_real_speech_at_the_strip_start_at_29_97_fps(scene):
    wav = shared_file("audio", "de_9s_24bit_extensible.wav")
    scene.render.fps, scene.render.fps_base = 30, 1.001
    strip = sequencer.add_sound(scene, wav, frame_start=37, channel=2)
    select_only(scene, strip)
    face = arkit_head("Face", ARKIT_NAMES)
    scene.synctalk.generic = True
    assert bpy.ops.synctalk.audio_to_rig() == {"FINISHED"}
    key = face.data.shape_keys
    assert key.animation_data.action.name == f"{strip.name} take 1"
    assert len(fcurves_of(key)) == 52
    samples = load_audio(wav)
    fps = 30 / 1.001
    expected = len(samples) / 16000 * fps
    jaw = _keys(key, "jawOpen")
    assert abs(len(jaw) - expected) <= 2
    assert jaw[0, 0] == 37 and np.allclose(np.diff(jaw[:, 0]), 1.0, atol=1e-3)
    speech, pause = _speech_and_pause_frames(samples, fps, len(jaw))
    assert speech.sum() > 10 and pause.sum() > 5, "the clip needs speech and a pause"
    assert jaw[speech, 1].mean() > 2 * jaw[pause, 1].mean() + 0.02
    assert "52" in scene.synctalk.last_report or "no shape key" in scene.synctalk.last_report
    assert len(bpy.data.actions) == 1    # one new action, nothing else touched


def test_audio_to_rig_keys_each_selected_line_of_a_dialogue_as_its_own_take(scene):
    """A dialogue cut into lines in the edit, two characters taking turns: with one character's lines selected,
    one run keys each of them as a take (each starting from the one before, so the last plays them all), the
    other character's line between them left unkeyed, each line with its own seed (its own blinks)."""
    wav = shared_file("audio", "en_60s.wav")
    lines = []
    for k, (first, at) in enumerate(((0, 1), (3, 100), (6, 200))):   # file seconds first..first+3 at frame `at`
        strip = sequencer.add_sound(scene, wav, frame_start=at - first * 25, channel=2 + k % 2)
        sequencer.set_handles(strip, at, at + 75)
        lines.append(strip)
    select_only(scene, lines[0])
    lines[2].select = True                       # the first character's lines; the second's (frames 100-174) not
    face = arkit_head("Face", ARKIT_NAMES)
    # A fixed seed and a blink every 2 s: at the default rate a 3-s line may hold no blink (two such lines, both
    # lids still, would look alike whatever their seeds)
    scene.synctalk.generic, scene.synctalk.new_seed, scene.synctalk.seed = True, False, 7
    scene.synctalk.blink_rate = 30.0
    assert bpy.ops.synctalk.audio_to_rig() == {"FINISHED"}
    takes = scene.synctalk.takes
    assert [t.line for t in takes] == [lines[0].name, lines[2].name] and [t.seed for t in takes] == [7, 8]
    key = face.data.shape_keys
    assert key.animation_data.action.name == f"{lines[2].name} take 1"   # the last line's take plays both
    jaw = _keys(key, "jawOpen")
    frames = jaw[:, 0]
    assert frames.min() == 1 and frames.max() >= 270 and not ((frames > 80) & (frames < 195)).any()
    for at in (1, 200):                          # each line's mouth moves with its speech
        assert jaw[(frames >= at) & (frames < at + 75), 1].std() > 0.02
    blink = _keys(key, "eyeBlinkLeft")
    first, second = (blink[(blink[:, 0] >= at) & (blink[:, 0] < at + 75), 1] for at in (1, 200))
    assert first.max() > 0.5 and second.max() > 0.5              # both lines blink ...
    assert not np.allclose(first[:70], second[:70], atol=0.05)   # ... not at the same moments


def test_a_dialogue_on_one_microphone_is_split_into_lines_and_one_voice_keyed_from_its_own(scene, tmp_path):
    """Two characters on one microphone, their lines with pauses between them, the sound packed in the .blend:
    Split into Lines cuts the strip in each pause into strips of the same sound that play what it played; the
    first and third lines (one character's) then key their rig, the second line's frames left unkeyed."""
    rate = 16000
    en, zh = load_audio(shared_file("audio", "en_60s.wav")), load_audio(shared_file("audio", "zh_8s.wav"))
    silence = lambda seconds: np.zeros(int(seconds * rate), np.float32)  # noqa: E731
    wav = write_wav(tmp_path / "scene12.wav", np.concatenate(
        [silence(0.5), en[:3 * rate], silence(0.8), zh[:3 * rate], silence(1.2), en[10 * rate:13 * rate]]))
    strip = sequencer.add_sound(scene, wav, frame_start=11, channel=2)
    strip.sound.pack()
    select_only(scene, strip)
    sound, span = strip.sound, sequencer.handles(strip)
    strip.keyframe_insert("volume", frame=1)              # a fade: refused, its lines would not keep it
    _bad(bpy.ops.synctalk.split_lines, "is animated")
    scene.animation_data_clear()
    scene.synctalk.min_pause = 1.5                        # longer than any pause: nothing to cut
    assert bpy.ops.synctalk.split_lines() == {"FINISHED"}
    assert [s.name for s in sequencer.strips(scene)] == ["scene12"]
    scene.synctalk.min_pause = 0.5
    assert bpy.ops.synctalk.split_lines() == {"FINISHED"}
    lines = sorted((s for s in sequencer.strips(scene) if s.type == "SOUND"), key=lambda s: sequencer.handles(s)[0])
    assert [s.name for s in lines] == ["scene12 line 1", "scene12 line 2", "scene12 line 3"]
    assert all(s.sound == sound and s.channel == 2 and sequencer.content_start(s) == 11 for s in lines)
    edges = [sequencer.handles(s) for s in lines]
    assert edges[0][0] == span[0] and edges[-1][1] == span[1] and all(a[1] == b[0] for a, b in zip(edges, edges[1:]))
    for (_, cut), (start, end) in zip(edges, [(3.5, 4.3), (7.3, 8.5)]):   # in each pause
        assert 11 + start * 25 < cut < 11 + end * 25
    face = arkit_head("Face", ARKIT_NAMES)
    select_only(scene, lines[0])
    lines[2].select = True
    scene.synctalk.generic = True
    assert bpy.ops.synctalk.audio_to_rig() == {"FINISHED"}
    frames = _keys(face.data.shape_keys, "jawOpen")[:, 0]
    assert not ((frames >= edges[1][0]) & (frames < edges[1][1])).any()
    assert frames.min() == edges[0][0] and frames.max() >= edges[2][1] - 2


def test_audio_to_rig_keys_what_the_edit_plays_of_a_trimmed_offset_or_packed_strip(scene, tmp_path):
    """Keys lie where the strip's sound is heard: between its handles, moved by its sound offset (as Blender
    plays it: the test below), from the sound the .blend holds when it is packed; a retimed strip is refused
    with a message."""
    import shutil
    wav = tmp_path / "session.wav"
    shutil.copy(shared_file("audio", "en_60s.wav"), wav)
    strip = sequencer.add_sound(scene, wav, frame_start=1, channel=1)
    sequencer.set_handles(strip, 981, 1156)                # frames 981-1155 of the scene are heard
    strip.sound_offset = 0.2                               # the file begins at frame 1 + 5 = 6
    strip.sound.pack()
    wav.unlink()                                           # only the .blend holds the sound now
    select_only(scene, strip)
    face = arkit_head("Face", ARKIT_NAMES)
    scene.synctalk.generic = True
    assert bpy.ops.synctalk.audio_to_rig() == {"FINISHED"}
    jaw = _keys(face.data.shape_keys, "jawOpen")
    assert jaw[0, 0] == 981 and abs(jaw[-1, 0] - 1155) <= 1 and np.allclose(np.diff(jaw[:, 0]), 1.0)
    # The jaw follows file seconds 39 to 46, the part heard from frame 981.
    heard = load_audio(shared_file("audio", "en_60s.wav"))[39 * 16000:46 * 16000]
    speech, pause = _speech_and_pause_frames(heard, 25, len(jaw))
    assert speech.sum() > 10 and pause.sum() > 5, "the heard part needs speech and a pause"
    assert jaw[speech, 1].mean() > 2 * jaw[pause, 1].mean() + 0.02
    take = scene.synctalk.takes[-1]
    assert (take.frame_start, take.frame_end) == (981, jaw[-1, 0])
    # The line trimmed shorter and keyed again, asking to remove keys past it: none left where no sound plays.
    sequencer.set_handles(strip, 981, 1100)
    scene.synctalk.clear_stale = True
    assert bpy.ops.synctalk.audio_to_rig() == {"FINISHED"}
    jaw = _keys(face.data.shape_keys, "jawOpen")
    assert jaw[0, 0] == 981 and abs(jaw[-1, 0] - 1099) <= 1    # the new take began as a copy of the old one
    # Retimed (its speed changed along it): refused, the take stays as it was. Adding a retiming key from
    # Python crashes bpy 4.5 and 5.0 (a segmentation fault in RetimingKeys.add), so this part runs on 5.1 and
    # later (tests/test_blender_5x.py runs this file on bpy 5.1, 5.2 and 5.3).
    if bpy.app.version < (5, 1, 0):
        return
    keys = strip.retiming_keys
    keys.add(timeline_frame=1050)
    keys[len(keys) - 1].timeline_frame += 50
    assert sequencer.retimed(strip)
    _bad(bpy.ops.synctalk.audio_to_rig, "is retimed")


def test_a_packed_sound_is_written_inside_the_jobs_folder_whatever_its_names(scene, tmp_path):
    """A packed sound's data-block name and path come from the .blend: a crafted one named
    '../../../escaped' with an empty path wrote the sound beside the job's folder's parents."""
    wav = tmp_path / "line.mp3"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-i", str(shared_file("audio", "zh_8s.wav")), str(wav)],
                   check=True)
    strip = sequencer.add_sound(scene, wav, frame_start=1, channel=1)
    strip.sound.pack()
    folder = tmp_path / "a" / "b" / "job"
    folder.mkdir(parents=True)
    assert sequencer.sound_file(strip, folder) == folder / "sound.mp3"        # the suffix tells the decoder
    for name, path in (("../../../escaped", ""), ("..", "//.."), ("x", "//../../evil.w/av")):
        strip.sound.name, strip.sound.filepath = name, path
        written = sequencer.sound_file(strip, folder)
        assert written.parent == folder and written.name in ("sound.wav", "sound.mp3"), written
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["line.mp3", "sound.mp3", "sound.wav"]


def test_two_characters_keyed_from_one_dialogue_strip_each_from_its_own_channel(scene, tmp_path, capfd):
    """A dialogue recorded with a microphone on each actor (one on each side of a stereo file, each hearing the
    other 15 dB down): keyed with both channels, the engine's warning says to pick one (as every engine warning
    now reaches the user); Audio to Rig with Channel Left on one character and Right on the other keys each
    mouth in its own speaker's turns only, and each take says which channel it heard."""
    import soundfile
    a = load_audio(shared_file("audio", "en_60s.wav"))[16000 * 20: 16000 * 32]
    b = np.resize(load_audio(shared_file("audio", "fr_12s_48k_stereo.wav")), len(a))
    a_turn = (np.arange(len(a)) // (4 * 16000)) % 2 == 0          # A, B, A: 4 s each
    a, b = a * a_turn, b * ~a_turn
    bleed = 10 ** (-15 / 20)
    soundfile.write(str(tmp_path / "dialogue.wav"), np.stack([a + bleed * b, b + bleed * a], 1), 48000 // 3)
    strip = sequencer.add_sound(scene, tmp_path / "dialogue.wav", frame_start=1, channel=1)
    scene.synctalk.generic = True
    faces = {name: arkit_head(name, ARKIT_NAMES) for name in ("Anna", "Ben")}
    select_only(scene, strip)
    capfd.readouterr()
    assert bpy.ops.synctalk.audio_to_rig() == {"FINISHED"}                 # Channel: Both
    printed = capfd.readouterr()
    assert "Warning: " in printed.out + printed.err   # reported by the operator, not only printed by the job
    assert "two channels hold different voices" in printed.out.split("Warning: ", 1)[1]
    from synctalk_blender.jobs import current_job
    from synctalk_blender.panels import short_warning
    (warning,) = current_job().state.warnings
    assert short_warning(warning).startswith("dialogue.wav: its two channels")   # a panel line: the file's name
    for name, channel in (("Anna", "LEFT"), ("Ben", "RIGHT")):
        for face in faces.values():
            face.select_set(face.name == name)
        bpy.context.view_layer.objects.active = faces[name]
        select_only(scene, strip)
        scene.synctalk.speech_channel = channel
        assert bpy.ops.synctalk.audio_to_rig() == {"FINISHED"}
        assert scene.synctalk.takes[-1].source == f"generic model, {channel.lower()} channel"
    jaws = {name: _keys(face.data.shape_keys, "jawOpen")[:, 1] for name, face in faces.items()}
    frame = np.arange(len(jaws["Anna"]))
    anna_turns = (frame // 100) % 2 == 0
    settled = (frame % 100 >= 15) & (frame % 100 < 90)    # past the last word's hangover, before the lips part
    assert jaws["Anna"][anna_turns].mean() > 0.1 and jaws["Anna"][~anna_turns & settled].max() < 0.05
    assert jaws["Ben"][~anna_turns].mean() > 0.1 and jaws["Ben"][anna_turns & settled].max() < 0.05


def test_the_sound_heard_is_where_blenders_own_mixdown_plays_it(scene, tmp_path):
    """sequencer.heard_sound against Blender's mixdown of the scene: a click at second 1.0 of a file is heard at
    the frame heard_sound says, whatever the strip's sound offset and trimming."""
    from engine.media.audio import write_wav
    click = np.zeros(4 * 16000, np.float32)
    click[16000:16160] = 0.6
    path = write_wav(tmp_path / "click.wav", click)
    scene.frame_start, scene.frame_end = 1, 200
    for offset, handles in ((0.0, None), (0.5, None), (-0.5, None), (0.3, (20, 90))):
        strip = sequencer.add_sound(scene, path, frame_start=11, channel=1)
        strip.sound_offset = offset
        if handles:
            sequencer.set_handles(strip, *handles)
        heard = sequencer.heard_sound(strip, 25.0)
        mix = tmp_path / f"mix{offset}.wav"
        assert bpy.ops.sound.mixdown(filepath=str(mix), container="WAV", codec="PCM", format="S16",
                                     mixrate=16000) == {"FINISHED"}
        mixed = load_audio(mix)
        frame = 1 + np.argmax(np.abs(mixed) > 0.1) / 16000 * 25   # the scene's first frame plays at 0 s
        assert abs(frame - (heard.origin + 1.0 * 25)) < 0.5, (offset, frame, heard)
        assert heard.whole == (offset == 0.0 and handles is None)
        # keys go on whole frames, the first one where the sound is heard (the offset of 0.5 s: from frame 24)
        assert heard.first_frame == round(heard.first_frame) >= max(sequencer.handles(strip)[0], heard.origin)
        sequencer.strips(scene).remove(strip)


def test_audio_to_rig_keys_a_video_files_sound_strip_where_blender_plays_it(scene, tmp_path):
    """A camera's file whose picture starts 0.4 s after its sound (streams stamped apart, as phones and screen
    recorders write them): a sound strip plays it from the track's first sample (Add > Movie moves the strip by
    the difference), as it plays that track saved as a wav, where the engine reads a clip from its first
    picture. Keyed from either strip at the same frame, the jaw is the same (it was 10 frames, the 0.4 s, early
    from the video file's)."""
    from engine.media.ffmpeg import ffmpeg_exe
    clip = _cut(shared_file("video", "lieu_60s.mp4"), 6.0, tmp_path / "clip.mp4", start=20.0)
    late, track = tmp_path / "picture late.mp4", tmp_path / "its sound.wav"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-itsoffset", "0.4", "-i", str(clip), "-i", str(clip),
                    "-map", "0:v", "-map", "1:a", "-c", "copy", str(late)], check=True)
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-i", str(late), "-map", "0:a", str(track)], check=True)
    assert probe(late).video_lead == pytest.approx(0.4, abs=0.01)
    scene.frame_start, scene.frame_end = 1, 160
    face = arkit_head("Face", ARKIT_NAMES)
    scene.synctalk.generic, scene.synctalk.new_seed = True, False
    played, jaws = [], []
    for path in (late, track):
        strip = sequencer.add_sound(scene, path, frame_start=11, channel=1)
        mix = tmp_path / f"{path.stem}.mix.wav"
        assert bpy.ops.sound.mixdown(filepath=str(mix), container="WAV", codec="PCM", format="S16",
                                     mixrate=16000) == {"FINISHED"}
        played.append(load_audio(mix))
        select_only(scene, strip)
        face.select_set(True)
        assert bpy.ops.synctalk.audio_to_rig() == {"FINISHED"}
        jaws.append(_keys(face.data.shape_keys, "jawOpen"))
        sequencer.strips(scene).remove(strip)
    n = min(map(len, played))
    assert np.corrcoef(played[0][:n], played[1][:n])[0, 1] > 0.99     # Blender plays the two alike
    (from_video, from_wav), m = jaws, min(len(jaws[0]), len(jaws[1]))
    assert from_video[0, 0] == from_wav[0, 0] == 11
    assert np.abs(from_video[:m, 1] - from_wav[:m, 1]).max() < 0.02, np.abs(from_video[:m, 1] - from_wav[:m, 1]).max()


def _in_meta(scene, strip, meta_handles, nested: bool = False):
    """`strip` grouped into a meta strip (inside a second one when nested) trimmed to `meta_handles`."""
    meta = sequencer.strips(scene).new_meta("Line", strip.channel + 1, sequencer.handles(strip)[0])
    strip.move_to_meta(meta)
    sequencer.set_handles(meta, *sequencer.handles(strip))   # a new meta strip is one frame long
    if nested:
        outer = sequencer.strips(scene).new_meta("Scene", meta.channel + 1, sequencer.handles(meta)[0])
        meta.move_to_meta(outer)
        sequencer.set_handles(outer, *sequencer.handles(meta))
        meta = outer
    sequencer.set_handles(meta, *meta_handles)
    return meta


@pytest.mark.parametrize("nested", [False, True])
def test_a_meta_strips_trim_silences_what_it_hides(scene, tmp_path, nested):
    """A sound strip grouped into a meta strip whose trim hides the first of two clicks: Blender's mixdown plays
    only the second, and heard_sound keys only the part the meta shows (a meta inside a meta: the same)."""
    from engine.media.audio import write_wav
    clicks = np.zeros(4 * 16000, np.float32)
    clicks[16000:16160] = clicks[40000:40160] = 0.6                 # at 1.0 s and 2.5 s
    path = write_wav(tmp_path / "clicks.wav", clicks)
    scene.frame_start, scene.frame_end = 1, 200
    strip = sequencer.add_sound(scene, path, frame_start=11, channel=1)   # clicks at frames 36 and 73.5
    outer = _in_meta(scene, strip, (50, 100), nested)
    assert sequencer.top_level(strip) == outer and sequencer.visible_handles(strip) == (50, 100)
    mix = tmp_path / "mix.wav"
    assert bpy.ops.sound.mixdown(filepath=str(mix), container="WAV", codec="PCM", format="S16",
                                 mixrate=16000) == {"FINISHED"}
    mixed = load_audio(mix)
    heard_frames = 1 + np.flatnonzero(np.abs(mixed) > 0.1) / 16000 * 25
    assert heard_frames.min() > 73 and heard_frames.max() < 75              # the first click is hidden
    heard = sequencer.heard_sound(strip, 25.0)
    assert heard.first_frame == 50 and not heard.whole
    assert heard.span == pytest.approx(((50 - 11) / 25, (100 - 11) / 25))
    second_line = sequencer.add_sound(scene, path, frame_start=150, channel=1)
    second_line.move_to_meta(outer)
    sequencer.set_handles(outer, 120, 250)                 # a meta of two lines, trimmed past the first
    with pytest.raises(ValueError, match="the meta strip it lies in is trimmed past it"):
        sequencer.heard_sound(strip, 25.0)


def _linked_face(scene, tmp_path, override: bool):
    """A face with ARKit shape keys linked from another .blend, as a studio links its characters; with
    override, made a library override with its mesh (and so its shape keys)."""
    library = tmp_path / "character.blend"
    if not library.exists():
        face = arkit_head("Face", ARKIT_NAMES)
        bpy.data.libraries.write(str(library), {face})
        bpy.data.objects.remove(face)
    with bpy.data.libraries.load(str(library), link=True) as (_, linked):
        linked.objects = ["Face"]
    face = linked.objects[0]
    scene.collection.objects.link(face)        # an override is made of an object the scene uses (bpy 5.3)
    if override:
        face = face.override_create(remap_local_usages=True)
        face.data = face.data.override_create(remap_local_usages=True)
    bpy.context.view_layer.objects.active = face
    return face


def test_keys_go_only_where_the_file_keeps_them_and_drivers_are_named(scene, tmp_path):
    """A linked mesh's shape keys would lose their keys when the file is saved: refused with the way out; with
    its content overridden the take is saved with the file; shape keys set by drivers are named in the report."""
    wav = shared_file("audio", "zh_8s.wav")
    select_only(scene, sequencer.add_sound(scene, wav, frame_start=1, channel=1))
    scene.synctalk.generic = True
    face = _linked_face(scene, tmp_path, override=False)
    assert face.data.shape_keys.library is not None
    _bad(bpy.ops.synctalk.audio_to_rig, "'Face' is linked from .*character.blend: keys on it would be lost")
    scene.collection.objects.unlink(face)
    face = _linked_face(scene, tmp_path, override=True)
    jaw = face.data.shape_keys.animation_data_create().drivers.new('key_blocks["jawOpen"].value')
    jaw.driver.expression = "0.5"
    assert bpy.ops.synctalk.audio_to_rig() == {"FINISHED"}
    assert "1 keyed shape keys are set by drivers, which override keys (Face: jawOpen)" in scene.synctalk.last_report
    saved, face_name = tmp_path / "shot.blend", face.name
    bpy.ops.wm.save_as_mainfile(filepath=str(saved))
    bpy.ops.wm.open_mainfile(filepath=str(saved))
    key = bpy.data.objects[face_name].data.shape_keys
    assert key.animation_data.action.name == "zh_8s take 1" and len(fcurves_of(key)) == 52


def _bad(operator, match):
    actions, strips = len(bpy.data.actions), len(sequencer.strips(bpy.context.scene))
    with pytest.raises(RuntimeError, match=match):
        operator()
    assert len(bpy.data.actions) == actions and len(sequencer.strips(bpy.context.scene)) == strips


def test_bad_input_gives_a_message_and_changes_nothing(scene, tmp_path):
    wav = shared_file("audio", "zh_8s.wav")
    clip = shared_file("video", "may_5s.mp4")
    face = arkit_head("Face", ARKIT_NAMES)
    _bad(bpy.ops.synctalk.audio_to_rig, "no sound strip selected")
    movie = sequencer.add_movie(scene, clip, 1, 3)
    select_only(scene, movie)
    _bad(bpy.ops.synctalk.audio_to_rig, "is a movie strip, not a sound strip")
    sound = sequencer.add_sound(scene, wav, 1, 1)
    select_only(scene, sound)
    _bad(bpy.ops.synctalk.audio_to_rig, "no subject chosen")
    scene.synctalk.subject = str(tmp_path)
    _bad(bpy.ops.synctalk.audio_to_rig, "not a subject folder")
    _bad(bpy.ops.synctalk.render_to_sequencer, "not a subject folder")
    plain = bpy.data.objects.new("Plain", bpy.data.meshes.new("Plain"))
    scene.collection.objects.link(plain)
    bpy.context.view_layer.objects.active = plain
    _bad(bpy.ops.synctalk.audio_to_rig, "'Plain' has no shape keys")
    bpy.context.view_layer.objects.active = face
    scene.synctalk.generic = True
    running = Job("Train other", [preprocess_argv(clip, tmp_path / "other", size=64)]).start()
    try:
        _bad(bpy.ops.synctalk.audio_to_rig, "still running")
    finally:
        running.cancel()
        running.run_to_end(timeout_s=60)
    scene.synctalk.clip = str(tmp_path / "missing.mp4")
    _bad(bpy.ops.synctalk.train_subject, "clip not found")
    scene.synctalk.clip, scene.synctalk.subject_name = str(clip), ".."   # the Subjects folder's parent
    _bad(bpy.ops.synctalk.train_subject, "Subject Name '..' is not a folder name")
    scene.synctalk.clip, scene.synctalk.subject_name = "", ""
    bpy.data.sounds.remove(sound.sound)   # its sound data deleted (the Outliner's Blender File view): the strip stays
    for operator in (bpy.ops.synctalk.audio_to_rig, bpy.ops.synctalk.split_lines):
        _bad(operator, f"sound strip '{sound.name}' has no sound \\(its sound data was deleted\\)")


def _cut(source, seconds, out, start=0.0):
    """A real clip or sound, shortened with ffmpeg (tests stay small)."""
    from engine.media.ffmpeg import ffmpeg_exe
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-y", "-ss", str(start), "-i", str(source), "-t", str(seconds),
                    *(["-c:v", "libx264", "-c:a", "aac"] if out.suffix == ".mp4" else []), str(out)], check=True)
    return out


@pytest.fixture
def lieu_3s(tmp_path):
    """3 s of lieu: the clip Train Subject turns into a subject."""
    return _cut(shared_file("video", "lieu_60s.mp4"), 3.0, tmp_path / "lieu3.mp4")


def test_rig_drives_the_mouth_trains_on_all_52_curves(scene, tmp_path):
    from synctalk_blender.operators import train_arguments
    scene.synctalk.preset = "preview"
    arguments = train_arguments(tmp_path / "s", scene.synctalk)   # on by default: rig edits show up
    assert arguments[:4] == ["train", str(tmp_path / "s"), "--preset", "preview"]
    assert arguments[-2:] == ["--expression", "all"]
    scene.synctalk.rig_drives_mouth = False
    try:
        assert "--expression" not in train_arguments(tmp_path / "s", scene.synctalk)
    finally:
        scene.synctalk.rig_drives_mouth = True
    # A retrained generic model set for Audio to Rig is what the subject's speech model builds on too (the
    # panel checks that the file is there; the engine reads it when it trains).
    studio = tmp_path / "studio.safetensors"
    studio.write_bytes(b"")
    scene.synctalk.model_file = str(studio)
    try:
        arguments = train_arguments(tmp_path / "s", scene.synctalk)
        assert arguments[arguments.index("--generic-model") + 1] == str(studio)
        scene.synctalk.model_file = str(tmp_path / "gone.safetensors")
        from synctalk_blender.operators import UserError
        with pytest.raises(UserError, match="model file not found"):
            train_arguments(tmp_path / "s", scene.synctalk)
    finally:
        scene.synctalk.model_file = ""


@pytest.mark.slow
def test_train_subject_learns_the_part_of_the_movie_strip_the_edit_shows(scene, tmp_path, monkeypatch):
    """A movie strip trimmed to where the person talks: Train Subject makes the subject from that part of its
    file (a movie strip shows one file frame per scene frame, here a 25-fps file in a 24-fps edit), and with
    the strip trimmed otherwise it does not train that subject in the new one's place."""
    from engine.subject.format import read_meta
    monkeypatch.setenv("SYNCTALK_SUBJECTS", str(tmp_path))
    scene.render.fps = 24
    clip = shared_file("video", "may_5s.mp4")
    movie = sequencer.add_movie(scene, clip, 10, 3)
    sequencer.set_handles(movie, 40, 115)            # file frames 30-105 of 125: 1.2 s to 4.2 s
    select_only(scene, movie)
    assert sequencer.movie_span(movie, 24.0) == pytest.approx((1.2, 4.2))
    meta = _in_meta(scene, movie, (50, 115))                # a meta strip's trim hides the first 10 frames more
    assert sequencer.movie_span(movie, 24.0) == pytest.approx((1.6, 4.2))
    sequencer.set_handles(meta, 10, 135)                     # the meta strip shows the whole file again
    scene.synctalk.clip, scene.synctalk.subject_name, scene.synctalk.preset = "", "may", "tiny"
    scene.synctalk.size, scene.synctalk.rig_drives_mouth = 64, False
    assert bpy.ops.synctalk.train_subject() == {"FINISHED"}
    meta = read_meta(tmp_path / "may")
    assert meta.source.first_frame == round(1.2 * 24) and meta.frames == round(4.2 * 24) - round(1.2 * 24)
    assert (tmp_path / "may" / "model" / "head.safetensors").is_file()
    sequencer.set_handles(movie, 20, 115)
    with pytest.raises(RuntimeError, match="made from other footage"):
        bpy.ops.synctalk.train_subject()
    assert read_meta(tmp_path / "may").source.first_frame == round(1.2 * 24)
    movie.stream_index = 1   # a video stream the file does not hold: Blender shows nothing, and says so
    _bad(bpy.ops.synctalk.train_subject, r"movie strip 'may_5s': Blender cannot play its file .*may_5s.mp4 "
                                         r"\(video stream 1\); set the strip's Stream Index")


def _played_at_real_speed(scene, tmp_path):
    """A copy of `scene` whose movie strips play at their files' real speed, as Add > Movie makes them with
    Adjust Playback Rate (its default). Blender's Python API cannot set that (strips.new_movie has no such option,
    and Add > Movie does not run without a Sequencer window), so the flag (bit 17 of a strip's flags) is set in a
    saved copy of the .blend, at the word that Flip X (bit 11 of the same flags) changes, and the scene appended
    back from it."""
    import struct
    movie = next(s for s in sequencer.strips(scene) if s.type == "MOVIE")
    saved = []
    for flipped in (False, True):
        movie.use_flip_x = flipped
        path = tmp_path / f"flip{int(flipped)}.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(path), compress=False, copy=True, relative_remap=False)
        saved.append(path.read_bytes())
    movie.use_flip_x = False
    plain, flipped = saved
    at = next(i for i in range(len(plain) - 4) if plain[i] != flipped[i])
    word = next(w for w in range(at - 3, at + 1)
                if struct.unpack_from("<I", plain, w)[0] ^ struct.unpack_from("<I", flipped, w)[0] == 1 << 11)
    patched = bytearray(plain)
    struct.pack_into("<I", patched, word, struct.unpack_from("<I", plain, word)[0] | 1 << 17)
    (tmp_path / "real_speed.blend").write_bytes(patched)
    with bpy.data.libraries.load(str(tmp_path / "real_speed.blend")) as (source, target):
        target.scenes = [scene.name]
    return target.scenes[0]


def test_a_movie_strip_playing_at_its_real_speed_is_read_at_that_speed(scene, tmp_path):
    """Add > Movie of a 25-fps clip into a 30-fps edit stretches it to play at its real speed (Adjust Playback
    Rate, on by default): 5 s over 150 scene frames. The part the edit shows is read at that speed, in step with
    the clip's sound strip beside it; a strip added frame for frame is read at the file's own rate."""
    scene.render.fps = 30
    clip = shared_file("video", "may_5s.mp4")
    sequencer.add_movie(scene, clip, 1, 2)
    sequencer.add_sound(scene, clip, 1, 1)
    real = _played_at_real_speed(scene, tmp_path)
    movie, sound = (next(s for s in sequencer.strips(real) if s.type == kind) for kind in ("MOVIE", "SOUND"))
    assert (sequencer.content_duration(movie), movie.fps) == (150, 25)   # the flag took
    for strip in (movie, sound):
        sequencer.set_handles(strip, 61, 121)                           # the edit's 2-4 s
    assert sequencer.movie_span(movie, 30.0) == pytest.approx((2.0, 4.0))
    assert sequencer.sound_offset(movie, sound, 30.0) == pytest.approx(0.0, abs=1e-6)
    plain = next(s for s in sequencer.strips(scene) if s.type == "MOVIE")
    sequencer.set_handles(plain, 61, 121)                                # a file frame per scene frame
    assert sequencer.content_duration(plain) == 125
    assert sequencer.movie_span(plain, 30.0) == pytest.approx((2.4, 4.8))


@pytest.mark.slow
def test_train_subject_learns_the_picture_the_movie_strip_shows_of_a_file_holding_two(scene, tmp_path, monkeypatch):
    """A file with two video streams (a second camera angle): the person talks on the second, which the strip
    shows (Stream Index 1). Train Subject makes the subject from that stream, not the file's first picture."""
    from engine.media.ffmpeg import ffmpeg_exe
    from engine.subject.format import read_meta
    monkeypatch.setenv("SYNCTALK_SUBJECTS", str(tmp_path))
    clip = tmp_path / "two angles.mkv"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:d=3",
                    "-ss", "6", "-t", "3", "-i", str(shared_file("video", "lieu_60s.mp4")), "-map", "0:v", "-map",
                    "1:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(clip)],
                   check=True)
    movie = sequencer.add_movie(scene, clip, 1, 3)
    movie.stream_index = 1
    select_only(scene, movie)
    scene.synctalk.clip, scene.synctalk.subject_name, scene.synctalk.preset = "", "angle", "tiny"
    scene.synctalk.size, scene.synctalk.rig_drives_mouth = 64, False
    assert bpy.ops.synctalk.train_subject() == {"FINISHED"}
    source = read_meta(tmp_path / "angle").source
    assert (source.video_stream, source.width, source.height) == (1, 256, 256)
    movie.stream_index = 0   # the test pattern: not what "angle" learnt
    _bad(bpy.ops.synctalk.train_subject, "made from other footage")


@pytest.mark.slow
def test_train_subject_learns_a_camera_clip_from_the_sound_strip_synced_under_it(scene, tmp_path, monkeypatch):
    """Double-system sound: a camera's clip without sound, and a sound recorder's file started 2 s earlier,
    synced under it in the edit. Train Subject with both selected makes the subject's sound from the recorder's
    file where the edit plays it under the picture; with two sound strips under it, it asks which."""
    from engine.media.ffmpeg import ffmpeg_exe
    from engine.subject import Subject
    monkeypatch.setenv("SYNCTALK_SUBJECTS", str(tmp_path))
    scene.render.fps = 25
    lieu = shared_file("video", "lieu_60s.mp4")
    camera, recorder = tmp_path / "camera.mp4", tmp_path / "recorder.wav"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-ss", "6", "-i", str(lieu), "-t", "3", "-an", "-c:v",
                    "libx264", "-preset", "ultrafast", str(camera)], check=True)
    _cut(lieu, 6.0, recorder, start=4.0)
    movie = sequencer.add_movie(scene, camera, 51, 2)
    sound = sequencer.add_sound(scene, recorder, frame_start=1, channel=1)   # its second 2 under frame 51
    other = sequencer.add_sound(scene, recorder, frame_start=40, channel=3)
    for strip in (movie, sound, other):
        strip.select = True
    scene.sequence_editor.active_strip = movie
    scene.synctalk.clip, scene.synctalk.subject_name, scene.synctalk.preset = "", "camera", "tiny"
    scene.synctalk.size, scene.synctalk.rig_drives_mouth = 64, False
    _bad(bpy.ops.synctalk.train_subject, "2 selected sound strips play with movie strip")
    other.select = sound.select = False
    _bad(bpy.ops.synctalk.train_subject, "movie strip 'camera' has no sound: select the sound strip")
    scene.synctalk.clip = str(camera)
    _bad(bpy.ops.synctalk.train_subject, "camera.mp4 has no sound: add it to the Sequencer with the sound")
    scene.synctalk.clip, sound.select = "", True
    assert sequencer.sound_offset(movie, sound, 25.0) == pytest.approx(2.0)
    assert bpy.ops.synctalk.train_subject() == {"FINISHED"}
    heard, spoken = load_audio(Subject(tmp_path / "camera").audio_path), load_audio(lieu)[6 * 16000:9 * 16000]
    n = min(len(heard), len(spoken))
    assert abs(len(heard) - len(spoken)) <= 16000 // 25 and np.corrcoef(heard[:n], spoken[:n])[0, 1] > 0.99
    # the sound moved in the edit: that subject is not trained again with other sound in its place
    setattr(sound, "content_start" if hasattr(sound, "content_start") else "frame_start", 6)
    _bad(bpy.ops.synctalk.train_subject, r"made with other sound \(recorder.wav from 2 s\)")
    # nor from one side of the same recording (Channel: the person's voice in a two-microphone recording)
    setattr(sound, "content_start" if hasattr(sound, "content_start") else "frame_start", 1)
    scene.synctalk.clip_channel = "RIGHT"
    _bad(bpy.ops.synctalk.train_subject, r"made with other sound \(recorder.wav from 2 s\)")


@pytest.mark.slow
def test_train_subject_learns_an_image_strip_of_a_plate_with_the_sound_synced_under_it(scene, tmp_path,
                                                                                     monkeypatch):
    """A plate delivered as numbered frames (an image strip of its frames from the sixth on, played a frame per
    scene frame) and its sound recorded beside it: Train Subject makes the subject from the part of the plate the
    edit shows, in step with the sound, keeps its working copy, and refuses a strip whose frames are not one
    numbered run."""
    from engine.media.ffmpeg import ffmpeg_exe
    from engine.subject import Subject
    monkeypatch.setenv("SYNCTALK_SUBJECTS", str(tmp_path / "subjects"))
    lieu = shared_file("video", "lieu_60s.mp4")
    (tmp_path / "sh010").mkdir()
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-i", str(lieu), "-t", "3", "-start_number", "1001",
                    str(tmp_path / "sh010" / "plate.%04d.png")], check=True)
    recorder = _cut(lieu, 3.0, tmp_path / "recorder.wav")
    # the strip shows plate frames 1006-1075 from scene frame 1; the edit trims it to frames 6-70: plate 1011-1075
    plate = sequencer.add_image_sequence(scene, sorted((tmp_path / "sh010").glob("*.png"))[5:], 1, 2, name="sh010")
    (tmp_path / "sh010" / "plate.1002.png").unlink()   # a gap in the folder's run, in frames the edit does not use
    sequencer.set_handles(plate, 6, 71)
    select_only(scene, plate)
    scene.synctalk.clip, scene.synctalk.subject_name, scene.synctalk.preset = "", "", "tiny"
    scene.synctalk.size, scene.synctalk.rig_drives_mouth = 64, False
    _bad(bpy.ops.synctalk.train_subject, "image strip 'sh010' has no sound: select the sound strip")
    sound = sequencer.add_sound(scene, recorder, frame_start=-4, channel=1)   # its 0.2 s under plate frame 1006
    sound.select = True
    assert bpy.ops.synctalk.train_subject() == {"FINISHED"}
    subject = Subject(tmp_path / "subjects" / "sh010")
    source = subject.meta.source
    # its working copy holds the frames the edit shows, from plate frame 1011
    assert (source.sequence, source.sequence_first, source.first_frame, source.fps) == (
        str(tmp_path / "sh010" / "plate.####.png"), 1011, 0, 25)
    assert source.audio_offset == pytest.approx(0.4)   # the recording's second at that frame
    heard, spoken = load_audio(subject.audio_path), load_audio(recorder)[int(0.4 * 16000):]
    n = min(len(heard), len(spoken))
    assert np.corrcoef(heard[:n], spoken[:n])[0, 1] > 0.99
    assert subject.meta.frames == 65 and (subject.root / source.path).is_file()
    assert (subject.root / "model" / "head.safetensors").is_file()
    # rendered into the edit at the plate's full size: the head pasted into the subject's working copy
    line = sequencer.add_sound(scene, _cut(shared_file("audio", "en_60s.wav"), 0.4, tmp_path / "line.wav"), 300, 1)
    select_only(scene, line)
    # a plate shown in another Color Space than the render's default (a log plate's, say)
    spaces = [item.identifier for item in plate.colorspace_settings.bl_rna.properties["name"].enum_items]
    plate.colorspace_settings.name = shown = next(c for c in spaces if c != plate.colorspace_settings.name)
    assert bpy.ops.synctalk.render_to_sequencer() == {"FINISHED"}
    rendered = next(s for s in sequencer.strips(scene) if s.type == "MOVIE")
    info = probe(sequencer.strip_file(rendered))
    assert (info.width, info.height) == (256, 256) and subject.meta.size == 64
    assert rendered.colorspace_settings.name == shown   # its pixels are in the plate's encoding
    sequencer.strips(scene).remove(rendered)
    sequencer.strips(scene).remove(line)
    # ... but an OpenEXR plate's working copy is an sRGB picture of its linear light: its render keeps the
    # default. (The subject's record pointed at an EXR plate of the same frames, written here: no training.)
    from synctalk_blender.operators import _footage_colorspace
    (tmp_path / "sh010_exr").mkdir()
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-start_number", "1011", "-i",
                    str(tmp_path / "sh010" / "plate.%04d.png"), "-frames:v", "3", "-pix_fmt", "gbrpf32le", "-c:v",
                    "exr", "-start_number", "1011", str(tmp_path / "sh010_exr" / "plate.%04d.exr")], check=True)
    exr = sequencer.add_image_sequence(scene, sorted((tmp_path / "sh010_exr").glob("*.exr")), 400, 3)
    exr.colorspace_settings.name = shown
    record = json.loads((subject.root / "subject.json").read_text())
    record["source"]["sequence"] = str(tmp_path / "sh010_exr" / "plate.####.exr")
    exr_subject = shutil.copytree(subject.root, tmp_path / "exr_subject")
    (exr_subject / "subject.json").write_text(json.dumps(record))
    assert _footage_colorspace(scene, subject.root) == shown and _footage_colorspace(scene, exr_subject) is None
    sequencer.strips(scene).remove(exr)
    select_only(scene, plate)
    sound.select = True
    scene.synctalk.clip_track = 2               # its sound's second track: not trained in this one's place
    _bad(bpy.ops.synctalk.train_subject, r"made with other sound \(recorder.wav from 0 s\)")
    scene.synctalk.clip_track = 1
    plate.elements.append("plate.1080.png")     # a frame after a gap (not rendered yet), shown: the strip grows
    _bad(bpy.ops.synctalk.train_subject, r"4 of frames 1011-1080 are missing \(the first 1076\)")
    # ... trimmed off again, with a frame the strip hides at its start gone too: the part shown is what counts
    sequencer.set_handles(plate, 6, 71)
    (tmp_path / "sh010" / "plate.1007.png").unlink()
    from synctalk_blender.operators import _image_sequence
    clip, span, lead = _image_sequence(plate, 25)
    assert (clip, lead) == (tmp_path / "sh010" / "plate.####.png", pytest.approx(0.2))
    assert span == (pytest.approx(0.4), pytest.approx(3.0))   # plate frames 1011-1075, as trained above


@pytest.mark.slow
def test_train_subject_cancel_leaves_a_resumable_subject_then_resumes(scene, lieu_3s, monkeypatch):
    monkeypatch.setenv("SYNCTALK_SUBJECTS", str(lieu_3s.parent))
    scene.synctalk.clip, scene.synctalk.subject_name, scene.synctalk.preset = str(lieu_3s), "lieu", "tiny"
    subject = lieu_3s.parent / "lieu"
    # The modal path, through the job object: the operator's own commands, polled, then cancelled.
    job = Job("Train lieu", [preprocess_argv(lieu_3s, subject, fps=25, size=96),
                             train_argv(subject, preset="tiny")]).start()
    deadline = time.monotonic() + 240
    while not (job.state.stage.startswith("train") and job.state.done >= 1) and time.monotonic() < deadline:
        assert not job.poll().finished, job.state
        time.sleep(0.1)
    job.cancel()
    state = job.run_to_end(timeout_s=120)
    assert state.cancelled and (subject / "subject.json").is_file()
    assert (subject / "model" / "checkpoint.safetensors").is_file()       # resumable
    # Train Subject again: it sees the preprocessed subject and its checkpoint, and resumes.
    assert bpy.ops.synctalk.train_subject() == {"FINISHED"}
    assert scene.synctalk.subject == str(subject)
    assert (subject / "model" / "head.safetensors").is_file()
    assert not (subject / "model" / "checkpoint.safetensors").exists()


def test_audio_to_rig_with_subject_then_render_into_sequencer(scene, tiny_trained, tmp_path, monkeypatch, capfd):
    scene.render.fps = 24  # an edit at another rate than the subject's 25 fps: rendered at the scene's rate
    speech = _cut(shared_file("audio", "en_60s.wav"), 0.32, tmp_path / "line.wav", start=4.3)
    strip = sequencer.add_sound(scene, speech, frame_start=12, channel=1)
    select_only(scene, strip)
    face = arkit_head("Face", ARKIT_NAMES)
    scene.synctalk.subject = str(tiny_trained)
    assert bpy.ops.synctalk.audio_to_rig() == {"FINISHED"}
    key = face.data.shape_keys
    jaw = _keys(key, "jawOpen")
    assert jaw[0, 0] == 12 and abs(len(jaw) - sequencer.content_duration(strip)) <= 1
    # A hand edit on the rig is what gets rendered: shut the mouth on one key.
    fcurve = fcurves_of(key).find('key_blocks["jawOpen"].value')
    fcurve.keyframe_points[2].co.y = 0.0
    assert bpy.ops.synctalk.render_to_sequencer() == {"FINISHED"}
    movies = [s for s in sequencer.strips(scene) if s.type == "MOVIE"]
    assert len(movies) == 1
    movie = movies[0]
    assert movie.channel == 2
    assert sequencer.handles(movie) == sequencer.handles(strip)
    # the video itself is as long as the sound
    assert abs(sequencer.content_duration(movie) - sequencer.content_duration(strip)) <= 1
    assert movie.fps == pytest.approx(24)                           # frame for frame with the scene
    assert sequencer.strip_file(movie).is_file()
    # The edit goes on while it renders: its sound strip removed meanwhile, the render lands where the sound was.
    from synctalk_blender import jobs
    run_to_end, shown = jobs.Job.run_to_end, sequencer.handles(strip)

    def removed_meanwhile(job, *args, **kwargs):
        sequencer.strips(scene).remove(strip)
        return run_to_end(job, *args, **kwargs)

    monkeypatch.setattr(jobs.Job, "run_to_end", removed_meanwhile)
    capfd.readouterr()
    assert bpy.ops.synctalk.render_to_sequencer() == {"FINISHED"}
    second = next(s for s in sequencer.strips(scene) if s.type == "MOVIE" and s != movie)
    assert sequencer.handles(second) == shown and second.channel == 3 and second.name.startswith("line render")
    assert "was moved or removed while it rendered: placed where the sound was" in capfd.readouterr().out


@pytest.mark.parametrize("trimmed_by", ["strip", "meta"])
def test_render_into_sequencer_renders_only_the_part_of_the_strip_the_edit_plays(scene, tiny_trained, tmp_path,
                                                                                 trimmed_by):
    """A trimmed strip with a sound offset, or the same strip whole inside a meta strip trimmed alike: keys and
    render cover the visible part only, and the rendered strip lies over it frame for frame (the render's
    --frames, not the whole file), in the scene's own channels above the meta strip."""
    scene.render.fps = 24
    speech = _cut(shared_file("audio", "en_60s.wav"), 1.2, tmp_path / "line.wav", start=4.3)
    strip = sequencer.add_sound(scene, speech, frame_start=12, channel=1)
    strip.sound_offset = 0.1                   # the file begins at frame 14.4
    if trimmed_by == "strip":
        sequencer.set_handles(strip, 18, 30)   # 12 frames heard: file seconds 0.15-0.65
    else:
        meta = _in_meta(scene, strip, (18, 30))
    select_only(scene, strip)
    face = arkit_head("Face", ARKIT_NAMES)
    scene.synctalk.subject = str(tiny_trained)
    assert bpy.ops.synctalk.audio_to_rig() == {"FINISHED"}
    jaw = _keys(face.data.shape_keys, "jawOpen")
    assert jaw[0, 0] == pytest.approx(18) and len(jaw) == 12
    assert bpy.ops.synctalk.render_to_sequencer() == {"FINISHED"}
    movie = next(s for s in sequencer.strips(scene) if s.type == "MOVIE")
    # the video holds the 12 heard frames, not the file's 29
    assert sequencer.handles(movie) == (18, 30) and sequencer.content_start(movie) == 18
    assert sequencer.content_duration(movie) == 12
    if trimmed_by == "meta":
        assert movie.channel == meta.channel + 1


def test_render_is_driven_by_the_rig_only_when_it_keys_the_trained_curves(scene, tiny_trained, tmp_path, capfd):
    from engine.arkit import UPPER_FACE
    from synctalk_blender.operators import driving_rig, trained_curves
    subject = tiny_trained
    assert trained_curves(subject) == UPPER_FACE      # trained without --expression all: brows and blinks
    speech = _cut(shared_file("audio", "en_60s.wav"), 0.32, tmp_path / "line.wav", start=4.3)
    select_only(scene, sequencer.add_sound(scene, speech, frame_start=1, channel=1))
    scene.synctalk.subject = str(subject)
    face = arkit_head("Face", ARKIT_NAMES)
    blocks = face.data.shape_keys.key_blocks
    blocks["jawOpen"].keyframe_insert("value", frame=1)            # keys, but on a curve it was not trained on
    rig, source = driving_rig(bpy.context, subject)
    assert rig is None and "'Face' has no keys on the 7 curves the subject was trained on" in source
    capfd.readouterr()
    assert bpy.ops.synctalk.render_to_sequencer() == {"FINISHED"}
    printed = capfd.readouterr()
    assert "rendering from the audio alone: 'Face' has no keys" in printed.out + printed.err
    assert "rendered from the audio alone" in printed.out + printed.err
    # One key on one trained curve: from then on the rig's curves drive the render, and it says so.
    blocks["eyeBlinkLeft"].value = 1.0
    blocks["eyeBlinkLeft"].keyframe_insert("value", frame=1)
    rig, source = driving_rig(bpy.context, subject)
    assert rig == face and source == "the curves of 'Face' (1 of the 7 curves the subject was trained on)"
