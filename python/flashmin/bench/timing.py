"""Timing and FLOP/byte counting shared by the benchmark suites."""

from __future__ import annotations

import statistics
import time

import torch


def median_ms(fn, device: str) -> float:
    """Median time of fn() in milliseconds: triton.testing.do_bench (CUDA events) on the GPU,
    perf_counter on the CPU."""
    if device == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
    fn()
    times = []
    deadline = time.perf_counter() + 1.0
    while len(times) < 5 or (time.perf_counter() < deadline and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def attn_flops(b, h, sq, sk, d, causal, backward=False) -> float:
    """4*B*H*Sq*Sk*D for the two matmuls of the forward (half when causal and square);
    the backward does 2.5x the forward's work."""
    f = 4.0 * b * h * sq * sk * d
    if causal:
        f /= 2
    return f * 2.5 if backward else f


def tflops(flops: float, ms: float) -> float:
    return flops / (ms * 1e-3) / 1e12 if ms == ms and ms > 0 else float("nan")


def gpu_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"


def copy_bandwidth_gbs(nbytes: int = 2 << 30) -> float:
    """Device-to-device copy bandwidth, counting bytes read plus bytes written."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), "cuda")
    return 2 * nbytes / (ms * 1e-3) / 1e9
