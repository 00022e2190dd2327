"""Where the NeRF runs: the torch device, and the number of CPU threads that is fastest right now."""
from __future__ import annotations

import os
import time

import torch

from ..errors import EngineError


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EngineError("CUDA was asked for but is not available", "use --device cpu or auto")
    return torch.device(name)



def choose_cpu_threads(max_threads: int | None = None) -> int:
    """Set and return the faster of 1..max_threads torch threads for the field's small ops, measured now.

    On a machine shared with other jobs, extra OpenMP threads wait at every op's barrier for a core;
    measured on the 2-core project machine under load, 1 thread ran an encoding pass 4x faster than 2.
    """
    from .encoding import TriPlaneEncoding
    max_threads = max_threads or os.cpu_count() or 1
    encoding = TriPlaneEncoding()
    points = torch.rand(16384, 3)
    best, best_time = 1, float("inf")
    for threads in sorted({1, max_threads}):
        torch.set_num_threads(threads)
        with torch.no_grad():
            encoding(points)
            started = time.perf_counter()
            for _ in range(3):
                encoding(points)
        elapsed = time.perf_counter() - started
        if elapsed < best_time:
            best, best_time = threads, elapsed
    torch.set_num_threads(best)
    return best
