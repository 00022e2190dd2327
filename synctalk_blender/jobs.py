"""Engine jobs: `python -m engine ...` in a child process, read through its JSON-lines progress.

Why a child process: preprocessing, training and rendering take minutes to hours; in a child
Blender's UI stays responsive, a crash of torch or mediapipe cannot take Blender down, and a
cancel is a signal. Blender's own extension manager runs its jobs the same way.

The main thread never blocks on the child: a reader thread turns stdout lines into events on a
queue, and `poll()` only drains that queue. `run_to_end()` is for background mode and tests,
where no modal operator or timer ever runs.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

LOG_INTERVAL_S = 10.0   # run_to_end's longest silence (background mode, render farms)

# Only one engine job at a time per Blender session: each may use every core and gigabytes.
_current: "Job | None" = None


def engine_root() -> Path:
    """The folder that holds the `engine` package: the extension's own folder once installed
    (build.py puts engine/ inside the zip), the repository root in a development checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here, here.parent):
        if (candidate / "engine" / "__main__.py").is_file():
            return candidate
    raise FileNotFoundError(f"the engine package is missing next to {here}; reinstall the extension")


def import_engine():
    """Make `import engine` work inside Blender (for reading and writing curves files)."""
    root = str(engine_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    import engine
    return engine


# Programs inside wheels. Blender unpacks an extension's wheels with zipfile, which drops the
# executable bit, so imageio-ffmpeg's ffmpeg (all video I/O) would not run.
_WHEEL_PROGRAMS = ("imageio_ffmpeg/binaries/ffmpeg-*", "torch/bin/*")


def make_wheel_programs_executable(site_dirs) -> list[Path]:
    """chmod +x the known programs shipped in wheels under `site_dirs`; returns those it changed."""
    changed = []
    if os.name != "posix":
        return changed
    for site in site_dirs:
        for pattern in _WHEEL_PROGRAMS:
            for program in Path(site).glob(pattern):
                mode = program.stat().st_mode
                if program.is_file() and not mode & 0o111:
                    program.chmod(mode | 0o755)
                    changed.append(program)
    return changed


def _site_dirs() -> list[str]:
    return [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)]


def child_environment(models_dir: str = "", device: str = "auto") -> dict:
    """The environment of an engine child: the engine's folder and every site-packages this Blender
    sees (the extension's wheels live in one of them) on PYTHONPATH, and the preferences."""
    env = dict(os.environ)
    # A Python of its own ($SYNCTALK_PYTHON) has its own packages: Blender's would only shadow them.
    site_dirs = [] if os.environ.get("SYNCTALK_PYTHON") else _site_dirs()
    paths = [str(engine_root())] + site_dirs
    make_wheel_programs_executable(site_dirs)
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    if models_dir:
        env["SYNCTALK_MODELS"] = bpy_abspath(models_dir)
    if device and device != "auto":
        env["SYNCTALK_DEVICE"] = device
        if device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def bpy_abspath(path: str) -> str:
    """Blender's '//relative' paths made absolute (plain paths pass through when bpy is absent)."""
    try:
        import bpy
        return bpy.path.abspath(path)
    except ImportError:
        return path


def python_executable() -> str:
    """The interpreter for engine children: $SYNCTALK_PYTHON when set (a Python that has the engine's
    packages, e.g. a venv with CUDA torch), else sys.executable. Inside Blender that is Blender's own
    Python, and the extension's wheels reach it through PYTHONPATH; with the `bpy` module the venv's."""
    return os.environ.get("SYNCTALK_PYTHON") or sys.executable


@dataclass
class JobState:
    stage: str = ""
    done: int = 0
    total: int | None = None
    eta_s: float | None = None
    metrics: dict = field(default_factory=dict)
    messages: list = field(default_factory=list)   # warnings and info lines, in order
    result: dict | None = None
    error: dict | None = None                     # {"message", "hint", "path"}
    cancelled: bool = False
    finished: bool = False
    returncode: int | None = None

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    def summary(self) -> str:
        """One line for the status bar and the panel: stage, step, metrics, ETA."""
        if self.error:
            return f"Failed: {self.error.get('message', '')}"
        if self.cancelled:
            return "Cancelled"
        if self.finished:
            return "Done"
        text = self.stage or "Starting"
        if self.total:
            text += f" {self.done}/{self.total}"
        for key in ("psnr", "loss"):
            if key in self.metrics:
                text += f" {key.upper() if key == 'psnr' else key} {self.metrics[key]:.4g}"
        if self.eta_s is not None:
            text += f" ETA {_duration(self.eta_s)}"
        return text


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class JobBusy(RuntimeError):
    pass


