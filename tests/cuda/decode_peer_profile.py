"""Launch shapes of the SDPA peers on the decode benchmark shapes (H_q=32, H_k=8, D=128, bf16,
S_q=1): each backend's kernels with grid, block, registers, shared memory and duration, from a
torch.profiler trace. Diagnostic for docs/kernels_decode.md; run on the GPU.
Usage: python3 tests/cuda/decode_peer_profile.py [--ncu-target B L backend] (one shape, plain
calls, for `ncu`)."""

import json
import os
import sys
import tempfile

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}
SHAPES = [(1, 65536), (8, 8192), (16, 4096), (64, 1024), (32, 8192), (128, 2048)]


def inputs(b, seq):
    dev = torch.device("cuda")
    q = torch.randn(b, 32, 1, 128, device=dev, dtype=torch.bfloat16)
    k = torch.randn(b, 8, seq, 128, device=dev, dtype=torch.bfloat16)
    v = torch.randn(b, 8, seq, 128, device=dev, dtype=torch.bfloat16)
    return q, k, v


def call(backend, q, k, v):
    with sdpa_kernel(BACKENDS[backend]):
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)


def profile_shape(b, seq, backend):
    q, k, v = inputs(b, seq)
    for _ in range(3):
        call(backend, q, k, v)
    torch.cuda.synchronize()
    acts = [torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(5):
            call(backend, q, k, v)
        torch.cuda.synchronize()
    path = os.path.join(tempfile.mkdtemp(), "trace.json")
    prof.export_chrome_trace(path)
    kernels = {}
    for ev in json.load(open(path))["traceEvents"]:
        if ev.get("cat") != "kernel":
            continue
        a = ev.get("args", {})
        key = (ev["name"], str(a.get("grid")), str(a.get("block")))
        entry = kernels.setdefault(key, {"dur": [], "args": a})
        entry["dur"].append(ev.get("dur", 0.0))
    for (name, grid, block), e in kernels.items():
        a = e["args"]
        durs = sorted(e["dur"])
        print(
            f"PEER B={b:<3d} L={seq:<6d} {backend:5s} grid={grid} block={block} "
            f"regs={a.get('registers per thread')} smem={a.get('shared memory')} "
            f"blocks/SM={a.get('blocks per SM')} warps/SM={a.get('warps per SM')} "
            f"n={len(durs)} median={durs[len(durs) // 2]:.1f} us  kernel={name[:160]}"
        )
    del q, k, v
    torch.cuda.empty_cache()


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--ncu-target":
        b, seq, backend = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
        q, k, v = inputs(b, seq)
        for _ in range(3):
            call(backend, q, k, v)
        torch.cuda.synchronize()
        return
    print("device:", torch.cuda.get_device_name(), "torch", torch.__version__)
    for b, seq in SHAPES:
        for backend in BACKENDS:
            try:
                profile_shape(b, seq, backend)
            except Exception as e:  # a backend that refuses the shape
                print(f"PEER B={b} L={seq} {backend} unavailable: {str(e).splitlines()[0][:100]}")


if __name__ == "__main__":
    main()
