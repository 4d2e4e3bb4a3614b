# Shared by the compat suite runners (kafka_python.sh, rskafka.sh): sourced, not run.
#
# Provides: log, pick_port, start_broker / stop_broker (a fresh corestream on loopback),
# broker_alive, broker_log_mark / broker_log_since (per-test slices of the broker log),
# write_results / check_allowlist (score keeping against tests/compat/<suite>.allow).
#
# The caller sets ROOT (repository root), SUITE (short name) and RUN_DIR (its scratch dir).

log() { printf '==> %s\n' "$*" >&2; }

# A loopback port nobody listens on, outside the kernel's ephemeral range (so a
# concurrently running test that binds port 0 cannot be handed the same one: the broker
# binds with SO_REUSEPORT, two brokers on one port would silently share connections).
pick_port() {
    local port i
    for i in $(seq 1 200); do
        port=$(( 20000 + (RANDOM * 32768 + RANDOM) % 10000 ))
        if ! ss -Htln "sport = :$port" 2>/dev/null | grep -q .; then
            echo "$port"
            return 0
        fi
    done
    echo "no free port found" >&2
    return 1
}

wait_port() { # host port seconds
    local host=$1 port=$2 secs=$3 i
    for i in $(seq 1 $((secs * 10))); do
        if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

BROKER_PID=""
BROKER_BIN_INFO=""
BROKER_OWNED=0
BROKER_LOG=""

# start_broker: uses $BROKER (host:port) when set, else starts target/release/corestream
# (or $CORESTREAM_BIN) on a free port with a fresh data dir under $RUN_DIR.
# Sets BROKER_HOST, BROKER_PORT, BROKER_LOG.
start_broker() {
    if [ -n "${BROKER:-}" ]; then
        BROKER_HOST=${BROKER%:*}
        BROKER_PORT=${BROKER##*:}
        BROKER_OWNED=0
        BROKER_LOG=""
        BROKER_BIN_INFO="BROKER=$BROKER"
        wait_port "$BROKER_HOST" "$BROKER_PORT" 10 || { log "BROKER=$BROKER does not accept connections"; return 1; }
        log "using the running broker at $BROKER (no broker log slices)"
        return 0
    fi
    local src=${CORESTREAM_BIN:-$ROOT/target/release/corestream}
    if [ ! -x "$src" ]; then
        log "building $src (cargo build --release)"
        (cd "$ROOT" && cargo build --release) || return 1
    fi
    # Run a private copy, taken once per run: a rebuild of target/release during the run
    # (other work goes on in this tree) must not change the broker under test on a restart.
    local bin="$RUN_DIR/corestream-under-test"
    if [ -z "${BROKER_BIN_INFO:-}" ]; then
        cp "$src" "$bin.tmp" && mv "$bin.tmp" "$bin" || return 1
        BROKER_BIN_INFO="$src (modified $(date -r "$src" '+%F %T'), sha256 $(sha256sum "$bin" | cut -c1-12))"
        log "broker under test: $BROKER_BIN_INFO"
    fi
    # glommio locks memory for its io_uring rings: raise the limit if we may.
    ulimit -l unlimited 2>/dev/null || ulimit -l "$(ulimit -H -l)" 2>/dev/null || true
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -H -n)" 2>/dev/null || true
    BROKER_HOST=127.0.0.1
    BROKER_PORT=$(pick_port) || return 1
    local data="$RUN_DIR/data"
    rm -rf "$data"
    mkdir -p "$data"
    BROKER_LOG="$RUN_DIR/broker.log"
    : > "$BROKER_LOG"
    log "starting $bin serve on $BROKER_HOST:$BROKER_PORT (ulimit -l $(ulimit -l), log $BROKER_LOG)"
    # Kafka's names; the settings the suites assume (those of the Kafka 3.7 reference runs).
    NO_COLOR=1 RUST_LOG=${BROKER_RUST_LOG:-info} setsid "$bin" serve \
        --listen "$BROKER_HOST:$BROKER_PORT" --data-dir "$data" --admin none \
        --set num.partitions=4 \
        --set group.initial.rebalance.delay.ms=0 \
        --set auto.create.topics.enable=true \
        ${BROKER_EXTRA_ARGS:-} \
        >>"$BROKER_LOG" 2>&1 &
    BROKER_PID=$!
    BROKER_OWNED=1
    if ! wait_port "$BROKER_HOST" "$BROKER_PORT" 30; then
        log "broker did not start listening within 30 s; its log:"
        tail -n 50 "$BROKER_LOG" >&2
        stop_broker
        return 1
    fi
    log "broker pid $BROKER_PID ready"
}

broker_alive() {
    [ "$BROKER_OWNED" = 1 ] || return 0
    kill -0 "$BROKER_PID" 2>/dev/null
}

stop_broker() {
    [ "$BROKER_OWNED" = 1 ] && [ -n "$BROKER_PID" ] || return 0
    if kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -TERM "$BROKER_PID" 2>/dev/null || true
        local i
        for i in $(seq 1 100); do
            kill -0 "$BROKER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$BROKER_PID" 2>/dev/null; then
            log "broker $BROKER_PID did not stop within 10 s; killing it"
            kill -KILL "$BROKER_PID" 2>/dev/null || true
        fi
    fi
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=""
}

# Byte offset of the broker log now, and the part written since an offset.
broker_log_mark() { if [ -n "$BROKER_LOG" ] && [ -f "$BROKER_LOG" ]; then stat -c %s "$BROKER_LOG"; else echo 0; fi; }
broker_log_since() { # offset dest
    [ -n "$BROKER_LOG" ] && [ -f "$BROKER_LOG" ] || return 0
    tail -c +"$(( $1 + 1 ))" "$BROKER_LOG" > "$2"
}

# check_allowlist RESULTS ALLOW: prints regressions and newly passing tests; returns 1 on
# any regression (an allowlisted test that did not PASS, or is missing from the run).
check_allowlist() {
    local results=$1 allow=$2 rc=0 t st
    local -A status=()
    while read -r st _secs t _rest; do
        status[$t]=$st
    done < <(grep -E '^(PASS|FAIL|SKIP) ' "$results")
    local -A allowed=()
    if [ -f "$allow" ]; then
        while read -r t; do
            t=${t%%#*}; t=${t%"${t##*[![:space:]]}"}; t=${t#"${t%%[![:space:]]*}"}
            [ -n "$t" ] || continue
            allowed[$t]=1
            st=${status[$t]:-}
            if [ -z "$st" ]; then
                # Not run at all: only a regression when the whole suite ran.
                if [ -z "${SELECTED:-}" ]; then echo "REGRESSION (not run): $t"; rc=1; fi
            elif [ "$st" != PASS ]; then
                echo "REGRESSION ($st): $t"; rc=1
            fi
        done < "$allow"
    else
        log "no allowlist at $allow"
    fi
    local newly=()
    for t in "${!status[@]}"; do
        if [ "${status[$t]}" = PASS ] && [ -z "${allowed[$t]:-}" ]; then newly+=("$t"); fi
    done
    if [ ${#newly[@]} -gt 0 ]; then
        printf 'newly passing: %s\n' "$(printf '%s\n' "${newly[@]}" | sort | tr '\n' ' ')"
    fi
    return $rc
}
