"""Expected values from the code: a new test that fails on `assert <expr> == <literal>` because
the model guessed the literal wrong (a small model's most common mistake) gets the value the code
gave instead, as a characterization test. Two steps around one pytest run that improve makes:

  instrument(path, tests, record, package)
      In the failing tests `tests` (`test_a`, `TestK::test_b`), each statement
      `assert <expr> == <literal>` (either side the literal) whose `<expr>` reads a name
      imported from `package` (or bound from one) becomes a call that writes what
      `<expr>` gave to the JSON-lines file `record` and lets the test go on. The file is
      rewritten in place; improve runs it, then puts the original back.
      -> {"ok": true, "asserts": <statements instrumented>}
  adopt(path, record, tests, package)
      Each instrumented assert that failed in the run and always saw the same value, a value
      Python writes as a literal (`ast.literal_eval` reads its repr back) with nothing in it
      that changes between runs (an address, a pytest temp dir), gets that value as its literal.
      -> {"ok": true, "adopted": N, "values": ["test_a line 7: expected `3` -> `4`", ...]}

Only `==` against a literal is touched: what a test asserts of its shape (`is None`, `in`, a
raised exception) is a judgment the model made, not a value it guessed.
"""

import ast
import json
import os
import re

from localfix import read, write

FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)
RECORDER = "__improve_observe__"
# A value whose repr holds one of these differs between runs (or machines).
UNSTABLE = re.compile(r"0x[0-9a-fA-F]{6,}|pytest-of-|/tmp/|\\tmp\\")
MAX_REPR = 300
SHOWN = 60


def is_literal(node):
    try:
        ast.literal_eval(node)
        return True
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False


def equality(stmt):
    """(observed expression, literal) of `assert <expr> == <literal>` (either way round), or
    None."""
    test = stmt.test
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return None
    left, right = test.left, test.comparators[0]
    if is_literal(right) and not is_literal(left):
        return left, right
    if is_literal(left) and not is_literal(right):
        return right, left
    return None


def tests_named(tree, names):
    """(name as pytest's pruner writes it, function node) of each test in `names`."""
    for node in tree.body:
        if isinstance(node, FUNCS) and node.name in names:
            yield node.name, node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                full = f"{node.name}::{item.name}"
                if isinstance(item, FUNCS) and full in names:
                    yield full, item


def asserts_in(fn):
    """The assert statements of a function's own body (not of functions nested in it)."""
    found, todo = [], list(fn.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Assert):
            found.append(node)
        elif not isinstance(node, FUNCS + (ast.ClassDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))
    return sorted(found, key=lambda n: n.lineno)


def split_at(line, col):
    """`line` cut at the parser's column `col` (a UTF-8 byte offset) -> (before, after)."""
    raw = line.encode("utf-8")
    return raw[:col].decode("utf-8"), raw[col:].decode("utf-8")


def alone_on_its_lines(stmt, lines):
    """Whether nothing but the statement (and a comment) is on the lines it spans."""
    before = split_at(lines[stmt.lineno - 1], stmt.col_offset)[0]
    after = split_at(lines[stmt.end_lineno - 1], stmt.end_col_offset)[1].strip()
    return not before.strip() and (not after or after.startswith("#"))


