#!/usr/bin/env bash
# vs-coverup.sh — improve and CoverUp 0.6.3 on the same project, the same local LLM server and
# the same wall-clock time, both measured the same way afterwards.
#
#   scripts/vs-coverup.sh PROJECT_DIR MINUTES [MODEL=coder]
#
# PROJECT_DIR is a git repository with its own venv in PROJECT_DIR/.venv (pytest, coverage and the
# project importable). Its HEAD is cloned three times under $VS_OUT: `baseline` (left alone),
# `improve` (improve runs there; .venv is a symlink to the project's) and `coverup` (CoverUp
# writes its tests there). improve runs first, then CoverUp, each stopped with SIGINT after
# MINUTES at the latest. Then all three trees are measured the same way with the project's venv:
# `coverage run --branch --source=<package dirs> -m pytest`, `pytest --collect-only`.
#
# The server: shared/tools/local-llm.sh (LOCAL_LLM_SH), started with MODEL when nothing answers on
# 127.0.0.1:${LOCAL_LLM_PORT:-18080}, and stopped at the end only if this script started it.
#
# Environment:
#   IMPROVE_BIN         improve binary (default: /work/main/target/release/improve)
#   IMPROVE_ITERATIONS  -n for improve, high so that the time is the limit (default: 1000)
#   IMPROVE_ARGS        more improve flags, word-split (default: none), e.g. '--max-prompt-tokens 4000'
#   COVERUP_VENV        venv of CoverUp 0.6.3; created when missing (default: /work/vs/coverup-venv)
#   VS_OUT              where the clones, logs and measurements go (default: a new dir in /tmp)
#   VS_TOOLS            `both` (default), or `improve` to run improve alone (a new build against
#                       CoverUp's figures of an earlier run on the same server)
#   VS_PACKAGE_DIR, VS_TESTS_DIR   CoverUp's --package-dir / --tests-dir (default: what improve
#                       detected: `improve status --json` packages[0] / tests_dirs[0])
set -euo pipefail

usage() { sed -n '4,5p' "$0" | sed 's/^# *//' >&2; exit 2; }
[ $# -ge 2 ] && [ $# -le 3 ] || usage
PROJECT=$(cd "$1" && pwd)
MINUTES=$2
MODEL=${3:-coder}
[[ "$MINUTES" =~ ^[0-9]+$ ]] && [ "$MINUTES" -gt 0 ] || usage
[ -d "$PROJECT/.git" ] || { echo "vs-coverup: $PROJECT is not a git repository" >&2; exit 2; }
PY="$PROJECT/.venv/bin/python"
[ -x "$PY" ] || { echo "vs-coverup: $PY is missing (a venv with pytest and coverage)" >&2; exit 2; }

IMPROVE_BIN=${IMPROVE_BIN:-/work/main/target/release/improve}
IMPROVE_ITERATIONS=${IMPROVE_ITERATIONS:-1000}
COVERUP_VENV=${COVERUP_VENV:-/work/vs/coverup-venv}
LOCAL_LLM_SH=${LOCAL_LLM_SH:-/work/shared/tools/local-llm.sh}
LLM_DIR=${LOCAL_LLM_DIR:-$HOME/.cache/improve-local-llm}
PORT=${LOCAL_LLM_PORT:-18080}
URL="http://127.0.0.1:$PORT/v1"
NAME=$(basename "$PROJECT")
OUT=${VS_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/vs-coverup-$NAME.XXXXXX")}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SECS=$((MINUTES * 60))
say() { echo "vs-coverup: $*" >&2; }

[ -x "$IMPROVE_BIN" ] || { say "no improve binary at $IMPROVE_BIN (cargo build --release)"; exit 2; }
VS_TOOLS=${VS_TOOLS:-both}
case "$VS_TOOLS" in both | improve) ;; *) say "VS_TOOLS must be both or improve"; exit 2 ;; esac

