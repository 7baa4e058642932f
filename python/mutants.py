"""Mutants of a module, for the helper's `mutants` op (helper.py imports this module).

  {"op": "mutants", "file": F, "tests": {name: [lines]} | null, "cap": N}
      Up to N single changes to the source of F, each on a line inside a function that one of
      the tests covers (any function line when `tests` is null), spread over the tests.
      -> {"ok": true, "candidates": <changes possible on those lines>, "mutants": [
           {"id", "line", "operator", "before", "after", "start", "end", "text",
            "scopes": [[name, first line], ...], "tests": [names covering the line]}]}
      `start` and `end` are byte offsets in F: the mutant is F's bytes with that span replaced
      by `text`, on the same lines (so tracebacks and coverage line numbers still hold).
      `scopes` are the functions enclosing the change, outermost first, as their code objects
      name them (co_name, co_firstlineno): what the pytest plugin swaps.

The operators are the classic ones: a comparison flipped or moved off by one, `and`/`or`
swapped, `not` dropped, an arithmetic operator swapped, a number changed by one, a boolean
negated, a statement removed, a returned value replaced by None.
"""
import ast
import bisect
import io
import tokenize

# What each operator becomes. A comparison is both flipped (`<` -> `>=`) and moved off by one
# (`<` -> `<=`); the first is tried first.
COMPARE = {
    ast.Lt: ["<=", ">="],
    ast.LtE: ["<", ">"],
    ast.Gt: [">=", "<="],
    ast.GtE: [">", "<"],
    ast.Eq: ["!="],
    ast.NotEq: ["=="],
    ast.Is: ["is not"],
    ast.IsNot: ["is"],
    ast.In: ["not in"],
    ast.NotIn: ["in"],
}
ARITH = {
    ast.Add: ("+", "-"),
    ast.Sub: ("-", "+"),
    ast.Mult: ("*", "/"),
    ast.Div: ("/", "*"),
    ast.FloorDiv: ("//", "*"),
    ast.Mod: ("%", "//"),
}
BOOL = {ast.And: ("and", "or"), ast.Or: ("or", "and")}
REMOVABLE = (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete, ast.Raise)


class Source:
    """A module's text with byte offsets for (line, byte column) positions, as ast gives them."""

    def __init__(self, data):
        self.data = data
        self.starts = [0]
        for line in data.splitlines(keepends=True):
            self.starts.append(self.starts[-1] + len(line))

    def offset(self, line, col):
        return self.starts[line - 1] + col

    def text(self, start, end):
        return self.data[start:end].decode("utf-8", "replace")

    def line_at(self, offset):
        return bisect.bisect_right(self.starts, offset)

    def line(self, n):
        return self.text(self.starts[n - 1], self.starts[n]).rstrip("\r\n")


def op_token(src, start, end, words):
    """(start, end) byte offsets of the operator `words` (e.g. ["not", "in"]) in the gap between
    two operands, found by Python's tokenizer (a gap may hold parentheses and comments)."""
    gap = src.data[start:end].decode("utf-8")
    found = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(gap).readline):
            if tok.type in (tokenize.OP, tokenize.NAME) and tok.string == words[len(found)]:
                found.append(tok)
                if len(found) == len(words):
                    break
            elif found:
                found = []
    except (tokenize.TokenError, IndentationError, IndexError):
        pass
    if len(found) != len(words):
        return None
    lines = gap.splitlines(keepends=True) or [""]

    def at(pos):
        row, col = pos
        before = "".join(lines[: row - 1]) + lines[row - 1][:col]
        return start + len(before.encode("utf-8"))

    return at(found[0].start), at(found[-1].end)


