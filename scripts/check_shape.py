#!/usr/bin/env python3
"""Checks the shape rules of src/ that no compiler checks (run by scripts/test.sh):

- no function outside tests is longer than 80 lines;
- no import loop between the crate's top-level modules, nor between the submodules of one;
- no file name of the state dir spelt outside src/artifacts.rs;
- no reason text compared: verify stages and the report match on `RejectReason`;
- the saved schema stands alone: src/schema/ imports nothing else of the crate, so every type
  state.json saves is declared there (a saved field of a type from elsewhere cannot compile).
- every run setting declared once, in the `run_settings!` table of src/schema/settings.rs
  (see `settings_declared_elsewhere`).

Prints each breach as `path:line: what` and exits 1 if there is any.
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
MAX_LINES = 80
# Names of project files improve reads, not files it writes.
PROJECT_FILES = {
    "CLAUDE.md",
    "AGENTS.md",
    "CONTRIBUTING.md",
    "recording.json",
    "setup.py",
    "conftest.py",
    "test_*.py",
    "*_test.py",
}


def sources():
    for folder, _, files in os.walk(SRC):
        for name in sorted(files):
            if name.endswith(".rs"):
                path = os.path.join(folder, name)
                text = open(path, encoding="utf-8").read()
                # Unit tests sit at the end of a file, under #[cfg(test)].
                yield os.path.relpath(path, SRC), text.split("#[cfg(test)]")[0]


def long_functions(rel, text):
    lines = text.split("\n")
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)(pub(\([a-z]+\))? )?(async )?(const )?fn (\w+)", line)
        if not m or line.rstrip().endswith(";"):
            continue
        indent = m.group(1)
        for j in range(i, len(lines)):
            if lines[j] == indent + "}" or (j == i and line.rstrip().endswith("}")):
                if j - i + 1 > MAX_LINES:
                    yield f"{rel}:{i + 1}: fn {m.group(6)} is {j - i + 1} lines (at most {MAX_LINES})"
                break


def module_of(rel, depth):
    parts = rel[:-3].split("/")
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return "::".join(parts[:depth])


USE_ROOT = re.compile(r"\b(crate|self|super)::((?:super::)*)")
NAME = re.compile(r"\s*(\w+|\*)")
ALIAS = re.compile(r"\s+as\s+\w+")


def use_tree(text, i):
    """The paths of the use tree at `text[i:]` (`a::b`, `a::{b, c::{d, e}}`, `{a, b as c}`) and
    where it ends. A path stops at whatever is not a name: `a::f(x)` is `a::f`."""
    if text.startswith("{", i):
        paths, i = [], i + 1
        while True:
            while i < len(text) and text[i] in " \t\r\n,":
                i += 1
            if i >= len(text) or text[i] == "}":
                return paths, i + 1
            sub, j = use_tree(text, i)
            if j == i:  # not a use tree after all: stop rather than loop
                return paths, i
            paths, i = paths + sub, j
    m = NAME.match(text, i)
    if not m:
        return [], i
    name, i = m.group(1), m.end()
    if text.startswith("::", i):
        sub, i = use_tree(text, i + 2)
        return [f"{name}::{s}" for s in sub] or [name], i
    alias = ALIAS.match(text, i)
    return [name], alias.end() if alias else i


def references(rel, text):
    """Every module path `rel` names through `crate::`, `self::` or `super::`, group imports
    (`super::{a, b::{c, d}}`) included, as a path from the crate root."""
    text = re.sub(r"//[^\n]*", "", text)
    me = rel[:-3].split("/")
    if me[-1] in ("mod", "lib", "main"):
        me = me[:-1]
    refs = set()
    for m in USE_ROOT.finditer(text):
        root, ups = m.group(1), m.group(2).count("super::")
        if root == "crate":
            base = []
        elif root == "self":
            base = me
        else:
            base = me[: max(0, len(me) - 1 - ups)]
        for path in use_tree(text, m.end())[0]:
            parts = [p for p in path.split("::") if p not in ("*", "self")]
            if parts:
                refs.add("::".join(base + parts))
    return refs


def cycles(files, depth):
    known = {module_of(rel, depth) for rel, _ in files}
    graph = {}
    for rel, text in files:
        a = module_of(rel, depth)
        for ref in references(rel, text):
            parts = ref.split("::")
            b = next(
                (
                    "::".join(parts[:k])
                    for k in range(min(depth, len(parts)), 0, -1)
                    if "::".join(parts[:k]) in known
                ),
                None,
            )
            # A child using its parent is not a loop: the parent only declares it.
            if b and b != a and not a.startswith(b + "::"):
                graph.setdefault(a, set()).add(b)
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(known):
        if v not in index:
            visit(v)
    return found


def artifact_names(rel, text):
    if rel == "artifacts.rs":
        return
    for i, line in enumerate(text.split("\n"), 1):
        if line.strip().startswith("//"):
            continue
        for name in re.findall(r'"([^"\\\s{}]*\.(?:json|jsonl|md|xml|txt|patch|svg|coverage|py))"', line):
            if name not in PROJECT_FILES and "/" not in name and not name.startswith("."):
                yield f"{rel}:{i}: file name {name!r} belongs in artifacts.rs"


def schema_imports(rel, text):
    if not rel.startswith("schema/"):
        return
    for i, line in enumerate(text.split("\n"), 1):
        code = line.split("//")[0]
        for ref in re.findall(r"\bcrate::(\w+)", code):
            if ref != "schema":
                yield f"{rel}:{i}: the schema uses crate::{ref}; saved types live in src/schema/"


def reason_comparisons(rel, text):
    for i, line in enumerate(text.split("\n"), 1):
        if re.search(r"reason\w*(\.as_deref\(\))?[^;]*\.(starts_with|ends_with|contains)\(", line):
            yield f"{rel}:{i}: a reason's text is compared; match on RejectReason"


SETTINGS_TABLE = "schema/settings.rs"
# Structs whose clap flags share a run setting's name on purpose: `improve demo` has its own
# --iterations (default 5) and --test-cmd (the venv's Python), not a run's.
OWN_FLAGS = {"DemoArgs"}


def setting_names(files):
    """The settings of the table: its entries are `name: Type => Type {` lines."""
    text = dict(files).get(SETTINGS_TABLE, "")
    return set(re.findall(r"^\s+(\w+): [^\n]*=> [^\n]*\{$", text, re.M))


def settings_declared_elsewhere(rel, text, names):
    """A second declaration of a run setting, outside the table and the settings module that
    expands it: a clap field (`pub NAME:` under an `#[arg(` attribute) named like a setting,
    outside the structs in OWN_FLAGS; a serde default function `fn default_NAME`; or a strict
    config-file struct (`deny_unknown_fields`, which only the generated file layer has)."""
    if rel == SETTINGS_TABLE or rel.startswith("settings/"):
        return
    struct, in_arg = None, False
    for i, line in enumerate(text.split("\n"), 1):
        m = re.match(r"\s*(pub(\([a-z]+\))? )?struct (\w+)", line)
        if m:
            struct = m.group(3)
        if re.match(r"\s*#\[arg\(", line):
            in_arg = True
            continue
        field = re.match(r"\s*(pub(\([a-z]+\))? )?(\w+): ", line)
        if in_arg and field and not line.strip().startswith("#"):
            if field.group(3) in names and struct not in OWN_FLAGS:
                yield f"{rel}:{i}: flag `{field.group(3)}` is a run setting: declare it in {SETTINGS_TABLE}"
            in_arg = False
        m = re.search(r"\bfn default_(\w+)", line)
        if m and m.group(1) in names:
            yield f"{rel}:{i}: fn default_{m.group(1)}: a setting's default belongs in {SETTINGS_TABLE}"
        if "deny_unknown_fields" in line and not line.strip().startswith("//"):
            yield f"{rel}:{i}: a strict config struct: the file layer is generated in settings/file.rs"


def main():
    files = list(sources())
    names = setting_names(files)
    breaches = [] if len(names) > 20 else [f"{SETTINGS_TABLE}: the settings table was not found"]
    for rel, text in files:
        breaches += settings_declared_elsewhere(rel, text, names)
        breaches += long_functions(rel, text)
        breaches += artifact_names(rel, text)
        breaches += reason_comparisons(rel, text)
        breaches += schema_imports(rel, text)
    loops = {" -> ".join(loop) for depth in (1, 2, 3) for loop in cycles(files, depth)}
    breaches += [f"import loop between modules: {loop}" for loop in sorted(loops)]
    for b in breaches:
        print(b)
    if breaches:
        sys.exit(1)
    print(f"shape: {len(files)} files, no function over {MAX_LINES} lines, no import loop, "
          "file names only in artifacts.rs, no reason text compared, the schema stands alone, "
          f"{len(names)} settings declared once")


if __name__ == "__main__":
    main()
