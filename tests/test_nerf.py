"""The NeRF: encoding gradients, ray marching on a known density, and a tiny real training run.

The training tests take a copy of the session's tiny subject (3 s of may_5s at 96x96), train the `tiny`
preset in a child process interrupted with Ctrl-C, resume it, and render with TalkingHead.
"""
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.errors import EngineError
from engine.nerf.encoding import HashGrids2D, TriPlaneEncoding, tcnn_available
from engine.nerf.field import FieldSample
from engine.nerf.raymarch import OccupancyGrid, Rays, composite, march, render_rays

ROOT = Path(__file__).resolve().parent.parent


def untrained_copy(subject_dir: Path, folder: Path):
    """A copy of the session's subject in `folder`, without its trained model."""
    import shutil
    from engine.subject.format import Subject
    shutil.copytree(subject_dir, folder, ignore=shutil.ignore_patterns("model"))
    return Subject(folder)


def tiny_trainer(subject):
    """A Trainer of the `tiny` preset on mel features, before its first step."""
    from engine.nerf.presets import get_preset
    from engine.nerf.trainer import Trainer
    from engine.progress import Progress
    return Trainer(subject, get_preset("tiny"), Progress("quiet"), audio_encoder="mel")


# Encoding
def test_custom_backward_matches_autograd_of_naive_gather():
    torch.manual_seed(0)
    fast = HashGrids2D(3, levels=4, features=2, base_resolution=8, finest_resolution=64, log2_table=8)
    naive = HashGrids2D(3, levels=4, features=2, base_resolution=8, finest_resolution=64, log2_table=8,
                        naive_backward=True)
    with torch.no_grad():
        fast.table.normal_()
        naive.table.copy_(fast.table)
    uv = torch.rand(500, 3, 2)
    weights = torch.randn(500, fast.output_dim)
    out_fast, out_naive = fast(uv), naive(uv)
    (out_fast * weights).sum().backward()
    (out_naive * weights).sum().backward()
    assert torch.allclose(out_fast, out_naive, atol=1e-6)
    assert torch.allclose(fast.table.grad, naive.table.grad, atol=1e-5)
    assert fast.table.grad.abs().sum() > 0


def test_custom_backward_passes_gradcheck():
    grid = HashGrids2D(1, levels=2, features=1, base_resolution=4, finest_resolution=8, log2_table=4).double()
    uv = torch.rand(6, 1, 2, dtype=torch.float64)
    from engine.nerf.encoding import _GridGather, corner_indices
    index, weight = corner_indices(uv, grid.layout)
    table = torch.randn_like(grid.table, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _GridGather.apply(t, index, weight), (table,))


def test_dense_levels_interpolate_exactly():
    """A dense level whose table holds x + y: bilinear interpolation of a linear function is exact."""
    grid = HashGrids2D(1, levels=1, features=1, base_resolution=9, finest_resolution=9, log2_table=10)
    scale, resolution, size, _ = grid.layout[0]
    ys, xs = np.divmod(np.arange(size), resolution)
    with torch.no_grad():
        grid.table[:, 0] = torch.from_numpy((xs + 2 * ys).astype(np.float32))
    uv = torch.rand(100, 1, 2) * 0.9
    expected = (uv[:, 0, 0] * scale + 0.5) + 2 * (uv[:, 0, 1] * scale + 0.5)
    assert torch.allclose(grid(uv)[:, 0], expected, atol=1e-4)


@pytest.mark.skipif(not tcnn_available(), reason="tiny-cuda-nn needs CUDA and the tinycudann package; "
                                                 "neither is on the CPU machines this suite runs on")
@pytest.mark.gpu
def test_pure_pytorch_grid_agrees_with_tinycudann():
    from engine.nerf.encoding import TcnnGrid2D
    ours = HashGrids2D(1).cuda()
    theirs = TcnnGrid2D(12, 1, 64, 512, 14).cuda()
    params = next(theirs.parameters())
    assert params.numel() == ours.table.numel()
    with torch.no_grad():
        params.copy_(ours.table.reshape(-1).to(params.dtype))
    uv = torch.rand(4096, 2, device="cuda")
    assert torch.allclose(ours(uv[:, None]), theirs(uv), atol=1e-4)


class _PlaneStandIn(torch.nn.Module):
    """Stands in for TcnnGrid2D, which cannot be built without CUDA: a flat `grid.params` vector in
    tiny-cuda-nn's layout, evaluated by a HashGrids2D over the same numbers (the test above checks, on
    a GPU, that tiny-cuda-nn computes the same thing from them)."""

    def __init__(self, levels, features, base_resolution, finest_resolution, log2_table):
        super().__init__()
        self.reference = [HashGrids2D(1, levels, features, base_resolution, finest_resolution, log2_table)]
        self.grid = torch.nn.Module()
        self.grid.params = torch.nn.Parameter(torch.randn(self.reference[0].table.numel()))
        self.features = features

    def forward(self, uv):
        table = self.grid.params.view(-1, self.features)
        return torch.func.functional_call(self.reference[0], {"table": table}, (uv[:, None],))


def test_a_tinycudann_trained_encoding_saves_the_canonical_layout_and_loads_on_the_pytorch_grid(monkeypatch):
    import engine.nerf.encoding as encoding
    config = dict(levels=4, features=2, base_resolution=8, finest_resolution=32, log2_table=8)
    monkeypatch.setattr(encoding, "TcnnGrid2D", _PlaneStandIn)
    trained = encoding.TriPlaneEncoding(**config, use_tcnn=True)
    state = trained.state_dict()
    assert list(state) == ["grids.table"]                      # one layout on disk, whoever trained it
    cpu = encoding.TriPlaneEncoding(**config)
    cpu.load_state_dict(state)
    points = torch.rand(500, 3)
    assert torch.allclose(cpu(points), trained(points), atol=1e-6)
    again = encoding.TriPlaneEncoding(**config, use_tcnn=True)  # and back onto tiny-cuda-nn's planes
    again.load_state_dict(cpu.state_dict())
    for a, b in zip(again.planes, trained.planes):
        assert torch.equal(a.grid.params, b.grid.params)


