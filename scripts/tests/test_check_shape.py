"""Tests of scripts/check_shape.py on synthetic module texts: `.venv/bin/python -m pytest scripts/tests`."""
import importlib.util
import os

_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "check_shape.py")
_SPEC = importlib.util.spec_from_file_location("check_shape", _PATH)
check_shape = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(check_shape)


def test_group_imports_are_read_nested_and_aliased():
    text = "use crate::{git, llm::{self, client::Client as C}, state::*};\nuse super::{a, b::c};"
    assert check_shape.references("x/y.rs", text) == {
        "git",
        "llm",
        "llm::client::Client",
        "state",
        "x::a",
        "x::b::c",
    }


def test_super_self_and_paths_in_code_resolve_from_the_file():
    text = "use super::super::top::T;\nuse self::inner::I;\nfn f() { crate::fsutil::write(x); }"
    assert check_shape.references("a/b/c.rs", text) == {"a::top::T", "a::b::c::inner::I", "fsutil::write"}
    # In a mod.rs, `super` is the parent of the folder's module.
    assert check_shape.references("llm/mod.rs", "use super::{config};") == {"config"}


def test_comments_are_not_imports():
    assert check_shape.references("a.rs", "// use crate::b;\nfn f() {}") == set()


def test_a_super_group_loop_is_reported():
    files = [
        ("llm/mod.rs", "mod client;\nmod openai;\n"),
        ("llm/client.rs", "use super::{ChatRequest, LlmError, openai};\n"),
        ("llm/openai.rs", "use super::{ChatRequest, client::cut};\n"),
    ]
    assert check_shape.cycles(files, 2) == [["llm::client", "llm::openai"]]


def test_a_child_using_its_parent_is_not_a_loop():
    files = [
        ("llm/mod.rs", "mod client;\npub use self::client::LlmClient;\npub struct ChatRequest;\n"),
        ("llm/client.rs", "use super::{ChatRequest, LlmError};\nuse crate::llm::Role;\n"),
    ]
    assert check_shape.cycles(files, 1) == []
    assert check_shape.cycles(files, 2) == []


def test_siblings_using_shared_types_are_not_a_loop():
    files = [
        ("llm/mod.rs", "mod client;\nmod openai;\nmod wire;\n"),
        ("llm/client.rs", "use super::{wire::WireFormat, ChatRequest};\n"),
        ("llm/openai.rs", "use super::wire::{self, WireFormat};\n"),
        ("llm/wire.rs", "use super::{ChatRequest, LlmError};\n"),
    ]
    assert check_shape.cycles(files, 2) == []


def test_the_schema_may_use_itself_but_nothing_else_of_the_crate():
    ok = "use super::{Coverage, Verdict};\nuse crate::schema::Step;\n// crate::config is not used\n"
    assert list(check_shape.schema_imports("schema/run.rs", ok)) == []
    bad = "use crate::config::RunSettings;\n"
    assert list(check_shape.schema_imports("schema/run.rs", bad)) == [
        "schema/run.rs:1: the schema uses crate::config; saved types live in src/schema/"
    ]
    # Outside the schema the rule does not apply.
    assert list(check_shape.schema_imports("state.rs", bad)) == []
