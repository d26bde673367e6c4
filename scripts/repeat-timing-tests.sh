#!/usr/bin/env bash
# Run the tests that act on a live process (kills, signals, take-over, retry, locks, the extraction
# worker, an application writing beside a run) many times in a row, optionally beside CPU hogs,
# to show they do not depend on the machine's speed. Not part of CI.
#
#   scripts/repeat-timing-tests.sh              # 20 rounds on an otherwise idle machine
#   scripts/repeat-timing-tests.sh 20 4         # 20 rounds beside 4 busy processes
#
# The busy processes are stress-ng's CPU workers when stress-ng is installed, else plain Python
# loops. Each round gets a fresh CRASH_SEED (printed by the tests that draw from it); a failing
# round's output is kept in $REPEAT_LOGS (default /tmp/backfill-repeat). The last line says how
# many rounds passed.
set -uo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
rounds="${1:-20}"
hogs="${2:-0}"
logs="${REPEAT_LOGS:-/tmp/backfill-repeat}"
pytest="${PYTEST:-$repo/.venv/bin/pytest}"
export BACKFILL_TEST_POSTGRES_URL="${BACKFILL_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}"
tests=(tests/crash tests/e2e/test_e2e_interrupt.py tests/e2e/test_e2e_worker.py tests/e2e/test_e2e_as_found.py
       tests/e2e/test_e2e_busy_application.py
       tests/e2e/test_e2e_locks.py)
mkdir -p "$logs"

pids=()
stop_hogs() { ((${#pids[@]})) && kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; }
trap stop_hogs EXIT
if ((hogs > 0)); then
    if command -v stress-ng >/dev/null; then
        stress-ng --cpu "$hogs" --quiet & pids+=($!)
    else
        for _ in $(seq "$hogs"); do python3 -c 'while True: pass' & pids+=($!); done
    fi
fi

cd "$repo"
passed=0
failed=0
for round in $(seq "$rounds"); do
    start=$(date +%s)
    if "$pytest" -q -p no:cacheprovider "${tests[@]}" >"$logs/round-$round.txt" 2>&1; then
        passed=$((passed + 1)); verdict=passed; rm -f "$logs/round-$round.txt"
    else
        failed=$((failed + 1)); verdict="FAILED (see $logs/round-$round.txt)"
    fi
    echo "round $round/$rounds ($hogs busy processes): $verdict in $(($(date +%s) - start)) s"
done
echo "rounds: $passed passed, $failed failed"
((failed == 0))
