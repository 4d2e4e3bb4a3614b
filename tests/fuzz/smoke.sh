#!/usr/bin/env bash
# Runs every cargo-fuzz target in tests/fuzz for N seconds each (default 30):
#   tests/fuzz/smoke.sh [seconds] [target...]
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`); without them it says
# so and exits 0, so CI can call it unconditionally. A crash exits non-zero and leaves the
# input in tests/fuzz/artifacts/<target>/ (reproduce: cargo +nightly fuzz run --fuzz-dir
# tests/fuzz -s none <target> <file>); turn it into a case in tests/fuzz_props.rs.
# Sanitizer "none": rdkafka-sys's C build (librdkafka's configure, zstd) does not link
# under ASan. Panics, aborts, timeouts and -rss_limit_mb are still caught.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-30}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame_decode request_decode batch_validate segment_recover)

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz smoke: SKIPPED (no nightly toolchain; rustup toolchain install nightly)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz smoke: SKIPPED (cargo-fuzz not installed; cargo install cargo-fuzz)"
    exit 0
fi

cargo +nightly fuzz build --fuzz-dir tests/fuzz -O -s none
failed=0
for t in "${targets[@]}"; do
    mkdir -p "tests/fuzz/corpus/$t"
    log="tests/fuzz/target/smoke-$t.log"
    mkdir -p tests/fuzz/target
    if cargo +nightly fuzz run --fuzz-dir tests/fuzz -O -s none "$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
        echo "fuzz smoke: $t ok (${secs}s, $execs execs)"
    else
        echo "fuzz smoke: $t FAILED (see $log and tests/fuzz/artifacts/$t/)"
        tail -30 "$log"
        failed=1
    fi
done
exit $failed
