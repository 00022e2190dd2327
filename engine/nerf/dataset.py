"""A subject's training data: frames, torso plates, head and lip boxes, poses, conditioning.

Rays are drawn only inside each frame's head box (the head label of the parsing, dilated); the
lip box comes from MediaPipe's lip landmarks. Audio features are computed once from
SUBJECT/audio.wav at the subject's frame rate, with the encoder the model records.

The pixels stay in memory up to IN_MEMORY_PIXELS; a longer clip's are kept in a scratch file in the
subject's cache folder and mapped (the system keeps in memory what it can spare), so memory stays
bounded whatever the clip's length: at 256 px a minute of frames is 0.7 GB, at 512 px 2.7 GB.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from ..arkit import ARKIT_INDEX, ARKIT_NAMES, MOUTH_AND_JAW, UPPER_FACE
from ..errors import EngineError
from ..subject.format import LABEL_HEAD, Subject

# MediaPipe face mesh: the outer lip contour; the eyelids and brows of both eyes.
LIP_LANDMARKS = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185]
EYE_LANDMARKS = [33, 133, 159, 145, 160, 144, 158, 153, 70, 105, 107,       # left eye and brow
                 263, 362, 386, 374, 387, 373, 385, 380, 300, 334, 336]     # right eye and brow
HEAD_MARGIN = 6  # pixels around the head mask where rays still learn "empty"
MOUTH_MIN_STD = 0.01  # mouth curves that barely move in the clip carry no signal for the audio code
# Frame draws (training_frame_weights): a frame's state is binned at percentiles of the clip's own curves;
# a share of the draws goes by rarity of that state rather than uniformly. Jaw, lids and brows are binned
# jointly (a blink during a wide vowel is its own state); the lips' other shapes each on their own (joined
# with the first three they would leave one bin per frame), with half of the rare draws.
STATE_CURVES = (("jawOpen",), ("eyeBlinkLeft", "eyeBlinkRight"), ("browInnerUp", "browOuterUpLeft", "browOuterUpRight"))
LIP_SHAPE_CURVES = (("mouthShrugLower", "mouthShrugUpper"),                                # pushed up (a pout)
                    ("mouthPucker", "mouthFunnel"),                                        # rounded
                    ("mouthPressLeft", "mouthPressRight", "mouthRollLower", "mouthRollUpper"),  # pressed, rolled in
                    ("mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight"))  # spread
STATE_PERCENTILES = (50, 75, 90, 97)
RARE_STATE_SHARE = 0.6
LIP_SHAPE_SHARE = 0.5  # of the rare draws
MAX_DRAW_BOOST = 8.0  # no frame drawn more than this many times as often as uniformly (a lone odd frame)
IN_MEMORY_PIXELS = 2 << 30   # bytes of frames, torso plates and head masks held in memory; more go to disk


def _state_bins(curves: np.ndarray, names) -> np.ndarray:
    """(frames,) bin of the mean of the named curves, at STATE_PERCENTILES of the frames' own values."""
    value = curves[:, [ARKIT_NAMES.index(n) for n in names]].mean(axis=1)
    return np.searchsorted(np.unique(np.percentile(value, STATE_PERCENTILES)), value, side="right")


def _rarity(state: np.ndarray) -> np.ndarray:
    """(frames,) draw probability giving each occupied state the same share, split among its frames."""
    _, cell, counts = np.unique(state, return_inverse=True, return_counts=True)
    return 1.0 / (counts[cell] * len(counts))


def expression_indices(expression: str) -> list[int]:
    """'upper' (SyncTalk's 7 brow and blink values) or 'all' (the 52 ARKit values)."""
    if expression == "all":
        return list(range(len(ARKIT_NAMES)))
    if expression == "upper":
        return [ARKIT_NAMES.index(name) for name in UPPER_FACE]
    raise EngineError(f"unknown expression set '{expression}'", "use 'upper' or 'all'")


def follows_mouth_curves(indices) -> bool:
    """Whether an expression set (ARKit indices) holds the mouth curves: such a head's mouth follows them."""
    return any(ARKIT_INDEX[name] in indices for name in MOUTH_AND_JAW)


def audio_features(subject: Subject, encoder_name: str) -> np.ndarray:
    """(n_frames, dim) features of SUBJECT/audio.wav aligned to the subject's frames (cached in the subject)."""
    from ..audio.features import get_encoder, subject_speech
    return subject_speech(subject).per_frame(get_encoder(encoder_name), subject.fps, 0, subject.n_frames)


