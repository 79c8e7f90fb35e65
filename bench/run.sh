#!/usr/bin/env bash
# Every benchmark of the project in one run, each beside its reference measured in the same run, and
# BENCHMARKS.md's generated section rewritten with the medians and spreads:
#   1. tiny-lm training tokens/s per CPU backend against PyTorch (same threads), and achieved FLOP/s
#      (6 x parameters x tokens/s) against a single-precision matmul measured in the same run;
#   2. the gradient codec: size against dense f32, compress and decode GB/s;
#   3. transport: payloads over loopback gRPC against a plain TCP copy, and 64 miners at once;
#   4. validator throughput: a first and a steady window with 16 to 256 miners, and the copy check's
#      cost, every pair against sketches;
#   5. Yuma epoch time for 256, 1024 and 4096 uids with 64 and 256 validators;
#   6. peak resident memory of a miner window and a validator window on tiny-lm.
# PyTorch goes into a local virtual environment (.venv-bench) on the first run; nothing here runs in
# CI. Usage: bash bench/run.sh [--quick]   (THREADS=N, RUNS=N override the defaults)
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
THREADS=${THREADS:-$(nproc)}
if [ $QUICK = 1 ]; then RUNS=${RUNS:-2}; STEPS=8; MINERS="16 64"; else RUNS=${RUNS:-5}; STEPS=20; MINERS="16 64 256"; fi
VENV=.venv-bench
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "installing PyTorch into $VENV (once)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet torch numpy safetensors
fi

export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
echo "building the benchmarks (release)" >&2
cargo build --release -q -p task --example benchmark --features ndarray
cargo build --release -q -p pseudo-gradient --example codec_bench
cargo build --release -q -p subnet-proto --example transport_bench
cargo build --release -q -p scoring --example yuma_bench
cargo build --release -q -p validator --example window_memory --example copy_check
cargo build --release -q -p miner --example group_memory
bin=target/release/examples

# The last line of each program is its JSON figure; its other lines go to the terminal.
last() { "$@" | tee -a /dev/stderr | tail -n 1; }

for run in $(seq "$RUNS"); do
  echo "== run $run of $RUNS ==" >&2
  last "$bin/benchmark" "$STEPS" >> "$OUT/train-burn.jsonl"
  last "$VENV/bin/python" bench/tiny_lm.py "$THREADS" "$STEPS" >> "$OUT/train-torch.jsonl"
  last "$bin/codec_bench" 3323648 5 >> "$OUT/codec.jsonl"
  last "$bin/transport_bench" 5 >> "$OUT/transport.jsonl"
  last "$bin/group_memory" tasks/tiny-lm.toml --whole >> "$OUT/miner-memory.jsonl"
done
for n in 256 1024 4096; do
  for v in 64 256; do
    last "$bin/yuma_bench" "$n" "$v" >> "$OUT/yuma.jsonl"
  done
done
for m in $MINERS; do
  last "$bin/window_memory" "$m" tasks/localnet-lm.toml >> "$OUT/validator-localnet-lm.jsonl"
done
for m in 16 64; do
  last "$bin/window_memory" "$m" tasks/tiny-lm.toml >> "$OUT/validator-tiny-lm.jsonl"
done
# localnet-lm's payload (17,152 entries of 137,216) and tiny-lm's density (200,000 of 3,323,648).
last "$bin/copy_check" 256 17152 137216 >> "$OUT/copy-check.jsonl"
last "$bin/copy_check" 256 200000 3323648 >> "$OUT/copy-check.jsonl"

"$VENV/bin/python" bench/report.py "$OUT" "$THREADS" "$RUNS" BENCHMARKS.md
