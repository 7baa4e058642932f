"""pytest plugin that improve puts on the test command's path (`-p improve_plugin`).

Under `coverage run` it saves improve a Python process or two per pytest run:
- with IMPROVE_GAIN_OUT set, it labels every test's coverage with the test's node id (what
  `--cov-context=test` does in pytest-cov) and, when the session ends, writes what each test that
  passed every time adds to the package's coverage beyond the report in IMPROVE_GAIN_BEFORE
  (the run branch's tip) and beyond the tests before it in the file;
- with IMPROVE_COVERAGE_JSON set, it writes coverage's JSON report in-process when the session
  ends, instead of a second `coverage json` process.
Without coverage.py, or without those variables, it does nothing.

With IMPROVE_PROJECT_OUT set (a `--collect-only` run in the baseline's worktree), it writes what
pytest's configuration and collection say about the project's tests (`testpaths`,
`python_files`, the config file, the files tests were collected from) and, for each import
name in IMPROVE_IMPORT_CHECK, where that code is imported from or why it cannot be.

A test that failed is not run again when the file is given several times (the reruns that look
for flaky tests): it is skipped.

With IMPROVE_MUTANTS set (a JSON file of mutants made by improve's helper) and IMPROVE_MUTANTS_OUT
(a file to write), the collected tests are not run as usual: each one runs once as it is, then
again with each mutant of the target module swapped in, in memory: the code object of each
function the mutant changes is replaced (and put back) on every live function object made from
it, so `from module import f` in a test sees the mutant too, and the module's file is never
written. A mutant is killed when a test covering its line fails with it, and each kill says
how the test failed: by an assertion (a failed `assert`, `pytest.raises` or `pytest.warns` not
met, a unittest or mock `assert*`: AssertionError or pytest's `Failed`), by a crash (any other
exception, which the mutated code raised) or by a timeout. A run that goes past its time limit
is stopped by SIGALRM and kills the mutant; one that does not stop (the code swallows the alarm)
has its whole process group killed by a watchdog thread, after it wrote which mutant hung. One
JSON line per event is appended to IMPROVE_MUTANTS_OUT.

With IMPROVE_STOPPERS_OUT set (a whole-suite run under coverage), it notes each test after which
coverage no longer measures as it did: the trace or profile function replaced (`sys.settrace`,
`pdb.set_trace`), coverage stopped, or the working directory changed; and writes them there as a
JSON list when the session ends (after going back to the first working directory, so the
in-process report is written where it was meant to be).

With IMPROVE_BYTECODE_CACHE set, the bytecode of everything imported from here on (the project's
package, conftest files and tests) is cached there, outside the worktree, for the next run in
the same worktree to reuse.
"""
import contextlib
import importlib
import io
import json
import os
import re
import sys
import traceback

import pytest

# The environment improve sets for this plugin, named once here; src/pytest/plugin_env.rs names
# the same variables, and a test there checks that the two blocks agree.
ENV_BYTECODE_CACHE = "IMPROVE_BYTECODE_CACHE"
ENV_GAIN_OUT = "IMPROVE_GAIN_OUT"
ENV_GAIN_BEFORE = "IMPROVE_GAIN_BEFORE"
ENV_COVERAGE_JSON = "IMPROVE_COVERAGE_JSON"
ENV_MUTANTS = "IMPROVE_MUTANTS"
ENV_MUTANTS_OUT = "IMPROVE_MUTANTS_OUT"
ENV_PROJECT_OUT = "IMPROVE_PROJECT_OUT"
ENV_IMPORT_CHECK = "IMPROVE_IMPORT_CHECK"
ENV_STOPPERS_OUT = "IMPROVE_STOPPERS_OUT"

if os.environ.get(ENV_BYTECODE_CACHE):
    # Set here rather than through PYTHONPYCACHEPREFIX: that one would also move the bytecode of
    # Python's and pytest's own modules (imported before this) out of their installed
    # __pycache__, and the first run would compile all of them again. pytest's assertion
    # rewriter reads both settings when it writes a test module's bytecode.
    sys.pycache_prefix = os.environ[ENV_BYTECODE_CACHE]
    sys.dont_write_bytecode = False

try:
    import coverage
except ImportError:  # coverage.py is optional
    coverage = None

# node id -> [runs passed, runs failed], in the order pytest ran them.
_outcomes = {}


def _current():
    if coverage is None:
        return None
    current = getattr(coverage.Coverage, "current", None)
    return current() if current else None


