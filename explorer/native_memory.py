"""The C allocator's memory, given back to the system when a request freed a lot of it (glibc only).

glibc serves each thread from its own arena and, once a large block has been freed, raises its threshold for
serving large blocks with ``mmap``; the 16 MB blocks a large decoded image is stored in then come from the
arenas of the app's worker threads, and freeing them leaves the process's resident memory where it was. Asking
glibc to trim after such a request returns them; a fixed low ``mmap`` threshold would too, but makes every
tensor of a forward pass a fresh mapping, which slows every analysis (docs/operators.md).
"""

from __future__ import annotations

import ctypes
import functools
import sys

__all__ = ["glibc", "return_freed_memory"]


@functools.cache
def glibc() -> ctypes.CDLL | None:
    """The running glibc, or None on other systems (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def return_freed_memory() -> None:
    """Give the free pages of every arena back to the system (nothing where the allocator is not glibc's)."""
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)
