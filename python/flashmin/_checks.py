"""Cheap input validation: every rejected input raises ValueError naming the argument,
the expected value and the actual one ("<arg>: expected <x>, got <y>")."""

from __future__ import annotations

import torch

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 256


def fail(arg: str, expected: str, got: object) -> None:
    raise ValueError(f"{arg}: expected {expected}, got {got}")


def check_tensor(arg: str, t: object, ndim: int | None = None) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        fail(arg, "a torch.Tensor", type(t).__name__)
    if ndim is not None and t.dim() != ndim:
        fail(arg, f"a {ndim}-D tensor", f"{t.dim()}-D with shape {tuple(t.shape)}")
    return t


def check_float_dtype(arg: str, t: torch.Tensor) -> None:
    if t.dtype not in SUPPORTED_DTYPES:
        fail(arg, "dtype float32, float16 or bfloat16", t.dtype)


def check_same(arg: str, t: torch.Tensor, ref: torch.Tensor, ref_name: str = "query") -> None:
    if t.dtype != ref.dtype:
        fail(arg, f"dtype {ref.dtype} (same as {ref_name})", t.dtype)
    if t.device != ref.device:
        fail(arg, f"device {ref.device} (same as {ref_name})", t.device)


def check_head_dim(arg: str, d: int) -> None:
    if d < 8 or d > MAX_HEAD_DIM or d % 8 != 0:
        fail(arg, f"a head_dim (last dim) that is a multiple of 8 in [8, {MAX_HEAD_DIM}]", d)


def check_bool(name: str, value) -> bool:
    """True/False, also as 0/1 or a numpy bool (what torch's bool arguments accept)."""
    if isinstance(value, str) or value not in (True, False):
        fail(name, "True or False", repr(value))
    return bool(value)


def check_scale(scale: float | None) -> None:
    if scale is None:
        return
    if not isinstance(scale, (int, float)) or isinstance(scale, bool):
        fail("scale", "a float or None", type(scale).__name__)
    if scale != scale or scale in (float("inf"), float("-inf")):
        fail("scale", "a finite float", scale)


def check_algorithm(algorithm: str) -> None:
    if algorithm not in ("fa2", "fa1"):
        fail("algorithm", "'fa2' or 'fa1'", repr(algorithm))


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """q: (B, Hq, Sq, D); k, v: (B, Hk, Sk, D) with Hq % Hk == 0."""
    check_tensor("query", q, 4)
    check_tensor("key", k, 4)
    check_tensor("value", v, 4)
    check_float_dtype("query", q)
    check_same("key", k, q)
    check_same("value", v, q)
    b, hq, _, d = q.shape
    check_head_dim("query", d)
    if k.shape[0] != b:
        fail("key", f"batch size {b} (same as query)", k.shape[0])
    if k.shape[3] != d:
        fail("key", f"head_dim {d} (same as query)", k.shape[3])
    if v.shape != k.shape:
        fail("value", f"shape {tuple(k.shape)} (same as key)", tuple(v.shape))
    hk = k.shape[1]
    if hk < 1 or hq % hk != 0:
        fail("key", f"a number of heads that divides query's {hq}", hk)
