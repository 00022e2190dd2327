"""Figures of issue 2 (preprocessing), measured on this machine:

  1. face-analysis throughput (FaceLandmarker + person mask + parsing + paste-back mask per crop)
  2. wall time of the whole preprocess of lieu_60s, with the time of each stage
  3. head-pose jitter, raw MediaPipe against the stabilised track, and the keypoint reprojection RMSE
  4. every clip in ../shared/data/video preprocessed, with its warnings and the preview to look at
With --plate CLIP, only this: CLIP's frames written as a PNG and as an OpenEXR image sequence, and each one's
working copy (media/sequence.py): time, size, and fidelity against the PNG frames; then its frames as a
log-encoded (Cineon) DPX plate, which the engine reads as stored, and how well the face tracker reads that
plate's working copy against the clip's own frames.

Usage: .venv/bin/python scripts/bench_preprocess.py [--out DIR] [--frames 300] [--only-lieu] [--plate CLIP]
Timings on a shared machine are inflated by other work: the script prints the load average.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
os.environ.setdefault("SYNCTALK_MODELS", str(SHARED / "models"))

from engine.errors import EngineError  # noqa: E402
from engine.progress import Progress  # noqa: E402


class StageTimer(Progress):
    """Quiet progress that remembers when each stage started."""

    def __init__(self):
        super().__init__("quiet")
        self.starts: list[tuple[str, float]] = []

    def stage(self, name, total=None):
        self.starts.append((name, time.perf_counter()))
        return super().stage(name, total)

    def durations(self, end: float) -> dict[str, float]:
        times = [t for _, t in self.starts] + [end]
        out: dict[str, float] = {}
        for (name, start), stop in zip(self.starts, times[1:]):
            out[name] = out.get(name, 0.0) + stop - start
        return out


def analysis_throughput(clip: Path, frames: int) -> tuple[float, float, int]:
    """frames/s of the per-crop analysis, and of the FaceLandmarker alone, on decoded frames."""
    import numpy as np
    from engine.face.landmarker import FaceLandmarker, PersonSegmenter
    from engine.face.parsing import face_mask, parse
    from engine.media.video import read_frames
    crops = [f.copy() for _, f in zip(range(frames), read_frames(clip, 25))]
    with FaceLandmarker() as landmarker, PersonSegmenter() as segmenter:
        landmarker.analyse(crops[0], 0)  # first call initialises the graph
        start = time.perf_counter()
        for i, crop in enumerate(crops, 1):
            observation = landmarker.analyse(crop, i * 40)
            labels = parse(crop, observation.landmarks, segmenter.person_mask(crop))
            face_mask(observation.landmarks, labels.shape)
        full = len(crops) / (time.perf_counter() - start)
    with FaceLandmarker() as landmarker:
        landmarker.analyse(crops[0], 0)
        start = time.perf_counter()
        for i, crop in enumerate(crops, 1):
            landmarker.analyse(crop, i * 40)
        alone = len(crops) / (time.perf_counter() - start)
    return full, alone, int(np.asarray(crops[0]).shape[0])


def run_preprocess(clip: Path, out: Path):
    from engine.preprocess import preprocess
    timer = StageTimer()
    start = time.perf_counter()
    result = preprocess(clip, out, progress=timer)
    end = time.perf_counter()
    return result, end - start, timer.durations(end), timer.warnings


def plate_working_copy(clip: Path, scratch: Path) -> None:
    """A plate's working copy from PNG and from OpenEXR frames (the EXR holding the PNG's values as floats)."""
    import subprocess

    import cv2
    import numpy as np
    from engine.media.ffmpeg import ffmpeg_exe, probe
    from engine.media.sequence import encode_working_copy, find_image_sequence
    from engine.media.video import read_frames
    fps = probe(clip).fps
    for kind, codec in (("png", []), ("exr", ["-pix_fmt", "gbrpf32le", "-c:v", "exr"])):
        (scratch / kind).mkdir()
        subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-i", str(clip), *codec,
                        str(scratch / kind / f"plate.%04d.{kind}")], check=True)
        sequence = find_image_sequence(scratch / kind)
        frames_bytes = sum(p.stat().st_size for p in (scratch / kind).iterdir())
        start = time.perf_counter()
        copy = encode_working_copy(sequence, fps, scratch / f"{kind}.mp4", Progress("quiet"))
        wall = time.perf_counter() - start
        print(f"   {kind}: {sequence.count} frames ({frames_bytes / 1e6:.0f} MB) -> working copy "
              f"{copy.stat().st_size / 1e6:.1f} MB in {wall:.1f} s ({sequence.count / wall:.1f} frames/s)")
    psnr = []
    for k, frame in enumerate(read_frames(scratch / "png.mp4", fps)):
        if k % 40 == 0:
            truth = cv2.imread(str(scratch / "png" / f"plate.{k + 1:04d}.png"))[..., ::-1].astype(float)
            psnr.append(10 * np.log10(255 ** 2 / np.mean((frame - truth) ** 2)))
    print(f"   PNG working copy against its frames (every 40th): {min(psnr):.1f}-{max(psnr):.1f} dB")
    log_plate_face(clip, fps, scratch)


CINEON_BLACK = 10 ** ((95 - 685) * 0.002 / 0.6)   # Kodak Cineon: code 685 at white, 95 at black, 0.002 density a code


def log_plate_face(clip: Path, fps: float, scratch: Path) -> None:
    """The clip as a Cineon log DPX plate (its sRGB picture's light through the Cineon curve, 10 bits), read as
    stored: MediaPipe's blendshapes on that plate's working copy and on the PNG plate's, against the clip's."""
    import subprocess

    import numpy as np
    from engine.arkit import ARKIT_NAMES
    from engine.face.landmarker import FaceLandmarker
    from engine.media.ffmpeg import ffmpeg_exe, probe
    from engine.media.sequence import encode_working_copy, find_image_sequence
    from engine.media.video import read_frames
    (scratch / "dpx").mkdir()
    info = probe(clip)   # the size its frames are read at
    writer = subprocess.Popen([ffmpeg_exe(), "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb48le", "-s",
                               f"{info.width}x{info.height}", "-i", "-", "-c:v", "dpx", "-pix_fmt", "gbrp10le",
                               str(scratch / "dpx" / "plate.%04d.dpx")], stdin=subprocess.PIPE)
    for frame in read_frames(clip, fps):   # one frame in memory at a time
        v = frame / 255.0
        linear = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
        code = (685 + 300 * np.log10(linear * (1 - CINEON_BLACK) + CINEON_BLACK)) / 1023
        writer.stdin.write(np.round(code * 65535).astype("<u2").tobytes())
    writer.stdin.close()
    if writer.wait() != 0:
        raise SystemExit("ffmpeg could not write the DPX plate")
    copy = encode_working_copy(find_image_sequence(scratch / "dpx"), fps, scratch / "dpx.mp4", Progress("quiet"))

    def reading(path: Path) -> np.ndarray:
        with FaceLandmarker() as landmarker:
            return np.array([o.blendshapes if (o := landmarker.analyse(f)).faces else np.full(52, np.nan)
                             for f in read_frames(path, fps)])
    truth = reading(clip)
    moving = [i for i, name in enumerate(ARKIT_NAMES) if name.startswith("mouth") and np.nanstd(truth[:, i]) > 0.02]
    jaw, blink = ARKIT_NAMES.index("jawOpen"), ARKIT_NAMES.index("eyeBlinkLeft")
    for name, path in (("PNG plate", scratch / "png.mp4"), ("Cineon log DPX plate", copy)):
        seen = reading(path)
        n = min(len(seen), len(truth))
        ok = ~np.isnan(seen[:n, 0]) & ~np.isnan(truth[:n, 0])
        r = [np.corrcoef(seen[:n][ok, i], truth[:n][ok, i])[0, 1] for i in (jaw, blink, *moving)]
        print(f"   {name}'s working copy, MediaPipe against the clip's frames: face in {ok.sum()} of {n} frames, "
              f"jawOpen r {r[0]:.3f}, eyeBlinkLeft r {r[1]:.3f}, the {len(moving)} moving mouth curves' mean r "
              f"{np.mean(r[2:]):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="keep the subjects here (default: a temp folder)")
    parser.add_argument("--frames", type=int, default=300, help="frames for the throughput figure")
    parser.add_argument("--only-lieu", action="store_true", help="skip the other clips")
    parser.add_argument("--plate", type=Path, default=None, metavar="CLIP",
                        help="only the working copy of CLIP's frames as an image sequence")
    args = parser.parse_args()
    videos = SHARED / "data" / "video"
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f} (shared machine)")
    if args.plate:
        print(f"\nan image-sequence plate's working copy: {args.plate.name}'s frames")
        with tempfile.TemporaryDirectory() as scratch:
            plate_working_copy(args.plate, Path(scratch))
        print(f"load average at end: {os.getloadavg()[0]:.2f}")
        return

    print("\n1. face-analysis throughput (landmarks + person mask + parsing + face mask per crop)")
    for name in ("lieu_60s.mp4", "may_5s.mp4"):
        full, alone, size = analysis_throughput(videos / name, args.frames)
        print(f"   {name} ({size}x{size}): {full:.1f} frames/s full analysis, "
              f"{alone:.1f} frames/s FaceLandmarker alone (target >= 30)")

    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        print("\n2. whole preprocess of lieu_60s.mp4")
        result, wall, stages, _ = run_preprocess(videos / "lieu_60s.mp4", out / "lieu")
        print(f"   wall time {wall:.1f} s for {result['frames']} frames (target <= 180 s); "
              f"{result['frames'] / wall:.1f} frames/s overall")
        for name, seconds in stages.items():
            print(f"     {name:18s} {seconds:6.1f} s")

        print("\n3. head-pose jitter on lieu_60s (mean |second difference|: rotation degrees, translation dm)")
        raw, stabilised = result["jitter_raw"], result["jitter_stabilised"]
        for key in ("rotation_deg", "translation"):
            print(f"   {key:13s} raw {raw[key]:.4f}  stabilised {stabilised[key]:.4f}  "
                  f"ratio {stabilised[key] / raw[key]:.2f} (target <= 0.5)")
        print(f"   keypoint reprojection RMSE {result['reprojection_rmse_px']:.3f} px (target <= 1.5)")

        if not args.only_lieu:
            print("\n4. every clip in ../shared/data/video")
            for clip in sorted(videos.glob("*.mp4")):
                if clip.name == "lieu_60s.mp4":
                    target = out / "lieu"
                    print(f"   {clip.name}: done above, preview {target / 'preview.png'}")
                    continue
                target = out / clip.stem
                try:
                    result, wall, _, warnings = run_preprocess(clip, target)
                except EngineError as exc:
                    print(f"   {clip.name}: ERROR {exc.message}")
                    continue
                print(f"   {clip.name}: {result['frames']} frames at {result['size']} px in {wall:.1f} s, "
                      f"jitter {result['jitter_raw']['rotation_deg']:.3f} -> "
                      f"{result['jitter_stabilised']['rotation_deg']:.3f} deg, "
                      f"RMSE {result['reprojection_rmse_px']:.2f} px; preview {target / 'preview.png'}")
                for warning in warnings:
                    print(f"     warning: {warning}")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