def measuring_state(cwd):
    """What a test may change that stops coverage from measuring what follows it."""
    cov = _current()
    return {
        "trace": sys.gettrace(),
        "profile": sys.getprofile(),
        "coverage": cov,
        "cwd": cwd,
    }


# What changed each key, in the words `improve show` uses.
_STOPPER_WORDS = {
    "trace": "replaced the trace function",
    "profile": "replaced the profile function",
    "coverage": "stopped coverage",
    "cwd": "changed the working directory",
}


def stoppers_of(nodeid, before, after):
    """What the test `nodeid` changed of `before`, as [{test, culprit}]."""
    return [
        {"test": nodeid, "culprit": words}
        for key, words in _STOPPER_WORDS.items()
        if before[key] is not after[key] and before[key] != after[key]
    ]


# Tests after which coverage no longer measured as before, and the first working directory.
_stoppers = []
_first_cwd = []


def _cwd():
    try:
        return os.getcwd()
    except OSError:  # the test removed it
        return None


# The coverage object, once stopped when the file's tests began to run again (see below):
# Coverage.current() knows only a running one.
_stopped = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    cov = _current() if os.environ.get(ENV_GAIN_OUT) and not _stopped else None
    if cov is not None and item.nodeid in _outcomes:
        # The reruns (--keep-duplicates) only look for flaky tests: what each test covers was
        # recorded on its first run, and tracing the others would only cost time.
        cov.stop()
        _stopped.append(cov)
        cov = None
    if cov is not None:
        cov.switch_context(item.nodeid)
    watch = os.environ.get(ENV_STOPPERS_OUT)
    if watch and not _first_cwd:
        _first_cwd.append(_cwd())
    before = measuring_state(_cwd()) if watch else None
    yield
    if cov is not None:
        cov.switch_context("")
    if before is not None:
        _stoppers.extend(stoppers_of(item.nodeid, before, measuring_state(_cwd())))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # The reruns (--keep-duplicates) look for flaky tests among those that passed: a test that
    # already failed is not run again.
    if _outcomes.get(item.nodeid, [0, 0])[1] > 0:
        pytest.skip("failed on an earlier run: not run again")


def record_outcome(outcomes, report):
    """Counts one phase's report in {node id: [runs passed, runs failed]}: a failure in any
    phase is a failed run, a passed call a passed one."""
    counts = outcomes.setdefault(report.nodeid, [0, 0])
    if report.failed:
        counts[1] += 1
    elif report.when == "call" and report.passed:
        counts[0] += 1


def pytest_runtest_logreport(report):
    record_outcome(_outcomes, report)


def name_of(nodeid):
    """`tests/test_x.py::TestK::test_b[1-2]` -> `TestK::test_b`, as improve prunes tests."""
    parts = nodeid.split("::")[1:]
    if not parts:
        return None
    parts[-1] = parts[-1].split("[")[0]
    return "::".join(parts)


def gain(data, worktree, before, nodeids):
    """What each test adds to the coverage in `before` (a JSON report) and of the tests before
    it, per measured file: {"adds": {name: {path: {"lines", "branches"}}}, "redundant": [..],
    "covers": {name: {path: [every line it ran]}}} (the lines the mutation check mutates)."""
    files = {}
    for path in data.measured_files():
        rel = os.path.relpath(path, worktree)
        if rel.startswith(".."):
            continue
        known = before.get(rel, {})
        taken = {tuple(b) for b in known.get("executed_branches", [])}
        covered = set(known.get("executed_lines", []))
        files[path] = {
            "rel": rel,
            "known": rel in before,
            # Only statements count: the raw data also holds the continuation lines of a
            # statement and lines coverage.py excludes (`if TYPE_CHECKING:`), which no report
            # counts, so a test "adding" them adds nothing a reviewer would see.
            "statements": covered | set(known["missing_lines"]) if "missing_lines" in known else None,
            "covered": covered,
            "taken": taken,
            "branches": taken | {tuple(b) for b in known.get("missing_branches", [])},
        }
    per_test, names = {}, []
    for nodeid in nodeids:
        name = name_of(nodeid)
        if name is None:
            continue
        if name not in names:
            names.append(name)
        # Query contexts are regular expressions, searched: test_a would match test_ab.
        data.set_query_contexts(["^" + re.escape(nodeid) + "$"])
        got = per_test.setdefault(name, {})
        for path, f in files.items():
            lines = set(data.lines(path) or [])
            # Only arcs that are branches count (coverage also records entries and exits); for
            # a module the tip's report lacks, every arc between real lines counts (a module it
            # has without branches has none to add).
            arcs = {
                a
                for a in (data.arcs(path) or [])
                if a in f["branches"] or (not f["known"] and a[0] > 0 and a[1] > 0)
            }
            if lines or arcs:
                mine = got.setdefault(path, [set(), set()])
                mine[0] |= lines
                mine[1] |= arcs
    data.set_query_contexts(None)
    adds, redundant, covers = {}, [], {}
    for name in names:
        covers[name] = {
            files[path]["rel"]: sorted(lines) for path, (lines, _) in per_test.get(name, {}).items()
        }
        added = {}
        for path, (lines, arcs) in per_test.get(name, {}).items():
            f = files[path]
            if f["statements"] is not None:
                lines = lines & f["statements"]
            new_lines, new_arcs = lines - f["covered"], arcs - f["taken"]
            if new_lines or new_arcs:
                added[f["rel"]] = {"lines": sorted(new_lines), "branches": sorted(new_arcs)}
                f["covered"] |= new_lines
                f["taken"] |= new_arcs
        if added:
            adds[name] = added
        else:
            redundant.append(name)
    return {"adds": adds, "redundant": redundant, "covers": covers}


