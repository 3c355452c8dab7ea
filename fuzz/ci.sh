#!/usr/bin/env bash
# Builds every fuzz target and runs each for a few seconds, starting from the
# checked-in corpus (fuzz/corpus/<target>.tar.gz, unpacked to a scratch
# directory; new inputs go to another, so the tree stays clean). A crash fails the run and leaves its input in fuzz/artifacts/.
# Needs cargo-fuzz; stable Rust is enough with RUSTC_BOOTSTRAP=1 (cargo fuzz
# passes -Z flags), and `-s none` (coverage without a sanitizer runtime).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${FUZZ_SECS:-8}"
export RUSTC_BOOTSTRAP=1
cargo fuzz build -s none
mkdir -p fuzz/artifacts
for target in $(cargo fuzz list); do
  scratch="$(mktemp -d)"
  seeds="$(mktemp -d)"
  log="$scratch.log"
  if [ -f "fuzz/corpus/$target.tar.gz" ]; then
    tar -C "$seeds" -xzf "fuzz/corpus/$target.tar.gz"
  fi
  echo "== fuzz $target (${SECS} s)"
  status=0
  "fuzz/target/x86_64-unknown-linux-gnu/release/$target" \
    -artifact_prefix="fuzz/artifacts/" -max_total_time="$SECS" \
    -rss_limit_mb=1024 -malloc_limit_mb=512 \
    "$scratch" "$seeds" > "$log" 2>&1 || status=$?
  grep -E "^Done|ERROR|SUMMARY|panicked" "$log" || true
  if [ "$status" != 0 ]; then
    tail -40 "$log"
    echo "fuzz target $target failed (exit $status); its input is in fuzz/artifacts/"
    exit 1
  fi
  rm -rf "$scratch" "$seeds" "$log"
done
