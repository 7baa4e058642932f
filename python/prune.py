"""Removes named test functions from a test file, with Python's own parser.

Usage: python prune.py FILE NAMES_JSON
NAMES_JSON is a list of "test_name" (module level) or "TestClass::test_name" (methods).
A class left without test methods goes as a whole. Prints how many were removed; exits 3
when the result would not parse (the file is then left as it was).
"""
import ast
import json
import sys


def span(node):
    start = min([d.lineno for d in node.decorator_list] + [node.lineno])
    return start, node.end_lineno


def main():
    path, names = sys.argv[1], set(json.loads(sys.argv[2]))
    with open(path, encoding="utf-8") as f:
        source = f.read()
    tree = ast.parse(source)
    spans, removed = [], 0
    funcs = (ast.FunctionDef, ast.AsyncFunctionDef)
    for node in tree.body:
        if isinstance(node, funcs) and node.name in names:
            spans.append(span(node))
            removed += 1
        elif isinstance(node, ast.ClassDef):
            tests = [n for n in node.body if isinstance(n, funcs) and n.name.startswith("test")]
            doomed = [n for n in tests if f"{node.name}::{n.name}" in names]
            if doomed and len(doomed) == len(tests):
                spans.append(span(node))
            else:
                spans.extend(span(n) for n in doomed)
            removed += len(doomed)
    lines = source.splitlines(keepends=True)
    drop = set()
    for start, end in spans:
        drop.update(range(start, end + 1))
    result = "".join(line for i, line in enumerate(lines, start=1) if i not in drop)
    try:
        ast.parse(result)
    except SyntaxError as e:
        print(f"pruning would break the file: {e}")
        sys.exit(3)
    with open(path, "w", encoding="utf-8") as f:
        f.write(result)
    print(removed)


if __name__ == "__main__":
    main()
