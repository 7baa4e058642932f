#!/usr/bin/env bash
# One improve run spread over a Slurm job array, on this machine: starts a one-node cluster
# (scripts/slurm-cluster.sh; root, Debian), makes the demo package (examples/demo) a project with
# a bare repository as its remote, starts the stand-in LLM (scripts/bench_standin.py), then
#
#   improve plan --shards 4                                    the baseline, once
#   sbatch --array=0-3 examples/distributed/slurm-array.sbatch one `improve work` a task, pushing
#   sbatch --dependency=afterany:<array> --wrap 'improve gather ...' in a clone of the remote
#
# and prints the per-shard table. Before the plan, a preflight array checks that every task can
# clone the remote and reach the stand-in, and times how fast the array starts. The daemons this
# script started are stopped when it ends. Run by hand (it needs apt and root): not part of
# scripts/test.sh.
#
# Environment: DEMO_SHARDS (default 4), DEMO_ITERATIONS (whole run, default 8), DEMO_LATENCY
# (stand-in seconds per answer, default 1), IMPROVE_BIN (default target/release/improve, built
# when missing), VENV_PYTHON (default .venv/bin/python), DEMO_KEEP=1 (keep the temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SHARDS=${DEMO_SHARDS:-4}
ITERATIONS=${DEMO_ITERATIONS:-8}
LATENCY=${DEMO_LATENCY:-1}
LAST=$((SHARDS - 1))

die() { echo "slurm-demo: $*" >&2; exit 1; }
say() { echo "slurm-demo: $*"; }

[[ $(id -u) == 0 ]] || die "needs root (it installs and starts Slurm); run it as root"

if [[ -z ${VENV_PYTHON:-} ]]; then
  VENV_PYTHON=$ROOT/.venv/bin/python
  [[ -x $VENV_PYTHON ]] || scripts/setup-python.sh
fi
PY=$VENV_PYTHON
if [[ -z ${IMPROVE_BIN:-} ]]; then
  IMPROVE_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/improve
  if [[ ! -x $IMPROVE_BIN ]]; then
    say "building improve (cargo build --release; minutes the first time)"
    cargo build --release --quiet
  fi
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/improve-slurm-demo.XXXXXX")
chmod 755 "$WORK"
STANDIN_PID=
JOBS=()
STARTED_CLUSTER=0
cleanup() {
  local rc=$?
  if ((${#JOBS[@]})); then scancel "${JOBS[@]}" 2>/dev/null || true; fi
  if [[ -n $STANDIN_PID ]]; then
    kill "$STANDIN_PID" 2>/dev/null || true
    wait "$STANDIN_PID" 2>/dev/null || true
  fi
  ((STARTED_CLUSTER)) && scripts/slurm-cluster.sh stop
  if [[ ${DEMO_KEEP:-0} == 1 || $rc != 0 ]]; then echo "slurm-demo: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the cluster -------------------------------------------------------------------------------
# Already up (started by hand before): used, and left running.
if ! scripts/slurm-cluster.sh status >/dev/null 2>&1; then
  STARTED_CLUSTER=1
  scripts/slurm-cluster.sh start
fi

# --- the project, its bare remote, the stand-in ------------------------------------------------
export GIT_AUTHOR_NAME=slurm-demo GIT_AUTHOR_EMAIL=slurm-demo@example.com
export GIT_COMMITTER_NAME=slurm-demo GIT_COMMITTER_EMAIL=slurm-demo@example.com
PROJECT=$WORK/project
REMOTE=$WORK/remote.git
mkdir -p "$PROJECT" "$WORK/scratch" "$WORK/logs"
cp -R examples/demo/. "$PROJECT/"
rm -f "$PROJECT/recording.json"
find "$PROJECT" \( -name __pycache__ -o -name .pytest_cache -o -name .improve -o -name .coverage \) \
  -prune -exec rm -rf {} +
git -C "$PROJECT" init -q -b main
git -C "$PROJECT" add -A
git -C "$PROJECT" commit -q -m "demo project"
git clone -q --bare "$PROJECT" "$REMOTE"
git -C "$PROJECT" remote add origin "$REMOTE"
say "project $PROJECT ($(git -C "$PROJECT" rev-parse --short HEAD)), remote $REMOTE"

"$PY" scripts/bench_standin.py --port 0 --latency "$LATENCY" --recording examples/demo/recording.json \
  >"$WORK/standin.port" 2>"$WORK/standin.err" &
STANDIN_PID=$!
PORT=
for _ in $(seq 100); do
  PORT=$(head -n1 "$WORK/standin.port" 2>/dev/null || true)
  [[ -n $PORT ]] && break
  kill -0 "$STANDIN_PID" 2>/dev/null || break
  sleep 0.05
done
[[ -n $PORT ]] || die "the stand-in did not start: $(cat "$WORK/standin.err")"
export IMPROVE_LLM_URL=http://127.0.0.1:$PORT/v1 IMPROVE_API_KEY=stand-in
say "stand-in LLM at $IMPROVE_LLM_URL (${LATENCY} s an answer)"

# --- preflight: every task of an array can clone the remote and reach the LLM -------------------
cat >"$WORK/preflight.sh" <<'EOF'
#!/bin/bash
set -euo pipefail
echo "$EPOCHREALTIME" >"$DEMO_WORK/logs/preflight.$SLURM_ARRAY_TASK_ID.start"
git clone -q "$DEMO_REMOTE" "$DEMO_WORK/scratch/preflight-$SLURM_ARRAY_TASK_ID"
"$DEMO_PY" - <<'PY'
import json, os, urllib.request
body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "inventory/pricing.py"}]})
req = urllib.request.Request(os.environ["IMPROVE_LLM_URL"] + "/chat/completions", body.encode(),
                             {"Content-Type": "application/json"})