def gain_candidates(outcomes):
    """The node ids whose gain counts, in the order they ran, from {node id: [runs passed, runs
    failed]}: a parametrized test counts only when every case passed every time (it is kept or
    dropped whole)."""
    by_name = {}
    for nodeid, (passed, failed) in outcomes.items():
        ok = passed > 0 and failed == 0
        by_name.setdefault(name_of(nodeid), []).append((nodeid, ok))
    return [
        nodeid
        for cases in by_name.values()
        if all(ok for _, ok in cases)
        for nodeid, _ in cases
    ]


def _write_gain(cov, session, out):
    try:
        with open(os.environ.get(ENV_GAIN_BEFORE, ""), encoding="utf-8") as f:
            before = json.load(f).get("files", {})
    except (OSError, ValueError):
        before = {}
    result = gain(cov.get_data(), str(session.config.rootpath), before, gain_candidates(_outcomes))
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f)


def _write_stoppers():
    out = os.environ.get(ENV_STOPPERS_OUT)
    if not out:
        return
    if _first_cwd and _first_cwd[0] and _cwd() != _first_cwd[0]:
        with contextlib.suppress(OSError):
            os.chdir(_first_cwd[0])
    with open(out, "w", encoding="utf-8") as f:
        json.dump(_stoppers, f)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    _write_stoppers()
    cov = _stopped[0] if _stopped else _current()
    gain_out = os.environ.get(ENV_GAIN_OUT)
    report_out = os.environ.get(ENV_COVERAGE_JSON)
    if cov is None or not (gain_out or report_out):
        return
    out = gain_out or report_out
    try:
        if not _stopped:
            cov.stop()
        cov.save()
        if gain_out:
            _write_gain(cov, session, gain_out)
        else:
            # Quietly: pytest's own summary must stay the last line of the output.
            with contextlib.redirect_stdout(io.StringIO()):
                cov.json_report(outfile=report_out, pretty_print=False)
    except Exception as e:  # improve then does without (the report: the slow way)
        with contextlib.suppress(OSError):
            os.remove(out)
        print(f"improve_plugin: {e}")


def _ini_list(config, name):
    try:
        value = config.getini(name)
    except (ValueError, KeyError):
        return []
    if isinstance(value, str):
        value = value.split()
    return [str(v) for v in value]


def _import_check(name):
    try:
        module = importlib.import_module(name)
    except BaseException as e:  # a module may raise anything on import, SystemExit too
        tail = traceback.format_exception(type(e), e, e.__traceback__)
        return {"error": f"{type(e).__name__}: {e}", "traceback": "".join(tail)[-3000:]}
    return {
        "file": getattr(module, "__file__", None),
        "path": [str(p) for p in (getattr(module, "__path__", None) or [])],
    }


def pytest_collection_finish(session):
    out = os.environ.get(ENV_PROJECT_OUT)
    if not out:
        return
    config = session.config
    rootpath = str(config.rootpath)
    files = set()
    for item in session.items:
        # Doctests are collected from the code under test: those files are not test files.
        if type(item).__name__ == "DoctestItem":
            continue
        path = getattr(item, "path", None) or getattr(item, "fspath", None)
        if path is not None:
            files.add(os.path.relpath(str(path), rootpath))
    inipath = getattr(config, "inipath", None)
    names = [n for n in os.environ.get(ENV_IMPORT_CHECK, "").split(",") if n]
    result = {
        "testpaths": _ini_list(config, "testpaths"),
        "python_files": _ini_list(config, "python_files"),
        "files": sorted(f for f in files if not f.startswith("..")),
        "inifile": os.path.relpath(str(inipath), rootpath) if inipath else None,
        "imports": {name: _import_check(name) for name in names},
        # Compared with the ids of the baseline's own run: ids built from a set or a dict can
        # differ between two processes.
        "ids": [i.nodeid for i in session.items if type(i).__name__ != "DoctestItem"],
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f)