@pytest.mark.skipif(not tcnn_available(), reason="tiny-cuda-nn needs CUDA and the tinycudann package; "
                                                 "neither is on the CPU machines this suite runs on")
def test_tinycudann_encoding_round_trips_through_the_canonical_layout():
    trained = TriPlaneEncoding(use_tcnn=True).cuda()
    cpu = TriPlaneEncoding()
    cpu.load_state_dict({k: v.cpu() for k, v in trained.state_dict().items()})
    points = torch.rand(4096, 3)
    assert torch.allclose(cpu(points), trained(points.cuda()).cpu(), atol=1e-4)


# Ray marching
class _Sphere:
    """An analytic RadianceField: constant density and colour inside a ball of radius 0.5 at the box centre."""

    def __init__(self, density: float):
        self.value = density

    def density_at(self, xyz01, codes):
        return ((xyz01 - 0.5).norm(dim=-1) < 0.25).float() * self.value  # radius 0.5 in a box of side 2

    def geometry_at(self, xyz01, codes):
        return self.density_at(xyz01, codes), xyz01

    def colour_at(self, feature, directions, latents):
        return torch.tensor([0.2, 0.6, 0.9]).expand(len(directions), 3)

    def __call__(self, xyz01, directions, codes, latents):
        density = self.density_at(xyz01, codes)
        return FieldSample(density, self.colour_at(xyz01, directions, latents), torch.zeros_like(density), None)


@pytest.mark.parametrize("training", [False, True])
def test_raymarch_renders_a_known_density(training):
    density = 3.0
    grid = OccupancyGrid([-1, -1, -1], [1, 1, 1], resolution=32)
    field = _Sphere(density)
    for _ in range(8):  # each update measures one jittered point a cell; the running max fills the edges
        grid.update(lambda p: field.density_at(p, None), fraction=1.0)
    assert 0 < grid.occupied.float().mean() < 0.2
    offsets = torch.tensor([0.0, 0.2, 0.4, 0.7])   # distance of the ray from the sphere's centre
    origins = torch.stack([offsets, torch.zeros(4), torch.full((4,), 3.0)], dim=-1)
    directions = torch.tensor([0.0, 0.0, -1.0]).expand(4, 3)
    rays = Rays(origins, directions.contiguous(), torch.zeros(4, dtype=torch.int64))
    out = render_rays(field, grid, rays, torch.zeros(1, 1), torch.zeros(1, 4), samples=512, training=training)
    chord = 2 * torch.sqrt((0.25 - offsets ** 2).clamp(min=0))
    expected = 1 - torch.exp(-density * chord)
    assert torch.allclose(out.opacity, expected, atol=0.02)
    assert torch.allclose(out.rgb, expected[:, None] * torch.tensor([0.2, 0.6, 0.9]), atol=0.02)
    hit = offsets < 0.5
    # Depth: the weighted mean distance lies inside the sphere, nearer than its centre (3.0 away).
    depth = out.depth[hit] / out.opacity[hit]
    assert ((depth > 3.0 - 0.5) & (depth < 3.0)).all()


def test_the_density_alone_is_the_density_of_the_whole_geometry():
    """density_at skips the geometry outputs (training's marching pass); it must give the same density."""
    from engine.nerf.field import HeadField
    torch.manual_seed(0)
    field = HeadField(audio_dim=16, n_latents=3, expression_dim=5)
    for parameter in field.parameters():  # away from the initial values, so every output row matters
        torch.nn.init.normal_(parameter, std=0.3)
    points, codes = torch.rand(500, 3), torch.randn(500, 32 + 5)
    with torch.no_grad():
        density, _ = field.geometry_at(points, codes)
        assert torch.allclose(field.density_at(points, codes), density, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("block", [1, 3, 4, 8])
def test_march_in_blocks_gives_the_weights_of_compositing_every_sample(block):
    """Whatever the depth block, marching a sparse set of candidates in (ray, sample) order weighs each as
    compositing the whole ray does; with a stopping threshold, only the points behind the stop get 0."""
    generator = torch.Generator().manual_seed(3)
    n_rays, samples = 37, 23
    density = torch.rand((n_rays, samples), generator=generator) * 4
    density[torch.rand((n_rays, samples), generator=generator) < 0.6] = 0  # empty cells: not candidates
    dt = torch.rand(n_rays, generator=generator) * 0.3 + 0.05
    ray_id, sample_id = (density > 0).nonzero(as_tuple=True)
    alpha = 1 - torch.exp(-density * dt[:, None])
    expected = composite(alpha)[ray_id, sample_id]

    def evaluate(index):
        return density[ray_id[index], sample_id[index]]

    exact = march(evaluate, ray_id, sample_id, dt, n_rays, samples, block, min_transmittance=0.0)
    assert torch.allclose(exact, expected, atol=1e-6)
    stopped = march(evaluate, ray_id, sample_id, dt, n_rays, samples, block, min_transmittance=0.05)
    reached = stopped > 0
    assert torch.allclose(stopped[reached], expected[reached], atol=1e-6)
    # A point is skipped only where less than 5 % of the light reaches its block.
    transmittance_before = 1 - torch.cumsum(composite(alpha), dim=1) + composite(alpha)
    assert (transmittance_before[ray_id, sample_id][~reached] < 0.05 + 1e-6).all()


# Training and rendering on a real subject
@pytest.fixture(scope="module")
def subject_dir(tiny_subject, tmp_path_factory):
    """A copy of the session's tiny subject, which this module trains."""
    import shutil
    folder = tmp_path_factory.mktemp("nerf") / "may"
    shutil.copytree(tiny_subject, folder)
    return folder


TRAIN_ARGS = ["--preset", "tiny", "--audio-encoder", "mel", "--stages", "head,lip,torso"]


def _train_process(subject):
    from conftest import interruptible
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "engine", "train", str(subject), *TRAIN_ARGS, "--progress", "jsonl"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
                            preexec_fn=interruptible)


