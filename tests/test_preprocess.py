"""Preprocessing real footage into subjects: containers and codecs, the subject folder's contents,
bad inputs (built with ffmpeg from real material) and the all-or-nothing write."""
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_file
from engine.arkit import ARKIT_INDEX, ARKIT_NAMES
from engine.audio.vad import voice_activity
from engine.errors import EngineError
from engine.expression.blinks import BLINK_CHANNELS, blink_frames
from engine.media.audio import SAMPLE_RATE, load_audio, write_wav
from engine.preprocess import preprocess
from engine.preprocess.crop import choose_crop_box
from engine.preprocess.pipeline import smooth_blendshapes
from engine.preprocess.shots import ShotDetector, held_out_stretch
from engine.progress import Progress
from engine.subject import Subject
from engine.subject.format import LABEL_HEAD, LABEL_NECK, LABEL_TORSO
from engine.subject.schema import CropBox, Split, SubjectMeta

ROOT = Path(__file__).resolve().parent.parent


def ffmpeg(*args) -> None:
    import imageio_ffmpeg
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *map(str, args)],
                   check=True)


def lieu(seconds: float) -> list:
    return ["-t", seconds, "-i", shared_file("video", "lieu_60s.mp4")]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Short real clips in several containers and codecs, and broken ones, made once for the module."""
    folder = tmp_path_factory.mktemp("clips")
    ffmpeg(*lieu(2.0), "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", folder / "lieu.mkv")
    ffmpeg(*lieu(1.2), "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "400k",
           "-c:a", "libopus", folder / "lieu.webm")
    ffmpeg(*lieu(1.2), "-c:v", "mpeg4", "-q:v", "3", "-c:a", "aac", folder / "lieu.mov")
    # Black frames: 3 frames at 0.6 s (a short loss) and about 15 frames at 1.2 s (a long one).
    ffmpeg(*lieu(2.4), "-vf", "drawbox=x=0:y=0:w=iw:h=ih:color=black:t=fill:"
                             "enable='between(t,0.6,0.7)+between(t,1.2,1.8)'",
           "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", folder / "gaps.mp4")
    ffmpeg(*lieu(1.0), "-an", "-c:v", "libx264", "-preset", "ultrafast", folder / "silent_track.mp4")
    ffmpeg("-f", "lavfi", "-i", "color=c=0x807060:s=256x256:r=25:d=2", "-f", "lavfi", "-i",
           "sine=frequency=220:duration=2", "-shortest", "-c:v", "libx264", "-preset", "ultrafast",
           "-c:a", "aac", folder / "no_face.mp4")
    ffmpeg(*lieu(2.0), "-filter_complex", "[0:v]split[a][b];[a][b]hstack", "-c:v", "libx264",
           "-preset", "ultrafast", "-c:a", "aac", folder / "two_people.mp4")
    # The clip inside a larger frame: the face at (300, 60) + its place in the 256x256 original.
    ffmpeg(*lieu(1.0), "-vf", "pad=640:360:300:60:color=gray", "-c:v", "libx264", "-preset", "ultrafast",
           "-c:a", "aac", folder / "wide.mp4")
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("these are meeting notes, not a video\n" * 50)
    # A phone's recording cut off before it was closed: its index, written last, is missing.
    ffmpeg(*lieu(2.0), "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", folder / "whole.mp4")
    whole = (folder / "whole.mp4").read_bytes()
    (folder / "cut_off.mp4").write_bytes(whole[:whole.index(b"moov") - 4])
    return folder


@pytest.fixture(scope="module")
def subject(clips, tmp_path_factory):
    root = tmp_path_factory.mktemp("subjects") / "lieu"
    # What a killed earlier run (SIGKILL, power cut) leaves behind; the next run clears it.
    (root.parent / ".lieu.partial-killed" / "frames").mkdir(parents=True)
    progress = Progress("quiet")
    result = preprocess(clips / "lieu.mkv", root, progress=progress)
    return root, result, progress


def test_subject_folder_holds_everything_the_format_names(subject, clips):
    root, result, progress = subject
    s = Subject(root)
    n, size = s.n_frames, s.size
    assert n == 50 and size == 256 and result["frames"] == 50  # 2 s at 25 fps, a 256x256 source kept
    meta = json.loads((root / "subject.json").read_text())
    for key in ("format", "version", "fps", "frames", "size", "crop_box", "source", "intrinsics", "split",
                "gaps", "warnings", "models", "stabilizer"):
        assert key in meta, key
    assert meta["crop_box"] == {"x": 0, "y": 0, "width": 256, "height": 256}
    assert s.meta.crop_box == CropBox(0, 0, 256, 256)
    assert s.meta.source.sha256 == hashlib.sha256((clips / "lieu.mkv").read_bytes()).hexdigest()
    assert (s.meta.source.width, s.meta.source.height) == (256, 256)
    assert set(s.intrinsics) >= {"fx", "fy", "cx", "cy"} and s.intrinsics["fx"] > 0
    # 1/11 held out: the clip's end has speech but falls between blinks, so the 5 frames around its blink are
    # held out instead (held_out_stretch) and every other frame trains
    start, end = meta["split"]["test"]
    assert end - start == 5 and meta["split"]["train"] == [0, 50]
    held = blink_frames(s.tracks["blendshapes"][:, list(BLINK_CHANNELS)])[start:end]
    assert held.any() and not held[0] and not held[-1]
    assert s.meta.gaps == [] and s.meta.models == {}
    assert any("s long" in w for w in s.meta.warnings) and progress.warnings == s.meta.warnings
    assert SubjectMeta.from_dict(meta, root / "subject.json").to_dict() == meta  # lossless round trip

    t = s.tracks
    shapes = {"landmarks": (n, 478, 3), "blendshapes": (n, 52), "blendshapes_raw": (n, 52),
              "face_transform": (n, 4, 4), "pose_raw": (n, 4, 4), "pose": (n, 4, 4), "valid": (n,)}
    assert {k: t[k].shape for k in shapes} == shapes
    assert (t["valid"] == 1).all()
    xy = t["landmarks"][..., :2]
    assert xy.min() > 0 and xy.max() < size
    assert 0 <= t["blendshapes"].min() and t["blendshapes"].max() <= 1
    # Smoothing changes the curves a little, not their shape.
    jaw = ARKIT_NAMES.index("jawOpen")
    assert 0 < np.abs(t["blendshapes"][:, jaw] - t["blendshapes_raw"][:, jaw]).mean() < 0.05
    assert t["blendshapes_raw"][:, jaw].std() > 0.01  # he is talking
    assert np.allclose(t["pose"][:, 3], [0, 0, 0, 1], atol=1e-5)

    for folder in ("frames", "parsing", "facemask", "torso"):
        assert len(list((root / folder).glob("*.png"))) == n, folder
    frame, labels, mask, torso = s.frame(20), s.parsing(20), s.face_mask(20), s.torso(20)
    assert frame.shape == torso.shape == (size, size, 3) and labels.shape == mask.shape == (size, size)
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    shares = {label: (labels == label).mean() for label in (LABEL_HEAD, LABEL_NECK, LABEL_TORSO)}
    assert 0.2 < shares[LABEL_HEAD] < 0.7 and shares[LABEL_NECK] > 0.005 and shares[LABEL_TORSO] > 0.05
    # The paste-back mask is soft, lies on the face (inside the head) and sits around the nose.
    assert 0 < ((mask > 0) & (mask < 1)).sum() and mask.max() == 1.0
    assert (labels[mask > 0.99] == LABEL_HEAD).mean() > 0.95
    nose = t["landmarks"][20, 1, :2].round().astype(int)
    assert mask[nose[1], nose[0]] == 1.0
    # Torso image: the head is gone (differs from the frame there), the rest is the frame.
    head = labels == LABEL_HEAD
    assert np.abs(torso[head].astype(int) - frame[head]).mean() > 10
    assert np.array_equal(torso[labels == LABEL_TORSO], frame[labels == LABEL_TORSO])
    assert s.background().shape == (size, size, 3)
    import soundfile
    info = soundfile.info(str(s.audio_path))
    assert info.samplerate == 16000 and info.channels == 1 and info.duration == pytest.approx(2.0, abs=0.1)
    preview = (root / "preview.png")
    import cv2
    assert cv2.imread(str(preview)).shape[1] >= 1000
    assert not list(root.parent.glob(".lieu.partial*")) and not list(root.glob(".*"))


@pytest.mark.parametrize("name,size", [("lieu.webm", None), ("lieu.mov", 128)])
def test_other_containers_and_codecs(clips, tmp_path, name, size):
    result = preprocess(clips / name, tmp_path / "subject", size=size)
    s = Subject(tmp_path / "subject")
    assert s.n_frames == 30 and s.size == (size or 256) and result["excluded_frames"] == 0
    assert s.frame(0).shape == (s.size, s.size, 3)
    assert s.tracks["landmarks"][..., :2].max() < s.size


def test_lost_face_short_gap_interpolated_long_gap_excluded(clips, tmp_path):
    progress = Progress("quiet")
    preprocess(clips / "gaps.mp4", tmp_path / "s", progress=progress)
    s = Subject(tmp_path / "s")
    valid = s.tracks["valid"]
    assert (valid[15:18] == 2).all() and (valid[30:44] == 0).all()
    assert (valid[:15] == 1).all() and (valid[47:] == 1).all()
    kinds = [(g["kind"], g["start_frame"]) for g in s.meta.gaps]
    assert kinds == [("interpolated", 15), ("excluded", 30)]
    assert set(s.meta.split.excluded) == set(np.flatnonzero(valid == 0))
    assert not set(s.split("train")) & set(s.meta.split.excluded)
    assert any("00:00.6" in w and "interpolated" in w for w in progress.warnings)
    assert any("00:01.2" in w and "excluded" in w for w in progress.warnings)
    # Interpolated landmarks lie between their neighbours.
    lm = s.tracks["landmarks"]
    low, high = np.minimum(lm[14], lm[18]), np.maximum(lm[14], lm[18])
    assert ((lm[16] >= low - 1e-3) & (lm[16] <= high + 1e-3)).all()
    # Poses exist for every frame, the lost ones included.
    assert np.isfinite(s.tracks["pose"]).all()


def test_an_edited_clip_is_split_into_shots(tmp_path):
    """Real footage edited as interviews and vlogs are: 2 s, a dip to white into a zoomed-in shot, then a jump
    cut back. The cuts are found, the transition's frames excluded, and the head pose keeps its jump at the
    cut instead of being smoothed across it."""
    clip = tmp_path / "edited.mp4"
    ffmpeg(*lieu(6.0), "-filter_complex",
           "[0:v]split=3[a][b][c];"
           "[a]trim=0:2,setpts=PTS-STARTPTS,fade=t=out:st=1.84:d=0.16:color=white[a1];"
           "[b]trim=2:4,setpts=PTS-STARTPTS,scale=308:308,crop=256:256:26:26,fade=t=in:st=0:d=0.16:color=white[b1];"
           "[c]trim=4:6,setpts=PTS-STARTPTS[c1];[a1][b1][c1]concat=n=3:v=1:a=0[v]",
           "-map", "[v]", "-map", "0:a", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", clip)
    progress = Progress("quiet")
    preprocess(clip, tmp_path / "s", size=96, progress=progress)
    s = Subject(tmp_path / "s")
    assert len(s.meta.shots) == 3
    assert 50 <= s.meta.shots[1] <= 54 and s.meta.shots[2] == 100
    (transition,) = [g for g in s.meta.gaps if g["kind"] == "transition"]
    assert 45 <= transition["start_frame"] < transition["end_frame"] == s.meta.shots[1]
    fade = np.arange(transition["start_frame"], transition["end_frame"])
    assert (s.tracks["valid"][fade] == 0).all() and set(fade) <= set(s.meta.split.excluded)
    assert list(s.shot_of([0, 60, 120])) == [0, 1, 2]
    assert any("cuts between 3 shots" in w for w in progress.warnings)
    # The jump cut zooms out: the head steps back from one frame to the next, far more than it moves
    # between two frames of one shot.
    position = s.tracks["pose"][:, :3, 3]
    steps = np.linalg.norm(np.diff(position, axis=0), axis=1)
    within = np.delete(steps, [s.meta.shots[1] - 1, s.meta.shots[2] - 1] + list(fade - 1))
    assert steps[s.meta.shots[2] - 1] > 8 * np.median(within)


def test_a_jump_cut_between_takes_in_the_same_framing_is_found_by_the_face(tmp_path):
    """A vlog cut between takes against one wall changes the picture little (speech_coach at 00:34.7 and
    00:35.5: 8.2 and 7.4 grey levels, under CUT_LEVEL), but the head jumps: the face's landmarks tell the cut,
    and the head pose is not smoothed across it."""
    clip = tmp_path / "takes.mp4"
    ffmpeg("-ss", 34.0, "-t", 2.4, "-i", shared_file("corpus", "speech_coach_man_en_46s_satyaDub.mp4"),
           "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", clip)
    from engine.media.video import read_frames
    thumbs = ShotDetector()
    for frame in read_frames(clip, 25.0):
        thumbs.add(frame)
    assert thumbs.shots(25.0).starts == [0]  # the picture alone finds neither cut
    preprocess(clip, tmp_path / "s", size=96, progress=Progress("quiet"))
    s = Subject(tmp_path / "s")
    assert len(s.meta.shots) == 3 and abs(s.meta.shots[1] - 18) <= 1 and abs(s.meta.shots[2] - 38) <= 1
    rotation = s.tracks["pose"][:, :3, :3]
    steps = np.linalg.norm(np.diff(rotation, axis=0), axis=(1, 2))
    cut = s.meta.shots[1] - 1
    within = np.delete(steps, [cut - 1, cut, cut + 1, s.meta.shots[2] - 1])
    assert steps[cut] > 8 * np.median(within)
    # The frame before the cut keeps its own take's pose, not one pulled towards the next take.
    raw = s.tracks["pose_raw"][:, :3, :3]
    assert np.linalg.norm(rotation[cut] - raw[cut]) < np.linalg.norm(rotation[cut] - raw[cut + 1]) / 4


def test_the_held_out_frames_lie_in_a_shot_the_head_trains_on():
    """SyncTalk holds out the clip's last 1/11; when an edited clip's last shot is too short to also train on
    (a second take in another shirt), the held-out stretch ends the latest shot that is long enough, and the
    frames after it train. The shots are speech_coach_man's, as preprocess finds them."""
    starts = [0, 62, 215, 298, 411, 452, 481, 582, 606, 788, 953, 1009, 1075]
    start, end = held_out_stretch(1149, starts, 25.0)
    assert (start, end) == (849, 953) and end - start == 1149 - round(1149 * 10 / 11)
    split = Split((0, 1149), (start, end))
    train = split.frames("train")
    assert not np.isin(train, np.arange(start, end)).any() and len(train) == 1149 - (end - start)
    assert (np.array(starts[-3:]) >= end).all() and np.isin(starts[-3:], train).all()  # the last shots train
    # One shot, or a last shot with a second of its own left to train on: the clip's end, as SyncTalk's.
    assert held_out_stretch(1149, [0], 25.0) == (1045, 1149)
    assert held_out_stretch(150, [0, 52, 100], 25.0) == (136, 150)
    # No shot long enough: the end all the same.
    assert held_out_stretch(300, list(range(0, 300, 30)), 25.0) == (273, 300)
    # A subject written before the held-out stretch could lie inside the training range reads as it did.
    old = Split((0, 45), (45, 50), [3])
    assert list(old.frames("test")) == list(range(45, 50)) and list(old.frames("train")) == [0, 1, 2] + list(range(4, 45))


