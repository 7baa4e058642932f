"""The helper's ops, called as the JSON loop calls them, on files in a temp dir."""
import ast
import io
import json

import pytest

import helper
from conftest import read


def test_tidy_marks_a_helper_class_and_counts_tests(write):
    path = write(
        "test_x.py",
        """
        class TestData:
            def __init__(self):
                self.x = 1


        class TestReal:
            def test_one(self):
                assert True


        def test_two():
            assert TestData().x == 1
        """,
    )
    assert helper.tidy(path) == {"ok": True, "marked": 1, "tests": 2, "dropped": []}
    text = read(path)
    assert "class TestData:\n    __test__ = False  # not a test class (improve)\n    def __init__" in text
    assert text.count("__test__") == 1


def test_tidy_leaves_base_and_derived_classes_alone(write):
    path = write(
        "test_x.py",
        """
        class TestBase:
            value = 1


        class TestDerived(TestBase):
            helper = 2
        """,
    )
    before = read(path)
    assert helper.tidy(path) == {"ok": True, "marked": 0, "tests": 0, "dropped": []}
    assert read(path) == before


def test_tidy_reports_a_syntax_error_outside_the_tests_by_line(write):
    path = write("test_x.py", "from calc import (add\n\n\ndef test_a():\n    assert add(1, 2) == 3\n")
    before = read(path)
    answer = helper.tidy(path)
    assert answer["ok"] is False
    assert answer["error"].startswith("line 1: ")
    assert read(path) == before


def test_tidy_drops_the_tests_that_are_not_valid_python_and_keeps_the_others(write):
    path = write(
        "test_x.py",
        """
        import pytest
        from m import f


        @pytest.mark.parametrize(
            "x", [1, 2]
        )
        @pytest.mark.slow
        def test_kept(x):
            assert f(x) == 1


        def test_quotes():
            assert f("aa") == 'aa [bb] cc'cc dd'


        class TestK:
            def test_open(self):
                assert f(3) == (3,


        def test_twice():
            f(1, key=1, key=2)


        def test_last():
            assert f(4) == 4
        """,
    )
    answer = helper.tidy(path)
    assert answer["ok"] is True
    assert answer["tests"] == 2
    assert [d.split(" (")[0] for d in answer["dropped"]] == ["test_quotes", "TestK", "test_twice"]
    assert answer["dropped"][0].startswith("test_quotes (line 14: unterminated string literal")
    text = read(path)
    assert "def test_kept(x):" in text
    assert "@pytest.mark.slow" in text
    assert "def test_last" in text
    assert "test_quotes" not in text
    assert "TestK" not in text
    assert "test_twice" not in text


def test_tidy_of_a_file_whose_every_test_is_broken_keeps_none(write):
    path = write("test_x.py", "def test_a():\n    return (\n")
    answer = helper.tidy(path)
    assert answer == {
        "ok": True,
        "marked": 0,
        "tests": 0,
        "dropped": ["test_a (line 2: '(' was never closed)"],
    }


def test_prune_removes_functions_and_an_emptied_class(write):
    path = write(
        "test_x.py",
        """
        import pytest


        @pytest.mark.slow
        def test_a():
            assert 1


        def test_b():
            assert 2


        class TestK:
            def test_c(self):
                assert 3
        """,
    )
    assert helper.prune(path, ["test_a", "TestK::test_c"]) == {"ok": True, "removed": 2}
    text = read(path)
    assert "test_a" not in text
    assert "mark.slow" not in text
    assert "class TestK" not in text
    assert "def test_b" in text


def test_prune_keeps_a_class_with_tests_left(write):
    path = write(
        "test_x.py",
        """
        class TestK:
            def test_c(self):
                assert 3

            def test_d(self):
                assert 4
        """,
    )
    assert helper.prune(path, ["TestK::test_c"])["removed"] == 1
    text = read(path)
    assert "class TestK" in text
    assert "test_d" in text
    assert "test_c" not in text


def test_prune_finds_only_top_level_tests_and_async_ones(write):
    path = write(
        "test_x.py",
        """
        if True:
            def test_a():
                pass


        async def test_b():
            pass
        """,
    )
    assert helper.prune(path, ["test_a", "test_b"]) == {"ok": True, "removed": 1}
    assert read(path) == "if True:\n    def test_a():\n        pass\n\n\n"


