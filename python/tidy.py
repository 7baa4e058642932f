"""Checks a proposed test file with Python's own parser and tidies what pytest would trip on.

Usage: python tidy.py FILE
Exits 3 with `line N: message` when the file is not valid Python. Otherwise, a class named
`Test*` that pytest cannot or should not collect (it has an `__init__`, or no test methods:
a helper or a model the tests build) gets `__test__ = False` as its first statement, so pytest
neither warns nor tries to run it. Prints how many classes were marked, and how many test
functions the file defines.
"""
import ast
import sys


def main():
    path = sys.argv[1]
    with open(path, encoding="utf-8") as f:
        source = f.read()
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        print(f"line {e.lineno}: {e.msg}")
        sys.exit(3)
    funcs = (ast.FunctionDef, ast.AsyncFunctionDef)
    inserts = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.ClassDef) and node.name.startswith("Test")):
            continue
        names = [n.name for n in node.body if isinstance(n, funcs)]
        declared = any(
            isinstance(n, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__test__" for t in n.targets)
            for n in node.body
        )
        tests = [n for n in names if n.startswith("test")]
        if declared or (tests and "__init__" not in names):
            continue
        first = node.body[0]
        start = min([d.lineno for d in getattr(first, "decorator_list", [])] + [first.lineno])
        inserts.append((start, first.col_offset))
    tests = sum(
        1
        for node in ast.walk(tree)
        if isinstance(node, funcs) and node.name.startswith("test")
    )
    if not inserts:
        print(0, tests)
        return
    lines = source.splitlines(keepends=True)
    for start, col in sorted(inserts, reverse=True):
        lines.insert(start - 1, " " * col + "__test__ = False  # not a test class (improve)\n")
    result = "".join(lines)
    ast.parse(result)
    with open(path, "w", encoding="utf-8") as f:
        f.write(result)
    print(len(inserts), tests)


if __name__ == "__main__":
    main()