def test_the_held_out_frames_hold_speech():
    """A clip often ends after its speaker has stopped: this phone clip's last 1/11 (1.2 s) is a closed mouth in
    silence, where lip sync cannot be scored. The held-out stretch moves back to the latest stretch that holds
    speech; a clip whose end is voiced keeps SyncTalk's; shots still bound it."""
    fps = 30.0
    samples = load_audio(shared_file("corpus", "humanomni_zh_speaker_zh_16s_HumanOmni.mp4"))
    n = int(round(len(samples) / SAMPLE_RATE * fps))
    voice = voice_activity(samples, fps, n)
    end = held_out_stretch(n, [0], fps)
    assert end[1] == n and (voice[end[0]:end[1]] >= 0.5).mean() < 0.1
    start, stop = held_out_stretch(n, [0], fps, voice)
    assert stop - start == end[1] - end[0] and stop < n
    assert (voice[start:stop] >= 0.5).mean() >= 0.8
    shares = [(voice[s:s + stop - start] >= 0.5).mean() for s in range(n - (stop - start) + 1)]
    assert max(shares[start + 1:]) < max(shares) - 0.1  # no later stretch is nearly as voiced
    assert held_out_stretch(n, [0], fps, np.ones(n)) == end
    # a cut 10 frames before the voiced stretch ends: each shot still keeps 1 s of its own frames to train on
    cut = stop - 10
    start_cut, stop_cut = held_out_stretch(n, [0, cut], fps, voice)
    assert (voice[start_cut:stop_cut] >= 0.5).mean() >= 0.8
    for a, b in ((0, cut), (cut, n)):
        assert (b - a) - max(0, min(b, stop_cut) - max(a, start_cut)) >= fps
    # no voice anywhere: SyncTalk's end
    assert held_out_stretch(n, [0], fps, np.zeros(n)) == end