def test_cut_repetition_cuts_after_the_second_copy():
    lines = ["a\n", "b\n"] + ["x = 1\n", "# case 1\n"] * 5
    kept, cut = helper.cut_repetition(lines)
    assert kept == ["a\n", "b\n", "x = 1\n", "# case 1\n"][: len(kept)]
    assert cut == len(lines) - len(kept)
    assert cut > 0
    assert helper.cut_repetition(["a\n", "b\n", "a\n"]) == (["a\n", "b\n", "a\n"], 0)
    # Three copies in a row may be meant; four are the model repeating itself.
    assert helper.cut_repetition(["x()\n"] * 3) == (["x()\n"] * 3, 0)
    assert helper.cut_repetition(["x()\n"] * 4) == (["x()\n"], 3)


def test_salvage_keeps_complete_tests_of_a_cut_off_file(write):
    path = write(
        "test_x.py",
        """
        def test_a():
            assert 1


        def test_b():
            assert 2


        def test_c():
            assert fo
        """,
    )
    # The last test may have been cut early, but its whole lines are kept.
    assert helper.salvage(path) == {"ok": True, "tests": 3, "repetition": 0}
    assert "assert fo" in read(path)


def test_salvage_keeps_a_cut_test_up_to_its_last_whole_statement(tmp_path):
    path = tmp_path / "test_x.py"
    path.write_text(
        "import pytest\n\n\ndef test_a():\n    assert 1\n\n\n"
        "def test_b():\n    with pytest.raises(TypeError):\n        f(None)\n"
        "    with pytest.raises(TypeError):\n        f({1, 2, 3, 4,"
    )
    assert helper.salvage(str(path)) == {"ok": True, "tests": 2, "repetition": 0}
    text = path.read_text()
    assert text.endswith("def test_b():\n    with pytest.raises(TypeError):\n        f(None)\n")
    ast.parse(text)
    # A line cut inside is dropped even where the cut still parses: `== 1` of `== 12`.
    path.write_text("def test_a():\n    assert g() == 3\n    assert f() == 1")
    assert helper.salvage(str(path))["tests"] == 1
    assert path.read_text() == "def test_a():\n    assert g() == 3\n"


def test_salvage_still_drops_a_cut_helper_that_is_no_test(tmp_path):
    path = tmp_path / "test_x.py"
    path.write_text("def test_a():\n    assert 1\n\n\ndef make():\n    return 1\n")
    assert helper.salvage(str(path)) == {"ok": True, "tests": 1, "repetition": 0}
    assert "make" not in path.read_text()


def test_salvage_drops_a_test_the_model_kept_writing(write):
    body = "    assert f(1) == 1\n"
    tests = "".join(f"def test_{i}():\n{body}\n\n" for i in range(6))
    path = write("test_x.py", "from m import f\n\n\n" + tests + "x = 1\n")
    answer = helper.salvage(path)
    assert answer["ok"] is True
    assert answer["tests"] == 1
    assert answer["repetition"] > 0
    assert "def test_0" in read(path)
    assert "def test_1" not in read(path)


def test_merge_keeps_passing_tests_and_adds_the_answers_new_ones(write):
    previous = write(
        "prev/test_x.py",
        """
        import m


        def helper():
            return 1


        def test_ok():
            assert m.f() == helper()


        def test_bad():
            assert m.g() == 3
        """,
    )
    answer = write(
        "answer/test_x.py",
        """
        import m


        def helper():
            return 2


        def test_ok():
            assert m.f() == 99


        def test_bad():
            assert m.g() == helper()
        """,
    )
    result = helper.merge(previous, answer, ["test_ok"])
    assert result == {"ok": True, "tests": 3, "kept": 1, "changed": 2}
    text = read(answer)
    assert text.count("import m") == 1
    assert "def test_ok():\n    assert m.f() == helper()" in text
    # The answer's own helper and its version of the kept test are renamed.
    assert "def helper_2():\n    return 2" in text
    assert "def test_ok_2():\n    assert m.f() == 99" in text
    assert "assert m.g() == helper_2()" in text


def test_merge_with_nothing_passing_leaves_the_answer(write):
    previous = write("prev/test_x.py", "def test_a():\n    assert 0\n")
    answer = write("answer/test_x.py", "def test_a():\n    assert 0\n\n\ndef test_b():\n    pass\n")
    before = read(answer)
    assert helper.merge(previous, answer, []) == {"ok": True, "tests": 2, "kept": 0, "changed": 1}
    assert read(answer) == before


