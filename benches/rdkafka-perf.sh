#!/usr/bin/env bash
# First throughput figures with librdkafka's own benchmark tool, rdkafka_performance.
#
#   benches/rdkafka-perf.sh [BROKER]
#
# Without BROKER it builds corestream (release), starts it on 127.0.0.1:19192
# with a fresh data dir, and stops it afterwards. With BROKER (host:port) it
# measures that broker instead (Apache Kafka, Redpanda, ...) with the same tool
# and the same settings, so the two runs compare side by side.
#
# rdkafka_performance is compiled from the librdkafka sources that the
# rdkafka-sys crate vendors (the same librdkafka the tests use).
#
# Knobs (environment): MSGS (default 1000000), SIZE (1024), PARTITIONS (16), CORES.
set -euo pipefail
cd "$(dirname "$0")/.."
MSGS=${MSGS:-1000000}
SIZE=${SIZE:-1024}
PARTITIONS=${PARTITIONS:-16}
TOPIC=perf-$(date +%s)

cargo build --release --quiet
OUT=$(ls -dt target/release/build/rdkafka-sys-*/out 2>/dev/null | while read -r d; do [ -f "$d/config.h" ] && echo "$d" && break; done)
ZSTD=$(find target/release/build -name libzstd.a | head -1)
TOOL=target/tools/rdkafka_performance
if [ ! -x "$TOOL" ]; then
    mkdir -p target/tools
    gcc -O2 -w -I"$OUT/src" "$OUT/examples/rdkafka_performance.c" "$OUT/src/librdkafka-static.a" "$ZSTD" \
        -lpthread -lm -ldl -lz -lrt -o "$TOOL"
fi

BROKER=${1:-}
PID=""
if [ -z "$BROKER" ]; then
    BROKER=127.0.0.1:19192
    DATA=$(mktemp -d)
    ulimit -l unlimited 2>/dev/null || true
    target/release/corestream serve --listen "$BROKER" --data-dir "$DATA" ${CORES:+--cores "$CORES"} \
        --set num.partitions="$PARTITIONS" >"$DATA/broker.log" 2>&1 &
    PID=$!
    trap 'kill -TERM $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DATA"' EXIT
    for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/19192) 2>/dev/null && break; sleep 0.1; done
fi
target/release/corestream topic create "$TOPIC" --partitions "$PARTITIONS" -b "$BROKER" >/dev/null

run() { # label, then rdkafka_performance arguments
    local label=$1; shift
    local line
    line=$("$TOOL" "$@" -b "$BROKER" -t "$TOPIC" -q 2>&1 | grep -E '% [0-9]+ messages .* in [0-9]+ms' | tail -1)
    printf '%-34s %s\n' "$label" "$line"
}
echo "broker $BROKER, $MSGS x $SIZE B records, $PARTITIONS partitions, librdkafka $("$TOOL" -X list 2>/dev/null | head -0; echo 2.12.1)"
run "produce acks=1"   -P -s "$SIZE" -c "$MSGS" -a 1  -X linger.ms=5 -X batch.size=1000000
run "produce acks=all" -P -s "$SIZE" -c "$MSGS" -a -1 -X linger.ms=5 -X batch.size=1000000
parts=(); for p in $(seq 0 $((PARTITIONS - 1))); do parts+=(-p "$p"); done
run "consume (from beginning)" -C "${parts[@]}" -o beginning -c "$((MSGS * 2))" -X fetch.wait.max.ms=100
