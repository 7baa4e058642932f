"""improve's Python helper: parses and edits proposed test files with Python's own parser.

It runs once per improve run with the project's Python and answers one JSON request per line
on stdin with one JSON line on stdout, so an iteration pays no interpreter start for it. It
never imports or runs the files it reads.

  {"op": "tidy", "file": F}
      Checks that F is valid Python; a class named `Test*` that pytest cannot or should not
      collect (it has an `__init__`, or no test methods: a helper or a model the tests build)
      gets `__test__ = False` as its first statement, so pytest neither warns nor runs it;
      unless it derives from a class or others derive from it (the attribute is inherited).
      -> {"ok": true, "marked": <classes marked>, "tests": <test functions in the file>}
      or {"ok": false, "error": "line N: message"}
  {"op": "prune", "file": F, "names": ["test_a", "TestK::test_b", ...]}
      Removes those test functions (a class left without tests goes whole).
      -> {"ok": true, "removed": N} or {"ok": false, "error": ...} (the file is then unchanged)
"""
import ast
import json
import sys

FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)


def span(node):
    start = min([d.lineno for d in node.decorator_list] + [node.lineno])
    return start, node.end_lineno


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def tidy(path):
    source = read(path)
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        return {"ok": False, "error": f"line {e.lineno}: {e.msg}"}
    tests = sum(
        1 for node in ast.walk(tree) if isinstance(node, FUNCS) and node.name.startswith("test")
    )
    # `__test__` is inherited: a class that others in the file derive from is left alone.
    bases = {
        b.id
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        for b in node.bases
        if isinstance(b, ast.Name)
    }
    inserts = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.ClassDef) and node.name.startswith("Test")):
            continue
        # A subclass may inherit its tests; a one-line body has no line to insert before.
        inherits = any(not (isinstance(b, ast.Name) and b.id == "object") for b in node.bases)
        if inherits or node.name in bases or node.body[0].lineno == node.lineno:
            continue
        names = [n.name for n in node.body if isinstance(n, FUNCS)]
        declared = any(
            isinstance(n, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__test__" for t in n.targets)
            for n in node.body
        )
        if declared or (any(n.startswith("test") for n in names) and "__init__" not in names):
            continue
        first = node.body[0]
        start = min([d.lineno for d in getattr(first, "decorator_list", [])] + [first.lineno])
        inserts.append((start, first.col_offset))
    if inserts:
        lines = source.splitlines(keepends=True)
        for start, col in sorted(inserts, reverse=True):
            lines.insert(start - 1, " " * col + "__test__ = False  # not a test class (improve)\n")
        result = "".join(lines)
        ast.parse(result)
        write(path, result)
    return {"ok": True, "marked": len(inserts), "tests": tests}


def prune(path, names):
    names = set(names)
    source = read(path)
    tree = ast.parse(source)
    spans, removed = [], 0
    for node in tree.body:
        if isinstance(node, FUNCS) and node.name in names:
            spans.append(span(node))
            removed += 1
        elif isinstance(node, ast.ClassDef):
            tests = [n for n in node.body if isinstance(n, FUNCS) and n.name.startswith("test")]
            doomed = [n for n in tests if f"{node.name}::{n.name}" in names]
            if doomed and len(doomed) == len(tests):
                spans.append(span(node))
            else:
                spans.extend(span(n) for n in doomed)
            removed += len(doomed)
    drop = set()
    for start, end in spans:
        drop.update(range(start, end + 1))
    lines = source.splitlines(keepends=True)
    result = "".join(line for i, line in enumerate(lines, start=1) if i not in drop)
    try:
        ast.parse(result)
    except SyntaxError as e:
        return {"ok": False, "error": f"pruning would break the file: {e}"}
    write(path, result)
    return {"ok": True, "removed": removed}


def answer(request):
    op = request.get("op")
    if op == "tidy":
        return tidy(request["file"])
    if op == "prune":
        return prune(request["file"], request.get("names", []))
    return {"ok": False, "error": f"unknown op {op!r}"}


def main():
    for line in sys.stdin:
        try:
            reply = answer(json.loads(line))
        except Exception as e:  # one bad request must not end the helper
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
