"""Writing files so that nothing is ever half-written, and what a full disk or a killed job leaves.

Every output goes to a temporary sibling named `.NAME.partial-PID-TOKEN.EXT` (unique per process and
write, keeping the extension so that ffmpeg, OpenCV and matplotlib pick the right format) and is
renamed over NAME only when complete; on any error the temporary is removed. What a SIGKILL leaves
(a partial whose PID is no longer running) is removed by the next job in that folder
(`remove_leftovers`). A full disk becomes one EngineError naming the file.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import EngineError

# A partial name holds its process's id and its machine's tag: a folder on a shared drive holds other machines'
# work in progress (a farm's pieces of one render), whose process ids mean nothing here.
_PARTIAL = re.compile(r"^\..*\.partial-(\d+)-([0-9a-f]{4})")
_TEMP_FOLDER = re.compile(r"^synctalk-[a-z]+-(\d+)-([0-9a-f]{4})")
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:4]
_STEM_KEPT = 120     # characters of a name a partial name keeps (with its tags it must stay a valid name)
LOW_SPACE = 1 << 20   # a write that fails with less free space than this failed for want of space


def require_input_file(path: Path, export_again: str) -> None:
    """Raise an EngineError unless `path` is a file with something in it (`export_again`: what to export
    again when it is empty, e.g. "the clip")."""
    if path.is_dir():
        raise EngineError(f"{path}: is a folder, not a file", "pick one of the files in it", path=str(path))
    if not path.is_file():
        raise EngineError(f"{path}: file not found", "check the path", path=str(path))
    if path.stat().st_size == 0:
        raise EngineError(f"{path}: the file is empty", f"export {export_again} again", path=str(path))


def require_output_file(path: Path) -> None:
    """Raise an EngineError where `path`, a file about to be written, is an existing folder (checked before
    the work, so that minutes of it are not lost at the rename)."""
    if path.is_dir():
        raise EngineError(f"{path}: is a folder, not a file name",
                          f"name a file in it, e.g. {path / ('output' + path.suffix)}", path=str(path))


def require_new_model_file(path: Path, example: str, replace: bool) -> None:
    """A model file about to be trained: a .safetensors name, not a folder, and not an existing model unless
    `replace` (a model is never overwritten without being asked)."""
    if path.suffix != ".safetensors":
        raise EngineError(f"{path}: the output must be a .safetensors file", f"name it e.g. {example}", path=str(path))
    require_output_file(path)
    if path.exists() and not replace:
        raise EngineError(f"{path}: a model is already there", "choose another name, or pass --replace", path=str(path))


def partial_path(path: Path) -> Path:
    """A unique temporary name beside `path` for this process (the extension kept; a long name shortened, so
    that a name the file system takes still has a partial one it takes)."""
    path = Path(path)
    return path.with_name(_partial_name(path.stem, path.suffix))


def partial_folder(path: Path) -> Path:
    """A unique temporary name beside the folder `path` for this process (its whole name kept: a folder's dot
    starts no extension)."""
    path = Path(path)
    return path.with_name(_partial_name(path.name, ""))


def _partial_name(stem: str, suffix: str) -> str:
    return f".{stem[:_STEM_KEPT]}.partial-{os.getpid()}-{_HOST}{secrets.token_hex(4)}{suffix}"


def temp_prefix(kind: str) -> str:
    """Prefix of this process's folders in the system temp (`tempfile.mkdtemp(prefix=...)`)."""
    return f"synctalk-{kind}-{os.getpid()}-{_HOST}"


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path to write; on success it replaces `path`, on any error it is removed."""
    path = Path(path)
    require_output_file(path)
    tmp = partial_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        _remove(tmp)
        # Some writers (libsndfile, libpng) only say "system error": a disk left all but full says why.
        if is_disk_full(exc) or (isinstance(exc, Exception) and not isinstance(exc, EngineError)
                                 and free_bytes(path.parent) < LOW_SPACE):
            raise disk_full(path) from exc
        raise


def atomic_write_json(path: str | Path, data: dict) -> None:
    text = json.dumps(data, indent=2, default=_jsonable)
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def atomic_write_tensors(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict | None = None) -> None:
    from safetensors.numpy import save_file
    with atomic_output(path) as tmp:
        # safetensors leaves its files readable by their owner alone; a model on a studio's shared drive
        # gets the mode of any other new file there (the umask's)
        tmp.touch()
        mode = tmp.stat().st_mode
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp),
                  metadata={k: str(v) for k, v in (metadata or {}).items()})
        tmp.chmod(mode)


def atomic_write_image(path: str | Path, image_bgr: np.ndarray, params: list | None = None) -> None:
    """An image through OpenCV (which reports failure by returning False, not by raising)."""
    import cv2
    path = Path(path)
    with atomic_output(path) as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(image_bgr), params or []):
            raise write_failed(path)


def _jsonable(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class DiskFull(EngineError):
    """A write failed for want of space (the file was not written; nothing earlier was changed)."""


def disk_full(path: str | Path) -> DiskFull:
    path = Path(path)
    return DiskFull(f"{path}: the disk is full ({_free_text(path.parent)} free)",
                    "free some disk space (or choose a folder on another disk) and run again; "
                    "nothing written before was changed", path=str(path))


def path_failure(exc: OSError) -> EngineError | None:
    """What a user is told of a path the file system refused (a folder named where a file goes, a file where a
    folder goes, a folder this user may not write); None for other errors (a bug, not input)."""
    if exc.filename is None:
        return None
    path = str(exc.filename)
    if isinstance(exc, PermissionError):
        return EngineError(f"{path}: permission denied", "choose a folder you can write to (or a file you can "
                           "read)", path=path)
    if isinstance(exc, (FileExistsError, IsADirectoryError)):
        return EngineError(f"{path}: is in the way (a file or folder of that name exists)",
                           "choose another output name, or move that one away", path=path)
    if isinstance(exc, (NotADirectoryError, FileNotFoundError)):
        return EngineError(f"{path}: a folder on its way is missing or is a file",
                           "choose an output inside an existing folder", path=path)
    if exc.errno == errno.ENAMETOOLONG:
        return EngineError(f"{path}: the name is longer than the file system takes",
                           "choose a shorter name", path=path)
    return None


def write_failed(path: str | Path) -> EngineError:
    """For writers that only say 'failed' (OpenCV, ffmpeg): the disk is full, or the folder is not writable."""
    path = Path(path)
    if free_bytes(path.parent) < LOW_SPACE:
        return disk_full(path)
    return EngineError(f"{path}: could not be written", "check that the folder exists and is writable",
                       path=str(path))


def free_bytes(folder: str | Path) -> int:
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def _free_text(folder: Path) -> str:
    try:
        return megabytes(free_bytes(folder))
    except OSError:
        return "no space"


def megabytes(size: float) -> str:
    return f"{size / 1e6:.0f} MB" if size >= 10e6 else f"{size / 1e6:.2f} MB"


def require_free_space(folder: str | Path, needed: int, what: str) -> None:
    """Refuse before long work when the disk cannot hold what it will write (`needed` bytes, estimated)."""
    free = free_bytes(folder)
    if free < needed:
        raise EngineError(f"{folder}: {what} needs about {megabytes(needed)}, but only {megabytes(free)} are free",
                          "free some disk space or choose a folder on another disk", path=str(folder))


def preallocated_memmap(path: Path, dtype, shape: tuple) -> np.memmap:
    """A scratch array on disk whose blocks are reserved first, so a full disk is an error here
    (ENOSPC) and not a SIGBUS at some later write into the mapping."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    try:
        with open(path, "wb") as handle:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(handle.fileno(), 0, max(size, 1))
            else:  # Windows and macOS report a full disk on write, not with a signal
                handle.truncate(max(size, 1))
    except OSError as exc:
        _remove(path)
        if is_disk_full(exc):
            raise disk_full(path) from exc
        raise
    return np.memmap(path, dtype=dtype, mode="r+", shape=shape)


def process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if sys.platform == "win32":
        import ctypes
        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ctypes.windll.kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        ctypes.windll.kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers(folder: str | Path) -> list[Path]:
    """Remove the partial files and folders in `folder` whose process on this machine is gone (killed); returns
    them."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _PARTIAL.match(entry.name) or _TEMP_FOLDER.match(entry.name)
        if match and match.group(2) == _HOST and not process_alive(int(match.group(1))):
            _remove(entry)
            removed.append(entry)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
