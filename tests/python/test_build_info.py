from __future__ import annotations

import flashmin


def test_build_info_fields():
    info = flashmin.build_info()
    for key in ("version", "with_cuda", "cuda_version", "cuda_archs"):
        assert key in info
    assert info["version"] == flashmin.__version__
    assert isinstance(info["with_cuda"], bool)
    if info["with_cuda"]:
        assert info["cuda_version"] and info["cuda_archs"]
    else:
        assert info["cuda_version"] is None and info["cuda_archs"] == []
