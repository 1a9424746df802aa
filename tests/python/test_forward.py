"""Forward correctness against a float64 reference, on the CPU and (marked gpu) on CUDA."""

from __future__ import annotations

import pytest
import torch

import flashmin

from conftest import DEVICES, LOW_PRECISION, check_forward, randn

DTYPES = [torch.float32, torch.float16, torch.bfloat16]

# (B, Hq, Hk, Sq, Sk, D)
SHAPES = [
    (1, 1, 1, 1, 1, 8),
    (2, 3, 3, 17, 17, 40),
    (1, 4, 2, 97, 113, 64),
    (2, 2, 1, 113, 97, 72),
    (1, 8, 2, 239, 239, 128),
    (1, 2, 2, 64, 1, 256),
    (1, 2, 1, 1, 239, 136),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("is_causal", [False, True])
def test_forward_matches_reference(device, dtype, shape, is_causal, poison_outputs):
    b, hq, hk, sq, sk, d = shape
    q = randn(b, hq, sq, d, dtype=dtype, device=device)
    k = randn(b, hk, sk, d, dtype=dtype, device=device)
    v = randn(b, hk, sk, d, dtype=dtype, device=device)
    out, lse = flashmin.flash_attention(q, k, v, is_causal=is_causal, return_lse=True)
    check_forward(out, lse, q, k, v, None, is_causal)


# Head dim 256 with long key ranges: the sm90 kernel's 80-key blocks (S_k >= 1024, causal
# >= 4096), whose output goes from the registers straight to memory; odd lengths, GQA, a head
# dim below the bucket, and causal rows that see no key.
LONG_D256 = [
    ((2, 2, 1, 300, 1100, 256), False),
    ((1, 2, 1, 1000, 4200, 256), True),
    ((1, 2, 2, 130, 1030, 248), False),
    ((1, 2, 2, 4100, 4100, 256), True),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("shape,is_causal", LONG_D256, ids=str)
def test_forward_long_keys_d256(dtype, shape, is_causal, poison_outputs):
    b, hq, hk, sq, sk, d = shape
    q = randn(b, hq, sq, d, dtype=dtype, device="cuda")
    k = randn(b, hk, sk, d, dtype=dtype, device="cuda")
    v = randn(b, hk, sk, d, dtype=dtype, device="cuda")
    out, lse = flashmin.flash_attention(q, k, v, is_causal=is_causal, return_lse=True)
    check_forward(out, lse, q, k, v, None, is_causal)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_forward_strided_bshd_layout(device, dtype, poison_outputs):
    # (B, S, H, D) storage viewed as (B, H, S, D): no copies, strides passed through.
    b, s, h, d = 2, 97, 4, 64
    q = randn(b, s, h, d, dtype=dtype, device=device).transpose(1, 2)
    kv = randn(b, s, 2, 2, d, dtype=dtype, device=device)  # interleaved k/v
    k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
    out, lse = flashmin.flash_attention(q, k, v, scale=0.3, is_causal=True, return_lse=True)
    check_forward(out, lse, q, k, v, 0.3, True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("algorithm", ["fa1", "fa2"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fa1_matches_reference(device, algorithm, dtype, poison_outputs):
    q = randn(2, 4, 113, 64, dtype=dtype, device=device)
    k = randn(2, 2, 97, 64, dtype=dtype, device=device)
    v = randn(2, 2, 97, 64, dtype=dtype, device=device)
    out, lse = flashmin.flash_attention(
        q, k, v, is_causal=True, algorithm=algorithm, return_lse=True
    )
    check_forward(out, lse, q, k, v, None, True)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_sequences(device):
    q = randn(2, 2, 0, 64, device=device)
    k = randn(2, 2, 5, 64, device=device)
    out = flashmin.scaled_dot_product_attention(q, k, k)
    assert out.shape == (2, 2, 0, 64)
    q = randn(2, 2, 7, 64, device=device)
    k0 = randn(2, 2, 0, 64, device=device)
    out, lse = flashmin.flash_attention(q, k0, k0, return_lse=True)
    assert torch.equal(out, torch.zeros_like(out))
    assert torch.isneginf(lse).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", LOW_PRECISION + (torch.float32,), ids=str)
def test_sdpa_drop_in(device, dtype):
    q = randn(3, 8, 97, 64, dtype=dtype, device=device)
    k = randn(3, 2, 113, 64, dtype=dtype, device=device)
    v = randn(3, 2, 113, 64, dtype=dtype, device=device)
    for is_causal in (False, True):
        ours = flashmin.scaled_dot_product_attention(q, k, v, is_causal=is_causal, enable_gqa=True)
        theirs = torch.nn.functional.scaled_dot_product_attention(
            q.float(), k.float(), v.float(), is_causal=is_causal, enable_gqa=True
        )
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        torch.testing.assert_close(ours.float(), theirs, atol=tol, rtol=tol)
    # 3-D and 5-D inputs work like SDPA's (..., L, E).
    q3, k3 = randn(4, 33, 32, device=device), randn(4, 17, 32, device=device)
    torch.testing.assert_close(
        flashmin.scaled_dot_product_attention(q3, k3, k3),
        torch.nn.functional.scaled_dot_product_attention(q3, k3, k3),
        atol=1e-5,
        rtol=1e-5,
    )
    q5, k5 = randn(2, 3, 4, 9, 16, device=device), randn(2, 3, 4, 11, 16, device=device)
    torch.testing.assert_close(
        flashmin.scaled_dot_product_attention(q5, k5, k5, is_causal=True),
        torch.nn.functional.scaled_dot_product_attention(q5, k5, k5, is_causal=True),
        atol=1e-5,
        rtol=1e-5,
    )
