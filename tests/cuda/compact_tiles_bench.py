"""Time the sm80 family's compact fp16/bf16 tiles (what 99 KB parts, sm_86 / sm_89, run) against
its regular tiles on the lent GPU, both forced with FLASHMIN_FORCE_SM80=1; the compact ones with
FLASHMIN_FORCE_COMPACT=1. Not a measure of an sm_86/89 GPU (other SM counts, clocks and caches):
it shows what the smaller tiles cost on the same chip. bf16, B 2, H 16, S 2048, not causal;
do_bench medians. Usage: python3 tests/cuda/compact_tiles_bench.py"""

import os

import torch
import triton.testing

import flashmin

B, H, S = 2, 16, 2048
os.environ["FLASHMIN_FORCE_SM80"] = "1"
print("| d | pass | regular ms | compact ms | compact / regular | compact TFLOP/s |")
print("|---|---|---|---|---|---|")
for d in (64, 128, 160, 192, 256):
    q, k, v, dout = (torch.randn(B, H, S, d, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    q.requires_grad_()
    k.requires_grad_()
    v.requires_grad_()
    out = flashmin.flash_attention(q, k, v)

    def fwd():
        return flashmin.flash_attention(q, k, v)

    def bwd():
        return torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)

    flops = 4.0 * B * H * S * S * d
    for name, fn, f in (("forward", fwd, flops), ("backward", bwd, 2.5 * flops)):
        ms = {}
        for mode in ("0", "1"):
            os.environ["FLASHMIN_FORCE_COMPACT"] = mode
            if name == "backward":  # the forward's saved state does not depend on the tiles
                out = flashmin.flash_attention(q, k, v)
            ms[mode] = triton.testing.do_bench(fn, return_mode="median")
        os.environ["FLASHMIN_FORCE_COMPACT"] = "0"
        print(
            f"| {d} | {name} | {ms['0']:.3f} | {ms['1']:.3f} | {ms['1'] / ms['0']:.2f} "
            f"| {f / (ms['1'] * 1e-3) / 1e12:.0f} |"
        )
