#!/usr/bin/env bash
# The compatibility run: other clients' own test suites against a fresh corestream,
# one suite after another, each test in its own process and scored against its
# allowlist (tests/compat/*.allow). See tests/compat/FINDINGS.md for what does not
# pass yet and why.
#
#   tests/compat/run.sh [librdkafka] [kafka_python] [rskafka]   # default: all three
#
# Exit status: 0 when every allowlisted test of every suite passed; 1 on a
# regression; 2 when a suite could not be set up. Newly passing tests are
# printed by each suite ("newly passing: ...") so they can be added to its list.
# Results: target/compat/<suite>-results.txt.
set -uo pipefail
cd "$(dirname "$0")/../.."

suites=("$@")
[ ${#suites[@]} -eq 0 ] && suites=(librdkafka kafka_python rskafka)

# One release build for all suites (each would otherwise build it when missing).
cargo build --release --quiet || exit 2

status=0
summary=()
for s in "${suites[@]}"; do
    started=$(date +%s)
    printf '==> compat: %s\n' "$s" >&2
    "tests/compat/$s.sh"
    rc=$?
    took=$(( $(date +%s) - started ))
    total=$(grep -E '^# total' "target/compat/$s-results.txt" 2>/dev/null | tail -n 3 | tr '\n' ' ')
    summary+=("$s: exit $rc in ${took}s ${total}")
    if [ "$rc" -gt "$status" ]; then status=$rc; fi
done
printf '==> compat summary\n' >&2
printf '    %s\n' "${summary[@]}" >&2
exit "$status"
