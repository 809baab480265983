#!/usr/bin/env bash
# The test suite, as `make test` runs it (after deps, venv, workloads and lint).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 workloads/riskd/reference.py   # vectors.json is what the reference model produces
(cd workloads/riskd/go && go test ./...)
export PATH="$PWD/.venv/bin:$PATH"
set +e
.venv/bin/pytest -q -p no:cacheprovider --durations=15 "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi
exit $rc
