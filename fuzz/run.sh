#!/usr/bin/env bash
# Runs each fuzz target for SECONDS (default 60) with libFuzzer; prints each target's executions.
# Needs a nightly toolchain and cargo-fuzz (installed if missing). Usage: bash fuzz/run.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "no nightly toolchain: the stable search in tests/hostile_decoders.rs covers these decoders"
  exit 0
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
for target in frame_decoder message_decoder handshake; do
  mkdir -p "corpus/$target"
  log=$(mktemp)
  cargo +nightly fuzz run "$target" "corpus/$target" -- -max_total_time="$secs" -max_len=4096 \
    >"$log" 2>&1 || { tail -40 "$log"; rm -f "$log"; exit 1; }
  # libFuzzer ends with "Done <n> runs in <s> second(s)".
  execs=$(grep -o 'Done [0-9]* runs' "$log" | grep -o '[0-9]*' || true)
  echo "$target: ${execs:-?} executions in ${secs} s"
  rm -f "$log"
done
