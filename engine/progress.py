"""Progress reporting: a bar on a terminal, or one JSON object a line (`--progress jsonl`).

JSON lines go to stdout and are the only thing the Blender side reads. Events:
  {"event": "stage", "stage": ..., "total": N}
  {"event": "progress", "stage": ..., "done": n, "total": N, "eta_s": s, "metrics": {...}}
  {"event": "warning", "message": ...}
  {"event": "result", ...}            the last line of a successful command
  {"event": "error", "message": ..., "hint": ..., "path": ...}
"""
from __future__ import annotations

import json
import sys
import time


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
            reporter.emit({"event": "stage", "stage": name, "total": total})

    def eta_s(self) -> float | None:
        if not self.total or not self.done:
            return None
        elapsed = time.monotonic() - self.started
        return round(elapsed / self.done * (self.total - self.done), 1)

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
                self.reporter.emit({"event": "progress", "stage": self.name, "done": self.done,
                                    "total": self.total, "eta_s": self.eta_s(), "metrics": self.metrics})

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _short(value):
    return f"{value:.4g}" if isinstance(value, float) else value


class Progress:
    """mode: 'bar' (terminal), 'jsonl' (machine-readable, for Blender), or 'quiet' (library use, tests)."""

    def __init__(self, mode: str = "quiet", stream=None):
        if mode not in ("bar", "jsonl", "quiet"):
            raise ValueError(f"unknown progress mode {mode!r}")
        self.mode = mode
        self.stream = stream or sys.stdout
        self.warnings: list[str] = []

    def emit(self, obj: dict) -> None:
        self.stream.write(json.dumps(obj, default=_jsonable) + "\n")
        self.stream.flush()

    def stage(self, name: str, total: int | None = None) -> Stage:
        return Stage(self, name, total)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        if self.mode == "jsonl":
            self.emit({"event": "warning", "message": message})
        elif self.mode == "bar":
            print(f"warning: {message}", file=sys.stderr)

    def info(self, message: str) -> None:
        if self.mode == "jsonl":
            self.emit({"event": "info", "message": message})
        elif self.mode == "bar":
            print(message, file=sys.stderr)

    def result(self, **data) -> None:
        if self.mode == "jsonl":
            self.emit({"event": "result", **data})

    def error(self, message: str, hint: str = "", path: str | None = None) -> None:
        if self.mode == "jsonl":
            self.emit({"event": "error", "message": message, "hint": hint, "path": path})
        else:
            print(f"error: {message}", file=sys.stderr)
            if hint:
                print(f"  hint: {hint}", file=sys.stderr)


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
