#!/usr/bin/env bash
# The test suite: set everything up (with PyTorch CPU as the test oracle), then run pytest.
# Arguments go to pytest; by default the `slow` tests are left out (run them with `-m slow`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "test,train"
.venv/bin/python -m ruff check ember tests bench
exec .venv/bin/python -m pytest "$@"
