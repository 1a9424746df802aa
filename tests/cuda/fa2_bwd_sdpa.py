"""Time PyTorch SDPA's FLASH_ATTENTION backward on the shapes fa2_bwd_check timed and print the
ratio table. Usage: python3 tests/cuda/fa2_bwd_sdpa.py <fa2_bwd_check output> [markdown out]
The SDPA time is torch.autograd.grad of a flash-attention output (its backward kernels: the
dO*O preprocess, the main kernel and the dQ conversion), median of triton.testing.do_bench."""

import sys

import torch
import triton.testing
from torch.nn.attention import SDPBackend, sdpa_kernel

rows = []
for line in open(sys.argv[1]):
    if line.startswith("TIME "):
        _, dt, b, h, s, d, causal, det, ms, tf = line.split()
        rows.append(
            (
                dt,
                int(b),
                int(h),
                int(s),
                int(d),
                bool(int(causal)),
                bool(int(det)),
                float(ms),
                float(tf),
            )
        )

out = [
    "| dtype | D | S | B | H | causal | det | flashmin ms | TFLOP/s | SDPA flash ms | TFLOP/s | SDPA/flashmin time |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
]
for dt, b, h, s, d, causal, det, ms, tf in rows:
    dtype = torch.bfloat16 if dt == "bf16" else torch.float16
    q, k, v = (
        torch.randn(b, h, s, d, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3)
    )
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
    g = torch.randn_like(o)
    f = lambda: torch.autograd.grad(o, (q, k, v), g, retain_graph=True)
    ref = triton.testing.do_bench(f, warmup=25, rep=100, return_mode="median")
    flops = 2.5 * 4.0 * b * h * s * s * d * (0.5 if causal else 1.0)
    rtf = flops / (ref * 1e-3) / 1e12
    out.append(
        f"| {dt} | {d} | {s} | {b} | {h} | {int(causal)} | {int(det)} | {ms:.3f} | {tf:.0f} "
        f"| {ref:.3f} | {rtf:.0f} | {ref / ms:.2f} |"
    )
    del q, k, v, o, g
print(torch.cuda.get_device_name(), "torch", torch.__version__)
print("\n".join(out))
if len(sys.argv) > 2:
    open(sys.argv[2], "w").write("\n".join(out) + "\n")
