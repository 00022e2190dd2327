"""Engine jobs: `python -m engine COMMAND ... --progress jsonl` in a child process, and the protocol
it speaks. The one owner of that protocol: the engine's commands write it (engine.progress), and the
Blender extension (synctalk_blender.jobs), the demo and the tests read it through `Job` here.

Why a child process: preprocessing, training and rendering take minutes to hours; in a child the
caller (Blender's UI) stays responsive, a crash of torch or mediapipe cannot take it down, and a
cancel is a signal. Blender's own extension manager runs its jobs the same way.

The protocol: the child's stdout carries one JSON object a line, `{"event": TYPE, FIELD: ...}`, one of
the EVENT_TYPES below and nothing else (`event_channel` sends every other write to stderr). A command
ends with exactly one of result, error or cancelled, and the matching exit code; a crash ends with
none, and the runner reports its exit code and the end of its stderr. The other modes
(`--progress bar|log|quiet`) are for people and write no events.

This module imports nothing of the engine's stages (no torch): Blender loads it with its UI.
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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ENGINE_ROOT = Path(__file__).resolve().parent.parent   # the folder that holds the engine package


# ---------------------------------------------------------------- the events
@dataclass(frozen=True)
class EventType:
    name: str
    fields: tuple[str, ...]   # the keys every event of this type carries besides "event"
    meaning: str


STAGE = EventType("stage", ("stage", "total"),
                  "a stage begins: its name and how many steps it has (null: not known)")
PROGRESS = EventType("progress", ("stage", "done", "total", "eta_s", "metrics"),
                     "steps done in the stage, its estimated seconds left (null: not known yet) and the latest "
                     "metrics ({name: number}, e.g. loss, psnr); at most about 5 a second, always the last step")
INFO = EventType("info", ("message",), "a line worth showing (e.g. 'resuming at head step 500')")
WARNING = EventType("warning", ("message",), "something the user should know; the command goes on")
RESULT = EventType("result", (), "the command succeeded; its outputs (paths, figures) are the other keys. "
                                 "The last event of a success (exit code 0)")
ERROR = EventType("error", ("message", "hint", "path"),
                  "the command failed on bad input or a full disk: what went wrong, what to do, and the file at "
                  "fault (null: none). The last event (exit code 2)")
CANCELLED = EventType("cancelled", (), "the command was stopped (SIGTERM, Ctrl-C, CTRL_BREAK on Windows) and "
                                       "cleaned up; a training kept its checkpoint. The last event (exit code 130)")
EVENT_TYPES = {t.name: t for t in (STAGE, PROGRESS, INFO, WARNING, RESULT, ERROR, CANCELLED)}

EXIT_OK, EXIT_ERROR, EXIT_CANCELLED = 0, 2, 130


def event(kind: EventType, **fields) -> dict:
    """An event of type `kind`; every one of its fields must be given."""
    missing = [name for name in kind.fields if name not in fields]
    if missing:
        raise ValueError(f"a '{kind.name}' event needs {', '.join(missing)}")
    return {"event": kind.name, **fields}


def encode(item: dict) -> str:
    """One line of the protocol (numbers from numpy and torch written as plain numbers)."""
    return json.dumps(item, default=_jsonable) + "\n"


def decode(line: str) -> dict | None:
    """The event a line of a child's stdout holds, or None when it holds none of the declared events."""
    try:
        item = json.loads(line)
    except ValueError:
        return None
    kind = EVENT_TYPES.get(item.get("event")) if isinstance(item, dict) else None
    if kind is None or any(name not in item for name in kind.fields):
        return None
    return item


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


@contextmanager
def event_channel():
    """In the child, for jsonl mode: yields the stream the events go to (the process's stdout) while
    everything else written to stdout (print, a library, a program the command starts) goes to stderr,
    so the reader never sees a line that is not an event. Restores both on exit.

    Called in-process by a caller that has replaced sys.stdout (a test's capture), the events go to
    that stream and the rest is the caller's to keep apart."""
    sys.stdout.flush()
    try:
        process_stdout = sys.stdout.fileno() == 1
    except (AttributeError, OSError, ValueError):   # a stream in memory
        process_stdout = False
    if not process_stdout:
        yield sys.stdout
        return
    events_fd = os.dup(1)
    os.dup2(2, 1)                 # file descriptor 1: what C code and child programs inherit
    saved_stdout, sys.stdout = sys.stdout, sys.stderr
    channel = os.fdopen(events_fd, "w", encoding="utf-8", buffering=1)
    try:
        yield channel
    finally:
        channel.flush()
        os.dup2(channel.fileno(), 1)
        channel.close()
        sys.stdout = saved_stdout


def duration_text(seconds: float) -> str:
    """12m05s, or 1h02m from an hour on."""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


