"""Keep freed tensor buffers in the process heap instead of handing them back to the kernel.

glibc's ``malloc`` serves every block above its mmap threshold (128 KiB at first, raised on the fly
up to 32 MiB) with a fresh ``mmap`` and unmaps it on ``free``, and it returns the top of the heap to
the kernel once more than the trim threshold is free there. The CPU tensors of one model call are
MiB-sized (one TCN activation of an 8 s segment is 128 × 8,001 floats = 4 MiB) and are freed between
layers, so each call touched fresh pages again: 2.4 million page faults for a 10-minute ``lvbd
separate`` and 13–15 s instead of 11.2–11.4 s (docs/design.md "Inference speed on the CPU").
:func:`keep_freed_memory` raises both thresholds, so freed buffers are reused without faults; the
peak RSS does not change (the memory is the same, it is only not returned between calls).

The command line calls it for every command; a program that uses :class:`lvbd.Separator` can call
it once itself. It changes a process-wide setting, so the library never calls it on its own.
"""
from __future__ import annotations

import ctypes
import sys

__all__ = ["keep_freed_memory", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # glibc <malloc.h>
MMAP_THRESHOLD = 32 * 2**20    # bytes; glibc's largest accepted value on 64-bit systems
TRIM_THRESHOLD = 256 * 2**20   # bytes of free heap top kept before it is returned


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (above); True if set, False where there is no glibc
    ``mallopt`` (macOS, Windows, musl): nothing changes there."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
