"""What drives each rendered frame: the audio window, the blendshapes, the head pose, and the subject
frame whose latent code, torso, background and face mask are used.

The speech sets the length. Without curves, poses and blendshapes are replayed from the subject's
training frames (of its main shot, engine.expression.headmotion.main_shot, for an edited clip), walked
forward and back (0, 1, ..., n-1, n-1, ..., 0, 0, 1, ...) as the original does, so a long speech never
jumps from the last frame back to the first. With curves, blendshapes and
head motion come from the curves (what an animator edited on the rig); the subject frame still
ping-pongs, for the torso and background. A head trained on the mouth curves (`--expression all`)
gets them from the speech through the subject's audio -> blendshape model when no curves are given:
replayed mouth curves would belong to other words.

A range `A:B` computes only what frames A..B-1 need (the speech around them: a piece of a 3-hour
file costs what a short file costs) and gets exactly the inputs, audio context at its edges included,
that those frames get in a full render.

Any frame rate (a 24 or 29.97 fps edit of a 25 fps subject): each frame is driven at its own time.
Its audio window spans the same time as in training (interpolated between the subject-rate frames),
curves are resampled to it, and the replay walks the subject's frames at their own rate; so the
rendered frames stay on the sound to the frame, however long.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..audio.features import SpeechFeatures, as_speech, get_encoder, resample, subject_speech
from ..errors import EngineError
from ..expression.headmotion import main_shot, subject_reference_pose
from ..expression.predict import MOUTH_INDEX
from ..subject.format import Subject


@dataclass
class Driving:
    fps: float
    frame_index: np.ndarray   # (N,) int64: subject frame for latent code, torso, background, face mask
    audio: np.ndarray         # (N, W, dim) float32: the audio feature window of each frame
    blendshapes: np.ndarray   # (N, 52) float32, ARKit order
    poses: np.ndarray         # (N, 4, 4) float32 camera-to-world
    first: int = 0            # index of frame 0 of this driving in the full sequence

    def __len__(self) -> int:
        return len(self.frame_index)

    def slice(self, start: int, stop: int) -> "Driving":
        return Driving(self.fps, self.frame_index[start:stop], self.audio[start:stop],
                       self.blendshapes[start:stop], self.poses[start:stop], self.first + start)


def ping_pong(steps, frames: np.ndarray) -> np.ndarray:
    """`frames` walked forward, then backward, and so on: the entries at `steps` (a count, or step numbers)."""
    n = len(frames)
    k = np.arange(steps) if np.isscalar(steps) else np.asarray(steps, np.int64)
    turn, position = k // n, k % n
    return frames[np.where(turn % 2 == 0, position, n - 1 - position)]


def resample_curves(curves, fps: float, n_frames: int, progress=None, path=None, start: int = 0,
                    stop: int | None = None):
    """(weights, rotation (., 3), translation (., 3)) of frames start..stop-1 (default all n_frames) at `fps`,
    linearly interpolated at frame centres.

    Curves shorter than the speech hold their last value (with a warning), longer ones are cut.
    """
    if len(curves) == 0:
        raise EngineError(f"{path}: the curves file holds no frames", "export the curves again", path=path)
    covered = (len(curves) - 1) / curves.fps
    stop = n_frames if stop is None else stop
    # only the frames rendered count: a line trimmed short of its file's end renders the part its keys cover
    if progress is not None and (stop - 1) / fps > covered + 0.5 / fps:
        progress.warn(f"{path}: the curves cover {covered:.2f} s but the speech rendered lasts "
                      f"{stop / fps:.2f} s; the last curve values are held to the end")
    return tuple(resample(values, curves.fps, fps, start, stop)
                 for values in (curves.weights, curves.head_rotation, curves.head_translation))


def mouth_curves_from_speech(subject: Subject, speech: SpeechFeatures, fps: float, start: int, stop: int,
                             models_dir=None) -> np.ndarray:
    """(stop - start, len(MOUTH_AND_JAW)): the subject's expression model's mouth and jaw curves for frames
    start..stop-1 of the speech at fps."""
    from ..expression.animate import Animator
    from ..expression.predict import predict_speech
    animator = Animator(subject, models_dir=models_dir)
    return predict_speech(animator.model, animator.inputs, speech, fps, start, stop)[:, MOUTH_INDEX]


def with_mouth_from_speech(blendshapes: np.ndarray, mouth: np.ndarray) -> np.ndarray:
    blendshapes = np.array(blendshapes, np.float32)
    blendshapes[:, MOUTH_INDEX] = mouth
    return blendshapes


def replayed_frames(subject: Subject, fps: float, start: int, stop: int) -> np.ndarray:
    """(stop - start,) int64: the subject frame that frames start..stop-1 at fps take their latent code,
    torso, background and face mask from (and, without curves, their expression and pose)."""
    train = subject.split("train")
    if len(train) == 0:
        raise EngineError(f"{subject.root}: the subject has no training frames", "preprocess the clip again",
                          path=str(subject.root))
    # The replay walks the training frames of the main shot (an edited clip's other shots frame the person
    # differently) at the subject's own rate: each frame takes the subject frame its centre falls in.
    first, end = main_shot(subject)
    in_shot = train[(train >= first) & (train < end)]
    replayed = in_shot if len(in_shot) else train
    return ping_pong(np.floor((np.arange(start, stop) + 0.5) / fps * subject.fps).astype(np.int64), replayed)


def drive_speech(subject: Subject, speech, encoder_name: str, window: int, curves=None,
                 curves_path=None, progress=None, models_dir=None, mouth_from_speech: bool = False,
                 fps: float | None = None, start: int = 0, stop: int | None = None) -> Driving:
    """The driving of frames start..stop-1 (default: all) of a speech (a SpeechFeatures, a file or 16 kHz
    samples) at fps (default: the subject's), from curves when given, else replayed.

    window: the head's audio window (its config's audio_window), in frames at the subject's rate.
    mouth_from_speech: without curves, take the mouth curves from the speech (heads trained on them).
    """
    speech = as_speech(speech)
    fps = subject.fps if fps is None else fps
    n = speech.n_frames(fps)
    stop = n if stop is None else stop
    frame_index = replayed_frames(subject, fps, start, stop)
    audio = speech.windows(get_encoder(encoder_name, models_dir), subject.fps, window, start, stop, video_fps=fps)
    if curves is None:
        blendshapes = subject.tracks["blendshapes"][frame_index]
        poses = subject.tracks["pose"][frame_index]
        if mouth_from_speech:
            mouth = mouth_curves_from_speech(subject, speech, fps, start, stop, models_dir)
            blendshapes = with_mouth_from_speech(blendshapes, mouth)
    else:
        from ..tracking.headpose import poses_from_head_motion
        blendshapes, rotation, translation = resample_curves(curves, fps, n, progress, curves_path, start, stop)
        poses = poses_from_head_motion(rotation, translation, subject_reference_pose(subject))
    return Driving(fps, frame_index.astype(np.int64), audio.astype(np.float32),
                   np.asarray(blendshapes, np.float32), np.asarray(poses, np.float32), start)


def drive_frames(subject: Subject, indices: np.ndarray, encoder_name: str, window: int,
                 models_dir=None, mouth_from_speech: bool = False) -> Driving:
    """The subject's own frames with their own audio, blendshapes and poses (held-out evaluation).

    mouth_from_speech: the mouth curves predicted from the frames' audio instead of their tracked ones.
    """
    speech = subject_speech(subject)
    audio = speech.windows(get_encoder(encoder_name, models_dir), subject.fps, window, n_frames=subject.n_frames)
    indices = np.asarray(indices, np.int64)
    blendshapes = subject.tracks["blendshapes"][indices]
    if mouth_from_speech:
        mouth = mouth_curves_from_speech(subject, speech, subject.fps, 0, subject.n_frames, models_dir)[indices]
        blendshapes = with_mouth_from_speech(blendshapes, mouth)
    return Driving(subject.fps, indices, audio[indices], blendshapes.astype(np.float32),
                   subject.tracks["pose"][indices].astype(np.float32))


def parse_range(text: str | None, total: int) -> tuple[int, int]:
    """`A:B` (either side may be empty, B exclusive) -> (start, stop) within [0, total]."""
    if not text:
        return 0, total
    try:
        start_text, stop_text = text.split(":")
        start = int(start_text) if start_text.strip() else 0
        stop = int(stop_text) if stop_text.strip() else total
    except ValueError:
        raise EngineError(f"--frames {text!r} is not a range A:B", "write it as e.g. 0:250 (B exclusive)")
    if not 0 <= start < stop:
        raise EngineError(f"--frames {text}: the range is empty or negative", "use 0 <= A < B")
    if start >= total:
        raise EngineError(f"--frames {text}: starts after the last frame ({total} frames for this speech)",
                          f"use a range within 0:{total}")
    return start, min(stop, total)
