//! Crash and resume: a kill at every checkpoint of an iteration, `kill -9` at random moments,
//! and the lock that keeps two runs apart.

use std::collections::BTreeSet;
use std::time::Duration;

use super::*;

fn answers() -> Vec<Answer> {
    vec![
        code_answer(GOOD_TEXT),
        code_answer(GOOD_OPS),
        code_answer(FAILING),
    ]
}

/// Checks the run is whole: complete, one commit per kept iteration with distinct trailers,
/// and the suite passing on the run branch.
fn assert_consistent(fx: &Fixture, expected_kept: usize) {
    let status = improve_json(fx.root(), &["status", "--json"]);
    assert_eq!(status["state"], "complete", "{status:#}");
    assert_eq!(status["iterations_done"], 3, "{status:#}");
    let commits = fx.run_commits();
    assert_eq!(commits.len(), expected_kept, "{status:#}");
    assert_eq!(status["kept"].as_u64(), Some(expected_kept as u64));
    let mut seen = BTreeSet::new();
    for c in &commits {
        let msg = git(fx.root(), &["log", "-1", "--format=%B", c]);
        let n = msg
            .lines()
            .find(|l| l.starts_with("Improve-Iteration: "))
            .expect("trailer")
            .to_string();
        assert!(seen.insert(n.clone()), "duplicate commit for {n}");
    }
    let (ok, out) = fx.suite_passes_on_run_branch();
    assert!(ok, "{out}");
    assert_eq!(git(fx.root(), &["branch", "--list", "improve-wip/*"]), "");
}

