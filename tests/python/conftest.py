"""Shared fixtures and float64 references for the flashmin tests."""

from __future__ import annotations

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
LOW_PRECISION = (torch.float16, torch.bfloat16)


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    # Fresh random inputs per test, but reproducible from the test's name.
    torch.manual_seed(hash(request.node.nodeid) % (2**31))


def randn(*shape, dtype=torch.float32, device="cpu"):
    return torch.randn(*shape, dtype=torch.float32, device=device).to(dtype)


def attention_ref(q, k, v, scale=None, is_causal=False, causal_offset=0):
    """float64 reference: returns (out, lse). Rows that see no key give out 0, lse -inf."""
    q, k, v = q.double(), k.double(), v.double()
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    if is_causal:
        sq, sk = s.shape[-2:]
        i = torch.arange(sq, device=s.device)[:, None]
        j = torch.arange(sk, device=s.device)[None, :]
        s = s.masked_fill(j > i + causal_offset, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse[..., None].masked_fill(lse[..., None] == float("-inf"), 0.0))
    p = torch.nan_to_num(p, nan=0.0)
    return torch.matmul(p, v), lse


def grads_ref(q, k, v, dout, scale=None, is_causal=False):
    """float64 reference gradients (dq, dk, dv)."""
    qd, kd, vd = (t.detach().double().requires_grad_() for t in (q, k, v))
    out, _ = attention_ref(qd, kd, vd, scale, is_causal)
    out.backward(dout.double())
    return qd.grad, kd.grad, vd.grad


def torch_sdpa(q, k, v, scale=None, is_causal=False):
    """PyTorch's own attention at the inputs' precision (the error baseline)."""
    group = q.shape[1] // k.shape[1]
    return torch.nn.functional.scaled_dot_product_attention(
        q,
        k.repeat_interleave(group, 1),
        v.repeat_interleave(group, 1),
        is_causal=is_causal,
        scale=scale,
    )


def max_err(a, b):
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def rel_err(a, b):
    ref = b.double()
    denom = ref.norm().item()
    return (a.double() - ref).norm().item() / denom if denom > 0 else (a.double().norm().item())


def assert_low_precision_close(ours, torch_low, ref, factor, what):
    """The FlashAttention rule: our error is within `factor` x PyTorch's own error at the same
    precision (plus a tiny absolute slack for cases where PyTorch happens to be exact)."""
    e_ours, e_pt = max_err(ours, ref), max_err(torch_low, ref)
    assert e_ours <= factor * e_pt + 1e-4, f"{what}: error {e_ours:.3e} > {factor} x {e_pt:.3e}"


def poison(shape, dtype, device):
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


@pytest.fixture
def poison_outputs():
    """Every op output starts as NaN for the duration of the test."""
    from flashmin import _native

    _native.POISON_OUTPUTS = True
    yield
    _native.POISON_OUTPUTS = False


def ops_dispatched(fn):
    """The names of the aten/custom ops a dispatch mode sees while fn() runs (as profilers, fake
    tensors and export see them)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    with Record() as rec:
        fn()
    return rec.ops


# ---- Checks shared by the forward, backward and compact-tile tests.


def check_forward(out, lse, q, k, v, scale, is_causal):
    ref_out, ref_lse = attention_ref(q, k, v, scale, is_causal)
    assert not torch.isnan(out).any(), "unwritten or NaN output"
    finite = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), finite)
    if q.dtype == torch.float32:
        assert rel_err(out, ref_out) < 2e-5
    else:
        assert_low_precision_close(out, torch_sdpa(q, k, v, scale, is_causal), ref_out, 2, "out")
    assert (lse[finite].double() - ref_lse[finite]).abs().max().item() < 1e-3


def run_backward(q, k, v, dout, is_causal, algorithm="fa2", deterministic=False):
    import flashmin

    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = flashmin.flash_attention(
        q, k, v, is_causal=is_causal, algorithm=algorithm, deterministic=deterministic
    )
    out.backward(dout)
    return q.grad, k.grad, v.grad


def torch_grads(q, k, v, dout, is_causal):
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    torch_sdpa(q, k, v, None, is_causal).backward(dout)
    return q.grad, k.grad, v.grad


def check_grads(ours, q, k, v, dout, is_causal):
    refs = grads_ref(q, k, v, dout, None, is_causal)
    low = None if q.dtype == torch.float32 else torch_grads(q, k, v, dout, is_causal)
    for i, name in enumerate(("dq", "dk", "dv")):
        assert not torch.isnan(ours[i]).any(), f"{name} has NaN"
        if low is None:
            assert rel_err(ours[i], refs[i]) < 5e-5, name
        else:
            assert_low_precision_close(ours[i], low[i], refs[i], 3, name)
