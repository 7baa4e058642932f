"""improve's Python helper: parses and edits proposed test files with Python's own parser.

It runs once per improve run with the project's Python and answers one JSON request per line
on stdin with one JSON line on stdout, so an iteration pays no interpreter start for it. It
never imports or runs the files it reads.

  {"op": "tidy", "file": F}
      Checks that F is valid Python; a class named `Test*` that pytest cannot or should not
      collect (it has an `__init__`, or no test methods: a helper or a model the tests build)
      gets `__test__ = False` as its first statement, so pytest neither warns nor runs it;
      unless it derives from a class or others derive from it (the attribute is inherited).
      A top-level test that is not valid Python is dropped (the rest of the file is kept).
      -> {"ok": true, "marked": <classes marked>, "tests": <test functions in the file>,
      "dropped": ["test_x (line N: message)", ...]} or {"ok": false, "error": "line N: message"}
      when what breaks is not a test
  {"op": "prune", "file": F, "names": ["test_a", "TestK::test_b", ...]}
      Removes those test functions (a class left without tests goes whole).
      -> {"ok": true, "removed": N} or {"ok": false, "error": ...} (the file is then unchanged)
  {"op": "salvage", "file": F}
      Keeps the complete top-level statements of a cut-off file, after cutting a block the
      model repeated. -> {"ok": true, "tests": N, "repetition": <lines cut>}
  {"op": "merge", "previous": P, "file": F, "passing": [names]}
      F (a repair answer) becomes P's passing tests as they were plus F's other tests.
      -> {"ok": true, "tests": N, "kept": <passing tests carried>, "changed": <tests of F new
      or different from P>}
  {"op": "api", "file": F}
      The public functions, classes and methods of module F with their signatures, and the
      top-level definitions an import further down binds again (dead once it runs).
      -> {"ok": true, "text": "...", "names": [every top-level name], "superseded": [[a, b]]}
  {"op": "asserting", "file": F}
      For each test function of test file F (`test_a`, `TestK::test_b`), whether it holds an
      assertion of any kind in its body or in a helper of the file it calls (one level deep):
      `assert`, `pytest.raises`/`warns`/`approx`/`fail`, an `assert*` method (unittest, mock).
      `pytest.raises(Exception)` (or BaseException, without `match=`) does not count: it
      passes whatever goes wrong. -> {"ok": true, "tests": {"test_a": true, ...}}
  {"op": "fix", "file": F, "modules": {import name: source file}, "target": T or null,
   "examples": {source file: path shown}}
      The local fixes of F (see localfix.py, a module beside this script): missing imports
      added, imports of the package under a wrong path rewritten, copies of example tests
      dropped. -> {"ok": true, "fixes": [what was done], "imports": N, "dropped": [tests],
      "tests": N}
  {"op": "instrument", "file": F, "tests": [names], "record": R, "package": P}
  {"op": "adopt", "file": F, "tests": [names], "record": R, "package": P}
      Expected values from the code for the failing tests `tests` (see expect.py, a module
      beside this script): the asserts to observe rewritten to record into R, then the values
      recorded adopted as the asserts' literals.
  {"op": "mutants", ...}: see mutants.py, a module beside this script.
"""
import ast
import json
import re
import sys

import expect
import localfix
import mutants
from localfix import read, write

FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)


def span(node):
    start = min([d.lineno for d in getattr(node, "decorator_list", [])] + [node.lineno])
    return start, node.end_lineno


# A line that starts a top-level test (or its decorators): where a chunk of the file begins.
TEST_START = re.compile(r"(@|(async\s+)?def\s+test|class\s+Test)")
MAX_BROKEN = 20


def chunks(lines):
    """[start, end) line indexes of the file's top-level chunks: each begins at a line at column
    0 that is neither blank, a comment nor a closing bracket; decorators stay with what they
    decorate."""
    starts, previous = [], ""
    for i, line in enumerate(lines):
        if not line[:1].strip() or line[0] in "#)]}":
            continue
        if not previous.startswith("@"):
            starts.append(i)
        previous = line
    return list(zip(starts, starts[1:] + [len(lines)]))


