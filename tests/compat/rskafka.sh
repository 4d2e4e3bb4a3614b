#!/usr/bin/env bash
# rskafka's own integration tests (tests/ of the rskafka 0.6.0 crate) against a fresh
# corestream, one test per process, scored against tests/compat/rskafka.allow.
#
#   tests/compat/rskafka.sh [SUBSTRING...]   # only tests whose name contains one of these
#
# The crate is fetched from static.crates.io (checksum pinned to the crates.io index),
# unpacked under target/compat/rskafka-0.6.0 and built there with its own Cargo.lock
# (--locked) and its own target dir target/compat/rskafka-target, features "full"
# (all compressions, TLS, SOCKS5: the set that compiles every test).
#
# Environment:
#   BROKER=host:port     use a running broker instead of starting target/release/corestream
#   CORESTREAM_BIN       broker binary (default target/release/corestream; built if missing)
#   RSKAFKA_TOOLCHAIN    rustup toolchain for the crate (default: its pinned 1.85 if installed, else stable)
#   TEST_TIMEOUT         seconds per test before it is killed (default 60)
#   BROKER_RUST_LOG      the broker's RUST_LOG (default info)
#   BROKER_EXTRA_ARGS    more `serve` options, e.g. "--set group.min.session.timeout.ms=1000"
#   TEST_JAVA_INTEROPT   passed through: set it to run the Java-interop tests (they need the
#                        kafka-clients jars from Maven Central); unset, they return at once and
#                        are scored SKIP
#
# Writes target/compat/rskafka-results.txt ("PASS|FAIL|SKIP <secs>s <binary>::<test> [reason]"
# per test, then totals), per-test logs under target/compat/rskafka-run/logs/.
# Exit status: 0 when every allowlisted test passed, 1 on a regression, 2 on a set-up failure.
set -uo pipefail

cd "$(dirname "$0")/../.."
ROOT=$(pwd)
SUITE=rskafka
COMPAT=$ROOT/target/compat
RUN_DIR=$COMPAT/$SUITE-run
RESULTS=$COMPAT/$SUITE-results.txt
ALLOW=$ROOT/tests/compat/$SUITE.allow
# shellcheck source=common.sh
. "$ROOT/tests/compat/common.sh"

RS_VERSION=0.6.0
RS_SHA256=849b87417a191e37e16b8893eba8928bbd10e1989e6b57c4f8531549eaa29bdc
RS_DIR=$COMPAT/rskafka-$RS_VERSION
export CARGO_TARGET_DIR=$COMPAT/rskafka-target
TEST_BINS="client consumer produce_consume producer"
TEST_TIMEOUT=${TEST_TIMEOUT:-60}
SELECTED="$*"

if [ -z "${RSKAFKA_TOOLCHAIN:-}" ]; then
    if rustup toolchain list 2>/dev/null | grep -q '^1\.85'; then RSKAFKA_TOOLCHAIN=1.85; else RSKAFKA_TOOLCHAIN=stable; fi
fi
export RUSTUP_TOOLCHAIN=$RSKAFKA_TOOLCHAIN   # overrides the crate's rust-toolchain.toml (1.85)

# ------------------------------------------------------------------ prepare (cached)
prepare() {
    mkdir -p "$COMPAT/dl"
    local crate="$COMPAT/dl/rskafka-$RS_VERSION.crate"
    if [ ! -f "$crate" ] || ! echo "$RS_SHA256  $crate" | sha256sum -c --quiet 2>/dev/null; then
        log "downloading rskafka $RS_VERSION from static.crates.io"
        curl -fsSL -m 120 -o "$crate.part" "https://static.crates.io/crates/rskafka/rskafka-$RS_VERSION.crate" || return 1
        echo "$RS_SHA256  $crate.part" | sha256sum -c --quiet || { log "checksum mismatch"; return 1; }
        mv "$crate.part" "$crate"
    fi
    if [ "$(cat "$RS_DIR/.compat-ready" 2>/dev/null)" != "$RUSTUP_TOOLCHAIN" ]; then
        rm -rf "$RS_DIR"
        tar -xzf "$crate" -C "$COMPAT" || return 1
        if [ "$RUSTUP_TOOLCHAIN" != 1.85 ]; then
            # The crate's Cargo.lock pins rsasl 2.2.0, which newer compilers reject
            # (rust-lang/rust#141402, "raw pointer casts of trait objects cannot extend
            # lifetimes"); 2.2.1 is the same API with that fixed. Only the lock file changes.
            log "Cargo.lock: rsasl 2.2.0 -> 2.2.1 (2.2.0 does not build on $RUSTUP_TOOLCHAIN)"
            (cd "$RS_DIR" && cargo update --quiet -p rsasl --precise 2.2.1) || return 1
        fi
        echo "$RUSTUP_TOOLCHAIN" > "$RS_DIR/.compat-ready"
    fi
    local args=() b
    for b in $TEST_BINS; do args+=(--test "$b"); done
    log "building rskafka's tests (toolchain $RUSTUP_TOOLCHAIN, target dir $CARGO_TARGET_DIR)"
    (cd "$RS_DIR" && cargo test --locked --features full "${args[@]}" --no-run \
        --message-format=json-render-diagnostics) > "$RUN_DIR/build.json" 2> "$RUN_DIR/build.log" \
        || { tail -n 30 "$RUN_DIR/build.log" >&2; return 1; }
    jq -r 'select(.reason == "compiler-artifact" and .executable != null and (.target.kind | index("test")))
           | "\(.target.name) \(.executable)"' "$RUN_DIR/build.json" > "$RUN_DIR/binaries.txt"
}

