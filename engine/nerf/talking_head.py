"""Rendering a subject's trained head (TalkingHead): a frame of the subject saying an audio window.

The NeRF is evaluated only for the pixels the head's occupied cells can cover, at the head's working
resolution (HeadConfig.size), and scaled up to the subject's size; the head is composited over the
torso (the frame's own torso plate at its own pose, else the torso network) and the background plate.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import EngineError
from ..subject.format import LABEL_HEAD
from .config import TrainingRecord
from .dataset import follows_mouth_curves
from .device import pick_device
from .model import HeadModel
from .raymarch import Rays, pixel_rays, project

RENDER_CHUNK = 8192  # rays per field pass when rendering: bounds memory
HEAD_GROWTH = 8      # pixels around the frame's parsed head that the rendered head may reach
# A frame not trained on takes the appearance (latent code) of the trained frames nearest it in time, as
# many as this many seconds of the clip holds, not the whole clip's: light and exposure drift, and an edited
# clip cuts between shots. On David_Cameron's clip (four shots, the held-out frames in a darker one) the
# clip's mean code rendered the held-out face 15/255 too bright (face PSNR 26.62 dB; 28.25 with its
# neighbours' codes; three other subjects within 0.04 dB).
NEIGHBOUR_SECONDS = 4.0


class TalkingHead:
    """A subject's trained head, ready to render frames."""

    def __init__(self, subject, model: HeadModel, training: TrainingRecord, device: torch.device):
        self.subject, self.model, self.training, self.device = subject, model, training, device
        config = model.config
        self.config = config
        self.audio_encoder: str = config.audio_encoder
        self.audio_window: int = config.audio_window
        self.size: int = subject.size           # frames come out at the subject's size...
        self.work_size: int = config.size       # ...the head is rendered at the NeRF's (Preset.max_size)
        self.samples: int = config.samples
        self.intrinsics = dict(config.intrinsics)
        self.latent_row = {f: row for row, f in enumerate(config.train_frames)}
        self.train_frames = np.asarray(config.train_frames, np.int64)
        self.train_shots = subject.shot_of(self.train_frames)
        self.neighbours = max(1, int(round(NEIGHBOUR_SECONDS * subject.fps)))
        self.expression_indices = list(config.expression_indices)
        # Trained on the mouth curves (--expression all): they, not only the audio, shape the mouth.
        self.follows_mouth_curves = follows_mouth_curves(self.expression_indices)
        self.reference_pose = np.asarray(config.reference_pose, np.float32)
        self.torso_trained = "torso" in training.stages_done
        self._background = None
        self._occupied = self._occupied_cells()  # the grid of a trained head does not change

    @classmethod
    def load(cls, subject, device: str = "auto") -> "TalkingHead":
        from .checkpoint import load_weights
        from .config import read_head_json
        weights, config_path = subject.head_weights_path, subject.head_config_path
        if not weights.is_file() or not config_path.is_file():
            raise EngineError(f"{subject.root} has no trained talking-head model",
                              f"run `python -m engine train {subject.root}` first", path=str(subject.model_dir))
        config, training = read_head_json(config_path)
        torch_device = pick_device(device)
        model = HeadModel(config, use_tcnn=False)
        tensors, _ = load_weights(weights, torch_device)
        model.load_weights(tensors)
        if not model.has_expression_range():  # a head trained before heads kept it: its subject's tracks give it
            train = subject.tracks["blendshapes"][list(config.train_frames)][:, list(config.expression_indices)]
            model.set_expression_range(torch.from_numpy(train.astype(np.float32)))
        model.to(torch_device).eval()
        return cls(subject, model, training, torch_device)

    @property
    def background(self) -> np.ndarray:
        if self._background is None:
            self._background = self.subject.background().astype(np.float32) / 255.0
        return self._background

    def _latent_rows(self, frame_index: int) -> torch.Tensor:
        """Rows of the latent tables whose mean is a frame's appearance: its own when it was trained on, else
        those of the trained frames nearest it in time (NEIGHBOUR_SECONDS' worth), in its own shot where that
        has any (an edited clip's shots differ in light)."""
        row = self.latent_row.get(int(frame_index))
        if row is not None:
            rows = np.array([row])
        else:
            distance = np.abs(self.train_frames - int(frame_index)).astype(np.float64)
            same_shot = self.train_shots == self.subject.shot_of(int(frame_index))
            if same_shot.any():
                distance[~same_shot] = np.inf
            nearest = np.argsort(distance, kind="stable")[:self.neighbours]
            rows = nearest[np.isfinite(distance[nearest])]
        return torch.from_numpy(rows).to(self.device)

    def _torso_layer(self, frame_index: int, pose: np.ndarray, exact_pose: bool):
        """(rgb premultiplied (S,S,3), alpha (S,S)) of the torso over nothing, at the subject's size."""
        if exact_pose or not self.torso_trained:
            # At the frame's own pose the preprocessed torso plate is exact: head removed, neck filled.
            torso = self.subject.torso(frame_index).astype(np.float32) / 255.0
            return torso, None
        from .dataset import pose_vector, resize_square
        s = self.work_size
        ys, xs = np.mgrid[0:s, 0:s]
        uv = torch.from_numpy(np.stack([(xs.reshape(-1) + 0.5) / s, (ys.reshape(-1) + 0.5) / s], -1).astype(np.float32))
        pv = torch.from_numpy(pose_vector(pose[None], self.reference_pose)).expand(len(uv), -1)
        latent = self.model.torso_latents_for(self._latent_rows(frame_index)).mean(0, keepdim=True)
        uv, pv = uv.to(self.device), pv.to(self.device)
        rgb, alpha = self.model.torso(uv, pv, latent.expand(len(uv), -1))
        rgb = (rgb * alpha[:, None]).reshape(s, s, 3).cpu().numpy()
        return resize_square(rgb, self.size), resize_square(alpha.reshape(s, s).cpu().numpy(), self.size)

    @torch.inference_mode()
    def render(self, frame_index: int, audio_window: np.ndarray, blendshapes: np.ndarray | None = None,
               pose: np.ndarray | None = None, rgba: bool = False, within: np.ndarray | None = None) -> np.ndarray:
        """The head over the torso (or, rgba, over transparency), (S, S, 3|4) float in [0, 1].

        within: an (S, S) mask; only the head pixels inside it are rendered (the rest shows the torso
        layer). Portrait-Sync keeps only the face of a render, so a composited render needs no more."""
        tracks = self.subject.tracks
        if not 0 <= frame_index < self.subject.n_frames:
            raise EngineError(f"frame {frame_index} is outside the subject (0..{self.subject.n_frames - 1})",
                              "pick a frame of the training clip", path=str(self.subject.root))
        own_pose = tracks["pose"][frame_index]
        pose = own_pose if pose is None else np.asarray(pose, np.float32)
        exact_pose = bool(np.allclose(pose, own_pose, atol=1e-5))
        blendshapes = tracks["blendshapes"][frame_index] if blendshapes is None else np.asarray(blendshapes, np.float32)
        window = np.asarray(audio_window, np.float32)
        if window.shape != (self.audio_window, self.config.audio_dim):
            raise EngineError(f"audio window has shape {window.shape}, expected "
                              f"({self.audio_window}, {self.config.audio_dim}) from the '{self.audio_encoder}' encoder",
                              "compute the features with engine.audio.features.get_encoder(head.audio_encoder)")

        import cv2
        from .dataset import resize_square
        w = self.work_size
        head_rgb = np.zeros((w, w, 3), np.float32)
        head_alpha = np.zeros((w, w), np.float32)
        pixels = self._head_pixels(pose, self.intrinsics, w)
        if exact_pose:
            # At the frame's own pose the head can only be where the parsing saw it (grown for a mouth
            # that opens wider than in the frame); everywhere else the torso plate is already right.
            seen = resize_square((self.subject.parsing(frame_index) == LABEL_HEAD).astype(np.uint8), w, nearest=True)
            pixels &= cv2.dilate(seen, np.ones((2 * HEAD_GROWTH + 1,) * 2, np.uint8)) > 0
        if within is not None:  # one pixel more: upsampling to the subject's size reads the neighbours
            inside = resize_square((within > 0).astype(np.uint8), w, nearest=True)
            pixels &= cv2.dilate(inside, np.ones((3, 3), np.uint8)) > 0
        ys, xs = np.nonzero(pixels)
        if len(xs):
            rgb, alpha = self._render_pixels(pose, xs, ys, window, blendshapes[self.expression_indices],
                                             self._latent_rows(frame_index))
            head_rgb[ys, xs] = rgb
            head_alpha[ys, xs] = alpha
        head_rgb, head_alpha = resize_square(head_rgb, self.size), resize_square(head_alpha, self.size)

        torso_rgb, torso_alpha = self._torso_layer(frame_index, pose, exact_pose)
        if rgba:
            if torso_alpha is None:  # the torso plate has the background in it: cut it out with the parsing
                torso_alpha = (self.subject.parsing(frame_index) >= 2).astype(np.float32)
                torso_rgb = torso_rgb * torso_alpha[..., None]
            rgb = head_rgb + (1 - head_alpha[..., None]) * torso_rgb
            alpha = head_alpha + (1 - head_alpha) * torso_alpha
            return np.concatenate([rgb, alpha[..., None]], axis=-1).clip(0, 1)
        under = torso_rgb if torso_alpha is None else torso_rgb + (1 - torso_alpha[..., None]) * self.background
        return (head_rgb + (1 - head_alpha[..., None]) * under).clip(0, 1)

    def _render_pixels(self, pose, xs, ys, window, expression, latent_rows):
        """Premultiplied head colour (P, 3) and opacity (P,) of pixels (xs, ys)."""
        device = self.device
        codes = self.model.frame_codes(torch.from_numpy(window)[None].to(device),
                                       torch.from_numpy(np.asarray(expression, np.float32))[None].to(device))
        latents = self.model.latents_for(latent_rows).mean(0, keepdim=True)
        c2w = torch.from_numpy(pose.astype(np.float32)).to(device)
        rgb_out, alpha_out = [], []
        for start in range(0, len(xs), RENDER_CHUNK):
            x = torch.from_numpy(xs[start:start + RENDER_CHUNK].astype(np.float32)).to(device)
            y = torch.from_numpy(ys[start:start + RENDER_CHUNK].astype(np.float32)).to(device)
            origins, directions = pixel_rays(c2w.expand(len(x), 4, 4), self.intrinsics, x, y)
            rays = Rays(origins, directions, torch.zeros(len(x), dtype=torch.int64, device=device))
            out = self.model.render_head(rays, codes, latents, self.samples)
            rgb_out.append(out.rgb.cpu().numpy())
            alpha_out.append(out.opacity.cpu().numpy())
        return np.concatenate(rgb_out), np.concatenate(alpha_out)

    def _occupied_cells(self) -> tuple[np.ndarray, float]:
        """Centres of the occupied cells merged 2x2x2 (8x fewer points to project every frame) and their size."""
        grid = self.model.grid
        r = grid.resolution
        occupied = grid.occupied.reshape(1, 1, r, r, r).float()
        coarse = torch.nn.functional.max_pool3d(occupied, 2)[0, 0].cpu().numpy() > 0
        ijk = np.argwhere(coarse).astype(np.float32)
        lo, hi = grid.lo.cpu().numpy(), grid.hi.cpu().numpy()
        return lo + (ijk + 0.5) / coarse.shape[0] * (hi - lo), float((hi - lo).max()) * 2 / r

    def _head_pixels(self, c2w: np.ndarray, intrinsics: dict, size: int) -> np.ndarray:
        """(size, size) bool: pixels whose rays can meet an occupied cell (each merged cell's centre
        projected and grown by the merged cell's reach in pixels)."""
        import cv2
        centres, cell = self._occupied
        pixels, depth = project(centres, c2w.astype(np.float64), intrinsics)
        front = depth > 0
        px, py = np.floor(pixels[front]).astype(np.int64).T
        inside = (px >= 0) & (py >= 0) & (px < size) & (py < size)
        covered = np.zeros((size, size), np.uint8)
        covered[py[inside], px[inside]] = 1
        # Half the merged cell's diagonal, in pixels at the nearest depth, plus one for the floor().
        nearest = max(float(depth[front].min()), 1e-3) if front.any() else None
        reach = int(np.ceil(intrinsics["fx"] * cell * 0.87 / nearest)) + 1 if nearest else 1
        return cv2.dilate(covered, np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)) > 0
