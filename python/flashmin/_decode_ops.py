"""torch.library ops for Flash-Decoding over a KV cache: `flashmin::decode` (read-only cache)
and `flashmin::decode_append` (writes k_new/v_new into the cache first; declared as a mutation)."""

from __future__ import annotations

import torch

from . import _C
from ._checks import check_float_dtype, check_head_dim, check_same, check_scale, check_tensor, fail
from ._native import (
    attach_workspace,
    device_and_stream,
    kernel_ready,
    native_dtype,
    new_output,
    new_output_like,
    softmax_scale,
    strides,
)

MAX_DECODE_QUERIES = 16


def _is_kernel_ready(t: torch.Tensor) -> bool:
    return kernel_ready(t) is t


def check_decode_args(q, k_cache, v_cache, cache_seqlens, block_table, k_new, v_new, num_splits):
    check_tensor("q", q, 4)
    check_float_dtype("q", q)
    b, hq, sq, d = q.shape
    check_head_dim("q", d)
    if not 1 <= sq <= MAX_DECODE_QUERIES:
        fail("q", f"1 to {MAX_DECODE_QUERIES} query positions (dim 2)", sq)
    for name, c in (("k_cache", k_cache), ("v_cache", v_cache)):
        check_tensor(name, c, 4)
        check_same(name, c, q, "q")
    if v_cache.shape != k_cache.shape:
        fail("v_cache", f"shape {tuple(k_cache.shape)} (same as k_cache)", tuple(v_cache.shape))
    hk = k_cache.shape[1]
    if k_cache.shape[3] != d:
        fail("k_cache", f"head_dim {d} (same as q)", k_cache.shape[3])
    if hk < 1 or hq % hk != 0:
        fail("k_cache", f"a number of heads that divides q's {hq}", hk)
    if block_table is None:
        if k_cache.shape[0] != b:
            fail(
                "k_cache",
                f"batch size {b} (same as q), or a block_table for a paged cache",
                k_cache.shape[0],
            )
    else:
        check_tensor("block_table", block_table, 2)
        if block_table.dtype != torch.int32:
            fail("block_table", "dtype torch.int32", block_table.dtype)
        if block_table.device != q.device:
            fail("block_table", f"device {q.device} (same as q)", block_table.device)
        if block_table.shape[0] != b:
            fail("block_table", f"{b} rows (q's batch size)", block_table.shape[0])
        page = k_cache.shape[2]
        if page < 16 or page & (page - 1):
            fail("k_cache", "a page size (dim 2) that is a power of two >= 16", page)
    if cache_seqlens is not None:
        check_tensor("cache_seqlens", cache_seqlens, 1)
        if cache_seqlens.dtype != torch.int32:
            fail("cache_seqlens", "dtype torch.int32", cache_seqlens.dtype)
        if cache_seqlens.device != q.device:
            fail("cache_seqlens", f"device {q.device} (same as q)", cache_seqlens.device)
        if cache_seqlens.shape[0] != b:
            fail("cache_seqlens", f"shape ({b},) (q's batch size)", tuple(cache_seqlens.shape))
    if (k_new is None) != (v_new is None):
        fail("v_new" if k_new is not None else "k_new", "k_new and v_new given together", "one")
    if k_new is not None:
        for name, t in (("k_new", k_new), ("v_new", v_new)):
            check_tensor(name, t, 4)
            check_same(name, t, q, "q")
            if t.shape[0] != b or t.shape[1] != hk or t.shape[3] != d:
                fail(name, f"shape ({b}, {hk}, S_new, {d})", tuple(t.shape))
        if v_new.shape != k_new.shape:
            fail("v_new", f"shape {tuple(k_new.shape)} (same as k_new)", tuple(v_new.shape))
        if cache_seqlens is None:
            fail("cache_seqlens", "a tensor of current lengths when appending k_new", None)
        for name, c in (("k_cache", k_cache), ("v_cache", v_cache)):
            if not _is_kernel_ready(c):
                fail(
                    name,
                    "a last dim with stride 1 and 16-byte aligned strides (it is written in place)",
                    tuple(c.stride()),
                )
    if num_splits is not None and (not isinstance(num_splits, int) or not 1 <= num_splits <= 256):
        fail("num_splits", "None or an int in [1, 256]", num_splits)


