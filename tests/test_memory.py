"""Measuring the memory a call takes, whatever allocates it."""

import numpy as np
import pytest

from fusemycell import memory

MIB = 2**20


def _allocate(mib: int) -> None:
    block = np.ones(mib * MIB, dtype=np.uint8)  # written: resident, not only reserved
    assert block.sum() == mib * MIB


@pytest.mark.skipif(memory._status_bytes("VmRSS") is None, reason="reads /proc/self/status")
def test_a_short_lived_block_is_seen_by_the_high_water_mark():
    peak = memory.call_peak_bytes(lambda: _allocate(64))
    assert 60 * MIB <= peak <= 80 * MIB  # freed before the call returns, still measured
    assert memory.call_peak_bytes(lambda: None) < 8 * MIB


def test_without_a_high_water_mark_the_resident_set_is_sampled(monkeypatch):
    import time

    monkeypatch.setattr(memory, "_reset_high_water_mark", lambda: False)

    def hold():
        block = np.ones(64 * MIB, dtype=np.uint8)
        time.sleep(0.2)  # 200 samples' time: the sampler sees the block
        return block.sum()

    assert 48 * MIB <= memory.call_peak_bytes(hold) <= 96 * MIB
