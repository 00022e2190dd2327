"""The demo's built-in input (`python demo.py` at the repository root runs the chain on it).

We cannot ship footage, so the default subject is made from material that ships with the
dependencies: scikit-image's astronaut photograph (a real face; MediaPipe must find it) animated
into a short clip, its head moving a little and its mouth opening with generated speech-like audio
(a voiced source through vowel formants, in syllables, words and pauses), and a second utterance
for the subject to speak.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import EngineError

FPS = 25.0
RATE = 16000
# (F1, F2, F3) in Hz and how far the jaw opens for five vowels.
VOWELS = {"a": ((730, 1090, 2440), 1.0), "e": ((530, 1840, 2480), 0.65), "i": ((270, 2290, 3010), 0.35),
          "o": ((570, 840, 2410), 0.8), "u": ((300, 870, 2240), 0.3)}


# ---------------------------------------------------------------- speech-like audio
def _resonator(signal: np.ndarray, freq: float, bandwidth: float) -> np.ndarray:
    from scipy.signal import lfilter
    r = np.exp(-np.pi * bandwidth / RATE)
    theta = 2 * np.pi * freq / RATE
    return lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], signal)


def synth_speech(seconds: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Speech-like audio (16 kHz) and the mouth opening per video frame (25 fps), in [0, 1].

    Syllables of 120-260 ms (a vowel through three formants, sometimes after a noise burst for a
    consonant) make words of 1-3 syllables; phrases of 2-5 words are separated by pauses.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    audio = np.zeros(n, np.float32)
    opening = np.zeros(n, np.float32)
    t = int(0.4 * RATE)                                   # a little silence first
    while t < n - int(0.5 * RATE):
        for _ in range(rng.integers(2, 6)):               # words in a phrase
            for _ in range(rng.integers(1, 4)):           # syllables in a word
                length = int(rng.uniform(0.12, 0.26) * RATE)
                if t + length >= n:
                    break
                vowel = rng.choice(list(VOWELS))
                formants, jaw = VOWELS[vowel]
                f0 = 125 * (1 + 0.12 * np.sin(2 * np.pi * t / RATE / 1.7)) * rng.uniform(0.95, 1.05)
                phase = np.cumsum(np.full(length, f0 / RATE))
                source = (2 * (phase % 1.0) - 1).astype(np.float64)   # a sawtooth glottal buzz
                voiced = sum(_resonator(source, f, 80 + 0.05 * f) * g for f, g in zip(formants, (1.0, 0.6, 0.3)))
                # Open vowels are the loud ones in speech: loudness follows the jaw, not the filter gain.
                voiced *= (0.35 + 0.65 * jaw) / max(float(np.sqrt(np.mean(voiced ** 2))), 1e-9)
                envelope = np.sin(np.linspace(0, np.pi, length)) ** 0.6
                segment = voiced * envelope
                if rng.random() < 0.5:                    # a consonant: a short noise burst before the vowel
                    burst = int(0.04 * RATE)
                    segment[:burst] += _resonator(rng.standard_normal(burst), 4000, 2000) * 0.3
                audio[t:t + length] += segment.astype(np.float32)
                opening[t:t + length] = np.maximum(opening[t:t + length], jaw * envelope)
                t += length
            t += int(rng.uniform(0.03, 0.1) * RATE)       # between words
        t += int(rng.uniform(0.35, 0.7) * RATE)           # a pause between phrases
    audio *= 0.5 / max(float(np.abs(audio).max()), 1e-6)
    frames = int(seconds * FPS)
    per_frame = np.array([opening[int(i * RATE / FPS):int((i + 1) * RATE / FPS)].mean() for i in range(frames)])
    return audio, per_frame.astype(np.float32)


# ---------------------------------------------------------------- the talking photograph
def _soft_ellipse(shape, centre, axes) -> np.ndarray:
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    d = np.sqrt(((xs - centre[0]) / axes[0]) ** 2 + ((ys - centre[1]) / axes[1]) ** 2)
    return np.clip(1.5 - d, 0.0, 1.0) ** 2    # 1 inside, fading to 0 at 1.5x the axes


def talking_photo(photo: np.ndarray, opening: np.ndarray, models_dir=None) -> list[np.ndarray]:
    """Frames of the photo with the head swaying (the background and shoulders stay) and the jaw
    opening by `opening` per frame."""
    import cv2
    from .face.landmarker import FaceLandmarker
    with FaceLandmarker(models_dir) as landmarker:
        face = landmarker.analyse(photo)
    if face.faces != 1:
        raise EngineError(f"the built-in photograph shows {face.faces} faces to MediaPipe, expected 1",
                          "use --clip with your own footage")
    points = face.landmarks[:, :2]
    lo, hi = points.min(0), points.max(0)
    centre, size = (lo + hi) / 2, hi - lo
    head = _soft_ellipse(photo.shape, centre - [0, 0.1 * size[1]], size * [0.75, 0.8])
    mouth = (points[13] + points[14]) / 2                 # between the inner lips
    mouth_width = np.linalg.norm(points[308] - points[78])
    chin = points[152]
    jaw = _soft_ellipse(photo.shape, (mouth + chin) / 2 + [0, 0.1 * size[1]], (size[0] * 0.35, (chin[1] - mouth[1]) * 0.9))
    ys, xs = np.mgrid[0:photo.shape[0], 0:photo.shape[1]].astype(np.float32)
    jaw *= (ys > mouth[1]).astype(np.float32)             # only below the lips moves down
    frames = []
    for i, open_ in enumerate(opening):
        t = i / FPS
        angle = 1.5 * np.sin(2 * np.pi * t / 3.1)          # degrees of sway and nod, a few pixels of drift
        shift = np.array([2.0 * np.sin(2 * np.pi * t / 4.3), 1.5 * np.sin(2 * np.pi * t / 2.6)])
        rigid = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), float(angle), 1.0)
        rigid[:, 2] += shift
        inverse = cv2.invertAffineTransform(rigid)
        src_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
        src_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
        drop = 0.09 * size[1] * open_
        map_x = xs + head * (src_x - xs)
        map_y = ys + head * (src_y - ys) - jaw * drop
        frame = cv2.remap(photo, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if open_ > 0.02:                                   # the dark of the open mouth between the lips
            gap = np.zeros(photo.shape[:2], np.float32)
            moved = rigid @ np.array([mouth[0], mouth[1] + drop / 2, 1.0])
            cv2.ellipse(gap, (int(moved[0]), int(moved[1])), (int(mouth_width * 0.38), max(1, int(drop * 0.45))),
                        float(angle) * -1, 0, 360, 1.0, -1, cv2.LINE_AA)
            gap = cv2.GaussianBlur(gap, (5, 5), 0)[..., None] * 0.85
            frame = (frame * (1 - gap) + np.array([60, 20, 25]) * gap).astype(np.uint8)
        frames.append(frame)
    return frames


def make_default_input(folder: Path, seconds: float, speech_seconds: float, progress,
                       models_dir=None) -> tuple[Path, Path]:
    """The built-in subject clip (mp4 with its speech) and a second, new utterance to animate."""
    from skimage import data
    from .media.audio import write_wav
    from .media.video import write_video
    folder.mkdir(parents=True, exist_ok=True)
    with progress.stage("make the built-in clip", 3) as stage:
        speech, opening = synth_speech(seconds, seed=1)
        clip_audio = write_wav(folder / "astronaut_speech.wav", speech)
        stage.advance()
        frames = talking_photo(data.astronaut(), opening, models_dir)
        stage.advance()
        clip = write_video(folder / "astronaut.mp4", frames, FPS, audio=clip_audio)
        new_speech, _ = synth_speech(speech_seconds, seed=2)
        audio = write_wav(folder / "new_speech.wav", new_speech)
        stage.advance()
    return clip, audio