@pytest.fixture(scope="module")
def trained(subject_dir):
    """Train `tiny` in a child process, Ctrl-C it during the head stage, then resume here to the end."""
    import argparse
    import io

    from engine.nerf import train_command
    from engine.progress import Progress
    process = _train_process(subject_dir)
    events = []
    for line in process.stdout:
        event = json.loads(line)
        events.append(event)
        # Early in the head stage (of 40 steps): the child runs on while this reads its events.
        if event.get("stage") == "train head" and event.get("done", 0) >= 5:
            process.send_signal(signal.SIGINT)
            break
    rest, errors = process.communicate(timeout=120)
    events += [json.loads(line) for line in rest.splitlines()]
    interrupted = {"returncode": process.returncode, "events": events, "stderr": errors,
                   "checkpoint": (subject_dir / "model" / "checkpoint.safetensors").is_file()}
    parser = argparse.ArgumentParser()
    train_command.configure(parser)
    args = parser.parse_args([str(subject_dir), *TRAIN_ARGS, "--resume"])
    stream = io.StringIO()
    progress = Progress("jsonl", stream=stream)
    progress.result(**train_command.run(args, progress))
    return interrupted, [json.loads(line) for line in stream.getvalue().splitlines()]


def test_the_mouth_gain_is_where_the_rendered_mouth_opens_as_far_as_the_persons():
    """mouth_gain.choose_gain: the gain at which the rendered inner-lip gap's spread over the truth's
    reaches 1 (linear between the gains tried around it), the best tried when none reaches it."""
    from engine.nerf.mouth_gain import choose_gain
    assert choose_gain([1.0, 1.5, 2.0], [0.7, 0.9, 1.1]) == pytest.approx(1.75)
    assert choose_gain([1.0, 1.5], [0.8, 1.0]) == pytest.approx(1.5)
    assert choose_gain([1.0], [1.3]) == 1.0                      # already opens as far: left alone
    assert choose_gain([1.0, 1.5, 2.0, 2.5], [0.6, 0.7, 0.8, 0.78]) == 2.0


def test_a_mouth_gain_measure_cut_short_by_time_extrapolates_its_last_two_gains():
    """mouth_gain.extrapolated_gain: the line through the last two gains' ratios to 1, held at the next
    gain of the ladder and where the line through their face PSNR has lost MAX_PSNR_LOSS."""
    from engine.nerf.mouth_gain import MAX_PSNR_LOSS, extrapolated_gain
    # cnn2_anchor's busy training: 0.83 at 1, 0.97 at 1.5, no time for 2.0
    assert extrapolated_gain([[1.0, 0.83, 29.0], [1.5, 0.97, 28.95]], 2.0) == pytest.approx(1.5 + 0.03 / 0.28)
    assert extrapolated_gain([[1.0, 0.5, 29.0], [1.5, 0.6, 28.9]], 2.0) == 2.0            # no further than the ladder
    psnr_held = extrapolated_gain([[1.0, 0.5, 29.0], [1.5, 0.6, 28.7]], 2.0)             # 0.3 dB a half gain
    assert psnr_held < 2.0 and psnr_held == pytest.approx(1.5 + (MAX_PSNR_LOSS - 0.3) / 0.6)
    assert extrapolated_gain([[1.0, 0.8, 29.0], [1.5, 0.7, 28.9]], 2.0) == 1.0            # the mouth shut: the best tried
    assert extrapolated_gain([[1.0, 0.8, 29.0]], 1.5) == 1.0                              # one gain: nothing to extrapolate


def test_a_gain_past_the_psnr_bound_still_moves_the_mouth_towards_the_persons():
    """mouth_gain.bounded_gain: when the next gain costs more face PSNR than allowed, the gain between the
    two where the PSNR reaches the floor or the mouth the person's, whichever comes first (not the last
    gain kept)."""
    from engine.nerf.mouth_gain import bounded_gain
    # 0.886 at 1.5 (29.69 dB); 2.0 opens 0.98 but falls to 29.2, under the floor 29.38: stop where PSNR meets it
    assert bounded_gain([1.5, 0.886, 29.69], [2.0, 0.98, 29.2], 29.38) == pytest.approx(1.5 + 0.5 * 0.31 / 0.49)
    # the mouth reaches the person's before the PSNR floor
    assert bounded_gain([1.5, 0.9, 29.69], [2.0, 1.1, 29.3], 29.38) == pytest.approx(1.75)
    # the last gain kept already at the floor, or a mouth that opened no further: the last gain kept
    assert bounded_gain([1.5, 0.9, 29.3], [2.0, 0.95, 29.0], 29.38) == 1.5
    assert bounded_gain([1.5, 0.9, 29.69], [2.0, 0.85, 29.2], 29.38) == 1.5


def test_the_mouth_gain_is_measured_inside_the_training_budget():
    """On a slow or busy machine the measure takes fewer frames rather than running past the budget."""
    from engine.nerf.mouth_gain import EXPECTED_GAINS, FRAMES, MIN_FRAMES, TIMING_MARGIN, frames_that_fit
    from engine.nerf.presets import PRESETS
    assert frames_that_fit(1000.0, 0.1) == FRAMES                       # a fast machine: every frame
    assert frames_that_fit(180.0, 0.7) == int(180 / (0.7 * TIMING_MARGIN * EXPECTED_GAINS)) < FRAMES
    assert frames_that_fit(10.0, 1.0) == MIN_FRAMES                     # never fewer than a spread
    for preset in PRESETS.values():  # the stages and the gain share one budget: the whole of it, no more
        t = preset.training
        assert t.head_budget + t.lip_budget + t.torso_budget + t.mouth_gain_budget == pytest.approx(1.0)


