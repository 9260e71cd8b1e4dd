#!/usr/bin/env bash
# The one GPU check (issue 8), meant for a machine with an NVIDIA GPU and the CUDA toolkit, in under 5 minutes:
# configures with CUDA, builds the GPU tests and benchmarks, runs the `cuda` tests, the GPU benchmarks and the
# same workloads in PyTorch (when python3 has torch with CUDA), and prints a table of ratios.
# Dependencies missing there (Eigen, doctest, nlohmann-json, Google Benchmark) may be carried as Debian packages
# in .devdeps/ (apt-get download libeigen3-dev doctest-dev nlohmann-json3-dev libbenchmark-dev libbenchmark1debian
# libcli11-dev);
# they are unpacked into / when their headers are absent. Logs go to /tmp/gpu_check; when $OUT is set, the table,
# the benchmark JSON, the test log and a tarball of every log are copied there.
set -uo pipefail
cd "$(dirname "$0")/.."
out=/tmp/gpu_check
rm -rf "$out"
mkdir -p "$out"
collect() {
  if [ -n "${OUT:-}" ]; then
    cp "$out"/table.md "$out"/bench_cuda.json "$out"/ctest.log "$out"/hf_check.txt "$OUT"/ 2>/dev/null
    tar czf "$OUT/gpu_check_logs.tgz" -C "$out" .
  fi
}
trap collect EXIT
jobs=$(nproc)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
nvcc --version | tail -1 || true
if [ -d .devdeps ] && [ ! -f /usr/include/eigen3/Eigen/Core ]; then
  for f in .devdeps/*.deb; do dpkg -x "$f" /; done
fi
arch=${PREFIXTUNE_CUDA_ARCH:-90}
set -e
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DPREFIXTUNE_ENABLE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" \
  -DPREFIXTUNE_USE_OPENBLAS=OFF -DPREFIXTUNE_INSTALL=OFF >"$out/configure.log" 2>&1 ||
  { tail -30 "$out/configure.log"; exit 1; }
targets=(test_cuda bench_cuda test_cli prefixtune_cli)  # test_cli runs the CLI with --device cuda against cpu
cmake --build build-gpu -j"$jobs" --target "${targets[@]}" 2>&1 | tee "$out/build.log" | grep -E "error|warning" | head -40
[ "${PIPESTATUS[0]}" -eq 0 ] || { tail -40 "$out/build.log"; exit 1; }
set +e
status=0
echo "== cuda tests (and the CLI on --device cuda)"
ctest --test-dir build-gpu -R '^(test_cuda|test_cli)$' --output-on-failure --timeout 120 2>&1 | tee "$out/ctest.log" || status=1
echo "== GPU benchmarks"
timeout 200 build-gpu/benchmarks/bench_cuda --benchmark_out="$out/bench_cuda.json" --benchmark_out_format=json 2>&1 |
  tee "$out/bench_cuda.txt"
if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "== PyTorch baselines (same machine)"
  (
    cd benchmarks
    python3 torch_cuda_gemm.py >"$out/torch_cuda_gemm.txt" 2>&1
    python3 torch_train_step.py --device cuda --steps 20 >"$out/torch_train_fp32.json" 2>&1
    python3 torch_train_step.py --device cuda --steps 20 --tf32 >"$out/torch_train_tf32.json" 2>&1
    python3 torch_generate.py --device cuda --runs 5 >"$out/torch_gen_b1_p0.json" 2>&1
    python3 torch_generate.py --device cuda --runs 5 --prefix 10 >"$out/torch_gen_b1_p10.json" 2>&1
    python3 torch_generate.py --device cuda --runs 5 --prefix 10 --batch 8 >"$out/torch_gen_b8_p10.json" 2>&1
  )
  tail -n 2 "$out"/torch_*.json
fi
if python3 -c "import transformers, peft" 2>/dev/null; then
  echo "== transformers + PEFT parity (scripts/hf_check.sh)"
  timeout 300 scripts/hf_check.sh build-gpu 2>&1 | tee "$out/hf_check.txt" || status=1
fi
echo "== table"
python3 scripts/gpu_table.py "$out" | tee "$out/table.md"
exit $status
