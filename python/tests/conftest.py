"""Tests of improve's Python side: the helper (helper.py, mutants.py) and the pytest plugin.

The modules under test sit in python/, one folder up: that folder goes first on the path, as
it is for the helper (its script's folder) and for the plugin (improve's plugin folder).
"""
import os
import sys
import textwrap

import pytest

PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if PYTHON_DIR not in sys.path:
    sys.path.insert(0, PYTHON_DIR)

pytest_plugins = ["pytester"]


@pytest.fixture
def write(tmp_path):
    """write(name, text) -> the path of a file under tmp_path holding `text` (dedented)."""

    def write(name, text):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return str(path)

    return write


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()
