#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for SECONDS each (nightly toolchain and
# cargo-fuzz needed: `rustup toolchain install nightly`, `cargo install cargo-fuzz`).
#
#   scripts/fuzz.sh SECONDS [TARGET...]    all targets when none is named
#
# New corpus entries go to fuzz/work/<target>/ (not committed); the committed seeds
# (fuzz/corpus/) and regressions (fuzz/regressions/) are read as extra corpora.
# A crash, timeout or out-of-memory input lands in fuzz/artifacts/<target>/:
# minimise it (`cargo +nightly fuzz tmin TARGET FILE`), fix the parser, and commit
# the minimised input under fuzz/regressions/<target>/ (tests/fuzz_regressions.rs
# replays it on stable). Per target it prints the seconds run, libFuzzer's
# executions per second and the crashes found; exits non-zero if any target crashed.
#
# Environment: FUZZ_TIMEOUT (seconds one input may take, default 10),
# FUZZ_RSS_MB (memory limit, default 2048), FUZZ_MAX_LEN (input size cap, default
# 65536), FUZZ_LOG_DIR (keep each target's libFuzzer log there).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECONDS_EACH=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
case "$SECONDS_EACH" in '' | *[!0-9]*) echo "error: SECONDS must be a whole number, not $SECONDS_EACH" >&2; exit 2 ;; esac

LOG_DIR=${FUZZ_LOG_DIR:-}
if [ -n "$LOG_DIR" ]; then
  mkdir -p "$LOG_DIR"
  LOG_DIR=$(cd "$LOG_DIR" && pwd)
fi
cd "$ROOT/fuzz"
if [ $# -eq 0 ]; then
  mapfile -t TARGETS < <(cargo +nightly fuzz list)
else
  TARGETS=("$@")
fi

# No sanitizer: the crate is safe Rust, so a bug shows as a panic, which libFuzzer
# catches anyway; without ASan each target runs 2-3x faster. Debug assertions
# (overflow checks) stay on, which is cargo-fuzz's default.
FLAGS=(--sanitizer none)
# Built once, then each binary is run directly, so editing the crate while a long
# run goes on does not rebuild under it. FUZZ_NO_BUILD=1 runs the last build as is.
if [ -z "${FUZZ_NO_BUILD:-}" ]; then
  cargo +nightly fuzz build "${FLAGS[@]}" >/dev/null 2>&1 || cargo +nightly fuzz build "${FLAGS[@]}"
fi
BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/fuzz/target}/x86_64-unknown-linux-gnu/release"

failed=0
printf '%-18s %8s %10s %8s\n' target seconds execs/s crashes
for t in "${TARGETS[@]}"; do
  mkdir -p "work/$t" "artifacts/$t" "regressions/$t" "corpus/$t"
  before=$(find "artifacts/$t" -type f | wc -l)
  log=$(mktemp)
  start=$(date +%s)
  status=0
  "$BIN_DIR/$t" "work/$t" "corpus/$t" "regressions/$t" -artifact_prefix="artifacts/$t/" \
    -max_total_time="$SECONDS_EACH" -timeout="${FUZZ_TIMEOUT:-10}" \
    -rss_limit_mb="${FUZZ_RSS_MB:-2048}" -max_len="${FUZZ_MAX_LEN:-65536}" \
    -print_final_stats=1 >"$log" 2>&1 || status=$?
  elapsed=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  after=$(find "artifacts/$t" -type f | wc -l)
  crashes=$(( after - before ))
  if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then
    crashes=1 # failed without an artifact (e.g. did not build): count it
  fi
  [ -n "$LOG_DIR" ] && cp "$log" "$LOG_DIR/$t.log"
  printf '%-18s %8s %10s %8s\n' "$t" "$elapsed" "${execs:-?}" "$crashes"
  if [ "$crashes" -ne 0 ]; then
    failed=1
    grep -m3 -E "panicked at|^==[0-9]+== ERROR|SUMMARY|Test unit written" "$log" | sed 's/^/    /' || true
  fi
  rm -f "$log"
done
exit "$failed"