def drop_broken_tests(source):
    """`source` without the top-level tests that are not valid Python, as long as what breaks
    is a test. -> (tree, source, [(test name, "line N: message")]); raises the first
    SyntaxError when something else breaks."""
    dropped = []
    first_error = None
    for _ in range(MAX_BROKEN):
        try:
            # Compiled (never run), not only parsed: the compiler rejects more than the parser
            # (a keyword argument given twice, `return` outside a function).
            compile(source, "<answer>", "exec", dont_inherit=True)
            return ast.parse(source), source, dropped
        except SyntaxError as e:
            first_error = first_error or e
            lines = source.splitlines(keepends=True)
            at = (e.lineno or 1) - 1
            chunk = next(((a, b) for a, b in chunks(lines) if a <= at < b), None)
            if chunk is None or not TEST_START.match(lines[chunk[0]]):
                raise first_error from None
            a, b = chunk
            head = "".join(lines[a:b])
            name = re.search(r"(?:def|class)\s+(\w+)", head)
            dropped.append((name.group(1) if name else f"line {a + 1}", f"line {e.lineno}: {e.msg}"))
            source = "".join(lines[:a] + lines[b:])
    raise first_error


def tidy(path):
    source = read(path)
    try:
        tree, mended, broken = drop_broken_tests(source)
    except SyntaxError as e:
        return {"ok": False, "error": f"line {e.lineno}: {e.msg}"}
    if broken:
        source = mended
        write(path, source)
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
    dropped = [f"{name} ({why})" for name, why in broken]
    return {"ok": True, "marked": len(inserts), "tests": tests, "dropped": dropped}


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


# A block of lines repeated this many times in a row is a model repeating itself.
REPEATS = 4
MAX_PERIOD = 30


def cut_repetition(lines):
    """`lines` up to the second copy of the first block (of up to MAX_PERIOD non-blank lines)
    that repeats REPEATS times in a row; the number of lines cut (0: none)."""
    # A comment the model renumbers each time ("# Test case 7: ...") does not make a copy new.
    keys = ["" if line.strip().startswith("#") else line.strip() for line in lines]
    n = len(lines)
    for i in range(n):
        for p in range(1, MAX_PERIOD + 1):
            if i + REPEATS * p > n:
                break
            block = keys[i : i + p]
            if not any(block):
                continue
            if all(keys[i + k * p : i + (k + 1) * p] == block for k in range(1, REPEATS)):
                return lines[: i + p], n - (i + p)
    return lines, 0


def is_test(node):
    return (isinstance(node, FUNCS) and node.name.startswith("test")) or (
        isinstance(node, ast.ClassDef) and node.name.startswith("Test")
    )


def same_tests(body):
    """Indexes of top-level tests that do what the test before them does (the same statements,
    whatever their names and comments say): a model that goes on writing one test."""
    seen, dupes = None, []
    for i, node in enumerate(body):
        key = ast.dump(ast.Module(body=node.body, type_ignores=[])) if isinstance(node, FUNCS) else None
        if key is not None and key == seen:
            dupes.append(i)
        seen = key
    return dupes


