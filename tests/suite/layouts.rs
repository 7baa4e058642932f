//! Real project shapes, run with no flags but the LLM's: each fixture is a git repository with
//! its own `.venv` (a real venv whose site-packages reach the test venv's pytest and coverage
//! through a `.pth` file, as an editable install reaches a checkout), and each run must find
//! the code and the tests as pytest does, measure the same baseline as the project's own
//! `pytest`, and keep an iteration.

use std::path::Path;
use std::process::Command;

use super::*;

/// Writes `files` (path, text) under `root`, making folders as needed.
fn write_files(root: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

/// A venv at `<repo>/.venv` made from the test Python's base interpreter, seeing the test
/// venv's packages (pytest, coverage) and `extra` paths through a `.pth` file.
fn make_venv(repo: &Path, extra: &[&Path]) {
    let info = Command::new(python())
        .args([
            "-c",
            "import sys, site; print(sys._base_executable); print(site.getsitepackages()[0])",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&info.stdout).to_string();
    let mut lines = text.lines();
    let (base, site) = (lines.next().unwrap(), lines.next().unwrap());
    let venv = repo.join(".venv");
    let out = Command::new(base)
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let own_site = Command::new(venv.join("bin/python"))
        .args(["-c", "import site; print(site.getsitepackages()[0])"])
        .output()
        .unwrap();
    let own_site = String::from_utf8_lossy(&own_site.stdout).trim().to_string();
    let mut pth = format!("{site}\n");
    for p in extra {
        pth.push_str(&format!("{}\n", p.display()));
    }
    std::fs::write(Path::new(&own_site).join("improve_test_deps.pth"), pth).unwrap();
}

/// A repository with `files` committed (and `.venv/` ignored), and its own venv.
fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_files(root, files);
    let ignore = root.join(".gitignore");
    let mut text = std::fs::read_to_string(&ignore).unwrap_or_default();
    text.push_str(".venv/\n");
    std::fs::write(&ignore, text).unwrap();
    git(root, &["init", "-q", "-b", "main"]);
    git(root, &["add", "-A"]);
    git(root, &["commit", "-qm", "initial"]);
    // As `pip install -e .` would: a src layout is importable from the user's checkout.
    let src = root.join("src");
    let editable: Vec<&Path> = if src.is_dir() { vec![&src] } else { vec![] };
    make_venv(root, &editable);
    dir
}

/// How many tests the project's own `pytest` collects in its own checkout.
fn own_pytest_count(root: &Path) -> u64 {
    let out = Command::new(root.join(".venv/bin/python"))
        .args([
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
        ])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(root)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines().filter(|l| l.contains("::")).count() as u64
}

/// `improve -n 1` with no flags but the stand-in's URL and model.
async fn run_plain(root: &Path, answers: Vec<Answer>, extra: &[&str]) -> (Output, StandIn) {
    let llm = StandIn::start(Wire::OpenAi, answers).await;
    let mut cmd = improve(root);
    cmd.args(["-n", "1", "--llm-url", &llm.url(), "--model", "m"]);
    cmd.args(extra);
    let out = output(cmd).await;
    (out, llm)
}

fn state(root: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(root.join(".improve/state.json")).unwrap())
        .unwrap()
}

