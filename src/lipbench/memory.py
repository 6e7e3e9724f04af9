"""Process memory settings, applied where a process that renders starts (the CLI's main, a
replica): glibc's malloc keeps up to 8 arenas per core, one per thread that allocates, and a
render's threads (the network's, the prefetch, the encoder pipe, the avatar's decoder) each
grow their own. Two arenas hold the same work in less memory: a 1080p × 60 s avatar's run
peaked at 1599 MB with the default and 1337 MB with two (the torch path, one run each,
lipbench.face.bench_memory on a 2-core AMD EPYC, 2026-12-06)."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_ARENA_MAX = -8  # glibc's mallopt parameter
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process (where it runs on glibc); True if done.
    Arenas that already exist stay: call it before threads start allocating."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
