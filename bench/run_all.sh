#!/usr/bin/env bash
# Run the three benches with their default sizes and print their figures.
# Usage: bash bench/run_all.sh   (from anywhere; uses /work/.venv if no venv is active)
# PostgreSQL: $BRIDGE_BENCH_DATABASE_URL, else postgresql+psycopg://postgres@127.0.0.1:5432/test
# (a scratch bench_<random> database is created there and dropped).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -z "${VIRTUAL_ENV:-}" && -f "${here}/../.venv/bin/activate" ]]; then
    # shellcheck disable=SC1091
    . "${here}/../.venv/bin/activate"
fi

status=0
for bench in store_sqlite store_postgres http_api; do
    echo "################ bench/${bench}.py"
    start=$SECONDS
    if ! timeout 300 python "${here}/${bench}.py" "$@"; then
        echo "bench/${bench}.py failed"
        status=1
    fi
    echo "(bench/${bench}.py took $((SECONDS - start)) s)"
    echo
done
echo "################ bench/forward_lago.py"
if ! timeout 300 python "${here}/forward_lago.py"; then
    echo "bench/forward_lago.py failed"
    status=1
fi
echo "################ bench/machines.py"
if ! timeout 300 python "${here}/machines.py"; then
    echo "bench/machines.py failed"
    status=1
fi
exit "$status"
