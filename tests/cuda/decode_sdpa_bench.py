"""Peer timings for tests/cuda/decode_check.cu: torch SDPA (flash, cuDNN) on the same
decode shapes (H_q=32, H_k=8, D=128, bf16, S_q=1), plus the device-to-device copy bandwidth of a
4 GB tensor (bytes read + written / time). Run on the GPU next to the C++ benchmark.

The official figure is triton.testing.do_bench (its L2 flush is a 256 MB zero_(), which leaves
dirty lines in L2 that are written back while the timed kernel runs). The extra columns time the
same call after other flushes (CUDA-event median of 50 queued reps, as do_bench does):
memset = zero_() as do_bench, read = a 256 MB read (clean L2), ms+read = zero_() then the read,
ms+sleep = zero_() then ~1 ms of GPU idle (torch.cuda._sleep)."""

import functools
import sys

import torch
import torch.nn.functional as F
import triton.testing
from torch.nn.attention import SDPBackend, sdpa_kernel


def bench(fn):
    return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")  # ms


FLUSH_MODES = ["memset", "read", "ms+read", "ms+sleep"]


def bench_flush(fn, mode, cache, sink, reps=50):
    """Median ms of fn() after the given L2 flush, queued like do_bench."""
    for _ in range(3):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        if mode != "read":
            cache.zero_()
        if mode in ("read", "ms+read"):
            torch.sum(cache, dim=0, out=sink)
        if mode == "ms+sleep":
            torch.cuda._sleep(2_000_000)  # cycles (~1 ms)
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    ts = sorted(s.elapsed_time(e) for s, e in zip(starts, ends, strict=True))
    return ts[len(ts) // 2]


def main():
    dev = torch.device("cuda")
    print("device:", torch.cuda.get_device_name(), "torch", torch.__version__)
    x = torch.empty(2 * 1024**3, dtype=torch.bfloat16, device=dev)  # 4 GB
    y = torch.empty_like(x)
    ms = bench(functools.partial(y.copy_, x))
    copy_gbs = 2 * x.numel() * 2 / (ms * 1e-3) / 1e9
    print(f"SDPA-BENCH torch copy 4 GB: {ms:.3f} ms -> {copy_gbs:.1f} GB/s (read + write)")
    del x, y
    torch.cuda.empty_cache()
    cache = torch.empty(int(256e6 // 4), dtype=torch.int32, device=dev)  # do_bench's flush size
    sink = torch.empty((), dtype=torch.int64, device=dev)
    flush_cols = "--flush" in sys.argv

    hq, hk, d = 32, 8, 128
    backends = [
        ("flash", SDPBackend.FLASH_ATTENTION),
        ("cudnn", SDPBackend.CUDNN_ATTENTION),
    ]
    shapes = [
        (1, 65536),
        (8, 8192),
        (16, 4096),
        (64, 1024),
        (64, 2048),
        (32, 8192),
        (64, 4096),
        (128, 2048),
        (32, 16384),
    ]
    for b, L in shapes:
        q = torch.randn(b, hq, 1, d, device=dev, dtype=torch.bfloat16)
        k = torch.randn(b, hk, L, d, device=dev, dtype=torch.bfloat16)
        v = torch.randn(b, hk, L, d, device=dev, dtype=torch.bfloat16)
        kv_bytes = 2 * k.numel() * 2
        for name, be in backends:
            mode = "enable_gqa"
            try:
                with sdpa_kernel(be):
                    fn = functools.partial(F.scaled_dot_product_attention, q, k, v, enable_gqa=True)
                    fn()
                    ms = bench(fn)
                    extra = (
                        [bench_flush(fn, m, cache, sink) for m in FLUSH_MODES] if flush_cols else []
                    )
            except Exception as e1:  # backend without GQA support: repeat K/V heads
                mode = "repeat_kv"
                try:
                    kr = k.repeat_interleave(hq // hk, dim=1)
                    vr = v.repeat_interleave(hq // hk, dim=1)
                    with sdpa_kernel(be):
                        fn = functools.partial(F.scaled_dot_product_attention, q, kr, vr)
                        fn()
                        ms = bench(fn)
                        extra = (
                            [bench_flush(fn, m, cache, sink) for m in FLUSH_MODES]
                            if flush_cols
                            else []
                        )
                    del kr, vr
                except Exception as e2:
                    print(
                        f"SDPA-BENCH B={b:<3d} L={L:<6d} {name:9s} unavailable: "
                        f"{str(e1).splitlines()[0][:80]} / {str(e2).splitlines()[0][:80]}"
                    )
                    torch.cuda.empty_cache()
                    continue
            gbs = kv_bytes / (ms * 1e-3) / 1e9
            cols = " ".join(f"{m}={t * 1e3:6.1f}" for m, t in zip(FLUSH_MODES, extra, strict=False))
            print(
                f"SDPA-BENCH B={b:<3d} L={L:<6d} {name:9s} ({mode:10s}) time={ms * 1e3:8.1f} us  "
                f"K+V {gbs:7.1f} GB/s  {100 * gbs / copy_gbs:5.1f}% of copy | {cols}"
            )
            torch.cuda.empty_cache()
        del q, k, v
        torch.cuda.empty_cache()


def profile_cudnn(b, L):
    """A few plain cuDNN SDPA calls of one shape (for ncu)."""
    dev = torch.device("cuda")
    q = torch.randn(b, 32, 1, 128, device=dev, dtype=torch.bfloat16)
    k = torch.randn(b, 8, L, 128, device=dev, dtype=torch.bfloat16)
    v = torch.randn(b, 8, L, 128, device=dev, dtype=torch.bfloat16)
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        for _ in range(3):
            F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    torch.cuda.synchronize()


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--profile-cudnn":
        profile_cudnn(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
