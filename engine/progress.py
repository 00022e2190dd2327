"""Progress reporting: a bar on a terminal, plain lines without one (`--progress log`: logs, render
farms, Blender's background mode), or the job protocol's events (`--progress jsonl`, declared in
engine.jobs: the only thing the Blender side reads).

The log mode writes a line when a stage starts, at least every 10 s while it runs (from a
heartbeat thread, so a long step that never advances is still seen to be alive) and when it ends.
Warnings reach stderr in every mode but jsonl, which sends them as events.
"""
from __future__ import annotations

import sys
import threading
import time

from .jobs import CANCELLED, ERROR, INFO, PROGRESS, RESULT, STAGE, WARNING, duration_text, encode, event

LOG_INTERVAL_S = 10.0   # the longest a log-mode run stays silent


class Stage:
    def __init__(self, reporter: "Progress", name: str, total: int | None):
        self.reporter, self.name, self.total = reporter, name, total
        self.done = 0
        self.metrics: dict = {}
        self.started = time.monotonic()
        self._last_emit = 0.0
        self._bar = None
        if reporter.mode == "bar":
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=name, file=sys.stderr, leave=True, dynamic_ncols=True)
        elif reporter.mode == "jsonl":
            reporter.emit(STAGE, stage=name, total=total)
        elif reporter.mode == "log":
            reporter._follow(self)

    def eta_s(self) -> float | None:
        if not self.total or not self.done:
            return None
        elapsed = time.monotonic() - self.started
        return round(elapsed / self.done * (self.total - self.done), 1)

    def line(self) -> str:
        """The log mode's plain line: stage, done/total, ETA and metrics."""
        elapsed = duration_text(time.monotonic() - self.started)
        if self.total and self.done >= self.total:
            text = f"{self.name}: {self.done}/{self.total} done in {elapsed}"
        elif self.total:
            eta = self.eta_s()
            text = (f"{self.name}: {self.done}/{self.total} ({100 * self.done / self.total:.0f} %), "
                    + (f"ETA {duration_text(eta)}" if eta is not None else f"{elapsed} in"))
        else:
            text = f"{self.name}: {self.done} done, {elapsed} in"
        return text + "".join(f", {k} {_short(v)}" for k, v in self.metrics.items())

    def advance(self, n: int = 1, **metrics) -> None:
        self.done += n
        self.metrics.update(metrics)
        if self._bar is not None:
            self._bar.update(n)
            if metrics:
                self._bar.set_postfix({k: _short(v) for k, v in self.metrics.items()}, refresh=False)
        elif self.reporter.mode == "jsonl":
            now = time.monotonic()
            # At most ~5 lines a second, but always the last one.
            if now - self._last_emit >= 0.2 or (self.total and self.done >= self.total):
                self._last_emit = now
                self.reporter.emit(PROGRESS, stage=self.name, done=self.done, total=self.total,
                                   eta_s=self.eta_s(), metrics=self.metrics)
        elif self.reporter.mode == "log" and self.total and self.done >= self.total > self.done - n:
            self.reporter._log_line(self)   # the stage's end, once
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.reporter._unfollow(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _short(value):
    return f"{value:.4g}" if isinstance(value, float) else value


class Progress:
    """mode: 'bar' (terminal), 'log' (plain lines, no terminal), 'jsonl' (machine-readable, for Blender),
    or 'quiet' (library use, tests: warnings and errors only).

    `stream` is where JSON lines go (stdout by default); `log_stream` where the log mode's lines, the
    warnings and the errors go (stderr by default)."""

    def __init__(self, mode: str = "quiet", stream=None, log_stream=None, log_interval_s: float = LOG_INTERVAL_S):
        if mode not in ("bar", "log", "jsonl", "quiet"):
            raise ValueError(f"unknown progress mode {mode!r}")
        self.mode = mode
        self.stream = stream or sys.stdout
        self.log_stream = log_stream
        self.log_interval_s = log_interval_s
        self.warnings: list[str] = []
        self._followed: Stage | None = None   # the log mode's current stage: the innermost open one
        self._open: list[Stage] = []          # the log mode's open stages, outermost first
        self._last_line = 0.0
        self._heartbeat: threading.Thread | None = None
        self._lock = threading.Lock()

    def _print(self, text: str) -> None:
        stream = self.log_stream or sys.stderr
        with self._lock:
            print(text, file=stream, flush=True)

    def _log_line(self, stage: Stage) -> None:
        self._last_line = time.monotonic()
        self._print(stage.line())

    def _follow(self, stage: Stage) -> None:
        """Log mode: a line now, then at least one every `log_interval_s` while the stage is current."""
        self._open.append(stage)
        self._followed = stage
        self._log_line(stage)
        if self._heartbeat is None or not self._heartbeat.is_alive():
            self._heartbeat = threading.Thread(target=self._beat, daemon=True, name="progress heartbeat")
            self._heartbeat.start()

    def _unfollow(self, stage: Stage) -> None:
        """A stage ended: the one it ran inside (training's head stage around its audio warm-up) is current again,
        so the log keeps speaking through the rest of it."""
        if stage in self._open:
            self._open.remove(stage)
            self._followed = self._open[-1] if self._open else None

    def _beat(self) -> None:
        tick = min(1.0, self.log_interval_s / 4)
        while (stage := self._followed) is not None:
            if time.monotonic() - self._last_line >= self.log_interval_s:
                try:
                    self._log_line(stage)
                except (ValueError, OSError):   # the stream was closed under us: nobody to tell
                    return
            time.sleep(tick)

    def close(self) -> None:
        """Stop the log mode's heartbeat (the command is over)."""
        self._open.clear()
        self._followed = None

    def emit(self, kind, **fields) -> None:
        """jsonl mode: one event of the protocol."""
        self.stream.write(encode(event(kind, **fields)))
        self.stream.flush()

    def stage(self, name: str, total: int | None = None) -> Stage:
        return Stage(self, name, total)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        if self.mode == "jsonl":
            self.emit(WARNING, message=message)
        else:
            self._print(f"warning: {message}")

    def info(self, message: str) -> None:
        if self.mode == "jsonl":
            self.emit(INFO, message=message)
        elif self.mode in ("bar", "log"):
            self._print(message)

    def result(self, **data) -> None:
        if self.mode == "jsonl":
            self.emit(RESULT, **data)

    def cancelled(self) -> None:
        if self.mode == "jsonl":
            self.emit(CANCELLED)
        else:
            self._print("cancelled")

    def error(self, message: str, hint: str = "", path: str | None = None) -> None:
        if self.mode == "jsonl":
            self.emit(ERROR, message=message, hint=hint, path=path)
        else:
            self._print(f"error: {message}" + (f"\n  hint: {hint}" if hint else ""))

