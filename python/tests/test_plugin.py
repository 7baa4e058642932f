"""The pytest plugin's bookkeeping: names, outcomes, per-test gain, the mutant loop's choices;
then a few real pytest runs (in a subprocess: the plugin keeps its counts in module globals)."""
import json
import os
import sys
import types

import pytest
from coverage import CoverageData

import improve_plugin as plugin
import mutants
from conftest import PYTHON_DIR


@pytest.mark.parametrize(
    ("nodeid", "name"),
    [
        ("tests/test_x.py::test_a", "test_a"),
        ("tests/test_x.py::TestK::test_b[1-2]", "TestK::test_b"),
        ("tests/test_x.py", None),
    ],
)
def test_name_of_is_the_name_improve_prunes(nodeid, name):
    assert plugin.name_of(nodeid) == name


def report(nodeid, when, outcome):
    return types.SimpleNamespace(
        nodeid=nodeid, when=when, failed=outcome == "failed", passed=outcome == "passed"
    )


def test_outcomes_count_runs_passed_and_failed():
    outcomes = {}
    for r in [
        report("t.py::test_a", "setup", "passed"),
        report("t.py::test_a", "call", "passed"),
        report("t.py::test_a", "teardown", "passed"),
        report("t.py::test_b", "setup", "failed"),
        report("t.py::test_a", "call", "failed"),
    ]:
        plugin.record_outcome(outcomes, r)
    assert outcomes == {"t.py::test_a": [1, 1], "t.py::test_b": [0, 1]}


def test_a_parametrized_test_counts_only_when_every_case_always_passed():
    outcomes = {
        "t.py::test_p[1]": [2, 0],
        "t.py::test_p[2]": [1, 1],
        "t.py::test_q[1]": [2, 0],
        "t.py::test_q[2]": [2, 0],
        "t.py::test_skipped": [0, 0],
        "t.py::test_a": [1, 0],
    }
    assert plugin.gain_candidates(outcomes) == ["t.py::test_q[1]", "t.py::test_q[2]", "t.py::test_a"]


def coverage_data(worktree, runs):
    """In-memory coverage data: {context: {file: [arcs]}}, files relative to `worktree`."""
    data = CoverageData(no_disk=True)
    for context, files in runs.items():
        data.set_context(context)
        data.add_arcs({os.path.join(worktree, f): arcs for f, arcs in files.items()})
    return data


def test_gain_is_what_each_test_adds_beyond_the_tip_and_the_tests_before_it(tmp_path):
    worktree = str(tmp_path)
    a_arcs = [(-1, 1), (1, 2), (2, 3), (3, -1)]
    data = coverage_data(
        worktree,
        {
            "t.py::test_a": {"pkg/m.py": a_arcs},
            "t.py::test_b": {"pkg/m.py": [(-1, 1), (1, 2), (2, 5), (5, -1)], "pkg/new.py": [(-1, 1), (1, 2)]},
            "t.py::test_c": {"pkg/m.py": a_arcs},
            "t.py::test_p[1]": {"pkg/m.py": [(-1, 1), (1, 7), (7, -1)]},
            "t.py::test_p[2]": {"pkg/m.py": [(-1, 1), (1, 8), (8, -1)]},
            "t.py::test_out": {"../elsewhere.py": [(-1, 1), (1, 2)]},
        },
    )
    before = {
        "pkg/m.py": {
            "executed_lines": [1, 2],
            "missing_lines": [3, 5, 7, 8],
            "executed_branches": [[2, 3]],
            "missing_branches": [[2, 5]],
        }
    }
    nodeids = ["t.py::test_a", "t.py::test_b", "t.py::test_c", "t.py::test_p[1]", "t.py::test_p[2]"]
    result = plugin.gain(data, worktree, before, nodeids)
    assert result["adds"] == {
        "test_a": {"pkg/m.py": {"lines": [3], "branches": []}},
        # A branch of the tip's report counts; for a module the tip lacks, every real arc does.
        "test_b": {
            "pkg/m.py": {"lines": [5], "branches": [(2, 5)]},
            "pkg/new.py": {"lines": [1, 2], "branches": [(1, 2)]},
        },
        "test_p": {"pkg/m.py": {"lines": [7, 8], "branches": []}},
    }
    assert result["redundant"] == ["test_c"]
    assert result["covers"]["test_a"] == {"pkg/m.py": [1, 2, 3]}
    assert result["covers"]["test_p"] == {"pkg/m.py": [1, 7, 8]}
    assert "test_out" not in result["covers"]


