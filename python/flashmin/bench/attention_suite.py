"""Attention forward/backward benchmark: flashmin against PyTorch's attention backends."""

from __future__ import annotations

import torch

from .peers import attention_impls, supported
from .timing import attn_flops, median_ms, tflops

TOKENS = 16384  # batch x seqlen
WIDTH = 2048  # heads x head_dim


def gpu_grid(quick: bool):
    seqlens = [1024, 4096, 16384] if quick else [512, 1024, 2048, 4096, 8192, 16384]
    dtypes = [torch.bfloat16] if quick else [torch.bfloat16, torch.float16]
    for dtype in dtypes:
        for d in (64, 128, 256):
            for causal in (False, True):
                for s in seqlens:
                    yield dtype, TOKENS // s, WIDTH // d, s, d, causal


def cpu_grid(quick: bool):
    shapes = (
        [(1, 8, 256, 64), (1, 8, 1024, 64)]
        if quick
        else [(1, 8, 256, 64), (1, 8, 1024, 64), (2, 16, 512, 128), (1, 8, 2048, 64)]
    )
    for b, h, s, d in shapes:
        for causal in (False, True):
            yield torch.float32, b, h, s, d, causal


def reference_error(fn, q, k, v, causal) -> float:
    """Max abs error of fn on a (1 batch, 2 heads) slice against a float64 reference."""
    qs, ks, vs = (t[:1, :2].contiguous() for t in (q, k, v))
    s = (qs.double() @ ks.double().transpose(-1, -2)) * q.shape[-1] ** -0.5
    if causal:
        mask = torch.ones(s.shape[-2:], dtype=torch.bool, device=q.device).triu(1)
        s = s.masked_fill(mask, float("-inf"))
    ref = torch.softmax(s, dim=-1) @ vs.double()
    del s
    return (fn(qs, ks, vs, causal).double() - ref).abs().max().item()


def correctness_failures(rows) -> list[str]:
    """Configs where flashmin's error exceeds 2x the peer's own error at the same precision
    (SDPA flash on the GPU, torch's SDPA on the CPU), with a small absolute floor."""
    bad = []
    for r in rows:
        errs = r.get("max_err", {})
        ours = errs.get("flashmin")
        peer = errs.get("sdpa_flash", errs.get("torch_sdpa"))
        if ours is None or peer is None:
            continue
        if not ours <= 2 * peer + 1e-3:
            bad.append(
                f"{r['dtype']} d={r['head_dim']} S={r['seqlen']} causal={r['causal']}: "
                f"error {ours:.2e} vs peer {peer:.2e}"
            )
    return bad


# Peak memory of the manual peer in units of its B*H*S*S score matrix (16-bit): the forward holds
# the scores, their fp32 copy and the fp32 softmax at once (~5x); the backward also keeps the
# saved softmax and P, and makes dP, its fp32 copy and the softmax gradient (~10x). One more unit
# of headroom each.
MANUAL_PEAK_SCORES = {False: 6, True: 11}


def manual_fits(scores: int, device: str, backward: bool) -> bool:
    """Whether the manual peer runs: at most 8 GiB of scores on the GPU (512 MB on the CPU), and
    on the GPU its peak within the memory free now (an 80 GB H100 cannot run the backward at
    8 GiB of scores, a 141 GB H200 can)."""
    if device != "cuda":
        return scores * 2 <= 1 << 29
    free, _ = torch.cuda.mem_get_info()
    return scores * 2 <= 8 << 30 and scores * 2 * MANUAL_PEAK_SCORES[backward] <= free


def median_ms_or_none(fn, device: str):
    """median_ms, or None where the call runs out of device memory (a peer that materialises
    more than the estimate allows): the table then leaves that cell empty instead of the suite
    stopping."""
    try:
        return median_ms(fn, device)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return None


def backward_ms(fn, q, k, v, causal, device: str):
    """Median time of the backward of fn (dQ, dK, dV for a random dO), or None if out of memory."""
    try:
        qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))
        out = fn(qg, kg, vg, causal)
        dout = torch.randn_like(out)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return None
    # (the graph and the inputs are freed when this returns)
    return median_ms_or_none(
        lambda: torch.autograd.grad(out, (qg, kg, vg), dout, retain_graph=True), device
    )


def run(device: str, quick: bool, backward: bool = True, impls=None):
    """Returns a list of row dicts: one per (config, pass) with ms and TFLOP/s per impl."""
    impls = impls or attention_impls(device)
    grid = gpu_grid(quick) if device == "cuda" else cpu_grid(quick)
    rows = []
    for dtype, b, h, s, d, causal in grid:
        q, k, v = (torch.randn(b, h, s, d, device=device, dtype=dtype) for _ in range(3))
        config = dict(
            dtype=str(dtype).replace("torch.", ""),
            batch=b,
            heads=h,
            seqlen=s,
            head_dim=d,
            causal=causal,
        )
        errors = {
            name: reference_error(impls[name], q, k, v, causal)
            for name in impls
            if name in ("flashmin", "sdpa_flash", "torch_sdpa")
        }
        fwd = dict(config, pass_="fwd", max_err=errors, ms={}, tflops={})
        bwd = dict(config, pass_="bwd", ms={}, tflops={})
        for name, fn in impls.items():
            if name == "manual" and not manual_fits(b * h * s * s, device, backward=False):
                continue
            if not supported(fn, q, k, v, causal):
                continue
            ms = median_ms_or_none(lambda fn=fn: fn(q, k, v, causal), device)
            if ms is None:
                continue
            fwd["ms"][name] = ms
            fwd["tflops"][name] = tflops(attn_flops(b, h, s, s, d, causal), ms)
            if backward and (name != "manual" or manual_fits(b * h * s * s, device, True)):
                ms = backward_ms(fn, q, k, v, causal, device)
                if ms is not None:
                    bwd["ms"][name] = ms
                    bwd["tflops"][name] = tflops(attn_flops(b, h, s, s, d, causal, True), ms)
        rows.append(fwd)
        if backward:
            rows.append(bwd)
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows
