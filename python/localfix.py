"""Local fixes of a proposed test file: what a small model gets wrong that needs no model to put
right, fixed before pytest runs it (and before a repair is asked for).

  - a name used and bound nowhere in the file: `pytest`, a name the module under test (or, when
    only one defines it, another module of the package) defines, the module itself used as
    `ops.divide`, a name the module under test imports itself, or one of a few modules of the
    standard library tests often use (`os`, `re`, `Path`, `mock`, ...) -> its import added;
  - an import of a module of the package under a wrong path (`from src.calc.ops import x`,
    `from ops import x`), or of a name from a module of the package that does not have it when
    only one module does -> rewritten to the right import name;
  - a test whose code is that of an example test shown in the prompt (whatever its name,
    comments and blank lines) -> dropped;
  - one test function checking several independent cases, each its own paragraph (a small
    model's "# Test case 1", "# Test case 2", ...) -> one test per case, so that a case that
    fails (a wrong expectation) is dropped alone instead of taking the others with it.

Python's own parser reads everything; nothing is imported or run (but `importlib.util.find_spec`
of a top-level name, to leave alone an import of a module that exists outside the package).
"""
import ast
import builtins
import importlib.util

FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)
MODULE_DUNDERS = {
    "__file__",
    "__name__",
    "__doc__",
    "__spec__",
    "__loader__",
    "__package__",
    "__builtins__",
    "__path__",
    "__annotations__",
}


# The helper (helper.py) reads and writes files through these two as well.
def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def module_statements(body):
    """Top-level statements, with those inside module-level `if`/`try`/`with` blocks."""
    for node in body:
        yield node
        for field in ("body", "orelse", "finalbody"):
            inner = getattr(node, field, None)
            if isinstance(node, (ast.If, ast.Try, ast.With)) and inner:
                yield from module_statements(inner)
        for handler in getattr(node, "handlers", []):
            yield from module_statements(handler.body)


def assigned_names(target):
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for t in target.elts for n in assigned_names(t)]
    return []


def import_text(module, name, asname=None):
    """One import statement binding `asname or name`: `from module import name [as asname]`,
    or `import name [as asname]` when `module` is empty."""
    alias = f" as {asname}" if asname and asname != name else ""
    if module:
        return f"from {module} import {name}{alias}"
    return f"import {name}{alias}"


class Module:
    """What a module of the package defines and imports, read from its source."""

    def __init__(self, name, path):
        self.name = name
        self.defines = set()
        # Bound name -> the import statement that binds it, as the module would write it
        # absolutely.
        self.imports = {}
        # A star import or a module `__getattr__`: the module may have any name.
        self.open = False
        try:
            tree = ast.parse(read(path))
        except (OSError, SyntaxError, ValueError):
            return
        package = name.split(".") if path.endswith("__init__.py") else name.split(".")[:-1]
        for node in module_statements(tree.body):
            if isinstance(node, FUNCS + (ast.ClassDef,)):
                self.defines.add(node.name)
            elif isinstance(node, ast.Assign):
                for t in node.targets:
                    self.defines.update(assigned_names(t))
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                self.defines.update(assigned_names(node.target))
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        self.imports[a.asname] = import_text("", a.name, a.asname)
                    elif "." not in a.name:
                        self.imports[a.name] = import_text("", a.name)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package[: len(package) - (node.level - 1)]
                    base = ".".join(parts + ([base] if base else []))
                for a in node.names:
                    if a.name == "*":
                        self.open = True
                    elif base:
                        self.imports[a.asname or a.name] = import_text(base, a.name, a.asname)
        self.open = self.open or "__getattr__" in self.defines

    def provides(self, name, modules):
        return (
            self.open
            or name in self.defines
            or name in self.imports
            or f"{self.name}.{name}" in modules
        )


class Package:
    """The modules of the package by import name, and the module under test."""

    def __init__(self, modules, target):
        self.modules = {name: Module(name, path) for name, path in modules.items()}
        self.target = self.modules.get(target) if target else None
        self.tops = {name.split(".")[0] for name in self.modules}

    def only(self, candidates):
        """The one candidate module name, the module under test first when it is one."""
        candidates = sorted(set(candidates))
        if self.target and self.target.name in candidates:
            return self.target.name
        return candidates[0] if len(candidates) == 1 else None

    def defining(self, name):
        return self.only(m.name for m in self.modules.values() if name in m.defines)

    def exists_elsewhere(self, dotted):
        """Whether `dotted` names a module outside the package (the standard library, an
        installed distribution): then an import of it is not ours to correct."""
        top = dotted.split(".")[0]
        if top in self.tops:
            return False
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            return False
        # A folder of that name on the path (a namespace package) is no module of its own.
        return spec is not None and spec.origin not in (None, "namespace")

    def correct(self, dotted):
        """The import name of the package module `dotted` means (None: it is right, or not
        ours, or ambiguous)."""
        if not dotted or dotted in self.modules or self.exists_elsewhere(dotted):
            return None
        return self.only(
            name
            for name in self.modules
            if dotted.endswith("." + name) or name.endswith("." + dotted)
        )


