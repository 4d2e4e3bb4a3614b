#!/usr/bin/env bash
# librdkafka's own test suite (tests/ of the librdkafka that rdkafka-sys vendors),
# run test by test against corestream, with a score and an allowlist.
#
#   tests/compat/librdkafka.sh
#
# What it does:
#   1. builds librdkafka and its test-runner (./configure && make) in a copy of the
#      rdkafka-sys sources under target/compat/librdkafka-VERSION/ (cached: a rerun
#      skips the build);
#   2. starts a fresh corestream (target/release/corestream, one per pass, data under
#      target/compat/librdkafka-run/) unless BROKER=host:port is given;
#   3. runs each test number in its own process, `TESTS=NNNN test-runner -p1 -Q -E -L`
#      with TEST_KAFKA_VERSION=3.7.0, under a time limit, in up to three passes:
#        classic     the target list, default settings;
#        consumer    the target tests that use a consumer group, with
#                    TEST_CONSUMER_GROUP_PROTOCOL=consumer (KIP-848);
#        idempotent  the target list (less the mock-cluster tests 0139/0150) with the
#                    runner's -P (enable.idempotence=true for every client);
#   4. prints one line per test (PASS/FAIL/SKIP, seconds, reason), totals per pass, and
#      writes target/compat/librdkafka-results.txt; the per-test output and the broker
#      log lines written during that test are kept in target/compat/librdkafka-logs/.
#
# Exit status: 1 when a test listed in tests/compat/librdkafka.allow for that pass did
# not pass (a regression), 2 for a harness/setup error, else 0. Tests that pass but are
# not in the allowlist are printed as "newly passing: ..." (add them to the list).
#
# Environment:
#   BROKER=host:port    use this broker instead of starting corestream (e.g. Apache Kafka
#                       for comparison; no broker log slices then)
#   TESTS="0001 0002"   test numbers to run, in every pass (default: the 78-test target list
#                       below; the consumer pass then takes only GROUP_TESTS, the idempotent
#                       pass all but MOCK_TESTS)
#   PASSES="classic consumer idempotent"   which passes to run
#   TEST_TIMEOUT=N      default time limit per test process in seconds (default 300;
#                       some tests have their own, see LIMIT below)
#   TIMEOUT_MULTIPLIER  the runner's test.timeout.multiplier (default: the runner's 1.0)
#   ALLOW=FILE          allowlist (default tests/compat/librdkafka.allow)
#   RESULTS=FILE        results file (default target/compat/librdkafka-results.txt)
#   KEEP_LOGS_OF_PASSING=1   keep logs of passing tests too (default: only non-passing)
#   FULL=1              run without -Q (every subtest, more data; much slower, not what the
#                       allowlist and the Kafka anchor were measured with)
#   RETRIES=0           do not retry a failing allowlisted test (default: one retry)
#   BROKER_RUST_LOG     the broker's RUST_LOG (default info); BROKER_EXTRA_ARGS: more `serve` options
#   NO_BUILD=1          test target/release/corestream as it is (default: cargo build --release
#                       first, a no-op when it is up to date)
set -uo pipefail

cd "$(dirname "$0")/../.."
ROOT=$(pwd)
COMPAT=$ROOT/target/compat
ALLOW=${ALLOW:-$ROOT/tests/compat/librdkafka.allow}
RESULTS=${RESULTS:-$COMPAT/librdkafka-results.txt}
LOGS=$COMPAT/librdkafka-logs
RUNDIR=$COMPAT/librdkafka-run
PASSES=${PASSES:-classic consumer idempotent}
TEST_TIMEOUT=${TEST_TIMEOUT:-300}
QUICK=-Q MODE="quick mode (-Q)"
[ "${FULL:-0}" = 1 ] && QUICK="" MODE="full mode (no -Q)"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'librdkafka.sh: %s\n' "$*" >&2; exit 2; }

