"""The helper's local fixes (op fix): what needs no model, put right before pytest runs."""
import helper
from conftest import read

OPS = """
import math
from .util import scale


LIMIT = 10


def add(a, b):
    return a + b


def clamp(x, lo, hi):
    return max(lo, min(x, hi))
"""

UTIL = """
def scale(x):
    return 2 * x


def only_here():
    return 1
"""


def package(write):
    """The modules of a package `calc` (ops under test, util beside it) by import name."""
    return {
        "calc": write("calc/__init__.py", ""),
        "calc.ops": write("calc/ops.py", OPS),
        "calc.util": write("calc/util.py", UTIL),
    }


def fix(write, text, target="calc.ops", examples=None):
    path = write("test_new.py", text)
    answer = helper.answer(
        {
            "op": "fix",
            "file": path,
            "modules": package(write),
            "target": target,
            "examples": examples or {},
        }
    )
    assert answer["ok"], answer
    return answer, read(path)


def test_a_missing_import_pytest_is_added_after_the_imports(write):
    answer, text = fix(
        write,
        """
        \"\"\"Tests.\"\"\"
        from calc.ops import add


        def test_raises():
            with pytest.raises(TypeError):
                add(1, None)
        """,
    )
    assert answer["fixes"] == ["added `import pytest`"]
    assert answer["imports"] == 1
    assert text.startswith('"""Tests."""\nfrom calc.ops import add\nimport pytest\n')


def test_names_of_the_module_and_the_module_itself_get_imported(write):
    answer, text = fix(
        write,
        """
        # tests/test_ops.py
        def test_clamp():
            assert clamp(5, 0, 3) == 3
            assert ops.add(1, 2) == 3
            assert LIMIT == 10
            assert math.floor(2.5) == 2
            assert only_here() == 1
            assert not_anywhere() == 1
            assert os.sep and Path(".")
        """,
    )
    assert answer["fixes"] == [
        "added `import math`",
        "added `import os`",
        "added `from calc import ops`",
        "added `from calc.ops import LIMIT`",
        "added `from calc.ops import clamp`",
        "added `from calc.util import only_here`",
        "added `from pathlib import Path`",
    ]
    # The comment of the path stays first; the imports go before the first statement.
    assert text.startswith("# tests/test_ops.py\nimport math\nimport os\nfrom calc import ops\n")
    assert "not_anywhere" not in text.split("def ")[0]


def test_a_name_bound_anywhere_in_the_file_is_not_imported(write):
    answer, _ = fix(
        write,
        """
        import pytest


        @pytest.fixture
        def clamp():
            return lambda x: x


        def test_uses_the_fixture(clamp):
            for add in [1]:
                assert clamp(add) == 1
        """,
    )
    assert answer["fixes"] == []
    assert answer["imports"] == 0


def test_a_star_import_leaves_names_alone(write):
    answer, _ = fix(write, "from calc.ops import *\n\n\ndef test_a():\n    assert clamp(1, 0, 2)\n")
    assert answer["fixes"] == []


def test_imports_under_a_wrong_path_are_rewritten(write):
    answer, text = fix(
        write,
        """
        import pytest
        from src.calc.ops import add
        from ops import only_here as oh
        from ops import clamp as c
        import ops
        from calc.ops import only_here, scale
        import os.path


        def test_all():
            def inner():
                from util import scale
                return scale(1)
            assert add(1, 2) == 3 and c(1, 0, 2) == 1 and ops.add(1, 1) == 2
            assert only_here() == 1 and scale(1) == 2 and inner() == 2
        """,
    )
    assert "from calc.ops import add\n" in text
    assert "from calc.ops import clamp as c\n" in text
    assert "from calc.util import only_here as oh\n" in text
    assert "from calc import ops\n" in text
    # `scale` is imported by ops, so it may come from there; only_here is only in util.
    assert "from calc.util import only_here\nfrom calc.ops import scale\n" in text
    assert "        from calc.util import scale\n" in text
    assert "import os.path\n" in text
    assert answer["imports"] == 6, answer["fixes"]
    assert "rewrote `from ops import clamp as c` as `from calc.ops import clamp as c`" in answer["fixes"]


def test_a_module_that_exists_outside_the_package_is_not_rewritten(write):
    # `json` is the standard library's, even if the package had a module of that name.
    text = "import json\nfrom json import dumps\n\n\ndef test_a():\n    assert dumps(1)\n"
    path = write("test_new.py", text)
    modules = {"calc.json": write("calc/json.py", "def dumps(x):\n    return x\n")}
    answer = helper.answer(
        {"op": "fix", "file": path, "modules": modules, "target": "calc.json", "examples": {}}
    )
    assert answer["fixes"] == []


