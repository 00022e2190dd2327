"""One job at a time on a subject or an output: a lock file beside it that names the job holding it.

`.NAME.lock` (JSON: pid, host, command, start time) is created exclusively; a second job is refused
with a message naming the first. A lock whose process is gone (killed, a power cut) is taken over.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from .errors import EngineError
from .files import partial_path, process_alive

_UNREADABLE_GRACE_S = 2.0   # a lock just created may not hold its JSON yet


class JobLock:
    """`with JobLock(path, "train"):` holds the lock on `path` (a file or folder, existing or not)."""

    def __init__(self, target: str | Path, job: str):
        self.target = Path(target).resolve()
        self.path = self.target.with_name(f".{self.target.name}.lock")
        self.job = job
        self.held = False

    def acquire(self) -> "JobLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mine = {"pid": os.getpid(), "host": socket.gethostname(), "job": self.job,
                "command": " ".join(["python -m engine", *sys.argv[1:]])[:500],
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        while True:
            try:
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._refuse_or_take_over()
                continue
            with os.fdopen(handle, "w") as out:
                json.dump(mine, out)
            self.held = True
            return self

    def _refuse_or_take_over(self) -> None:
        holder = self._holder()
        if holder is None:
            return  # still being written, or just released: try again
        same_host = holder.get("host") == socket.gethostname()
        if same_host and not process_alive(int(holder.get("pid", -1))):
            self._take_over(holder)
            return
        where = "" if same_host else f" on {holder.get('host')}"
        raise EngineError(
            f"{self.target} is in use by another job: {holder.get('job', '?')} (process {holder.get('pid')}{where}, "
            f"started {holder.get('started', '?')}: {holder.get('command', '')})",
            f"wait for it to finish or stop it; if no such job is running, delete {self.path}", path=str(self.target))

    def _holder(self) -> dict | None:
        try:
            text = self.path.read_text()
            return json.loads(text)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return None
            if age < _UNREADABLE_GRACE_S:
                time.sleep(0.05)
                return None
            return {"pid": -1, "host": socket.gethostname()}  # a damaged lock: stale

    def _take_over(self, stale: dict) -> None:
        """Remove a stale lock. It is renamed aside and checked: if another job took it over first,
        what was moved is that job's live lock, and it is put back."""
        aside = partial_path(self.path)
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text())
        except (OSError, ValueError):
            moved = stale
        if moved != stale:
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
        aside.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            self.held = False
            self.path.unlink(missing_ok=True)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