def test_a_stage_may_use_the_time_the_stages_before_it_left(subject_dir, tmp_path):
    """Trainer.allowance: a head that reaches its steps inside its share leaves the rest to the lip stage (a
    fixed share had cut lieu_60s' lip stage short while the head had time to spare), a head with no mouth gain
    to measure also has the gain's share, and a head that follows the mouth curves leaves that to the gain."""
    from dataclasses import replace
    from engine.nerf.presets import get_preset
    from engine.nerf.trainer import Trainer
    from engine.progress import Progress
    budget = 12.0   # the head's 3 steps took 4.7 s of a 4.4-s allowance at 6 s on a busy CI machine
    preset = replace(get_preset("tiny"), head_steps=3, lip_steps=10 ** 6, torso_steps=3, time_budget_s=budget)
    t = preset.training
    subject = untrained_copy(subject_dir, tmp_path / "budget")
    follows = Trainer(subject, preset, Progress("quiet"), audio_encoder="mel", expression="all")
    assert follows.allowance("head") == pytest.approx(budget * t.head_budget)
    assert follows.allowance("mouth_gain") == pytest.approx(budget * t.mouth_gain_budget)
    trainer = Trainer(subject, preset, Progress("quiet"), audio_encoder="mel")   # the audio alone moves the mouth
    assert trainer.allowance("head") == pytest.approx(budget * (t.head_budget + t.mouth_gain_budget))
    trainer.run(stages=("head", "lip"))
    head_left = budget * (t.head_budget + t.mouth_gain_budget) - trainer.metrics["head_seconds"]
    assert head_left > 0 and trainer.metrics["head_steps"] == 3
    assert trainer.allowance("lip") == pytest.approx(budget * t.lip_budget + head_left)
    # the lip stage, with more steps than time, trained on into the head's unused time and stopped at its own
    assert budget * t.lip_budget < trainer.metrics["lip_seconds"] < 10 ** 6 / preset.lip_steps + trainer.allowance("lip")
    assert trainer.metrics["lip_steps"] < preset.lip_steps


def test_the_mouth_gain_scales_the_mouth_curves_held_in_the_training_range():
    """HeadModel.expression_gain multiplies the standardised mouth and jaw curves after they are held
    inside the training frames' range (so it can open the mouth past the widest pose the field draws);
    the other curves keep theirs."""
    from engine.arkit import ARKIT_INDEX
    from engine.nerf.config import EncodingConfig, HeadConfig
    from engine.nerf.model import HeadModel
    indices = (ARKIT_INDEX["eyeBlinkLeft"], ARKIT_INDEX["jawOpen"], ARKIT_INDEX["mouthFunnel"])
    config = HeadConfig(audio_encoder="mel", audio_dim=4, audio_window=2, expression="all", expression_indices=indices,
                        encoding=EncodingConfig(levels=2, base_resolution=4, finest_resolution=8, log2_table=8),
                        grid_resolution=8, box_lo=(-1, -1, -1), box_hi=(1, 1, 1), samples=8, size=16,
                        intrinsics={"fx": 16, "fy": 16, "cx": 8, "cy": 8}, n_latents=2, train_frames=(0, 1),
                        reference_pose=tuple(tuple(float(i == j) for j in range(4)) for i in range(4)), preset="tiny")
    model = HeadModel(config)
    train = torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.4, 0.1], [0.4, 0.8, 0.2]])
    model.set_expression_scale(train, min_std=0.01)
    middle = torch.tensor([[0.3, 0.6, 0.15]])      # half a deviation above the mean on every curve
    before = model.standardised_expressions(middle)
    model.set_mouth_gain(1.5)
    after = model.standardised_expressions(middle)
    torch.testing.assert_close(after[0, 0], before[0, 0])
    torch.testing.assert_close(after[0, 1:], before[0, 1:] * 1.5)
    beyond = model.standardised_expressions(train[2:] + 1.0)          # far past the widest trained pose
    torch.testing.assert_close(beyond, model.expression_high[None] * torch.tensor([1.0, 1.5, 1.5]))
    tensors = {k: v for k, v in model.state_dict().items() if k != "expression_gain"}
    older = HeadModel(config)
    older.load_weights(tensors)                                       # a head saved before the gain: 1
    torch.testing.assert_close(older.expression_gain, torch.ones(3))


def test_rare_face_states_are_drawn_more_often_than_uniformly(subject_dir):
    """Blinks, wide-open mouths, raised brows and the lips' rarer shapes (rare in talking footage) get more
    draws than a typical frame, bounded."""
    from engine.arkit import ARKIT_INDEX
    from engine.nerf.dataset import LIP_SHAPE_CURVES, MAX_DRAW_BOOST, STATE_CURVES, SubjectData
    from engine.subject.format import Subject
    subject = Subject(subject_dir)
    data = SubjectData(subject, np.zeros((subject.meta.frames, 4), np.float32), size=32)
    weights = data.frame_weights
    assert weights.shape == (data.n_train,) and abs(weights.sum() - 1) < 1e-9
    assert weights.max() <= MAX_DRAW_BOOST / data.n_train * 1.001
    curves = subject.tracks["blendshapes"][data.train_frames]
    for names in STATE_CURVES + LIP_SHAPE_CURVES:  # (a 5-s clip: its bins hold few frames, the boosts are mild)
        value = curves[:, [ARKIT_INDEX[n] for n in names]].mean(axis=1)
        top = value >= np.percentile(value, 90)
        assert weights[top].sum() > 1.05 * top.mean(), names  # the top tenth gets more than a tenth of the draws
    # The lips' other shapes are binned on their own: three of the least drawn frames (the commonest jaw, lid
    # and brow state) made to pout are drawn more often (binned with the jaw, lids and brows they were not).
    least = np.argsort(weights)[:3]
    subject.tracks["blendshapes"][data.train_frames[least], ARKIT_INDEX["mouthShrugLower"]] = 0.9
    pouting = SubjectData(subject, np.zeros((subject.meta.frames, 4), np.float32), size=32).frame_weights
    assert pouting[least].sum() > 1.4 * weights[least].sum()


