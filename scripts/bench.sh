#!/usr/bin/env bash
# Benchmarks improve against a stand-in LLM (scripts/bench_standin.py) on examples/demo:
# throughput at a fixed LLM latency for --jobs 1, 2 and 4, then, with no latency at all, how
# much of the wall time is improve itself rather than the LLM or pytest (on the demo, and on a
# generated package whose suite has thousands of tests: scripts/bench_fixture.py), and
# improve's own peak memory. Every run starts from a fresh copy, so runs don't share state.
#
# Environment: BENCH_ITERATIONS (default 24), BENCH_LATENCY (seconds, default 2),
# IMPROVE_BIN (default target/release/improve), BENCH_BUILD=1 (build even if IMPROVE_BIN is
# set), VENV_PYTHON (default .venv/bin/python), BENCH_KEEP=1 (keep the temp repos).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ITERATIONS=${BENCH_ITERATIONS:-24}
LATENCY=${BENCH_LATENCY:-2}

# The tests run with this Python, and so do the stand-in and the figures below: one
# interpreter whose pytest improve is told to use.
if [[ -z ${VENV_PYTHON:-} ]]; then
  VENV_PYTHON=$ROOT/.venv/bin/python
  [[ -x $VENV_PYTHON ]] || scripts/setup-python.sh
fi
PY=$VENV_PYTHON

# A stale binary would benchmark old code, so the default binary is always (re)built; cargo
# makes that a no-op when nothing changed. An explicit IMPROVE_BIN is taken as it is.
if [[ -z ${IMPROVE_BIN:-} ]]; then
  IMPROVE_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/improve
  BENCH_BUILD=${BENCH_BUILD:-1}
fi
if [[ ${BENCH_BUILD:-0} == 1 || ! -x $IMPROVE_BIN ]]; then
  cargo build --release --quiet
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/improve-bench.XXXXXX")
RESULTS=$WORK/results.jsonl
STANDIN_PID=
WATCH_PID=
IMPROVE_PID=
# Background jobs of a script ignore Ctrl-C, so an interrupted benchmark must stop them itself.
cleanup() {
  [[ -n $IMPROVE_PID ]] && kill "$IMPROVE_PID" 2>/dev/null && wait "$IMPROVE_PID" 2>/dev/null || true
  [[ -n $WATCH_PID ]] && kill "$WATCH_PID" 2>/dev/null || true
  [[ -n $STANDIN_PID ]] && kill "$STANDIN_PID" 2>/dev/null || true
  if [[ ${BENCH_KEEP:-0} == 1 ]]; then echo "kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_standin() { # latency recording -> sets STANDIN_PID and PORT
  local out=$WORK/standin.$1.port
  "$PY" "$ROOT/scripts/bench_standin.py" --port 0 --latency "$1" \
    --recording "$2" >"$out" 2>"$WORK/standin.$1.err" &
  STANDIN_PID=$!
  # The port is printed once the socket is bound; waiting for it avoids a connection refused.
  for _ in $(seq 100); do
    PORT=$(head -n1 "$out" 2>/dev/null || true)
    [[ -n $PORT ]] && return 0
    kill -0 "$STANDIN_PID" 2>/dev/null || break
    sleep 0.05
  done
  echo "bench: the stand-in did not start:" >&2
  cat "$WORK/standin.$1.err" >&2
  exit 1
}

stop_standin() {
  kill "$STANDIN_PID" 2>/dev/null || true
  wait "$STANDIN_PID" 2>/dev/null || true
  STANDIN_PID=
}

