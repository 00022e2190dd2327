"""The demo's parts: the built-in talking photograph and speech, and the Blender half that writes
the .blend (run as the demo runs it, a child process with the bpy module). The whole chain is
timed by scripts/bench_blender.py --demo (it trains and renders, too long for the suite)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_file
from engine.arkit import ARKIT_INDEX
from engine.curves import Curves
from engine.demo import FPS, RATE, make_default_input, synth_speech
from engine.face.landmarker import FaceLandmarker
from engine.media.video import read_frames
from engine.progress import Progress

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def test_speech_like_audio_has_syllables_and_pauses():
    audio, opening = synth_speech(6.0, seed=3)
    assert audio.dtype == np.float32 and len(audio) == 6 * RATE and np.abs(audio).max() <= 0.5 + 1e-6
    assert len(opening) == 6 * FPS
    hop = RATE // int(FPS)
    energy = np.array([np.sqrt(np.mean(audio[i * hop:(i + 1) * hop] ** 2)) for i in range(len(opening))])
    assert (opening == 0).sum() > 10 and (opening > 0.3).sum() > 20          # pauses and open vowels
    assert np.corrcoef(energy, opening)[0, 1] > 0.6                           # the mouth follows the sound


@pytest.fixture(scope="module")
def default_input(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    clip, speech = make_default_input(folder, 3.0, 2.0, Progress("quiet"))
    return folder, clip, speech


def test_built_in_clip_is_a_face_mediapipe_tracks_with_a_moving_jaw(default_input):
    folder, clip, speech = default_input
    frames = list(read_frames(clip, FPS))
    assert len(frames) == 75 and frames[0].shape == (512, 512, 3)
    _, opening = synth_speech(3.0, seed=1)             # the clip's own speech
    jaw, weights = [], []
    with FaceLandmarker() as landmarker:
        for frame in frames:
            face = landmarker.analyse(frame)
            assert face.faces == 1
            weights.append(face.blendshapes)
            jaw.append(face.blendshapes[ARKIT_INDEX["jawOpen"]])
    assert np.corrcoef(jaw, opening[:len(jaw)])[0, 1] > 0.5
    Curves(FPS, np.array(weights)).save(folder / "measured.stcurves")   # real curves for the next test


def test_blender_half_writes_aligned_strips_and_a_keyed_rig(default_input):
    folder, clip, speech = default_input
    render = shared_file("video", "may_5s.mp4")       # stands in for the rendered video
    blend = folder / "demo.blend"
    out = subprocess.run([sys.executable, "-m", "synctalk_blender.demo_scene", "--audio", str(speech),
                          "--render", str(render), "--curves", str(folder / "measured.stcurves"),
                          "--subject", str(folder), "-o", str(blend)], cwd=ROOT, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["curves"] == 52 and result["keyed_frames"] == 75
    check = """
import bpy, json, sys
bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
scene = bpy.context.scene
editor = scene.sequence_editor
strips = {s.type: s for s in (editor.strips if hasattr(editor, "strips") else editor.sequences)}
key = bpy.data.objects["Face"].data.shape_keys
print(json.dumps({"sound": [strips["SOUND"].frame_final_start, strips["SOUND"].frame_final_end, strips["SOUND"].channel],
                  "movie": [strips["MOVIE"].frame_final_start, strips["MOVIE"].frame_final_end, strips["MOVIE"].channel],
                  "action": key.animation_data.action.name, "shapes": len(key.key_blocks)}))
"""
    opened = subprocess.run([sys.executable, "-c", check, str(blend)], capture_output=True, text=True, timeout=120)
    assert opened.returncode == 0, opened.stderr[-2000:]
    scene = json.loads(opened.stdout.strip().splitlines()[-1])
    assert scene["sound"][:2] == scene["movie"][:2] == [1, 51]           # 2 s at 25 fps, aligned
    assert scene["movie"][2] == scene["sound"][2] + 1
    assert scene["action"] == "speech take 1" and scene["shapes"] == 53   # the first take of the line


def test_demo_step_failure_is_one_error_with_the_engines_hint(tmp_path):
    """The demo (demo.py at the root) runs each step as an engine job; a step that fails ends the demo
    with that step's message and hint, as one error event in jsonl mode."""
    from engine.jobs import child_environment, decode
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("not a video")
    proc = subprocess.run([sys.executable, "demo.py", "--clip", str(not_a_video), "-o", str(tmp_path / "out"),
                           "--progress", "jsonl"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=child_environment())
    assert proc.returncode == 2, proc.stderr[-2000:]
    found = [decode(line) for line in proc.stdout.splitlines()]
    assert None not in found and [e["event"] for e in found] == ["info", "error"], proc.stdout
    assert found[0]["message"] == "demo: preprocess"
    error = found[1]
    assert error["message"].startswith("demo step 'preprocess' failed: ") and str(not_a_video) in error["message"]
    assert error["hint"] and "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "subject").exists()
