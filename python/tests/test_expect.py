"""Expected values from the code (ops instrument and adopt): the failing asserts of a new test
observed in a real pytest run, then given the values the code gave."""

import subprocess
import sys

import helper
from conftest import read

MODULE = """
def add(a, b):
    return a + b


def name(x):
    return "café-" + str(x)


class Box:
    pass


def box():
    return Box()


def counter(xs):
    return {x: xs.count(x) for x in xs}
"""


def run_pytest(path, cwd):
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path],
        cwd=cwd,
        capture_output=True,
        text=True,
    )


def observe_and_adopt(write, tmp_path, text, tests):
    """The whole round as improve makes it -> (instrument's answer, adopt's answer, file)."""
    write("calc.py", MODULE)
    path = write("test_new.py", text)
    record = str(tmp_path / "observed.jsonl")
    original = read(path)
    instrumented = helper.answer(
        {"op": "instrument", "file": path, "tests": tests, "record": record, "package": "calc"}
    )
    assert instrumented["ok"], instrumented
    if instrumented["asserts"]:
        run_pytest(path, tmp_path)
        with open(path, "w", encoding="utf-8") as f:
            f.write(original)
    adopted = helper.answer(
        {"op": "adopt", "file": path, "tests": tests, "record": record, "package": "calc"}
    )
    assert adopted["ok"], adopted
    return instrumented, adopted, read(path)


def test_wrong_literals_of_failing_tests_become_what_the_code_gave(write, tmp_path):
    instrumented, adopted, text = observe_and_adopt(
        write,
        tmp_path,
        """
        from calc import add, name, counter


        def test_add():
            assert add(2, 2) == 5
            assert 7 == add(3, 3)
            assert add(1, 1) == 2


        class TestName:
            def test_name(self):
                assert name(1) == "cafe-1"  # accents


        def test_counter():
            assert counter(["a", "b", "a"]) == {
                "a": 1,
            }
        """,
        ["test_add", "TestName::test_name", "test_counter"],
    )
    assert instrumented["asserts"] == 5
    assert adopted["adopted"] == 4
    assert adopted["values"] == [
        "test_add line 5: expected `5` -> `4`",
        "test_add line 6: expected `7` -> `6`",
        "TestName::test_name line 12: expected `\"cafe-1\"` -> `'café-1'`",
        "test_counter line 16: expected `{ \"a\": 1, }` -> `{'a': 2, 'b': 1}`",
    ]
    assert "    assert add(2, 2) == 4\n    assert 6 == add(3, 3)\n    assert add(1, 1) == 2\n" in text
    assert "assert name(1) == 'café-1'  # accents" in text
    assert 'assert counter(["a", "b", "a"]) == {\'a\': 2, \'b\': 1}\n' in text
    assert "__improve_observe__" not in text
    result = run_pytest(str(tmp_path / "test_new.py"), tmp_path)
    assert result.returncode == 0, result.stdout
    assert "3 passed" in result.stdout


def test_values_that_are_no_literal_or_change_each_time_are_left_alone(write, tmp_path):
    instrumented, adopted, text = observe_and_adopt(
        write,
        tmp_path,
        """
        from calc import add, box


        def test_box():
            assert box() == "a box"


        def test_loop():
            for i in range(3):
                assert add(i, 1) == 1


        def test_shape():
            assert add(1, 2) is None
            assert add(1, 2) in (1, 2)


        def test_not_asked():
            assert add(1, 2) == 4


        def test_environment():
            import os

            data = [1, 2]
            assert os.environ.get("CALC_NEVER_SET") == "x"
            assert len(data) == 3
        """,
        ["test_box", "test_loop", "test_shape", "test_environment"],
    )
    # box() is an object whose repr has an address; the loop saw 1, 2 and 3 on one line;
    # `is` and `in` are not values to take; test_not_asked was not failing; the environment and
    # the test's own data are not the code's.
    assert instrumented["asserts"] == 2
    assert adopted == {"ok": True, "adopted": 0, "values": []}
    assert "assert add(1, 2) == 4" in text
    assert 'assert box() == "a box"' in text


def test_an_assert_that_passed_stays_as_written(write, tmp_path):
    _, adopted, text = observe_and_adopt(
        write,
        tmp_path,
        """
        from calc import add


        def test_float():
            assert add(0.5, 0.5) == 1
            assert add(0.1, 0.2) == 0.3
        """,
        ["test_float"],
    )
    assert adopted["values"] == ["test_float line 6: expected `0.3` -> `0.30000000000000004`"]
    assert "assert add(0.5, 0.5) == 1\n" in text


def test_without_a_recorded_run_nothing_is_adopted(write, tmp_path):
    write("calc.py", MODULE)
    path = write("test_new.py", "from calc import add\n\n\ndef test_a():\n    assert add(1, 1) == 3\n")
    answer = helper.answer(
        {
            "op": "adopt",
            "file": path,
            "tests": ["test_a"],
            "record": str(tmp_path / "none"),
            "package": "calc",
        }
    )
    assert answer == {"ok": True, "adopted": 0, "values": []}
