#!/usr/bin/env bash
# Runs `improve` on real open-source projects, as a user would, and prints one Markdown row each.
#
# Each project is a PyPI sdist that ships its tests (or a local git checkout) laid out in a temp
# git repository of its own, as its upstream repository looks: everything committed, the files
# its build generates (a setuptools-scm / hatch-vcs `_version.py`) ignored by a .gitignore line
# as upstream does, on disk but not in the commit. Each has its own `.venv` with the project
# installed editable (`pip install -e .`), pytest, coverage and the test dependencies listed
# below. The project's own pytest gives the reference test count; then
#
#     improve --iterations 3 --llm-url http://127.0.0.1:PORT/v1 --model standin
#
# runs with no other flag against scripts/realworld_standin.py, which writes real tests by
# calling the project's code, and `improve status --json` / `improve log --json` say what it did.
# Then, in a worktree of the run branch, coverage.py measures what the user would (see
# user_coverage) and the row puts that total beside improve's coverage_now.
#
# Not part of any test command: it downloads from PyPI (the first time) and takes ~20 minutes.
#
#   scripts/realworld.sh                           # every project
#   REALWORLD_PROJECTS="six toolz" scripts/realworld.sh
#   REALWORLD_PROJECTS="/path/to/a/checkout" scripts/realworld.sh   # a local directory
#
# Environment: IMPROVE_BIN (default target/release/improve), REALWORLD_CACHE (default
# /work/realworld-cache: sdists, pristine trees, repos with their venvs, outputs),
# REALWORLD_ITERATIONS (3), REALWORLD_TIMEOUT (seconds for one improve run, 300),
# REALWORLD_PYTHON (python3), REALWORLD_LOCAL_DEPS (test dependencies of a local checkout).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BIN=${IMPROVE_BIN:-target/release/improve}
case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
CACHE=${REALWORLD_CACHE:-/work/realworld-cache}
ITERATIONS=${REALWORLD_ITERATIONS:-3}
RUN_TIMEOUT=${REALWORLD_TIMEOUT:-300}
PYTHON=${REALWORLD_PYTHON:-python3}
STANDIN="$HERE/realworld_standin.py"

