"""flashmin: FlashAttention (FA1, FA2) and Flash-Decoding as torch.library ops.

import flashmin
out = flashmin.scaled_dot_product_attention(q, k, v, is_causal=True)
out = flashmin.flash_decode(q, k_cache, v_cache, cache_seqlens)
"""

from __future__ import annotations

from . import _C
from .attention import flash_attention, flash_decode, scaled_dot_product_attention

__all__ = ["build_info", "flash_attention", "flash_decode", "scaled_dot_product_attention"]
__version__ = _C.build_info()["version"]


def build_info() -> dict:
    """How this flashmin was built: version, with_cuda, cuda_version, cuda_archs, and the torch
    it is running with."""
    import torch

    info = dict(_C.build_info())
    archs = info["cuda_archs"]
    info["cuda_archs"] = [a for a in archs.split(",") if a] if archs else []
    info["torch_version"] = torch.__version__
    return info