mkdir -p "$RUN_DIR"
if ! prepare; then log "preparing rskafka failed"; exit 2; fi

# ------------------------------------------------------------------ collect
LOGS=$RUN_DIR/logs
rm -rf "$LOGS"; mkdir -p "$LOGS"
declare -A BIN_OF=() IGNORED=()
IDS=()
ALL=0
while read -r bname exe; do
    while read -r t; do
        ALL=$((ALL + 1))
        id="$bname::$t"
        if [ -n "$SELECTED" ]; then
            keep=0
            for s in $SELECTED; do case "$id" in *"$s"*) keep=1; break;; esac; done
            [ $keep = 1 ] || continue
        fi
        IDS+=("$id"); BIN_OF[$id]=$exe
    done < <("$exe" --list --format terse 2>/dev/null | sed -n 's/: test$//p')
    while read -r t; do IGNORED["$bname::$t"]=1; done < <("$exe" --list --ignored --format terse 2>/dev/null | sed -n 's/: test$//p')
done < "$RUN_DIR/binaries.txt"
if [ "$ALL" -eq 0 ]; then log "no tests found"; exit 2; fi
log "${#IDS[@]} of $ALL tests selected (${TEST_TIMEOUT}s per test)"

# ------------------------------------------------------------------ broker
trap 'stop_broker' EXIT
trap 'exit 130' INT TERM
start_broker || exit 2
export TEST_INTEGRATION=1 TEST_BROKER_IMPL=kafka KAFKA_CONNECT="$BROKER_HOST:$BROKER_PORT"

# ------------------------------------------------------------------ run
START=$(date +%s)
: > "$RESULTS.tmp"
npass=0; nfail=0; nskip=0
for id in "${IDS[@]}"; do
    exe=${BIN_OF[$id]}
    name=${id#*::}
    safe=$(printf '%s' "$id" | tr -c 'A-Za-z0-9_.-' '_')
    out="$LOGS/$safe.log"
    reason=""
    if [ -n "${IGNORED[$id]:-}" ]; then
        st=SKIP; secs=0.0; reason="#[ignore] in the suite"
    else
        mark=$(broker_log_mark)
        t0=$(date +%s.%N)
        (cd "$RS_DIR" && timeout -k 5 "$TEST_TIMEOUT" "$exe" --exact "$name" --nocapture --test-threads=1) > "$out" 2>&1
        rc=$?
        t1=$(date +%s.%N)
        secs=$(printf '%.1f' "$(echo "$t1 - $t0" | bc)")
        broker_log_since "$mark" "$LOGS/$safe.broker.log"
        if grep -qE '^test result: ok\. 1 passed' "$out"; then
            st=PASS
            # The suite "skips" by printing a line and returning, which libtest reports as ok.
            skipmsg=$(grep -m 1 -oE '(skipping|Skipping) .*' "$out")
            if [ -n "$skipmsg" ]; then
                st=SKIP; reason="returned early: $skipmsg"
            elif [ -z "${TEST_JAVA_INTEROPT:-}" ] && [[ $name == *java* ]]; then
                st=SKIP; reason="returned early: Java interop off (TEST_JAVA_INTEROPT unset; needs kafka-clients jars from Maven Central)"
            fi
        elif grep -qE '^test result: .* 1 failed' "$out"; then
            st=FAIL
            # "thread 'x' panicked at FILE:LINE:COL:" then the message on the next line.
            reason=$(grep -m 1 -A 1 "panicked at" "$out" | sed -E "s/^.*panicked at //" | tr '\n' ' ')
        elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
            st=FAIL; reason="timeout: killed after ${TEST_TIMEOUT}s"
        else
            st=FAIL; reason="no test result (exit $rc)"
        fi
        if ! broker_alive; then
            reason="$reason [BROKER DIED during this test; see $LOGS/$safe.broker.log]"
            st=FAIL
        fi
    fi
    reason=$(echo "$reason" | cut -c1-300)
    case $st in PASS) npass=$((npass+1));; FAIL) nfail=$((nfail+1));; SKIP) nskip=$((nskip+1));; esac
    line=$(printf '%-4s %6ss %s' "$st" "$secs" "$id")
    [ -n "$reason" ] && line="$line  # $reason"
    echo "$line" | tee -a "$RESULTS.tmp"
    if ! broker_alive; then
        log "the broker died; restarting it for the remaining tests"
        cp "$BROKER_LOG" "$RUN_DIR/broker.died.$safe.log" 2>/dev/null
        stop_broker
        start_broker || exit 2
        export KAFKA_CONNECT="$BROKER_HOST:$BROKER_PORT"
    fi
done
END=$(date +%s)
total=${#IDS[@]}
{
    cat "$RESULTS.tmp"
    echo "# rskafka $RS_VERSION tests/ (features full, toolchain $RUSTUP_TOOLCHAIN) vs corestream: $BROKER_BIN_INFO; $(date '+%F %T')"
    echo "# total: $total  passed: $npass  failed: $nfail  skipped: $nskip  wall: $((END - START))s"
    echo "# (Apache Kafka 3.7 in the same set-up: 59 ok (early-return skips count as ok there), 1 failed, 1 ignored)"
} > "$RESULTS"
rm -f "$RESULTS.tmp"
echo "total: $total  passed: $npass  failed: $nfail  skipped: $nskip  wall: $((END - START))s"
echo "results: $RESULTS   logs: $LOGS"
if check_allowlist "$RESULTS" "$ALLOW"; then exit 0; else exit 1; fi