class Job:
    """One or more engine commands run one after another in child processes (Train Subject runs
    preprocess, then train), with a shared progress state."""

    def __init__(self, label: str, commands: list[list[str]], models_dir: str = "", device: str = "auto",
                 on_line=None):
        self.label = label
        self.commands = [list(c) for c in commands]
        self.env = child_environment(models_dir, device)
        self.state = JobState()
        self.on_line = on_line            # called with each event dict (the demo prints them)
        self._events: queue.Queue = queue.Queue()
        self._process: subprocess.Popen | None = None
        self._index = -1
        self._stderr_tail: list[str] = []
        self._cancel_requested = False
        self._kill_deadline: float | None = None

    # Lifecycle
    def start(self) -> "Job":
        global _current
        if _current is not None and _current is not self and not _current.state.finished:
            raise JobBusy(f"'{_current.label}' is still running; wait for it or cancel it")
        _current = self
        self._start_next()
        return self

    def _start_next(self) -> None:
        self._index += 1
        args = [python_executable(), "-m", "engine", *self.commands[self._index], "--progress", "jsonl"]
        creation = {"start_new_session": True} if os.name == "posix" else \
            {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
        self._process = subprocess.Popen(args, cwd=str(engine_root()), env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                         encoding="utf-8", errors="replace", bufsize=1, **creation)
        process = self._process
        threading.Thread(target=self._read_stdout, args=(process,), daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(process,), daemon=True).start()

    def _read_stdout(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                self._events.put(json.loads(line))
            except json.JSONDecodeError:
                continue
        process.wait()
        self._events.put({"event": "_exit", "returncode": process.returncode, "pid": process.pid})

    def _read_stderr(self, process: subprocess.Popen) -> None:
        # Kept for the error message when the child dies without a JSON error (a crash).
        for line in process.stderr:
            self._stderr_tail = (self._stderr_tail + [line.rstrip()])[-20:]

    def poll(self) -> JobState:
        """Apply every event that arrived since the last call; never waits."""
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            self._apply(event)
        if self._kill_deadline is not None and not self.state.finished and time.monotonic() > self._kill_deadline:
            self._signal(kill=True)
            self._kill_deadline = None
        return self.state

    def _apply(self, event: dict) -> None:
        kind = event.get("event")
        state = self.state
        if self.on_line is not None and kind != "_exit":
            self.on_line(event)
        if kind == "stage":
            state.stage, state.done, state.total, state.eta_s = event.get("stage", ""), 0, event.get("total"), None
        elif kind == "progress":
            state.stage = event.get("stage", state.stage)
            state.done, state.total = event.get("done", 0), event.get("total")
            state.eta_s = event.get("eta_s")
            state.metrics.update(event.get("metrics") or {})
        elif kind in ("warning", "info"):
            state.messages.append(event.get("message", ""))
        elif kind == "result":
            state.result = {k: v for k, v in event.items() if k != "event"}
        elif kind == "error":
            state.error = {"message": event.get("message", ""), "hint": event.get("hint", ""),
                           "path": event.get("path")}
        elif kind == "cancelled":
            state.cancelled = True
        elif kind == "_exit":
            self._on_exit(event["returncode"])

    def _on_exit(self, returncode: int) -> None:
        state = self.state
        state.returncode = returncode
        if self._cancel_requested:
            state.cancelled = True
        elif returncode == 0 and state.error is None and self._index + 1 < len(self.commands):
            state.result = None
            self._start_next()
            return
        elif returncode != 0 and state.error is None and not state.cancelled:
            tail = "\n".join(self._stderr_tail[-5:])
            state.error = {"message": f"the engine stopped unexpectedly (exit code {returncode})",
                           "hint": tail or "run the same command in a terminal to see why", "path": None}
        state.finished = True

    def cancel(self, grace_s: float = 10.0) -> None:
        """Ask the child to stop (SIGTERM: the engine checkpoints and exits); kill it after `grace_s`."""
        if self.state.finished or self._process is None:
            return
        self._cancel_requested = True
        self._signal(kill=False)
        self._kill_deadline = time.monotonic() + grace_s

    def _signal(self, kill: bool) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        if kill:
            process.kill()
        elif os.name == "posix":
            process.send_signal(signal.SIGTERM)
        else:
            process.send_signal(signal.CTRL_BREAK_EVENT)

    def run_to_end(self, timeout_s: float | None = None, log=None, log_interval_s: float = LOG_INTERVAL_S) -> JobState:
        """Block until the job ends (background mode, scripts, tests). No status bar shows it there, so
        `log` (default stderr) gets a plain line at least every `log_interval_s` (stage, done/total,
        ETA), each warning as it arrives, and the outcome."""
        if self._process is None:
            self.start()
        log = log or sys.stderr
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        shown, last_line = 0, 0.0

        def report(text: str) -> None:
            print(f"SyncTalk {self.label}: {text}", file=log, flush=True)

        while not self.poll().finished:
            if deadline is not None and time.monotonic() > deadline:
                self.cancel(grace_s=5.0)
                deadline = None
            for message in self.state.messages[shown:]:
                report(message)
            shown = len(self.state.messages)
            if time.monotonic() - last_line >= log_interval_s:
                report(self.state.summary())
                last_line = time.monotonic()
            time.sleep(0.05)
        for message in self.state.messages[shown:]:
            report(message)
        report(self.state.summary())
        return self.state

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid


def current_job() -> "Job | None":
    """The running job, or the last one (its final state stays on the panel)."""
    return _current