def salvage(path):
    """What a cut-off answer got right: its repetition cut, then its longest prefix of whole
    lines that parses, without a last top-level statement the cut may have ended early (one that
    no top-level line follows) unless that is a test, which keeps its whole statements, and
    without tests that only repeat the one before them.
    -> {"ok", "tests": tests kept, "repetition": lines cut}"""
    lines = read(path).splitlines(keepends=True)
    # A last line without its newline was cut inside (`assert x == 1` of `... == 12`).
    if lines and not lines[-1].endswith("\n"):
        lines.pop()
    lines, repeated = cut_repetition(lines)
    for k in range(len(lines), -1, -1):
        text = "".join(lines[:k])
        try:
            tree = ast.parse(text)
            break
        except SyntaxError:
            continue
    body = tree.body
    # Where a repetition was cut, the statement it was cut from ends with its first copy: it is
    # whole as kept. Otherwise the cut may have ended the last statement early.
    if body and not repeated:
        last = body[-1]
        after = [line for line in lines[last.end_lineno :] if line.strip()]
        if not (after and not after[0][0].isspace()) and not is_test(last):
            body = body[:-1]
            text = "".join(lines[: span(last)[0] - 1])
    dupes = same_tests(body)
    if len(dupes) >= REPEATS - 1:
        kept_lines = text.splitlines(keepends=True)
        drop = set()
        for i in dupes:
            start, end = span(body[i])
            drop.update(range(start, end + 1))
        text = "".join(line for n, line in enumerate(kept_lines, start=1) if n not in drop)
        text = re.sub(r"\n{4,}", "\n\n\n", text)
        repeated += len(drop)
        body = [node for i, node in enumerate(body) if i not in set(dupes)]
    tests = sum(1 for node in body if is_test(node))
    write(path, text)
    return {"ok": True, "tests": tests, "repetition": repeated}


def top_level(tree, source):
    """(name or None, source text, node) of each top-level statement."""
    lines = source.splitlines(keepends=True)
    out = []
    for node in tree.body:
        start, end = span(node)
        name = getattr(node, "name", None)
        out.append((name, "".join(lines[start - 1 : end]), node))
    return out


def passing_parts(node, text, passing):
    """The part of a test function or class that passed: the whole function, or the class
    with only its passing test methods (None when nothing of it passed)."""
    if isinstance(node, FUNCS):
        return text if node.name in passing else None
    kept = {n.name for n in node.body if isinstance(n, FUNCS) and f"{node.name}::{n.name}" in passing}
    if not kept:
        return None
    lines = text.splitlines(keepends=True)
    first = span(node)[0]
    drop = set()
    for n in node.body:
        if isinstance(n, FUNCS) and n.name.startswith("test") and n.name not in kept:
            start, end = span(n)
            drop.update(range(start - first, end - first + 1))
    return "".join(line for i, line in enumerate(lines) if i not in drop)


def rename(text, node, old, new, first_line):
    """`text` (the source of `node`, starting at line `first_line`) with every name `old` in it
    written `new`."""
    lines = text.splitlines(keepends=True)
    hits = sorted(
        (
            (n.lineno - first_line, n.col_offset, len(old))
            for n in ast.walk(node)
            if (isinstance(n, ast.Name) and n.id == old) or (isinstance(n, ast.arg) and n.arg == old)
        ),
        reverse=True,
    )
    for row, col, size in hits:
        line = lines[row]
        lines[row] = line[:col] + new + line[col + size :]
    # The definition's own line, below its decorators.
    row = getattr(node, "lineno", first_line) - first_line
    head = lines[row]
    for kw in ("def ", "async def ", "class "):
        if head.lstrip().startswith(kw + old + "(") or head.lstrip().startswith(kw + old + ":"):
            lines[row] = head.replace(kw + old, kw + new, 1)
    return "".join(lines)