class Finder(ast.NodeVisitor):
    """Every candidate change inside a function, with the functions enclosing it."""

    def __init__(self, src):
        self.src = src
        self.scopes = []
        self.found = []
        # The first lines of the statements being visited: coverage.py reports a statement
        # that spans lines on its first.
        self.statements = []

    def visit(self, node):
        if not isinstance(node, ast.stmt):
            return super().visit(node)
        self.statements.append(node.lineno)
        try:
            return super().visit(node)
        finally:
            self.statements.pop()

    def add(self, node, operator, start, end, text):
        if not self.scopes:
            return
        # The same lines as before: line numbers in tracebacks and coverage still hold.
        text += "\n" * self.src.data[start:end].count(b"\n")
        self.found.append(
            {
                "line": self.statements[-1] if self.statements else node.lineno,
                "operator": operator,
                "start": start,
                "end": end,
                "text": text,
                "scopes": [list(s) for s in self.scopes],
            }
        )

    def pos(self, node):
        return self.src.offset(node.lineno, node.col_offset)

    def end(self, node):
        return self.src.offset(node.end_lineno, node.end_col_offset)

    def visit_FunctionDef(self, node):
        first = min([d.lineno for d in node.decorator_list] + [node.lineno])
        for d in node.decorator_list:
            self.visit(d)
        self.scopes.append((node.name, first))
        for stmt in node.body:
            self.visit(stmt)
        self.scopes.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node):
        self.scopes.append(("<lambda>", node.lineno))
        self.visit(node.body)
        self.scopes.pop()

    def visit_Compare(self, node):
        left = node.left
        for op, right in zip(node.ops, node.comparators):
            words = {ast.IsNot: ["is", "not"], ast.NotIn: ["not", "in"]}
            word = words.get(type(op)) or [symbol(op)]
            span_ = op_token(self.src, self.end(left), self.pos(right), word)
            if span_:
                for new in COMPARE[type(op)]:
                    self.add(node, "comparison", *span_, new)
            left = right
        self.generic_visit(node)

    def visit_BinOp(self, node):
        pair = ARITH.get(type(node.op))
        if pair:
            span_ = op_token(self.src, self.end(node.left), self.pos(node.right), [pair[0]])
            if span_:
                self.add(node, "arithmetic", *span_, pair[1])
        self.generic_visit(node)

    def visit_BoolOp(self, node):
        old, new = BOOL[type(node.op)]
        span_ = op_token(self.src, self.end(node.values[0]), self.pos(node.values[1]), [old])
        if span_:
            self.add(node, "boolean", *span_, new)
        self.generic_visit(node)

    def visit_UnaryOp(self, node):
        if isinstance(node.op, ast.Not):
            self.add(node, "boolean", self.pos(node), self.pos(node.operand), "")
        self.generic_visit(node)

    def visit_Constant(self, node):
        value = node.value
        if isinstance(value, bool):
            self.add(node, "constant", self.pos(node), self.end(node), str(not value))
        elif isinstance(value, int):
            self.add(node, "constant", self.pos(node), self.end(node), str(value + 1))

    def visit_Return(self, node):
        value = node.value
        if value is not None and not (isinstance(value, ast.Constant) and value.value is None):
            self.add(node, "return", self.pos(value), self.end(value), "None")
        self.generic_visit(node)

    def generic_visit(self, node):
        if isinstance(node, REMOVABLE) and self.scopes and not is_inert(node):
            self.remove(node)
        super().generic_visit(node)

    def remove(self, node):
        """The statement replaced by `pass`, its other lines kept as blank lines."""
        start, end = self.pos(node), self.end(node)
        rest = self.src.data[end : self.src.starts[node.end_lineno]].strip()
        if rest and not rest.startswith(b"#"):
            return  # `a = 1; b = 2`: the line holds more than this statement
        self.add(node, "statement removed", start, end, "pass")


def symbol(op):
    return {
        ast.Lt: "<",
        ast.LtE: "<=",
        ast.Gt: ">",
        ast.GtE: ">=",
        ast.Eq: "==",
        ast.NotEq: "!=",
        ast.Is: "is",
        ast.In: "in",
    }[type(op)]


def is_inert(node):
    """A statement that is only a constant (a docstring, `...`): removing it changes nothing, so
    no test could notice, and a mutant of it would only count against a good test."""
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)


def applied(src, m):
    return src.data[: m["start"]] + m["text"].encode("utf-8") + src.data[m["end"] :]


def describe(src, m):
    """The changed line before and after, for a human reading the survivors."""
    line = src.line_at(m["start"])
    mutated = Source(applied(src, m))
    return src.line(line).strip(), mutated.line(line).strip()


def spread(candidates, tests, cap):
    """Up to `cap` candidates, taken in turn for each test (the test with the fewest first),
    each test's own taken line by line with the operators interleaved: every test gets some of
    the lines it covers checked, and no one line takes the whole cap."""
    if tests is None:
        tests = {"": sorted({c["line"] for c in candidates})}
    queues = []
    for name, lines in tests.items():
        lines = set(lines)
        mine = [c for c in candidates if c["line"] in lines]
        # Round-robin over the lines: the first change of every line, then the second, ...
        by_line = {}
        for c in mine:
            by_line.setdefault(c["line"], []).append(c)
        order = []
        rank = 0
        while any(rank < len(v) for v in by_line.values()):
            order.extend(v[rank] for _, v in sorted(by_line.items()) if rank < len(v))
            rank += 1
        queues.append((len(mine), name, order))
    queues.sort(key=lambda q: (q[0], q[1]))
    chosen, seen = [], set()
    while len(chosen) < cap and any(q[2] for q in queues):
        for _, _, order in queues:
            while order:
                c = order.pop(0)
                key = (c["start"], c["end"], c["text"])
                if key not in seen:
                    seen.add(key)
                    chosen.append(c)
                    break
            if len(chosen) >= cap:
                break
    return chosen


def mutants(path, tests, cap):
    with open(path, "rb") as f:
        src = Source(f.read())
    tree = ast.parse(src.data)
    finder = Finder(src)
    finder.visit(tree)
    wanted = None if tests is None else {n for lines in tests.values() for n in lines}
    candidates = [c for c in finder.found if wanted is None or c["line"] in wanted]
    out = []
    for m in spread(candidates, tests, cap * 2):
        try:
            ast.parse(applied(src, m))
        except (SyntaxError, ValueError):
            continue  # a change the grammar refuses is no mutant
        m["before"], m["after"] = describe(src, m)
        if m["before"] == m["after"]:
            continue
        m["tests"] = sorted(
            name for name, lines in (tests or {}).items() if m["line"] in set(lines)
        )
        m["id"] = len(out) + 1
        out.append(m)
        if len(out) >= cap:
            break
    return {"ok": True, "candidates": len(candidates), "mutants": out}