assert json.load(urllib.request.urlopen(req, timeout=30))["choices"][0]["message"]["content"]
PY
echo "$SLURM_ARRAY_TASK_ID $(hostname) $EPOCHREALTIME" >"$DEMO_WORK/logs/preflight.$SLURM_ARRAY_TASK_ID.done"
EOF
export DEMO_WORK=$WORK DEMO_REMOTE=$REMOTE DEMO_PY=$PY
t0=$EPOCHREALTIME
sbatch --wait --quiet --array=0-"$LAST" --job-name=improve-preflight \
  --output="$WORK/logs/preflight-%A_%a.out" "$WORK/preflight.sh" \
  || die "the preflight array failed: $(cat "$WORK"/logs/preflight-*.out)"
t1=$EPOCHREALTIME
"$PY" - "$WORK/logs" "$SHARDS" "$t0" "$t1" <<'EOF'
import glob, sys
logs, shards, t0, t1 = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
starts = [float(open(p).read()) for p in glob.glob(f"{logs}/preflight.*.start")]
done = glob.glob(f"{logs}/preflight.*.done")
assert len(done) == shards, f"{len(done)} of {shards} preflight tasks finished"
print(f"slurm-demo: preflight: {shards} array tasks each cloned the remote and reached the stand-in; "
      f"the first started {min(starts) - t0:.2f} s after sbatch, the last {max(starts) - t0:.2f} s; "
      f"sbatch --wait returned after {t1 - t0:.1f} s")
EOF

# --- the run -----------------------------------------------------------------------------------
if ! "$IMPROVE_BIN" plan --help >/dev/null 2>&1; then
  die "$IMPROVE_BIN has no 'plan' command yet (improve plan/work/gather, issue 23): build one that has, or set IMPROVE_BIN. Everything before it worked: the cluster, the array, the bare remote, the stand-in."
fi

