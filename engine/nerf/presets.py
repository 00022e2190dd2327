"""Training presets: the trade-off between time and quality, by device.

Measured costs (README.md has the table): `tiny` seconds (tests), `preview` at most 38 minutes
of NeRF stages on a 2-core CPU (its time budget), `standard` and `paper` for a GPU (`paper` = SyncTalk's
schedule: 65,536 rays a step, ~60k head steps, lip fine-tuning to ~100k).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import EngineError


@dataclass(frozen=True)
class TrainingConfig:
    """Loss weights and schedule constants of the NeRF stages (engine/nerf/stages.py); every preset's
    unless it gives its own."""
    # Loss weights (the photometric loss weighs 1)
    outside_opacity: float = 1e-2       # the head's opacity on rays outside its mask: keeps it off torso and background
    attention_sparsity: float = 1e-4    # region attention: audio acts where it must, not everywhere
    audio_readout: float = 0.1          # the mouth curves read out of the audio code (field.py says why)
    lip_lpips: float = 0.01             # LPIPS of the lip stage's boxes and patches, when its weights are present
    # Where the head stage's rays go: shares drawn inside the lip box and the eyes-and-brows box, the rest
    # in the head box. The parts that move are a few percent of the head; uniform rays would leave them
    # to the mean face.
    lip_box_rays: float = 0.25
    eye_box_rays: float = 0.10
    # The audio readout: frames a step, input dropout against over-fitting the clip, readout-only steps
    # before the NeRF starts.
    audio_batch: int = 128
    audio_dropout: float = 0.3
    audio_warmup_steps: int = 500
    # Schedule
    grid_warmup_steps: int = 64         # every allowed cell stays occupied until the field has learnt something
    head_budget: float = 0.66           # shares of Preset.time_budget_s (Trainer.allowance adds what earlier stages left)
    lip_budget: float = 0.20
    torso_budget: float = 0.06
    mouth_gain_budget: float = 0.08     # the mouth's gain, measured after the stages (mouth_gain.py); the head's without one
    lr_decay: float = 0.1               # learning rates fall exponentially to this fraction over a stage
    # The lip stage fine-tunes the head at this fraction of its learning rates. A head whose steps the budget
    # cut draws its mouth short; 0.2 left it there (speech_coach trained busy, a second lip stage on it:
    # training frames opened 0.54 of the person's at gain 1, 0.71 at 2), 0.6 moved it (0.60, 0.80), face
    # PSNR the same (28.42 / 28.39 dB).
    lip_lr_scale: float = 0.6
    lip_min_patch: int = 16             # the lip stage's random patches: size // 8 pixels, at least this
    # Heads trained on the mouth curves (--expression all): the share of training frames whose field sees
    # the neutral audio code instead of their own. A frame's own audio code nearly identifies the frame,
    # so a field that always has it learns each training mouth by heart through it, renders held-out
    # mouths half open and hardly follows the curves (a rig's hand edits would not show); on these
    # frames the mouth has to come from the curves. Rendering always uses the frame's own code.
    audio_code_dropout: float = 0.5
    expression_min_std: float = 0.02    # curves that barely move stay small after standardising (tracking noise ~0.005)
    # Noise added to the blendshapes a training frame is conditioned on (in curve units, 0-1). Trained on the
    # exact tracked values, the field learns each frame by heart through them: cnn2_anchor's head lost 4 dB
    # on its own training frames when their curves moved by 0.01 (the colour of the whole face shifted),
    # and rendered held-out frames, whose curves no training frame has, 3 dB below the training frames.
    expression_noise: float = 0.02


@dataclass(frozen=True)
class Preset:
    name: str
    description: str            # what it is for, in words: the command line's help and Blender's menu show it
    head_steps: int
    lip_steps: int
    torso_steps: int
    rays_per_step: int          # head stage
    frames_per_step: int        # frames the rays of one step are drawn from
    samples: int                # stratified candidates per ray (before the occupancy grid)
    torso_rays: int
    lr_grid: float = 1e-2
    lr_net: float = 2e-3
    grid_resolution: int = 128
    grid_update_every: int = 16
    checkpoint_every: int = 500
    eval_every: int = 250
    encoding: dict = field(default_factory=lambda: dict(levels=12, features=1, base_resolution=64,
                                                       finest_resolution=512, log2_table=14))
    max_frames: int | None = None   # use a spread of this many training frames (tests)
    # Working resolution: the NeRF trains and renders at most this many pixels across; the head is
    # scaled up to the subject's size before it is composited (torso, background and the paste-back
    # into the source stay at full size). On a CPU a 512-px head costs 4x the rays of a 256-px one
    # for every held-out frame and render, and spreads the same training rays 4x thinner.
    max_size: int | None = None
    # Wall-clock budget of the NeRF stages: each stage ends at its step count or its share of the
    # budget (with what the stages before it left unused), whichever comes first, and its learning-rate
    # schedule follows the same clock. This keeps `preview` inside its promise on a machine that is
    # slower or busier than expected.
    time_budget_s: float | None = None
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    "tiny": Preset("tiny", "A smoke test: a few steps, a blurred face (checks the set-up end to end in seconds)",
                   head_steps=40, lip_steps=10, torso_steps=20, rays_per_step=512, frames_per_step=2,
                   samples=32, torso_rays=1024, grid_resolution=32, grid_update_every=8, checkpoint_every=20,
                   eval_every=20, encoding=dict(levels=6, features=1, base_resolution=16, finest_resolution=128,
                                                log2_table=12), max_frames=12, max_size=128),
    # demo's budget: on a 2-core machine running at 0.6x its usual speed, 150 s gave the head 566 steps and
    # a shut mouth; 220 s gave 858 and a mouth that opens and closes (905 did on a faster day). Its head has
    # no mouth gain to measure, so it also has the gain's share (Trainer.allowance).
    "demo": Preset("demo", "The demo's: about 4 minutes on a CPU, a recognisable face whose mouth follows the speech",
                   head_steps=1500, lip_steps=400, torso_steps=150, rays_per_step=1024, frames_per_step=4,
                   samples=32, torso_rays=2048, grid_resolution=64, checkpoint_every=500, eval_every=250,
                   encoding=dict(levels=10, features=1, base_resolution=16, finest_resolution=256, log2_table=14),
                   time_budget_s=220, max_size=128),
    # preview's head steps: a quiet 2-core machine does them in about 20-25 minutes; a busy one stops at
    # the budget. 7,000 left a quiet machine idle for a third of the budget and the face soft (speech_coach
    # quiet: 27.83 -> 28.46 dB face PSNR, eye r 0.72 -> 0.94 with 12,000).
    "preview": Preset("preview", "Made for a CPU: at most 38 minutes, a rough likeness",
                      head_steps=12000, lip_steps=2500, torso_steps=800, rays_per_step=1536,
                      frames_per_step=4, samples=40, torso_rays=4096, eval_every=200, time_budget_s=38 * 60,
                      max_size=256),
    "standard": Preset("standard", "For a GPU: about half an hour",
                       head_steps=20000, lip_steps=8000, torso_steps=5000, rays_per_step=16384,
                       frames_per_step=8, samples=96, torso_rays=16384, checkpoint_every=2000, eval_every=1000),
    "paper": Preset("paper", "SyncTalk's own schedule (hours on a GPU)",
                    head_steps=60000, lip_steps=40000, torso_steps=20000, rays_per_step=65536,
                    frames_per_step=1, samples=128, torso_rays=65536, checkpoint_every=5000, eval_every=2000),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise EngineError(f"unknown preset '{name}'", f"choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