# ---------------------------------------------------------------- test lists
# The tests that pass against Apache Kafka 3.7 in the same set-up
# (/work/shared/compat/kafka-3.7-anchor.md): the bar.
TARGET="0001 0002 0003 0005 0007 0008 0011 0012 0013 0014 0015 0016 0017 0018 0019 0020 0021
0022 0026 0029 0030 0031 0033 0034 0035 0036 0038 0039 0040 0041 0042 0044 0045 0048 0050 0051
0053 0054 0055 0056 0057 0059 0060 0061 0063 0064 0065 0067 0069 0070 0073 0083 0084 0085 0086
0089 0090 0091 0092 0093 0099 0102 0110 0112 0113 0114 0118 0122 0123 0125 0127 0129 0130 0132
0137 0139 0140 0150"

# The target tests whose consumers subscribe (join a group) or commit through the
# group coordinator against the real broker: the ones TEST_CONSUMER_GROUP_PROTOCOL=consumer
# changes (0139/0150 use the built-in mock cluster and are left out).
GROUP_TESTS="0018 0019 0020 0022 0026 0029 0030 0033 0040 0042 0045 0050 0056 0060 0064 0069
0083 0084 0089 0091 0093 0099 0102 0113 0118 0122 0130 0132 0137 0140"

# Target tests that only talk to librdkafka's built-in mock cluster (they pass whatever
# the broker does): run in the classic pass only (0139 alone takes ~90 s).
MOCK_TESTS="0139 0150"

# Per-test time limits (seconds) where the default does not fit: the runner's own
# timeouts end most hangs earlier; these bound the rest.
declare -A LIMIT=(
    [0045]=240 [0089]=240 [0091]=240 [0102]=240 [0113]=420
)

# One run at a time per tree: runs share the build, the run directory and the logs.
mkdir -p "$COMPAT"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$COMPAT/.librdkafka.lock"
    flock -n 9 || die "another tests/compat/librdkafka.sh is running in this tree"
fi