fresh_repo() { # dir fixture
  mkdir -p "$1"
  if [[ $2 == large ]]; then
    "$PY" "$ROOT/scripts/bench_fixture.py" "$1" "$WORK/large-recording.json"
  else
    cp -R "$ROOT/examples/demo/." "$1/"
    rm -f "$1/recording.json"
  fi
  # Caches left by someone running the demo's tests in place would change what pytest does.
  find "$1" \( -name __pycache__ -o -name .pytest_cache -o -name .improve -o -name .coverage \) \
    -prune -exec rm -rf {} +
  git -C "$1" init -q -b main
  git -C "$1" add -A
  git -C "$1" -c user.name=bench -c user.email=bench@example.com commit -q -m "fixture"
}

run_one() { # label latency jobs [fixture: demo | large] [extra improve flags]
  local label=$1 latency=$2 jobs=$3 fixture=${4:-demo} extra=${5:-}
  local repo=$WORK/$label recording=$ROOT/examples/demo/recording.json
  fresh_repo "$repo" "$fixture"
  [[ $fixture == large ]] && recording=$WORK/large-recording.json
  start_standin "$latency" "$recording"

  local start end rc=0
  start=$EPOCHREALTIME
  "$IMPROVE_BIN" --repo "$repo" --provider openai --llm-url "http://127.0.0.1:$PORT/v1" \
    --model bench --iterations "$ITERATIONS" --jobs "$jobs" \
    --test-cmd "$PY -m pytest" $extra -q >"$WORK/$label.out" 2>&1 &
  local pid=$!
  IMPROVE_PID=$pid
  # VmHWM is the peak resident size of this one process, so pytest children don't count. It
  # is polled from a separate loop so that the wall time below ends at the exit itself, not at
  # the next poll; the last value read is the peak (it only grows).
  local hwm_file=$WORK/$label.hwm
  echo 0 >"$hwm_file"
  # Only shell builtins in the loop: spawning awk and sleep 20 times a second would take CPU
  # from the very runs being measured (two cores).
  (
    exec {nap}<> <(:)
    while [[ -r /proc/$pid/status ]]; do
      while read -r key kb _; do
        [[ $key == VmHWM: ]] && echo "$kb" >"$hwm_file"
      done <"/proc/$pid/status" 2>/dev/null || true
      read -r -t 0.05 -u "$nap" || true
    done
  ) &
  WATCH_PID=$!
  wait "$pid" || rc=$?
  end=$EPOCHREALTIME
  IMPROVE_PID=
  kill "$WATCH_PID" 2>/dev/null || true
  wait "$WATCH_PID" 2>/dev/null || true
  WATCH_PID=
  stop_standin

  if [[ $rc != 0 ]]; then
    echo "bench: improve exited with $rc in run $label:" >&2
    cat "$WORK/$label.out" >&2
    exit 1
  fi

  "$IMPROVE_BIN" log --json --repo "$repo" >"$WORK/$label.log.json"
  "$IMPROVE_BIN" status --json --repo "$repo" >"$WORK/$label.status.json"
  "$PY" - "$label" "$latency" "$jobs" "$start" "$end" "$(cat "$hwm_file")" "$repo" "$WORK" \
    "$fixture" "$extra" >>"$RESULTS" <<'EOF'
import json, re, sys
from datetime import datetime
label, latency, jobs, start, end, hwm_kb, repo, work, fixture = sys.argv[1:10]
log = json.load(open(f"{work}/{label}.log.json"))
status = json.load(open(f"{work}/{label}.status.json"))
state = json.load(open(f"{repo}/.improve/state.json"))
# The log rounds seconds to 0.1, which summed over many sub-second iterations would skew the
# shares; state.json keeps them unrounded, so prefer it and fall back to the log.
precise = {it["n"]: it.get("seconds") for it in state.get("iterations", []) if it.get("seconds")}
llm = tests = helpers = other = 0.0
for row in log:
    s = precise.get(row["n"]) or row["seconds"]
    llm += s.get("llm", 0.0)
    tests += s.get("tests", 0.0)
    helpers += s.get("helpers", 0.0)
    other += (s.get("total", 0.0) - s.get("llm", 0.0) - s.get("tests", 0.0)
              - s.get("helpers", 0.0) - s.get("queued", 0.0))
baseline = state.get("baseline") or {}

def when(stamp):
    # RFC 3339 with nanoseconds; datetime takes at most microseconds.
    stamp = re.sub(r"(\.\d{6})\d*", r"\1", stamp).replace("Z", "+00:00")
    return datetime.fromisoformat(stamp).timestamp()

# How many iterations were really in flight at once, from their own start and end times: a
# build that accepts --jobs but runs sequentially (or says so only without -q) shows 1 here.
events = []
for it in state.get("iterations", []):
    if it.get("started_at") and it.get("finished_at"):
        events += [(when(it["started_at"]), 1), (when(it["finished_at"]), -1)]
in_flight = peak = 0
for _, step in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start at a tie
    in_flight += step
    peak = max(peak, in_flight)
print(json.dumps({
    "label": label, "latency": float(latency), "jobs": int(jobs), "fixture": fixture,
    "wall": float(end) - float(start),
    "done": status["iterations_done"],
    "kept": status["kept"], "rejected": status["rejected"], "errors": status["errors"],
    "llm": llm, "tests": tests, "helpers": helpers, "other": other, "rows": len(log),
    "baseline_tests": float(baseline.get("seconds") or 0.0),
    "hwm_mb": int(hwm_kb) / 1024, "in_flight": peak if events else None,
    # Kept iterations whose suite had to run a second time, after a replay at keep time.
    "replayed": sum(1 for it in state.get("iterations", [])
                    if (it.get("verdict") or {}).get("replayed_onto")),
    # Whole-suite runs: one per iteration that reached the suite, one more per replay.
    "suite_runs": sum(bool((it.get("verdict") or {}).get("suite_label"))
                      + bool((it.get("verdict") or {}).get("replayed_onto"))
                      for it in state.get("iterations", [])),
    # The mutation check: mutants made and killed in the kept iterations, the stage's time.
    "mut_made": sum((r.get("mutation") or {}).get("made", 0) for r in log if r["outcome"] == "kept"),
    "mut_killed": sum((r.get("mutation") or {}).get("killed", 0) for r in log if r["outcome"] == "kept"),
    "mut_seconds": sum((r.get("mutation") or {}).get("seconds", 0.0) for r in log),
    "mut_dropped": sum(len((r.get("mutation") or {}).get("asserts_nothing", [])) for r in log),
    "tests_added": sum(r["tests_added"] for r in log),
    "extra": sys.argv[10] if len(sys.argv) > 10 else "",
}))
EOF
  # The runs' copies are removed together at exit (see cleanup), not here: deleting thousands
  # of files right before the next run made the file system slower during it (its own work
  # came out at 22 ms per iteration instead of 15 when it followed the others).
}