def working_size(subject_size: int, max_size: int | None) -> int:
    """The NeRF's resolution for a subject: its own, or at most `max_size` (Preset.max_size says why)."""
    return subject_size if max_size is None else min(subject_size, max_size)


def resize_square(image: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """A square image scaled to (size, size): area filter when shrinking, linear when growing."""
    import cv2
    if image.shape[0] == size:
        return image
    interpolation = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if size < image.shape[0] else cv2.INTER_LINEAR)
    return cv2.resize(image, (size, size), interpolation=interpolation)


def scaled_intrinsics(intrinsics: dict, scale: float) -> dict:
    """Pinhole intrinsics of the same camera with images `scale` times as wide (pixel edges at 0)."""
    return {k: float(v) * scale if k in ("fx", "fy", "cx", "cy") else float(v) for k, v in intrinsics.items()}


def box_of(mask: np.ndarray, margin: int, size: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), exclusive end, of a boolean mask grown by margin; the whole image if empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return 0, 0, size, size
    return (max(0, xs.min() - margin), max(0, ys.min() - margin),
            min(size, xs.max() + 1 + margin), min(size, ys.max() + 1 + margin))


def landmark_box(points: np.ndarray, margin: float, size: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), exclusive end, around 2D points (pixels), grown by `margin` of their width."""
    grow = margin * (points[:, 0].max() - points[:, 0].min())
    return (int(max(0, points[:, 0].min() - grow)), int(max(0, points[:, 1].min() - grow)),
            int(min(size, points[:, 0].max() + grow + 1)), int(min(size, points[:, 1].max() + grow + 1)))


def pose_vector(c2w: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(N, 4, 4) -> (N, 12): the pose relative to the reference (rotation - I, translation), for the torso."""
    relative = np.linalg.inv(reference)[None] @ c2w
    rotation = relative[:, :3, :3] - np.eye(3)[None]
    return np.concatenate([rotation.reshape(-1, 9), relative[:, :3, 3]], axis=1).astype(np.float32)


class PixelScratch:
    """Where SubjectData's pixel arrays live: in memory when they come to at most IN_MEMORY_PIXELS bytes, else
    in files of a scratch folder in `folder` (the subject's cache), mapped. The folder goes with this object or
    at exit; where it cannot (killed, or Windows, which keeps a mapped file), the next training of the subject
    removes it."""

    def __init__(self, folder: Path, total_bytes: int):
        from ..files import remove_leftovers, require_free_space, temp_prefix
        remove_leftovers(folder)
        self._tempdir = None
        if total_bytes > IN_MEMORY_PIXELS:
            Path(folder).mkdir(parents=True, exist_ok=True)
            require_free_space(folder, total_bytes, f"keeping the {total_bytes / 2**30:.1f} GB of training "
                               "frames on disk (a long clip; or make the subject from part of it)")
            self._tempdir = tempfile.TemporaryDirectory(prefix=temp_prefix("pixels"), dir=folder,
                                                        ignore_cleanup_errors=True)

    def array(self, name: str, shape: tuple, dtype) -> np.ndarray:
        if self._tempdir is None:
            return np.empty(shape, dtype)
        from ..files import preallocated_memmap
        return preallocated_memmap(Path(self._tempdir.name) / f"{name}.u8", dtype, shape)