/// Runs the fixture and checks what every layout must show: exit 0, the baseline of the
/// project's own pytest, one kept iteration whose file lies in `tests_in`, and the packages.
async fn keeps_one(
    root: &Path,
    answer: &str,
    packages: &[&str],
    tests_in: &str,
) -> serde_json::Value {
    let own = own_pytest_count(root);
    let (out, _llm) = run_plain(root, vec![code_answer(answer)], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let status = improve_json(root, &["status", "--json"]);
    assert_eq!(status["tests_baseline"], own, "{}", stderr(&out));
    assert_eq!(status["kept"], 1, "{}", stderr(&out));
    let log = improve_json(root, &["log", "--json"]);
    let file = log[0]["files"][0].as_str().unwrap().to_string();
    let dir = file.rsplit_once('/').map_or("", |(d, _)| d);
    assert_eq!(dir, tests_in, "{file}");
    let st = state(root);
    let got: Vec<&str> = st["settings"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(got, packages);
    st
}

const ALPHA: &str =
    "def double(x):\n    if x < 0:\n        raise ValueError('negative')\n    return 2 * x\n";
const BETA: &str = "def shout(s):\n    if not s:\n        return ''\n    return s.upper() + '!'\n";
const TESTS_BOTH: &str = "import pytest\n\nfrom alpha.core import double\nfrom beta.core import shout\n\n\ndef test_double_rejects_negatives():\n    with pytest.raises(ValueError):\n        double(-1)\n\n\ndef test_shout_empty():\n    assert shout('') == ''\n";

#[tokio::test]
async fn two_packages_side_by_side_under_src() {
    let fx = project(&[
        ("src/alpha/__init__.py", ""),
        ("src/alpha/core.py", ALPHA),
        ("src/beta/__init__.py", ""),
        ("src/beta/core.py", BETA),
        ("src/testers/__init__.py", "def check(x):\n    return x\n"),
        (
            "tests/test_basic.py",
            "from alpha.core import double\nfrom beta.core import shout\n\n\ndef test_double():\n    assert double(2) == 4\n\n\ndef test_shout():\n    assert shout('a') == 'A!'\n",
        ),
    ]);
    let st = keeps_one(fx.path(), TESTS_BOTH, &["src/alpha", "src/beta"], "tests").await;
    let modules = st["baseline"]["coverage"]["modules"].as_object().unwrap();
    assert!(
        modules.contains_key("src/alpha/core.py") && modules.contains_key("src/beta/core.py"),
        "{modules:?}"
    );
    assert!(
        !modules.keys().any(|k| k.contains("testers")),
        "{modules:?}"
    );
}

#[tokio::test]
async fn a_namespace_package() {
    let fx = project(&[
        ("ns/alpha/__init__.py", ""),
        ("ns/alpha/core.py", ALPHA),
        (
            "tests/test_core.py",
            "from ns.alpha.core import double\n\n\ndef test_double():\n    assert double(2) == 4\n",
        ),
    ]);
    let answer = "import pytest\n\nfrom ns.alpha.core import double\n\n\ndef test_negative():\n    with pytest.raises(ValueError):\n        double(-3)\n";
    keeps_one(fx.path(), answer, &["ns/alpha"], "tests").await;
}

#[tokio::test]
async fn a_single_module_with_its_tests_at_the_root() {
    let fx = project(&[
        ("solo.py", ALPHA),
        (
            "setup.py",
            "from setuptools import setup\nsetup(name='solo', py_modules=['solo'])\n",
        ),
        (
            "test_solo.py",
            "from solo import double\n\n\ndef test_double():\n    assert double(2) == 4\n",
        ),
    ]);
    let answer = "import pytest\n\nfrom solo import double\n\n\ndef test_negative():\n    with pytest.raises(ValueError):\n        double(-3)\n";
    keeps_one(fx.path(), answer, &["solo.py"], "").await;
}

#[tokio::test]
async fn tests_inside_the_package_are_found_and_not_measured() {
    let fx = project(&[
        ("pkg/__init__.py", ""),
        ("pkg/core.py", ALPHA),
        ("pkg/tests/__init__.py", ""),
        (
            "pkg/tests/test_core.py",
            "from pkg.core import double\n\n\ndef test_double():\n    assert double(2) == 4\n",
        ),
    ]);
    let answer = "import pytest\n\nfrom pkg.core import double\n\n\ndef test_negative():\n    with pytest.raises(ValueError):\n        double(-3)\n";
    let st = keeps_one(fx.path(), answer, &["pkg"], "pkg/tests").await;
    let modules = st["baseline"]["coverage"]["modules"].as_object().unwrap();
    assert!(modules.contains_key("pkg/core.py"), "{modules:?}");
    assert!(!modules.keys().any(|k| k.contains("tests")), "{modules:?}");
}

#[tokio::test]
async fn testpaths_and_python_files_from_setup_cfg_decide() {
    let fx = project(&[
        ("pkg/__init__.py", ""),
        ("pkg/core.py", ALPHA),
        // Not collected by the project's pytest: testpaths leaves it out.
        (
            "tests/test_ignored.py",
            "def test_never_collected():\n    assert False\n",
        ),
        (
            "checks/check_core.py",
            "from pkg.core import double\n\n\ndef test_double():\n    assert double(2) == 4\n",
        ),
        (
            "setup.cfg",
            "[tool:pytest]\ntestpaths = checks\npython_files = check_*.py\naddopts = --import-mode=importlib --strict-markers\nfilterwarnings =\n    error\nxfail_strict = true\n",
        ),
    ]);
    let answer = "import pytest\n\nfrom pkg.core import double\n\n\ndef test_negative():\n    with pytest.raises(ValueError):\n        double(-3)\n";
    keeps_one(fx.path(), answer, &["pkg"], "checks").await;
    let log = improve_json(fx.path(), &["log", "--json"]);
    assert_eq!(log[0]["files"][0], "checks/check_core_improve_1.py");
}

#[tokio::test]
async fn zero_tests_is_a_valid_start() {
    let fx = project(&[("pkg/__init__.py", ""), ("pkg/core.py", ALPHA)]);
    let answer = "import pytest\n\nfrom pkg.core import double\n\n\ndef test_negative():\n    with pytest.raises(ValueError):\n        double(-3)\n";
    let st = keeps_one(fx.path(), answer, &["pkg"], "tests").await;
    assert_eq!(st["baseline"]["tests"], 0);
    assert_eq!(st["baseline"]["coverage"]["percent"], 0.0);
}

#[tokio::test]
async fn a_generated_version_file_that_git_ignores_is_brought_into_the_worktree() {
    let fx = project(&[
        (".gitignore", "src/vpkg/_version.py\n"),
        (
            "src/vpkg/__init__.py",
            "from vpkg._version import version\n",
        ),
        ("src/vpkg/core.py", ALPHA),
        (
            "tests/test_core.py",
            "from vpkg import version\nfrom vpkg.core import double\n\n\ndef test_version():\n    assert version == '1.2.3'\n\n\ndef test_double():\n    assert double(2) == 4\n",
        ),
    ]);
    // Written by the install, ignored by git: only in the user's tree.
    write_files(
        fx.path(),
        &[("src/vpkg/_version.py", "version = '1.2.3'\n")],
    );
    let answer = "import pytest\n\nfrom vpkg.core import double\n\n\ndef test_negative():\n    with pytest.raises(ValueError):\n        double(-3)\n";
    let st = keeps_one(fx.path(), answer, &["src/vpkg"], "tests").await;
    assert_eq!(
        st["baseline"]["failed"].as_array().unwrap().len(),
        0,
        "{st}"
    );
    assert!(
        st["baseline"]["coverage"]["percent"].as_f64().unwrap() > 50.0,
        "{st}"
    );
}

#[tokio::test]
async fn an_editable_install_of_the_users_tree_does_not_leak_into_the_worktree() {
    let fx = project(&[
        (
            "pyproject.toml",
            "[project]\nname = \"epkg\"\n[tool.hatch.build.targets.wheel]\npackages = [\"src/epkg\"]\n",
        ),
        ("src/epkg/__init__.py", ""),
        ("src/epkg/core.py", ALPHA),
        (
            "tests/test_core.py",
            "from epkg.core import double\n\n\ndef test_double():\n    assert double(2) == 4\n",
        ),
    ]);
    // The venv imports the user's checkout (what `uv sync` / `pip install -e .` set up), and
    // the user has an uncommitted edit there that the committed tests would fail on.
    std::fs::remove_dir_all(fx.path().join(".venv")).unwrap();
    make_venv(fx.path(), &[&fx.path().join("src")]);
    std::fs::write(
        fx.path().join("src/epkg/core.py"),
        "def double(x):\n    return 0\n",
    )
    .unwrap();
    let answer = "import pytest\n\nfrom epkg.core import double\n\n\ndef test_negative():\n    with pytest.raises(ValueError):\n        double(-3)\n\n\ndef test_three():\n    assert double(3) == 6\n";
    let (out, _llm) = run_plain(fx.path(), vec![code_answer(answer)], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let status = improve_json(fx.path(), &["status", "--json"]);
    assert_eq!(status["kept"], 1, "{}", stderr(&out));
    // Both baseline tests passed: they ran the committed code, not the edit.
    let st = state(fx.path());
    assert_eq!(
        st["baseline"]["passed"].as_array().unwrap().len(),
        1,
        "{st}"
    );
    assert!(
        st["baseline"]["coverage"]["modules"]["src/epkg/core.py"]
            .as_f64()
            .unwrap()
            > 0.0,
        "{st}"
    );
    // The user's edit is still there, untouched.
    assert!(
        std::fs::read_to_string(fx.path().join("src/epkg/core.py"))
            .unwrap()
            .contains("return 0")
    );
}

#[tokio::test]
async fn a_failing_setup_command_stops_before_the_first_iteration() {
    let fx = project(&[("pkg/__init__.py", ""), ("pkg/core.py", ALPHA)]);
    let (out, llm) = run_plain(fx.path(), vec![], &["--setup-cmd", "echo building; exit 3"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let last = err.trim().lines().last().unwrap();
    assert!(
        last.contains("--setup-cmd `echo building; exit 3`")
            && last.contains("exit code 3")
            && last.contains("building"),
        "{err}"
    );
    assert!(llm.requests().await.is_empty());
}

#[tokio::test]
async fn a_module_generated_by_the_build_needs_the_setup_command() {
    let files = [
        (".gitignore", "gpkg/_gen.py\n"),
        ("gpkg/__init__.py", "from gpkg._gen import VALUE\n"),
        ("gpkg/core.py", ALPHA),
        (
            "tests/test_core.py",
            "from gpkg import VALUE\nfrom gpkg.core import double\n\n\ndef test_value():\n    assert VALUE == 7\n\n\ndef test_double():\n    assert double(2) == 4\n",
        ),
    ];
    // Nowhere on disk: without the build step, the package does not import.
    let fx = project(&files);
    let (out, llm) = run_plain(fx.path(), vec![], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("gpkg/_gen.py") && err.contains("--setup-cmd"),
        "{err}"
    );
    assert!(llm.requests().await.is_empty());

    let fx = project(&files);
    let answer = "import pytest\n\nfrom gpkg.core import double\n\n\ndef test_negative():\n    with pytest.raises(ValueError):\n        double(-3)\n";
    let setup = "python -c \"open('gpkg/_gen.py', 'w').write('VALUE = 7')\"";
    let (out, _llm) = run_plain(
        fx.path(),
        vec![code_answer(answer)],
        &["--setup-cmd", setup],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let status = improve_json(fx.path(), &["status", "--json"]);
    assert_eq!(status["tests_baseline"], 2);
    assert_eq!(status["kept"], 1, "{}", stderr(&out));
    // The generated file is no side effect of the tests, and never part of a commit.
    let log = improve_json(fx.path(), &["log", "--json"]);
    assert_eq!(log[0]["files"].as_array().unwrap().len(), 1, "{log}");
}

#[tokio::test]
async fn a_test_file_that_fails_on_a_missing_dependency_gets_no_fix_iteration() {
    let fx = project(&[
        ("pkg/__init__.py", ""),
        ("pkg/core.py", ALPHA),
        (
            "tests/test_core.py",
            "from pkg.core import double\n\n\ndef test_double():\n    assert double(2) == 4\n",
        ),
        (
            "tests/test_extra.py",
            "import not_installed_anywhere\n\n\ndef test_x():\n    assert not_installed_anywhere\n",
        ),
    ]);
    let answer = "import pytest\n\nfrom pkg.core import double\n\n\ndef test_negative():\n    with pytest.raises(ValueError):\n        double(-3)\n";
    let (out, _llm) = run_plain(fx.path(), vec![code_answer(answer)], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("install not_installed_anywhere") && err.contains("tests/test_extra.py"),
        "{err}"
    );
    let log = improve_json(fx.path(), &["log", "--json"]);
    assert_eq!(log[0]["kind"], "add", "{log}");
    assert_eq!(log[0]["outcome"], "kept", "{log}");
}

#[tokio::test]
async fn python_files_naming_one_file_still_runs_the_new_tests_in_the_suite() {
    let fx = project(&[
        ("solo.py", ALPHA),
        (
            "tests.py",
            "from solo import double\n\n\ndef test_double():\n    assert double(2) == 4\n",
        ),
        ("pytest.ini", "[pytest]\npython_files = tests.py\n"),
    ]);
    let answer = "import pytest\n\nfrom solo import double\n\n\ndef test_negative():\n    with pytest.raises(ValueError):\n        double(-3)\n";
    let st = keeps_one(fx.path(), answer, &["solo.py"], "").await;
    let kept = &st["iterations"][0]["verdict"];
    // The whole-suite run had the project's test and the new one.
    assert_eq!(kept["suite_tests"], 2, "{kept}");
}

/// A private top-level package that only re-exports an optional compiled extension, which is
/// not built here: the project's own tests pass without it, so it is left out of the targets
/// (with a line saying why) and the run goes on with the rest.
#[tokio::test]
async fn an_optional_compiled_shim_that_does_not_import_is_left_out() {
    let fx = project(&[
        (
            "pyproject.toml",
            "[project]\nname = \"alpha\"\nversion = \"1\"\n\n[tool.setuptools]\npackages = [\"alpha\", \"_alpha_speedups\"]\n",
        ),
        ("alpha/__init__.py", ""),
        ("alpha/core.py", ALPHA),
        (
            "_alpha_speedups/__init__.py",
            "# Re-exports the optional C extension, built only by setup.py.\nfrom _alpha_speedups._ext import *  # noqa\n",
        ),
        (
            "tests/test_core.py",
            "from alpha.core import double\n\n\ndef test_double():\n    assert double(2) == 4\n",
        ),
    ]);
    let answer = "import pytest\n\nfrom alpha.core import double\n\n\ndef test_negative():\n    with pytest.raises(ValueError):\n        double(-3)\n";
    let (out, _llm) = run_plain(fx.path(), vec![code_answer(answer)], &[]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("`_alpha_speedups` is left out of the targets")
            && err.contains("No module named '_alpha_speedups._ext'"),
        "{err}"
    );
    let st = state(fx.path());
    assert_eq!(
        st["baseline"]["left_out"][0]["name"], "_alpha_speedups",
        "{st}"
    );
    let log = improve_json(fx.path(), &["log", "--json"]);
    assert_eq!(log[0]["target"], "alpha/core.py", "{log}");
    assert_eq!(log[0]["outcome"], "kept", "{log}");

    // When the project's own tests need the shim, the run stops with what to do, as before.
    let needs = project(&[
        (
            "pyproject.toml",
            "[project]\nname = \"alpha\"\nversion = \"1\"\n\n[tool.setuptools]\npackages = [\"alpha\", \"_alpha_speedups\"]\n",
        ),
        ("alpha/__init__.py", ""),
        ("alpha/core.py", ALPHA),
        (
            "_alpha_speedups/__init__.py",
            "from _alpha_speedups._ext import *  # noqa\n",
        ),
        (
            "tests/test_core.py",
            "import _alpha_speedups\nfrom alpha.core import double\n\n\ndef test_double():\n    assert double(2) == 4\n",
        ),
    ]);
    let (out, llm) = run_plain(needs.path(), vec![code_answer(answer)], &[]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("`_alpha_speedups` does not import in a clean checkout"),
        "{err}"
    );
    assert!(llm.requests().await.is_empty());
}

/// Cases built by iterating a set: their ids (`test_len[0-beta]`) follow the hash seed. Each
/// pytest run gets a fixed seed unless the user set one; with the user's own random seed the
/// ids change from one process to the next, and a baseline test whose id is gone is not
/// "broken".
#[tokio::test]
async fn test_ids_built_from_a_set_do_not_break_a_run() {
    let files = [
        ("pkg/__init__.py", ""),
        ("pkg/core.py", ALPHA),
        (
            "tests/test_words.py",
            "import pytest\n\nWORDS = {'alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta', 'theta', 'kappa', 'lambda', 'omicron'}\n\n\n@pytest.mark.parametrize('i,w', list(enumerate(WORDS)))\ndef test_len(i, w):\n    assert len(w) > 3 and i >= 0\n",
        ),
        (
            "tests/test_core.py",
            "from pkg.core import double\n\n\ndef test_double():\n    assert double(2) == 4\n",
        ),
    ];
    let answer = "import pytest\n\nfrom pkg.core import double\n\n\ndef test_negative():\n    with pytest.raises(ValueError):\n        double(-3)\n";
    let fx = project(&files);
    let (out, _llm) = run_plain(fx.path(), vec![code_answer(answer)], &[]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("tests run with PYTHONHASHSEED=0"), "{err}");
    assert!(!err.contains("test ids differ"), "{err}");
    assert_eq!(
        improve_json(fx.path(), &["status", "--json"])["kept"],
        1,
        "{err}"
    );

    let fx = project(&files);
    let llm = StandIn::start(Wire::OpenAi, vec![code_answer(answer)]).await;
    let mut cmd = improve(fx.path());
    cmd.args(["-n", "1", "--llm-url", &llm.url(), "--model", "m"])
        .env("PYTHONHASHSEED", "random");
    let out = output(cmd).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("PYTHONHASHSEED=0"), "{err}");
    // Two collections in two processes under random seeds (10! orders: they differ).
    assert!(
        err.contains("test ids differ between two collections of the base commit"),
        "{err}"
    );
    let log = improve_json(fx.path(), &["log", "--json"]);
    assert_eq!(log[0]["outcome"], "kept", "{log}");
}

/// pypng's shape: setup.cfg imports the code from `code/` (`package_dir = =code`), the one
/// module `code/png.py` is `png` (`code` is a standard-library module, so `code.png` does not
/// import at all), and its tests beside it import `png`.
#[tokio::test]
async fn a_source_root_declared_by_package_dir_gives_the_import_name() {
    let test_png = "from png import double\n\n\ndef test_double():\n    assert double(2) == 4\n";
    let answer = "import pytest\n\nfrom png import double\n\n\ndef test_negative():\n    with pytest.raises(ValueError):\n        double(-3)\n";
    let fx = project(&[
        (
            "setup.cfg",
            "[metadata]\nname = pypng\n\n[options]\npackage_dir =\n\t= code\npy_modules =\n\tpng\n",
        ),
        ("code/png.py", ALPHA),
        ("code/test_png.py", test_png),
        ("code/prichunkpng", "#!/usr/bin/env python\nimport png\n"),
    ]);
    let llm = StandIn::start(Wire::OpenAi, vec![code_answer(answer)]).await;
    let mut cmd = improve(fx.path());
    cmd.args(["-n", "1", "--llm-url", &llm.url(), "--model", "m"]);
    let out = output(cmd).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let status = improve_json(fx.path(), &["status", "--json"]);
    assert_eq!(
        status["tests_baseline"],
        own_pytest_count(fx.path()),
        "{err}"
    );
    assert_eq!(status["kept"], 1, "{err}");
    let log = improve_json(fx.path(), &["log", "--json"]);
    assert_eq!(log[0]["target"], "code/png.py", "{log}");
    assert!(
        log[0]["files"][0].as_str().unwrap().starts_with("code/"),
        "{log}"
    );
    let st = state(fx.path());
    assert_eq!(
        st["settings"]["packages"],
        serde_json::json!(["code/png.py"])
    );
    assert_eq!(st["settings"]["source_roots"], serde_json::json!(["code"]));
    // The prompt names the module as the tests import it; coverage measured it.
    let body = String::from_utf8_lossy(&llm.requests().await[0].body).to_string();
    assert!(body.contains("import it as `png`"), "{body}");
    assert!(
        st["baseline"]["coverage"]["percent"].as_f64().unwrap() > 0.0,
        "{st}"
    );

    // Without the metadata, `--package code/png.py` alone names it `code.png`: the run stops
    // saying which flag makes it `png`, not that the file is missing.
    let bare = project(&[("code/png.py", ALPHA), ("code/test_png.py", test_png)]);
    let (out, llm) = run_plain(bare.path(), vec![], &["--package", "code/png.py"]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--source-root code") && !err.contains("not committed"),
        "{err}"
    );
    assert!(llm.requests().await.is_empty());

    // With `--source-root code` it runs, and a resume without flags keeps the root.
    let bare = project(&[("code/png.py", ALPHA), ("code/test_png.py", test_png)]);
    let llm = StandIn::start(Wire::OpenAi, vec![code_answer(answer), code_answer(answer)]).await;
    let mut cmd = improve(bare.path());
    cmd.args([
        "-n",
        "2",
        "--max-tokens",
        "1",
        "--llm-url",
        &llm.url(),
        "--model",
        "m",
    ]);
    cmd.args(["--package", "code/png.py", "--source-root", "code"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(improve_json(bare.path(), &["status", "--json"])["kept"], 1);
    let mut cmd = improve(bare.path());
    cmd.args(["--llm-url", &llm.url()]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let status = improve_json(bare.path(), &["status", "--json"]);
    assert_eq!(status["iterations_done"], 2, "{}", stderr(&out));
    let requests = llm.requests().await;
    let body = String::from_utf8_lossy(&requests[requests.len() - 1].body).to_string();
    assert!(body.contains("import it as `png`"), "{body}");
}
