"""Engine jobs in Blender: where the engine is, the child's environment (Blender's site-packages,
the preferences), and one job at a time per Blender session.

The protocol, the runner and the commands' arguments are engine.jobs (bpy-free, shared with the demo
and the tests); this module adapts them to Blender: operators poll a Job from a modal timer, or run it
to the end with plain log lines in background mode.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path


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


import_engine()
from engine import jobs as engine_jobs  # noqa: E402

LOG_INTERVAL_S = 10.0   # run_to_end's longest silence (background mode, render farms)

# Only one engine job at a time per Blender session: each may use every core and gigabytes.
_current: "Job | None" = None


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


class JobBusy(RuntimeError):
    pass


class Job(engine_jobs.Job):
    """An engine job started from Blender: its child sees every site-packages this Blender sees (the
    extension's wheels live in one of them) and the preferences' models folder and device."""

    def __init__(self, label: str, commands: list[list[str]], models_dir: str = "", device: str = "auto"):
        # A Python of its own ($SYNCTALK_PYTHON) has its own packages: Blender's would only shadow them.
        site_dirs = [] if os.environ.get("SYNCTALK_PYTHON") else _site_dirs()
        make_wheel_programs_executable(site_dirs)
        env = engine_jobs.child_environment(bpy_abspath(models_dir) if models_dir else "", device, site_dirs)
        super().__init__(label, commands, python=python_executable(), env=env)

    def start(self) -> "Job":
        global _current
        # Polled here too: a job whose operator went away (a file loaded while it ran) is polled by nobody else,
        # and its end would never be seen.
        if _current is not None and _current is not self and not _current.poll().finished:
            raise JobBusy(f"'{_current.label}' is still running; wait for it or cancel it")
        _current = self
        return super().start()

    def run_to_end(self, timeout_s: float | None = None, log=None, log_interval_s: float = LOG_INTERVAL_S):
        """Block until the job ends (background mode, scripts, tests). No status bar shows it there, so
        `log` (default stderr) gets a plain line at least every `log_interval_s` (stage, done/total,
        ETA), each warning as it arrives, and the outcome."""
        log = log or sys.stderr
        shown, last_line = 0, 0.0

        def report(text: str) -> None:
            print(f"SyncTalk {self.label}: {text}", file=log, flush=True)

        def tick(state) -> None:
            nonlocal shown, last_line
            for message in state.messages[shown:]:
                report(message)
            shown = len(state.messages)
            if time.monotonic() - last_line >= log_interval_s:
                report(state.summary())
                last_line = time.monotonic()

        state = self.wait(timeout_s, tick)
        for message in state.messages[shown:]:
            report(message)
        report(state.summary())
        return state


def current_job() -> "Job | None":
    """The running job, or the last one (its final state stays on the panel)."""
    return _current


def stop_current_job() -> None:
    """Cancel the running job, for good: the extension is disabled, or Blender quits."""
    if _current is not None and not _current.state.finished:
        _current.cancel()
