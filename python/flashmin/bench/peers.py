"""The implementations the benchmark compares: flashmin and PyTorch's own attention paths."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

import flashmin

SDPA_BACKENDS = {
    "sdpa_flash": "FLASH_ATTENTION",
    "sdpa_cudnn": "CUDNN_ATTENTION",
    "sdpa_efficient": "EFFICIENT_ATTENTION",
}


def _sdpa(backend_name):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, backend_name)

    def run(q, k, v, causal):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(
                q, k, v, is_causal=causal, enable_gqa=q.shape[1] != k.shape[1]
            )

    return run


def manual(q, k, v, causal):
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    s = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if causal:
        mask = torch.ones(s.shape[-2:], dtype=torch.bool, device=q.device).triu(1)
        s = s.masked_fill(mask, float("-inf"))
    return torch.softmax(s.float(), dim=-1).to(q.dtype) @ v


def flashmin_fa2(q, k, v, causal):
    return flashmin.flash_attention(q, k, v, is_causal=causal)


def flashmin_fa1(q, k, v, causal):
    return flashmin.flash_attention(q, k, v, is_causal=causal, algorithm="fa1")


def cpu_sdpa(q, k, v, causal):
    return F.scaled_dot_product_attention(
        q, k, v, is_causal=causal, enable_gqa=q.shape[1] != k.shape[1]
    )


def attention_impls(device: str) -> dict:
    if device != "cuda":
        return {"flashmin": flashmin_fa2, "torch_sdpa": cpu_sdpa, "manual": manual}
    impls = {"flashmin": flashmin_fa2}
    impls.update({name: _sdpa(b) for name, b in SDPA_BACKENDS.items()})
    impls["manual"] = manual
    return impls


def supported(fn, q, k, v, causal) -> bool:
    """Whether a peer runs on these inputs (SDPA backends refuse some shapes)."""
    with contextlib.suppress(RuntimeError):
        fn(q, k, v, causal)
        return True
    return False
