"""The engine process keeps the memory it frees (glibc's malloc), instead of handing it back to the kernel.

Rendering and training allocate and free the same large tensors every frame and every step. By default
glibc serves large blocks with mmap and unmaps them on free (and trims the heap's top), so the next
allocation takes a page fault for every 4 KiB page and the kernel zeroes it again: on 2 cores, `render`
spent 8 of its 60 CPU-seconds in the kernel that way (2.1 million page faults for 100 frames). Serving
every block from the heap and never trimming it keeps those pages in the process; the peak memory is
what it was, it is simply not returned between steps. Called once, at the start of `python -m engine`
(never inside Blender's own process).
"""
from __future__ import annotations

import ctypes
import sys

# mallopt() parameters, from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4

_SETTINGS = (
    (_M_MMAP_MAX, 0),                # no block of its own for large allocations: they come from the heap
    (_M_TRIM_THRESHOLD, 2**31 - 1),  # the heap's free top is kept (up to 2 GiB) rather than trimmed
    (_M_TOP_PAD, 256 * 2**20),       # and grows in 256 MiB steps, not page by page
)


def keep_freed_memory() -> bool:
    """Apply the settings above; False where the C library is not glibc (they are only a speed-up)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and other C libraries: no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return all(mallopt(parameter, value) == 1 for parameter, value in _SETTINGS)
