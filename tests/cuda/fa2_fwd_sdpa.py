"""Time PyTorch SDPA (FLASH_ATTENTION backend) on the shapes fa2_fwd_check timed and print the
ratio table (ratio = SDPA time / flashmin time). Each shape is timed once, even when several
inputs (or tuning variants, the optional last field of a TIME line) cover it.
Usage: python3 tests/cuda/fa2_fwd_sdpa.py <fa2_fwd_check output>... [--md table.md]"""

import sys

import torch
import triton.testing
from torch.nn.attention import SDPBackend, sdpa_kernel

args = sys.argv[1:]
md_out = None
if "--md" in args:
    md_out = args[args.index("--md") + 1]
    args = args[: args.index("--md")] + args[args.index("--md") + 2 :]

rows = []
for path in args:
    for line in open(path):
        if line.startswith("TIME "):
            f = line.split()
            dt, b, h, s, d, causal, ms, tf = f[1:9]
            tag = f[9] if len(f) > 9 else "default"
            rows.append(
                (tag, dt, int(b), int(h), int(s), int(d), bool(int(causal)), float(ms), float(tf))
            )

sdpa = {}


def sdpa_ms(dt, b, h, s, d, causal):
    key = (dt, b, h, s, d, causal)
    if key not in sdpa:
        dtype = torch.bfloat16 if dt == "bf16" else torch.float16
        q, k, v = (torch.randn(b, h, s, d, device="cuda", dtype=dtype) for _ in range(3))
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            f = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
            sdpa[key] = triton.testing.do_bench(f, warmup=25, rep=100, return_mode="median")
        del q, k, v
    return sdpa[key]


out = [
    "| variant | dtype | D | S | B | H | causal | flashmin ms | TFLOP/s | SDPA flash ms | TFLOP/s | ratio |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
]
for tag, dt, b, h, s, d, causal, ms, tf in rows:
    ref = sdpa_ms(dt, b, h, s, d, causal)
    flops = 4.0 * b * h * s * s * d * (0.5 if causal else 1.0)
    rtf = flops / (ref * 1e-3) / 1e12
    out.append(
        f"| {tag} | {dt} | {d} | {s} | {b} | {h} | {int(causal)} | {ms:.3f} | {tf:.0f} | {ref:.3f} | {rtf:.0f} | {ref / ms:.2f} |"
    )
print(torch.cuda.get_device_name(), "torch", torch.__version__)
print("\n".join(out))
if md_out:
    open(md_out, "w").write("\n".join(out) + "\n")
