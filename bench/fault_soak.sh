#!/usr/bin/env bash
# The fault suite's long variants: the scenarios of tests/reliability/ with many more faults
# and longer outages than CI runs (each still ends with the same audit: nothing lost, nothing
# billed twice, counters equal to the ledger). Prints each scenario's figures at the end.
#
# Usage: bash bench/fault_soak.sh [ROUNDS [OUTAGE_S]]   (defaults 20 rounds, 120 s outages)
#   ROUNDS:  kill -9 rounds per scenario, PostgreSQL stops, scale-out load (x 60 changes)
#   OUTAGE_S: how long the billing platforms stay down (the 429 and timeout phases follow)
# PostgreSQL: $BRIDGE_TEST_DATABASE_URL, else postgresql+psycopg://postgres@127.0.0.1:5432/test
# (the scenario that restarts PostgreSQL runs a private server of its own). Takes about
# ROUNDS x 30 s + PHASE_S on a 2-core machine.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -z "${VIRTUAL_ENV:-}" && -f "${here}/../.venv/bin/activate" ]]; then
    # shellcheck disable=SC1091
    . "${here}/../.venv/bin/activate"
fi
export BRIDGE_FAULT_ROUNDS="${1:-20}"
export BRIDGE_FAULT_PHASE_S="${2:-120}"
export BRIDGE_TEST_DATABASE_URL="${BRIDGE_TEST_DATABASE_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test}"
echo "fault soak: ${BRIDGE_FAULT_ROUNDS} rounds, ${BRIDGE_FAULT_PHASE_S} s outages; load average $(cut -d' ' -f1-3 /proc/loadavg)"
cd "${here}/.."
exec python -m pytest tests/reliability -p no:randomly -q --durations=0
