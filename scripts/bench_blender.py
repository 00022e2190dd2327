"""Figures for the Blender side: `python scripts/bench_blender.py [--subject S] [--build] [--demo]`.

- Audio to Rig on 60 s of real speech: wall time from the operator call to keys on the rig
  (engine `animate` in a child process + reading the curves + bulk keyframe write), at 25 fps.
- The keyframe write alone: 52 curves x 1,500 keys (median of 5), and a new take over the last one
  (the copy, the hand-edit check and the fingerprints a re-run adds).
- The longest the main thread is blocked by one poll of a running job (the modal timer's work),
  measured over the whole Audio to Rig job.
- With --build: builds the three platform zips (downloads the wheels) and prints their sizes;
  without it, prints the sizes of the zips already in dist/.
- With --demo: the time of `python demo.py` into a fresh folder.
Timings are wall clock on whatever machine runs it; say how loaded it was when you quote them.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEECH = ROOT.parent / "shared" / "data" / "audio" / "en_60s.wav"


def bench_audio_to_rig(subject: str | None) -> None:
    import bpy
    import numpy as np

    import synctalk_blender
    from engine.arkit import ARKIT_NAMES
    from synctalk_blender import sequencer
    from synctalk_blender.demo_scene import arkit_head
    from synctalk_blender.jobs import Job
    from engine.curves import Curves
    from synctalk_blender.keyframes import Channel, fcurves_of, write_channels
    from synctalk_blender.mapping import map_names
    from synctalk_blender.rig import key_take

    bpy.ops.wm.read_factory_settings(use_empty=True)
    synctalk_blender.register()
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 25, 1.0
    strip = sequencer.add_sound(scene, SPEECH, frame_start=1, channel=1)
    strip.select = True
    scene.sequence_editor.active_strip = strip
    face = arkit_head("Face", ARKIT_NAMES)
    if subject:
        scene.synctalk.subject = subject
    else:
        scene.synctalk.generic = True
    started = time.perf_counter()
    result = bpy.ops.synctalk.audio_to_rig()
    click_to_keys = time.perf_counter() - started
    keys = len(fcurves_of(face.data.shape_keys)[0].keyframe_points)
    print(f"Audio to Rig, 60 s of speech ({'subject' if subject else 'generic model'}): {click_to_keys:.2f} s "
          f"click to keys ({result}, {keys} keys a curve)")

    rng = np.random.default_rng(0)
    channels = [Channel(f'key_blocks["{n}"].value', 0, rng.random(1500, dtype=np.float32)) for n in ARKIT_NAMES]
    times = []
    for i in range(5):
        started = time.perf_counter()
        write_channels(face.data.shape_keys, channels, 1, 1.0, f"bench{i}", replace=True)
        times.append(time.perf_counter() - started)
    print(f"keyframe write, 52 x 1,500 keys: {statistics.median(times) * 1000:.1f} ms median of 5 "
          f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f})")

    # What a re-run costs on top: a new take copied from the playing one, its hand-edit check and fingerprints.
    curves = Curves(25.0, rng.random((1500, 52), dtype=np.float32))
    mapping = map_names(ARKIT_NAMES, ARKIT_NAMES)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        key_take(scene, [(face, mapping)], curves, 1, 25.0, "bench line")
        times.append(time.perf_counter() - started)
    print(f"new take over the last one, 52 x 1,500 keys: {statistics.median(times) * 1000:.1f} ms median of 5 "
          f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f})")

    # The modal timer's work during a job: one poll per tick, over the same 60 s animate job.
    out = Path(tempfile.mkdtemp()) / "c.stcurves"
    who = ["--subject", subject] if subject else ["--generic"]
    job = Job("bench", [["animate", str(SPEECH), *who, "-o", str(out), "--fps", "25"]]).start()
    polls = []
    while not job.state.finished:
        started = time.perf_counter()
        job.poll()
        polls.append(time.perf_counter() - started)
        time.sleep(0.1)   # the modal timer's interval
    print(f"main thread per poll during a job: max {max(polls) * 1000:.2f} ms, median "
          f"{statistics.median(polls) * 1000:.3f} ms over {len(polls)} polls")
    result = job.state.result or {}
    print(f"  (that animate job: {len(polls) * 0.1:.1f} s wall; the engine reports model load "
          f"{result.get('load_s')} s, animation {result.get('animate_s')} s)")
    synctalk_blender.unregister()


def zip_sizes(build: bool) -> None:
    if build:
        subprocess.run([sys.executable, str(ROOT / "build.py")], check=True, cwd=ROOT)
    zips = sorted((ROOT / "dist").glob("synctalk-*.zip"))
    if not zips:
        print("no zips in dist/: run with --build (downloads the wheels)")
    for z in zips:
        print(f"{z.name}: {z.stat().st_size / 1e6:.1f} MB")


def demo_time() -> None:
    out = Path(tempfile.mkdtemp(prefix="synctalk-demo-"))
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "demo.py"), "-o", str(out)], check=True, cwd=ROOT)
    print(f"demo: {time.perf_counter() - started:.0f} s into {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subject", help="a trained subject for Audio to Rig (default: the generic model)")
    parser.add_argument("--build", action="store_true", help="build the three zips first (downloads wheels)")
    parser.add_argument("--demo", action="store_true", help="also time the demo command")
    args = parser.parse_args()
    bench_audio_to_rig(args.subject)
    zip_sizes(args.build)
    if args.demo:
        demo_time()
    return 0


if __name__ == "__main__":
    sys.exit(main())
