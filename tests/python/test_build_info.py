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


def test_native_module_links_no_torch_and_no_shared_cudart():
    import shutil
    import subprocess

    import pytest

    from flashmin import _C

    if shutil.which("readelf") is None:
        pytest.skip("readelf not available")
    dynamic = subprocess.run(
        ["readelf", "-d", _C.__file__], capture_output=True, text=True, check=True
    ).stdout
    needed = [line for line in dynamic.splitlines() if "(NEEDED)" in line]
    assert needed, dynamic
    for lib in ("libtorch", "libc10", "libcudart"):
        assert not any(lib in line for line in needed), needed