def test_lines_no_report_counts_are_no_gain(tmp_path):
    # Line 4 continues the statement of line 3, line 6 is excluded (`if TYPE_CHECKING:`): the
    # raw data has them, the report counts neither.
    worktree = str(tmp_path)
    data = coverage_data(
        worktree,
        {
            "t.py::test_cont": {"pkg/m.py": [(-1, 1), (1, 4), (4, 6), (6, -1)]},
            "t.py::test_real": {"pkg/m.py": [(-1, 1), (1, 5), (5, -1)]},
        },
    )
    before = {"pkg/m.py": {"executed_lines": [1, 3], "missing_lines": [5], "executed_branches": []}}
    result = plugin.gain(data, worktree, before, ["t.py::test_cont", "t.py::test_real"])
    assert result["redundant"] == ["test_cont"]
    assert result["adds"] == {"test_real": {"pkg/m.py": {"lines": [5], "branches": []}}}
    # What each test ran still counts for the mutation check.
    assert result["covers"]["test_cont"] == {"pkg/m.py": [1, 4, 6]}


def test_mutated_replaces_the_byte_span():
    source = "x = 'é' < 1\n".encode()
    start = source.index(b"<")
    mutant = {"start": start, "end": start + 1, "text": ">="}
    assert plugin.mutated(source, mutant) == "x = 'é' >= 1\n".encode()


def test_kill_order_runs_passing_tests_that_killed_nothing_first():
    order = plugin.kill_order(["k1", "a", "failing", "b"], {"k1", "a", "b"}, {"k1"})
    assert order == ["a", "b", "k1"]


@pytest.mark.parametrize(
    ("by", "timed_out", "status"),
    [([], False, "survived"), (["t"], False, "killed"), (["t"], True, "timed out")],
)
def test_status_of(by, timed_out, status):
    assert plugin.status_of(by, timed_out) == status


@pytest.fixture
def project(pytester, monkeypatch):
    """A small project for real runs, with the plugin importable as improve puts it."""
    monkeypatch.setenv("PYTHONPATH", PYTHON_DIR)
    for name in vars(plugin):
        if name.startswith("ENV_"):
            monkeypatch.delenv(getattr(plugin, name), raising=False)
    pytester.makepyfile(
        calc="def add(a, b):\n    return a + b\n\n\ndef sign(x):\n    return 1 if x > 0 else -1\n",
        test_calc=(
            "from calc import add, sign\n\n\n"
            "def test_add():\n    assert add(2, 3) == 5\n\n\n"
            "def test_runs_add():\n    add(1, 1)\n\n\n"
            "def test_broken():\n    assert sign(1) == 7\n"
        ),
    )
    return pytester


def test_a_mutant_run_says_what_killed_each_mutant(project, monkeypatch):
    target = str(project.path / "calc.py")
    made = mutants.mutants(target, {"test_add": [2], "test_runs_add": [2], "test_broken": [6]}, 20)
    chosen = [m for m in made["mutants"] if m["operator"] in ("arithmetic", "return")]
    chosen.append(dict(chosen[0], id=99, scopes=[["gone", 40]]))
    spec = project.path / "spec.json"
    spec.write_text(json.dumps({"target": target, "mutants": chosen, "limit": 5.0}))
    out = project.path / "out.jsonl"
    monkeypatch.setenv(plugin.ENV_MUTANTS, str(spec))
    monkeypatch.setenv(plugin.ENV_MUTANTS_OUT, str(out))
    project.runpytest_subprocess("-p", "improve_plugin", "-q")
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert events[0] == {"baseline": ["test_add", "test_runs_add"]}
    ends = {e["id"]: e for e in events if "status" in e}
    by_line = {m["id"]: m for m in chosen}
    for mid, m in by_line.items():
        if mid == 99:
            assert ends[mid]["status"] == "not applied"
            assert ends[mid]["why"] == "no live function of the module runs that line"
        elif m["line"] == 2:
            # test_runs_add crashed nothing (`a - b` runs fine): only test_add's assert noticed.
            assert ends[mid] == {
                "id": mid,
                "status": "killed",
                "by": ["test_add"],
                "how": {"test_add": "assertion"},
            }
        else:
            # Only the failing test covers sign(): nothing runs against its mutants.
            assert ends[mid]["status"] == "survived"
    assert (project.path / "calc.py").read_text().startswith("def add(a, b):\n    return a + b")


