"""Scoring a trained subject on its held-out frames.

Each held-out frame is rendered with its own audio window, blendshapes and pose, and compared with
the ground truth (the subject's crop frame) three ways:
- "portrait": the render pasted onto the ground-truth frame (what `render` outputs; everything
  outside the face is copied from the truth, so this figure is flattering);
- "raw": the render as the NeRF draws it (head over torso over the background plate);
- "face": the face alone (PSNR over the face mask's pixels, SSIM and MS-SSIM over the face box):
  the honest figure.
Mouth landmarks (MediaPipe) of the portrait and of the truth give LMD and the mouth opening, whose
correlation over time says whether the lips follow the audio; the eyelid gap's correlation says
whether the blinks are rendered.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..arkit import ARKIT_INDEX
from ..face.landmarker import FaceLandmarker
from ..portrait.composite import as_float, face_layer, over_frame
from ..render.driving import Driving
from ..render.pipeline import head_renders
from ..subject.format import Subject
from . import metrics

IMAGE_METRICS = ("psnr", "ssim", "ms_ssim")


@dataclass
class Evaluation:
    frames: list[dict] = field(default_factory=list)        # per held-out frame: index and scores
    samples: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list)  # (index, truth, portrait)
    mouth_truth: list[float] = field(default_factory=list)  # opening per frame (nan: no face found)
    mouth_render: list[float] = field(default_factory=list)
    eyes_truth: list[float] = field(default_factory=list)   # mean lid gap per frame (nan: no face found)
    eyes_render: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        out = {}
        for region in ("face", "portrait", "raw"):
            out[region] = {name: _mean([f[region][name] for f in self.frames]) for name in IMAGE_METRICS}
        lmd = [f["lmd"] for f in self.frames if f["lmd"] is not None]
        out["lmd"] = _mean(lmd)
        truth, render = np.array(self.mouth_truth), np.array(self.mouth_render)
        both = np.isfinite(truth) & np.isfinite(render)
        out["mouth_open_correlation"] = metrics.correlation(render[both], truth[both])
        out["mouth_amplitude_ratio"] = metrics.amplitude_ratio(render[both], truth[both])
        out["mouth_truth_spread"] = float(truth[both].std()) if both.any() else None
        # The lag needs an unbroken series: frames without a face are filled from their neighbours.
        out["mouth_best_lag"] = metrics.best_lag(_filled(render), _filled(truth)) if both.sum() > 2 else None
        eyes_truth, eyes_render = np.array(self.eyes_truth), np.array(self.eyes_render)
        out["eye_open_correlation"] = metrics.correlation(eyes_render[both], eyes_truth[both])
        out["eye_amplitude_ratio"] = metrics.amplitude_ratio(eyes_render[both], eyes_truth[both])
        out["frames"] = len(self.frames)
        out["frames_without_face_in_render"] = int(np.sum(~np.isfinite(render) & np.isfinite(truth)))
        out["frames_without_face_in_truth"] = int(np.sum(~np.isfinite(truth)))
        return out


def _filled(series: np.ndarray) -> np.ndarray:
    """nan entries replaced by linear interpolation between the finite ones."""
    finite = np.isfinite(series)
    if finite.all() or not finite.any():
        return series
    positions = np.arange(len(series))
    return np.interp(positions, positions[finite], series[finite])


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else None


def lid_closure(subject: Subject, frames: np.ndarray) -> np.ndarray:
    """Tracked closure of the lids (mean of eyeBlinkLeft and eyeBlinkRight, 0 open to 1 shut) of `frames`."""
    curves = subject.tracks["blendshapes"][frames]
    return curves[:, [ARKIT_INDEX["eyeBlinkLeft"], ARKIT_INDEX["eyeBlinkRight"]]].mean(axis=1)


def scoring_window(subject: Subject, held_out: np.ndarray, count: int) -> np.ndarray:
    """`count` consecutive held-out frames that hold a blink and the most speech.

    Blinks are a few frames every few seconds, so the first frames of the held-out stretch often hold
    none, and an eye figure over open eyes only measures tracking noise; a stretch of closed mouth makes
    the mouth figures measure noise the same way. Of the windows that hold a blink at least half as deep as
    the stretch's deepest, the one whose tracked jaw moves most. Chosen from the tracked curves, never
    from a render."""
    if count >= len(held_out):
        return held_out
    closure = lid_closure(subject, held_out)
    jaw = subject.tracks["blendshapes"][held_out][:, ARKIT_INDEX["jawOpen"]]
    blink = closure >= closure.min() + 0.5 * (closure.max() - closure.min())
    starts = [s for s in range(len(held_out) - count + 1) if blink[s:s + count].any()]
    start = max(starts, key=lambda s: float(jaw[s:s + count].std()))
    return held_out[start:start + count]


def sample_positions(count: int, samples: int) -> set[int]:
    return set(np.linspace(0, count - 1, min(samples, count)).round().astype(int).tolist())


def score_frame(render: np.ndarray, truth: np.ndarray, face_mask: np.ndarray,
                raw: bool = True) -> tuple[dict, np.ndarray]:
    """Image scores of one render (float [0, 1]) against its truth (uint8), with the portrait paste;
    raw=False: the render is only the face, and the raw render's scores are None."""
    portrait = over_frame(face_layer(render, truth, face_mask), truth)
    truth_f = as_float(truth)
    scores = {"portrait": metrics.image_scores(as_float(portrait), truth_f),
              "raw": metrics.image_scores(np.clip(render, 0, 1), truth_f) if raw
              else {name: None for name in IMAGE_METRICS}}
    box = metrics.mask_box(face_mask)
    if box is None:
        scores["face"] = {name: None for name in IMAGE_METRICS}
    else:
        x0, y0, x1, y1 = box
        crop_r, crop_t = np.clip(render[y0:y1, x0:x1], 0, 1), truth_f[y0:y1, x0:x1]
        scores["face"] = {"psnr": metrics.psnr(np.clip(render, 0, 1), truth_f, face_mask > 0.5),
                          "ssim": metrics.ssim(crop_r, crop_t), "ms_ssim": metrics.ms_ssim(crop_r, crop_t)}
    return scores, portrait