class MutantTimeout(BaseException):
    """Raised in a test run that outlived its limit under a mutant: the mutant hangs. A
    BaseException, so that an `except Exception` in the code under test does not swallow it."""


def _on_alarm(signum, frame):
    raise MutantTimeout("the test ran past its time limit under this mutant")


def mutated(source, mutant):
    """The bytes of `source` with the mutant's span (byte offsets) replaced by its text."""
    return source[: mutant["start"]] + mutant["text"].encode("utf-8") + source[mutant["end"] :]


def kill_order(tests, passing, killers):
    """The tests to run against a mutant: those covering it that passed as they were, the ones
    that have killed no mutant yet first (they run every time; a killer runs only while no
    other test has killed this mutant)."""
    return sorted((n for n in tests if n in passing), key=lambda n: n in killers)


# How a test failed under a mutant (the `how` of a kill).
ASSERTION, CRASH, TIMEOUT = "assertion", "crash", "timeout"


def kind_of(excinfo, test_path=None):
    """How a test failed, from the exception its failing phase raised: an assertion
    (AssertionError and its subclasses, which unittest's and mock's `assert*` raise; pytest's
    `Failed`, which `pytest.raises`/`pytest.warns` raise when nothing was raised or warned, and
    `pytest.fail`; or any exception raised by the test's own code in `test_path`, such as
    `assert f(x).name == 'a'` meeting a None: the test checked a value and it was wrong), a
    timeout (the mutant's alarm), or a crash (an exception raised inside the code under test)."""
    if excinfo is None:
        return CRASH
    if excinfo.errisinstance(MutantTimeout):
        return TIMEOUT
    if excinfo.errisinstance((AssertionError, pytest.fail.Exception)):
        return ASSERTION
    if test_path and _raised_in(excinfo, test_path):
        return ASSERTION
    return CRASH


def _raised_in(excinfo, path):
    """Whether the innermost frame of the exception's traceback is in the file `path`."""
    try:
        innermost = excinfo.traceback[-1]
        return os.path.samefile(str(innermost.path), str(path))
    except (IndexError, OSError, ValueError):
        return False


def settled(how):
    """Whether a mutant's kills so far settle it: killed by an assertion or a timeout. A
    mutant only crashed is run against the covering tests that killed before too, so that a
    test that would catch it by an assertion gets the chance."""
    return any(k != CRASH for k in how.values())


def status_of(by, timed_out):
    """What became of a mutant, from the tests that failed with it."""
    return "timed out" if timed_out else ("killed" if by else "survived")