# name | source | test dependencies | files the build generates, ignored as upstream does | layout
# source: pypi:NAME==VERSION, git:GIT_DIR@COMMIT, or dir:PATH. A layout starting "slow:" runs
# only when REALWORLD_PROJECTS names it. The git sources are public repositories whose sdists
# do not ship their tests (pymonet) or not in this layout (python-slugify's test.py): their
# GIT_DIR is a mirror of github.com/przemyslawjanpietrzak/pyMonet and github.com/un33k/python-slugify
# (any clone holding the commit will do); once extracted, the tree is cached under src/.
# Test dependencies are not pinned: out/<name>/freeze.txt records what each run had.
PROJECTS='
attrs|pypi:attrs==26.1.0|hypothesis pympler cloudpickle||src/ layout, two packages side by side (src/attr + src/attrs), hatch-vcs
toolz|pypi:toolz==1.2.0|||two packages side by side (toolz + tlz), tests inside the package (toolz/tests, toolz/sandbox/tests)
docstring_parser|pypi:docstring_parser==0.18.0|||tests inside the package (docstring_parser/tests)
python-dateutil|pypi:python-dateutil==2.8.2|pytest<9 hypothesis freezegun pytest-cov|dateutil/_version.py|tests inside the package (dateutil/test), setuptools-scm _version.py ignored
six|pypi:six==1.17.0|||single module (six.py), test file at the root (test_six.py)
jaraco.functools|pypi:jaraco.functools==4.6.0|jaraco.classes||PEP 420 namespace package (jaraco/functools, no jaraco/__init__.py), test file at the root, --import-mode importlib
jaraco.collections|pypi:jaraco.collections==5.2.1|||PEP 420 namespace package (jaraco/collections), tests/ plus doctests (--doctest-modules)
humanize|pypi:humanize==4.17.0|freezegun pytest-benchmark|src/humanize/_version.py|src/ layout, hatch-vcs _version.py ignored, testpaths = src + tests (doctests)
pymonet|git:/work/.mirror/przemyslawjanpietrzak+pyMonet/repo/.git@94610ee4f1c71aa5f50e0813539bf1a2ea279d70|hypothesis pytest-mock||helper package only the tests import (testers/ beside pymonet/ and tests/)
python-slugify|git:/work/.mirror/un33k+python-slugify/repo@7b6d5d96c1995e6dccb39a19a13ba78d7d0a3ee4|||testpaths names a single file (testpaths = ["test.py"])
boltons|pypi:boltons==26.2.0|||ordinary: many modules, tests/ with conftest.py, flit
pysnooper|pypi:pysnooper==1.2.3|||ordinary; helper packages inside tests/ (tests/mini_toolbox, tests/samples)
cachetools|pypi:cachetools==8.0.2|||ordinary src/ layout, tests/ (a package), setuptools
jsonpatch|pypi:jsonpatch==1.48|hypothesis simplejson||single module, tests.py at the root named by python_files (not test_*.py)
more-itertools|pypi:more-itertools==11.2.1|||slow: only when named; 765 tests + 21k subtests (45 s), coverage 99.7% already
markupsafe|pypi:markupsafe==3.0.4|||optional C extension (src/markupsafe/_speedups.c, built by pip here) with a pure-Python fallback (_native.py), src/ layout, filterwarnings = error, a test that patches sys.modules (test_ext_init)
simplejson|pypi:simplejson==4.3.0|||optional C extension (simplejson/_speedups.c) beside the modules, tests inside the package (simplejson/tests, unittest, own test runner module)
wrapt|pypi:wrapt==2.5.2|||optional C extension (src/wrapt/_wrappers.c, pure-Python fallback), src/ layout, tests in subfolders (tests/core, tests/mypy with *_t1.py data files), monkey-patching of sys.modules
asgiref|pypi:asgiref==3.13.0|pytest-asyncio||async tests (pytest-asyncio, @pytest.mark.asyncio), threads and event loops in the tests
python-dotenv|pypi:python-dotenv==1.2.4|click sh||src/ layout, tests that os.chdir (find_dotenv from the cwd) and patch sys.modules / builtins, tests imported as a package (from tests.test_lib import)
markdown|pypi:markdown==3.11.3|pyyaml||nested test packages (tests/test_syntax/{blocks,inline,extensions}/__init__.py), unittest TestCase classes, project name != import name (Markdown)
vine|pypi:vine==5.1.0|||tests folder t/ (t/unit, a package in a package), python_classes = test_*
iniconfig|pypi:iniconfig==2.3.1||src/iniconfig/_version.py|pytest 9 [tool.pytest] TOML table (ini_options.testpaths = "testing" as a dotted key), tests in testing/, src/ layout, setuptools-scm _version.py ignored
pluggy|pypi:pluggy==1.7.0|||tests in testing/ named by tox.ini [pytest] (testpaths = testing), src/ layout, filterwarnings = error, tracing tests (hook call tracer)
tabulate|pypi:tabulate==0.10.0|||tests in test/ (not tests), a helper module beside them (test/common.py), optional deps (numpy, pandas, wcwidth) skipped
fontmath|pypi:fontmath==0.10.0|fonttools|Lib/fontMath/_version.py|Lib/ (capital L) source root, import name fontMath (camel case), tests inside the package (Lib/fontMath/test), setuptools-scm _version.py ignored
typing_extensions|pypi:typing_extensions==4.16.0|||single module in src/ with its test module beside it (src/test_typing_extensions.py, no tests folder) and a helper module (_typed_dict_test_helper.py), flit
astunparse|pypi:astunparse==1.6.3|||lib/ layout (package_dir = {"": "lib"}, find_packages('lib')), tests/ a package with a shared helper module (tests/common.py), 2019 code on a newer Python
snoop|pypi:snoop==0.6.1|littleutils pytest-order||the code under test calls sys.settrace (as the coverage.py tracer does), the package replaces itself in sys.modules (a callable module), tests stub sys.modules entries, parametrization built from os.listdir (directory order, not sorted), helper packages inside tests/ (tests/samples)
pypng|pypi:pypng==0.20220715.0|||code/ source root (package_dir = code), single module png.py, test_png.py beside it in code/, scripts without .py in the same folder
'

