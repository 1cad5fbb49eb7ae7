#!/usr/bin/env bash
# The main job: set everything up, then run `ember train` (arguments are passed through).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh train
exec .venv/bin/ember train "$@"