def evaluate(subject: Subject, head, driving: Driving, progress, samples: int = 4, face_only: bool = False,
             label: str = "evaluate") -> Evaluation:
    """Render and score every frame of `driving` (the subject's own held-out frames).

    face_only: render only the face (as `render` does for a composited frame): every figure but the raw
    render's is the same, at about half the rays; the raw figures are then left out."""
    result = Evaluation()
    keep = sample_positions(len(driving), samples)
    with FaceLandmarker() as marks_truth, FaceLandmarker() as marks_render, \
            progress.stage(label, len(driving)) as stage:
        for j, render, face_mask in head_renders(head, driving, face_only=face_only):
            index = int(driving.frame_index[j])
            truth = subject.frame(index)
            scores, portrait = score_frame(render, truth, face_mask, raw=not face_only)
            timestamp = int(round(j * 1000 / subject.fps))
            seen_truth = marks_truth.analyse(truth, timestamp)
            seen_render = marks_render.analyse(portrait, timestamp)
            scores["lmd"] = None
            if seen_truth.faces and seen_render.faces:
                scores["lmd"] = metrics.landmark_distance(seen_render.landmarks, seen_truth.landmarks, subject.size)
            for seen, mouth, eyes in ((seen_truth, result.mouth_truth, result.eyes_truth),
                                      (seen_render, result.mouth_render, result.eyes_render)):
                mouth.append(metrics.mouth_opening(seen.landmarks, subject.size) if seen.faces else float("nan"))
                eyes.append(metrics.eye_opening(seen.landmarks, subject.size) if seen.faces else float("nan"))
            result.frames.append({"index": index, **scores})
            if j in keep:
                result.samples.append((index, truth, portrait))
            stage.advance(face_psnr=scores["face"]["psnr"] or 0.0)
    return result

