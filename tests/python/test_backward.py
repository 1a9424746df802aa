"""Backward correctness: gradients against float64 autograd of the reference."""

from __future__ import annotations

import pytest
import torch

import flashmin

from conftest import DEVICES, check_grads, grads_ref, randn, rel_err, run_backward

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (B, Hq, Hk, Sq, Sk, D)
SHAPES = [
    (1, 1, 1, 1, 1, 8),
    (2, 2, 2, 17, 17, 40),
    (1, 4, 2, 97, 113, 64),
    (1, 2, 1, 113, 97, 72),
    (1, 4, 4, 239, 239, 128),
    (1, 2, 1, 33, 65, 256),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("is_causal", [False, True])
def test_backward_matches_reference(device, dtype, shape, is_causal, poison_outputs):
    b, hq, hk, sq, sk, d = shape
    q = randn(b, hq, sq, d, dtype=dtype, device=device)
    k = randn(b, hk, sk, d, dtype=dtype, device=device)
    v = randn(b, hk, sk, d, dtype=dtype, device=device)
    dout = randn(b, hq, sq, d, dtype=dtype, device=device)
    check_grads(run_backward(q, k, v, dout, is_causal), q, k, v, dout, is_causal)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_backward_fa1_and_strided(device, dtype, poison_outputs):
    b, s, h, d = 2, 97, 4, 64
    q = randn(b, s, h, d, dtype=dtype, device=device).transpose(1, 2)
    k = randn(b, s, 2, d, dtype=dtype, device=device).transpose(1, 2)
    v = randn(b, s, 2, d, dtype=dtype, device=device).transpose(1, 2)
    dout = randn(b, h, s, d, dtype=dtype, device=device)
    ours = run_backward(q, k, v, dout, True, algorithm="fa1")
    check_grads(ours, q, k, v, dout, True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_deterministic_backward_is_bitwise_reproducible(device, dtype):
    q = randn(2, 8, 239, 64, dtype=dtype, device=device)
    k = randn(2, 2, 300, 64, dtype=dtype, device=device)
    v = randn(2, 2, 300, 64, dtype=dtype, device=device)
    dout = randn(2, 8, 239, 64, dtype=dtype, device=device)
    first = run_backward(q, k, v, dout, True, deterministic=True)
    for _ in range(3):
        again = run_backward(q, k, v, dout, True, deterministic=True)
        for a, b in zip(first, again, strict=True):
            assert torch.equal(a, b)
    check_grads(first, q, k, v, dout, True)


@pytest.mark.parametrize("device", DEVICES)
def test_sum_backward_with_broadcast_gradient(device):
    # out.sum().backward() hands the op a stride-0 gradient: it must still be right.
    q, k, v = (randn(1, 2, 17, 32, device=device).requires_grad_() for _ in range(3))
    flashmin.scaled_dot_product_attention(q, k, v).sum().backward()
    ref = grads_ref(q, k, v, torch.ones(1, 2, 17, 32, device=device))
    for ours, r in zip((q.grad, k.grad, v.grad), ref, strict=True):
        assert rel_err(ours, r) < 5e-5


@pytest.mark.parametrize("device", DEVICES)
def test_backward_empty_keys_gives_zero_grads(device):
    q = randn(1, 2, 5, 16, device=device).requires_grad_()
    k = randn(1, 2, 0, 16, device=device).requires_grad_()
    v = randn(1, 2, 0, 16, device=device).requires_grad_()
    flashmin.flash_attention(q, k, v).sum().backward()
    assert torch.equal(q.grad, torch.zeros_like(q))
    assert k.grad.shape == k.shape
