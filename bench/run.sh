#!/usr/bin/env bash
# tiny-lm training throughput on burn's CPU backends beside the same model and training step in
# PyTorch, in one run, on the same number of threads, plus the single-precision matmul rate; writes
# the figures to BENCHMARKS.md. PyTorch goes into a local virtual environment (.venv-bench) on the
# first run. Usage: bash bench/run.sh   (THREADS=N and STEPS=N override the defaults)
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS=${THREADS:-$(nproc)}
STEPS=${STEPS:-20}
VENV=.venv-bench

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "installing PyTorch into $VENV (once)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet torch numpy
fi

export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
cargo build --release -p task --example benchmark --features ndarray >&2
echo "burn: $STEPS timed steps on $THREADS threads" >&2
burn=$(target/release/examples/benchmark "$STEPS")
echo "PyTorch: $STEPS timed steps on $THREADS threads" >&2
torch=$("$VENV/bin/python" bench/tiny_lm.py "$THREADS" "$STEPS")
"$VENV/bin/python" bench/report.py "$burn" "$torch" "$THREADS" BENCHMARKS.md