# --- CoverUp 0.6.3 in its own venv. pytest is pinned below 8.4: pytest-isolate 0.0.17 (CoverUp's
# --isolate-tests, on by default) calls _pytest.warnings.apply_warning_filters, gone in later pytest.
if [ ! -x "$COVERUP_VENV/bin/coverup" ]; then
  say "installing CoverUp 0.6.3 into $COVERUP_VENV"
  python3 -m venv "$COVERUP_VENV"
  "$COVERUP_VENV/bin/pip" install -q coverup==0.6.3 "pytest==8.3.5"
fi
"$COVERUP_VENV/bin/coverup" --version 2>/dev/null | grep -q '0\.6\.3' || say "warning: $COVERUP_VENV does not hold CoverUp 0.6.3"

# --- the server
started_server=0
cleanup() {
  if [ "$started_server" = 1 ]; then LOCAL_LLM_PORT=$PORT bash "$LOCAL_LLM_SH" stop >&2 || true; fi
}
trap cleanup EXIT
if curl -fs "$URL/models" >/dev/null 2>&1; then
  serving=$(curl -fs "http://127.0.0.1:$PORT/props" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("model_path",""))' 2>/dev/null || true)
  case "$serving" in
    */"$MODEL".gguf) say "using the server already on $PORT ($serving)" ;;
    *) say "warning: a server is already on $PORT serving '${serving:-unknown}', not $MODEL; using it" ;;
  esac
else
  LOCAL_LLM_PORT=$PORT bash "$LOCAL_LLM_SH" start "$MODEL" >&2
  started_server=1
fi
SERVER_LOG="$LLM_DIR/server-$PORT.log"
# A request cut off by SIGINT is cancelled, but llama.cpp finishes the prompt batch it is in:
# wait until no slot is busy before the next tool's clock starts (at most 10 minutes).
wait_idle() {
  local i
  for i in $(seq 1 600); do
    curl -fs "http://127.0.0.1:$PORT/slots" | python3 -c 'import json,sys; sys.exit(any(s.get("is_processing") for s in json.load(sys.stdin)))' 2>/dev/null && return 0
    [ "$i" = 1 ] && say "waiting for the server to be idle"
    sleep 1
  done
  say "warning: the server is still busy"
}
log_size() { if [ -f "$SERVER_LOG" ]; then wc -c < "$SERVER_LOG"; else echo 0; fi; }

# --- three clones of HEAD
for tree in baseline improve coverup; do
  rm -rf "${OUT:?}/$tree"
  git clone -q "$PROJECT" "$OUT/$tree"
  printf '.venv\n.improve/\n.coverage*\ncoverup-*\n' >> "$OUT/$tree/.git/info/exclude"
done
ln -s "$PROJECT/.venv" "$OUT/improve/.venv"
say "work dir $OUT; $MINUTES min each, improve first"

# --- improve
wait_idle
log0=$(log_size)
t0=$(date +%s)
read -ra improve_extra <<< "${IMPROVE_ARGS:-}"
imp_rc=0
# improve's own --max-duration ends it (a call to this local server still running then is
# stopped); the timeout, 30 s later, is only a backstop.
timeout -s INT -k 60 "$((SECS + 30))" "$IMPROVE_BIN" --repo "$OUT/improve" -n "$IMPROVE_ITERATIONS" \
  --provider openai --llm-url "$URL" --model local --llm-timeout 20m --max-duration "${MINUTES}m" \
  ${improve_extra[@]+"${improve_extra[@]}"} \
  > "$OUT/improve.out" 2> "$OUT/improve.err" || imp_rc=$?
