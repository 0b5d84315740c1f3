#!/usr/bin/env bash
# Compiles the library with `--features cuda` on a machine without a GPU or a CUDA install:
# nvcc, its NVVM back end, the CUDA headers and CCCL come from NVIDIA's PyPI wheels, laid
# out under target/cuda-toolkit (ignored by git; nothing is cached outside the repo).
#
# Only the library is built: linking the binary needs the driver library (libcuda.so,
# which no registry package here ships) and cuBLAS/cuRAND/NVRTC (candle's cudarc links
# them at build time). docs/gpu.md has the details.
#
# Env: CUDA_COMPUTE_CAP (default 90: H100/H200). Most of the time goes to nvcc compiling
# candle-kernels' quantised-matmul kernels; CUDAFORGE_THREADS (default: every core)
# compiles that many at once.
set -euo pipefail
cd "$(dirname "$0")/.."

# cudarc 0.19.10 (Cargo.lock) knows CUDA 11.4-13.4; the wheels are pinned to 13.4 so that
# `nvcc --version` and CUDARC_CUDA_VERSION agree. CCCL has no 13.4 wheel; 13.3.5 is its
# latest release and is header-only.
CUDA_WHEELS=(
    nvidia-cuda-nvcc==13.4.92
    nvidia-nvvm==13.4.92
    nvidia-cuda-crt==13.4.92
    nvidia-cuda-runtime==13.4.92
    nvidia-cuda-cccl==13.3.5.0.6
)
TOOLKIT_DIR="$PWD/target/cuda-toolkit"
CUDA_ROOT="$TOOLKIT_DIR/nvidia/cu13"
STAMP="$TOOLKIT_DIR/.installed"

t0=$(date +%s)
if [[ ! -x "$CUDA_ROOT/bin/nvcc" || "$(cat "$STAMP" 2>/dev/null)" != "${CUDA_WHEELS[*]}" ]]; then
    echo "ci-cuda: installing ${CUDA_WHEELS[*]} into $TOOLKIT_DIR"
    rm -rf "$TOOLKIT_DIR"
    mkdir -p "$TOOLKIT_DIR"
    python3 -m pip install --quiet --disable-pip-version-check --no-cache-dir \
        --no-deps --target "$TOOLKIT_DIR" "${CUDA_WHEELS[@]}"
    echo "${CUDA_WHEELS[*]}" >"$STAMP"
fi
[[ -x "$CUDA_ROOT/bin/nvcc" && -x "$CUDA_ROOT/nvvm/bin/cicc" ]] || {
    echo "ci-cuda: FAILED: the wheels did not provide bin/nvcc and nvvm/bin/cicc under $CUDA_ROOT" >&2
    exit 1
}
t1=$(date +%s)

export PATH="$CUDA_ROOT/bin:$PATH"
export CUDA_ROOT CUDA_HOME="$CUDA_ROOT"
export CUDARC_CUDA_VERSION=13040
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
# cudaforge (candle-kernels' build script) uses half the cores unless told.
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-$(nproc)}"
nvcc --version | tail -n 2

# The same target directory as the CPU build: cargo keeps the cuda-feature artifacts
# beside the CPU ones (features are part of each artifact's hash), so crates the feature
# does not touch are built once and the CPU build stays fresh.
if ! cargo build --release --lib --features cuda; then
    echo "ci-cuda: FAILED: cargo build --release --lib --features cuda" >&2
    exit 1
fi
t2=$(date +%s)
echo "ci-cuda: ok (toolkit install $((t1 - t0)) s, cuda build $((t2 - t1)) s)"
