"""What each new test adds to the package's coverage, from a coverage data file whose contexts
are test node ids (written under improve_plugin).

Usage: python gain.py DATA_FILE WORKTREE BEFORE_JSON NAMES_JSON
BEFORE_JSON is coverage's JSON report at the run branch's tip (may be missing: nothing covered);
NAMES_JSON lists the candidate tests as improve prunes them (`test_a`, `TestK::test_b`), in file
order. A test adds something when it runs a line, or takes a branch, of a measured module that
neither the suite at the tip nor an earlier candidate did. Prints one JSON object:
{"adds": {name: {"path/mod.py": {"lines": [..], "branches": [[a, b], ..]}}}, "redundant": [..]}.
"""
import json
import os
import re
import sys

from coverage import CoverageData


def name_of(context):
    # "tests/test_x.py::TestK::test_b[1-2]" -> "TestK::test_b"
    parts = context.split("::")[1:]
    if not parts:
        return None
    parts[-1] = parts[-1].split("[")[0]
    return "::".join(parts)


def main():
    data_file, worktree, before_json, names_json = sys.argv[1:5]
    names = json.loads(names_json)
    try:
        with open(before_json, encoding="utf-8") as f:
            before = json.load(f).get("files", {})
    except (OSError, ValueError):
        before = {}

    data = CoverageData(basename=data_file)
    data.read()
    files = {}
    for path in data.measured_files():
        rel = os.path.relpath(path, worktree)
        if rel.startswith(".."):
            continue
        known = before.get(rel, {})
        taken = {tuple(b) for b in known.get("executed_branches", [])}
        files[path] = {
            "rel": rel,
            "covered": set(known.get("executed_lines", [])),
            "taken": taken,
            "branches": taken | {tuple(b) for b in known.get("missing_branches", [])},
        }

    per_test = {}
    for context in sorted(data.measured_contexts()):
        name = name_of(context)
        if name not in names:
            continue
        # Query contexts are regular expressions, searched: test_a would match test_ab.
        data.set_query_contexts(["^" + re.escape(context) + "$"])
        got = per_test.setdefault(name, {})
        for path, f in files.items():
            lines = set(data.lines(path) or [])
            # Only arcs that are branches count (coverage also records entries and exits);
            # for a module the tip's report lacks, every arc between real lines counts.
            arcs = {
                a
                for a in (data.arcs(path) or [])
                if a in f["branches"] or (not f["branches"] and a[0] > 0 and a[1] > 0)
            }
            if lines or arcs:
                mine = got.setdefault(path, [set(), set()])
                mine[0] |= lines
                mine[1] |= arcs

    adds, redundant = {}, []
    for name in names:
        added = {}
        for path, (lines, arcs) in per_test.get(name, {}).items():
            f = files[path]
            new_lines, new_arcs = lines - f["covered"], arcs - f["taken"]
            if new_lines or new_arcs:
                added[f["rel"]] = {"lines": sorted(new_lines), "branches": sorted(new_arcs)}
                f["covered"] |= new_lines
                f["taken"] |= new_arcs
        if added:
            adds[name] = added
        else:
            redundant.append(name)
    print(json.dumps({"adds": adds, "redundant": redundant}))


if __name__ == "__main__":
    main()
