"""torch.library registration: the ops' schemas, their CPU/CUDA implementation (one function that
hands pointers to flashmin._C), fake implementations for tracing, and autograd."""

from __future__ import annotations

import torch

from . import _C
from ._checks import check_algorithm, check_bool, check_qkv, check_scale, fail
from ._native import (
    attach_workspace,
    device_and_stream,
    kernel_ready,
    native_dtype,
    new_output,
    softmax_scale,
    strides,
)

_ALGORITHMS = {"fa2": _C.Algorithm.fa2, "fa1": _C.Algorithm.fa1}


def _fill_attn(p, q, k, v, out, lse, scale, is_causal, algorithm):
    p.q, p.k, p.v = q.data_ptr(), k.data_ptr(), v.data_ptr()
    p.o, p.lse = out.data_ptr(), lse.data_ptr()
    p.q_strides, p.k_strides = strides(q), strides(k)
    p.v_strides, p.o_strides = strides(v), strides(out)
    p.batch, p.heads_q, p.seqlen_q, p.head_dim = q.shape
    p.heads_kv, p.seqlen_k = k.shape[1], k.shape[2]
    p.scale = softmax_scale(scale, q.shape[-1])
    p.is_causal = is_causal
    p.causal_offset = 0  # SDPA's top-left alignment when S_q != S_k
    p.dtype = native_dtype(q.dtype)
    p.algorithm = _ALGORITHMS[algorithm]


# ---- forward ---------------------------------------------------------------------------------
@torch.library.custom_op("flashmin::fwd", mutates_args=())
def fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    is_causal: bool = False,
    algorithm: str = "fa2",
    deterministic: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention forward. q: (B, Hq, Sq, D), k/v: (B, Hk, Sk, D) with Hq % Hk == 0.
    Returns out (B, Hq, Sq, D) and lse, float32 (B, Hq, Sq), the natural-log logsumexp of the
    scaled scores. `deterministic` only affects the backward."""
    return fwd_impl(q, k, v, scale, is_causal, algorithm)


def fwd_impl(q, k, v, scale, is_causal, algorithm):
    """The forward op's implementation (also called directly by flash_attention in plain eager
    mode when no gradient is needed)."""
    check_qkv(q, k, v)
    check_scale(scale)
    is_causal = check_bool("is_causal", is_causal)
    check_algorithm(algorithm)
    q, k, v = kernel_ready(q), kernel_ready(k), kernel_ready(v)
    out = new_output(q.shape, q.dtype, q.device)
    lse = new_output(q.shape[:3], torch.float32, q.device)
    p = _C.AttnParams()
    _fill_attn(p, q, k, v, out, lse, scale, is_causal, algorithm)
    device, stream = device_and_stream(q)
    ws = attach_workspace(p, _C.fwd_workspace_bytes(p, device), q.device)
    _C.fwd(p, device, stream)
    del ws  # kept alive until the launch is queued
    return out, lse


@fwd.register_fake
def _(q, k, v, scale=None, is_causal=False, algorithm="fa2", deterministic=False):
    check_qkv(q, k, v)
    out = q.new_empty(q.shape)
    lse = q.new_empty(q.shape[:3], dtype=torch.float32)
    return out, lse


# ---- backward --------------------------------------------------------------------------------
@torch.library.custom_op("flashmin::bwd", mutates_args=())
def bwd(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    scale: float | None = None,
    is_causal: bool = False,
    algorithm: str = "fa2",
    deterministic: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dq, dk, dv) of attention given dout, the forward's out and lse."""
    check_qkv(q, k, v)
    check_scale(scale)
    check_algorithm(algorithm)
    if dout.shape != q.shape or out.shape != q.shape:
        fail("grad_out", f"shape {tuple(q.shape)} (same as query)", tuple(dout.shape))
    if lse.shape != q.shape[:3] or lse.dtype != torch.float32:
        fail("lse", f"float32 of shape {tuple(q.shape[:3])}", f"{lse.dtype} {tuple(lse.shape)}")
    q, k, v, out, dout = (kernel_ready(t) for t in (q, k, v, out, dout.to(q.dtype)))
    lse = lse.contiguous()
    dq = new_output(q.shape, q.dtype, q.device)
    dk = new_output(k.shape, k.dtype, k.device)
    dv = new_output(v.shape, v.dtype, v.device)
    p = _C.AttnBwdParams()
    _fill_attn(p, q, k, v, out, lse, scale, is_causal, algorithm)
    p.dout, p.dout_strides = dout.data_ptr(), strides(dout)
    p.dq, p.dk, p.dv = dq.data_ptr(), dk.data_ptr(), dv.data_ptr()
    p.dq_strides, p.dk_strides, p.dv_strides = strides(dq), strides(dk), strides(dv)
    p.deterministic = deterministic
    if q.shape[2] == 0 or k.shape[2] == 0:  # nothing attends: all gradients are zero
        return dq.zero_(), dk.zero_(), dv.zero_()
    device, stream = device_and_stream(q)
    ws = attach_workspace(p, _C.bwd_workspace_bytes(p, device), q.device)
    _C.bwd(p, device, stream)
    del ws  # kept alive until the launch is queued
    return dq, dk, dv


@bwd.register_fake
def _(dout, q, k, v, out, lse, scale=None, is_causal=False, algorithm="fa2", deterministic=False):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _fwd_setup_context(ctx, inputs, output):
    q, k, v, scale, is_causal, algorithm, deterministic = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.scale, ctx.is_causal = scale, is_causal
    ctx.algorithm, ctx.deterministic = algorithm, deterministic
    ctx.mark_non_differentiable(lse)


def _fwd_backward(ctx, dout, _dlse):
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = torch.ops.flashmin.bwd(
        dout, q, k, v, out, lse, ctx.scale, ctx.is_causal, ctx.algorithm, ctx.deterministic
    )
    return dq, dk, dv, None, None, None, None


fwd.register_autograd(_fwd_backward, setup_context=_fwd_setup_context)
