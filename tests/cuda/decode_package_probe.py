"""Device probe of flashmin.flash_decode as the package runs it (not a test): the split count the
planner picks, do_bench medians (with the 256 MB flush, as python -m flashmin times it), the host
time per call (launches queued without synchronising), the GPU time of a CUDA-graph replay (no
host work), and an eager decode loop against SDPA (eager_steps). Usage on the GPU machine, after
installing the package:
    python3 tests/cuda/decode_package_probe.py [--eager-only]"""

import sys
import time

import torch
import triton.testing

import flashmin
import flashmin._decode_ops as ops


class _Spy:
    """Stands in for flashmin._C in _decode_ops and remembers the params of the last decode."""

    def __init__(self, real):
        self.real, self.last = real, None

    def __getattr__(self, name):
        return getattr(self.real, name)

    def decode(self, p, device, stream):
        self.last = (p.num_splits, p.workspace_bytes)
        return self.real.decode(p, device, stream)


def main():
    spy = _Spy(ops._C)
    ops._C = spy
    dev = "cuda"
    print("device:", torch.cuda.get_device_name(), "torch", torch.__version__)
    for b, length in [(1, 16384), (1, 65536), (8, 8192), (16, 4096), (32, 8192)]:
        q = torch.randn(b, 32, 1, 128, device=dev, dtype=torch.bfloat16)
        k = torch.randn(b, 8, length, 128, device=dev, dtype=torch.bfloat16)
        v = torch.randn_like(k)
        lens = torch.full((b,), length, dtype=torch.int32, device=dev)

        def call(splits=None):
            return flashmin.flash_decode(q, k, v, lens, num_splits=splits)

        call()
        splits, ws = spy.last
        ms = triton.testing.do_bench(call, warmup=25, rep=100, return_mode="median")
        ms_fixed = triton.testing.do_bench(
            lambda: call(splits), warmup=25, rep=100, return_mode="median"
        )
        torch.cuda.synchronize()
        n = 200
        t0 = time.perf_counter()
        for _ in range(n):
            call()
        host_us = (time.perf_counter() - t0) / n * 1e6
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            torch.ops.flashmin.decode(q, k, v, lens, None, None, None)
        host_op_us = (time.perf_counter() - t0) / n * 1e6
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            call()
            with torch.cuda.graph(g):
                call()
        torch.cuda.current_stream().wait_stream(s)
        ms_graph = triton.testing.do_bench(g.replay, warmup=25, rep=100, return_mode="median")
        print(
            f"PROBE B={b} L={length} splits={splits} ws={ws} do_bench={ms * 1e3:.1f} us "
            f"do_bench(num_splits={splits})={ms_fixed * 1e3:.1f} us graph={ms_graph * 1e3:.1f} us "
            f"host/call={host_us:.1f} us (op only {host_op_us:.1f} us)"
        )


def host_breakdown(b=8, length=8192):
    """Host microseconds of each step of decode_impl, timed separately (launches queue up)."""
    from flashmin import _native

    dev = "cuda"
    q = torch.randn(b, 32, 1, 128, device=dev, dtype=torch.bfloat16)
    k = torch.randn(b, 8, length, 128, device=dev, dtype=torch.bfloat16)
    v = torch.randn_like(k)
    lens = torch.full((b,), length, dtype=torch.int32, device=dev)
    real = ops._C.real if isinstance(ops._C, _Spy) else ops._C

    def params():  # as decode_impl builds them: one constructor call
        return real.DecodeParams(
            q.data_ptr(),
            _native.strides(q),
            k.data_ptr(),
            _native.strides(k),
            v.data_ptr(),
            _native.strides(v),
            q.data_ptr(),
            _native.strides(q),
            lens.data_ptr(),
            b,
            32,
            8,
            1,
            128,
            length,
            0.088,
            _native.native_dtype(q.dtype),
            0,
        )

    p = params()
    ws_bytes = real.decode_plan(p, 0)
    ws = torch.empty(ws_bytes, dtype=torch.uint8, device=dev)
    p.workspace, p.workspace_bytes = ws.data_ptr(), ws_bytes
    steps = {
        "check_decode_args": lambda: ops.check_decode_args(q, k, v, lens, None, None, None, None),
        "kernel_ready x3": lambda: [_native.kernel_ready(t) for t in (q, k, v)],
        "outputs (out, lse)": lambda: (
            _native.new_output_like(q),
            _native.new_output((b, 32, 1), torch.float32, q.device),
        ),
        "params (one constructor call)": params,
        "device_and_stream": lambda: _native.device_and_stream(q),
        "workspace torch.empty": lambda: torch.empty(ws_bytes, dtype=torch.uint8, device=dev),
        "decode_plan": lambda: real.decode_plan(params(), 0),
        "decode (workspace check + maps + launches)": lambda: real.decode(p, 0, 0),
        "decode_impl total": lambda: ops.decode_impl(q, k, v, None, None, lens, None, None, None),
    }
    for name, fn in steps.items():
        for _ in range(20):
            fn()
        torch.cuda.synchronize()
        best = 1e9
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(100):
                fn()
            best = min(best, (time.perf_counter() - t0) / 100 * 1e6)
            torch.cuda.synchronize()
        print(f"HOST {name:40s} {best:7.1f} us")


def eager_steps():
    """A decode loop as an eager user runs it: host microseconds per queued call, and the wall
    time per call of 200 back-to-back calls (the larger of host and GPU time), for flash_decode
    and for SDPA's cuDNN and flash backends (GQA through enable_gqa) on the same tensors."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    dev = "cuda"

    def per_call(fn, n=200):
        for _ in range(20):
            fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        host = (time.perf_counter() - t0) / n * 1e6
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) / n * 1e6
        return host, wall

    for b, length in [(1, 1024), (1, 4096), (8, 2048), (1, 16384), (16, 4096)]:
        q = torch.randn(b, 32, 1, 128, device=dev, dtype=torch.bfloat16)
        k = torch.randn(b, 8, length, 128, device=dev, dtype=torch.bfloat16)
        v = torch.randn_like(k)
        lens = torch.full((b,), length, dtype=torch.int32, device=dev)
        cells = {"flashmin": per_call(lambda: flashmin.flash_decode(q, k, v, lens))}
        for name, backend in (
            ("cudnn", SDPBackend.CUDNN_ATTENTION),
            ("flash", SDPBackend.FLASH_ATTENTION),
        ):
            try:
                with sdpa_kernel(backend):
                    cells[name] = per_call(lambda: sdpa(q, k, v, enable_gqa=True))
            except RuntimeError as e:  # backend not available for this shape
                cells[name] = None
                print(f"EAGER {name} B={b} L={length}: {str(e).splitlines()[0]}")
        text = " ".join(
            f"{n} host={c[0]:.1f} wall={c[1]:.1f}" for n, c in cells.items() if c is not None
        )
        print(f"EAGER B={b} L={length} (us per call) {text}")


if __name__ == "__main__":
    if "--eager-only" not in sys.argv:
        main()
        host_breakdown()
    eager_steps()
