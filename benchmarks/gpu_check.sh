#!/usr/bin/env bash
# The GPU checks in one go, for a machine with an NVIDIA GPU and CuPy (e.g. a lent H200, where a
# session has minutes of device time): the parity tests, then benchmarks/gpu.py (CPU and GPU jobs on
# the same simulated data), then N = 100 000 on both. Logs and JSON go to $OUT (default gpu_out/).
# Each step has its own time limit, so one slow step cannot eat the others' time.
#
# Where cryoclass is not installed (the lent machine's image has CuPy, NumPy, SciPy, Numba, pandas,
# pyarrow, PyYAML and tqdm but not mrcfile or starfile), carry their wheels and put them and this
# checkout on PYTHONPATH first, e.g.
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site:$PWD:$PWD/widgets
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
timeout "${TESTS_S:-240}" python3 -m pytest tests/test_gpu_parity.py -m "gpu or not gpu" -q \
  -p no:cacheprovider --durations=4 2>&1 | tee "$OUT/pytest.log"
timeout "${BENCH_S:-240}" python3 benchmarks/gpu.py --n 5000 20000 --snr 0.05 0.01 --seeds 0 1 \
  --cli --out "$OUT/gpu.json" > "$OUT/gpu.log" 2>&1
tail -20 "$OUT/gpu.log"
timeout "${BIG_S:-180}" python3 benchmarks/gpu.py --n 100000 --snr 0.01 --seeds 0 \
  --out "$OUT/gpu100k.json" > "$OUT/gpu100k.log" 2>&1
tail -4 "$OUT/gpu100k.log"
