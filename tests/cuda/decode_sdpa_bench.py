"""Peer timings for tests/cuda/decode_check.cu: torch SDPA (flash, cuDNN) on the same
decode shapes (H_q=32, H_k=8, D=128, bf16, S_q=1), plus the device-to-device copy bandwidth of a
4 GB tensor (bytes read + written / time). Run on the GPU next to the C++ benchmark."""

import functools

import torch
import torch.nn.functional as F
import triton.testing
from torch.nn.attention import SDPBackend, sdpa_kernel


def bench(fn):
    return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")  # ms


_flush = None


def bench_clean_l2(fn, reps=100):
    """Median ms with L2 flushed by READING 256 MB before each call: do_bench's zero_() flush
    leaves dirty lines whose write-back (6-10 us) lands inside the timed call; this one does
    not (decode_check's FM_FLUSH=read)."""
    global _flush
    if _flush is None:
        _flush = torch.ones(256 << 20, dtype=torch.uint8, device="cuda")
    fn()
    times = []
    for _ in range(reps):
        _flush.max()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


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

    hq, hk, d = 32, 8, 128
    backends = [
        ("flash", SDPBackend.FLASH_ATTENTION),
        ("cudnn", SDPBackend.CUDNN_ATTENTION),
    ]
    shapes = [(1, 65536), (8, 8192), (16, 4096), (64, 2048), (32, 8192), (64, 4096), (128, 2048)]
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
                    ms_clean = bench_clean_l2(fn)
            except Exception as e1:  # backend without GQA support: repeat K/V heads
                mode = "repeat_kv"
                try:
                    kr = k.repeat_interleave(hq // hk, dim=1)
                    vr = v.repeat_interleave(hq // hk, dim=1)
                    with sdpa_kernel(be):
                        fn = functools.partial(F.scaled_dot_product_attention, q, kr, vr)
                        fn()
                        ms = bench(fn)
                        ms_clean = bench_clean_l2(fn)
                    del kr, vr
                except Exception as e2:
                    print(
                        f"SDPA-BENCH B={b:<3d} L={L:<6d} {name:9s} unavailable: "
                        f"{str(e1).splitlines()[0][:80]} / {str(e2).splitlines()[0][:80]}"
                    )
                    torch.cuda.empty_cache()
                    continue
            gbs = kv_bytes / (ms * 1e-3) / 1e9
            print(
                f"SDPA-BENCH B={b:<3d} L={L:<6d} {name:9s} ({mode:10s}) time={ms * 1e3:8.1f} us  "
                f"K+V {gbs:7.1f} GB/s  {100 * gbs / copy_gbs:5.1f}% of copy | "
                f"read flush {ms_clean * 1e3:8.1f} us"
            )
            torch.cuda.empty_cache()
        del q, k, v
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
