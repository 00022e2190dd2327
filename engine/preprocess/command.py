"""`python -m engine preprocess CLIP -o SUBJECT_DIR`."""
from __future__ import annotations

import argparse

from ..cli import add_channel_option


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("clip", help="video of one person talking (mp4, mov, mkv, webm), with its sound; or an image "
                                     "sequence (plate.####.exr, plate.%%04d.png, or their folder) with --audio")
    parser.add_argument("-o", "--output", required=True, metavar="SUBJECT_DIR",
                        help="subject folder to write (replaced whole, only once preprocessing succeeds)")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate to resample to (default 25)")
    parser.add_argument("--size", type=int, default=None,
                        help="crop resolution in pixels (default: the crop's own, at most 512)")
    parser.add_argument("--start", type=float, default=None, metavar="SECONDS",
                        help="make the subject from the clip from this time on (default: its start)")
    parser.add_argument("--end", type=float, default=None, metavar="SECONDS",
                        help="... up to this time (default: its end)")
    parser.add_argument("--audio", default=None, metavar="SOUND",
                        help="the speech from this recording instead of the clip's own track (a sound recorder's "
                             "file beside the camera's clip, or a clip without sound)")
    parser.add_argument("--audio-offset", type=float, default=0.0, metavar="SECONDS",
                        help="the recording's time at the clip's first frame (default 0); without --audio, the "
                             "clip's own track's: puts right a clip whose sound is out of step with its picture")
    parser.add_argument("--video-stream", type=int, default=None, metavar="N",
                        help="which of the clip's video streams, from 0 (a file holding several: Blender's Stream "
                             "Index; default: its first that is not a cover picture)")
    parser.add_argument("--sequence-fps", type=float, default=None, metavar="RATE",
                        help="the frame rate an image sequence plays at (required for one: its frames have none)")
    add_channel_option(parser)
    parser.add_argument("--replace", action="store_true",
                        help="make SUBJECT_DIR anew though it holds a trained head (which goes with it; files of "
                             "yours in the folder stay)")
    parser.add_argument("--models", default=None, metavar="DIR",
                        help="folder with face_landmarker.task and selfie_segmenter.tflite "
                             "(default: $SYNCTALK_MODELS, then the cache)")


def run(args: argparse.Namespace, progress) -> dict:
    from .pipeline import preprocess
    return preprocess(args.clip, args.output, fps=args.fps, size=args.size, models_dir=args.models,
                      progress=progress, start_s=args.start, end_s=args.end, audio=args.audio,
                      audio_offset=args.audio_offset, channel=args.channel,
                      sequence_fps=args.sequence_fps, audio_track=args.audio_track, video_stream=args.video_stream,
                      replace=args.replace, audio_from_first_sample=args.audio_from_first_sample)