def test_a_long_clips_training_pixels_are_kept_on_disk_and_train_the_same(subject_dir, tmp_path, monkeypatch):
    """Past IN_MEMORY_PIXELS (a clip of minutes: 0.7 GB a minute at 256 px) the frames, torso plates and head
    masks are mapped from a scratch folder in the subject's cache instead of held in memory: the same values,
    the same training losses, the folder gone with the data; a disk that cannot hold them is refused first."""
    import gc

    from engine.errors import EngineError
    from engine.nerf import dataset
    subject = untrained_copy(subject_dir, tmp_path / "long")
    in_memory = tiny_trainer(subject)
    monkeypatch.setattr(dataset, "IN_MEMORY_PIXELS", 0)
    on_disk = tiny_trainer(subject)
    scratch = list(subject.cache_dir.glob("synctalk-pixels-*"))
    assert len(scratch) == 1 and sorted(p.name for p in scratch[0].iterdir()) == ["head_mask.u8", "rgb.u8", "torso.u8"]
    for name in ("rgb", "torso", "head_mask"):
        held, mapped = getattr(in_memory.data, name), getattr(on_disk.data, name)
        assert not isinstance(held, np.memmap) and isinstance(mapped, np.memmap)
        np.testing.assert_array_equal(held, mapped)
    on_disk.model.load_state_dict(in_memory.model.state_dict())

    def first_losses(trainer):
        trainer.rng = np.random.default_rng(0)
        torch.manual_seed(0)
        return [sum(float(v.detach()) for v in trainer.stages["head"].losses(step).values()) for step in (1, 2)]
    assert first_losses(on_disk) == first_losses(in_memory)
    del on_disk
    gc.collect()
    assert not scratch[0].exists()
    monkeypatch.setattr("engine.files.free_bytes", lambda folder: 1000)
    with pytest.raises(EngineError, match="training frames on disk"):
        tiny_trainer(subject)


def test_the_eyes_rays_go_to_closed_lids_more_often(subject_dir, tmp_path):
    """The eyes-and-brows box has a frame draw of its own, by the lids' state alone: a step's eye rays fall on
    closed lids more often than its lip and head rays do, and both draws learn from their own rays' errors."""
    from engine.arkit import ARKIT_INDEX
    from engine.nerf.dataset import MAX_DRAW_BOOST
    trainer = tiny_trainer(untrained_copy(subject_dir, tmp_path / "eyes"))
    data = trainer.data
    curves = trainer.subject.tracks["blendshapes"][data.train_frames]
    lids = curves[:, [ARKIT_INDEX["eyeBlinkLeft"], ARKIT_INDEX["eyeBlinkRight"]]].mean(axis=1)
    closed = lids >= np.percentile(lids, 90)
    assert abs(data.eye_weights.sum() - 1) < 1e-9 and data.eye_weights.max() <= MAX_DRAW_BOOST / data.n_train * 1.001
    assert data.eye_weights[closed].sum() > max(data.frame_weights[closed].sum(), 1.5 * closed.mean())
    stage, optimizer = trainer.stages["head"], trainer.optimizers["head"]
    trainer.set_lr(optimizer, 0.0)
    for step in range(1, 11):
        trainer.optimise(optimizer, stage.losses(step))
    assert np.isfinite(trainer.eye_draws.error).any() and np.isfinite(trainer.draws.error).any()
    drawn = np.concatenate([trainer.eye_frames(1) for _ in range(400)])
    assert closed[drawn].mean() > 1.5 * closed.mean()


def test_frames_whose_moving_parts_render_badly_are_drawn_more_often(subject_dir, tmp_path):
    """The head stage measures each drawn frame's error on its lip and eye rays; a frame the field cannot draw
    (here its lip box painted over, as a pout no curve bin foresaw would look to the field) soon gets more
    draws than its fixed weight, the others keep about theirs, and no frame passes the boost cap."""
    from engine.nerf.dataset import MAX_DRAW_BOOST
    from engine.nerf.draws import FrameDraws
    trainer = tiny_trainer(untrained_copy(subject_dir, tmp_path / "odd_frame"))
    data, odd = trainer.data, 5
    x0, y0, x1, y1 = data.lip_box[odd]
    data.rgb[odd, y0:y1, x0:x1] = 255 - data.rgb[odd, y0:y1, x0:x1]
    stage, optimizer = trainer.stages["head"], trainer.optimizers["head"]
    trainer.set_lr(optimizer, 0.0)
    for step in range(1, 41):
        trainer.optimise(optimizer, stage.losses(step))
    measured = np.isfinite(trainer.draws.error)
    assert measured.sum() >= len(measured) - 1 and measured[odd]
    assert trainer.draws.error[odd] > 3 * np.nanmedian(trainer.draws.error)
    p = trainer.draws.probabilities()
    assert abs(p.sum() - 1) < 1e-9 and p.max() <= MAX_DRAW_BOOST / len(p) * 1.001
    assert p[odd] > 1.5 * trainer.draws.fixed[odd]
    others = np.arange(len(p)) != odd
    assert np.all(p[others] > 0.5 * trainer.draws.fixed[others])
    # Frames not yet measured count as the typical frame; one measurement moves a frame halfway.
    draws = FrameDraws(np.ones(4), MAX_DRAW_BOOST, 0.4)
    draws.record(np.array([0, 1]), np.array([1.0, 3.0]))
    draws.record(np.array([1]), np.array([1.0]))
    assert draws.error[1] == 2.0 and np.isnan(draws.error[2])
    assert np.isclose(draws.probabilities()[2], draws.probabilities()[3])


def test_ctrl_c_stops_cleanly_with_a_checkpoint(trained):
    interrupted, _ = trained
    assert interrupted["returncode"] == 130, interrupted["stderr"]
    assert interrupted["events"][-1] == {"event": "cancelled"}
    assert interrupted["checkpoint"]
    assert "Traceback" not in interrupted["stderr"]


def test_resume_finishes_and_records_the_model(trained, subject_dir):
    interrupted, events = trained
    infos = [e["message"] for e in events if e["event"] == "info"]
    assert any(m.startswith("resuming at head step") and int(m.split()[-1]) >= 5 for m in infos)
    # Training reduces the loss: first head steps of the interrupted run vs the last of the resumed one.
    head_losses = lambda run: [e["metrics"]["loss"] for e in run  # noqa: E731
                               if e["event"] == "progress" and e["stage"] == "train head" and "loss" in e["metrics"]]
    assert np.mean(head_losses(events)[-3:]) < np.mean(head_losses(interrupted["events"])[:3])
    result = events[-1]
    assert result["event"] == "result" and math.isfinite(result["heldout_psnr"])
    assert (subject_dir / "model" / "head.safetensors").is_file()
    assert not (subject_dir / "model" / "checkpoint.safetensors").exists()
    meta = json.loads((subject_dir / "subject.json").read_text())
    assert meta["models"]["head"]["audio_encoder"] == "mel"
    assert meta["models"]["head"]["stages"] == ["head", "lip", "torso"]


