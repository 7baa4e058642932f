//! Bad input: one line on stderr, the contract's exit code, nothing lost, never a panic.

use super::*;

fn assert_one_line_error(out: &Output, code: i32, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert_eq!(
        err.trim().lines().count(),
        1,
        "expected one line, got: {err}"
    );
    assert!(err.starts_with("error:"), "{err}");
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
}

fn run_in(dir: &Path, extra: &[&str]) -> Output {
    let mut cmd = improve(dir);
    cmd.args([
        "--llm-url",
        "http://127.0.0.1:9/v1",
        "--model",
        "m",
        "--test-cmd",
        &test_cmd(),
    ]);
    cmd.args(extra);
    cmd.output().unwrap()
}

#[test]
fn not_a_git_repository() {
    let tmp = tempfile::tempdir().unwrap();
    assert_one_line_error(&run_in(tmp.path(), &[]), 1, "not a git repository");
}

#[test]
fn a_repository_without_commits() {
    let tmp = tempfile::tempdir().unwrap();
    git(tmp.path(), &["init", "-q"]);
    assert_one_line_error(&run_in(tmp.path(), &[]), 1, "no commits");
}

#[test]
fn no_pytest_in_the_test_commands_python() {
    let fx = Fixture::new();
    let venv = tempfile::tempdir().unwrap();
    let made = Command::new("python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(venv.path())
        .status()
        .unwrap();
    assert!(made.success());
    let bare_python = venv.path().join("bin/python");
    let cmd_text = format!("{} -m pytest", bare_python.display());
    let mut cmd = improve(fx.root());
    cmd.args([
        "--llm-url",
        "http://127.0.0.1:9/v1",
        "--model",
        "m",
        "--test-cmd",
        &cmd_text,
    ]);
    assert_one_line_error(&cmd.output().unwrap(), 1, "does not run pytest");
}

#[test]
fn an_unreadable_state_file_is_reported_and_kept() {
    let fx = Fixture::new();
    std::fs::create_dir_all(fx.state_dir()).unwrap();
    let garbage = "{\"schema_version\": 1, \"run_id\": tru";
    std::fs::write(fx.state_dir().join("state.json"), garbage).unwrap();
    assert_one_line_error(&run_in(fx.root(), &[]), 1, "cannot be read");
    assert_eq!(
        std::fs::read_to_string(fx.state_dir().join("state.json")).unwrap(),
        garbage
    );
    // The review commands say the same, and leave it too.
    let mut c = improve(fx.root());
    c.arg("status");
    assert_one_line_error(&c.output().unwrap(), 1, "cannot be read");
    assert_eq!(
        std::fs::read_to_string(fx.state_dir().join("state.json")).unwrap(),
        garbage
    );
}

#[test]
fn a_state_from_a_newer_version_is_refused() {
    let fx = Fixture::new();
    std::fs::create_dir_all(fx.state_dir()).unwrap();
    std::fs::write(
        fx.state_dir().join("state.json"),
        "{\"schema_version\": 42}",
    )
    .unwrap();
    assert_one_line_error(&run_in(fx.root(), &[]), 1, "newer improve");
}

#[test]
fn zero_or_non_numeric_iterations() {
    let fx = Fixture::new();
    for bad in ["0", "abc", "-3"] {
        let out = run_in(fx.root(), &["--iterations", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"));
    }
    assert!(
        !fx.state_dir().join("state.json").exists(),
        "nothing must start"
    );
}

#[test]
fn a_missing_repo() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    assert_one_line_error(&run_in(&missing, &[]), 2, "no such directory");
    let out = Command::new(env!("CARGO_BIN_EXE_improve"))
        .arg("--repo")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_package_or_tests_folder_outside_the_repository() {
    let fx = Fixture::new();
    for (args, needle) in [
        (&["--tests-dir", "/tmp/elsewhere"][..], "--tests-dir"),
        (&["--package", "calc,../other"], "--package"),
        (&["--package", "pyproject.toml"], "not a Python module"),
    ] {
        let out = run_in(fx.root(), args);
        assert_one_line_error(&out, 2, needle);
    }
}

#[test]
fn a_missing_model_and_a_bad_url() {
    let fx = Fixture::new();
    let mut cmd = improve(fx.root());
    cmd.args([
        "--llm-url",
        "http://127.0.0.1:9/v1",
        "--test-cmd",
        &test_cmd(),
    ]);
    assert_one_line_error(&cmd.output().unwrap(), 2, "--model");
    let mut cmd = improve(fx.root());
    cmd.args([
        "--llm-url",
        "localhost:8080",
        "--model",
        "m",
        "--test-cmd",
        &test_cmd(),
    ]);
    assert_one_line_error(&cmd.output().unwrap(), 2, "http://");
}

#[test]
fn review_commands_without_a_run() {
    let fx = Fixture::new();
    for sub in [&["status"][..], &["log"], &["show", "1"], &["report"]] {
        let mut c = improve(fx.root());
        c.args(sub);
        assert_one_line_error(&c.output().unwrap(), 1, "no run");
    }
}

#[test]
fn every_bad_flag_is_one_line_and_exit_2() {
    let fx = Fixture::new();
    let cases: &[(&[&str], &str)] = &[
        (&["--jobs", "0"], "--jobs"),
        (&["--provider", "nope"], "--provider"),
        (&["--max-duration", "soon"], "--max-duration"),
        (&["--test-timeout", "0s"], "--test-timeout"),
        (&["--llm-timeout", "abc"], "--llm-timeout"),
        (&["--max-llm-failures", "0"], "--max-llm-failures"),
        (&["--max-tokens", "lots"], "--max-tokens"),
        (&["--base", "no-such-rev"], "--base"),
        (&["--replay", "/no/such/recording.json"], "--replay"),
        (&["--package", "nope"], "--package"),
        (&["--tests-dir", "../elsewhere"], "--tests-dir"),
        (&["--tests-dir", "calc/ops.py"], "is a file, not a folder"),
        (&["--focus", ","], "--focus"),
        (&["--no-such-flag"], "--no-such-flag"),
    ];
    for (args, needle) in cases {
        let out = run_in(fx.root(), args);
        assert_one_line_error(&out, 2, needle);
    }
    for args in [
        &["show", "0"][..],
        &["show", "abc"],
        &["show"],
        &["status", "--what"],
    ] {
        let mut c = improve(fx.root());
        c.args(args);
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert_eq!(
            stderr(&out).trim().lines().count(),
            1,
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert!(
        !fx.state_dir().join("state.json").exists(),
        "a bad flag must not start a run"
    );
}

#[test]
fn a_bad_config_file_is_named() {
    let fx = Fixture::new();
    std::fs::write(fx.root().join("improve.toml"), "iteratoins = 3\n").unwrap();
    let out = run_in(fx.root(), &[]);
    assert_one_line_error(&out, 2, "improve.toml");
    assert!(stderr(&out).contains("iteratoins"), "{}", stderr(&out));
}
