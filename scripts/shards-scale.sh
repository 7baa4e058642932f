#!/usr/bin/env bash
# What a distributed run's fixed costs do as the shard count grows: `improve plan` (one
# baseline), the git traffic of the workers' pushes, and `improve gather` (fetch, replay, one
# whole-suite run per shard that kept something). One iteration per shard, on the generated
# package of the benchmark (scripts/bench_fixture.py, --modules as many as the largest shard
# count), against the stand-in LLM at 0 s. Workers run two at a time (this machine's cores);
# their own time is not what this measures.
#
# Environment: SCALE_SHARDS (default "2 4 8 16"), IMPROVE_BIN (default target/release/improve),
# VENV_PYTHON (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARDS=${SCALE_SHARDS:-2 4 8 16}
PY=${VENV_PYTHON:-$ROOT/.venv/bin/python}
IMPROVE_BIN=${IMPROVE_BIN:-$ROOT/target/release/improve}
[[ -x $IMPROVE_BIN ]] || cargo build --release --quiet
MAX=0
for n in $SHARDS; do ((n > MAX)) && MAX=$n; done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/improve-scale.XXXXXX")
STANDIN_PID=
cleanup() {
  [[ -n $STANDIN_PID ]] && kill "$STANDIN_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

"$PY" "$ROOT/scripts/bench_fixture.py" "$WORK/fixture" "$WORK/recording.json" \
  --modules "$MAX" --functions 12 --cases 10 >/dev/null
git -C "$WORK/fixture" init -q -b main
git -C "$WORK/fixture" add -A
git -C "$WORK/fixture" -c user.name=bench -c user.email=bench@example.com commit -q -m fixture
"$PY" "$ROOT/scripts/bench_standin.py" --port 0 --latency 0 --recording "$WORK/recording.json" \
  >"$WORK/port" 2>"$WORK/standin.err" &
STANDIN_PID=$!
for _ in $(seq 100); do [[ -s $WORK/port ]] && break; sleep 0.05; done
LLM=(--provider openai --model bench --llm-url "http://127.0.0.1:$(head -n1 "$WORK/port")/v1"
  --test-cmd "$PY -m pytest")

printf '%-7s %8s %8s %9s %11s %10s %12s\n' shards "plan s" "work s" "gather s" "suite runs" "pushed KB" "state KB/shard"
for n in $SHARDS; do
  d=$WORK/n$n
  mkdir -p "$d"
  git clone -q --bare "$WORK/fixture" "$d/remote.git"
  git clone -q "$d/remote.git" "$d/planner"
  t0=$EPOCHREALTIME
  "$IMPROVE_BIN" --repo "$d/planner" plan --shards "$n" -n "$n" --out "$d/plan.json" "${LLM[@]}" -q
  t1=$EPOCHREALTIME
  before=$(du -sk "$d/remote.git" | cut -f1)
  pids=()
  for ((k = 0; k < n; k++)); do
    git clone -q "$d/remote.git" "$d/w$k"
    "$IMPROVE_BIN" --repo "$d/w$k" work --plan "$d/plan.json" --shard "$k" --push origin \
      "${LLM[@]}" -q >"$d/w$k.out" 2>&1 &
    pids+=($!)
    # Two at a time (not `wait` alone: the stand-in is a background job too).
    if ((${#pids[@]} == 2)); then wait "${pids[@]}"; pids=(); fi
  done
  ((${#pids[@]} == 0)) || wait "${pids[@]}"
  t2=$EPOCHREALTIME
  after=$(du -sk "$d/remote.git" | cut -f1)
  git clone -q "$d/remote.git" "$d/gather"
  "$IMPROVE_BIN" --repo "$d/gather" gather --plan "$d/plan.json" --test-cmd "$PY -m pytest" -q \
    >"$d/gather.out" 2>&1 || { cat "$d/gather.out" >&2; exit 1; }
  t3=$EPOCHREALTIME
  "$PY" - "$n" "$t0" "$t1" "$t2" "$t3" "$before" "$after" "$d" <<'EOF'
import glob, json, sys
n, t0, t1, t2, t3, before, after, d = sys.argv[1:]
g = json.load(open(f"{d}/gather/.improve/state.json"))["gathered"]
sizes = [len(open(p, "rb").read()) for p in glob.glob(f"{d}/w*/.improve/state.json")]
print(f"{n:<7} {float(t1) - float(t0):8.1f} {float(t2) - float(t1):8.1f} {float(t3) - float(t2):9.1f}"
      f" {g['suite_runs']:11} {int(after) - int(before):10} {sum(sizes) / len(sizes) / 1024:12.1f}")
EOF
done
echo "plan s: the baseline and the split; work s: every worker, two at a time; gather s: fetch,"
echo "replay and the whole-suite runs on the combined branch; pushed KB: what the workers' pushes"
echo "added to the bare remote (branches, state and claim commits); state KB/shard: one shard's state.json."