def decode_impl(
    q, k_cache, v_cache, k_new, v_new, cache_seqlens, block_table, scale, num_splits, want_lse=True
):
    """The ops' implementation: checks, then plans and launches (also called directly by
    flash_decode in plain eager mode, where want_lse=False skips the lse output: lse is None)."""
    check_decode_args(q, k_cache, v_cache, cache_seqlens, block_table, k_new, v_new, num_splits)
    check_scale(scale)
    q = kernel_ready(q)
    if k_new is None:  # read-only: a copy of an unusual layout is fine
        k_cache, v_cache = kernel_ready(k_cache), kernel_ready(v_cache)
    b, hq, sq, d = q.shape
    out = new_output_like(q)
    lse = new_output((b, hq, sq), torch.float32, q.device) if want_lse else None
    p = _C.DecodeParams(
        q.data_ptr(),
        strides(q),
        k_cache.data_ptr(),
        strides(k_cache),
        v_cache.data_ptr(),
        strides(v_cache),
        out.data_ptr(),
        strides(out),
        0 if cache_seqlens is None else cache_seqlens.data_ptr(),
        b,
        hq,
        k_cache.shape[1],
        sq,
        d,
        k_cache.shape[2],  # the page size when paged: replaced below
        softmax_scale(scale, d),
        native_dtype(q.dtype),
        num_splits or 0,
    )
    if lse is not None:
        p.lse = lse.data_ptr()
    if block_table is not None:
        p.block_table = block_table.data_ptr()
        p.block_table_stride = block_table.stride(0)
        p.max_pages_per_seq = block_table.shape[1]
        p.num_pages = k_cache.shape[0]
        p.page_size = k_cache.shape[2]
        p.max_seqlen_k = block_table.shape[1] * k_cache.shape[2]
    if k_new is not None:
        k_new, v_new = kernel_ready(k_new), kernel_ready(v_new)
        p.k_new, p.v_new = k_new.data_ptr(), v_new.data_ptr()
        p.k_new_strides, p.v_new_strides = strides(k_new), strides(v_new)
        p.seqlen_new = k_new.shape[2]
    device, stream = device_and_stream(q)
    ws = attach_workspace(p, _C.decode_plan(p, device), q.device)
    _C.decode(p, device, stream)
    del ws  # kept alive until the launch is queued
    return out, lse


@torch.library.custom_op("flashmin::decode", mutates_args=())
def decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cache_seqlens: torch.Tensor | None = None,
    block_table: torch.Tensor | None = None,
    scale: float | None = None,
    num_splits: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split-KV decode attention over a (paged) KV cache; returns (out, lse)."""
    return decode_impl(
        q, k_cache, v_cache, None, None, cache_seqlens, block_table, scale, num_splits
    )


@decode.register_fake
def _(q, k_cache, v_cache, cache_seqlens=None, block_table=None, scale=None, num_splits=None):
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("flashmin::decode_append", mutates_args=("k_cache", "v_cache"))
def decode_append(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    k_new: torch.Tensor,
    v_new: torch.Tensor,
    cache_seqlens: torch.Tensor,
    block_table: torch.Tensor | None = None,
    scale: float | None = None,
    num_splits: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Writes k_new/v_new into the cache at cache_seqlens[b] (in place), then decodes over
    cache_seqlens[b] + S_new keys. cache_seqlens itself is not changed."""
    return decode_impl(
        q, k_cache, v_cache, k_new, v_new, cache_seqlens, block_table, scale, num_splits
    )


@decode_append.register_fake
def _(
    q, k_cache, v_cache, k_new, v_new, cache_seqlens, block_table=None, scale=None, num_splits=None
):
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=torch.float32)
