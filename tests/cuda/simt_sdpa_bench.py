"""Peer timings for tests/cuda/simt_check.cu: torch SDPA in fp32 on the same shapes.

Prints fwd and bwd (fwd+bwd minus fwd) median ms and TFLOP/s (fwd = 4*B*H*S*S*D, halved for
causal; bwd = 2.5x fwd) for the default backend and, where they accept the inputs, the
EFFICIENT_ATTENTION and MATH backends (TF32 off, i.e. exact fp32 matmuls).
"""

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
print("device:", torch.cuda.get_device_name(), "torch", torch.__version__)
for B, H, S, D in [(4, 16, 1024, 64), (1, 16, 4096, 128)]:
    for causal in (False, True):
        q, k, v = (torch.randn(B, H, S, D, device="cuda", requires_grad=True) for _ in range(3))
        do = torch.randn_like(q)
        flops = 4 * B * H * S * S * D / (2 if causal else 1)
        for name, backends in [
            ("default", None),
            ("efficient", [SDPBackend.EFFICIENT_ATTENTION]),
            ("math", [SDPBackend.MATH]),
        ]:

            def fwd():
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

            def fwd_bwd():
                fwd().backward(do)

            try:
                if backends is None:
                    tf = do_bench(fwd, return_mode="median")
                    tfb = do_bench(fwd_bwd, grad_to_none=[q, k, v], return_mode="median")
                else:
                    with sdpa_kernel(backends):
                        tf = do_bench(fwd, return_mode="median")
                        tfb = do_bench(fwd_bwd, grad_to_none=[q, k, v], return_mode="median")
            except Exception as e:  # backend refuses the inputs (or runs out of memory)
                print(
                    f"SDPA fp32 {name:9s} B={B} H={H} S={S} D={D} causal={int(causal)}: n/a ({type(e).__name__})"
                )
                continue
            tb = tfb - tf
            print(
                f"SDPA fp32 {name:9s} B={B} H={H} S={S} D={D} causal={int(causal)}  fwd {tf:.3f} ms "
                f"{flops / tf * 1e-9:.2f} TFLOP/s | bwd {tb:.3f} ms {2.5 * flops / tb * 1e-9:.2f} TFLOP/s"
            )
        del q, k, v, do
        torch.cuda.empty_cache()
