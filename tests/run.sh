#!/usr/bin/env bash
# The one test command (see README): installs what the tests need, then runs
# every test. Works on a fresh Debian 12 machine as root; as a user without
# root/sudo it only checks that the requirements are already there.
#
# Environment:
#   CORESTREAM_PYTHON   python with kafka-python (default: a venv made under target/py-venv)
#   CORESTREAM_KCAT     kcat binary (default: kcat on PATH)
#   CARGO_TEST_ARGS     extra arguments for `cargo test` (e.g. "--release")
#   CORESTREAM_COMPAT   0: skip the compatibility suites (tests/compat/run.sh)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

log() { printf '==> %s\n' "$*" >&2; }

# ---------------------------------------------------------------- packages
# kcat: the kcat tests; python3-venv + pip: kafka-python; make/gcc/g++,
# pkg-config, zlib1g-dev: librdkafka's ./configure build inside rdkafka-sys
# (libz-sys links the system zlib when pkg-config finds it).
need_pkgs=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_cmd kcat || have_cmd kafkacat || need_pkgs+=(kcat)
have_cmd make || need_pkgs+=(make)
have_cmd cc || need_pkgs+=(gcc)
have_cmd c++ || need_pkgs+=(g++)
have_cmd pkg-config || need_pkgs+=(pkg-config)
[ -e /usr/include/zlib.h ] || need_pkgs+=(zlib1g-dev)
# libzstd-dev, rapidjson-dev (headers): the librdkafka test-runner that
# tests/compat/librdkafka.sh builds (zstd codec in 0017; statistics checks in 0053, 0110).
[ -e /usr/include/zstd.h ] || need_pkgs+=(libzstd-dev)
[ -e /usr/include/rapidjson/schema.h ] || need_pkgs+=(rapidjson-dev)
have_cmd python3 || need_pkgs+=(python3)
if ! /usr/bin/env python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    need_pkgs+=(python3-venv python3-pip)
fi

if [ ${#need_pkgs[@]} -gt 0 ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        if have_cmd sudo && sudo -n true 2>/dev/null; then SUDO="sudo -n"; fi
    fi
    if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
        log "installing: ${need_pkgs[*]}"
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get update -qq
        $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
    else
        log "missing packages (${need_pkgs[*]}) and no root/sudo to install them; the tests needing them will fail"
    fi
fi

# ---------------------------------------------------------------- kafka-python
KAFKA_PYTHON_VERSION=2.3.3
if [ -z "${CORESTREAM_PYTHON:-}" ]; then
    VENV="$ROOT/target/py-venv"
    if ! "$VENV/bin/python" -c "import kafka, sys; sys.exit(kafka.__version__ != '$KAFKA_PYTHON_VERSION')" >/dev/null 2>&1; then
        log "creating $VENV with kafka-python $KAFKA_PYTHON_VERSION"
        rm -rf "$VENV"
        mkdir -p "$ROOT/target"
        # Prefer the system interpreter (Debian's python3-venv), else whatever python3 is first on PATH.
        PY=python3
        if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then PY=/usr/bin/python3; fi
        "$PY" -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "kafka-python==$KAFKA_PYTHON_VERSION"
    fi
    export CORESTREAM_PYTHON="$VENV/bin/python"
fi
log "python for kafka-python: $CORESTREAM_PYTHON ($("$CORESTREAM_PYTHON" -c 'import kafka; print(kafka.__version__)' 2>/dev/null || echo 'kafka-python MISSING'))"

# ---------------------------------------------------------------- limits
# glommio locks memory for its io_uring rings; the broker raises the limit
# itself when it can, this helps when it cannot.
ulimit -l unlimited 2>/dev/null || ulimit -l "$(ulimit -H -l)" 2>/dev/null || true
log "ulimit -l: $(ulimit -l)"
ulimit -n 65536 2>/dev/null || true

# ---------------------------------------------------------------- tests
# Test binaries run one after another; inside each, at most 2 tests at a time
# (the machine has 2 cores and each test runs its own broker).
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
log "cargo test"
# (RUST_TEST_THREADS rather than `-- --test-threads`, which a non-libtest
# harness such as criterion's would reject.)
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-2}
# shellcheck disable=SC2086
cargo test --all-targets --no-fail-fast ${CARGO_TEST_ARGS:-}

# ---------------------------------------------------------------- compatibility
# Other clients' own test suites (librdkafka, kafka-python, rskafka), scored against
# tests/compat/*.allow; CORESTREAM_COMPAT=0 skips them (e.g. for a quick local run).
if [ "${CORESTREAM_COMPAT:-1}" != "0" ]; then
    log "compatibility suites (tests/compat/run.sh)"
    tests/compat/run.sh
fi