# ---------------------------------------------------------------- what the reader knows
@dataclass
class JobState:
    """A job as its events tell it (`apply` folds them in)."""
    stage: str = ""
    done: int = 0
    total: int | None = None
    eta_s: float | None = None
    metrics: dict = field(default_factory=dict)
    messages: list = field(default_factory=list)   # warnings and info lines, in order
    warnings: list = field(default_factory=list)   # the warnings alone (what a user must see at the end)
    result: dict | None = None
    error: dict | None = None                     # {"message", "hint", "path"}
    cancelled: bool = False
    finished: bool = False
    returncode: int | None = None

    def apply(self, item: dict) -> None:
        kind = item["event"]
        if kind == STAGE.name:
            self.stage, self.done, self.total, self.eta_s = item["stage"], 0, item["total"], None
        elif kind == PROGRESS.name:
            self.stage, self.done, self.total, self.eta_s = item["stage"], item["done"], item["total"], item["eta_s"]
            self.metrics.update(item["metrics"] or {})
        elif kind in (INFO.name, WARNING.name):
            self.messages.append(item["message"])
            if kind == WARNING.name:
                self.warnings.append(item["message"])
        elif kind == RESULT.name:
            self.result = {k: v for k, v in item.items() if k != "event"}
        elif kind == ERROR.name:
            self.error = {name: item[name] for name in ERROR.fields}
        elif kind == CANCELLED.name:
            self.cancelled = True

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    def summary(self) -> str:
        """One line for a status bar: stage, step, metrics, ETA; or the outcome."""
        if self.error:
            return f"Failed: {self.error['message']}"
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
            text += f" ETA {duration_text(self.eta_s)}"
        return text


# ---------------------------------------------------------------- the runner
def child_environment(models_dir: str = "", device: str = "auto", paths=()) -> dict:
    """The environment of an engine child: the engine's folder, then `paths`, on PYTHONPATH; the
    models folder and the device when given (empty / "auto": the child decides)."""
    env = dict(os.environ)
    search = [str(ENGINE_ROOT), *map(str, paths)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(search))
    env["PYTHONUNBUFFERED"] = "1"
    if models_dir:
        env["SYNCTALK_MODELS"] = str(models_dir)
    if device and device != "auto":
        env["SYNCTALK_DEVICE"] = device
        if device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
    return env