@pytest.mark.parametrize("name,missing", [
    ("humanomni_zh_speaker_zh_16s_HumanOmni.mp4", "blink"),   # its most voiced stretch falls between blinks
    ("Donald_Trump_en_10s_MimicTalk.mp4", "motion"),          # his last words trail off: voiced, a still jaw
])
def test_the_held_out_frames_hold_speech_motion_and_a_blink(name, missing):
    """`evaluate` scores lip sync and blinks on the held-out frames. A short clip holds out 0.9-1.4 s, which can
    fall between two blinks (the eyes then score tracking noise) or where the jaw hardly moves (the amplitude
    ratio divides by noise). Given the tracked curves, the held-out stretch moves to a voiced one where the jaw
    moves and a whole blink lies inside, with open lids either side of it. The curves are the ones MediaPipe
    captures from the clip (the real landmarker, smoothed as preprocess does)."""
    from engine.face.landmarker import FaceLandmarker
    from engine.media.video import read_frames
    from engine.preprocess.shots import MIN_MOTION
    clip, fps = shared_file("corpus", name), 25.0
    with FaceLandmarker() as landmarker:
        curves = smooth_blendshapes(np.array([landmarker.analyse(rgb).blendshapes for rgb in read_frames(clip, fps)]))
    n = len(curves)
    voice = voice_activity(load_audio(clip), fps, n)
    blinks = blink_frames(curves[:, list(BLINK_CHANNELS)])
    assert 2 <= len(np.flatnonzero(np.diff(blinks.astype(int)) == 1)) <= 12   # 10-16 s: a blink every 1-5 s
    jaw = curves[:, ARKIT_INDEX["jawOpen"]]

    def scores(stretch):
        start, stop = stretch
        spreads = [jaw[s:s + stop - start].std() for s in range(n - (stop - start) + 1)]
        held = blinks[start:stop]
        return {"voice": (voice[start:stop] >= 0.5).mean() >= 0.5,
                "motion": jaw[start:stop].std() >= MIN_MOTION * np.median(spreads),
                "blink": held.any() and not held[0] and not held[-1]}

    voiced_only = held_out_stretch(n, [0], fps, voice)
    assert scores(voiced_only)["voice"] and not scores(voiced_only)[missing]
    stretch = held_out_stretch(n, [0], fps, voice, curves)
    assert stretch[1] - stretch[0] == voiced_only[1] - voiced_only[0]
    assert all(scores(stretch).values())
    # lids that never close (no blink in the capture) and a jaw that moves alike everywhere ask nothing more
    still = curves.copy()
    still[:, list(BLINK_CHANNELS)] = 0.1
    still[:, ARKIT_INDEX["jawOpen"]] = np.resize([0.1, 0.3], n)
    assert held_out_stretch(n, [0], fps, voice, still) == voiced_only