def test_each_kill_says_whether_an_assertion_or_a_crash_noticed_it(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", PYTHON_DIR)
    pytester.makepyfile(
        calc="def half(x):\n    if x < 0:\n        raise ValueError(x)\n    return x // 2\n",
        test_calc=(
            "import pytest\nfrom calc import half\n\n\n"
            "def test_calls():\n    half(4)\n\n\n"
            "def test_value():\n    assert half(4) == 2\n\n\n"
            "def test_error():\n    with pytest.raises(ValueError):\n        half(-1)\n"
        ),
    )
    target = str(pytester.path / "calc.py")
    source = (pytester.path / "calc.py").read_bytes()
    everyone = ["test_calls", "test_value", "test_error"]

    def mutant(mid, old, new):
        start = source.index(old.encode())
        return {"id": mid, "line": 1, "start": start, "end": start + len(old), "text": new,
                "scopes": [["half", 1]], "tests": everyone, "operator": "x", "before": "",
                "after": ""}

    chosen = [
        # Every call raises: test_calls crashes, test_value too; test_error still passes.
        mutant(1, "return x // 2", "return x // None"),
        # The raise removed: DID NOT RAISE, an assertion.
        mutant(2, "raise ValueError(x)", "pass"),
    ]
    spec = pytester.path / "spec.json"
    spec.write_text(json.dumps({"target": target, "mutants": chosen, "limit": 5.0}))
    out = pytester.path / "out.jsonl"
    monkeypatch.setenv(plugin.ENV_MUTANTS, str(spec))
    monkeypatch.setenv(plugin.ENV_MUTANTS_OUT, str(out))
    pytester.runpytest_subprocess("-p", "improve_plugin", "-q")
    ends = {e["id"]: e for e in map(json.loads, out.read_text().splitlines()) if "status" in e}
    assert ends[1]["how"] == {"test_calls": "crash", "test_value": "crash"}
    assert ends[2]["how"] == {"test_error": "assertion"}


def test_kind_of_sorts_failures():
    def excinfo(exc):
        try:
            raise exc
        except BaseException:
            return pytest.ExceptionInfo.from_current()

    assert plugin.kind_of(excinfo(AssertionError("x"))) == "assertion"
    assert plugin.kind_of(excinfo(pytest.fail.Exception("DID NOT RAISE"))) == "assertion"
    assert plugin.kind_of(excinfo(TypeError("x"))) == "crash"
    assert plugin.kind_of(excinfo(plugin.MutantTimeout("x"))) == "timeout"
    assert plugin.kind_of(None) == "crash"
    # Raised by the test's own code (a wrong value it went on to use): the test noticed.
    assert plugin.kind_of(excinfo(TypeError("x")), __file__) == "assertion"

    def from_the_code():
        try:
            json.loads("{")
        except BaseException:
            return pytest.ExceptionInfo.from_current()

    # Raised inside the code under test: a crash, whoever called it.
    assert plugin.kind_of(from_the_code(), __file__) == "crash"
    assert plugin.settled({"a": "crash"}) is False
    assert plugin.settled({"a": "crash", "b": "assertion"}) is True


def test_a_collect_only_run_describes_the_project(project, monkeypatch):
    out = project.path / "project.json"
    monkeypatch.setenv(plugin.ENV_PROJECT_OUT, str(out))
    monkeypatch.setenv(plugin.ENV_IMPORT_CHECK, "calc,no_such_module")
    project.makeini("[pytest]\ntestpaths = .\n")
    project.runpytest_subprocess("-p", "improve_plugin", "--collect-only", "-q")
    result = json.loads(out.read_text())
    assert result["files"] == ["test_calc.py"]
    assert result["testpaths"] == ["."]
    assert result["inifile"] == "tox.ini"
    assert result["imports"]["calc"]["file"] == str(project.path / "calc.py")
    assert result["imports"]["no_such_module"]["error"].startswith("ModuleNotFoundError")


def test_a_test_that_failed_is_skipped_on_the_reruns(project):
    twice = ["test_calc.py", "test_calc.py", "--keep-duplicates"]
    result = project.runpytest_subprocess("-p", "improve_plugin", *twice)
    result.assert_outcomes(passed=4, failed=1, skipped=1)


def test_a_run_under_coverage_writes_each_tests_gain(project, monkeypatch):
    out = project.path / "gain.json"
    before = project.path / "before.json"
    before.write_text(json.dumps({"files": {"calc.py": {"executed_lines": [1, 5]}}}))
    monkeypatch.setenv(plugin.ENV_GAIN_OUT, str(out))
    monkeypatch.setenv(plugin.ENV_GAIN_BEFORE, str(before))
    project.run(
        sys.executable, "-m", "coverage", "run", "--branch", "--source=.", "--omit=test_*",
        "-m", "pytest", "-p", "improve_plugin", "-q",
    )
    result = json.loads(out.read_text())
    # test_broken failed: it adds nothing. test_runs_add covers what test_add did before it.
    assert result["adds"] == {"test_add": {"calc.py": {"lines": [2], "branches": []}}}
    assert result["redundant"] == ["test_runs_add"]
    assert result["covers"]["test_runs_add"] == {"calc.py": [2]}
