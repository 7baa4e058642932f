#!/usr/bin/env bash
# Creates ./.venv with pytest and coverage (what improve runs the tests with), once.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! .venv/bin/python -c "import pytest, coverage" 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check pytest coverage
fi