def merge(previous, answer, passing):
    """The file after a repair answer: the tests of `previous` that passed (as they were), then
    the answer's other tests; the statements both need (imports, helpers, fixtures) once, a
    helper the answer redefines renamed in the answer's code. Written over `answer`.
    -> {"ok", "tests", "kept": passing tests carried over, "changed": failing tests the answer
    changed or added tests it brings}"""
    old_src, new_src = read(previous), read(answer)
    old, new = ast.parse(old_src), ast.parse(new_src)
    passing = set(passing)
    old_parts, new_parts = top_level(old, old_src), top_level(new, new_src)
    old_text = {name: text for name, text, _ in old_parts if name}
    if not passing:
        # Nothing passed (the file may not even have imported): the answer stands as it is.
        changed = sum(
            1
            for name, text, node in new_parts
            if is_test(node) and old_text.get(name, "").strip() != text.strip()
        )
        tests = sum(1 for n in ast.walk(new) if isinstance(n, FUNCS) and n.name.startswith("test"))
        return {"ok": True, "tests": tests, "kept": 0, "changed": changed}
    kept_names = set()
    out = []
    # The previous file's statements first: its passing tests rely on them.
    for name, text, node in old_parts:
        if is_test(node):
            part = passing_parts(node, text, passing)
            if part:
                out.append(part)
                kept_names.add(name)
        else:
            out.append(text)
    seen = {text.strip() for text in out}
    # The answer redefines a helper (or fixture) the passing tests use: its own version gets a
    # name of its own, and the answer's tests use that.
    clashes = {
        name: f"{name}_2"
        for name, text, node in new_parts
        if name and not is_test(node) and name in old_text and old_text[name].strip() != text.strip()
    }
    changed = 0
    for name, text, node in new_parts:
        if text.strip() in seen:
            continue
        if is_test(node) and (name not in old_text or old_text[name].strip() != text.strip()):
            changed += 1
        if is_test(node) and name in kept_names:
            text = rename(text, node, name, f"{name}_2", span(node)[0])
        for old_name, new_name in clashes.items():
            text = rename(text, ast.parse(text).body[0], old_name, new_name, 1)
        out.append(text)
    result = "\n\n".join(t.rstrip("\n") for t in out) + "\n"
    tree = ast.parse(result)
    write(answer, result)
    tests = sum(
        1 for node in ast.walk(tree) if isinstance(node, FUNCS) and node.name.startswith("test")
    )
    return {"ok": True, "tests": tests, "kept": len(kept_names), "changed": changed}


def signature(node):
    args = ast.unparse(node.args)
    returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
    prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
    return f"{prefix} {node.name}({args}){returns}"


def first_doc_line(node):
    doc = ast.get_docstring(node)
    return doc.strip().splitlines()[0] if doc and doc.strip() else ""


def api(path):
    """The public names of a module, from its source (never imported): functions and classes
    with their signatures and the first line of their docstring, methods indented under their
    class. -> {"ok", "text", "names": every top-level name the module defines}"""
    tree = ast.parse(read(path))
    lines, names = [], []
    for node in tree.body:
        if isinstance(node, FUNCS):
            names.append(node.name)
            if not node.name.startswith("_"):
                doc = first_doc_line(node)
                lines.append(signature(node) + (f"  # {doc}" if doc else ""))
        elif isinstance(node, ast.ClassDef):
            names.append(node.name)
            if node.name.startswith("_"):
                continue
            bases = ", ".join(ast.unparse(b) for b in node.bases)
            doc = first_doc_line(node)
            lines.append(f"class {node.name}({bases})" + (f"  # {doc}" if doc else ""))
            for item in node.body:
                if isinstance(item, FUNCS) and (not item.name.startswith("_") or item.name == "__init__"):
                    doc = first_doc_line(item)
                    lines.append("    " + signature(item) + (f"  # {doc}" if doc else ""))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    names.append(t.id)
                    if t.id.isupper() or not t.id.startswith("_"):
                        lines.append(t.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.extend((a.asname or a.name).split(".")[0] for a in node.names if a.name != "*")
    return {"ok": True, "text": "\n".join(lines), "names": names, "superseded": superseded(tree)}


def imported_later(tree):
    """name -> the first line of a module-level import (in the module's body, or the body of a
    top-level `try`, `if` or `else`, but not an `except` handler: that is the fallback) that
    binds it."""
    bound, todo = {}, list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                if a.name != "*":
                    name = (a.asname or a.name).split(".")[0]
                    bound[name] = min(bound.get(name, node.lineno), node.lineno)
        elif isinstance(node, ast.Try):
            todo.extend(node.body + node.orelse + node.finalbody)
        elif isinstance(node, ast.If):
            todo.extend(node.body + node.orelse)
    return bound


def superseded(tree):
    """[first, last] lines of each top-level function or class that an import further down
    the module binds again (`class OMD: ...` then `from .dictutils import OMD`): once the
    import runs, nothing reaches the definition, so no test can cover it."""
    later = imported_later(tree)
    return [
        list(span(node))
        for node in tree.body
        if isinstance(node, FUNCS + (ast.ClassDef,)) and later.get(node.name, 0) > node.end_lineno
    ]


# pytest's (and unittest's) calls that check something; `raises` only with a specific type.
CHECKING_CALLS = {"raises", "warns", "approx", "fail", "deprecated_call", "assertRaises"}
ANY_EXCEPTION = {"Exception", "BaseException"}


def _called_name(call):
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return None


def _names_any_exception(node):
    if isinstance(node, ast.Tuple):
        return all(_names_any_exception(e) for e in node.elts)
    name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)
    return name in ANY_EXCEPTION


