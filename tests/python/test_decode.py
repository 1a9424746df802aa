"""Flash-Decoding: split-KV over contiguous and paged caches, append, GQA, edge cases."""

from __future__ import annotations

import pytest
import torch

import flashmin

from conftest import DEVICES, attention_ref, ops_dispatched, randn

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def decode_ref(q, k_cache, v_cache, lens):
    """float64 reference: sequence b attends to its first lens[b] keys, bottom-right causal."""
    b, hq, sq, d = q.shape
    out = torch.zeros(b, hq, sq, d, dtype=torch.float64, device=q.device)
    lse = torch.full((b, hq, sq), float("-inf"), dtype=torch.float64, device=q.device)
    for i, n in enumerate(lens.tolist()):
        o, l_ = attention_ref(
            q[i : i + 1],
            k_cache[i : i + 1, :, :n],
            v_cache[i : i + 1, :, :n],
            None,
            True,
            causal_offset=n - sq,
        )
        out[i], lse[i] = o[0], l_[0]
    return out, lse


def tol(dtype):
    return 2e-5 if dtype == torch.float32 else (1e-2 if dtype == torch.float16 else 3e-2)


def to_paged(cache, page, perm_seed=0):
    """(B, H, S, D) -> (num_pages, H, page, D) in shuffled page order + block_table."""
    b, h, s, d = cache.shape
    n = s // page
    pages = cache.reshape(b, h, n, page, d).permute(0, 2, 1, 3, 4).reshape(b * n, h, page, d)
    g = torch.Generator().manual_seed(perm_seed)
    perm = torch.randperm(b * n, generator=g)
    paged = torch.empty_like(pages)
    paged[perm] = pages
    table = perm.view(b, n).to(torch.int32).to(cache.device)
    return paged.contiguous(), table


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("group", [1, 4, 8])
@pytest.mark.parametrize("sq,d", [(1, 64), (4, 72), (16, 128), (1, 160), (1, 256)])
def test_decode_matches_reference(device, dtype, group, sq, d, poison_outputs):
    b, hk, s_max = 5, 2, 256
    q = randn(b, hk * group, sq, d, dtype=dtype, device=device)
    kc = randn(b, hk, s_max, d, dtype=dtype, device=device)
    vc = randn(b, hk, s_max, d, dtype=dtype, device=device)
    lens = torch.tensor([0, 1, 17, 200, s_max], dtype=torch.int32, device=device)
    out, lse = flashmin.flash_decode(q, kc, vc, lens, return_lse=True)
    ref, ref_lse = decode_ref(q, kc, vc, lens)
    assert not torch.isnan(out).any()
    torch.testing.assert_close(out.double(), ref, atol=tol(dtype), rtol=tol(dtype))
    finite = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), finite)
    torch.testing.assert_close(lse[finite].double(), ref_lse[finite], atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_split_count_invariance(device, dtype):
    q = randn(3, 8, 2, 64, dtype=dtype, device=device)
    kc = randn(3, 2, 1000, 64, dtype=dtype, device=device)
    vc = randn(3, 2, 1000, 64, dtype=dtype, device=device)
    lens = torch.tensor([1000, 513, 3], dtype=torch.int32, device=device)
    ref, _ = decode_ref(q, kc, vc, lens)
    outs = [flashmin.flash_decode(q, kc, vc, lens, num_splits=n) for n in (1, 2, 3, 7, 32)]
    for out in outs:
        torch.testing.assert_close(out.double(), ref, atol=tol(dtype), rtol=tol(dtype))
        torch.testing.assert_close(out.float(), outs[0].float(), atol=tol(dtype), rtol=tol(dtype))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("page", [16, 64])
def test_paged_equals_contiguous(device, page):
    q = randn(4, 8, 1, 128, dtype=torch.float16, device=device)
    kc = randn(4, 2, 256, 128, dtype=torch.float16, device=device)
    vc = randn(4, 2, 256, 128, dtype=torch.float16, device=device)
    lens = torch.tensor([256, 100, 0, 17], dtype=torch.int32, device=device)
    kp, table = to_paged(kc, page)
    vp, _ = to_paged(vc, page)
    contiguous = flashmin.flash_decode(q, kc, vc, lens)
    paged = flashmin.flash_decode(q, kp, vp, lens, block_table=table)
    torch.testing.assert_close(paged, contiguous, atol=2e-3, rtol=2e-3)


def append_and_attend(q, kc, vc, kn, vn, lens, paged, num_splits=None):
    """flash_decode with k_new/v_new on the contiguous caches kc/vc, or on a paged copy of them
    (pages of 16). Checks that the new keys and values landed, bit for bit, at lens[b] and
    nothing else changed; returns (out, the float64 reference over the appended caches)."""
    s_new = kn.shape[2]
    k_expect, v_expect = kc.clone(), vc.clone()
    for i, n in enumerate(lens.tolist()):
        k_expect[i, :, n : n + s_new], v_expect[i, :, n : n + s_new] = kn[i], vn[i]
    ref, _ = decode_ref(q, k_expect, v_expect, lens + s_new)
    if paged:
        kp, table = to_paged(kc, 16)
        vp, _ = to_paged(vc, 16)
        out = flashmin.flash_decode(
            q, kp, vp, lens, block_table=table, k_new=kn, v_new=vn, num_splits=num_splits
        )
        assert torch.equal(kp, to_paged(k_expect, 16)[0])
        assert torch.equal(vp, to_paged(v_expect, 16)[0])
    else:
        out = flashmin.flash_decode(q, kc, vc, lens, k_new=kn, v_new=vn, num_splits=num_splits)
        assert torch.equal(kc, k_expect)
        assert torch.equal(vc, v_expect)
    return out, ref


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("paged", [False, True])
def test_append_then_attend(device, paged):
    b, hk, s_max, d, s_new = 3, 2, 128, 64, 3
    q = randn(b, 4 * hk, s_new, d, device=device)
    kc, vc = randn(b, hk, s_max, d, device=device), randn(b, hk, s_max, d, device=device)
    kn, vn = randn(b, hk, s_new, d, device=device), randn(b, hk, s_new, d, device=device)
    lens = torch.tensor([0, 50, s_max - s_new], dtype=torch.int32, device=device)
    out, ref = append_and_attend(q, kc, vc, kn, vn, lens, paged)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=2e-5)
    assert torch.equal(lens.cpu(), torch.tensor([0, 50, s_max - s_new], dtype=torch.int32))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("paged", [False, True])