run_sharded() { # label latency shards: plan, that many workers at once (processes), gather
  local label=$1 latency=$2 shards=$3
  local dir=$WORK/$label
  local repo=$dir/origin-checkout remote=$dir/remote.git plan=$dir/plan.json
  local llm=(--provider openai --model bench --test-cmd "$PY -m pytest")
  fresh_repo "$repo" demo
  git init -q --bare -b main "$remote"
  git -C "$repo" push -q "$remote" main
  git -C "$repo" remote add origin "$remote"
  start_standin "$latency" "$ROOT/examples/demo/recording.json"
  llm+=(--llm-url "http://127.0.0.1:$PORT/v1")
  local start mid end
  start=$EPOCHREALTIME
  "$IMPROVE_BIN" --repo "$repo" plan --shards "$shards" -n "$ITERATIONS" --out "$plan" \
    "${llm[@]}" -q >"$dir.plan.out" 2>&1
  local pids=() k
  for ((k = 0; k < shards; k++)); do
    git clone -q "$remote" "$dir/w$k"
    "$IMPROVE_BIN" --repo "$dir/w$k" work --plan "$plan" --shard "$k" --push origin \
      "${llm[@]}" -q >"$dir.w$k.out" 2>&1 &
    pids+=($!)
  done
  for k in "${!pids[@]}"; do
    wait "${pids[$k]}" || { echo "bench: worker $k failed:" >&2; cat "$dir.w$k.out" >&2; exit 1; }
  done
  mid=$EPOCHREALTIME
  git clone -q "$remote" "$dir/gather"
  "$IMPROVE_BIN" --repo "$dir/gather" gather --plan "$plan" --test-cmd "$PY -m pytest" -q \
    >"$dir.gather.out" 2>&1 || { cat "$dir.gather.out" >&2; exit 1; }
  end=$EPOCHREALTIME
  stop_standin
  "$IMPROVE_BIN" status --json --repo "$dir/gather" >"$dir.status.json"
  "$PY" - "$label" "$latency" "$shards" "$start" "$mid" "$end" "$dir" >>"$RESULTS" <<'EOF'
import glob, json, sys
label, latency, shards, start, mid, end, d = sys.argv[1:8]
status = json.load(open(f"{d}.status.json"))
gathered = json.load(open(f"{d}/gather/.improve/state.json"))
runs = gathered["gathered"]["suite_runs"]
for path in glob.glob(f"{d}/w*/.improve/state.json"):
    for it in json.load(open(path))["iterations"]:
        v = it.get("verdict") or {}
        runs += bool(v.get("suite_label")) + bool(v.get("replayed_onto"))
print(json.dumps({
    "label": label, "latency": float(latency), "jobs": int(shards), "fixture": "demo",
    "shards": int(shards), "wall": float(end) - float(start),
    "gather_s": float(end) - float(mid), "done": status["iterations_done"],
    "kept": status["kept"], "rejected": status["rejected"], "errors": status["errors"],
    "suite_runs": runs, "hwm_mb": 0.0, "in_flight": None, "replayed": 0, "rows": 0,
}))
EOF
}

