#!/usr/bin/env bash
# cibuildwheel `before-all` (Linux): install the minimal CUDA toolkit needed to compile flashmin
# into a manylinux_2_28 container (AlmaLinux 8) from NVIDIA's RHEL8 repository.
#
# Only the compiler and the static runtime are installed: nvcc (+ crt headers, nvvm), the CUDA
# runtime headers + libcudart_static.a, and CCCL (libcu++/CUB headers that the runtime headers
# include). No driver, no math libraries: flashmin links cudart statically and needs nothing else.
#
#   FLASHMIN_CUDA_TOOLKIT   toolkit version, "13.0" (default) or a 12.x such as "12.8"
#
# Usage: bash scripts/install_cuda_manylinux.sh        (as root inside the manylinux container)
set -euo pipefail

ver=${FLASHMIN_CUDA_TOOLKIT:-13.0}
dash=${ver/./-} # 13.0 -> 13-0, the suffix of NVIDIA's package names

case "$(uname -m)" in
  x86_64) repo_arch=x86_64 ;;
  aarch64) repo_arch=sbsa ;; # server ARM (Grace, Graviton): NVIDIA calls it sbsa
  *)
    echo "install_cuda_manylinux.sh: unsupported machine $(uname -m)" >&2
    exit 1
    ;;
esac

if [ -x "/usr/local/cuda-$ver/bin/nvcc" ]; then
  echo "CUDA $ver already installed"
else
  curl -fsSL --retry 5 -o /etc/yum.repos.d/cuda-rhel8.repo \
    "https://developer.download.nvidia.com/compute/cuda/repos/rhel8/$repo_arch/cuda-rhel8.repo"
  # cuda-crt was split out of cuda-nvcc in 12.x; cuda-cccl holds <cuda/std/...>, <cub/...>.
  dnf install -y --setopt=install_weak_deps=False \
    "cuda-nvcc-$dash" "cuda-crt-$dash" "cuda-nvvm-$dash" \
    "cuda-cudart-devel-$dash" "cuda-cccl-$dash"
  dnf clean all
fi

ln -sfn "/usr/local/cuda-$ver" /usr/local/cuda
/usr/local/cuda/bin/nvcc --version
# The build step finds nvcc through PATH / CUDACXX, set in [tool.cibuildwheel.linux] environment.