imp_secs=$(( $(date +%s) - t0 ))
wait_idle
log1=$(log_size)
say "improve exited $imp_rc after ${imp_secs}s"
"$IMPROVE_BIN" status --json --repo "$OUT/improve" > "$OUT/improve-status.json" 2>> "$OUT/improve.err" || echo '{}' > "$OUT/improve-status.json"
"$IMPROVE_BIN" log --json --repo "$OUT/improve" > "$OUT/improve-log.json" 2>> "$OUT/improve.err" || echo '[]' > "$OUT/improve-log.json"
"$IMPROVE_BIN" report --format json --repo "$OUT/improve" > "$OUT/improve-report.json" 2>> "$OUT/improve.err" || echo '{}' > "$OUT/improve-report.json"

jq_status() {
  python3 - "$OUT/improve-status.json" "$1" <<'PY'
import json, sys
v = json.load(open(sys.argv[1])).get(sys.argv[2])
print(",".join(v) if isinstance(v, list) else ("" if v is None else v))
PY
}
packages=$(jq_status packages)
tests_dir=${VS_TESTS_DIR:-$(jq_status tests_dirs | cut -d, -f1)}
run_branch=$(jq_status run_branch)
package_dir=${VS_PACKAGE_DIR:-${packages%%,*}}
[ -n "$package_dir" ] || { say "improve detected no package (see $OUT/improve.err); set VS_PACKAGE_DIR"; exit 1; }
packages=${VS_PACKAGE_DIR:-$packages}
tests_dir=${tests_dir:-tests}
[ "$packages" = "$package_dir" ] || say "warning: CoverUp gets only the first package, $package_dir (of $packages)"

# --- CoverUp: gpt-v1 (gpt-v2 needs function calling), one request at a time, its default 3
# attempts per segment, its tests written into the clone. The model is named gpt-4o-mini because
# litellm prices every answer and stops at a name it does not know (ModelNotMappedError for
# openai/local, after the first answer); llama.cpp serves whatever it loaded, whatever the name.
mkdir -p "$OUT/coverup/$tests_dir"
coverup_args=(--model openai/gpt-4o-mini --prompt gpt-v1 --max-concurrency 1 --tests-dir "$tests_dir"
  --checkpoint "$OUT/coverup-checkpoint.json" --log-file "$OUT/coverup-log")
case "$package_dir" in
  *.py) coverup_args+=("$package_dir") ;;
  *) coverup_args+=(--package-dir "$package_dir") ;;
esac
log2=$log1
t0=$(date +%s)
cov_rc=0
if [ "$VS_TOOLS" = both ]; then
  # tiktoken fetches gpt-4o-mini's encoding from the network unless it finds it in its cache: point
  # it at the copy litellm bundles (the registries are all this machine reaches).
  tokenizers=$("$COVERUP_VENV/bin/python" -c 'import litellm, os; print(os.path.join(os.path.dirname(litellm.__file__), "litellm_core_utils", "tokenizers"))' 2>/dev/null || true)
  ( cd "$OUT/coverup" &&
    OPENAI_API_BASE=$URL OPENAI_API_KEY=sk-local-dummy LITELLM_LOCAL_MODEL_COST_MAP=True \
    TIKTOKEN_CACHE_DIR=${TIKTOKEN_CACHE_DIR:-$tokenizers} \
    timeout -s INT -k 60 "$SECS" "$COVERUP_VENV/bin/coverup" "${coverup_args[@]}" ) \
    > "$OUT/coverup.out" 2>&1 || cov_rc=$?
  cov_secs=$(( $(date +%s) - t0 ))
  wait_idle
  log3=$(log_size)
  say "CoverUp exited $cov_rc after ${cov_secs}s"
  find "$OUT/coverup/$tests_dir" -maxdepth 1 -name 'tmp_test_*.py' -delete  # its candidate in flight, if killed
else
  cov_rc=skipped cov_secs=0 log3=$log2
  say "CoverUp not run (VS_TOOLS=improve)"
fi

# --- the same measurement for the three trees
if [ -n "$run_branch" ]; then
  rm -rf "$OUT/improve-after"
  git -C "$OUT/improve" worktree add -q --detach "$OUT/improve-after" "$run_branch"
