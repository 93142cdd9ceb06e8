"""Giving back cleared memory (shard.verifier.memory): zero pages go, data stays."""

from __future__ import annotations

import sys

import numpy as np
import psutil
import pytest

from shard.verifier.memory import anonymous_mappings, release_zero_pages


@pytest.mark.skipif(sys.platform != "linux", reason="madvise on /proc/self/maps: Linux only (a no-op elsewhere)")
def test_zero_pages_are_released_and_data_is_kept() -> None:
    proc = psutil.Process()
    before = anonymous_mappings()
    buf = np.zeros(64 * 2**20 // 8, dtype=np.uint64)
    buf[:] = 0  # cleared as llama.cpp clears its KV cache: every page resident
    buf[12345] = 7
    buf[-1] = 9
    rss = proc.memory_info().rss
    released = release_zero_pages(before)
    assert released > 60 * 2**20
    assert proc.memory_info().rss < rss - 50 * 2**20
    assert buf[12345] == 7 and buf[-1] == 9 and int(buf.sum()) == 16  # what was written is still there
    buf[5] = 3  # and the released pages work as before
    assert int(buf.sum()) == 19
