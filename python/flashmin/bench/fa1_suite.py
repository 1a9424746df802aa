"""FA1 against FA2 on the same shapes, next to the IO model's predicted HBM bytes.

IO model per (batch, head), N = seqlen, d = head_dim, e = element bytes, T_c = N / B_c,
T_r = N / B_r (tile sizes read from the kernels) (fp32 running O, l, m for FA1):
  FA2 forward: read Q, K, V once per query block's pass over K/V (K, V: T_r times), write O once
      bytes = N d e (1 + 2 T_r + 1)
  FA1 forward: read K, V once; for every K/V block read Q_i and read + write O_i (fp32), l_i, m_i
      bytes = 2 N d e + T_c (N d e + 2 N d 4 + 4 N 4) + N d e
The extra FA1 term grows with T_c: O makes a round trip to memory after every K/V block.
"""

from __future__ import annotations

import torch

import flashmin

from .. import _C
from .timing import attn_flops, median_ms, tflops


def tile_sizes(d):
    """(B_r, B_c) of the CUDA-core forward kernels, read from the native module (64 x 64, the
    CPU tile, when it has no CUDA)."""
    return _C.simt_fwd_tile_sizes(d) or (64, 64)


def predicted_bytes(algorithm, b, h, n, d, elem):
    block_r, block_c = tile_sizes(d)
    if algorithm == "fa2":
        t_r = -(-n // block_r)
        per_head = n * d * elem * (2 + 2 * t_r)
    else:
        t_c = -(-n // block_c)
        per_head = (
            2 * n * d * elem + t_c * (n * d * elem + 2 * n * d * 4 + 4 * n * 4) + n * d * elem
        )
    return b * h * per_head


def run(device: str, quick: bool):
    # The first shapes give FA1 only B*H = 16 blocks (its grid); the last ones fill the GPU, so
    # that the remaining gap is the memory traffic and the serial K/V loop, not idle SMs.
    shapes = [(1, 16, 1024, 64), (1, 16, 4096, 64)]
    if not quick:
        shapes += [(8, 32, 1024, 64), (4, 64, 2048, 64), (2, 128, 2048, 128)]
    if device != "cuda":
        shapes = [(1, 4, 256, 64), (1, 4, 1024, 64)]
    dtypes = [torch.float32, torch.bfloat16] if device == "cuda" else [torch.float32]
    rows = []
    for dtype in dtypes:
        for b, h, n, d in shapes:
            q, k, v = (torch.randn(b, h, n, d, device=device, dtype=dtype) for _ in range(3))
            row = dict(
                dtype=str(dtype).replace("torch.", ""), batch=b, heads=h, seqlen=n, head_dim=d
            )
            for algo in ("fa2", "fa1"):
                ms = median_ms(
                    lambda algo=algo: flashmin.flash_attention(q, k, v, algorithm=algo), device
                )
                gb = predicted_bytes(algo, b, h, n, d, q.element_size()) / 1e9
                row[f"{algo}_ms"] = ms
                row[f"{algo}_tflops"] = tflops(attn_flops(b, h, n, n, d, False), ms)
                row[f"{algo}_pred_GB"] = gb
                row[f"{algo}_GB/s"] = gb / (ms * 1e-3)
            row["fa1/fa2 time"] = row["fa1_ms"] / row["fa2_ms"]
            row["fa1/fa2 bytes"] = row["fa1_pred_GB"] / row["fa2_pred_GB"]
            rows.append(row)
    return rows


COLUMNS = [
    "dtype",
    "batch",
    "heads",
    "seqlen",
    "head_dim",
    "fa2_ms",
    "fa1_ms",
    "fa2_tflops",
    "fa1_tflops",
    "fa2_pred_GB",
    "fa1_pred_GB",
    "fa1/fa2 bytes",
    "fa1/fa2 time",
    "fa1_GB/s",
]
