#!/usr/bin/env bash
# The second command of the README, and exactly what CI runs: format and lint checks, then every
# test (unit and integration: real git, real pytest from ./.venv, a real HTTP stand-in).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-python.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
IMPROVE_TEST_PYTHON="$PWD/.venv/bin/python" cargo test --locked
