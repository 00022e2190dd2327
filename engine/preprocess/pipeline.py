"""`preprocess(clip, subject_dir)`: a clip of one person talking becomes a subject folder.

Passes over the clip, each decoding it again (decoding is cheap; keeping full-resolution frames of a
long clip in memory is not):
  1. locate      FaceLandmarker on every 3rd frame (at most 640 px): where the face is and how
                 many faces -> the one-person check and one crop box for the whole clip; every
                 frame's thumbnail, for the cuts between shots of an edited clip (shots.py)
  2. plate       every 20th crop with its person mask -> the background plate
  3. analyse     every crop: FaceLandmarker again (so landmarks and transforms are those of the
                 crop's own camera), person mask, parsing, face mask, torso image; PNGs written
                 by a thread pool while the next frame is analysed; the frames where the face
                 is lost are found here (gaps.py); the thumbnails and the face's steps from frame
                 to frame -> the cuts
then the tracks are filled over short gaps, the Head-Sync stabilizer runs on the grey crops, jawOpen
gets the lip gap as its floor where the blendshapes lose the jaw (jaw.py), and subject.json, tracks and
preview are written. Everything goes into a temporary folder that
replaces the destination only at the end (SubjectWriter), so an error or a cancel leaves any
earlier subject untouched.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from ..audio.vad import voice_activity
from ..errors import EngineError
from ..face.landmarker import FaceLandmarker, PersonSegmenter
from ..face.parsing import CHIN, FOREHEAD, face_mask, parse
from ..media import checked_span
from ..media.audio import open_audio, two_voices_warning, write_wav
from ..media.ffmpeg import MediaInfo
from ..media.sequence import ImageSequence, encode_working_copy, find_image_sequence, is_image_sequence
from ..media.video import open_clip, read_frames
from ..progress import Progress
from ..tracking import stabilize
from ..files import preallocated_memmap, require_free_space, sha256_of, write_failed
from ..lock import JobLock
from ..subject.format import BACKGROUND_FILE, MODEL_DIR, SOURCE_COPY, SubjectWriter, frame_name
from ..subject.schema import MAX_FPS, CropBox, Source, Split, SubjectMeta, span_frames
from . import gaps
from .shots import ShotDetector, face_steps, held_out_stretch
from .crop import choose_crop_box, default_size
from .jaw import floor_jaw
from .plates import PLATE_EVERY, BackgroundPlate, torso_image

LOCATE_MAX_SIDE = 640       # pass 1 only needs to find the face: analyse at most this resolution
LOCATE_EVERY = 3            # ... and only every 3rd frame (0.12 s apart at 25 fps)
SHORT_CLIP_S = 10.0         # below this a subject trains poorly: warn
DECODED_SHARE = 0.9         # fewer frames than this share of the header's duration decode: a truncated file
SMOOTH_WINDOW, SMOOTH_ORDER = 5, 3   # SyncTalk's Savitzky-Golay smoothing of the blendshapes
PNG_FAST = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
MAX_PENDING_WRITES = 32     # bounds the memory held by frames waiting to be written
# Disk a subject needs, per crop pixel of each frame: its PNGs and tracks took 3.8 bytes at 96 px (may_5s),
# plus 1 byte for the grey scratch copy while it runs; 3 is a lower bound that refuses only what cannot fit.
BYTES_PER_CROP_PIXEL = 3.0
MISSING_SOUND_S = 0.5        # a separate recording may start or end this much inside the clip (padded with silence)


@dataclass(frozen=True)
class Footage:
    """The clip a subject is made from and the frames it takes at `fps`: `count` from `first` (a span of
    the clip, e.g. a trimmed strip), or all of them. `shown_as`: what messages call it where that is not
    `path` (an image sequence's pattern, not its working copy's file), whose second `shown_from` is `path`'s
    start (the plate's frames before its working copy's first): messages, and a recording's offset, count
    seconds of what the user named."""
    path: Path
    info: MediaInfo
    fps: float
    first: int = 0
    count: int | None = None
    shown_as: Path | None = None
    shown_from: float = 0.0

    @property
    def label(self) -> Path:
        return self.shown_as or self.path

    def frames(self):
        return read_frames(self.path, self.fps, self.info, self.first, self.count)

    @property
    def seconds(self) -> float | None:
        """How long the span plays (None: the clip's length is unknown)."""
        if self.count is not None:
            return self.count / self.fps
        return None if self.info.duration is None else max(0.0, self.info.duration - self.first / self.fps)


@dataclass
class Located:
    """Pass 1: on every LOCATE_EVERY-th frame, the face box in source pixels and how many faces."""
    face_boxes: np.ndarray   # (M, 4) x0, y0, x1, y1
    face_counts: np.ndarray  # (M,) int
    frames: int              # frames read (the whole clip, or its span)
    cuts: ShotDetector       # every frame's thumbnail; the shots are told once pass 3 has the face's steps

    @property
    def found(self) -> np.ndarray:
        return self.face_counts > 0


@dataclass
class Analysed:
    """Pass 3: the per-frame tracks in crop pixels."""
    landmarks: np.ndarray
    blendshapes: np.ndarray
    transforms: np.ndarray
    found: np.ndarray
    lost_frames: list[int] = field(default_factory=list)


def preprocess(clip: str | Path, destination: str | Path, fps: float = 25.0, size: int | None = None,
               models_dir: str | Path | None = None, progress: Progress | None = None,
               start_s: float | None = None, end_s: float | None = None, audio: str | Path | None = None,
               audio_offset: float = 0.0, channel: str | None = None, sequence_fps: float | None = None,
               audio_track: int = 1, video_stream: int | None = None, replace: bool = False,
               audio_from_first_sample: bool = False) -> dict:
    """`start_s`, `end_s`: the span of the clip to make the subject from, in seconds (None: its start, its end);
    its frames are numbered from 0 and subject.json's source says where frame 0 lies in the clip.
    `audio`: the speech from this recording instead of the clip's own track (double-system sound: a sound
    recorder's file beside the camera's clip); its (or the own track's) second `audio_offset` lies at the clip's
    first frame. `channel`: the side of a two-microphone recording that holds the person's voice; `audio_track`:
    which of its (or the clip's) audio tracks, from 1; `audio_from_first_sample`: its seconds (`audio_offset`'s)
    counted from that track's first sample, as a Blender sound strip plays it, not from the first picture of the
    file holding it (media.audio.open_audio). `video_stream`: which of the clip's video streams, from 0
    (None: its first that is not a cover picture). `replace`: make a subject already trained anew (its trained
    head would no longer match its frames, so it goes too); without it, such a subject is refused.
    `clip` may name an image sequence (media/sequence.py), played at `sequence_fps`, with its sound in `audio`:
    it is encoded once into a working copy that the subject keeps (SOURCE_COPY)."""
    progress = progress or Progress("quiet")
    clip = Path(clip)
    sequence = find_image_sequence(clip) if is_image_sequence(clip) else None
    if sequence is not None:
        if sequence_fps is None or not 0 < sequence_fps <= MAX_FPS:
            raise EngineError(f"{sequence.name}: an image sequence has no frame rate of its own",
                              "give the rate it plays at (--sequence-fps 24; Blender: the scene's)", path=sequence.name)
        if audio is None:
            raise EngineError(f"{sequence.name}: an image sequence has no sound", "the subject learns from the "
                              "speech: give the sound recorded with it (--audio, and --audio-offset where the "
                              "recording starts before the first frame)", path=sequence.name)
    elif sequence_fps is not None:
        raise EngineError(f"{clip}: --sequence-fps is for an image sequence", "leave it out: a video clip has its "
                          "own frame rate", path=str(clip))
    if sequence is not None and video_stream is not None:
        raise EngineError(f"{clip}: --video-stream is for a video file", "leave it out: an image sequence is one "
                          "stream of pictures", path=str(clip))
    if not 0 < fps <= MAX_FPS:
        raise EngineError(f"--fps must be above 0 and at most {MAX_FPS:g}, got {fps}", "use 25 (SyncTalk's rate)")
    if size is not None and not 64 <= size <= 2048:
        raise EngineError(f"--size must be between 64 and 2048, got {size}", "leave it out for the default")
    destination = Path(destination)
    if destination.exists() and not (destination / "subject.json").is_file() and any(destination.iterdir()):
        # Checked now as well as at commit, so a wrong folder is refused before minutes of work.
        raise EngineError(f"{destination} exists and is not a subject folder",
                          "choose an empty or new output folder", path=str(destination))
    if not replace and (destination / MODEL_DIR).is_dir() and any((destination / MODEL_DIR).iterdir()):
        raise EngineError(f"{destination}: holds a trained head ({MODEL_DIR}/), which preprocessing again would drop",
                          "preprocess into another folder, or pass --replace to make this subject anew",
                          path=str(destination))
    sound = SoundOfClip(None if audio is None else Path(audio), audio_offset, channel, audio_track,
                        audio_from_first_sample)
    if sequence is None:
        info = open_clip(clip, video_stream)
        if not info.has_audio and audio is None:
            raise EngineError(f"{clip}: has no audio track", "the subject learns from the speech: use the "
                              "original recording with its sound, or give the sound recorded with it (--audio)",
                              path=str(clip))
        footage = Footage(clip, info, fps, *clip_span(clip, info, fps, start_s, end_s))
        with JobLock(destination, "preprocess"):
            return _preprocess(footage, sound, destination, size, models_dir, progress)
    destination.parent.mkdir(parents=True, exist_ok=True)
    working = f".{destination.name}.sequence-"
    with JobLock(destination, "preprocess"):
        for stale in destination.parent.iterdir():   # a killed run's working copy (no glob: a name may hold [])
            if stale.name.startswith(working):
                shutil.rmtree(stale, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix=working, dir=destination.parent) as folder:
            # Only the frames the span shows are encoded (a long plate's other frames may not even be there);
            # the copy is the clip from then on, its first frame `lead` seconds into the plate.
            start, end = checked_span(Path(sequence.name), start_s, end_s, sequence.count / sequence_fps, "plate")
            first = min(math.floor(start * sequence_fps + 1e-6), sequence.count - 1)
            last = sequence.count if end is None else min(sequence.count, math.ceil(end * sequence_fps - 1e-6))
            used, lead = sequence.part(first, max(last, first + 1) - first), first / sequence_fps
            copy = encode_working_copy(used, sequence_fps, Path(folder) / SOURCE_COPY, progress)
            info = open_clip(copy)
            footage = Footage(copy, info, fps, *span_frames(max(0.0, start - lead), end and end - lead, fps),
                              shown_as=Path(sequence.name), shown_from=lead)
            return _preprocess(footage, sound, destination, size, models_dir, progress, used)


@dataclass(frozen=True)
class SoundOfClip:
    """Where a clip's speech is: its own sound track (path None) or a recording made beside it, whose second
    `offset` lies at the clip's first frame (the own track's too: a clip whose sound is out of step with its
    picture), from one side of it where `channel` names one (media.audio.CHANNELS), from its audio track `track`
    (from 1), its seconds counted from the track's first sample where `from_first_sample` (open_audio)."""
    path: Path | None = None
    offset: float = 0.0
    channel: str | None = None
    track: int = 1
    from_first_sample: bool = False

    def under(self, footage: Footage, warnings: list[str]) -> np.ndarray:
        """16 kHz samples under the footage's frames, frame 0 at sample 0. A recording (or offset track) that
        misses more than MISSING_SOUND_S of them is refused (the subject learns the lips from the sound under
        them); one whose two sides hold two voices adds a warning to `warnings`."""
        start = footage.shown_from + footage.first / footage.fps   # in seconds of the clip as named
        recording = self.path or footage.path
        audio = open_audio(recording, channel=self.channel, track=self.track,
                           video_stream=None if self.path else footage.info.video_stream,
                           from_first_sample=self.from_first_sample)
        if warning := two_voices_warning(audio):
            warnings.append(warning)
        if self.path is None and not self.offset:
            return audio.span(start, None if footage.count is None else start + footage.count / footage.fps).read()
        end = None if footage.seconds is None else start + footage.seconds
        start, end = start + self.offset, (audio.seconds if end is None else end + self.offset)
        if start < -MISSING_SOUND_S or end > audio.seconds + MISSING_SOUND_S:
            covered = (f"covers {max(0.0, -self.offset):.2f}-{audio.seconds - self.offset:.2f} s of the clip"
                       if audio.seconds > self.offset else f"ends ({audio.seconds:.2f} s) before the second "
                       f"{self.offset:g} given as the clip's first frame, so covers none of the clip")
            raise EngineError(
                f"{recording}: {covered} {footage.label.name}, which plays {start - self.offset:.2f}-"
                f"{end - self.offset:.2f} s",
                "give where the clip's first frame lies in the recording (--audio-offset, seconds), or a "
                "recording that covers the clip" if self.path else
                "its own sound, moved by the offset, leaves the clip's ends without sound: make the subject from "
                "the part it covers (--start, --end)", path=str(recording))
        rate = audio.sample_rate
        samples = audio.read(max(0, round(start * rate)), max(0, round(end * rate)))
        before = max(0, -round(start * rate))    # a recording that starts or ends a moment inside the clip: silence
        return np.pad(samples, (before, max(0, round((end - start) * rate) - before - len(samples))))


def clip_span(clip: Path, info: MediaInfo, fps: float, start_s: float | None, end_s: float | None):
    """(first frame, frame count or None) of the span start_s..end_s of the clip, checked against its length."""
    if start_s is None and end_s is None:
        return 0, None
    start, end = checked_span(clip, start_s, end_s, info.duration)
    return span_frames(start, end, fps)


def _preprocess(footage: Footage, sound: SoundOfClip, destination: Path, size: int | None, models_dir,
                progress: Progress, sequence: ImageSequence | None = None) -> dict:
    """`sequence`: the image sequence whose working copy `footage` reads, moved into the subject it makes."""
    warnings: list[str] = []
    with SubjectWriter(destination) as writer:
        root = writer.root
        if sequence is not None:
            os.replace(footage.path, root / SOURCE_COPY)
            footage = replace(footage, path=root / SOURCE_COPY)
        info, fps = footage.info, footage.fps
        clip = footage.label   # as messages name it
        stage = progress.stage("audio", 1)
        samples = sound.under(footage, warnings)
        write_wav(writer.audio_path, samples)
        stage.advance()
        stage.close()

        located = locate_face(footage, models_dir, progress)
        n = located.frames
        if footage.seconds and n < DECODED_SHARE * footage.seconds * fps:
            warnings.append(f"only {n / fps:.1f} s of the clip's {footage.seconds:.1f} s could be decoded: the file "
                            "looks truncated (an unfinished copy or download?); the subject holds those "
                            f"{n / fps:.1f} s. Copy or export the clip again to use all of it")
        if not located.found.any():
            raise EngineError(f"{clip}: no face was found in any of its {n} frames",
                              "use a clip where one person faces the camera, well lit and not too small",
                              path=str(clip))
        offset_s = footage.shown_from + footage.first / fps   # messages give times in the clip as named
        warnings += gaps.check_one_person(located.face_counts, fps / LOCATE_EVERY, clip, offset_s)
        box, fits = choose_crop_box(located.face_boxes[located.found], info.width, info.height)
        if not fits:
            warnings.append("the head leaves the crop at times (the person moves more than the frame "
                            "allows); those frames show a cut-off head")
        size = size or default_size(box)
        require_free_space(destination.parent, int(n * size * size * BYTES_PER_CROP_PIXEL),
                           f"a subject of {n} frames at {size} px")

        plate = build_plate(footage, box, size, n, models_dir, progress)
        _write_png(root / BACKGROUND_FILE, plate[..., ::-1])
        gray_path = root / ".gray.u8"   # the stabilizer's input, on disk rather than in memory
        gray = preallocated_memmap(gray_path, np.uint8, (n, size, size))
        analysed = analyse_crops(footage, box, size, plate, gray, root, models_dir, progress)

        shots = located.cuts.shots(fps, face_steps(analysed.landmarks, analysed.found))
        valid, gap_list, gap_warnings = gaps.classify(analysed.found, fps, clip, offset_s)
        warnings += gap_warnings + shots.warnings(fps, offset_s)
        for start, end in shots.transitions:
            if (valid[start:end] == gaps.VALID_EXCLUDED).all():
                continue  # the face is lost there already
            valid[start:end] = gaps.VALID_EXCLUDED
            gap_list.append(gaps.gap_record(start, end, fps, "transition"))
        landmarks = gaps.fill_lost(analysed.landmarks, analysed.found)
        transforms = gaps.fill_lost_transforms(analysed.transforms, analysed.found)
        blendshapes_raw = gaps.fill_lost(analysed.blendshapes, analysed.found)
        finish_lost_frames(analysed.lost_frames, landmarks, plate, root, models_dir, progress)

        stabilised = stabilize(gray, landmarks, transforms, valid == gaps.VALID_SEEN, size, progress,
                               shot_starts=shots.starts)
        del gray
        gray_path.unlink()

        duration = n / fps
        if duration < SHORT_CLIP_S:
            warnings.append(f"the clip is {duration:.1f} s long; a subject trains well from at least "
                            f"{SHORT_CLIP_S:.0f} s of speech (SyncTalk uses 3-5 minutes)")
        for message in warnings:
            progress.warn(message)

        blendshapes = smooth_blendshapes(floor_jaw(blendshapes_raw, landmarks, transforms, valid == gaps.VALID_SEEN))
        writer.write_tracks({
            "landmarks": landmarks.astype(np.float32),
            "blendshapes": blendshapes,
            "blendshapes_raw": blendshapes_raw.astype(np.float32),
            "face_transform": transforms.astype(np.float32),
            "pose_raw": stabilised.pose_raw.astype(np.float32),
            "pose": stabilised.pose.astype(np.float32),
            "valid": valid,
        })
        held_out = held_out_stretch(n, shots.starts, fps, voice_activity(samples, fps, n), blendshapes)
        split = Split((0, held_out[0] if held_out[1] == n else n), held_out,
                      np.flatnonzero(valid == gaps.VALID_EXCLUDED).tolist())
        meta = SubjectMeta(
            fps=fps, frames=n, size=size, crop_box=box,
            source=Source(SOURCE_COPY if sequence else str(clip.resolve()), sha256_of(footage.path), info.width,
                          info.height, info.fps, info.duration, first_frame=footage.first,
                          audio=None if sound.path is None else str(sound.path.resolve()),
                          # ... from the subject's clip's first frame, as first_frame (a plate's working copy's)
                          audio_offset=sound.offset + footage.shown_from, audio_channel=sound.channel,
                          audio_track=sound.track, audio_from_first_sample=sound.from_first_sample,
                          video_stream=info.video_stream,
                          sequence=sequence and str(clip.resolve()), sequence_first=sequence and sequence.first),
            intrinsics=stabilised.intrinsics,
            split=split,
            gaps=sorted(gap_list, key=lambda g: g["start_frame"]), warnings=warnings, shots=shots.starts,
            stabilizer={"reprojection_rmse_px": stabilised.reprojection_rmse_px,
                        "keypoints": stabilised.keypoints, "jitter": stabilised.jitter})
        writer.write_meta(meta)

        stage = progress.stage("preview", 1)
        from .preview import write_preview
        write_preview(root, meta, landmarks, valid, stabilised.pose_raw, stabilised.pose)
        stage.advance()
        stage.close()
        destination = writer.commit()

    return {"subject": str(destination), "frames": n, "size": size, "fps": fps,
            "train_frames": int(np.sum(valid[split.frames("train")] > 0)),
            "excluded_frames": len(meta.split.excluded), "warnings": len(warnings),
            "reprojection_rmse_px": round(float(stabilised.reprojection_rmse_px), 3),
            "jitter_raw": stabilised.jitter["raw"], "jitter_stabilised": stabilised.jitter["stabilised"]}


def locate_face(footage: Footage, models_dir, progress: Progress) -> Located:
    """Pass 1: face box and face count on every LOCATE_EVERY-th frame, at a resolution just good
    enough to find the face (the crop box and the one-person check need no more)."""
    info, fps = footage.info, footage.fps
    scale = min(1.0, LOCATE_MAX_SIDE / max(info.width, info.height))
    small = (max(1, round(info.width * scale)), max(1, round(info.height * scale)))
    boxes, counts, frames = [], [], 0
    cuts = ShotDetector()
    expected = int(footage.seconds * fps / LOCATE_EVERY) if footage.seconds else None
    with progress.stage("locate face", expected) as stage, FaceLandmarker(models_dir) as landmarker:
        for index, frame in enumerate(footage.frames()):
            frames += 1
            cuts.add(frame)
            if index % LOCATE_EVERY:
                continue
            if scale < 1.0:
                frame = cv2.resize(frame, small, interpolation=cv2.INTER_AREA)
            observation = landmarker.analyse(frame, timestamp_ms=_timestamp_ms(index, fps))
            xy = observation.landmarks[:, :2] / scale
            boxes.append((*xy.min(axis=0), *xy.max(axis=0)))
            counts.append(observation.faces)
            stage.advance(faces=observation.faces)
    return Located(np.array(boxes, np.float32), np.array(counts, np.int32), frames, cuts)


def build_plate(footage: Footage, box: CropBox, size: int, n: int, models_dir, progress: Progress) -> np.ndarray:
    """Pass 2: the background plate from every 20th crop."""
    accumulator = BackgroundPlate(size)
    with progress.stage("background plate", (n + PLATE_EVERY - 1) // PLATE_EVERY) as stage, \
            PersonSegmenter(models_dir) as segmenter:
        for index, frame in enumerate(footage.frames()):
            if index % PLATE_EVERY:
                continue
            crop = box.cut(frame, size)
            accumulator.add(crop, segmenter.person_mask(crop) > 0.5)
            stage.advance()
    return accumulator.plate()


def analyse_crops(footage: Footage, box: CropBox, size: int, plate: np.ndarray, gray: np.ndarray, root: Path,
                  models_dir, progress: Progress) -> Analysed:
    """Pass 3: tracks of every crop, and its frame, parsing, face mask and torso PNGs."""
    n, fps = len(gray), footage.fps
    landmarks = np.zeros((n, 478, 3), np.float32)
    blendshapes = np.zeros((n, 52), np.float32)
    transforms = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
    found = np.zeros(n, bool)
    lost = []
    writes = deque()
    with progress.stage("analyse frames", n) as stage, FaceLandmarker(models_dir) as landmarker, \
            PersonSegmenter(models_dir) as segmenter, ThreadPoolExecutor(2) as pool:
        for index, frame in enumerate(footage.frames()):
            if index >= n:  # the same decode gives the same count; guard against a short first pass
                break
            crop = box.cut(frame, size)
            gray[index] = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
            observation = landmarker.analyse(crop, timestamp_ms=_timestamp_ms(index, fps))
            writes.append(pool.submit(_write_png, root / "frames" / frame_name(index), crop[..., ::-1]))
            if observation.faces:
                found[index] = True
                landmarks[index] = observation.landmarks
                blendshapes[index] = observation.blendshapes
                transforms[index] = observation.transform
                labels = parse(crop, observation.landmarks, segmenter.person_mask(crop))
                writes.extend(_submit_masks(pool, root, index, crop, labels, observation.landmarks, plate))
            else:
                lost.append(index)  # masks are made once the landmarks are interpolated
            while len(writes) > MAX_PENDING_WRITES:
                writes.popleft().result()
            stage.advance()
        for write in writes:
            write.result()
    return Analysed(landmarks, blendshapes, transforms, found, lost)


def finish_lost_frames(lost: list[int], landmarks: np.ndarray, plate: np.ndarray, root: Path,
                       models_dir, progress: Progress) -> None:
    """Masks for frames where the face was lost, from the interpolated landmarks."""
    if not lost:
        return
    with progress.stage("fill lost frames", len(lost)) as stage, PersonSegmenter(models_dir) as segmenter, \
            ThreadPoolExecutor(2) as pool:
        for index in lost:
            crop = cv2.imread(str(root / "frames" / frame_name(index)), cv2.IMREAD_COLOR)[..., ::-1].copy()
            labels = parse(crop, landmarks[index], segmenter.person_mask(crop))
            for write in _submit_masks(pool, root, index, crop, labels, landmarks[index], plate):
                write.result()
            stage.advance()


def _submit_masks(pool: ThreadPoolExecutor, root: Path, index: int, crop: np.ndarray, labels: np.ndarray,
                  landmarks: np.ndarray, plate: np.ndarray) -> list:
    """Queue the parsing, face mask and torso image PNGs of one frame; returns their futures."""
    face_height = float(landmarks[CHIN, 1] - landmarks[FOREHEAD, 1])
    name = frame_name(index)
    return [pool.submit(_write_png, root / "parsing" / name, labels),
            pool.submit(_write_png, root / "facemask" / name, face_mask(landmarks, labels.shape)),
            pool.submit(_write_png, root / "torso" / name, torso_image(crop, labels, plate, face_height)[..., ::-1])]


def _write_png(path: Path, image: np.ndarray) -> None:
    """Straight to its name: the whole subject folder is renamed into place only when complete."""
    if not cv2.imwrite(str(path), np.ascontiguousarray(image), PNG_FAST):
        raise write_failed(path)


def _timestamp_ms(index: int, fps: float) -> int:
    return int(round(index * 1000 / fps))


def smooth_blendshapes(raw: np.ndarray) -> np.ndarray:
    """SyncTalk's Savitzky-Golay smoothing (window 5, order 3) over time, kept in [0, 1].

    Each output is the value at its frame of the cubic least-squares fit to the 5 frames around it
    (at the clip's ends, the fit to the first / last 5 frames), as scipy.signal.savgol_filter's
    'interp' mode computes it, without the second or two scipy.signal takes to import.
    """
    n, half = len(raw), SMOOTH_WINDOW // 2
    if n < SMOOTH_WINDOW:
        return raw.astype(np.float32)
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    vandermonde = offsets[:, None] ** np.arange(SMOOTH_ORDER + 1)
    fit = vandermonde @ np.linalg.pinv(vandermonde)   # (5, 5): window samples -> fitted values
    x = raw.astype(np.float64)
    windows = np.lib.stride_tricks.sliding_window_view(x, SMOOTH_WINDOW, axis=0)  # (n-4, 52, 5)
    smoothed = np.empty_like(x)
    smoothed[half:n - half] = windows @ fit[half]
    smoothed[:half] = (fit[:half] @ x[:SMOOTH_WINDOW])
    smoothed[n - half:] = (fit[half + 1:] @ x[n - SMOOTH_WINDOW:])
    return np.clip(smoothed, 0, 1).astype(np.float32)