def edit_lines(source, edits):
    """`source` with each (first line, last line, new text) edit made (1-based, inclusive; new
    text None: the lines go)."""
    lines = source.splitlines(keepends=True)
    for start, end, text in sorted(edits, key=lambda e: e[0], reverse=True):
        lines[start - 1 : end] = [text] if text is not None else []
    return "".join(lines)


def own_lines(node, lines):
    """Whether `node` has its lines to itself (no `;` neighbour): then it can be rewritten by
    lines."""
    before = lines[node.lineno - 1][: node.col_offset]
    after = lines[node.end_lineno - 1][node.end_col_offset :]
    return not before.strip() and (not after.strip() or after.strip().startswith("#"))


def fix_import_from(node, package):
    """The statements `node` (a `from M import ...` of the package) should be, else None."""
    module = node.module
    right = package.correct(module)
    # Only to a module that has the names: `from helpers import x` may be a module of the
    # tests' own that shares a name with one of the package.
    if right is not None and all(
        a.name == "*"
        or package.modules[right].provides(a.name, package.modules)
        or package.defining(a.name) is not None
        for a in node.names
    ):
        module = right
    groups = {}
    for a in node.names:
        target = module
        owner = package.modules.get(module)
        if a.name != "*" and owner is not None and not owner.provides(a.name, package.modules):
            target = package.defining(a.name) or module
        groups.setdefault(target, []).append(a)
    if list(groups) == [node.module]:
        return None
    return [
        f"from {m} import "
        + ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in names)
        for m, names in groups.items()
    ]


def fix_import(node, package):
    """The statements `node` (an `import M`) should be, else None."""
    out, changed = [], False
    for a in node.names:
        right = package.correct(a.name)
        if right is None or (a.asname is None and "." in a.name):
            out.append(import_text("", a.name, a.asname))
            continue
        changed = True
        if a.asname:
            out.append(import_text("", right, a.asname))
        elif "." in right:
            parent, leaf = right.rsplit(".", 1)
            out.append(import_text(parent, leaf, a.name if a.name != leaf else None))
        else:
            out.append(import_text("", right, a.name))
    return out if changed else None


def fix_import_paths(source, tree, package):
    """Imports of package modules under a wrong path, rewritten. -> (source, fixes)"""
    lines = source.splitlines(keepends=True)
    edits, fixes = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            new = fix_import_from(node, package)
        elif isinstance(node, ast.Import):
            new = fix_import(node, package)
        else:
            continue
        if new is None or not own_lines(node, lines):
            continue
        old = " ".join(
            line.strip() for line in lines[node.lineno - 1 : node.end_lineno]
        ).split("#")[0].strip()
        indent = " " * node.col_offset
        text = "".join(f"{indent}{s}\n" for s in new)
        edits.append((node.lineno, node.end_lineno, text))
        fixes.append(f"rewrote `{old}` as `{'; '.join(new)}`")
    return edit_lines(source, edits), fixes