for jobs in 1 2 4; do
  run_one "lat${LATENCY}-j$jobs" "$LATENCY" "$jobs"
done
# The same iterations spread over 4 shards (4 worker processes on this machine), then gathered.
run_sharded "lat${LATENCY}-shards4" "$LATENCY" 4
run_one "lat0-j1" 0 1
# The demo's suite runs in a fraction of a second; a project's takes longer, and improve's own
# work weighs accordingly less. The same at 0 s on a generated package with thousands of tests.
run_one "lat0-j1-large" 0 1 large
# The mutation check's price: the demo at 0 s again, with it off.
run_one "lat0-j1-nomut" 0 1 demo "--mutants 0"

"$PY" - "$RESULTS" "$ITERATIONS" "$LATENCY" "$("$IMPROVE_BIN" --version)" <<'EOF'
import json, sys
path, iterations, latency, version = sys.argv[1:]
runs = [json.loads(line) for line in open(path)]
print(f"improve benchmark — {version}, examples/demo, {iterations} iterations per run, "
      "stand-in LLM (scripts/bench_standin.py)")
print()
print(f"{'run':<37}{'wall s':>8}{'iter/h':>9}{'done':>6}{'kept':>6}{'rej':>5}{'err':>5}"
      f"{'peak MB':>9}{'in flight':>11}{'replays':>9}")
rate = {}
for r in runs:
    if r.get("shards"):
        continue
    per_hour = r["done"] / r["wall"] * 3600 if r["wall"] > 0 else 0.0
    if r["latency"] > 0:
        rate[r["jobs"]] = per_hour
    name = f"latency {r['latency']:g}s, --jobs {r['jobs']}"
    if r["fixture"] != "demo":
        name += f", {r['fixture']}"
    if r.get("extra"):
        name += f", {r['extra']}"
    in_flight = "?" if r["in_flight"] is None else r["in_flight"]
    print(f"{name:<37}{r['wall']:>8.1f}{per_hour:>9.0f}{r['done']:>6}{r['kept']:>6}"
          f"{r['rejected']:>5}{r['errors']:>5}{r['hwm_mb']:>9.1f}{in_flight:>11}"
          f"{r['replayed']:>9}")
