"""The benchmark's guards: a peer that runs out of device memory leaves its cell empty instead of
ending the run (an 80 GB H100 could not hold the manual peer's backward), and the manual peer
only runs where its materialised scores fit."""

from __future__ import annotations

import pytest
import torch

from flashmin.bench import attention_suite
from flashmin.bench.peers import manual


def _out_of_memory():
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 16.00 GiB.")


def test_out_of_memory_leaves_the_cell_empty():
    assert attention_suite.median_ms_or_none(_out_of_memory, "cpu") is None


def test_backward_out_of_memory_leaves_the_cell_empty():
    q, k, v = (torch.randn(1, 2, 16, 8) for _ in range(3))

    def peer(q, k, v, causal):
        _out_of_memory()

    assert attention_suite.backward_ms(peer, q, k, v, False, "cpu") is None


def test_backward_time_of_a_peer_that_fits():
    q, k, v = (torch.randn(1, 2, 32, 8) for _ in range(3))
    ms = attention_suite.backward_ms(manual, q, k, v, True, "cpu")
    assert ms is not None and ms > 0


def test_other_errors_are_not_swallowed():
    def broken():
        raise RuntimeError("not a memory error")

    with pytest.raises(RuntimeError, match="not a memory error"):
        attention_suite.median_ms_or_none(broken, "cpu")


@pytest.mark.parametrize("backward", [False, True])
def test_manual_peer_size_rule_on_the_cpu(backward):
    # 512 MB of 16-bit scores on the CPU, forward and backward alike.
    assert attention_suite.manual_fits(1 << 28, "cpu", backward)
    assert not attention_suite.manual_fits((1 << 28) + 1, "cpu", backward)


@pytest.mark.gpu
def test_manual_peer_size_rule_on_the_gpu():
    free, _ = torch.cuda.mem_get_info()
    assert not attention_suite.manual_fits((8 << 30) // 2 + 1, "cuda", False)  # > 8 GiB
    # The backward's peak (11 score matrices) must fit the free memory.
    too_big = free // (2 * attention_suite.MANUAL_PEAK_SCORES[True]) + 1
    assert not attention_suite.manual_fits(too_big, "cuda", True)
    assert attention_suite.manual_fits(1 << 20, "cuda", True)
