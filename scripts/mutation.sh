#!/usr/bin/env bash
# Mutation testing of the batch loop and the writer (engine/loop.py, engine/writer.py), the
# planner (engine/planner.py), the change checks (changes.py) and validation (app/validation.py),
# with mutmut, against the fast in-process tests (tests/unit, tests/property). Not part of CI: a
# full run takes tens of minutes.
#
#   scripts/mutation.sh                 # every mutant of the five modules
#   scripts/mutation.sh 'backfill_core.engine.*'   # only some (mutmut's name patterns)
#
# Environment:
#   MUTATION_JOBS  mutants tested at once (default 1: leave a core to everything else)
#   MUTATION_DIR   scratch directory (default /tmp/backfill-mutation); kept between runs so
#                  that a second run only tests what changed
#   MUTATION_REF   a commit to test instead of the work tree (e.g. HEAD)
#   PYTHON         the interpreter with backfill[mutation] installed (default .venv/bin/python)
#
# The run works on a copy of the repository, never in the work tree. It ends with mutmut's
# list of the mutants that were not killed and the score (killed ÷ all tested).
# See docs/contributing.md for what the last run left and why.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
jobs="${MUTATION_JOBS:-1}"
work="${MUTATION_DIR:-/tmp/backfill-mutation}"

mutmut="$(dirname "$python")/mutmut"
if [[ ! -x "$mutmut" ]]; then
    echo "mutmut is not installed for $python: pip install -e '.[mutation]'" >&2
    exit 2
fi

# A fresh copy of the sources and tests; mutmut's own mutants/ directory (its cache) is kept.
mkdir -p "$work"
find "$work" -mindepth 1 -maxdepth 1 ! -name mutants -exec rm -rf {} +
if [[ -n "${MUTATION_REF:-}" ]]; then
    git -C "$repo" archive "$MUTATION_REF" | tar -x -C "$work"
else
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard \
        | tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -x -C "$work"
fi

cd "$work"
# The mutants are imported from $work/mutants/src; the PostgreSQL tests are left out (they
# skip without BACKFILL_TEST_POSTGRES_URL), so the run needs no server.
unset BACKFILL_TEST_POSTGRES_URL
status=0
"$mutmut" run --max-children "$jobs" "$@" || status=$?
"$mutmut" results || true
"$mutmut" export-cicd-stats >/dev/null 2>&1 || true
if [[ -f mutants/mutmut-cicd-stats.json ]]; then
    "$python" - <<'PY'
import json
s = json.load(open("mutants/mutmut-cicd-stats.json"))
tested = s["killed"] + s["survived"] + s["timeout"] + s["suspicious"]
print(f"mutants: {s['total']}, killed {s['killed']}, survived {s['survived']}, "
      f"timeout {s['timeout']}, suspicious {s['suspicious']}, no tests {s['no_tests']}, "
      f"skipped {s['skipped']}")
if tested:
    print(f"score: {100 * (s['killed'] + s['timeout']) / tested:.1f}% of the {tested} mutants tests reach")
PY
fi
exit "$status"