print("iter/h = iterations done / improve's whole wall time (baseline included) * 3600; peak MB ="
      " VmHWM of improve itself; in flight = most iterations running at once, from state.json;"
      " replays = iterations whose whole suite ran again after a replay at keep time.")
print()
if 1 in rate and rate[1] > 0:
    ratios = ", ".join(f"jobs{j}/jobs1 = {rate[j] / rate[1]:.2f}x" for j in (2, 4) if j in rate)
    print(f"Throughput at {float(latency):g} s latency: {ratios}.")
one = {r["jobs"]: r for r in runs if r["latency"] > 0 and not r.get("shards")}
for r in (r for r in runs if r.get("shards")):
    per_hour = r["done"] / r["wall"] * 3600 if r["wall"] > 0 else 0.0
    print(f"{r['shards']} shards + gather at {r['latency']:g} s: wall {r['wall']:.1f} s (gather"
          f" {r['gather_s']:.1f} s), {r['done']} done, {r['kept']} kept, {r['suite_runs']} suite runs,"
          f" {per_hour:.0f} iter/h = {per_hour / rate[1]:.2f}x --jobs 1"
          + "".join(f"; --jobs {j}: {o['wall']:.1f} s, {o['kept']} kept, {o['suite_runs']} suite runs"
                    for j, o in sorted(one.items()))
          + ".")
on = next((r for r in runs if r["label"] == "lat0-j1"), None)
off = next((r for r in runs if r["label"] == "lat0-j1-nomut"), None)
if on and off:
    score = 100 * on["mut_killed"] / on["mut_made"] if on["mut_made"] else float("nan")
    print(f"Mutation check, demo at 0 s: score of the kept tests {score:.0f}% ({on['mut_killed']} of"
          f" {on['mut_made']} mutants killed); the stage took {on['mut_seconds'] / max(on['rows'], 1):.2f} s"
          f" per iteration; wall {on['wall']:.1f} s on vs {off['wall']:.1f} s off"
          f" ({(on['wall'] - off['wall']) / max(on['rows'], 1):+.2f} s per iteration);"
          f" tests kept {on['tests_added']} on vs {off['tests_added']} off"
          f" ({on['mut_dropped']} dropped as asserting nothing).")
for zero in (r for r in runs if r["latency"] == 0 and not r.get("extra")):
    wall = zero["wall"]
    tests = zero["tests"] + zero["baseline_tests"]
    outside = wall - zero["llm"] - tests
    rows = zero["rows"] or 1
    own = zero["other"]
    rest = outside - zero["helpers"] - own
    print(f"0 s latency, --jobs 1, {zero['fixture']} fixture: wall {wall:.2f} s = LLM {zero['llm']:.2f} s"
          f" + pytest {tests:.2f} s (iterations {zero['tests']:.2f} + baseline"
          f" {zero['baseline_tests']:.2f}) + outside both {outside:.2f} s"
          f" ({outside / wall * 100:.1f}% of wall).")
    print(f"  outside both = Python helper processes (syntax check, pruning) {zero['helpers']:.2f} s"
          f" ({zero['helpers'] / wall * 100:.1f}%) + improve's own work in iterations (git,"
          f" saving, parsing) {own:.2f} s ({own / wall * 100:.1f}%, {own / rows * 1000:.0f} ms per"
          f" iteration) + start-up, baseline worktree and report {rest:.2f} s"
          f" ({rest / wall * 100:.1f}%).")
print(f"Peak memory of the improve process itself (VmHWM, pytest excluded): "
      f"max {max(r['hwm_mb'] for r in runs):.1f} MB.")
EOF