# ---------------------------------------------------------------- sources + build
RDKAFKA_SYS=$(awk '/^name = "rdkafka-sys"/{getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)
[ -n "$RDKAFKA_SYS" ] || die "rdkafka-sys not found in Cargo.lock"
LIBRDKAFKA_VERSION=${RDKAFKA_SYS#*+}
find_src() {
    ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"rdkafka-sys-$RDKAFKA_SYS"/librdkafka 2>/dev/null | head -1
}
SRC=$(find_src)
if [ -z "$SRC" ] || [ ! -f "$SRC/tests/test.c" ]; then
    log "fetching crate sources (cargo fetch)"
    cargo fetch --quiet || die "cargo fetch failed"
    SRC=$(find_src)
fi
[ -n "$SRC" ] && [ -f "$SRC/tests/test.c" ] || die "librdkafka sources of rdkafka-sys $RDKAFKA_SYS not found"

BUILD=$COMPAT/librdkafka-$LIBRDKAFKA_VERSION
# No TLS/SASL/HTTP: the suite runs over PLAINTEXT on loopback. zstd is used when its
# headers are there (libzstd-dev), else 0017 just tests fewer codecs; RapidJSON
# (rapidjson-dev, headers only) is needed by 0053 and 0110, which skip without it.
CONFIGURE_ARGS="--no-download --disable-ssl --disable-gssapi --disable-curl --disable-lz4-ext"
have_h() { [ -e "/usr/include/$1" ] && echo y || echo n; }
STAMP="$RDKAFKA_SYS $CONFIGURE_ARGS zstd=$(have_h zstd.h) rapidjson=$(have_h rapidjson/schema.h)"
RUNNER=$BUILD/tests/test-runner
if [ -x "$RUNNER" ] && [ "$(cat "$BUILD/.corestream-build" 2>/dev/null)" = "$STAMP" ]; then
    log "test-runner: cached ($RUNNER)"
else
    log "building librdkafka $LIBRDKAFKA_VERSION and its test-runner in $BUILD (a few minutes)"
    rm -rf "$BUILD"
    mkdir -p "$COMPAT"
    cp -a "$SRC" "$BUILD" || die "copy of $SRC failed"
    chmod -R u+w "$BUILD"
    JOBS=$(nproc 2>/dev/null || echo 2)
    # (mklove loads any ./configure.* file as a module: keep logs out of the tree.)
    if ! (cd "$BUILD" && ./configure $CONFIGURE_ARGS >"$COMPAT/librdkafka-build.log" 2>&1 &&
          make -j"$JOBS" libs >>"$COMPAT/librdkafka-build.log" 2>&1 &&
          make -C tests -j"$JOBS" build >>"$COMPAT/librdkafka-build.log" 2>&1); then
        tail -30 "$COMPAT/librdkafka-build.log" >&2
        die "build failed, see $COMPAT/librdkafka-build.log"
    fi
    echo "$STAMP" >"$BUILD/.corestream-build"
fi
export LD_LIBRARY_PATH=$BUILD/src:$BUILD/src-cpp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

# ---------------------------------------------------------------- broker
BROKER_PID=""
BROKER_LOG=""
BROKER_ADDR=${BROKER:-}
OWN_BROKER=0
[ -z "$BROKER_ADDR" ] && OWN_BROKER=1
CORESTREAM=$ROOT/target/release/corestream

port_open() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
port_taken() { # something accepts or listens there (the broker binds with SO_REUSEPORT: two
               # brokers on one port would silently share connections)
    port_open "$1" && return 0
    command -v ss >/dev/null 2>&1 && ss -Htln "sport = :${1##*:}" 2>/dev/null | grep -q .
}

stop_broker() {
    if [ -n "$BROKER_PID" ]; then
        kill -TERM "$BROKER_PID" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$BROKER_PID" 2>/dev/null
        wait "$BROKER_PID" 2>/dev/null
        BROKER_PID=""
    fi
}

start_broker() { # $1: pass name
    local port
    # (below the ephemeral range, so no test binding port 0 can be handed it meanwhile)
    for port in $(seq 19392 19491); do port_taken "127.0.0.1:$port" || break; done
    BROKER_ADDR=127.0.0.1:$port
    local data=$RUNDIR/$1-data
    rm -rf "$data"
    mkdir -p "$data"
    BROKER_LOG=$RUNDIR/$1-broker.log
    : >"$BROKER_LOG"
    NO_COLOR=1 RUST_LOG=${BROKER_RUST_LOG:-info} setsid "$BROKER_BIN" serve \
        --listen "$BROKER_ADDR" --data-dir "$data" --admin none \
        --set num.partitions=4 --set group.initial.rebalance.delay.ms=0 \
        --set auto.create.topics.enable=true ${BROKER_EXTRA_ARGS:-} >>"$BROKER_LOG" 2>&1 9>&- &
    BROKER_PID=$!
    for _ in $(seq 150); do
        port_open "$BROKER_ADDR" && return 0
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.1
    done
    tail -20 "$BROKER_LOG" >&2
    die "corestream did not start on $BROKER_ADDR (log: $BROKER_LOG)"
}

if [ "$OWN_BROKER" = 1 ]; then
    # The broker under test is the current source's release build (a no-op when it is
    # up to date); NO_BUILD=1 takes target/release/corestream as it is.
    if [ "${NO_BUILD:-0}" != 1 ] || [ ! -x "$CORESTREAM" ]; then
        log "cargo build --release"
        cargo build --release --quiet || die "cargo build --release failed"
    fi
    # glommio locks memory for its io_uring rings.
    ulimit -l unlimited 2>/dev/null || ulimit -l "$(ulimit -H -l)" 2>/dev/null || true
    ulimit -n 65536 2>/dev/null || true
    # A private copy: a rebuild of target/release during the run (other work goes on in
    # this tree) must not change the broker under test between passes.
    mkdir -p "$RUNDIR"
    BROKER_BIN=$RUNDIR/corestream-under-test
    cp "$CORESTREAM" "$BROKER_BIN.tmp" && mv "$BROKER_BIN.tmp" "$BROKER_BIN" || die "cannot copy $CORESTREAM"
    BROKER_INFO="$CORESTREAM (built $(date -r "$CORESTREAM" '+%F %T'), sha256 $(sha256sum "$BROKER_BIN" | cut -c1-12))"
    log "broker under test: $BROKER_INFO"
fi
trap 'stop_broker' EXIT
trap 'stop_broker; exit 130' INT TERM

# ---------------------------------------------------------------- allowlist
declare -A ALLOWED=()
if [ -f "$ALLOW" ]; then
    while read -r pass rest; do
        case "$pass" in ''|'#'*) continue ;; esac
        for t in $rest; do ALLOWED[$pass/$t]=1; done
    done <"$ALLOW"
fi

# ---------------------------------------------------------------- run
SEL=${TESTS:-$TARGET}
mkdir -p "$RUNDIR" "$LOGS"
RESULTS_TMP=$RESULTS.tmp
{
    echo "# librdkafka $LIBRDKAFKA_VERSION test suite, $MODE, against ${BROKER:-$BROKER_INFO}, $(date -u +%FT%TZ)"
    echo "# pass test result seconds reason"
} >"$RESULTS_TMP"

strip_ansi() { sed -e 's/\x1b\[[0-9;]*m//g' -e 's/\x1b(B//g'; }

declare -a REGRESSIONS=() NEWLY=()
SUMMARY=""
T_START=$(date +%s)

run_pass() { # $1: pass name; remaining: tests
    local pass=$1; shift
    local extra_args=() extra_env=()
    case "$pass" in
        classic) ;;
        consumer) extra_env=(TEST_CONSUMER_GROUP_PROTOCOL=consumer) ;;
        idempotent) extra_args=(-P) ;;
        *) die "unknown pass $pass" ;;
    esac
    # The runner reads files relative to librdkafka's tests/ (../src/statistics_schema.json),
    # so it runs there; test.conf is per pass.
    local work=$RUNDIR/$pass
    mkdir -p "$work" "$LOGS/$pass"
    [ "$OWN_BROKER" = 1 ] && start_broker "$pass"
    {
        echo "bootstrap.servers=$BROKER_ADDR"
        [ -n "${TIMEOUT_MULTIPLIER:-}" ] && echo "test.timeout.multiplier=$TIMEOUT_MULTIPLIER"
    } >"$work/test.conf"
    log "pass $pass: ${#} tests against $BROKER_ADDR"

    local n_pass=0 n_fail=0 n_skip=0 t0=$(date +%s)
    local t attempt
    for t in "$@"; do
      for attempt in 1 2; do
        local limit=${LIMIT[$t]:-$TEST_TIMEOUT}
        local out=$LOGS/$pass/$t.log
        local boff=0
        [ -n "$BROKER_LOG" ] && boff=$(stat -c %s "$BROKER_LOG")
        rm -f "$out" "$out.broker" "$LOGS/$pass/$t".broker-died.log
        local s=$(date +%s%N)
        # (the braces keep bash's "Aborted" job notices out of the output)
        { (cd "$BUILD/tests" && exec env -u CI "${extra_env[@]}" RDKAFKA_TEST_CONF="$work/test.conf" \
            TEST_KAFKA_VERSION=3.7.0 TESTS="$t" \
            timeout -k 10 "$limit" "$RUNNER" -p1 $QUICK -E -L "${extra_args[@]}") >"$out" 2>&1 </dev/null; } 2>/dev/null
        local rc=$?
        local secs
        secs=$(awk -v a="$s" -v b="$(date +%s%N)" 'BEGIN{printf "%.1f", (b-a)/1e9}')
        if [ -n "$BROKER_LOG" ]; then
            tail -c +"$((boff + 1))" "$BROKER_LOG" >"$out.broker"
        fi
        rm -f "$BUILD"/tests/stats_*.json

        # The runner's summary table: "| NNNN_name | STATE | 1.234s | reason".
        local rows states result reason
        rows=$(strip_ansi <"$out" | grep -E "^\| *${t}_" || true)
        states=$(awk -F'|' '{gsub(/ /, "", $3); print $3}' <<<"$rows" | sort -u | tr '\n' ' ')
        # The first failure report: '### Test "NAME (subtest)" failed at FILE:LINE:FUNC() at
        # DATE: ###' followed by the message.
        local first_failure
        first_failure=$(strip_ansi <"$out" | awk '
            /^### Test .* failed at / && !done {
                at = $0; sub(/.* failed at /, "", at); sub(/ at [A-Z][a-z][a-z] .*/, "", at)
                name = $0; sub(/^### Test "/, "", name); sub(/" failed at .*/, "", name)
                if (getline msg > 0) { print name " @ " at ": " msg } else { print name " @ " at }
                done = 1 }' | cut -c1-300)
        reason=""
        if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
            result=FAIL
            reason="timed out after ${limit}s (harness limit)"
            local last
            last=$(strip_ansi <"$out" | grep -E 'FAIL|Error|error' | tail -1 | cut -c1-200)
            [ -n "$last" ] && reason="$reason; last error: $last"
        elif grep -qE 'FAILED|RUNNING' <<<"$states"; then
            result=FAIL
            reason=$first_failure
            [ -z "$reason" ] && reason=$(awk -F'|' '$3 ~ /FAILED|RUNNING/ {print $5; exit}' <<<"$rows" | sed 's/^ *//' | cut -c1-300)
            [ -z "$reason" ] && reason="failed (rc $rc)"
        elif grep -q PASSED <<<"$states"; then
            if [ "$rc" = 0 ]; then
                result=PASS
                # -Q skips every SUB_TEST() that is not SUB_TEST_QUICK(): say so when the
                # test body took no time and never blocked (no voluntary context switch in
                # the runner's resource summary): it then checked nothing.
                local ctxsw
                ctxsw=$(strip_ansi <"$out" | awk -v t="$t" 'index($0, "[" t "_") == 1 && / Voluntary context switches/ {
                            n = $0; sub(/ Voluntary context switches.*/, "", n); sub(/.* /, "", n); sum += n }
                            END { print sum + 0 }')
                if [ -n "$QUICK" ] && [ "$ctxsw" = 0 ] &&
                   awk -F'|' '$3 ~ /PASSED/ { d = $4; gsub(/[ s]/, "", d); if (d + 0 >= 0.005) ran = 1 }
                              END { exit ran ? 1 : 0 }' <<<"$rows"; then
                    reason="(ran nothing: all its subtests are skipped in quick mode)"
                fi
            else
                result=FAIL
                reason="test passed but the runner exited with $rc: ${first_failure:-$(strip_ansi <"$out" | tail -3 | tr '\n' ' ' | cut -c1-200)}"
            fi
        elif grep -q SKIPPED <<<"$states"; then
            result=SKIP
            # (prefer the test's own reason to the -L/-E filtering of its local variants)
            reason=$(awk -F'|' '$3 ~ /SKIPPED/ && $5 !~ /negative test flags/ {print $5; exit}' <<<"$rows" | sed 's/^ *//' | cut -c1-200)
            [ -z "$reason" ] && reason=$(awk -F'|' '$3 ~ /SKIPPED/ {print $5; exit}' <<<"$rows" | sed 's/^ *//' | cut -c1-200)
        else
            result=FAIL
            if [ "$rc" -gt 128 ]; then
                reason="runner killed by signal $((rc - 128))"
            else
                reason="no result from the runner (rc $rc)"
            fi
            reason="$reason: ${first_failure:-$(strip_ansi <"$out" | grep -v '^$' | tail -2 | tr '\n' ' ' | cut -c1-200)}"
        fi
        reason=$(tr -s '\t\n' '  ' <<<"$reason")

        # Broker liveness: a dead broker is the broker's failure, and the next test
        # gets a fresh one.
        if [ "$OWN_BROKER" = 1 ] && ! kill -0 "$BROKER_PID" 2>/dev/null; then
            result=FAIL
            reason="BROKER EXITED during the test; $reason"
            wait "$BROKER_PID" 2>/dev/null
            BROKER_PID=""
            cp "$BROKER_LOG" "$LOGS/$pass/$t.broker-died.log"
            start_broker "$pass-after-$t"
            sed -i "s/^bootstrap.servers=.*/bootstrap.servers=$BROKER_ADDR/" "$work/test.conf"
        fi

        # An allowlisted test that fails gets one more try: the suite has timing-dependent
        # tests (e.g. 0118's two consumers racing to the first JoinGroup), and a
        # regression fails twice. The first failure is kept and reported.
        if [ "$attempt" = 1 ] && [ "$result" != PASS ] && [ -n "${ALLOWED[$pass/$t]:-}" ] &&
           [ "${RETRIES:-1}" -gt 0 ]; then
            printf '%-4s %-10s %s %6ss  %s  (retrying)\n' "$result" "$pass" "$t" "$secs" "$reason"
            mv "$out" "$out.try1" 2>/dev/null
            [ -f "$out.broker" ] && mv "$out.broker" "$out.try1.broker"
            continue
        fi
        if [ "$attempt" = 2 ] && [ "$result" = PASS ]; then
            reason="flaky: failed the first try (log: $(basename "$out").try1)"
        elif [ "$attempt" = 1 ]; then
            rm -f "$out.try1" "$out.try1.broker"
        fi
        case $result in
            PASS) n_pass=$((n_pass + 1))
                  [ "${KEEP_LOGS_OF_PASSING:-0}" = 1 ] || rm -f "$out" "$out.broker"
                  [ -n "${ALLOWED[$pass/$t]:-}" ] || NEWLY+=("$pass/$t") ;;
            FAIL) n_fail=$((n_fail + 1))
                  [ -n "${ALLOWED[$pass/$t]:-}" ] && REGRESSIONS+=("$pass/$t") ;;
            SKIP) n_skip=$((n_skip + 1))
                  [ -n "${ALLOWED[$pass/$t]:-}" ] && REGRESSIONS+=("$pass/$t") ;;
        esac
        printf '%-4s %-10s %s %6ss  %s\n' "$result" "$pass" "$t" "$secs" "$reason"
        printf '%s %s %s %s %s\n' "$pass" "$t" "$result" "$secs" "$reason" >>"$RESULTS_TMP"
        break
      done
    done
    if [ "$OWN_BROKER" = 1 ]; then
        stop_broker
        rm -rf "$RUNDIR"/"$pass"-data "$RUNDIR"/"$pass"-after-*-data
    fi
    local line
    line=$(printf '%-10s %3d passed, %3d failed, %3d skipped of %3d  (%ss)' "$pass" \
        "$n_pass" "$n_fail" "$n_skip" "$#" "$(($(date +%s) - t0))")
    SUMMARY+="$line"$'\n'
    echo "# total $line" >>"$RESULTS_TMP"
}

