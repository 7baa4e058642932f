//! `--since REV`: a run scoped to a change (targets, prompt marks, diff coverage, the report's
//! table), a change that touches no code, the bad inputs, and `report --format pr` on a long run.

use super::distributed::stand_in;
use super::*;

const GEO: &str = "def area(w, h):\n    return w * h\n";
/// The change adds `diagonal` (lines 3-8, with the blank lines before it).
const GEO_CHANGED: &str = "def area(w, h):\n    return w * h\n\n\ndef diagonal(w, h):\n    if w < 0 or h < 0:\n        raise ValueError(\"negative side\")\n    return (w * w + h * h) ** 0.5\n";
const NUM: &str = "def sign(n):\n    if n > 0:\n        return 1\n    if n < 0:\n        return -1\n    return 0\n";
/// The change adds `clamp_sign` (lines 7-12).
const NUM_CHANGED: &str = "def sign(n):\n    if n > 0:\n        return 1\n    if n < 0:\n        return -1\n    return 0\n\n\ndef clamp_sign(n, limit):\n    if abs(n) > limit:\n        return sign(n) * limit\n    return n\n";
const UNITS: &str = "def km(m):\n    return m / 1000\n";
const GOOD_GEO: &str = "import pytest\n\nfrom calc.geo import diagonal\n\n\ndef test_diagonal():\n    assert diagonal(3, 4) == 5\n\n\ndef test_diagonal_negative():\n    with pytest.raises(ValueError):\n        diagonal(-3, 4)\n";
const GOOD_NUM: &str = "from calc.num import clamp_sign\n\n\ndef test_clamp_sign_limits():\n    assert clamp_sign(9, 5) == 5\n    assert clamp_sign(-9, 5) == -5\n\n\ndef test_clamp_sign_inside():\n    assert clamp_sign(2, 5) == 2\n";

/// The fixture with five modules; its last commit changes two of them (and the README).
fn changed_fixture() -> Fixture {
    let fx = Fixture::new();
    for (path, text) in [
        ("calc/geo.py", GEO),
        ("calc/num.py", NUM),
        ("calc/units.py", UNITS),
        ("README.md", "calc\n"),
    ] {
        std::fs::write(fx.root().join(path), text).unwrap();
    }
    git(fx.root(), &["add", "-A"]);
    git(fx.root(), &["commit", "-qm", "five modules"]);
    std::fs::write(fx.root().join("calc/geo.py"), GEO_CHANGED).unwrap();
    std::fs::write(fx.root().join("calc/num.py"), NUM_CHANGED).unwrap();
    std::fs::write(fx.root().join("README.md"), "calc: geometry and numbers\n").unwrap();
    git(fx.root(), &["add", "-A"]);
    git(fx.root(), &["commit", "-qm", "diagonal and clamp_sign"]);
    fx
}

