#!/usr/bin/env bash
# CI: a fresh virtualenv, the README's set-up, the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
pip install -e '.[test]' && pytest
