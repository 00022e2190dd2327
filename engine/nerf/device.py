"""Where the NeRF runs: the torch device, and the number of CPU threads that is fastest right now."""
from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator, TypeVar

import torch

from ..errors import EngineError


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EngineError("CUDA was asked for but is not available", "use --device cpu or auto")
    return torch.device(name)


Result = TypeVar("Result")


def frames_at_once(device: torch.device) -> int:
    """How many frames to render at a time: on a CPU one per core, each on one torch thread.

    A frame's ops are small (tens of thousands of points), so torch's threads spend much of a frame
    waiting at each op's barrier; independent frames do not wait for each other. cnn2_anchor's head
    (512 px), 12 frames on the 2-core project machine: 0.51 s a frame one at a time on 2 threads, 0.37
    two at a time on 1 thread each (0.41 on 2 each); with another process spinning on one core, 1.40
    against 0.61 (and 0.66 one at a time on 1 thread)."""
    return max(1, os.cpu_count() or 1) if device.type == "cpu" else 1


def in_order(work: Callable[[int], Result], count: int, workers: int) -> Iterator[Result]:
    """work(j) for j in 0..count-1, `workers` at a time on threads of one torch thread each, yielded in order.

    torch's thread count is per thread (a new thread starts with one per core, whatever the caller set),
    so each worker sets its own. At most 2 * workers results wait at once, so memory stays bounded
    whatever `count` is; a consumer that stops early cancels the work not yet started."""
    if workers <= 1:
        for j in range(count):
            yield work(j)
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="frame", initializer=torch.set_num_threads, initargs=(1,))
    pending = deque()
    try:
        for j in range(count):
            pending.append(pool.submit(work, j))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


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


@dataclass
class ThreadTuner:
    """Keeps torch on the faster CPU thread count for the work being done, judged by that work's own rate.

    choose_cpu_threads' quick probe (a fraction of a second) can be fooled by another job that probes or
    changes at the same moment: two trainings started together on the 2 cores both read 2 threads as
    faster and then ran 4 threads on 2 cores, 2.6 steps/s each, where one thread each ran 5.5-6. So the
    caller reports how long each unit of work took (a training step; rendering needs no tuner, it runs a
    frame per core, frames_at_once), and every retry_s seconds of work the tuner runs the other count for
    trial_s seconds and keeps it if its units per second beat the trial_s seconds just before it by
    MARGIN. Two jobs doing this settle on the counts that suit both: whichever tries one thread while the
    other holds two finds it faster, and then so does the other."""

    retry_s: float = 60.0
    trial_s: float = 5.0
    max_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    MARGIN = 0.05
    threads: int = 0                   # the count in use (set by start)
    switches: int = 0                  # trials that changed it
    trials: int = 0
    _phase: str = "run"                # run -> baseline (the current count, timed) -> trial (the other count)
    _seconds: float = 0.0              # work time in this phase
    _units: int = 0                    # units of work in this phase
    _baseline_rate: float = 0.0

    def start(self) -> int:
        """The first count, from the quick probe; returns it."""
        self.threads = choose_cpu_threads(self.max_threads)
        self._phase, self._seconds, self._units = "run", 0.0, 0
        return self.threads

    def new_work(self) -> None:
        """The work changes (another training stage): its rate is not comparable with the one before."""
        self._enter("run", self.threads)

    def done(self, seconds: float) -> bool:
        """One unit of work took `seconds` at the current count (after start); -> whether a trial changed it."""
        if self.max_threads <= 1:
            return False
        self._seconds += seconds
        self._units += 1
        if self._phase == "run" and self._seconds >= self.retry_s - self.trial_s:
            self._enter("baseline", self.threads)
        elif self._phase == "baseline" and self._seconds >= self.trial_s:
            self._baseline_rate = self._units / self._seconds
            self._enter("trial", self._other())
        elif self._phase == "trial" and self._seconds >= self.trial_s:
            self.trials += 1
            faster = self._units / self._seconds > self._baseline_rate * (1 + self.MARGIN)
            if faster:
                self.threads, self.switches = self._other(), self.switches + 1
            self._enter("run", self.threads)
            return faster
        return False

    def _other(self) -> int:
        return 1 if self.threads > 1 else self.max_threads

    def _enter(self, phase: str, threads: int) -> None:
        self._phase, self._seconds, self._units = phase, 0.0, 0
        torch.set_num_threads(threads)