fi
measure() {  # tree label
  local tree=$1 label=$2 src=() p
  IFS=, read -ra pkgs <<< "$packages"
  for p in "${pkgs[@]}"; do src+=("$tree/$p"); done
  local srcs; srcs=$(IFS=,; echo "${src[*]}")
  (
    cd "$tree"
    export PYTHONPATH="$tree:$tree/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONHASHSEED=0
    "$PY" -m pytest --collect-only -q -p no:cacheprovider > "$OUT/$label.collect" 2>&1 || true
    if [[ "$packages" == *.py* ]]; then cov_sel=(--include="$srcs"); else cov_sel=(--source="$srcs"); fi
    "$PY" -m coverage run --branch --data-file="$OUT/$label.coverage" "${cov_sel[@]}" \
      -m pytest -q -p no:cacheprovider > "$OUT/$label.pytest" 2>&1 || true
    "$PY" -m coverage json --data-file="$OUT/$label.coverage" -o "$OUT/$label.cov.json" > /dev/null 2>&1 || true
  )
}
say "measuring baseline, improve's branch ${run_branch:-(none)} and CoverUp's tree"
measure "$OUT/baseline" baseline
if [ -n "$run_branch" ]; then measure "$OUT/improve-after" improve; fi
if [ "$VS_TOOLS" = both ]; then measure "$OUT/coverup" coverup; fi

# --- one table
python3 - "$OUT" "$SERVER_LOG" "$NAME" "$MINUTES" "$MODEL" "$packages" "$tests_dir" "$started_server" \
  "$imp_rc" "$imp_secs" "$log0" "$log1" "$cov_rc" "$cov_secs" "$log2" "$log3" <<'PY'
import json, os, re, sys
(out, server_log, name, minutes, model, packages, tests_dir, started, imp_rc, imp_secs,
 log0, log1, cov_rc, cov_secs, log2, log3) = sys.argv[1:]