def test_audio_code_carries_the_mouth_curves(trained, subject_dir):
    """The readout of the audio code follows the tracked jawOpen on the frames it was trained on."""
    from engine.arkit import ARKIT_INDEX
    from engine.nerf.dataset import audio_features
    from engine.audio.features import windows
    from engine.nerf.talking_head import TalkingHead
    from engine.subject.format import Subject
    subject = Subject(subject_dir)
    head = TalkingHead.load(subject, device="cpu")
    channels = list(head.config.audio_supervision)
    assert ARKIT_INDEX["jawOpen"] in channels
    frames = np.array(head.config.train_frames)
    audio = windows(audio_features(subject, "mel").astype(np.float32), 8)[frames]
    with torch.no_grad():
        read = head.model.mouth_from_audio(torch.from_numpy(audio))[:, channels.index(ARKIT_INDEX["jawOpen"])]
    truth = subject.tracks["blendshapes"][frames, ARKIT_INDEX["jawOpen"]]
    assert np.corrcoef(read.numpy(), truth)[0, 1] > 0.6
    assert "audio_mouth_r" in head.training.metrics
    assert not head.follows_mouth_curves  # the default expression set is SyncTalk's upper face


def test_a_head_trained_on_the_mouth_curves_follows_them(trained, subject_dir, tmp_path):
    """--expression all: on a share of its training frames the field sees the neutral audio code (that of
    standardised features of 0), so the curves, not the frame's audio code, have to shape the mouth."""
    from engine.arkit import ARKIT_INDEX, ARKIT_NAMES, MOUTH_AND_JAW
    from engine.nerf.talking_head import TalkingHead
    from engine.subject.format import Subject
    folder = tmp_path / "curves"
    untrained_copy(subject_dir, folder)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "engine", "train", str(folder), "--preset", "tiny",
                           "--audio-encoder", "mel", "--expression", "all"], capture_output=True, text=True,
                          cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    head = TalkingHead.load(Subject(folder), device="cpu")
    assert head.follows_mouth_curves
    model = head.model
    # Its mouth's gain was measured on renders of its training frames (on this 96-px head MediaPipe may find
    # no face, and the gain stays 1 with the reason recorded) and is kept with the weights, on the mouth and
    # jaw curves only.
    metrics = head.training.metrics
    assert metrics["mouth_gain"] >= 1.0 and metrics["mouth_gain_measure"]
    mouth = np.array([ARKIT_NAMES[i] in MOUTH_AND_JAW for i in model.config.expression_indices])
    np.testing.assert_allclose(model.expression_gain.numpy()[mouth], metrics["mouth_gain"], rtol=1e-6)
    np.testing.assert_array_equal(model.expression_gain.numpy()[~mouth], 1.0)
    windows = torch.randn(2, 8, model.config.audio_dim) * 3 + model.audio_mean
    curves = torch.rand(2, 52)
    with torch.no_grad():
        own = model.frame_codes(windows, curves)
        mixed = model.frame_codes(windows, curves, torch.tensor([True, False]))
        neutral = model.frame_codes(model.audio_mean.expand(2, 8, -1), curves)
    torch.testing.assert_close(mixed[0], neutral[0])
    torch.testing.assert_close(mixed[1], own[1])
    frame_curves = Subject(folder).tracks["blendshapes"][3].copy()
    window = np.random.default_rng(0).uniform(-4, 4, (8, 80)).astype(np.float32)
    # The jaw from the most closed to the widest of its training frames opens the rendered mouth.
    trained_jaw = Subject(folder).tracks["blendshapes"][list(head.config.train_frames), ARKIT_INDEX["jawOpen"]]
    closed, widest, beyond = frame_curves.copy(), frame_curves.copy(), frame_curves.copy()
    closed[ARKIT_INDEX["jawOpen"]] = trained_jaw.min()
    widest[ARKIT_INDEX["jawOpen"]] = trained_jaw.max()
    # (after the tiny preset's few steps it changes by 0.002-0.006; a field that ignored the curves: exactly 0)
    assert np.abs(head.render(3, window, blendshapes=widest) - head.render(3, window, blendshapes=closed)).max() > 1e-4
    # Beyond the range of its training frames (a hand-keyed jawOpen of 1, a rare expression) the face holds
    # the widest pose it learnt instead of extrapolating the field.
    beyond[ARKIT_INDEX["jawOpen"]] = trained_jaw.max() + 1.0
    np.testing.assert_array_equal(head.render(3, window, blendshapes=beyond), head.render(3, window, blendshapes=widest))
    below = frame_curves.copy()
    below[ARKIT_INDEX["jawOpen"]] = trained_jaw.min() + 0.5 * (trained_jaw.max() - trained_jaw.min())
    assert np.abs(head.render(3, window, blendshapes=below) - head.render(3, window, blendshapes=widest)).max() > 1e-4
    # A head saved before heads kept that range gets it from its subject's tracks.
    from engine.nerf.checkpoint import load_weights, save_weights
    tensors, header = load_weights(Subject(folder).head_weights_path)
    save_weights(Subject(folder).head_weights_path,
                 {k: v for k, v in tensors.items() if k not in ("expression_low", "expression_high")}, header)
    older = TalkingHead.load(Subject(folder), device="cpu").model
    torch.testing.assert_close(older.expression_low, model.expression_low)
    torch.testing.assert_close(older.expression_high, model.expression_high)


