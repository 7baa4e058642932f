#!/usr/bin/env bash
# The second command of the README, and exactly what CI runs: format and lint checks, then every
# test (unit and integration: real git, real pytest from ./.venv, a real HTTP stand-in).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-python.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
.venv/bin/python scripts/check_shape.py
# The Python side (python/: the plugin, the helper; scripts/check_shape.py): its lint, then its
# own tests.
.venv/bin/ruff check python/
.venv/bin/python -m pytest -q -p no:cacheprovider python/tests scripts/tests
# The distributed-run scripts and the GitHub workflows among the examples
# (examples/**/github-*.yml; scripts/tests/test_examples.py makes sure no workflow is named
# otherwise): actionlint, which also runs ShellCheck on their run: steps, and the workflow schema
# bundled with check-jsonschema. The Kubernetes manifest is checked by scripts/tests.
PATH=$PWD/.venv/bin:$PATH shellcheck scripts/slurm-*.sh examples/distributed/*.sbatch
shopt -s globstar nullglob
workflows=(examples/**/github-*.yml examples/**/github-*.yaml)
gitlab=(examples/**/gitlab-ci.yml)
shopt -u globstar nullglob
PATH=$PWD/.venv/bin:$PATH actionlint "${workflows[@]}"
.venv/bin/check-jsonschema --builtin-schema vendor.github-workflows "${workflows[@]}"
# The GitLab pipelines among the examples (examples/**/gitlab-ci.yml), against GitLab's CI schema
# bundled with check-jsonschema.
.venv/bin/check-jsonschema --builtin-schema vendor.gitlab-ci "${gitlab[@]}"
skip=()
# The --sandbox tests need bubblewrap able to make its namespaces; where it cannot, they are
# skipped, and this says so (CI installs bubblewrap, so they always run there).
if ! bwrap --ro-bind / / --unshare-net --unshare-pid --die-with-parent true >/dev/null 2>&1; then
  echo "SKIPPED: the --sandbox tests (suite::sandbox::sandboxed_*): bubblewrap is not installed or cannot sandbox here; \`apt-get install bubblewrap\` runs them"
  skip=(--skip suite::sandbox::sandboxed_)
fi
# The workflow tests run the CI workflows' own steps, which read JSON with jq (GitHub's runners
# have it); where it is missing they are skipped, and this says so (CI installs jq).
if ! command -v jq >/dev/null 2>&1; then
  echo "SKIPPED: the CI workflow tests (suite::ci_workflows): jq is not installed; \`apt-get install jq\` runs them"
  skip+=(--skip suite::ci_workflows)
fi
IMPROVE_TEST_PYTHON="$PWD/.venv/bin/python" cargo test --locked -- "${skip[@]}"