def bound_names(tree):
    """Every name the file binds anywhere (a flat view of its scopes: a name bound in one
    function counts everywhere, so no import is ever added that could shadow it)."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bound.add(node.id)
        elif isinstance(node, FUNCS + (ast.ClassDef,)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.Import):
            bound.update(a.asname or a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            bound.update(a.asname or a.name for a in node.names)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            bound.update(node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        else:
            # match statements (3.10+): captures and `**rest`.
            for field in ("name", "rest"):
                value = getattr(node, field, None)
                if type(node).__name__.startswith("Match") and isinstance(value, str):
                    bound.add(value)
    return bound


def star_names(tree, package):
    """The names the file's star imports bind (`from calc.ops import *`: the public names of a
    module of the package), or None when one of them is of a module whose names are unknown."""
    names = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names)):
            continue
        module = package.modules.get(node.module) if package and not node.level else None
        if module is None or module.open:
            return None
        names.update(n for n in module.defines | set(module.imports) if not n.startswith("_"))
    return names


def undefined_names(tree, package=None):
    """Names read and bound nowhere in the file, nor built in, in order of first use. None when
    a star import of a module outside `package` makes that unknowable."""
    starred = star_names(tree, package)
    if starred is None:
        return None
    known = bound_names(tree) | starred | set(dir(builtins)) | MODULE_DUNDERS
    uses = sorted(
        (n.lineno, n.col_offset, n.id)
        for n in ast.walk(tree)
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id not in known
    )
    seen = []
    for _, _, name in uses:
        if name not in seen:
            seen.append(name)
    return seen


# What a test file often uses and forgets to import, when the module under test does not say
# otherwise (its own imports come first).
COMMON = {
    "os": "import os",
    "re": "import re",
    "sys": "import sys",
    "io": "import io",
    "json": "import json",
    "math": "import math",
    "time": "import time",
    "random": "import random",
    "string": "import string",
    "tempfile": "import tempfile",
    "itertools": "import itertools",
    "functools": "import functools",
    "collections": "import collections",
    "warnings": "import warnings",
    "Path": "from pathlib import Path",
    "mock": "from unittest import mock",
    "MagicMock": "from unittest.mock import MagicMock",
    "patch": "from unittest.mock import patch",
}


def import_for(name, package):
    """The import statement that gives the file `name`, else None."""
    if name == "pytest":
        return "import pytest"
    target = package.target
    if target is not None:
        if name in target.defines:
            return import_text(target.name, name)
        if name == target.name.split(".")[0]:
            return import_text("", target.name)
        if name == target.name.rsplit(".", 1)[-1]:
            parent = target.name.rsplit(".", 1)[0] if "." in target.name else ""
            return import_text(parent, name)
        if name in target.imports:
            return target.imports[name]
    owner = package.defining(name)
    if owner is not None:
        return import_text(owner, name)
    if name in COMMON:
        return COMMON[name]
    leaf = package.only(m for m in package.modules if m.rsplit(".", 1)[-1] == name)
    if leaf is not None and "." in leaf:
        return import_text(leaf.rsplit(".", 1)[0], name)
    return None


def import_line(tree):
    """The line after which new imports go: the last import of the file's leading imports
    (after its docstring), else before its first statement."""
    after = 0
    for i, node in enumerate(tree.body):
        is_doc = (
            i == 0
            and isinstance(node, ast.Expr)
            and isinstance(getattr(node, "value", None), ast.Constant)
            and isinstance(node.value.value, str)
        )
        if is_doc or isinstance(node, (ast.Import, ast.ImportFrom)):
            after = node.end_lineno
            continue
        if after == 0:
            start = min([d.lineno for d in getattr(node, "decorator_list", [])] + [node.lineno])
            return start - 1
        break
    return after


def add_missing_imports(source, tree, package):
    """Imports for the names the file uses and binds nowhere. -> (source, fixes)"""
    names = undefined_names(tree, package) or []
    statements = []
    for name in names:
        text = import_for(name, package)
        if text is not None and text not in statements:
            statements.append(text)
    if not statements:
        return source, []
    statements.sort(key=lambda s: (not s.startswith("import "), s))
    lines = source.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    at = import_line(tree)
    lines[at:at] = [s + "\n" for s in statements]
    return "".join(lines), [f"added `{s}`" for s in statements]


def test_key(node):
    """What a test does, whatever its name, comments, docstring and layout say."""
    body = node.body
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(getattr(body[0], "value", None), ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        body = body[1:]
    return "|".join(
        [
            ast.dump(node.args),
            "".join(ast.dump(d) for d in node.decorator_list),
            "".join(ast.dump(s) for s in body),
        ]
    )


def tests_of(tree):
    """(name as `prune` takes it, node) of each test function, in classes too."""
    for node in tree.body:
        if isinstance(node, FUNCS) and node.name.startswith("test"):
            yield node.name, node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, FUNCS) and item.name.startswith("test"):
                    yield f"{node.name}::{item.name}", item


def example_keys(paths):
    """test key -> `path::name` of each test of the example files."""
    keys = {}
    for path in paths:
        try:
            tree = ast.parse(read(path))
        except (OSError, SyntaxError, ValueError):
            continue
        for name, node in tests_of(tree):
            keys.setdefault(test_key(node), f"{path}::{name}")
    return keys


def copied_tests(tree, examples):
    """(test, example) of each test of the file that is an example test again."""
    keys = example_keys(examples)
    return [
        (name, keys[test_key(node)]) for name, node in tests_of(tree) if test_key(node) in keys
    ]


def is_check(node):
    """An assertion, or a `with pytest.raises(...)` / `pytest.warns(...)` block."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Assert):
            return True
        if isinstance(sub, (ast.With, ast.AsyncWith)):
            for item in sub.items:
                call = item.context_expr
                func = getattr(call, "func", None)
                if isinstance(call, ast.Call) and getattr(func, "attr", None) in ("raises", "warns"):
                    return True
    return False