for pass in $PASSES; do
    sel=()
    for t in $SEL; do
        if [ -z "${TESTS:-}" ]; then
            if [ "$pass" = consumer ]; then
                [[ " $(echo $GROUP_TESTS) " == *" $t "* ]] || continue
            elif [ "$pass" != classic ]; then
                [[ " $MOCK_TESTS " == *" $t "* ]] && continue
            fi
        fi
        sel+=("$t")
    done
    [ ${#sel[@]} -gt 0 ] && run_pass "$pass" "${sel[@]}"
done

mv "$RESULTS_TMP" "$RESULTS"
echo
echo "librdkafka $LIBRDKAFKA_VERSION test suite, $(($(date +%s) - T_START))s:"
printf '%s' "$SUMMARY"
echo "results: $RESULTS; logs of non-passing tests: $LOGS/<pass>/<test>.log (+ .broker: the broker's log lines during the test)"
if [ ${#NEWLY[@]} -gt 0 ]; then
    echo "newly passing (not in $(basename "$ALLOW")): ${NEWLY[*]}"
fi
if [ ${#REGRESSIONS[@]} -gt 0 ]; then
    echo "REGRESSIONS (in $(basename "$ALLOW") but did not pass): ${REGRESSIONS[*]}"
    exit 1
fi
exit 0