@pytest.mark.parametrize("s_new", [1, 5, 9])
@pytest.mark.parametrize("batch,num_splits", [(3, None), (3, 7), (140, None)])
@pytest.mark.parametrize("d", [128, 256])
def test_append_one_query(device, dtype, paged, s_new, batch, num_splits, d):
    """Decode's usual call: one query per sequence (4 rows per KV head), a few new keys. On sm_90
    the attention kernel writes them itself (16-bit: up to 8 for D 128, 4 for D 256; more take
    the append kernel): across block, page and split boundaries, and with more (b, h_k) columns
    than CTA slots (batch 140: the persistent kernel for D 128, the dense CTA for D 256)."""
    hk, s_max = 2, 256
    q = randn(batch, 4 * hk, 1, d, dtype=dtype, device=device)
    kc = randn(batch, hk, s_max, d, dtype=dtype, device=device)
    vc = randn(batch, hk, s_max, d, dtype=dtype, device=device)
    kn = randn(batch, hk, s_new, d, dtype=dtype, device=device)
    vn = randn(batch, hk, s_new, d, dtype=dtype, device=device)
    base = [0, 60, s_max - s_new]
    lens = torch.tensor([base[i % 3] for i in range(batch)], dtype=torch.int32, device=device)
    out, ref = append_and_attend(q, kc, vc, kn, vn, lens, paged, num_splits)
    torch.testing.assert_close(out.double(), ref, atol=tol(dtype), rtol=tol(dtype))


@pytest.mark.parametrize("device", DEVICES)
def test_empty_and_invalid_lengths(device):
    q = randn(3, 4, 1, 32, device=device)
    kc, vc = randn(3, 4, 64, 32, device=device), randn(3, 4, 64, 32, device=device)
    lens = torch.tensor([0, 65, -1], dtype=torch.int32, device=device)
    out, lse = flashmin.flash_decode(q, kc, vc, lens, return_lse=True)
    assert torch.equal(out[0], torch.zeros_like(out[0]))  # empty: zeros, never NaN
    assert torch.isneginf(lse[0]).all()
    assert torch.isnan(out[1]).all() and torch.isnan(out[2]).all()  # invalid: loud NaN


