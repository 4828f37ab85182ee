#!/usr/bin/env bash
# The one command a lent GPU runs (the device tool: `bash benchmarks/gpu/run.sh`, carrying .whl
# and .gpupack): install the carried wheels, then the study's GPU benchmark on the carried pack.
# `bash benchmarks/gpu/run.sh search` runs the search's throughput (bench_search.py) instead.
# Figures and log go to $OUT (the device tool's folder that comes back), else ./gpu-out.
# Extra arguments go to the script (e.g. --segmenter-minutes 1 --compile; --workers 1 4 8).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD/src" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.txt" || true
bench=gpu
if [[ ${1:-} == search ]]; then bench=search; shift; fi
python3 "benchmarks/gpu/bench_$bench.py" --pack .gpupack/acdc.npz --out "$OUT/$bench.json" "$@" 2>&1 \
  | tee "$OUT/$bench.log"
