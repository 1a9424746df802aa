"""Every rejected input raises ValueError naming the argument, the expected and the actual value."""

from __future__ import annotations

import pytest
import torch

import flashmin

F = torch.float32


def qkv(b=1, hq=2, hk=2, sq=8, sk=8, d=16, dtype=F):
    return (
        torch.randn(b, hq, sq, d).to(dtype),
        torch.randn(b, hk, sk, d).to(dtype),
        torch.randn(b, hk, sk, d).to(dtype),
    )


def cache(b=2, hk=2, s=32, d=16):
    return torch.randn(b, 2, 1, d), torch.randn(b, hk, s, d), torch.randn(b, hk, s, d)


sdpa = flashmin.scaled_dot_product_attention
attn = flashmin.flash_attention
decode = flashmin.flash_decode

CASES = [
    # (id, callable, argument named in the message, a fragment of the message)
    (
        "mask",
        lambda: sdpa(*qkv(), attn_mask=torch.ones(8, 8, dtype=torch.bool)),
        "attn_mask",
        "not supported",
    ),
    ("dropout", lambda: sdpa(*qkv(), dropout_p=0.1), "dropout_p", "0.1"),
    ("gqa_not_enabled", lambda: sdpa(*qkv(hq=4, hk=2)), "key", "enable_gqa"),
    ("head_dim_not_multiple_of_8", lambda: attn(*qkv(d=12)), "query", "got 12"),
    ("head_dim_too_large", lambda: attn(*qkv(d=264)), "query", "got 264"),
    ("float64", lambda: attn(*qkv(dtype=torch.float64)), "query", "torch.float64"),
    ("int_dtype", lambda: attn(*(t.to(torch.int32) for t in qkv())), "query", "int32"),
    ("mixed_dtype", lambda: attn(qkv()[0], *qkv(dtype=torch.float16)[1:]), "key", "float16"),
    ("heads_not_divisible", lambda: attn(*qkv(hq=3, hk=2)), "key", "got 2"),
    ("batch_mismatch", lambda: attn(qkv(b=2)[0], *qkv(b=1)[1:]), "key", "batch size 2"),
    ("value_shape", lambda: attn(*qkv()[:2], torch.randn(1, 2, 9, 16)), "value", "(1, 2, 9, 16)"),
    ("rank", lambda: attn(torch.randn(2, 8, 16), *qkv()[1:]), "query", "3-D"),
    ("scale_nan", lambda: attn(*qkv(), scale=float("nan")), "scale", "nan"),
    ("algorithm", lambda: attn(*qkv(), algorithm="fa3"), "algorithm", "'fa3'"),
    ("is_causal_type", lambda: attn(*qkv(), is_causal="yes"), "is_causal", "got 'yes'"),
    ("scale_type", lambda: attn(*qkv(), scale="x"), "scale", "str"),
    ("value_head_dim", lambda: sdpa(*qkv()[:2], torch.randn(1, 2, 8, 32)), "value", "got 32"),
    ("not_a_tensor", lambda: sdpa([1.0], *qkv()[1:]), "query", "list"),
    (
        "decode_too_many_queries",
        lambda: decode(torch.randn(2, 2, 17, 16), *cache()[1:]),
        "q",
        "got 17",
    ),
    (
        "decode_seqlens_dtype",
        lambda: decode(*cache(), torch.zeros(2, dtype=torch.int64)),
        "cache_seqlens",
        "int64",
    ),
    (
        "decode_seqlens_shape",
        lambda: decode(*cache(), torch.zeros(3, dtype=torch.int32)),
        "cache_seqlens",
        "(3,)",
    ),
    (
        "decode_block_table_dtype",
        lambda: decode(*cache(b=4, s=16), block_table=torch.zeros(2, 2, dtype=torch.int64)),
        "block_table",
        "int64",
    ),
    (
        "decode_page_size",
        lambda: decode(*cache(b=4, s=24), block_table=torch.zeros(4, 2, dtype=torch.int32)),
        "k_cache",
        "got 24",
    ),
    ("decode_num_splits", lambda: decode(*cache(), num_splits=0), "num_splits", "got 0"),
    (
        "decode_k_new_alone",
        lambda: decode(*cache(), torch.zeros(2, dtype=torch.int32), k_new=torch.randn(2, 2, 1, 16)),
        "v_new",
        "together",
    ),
    (
        "decode_append_without_lengths",
        lambda: decode(*cache(), k_new=torch.randn(2, 2, 1, 16), v_new=torch.randn(2, 2, 1, 16)),
        "cache_seqlens",
        "appending",
    ),
    (
        "decode_cache_heads",
        lambda: decode(torch.randn(2, 3, 1, 16), *cache()[1:]),
        "k_cache",
        "divides",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_value_error_naming_argument(case):
    _, fn, arg, fragment = case
    with pytest.raises(ValueError) as info:
        fn()
    msg = str(info.value)
    assert msg.startswith(f"{arg}:"), msg
    assert "expected" in msg and fragment in msg, msg


def test_native_launcher_rejects_bad_params_too():
    # The C++ launcher validates independently of Python (defence in depth).
    from flashmin import _C

    p = _C.AttnParams()
    p.batch, p.heads_q, p.heads_kv, p.seqlen_q, p.seqlen_k, p.head_dim = 1, 4, 3, 8, 8, 64
    with pytest.raises(ValueError, match="^key: expected"):
        _C.fwd(p, -1, 0)
    p.heads_kv, p.head_dim = 2, 20
    with pytest.raises(ValueError, match="^head_dim: expected"):
        _C.fwd(p, -1, 0)