def test_thread_tuner_keeps_the_count_whose_work_runs_faster():
    """The tuner judges thread counts by the rate of the real work it is told about: after retry_s seconds
    it times trial_s more at the current count, then trial_s at the other, and keeps the faster."""
    import torch
    from engine.nerf.device import ThreadTuner
    tuner = ThreadTuner(retry_s=10.0, trial_s=2.0, max_threads=2)
    first = tuner.start()
    other = 1 if first == 2 else 2
    for _ in range(10):                       # 8 s of work, then the 2-s baseline at the same count
        assert torch.get_num_threads() == first
        tuner.done(1.0)
    assert torch.get_num_threads() == other   # the trial runs the other count...
    assert [tuner.done(0.5) for _ in range(4)] == [False, False, False, True]  # ...twice as fast: kept
    assert (tuner.threads, torch.get_num_threads(), tuner.switches, tuner.trials) == (other, other, 1, 1)
    for _ in range(20):                       # 8 + 2 s again, at the faster rate
        tuner.done(0.5)
    assert torch.get_num_threads() == first   # the next trial, of the first count...
    assert not any(tuner.done(1.0) for _ in range(2))  # ...half as fast: not kept
    assert (tuner.threads, torch.get_num_threads(), tuner.switches, tuner.trials) == (other, other, 1, 2)
    one_core = ThreadTuner(retry_s=0.0, trial_s=0.0, max_threads=1)
    assert one_core.start() == 1
    one_core.done(1.0)
    assert torch.get_num_threads() == 1 and one_core.trials == 0


