"""Device probe (not a test): flash_decode against SDPA's backends beyond the package benchmark's
one configuration (H_q 32, H_kv 8, D 128, bf16, one query): other head dims, GQA ratios, fp16,
several query positions (bottom-right causal, as speculative decoding uses), a paged cache. Each
row reads about 268 MB or 1.07 GB of K + V. do_bench medians with its L2 flush; SDPA runs on the
same tensors (GQA through enable_gqa; S_q > 1 through causal_lower_right). A paged cache has no
SDPA counterpart: its row compares with flashmin's own call on the contiguous cache.
Usage on the GPU machine, after installing the package:
    python3 tests/cuda/decode_config_sweep.py"""

import contextlib

import torch
import torch.nn.functional as F
import triton.testing
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right

import flashmin

# (label, B, H_q, H_kv, L, D, S_q, dtype, page size: 0 for a contiguous cache, negative for
# pages in order, else shuffled)
CONFIGS = [
    ("D64", 16, 32, 8, 8192, 64, 1, torch.bfloat16, 0),
    ("D256", 16, 32, 8, 2048, 256, 1, torch.bfloat16, 0),
    ("D256 1GB", 64, 32, 8, 2048, 256, 1, torch.bfloat16, 0),
    ("D192", 16, 32, 8, 2048, 192, 1, torch.bfloat16, 0),
    ("D256 B24", 24, 32, 8, 2048, 256, 1, torch.bfloat16, 0),
    ("D256 B128 L1k", 128, 32, 8, 1024, 256, 1, torch.bfloat16, 0),
    ("D256 B256 L256", 256, 32, 8, 256, 256, 1, torch.bfloat16, 0),
    ("D192 B64", 64, 32, 8, 2048, 192, 1, torch.bfloat16, 0),
    ("MHA (G1)", 4, 32, 32, 4096, 128, 1, torch.bfloat16, 0),
    ("G8", 16, 64, 8, 4096, 128, 1, torch.bfloat16, 0),
    ("fp16", 16, 32, 8, 4096, 128, 1, torch.float16, 0),
    ("S_q 4", 16, 32, 8, 4096, 128, 4, torch.bfloat16, 0),
    ("S_q 4 1GB", 32, 32, 8, 8192, 128, 4, torch.bfloat16, 0),
    ("paged 16", 16, 32, 8, 4096, 128, 1, torch.bfloat16, 16),
    ("paged 16 in order", 16, 32, 8, 4096, 128, 1, torch.bfloat16, -16),
    ("paged 32", 16, 32, 8, 4096, 128, 1, torch.bfloat16, 32),
    ("paged 64", 16, 32, 8, 4096, 128, 1, torch.bfloat16, 64),
    ("paged 256", 16, 32, 8, 4096, 128, 1, torch.bfloat16, 256),
    ("D64 1GB", 64, 32, 8, 8192, 64, 1, torch.bfloat16, 0),
    ("MHA 1GB", 16, 32, 32, 4096, 128, 1, torch.bfloat16, 0),
]
BACKENDS = ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION")


def us_of(fn):
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median") * 1e3


def paged(k, v, page, shuffled):
    """The same caches as pages (in a shuffled order, or in order), and the block table that
    finds them."""
    b, hk, length, d = k.shape
    per_seq, n = length // page, b * length // page
    # logical page b * per_seq + j -> slot perm[...]
    perm = torch.randperm(n, device=k.device) if shuffled else torch.arange(n, device=k.device)

    def pages(x):
        logical = x.reshape(b, hk, per_seq, page, d).permute(0, 2, 1, 3, 4).reshape(n, hk, page, d)
        out = torch.empty_like(logical)
        out[perm] = logical
        return out

    return pages(k), pages(v), perm.to(torch.int32).reshape(b, per_seq)


def peer_ratios(q, k, v, lens, mask, page, ours_us):
    """Peer time / ours for each SDPA backend ('-' where it does not run)."""
    if page:
        contiguous = us_of(lambda: flashmin.flash_decode(q, k, v, lens))
        return [f"contiguous {contiguous / ours_us:.2f}", "-", "-"]
    cells = []
    for backend in BACKENDS:
        cell = "-"
        with contextlib.suppress(RuntimeError), sdpa_kernel(getattr(SDPBackend, backend)):

            def peer():
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)

            peer()
            cell = f"{us_of(peer) / ours_us:.2f}"
        cells.append(cell)
    return cells


def main():
    print("device:", torch.cuda.get_device_name(), "torch", torch.__version__)
    head = "| config | B | H_q/H_kv | L | D | S_q | MB | flashmin us | GB/s | x cudnn | x flash"
    print(head + " | x efficient | max err |")
    print("|---" * 13 + "|")
    for label, b, hq, hk, length, d, sq, dtype, page in CONFIGS:
        q = torch.randn(b, hq, sq, d, device="cuda", dtype=dtype)
        k = torch.randn(b, hk, length, d, device="cuda", dtype=dtype)
        v = torch.randn_like(k)
        lens = torch.full((b,), length, dtype=torch.int32, device="cuda")
        mask = causal_lower_right(sq, length) if sq > 1 else None
        nbytes = 2 * k.numel() * k.element_size()
        if page:
            kp, vp, table = paged(k, v, abs(page), page > 0)

            def ours():
                return flashmin.flash_decode(q, kp, vp, lens, block_table=table)
        else:

            def ours():
                return flashmin.flash_decode(q, k, v, lens)

        qd, kd, vd = (t[:1].double() for t in (q, k, v))
        ref = F.scaled_dot_product_attention(qd, kd, vd, attn_mask=mask, enable_gqa=True)
        err = (ours()[:1].double() - ref).abs().max().item()
        t = us_of(ours)
        cells = peer_ratios(q, k, v, lens, mask, page, t)
        print(
            f"| {label} | {b} | {hq}/{hk} | {length} | {d} | {sq} | {nbytes / 1e6:.0f} | {t:.1f} | "
            f"{nbytes / (t * 1e-6) / 1e9:.0f} | " + " | ".join(cells) + f" | {err:.1e} |"
        )
        del q, k, v
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
