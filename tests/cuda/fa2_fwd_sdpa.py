"""Time PyTorch SDPA (FLASH_ATTENTION backend) on the shapes fa2_fwd_check timed and print the
ratio table. Usage: python3 tests/cuda/fa2_fwd_sdpa.py <fa2_fwd_check output> [markdown out]"""
import sys

import torch
import triton.testing
from torch.nn.attention import SDPBackend, sdpa_kernel

rows = []
for line in open(sys.argv[1]):
    if line.startswith("TIME "):
        _, dt, b, h, s, d, causal, ms, tf = line.split()
        rows.append((dt, int(b), int(h), int(s), int(d), bool(int(causal)), float(ms), float(tf)))

out = ["| dtype | D | S | B | H | causal | flashmin ms | TFLOP/s | SDPA flash ms | TFLOP/s | ratio |",
       "|---|---|---|---|---|---|---|---|---|---|---|"]
for dt, b, h, s, d, causal, ms, tf in rows:
    dtype = torch.bfloat16 if dt == "bf16" else torch.float16
    q, k, v = (torch.randn(b, h, s, d, device="cuda", dtype=dtype) for _ in range(3))
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        f = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
        ref = triton.testing.do_bench(f, warmup=25, rep=100, return_mode="median")
    flops = 4.0 * b * h * s * s * d * (0.5 if causal else 1.0)
    rtf = flops / (ref * 1e-3) / 1e12
    out.append(f"| {dt} | {d} | {s} | {b} | {h} | {int(causal)} | {ms:.3f} | {tf:.0f} | {ref:.3f} | {rtf:.0f} | {ref / ms:.2f} |")
    del q, k, v
print(torch.cuda.get_device_name(), "torch", torch.__version__)
print("\n".join(out))
if len(sys.argv) > 2:
    open(sys.argv[2], "w").write("\n".join(out) + "\n")
