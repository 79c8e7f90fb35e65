#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder that reads bytes from outside (cargo-fuzz, libFuzzer, on
# the nightly toolchain). Usage: bash fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
# Each target starts from fresh generated seeds (signed requests, a commitment, a checkpoint, the
# shipped tasks...) plus fuzz/seeds/ and whatever fuzz/corpus/ kept from earlier runs. A crash is
# saved under fuzz/artifacts/<target>/; once fixed, copy it to fuzz/regressions/<target>/, where the
# stable test `cargo test -p fuzz-targets` replays it for good. Prints one line per target and writes
# the table to fuzz/last-run.md.
set -uo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
all=(requests responses gradient_payload gradient_roundtrip checkpoint segment_state task_toml replay_log data_dir
  keyfile yuma_input timelock_commit)
targets=("${@:-${all[@]}}")
[ $# -eq 0 ] && targets=("${all[@]}")

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzzing needs a nightly toolchain (rustup toolchain install nightly); the stable replay is" >&2
  echo "cargo test -p fuzz-targets" >&2
  exit 2
fi
command -v cargo-fuzz >/dev/null || cargo +nightly install cargo-fuzz --locked

cargo run -q -p fuzz-targets --example write_seeds fuzz/corpus >/dev/null || exit 1
(cd fuzz && cargo +nightly fuzz build -O) || exit 1

table="| target | seconds | executions | executions/s | corpus | crashes |\n|---|---|---|---|---|---|\n"
failed=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  cp -n fuzz/seeds/"$t"/* "fuzz/corpus/$t/" 2>/dev/null || true
  log=$(mktemp)
  (cd fuzz && cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1) >"$log" 2>&1
  status=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  corpus=$(ls "fuzz/corpus/$t" | wc -l)
  crashes=$(ls "fuzz/artifacts/$t" | wc -l)
  if [ $status -ne 0 ]; then
    failed=1
    echo "== $t failed (exit $status); the end of its log:" >&2
    tail -40 "$log" >&2
  fi
  line="| $t | $seconds | ${runs:-?} | ${speed:-?} | $corpus | $crashes |"
  echo "$line"
  table+="$line\n"
  rm -f "$log"
done
printf "%b" "$table" >fuzz/last-run.md
exit $failed