class Job:
    """Engine commands run one after another, each in its own child process (Train Subject runs
    preprocess, then train), with one JobState. The caller never blocks on a child: reader threads
    queue its events and `poll()` only applies what arrived; `wait()` blocks (scripts, background
    mode, tests).

    commands: argument lists without `python -m engine` and `--progress` (see the *_argv builders);
    on_event: called with each event as poll() applies it (the demo shows its steps' progress so)."""

    def __init__(self, label: str, commands: list[list[str]], python: str = sys.executable, env: dict | None = None,
                 on_event=None):
        self.label = label
        self.commands = [[str(word) for word in command] for command in commands]
        self.python = python
        self.env = child_environment() if env is None else env
        self.on_event = on_event
        self.state = JobState()
        self._events: queue.Queue = queue.Queue()
        self._process: subprocess.Popen | None = None
        self._index = -1
        self._stderr_tail: list[str] = []
        self._cancel_requested = False
        self._kill_deadline: float | None = None

    def start(self) -> "Job":
        self._start_next()
        return self

    def _start_next(self) -> None:
        self._index += 1
        argv = [self.python, "-m", "engine", *self.commands[self._index], "--progress", "jsonl"]
        # Its own process group: a Ctrl-C in the caller's terminal is the caller's to pass on (cancel()).
        group = {"start_new_session": True} if os.name == "posix" else \
            {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
        self._process = subprocess.Popen(argv, cwd=str(ENGINE_ROOT), env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                         encoding="utf-8", errors="replace", bufsize=1, **group)
        stderr_reader = threading.Thread(target=self._read_stderr, args=(self._process,), daemon=True)
        stderr_reader.start()
        threading.Thread(target=self._read_stdout, args=(self._process, stderr_reader), daemon=True).start()

    def _read_stdout(self, process: subprocess.Popen, stderr_reader: threading.Thread) -> None:
        for line in process.stdout:
            item = decode(line)
            if item is not None:
                self._events.put(item)
        process.wait()
        # Its last words on stderr first (a program it started and left running may hold the pipe open).
        stderr_reader.join(timeout=1.0)
        self._events.put({"event": None, "returncode": process.returncode})   # the child is gone

    def _read_stderr(self, process: subprocess.Popen) -> None:
        # Kept for the message when the child dies without an error event (a crash).
        for line in process.stderr:
            self._stderr_tail = (self._stderr_tail + [line.rstrip()])[-20:]

    def poll(self) -> JobState:
        """Apply every event that arrived since the last call; never waits."""
        while True:
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                break
            if item["event"] is None:
                self._on_exit(item["returncode"])
                continue
            self.state.apply(item)
            if self.on_event is not None:
                self.on_event(item)
        if self._kill_deadline is not None and not self.state.finished and time.monotonic() > self._kill_deadline:
            self._signal(kill=True)
            self._kill_deadline = None
        return self.state

    def _on_exit(self, returncode: int) -> None:
        state = self.state
        state.returncode = returncode
        if self._cancel_requested:
            state.cancelled = True
        elif returncode == EXIT_OK and state.error is None and self._index + 1 < len(self.commands):
            state.result = None
            self._start_next()
            return
        elif returncode != EXIT_OK and state.error is None and not state.cancelled:
            tail = "\n".join(self._stderr_tail[-5:])
            state.error = {"message": f"the engine stopped unexpectedly (exit code {returncode})",
                           "hint": tail or "run the same command in a terminal to see why", "path": None}
        state.finished = True

    def cancel(self, grace_s: float = 10.0) -> None:
        """Ask the child to stop (the engine cleans up and keeps its checkpoint); kill it after `grace_s`."""
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

    def wait(self, timeout_s: float | None = None, tick=None) -> JobState:
        """Start the job if needed and block until it ends; past `timeout_s` it is cancelled. `tick` is
        called with the state about 20 times a second. A Ctrl-C here cancels the child, waits for it to
        clean up, and is raised again."""
        if self._process is None:
            self.start()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            while not self.poll().finished:
                if deadline is not None and time.monotonic() > deadline:
                    self.cancel(grace_s=5.0)
                    deadline = None
                if tick is not None:
                    tick(self.state)
                time.sleep(0.05)
        except KeyboardInterrupt:
            self.cancel(grace_s=5.0)
            while not self.poll().finished:
                time.sleep(0.05)
            raise
        return self.state

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid


class Relay:
    """An `on_event` that shows a child's events through this process's Progress: the demo's steps
    on its own bar, log lines or JSON lines. The outcome (result, error, cancelled) is the caller's."""

    def __init__(self, progress):
        self.progress = progress
        self.stage = None

    def __call__(self, item: dict) -> None:
        kind = item["event"]
        if kind in (STAGE.name, PROGRESS.name) and (self.stage is None or self.stage.name != item["stage"]):
            self._close()
            self.stage = self.progress.stage(item["stage"], item["total"])
        if kind == PROGRESS.name:
            self.stage.advance(item["done"] - self.stage.done, **(item["metrics"] or {}))
        elif kind == WARNING.name:
            self.progress.warn(item["message"])
        elif kind == INFO.name:
            self.progress.info(item["message"])
        elif kind in (RESULT.name, ERROR.name, CANCELLED.name):
            self._close()

    def _close(self) -> None:
        if self.stage is not None:
            self.stage.close()
            self.stage = None


# ---------------------------------------------------------------- the commands' arguments
# One builder a command, for every program that starts engine jobs; tests/test_jobs.py parses each
# builder's output with the command's own parser, so the two cannot drift apart.
def _voice(channel: str | None, track: int, from_first_sample: bool) -> list[str]:
    """Where in a recording the speech is (engine.cli.add_channel_option): a side, an audio track, and whether
    its seconds count from that track's first sample (a Blender sound strip's) rather than its first picture."""
    return ((["--channel", channel] if channel else []) + (["--audio-track", str(track)] if track != 1 else [])
            + (["--audio-from-first-sample"] if from_first_sample else []))


def _span(span: tuple[float, float] | None) -> list[str]:
    """The seconds of a clip or a recording a command reads (None: all of it)."""
    return ["--start", repr(float(span[0])), "--end", repr(float(span[1]))] if span else []


def preprocess_argv(clip, subject, fps: float | None = None, size: int | None = None,
                    span: tuple[float, float] | None = None, audio=None, audio_offset: float = 0.0,
                    channel: str | None = None, sequence_fps: float | None = None, track: int = 1,
                    video_stream: int = 0, from_first_sample: bool = False) -> list[str]:
    """fps: the frame rate to resample to (the scene's, so renders line up frame for frame); size: the
    subject's square crop in pixels (None: the crop's own); span: the seconds of the clip to use (None: all);
    audio: the recording of its speech, when not the clip's own track; audio_offset: the recording's (or the
    own track's) second at the clip's first frame; channel: the side of a two-microphone recording that holds
    the person's voice ("left", "right"; None: both); sequence_fps: the rate an image sequence (`clip`
    plate.####.exr) plays at; track: which of the recording's (or the clip's) audio tracks, from 1; video_stream:
    which of the clip's video streams, from 0 (a movie strip's Stream Index); from_first_sample: the recording's
    seconds count from its track's first sample (a sound strip's), not from its first picture."""
    return (["preprocess", str(clip), "-o", str(subject)] + (["--fps", repr(float(fps))] if fps else [])
            + (["--size", str(size)] if size else [])
            + _span(span)
            + (["--audio", str(audio)] if audio is not None else [])
            + (["--audio-offset", repr(float(audio_offset))] if audio_offset else [])
            + _voice(channel, track, from_first_sample)
            + (["--sequence-fps", repr(float(sequence_fps))] if sequence_fps else [])
            + (["--video-stream", str(video_stream)] if video_stream else []))


def train_argv(subject, preset: str | None = None, device: str | None = None, expression: str | None = None,
               resume: bool = False, audio_encoder: str | None = None, stages: str | None = None,
               generic_model=None) -> list[str]:
    argv = ["train", str(subject)]
    for option, value in (("--preset", preset), ("--device", device), ("--expression", expression),
                          ("--audio-encoder", audio_encoder), ("--stages", stages),
                          ("--generic-model", generic_model and str(generic_model))):
        if value:
            argv += [option, value]
    return argv + (["--resume"] if resume else [])


def animate_argv(speech, curves, subject=None, generic: bool = False, model=None, fps: float | None = None,
                 seed: int | None = None, smooth: float = 0.0, intensity: dict | None = None,
                 blink_rate: float | None = None, lead: float = 0.0,
                 span: tuple[float, float] | None = None, channel: str | None = None, track: int = 1,
                 from_first_sample: bool = False) -> list[str]:
    """Exactly one of subject (its own model), generic (the bundled one) and model (a file). intensity:
    {region: scale}, 1 for unchanged; blink_rate: blinks a minute, 0 or None for the model's own; lead:
    frames the mouth moves ahead of the sound; span: the seconds of the speech to animate (None: all);
    channel: the side of a stereo recording read alone ("left", "right"; None: both); track: its audio track;
    from_first_sample: its seconds count from the track's first sample (a sound strip's file)."""
    if (subject is not None) + generic + (model is not None) != 1:
        raise ValueError("animate needs exactly one of subject, generic and model")
    who = ["--subject", str(subject)] if subject is not None else ["--model", str(model)] if model else ["--generic"]
    argv = ["animate", str(speech), *who, "-o", str(curves)] + (["--fps", repr(float(fps))] if fps else [])
    if seed is not None:
        argv += ["--seed", str(seed)]
    if smooth > 0:
        argv += ["--smooth", repr(float(smooth))]
    changed = ",".join(f"{region}={scale:g}" for region, scale in (intensity or {}).items() if abs(scale - 1) > 1e-6)
    if changed:
        argv += ["--intensity", changed]
    if blink_rate:
        argv += ["--blink-rate", repr(float(blink_rate))]
    if lead:
        argv += ["--lead", repr(float(lead))]
    return argv + _span(span) + _voice(channel, track, from_first_sample)


def lines_argv(speech, fps: float, span: tuple[float, float] | None = None, min_pause: float = 0.5,
               channel: str | None = None, track: int = 1, from_first_sample: bool = False) -> list[str]:
    """span: the seconds of the speech to read (None: all); min_pause: the shortest pause that ends a line."""
    return (["lines", str(speech), "--fps", repr(float(fps)), "--min-pause", repr(float(min_pause))]
            + _span(span)
            + _voice(channel, track, from_first_sample))


def render_argv(subject, audio, output, curves=None, device: str | None = None,
                output_format: str | None = None, fps: float | None = None,
                frames: tuple[int, int] | None = None, channel: str | None = None, track: int = 1,
                from_first_sample: bool = False) -> list[str]:
    """output_format: mp4, png or rgba (None: from the output's name); fps: the output's frame rate
    (None: the subject's); frames: (A, B), render only the speech's frames A..B-1 (None: all); channel: the
    side of a stereo recording the subject speaks ("left", "right"; None: both); track: its audio track;
    from_first_sample: its seconds count from the track's first sample (a sound strip's file)."""
    return (["render", str(subject), "--audio", str(audio)] + _voice(channel, track, from_first_sample)
            + (["--curves", str(curves)] if curves else [])
            + ["-o", str(output)] + (["--format", output_format] if output_format else [])
            + (["--fps", repr(float(fps))] if fps else []) + (["--device", device] if device else [])
            + (["--frames", f"{frames[0]}:{frames[1]}"] if frames else []))


def evaluate_argv(subject, report, device: str | None = None, limit: int | None = None) -> list[str]:
    return (["evaluate", str(subject), "-o", str(report)] + (["--limit", str(limit)] if limit else [])
            + (["--device", device] if device else []))


def models_argv(fetch: bool = False, models_dir=None) -> list[str]:
    return ["models"] + (["--fetch"] if fetch else []) + (["--models", str(models_dir)] if models_dir else [])