class _Mutation:
    """What the mutation loop needs: the spec, where to write, the live functions of the
    target's file by (name, first line)."""

    def __init__(self, spec_path, out_path):
        with open(spec_path, encoding="utf-8") as f:
            self.spec = json.load(f)
        self.out = open(out_path, "a", encoding="utf-8")
        self.target = os.path.realpath(self.spec["target"])
        with open(self.target, "rb") as f:
            self.source = f.read()
        self.filename = None
        self.functions = {}
        self.caches = []

    def write(self, **event):
        self.out.write(json.dumps(event) + "\n")
        self.out.flush()
        os.fsync(self.out.fileno())

    def index(self):
        """Every function object made from the target's code, and the caches around them."""
        import functools
        import gc
        import types

        real, caches = {}, []
        for obj in gc.get_objects():
            if isinstance(obj, functools._lru_cache_wrapper):
                caches.append(obj)
            if not isinstance(obj, types.FunctionType):
                continue
            code = obj.__code__
            name = code.co_filename
            if name not in real:
                real[name] = os.path.realpath(name) == self.target
            if real[name]:
                self.filename = name
                self.functions.setdefault((code.co_name, code.co_firstlineno), []).append(obj)
        members = {id(f) for fs in self.functions.values() for f in fs}
        self.caches = [c for c in caches if id(getattr(c, "__wrapped__", None)) in members]

    def clear_caches(self):
        for cache in self.caches:
            with contextlib.suppress(Exception):
                cache.cache_clear()

    def swap_in(self, mutant):
        """Puts the mutant's code into the live functions; returns what to put back, or a
        reason it cannot be applied."""
        data = mutated(self.source, mutant)
        try:
            code = compile(data, self.filename or self.target, "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as e:
            return None, f"does not compile: {e}"
        new = {}
        stack = [code]
        while stack:
            c = stack.pop()
            new[(c.co_name, c.co_firstlineno)] = c
            stack.extend(k for k in c.co_consts if hasattr(k, "co_code"))
        undo = []
        for name, first in mutant["scopes"]:
            key = (name, first)
            if key not in new:
                continue
            for fn in self.functions.get(key, []):
                try:
                    undo.append((fn, fn.__code__))
                    fn.__code__ = new[key]
                except ValueError as e:  # the closure's cells differ
                    undo.pop()
                    self.put_back(undo)
                    return None, f"cannot be swapped in: {e}"
        if not undo:
            return None, "no live function of the module runs that line"
        self.clear_caches()
        return undo, None

    def put_back(self, undo):
        for fn, code in reversed(undo):
            fn.__code__ = code
        self.clear_caches()


# Set while the mutation loop runs; then the exception of the first failing phase of the test
# `_run_once` is running (noted by pytest_runtest_makereport).
_mutating = []
_failure = []


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item, call):
    excinfo = call.excinfo
    if _mutating and excinfo is not None and not _failure:
        if not excinfo.errisinstance(pytest.skip.Exception):
            _failure.append(excinfo)


def _run_once(item, limit):
    """Runs `item` on its own; whether it passed, and how it failed (None when it passed)."""
    import signal

    from _pytest.runner import runtestprotocol

    signal.signal(signal.SIGALRM, _on_alarm)
    # The alarm repeats: code that catches the first one does not hang the loop for good.
    signal.setitimer(signal.ITIMER_REAL, limit, 0.5)
    _failure.clear()
    try:
        reports = runtestprotocol(item, nextitem=None, log=False)
    except MutantTimeout:
        return False, TIMEOUT
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if all(not r.failed for r in reports):
        return True, None
    if any("MutantTimeout" in str(getattr(r, "longrepr", "") or "") for r in reports):
        return False, TIMEOUT
    return False, kind_of(_failure[0] if _failure else None, getattr(item, "path", None))


def _watchdog(state, m):
    """Kills this process group when a run outlives its limit by far (the alarm was swallowed
    or the code is stuck where a signal cannot reach it), after writing which mutant hung."""
    import signal
    import threading
    import time

    def watch():
        while True:
            time.sleep(0.2)
            current = state.get("running")
            if current and time.monotonic() > current[1]:
                m.write(id=current[0], status="hung", by=[current[2]], how={current[2]: TIMEOUT})
                os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session):
    spec, out = os.environ.get(ENV_MUTANTS), os.environ.get(ENV_MUTANTS_OUT)
    if not (spec and out) or session.config.option.collectonly:
        return None
    import time

    m = _Mutation(spec, out)
    m.index()
    _mutating.append(True)
    items = {}
    for item in session.items:
        items.setdefault(name_of(item.nodeid), []).append(item)
    # Each test as it is first: a test that fails here says nothing about a mutant.
    limits, passing = {}, set()
    base = float(m.spec.get("limit", 2.0))
    for name, cases in items.items():
        started = time.monotonic()
        ok = all(_run_once(item, 60.0)[0] for item in cases)
        limits[name] = base + 5 * (time.monotonic() - started)
        if ok:
            passing.add(name)
    m.write(baseline=sorted(passing))
    state = {}
    _watchdog(state, m)
    killers = set()
    for mutant in m.spec["mutants"]:
        undo, why = m.swap_in(mutant)
        if undo is None:
            m.write(id=mutant["id"], status="not applied", why=why)
            continue
        m.write(start=mutant["id"])
        by, how = [], {}
        try:
            for name in kill_order(mutant["tests"], passing, killers):
                if settled(how) and name in killers:
                    continue
                state["running"] = (mutant["id"], time.monotonic() + 3 * limits[name] + 5, name)
                for item in items.get(name, []):
                    ok, kind = _run_once(item, limits[name])
                    if not ok:
                        by.append(name)
                        how[name] = kind
                        break
                state["running"] = None
        finally:
            state["running"] = None
            m.put_back(undo)
        killers.update(by)
        timed_out = TIMEOUT in how.values()
        m.write(id=mutant["id"], status=status_of(by, timed_out), by=by, how=how)
    return True
