#!/usr/bin/env bash
# Creates ./.venv with pytest and coverage (what improve runs the tests with) and ruff (the lint
# of python/), each once.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! .venv/bin/python -c "import pytest, coverage" 2>/dev/null; then
  python3 -m venv .venv
  # Pinned: the tests snapshot coverage figures, which a new coverage.py may compute differently.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "pytest==9.2.0" "coverage==7.17.3"
fi
if ! .venv/bin/ruff --version >/dev/null 2>&1; then
  # Pinned: a new ruff may find new things.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "ruff==0.17.6"
fi
