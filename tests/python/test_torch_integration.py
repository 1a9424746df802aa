"""torch.library integration: opcheck, torch.compile without graph breaks, CUDA graphs, streams."""

from __future__ import annotations

import pytest
import torch

import flashmin

from conftest import DEVICES, HAS_CUDA, attention_ref, ops_dispatched, randn, rel_err


def sample_inputs(device, dtype=torch.float32, requires_grad=True):
    q = randn(2, 4, 17, 32, dtype=dtype, device=device)
    k = randn(2, 2, 23, 32, dtype=dtype, device=device)
    v = randn(2, 2, 23, 32, dtype=dtype, device=device)
    return [t.requires_grad_(requires_grad) for t in (q, k, v)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("is_causal", [False, True])
def test_opcheck_fwd_and_bwd(device, is_causal):
    q, k, v = sample_inputs(device)
    torch.library.opcheck(torch.ops.flashmin.fwd.default, (q, k, v, None, is_causal))
    out, lse = torch.ops.flashmin.fwd(q.detach(), k.detach(), v.detach(), None, is_causal)
    dout = torch.randn_like(out)
    torch.library.opcheck(
        torch.ops.flashmin.bwd.default,
        (dout, q.detach(), k.detach(), v.detach(), out, lse, 0.2, is_causal),
    )


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_decode(device):
    q = randn(2, 4, 1, 32, device=device)
    kc, vc = randn(2, 2, 40, 32, device=device), randn(2, 2, 40, 32, device=device)
    lens = torch.tensor([3, 40], dtype=torch.int32, device=device)
    torch.library.opcheck(torch.ops.flashmin.decode.default, (q, kc, vc, lens, None, None, 2))
    kn, vn = randn(2, 2, 1, 32, device=device), randn(2, 2, 1, 32, device=device)
    torch.library.opcheck(
        torch.ops.flashmin.decode_append.default,
        (q, kc, vc, kn, vn, torch.tensor([3, 39], dtype=torch.int32, device=device)),
    )


class TinyBlock(torch.nn.Module):
    def __init__(self, dim=64, heads=4):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim)

    def forward(self, x):
        b, s, _ = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        y = flashmin.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, s, -1))


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph_dynamic(device):
    torch._dynamo.reset()
    model = TinyBlock().to(device)
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="aot_eager")
    for s in (17, 33):  # two lengths: one graph with a symbolic length
        x = torch.randn(2, s, 64, device=device, requires_grad=True)
        y = compiled(x)
        torch.testing.assert_close(y, model(x), atol=1e-5, rtol=1e-5)
        y.sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.gpu
def test_torch_compile_inductor_cuda():
    torch._dynamo.reset()
    model = TinyBlock().cuda().half()
    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    x = torch.randn(2, 97, 64, device="cuda", dtype=torch.half)
    torch.testing.assert_close(compiled(x), model(x), atol=2e-3, rtol=2e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_cuda_graph_capture_and_side_stream():
    q, k, v = sample_inputs("cuda", torch.bfloat16, requires_grad=False)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # launches follow the caller's current stream
        out_side = flashmin.flash_attention(q, k, v, is_causal=True)
    torch.cuda.current_stream().wait_stream(side)
    ref, _ = attention_ref(q, k, v, None, True)
    assert rel_err(out_side, ref) < 1e-2

    static_q = q.clone()
    for _ in range(2):  # warm up outside the graph
        flashmin.flash_attention(static_q, k, v, is_causal=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = flashmin.flash_attention(static_q, k, v, is_causal=True)
    new_q = randn(*q.shape, dtype=q.dtype, device="cuda")
    static_q.copy_(new_q)
    graph.replay()
    torch.cuda.synchronize()
    ref, _ = attention_ref(new_q, k, v, None, True)
    assert rel_err(static_out, ref) < 1e-2


@pytest.mark.parametrize("device", DEVICES)
def test_eager_inference_skips_dispatch_only_where_safe(device):
    # Without a gradient to record, flash_attention calls the forward's implementation directly
    # (host time); the result must be the op's bit for bit. With requires_grad the op (and its
    # autograd) runs, and a dispatch mode always sees the op.
    q, k, v = sample_inputs(device, requires_grad=False)
    out, lse = flashmin.flash_attention(q, k, v, is_causal=True, return_lse=True)
    out_op, lse_op = torch.ops.flashmin.fwd(q, k, v, None, True, "fa2", False)
    assert torch.equal(out, out_op) and torch.equal(lse, lse_op)
    assert "flashmin.fwd.default" in ops_dispatched(lambda: flashmin.flash_attention(q, k, v))
    q, k, v = sample_inputs(device)
    out = flashmin.flash_attention(q, k, v)
    assert out.grad_fn is not None
    out.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_jit_trace_records_the_ops():
    # A traced graph must contain the flashmin ops (not the eager shortcut's raw launches), so
    # that it computes attention for new inputs.
    q, k, v = sample_inputs("cpu", requires_grad=False)
    lens = torch.tensor([23, 5], dtype=torch.int32)
    traced = torch.jit.trace(lambda q, k, v: flashmin.flash_attention(q, k, v), (q, k, v))
    assert "flashmin::fwd" in str(traced.graph)
    q2, k2, v2 = sample_inputs("cpu", requires_grad=False)
    torch.testing.assert_close(traced(q2, k2, v2), flashmin.flash_attention(q2, k2, v2))
    qd = randn(2, 4, 1, 32)
    traced = torch.jit.trace(lambda q, k, v, n: flashmin.flash_decode(q, k, v, n), (qd, k, v, lens))
    assert "flashmin::decode" in str(traced.graph)
    qd2 = randn(2, 4, 1, 32)
    torch.testing.assert_close(traced(qd2, k2, v2, lens), flashmin.flash_decode(qd2, k2, v2, lens))