def load(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default

def text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""

def collected(label):
    t = text(f"{out}/{label}.collect")
    m = re.search(r"(\d+) tests? collected", t) or re.search(r"collected (\d+) items?", t)
    return int(m.group(1)) if m else (0 if "no tests collected" in t else None)

def summary(label):
    lines = [l.strip("= ") for l in text(f"{out}/{label}.pytest").splitlines() if l.strip()]
    for l in reversed(lines):
        if re.search(r"\d+ (passed|failed|error)", l):
            return re.sub(r" in [\d.]+s.*$", "", l)
    return "?"

def cov(label):
    t = load(f"{out}/{label}.cov.json", {}).get("totals")
    return t["percent_covered"] if t else None

def server_slice(a, b):
    a, b = int(a), int(b)
    if not os.path.exists(server_log) or b <= a:
        return None
    with open(server_log, "rb") as f:
        f.seek(a)
        s = f.read(b - a).decode(errors="replace")
    return {
        "requests": len(re.findall(r"launch_slot_", s)),
        "cancelled": len(re.findall(r"cancel task", s)),
        "prompt": sum(int(x) for x in re.findall(r"prompt eval time =\s*[\d.]+ ms /\s*(\d+) tokens", s)),
        "gen": sum(int(x) for x in re.findall(r"\|\s+eval time =\s*[\d.]+ ms /\s*(\d+) tokens", s)),
    }

# improve's figures: status --json, log --json, report --format json
st = load(f"{out}/improve-status.json", {})
log = load(f"{out}/improve-log.json", [])
rep = load(f"{out}/improve-report.json", {})
imp_calls = sum(int(it.get("llm_calls") or 0) for it in log) if isinstance(log, list) else None
imp_iters = len(log) if isinstance(log, list) else 0
answers = rep.get("answers") if isinstance(rep, dict) else None

# CoverUp's figures: its log holds every request (a JSON object with "messages") and every
# response (one with "usage"); its checkpoint the counters G(ood) F(ailed) U(seless) R(etry).
cu_calls = cu_sent = cu_in = cu_out = 0
for block in re.split(r"^---- \S+ .* ----$", text(f"{out}/coverup-log"), flags=re.M):
    try:
        j = json.loads(block)
    except ValueError:
        continue
    if isinstance(j, dict) and "usage" in j and "choices" in j:
        cu_calls += 1
        u = j.get("usage") or {}
        cu_in += int(u.get("prompt_tokens") or 0)
        cu_out += int(u.get("completion_tokens") or 0)
    elif isinstance(j, dict) and "messages" in j:
        cu_sent += 1
ck = load(f"{out}/coverup-checkpoint.json", {})
counters = ck.get("counters", {})
cu_files = 0
tdir = os.path.join(out, "coverup", tests_dir)
if os.path.isdir(tdir):
    cu_files = len([f for f in os.listdir(tdir) if re.fullmatch(r"test_coverup_\d+\.py", f)])

def pct(v):
    return "–" if v is None else f"{v:.2f}%"

def delta(v, base):
    return "" if v is None or base is None else f" ({v - base:+.2f})"

def tests(n, base):
    return "–" if n is None else (f"{n}" if base is None or n == base else f"{n} ({n - base:+d})")

b_cov, i_cov, c_cov = cov("baseline"), cov("improve"), cov("coverup")
b_n, i_n, c_n = collected("baseline"), collected("improve"), collected("coverup")
si, sc = server_slice(log0, log1), server_slice(log2, log3)

def srv(s):
    if s is None:
        return "–"
    return f"{s['requests']} requests ({s['cancelled']} cancelled), {s['prompt']} prompt tokens evaluated, {s['gen']} generated"

def how(rc):
    if rc == "skipped":
        return "not run"
    return "stopped by SIGINT at the time limit" if rc == "124" else f"exit {rc}"

def num(v):
    return "–" if v is None else f"{v:,}".replace(",", " ")

rows = [
    ("coverage (branch, package only)", pct(b_cov), pct(i_cov) + delta(i_cov, b_cov), pct(c_cov) + delta(c_cov, b_cov)),
    ("tests collected", tests(b_n, None), tests(i_n, b_n), tests(c_n, b_n)),
    ("pytest", summary("baseline"), summary("improve") if i_cov is not None else "–", summary("coverup")),
    ("wall time, exit code", "–", f"{imp_secs} s, {how(imp_rc)}", f"{cov_secs} s, {how(cov_rc)}"),
    ("LLM calls answered", "–", num(imp_calls), f"{cu_calls} ({cu_sent} sent)"),
    ("prompt tokens", "–", num(st.get("tokens_in")), num(cu_in)),
    ("completion tokens", "–", num(st.get("tokens_out")), num(cu_out)),
    ("server log (llama.cpp)", "–", srv(si), srv(sc)),
    ("kept", "–",
     f"{st.get('kept', 0)} of {imp_iters} iterations, {st.get('tests_added', 0)} tests" + (f"; stop: {st.get('stop_reason')}" if st.get("stop_reason") else ""),
     f"{cu_files} test files (G={counters.get('G', 0)} F={counters.get('F', 0)} U={counters.get('U', 0)} R={counters.get('R', 0)})"),
    ("improve: report `answers`", "–",
     ", ".join(f"{k}={v}" for k, v in answers.items()) if isinstance(answers, dict) else "–", "–"),
]
print(f"\n{name}: {minutes} min each, model {model}, packages {packages}, tests dir {tests_dir}"
      + ("" if started == "1" else " (server was already running: its log may hold other clients' requests)"))
print(f"work dir: {out}\n")
print("| | baseline | improve | CoverUp 0.6.3 |")
print("| --- | --- | --- | --- |")
for r in rows:
    print("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
PY