def test_api_lists_public_signatures_and_every_name(write):
    path = write(
        "m.py",
        '''
        import os.path
        from typing import List as L

        LIMIT = 3
        _private = 1


        def area(w: int, h: int = 1) -> int:
            """The area.

            More words."""
            return w * h


        async def fetch(url):
            pass


        def _hidden():
            pass


        class Shape(object):
            """A shape."""

            def __init__(self, n):
                self.n = n

            def sides(self):
                return self.n

            def _secret(self):
                pass
        ''',
    )
    answer = helper.api(path)
    assert answer["names"] == ["os", "L", "LIMIT", "_private", "area", "fetch", "_hidden", "Shape"]
    assert answer["text"].splitlines() == [
        "LIMIT",
        "def area(w: int, h: int=1) -> int  # The area.",
        "async def fetch(url)",
        "class Shape(object)  # A shape.",
        "    def __init__(self, n)",
        "    def sides(self)",
    ]


def test_answer_dispatches_ops_and_refuses_unknown_ones(write):
    path = write("test_x.py", "def test_a():\n    pass\n")
    assert helper.answer({"op": "tidy", "file": path})["tests"] == 1
    assert helper.answer({"op": "nope"}) == {"ok": False, "error": "unknown op 'nope'"}


def test_main_answers_each_line_and_survives_a_bad_request(write, monkeypatch):
    path = write("m.py", "def f(a):\n    return a + 1\n")
    requests = [
        {"op": "api", "file": path},
        {"op": "tidy", "file": path + ".missing"},
        {"op": "mutants", "file": path, "tests": None, "cap": 1},
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(json.dumps(r) + "\n" for r in requests)))
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    helper.main()
    replies = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["ok"] for r in replies] == [True, False, True]
    assert replies[1]["error"].startswith("FileNotFoundError: ")
    assert len(replies[2]["mutants"]) == 1


@pytest.mark.parametrize("op", ["tidy", "prune", "salvage", "merge", "api", "mutants"])
def test_every_op_the_rust_side_sends_is_dispatched(op):
    # A request without its fields fails on them (main turns that into an error answer), never
    # as an unknown op.
    with pytest.raises(KeyError, match="previous|file"):
        helper.answer({"op": op})


def test_asserting_finds_each_kind_of_assertion_and_none(write):
    path = write(
        "test_x.py",
        """
        import pytest
        from unittest import mock


        def test_only_calls():
            split([1, 2, 3], 2)
            split("a", [1, 2])


        def test_assert():
            assert split([1], 1) == [[1]]


        def test_raises_any():
            split([1], 1)
            with pytest.raises(Exception):
                split("a", None)


        def test_raises_base_tuple():
            with pytest.raises((Exception, BaseException)):
                split("a", None)


        def test_raises_any_with_match():
            with pytest.raises(Exception, match="bad"):
                split("a", None)


        def test_raises_specific():
            with pytest.raises(ValueError):
                split("a", None)


        def test_raises_call_form():
            pytest.raises(TypeError, split, "a", None)


        def test_warns():
            with pytest.warns(UserWarning):
                split([], 1)


        def test_approx():
            x = split([1.0], 1) == pytest.approx([[1.0]])


        def test_mock():
            m = mock.Mock()
            split(m, 1)
            m.assert_called_once()


        def test_fail():
            if split([1], 1) != [[1]]:
                pytest.fail("wrong")


        def test_raise_assertion_error():
            if not split([1], 1):
                raise AssertionError("empty")


        def check(value):
            assert value == [[1]]


        def run(value):
            return split(value, 1)


        def deeper(value):
            check(value)


        def test_via_helper():
            check(split([1], 1))


        def test_via_helper_without_assert():
            run([1])


        def test_two_levels_deep():
            deeper(split([1], 1))


        class TestK:
            def expect(self, got):
                self.assertEqual(got, 1)

            def test_method_helper(self):
                self.expect(split([1], 1))

            def test_method_calls(self):
                split([1], 1)

            def test_assert_raises_any(self):
                with self.assertRaises(Exception):
                    split("a", None)
        """,
    )
    tests = helper.answer({"op": "asserting", "file": path})["tests"]
    assert {name for name, asserts in tests.items() if not asserts} == {
        "test_only_calls",
        "test_raises_any",
        "test_raises_base_tuple",
        "test_via_helper_without_assert",
        "test_two_levels_deep",
        "TestK::test_method_calls",
        "TestK::test_assert_raises_any",
    }
    assert len(tests) == 18


def test_api_names_the_definitions_an_import_further_down_replaces(write):
    path = write(
        "mod.py",
        """
        class OrderedMultiDict(dict):
            def add(self, k, v):
                return None


        def helper():
            return 1


        def fallback():
            return 2


        try:
            from .dictutils import OrderedMultiDict
        except ImportError:
            from ._compat import fallback
        """,
    )
    answer = helper.api(path)
    # The class is dead once the import runs; `fallback` is only bound again when it fails.
    assert answer["superseded"] == [[1, 3]]