PLAN=$WORK/plan.json
say "improve plan --shards $SHARDS -n $ITERATIONS"
"$IMPROVE_BIN" plan --repo "$PROJECT" --shards "$SHARDS" -n "$ITERATIONS" --out "$PLAN" \
  --provider openai --llm-url "$IMPROVE_LLM_URL" --model stand-in --test-cmd "$PY -m pytest" -q \
  || die "improve plan failed (exit $?)"
RUN_ID=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["run_id"])' "$PLAN")
say "run $RUN_ID: $("$PY" -c 'import json, sys; print(", ".join("shard %d: %d modules, %d iterations" % (s["index"], len(s["modules"]), s["iterations"]) for s in json.load(open(sys.argv[1]))["shards"]))' "$PLAN")"

# The work: examples/distributed/slurm-array.sbatch as a user would submit it (options given
# here override its #SBATCH lines).
export IMPROVE_PLAN=$PLAN IMPROVE_REMOTE=$REMOTE IMPROVE_BIN IMPROVE_SCRATCH=$WORK/scratch
t0=$EPOCHREALTIME
WORK_JOB=$(sbatch --parsable --array=0-"$LAST" --time=30:00 --mem=1G \
  --output="$WORK/logs/work-%A_%a.out" examples/distributed/slurm-array.sbatch)
JOBS+=("$WORK_JOB")
say "work: job array $WORK_JOB (tasks 0-$LAST)"
# The gather, as the example's header submits it: after the whole array, whatever its outcome.
GATHERED=$WORK/gathered
gather_rc=0
sbatch --wait --quiet --dependency=afterany:"$WORK_JOB" --job-name=improve-gather \
  --output="$WORK/logs/gather.out" \
  --wrap "git clone -q $REMOTE $GATHERED && cd $GATHERED && $IMPROVE_BIN gather --plan $PLAN --from origin --push origin" \
  || gather_rc=$?
t1=$EPOCHREALTIME
JOBS=()
say "array and gather took $("$PY" -c "print(f'{$t1 - $t0:.1f}')") s; gather exited $gather_rc"
cat "$WORK/logs/gather.out"

# --- the per-shard table -----------------------------------------------------------------------
# From Slurm (where and how long each task ran) and from git (what each shard pushed).
BASE=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["base_commit"])' "$PLAN")
{
  printf 'shard\ttask\tnode\tstate\texit\tseconds\tcommits pushed\n'
  scontrol -o show job "$WORK_JOB" | while read -r line; do
    task=$(grep -oE 'ArrayTaskId=[0-9]+' <<<"$line" | cut -d= -f2) || continue
    node=$(grep -oE ' NodeList=[^ ]+' <<<"$line" | cut -d= -f2 || true)
    state=$(grep -oE 'JobState=[^ ]+' <<<"$line" | cut -d= -f2 || true)
    exit_code=$(grep -oE ' ExitCode=[^ ]+' <<<"$line" | cut -d= -f2 || true)
    secs=$(grep -oE 'RunTime=[^ ]+' <<<"$line" | cut -d= -f2 || true)
    commits=$(git -C "$REMOTE" rev-list --count "$BASE..improve/$RUN_ID-shard-$task" 2>/dev/null || echo "none")
    printf '%s\t%s_%s\t%s\t%s\t%s\t%s\t%s\n' "$task" "$WORK_JOB" "$task" "$node" "$state" "$exit_code" "$secs" "$commits"
  done
} | column -t -s $'\t'
echo
say "the gathered run (improve status and report in $GATHERED):"
"$IMPROVE_BIN" status --repo "$GATHERED" || true
"$IMPROVE_BIN" report --repo "$GATHERED" || true
echo
say "branches on the remote:"
git -C "$REMOTE" for-each-ref --format='  %(refname:short) %(objectname:short)' 'refs/heads/improve/'
# Gather's exit code is the demo's: 3 when some shards are missing.
if ((gather_rc)); then exit "$gather_rc"; fi