@pytest.mark.parametrize("name,words", [
    ("silent_track.mp4", "no audio track"),
    ("no_face.mp4", "no face"),
    ("two_people.mp4", "more than one face"),
    ("empty.mp4", "empty"),
    ("notes.mp4", "not a readable video"),
    ("missing.mp4", "not found"),
    ("cut_off.mp4", "the recording was never finished"),
])
def test_bad_clips_are_refused_with_a_clear_message(clips, tmp_path, name, words):
    with pytest.raises(EngineError) as err:
        preprocess(clips / name, tmp_path / "s")
    assert words in err.value.message and name in err.value.message and err.value.hint
    assert not (tmp_path / "s").exists() and not list(tmp_path.glob(".s.partial*"))
    if name == "two_people.mp4":
        assert "00:00.0" in err.value.message  # says when


def test_audio_file_is_not_a_clip(tmp_path):
    with pytest.raises(EngineError) as err:
        preprocess(shared_file("audio", "zh_8s.wav"), tmp_path / "s")
    assert "no video stream" in err.value.message


def test_a_folder_is_not_a_clip(tmp_path):
    shoot = tmp_path / "interview.mov"   # a folder named like a clip (a camera card's export, a bundle)
    shoot.mkdir()
    with pytest.raises(EngineError) as err:
        preprocess(shoot, tmp_path / "s")
    assert "is a folder" in err.value.message and str(shoot) in err.value.message and err.value.hint
    assert not (tmp_path / "s").exists()


