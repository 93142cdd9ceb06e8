"""Give back the memory llama.cpp cleared but has not used yet.

llama.cpp allocates the KV cache for every slot's full context when the context is created and
fills it with zeros, so the whole cache is resident from the start (4 slots x 2048 tokens of
SmolLM2: 180 MiB) although a slot only ever touches the cells it has used. On Linux, dropping a
private anonymous page that holds only zeros changes nothing a program can see (it reads back as
zeros, from the shared zero page) but frees its memory: the cache then costs what is used.

Called once, from the engine's constructor, on the mappings its llama.cpp context made, before
the engine thread starts (no one writes to them meanwhile). Elsewhere than Linux it does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import sys

import numpy as np

log = logging.getLogger("shard.verifier.memory")

MIN_MAPPING = 16 * 1024 * 1024  # only big anonymous mappings: llama.cpp's buffers, not Python's heap
MADV_DONTNEED = 4


def anonymous_mappings(min_size: int = MIN_MAPPING) -> list[tuple[int, int]]:
    """(start, end) of this process's big private anonymous read-write mappings (Linux)."""
    if sys.platform != "linux":
        return []
    spans = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) != 5 or parts[1] != "rw-p":  # a path (file, [heap], [stack]) makes 6 fields
                continue
            start, end = (int(x, 16) for x in parts[0].split("-"))
            if end - start >= min_size:
                spans.append((start, end))
    return spans


def _minus(span: tuple[int, int], old: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of span outside the old spans (the kernel may merge a new mapping with a neighbour)."""
    parts = [span]
    for o_start, o_end in old:
        parts = [p for s, e in parts for p in ((s, min(e, o_start)), (max(s, o_end), e)) if p[0] < p[1]]
    return parts


def release_zero_pages(before: list[tuple[int, int]]) -> int:
    """Drop the all-zero pages of the big anonymous mappings made since `before` was taken (only
    memory this caller allocated: another engine in the process may be writing to its own); the
    bytes released."""
    if sys.platform != "linux":
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page = mmap.PAGESIZE
    released = 0
    for span in anonymous_mappings():
        for start, end in _minus(span, before):
            start = (start + page - 1) // page * page
            n_pages = (end - start) // page
            if n_pages <= 0:
                continue
            words = np.frombuffer(
                memoryview((ctypes.c_char * (n_pages * page)).from_address(start)).cast("B"), dtype=np.uint64
            )
            zero = ~words.reshape(n_pages, page // 8).any(axis=1)
            # runs of zero pages: where the mask steps up (a run starts) and down (it ends)
            edges = np.flatnonzero(np.diff(np.concatenate(([0], zero.view(np.int8), [0]))))
            for first, last in zip(edges[::2], edges[1::2]):
                if libc.madvise(start + int(first) * page, int(last - first) * page, MADV_DONTNEED) == 0:
                    released += int(last - first) * page
    log.info("released %.1f MiB of cleared, unused memory", released / 2**20)
    return released
