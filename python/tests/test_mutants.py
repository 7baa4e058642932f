"""The mutation operators: each one's change, its byte offsets and lines, and what is skipped."""
import ast

import pytest

import mutants


def made(write, source, tests=None, cap=100):
    path = write("m.py", source)
    with open(path, "rb") as f:
        data = f.read()
    answer = mutants.mutants(path, tests, cap)
    assert answer["ok"] is True
    return data, answer


def afters(answer, operator):
    return [m["after"] for m in answer["mutants"] if m["operator"] == operator]


def apply(data, m):
    return data[: m["start"]] + m["text"].encode("utf-8") + data[m["end"] :]


def test_a_comparison_is_flipped_and_moved_off_by_one(write):
    data, answer = made(write, "def f(a, b):\n    return a < b\n")
    assert afters(answer, "comparison") == ["return a <= b", "return a >= b"]
    m = [m for m in answer["mutants"] if m["operator"] == "comparison"][0]
    assert data[m["start"] : m["end"]] == b"<"
    assert m["before"] == "return a < b"
    assert m["line"] == 2
    assert m["scopes"] == [["f", 1]]


@pytest.mark.parametrize(
    ("expr", "after"),
    [("a not in b", "a in b"), ("a is not b", "a is b"), ("a in b", "a not in b"), ("a == b", "a != b")],
)
def test_two_word_comparisons_are_found_by_the_tokenizer(write, expr, after):
    _, answer = made(write, f"def f(a, b):\n    return {expr}\n")
    assert afters(answer, "comparison") == [f"return {after}"]


def test_an_operator_behind_parentheses_and_a_comment_is_found(write):
    data, answer = made(write, "def f(a, b):\n    return (a  # left\n            ) - b\n")
    m = [m for m in answer["mutants"] if m["operator"] == "arithmetic"][0]
    assert data[m["start"] : m["end"]] == b"-"
    assert m["text"] == "+"


def test_arithmetic_boolean_and_constant_operators(write):
    source = "def f(a, b):\n    x = a * b\n    y = a and not b\n    return x + 1 if True else y\n"
    _, answer = made(write, source)
    assert afters(answer, "arithmetic") == ["x = a / b", "return x - 1 if True else y"]
    assert sorted(afters(answer, "boolean")) == ["y = a and b", "y = a or not b"]
    assert sorted(afters(answer, "constant")) == [
        "return x + 1 if False else y",
        "return x + 2 if True else y",
    ]


def test_a_returned_value_becomes_none_and_statements_become_pass(write):
    source = (
        'def f(a):\n    """Doc."""\n    log(a)\n    a = 1; b = 2\n    return a\n\n\n'
        "def g():\n    return None\n"
    )
    _, answer = made(write, source)
    assert afters(answer, "return") == ["return None"]
    # The docstring stays; of a line holding two statements only the last goes (the first
    # would take the rest of the line with it).
    assert afters(answer, "statement removed") == ["pass", "a = 1; pass"]
    removed = [m for m in answer["mutants"] if m["operator"] == "statement removed"][0]
    assert removed["before"] == "log(a)"


def test_a_statement_that_is_only_a_constant_is_not_removed(write):
    # `...` and a bare string change nothing when removed: no test could notice them.
    source = "class P:\n    def m(self) -> None: ...\n\n\ndef f():\n    'x'\n    0\n    g()\n"
    _, answer = made(write, source)
    assert afters(answer, "statement removed") == ["pass"]
    removed = [m for m in answer["mutants"] if m["operator"] == "statement removed"][0]
    assert removed["before"] == "g()"


def test_byte_offsets_count_bytes_not_characters(write):
    source = 'def f(a):\n    s = "ééé"; return s < a\n'
    data, answer = made(write, source)
    comparison = [m for m in answer["mutants"] if m["operator"] == "comparison"][0]
    assert data[comparison["start"] : comparison["end"]] == b"<"
    assert comparison["start"] == data.index(b"<")
    assert "ééé" in comparison["after"]


def test_a_change_over_several_lines_keeps_the_line_count(write):
    source = "def f(a, b):\n    return g(a,\n             b)\n\n\ndef h():\n    return 1\n"
    data, answer = made(write, source)
    returned = [m for m in answer["mutants"] if m["operator"] == "return" and m["scopes"] == [["f", 1]]][0]
    assert returned["text"] == "None\n"
    mutated = apply(data, returned)
    assert mutated.count(b"\n") == data.count(b"\n")
    assert mutated.splitlines()[5:] == data.splitlines()[5:]
    # coverage.py reports a statement on its first line.
    assert returned["line"] == 2
    assert ast.parse(mutated)


def test_nothing_outside_a_function_is_mutated(write):
    _, answer = made(write, "X = 1 + 2\nif X > 2:\n    Y = not X\n")
    assert answer == {"ok": True, "candidates": 0, "mutants": []}


def test_scopes_name_the_enclosing_functions_from_their_first_decorator(write):
    source = "@deco\ndef outer(a):\n    def inner(b):\n        return b - 1\n    return inner\n"
    _, answer = made(write, source)
    arith = [m for m in answer["mutants"] if m["operator"] == "arithmetic"][0]
    assert arith["scopes"] == [["outer", 1], ["inner", 3]]
    lambdas = made(write, "def f():\n    return lambda x: x + 1\n")[1]["mutants"]
    assert ["<lambda>", 2] in [s for m in lambdas for s in m["scopes"]]


def test_a_change_the_grammar_refuses_is_skipped(write, monkeypatch):
    monkeypatch.setitem(mutants.COMPARE, ast.Lt, ["=<", ">="])
    _, answer = made(write, "def f(a, b):\n    return a < b\n")
    assert answer["candidates"] == 3  # two comparisons and the returned value
    assert afters(answer, "comparison") == ["return a >= b"]
    assert [m["id"] for m in answer["mutants"]] == list(range(1, len(answer["mutants"]) + 1))


def test_only_covered_lines_are_mutated_and_the_cap_is_spread_over_tests(write):
    source = "def f(a):\n    x = a + 1\n    y = a - 1\n    return x * y\n"
    tests = {"test_x": [2], "test_y": [3]}
    _, answer = made(write, source, tests=tests, cap=2)
    assert answer["candidates"] == 6  # per line: the operator, the constant, the statement
    assert sorted(m["line"] for m in answer["mutants"]) == [2, 3]
    assert sorted(m["tests"] for m in answer["mutants"]) == [["test_x"], ["test_y"]]
    assert all(m["line"] != 4 for m in made(write, source, tests=tests)[1]["mutants"])


def test_spread_takes_lines_round_robin():
    cands = [{"line": ln, "start": i, "end": i + 1, "text": "x"} for i, ln in enumerate([1, 1, 1, 2, 2])]
    chosen = mutants.spread(cands, None, 3)
    assert [c["line"] for c in chosen] == [1, 2, 1]