#[tokio::test(flavor = "multi_thread")]
async fn resumes_after_a_kill_at_every_checkpoint() {
    // Checkpoints of iteration 2, plus the run-level ones; `kept-ref` is the instant between the
    // run branch moving and the state recording it.
    for point in [
        "saved",
        "started",
        "baseline",
        "planned:2",
        "asked:2",
        "applied:2",
        "verified:2",
        "kept-ref:2",
        "finished:2",
    ] {
        let fx = Fixture::new();
        let llm = StandIn::start(Wire::OpenAi, answers()).await;
        let mut cmd = improve(fx.root());
        cmd.args(["-n", "3", "--max-repairs", "0"])
            .env("IMPROVE_TEST_ABORT_AT", point);
        llm.args(&mut cmd);
        let out = output(cmd).await;
        assert_eq!(
            out.status.code(),
            None,
            "{point}: expected death by SIGKILL; {}",
            stderr(&out)
        );

        let mut cmd = improve(fx.root());
        llm.args(&mut cmd);
        let out = output(cmd).await;
        assert_eq!(out.status.code(), Some(0), "{point}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("resuming run"),
            "{point}: {}",
            stderr(&out)
        );
        assert_consistent(&fx, 2);
        // Every answer was asked for exactly once: a saved answer is never paid for twice.
        assert_eq!(llm.requests().await.len(), 3, "{point}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn resumes_after_kill_dash_nine_at_random_moments() {
    random_kills(1, 7, 3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn resumes_after_kill_dash_nine_at_random_moments_with_two_jobs() {
    random_kills(2, 11, 3).await;
}

/// `rounds` fresh runs of 3 iterations with `--jobs jobs`, each killed with SIGKILL at up to 6
/// random moments and resumed; the run must end whole.
async fn random_kills(jobs: u32, seed: u64, rounds: u32) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let jobs_arg = jobs.to_string();
    for round in 0..rounds {
        let fx = Fixture::new();
        // Only good answers, and spares: a kill can lose an answer in flight, and the next
        // iteration then gets the next one.
        let spares: Vec<Answer> = (0..12).map(good_answer).collect();
        let llm = StandIn::start(Wire::OpenAi, spares).await;
        let mut kills = 0;
        let mut finished = false;
        for _ in 0..6 {
            let mut cmd = improve(fx.root());
            cmd.args([
                "-n",
                "3",
                "--require-coverage-gain=false",
                "--jobs",
                &jobs_arg,
            ]);
            llm.args(&mut cmd);
            let mut child = cmd
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let wait = Duration::from_millis(rng.u64(200..2500));
            tokio::time::sleep(wait).await;
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                assert_eq!(
                    status.code(),
                    Some(0),
                    "round {round}: a run that was not killed must complete: {err}"
                );
                finished = true;
                break;
            }
            unsafe {
                libc::kill(child.id() as i32, libc::SIGKILL);
            }
            // The run may have finished on its own just before the signal landed.
            if child.wait().unwrap().code() == Some(0) {
                finished = true;
                break;
            }
            kills += 1;
        }
        if !finished {
            let mut cmd = improve(fx.root());
            cmd.args(["--jobs", &jobs_arg]);
            llm.args(&mut cmd);
            let out = output(cmd).await;
            assert_eq!(
                out.status.code(),
                Some(0),
                "round {round} after {kills} kills: {}",
                stderr(&out)
            );
        }
        assert_consistent(&fx, 3);
        // A kill can lose at most the answers in flight, one per job.
        assert!(
            llm.requests().await.len() <= 3 + kills * jobs as usize,
            "answers asked for more than once per kill"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_refuses_while_the_first_holds_the_lock() {
    let fx = Fixture::new();
    let slow = ResponseTemplate::new(200)
        .set_delay(Duration::from_secs(4))
        .set_body_json(serde_json::json!({"choices": [{"message": {"content": format!("```python\n{GOOD_TEXT}```")}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}));
    let llm = StandIn::start(Wire::OpenAi, vec![Answer::Raw(slow)]).await;
    let mut first = improve(fx.root());
    first.args(["-n", "1"]);
    llm.args(&mut first);
    let first = first
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first run has started.
    for _ in 0..100 {
        if fx.state_dir().join("state.json").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut second = improve(fx.root());
    llm.args(&mut second);
    let out = output(second).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // Another state dir on the same repository is refused too: they would share its refs.
    let other_state = tempfile::tempdir().unwrap();
    let mut third = improve(fx.root());
    third.arg("--state-dir").arg(other_state.path());
    llm.args(&mut third);
    let out3 = output(third).await;
    assert_eq!(out3.status.code(), Some(1), "{}", stderr(&out3));
    assert!(
        stderr(&out3).contains("another improve run"),
        "{}",
        stderr(&out3)
    );
    assert!(
        stderr(&out).contains("another improve run"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(&first.id().to_string()),
        "names the pid: {}",
        stderr(&out)
    );
    let out = tokio::task::spawn_blocking(move || first.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_left_by_a_dead_process_is_taken_over() {
    let fx = Fixture::new();
    std::fs::create_dir_all(fx.state_dir()).unwrap();
    // A lock file naming a process that no longer exists.
    std::fs::write(fx.state_dir().join("lock"), "999999\n").unwrap();
    let llm = StandIn::start(Wire::OpenAi, vec![code_answer(GOOD_TEXT)]).await;
    run_ok(fx.root(), &llm, &["-n", "1"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_larger_iteration_count_on_resume_extends_the_run() {
    let fx = Fixture::new();
    let llm = StandIn::start(
        Wire::OpenAi,
        vec![code_answer(GOOD_TEXT), code_answer(GOOD_OPS)],
    )
    .await;
    let mut cmd = improve(fx.root());
    cmd.args(["-n", "1"])
        .env("IMPROVE_TEST_ABORT_AT", "finished:1");
    llm.args(&mut cmd);
    assert_eq!(output(cmd).await.status.code(), None);
    let branch = fx.run_branch();
    run_ok(fx.root(), &llm, &["-n", "2"]).await;
    assert_eq!(fx.run_branch(), branch);
    assert_eq!(fx.run_commits().len(), 2);
    assert_eq!(llm.requests().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_complete_run_a_new_one_starts_and_the_old_is_archived() {
    let fx = Fixture::new();
    let llm = StandIn::start(
        Wire::OpenAi,
        vec![code_answer(GOOD_TEXT), code_answer(GOOD_OPS)],
    )
    .await;
    let mut cmd = improve(fx.root());
    cmd.args(["-n", "1"]);
    llm.args(&mut cmd);
    assert_eq!(output(cmd).await.status.code(), Some(0));
    let first_branch = fx.run_branch();
    // The run is complete: a plain rerun starts a new run and archives the old state.
    let out = run_ok(fx.root(), &llm, &["-n", "1"]).await;
    assert!(stderr(&out).contains("archived"), "{}", stderr(&out));
    assert_ne!(fx.run_branch(), first_branch);
    // The first run's branch and commit are still there.
    assert_eq!(
        git(
            fx.root(),
            &["rev-list", "--count", &format!("main..{first_branch}")]
        ),
        "1"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signal_stops_the_run_with_130_and_it_resumes() {
    let fx = Fixture::new();
    let slow = ResponseTemplate::new(200)
        .set_delay(Duration::from_secs(30))
        .set_body_string("never read");
    let llm = StandIn::start(
        Wire::OpenAi,
        vec![
            Answer::Raw(slow),
            code_answer(GOOD_TEXT),
            code_answer(GOOD_OPS),
        ],
    )
    .await;
    let mut cmd = improve(fx.root());
    cmd.args(["-n", "2"]);
    llm.args(&mut cmd);
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the LLM call is in flight.
    for _ in 0..200 {
        if !llm.requests().await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        llm.requests().await.len(),
        1,
        "the run never called the LLM"
    );
    let sent = std::time::Instant::now();
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "the signal did not stop the run promptly"
    );
    let status = improve_json(fx.root(), &["status", "--json"]);
    assert_eq!(status["state"], "interrupted");
    assert_eq!(status["iterations_done"], 0);

    run_ok(fx.root(), &llm, &[]).await;
    assert_eq!(fx.run_commits().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_and_time_limits_stop_cleanly_and_the_same_command_resumes() {
    let fx = Fixture::new();
    let llm = StandIn::start(
        Wire::OpenAi,
        vec![
            code_answer(GOOD_TEXT),
            code_answer(GOOD_OPS),
            code_answer(FAILING),
        ],
    )
    .await;
    // Each answer costs 165 tokens: the budget is spent after the first iteration.
    let mut cmd = improve(fx.root());
    cmd.args(["-n", "3", "--max-repairs", "0", "--max-tokens", "100"]);
    llm.args(&mut cmd);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--max-tokens 100 reached"),
        "{}",
        stderr(&out)
    );
    let status = improve_json(fx.root(), &["status", "--json"]);
    assert_eq!(
        (status["state"].as_str(), status["iterations_done"].as_u64()),
        (Some("interrupted"), Some(1))
    );

    // A duration already spent stops before the next iteration, too.
    let mut cmd = improve(fx.root());
    cmd.args(["--max-duration", "1ms"]);
    llm.args(&mut cmd);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("--max-duration"), "{}", stderr(&out));

    // Without limits the same run finishes.
    run_ok(fx.root(), &llm, &[]).await;
    let status = improve_json(fx.root(), &["status", "--json"]);
    assert_eq!(status["iterations_done"], 3);
    assert_eq!(llm.requests().await.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worktree_removed_by_hand_is_recreated_and_a_deleted_run_branch_is_reported() {
    let fx = Fixture::new();
    let llm = StandIn::start(
        Wire::OpenAi,
        vec![code_answer(GOOD_TEXT), code_answer(GOOD_OPS)],
    )
    .await;
    let mut cmd = improve(fx.root());
    cmd.args(["-n", "2"])
        .env("IMPROVE_TEST_ABORT_AT", "applied:2");
    llm.args(&mut cmd);
    assert_eq!(output(cmd).await.status.code(), None);
    // Someone removes the iteration's worktree folder.
    let worktrees = fx.state_dir().join("worktrees");
    for entry in std::fs::read_dir(&worktrees).unwrap().flatten() {
        std::fs::remove_dir_all(entry.path()).unwrap();
    }
    run_ok(fx.root(), &llm, &[]).await;
    assert_eq!(fx.run_commits().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_branch_deleted_by_hand_is_reported_and_nothing_is_lost() {
    let fx = Fixture::new();
    let llm = StandIn::start(
        Wire::OpenAi,
        vec![code_answer(GOOD_TEXT), code_answer(GOOD_OPS)],
    )
    .await;
    let mut cmd = improve(fx.root());
    cmd.args(["-n", "2"])
        .env("IMPROVE_TEST_ABORT_AT", "finished:1");
    llm.args(&mut cmd);
    assert_eq!(output(cmd).await.status.code(), None);
    let branch = fx.run_branch();
    git(fx.root(), &["branch", "-D", &branch]);
    let state_before = std::fs::read_to_string(fx.state_dir().join("state.json")).unwrap();
    let mut cmd = improve(fx.root());
    llm.args(&mut cmd);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is gone") && stderr(&out).contains("--fresh"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(fx.state_dir().join("state.json")).unwrap(),
        state_before
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_during_a_test_run_kills_its_processes_and_exits_130() {
    let fx = Fixture::new();
    let pid_file = std::env::temp_dir().join(format!("improve-sigint-{}.pid", std::process::id()));
    let hang = format!(
        "import subprocess\nimport time\n\n\ndef test_hangs():\n    child = subprocess.Popen(['sleep', '300'])\n    with open({:?}, 'w') as f:\n        f.write(str(child.pid))\n    time.sleep(300)\n",
        pid_file.display().to_string()
    );
    let llm = StandIn::start(Wire::OpenAi, vec![code_answer(&hang)]).await;
    let mut cmd = improve(fx.root());
    cmd.args(["-n", "1"]);
    llm.args(&mut cmd);
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let sleeper = pid_written_to(&pid_file).await;
    // The test is in its sleep by now, past writing the pid.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = std::time::Instant::now();
    // Twice, as an impatient user would: the second one exits at once.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(sent.elapsed() < Duration::from_secs(10));
    assert!(
        !still_running_after_grace(sleeper),
        "the test's child process survived Ctrl-C"
    );
    // The state is consistent: the iteration resumes from its last step.
    let status = improve_json(fx.root(), &["status", "--json"]);
    assert_eq!(status["state"], "interrupted");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_branch_moved_back_is_reported_and_one_moved_forward_is_built_on() {
    let fx = Fixture::new();
    let llm = StandIn::start(
        Wire::OpenAi,
        vec![
            code_answer(GOOD_TEXT),
            code_answer(GOOD_OPS),
            code_answer(GOOD_OPS),
        ],
    )
    .await;
    let mut cmd = improve(fx.root());
    cmd.args(["-n", "2"])
        .env("IMPROVE_TEST_ABORT_AT", "finished:1");
    llm.args(&mut cmd);
    assert_eq!(output(cmd).await.status.code(), None);
    let branch = fx.run_branch();
    let kept = git(fx.root(), &["rev-parse", &branch]);
    // Moved back to the base: refused, with the way back.
    git(fx.root(), &["branch", "-f", &branch, "main"]);
    let mut cmd = improve(fx.root());
    llm.args(&mut cmd);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("was moved") && stderr(&out).contains("git branch -f"),
        "{}",
        stderr(&out)
    );
    // Put back, with a commit of the user's on top: the run goes on from there.
    git(fx.root(), &["branch", "-f", &branch, &kept]);
    let wt = fx.dir.path().join("user-wt");
    git(
        fx.root(),
        &["worktree", "add", "-q", wt.to_str().unwrap(), &branch],
    );
    std::fs::write(wt.join("NOTES.md"), "reviewed\n").unwrap();
    git(&wt, &["add", "NOTES.md"]);
    git(&wt, &["commit", "-qm", "user's note"]);
    git(
        fx.root(),
        &["worktree", "remove", "--force", wt.to_str().unwrap()],
    );
    run_ok(fx.root(), &llm, &[]).await;
    let subjects = git(
        fx.root(),
        &["log", "--format=%s", &format!("main..{branch}")],
    );
    assert_eq!(subjects.lines().count(), 3, "{subjects}");
    assert!(
        subjects.lines().next().unwrap().starts_with("improve #2"),
        "{subjects}"
    );
}

/// Runs one iteration whose answer is `answer` (with `extra` arguments), killed with SIGKILL
/// at checkpoint `point`; returns the stand-in, for the resumed run.
async fn killed_at(fx: &Fixture, answer: &str, point: &str, extra: &[&str]) -> StandIn {
    let llm = StandIn::start(Wire::OpenAi, vec![code_answer(answer)]).await;
    let mut cmd = improve(fx.root());
    cmd.args(["-n", "1"])
        .args(extra)
        .env("IMPROVE_TEST_ABORT_AT", point);
    llm.args(&mut cmd);
    assert_eq!(
        output(cmd).await.status.code(),
        None,
        "not killed at {point}"
    );
    llm
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_after_pruning_never_keeps_the_unpruned_file() {
    let fx = Fixture::new();
    let llm = killed_at(&fx, PARTLY_FAILING, "pruned:1", &[]).await;
    run_ok(fx.root(), &llm, &[]).await;
    let branch = fx.run_branch();
    let kept = git(
        fx.root(),
        &["show", &format!("{branch}:tests/test_text_improve_1.py")],
    );
    assert!(
        !kept.contains("def test_wrong") && !kept.contains("test_add_table"),
        "{kept}"
    );
    let (ok, summary) = fx.suite_passes_on_run_branch();
    assert!(ok, "{summary}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ref_lock_left_by_a_killed_run_is_cleared() {
    let fx = Fixture::new();
    let llm = killed_at(&fx, GOOD_TEXT, "verified:1", &[]).await;
    // What a kill in the middle of moving the run branch leaves behind.
    let branch = fx.run_branch();
    let lock = fx
        .root()
        .join(".git/refs/heads")
        .join(format!("{branch}.lock"));
    std::fs::write(&lock, "").unwrap();
    run_ok(fx.root(), &llm, &[]).await;
    assert!(!lock.exists());
    assert_eq!(fx.run_commits().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_index_lock_left_in_an_iteration_worktree_is_cleared() {
    let fx = Fixture::new();
    let llm = killed_at(&fx, PARTLY_FAILING, "applied:1", &["--max-repairs", "0"]).await;
    // What a kill while the iteration amended its commit leaves behind: dropping the failing
    // tests on resume must commit there again.
    let admin = std::fs::read_dir(fx.root().join(".git/worktrees"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().contains("-slot"))
        .expect("the iteration's worktree")
        .path();
    let lock = admin.join("index.lock");
    std::fs::write(&lock, "").unwrap();
    run_ok(fx.root(), &llm, &[]).await;
    assert_eq!(fx.run_commits().len(), 1);
    let log = improve_json(fx.root(), &["log", "--json"]);
    assert_eq!(log[0]["outcome"], "kept", "{log:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worktree_is_reused_with_the_project_bytecode_kept_outside_it() {
    let fx = Fixture::new();
    let llm = killed_at(&fx, GOOD_OPS, "applied:1", &[]).await;
    // The baseline ran in the one slot, which the iteration then got.
    let slots: Vec<PathBuf> = std::fs::read_dir(fx.state_dir().join("worktrees"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(slots.len(), 1, "{slots:?}");
    let slot = &slots[0];
    // What Python compiled for the package and the suite is cached outside the worktree,
    // under the slot's own path, and nothing compiled landed in the worktree.
    let cached = super::loop_run::walk(&fx.state_dir().join("scratch/bytecode"));
    let slot_text = slot.to_string_lossy().trim_start_matches('/').to_string();
    let of_slot = |part: &str| {
        cached.iter().any(|f| {
            let f = f.to_string_lossy();
            f.contains(&slot_text) && f.contains(part) && f.ends_with(".pyc")
        })
    };
    assert!(of_slot("/calc/ops."), "{cached:?}");
    assert!(of_slot("/tests/test_"), "{cached:?}");
    assert!(
        !super::loop_run::walk(slot)
            .iter()
            .any(|f| f.to_string_lossy().contains("__pycache__")),
        "bytecode in the worktree"
    );

    // The resumed run finishes and leaves no worktree behind.
    run_ok(fx.root(), &llm, &[]).await;
    assert_eq!(fx.run_commits().len(), 1);
    assert_eq!(
        std::fs::read_dir(fx.state_dir().join("worktrees"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
}

/// A state file written before rejections had kinds (no `reject` fields) still loads, resumes
/// an iteration verified but not yet finished, and reports its reasons as unclassified.
#[tokio::test(flavor = "multi_thread")]
async fn a_state_saved_before_reasons_had_kinds_resumes() {
    let fx = Fixture::new();
    let llm = StandIn::start(
        Wire::OpenAi,
        vec![code_answer(INVALID), code_answer(FAILING)],
    )
    .await;
    let mut cmd = improve(fx.root());
    cmd.args(["-n", "2", "--max-repairs", "0"])
        .env("IMPROVE_TEST_ABORT_AT", "verified:2");
    llm.args(&mut cmd);
    assert_eq!(output(cmd).await.status.code(), None, "not killed");
    let path = fx.state_dir().join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // What this improve saves, and what an older one did not.
    assert_eq!(
        state["iterations"][0]["reject"], "invalid_python",
        "{state:#}"
    );
    assert_eq!(state["iterations"][1]["step"], "verified", "{state:#}");
    assert_eq!(
        state["iterations"][1]["verdict"]["reject"], "new_tests_fail",
        "{state:#}"
    );
    for it in state["iterations"].as_array_mut().unwrap() {
        it.as_object_mut().unwrap().remove("reject");
        if let Some(v) = it["verdict"].as_object_mut() {
            v.remove("reject");
        }
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();

    run_ok(fx.root(), &llm, &["--max-repairs", "0"]).await;
    let log = improve_json(fx.root(), &["log", "--json"]);
    assert_eq!(log.as_array().unwrap().len(), 2, "{log:#}");
    assert_eq!(log[1]["outcome"], "rejected");
    assert!(
        log[1]["reason"]
            .as_str()
            .unwrap()
            .contains("2 of 2 new tests fail"),
        "{log:#}"
    );
    let report = improve_json(fx.root(), &["report", "--format", "json"]);
    let reasons = &report["rejection_reasons"];
    assert_eq!(
        reasons[0]["reason"], "unclassified (recorded by an older improve)",
        "{report:#}"
    );
    assert_eq!(reasons[0]["count"], 2, "{report:#}");
    // The verdict was taken as saved: nothing was asked again.
    assert_eq!(llm.requests().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_servers_call_in_flight_at_the_deadline_is_stopped_and_the_run_resumes() {
    let fx = Fixture::new();
    // A slow local model: every answer takes 40 s.
    let llm = StandIn::with_latency(
        Wire::OpenAi,
        vec![code_answer(GOOD_TEXT), code_answer(GOOD_OPS)],
        std::time::Duration::from_secs(40),
    )
    .await;
    let mut cmd = improve(fx.root());
    cmd.args(["-n", "1", "--max-duration", "4s"]);
    llm.args(&mut cmd);
    let started = std::time::Instant::now();
    let out = output(cmd).await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--max-duration reached"),
        "{}",
        stderr(&out)
    );
    // Ended at the deadline, not when the answer would have come (40 s).
    assert!(took < std::time::Duration::from_secs(25), "took {took:?}");
    let status = improve_json(fx.root(), &["status", "--json"]);
    assert_eq!(status["iterations_done"], 0, "{status}");

    // The same command resumes the iteration and, given the time, finishes it.
    let mut cmd = improve(fx.root());
    cmd.args(["-n", "1", "--max-duration", "5m"]);
    llm.args(&mut cmd);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let status = improve_json(fx.root(), &["status", "--json"]);
    assert_eq!(status["iterations_done"], 1, "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_that_cannot_finish_before_the_deadline_is_not_started() {
    let fx = Fixture::new();
    let llm = StandIn::with_latency(
        Wire::OpenAi,
        vec![
            code_answer(GOOD_TEXT),
            code_answer(GOOD_OPS),
            code_answer(GOOD_TEXT),
        ],
        std::time::Duration::from_secs(3),
    )
    .await;
    // One iteration measures the server (a call takes about 3 s); the token budget stops the
    // run after it.
    let mut cmd = improve(fx.root());
    cmd.args(["-n", "2", "--max-tokens", "1"]);
    llm.args(&mut cmd);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(llm.requests().await.len(), 1);
    // With 2 s left, the next call (3 s) is not started at all.
    let mut cmd = improve(fx.root());
    cmd.args(["-n", "2", "--max-duration", "2s"]);
    llm.args(&mut cmd);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--max-duration reached"),
        "{}",
        stderr(&out)
    );
    assert_eq!(llm.requests().await.len(), 1, "no call was made");
}