log() { printf '[realworld %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

mkdir -p "$CACHE/sdists" "$CACHE/src" "$CACHE/repos" "$CACHE/out"
if [ ! -x "$BIN" ]; then
  echo "no improve binary at $BIN: build one (cargo build --release) or set IMPROVE_BIN" >&2
  exit 1
fi

# The cached sdist of NAME==VERSION (names compared as PyPI normalizes them), if any.
sdist_for() {
  local want f base
  want=$(printf '%s-%s' "${1%%==*}" "${1#*==}" | tr '[:upper:]' '[:lower:]' | sed 's/[-_.]\+/_/g')
  for f in "$CACHE"/sdists/*.tar.gz; do
    [ -e "$f" ] || continue
    base=$(basename "$f" .tar.gz | tr '[:upper:]' '[:lower:]' | sed 's/[-_.]\+/_/g')
    [ "$base" = "$want" ] && { printf '%s\n' "$f"; return; }
  done
}

# The pristine tree of a source, extracted once into the cache; prints its path.
pristine() {
  local name=$1 source=$2 dir
  case "$source" in
    pypi:*)
      local spec=${source#pypi:}
      dir="$CACHE/src/$name-${spec#*==}"
      if [ ! -d "$dir" ]; then
        local sdist
        sdist=$(sdist_for "$spec")
        if [ -z "$sdist" ]; then
          log "$name: pip download $spec"
          timeout 600 "$PYTHON" -m pip download -q --no-binary :all: --no-deps -d "$CACHE/sdists" "$spec" >&2 || return 1
          sdist=$(sdist_for "$spec")
          [ -n "$sdist" ] || return 1
        fi
        local tmp; tmp=$(mktemp -d "$CACHE/src/.x-XXXXXX")
        tar xzf "$sdist" --no-same-owner -C "$tmp" || return 1
        mv "$tmp"/* "$dir" && rmdir "$tmp"
      fi ;;
    git:*)
      local spec=${source#git:} gitdir rev
      gitdir=${spec%@*}; rev=${spec##*@}
      dir="$CACHE/src/$name-${rev:0:12}"
      if [ ! -d "$dir" ]; then
        [ -d "$gitdir" ] || { log "$name: no git checkout at $gitdir"; return 1; }
        mkdir -p "$dir.tmp" && git --git-dir="$gitdir" archive "$rev" | tar x --no-same-owner -C "$dir.tmp" || return 1
        mv "$dir.tmp" "$dir"
      fi ;;
    dir:*)
      dir=${source#dir:}
      [ -d "$dir" ] || return 1 ;;
  esac
  printf '%s\n' "$dir"
}

# Lays the project out as a fresh git repository in $repo (its .venv, if any, is kept).
make_repo() {
  local name=$1 tree=$2 repo=$3 ignored=$4 tag=$5
  mkdir -p "$repo"
  find "$repo" -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +
  (cd "$tree" && tar cf - --exclude=.git --exclude=.venv --exclude=.improve .) | (cd "$repo" && tar xf - --no-same-owner) || return 1
  # What only an sdist has: upstream repositories have no PKG-INFO or egg-info.
  rm -rf "$repo/PKG-INFO"
  find "$repo" -maxdepth 2 -name '*.egg-info' -type d -prune -exec rm -rf {} +
  (
    cd "$repo" || exit 1
    git init -q -b main . || exit 1
    # A developer's own ignores (not the project's): the venv and what tools leave behind.
    printf '%s\n' .venv/ __pycache__/ '*.py[cod]' '*.egg-info/' build/ dist/ .pytest_cache/ \
      .hypothesis/ '.coverage*' .eggs/ .benchmarks/ '*.so' '*.pyd' >>.git/info/exclude
    # The project's generated files, ignored by its .gitignore as upstream does (a line is
    # added only when the .gitignore the sdist ships does not already ignore it).
    local f
    for f in $ignored; do
      case "$(git check-ignore -v --no-index "$f" 2>/dev/null | cut -d: -f1)" in
        *.gitignore) ;;
        *) printf '%s\n' "$f" >>.gitignore ;;
      esac
    done
    git add -A &&
      git -c user.name=realworld -c user.email=realworld@localhost -c commit.gpgsign=false \
        commit -q -m "$name as published" &&
      # An upstream clone has its release tags, which setuptools-scm, hatch-vcs and
      # setuptools-git-versioning turn into the version (toolz's own suite checks it).
      { [ -z "$tag" ] || git tag "$tag"; }
  )
}

# The project's .venv: pytest, coverage, its test dependencies, itself editable.
make_venv() {
  local name=$1 repo=$2 deps=$3
  local stamp="$repo/.venv/.realworld-stamp" want
  want="$name|$deps|$("$PYTHON" -V 2>&1)"
  if [ ! -x "$repo/.venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    rm -rf "$repo/.venv"
    "$PYTHON" -m venv "$repo/.venv" || return 1
    log "$name: pip install pytest coverage $deps -e ."
    # shellcheck disable=SC2086 # the dependency list is words
    (cd "$repo" && timeout 900 .venv/bin/python -m pip install -q pytest coverage $deps -e . >&2) || return 1
    printf '%s' "$want" >"$stamp"
  else
    # The venv is cached, the checkout is new: the editable install (re)generates the ignored
    # version files as it would in a developer's clone.
    log "$name: pip install --no-deps -e . (cached venv)"
    (cd "$repo" && timeout 600 .venv/bin/python -m pip install -q --no-deps -e . >&2) || return 1
  fi
}

# Counts the tests of a JUnit XML file as pytest's summary does: one per testcase, skipped
# included; pytest 9 also counts unittest subtests in the suite's `tests`, shown apart.
junit_count() {
  "$PYTHON" - "$1" <<'EOF'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print("?"); sys.exit()
cases = root.findall(".//testcase")
kinds = [{child.tag for child in case} for case in cases]
bad = sum(1 for k in kinds if k & {"failure", "error"})
skipped = sum(1 for k in kinds if "skipped" in k)
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
extra = sum(int(s.get("tests", 0)) for s in suites) - len(cases)
print(f"{len(cases)}" + (f" ({bad} failing)" if bad else "") + (f" ({skipped} skipped)" if skipped else "")
      + (f" (+{extra} subtests)" if extra > 0 else ""))
EOF
}

# The coverage a user would measure on the run branch: a worktree of `improve/<run-id>`, the
# project's venv, and coverage.py over the packages improve saved (state.json settings.packages),
# passed as improve passes them (src/pytest/mod.rs, CoverageSpec::for_packages: folders as they
# are, a single-module file by its import name; the tests inside the packages omitted as
# project::tests_inside does; the import roots (the saved source_roots, then src and lib) first
# on PYTHONPATH, as improve puts them, since the venv's editable install points at the checkout,
# not at the worktree). The project's own coverage configuration applies, as it does to
# improve's. Writes user-coverage.json.
user_coverage() {
  local name=$1 repo=$2 out=$3 ignored=$4 branch packages source_roots wt
  branch=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("run_branch") or "")' "$out/state.json")
  packages=$("$PYTHON" -c '
import json, sys
s = json.load(open(sys.argv[1])).get("settings") or {}
print("\n".join(s.get("packages") or ([s["package"]] if s.get("package") else [])))' "$out/state.json")
  source_roots=$("$PYTHON" -c '
import json, sys
print("\n".join((json.load(open(sys.argv[1])).get("settings") or {}).get("source_roots") or []))' "$out/state.json")
  [ -n "$branch" ] || { echo "no run_branch in state.json" >"$out/user-coverage.err"; return; }
  wt=$(mktemp -d "${TMPDIR:-/tmp}/realworld-wt-XXXXXX")
  if ! git -C "$repo" worktree add -q --detach "$wt/tree" "$branch" >"$out/user-coverage.err" 2>&1; then
    rm -rf "$wt"; return
  fi
  # What the build left in the user's checkout, untracked, stays there when they check the
  # run branch out: the generated version files and compiled extensions (markupsafe's
  # _speedups.*.so) inside the packages. The same files in this worktree.
  local f
  while IFS= read -r f; do
    case "$f" in */__pycache__/*|*.pyc|*.egg-info/*|.venv/*|.improve/*) continue ;; esac
    mkdir -p "$(dirname "$wt/tree/$f")" && cp -p "$repo/$f" "$wt/tree/$f" &&
      echo "$f" >>"$out/user-coverage.copied"
  done < <(cd "$repo" && { printf '%s\n' $ignored; printf '%s\n' "$packages" |
    xargs -r git ls-files --others --; } | sort -u |
    while IFS= read -r f; do [ -n "$f" ] && [ -f "$f" ] && printf '%s\n' "$f"; done)
  local cov_args=() pythonpath="" line
  while IFS= read -r line; do
    case "$line" in
      PYTHONPATH=*) pythonpath=${line#PYTHONPATH=} ;;
      ?*) cov_args+=("$line") ;;
    esac
  done < <(cd "$wt/tree" && git ls-files | "$PYTHON" -c '
import sys
packages = [l for l in sys.argv[1].splitlines() if l]
tree = sys.argv[2]
files = sorted(l.strip() for l in sys.stdin if l.strip())
# The source roots improve saved (setuptools package_dir, ...), then the built-in ones.
ROOTS = [l for l in sys.argv[3].splitlines() if l] + ["src", "lib"]
TEST_DIRS = ("tests", "test", "testing")

def root(p):
    held = [r for r in ROOTS if p.startswith(r + "/")]
    return max(held, key=len) if held else ""

def import_name(p):
    r = root(p)
    rel = p[len(r) + 1:] if r else p
    rel = rel[:-3] if rel.endswith(".py") else rel
    rel = rel[:-9] if rel.endswith("/__init__") else rel
    return rel.replace("/", ".")

# Folders absolute, as improve passes them since main b47c811 (a test that chdirs cannot move them).
source = [import_name(p) if p.endswith(".py") else tree + "/" + p for p in packages]
omit = []
for pkg in (p for p in packages if not p.endswith(".py")):
    dirs, modules, conftest = set(), False, False
    for f in files:
        if not f.startswith(pkg + "/"):
            continue
        parts = f[len(pkg) + 1:].split("/")
        k = next((i for i, d in enumerate(parts[:-1]) if d in TEST_DIRS), None)
        if k is not None:
            dirs.add(pkg + "/" + "/".join(parts[:k + 1]))
            continue
        stem = parts[-1][:-3] if parts[-1].endswith(".py") else ""
        conftest |= parts[-1] == "conftest.py"
        modules |= (stem.startswith("test_") or stem.endswith("_test")) and stem not in ("test", "tests")
    omit += [d + "/*" for d in sorted(dirs)]
    if modules:
        omit += [f"{pkg}/test_*.py", f"{pkg}/*/test_*.py", f"{pkg}/*_test.py", f"{pkg}/*/*_test.py"]
    if conftest:
        omit += [f"{pkg}/conftest.py", f"{pkg}/*/conftest.py"]
print("--source=" + ",".join(source))
if omit:
    print("--omit=" + ",".join(omit))
roots = dict.fromkeys(root(p) for p in packages) or {"": None}
print("PYTHONPATH=" + ":".join(tree + ("/" + r if r else "") for r in roots))
' "$packages" "$wt/tree" "$source_roots")
  printf '%s\n' "${cov_args[@]}" "PYTHONPATH=$pythonpath" >"$out/user-coverage.args"
  log "$name: the user's coverage on $branch: coverage run --branch ${cov_args[*]} -m pytest"
  (
    cd "$wt/tree" || exit 1
    PYTHONPATH="$pythonpath${PYTHONPATH:+:$PYTHONPATH}" PATH="$repo/.venv/bin:$PATH" \
      VIRTUAL_ENV="$repo/.venv" timeout 600 \
      "$repo/.venv/bin/python" -m coverage run --branch "${cov_args[@]}" \
      --data-file="$wt/.coverage" -m pytest -q -p no:cacheprovider --continue-on-collection-errors \
      >"$out/user-pytest.txt" 2>&1
    echo $? >"$out/user-pytest.rc"
    "$repo/.venv/bin/python" -m coverage json --data-file="$wt/.coverage" \
      -o "$out/user-coverage.json" >>"$out/user-coverage.err" 2>&1
  )
  git -C "$repo" worktree remove --force "$wt/tree" >>"$out/user-coverage.err" 2>&1
  rm -rf "$wt"
}

run_project() {
  local name=$1 source=$2 deps=$3 ignored=$4 layout=$5
  local out="$CACHE/out/$name" repo="$CACHE/repos/$name"
  rm -rf "$out"; mkdir -p "$out"
  printf '%s\n' "$layout" >"$out/layout"
  local t0=$SECONDS tree
  if ! tree=$(pristine "$name" "$source"); then
    echo "source unavailable: $source (a clone holding that commit, or the sdist, is needed)" >"$out/error"; return
  fi
  local tag=""
  case "$source" in pypi:*) tag=${source#*==} ;; esac
  if ! make_repo "$name" "$tree" "$repo" "$ignored" "$tag" >"$out/setup.log" 2>&1; then
    echo "could not lay out the repository (see $out/setup.log)" >"$out/error"; return
  fi
  if ! make_venv "$name" "$repo" "$deps" >>"$out/setup.log" 2>&1; then
    echo "could not install the venv (see $out/setup.log)" >"$out/error"; return
  fi
  "$repo/.venv/bin/python" -m pip freeze --all >"$out/freeze.txt" 2>/dev/null
  git -C "$repo" status --porcelain >"$out/status-after-install.txt"
  for f in $ignored; do
    [ -f "$repo/$f" ] && ! git -C "$repo" ls-files --error-unmatch "$f" >/dev/null 2>&1 &&
      echo "$f" >>"$out/generated-and-ignored"
  done
  log "$name: the project's own pytest"
  local t1=$SECONDS
  # As a developer runs it: the venv active (its bin/ first on PATH, where the project's console
  # scripts are, which its tests may run), and past a collection error, as improve goes on past
  # one (markdown's tests turn warnings into errors at import, so one class fails to collect).
  (cd "$repo" && PATH="$repo/.venv/bin:$PATH" VIRTUAL_ENV="$repo/.venv" timeout 300 \
    .venv/bin/python -m pytest -q -p no:cacheprovider --continue-on-collection-errors \
    --junitxml="$out/own.xml" >"$out/own.txt" 2>&1)
  echo $? >"$out/own.rc"
  echo $((SECONDS - t1)) >"$out/own.seconds"
  junit_count "$out/own.xml" >"$out/own.count"
  # Running the suite must leave the checkout as it was (else the count ran on a dirty tree).
  git -C "$repo" status --porcelain >"$out/status-after-own.txt"
  log "$name: own pytest: $(cat "$out/own.count") tests, exit $(cat "$out/own.rc"), $(cat "$out/own.seconds")s"

  "$PYTHON" "$STANDIN" --python "$repo/.venv/bin/python" --repo "$repo" --port 0 \
    >"$out/standin.port" 2>"$out/standin.log" &
  # run_project runs in a subshell of its own: the stand-in goes with it, however it ends
  # (a global, as the trap runs after the function returned).
  STANDIN_PID=$!
  trap '[ -z "${STANDIN_PID:-}" ] || kill "$STANDIN_PID" 2>/dev/null' EXIT
  local standin=$STANDIN_PID port=""
  for _ in $(seq 1 100); do
    port=$(head -1 "$out/standin.port" 2>/dev/null)
    [ -n "$port" ] && break
    sleep 0.1
  done
  if [ -z "$port" ]; then
    kill "$standin" 2>/dev/null
    echo "the stand-in did not start (see $out/standin.log)" >"$out/error"; return
  fi
  log "$name: improve --iterations $ITERATIONS (stand-in on port $port)"
  local t2=$SECONDS
  (
    cd "$repo" &&
      exec env -u IMPROVE_API_KEY -u OPENAI_API_KEY -u ANTHROPIC_API_KEY -u IMPROVE_LLM_URL \
        -u IMPROVE_MODEL -u IMPROVE_PROVIDER \
        timeout -k 15 "$RUN_TIMEOUT" "$BIN" --iterations "$ITERATIONS" \
        --llm-url "http://127.0.0.1:$port/v1" --model standin
  ) >"$out/improve.out" 2>"$out/improve.err"
  echo $? >"$out/improve.rc"
  echo $((SECONDS - t2)) >"$out/improve.seconds"
  (cd "$repo" && "$BIN" status --json >"$out/status.json" 2>"$out/status.err")
  (cd "$repo" && "$BIN" log --json >"$out/log.json" 2>"$out/log.err")
  kill "$standin" 2>/dev/null; wait "$standin" 2>/dev/null
  # The state file (the last run's, wherever this version of improve keeps it).
  local state
  # shellcheck disable=SC2012 # newest first; these paths are ours and plain
  state=$(ls -t "$repo"/.improve/state.json "$repo"/.improve/runs/*/state.json 2>/dev/null | head -1)
  [ -n "$state" ] && cp "$state" "$out/state.json"
  [ -n "$state" ] && user_coverage "$name" "$repo" "$out" "$ignored"
  echo $((SECONDS - t0)) >"$out/total.seconds"
  log "$name: improve exit $(cat "$out/improve.rc") in $(cat "$out/improve.seconds")s"
}

# One Markdown row from what run_project left in $CACHE/out/<name>.
row() {
  "$PYTHON" - "$CACHE/out/$1" "$1" "$2" <<'EOF'
import json, os, sys
out, name, spec = sys.argv[1], sys.argv[2], sys.argv[3]

def read(f, default=""):
    try:
        with open(os.path.join(out, f), encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError:
        return default

def load(f):
    try:
        with open(os.path.join(out, f), encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None

def cell(s):
    return str(s).replace("|", "\\|").replace("\n", " ")

def pct(v):
    return "–" if v is None else f"{v:.1f}%"

project = f"{name} {spec}"
err = read("error")
if err:
    print(f"| {cell(project)} | | | | {read('own.count', '–')} | | | | | {cell(err)} |")
    sys.exit()
state, status, log = load("state.json") or {}, load("status.json") or {}, load("log.json") or []
settings = state.get("settings") or {}

def first(*values):
    for v in values:
        if v:
            return ", ".join(v) if isinstance(v, list) else str(v)
    return None

# Where this version of improve says it looked: status --json (packages, tests_dirs), else the
# resolved settings saved in the state file (package or packages, tests_dir).
pkg = first(status.get("packages"), status.get("package"), settings.get("packages"),
            settings.get("package"))
tests_dir = first(status.get("tests_dirs"), status.get("tests_dir"), settings.get("tests_dirs"),
                  settings.get("tests_dir"))
files = sorted({f for it in (log if isinstance(log, list) else []) for f in (it.get("files") or [])})
own = read("own.count", "?")
own_rc = read("own.rc")
if own_rc not in ("0", ""):
    own += f" (exit {own_rc})"
rc = read("improve.rc", "?")
note = ""
if rc != "0":
    lines = [l for l in read("improve.err").splitlines() if l.strip()]
    # improve's one-line error is its last line; a timeout kill leaves none.
    msg = lines[-1] if lines else ""
    if rc in ("124", "137"):
        msg = f"timed out after {read('improve.seconds')}s; " + msg
    note = f"exit {rc}: {msg}"
base = status.get("tests_baseline")
# How many of them the baseline skipped (its summary line), beside the own run's skips: a
# compiled extension missing from improve's worktrees shows as more skips at the same count.
import re
for l in read("improve.err").splitlines():
    m = re.match(r"baseline: (.*)", l.strip())
    if m and base is not None:
        # JUnit (the own run's count) records an xfail as skipped; pytest's summary apart.
        sk = sum(int(x) for x in re.findall(r"(\d+) (?:skipped|xfailed)\b", m.group(1)))
        bad = sum(int(x) for x in re.findall(r"(\d+) (?:failed|errors?)\b", m.group(1)))
        base = f"{base}" + (f" ({bad} failing)" if bad else "") + (f" ({sk} skipped)" if sk else "")
        break
kept = status.get("kept")
done = status.get("iterations_done")
reasons = [f"#{it.get('n')} {it.get('outcome')}" + (f" ({it.get('reason')})" if it.get("reason") else "")
           for it in log] if isinstance(log, list) else []
if reasons and not note:
    note = "; ".join(reasons)
elif reasons:
    note += " — " + "; ".join(reasons)
kept_cell = "–" if kept is None else f"{kept}/{done if done is not None else '?'}"
cov = "–"
if status:
    cov = f"{pct(status.get('coverage_baseline'))} → {pct(status.get('coverage_now'))}"
# The user's own measure of the run branch (user_coverage) beside improve's coverage_now.
user = load("user-coverage.json")
user_pct = ((user or {}).get("totals") or {}).get("percent_covered")
now = status.get("coverage_now") if status else None
if user_pct is None:
    why = read("user-coverage.err").splitlines()
    user_cell = "–" + (f" ({cell(why[-1])})" if why and state else "")
else:
    agree = now is not None and abs(user_pct - now) <= 0.1
    user_cell = f"{user_pct:.2f}% vs {'–' if now is None else f'{now:.2f}%'} {'✓' if agree else '✗'}"
    urc = read("user-pytest.rc")
    if urc not in ("0", ""):
        user_cell += f" (pytest exit {urc})"
secs = read("improve.seconds")
print(f"| {cell(project)} | {cell(pkg or '–')} | {cell(tests_dir or '–')} | "
      f"{'–' if base is None else base} | {cell(own)} | {kept_cell} | {cov} | {user_cell} | "
      f"{cell(', '.join(files) or '–')} | {cell(note)}{f' [{secs}s]' if secs else ''} |")
EOF
}

selected=${REALWORLD_PROJECTS:-}
rows=()
layouts=()
start=$SECONDS
while IFS='|' read -r name source deps ignored layout; do
  [ -n "$name" ] || continue
  if [ -n "$selected" ]; then
    [[ " $selected " == *" $name "* ]] || continue
  elif [[ "$layout" == slow:* ]]; then
    continue
  fi
  log "== $name ($source)"
  # A subshell per project: whatever goes wrong in one (even an unset variable) stays there.
  (run_project "$name" "$source" "$deps" "$ignored" "$layout")
  case "$source" in
    pypi:*) version=${source#*==} ;;
    git:*) version=${source##*@}; version="git ${version:0:10}" ;;
    *) version=local ;;
  esac
  rows+=("$(row "$name" "$version")")
  layouts+=("| $name | ${source} | $layout |")
done <<<"$PROJECTS"
# Local checkouts named in REALWORLD_PROJECTS (a path to a directory rather than a name).
for entry in $selected; do
  if [ ! -d "$entry" ]; then
    printf '%s\n' "$PROJECTS" | grep -q "^$entry|" || log "unknown project $entry (not in the list, not a directory)"
    continue
  fi
  name=$(basename "$(cd "$entry" && pwd)")
  log "== $name (dir:$entry)"
  (run_project "$name" "dir:$(cd "$entry" && pwd)" "${REALWORLD_LOCAL_DEPS:-}" "" "local checkout")
  rows+=("$(row "$name" "local")")
  layouts+=("| $name | dir:$entry | local checkout |")
done

{
  echo "improve: $BIN ($("$BIN" --version 2>/dev/null || echo '?')), $ITERATIONS iterations each, $((SECONDS - start))s in all"
  echo
  echo "| project | packages | tests dir | baseline tests | own pytest | kept | coverage before → after | user's coverage vs improve's | kept files | notes |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  printf '%s\n' "${rows[@]}"
  echo
  echo "| project | source | layout |"
  echo "| --- | --- | --- |"
  printf '%s\n' "${layouts[@]}"
} | tee "$CACHE/out/table.md"
