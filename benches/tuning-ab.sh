#!/usr/bin/env bash
# Measures broker settings against each other: each variant is a set of `corestream serve`
# flags; for every workload the variants run in turn, ROUNDS times, interleaved (A B C A B C)
# so that slow drifts of a shared machine hit every variant alike. Each run starts a fresh
# release broker on an empty data directory, drives it with `corestream bench run` (the
# same librdkafka load generator as `bench compare`) and stops it.
#
#   benches/tuning-ab.sh                       # the default variants and workloads
#   VARIANTS='default|;spin 50us|--set reactor.spin.before.park.us=50' \
#   WORKLOADS='latency-25mbs' ROUNDS=3 DURATION=8 benches/tuning-ab.sh
#
#   CLIENT_CPUS=0 VARIANTS='1 shard on CPU 1|--cpuset 1' benches/tuning-ab.sh
#
# CLIENT_CPUS pins the load generator (taskset) so it does not share the shards' CPUs.
# VARIANTS is `label|flags` entries separated by `;`. Prints a Markdown table per workload
# with the median of each metric over the rounds (and min-max), and writes the raw JSON of
# every run under $OUT (default target/bench/tuning-ab).
set -euo pipefail
cd "$(dirname "$0")/.."

VARIANTS=${VARIANTS:-'default (2 shards)|;1 shard|--cores 1;latency profile|--config tuning/profiles/latency.toml;throughput profile|--config tuning/profiles/throughput.toml'}
WORKLOADS=${WORKLOADS:-'latency-25mbs max-throughput-acks1'}
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-8}
OUT=${OUT:-target/bench/tuning-ab}
PORT=${PORT:-19392}
BIN=target/release/corestream
CLIENT=()
if [ -n "${CLIENT_CPUS:-}" ]; then
    CLIENT=(taskset -c "$CLIENT_CPUS")
fi

cargo build --release --quiet
mkdir -p "$OUT"
rm -f "$OUT"/*.json

IFS=';' read -r -a variants <<< "$VARIANTS"
broker_pid=""
stop_broker() {
    if [ -n "$broker_pid" ]; then
        kill "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
        broker_pid=""
    fi
}
trap stop_broker EXIT

for workload in $WORKLOADS; do
    for round in $(seq 1 "$ROUNDS"); do
        for i in "${!variants[@]}"; do
            flags=${variants[$i]#*|}
            data=$(mktemp -d "${TMPDIR:-/tmp}/corestream-ab.XXXXXX")
            # shellcheck disable=SC2086 # flags are words on purpose
            "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$data" --admin none $flags \
                > "$OUT/broker-$i.log" 2>&1 &
            broker_pid=$!
            for _ in $(seq 1 100); do
                (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
                sleep 0.1
            done
            echo "== $workload round $round: ${variants[$i]%%|*}" >&2
            "${CLIENT[@]}" "$BIN" bench run -b "127.0.0.1:$PORT" --broker-pid "$broker_pid" \
                --workload "$workload" --duration "$DURATION" \
                --json "$OUT/$workload-$i-$round.json" | grep -E "produce:|produce ack|broker cpu" >&2 || true
            stop_broker
            rm -rf "$data"
        done
    done
done

python3 - "$OUT" "$VARIANTS" "$WORKLOADS" <<'EOF'
import json, statistics, sys, glob, os
out, variants, workloads = sys.argv[1], sys.argv[2].split(';'), sys.argv[3].split()
labels = [v.split('|', 1)[0] for v in variants]
flags = [v.split('|', 1)[1] or '(none)' for v in variants]

def metrics(j):
    ack, e2e, cpu = j.get("ack_latency"), j.get("e2e_latency"), j.get("broker_cpu")
    m = {"produce MB/s": j["produce"]["mb_per_sec"]}
    if ack:
        m.update({"ack p50 ms": ack["p50_us"] / 1000, "ack p99 ms": ack["p99_us"] / 1000,
                  "ack max ms": ack["max_us"] / 1000})
    if e2e:
        m["e2e p99 ms"] = e2e["p99_us"] / 1000
    if cpu and cpu.get("cpu_seconds_per_gb") is not None:
        m["broker CPU s/GB"] = cpu["cpu_seconds_per_gb"]
        m["broker cores busy"] = cpu["cores_busy"]
    return m

for w in workloads:
    runs = []
    for i in range(len(variants)):
        files = sorted(glob.glob(os.path.join(out, f"{w}-{i}-*.json")))
        runs.append([metrics(r) for f in files for r in json.load(open(f))["results"]])
    names = []
    for r in runs:
        for x in r:
            names += [k for k in x if k not in names]
    print(f"\n### {w}\n")
    print("| metric | " + " | ".join(labels) + " |")
    print("|---|" + "---:|" * len(labels))
    for k in names:
        cells = []
        for r in runs:
            v = [x[k] for x in r if k in x]
            if not v:
                cells.append("-")
                continue
            med = statistics.median(v)
            fmt = (lambda x: f"{x:.1f}") if med >= 10 else (lambda x: f"{x:.2f}")
            cells.append(f"{fmt(med)} ({fmt(min(v))}-{fmt(max(v))})")
        print(f"| {k} | " + " | ".join(cells) + " |")
    print()
    for l, f in zip(labels, flags):
        print(f"- {l}: `{f}`")
EOF
