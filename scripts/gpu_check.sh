#!/usr/bin/env bash
# The one GPU check (issue 8), meant for a machine with an NVIDIA GPU and the CUDA toolkit, in under 5 minutes:
# configures with CUDA, builds the GPU tests and benchmarks, runs the `cuda` tests, the GPU benchmarks and the
# same workloads in PyTorch (when python3 has torch with CUDA), and prints a table of ratios.
# Dependencies missing there (Eigen, doctest, nlohmann-json, Google Benchmark) may be carried as Debian packages
# in .devdeps/ (apt-get download libeigen3-dev doctest-dev nlohmann-json3-dev libbenchmark-dev libbenchmark1debian);
# they are unpacked into / when their headers are absent. Output goes to stdout and, when set, to $OUT/.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
jobs=$(nproc)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
nvcc --version | tail -1 || true
if [ -d .devdeps ] && [ ! -f /usr/include/eigen3/Eigen/Core ]; then
  for f in .devdeps/*.deb; do dpkg -x "$f" /; done
fi
arch=${PREFIXTUNE_CUDA_ARCH:-90}
set -e
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DPREFIXTUNE_ENABLE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" \
  -DPREFIXTUNE_USE_OPENBLAS=OFF -DPREFIXTUNE_BUILD_EXAMPLES=OFF -DPREFIXTUNE_INSTALL=OFF >"$out/configure.log" 2>&1 ||
  { tail -30 "$out/configure.log"; exit 1; }
targets=(test_cuda bench_cuda_gemm)
cmake --build build-gpu -j"$jobs" --target "${targets[@]}" 2>&1 | tee "$out/build.log" | grep -E "error|warning" | head -40
[ "${PIPESTATUS[0]}" -eq 0 ] || { tail -40 "$out/build.log"; exit 1; }
set +e
status=0
echo "== cuda tests"
ctest --test-dir build-gpu -L cuda --output-on-failure 2>&1 | tee "$out/ctest.log" || status=1
echo "== GPU benchmarks"
build-gpu/benchmarks/bench_cuda_gemm --benchmark_format=console 2>&1 | tee "$out/bench_cuda_gemm.txt"
if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "== PyTorch baselines"
  python3 benchmarks/torch_cuda_gemm.py 2>&1 | tee "$out/torch_cuda_gemm.txt"
fi
exit $status