def test_a_span_of_the_clip_makes_the_subject_and_its_frames_are_the_clips(tmp_path):
    """An interview whose first 2 s show two people (a strip trimmed past them in the edit): the whole clip is
    refused, the span from 2 s makes a subject whose frame k is the clip's frame 50 + k, sound and picture."""
    from engine.media.video import read_frames
    from engine.portrait.source import SourceFrames
    clip = tmp_path / "interview.mp4"
    ffmpeg(*lieu(4.0), "-filter_complex", "[0:v]split[a][b];[a][b]hstack,"
           "drawbox=x=256:y=0:w=256:h=256:color=gray:t=fill:enable='gte(t,2)'",
           "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", clip)
    with pytest.raises(EngineError) as err:
        preprocess(clip, tmp_path / "whole")
    assert "more than one face" in err.value.message
    with pytest.raises(EngineError) as err:   # a second person in the first of its 2 s, in clip times
        preprocess(clip, tmp_path / "late", start_s=1.0, end_s=3.0)
    assert "at 00:01.0-" in err.value.message
    with pytest.raises(EngineError) as err:
        preprocess(clip, tmp_path / "none", start_s=5.0)
    assert "not inside the clip" in err.value.message and err.value.hint

    result = preprocess(clip, tmp_path / "s", start_s=2.0)
    s = Subject(tmp_path / "s")
    assert result["frames"] == s.n_frames == 50 and s.meta.source.first_frame == 50
    whole = list(read_frames(clip, 25.0))
    for k in (0, 31, 49):
        assert np.array_equal(s.frame(k), s.meta.crop_box.cut(whole[50 + k], s.size))
    with SourceFrames(clip, 25.0, s.meta.source.first_frame, [0, 31]) as source:   # what a render pastes into
        assert np.array_equal(source[0], whole[50]) and np.array_equal(source[31], whole[81])
    sound, spoken = load_audio(s.audio_path), load_audio(clip)[2 * SAMPLE_RATE:]
    assert abs(len(sound) - len(spoken)) <= SAMPLE_RATE // 25
    n = min(len(sound), len(spoken))
    assert np.corrcoef(sound[:n], spoken[:n])[0, 1] > 0.99


def test_a_clip_recorded_without_its_sound_learns_from_the_recorders_file(tmp_path):
    """Double-system sound: the camera's clip has no sound (or a scratch track) and a sound recorder's file,
    started 1.5 s earlier, holds the speech. With --audio and --audio-offset the subject's sound is the
    recording's under the clip's frames; a recording that does not cover the clip is refused."""
    camera, recorder = tmp_path / "camera.mp4", tmp_path / "recorder.wav"
    ffmpeg("-ss", "6", *lieu(3.0), "-an", "-c:v", "libx264", "-preset", "ultrafast", camera)
    ffmpeg("-ss", "4.5", *lieu(6.0), "-vn", "-ar", "48000", recorder)   # from 1.5 s before the camera's first frame
    with pytest.raises(EngineError) as err:
        preprocess(camera, tmp_path / "no_sound")
    assert "has no audio track" in err.value.message and "--audio" in err.value.hint
    with pytest.raises(EngineError) as err:                             # a recording that ends 1.5 s too soon
        preprocess(camera, tmp_path / "late", audio=recorder, audio_offset=4.5)
    assert "covers 0.00-1.50 s of the clip camera.mp4, which plays 0.00-3.00 s" in err.value.message
    assert not (tmp_path / "late").exists()
    preprocess(camera, tmp_path / "s", audio=recorder, audio_offset=1.5, start_s=1.0)
    source = Subject(tmp_path / "s").meta.source                          # subject.json says where it came from
    assert source.audio == str(recorder.resolve()) and source.audio_offset == 1.5
    meta = json.loads((tmp_path / "s" / "subject.json").read_text())
    assert SubjectMeta.from_dict(meta, tmp_path / "s" / "subject.json").to_dict() == meta
    sound, spoken = load_audio(Subject(tmp_path / "s").audio_path), load_audio(shared_file("video", "lieu_60s.mp4"))
    spoken = spoken[7 * SAMPLE_RATE:9 * SAMPLE_RATE]                  # the clip's 1-3 s: lieu's 7-9 s
    assert abs(len(sound) - len(spoken)) <= SAMPLE_RATE // 25
    n = min(len(sound), len(spoken))
    assert np.corrcoef(sound[:n], spoken[:n])[0, 1] > 0.99


