"""Tri-plane multi-resolution hash encoding (SyncTalk's spatial encoder), in pure PyTorch.

Three 2D hash grids look at the point's xy, yz and xz projections; each has `levels` levels of
`features` values, from `base_resolution` to `finest_resolution`, in tables of 2**log2_table
entries. The grid follows tiny-cuda-nn's conventions exactly (level scale, +0.5 offset, dense
levels while res**2 fits the table, xor-prime hash, table sizes rounded to 8), so the same
parameters give the same output on both; `use_tcnn=True` swaps in tiny-cuda-nn's kernel when it
imports on CUDA.

The gather's backward is written by hand with `index_add_`: autograd's own backward of the
advanced-index gather is slower on CPU (1.4x for 65,536 points with torch 2.13; run
`scripts/bench_train.py encoding`).
With one feature a level (every preset), the table is gathered and scattered as a flat vector:
on CPU, `index_select` of 1-wide rows took 2.2x and `index_add_` into them 37x as long as the same
work on the flat view (measured, 1 thread, 2.4M indices).
"""
from __future__ import annotations

import math

import torch
from torch import nn

PRIME_Y = 2654435761  # tiny-cuda-nn's second hashing prime (the first is 1)
# The same prime as a wrapped int32: indices are int32 (a third of int64's integer work on CPU), and
# products that wrap mod 2^32 keep the low bits the power-of-two table mask reads.
PRIME_Y_INT32 = PRIME_Y - (1 << 32)