def test_frames_render_several_at_once_in_the_order_asked(trained, subject_dir):
    """On a CPU a render runs one frame per core, each on one torch thread: the frames come back in
    order, the same as rendered one at a time, and the caller's torch thread count is left as it was."""
    import torch
    from engine.nerf.device import frames_at_once, in_order
    from engine.nerf.talking_head import TalkingHead
    from engine.render.driving import drive_frames
    from engine.render.pipeline import head_renders, render_frame
    from engine.subject.format import Subject
    subject = Subject(subject_dir)
    head = TalkingHead.load(subject, device="cpu")
    frames = np.array([3, 0, 2, 1, 3, 2, 0])
    driving = drive_frames(subject, frames, head.audio_encoder, head.audio_window)
    threads = torch.get_num_threads()
    one_at_a_time = [render_frame(head, driving, j, within=subject.face_mask(int(f))) for j, f in enumerate(frames)]
    renders = list(head_renders(head, driving))
    assert torch.get_num_threads() == threads
    assert [j for j, _, _ in renders] == list(range(len(frames)))
    for (j, image, mask), alone in zip(renders, one_at_a_time):
        np.testing.assert_array_equal(mask, subject.face_mask(int(frames[j])))
        np.testing.assert_allclose(image, alone, atol=1e-5)
    assert frames_at_once(torch.device("cpu")) == (os.cpu_count() or 1)
    assert frames_at_once(torch.device("cuda")) == 1
    # Each worker runs one torch thread; a consumer that stops early leaves the work not yet started undone.
    assert set(in_order(lambda j: torch.get_num_threads(), 4, workers=2)) == {1}
    started = []
    results = in_order(lambda j: started.append(j) or j * j, 100, workers=2)
    assert [next(results) for _ in range(3)] == [0, 1, 4]
    results.close()
    assert len(started) <= 3 + 2 * 2 - 1  # the three taken and at most 2 * workers - 1 waiting
    # A frame that fails raises in the caller, after the frames before it.
    failing = in_order(lambda j: 1 // (3 - j), 6, workers=2)
    assert [next(failing) for _ in range(3)] == [0, 0, 1]
    with pytest.raises(ZeroDivisionError):
        next(failing)


def test_talking_head_renders_frames(trained, subject_dir):
    from engine.nerf.talking_head import TalkingHead
    from engine.subject.format import Subject
    subject = Subject(subject_dir)
    head = TalkingHead.load(subject, device="cpu")
    assert (head.audio_encoder, head.audio_window, head.size) == ("mel", 8, 96)
    window = np.random.default_rng(0).uniform(-4, 4, (8, 80)).astype(np.float32)
    image = head.render(3, window)
    assert image.shape == (96, 96, 3) and image.dtype == np.float32 and np.isfinite(image).all()
    assert 0 <= image.min() and image.max() <= 1
    pose = subject.tracks["pose"][3].copy()
    pose[0, 3] += 0.05   # a pose that is not the frame's own: the torso network draws the torso
    moved = head.render(3, window, blendshapes=np.zeros(52, np.float32), pose=pose, rgba=True)
    assert moved.shape == (96, 96, 4) and np.isfinite(moved).all()
    assert (moved[..., :3] <= moved[..., 3:] + 1e-5).all()  # premultiplied
    # Over transparency the background is gone; the head covers the middle of the frame.
    rgba = head.render(3, window, rgba=True)
    labels = subject.parsing(3)
    assert rgba[..., 3][labels == 0].mean() < 0.5 * rgba[..., 3][labels == 1].mean()
    with pytest.raises(EngineError, match="audio window"):
        head.render(3, np.zeros((8, 12), np.float32))


def test_a_frame_not_trained_on_takes_the_appearance_of_its_neighbours_in_time(trained, subject_dir, monkeypatch):
    """A held-out frame's latent code is that of the trained frames nearest it, not the clip's mean: an edited
    clip's shots differ in light, and the clip's mean is the appearance of none of them."""
    from engine.nerf import talking_head
    from engine.subject.format import Subject
    monkeypatch.setattr(talking_head, "NEIGHBOUR_SECONDS", 0.4)  # the tiny clip is 3 s: 10 of its frames
    subject = Subject(subject_dir)
    head = talking_head.TalkingHead.load(subject, device="cpu")
    held_out = int(subject.split("test")[0])
    trained_frames = np.array(head.config.train_frames)
    near = np.argsort(np.abs(trained_frames - held_out), kind="stable")[:10]
    window = np.random.default_rng(0).uniform(-4, 4, (8, 80)).astype(np.float32)
    table = head.model.field.latents.weight
    codes = torch.randn(2, table.shape[1], generator=torch.Generator().manual_seed(0)) * 2

    def render_with(near_code, far_code):
        with torch.no_grad():
            table[:] = far_code
            table[torch.from_numpy(near)] = near_code
        return head.render(held_out, window)

    shot = render_with(codes[0], codes[1])
    np.testing.assert_allclose(shot, render_with(codes[0], codes[0]), atol=1e-6)  # the far frames do not count
    assert np.abs(shot - render_with(codes[1], codes[0])).max() > 1e-3          # the near ones do
    own = int(trained_frames[near[0]])  # a trained frame keeps its own code
    with torch.no_grad():
        table[:] = codes[1]
        table[near[0]] = codes[0]
    alone = head.render(own, window)
    with torch.no_grad():
        table[:] = codes[0]
    np.testing.assert_allclose(alone, head.render(own, window), atol=1e-6)


def test_a_frame_not_trained_on_takes_the_appearance_of_its_own_shot(trained, subject_dir):
    """In an edited clip the neighbours that count are those of the frame's own shot."""
    from engine.nerf import talking_head
    from engine.subject.format import Subject
    subject = Subject(subject_dir)
    trained_frames = np.array(talking_head.TalkingHead.load(subject, device="cpu").config.train_frames)
    subject.meta.shots = [0, int(trained_frames[-3])]  # a cut: the last 3 trained frames share the held-out shot
    head = talking_head.TalkingHead.load(subject, device="cpu")
    held_out = int(subject.split("test")[0])
    window = np.random.default_rng(0).uniform(-4, 4, (8, 80)).astype(np.float32)
    table = head.model.field.latents.weight
    codes = torch.randn(2, table.shape[1], generator=torch.Generator().manual_seed(1)) * 2
    rows = [head.latent_row[int(f)] for f in trained_frames[-3:]]

    def render_with(shot_code, other_code):
        with torch.no_grad():
            table[:] = other_code
            table[rows] = shot_code
        return head.render(held_out, window)

    np.testing.assert_allclose(render_with(codes[0], codes[1]), render_with(codes[0], codes[0]), atol=1e-6)


def test_training_gives_the_lip_and_eye_rays_the_mean_code_of_the_frames_shot(subject_dir, tmp_path):
    """Around the mouth and eyes a frame's own code would learn the lips and blinks; those rays get the mean
    code of the frame's shot (not the clip's: an edited clip's shots differ in light)."""
    subject = untrained_copy(subject_dir, tmp_path / "shots")
    train = np.array(subject.split("train"))
    subject.meta.shots = [0, int(train[len(train) // 3])]
    trainer = tiny_trainer(subject)
    table = trainer.model.field.latents.weight
    with torch.no_grad():
        table.copy_(torch.randn(table.shape, generator=torch.Generator().manual_seed(0)))
    shot = subject.shot_of(trainer.data.train_frames)
    rows = np.array([0, len(shot) - 1])
    expected = torch.stack([table[torch.from_numpy(shot == shot[r])].mean(0) for r in rows])
    assert shot[rows[0]] != shot[rows[1]]
    torch.testing.assert_close(trainer.shot_mean_latents(rows), expected)


def test_training_frames_are_conditioned_on_their_curves_with_tracking_noise(subject_dir, tmp_path):
    """On the exact tracked curves the field learns each training frame by heart through them; training adds
    TrainingConfig.expression_noise to the curves a frame is conditioned on, and the held-out figures and
    renders use the exact ones."""
    trainer = tiny_trainer(untrained_copy(subject_dir, tmp_path / "noise"))
    preset = trainer.preset
    seen = []
    frame_codes = trainer.model.frame_codes

    def recording(audio, expressions, neutral=None):
        seen.append(expressions.clone())
        return frame_codes(audio, expressions, neutral)

    trainer.model.frame_codes = recording
    rows = np.arange(trainer.data.n_train)
    exact = torch.from_numpy(trainer.data.expressions[trainer.data.frames[rows]])
    pixels = np.zeros(len(rows), np.int64), np.full(len(rows), 16), np.full(len(rows), 16)
    with torch.no_grad():
        trainer.render_pixels(rows, *pixels, training=True)
        trainer.render_pixels(rows, *pixels, training=False)
    noise = seen[0] - exact
    assert abs(float(noise.std()) / preset.training.expression_noise - 1) < 0.25
    assert abs(float(noise.mean())) < 0.35 * preset.training.expression_noise
    torch.testing.assert_close(seen[1], exact)


def test_loading_an_untrained_subject_names_the_fix(subject_dir, tmp_path):
    from engine.nerf.talking_head import TalkingHead
    with pytest.raises(EngineError, match="no trained talking-head model"):
        TalkingHead.load(untrained_copy(subject_dir, tmp_path / "bare"))


def test_head_json_reads_back_as_written_and_refuses_what_it_does_not_know(trained, subject_dir, tmp_path):
    """head.json <-> HeadConfig + TrainingRecord with the same keys; a missing or unknown key is one
    EngineError naming the file; heads saved before the audio readout (no audio_supervision) still read."""
    from engine.nerf.config import read_head_json, write_head_json
    written = json.loads((subject_dir / "model" / "head.json").read_text())
    config, record = read_head_json(subject_dir / "model" / "head.json")
    assert record.stages_done == ("head", "lip", "torso") and "heldout_psnr" in record.metrics
    assert 1 <= record.metrics["cpu_threads"] <= (os.cpu_count() or 1) and record.metrics["cpu_thread_switches"] >= 0
    again = tmp_path / "head.json"
    write_head_json(again, config, record)
    assert json.loads(again.read_text()) == written
    assert list(config.to_dict()) == [k for k in written if k not in ("stages_done", "metrics", "train_seconds")]
    older = {k: v for k, v in written.items() if k != "audio_supervision"}
    again.write_text(json.dumps(older))
    assert read_head_json(again)[0].audio_supervision == ()
    for broken, message in (({k: v for k, v in written.items() if k != "samples"}, "'samples' is missing"),
                            ({**written, "sampels": 32}, "unknown head configuration key\\(s\\) sampels"),
                            ({**written, "size": "96"}, "'size' must be int")):
        again.write_text(json.dumps(broken))
        with pytest.raises(EngineError, match=message) as error:
            read_head_json(again)
        assert error.value.path == str(again)