fn answers() -> Vec<(&'static str, String)> {
    vec![
        ("calc/geo.py", GOOD_GEO.to_string()),
        ("calc/num.py", GOOD_NUM.to_string()),
        // Never asked for: not changed.
        ("calc/ops.py", GOOD_OPS.to_string()),
        ("calc/text.py", GOOD_TEXT.to_string()),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_since_run_targets_the_changed_modules_marks_the_change_and_raises_diff_coverage() {
    let fx = changed_fixture();
    let llm = stand_in(answers()).await;
    run_ok(fx.root(), &llm, &["-n", "6", "--since", "HEAD~1"]).await;

    // Only the two changed modules were targets, and once every changed line runs the run is
    // done, well before its 6 iterations.
    let log = log_of(&fx);
    let targets: Vec<&str> = log.iter().map(|r| r["target"].as_str().unwrap()).collect();
    assert_eq!(log.len(), 2, "{log:#?}");
    assert!(
        targets.contains(&"calc/geo.py") && targets.contains(&"calc/num.py"),
        "{targets:?}"
    );
    for row in &log {
        assert_eq!(row["outcome"], "kept", "{row:#}");
        let d = &row["diff_coverage"];
        assert!(
            d["after"].as_f64().unwrap() > d["before"].as_f64().unwrap(),
            "{row:#}"
        );
    }

    // The prompt marks the changed lines (`+`) and says the round is about the change.
    let requests = llm.requests().await;
    let geo_prompt = requests
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).to_string())
        .find(|b| b.contains("for the module `calc/geo.py`"))
        .unwrap();
    let geo_prompt: String =
        serde_json::from_str::<serde_json::Value>(&geo_prompt).unwrap()["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["content"].as_str())
            .collect();
    assert!(
        geo_prompt.contains("changed since `HEAD~1` (lines 3-8)"),
        "{geo_prompt}"
    );
    assert!(
        geo_prompt.contains("   5!+ def diagonal(w, h):"),
        "{geo_prompt}"
    );
    assert!(
        geo_prompt.contains("   1   def area(w, h):"),
        "{geo_prompt}"
    );
    assert!(
        !requests
            .iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains("calc/units.py"))
    );

    // status: the change and diff coverage from 0 % to 100 %.
    let status = improve_json(fx.root(), &["status", "--json"]);
    assert_eq!(status["state"], "complete", "{status:#}");
    assert_eq!(status["diff_coverage_baseline"], 0.0, "{status:#}");
    assert_eq!(status["diff_coverage_now"], 100.0, "{status:#}");
    let files = status["change"]["files"].as_object().unwrap();
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["calc/geo.py", "calc/num.py"]
    );
    assert_eq!(files["calc/geo.py"], serde_json::json!([3, 4, 5, 6, 7, 8]));
    assert_eq!(status["change"]["other_files"], 1);

    // The report's table, per changed module, before and after.
    let report = improve_stdout(fx.root(), &["report"]).await;
    assert!(report.contains("## The change since `HEAD~1`"), "{report}");
    assert!(
        report.contains("**0.0%** at the start, **100.0%** now"),
        "{report}"
    );
    assert!(
        report.contains("| `calc/geo.py` | 0.0% | 100.0% | 4 | none |"),
        "{report}"
    );
    assert!(
        report.contains("| `calc/num.py` | 0.0% | 100.0% |"),
        "{report}"
    );

    // The pull-request body says the same, shortly.
    let body = improve_stdout(fx.root(), &["report", "--format", "pr"]).await;
    assert!(body.starts_with("## improve: "), "{body}");
    assert!(
        body.contains("| diff coverage since `HEAD~1` | 0.0% | 100.0% |"),
        "{body}"
    );
    assert!(body.contains("### Kept commits (2)"), "{body}");
    assert!(body.contains("### How to review"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_that_touches_only_docs_ends_at_once_with_a_report_that_says_why() {
    let fx = Fixture::new();
    fx.commit_file("README.md", "docs only\n");
    let llm = stand_in(answers()).await;
    let mut cmd = improve(fx.root());
    cmd.args(["-n", "5", "--since", "HEAD~1"]);
    llm.args(&mut cmd);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        said.contains("touches no line of the code under test (1 other files)"),
        "{said}"
    );
    assert!(llm.requests().await.is_empty(), "no LLM call");
    let status = improve_json(fx.root(), &["status", "--json"]);
    assert_eq!(status["state"], "complete");
    assert_eq!(status["iterations_done"], 0);
    assert!(
        status["tests_baseline"].is_null(),
        "no pytest run: {status:#}"
    );
    let report = std::fs::read_to_string(fx.state_dir().join("report.md")).unwrap();
    assert!(
        report.contains("It changes no line of the code under test: nothing to do."),
        "{report}"
    );
    let body = improve_stdout(fx.root(), &["report", "--format", "pr"]).await;
    assert!(
        body.contains("The change touches no line of the code under test"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_since_and_format_values_are_one_line_each() {
    let fx = changed_fixture();
    let llm = stand_in(answers()).await;
    let one_line_error = |out: &Output, code: i32, words: &str| {
        let err = stderr(out);
        assert_eq!(out.status.code(), Some(code), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(words), "{err}");
    };
    let run = |args: &[&str]| {
        let mut c = improve(fx.root());
        c.args(args);
        llm.args(&mut c);
        c
    };
    let out = output(run(&["--since", "no-such-branch"])).await;
    one_line_error(&out, 2, "--since `no-such-branch` is not a commit");
    // A commit with no history in common with the base.
    let tree = git(fx.root(), &["rev-parse", "HEAD^{tree}"]);
    let orphan = git(fx.root(), &["commit-tree", tree.trim(), "-m", "orphan"]);
    let out = output(run(&["--since", orphan.trim()])).await;
    one_line_error(&out, 2, "no merge base");
    let out = output({
        let mut c = improve(fx.root());
        c.args(["report", "--format", "html"]);
        c
    })
    .await;
    one_line_error(&out, 2, "[possible values: markdown, json, pr]");
    // Resuming with another change: stopped after its first iteration, then asked for another.
    let mut first = run(&["-n", "3", "--since", "HEAD~1"]);
    first.env("IMPROVE_TEST_ABORT_AT", "kept-ref:1");
    let _ = output(first).await;
    let out = output(run(&["--since", "HEAD~2"])).await;
    one_line_error(&out, 2, "this run was started with --since HEAD~1");
    // The same change, or none named, resumes.
    let out = output(run(&[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("resuming run") || stdout(&out).contains("resuming run"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pull_request_body_of_a_long_run_stays_under_githubs_limit() {
    let fx = changed_fixture();
    let llm = stand_in(answers()).await;
    run_ok(fx.root(), &llm, &["-n", "2", "--since", "HEAD~1"]).await;
    // Make it a run of 4,000 kept iterations with a long possible bug each.
    let path = fx.state_dir().join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let kept = state["iterations"][0].clone();
    let mut iterations = Vec::new();
    for n in 1..=4_000u32 {
        let mut it = kept.clone();
        it["n"] = n.into();
        it["focus"] = "x".repeat(300).into();
        it["verdict"]["findings"] = serde_json::json!([{
            "test": format!("tests/test_geo.py::test_long_{n}"),
            "message": format!("assert {} == 1\nmore lines", "9".repeat(2_000)),
            "source": "def test(): pass",
        }]);
        iterations.push(it);
    }
    state["iterations"] = iterations.into();
    state["iterations_target"] = 4_000.into();
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
    let body = improve_stdout(fx.root(), &["report", "--format", "pr"]).await;
    assert!(body.len() < 65_536, "{} characters", body.len());
    assert!(
        body.contains("### Kept commits (4000)"),
        "{}",
        &body[..2_000]
    );
    assert!(
        body.contains("more (`improve log`)"),
        "the kept list says what it left out"
    );
    assert!(
        body.contains("### Possible bugs (4000)"),
        "bugs get room too"
    );
    assert!(
        body.trim_end()
            .ends_with("the full report (funnel, focus areas, files, time and cost).")
    );
    // Each bug line is cut, never a 2,000-digit line.
    assert!(
        body.lines().all(|l| l.chars().count() < 400),
        "a line too long"
    );
}