class SubjectData:
    """Everything training reads, for the train frames and the held-out ones."""

    def __init__(self, subject: Subject, audio: np.ndarray, expression: str = "upper", window: int = 8,
                 max_frames: int | None = None, progress=None, size: int | None = None):
        from ..audio.features import windows
        self.subject, self.size = subject, size or subject.size
        scale = self.size / subject.size
        self.train_frames = subject.split("train")
        self.test_frames = subject.split("test")
        if max_frames is not None:  # tests and quick looks: a spread of the frames
            self.train_frames = self.train_frames[np.linspace(0, len(self.train_frames) - 1,
                                                              min(max_frames, len(self.train_frames))).astype(int)]
        if len(self.train_frames) == 0:
            raise EngineError(f"{subject.root}: no training frames", "preprocess a longer clip", path=str(subject.root))
        if len(self.test_frames) == 0:  # a very short clip: hold out its last train frame for the PSNR readout
            self.test_frames = self.train_frames[-1:]
        self.frames = np.concatenate([self.train_frames, self.test_frames])
        tracks = subject.tracks
        self.poses = tracks["pose"].astype(np.float32)
        self.reference_pose = self.poses[self.train_frames].mean(axis=0)
        self.expressions = tracks["blendshapes"][:, expression_indices(expression)].astype(np.float32)
        self.audio_windows = windows(audio.astype(np.float32), window)
        self.intrinsics = scaled_intrinsics(subject.intrinsics, scale)

        # Pixels, kept as uint8: 1,500 frames at 256x256 are about 700 MB with the torso plates and masks.
        stage = progress.stage("loading frames", len(self.frames)) if progress else None
        n, s = len(self.frames), self.size
        self._scratch = PixelScratch(subject.cache_dir, n * s * s * (3 + 3 + 1))   # colour, torso, head mask
        self.rgb = self._scratch.array("rgb", (n, s, s, 3), np.uint8)
        self.torso = self._scratch.array("torso", (n, s, s, 3), np.uint8)
        self.head_box = np.empty((n, 4), np.int64)
        self.head_mask = self._scratch.array("head_mask", (n, s, s), bool)
        landmarks = tracks["landmarks"]
        self.lip_box = np.empty((n, 4), np.int64)
        self.eye_box = np.empty((n, 4), np.int64)
        for row, index in enumerate(self.frames):
            self.rgb[row] = resize_square(subject.frame(index), s)
            self.torso[row] = resize_square(subject.torso(index), s)
            head = resize_square((subject.parsing(index) == LABEL_HEAD).astype(np.uint8), s, nearest=True) > 0
            self.head_mask[row] = head
            self.head_box[row] = box_of(head, HEAD_MARGIN, s)
            self.lip_box[row] = landmark_box(landmarks[index, LIP_LANDMARKS, :2] * scale, 0.25, s)
            self.eye_box[row] = landmark_box(landmarks[index, EYE_LANDMARKS, :2] * scale, 0.1, s)
            if stage:
                stage.advance()
        if stage:
            stage.close()
        self.row_of = {int(index): row for row, index in enumerate(self.frames)}
        self.n_train = len(self.train_frames)
        self.frame_weights = self.training_frame_weights()
        self.eye_weights = self.eye_frame_weights()

    def training_frame_weights(self) -> np.ndarray:
        """(n_train,) draw probabilities of the training frames.

        A wide-open mouth, a closed eye, raised brows or a pout are rare in talking footage (a blink is 2-4 %
        of the frames), so uniform draws teach the field the average face: held-out renders then open the
        mouth half way, never blink, and keep the brows down where the person raises them (speech_coach's
        held-out stretch: browInnerUp 0.85 against 0.24 in training, 26 dB against 28.3 on its shot's
        training frames). Part of the draws go uniformly, the rest by rarity of the frame's state: each
        occupied bin gets the same share, so blinks and wide vowels are seen several times more often (any
        one frame at most MAX_DRAW_BOOST times). The lips' other shapes have their own half of the rare
        draws: binned by jaw, lids and brows alone, cnn2_anchor's pouts (mouthShrugLower above its 99th
        percentile, and 0.84 through 19 of its 45 scored held-out frames, rendered at 25 dB against 31 for
        the rest) fell in common bins and were drawn 0.63 times as often as uniformly; now 1.7 times (a quiet
        `preview` training: those frames 25.3 -> 26.7 dB, the whole window 28.44 -> 29.08)."""
        curves = self.subject.tracks["blendshapes"][self.train_frames]
        joint = np.zeros(self.n_train, np.int64)
        for names in STATE_CURVES:
            joint = joint * (len(STATE_PERCENTILES) + 1) + _state_bins(curves, names)
        lip_shapes = np.mean([_rarity(_state_bins(curves, names)) for names in LIP_SHAPE_CURVES], axis=0)
        return self._with_uniform_share((1 - LIP_SHAPE_SHARE) * _rarity(joint) + LIP_SHAPE_SHARE * lip_shapes)

    def eye_frame_weights(self) -> np.ndarray:
        """(n_train,) draw probabilities of the frames whose eyes-and-brows box a step learns from: by the
        rarity of the lids' state alone. Binned jointly with the jaw and brows, a blink shares its bins with
        the mouth's and brows' states, and a field whose budget cut its steps never learnt to close its lids:
        humanomni_zh trained busy (6,988 head and 1,666 lip steps) rendered its twelve deepest training
        blinks with the lids as open as at rest (MediaPipe's eye opening 11-12 px against the truth's
        0.6-1.8), and 2,500 more lip steps did not close them."""
        curves = self.subject.tracks["blendshapes"][self.train_frames]
        return self._with_uniform_share(_rarity(_state_bins(curves, STATE_CURVES[1])))

    def _with_uniform_share(self, rare: np.ndarray) -> np.ndarray:
        """Draw probabilities: RARE_STATE_SHARE of them by `rare`, the rest uniform, no frame above MAX_DRAW_BOOST."""
        weights = np.minimum((1 - RARE_STATE_SHARE) / self.n_train + RARE_STATE_SHARE * rare,
                             MAX_DRAW_BOOST / self.n_train)
        return weights / weights.sum()

    def mouth_channels(self) -> list[int]:
        """ARKit indices of the mouth and jaw curves that move in the training frames."""
        curves = self.subject.tracks["blendshapes"][self.train_frames]
        return [i for i in (ARKIT_NAMES.index(n) for n in MOUTH_AND_JAW) if curves[:, i].std() > MOUTH_MIN_STD]

    def mouth_targets(self, channels: list[int]) -> np.ndarray:
        """(n_subject_frames, len(channels)) mouth curves standardised over the training frames."""
        curves = self.subject.tracks["blendshapes"][:, channels].astype(np.float32)
        train = curves[self.train_frames]
        return (curves - train.mean(0)) / np.maximum(train.std(0), MOUTH_MIN_STD)

    # Conditioning of the frames in rows -> tensors
    def conditioning(self, rows: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index = self.frames[rows]
        return (torch.from_numpy(self.audio_windows[index]).to(device),
                torch.from_numpy(self.expressions[index]).to(device),
                torch.from_numpy(self.poses[index]).to(device))

    def pixels_in_boxes(self, rows: np.ndarray, boxes: np.ndarray, per_frame: int, rng: np.random.Generator):
        """Uniform random pixels inside each row's box -> (frame slot, x, y) arrays of len(rows) * per_frame."""
        slot = np.repeat(np.arange(len(rows)), per_frame)
        b = boxes[np.repeat(rows, per_frame)]
        x = b[:, 0] + (rng.random(len(slot)) * (b[:, 2] - b[:, 0])).astype(np.int64)
        y = b[:, 1] + (rng.random(len(slot)) * (b[:, 3] - b[:, 1])).astype(np.int64)
        return slot, x, y

    @staticmethod
    def inside(boxes: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Whether pixel (x[i], y[i]) lies inside boxes[i] (x0, y0, x1, y1, exclusive end)."""
        return (x >= boxes[:, 0]) & (x < boxes[:, 2]) & (y >= boxes[:, 1]) & (y < boxes[:, 3])

    def box_pixels(self, box) -> tuple[np.ndarray, np.ndarray]:
        x0, y0, x1, y1 = (int(v) for v in box)
        ys, xs = np.mgrid[y0:y1, x0:x1]
        return xs.reshape(-1), ys.reshape(-1)

    def carve(self, grid, views: int = 48, inside_fraction: float = 0.9, dilate: int = 9) -> torch.Tensor:
        """Grid cells that project inside the dilated head mask in most training views."""
        import cv2
        from .raymarch import project
        centres = grid.cell_centres().numpy()
        rows = np.linspace(0, self.n_train - 1, min(views, self.n_train)).astype(int)
        kernel = np.ones((dilate, dilate), np.uint8)
        inside = np.zeros(len(centres), np.int32)
        for row in rows:
            mask = cv2.dilate(self.head_mask[row].astype(np.uint8), kernel) > 0
            pixels, depth = project(centres, self.poses[self.frames[row]], self.intrinsics)
            px, py = np.floor(pixels[:, 0]).astype(int), np.floor(pixels[:, 1]).astype(int)
            visible = (depth > 0) & (px >= 0) & (py >= 0) & (px < self.size) & (py < self.size)
            hit = np.zeros(len(centres), bool)
            hit[visible] = mask[py[visible], px[visible]]
            inside += hit
        return torch.from_numpy(inside >= inside_fraction * len(rows))
