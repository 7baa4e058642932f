//! `--jobs`: iterations in flight at once, each in its own worktree, kept one at a time.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::*;

fn state(fx: &Fixture) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fx.state_dir().join("state.json")).unwrap())
        .unwrap()
}

fn time(v: &serde_json::Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

/// (n, target, started, finished) of every iteration in the state.
fn timeline(state: &serde_json::Value) -> Vec<(u64, String, DateTime<Utc>, DateTime<Utc>)> {
    state["iterations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|it| {
            (
                it["n"].as_u64().unwrap(),
                it["target"].as_str().unwrap().to_string(),
                time(&it["started_at"]),
                time(&it["finished_at"]),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_jobs_overlap_never_share_a_target_and_keep_one_commit_each() {
    let fx = Fixture::new();
    let answers = (0..4).map(|i| good_answer(i + 1)).collect();
    // A slow model, so that two iterations are surely waiting on it at once.
    let llm = StandIn::with_latency(Wire::OpenAi, answers, Duration::from_millis(1500)).await;
    run_ok(
        fx.root(),
        &llm,
        &["-n", "4", "--require-coverage-gain=false", "--jobs", "2"],
    )
    .await;

    let state = state(&fx);
    let line = timeline(&state);
    assert_eq!(
        line.iter().map(|i| i.0).collect::<Vec<_>>(),
        [1, 2, 3, 4],
        "numbered in order"
    );
    let overlap =
        |a: &(u64, String, DateTime<Utc>, DateTime<Utc>),
         b: &(u64, String, DateTime<Utc>, DateTime<Utc>)| { a.2 < b.3 && b.2 < a.3 };
    let mut concurrent = 0;
    for (i, a) in line.iter().enumerate() {
        for b in &line[i + 1..] {
            if overlap(a, b) {
                concurrent += 1;
                assert_ne!(a.1, b.1, "iterations {} and {} share a target", a.0, b.0);
            }
        }
    }
    assert!(concurrent >= 2, "iterations ran one at a time: {line:?}");
    // Each iteration's own time line: its steps in order, in time.
    for it in state["iterations"].as_array().unwrap() {
        let steps: Vec<&str> = it["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["step"].as_str().unwrap())
            .collect();
        assert_eq!(
            steps,
            ["asked", "applied", "verified", "finished"],
            "{it:#}"
        );
        let times: Vec<DateTime<Utc>> = it["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| time(&t["at"]))
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{it:#}");
    }

    let status = improve_json(fx.root(), &["status", "--json"]);
    assert_eq!(status["state"], "complete", "{status:#}");
    assert_eq!(status["kept"], 4, "{status:#}");
    let commits = fx.run_commits();
    assert_eq!(commits.len(), 4);
    let mut trailers: Vec<String> = commits
        .iter()
        .map(|c| {
            git(fx.root(), &["log", "-1", "--format=%B", c])
                .lines()
                .find(|l| l.starts_with("Improve-Iteration: "))
                .expect("trailer")
                .to_string()
        })
        .collect();
    trailers.sort();
    trailers.dedup();
    assert_eq!(trailers.len(), 4, "one commit per iteration");
    // Two iterations verified beside the same tip: the second to keep was replayed onto the
    // first one's commit and its suite run again there.
    let replayed: Vec<&serde_json::Value> = state["iterations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|it| !it["verdict"]["replayed_onto"].is_null())
        .collect();
    assert!(!replayed.is_empty(), "{state:#}");
    for it in &replayed {
        let dir = fx
            .state_dir()
            .join("runs")
            .join(state["run_id"].as_str().unwrap())
            .join("iterations")
            .join(format!("{:04}", it["n"].as_u64().unwrap()));
        assert!(dir.join("pytest-suite-replayed.xml").is_file());
    }
    let (ok, out) = fx.suite_passes_on_run_branch();
    assert!(ok, "{out}");
    assert_eq!(git(fx.root(), &["branch", "--list", "improve-wip/*"]), "");
}

/// Runs two iterations with `--jobs 2` (no coverage-gain check) against a stand-in that
/// serves `answers` after `latency`.
async fn two_at_once(fx: &Fixture, answers: [&str; 2], latency: Duration) {
    let llm = StandIn::with_latency(
        Wire::OpenAi,
        answers.iter().map(|a| code_answer(a)).collect(),
        latency,
    )
    .await;
    run_ok(
        fx.root(),
        &llm,
        &["-n", "2", "--require-coverage-gain=false", "--jobs", "2"],
    )
    .await;
}

/// Commits a project test that sleeps `seconds`, so every whole-suite run lasts that long.
fn slow_project_test(fx: &Fixture, seconds: f64) {
    std::fs::write(
        fx.root().join("tests/test_zz_slow.py"),
        format!("import time\n\n\ndef test_takes_time():\n    time.sleep({seconds})\n"),
    )
    .unwrap();
    git(fx.root(), &["add", "-A"]);
    git(fx.root(), &["commit", "-qm", "a slow test"]);
}

/// The directory of iteration `n`'s artifacts.
fn iteration_dir(fx: &Fixture, state: &serde_json::Value, n: u64) -> std::path::PathBuf {
    fx.state_dir()
        .join("runs")
        .join(state["run_id"].as_str().unwrap())
        .join("iterations")
        .join(format!("{n:04}"))
}

/// GOOD_OPS with a test that takes a while: its new-file runs (1 + reruns) outlast the other
/// iteration's whole verification.
const SLOW_OPS: &str = "import time\n\nfrom calc.ops import clamp, divide\n\n\ndef test_divide_slowly():\n    time.sleep(1.0)\n    assert divide(6, 3) == 2\n\n\ndef test_clamp_high():\n    assert clamp(5, 0, 3) == 3\n";

#[tokio::test(flavor = "multi_thread")]
async fn an_iteration_behind_the_tip_catches_up_before_its_suite_run_and_keeps_without_a_rerun() {
    let fx = Fixture::new();
    two_at_once(&fx, [GOOD_TEXT, SLOW_OPS], Duration::from_millis(300)).await;

    let state = state(&fx);
    let its = state["iterations"].as_array().unwrap();
    assert!(its.iter().all(|it| it["outcome"] == "kept"), "{state:#}");
    // Whichever iteration got the slow answer was kept second.
    let slow = its
        .iter()
        .find(|it| {
            let n = it["n"].as_u64().unwrap();
            std::fs::read_to_string(iteration_dir(&fx, &state, n).join("proposal.py"))
                .unwrap()
                .contains("sleep")
        })
        .expect("an iteration got the slow answer");
    let fast = its.iter().find(|it| it["n"] != slow["n"]).unwrap();
    assert_eq!(slow["keep_seq"].as_u64(), Some(2), "{state:#}");
    // It was moved onto the other's commit before its whole-suite run, so that run already
    // had the other's tests in it, and keeping needed no replay and no second run.
    assert!(slow["verdict"]["replayed_onto"].is_null(), "{slow:#}");
    let dir = iteration_dir(&fx, &state, slow["n"].as_u64().unwrap());
    assert!(!dir.join("pytest-suite-replayed.xml").exists());
    let suite = std::fs::read_to_string(dir.join("pytest-suite.xml")).unwrap();
    assert!(suite.contains("test_initials_empty"), "{suite}");
    let parent = git(
        fx.root(),
        &[
            "rev-parse",
            &format!("{}^", slow["commit"].as_str().unwrap()),
        ],
    );
    assert_eq!(parent.trim(), fast["commit"].as_str().unwrap());
    let (ok, out) = fx.suite_passes_on_run_branch();
    assert!(ok, "{out}");
}

/// Sets a flag on the module when imported; its own test passes.
const POLLUTER: &str = "import calc.ops\n\ncalc.ops.MODE = 'loud'\n\n\ndef test_add_still_adds():\n    assert calc.ops.add(1, 2) == 3\n";
/// Passes alone, fails once the polluter's file is in the same pytest process.
const VICTIM: &str = "import calc.text\nimport calc.ops\n\n\ndef test_quiet_by_default():\n    assert getattr(calc.ops, 'MODE', 'quiet') == 'quiet'\n    assert calc.text.slug('A b') == 'a-b'\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_proposal_that_clashes_with_one_kept_meanwhile_is_rejected_after_replay() {
    let fx = Fixture::new();
    // A slow project test makes each whole-suite run last, so both iterations (answered at
    // the same moment) are in theirs when the first is kept: the second must be replayed.
    slow_project_test(&fx, 2.0);
    two_at_once(&fx, [POLLUTER, VICTIM], Duration::from_millis(500)).await;

    let log = improve_json(fx.root(), &["log", "--json"]);
    let rows = log.as_array().unwrap();
    let kept: Vec<_> = rows.iter().filter(|r| r["outcome"] == "kept").collect();
    let rejected: Vec<_> = rows.iter().filter(|r| r["outcome"] == "rejected").collect();
    assert_eq!((kept.len(), rejected.len()), (1, 1), "{log:#}");
    let reason = rejected[0]["reason"].as_str().unwrap();
    assert!(reason.contains("after replaying onto"), "{reason}");
    assert_eq!(fx.run_commits().len(), 1);
    let (ok, out) = fx.suite_passes_on_run_branch();
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_killed_with_two_iterations_in_flight_resumes_both() {
    let fx = Fixture::new();
    let answers = (0..4).map(|i| good_answer(i + 1)).collect();
    let llm = StandIn::with_latency(Wire::OpenAi, answers, Duration::from_millis(300)).await;
    // Killed right after iteration 2 saved its answer; iteration 1 is then mid-way too.
    let mut cmd = improve(fx.root());
    cmd.args(["-n", "3", "--require-coverage-gain=false", "--jobs", "2"])
        .env("IMPROVE_TEST_ABORT_AT", "asked:2");
    llm.args(&mut cmd);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), None, "{}", stderr(&out));
    let before = state(&fx);
    let unfinished = before["iterations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|it| it["step"] != "finished")
        .count();
    assert!(unfinished >= 1, "{before:#}");
    // Iteration 1's answer may still have been on the way when the kill came: then, and only
    // then, it is asked for again.
    let run_dir = fx
        .state_dir()
        .join("runs")
        .join(before["run_id"].as_str().unwrap());
    let lost = usize::from(!run_dir.join("iterations/0001/response.json").is_file());

    let out = run_ok(fx.root(), &llm, &["--jobs", "2"]).await;
    assert!(stderr(&out).contains("resuming run"), "{}", stderr(&out));
    let status = improve_json(fx.root(), &["status", "--json"]);
    assert_eq!(status["state"], "complete", "{status:#}");
    assert_eq!(status["iterations_done"], 3);
    assert_eq!(
        fx.run_commits().len(),
        status["kept"].as_u64().unwrap() as usize
    );
    // The answers received before the kill were reused, not asked for again.
    assert_eq!(llm.requests().await.len(), 3 + lost);
    let (ok, out) = fx.suite_passes_on_run_branch();
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_llm_circuit_breaker_counts_failures_across_jobs() {
    let fx = Fixture::new();
    // No answers queued: every call gets a 500.
    let llm = StandIn::with_latency(Wire::OpenAi, Vec::new(), Duration::from_millis(200)).await;
    let mut cmd = improve(fx.root());
    cmd.args(["-n", "10", "--jobs", "2", "--max-llm-failures", "2"]);
    llm.args(&mut cmd);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let status = improve_json(fx.root(), &["status", "--json"]);
    // Two failing at once reach the limit; at most the pair in flight ends after it.
    let done = status["iterations_done"].as_u64().unwrap();
    assert!((2..=3).contains(&done), "{status:#}");
    assert_eq!(status["errors"].as_u64(), Some(done));
}