def check_many_columns(device, b, hk, d, s_max, paged):
    """bf16 decode of b x hk (b, h_k) columns with random lengths, one of them empty and one
    invalid (-1: its rows must be NaN), contiguous or in pages of 64, against float64."""
    group = 4
    q = randn(b, hk * group, 1, d, dtype=torch.bfloat16, device=device)
    kc = randn(b, hk, s_max, d, dtype=torch.bfloat16, device=device)
    vc = randn(b, hk, s_max, d, dtype=torch.bfloat16, device=device)
    g = torch.Generator().manual_seed(3)
    lens = torch.randint(1, s_max + 1, (b,), generator=g, dtype=torch.int32)
    lens[5], lens[17] = 0, -1  # an empty sequence and an invalid length among them
    lens = lens.to(device)
    if paged:
        (kp, table), (vp, _) = to_paged(kc, 64), to_paged(vc, 64)
        out, lse = flashmin.flash_decode(q, kp, vp, lens, block_table=table, return_lse=True)
    else:
        out, lse = flashmin.flash_decode(q, kc, vc, lens, return_lse=True)
    valid = torch.ones(b, dtype=torch.bool)
    valid[17] = False
    ref, ref_lse = decode_ref(q[valid], kc[valid], vc[valid], lens[valid.to(device)])
    torch.testing.assert_close(out[valid.to(device)].double(), ref, atol=3e-2, rtol=3e-2)
    finite = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse[valid.to(device)]), finite)
    torch.testing.assert_close(
        lse[valid.to(device)][finite].double(), ref_lse[finite], atol=1e-3, rtol=1e-3
    )
    assert torch.isnan(out[17]).all() and torch.isnan(lse[17]).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("paged,s_max", [(False, 192), (True, 192), (False, 4096)])
def test_decode_more_units_than_resident_ctas(device, paged, s_max):
    """48 x 8 (b, h_k) units outnumber the CTA slots of an H100/H200 (2 per SM): on sm_90 the
    persistent split kernel takes them, each CTA working through several units (strided; with
    1 MiB of K per unit, s_max 4096 contiguous, in runs of neighbours)."""
    if device == "cpu" and s_max > 192:
        pytest.skip("the unit order exists on the GPU only; 800 MB of cache on the CPU is slow")
    check_many_columns(device, 48, 8, 128, s_max, paged)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("paged", [False, True])
@pytest.mark.parametrize("d", [192, 256])
def test_decode_wide_rows_more_ctas_than_sms(device, paged, d):
    """Head dims of the 256 bucket with 48 x 4 columns: more CTAs than the SMs of an H100/H200,
    where sm_90 takes the dense CTA (two per SM at 168 registers)."""
    check_many_columns(device, 48, 4, d, 320, paged)


@pytest.mark.parametrize("device", DEVICES)
def test_decode_strided_cache_view(device):
    # A (B, S, H, D) cache viewed as (B, H, S, D).
    q = randn(2, 4, 1, 64, device=device)
    kc = randn(2, 96, 2, 64, device=device).transpose(1, 2)
    vc = randn(2, 96, 2, 64, device=device).transpose(1, 2)
    lens = torch.tensor([96, 40], dtype=torch.int32, device=device)
    ref, _ = decode_ref(q, kc, vc, lens)
    torch.testing.assert_close(
        flashmin.flash_decode(q, kc, vc, lens).double(), ref, atol=2e-5, rtol=2e-5
    )


