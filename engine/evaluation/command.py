"""`python -m engine evaluate SUBJECT -o REPORT_DIR`: score the trained subject on its held-out frames.

Writes REPORT_DIR/report.json (summary and per-frame figures), comparison.png (ground truth beside
render for a few frames) and mouth_opening.png (the inner-lip gap over time, render and truth).

A head trained on the mouth curves (`--expression all`) is scored twice: with the frames' tracked
curves (the issue's protocol, and what a rig drives), and with mouth curves predicted from the
frames' audio by the subject's expression model (what `render` does with new speech), so the
lip-sync figure of the audio path is never hidden behind the tracked one.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..errors import EngineError
from ..render.driving import drive_frames
from ..subject.format import Subject
from .heldout import evaluate, lid_closure, scoring_window
from .report import write_report


def configure(parser) -> None:
    parser.add_argument("subject", type=Path, help="subject folder with a trained model")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for the report")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="score N consecutive held-out frames (a quick look): of the windows holding a blink "
                             "(at least half as deep as the deepest in the tracked curves), the one whose "
                             "tracked jaw moves most")
    parser.add_argument("--samples", type=int, default=4, help="frames shown in comparison.png")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def run(args, progress) -> dict:
    from ..nerf.talking_head import TalkingHead

    subject = Subject(args.subject)
    held_out = subject.split("test")
    if args.limit is not None:
        held_out = scoring_window(subject, held_out, max(args.limit, 1))
    if len(held_out) == 0:
        raise EngineError(f"{subject.root}: the subject has no held-out frames to score",
                          "preprocess the clip again (1/11 of its frames are held out)",
                          path=str(subject.root))
    head = TalkingHead.load(subject, device=args.device)
    driving = drive_frames(subject, held_out, head.audio_encoder, head.audio_window)
    started = time.monotonic()
    evaluation = evaluate(subject, head, driving, progress, samples=args.samples)
    from_speech = None
    if head.follows_mouth_curves:
        spoken = drive_frames(subject, held_out, head.audio_encoder, head.audio_window, mouth_from_speech=True)
        from_speech = evaluate(subject, head, spoken, progress, samples=0, face_only=True).summary()
    elapsed = time.monotonic() - started
    details = {"subject": str(subject.root), "size": subject.size, "fps": subject.fps,
               "held_out_frames": [int(held_out[0]), int(held_out[-1]) + 1], "audio_encoder": head.audio_encoder,
               "deepest_blink": round(float(lid_closure(subject, held_out).max()), 3),
               "models": subject.meta.to_dict()["models"], "seconds": round(elapsed, 1),
               "notes": {"face": "render vs truth over the face only: PSNR on face-mask pixels, "
                                 "SSIM/MS-SSIM on the face box (the honest figure)",
                         "portrait": "render pasted onto the truth frame (outside the face is copied from it)",
                         "raw": "render as drawn: head over torso over the background plate",
                         "lmd": "mean 2D distance of 40 MediaPipe lip landmarks, pixels at 512",
                         "mouth_open_correlation": "Pearson correlation of the inner-lip gap, render vs truth",
                         "mouth_amplitude_ratio": "spread of the rendered inner-lip gap over the truth's "
                                                  "(1 = the mouth opens as far as the person's)",
                         "mouth_truth_spread": "standard deviation of the truth's inner-lip gap in the scored "
                                               "frames, pixels of a 512-px frame: under about 3 the mouth "
                                               "hardly moves there, and the amplitude ratio divides by noise",
                         "mouth_best_lag": "shift in frames at which the rendered gap best follows the truth's "
                                           "(positive: the render is late; 0 is in sync)",
                         "eye_open_correlation": "Pearson correlation of the eyelid gap, render vs truth",
                         "deepest_blink": "the most closed the tracked lids get in the scored frames (0 open, 1 "
                                          "shut): under about 0.4 they hold no blink, and the eye figures "
                                          "measure tracking noise",
                         "mouth_from_speech": "heads trained on the mouth curves: the same scores with the mouth "
                                              "curves predicted from the audio instead of tracked (only the face "
                                              "rendered, as `render` does: no raw figures)"},
               "mouth_from_speech": from_speech}
    summary = write_report(args.output, evaluation, subject.fps, details)
    return {"report": str(args.output / "report.json"), "face_psnr": summary["face"]["psnr"],
            "face_ssim": summary["face"]["ssim"], "face_ms_ssim": summary["face"]["ms_ssim"],
            "portrait_psnr": summary["portrait"]["psnr"], "raw_psnr": summary["raw"]["psnr"],
            "lmd": summary["lmd"], "mouth_open_correlation": summary["mouth_open_correlation"],
            "mouth_amplitude_ratio": summary["mouth_amplitude_ratio"], "mouth_best_lag": summary["mouth_best_lag"],
            "mouth_truth_spread": summary["mouth_truth_spread"], "eye_open_correlation": summary["eye_open_correlation"],
            "eye_amplitude_ratio": summary["eye_amplitude_ratio"], "deepest_blink": details["deepest_blink"],
            "frames": summary["frames"],
            "speech_mouth_open_correlation": from_speech["mouth_open_correlation"] if from_speech else None,
            "speech_mouth_amplitude_ratio": from_speech["mouth_amplitude_ratio"] if from_speech else None,
            "speech_mouth_best_lag": from_speech["mouth_best_lag"] if from_speech else None,
            "speech_face_psnr": from_speech["face"]["psnr"] if from_speech else None,
            "seconds": round(elapsed, 1)}