def checks(call):
    """Whether a call checks something: `pytest.raises(ValueError)`, `self.assertEqual(...)`,
    `mock.assert_called_once_with(...)`, `assert_allclose(...)`, `pytest.approx(...)`. A
    `raises` of any exception at all (Exception, BaseException, without `match=`) does not."""
    name = _called_name(call)
    if name is None:
        return False
    if name in ("raises", "assertRaises"):
        if any(k.arg == "match" for k in call.keywords):
            return True
        return bool(call.args) and not _names_any_exception(call.args[0])
    return name in CHECKING_CALLS or name.startswith("assert")


def _asserts_directly(node):
    for sub in ast.walk(node):
        if isinstance(sub, ast.Assert):
            return True
        if isinstance(sub, ast.Raise) and sub.exc is not None:
            exc = sub.exc.func if isinstance(sub.exc, ast.Call) else sub.exc
            if getattr(exc, "id", None) == "AssertionError":
                return True
        if isinstance(sub, ast.Call) and checks(sub):
            return True
    return False


def _calls(node):
    """The names a function calls: `helper(...)` and `self.helper(...)`."""
    names = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            func = sub.func
            if isinstance(func, ast.Name):
                names.add(func.id)
            elif isinstance(func, ast.Attribute) and getattr(func.value, "id", None) in ("self", "cls"):
                names.add(func.attr)
    return names


def asserting(path):
    tree = ast.parse(read(path))
    module_helpers = {n.name: _asserts_directly(n) for n in tree.body if isinstance(n, FUNCS)}
    tests = {}

    def judge(fn, helpers):
        direct = _asserts_directly(fn)
        return direct or any(helpers.get(name, False) for name in _calls(fn) if name != fn.name)

    for node in tree.body:
        if isinstance(node, FUNCS) and node.name.startswith("test"):
            tests[node.name] = judge(node, module_helpers)
        elif isinstance(node, ast.ClassDef):
            methods = {n.name: _asserts_directly(n) for n in node.body if isinstance(n, FUNCS)}
            helpers = {**module_helpers, **methods}
            for n in node.body:
                if isinstance(n, FUNCS) and n.name.startswith("test"):
                    tests[f"{node.name}::{n.name}"] = judge(n, helpers)
    return {"ok": True, "tests": tests}


def answer(request):
    op = request.get("op")
    if op == "tidy":
        return tidy(request["file"])
    if op == "prune":
        return prune(request["file"], request.get("names", []))
    if op == "salvage":
        return salvage(request["file"])
    if op == "merge":
        return merge(
            request["previous"],
            request["file"],
            request.get("passing", []),
        )
    if op == "api":
        return api(request["file"])
    if op == "asserting":
        return asserting(request["file"])
    if op == "fix":
        return localfix.fix(
            request["file"],
            request.get("modules", {}),
            request.get("target"),
            request.get("examples", {}),
            prune,
        )
    if op == "instrument":
        return expect.instrument(
            request["file"], request.get("tests", []), request["record"], request["package"]
        )
    if op == "adopt":
        return expect.adopt(
            request["file"], request["record"], request.get("tests", []), request["package"]
        )
    if op == "mutants":
        return mutants.mutants(request["file"], request.get("tests"), int(request.get("cap", 20)))
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