def test_copies_of_example_tests_are_dropped_whatever_their_names_and_comments(write):
    example = write(
        "tests/test_ops.py",
        """
        from calc.ops import add


        def test_add():
            assert add(2, 3) == 5
        """,
    )
    answer, text = fix(
        write,
        """
        from calc.ops import add, clamp


        def test_add_again():
            \"\"\"Adds.\"\"\"
            # the same as before
            assert add(2,  3) == 5


        class TestMore:
            def test_add(self):
                assert add(2, 3) == 5

            def test_clamp(self):
                assert clamp(5, 0, 3) == 3


        def test_add_other():
            assert add(2, 4) == 6
        """,
        examples={example: "tests/test_ops.py"},
    )
    assert answer["dropped"] == ["test_add_again"]
    assert answer["fixes"] == [
        "dropped test_add_again: a copy of the example test tests/test_ops.py::test_add"
    ]
    assert answer["imports"] == 0
    assert answer["tests"] == 3
    assert "test_add_again" not in text
    assert "def test_add_other" in text


def test_a_fix_iteration_has_no_module_under_test(write):
    answer, text = fix(
        write,
        "def test_a():\n    with pytest.raises(ValueError):\n        scale(None)\n",
        target=None,
    )
    assert answer["fixes"] == ["added `import pytest`", "added `from calc.util import scale`"]
    assert text.startswith("import pytest\nfrom calc.util import scale\ndef test_a")


def test_a_name_imported_from_a_module_that_may_have_any_name_stays(write):
    text = "from calc.lazy import only_here\n\n\ndef test_a():\n    assert only_here()\n"
    path = write("test_new.py", text)
    modules = package(write)
    modules["calc.lazy"] = write("calc/lazy.py", "def __getattr__(name):\n    return 1\n")
    answer = helper.answer(
        {"op": "fix", "file": path, "modules": modules, "target": "calc.ops", "examples": {}}
    )
    assert answer["fixes"] == []


def test_a_module_of_the_tests_sharing_a_name_with_one_of_the_package_stays(write):
    text = "from util import make_thing\n\n\ndef test_a():\n    assert make_thing()\n"
    answer, new = fix(write, text)
    assert answer["fixes"] == []
    assert new == text


def test_a_test_of_independent_cases_is_split_one_test_per_case(write):
    answer, text = fix(
        write,
        """
        from calc.ops import add, clamp


        def test_edge_cases():
            # Test case 1: zero
            assert add(0, 0) == 0

            # Test case 2: a value the next case reuses
            x = clamp(5, 0, 3)
            assert x == 3

            # Test case 3: needs x from case 2, so it stays with it
            assert add(x, 1) == 4

            # Test case 4: an error
            with pytest.raises(TypeError):
                add(1, None)


        @pytest.mark.parametrize("a", [1, 2])
        def test_decorated(a):
            assert add(a, 0) == a

            assert add(0, a) == a
        """,
    )
    assert "split test_edge_cases into 3 tests, one per independent case" in answer["fixes"]
    assert answer["tests"] == 4
    assert "def test_edge_cases_1():\n    # Test case 1: zero\n    assert add(0, 0) == 0\n" in text
    # Case 3 uses what case 2 bound: one test.
    case2 = text[text.index("def test_edge_cases_2") : text.index("def test_edge_cases_3")]
    assert "x = clamp(5, 0, 3)" in case2
    assert "assert add(x, 1) == 4" in case2
    assert "def test_edge_cases_3():\n    # Test case 4: an error\n    with pytest.raises" in text
    # A parametrized test is left whole; so is the rest of the file.
    assert text.count("def test_decorated(a):") == 1
    assert "def test_edge_cases():" not in text
    compile(text, "test_new.py", "exec")


def test_a_test_whose_paragraphs_share_setup_or_check_nothing_alone_stays_whole(write):
    answer, text = fix(
        write,
        """
        from calc.ops import add


        def test_setup_then_checks():
            values = [1, 2]

            assert add(*values) == 3

            assert values == [1, 2]
        """,
    )
    assert not any(f.startswith("split") for f in answer["fixes"]), answer
    assert text.count("def test_") == 1


def test_a_star_import_of_the_module_under_test_still_gets_pytest_imported(write):
    answer, text = fix(
        write,
        """
        from calc.ops import *


        def test_raises():
            with pytest.raises(TypeError):
                add(1, None)
            assert clamp(5, 0, 3) == 3
        """,
    )
    assert answer["fixes"] == ["added `import pytest`"]
    assert text.startswith("from calc.ops import *\nimport pytest\n")


def test_a_star_import_of_a_module_outside_the_package_leaves_the_names_alone(write):
    source = """
        from os.path import *


        def test_raises():
            with pytest.raises(TypeError):
                add(1, None)
        """
    answer, text = fix(write, source)
    assert answer["fixes"] == []
    assert "import pytest" not in text
