#!/usr/bin/env bash
# Set up Ember on a fresh Debian/Ubuntu machine with Python 3.11: the Debian packages named in
# DESIGN.md, a virtual environment in .venv, and Ember installed into it (editable) with the
# extras given as arguments (e.g. `train`, `test`). Safe to run again: each step is skipped when
# already done.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${1:-train}"
# python3-dev: the headers the small-tensor ufuncs (backends/ckernels/ufuncs.c) build against; without
# them Ember keeps its NumPy forms.
debs=(graphviz dataset-fashion-mnist bible-kjv python3-dev)

missing=()
for p in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "setup: installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$python" -m venv .venv
fi

# Reinstall only when the project metadata or the requested extras changed.
stamp=".venv/.ember-installed-$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing ember[$extras] into .venv"
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e ".[$extras]"
    touch "$stamp"
fi
