#!/usr/bin/env python3
"""Generates the benchmark's larger fixture: a package whose suite takes a while, as a real
project's does, and the answers a stand-in LLM gives for it.

Usage: bench_fixture.py REPO_DIR RECORDING_FILE [--modules 8] [--functions 30] [--cases 40]

REPO_DIR gets `gen/mod_NN.py` (functions with one branch each), `tests/test_mod_NN.py` covering
the first half of each module's functions with `--cases` parametrized cases each (so the suite
has thousands of tests), and a pyproject.toml. RECORDING_FILE gets one answer per module in
improve's recording format (what scripts/bench_standin.py serves): tests for every function of
the module, so those for the covered half add nothing and are dropped as redundant, and those
for the other half are kept. Standard library only.
"""
import argparse
import json
import os


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo")
    parser.add_argument("recording")
    parser.add_argument("--modules", type=int, default=8)
    parser.add_argument("--functions", type=int, default=30)
    parser.add_argument("--cases", type=int, default=20)
    args = parser.parse_args()

    os.makedirs(os.path.join(args.repo, "gen"), exist_ok=True)
    os.makedirs(os.path.join(args.repo, "tests"), exist_ok=True)
    with open(os.path.join(args.repo, "gen", "__init__.py"), "w") as f:
        f.write("")
    with open(os.path.join(args.repo, "pyproject.toml"), "w") as f:
        f.write('[tool.pytest.ini_options]\npythonpath = ["."]\n')

    exchanges = []
    for m in range(args.modules):
        name = f"mod_{m:02d}"
        funcs = [f"f_{m:02d}_{i:02d}" for i in range(args.functions)]
        with open(os.path.join(args.repo, "gen", f"{name}.py"), "w") as f:
            for i, fn in enumerate(funcs):
                f.write(
                    f"def {fn}(x):\n"
                    f"    if x > {i}:\n"
                    f"        return x - {i}\n"
                    f"    return {i} - x\n\n\n"
                )
        covered = funcs[: len(funcs) // 2]
        with open(os.path.join(args.repo, "tests", f"test_{name}.py"), "w") as f:
            f.write(f"import pytest\n\nfrom gen.{name} import {', '.join(covered)}\n\n")
            for i, fn in enumerate(covered):
                f.write(
                    f"\n@pytest.mark.parametrize('d', range(1, {args.cases + 1}))\n"
                    f"def test_{fn}(d):\n"
                    f"    assert {fn}({i} + d) == d\n"
                    f"    assert {fn}({i} - d) == d\n\n"
                )
        answer = [f"from gen.{name} import {', '.join(funcs)}\n\n"]
        for i, fn in enumerate(funcs):
            answer.append(
                f"\ndef test_{fn}_above():\n    assert {fn}({i + 3}) == 3\n\n"
                f"\ndef test_{fn}_below():\n    assert {fn}({i - 2}) == 2\n\n"
            )
        text = (
            f"Tests for every function of `gen/{name}.py`.\n\n"
            f"```python\n# tests/test_{name}_generated.py\n{''.join(answer)}```\n"
        )
        exchanges.append({
            "tag": f"add:gen/{name}.py",
            "provider": "replay",
            "model": "bench",
            "system": "",
            "messages": [],
            "response": {"text": text, "tokens_in": 0, "tokens_out": 0, "finish_reason": "stop"},
        })
    with open(args.recording, "w") as f:
        json.dump({"version": 1, "exchanges": exchanges}, f)


if __name__ == "__main__":
    main()