def level_layout(levels: int, base_resolution: int, finest_resolution: int, log2_table: int):
    """Per level: (scale, resolution, table size, offset), tiny-cuda-nn's layout for 2D grids."""
    per_level = math.exp(math.log(finest_resolution / base_resolution) / max(levels - 1, 1))
    table = 1 << log2_table
    layout, offset = [], 0
    for level in range(levels):
        scale = base_resolution * per_level ** level - 1.0
        resolution = math.ceil(scale) + 1
        size = min(-(-resolution ** 2 // 8) * 8, table)
        layout.append((scale, resolution, size, offset))
        offset += size
    return layout, per_level


def corner_indices(uv: torch.Tensor, layout, grid_offset: torch.Tensor | int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """uv (..., 2) in [0, 1] -> flat int32 table indices (4, L, ...) and bilinear weights (4, L, ...).

    Corners in the order (0,0), (1,0), (0,1), (1,1). Per level, one of two integer paths: dense
    (x + y * res) while the level fits its table, else tiny-cuda-nn's hash (x ^ y * prime, mod 2^32).
    `grid_offset` (broadcast over uv's last batch dimension) is added to every index. Corner and level
    lead so that every op works on contiguous blocks (interleaving is slow on CPU). The dense levels
    (the coarse ones) and the hashed levels are each computed in one pass over all their levels,
    written straight into the outputs: per-level ops and stacking cost twice as much on CPU.
    """
    u, v = uv[..., 0].contiguous(), uv[..., 1].contiguous()
    device, batch = uv.device, u.shape
    indices = torch.empty((4, len(layout)) + batch, dtype=torch.int32, device=device)
    weights = torch.empty((4, len(layout)) + batch, dtype=uv.dtype, device=device)
    per_level = (-1,) + (1,) * u.dim()  # a per-level constant, broadcast over the points
    dense = [resolution * resolution <= size for _, resolution, size, _ in layout]
    for is_dense in (True, False):
        levels = [level for level in range(len(layout)) if dense[level] == is_dense]
        if not levels:
            continue
        lo, hi = levels[0], levels[-1] + 1  # dense levels come first: each group is contiguous

        def constant(column, dtype):
            return torch.tensor([layout[level][column] for level in levels], dtype=dtype, device=device).view(per_level)

        scale = constant(0, uv.dtype)
        pu, pv = u * scale + 0.5, v * scale + 0.5
        cu, cv = torch.floor(pu), torch.floor(pv)
        fx, fy = pu - cu, pv - cv
        gx, gy = 1 - fx, 1 - fy
        for corner, (wx, wy) in enumerate(((gx, gy), (fx, gy), (gx, fy), (fx, fy))):
            torch.mul(wx, wy, out=weights[corner, lo:hi])
        a0, b0 = cu.to(torch.int32), cv.to(torch.int32)
        a1, b1 = a0 + 1, b0 + 1
        offset = constant(3, torch.int32) + grid_offset
        size = constant(2, torch.int32)
        if is_dense:
            resolution = constant(1, torch.int32)
            b0, b1 = b0 * resolution, b1 * resolution
        else:  # hashed levels have power-of-two tables: the mod is a mask
            b0, b1 = b0 * PRIME_Y_INT32, b1 * PRIME_Y_INT32
        for corner, (a, b) in enumerate(((a0, b0), (a1, b0), (a0, b1), (a1, b1))):
            if is_dense:
                index = a + b
                index = torch.where(index >= size, index - size, index)  # tiny-cuda-nn's `% size` at the far edge
            else:
                index = (a ^ b) & (size - 1)
            torch.add(index, offset, out=indices[corner, lo:hi])
    return indices, weights


class _GridGather(torch.autograd.Function):
    """sum_c weight[c, ...] * table[index[c, ...]] with a scatter-add backward into the table."""

    @staticmethod
    def forward(ctx, table, index, weight):
        flat = index.reshape(-1)
        if table.shape[1] == 1:
            rows = table.view(-1).index_select(0, flat).view(*index.shape, 1)
        else:
            rows = table.index_select(0, flat).view(*index.shape, table.shape[1])
        out = (rows * weight[..., None]).sum(dim=0)
        ctx.save_for_backward(index, weight)
        ctx.table_shape = table.shape
        return out

    @staticmethod
    def backward(ctx, grad_out):
        index, weight = ctx.saved_tensors
        contributions = (weight[..., None] * grad_out[None]).reshape(-1, ctx.table_shape[1])
        grad_table = torch.zeros(ctx.table_shape, dtype=grad_out.dtype, device=grad_out.device)
        if ctx.table_shape[1] == 1:
            grad_table.view(-1).index_add_(0, index.reshape(-1), contributions.view(-1))
        else:
            grad_table.index_add_(0, index.reshape(-1), contributions)
        return grad_table, None, None


class HashGrids2D(nn.Module):
    """`grids` independent 2D multi-resolution hash grids sharing one parameter table.

    (N, grids, 2) in [0, 1] -> (N, grids * levels * features). Grid g's parameters are rows
    [g * per_grid, (g + 1) * per_grid) of `table`, laid out level by level as tiny-cuda-nn does.
    """

    def __init__(self, grids: int = 1, levels: int = 12, features: int = 1, base_resolution: int = 64,
                 finest_resolution: int = 512, log2_table: int = 14, naive_backward: bool = False):
        super().__init__()
        self.grids, self.levels, self.features = grids, levels, features
        self.layout, self.per_level_scale = level_layout(levels, base_resolution, finest_resolution, log2_table)
        self.per_grid = self.layout[-1][3] + self.layout[-1][2]
        # tiny-cuda-nn's initialisation: uniform in +-1e-4.
        self.table = nn.Parameter(torch.empty(grids * self.per_grid, features).uniform_(-1e-4, 1e-4))
        self.register_buffer("grid_offset", torch.arange(grids, dtype=torch.int32) * self.per_grid, persistent=False)
        self.naive_backward = naive_backward
        self.output_dim = grids * levels * features

    def forward(self, uv: torch.Tensor) -> torch.Tensor:
        index, weight = corner_indices(uv.detach(), self.layout, self.grid_offset)   # (4, L, N, G)
        if self.naive_backward:  # autograd's own backward of the gather, for comparison
            out = (self.table[index] * weight[..., None]).sum(dim=0)
        else:
            out = _GridGather.apply(self.table, index, weight)
        # (L, N, G, F) -> (N, G, L, F): each grid's levels together, as tiny-cuda-nn orders them.
        return out.permute(1, 2, 0, 3).reshape(len(uv), self.output_dim)


class TcnnGrid2D(nn.Module):
    """tiny-cuda-nn's 2D HashGrid with the same configuration (its params are one HashGrids2D grid's table)."""

    def __init__(self, levels, features, base_resolution, finest_resolution, log2_table):
        super().__init__()
        import tinycudann as tcnn
        _, per_level = level_layout(levels, base_resolution, finest_resolution, log2_table)
        self.grid = tcnn.Encoding(2, {"otype": "HashGrid", "n_levels": levels, "n_features_per_level": features,
                                      "log2_hashmap_size": log2_table, "base_resolution": base_resolution,
                                      "per_level_scale": per_level, "interpolation": "Linear"},
                                  dtype=torch.float32)
        self.output_dim = levels * features

    def forward(self, uv):
        return self.grid(uv).float()


def tcnn_available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import tinycudann  # noqa: F401
    except Exception:  # an install without a built CUDA extension fails in many ways
        return False
    return True


class TriPlaneEncoding(nn.Module):
    """(N, 3) points in [0, 1]^3 -> (N, 3 * levels * features): hash grids on the xy, yz and xz planes."""

    PLANES = (0, 1, 1, 2, 0, 2)

    def __init__(self, levels: int = 12, features: int = 1, base_resolution: int = 64,
                 finest_resolution: int = 512, log2_table: int = 14, use_tcnn: bool = False,
                 naive_backward: bool = False):
        super().__init__()
        self.use_tcnn = use_tcnn
        if use_tcnn:
            self.planes = nn.ModuleList([TcnnGrid2D(levels, features, base_resolution, finest_resolution, log2_table)
                                         for _ in range(3)])
            # Saved and loaded in one layout whatever trained it: a GPU-trained head renders on a CPU.
            self.features = features
            self.register_state_dict_post_hook(_planes_to_table)
            self.register_load_state_dict_pre_hook(_table_to_planes)
        else:
            self.grids = HashGrids2D(3, levels, features, base_resolution, finest_resolution, log2_table,
                                     naive_backward)
        self.output_dim = 3 * levels * features

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        uv = xyz.clamp(0.0, 1.0)[:, self.PLANES].reshape(-1, 3, 2)
        if self.use_tcnn:
            return torch.cat([plane(uv[:, i]) for i, plane in enumerate(self.planes)], dim=-1)
        return self.grids(uv)


# The canonical layout of a TriPlaneEncoding's parameters is HashGrids2D's: one `grids.table` of shape
# (3 * per_grid, features), plane after plane. tiny-cuda-nn keeps each plane's table as one flat
# `params` vector in the same order (level by level, an entry's features together), so converting is
# a concatenation one way and a split the other.
def planes_to_table(params: list[torch.Tensor], features: int) -> torch.Tensor:
    """Three tiny-cuda-nn plane parameter vectors -> the (3 * per_grid, features) table."""
    return torch.cat([p.detach().reshape(-1, features).float() for p in params])


def table_to_planes(table: torch.Tensor, planes: int = 3) -> list[torch.Tensor]:
    """The (planes * per_grid, features) table -> one flat parameter vector per plane."""
    return [chunk.reshape(-1) for chunk in table.chunk(planes)]


def _planes_to_table(module: "TriPlaneEncoding", state_dict: dict, prefix: str, local_metadata) -> None:
    keys = [f"{prefix}planes.{i}.grid.params" for i in range(len(module.planes))]
    state_dict[f"{prefix}grids.table"] = planes_to_table([state_dict.pop(k) for k in keys], module.features)


def _table_to_planes(module: "TriPlaneEncoding", state_dict: dict, prefix: str, *args) -> None:
    table = state_dict.pop(f"{prefix}grids.table", None)
    if table is not None:
        for i, params in enumerate(table_to_planes(table, len(module.planes))):
            state_dict[f"{prefix}planes.{i}.grid.params"] = params