def names(node, ctx):
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ctx)}


def paragraphs(fn, lines):
    """The test's statements in groups, a new one after each blank line between statements."""
    groups = []
    for stmt in fn.body:
        gap = lines[(groups[-1][-1].end_lineno if groups else stmt.lineno - 1) : stmt.lineno - 1]
        if groups and not any(not line.strip() for line in gap):
            groups[-1].append(stmt)
        else:
            groups.append([stmt])
    return groups


def independent_cases(fn, lines):
    """The test's paragraphs merged until each checks something and uses no name an earlier one
    binds: the cases it can be split into (one: it cannot)."""
    cases = []
    for group in paragraphs(fn, lines):
        bound_before = set().union(*(names(s, ast.Store) for c in cases for s in c))
        loads = set().union(*(names(s, ast.Load) for s in group))
        if cases and (loads & bound_before or not any(is_check(s) for s in cases[-1])):
            cases[-1].extend(group)
        else:
            cases.append(list(group))
    if len(cases) > 1 and not any(is_check(s) for s in cases[-1]):
        cases[-2].extend(cases.pop())
    return cases


def case_start(stmt, previous_end, lines):
    """The first line of a case: its statement, or the comment lines right above it."""
    start = stmt.lineno
    while start - 1 > previous_end and lines[start - 2].strip().startswith("#"):
        start -= 1
    return start


def split_cases(source, tree):
    """Each top-level test of independent cases as one test per case."""
    lines = source.splitlines(keepends=True)
    taken = {n.name for n in tree.body if isinstance(n, (*FUNCS, ast.ClassDef))}
    edits, fixes = [], []
    for fn in tree.body:
        if not (isinstance(fn, FUNCS) and fn.name.startswith("test")) or fn.decorator_list:
            continue
        if any(isinstance(n, (ast.Global, ast.Nonlocal, ast.Yield)) for n in ast.walk(fn)):
            continue
        cases = independent_cases(fn, lines)
        if len(cases) < 2:
            continue
        head = "async def" if isinstance(fn, ast.AsyncFunctionDef) else "def"
        parts, previous_end = [], fn.lineno
        for k, case in enumerate(cases, start=1):
            name = f"{fn.name}_{k}"
            while name in taken:
                name += "_"
            taken.add(name)
            start = case_start(case[0], previous_end, lines)
            body = "".join(lines[start - 1 : case[-1].end_lineno])
            parts.append(f"{head} {name}({ast.unparse(fn.args)}):\n{body}")
            previous_end = case[-1].end_lineno
        edits.append((fn.lineno, fn.end_lineno, "\n\n".join(parts)))
        fixes.append(f"split {fn.name} into {len(cases)} tests, one per independent case")
    for first, last, text in sorted(edits, reverse=True):
        lines[first - 1 : last] = [text if text.endswith("\n") else text + "\n"]
    return "".join(lines), fixes


def fix(path, modules, target, examples, prune):
    """The local fixes of test file `path`, made in place. `modules`: import name -> source
    file of each module of the package; `target`: the import name of the module under test
    (None: a fix iteration); `examples`: source file -> the path the prompt showed, of each
    example test file; `prune(path, names)` removes tests. -> {"ok", "fixes": [what was done],
    "imports": imports fixed (each would have failed the tests that need it), "dropped":
    [tests dropped], "tests": test functions left}"""
    package = Package(modules, target)
    source = read(path)
    source, fixes = fix_import_paths(source, ast.parse(source), package)
    write(path, source)
    imports = len(fixes)
    # Copies go first, so that nothing is imported for them.
    copies = copied_tests(ast.parse(source), list(examples))
    dropped = []
    if copies and prune(path, [name for name, _ in copies]).get("ok"):
        for name, example in copies:
            file, test = example.split("::", 1)
            dropped.append(name)
            fixes.append(f"dropped {name}: a copy of the example test {examples[file]}::{test}")
    source = read(path)
    source, added = add_missing_imports(source, ast.parse(source), package)
    write(path, source)
    fixes += added
    imports += len(added)
    source, split = split_cases(source, ast.parse(source))
    write(path, source)
    fixes += split
    tests = sum(1 for _ in tests_of(ast.parse(read(path))))
    return {
        "ok": True,
        "fixes": fixes,
        "imports": imports,
        "dropped": dropped,
        "tests": tests,
    }
