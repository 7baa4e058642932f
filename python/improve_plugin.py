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

if os.environ.get("IMPROVE_BYTECODE_CACHE"):
    # Set here rather than through PYTHONPYCACHEPREFIX: that one would also move the bytecode of
    # Python's and pytest's own modules (imported before this) out of their installed
    # __pycache__, and the first run would compile all of them again. pytest's assertion
    # rewriter reads both settings when it writes a test module's bytecode.
    sys.pycache_prefix = os.environ["IMPROVE_BYTECODE_CACHE"]
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


# The coverage object, once stopped when the file's tests began to run again (see below):
# Coverage.current() knows only a running one.
_stopped = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    cov = _current() if os.environ.get("IMPROVE_GAIN_OUT") and not _stopped else None
    if cov is not None and item.nodeid in _outcomes:
        # The reruns (--keep-duplicates) only look for flaky tests: what each test covers was
        # recorded on its first run, and tracing the others would only cost time.
        cov.stop()
        _stopped.append(cov)
        cov = None
    if cov is not None:
        cov.switch_context(item.nodeid)
    yield
    if cov is not None:
        cov.switch_context("")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # The reruns (--keep-duplicates) look for flaky tests among those that passed: a test that
    # already failed is not run again.
    if _outcomes.get(item.nodeid, [0, 0])[1] > 0:
        pytest.skip("failed on an earlier run: not run again")


def pytest_runtest_logreport(report):
    counts = _outcomes.setdefault(report.nodeid, [0, 0])
    if report.failed:
        counts[1] += 1
    elif report.when == "call" and report.passed:
        counts[0] += 1


def name_of(nodeid):
    """`tests/test_x.py::TestK::test_b[1-2]` -> `TestK::test_b`, as improve prunes tests."""
    parts = nodeid.split("::")[1:]
    if not parts:
        return None
    parts[-1] = parts[-1].split("[")[0]
    return "::".join(parts)


def gain(data, worktree, before, nodeids):
    """What each test adds to the coverage in `before` (a JSON report) and of the tests before
    it, per measured file: {"adds": {name: {path: {"lines", "branches"}}}, "redundant": [..]}."""
    files = {}
    for path in data.measured_files():
        rel = os.path.relpath(path, worktree)
        if rel.startswith(".."):
            continue
        known = before.get(rel, {})
        taken = {tuple(b) for b in known.get("executed_branches", [])}
        files[path] = {
            "rel": rel,
            "known": rel in before,
            "covered": set(known.get("executed_lines", [])),
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
    adds, redundant = {}, []
    for name in names:
        added = {}
        for path, (lines, arcs) in per_test.get(name, {}).items():
            f = files[path]
            new_lines, new_arcs = lines - f["covered"], arcs - f["taken"]
            if new_lines or new_arcs:
                added[f["rel"]] = {"lines": sorted(new_lines), "branches": sorted(new_arcs)}
                f["covered"] |= new_lines
                f["taken"] |= new_arcs
        if added:
            adds[name] = added
        else:
            redundant.append(name)
    return {"adds": adds, "redundant": redundant}


def _write_gain(cov, session, out):
    try:
        with open(os.environ.get("IMPROVE_GAIN_BEFORE", ""), encoding="utf-8") as f:
            before = json.load(f).get("files", {})
    except (OSError, ValueError):
        before = {}
    # A parametrized test counts only when every case passed every time: it is kept or
    # dropped whole.
    by_name = {}
    for nodeid, (passed, failed) in _outcomes.items():
        ok = passed > 0 and failed == 0
        by_name.setdefault(name_of(nodeid), []).append((nodeid, ok))
    candidates = [
        nodeid
        for cases in by_name.values()
        if all(ok for _, ok in cases)
        for nodeid, _ in cases
    ]
    result = gain(cov.get_data(), str(session.config.rootpath), before, candidates)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    cov = _stopped[0] if _stopped else _current()
    gain_out = os.environ.get("IMPROVE_GAIN_OUT")
    report_out = os.environ.get("IMPROVE_COVERAGE_JSON")
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
    out = os.environ.get("IMPROVE_PROJECT_OUT")
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
    names = [n for n in os.environ.get("IMPROVE_IMPORT_CHECK", "").split(",") if n]
    result = {
        "testpaths": _ini_list(config, "testpaths"),
        "python_files": _ini_list(config, "python_files"),
        "files": sorted(f for f in files if not f.startswith("..")),
        "inifile": os.path.relpath(str(inipath), rootpath) if inipath else None,
        "imports": {name: _import_check(name) for name in names},
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f)