def imported_from(tree, package):
    """The names the file binds by importing from `package` (a top-level import name)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == package:
                    names.add(a.asname or package)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if node.module.split(".")[0] == package:
                names.update(a.asname or a.name for a in node.names if a.name != "*")
    return names


def mentions(node, names):
    return any(isinstance(n, ast.Name) and n.id in names for n in ast.walk(node))


def from_the_code(fn, imported):
    """`imported` plus the names the test binds from them (`d = OMD(...)`, `with open_x() as
    f`), in the order its statements run."""
    names = set(imported)
    for node in sorted(ast.walk(fn), key=lambda n: getattr(n, "lineno", 0)):
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.NamedExpr)):
            value = node.value
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        elif isinstance(node, (ast.withitem, ast.For)):
            value = node.context_expr if isinstance(node, ast.withitem) else node.iter
            targets = [node.optional_vars if isinstance(node, ast.withitem) else node.target]
        else:
            continue
        if value is not None and mentions(value, names):
            for t in (t for t in targets if t is not None):
                names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


def candidates(tree, lines, names, package):
    """(test, assert statement, observed expression, literal) of each assert to observe: one
    whose observed side reads the code under test (`package`), not only the test's own data or
    its environment (`os.environ.get(...)`)."""
    imported = imported_from(tree, package)
    for test, fn in tests_named(tree, set(names)):
        code = from_the_code(fn, imported)
        for stmt in asserts_in(fn):
            pair = equality(stmt)
            if pair is not None and alone_on_its_lines(stmt, lines) and mentions(pair[0], code):
                yield test, stmt, pair[0], pair[1]


def segment(source_lines, node):
    """The source text of `node` (may span lines)."""
    return ast.get_source_segment("".join(source_lines), node)


def recorder(record):
    return (
        f"\n\ndef {RECORDER}(line, value, expected):  # improve: records what the code gave\n"
        "    import json\n"
        "    try:\n"
        "        equal = bool(value == expected)\n"
        "    except Exception:\n"
        "        equal = False\n"
        "    entry = {'line': line, 'equal': equal}\n"
        "    try:\n"
        "        entry['repr'] = repr(value)\n"
        "    except Exception:\n"
        "        pass\n"
        f"    with open({record!r}, 'a', encoding='utf-8') as f:\n"
        "        f.write(json.dumps(entry) + '\\n')\n"
    )


def instrument(path, tests, record, package):
    source = read(path)
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    edits = []
    for _, stmt, observed, literal in candidates(tree, lines, tests, package):
        call = f"{RECORDER}({stmt.lineno}, ({segment(lines, observed)}), ({segment(lines, literal)}))"
        # Same line count, so that every other line keeps its number.
        padding = "\n" * (stmt.end_lineno - stmt.lineno)
        indent = split_at(lines[stmt.lineno - 1], stmt.col_offset)[0]
        edits.append((stmt, indent + call + padding + "\n"))
    if not edits:
        return {"ok": True, "asserts": 0}
    for stmt, text in sorted(edits, key=lambda e: -e[0].lineno):
        lines[stmt.lineno - 1 : stmt.end_lineno] = [text]
    result = "".join(lines)
    if not result.endswith("\n"):
        result += "\n"
    result += recorder(os.path.abspath(record))
    ast.parse(result)
    write(path, result)
    return {"ok": True, "asserts": len(edits)}


def observations(record):
    """line -> the distinct (repr, equal) the run recorded there."""
    seen = {}
    try:
        with open(record, encoding="utf-8") as f:
            for raw in f:
                try:
                    entry = json.loads(raw)
                except ValueError:
                    continue
                seen.setdefault(entry.get("line"), set()).add((entry.get("repr"), bool(entry.get("equal"))))
    except OSError:
        pass
    return seen


def adoptable(seen):
    """The repr to write for one assert's observations, or None: one value every time, wrong
    every time, and a literal that reads back."""
    if len(seen) != 1:
        return None
    text, equal = next(iter(seen))
    if equal or text is None or len(text) > MAX_REPR or UNSTABLE.search(text):
        return None
    try:
        ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    return text


def short(text):
    text = " ".join(text.split())
    return text if len(text) <= SHOWN else text[: SHOWN - 1] + "…"


def adopt(path, record, tests, package):
    source = read(path)
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    seen = observations(record)
    edits, values = [], []
    for test, stmt, _, literal in candidates(tree, lines, tests, package):
        text = adoptable(seen.get(stmt.lineno, set()))
        if text is None:
            continue
        old = segment(lines, literal)
        edits.append((literal, text))
        values.append(f"{test} line {stmt.lineno}: expected `{short(old)}` -> `{short(text)}`")
    if not edits:
        return {"ok": True, "adopted": 0, "values": []}
    # From the end, so that earlier positions still hold.
    for node, text in sorted(edits, key=lambda e: (-e[0].lineno, -e[0].col_offset)):
        first, last = node.lineno - 1, node.end_lineno - 1
        head = split_at(lines[first], node.col_offset)[0]
        tail = split_at(lines[last], node.end_col_offset)[1]
        lines[first : last + 1] = [head + text + tail]
    result = "".join(lines)
    ast.parse(result)
    write(path, result)
    return {"ok": True, "adopted": len(edits), "values": values}
