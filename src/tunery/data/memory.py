"""Give freed C-heap memory back to the operating system (glibc `malloc_trim`).

Loading a tokenizer.json allocates ~40 MB of temporary Rust structures and frees most of them,
but glibc keeps the freed pages mapped: they stay in the process's resident set until the
process exits, and Python's own allocator (mmap'ed arenas) never reuses them. Trimming right
after such a load keeps peak RSS down for the rest of the run. A no-op where glibc is absent.
"""

from __future__ import annotations

import ctypes
import functools


@functools.cache
def _malloc_trim():
    try:
        # the process's own symbols: libc is always loaded (ctypes.util.find_library spawns ldconfig)
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


def trim_heap() -> bool:
    """Release free heap pages to the OS; True when glibc did release some."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