def test_an_interview_learns_the_persons_voice_from_their_channel_of_a_sound_out_of_step(tmp_path):
    """An interview: the person's microphone on the right of the clip's stereo track, the interviewer's on the
    left (each hearing the other 15 dB down), and the track 0.5 s late on the picture. With --channel right and
    --audio-offset 0.5 (the own track's second at the first frame) the subject's sound is the person's voice
    under their frames; subject.json keeps both."""
    import soundfile
    voice = load_audio(shared_file("video", "lieu_60s.mp4"))[int(5.5 * SAMPLE_RATE):int(9.5 * SAMPLE_RATE)]
    question = np.resize(load_audio(shared_file("audio", "zh_8s.wav")), len(voice)) * (np.arange(len(voice)) < SAMPLE_RATE)
    track, clip = tmp_path / "track.wav", tmp_path / "interview.mp4"
    bleed = 10 ** (-15 / 20)
    soundfile.write(str(track), np.stack([question + bleed * voice, voice + bleed * question], 1), SAMPLE_RATE)
    ffmpeg("-ss", "6", *lieu(3.0), "-i", track, "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset",
           "ultrafast", "-c:a", "aac", "-b:a", "192k", clip)
    with pytest.raises(EngineError, match="--start, --end"):   # moved 1.5 s, the own track leaves the end silent
        preprocess(clip, tmp_path / "far", channel="right", audio_offset=1.5)
    preprocess(clip, tmp_path / "s", channel="right", audio_offset=0.5)
    source = Subject(tmp_path / "s").meta.source
    assert (source.audio, source.audio_offset, source.audio_channel) == (None, 0.5, "right")
    meta = json.loads((tmp_path / "s" / "subject.json").read_text())
    assert SubjectMeta.from_dict(meta, tmp_path / "s" / "subject.json").to_dict() == meta
    sound = load_audio(Subject(tmp_path / "s").audio_path)
    spoken = voice[SAMPLE_RATE // 2:]                                  # lieu's 6-9.5 s, from the first frame on
    n = 3 * SAMPLE_RATE                                                # under the frames
    assert len(sound) >= n and np.corrcoef(sound[:n], spoken[:n])[0, 1] > 0.95
    mono = tmp_path / "mono.mp4"
    ffmpeg("-i", clip, "-c:v", "copy", "-ac", "1", mono)
    with pytest.raises(EngineError, match="has one channel"):
        preprocess(mono, tmp_path / "m", channel="right")
    assert not (tmp_path / "m").exists()


def test_a_recording_with_the_microphone_on_its_second_track_learns_from_that_track(tmp_path):
    """A screen or camera recording with two audio tracks: the first a mix (the voice under loud music), the
    second the microphone alone. With --audio-track 2 the subject's sound is the voice alone; subject.json keeps
    the track."""
    voice = load_audio(shared_file("video", "lieu_60s.mp4"))[6 * SAMPLE_RATE:9 * SAMPLE_RATE]
    t = np.arange(len(voice)) / SAMPLE_RATE
    music = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 2 * t))   # louder than the voice
    mix, mic, clip = tmp_path / "mix.wav", tmp_path / "mic.wav", tmp_path / "recording.mkv"
    write_wav(mix, (voice + music).astype(np.float32))
    write_wav(mic, voice)
    ffmpeg("-ss", "6", *lieu(3.0), "-i", mix, "-i", mic, "-map", "0:v", "-map", "1:a", "-map", "2:a",
           "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "flac", clip)
    preprocess(clip, tmp_path / "s", audio_track=2, size=64)
    source = Subject(tmp_path / "s").meta.source
    assert (source.audio, source.audio_track) == (None, 2)
    written = json.loads((tmp_path / "s" / "subject.json").read_text())
    assert written["source"]["audio_track"] == 2
    assert SubjectMeta.from_dict(written, tmp_path / "s" / "subject.json").to_dict() == written
    sound = load_audio(Subject(tmp_path / "s").audio_path)
    n = min(len(sound), len(voice))
    assert np.corrcoef(sound[:n], voice[:n])[0, 1] > 0.99
    with pytest.raises(EngineError, match="has 2 audio tracks, so no track 3"):
        preprocess(clip, tmp_path / "t", audio_track=3)
    assert not (tmp_path / "t").exists()


def test_a_file_holding_two_pictures_learns_from_the_stream_asked_for(tmp_path):
    """A file with two video streams (a two-lens camera's, or a program with a second angle): the person is on
    the second, which starts 0.4 s after the first (as it does where the angle was cut in). By default the first
    is read and has no face; with video_stream=1 (Blender's Stream Index) the subject is made from the second, its
    sound lined up with the second's first frame, subject.json keeps it, and a render's full frames come from it
    too."""
    from engine.media.video import open_clip, read_frames
    from engine.portrait.source import SourceFrames
    first, second, clip = tmp_path / "first.mp4", tmp_path / "second.mp4", tmp_path / "two angles.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=2", "-c:v", "libx264", "-preset", "ultrafast",
           first)
    ffmpeg("-ss", "6", *lieu(2.0), "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", second)
    ffmpeg("-i", first, "-itsoffset", "0.4", "-i", second, "-map", "0:v", "-map", "1:v", "-map", "1:a", "-c", "copy",
           clip)
    assert (open_clip(clip).width, open_clip(clip, 1).width, open_clip(clip, 1).video_stream) == (320, 256, 1)
    with pytest.raises(EngineError, match="has no video stream 2 \\(it holds 2, numbered from 0\\)"):
        preprocess(clip, tmp_path / "none", video_stream=2)
    with pytest.raises(EngineError, match="no face"):
        preprocess(clip, tmp_path / "first", size=64)
    preprocess(clip, tmp_path / "s", size=64, video_stream=1)
    s = Subject(tmp_path / "s")
    assert (s.meta.source.video_stream, s.meta.source.width) == (1, 256)
    written = json.loads((tmp_path / "s" / "subject.json").read_text())
    assert written["source"]["video_stream"] == 1
    assert SubjectMeta.from_dict(written, tmp_path / "s" / "subject.json").to_dict() == written
    sound, truth = load_audio(s.audio_path), load_audio(second)
    n = min(len(sound), len(truth))
    assert np.corrcoef(sound[:n], truth[:n])[0, 1] > 0.99   # not 0.4 s late (lined up with the first picture)
    second = list(read_frames(clip, 25.0, open_clip(clip, 1)))
    assert np.array_equal(s.frame(20), s.meta.crop_box.cut(second[20], s.size))
    with SourceFrames(clip, 25.0, 0, [3, 40], video_stream=1) as source:   # what a render pastes into
        assert np.array_equal(source[3], second[3]) and np.array_equal(source[40], second[40])