@pytest.mark.parametrize("device", DEVICES)
def test_decode_in_torch_compile(device):
    torch._dynamo.reset()

    def step(q, kc, vc, kn, vn, lens):
        return flashmin.flash_decode(q, kc, vc, lens, k_new=kn, v_new=vn) * 2

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    q = randn(2, 4, 1, 32, device=device)
    kc, vc = randn(2, 2, 64, 32, device=device), randn(2, 2, 64, 32, device=device)
    kn, vn = randn(2, 2, 1, 32, device=device), randn(2, 2, 1, 32, device=device)
    lens = torch.tensor([5, 20], dtype=torch.int32, device=device)
    kc2, vc2 = kc.clone(), vc.clone()
    out = compiled(q, kc, vc, kn, vn, lens)
    expect = step(q, kc2, vc2, kn, vn, lens)
    torch.testing.assert_close(out, expect)
    torch.testing.assert_close(kc, kc2)  # the in-place append survived functionalization


@pytest.mark.gpu
def test_decode_cuda_graph_lengths_stay_on_device():
    q = randn(2, 8, 1, 128, dtype=torch.bfloat16, device="cuda")
    kc = randn(2, 2, 4096, 128, dtype=torch.bfloat16, device="cuda")
    vc = randn(2, 2, 4096, 128, dtype=torch.bfloat16, device="cuda")
    lens = torch.tensor([100, 4000], dtype=torch.int32, device="cuda")
    flashmin.flash_decode(q, kc, vc, lens)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = flashmin.flash_decode(q, kc, vc, lens)
    lens.copy_(torch.tensor([3000, 7], dtype=torch.int32))
    graph.replay()
    torch.cuda.synchronize()
    ref, _ = decode_ref(q, kc, vc, lens)
    torch.testing.assert_close(out.double(), ref, atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("device", DEVICES)
def test_eager_direct_call_matches_op(device):
    # In plain eager mode flash_decode skips the op's dispatch (host time per token); the result
    # must be the op's, bit for bit, with and without an append.
    q = randn(2, 8, 1, 64, dtype=torch.bfloat16, device=device)
    kc, vc = (randn(2, 2, 128, 64, dtype=torch.bfloat16, device=device) for _ in range(2))
    lens = torch.tensor([7, 100], dtype=torch.int32, device=device)
    out, lse = flashmin.flash_decode(q, kc, vc, lens, return_lse=True)
    out_op, lse_op = torch.ops.flashmin.decode(q, kc, vc, lens, None, None, None)
    assert torch.equal(out, out_op) and torch.equal(lse, lse_op)
    kn, vn = (randn(2, 2, 1, 64, dtype=torch.bfloat16, device=device) for _ in range(2))
    kc2, vc2 = kc.clone(), vc.clone()
    out = flashmin.flash_decode(q, kc, vc, lens, k_new=kn, v_new=vn)
    out_op, _ = torch.ops.flashmin.decode_append(q, kc2, vc2, kn, vn, lens, None, None, None)
    assert torch.equal(out, out_op) and torch.equal(kc, kc2) and torch.equal(vc, vc2)
    kc3, vc3 = kc.clone(), vc.clone()
    v3 = kc3._version, vc3._version
    flashmin.flash_decode(q, kc3, vc3, lens, k_new=kn, v_new=vn)
    assert kc3._version > v3[0] and vc3._version > v3[1]  # the in-place write is visible


def test_op_used_under_a_dispatch_mode():
    # A dispatch mode (as profilers, fake tensors and export use) must see the flashmin op.
    q, kc, vc = randn(1, 2, 1, 32), randn(1, 1, 16, 32), randn(1, 1, 16, 32)
    assert "flashmin.decode.default" in ops_dispatched(lambda: flashmin.flash_decode(q, kc, vc))


@pytest.mark.parametrize("device", DEVICES)
def test_decode_shared_memory_sizes_in_any_order(device):
    # The kernel's shared memory grows with the query rows per KV head; the launcher caches its
    # opt-in per size: large, small, then large again must all launch and be right.
    kc, vc = (randn(1, 1, 300, 128, dtype=torch.bfloat16, device=device) for _ in range(2))
    lens = torch.tensor([300], dtype=torch.int32, device=device)
    for heads, sq in [(16, 4), (1, 1), (16, 4), (2, 2)]:
        q = randn(1, heads, sq, 128, dtype=torch.bfloat16, device=device)
        out = flashmin.flash_decode(q, kc, vc, lens)
        ref, _ = decode_ref(q, kc, vc, lens)
        torch.testing.assert_close(out.double(), ref, atol=3e-2, rtol=3e-2)
