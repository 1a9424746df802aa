"""Public attention functions built on the torch.library ops."""

from __future__ import annotations

import math

import torch

from . import _decode_ops, _ops  # noqa: F401  (registers torch.ops.flashmin.*)
from ._checks import check_tensor, fail


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    is_causal: bool = False,
    *,
    algorithm: str = "fa2",
    deterministic: bool = False,
    return_lse: bool = False,
):
    """Attention on (batch, heads, seqlen, head_dim) tensors, differentiable.

    k/v may have fewer heads than q (GQA/MQA, q heads a multiple of k heads). Causal masking is
    top-left aligned (key j visible to query i iff j <= i), as in SDPA. algorithm="fa1" runs the
    FA1 loop order (the teaching baseline); deterministic=True makes the backward bitwise
    reproducible. Returns out, or (out, lse) with lse float32 (B, H, S_q)."""
    if _eager_plain_call(q, k, v):  # no gradient to record: skip the op's dispatch
        out, lse = _ops.fwd_impl(q, k, v, scale, is_causal, algorithm)
    else:
        out, lse = torch.ops.flashmin.fwd(q, k, v, scale, is_causal, algorithm, deterministic)
    return (out, lse) if return_lse else out


def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """Drop-in for torch.nn.functional.scaled_dot_product_attention where supported:
    inputs (..., H, L, E) with at least 3 dims, no mask, no dropout; GQA with enable_gqa=True.
    Differences: a query row that sees no key (S = 0) gives 0, not NaN."""
    if attn_mask is not None:
        fail("attn_mask", "None (masks are not supported; use is_causal)", "a tensor")
    if dropout_p != 0.0:
        fail("dropout_p", "0.0 (dropout is not supported)", dropout_p)
    for name, t in (("query", query), ("key", key), ("value", value)):
        check_tensor(name, t)
        if t.dim() < 3:
            fail(name, "at least 3 dims (..., L, E)", f"{t.dim()}-D")
    if value.shape[-1] != query.shape[-1]:
        fail("value", f"last dim {query.shape[-1]} (same as query's E)", value.shape[-1])
    if query.dim() != key.dim() or key.dim() != value.dim():
        fail("key", f"{query.dim()} dims (same as query)", f"{key.dim()} / {value.dim()}")
    if query.shape[:-3] != key.shape[:-3]:
        fail("key", f"batch dims {tuple(query.shape[:-3])} (same as query)", tuple(key.shape[:-3]))
    squeeze = query.dim() == 3
    lead = query.shape[:-3]

    def as4d(t):
        if squeeze:
            return t.unsqueeze(0)
        return t.reshape(math.prod(t.shape[:-3]), *t.shape[-3:])

    q, k, v = as4d(query), as4d(key), as4d(value)
    if q.shape[1] != k.shape[1] and not enable_gqa:
        fail("key", f"{q.shape[1]} heads like query (or pass enable_gqa=True)", k.shape[1])
    out = flash_attention(q, k, v, scale, is_causal)
    return out.squeeze(0) if squeeze else out.reshape(*lead, *out.shape[1:])


def flash_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cache_seqlens: torch.Tensor | None = None,
    *,
    block_table: torch.Tensor | None = None,
    scale: float | None = None,
    num_splits: int | None = None,
    k_new: torch.Tensor | None = None,
    v_new: torch.Tensor | None = None,
    return_lse: bool = False,
):
    """Flash-Decoding (split-KV) over a KV cache.

    q: (B, Hq, Sq, D) with Sq in 1..16, the last Sq positions of each sequence (bottom-right
    causal). k_cache/v_cache: (B, Hk, S_max, D) with any strides, or paged (num_pages, Hk,
    page_size, D) with block_table int32 (B, max_pages). cache_seqlens: int32 (B,) tokens in the
    cache (None: all S_max). k_new/v_new (B, Hk, S_new, D): written into the cache in place at
    cache_seqlens[b] before attending. num_splits: None picks from batch, heads, length and the
    GPU. Returns out (B, Hq, Sq, D), or (out, lse)."""
    if (k_new is None) != (v_new is None):
        fail("v_new" if k_new is not None else "k_new", "k_new and v_new together", "one")
    args = (q, k_cache, v_cache, k_new, v_new, cache_seqlens, block_table, scale, num_splits)
    if _eager_plain_call(q, k_cache, v_cache, k_new, v_new, cache_seqlens, block_table):
        out, lse = _decode_ops.decode_impl(*args, want_lse=return_lse)
        if k_new is not None:  # written in place, as the op's schema declares
            torch.autograd.graph.increment_version((k_cache, v_cache))
    elif k_new is None:
        out, lse = torch.ops.flashmin.decode(
            q, k_cache, v_cache, cache_seqlens, block_table, scale, num_splits
        )
    else:
        out, lse = torch.ops.flashmin.decode_append(*args)
    return (out, lse) if return_lse else out


def _private_mode_probes():
    """torch's private checks for an active torch function / dispatch mode, looked up once (an
    import inside _eager_plain_call cost ~1 us per call); None where they moved."""
    try:
        from torch.utils._python_dispatch import _get_current_dispatch_mode

        return torch._C._is_torch_function_mode_enabled, _get_current_dispatch_mode
    except (AttributeError, ImportError):
        return None


_MODE_PROBES = _private_mode_probes()


def _eager_plain_call(*tensors) -> bool:
    """Whether flash_decode / flash_attention may call an op's implementation directly instead
    of the torch.library op: eager mode with plain tensors, no torch function or dispatch mode
    active, nothing for autograd to record. The op's dispatch costs about 25 us of host time per
    call, a large part of a decode step (one call per generated token). Everything else
    (torch.compile, export, jit.trace, fake or subclass tensors, modes, training) goes through
    the op."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():  # graphs must record the op
        return False
    if _MODE_PROBES is None:  # private helpers moved: take the op
        return False
    function_mode_enabled, current_dispatch_mode = _MODE_PROBES
    if function_mode_enabled() or current_dispatch_mode() is not None:
        return False
    grad = torch.is_grad_enabled()
    for t in tensors:
        if t is not None and (type(t) is not torch.Tensor or (grad and t.requires_grad)):
            return False
    return True