def test_a_clip_of_a_second_makes_a_subject(tmp_path):
    """1.2 s of a clip (or 5 s read at 5 frames/s): few keypoints stay tracked long enough, and the stabilizer's
    bundle adjustment indexed its anchors' observations past its keypoints (an IndexError)."""
    clip = shared_file("video", "may_5s.mp4")
    assert preprocess(clip, tmp_path / "short", size=64, end_s=1.2)["frames"] == 30
    assert preprocess(clip, tmp_path / "slow", size=64, fps=5.0)["frames"] == 25


def test_command_line_reports_error_as_json(clips, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "engine", "preprocess", str(clips / "silent_track.mp4"),
                           "-o", str(tmp_path / "s"), "--progress", "jsonl"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert events[-1]["event"] == "error" and "no audio track" in events[-1]["message"]
    assert events[-1]["path"].endswith("silent_track.mp4")


class InterruptAt(Progress):
    """A run cancelled part-way: the user pressing Esc in Blender (SIGTERM -> KeyboardInterrupt)."""

    def __init__(self, stage: str, frame: int):
        super().__init__("quiet")
        self.target, self.frame = stage, frame

    def stage(self, name, total=None):
        stage = super().stage(name, total)
        if name == self.target:
            advance = stage.advance

            def interrupting(n=1, **metrics):
                advance(n, **metrics)
                if stage.done >= self.frame:
                    raise KeyboardInterrupt
            stage.advance = interrupting
        return stage


def test_interrupted_rerun_leaves_the_previous_subject_whole(subject, clips, tmp_path):
    root = tmp_path / "lieu"
    shutil.copytree(subject[0], root)
    before = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with pytest.raises(KeyboardInterrupt):
        preprocess(clips / "lieu.mov", root, size=128, progress=InterruptAt("analyse frames", 10))
    after = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lieu"]  # no partial folder left behind


def test_output_folder_that_is_not_a_subject_is_not_replaced(clips, tmp_path):
    out = tmp_path / "my_documents"
    out.mkdir()
    (out / "thesis.txt").write_text("precious")
    with pytest.raises(EngineError) as err:
        preprocess(clips / "lieu.mkv", out)
    assert "not a subject folder" in err.value.message
    assert (out / "thesis.txt").read_text() == "precious" and sorted(p.name for p in tmp_path.iterdir()) == ["my_documents"]


def test_crop_box_found_in_a_wide_real_frame(clips):
    from engine.media.video import open_clip
    from engine.preprocess.pipeline import locate_face
    from engine.preprocess.pipeline import Footage
    info = open_clip(clips / "wide.mp4")
    located = locate_face(Footage(clips / "wide.mp4", info, 25.0), None, Progress("quiet"))
    assert located.frames == 25 and located.found.all()
    faces = located.face_boxes
    assert faces[:, 0].min() > 300 and faces[:, 2].max() < 556  # the face is where the pad put it
    box, fits = choose_crop_box(faces, info.width, info.height)
    assert fits and 0 <= box.y and box.y1 <= 360 and 0 <= box.x and box.x1 <= 640
    assert box.width > 1.8 * np.median(faces[:, 3] - faces[:, 1])  # head and shoulders, not just the face


def test_crop_box_stays_inside_a_wide_frame_and_holds_the_face():
    # A face about 200 px tall moving around x = 1700 in a 1920x1080 frame, near the top.
    rng = np.random.default_rng(0)
    x0 = 1600 + rng.normal(0, 10, 300)
    y0 = 60 + rng.normal(0, 5, 300)
    boxes = np.stack([x0, y0, x0 + 170, y0 + 200], axis=1)
    box, fits = choose_crop_box(boxes, 1920, 1080)
    assert fits and box.x1 <= 1920 and box.y >= 0 and 400 < box.width == box.height < 700
    # A head that fills a small frame: the whole frame, not a padded box.
    box, _ = choose_crop_box(np.array([[40.0, 30, 220, 240]]), 256, 256)
    assert box == CropBox(0, 0, 256, 256)


def test_blendshape_smoothing_is_savitzky_golay_5_3():
    from scipy.signal import savgol_filter
    raw = np.random.default_rng(1).uniform(0.2, 0.8, (30, 52)).astype(np.float32)
    assert np.allclose(smooth_blendshapes(raw), savgol_filter(raw, 5, 3, axis=0), atol=1e-5)


def _capture(clip: Path, fps: float = 25.0):
    """What preprocess's analysis gives for a clip already framed on the face: landmarks, blendshapes, transforms."""
    from engine.face.landmarker import FaceLandmarker
    from engine.media.video import read_frames
    with FaceLandmarker() as landmarker:
        seen = [landmarker.analyse(rgb) for rgb in read_frames(clip, fps)]
    return (np.array([o.landmarks for o in seen]), np.array([o.blendshapes for o in seen]),
            np.array([o.transform for o in seen]), np.array([o.faces > 0 for o in seen]))


def test_the_lip_gap_floors_a_jaw_the_blendshapes_lose():
    """MediaPipe's blendshapes read this man's jaw (tinted glasses, 224 px) as nearly shut once he turns 20-25
    degrees from the camera, while the landmarks see his lips part as before: his subject learnt a shut mouth.
    With the lip gap as jawOpen's floor, his turned frames' jaw per lip gap comes back near his frontal frames';
    a man whose jaw reads well throughout keeps his jaw as it was, give or take the tracking's noise."""
    from engine.preprocess.jaw import JAW, facing_camera, floor_jaw, lip_gap

    def jaw_per_gap(jaw, gap, frames):
        frames = frames & (gap >= np.quantile(gap, 0.5))
        return np.median(jaw[frames] / gap[frames])

    landmarks, blendshapes, transforms, seen = _capture(shared_file("corpus", "vox_741400163_en_14s_PCAVS.mp4"))
    gap, facing = lip_gap(landmarks), facing_camera(transforms)
    frontal, turned = seen & (facing >= np.quantile(facing, 0.75)), seen & (facing < np.quantile(facing, 0.5))
    raw = blendshapes[:, JAW]
    assert jaw_per_gap(raw, gap, turned) < 0.25 * jaw_per_gap(raw, gap, frontal)
    floored = floor_jaw(blendshapes, landmarks, transforms, seen)
    assert jaw_per_gap(floored[:, JAW], gap, turned) > 0.7 * jaw_per_gap(floored[:, JAW], gap, frontal)
    assert np.array_equal(np.delete(floored, JAW, 1), np.delete(blendshapes, JAW, 1))
    assert (floored[:, JAW] >= raw).all() and floored.max() <= 1
    assert floored[turned, JAW].std() > 2 * raw[turned].std()   # the turned frames' jaw moves again
    # two seconds are too few frames to say what his jaw reads per gap: the blendshapes stay as MediaPipe gave them
    assert np.array_equal(floor_jaw(blendshapes[:50], landmarks[:50], transforms[:50], seen[:50]), blendshapes[:50])

    landmarks, blendshapes, transforms, seen = _capture(shared_file("corpus", "Donald_Trump_en_10s_MimicTalk.mp4"))
    raw, floored = blendshapes[:, JAW], floor_jaw(blendshapes, landmarks, transforms, seen)[:, JAW]
    assert np.corrcoef(raw, floored)[0, 1] > 0.95
    assert np.abs(floored - raw).mean() < 0.2 * raw.std()


def test_each_frame_is_read_on_its_own_so_the_jaw_does_not_trail_the_picture():
    """MediaPipe's VIDEO mode tracks a face from the previous frame once it holds as many faces as it was
    asked for, and a tracked jaw trails the picture (one face asked: jawOpen r with the per-frame reading 0.83
    at lag 0, 0.78 a frame later, 0.54 a frame earlier on lieu_60s). Asked for two, with one person in the
    picture it detects anew in every frame: each frame's curves are what that frame alone gives."""
    from engine.face.landmarker import FaceLandmarker
    from engine.media.video import read_frames
    frames = [rgb for _, rgb in zip(range(12), read_frames(shared_file("video", "lieu_60s.mp4"), 25.0))]
    with FaceLandmarker() as landmarker:
        in_sequence = [landmarker.analyse(rgb).blendshapes for rgb in frames]
    for rgb, seen in zip(frames, in_sequence):
        with FaceLandmarker() as fresh:   # nothing before this frame to track from
            alone = fresh.analyse(rgb).blendshapes
        assert np.allclose(seen, alone, atol=1e-5)
