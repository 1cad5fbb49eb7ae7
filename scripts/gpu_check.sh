#!/usr/bin/env bash
# The GPU checks, for a machine with an NVIDIA GPU whose python3 already has NumPy, CuPy, PyTorch and pytest
# (no virtual environment is made: the GPU image's own packages are used). Logs go to ${OUT:-gpu-logs}/.
#   bash scripts/gpu_check.sh           # the gpu-marked tests and the device-parametrized oracle tests on cuda
#   bash scripts/gpu_check.sh full      # ... and then the whole default suite, in parallel
#   bash scripts/gpu_check.sh bench     # ... and then bench/gpu.py (Ember on CUDA beside PyTorch on CUDA)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-logs}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi -L 2>&1 | tee "$out/env.txt"
python3 -c "import numpy, cupy, torch; print('numpy', numpy.__version__, 'cupy', cupy.__version__, 'torch', torch.__version__, 'gpus', cupy.cuda.runtime.getDeviceCount())" 2>&1 | tee -a "$out/env.txt"
python3 -c "import ember; print('ember cuda available:', ember.cuda.is_available())" 2>&1 | tee -a "$out/env.txt"
timeout 150 python3 -m pytest -p no:cacheprovider -rfE --tb=short -o addopts="" \
    -m gpu tests/test_cuda_end_to_end.py tests/test_compile_passes.py tests/test_compile_lowp.py tests/test_tensor_api.py \
    2>&1 | tee "$out/gpu_marked.log"
timeout 100 python3 -m pytest -p no:cacheprovider -rfE --tb=short -o addopts="" -k cuda tests/test_devices.py \
    2>&1 | tee "$out/devices_cuda.log"
# the PyTorch-oracle suites with Ember on cuda (tests/helpers.py reads EMBER_TEST_DEVICE)
suites=$(python3 -c "from tests.test_strict_cupy_paths import ORACLE_SUITES; print(' '.join(ORACLE_SUITES))")
EMBER_TEST_DEVICE=cuda timeout 200 python3 -m pytest -p no:cacheprovider -q -rfE --tb=short -o addopts="" -n 8 $suites \
    2>&1 | tee "$out/oracle_cuda.log" | tail -40
if [ "${1:-}" = full ]; then
    timeout 170 python3 -m pytest -p no:cacheprovider -q -rfE --tb=line -o addopts="" -m "not slow" -n 16 tests \
        2>&1 | tee "$out/full.log" | tail -80
fi
if [ "${1:-}" = bench ]; then
    timeout 240 python3 bench/gpu.py --out "$out/gpu_bench.md" 2>&1 | tee "$out/gpu_bench.log"
fi
