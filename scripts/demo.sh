#!/usr/bin/env bash
# The first command of the README: set up what a fresh machine lacks, then run `improve demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-python.sh
cargo build --release --quiet
exec target/release/improve demo --test-cmd "$PWD/.venv/bin/python -m pytest" "$@"
