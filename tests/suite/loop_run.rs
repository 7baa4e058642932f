//! The loop end to end: what is kept, what is not, and what is never touched.

use super::*;

/// Answers in order: good, failing, invalid Python, escaping path, good.
fn mixed_answers() -> Vec<Answer> {
    vec![
        code_answer(GOOD_TEXT),
        code_answer(FAILING),
        code_answer(INVALID),
        code_answer(ESCAPING),
        code_answer(GOOD_OPS),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mixed_run_keeps_exactly_the_passing_proposals() {
    let fx = Fixture::new();
    let llm = StandIn::start(Wire::OpenAi, mixed_answers()).await;
    let base = fx.head();
    let mut cmd = improve(fx.root());
    cmd.args(["--iterations", "5", "--max-repairs", "0"]);
    llm.args(&mut cmd);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));

    let log = improve_json(fx.root(), &["log", "--json"]);
    let outcomes: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["kept", "rejected", "rejected", "rejected", "kept"],
        "{log:#}"
    );
    let reasons: Vec<String> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        reasons[1].contains("new tests fail") && reasons[1].contains("test_add_wrong"),
        "{}",
        reasons[1]
    );
    assert!(reasons[2].contains("invalid Python"), "{}", reasons[2]);
    assert!(reasons[3].contains("unsafe path"), "{}", reasons[3]);

    // Kept iterations are exactly the commits on the run branch, each with its trailers.
    let commits = fx.run_commits();
    assert_eq!(commits.len(), 2);
    let run_id = improve_json(fx.root(), &["status", "--json"])["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    for (commit, n) in commits.iter().zip([1, 5]) {
        let msg = git(fx.root(), &["log", "-1", "--format=%B", commit]);
        assert!(msg.contains(&format!("Improve-Run: {run_id}")), "{msg}");
        assert!(msg.contains(&format!("Improve-Iteration: {n}")), "{msg}");
        assert!(
            msg.lines().next().unwrap().contains(&format!("#{n}")),
            "{msg}"
        );
        assert!(
            msg.contains("Target: calc/") && msg.contains("Focus: ") && msg.contains("Pytest: "),
            "{msg}"
        );
        let logged = &log[n - 1];
        assert_eq!(logged["commit"].as_str(), Some(commit.as_str()));
    }
    // Only files under tests/ changed, and they are new files.
    let changed = git(
        fx.root(),
        &["diff", "--name-status", &base, &fx.run_branch()],
    );
    for line in changed.lines() {
        let (status, file) = line.split_once('\t').unwrap();
        assert_eq!(status, "A", "{line}");
        assert!(file.starts_with("tests/"), "{line}");
    }
    assert_eq!(changed.lines().count(), 2);
    // Nothing was written where the escaping path pointed.
    assert!(!fx.root().parent().unwrap().join("evil_test.py").exists());
    assert!(!fx.root().join("evil_test.py").exists());
    // The suite passes on the run branch, with the new tests in it.
    let (ok, summary) = fx.suite_passes_on_run_branch();
    assert!(ok, "{summary}");
    assert!(summary.contains("7 passed"), "{summary}");

    let status = improve_json(fx.root(), &["status", "--json"]);
    assert_eq!(status["state"], "complete");
    assert_eq!(status["iterations_done"], 5);
    assert_eq!(status["kept"], 2);
    assert_eq!(status["rejected"], 3);
    assert_eq!(status["errors"], 0);
    assert_eq!(status["tests_baseline"], 1);
    assert_eq!(status["tests_now"], 7);
    assert_eq!(status["tests_added"], 6);
    assert_eq!(status["tokens_in"], 5 * 120);
    assert_eq!(status["tokens_out"], 5 * 45);
    assert_eq!(status["base_commit"], base);
    // No worktree or iteration branch is left behind.
    let branches = git(fx.root(), &["branch", "--list", "improve-wip/*"]);
    assert_eq!(branches, "");
    let worktrees = git(fx.root(), &["worktree", "list"]);
    assert_eq!(worktrees.lines().count(), 1, "{worktrees}");
    // The report exists and states the measured figures.
    let report = std::fs::read_to_string(fx.state_dir().join("report.md")).unwrap();
    assert!(
        report.contains("**2 kept**") && report.contains("**6 added**"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_users_branch_index_and_working_tree_are_untouched() {
    let fx = Fixture::new();
    let root = fx.root();
    // An uncommitted edit, a staged edit and an untracked file.
    std::fs::write(
        root.join("calc/ops.py"),
        format!("{OPS}\n# work in progress\n"),
    )
    .unwrap();
    std::fs::write(root.join("calc/text.py"), format!("{TEXT}\n# staged\n")).unwrap();
    git(root, &["add", "calc/text.py"]);
    std::fs::write(root.join("notes.txt"), "my notes\n").unwrap();
    // An untracked module: not committed, so never a target.
    std::fs::write(root.join("calc/scratch.py"), "def draft():\n    return 1\n").unwrap();
    let status_before = git(root, &["status", "--porcelain"]);
    let head_before = git(root, &["rev-parse", "HEAD"]);
    let branch_before = git(root, &["symbolic-ref", "HEAD"]);
    let staged_before = git(root, &["diff", "--cached"]);

    let llm = StandIn::start(
        Wire::OpenAi,
        vec![code_answer(GOOD_TEXT), code_answer(FAILING)],
    )
    .await;
    let mut cmd = improve(root);
    cmd.args(["-n", "2"]);
    llm.args(&mut cmd);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    assert_eq!(git(root, &["status", "--porcelain"]), status_before);
    assert_eq!(git(root, &["rev-parse", "HEAD"]), head_before);
    assert_eq!(git(root, &["symbolic-ref", "HEAD"]), branch_before);
    assert_eq!(git(root, &["diff", "--cached"]), staged_before);
    assert_eq!(
        std::fs::read_to_string(root.join("notes.txt")).unwrap(),
        "my notes\n"
    );
    assert!(
        std::fs::read_to_string(root.join("calc/ops.py"))
            .unwrap()
            .ends_with("# work in progress\n")
    );
    let log = improve_json(root, &["log", "--json"]);
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .all(|r| r["target"] != "calc/scratch.py"),
        "{log:#}"
    );
    // The kept test went to the run branch, not to the working tree.
    assert_eq!(fx.run_commits().len(), 1);
    let tests_in_tree: Vec<_> = std::fs::read_dir(root.join("tests"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(tests_in_tree.len(), 1, "{tests_in_tree:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_key_is_sent_but_never_stored_nor_shown_to_tests() {
    let fx = Fixture::new();
    let key = "sk-test-SECRET-4242-never-store-me";
    // A test that passes only if the key is absent from its environment.
    let env_probe = "import os\n\n\ndef test_no_secret_in_env():\n    assert not any(v.startswith('sk-test-') for v in os.environ.values())\n    assert 'OPENAI_API_KEY' not in os.environ\n";
    let llm = StandIn::start(
        Wire::OpenAi,
        vec![code_answer(env_probe), code_answer(GOOD_TEXT)],
    )
    .await;
    let recording = fx.state_dir().join("recording.json");
    let mut cmd = improve(fx.root());
    cmd.args(["-n", "2", "--require-coverage-gain=false", "--record"])
        .arg(&recording)
        .env("OPENAI_API_KEY", key);
    llm.args(&mut cmd);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let requests = llm.requests().await;
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(
            r.headers.get("authorization").unwrap().to_str().unwrap(),
            format!("Bearer {key}")
        );
    }
    let log = improve_json(fx.root(), &["log", "--json"]);
    assert_eq!(log[0]["outcome"], "kept", "the tests saw the key: {log:#}");

    // Nothing under the state dir (state, artifacts, pytest output, recording) holds the key.
    let mut files = 0;
    for entry in walk(&fx.state_dir()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        files += 1;
        assert!(
            !String::from_utf8_lossy(&bytes).contains("SECRET-4242"),
            "the key leaked into {}",
            entry.display()
        );
    }
    assert!(
        files > 10,
        "expected artifacts under the state dir, found {files}"
    );
    assert!(recording.is_file());
    // Nor the commits.
    let all = git(fx.root(), &["log", "--all", "-p"]);
    assert!(!all.contains("SECRET-4242"));
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn review_commands_describe_the_run() {
    let fx = Fixture::new();
    let llm = StandIn::start(
        Wire::OpenAi,
        vec![code_answer(GOOD_TEXT), code_answer(FAILING)],
    )
    .await;
    run_ok(fx.root(), &llm, &["-n", "2"]).await;

    let text = |args: &[&str]| {
        let mut c = improve(fx.root());
        c.args(args);
        let out = c.output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let status = text(&["status"]);
    assert!(
        status.contains("complete") && status.contains("1 kept, 1 rejected"),
        "{status}"
    );
    let log = text(&["log"]);
    assert_eq!(log.lines().count(), 3, "{log}");
    assert!(
        log.lines().nth(1).unwrap().contains("kept")
            && log.lines().nth(2).unwrap().contains("new tests fail"),
        "{log}"
    );
    let show_kept = text(&["show", "1"]);
    assert!(
        show_kept.contains("outcome:  kept") && show_kept.contains("+def test_slug"),
        "{show_kept}"
    );
    let show_rejected = text(&["show", "2"]);
    assert!(
        show_rejected.contains("outcome:  rejected")
            && show_rejected.contains("+def test_add_wrong"),
        "{show_rejected}"
    );
    assert!(show_rejected.contains("response.json"), "{show_rejected}");

    let report_file = fx.root().join("out.md");
    let mut c = improve(fx.root());
    c.args(["report", "--out"]).arg(&report_file);
    assert!(c.output().unwrap().status.success());
    let report = std::fs::read_to_string(&report_file).unwrap();
    assert!(report.contains("| 1 | `calc/text.py`"), "{report}");
    assert!(report.contains("new tests fail | 1"), "{report}");

    let mut c = improve(fx.root());
    c.args(["show", "9"]);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("iteration 9 does not exist"));
}

#[test]
fn the_demo_runs_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let demo_dir = tmp.path().join("demo");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_improve"));
    cmd.arg("demo")
        .arg("--repo")
        .arg(&demo_dir)
        .arg("--test-cmd")
        .arg(test_cmd());
    for key in ["IMPROVE_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"] {
        cmd.env_remove(key);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let status = improve_json(&demo_dir, &["status", "--json"]);
    assert_eq!(status["iterations_done"], 5);
    assert!(status["kept"].as_u64().unwrap() >= 3, "{status:#}");
    assert_eq!(status["tokens_in"].as_u64().map(|t| t > 0), Some(true));
    let commits = git(
        &demo_dir,
        &[
            "rev-list",
            "--count",
            &format!("main..{}", status["run_branch"].as_str().unwrap()),
        ],
    );
    assert_eq!(commits, status["kept"].to_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_test_is_killed_with_its_children_and_the_run_goes_on() {
    let fx = Fixture::new();
    let pid_file = fx
        .dir
        .path()
        .parent()
        .unwrap()
        .join(format!("improve-hang-{}.pid", std::process::id()));
    let hang = format!(
        "import subprocess\nimport time\n\n\ndef test_hangs():\n    child = subprocess.Popen(['sleep', '300'])\n    with open({:?}, 'w') as f:\n        f.write(str(child.pid))\n    time.sleep(300)\n",
        pid_file.display().to_string()
    );
    let llm = StandIn::start(
        Wire::OpenAi,
        vec![code_answer(&hang), code_answer(GOOD_OPS)],
    )
    .await;
    let mut cmd = improve(fx.root());
    // Long enough for the good iteration on a loaded machine, short for the hang.
    cmd.args(["-n", "2", "--test-timeout", "10s"]);
    llm.args(&mut cmd);
    let started = std::time::Instant::now();
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "the hang stalled the run"
    );
    let log = improve_json(fx.root(), &["log", "--json"]);
    assert_eq!(log[0]["outcome"], "rejected");
    assert!(
        log[0]["reason"].as_str().unwrap().contains("timed out"),
        "{log:#}"
    );
    assert_eq!(log[1]["outcome"], "kept");
    // The grandchild the test spawned died with its process group.
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = std::fs::remove_file(&pid_file);
    assert!(
        !still_running_after_grace(pid),
        "the spawned `sleep` (pid {pid}) survived the timeout"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repo_without_any_pytest_config_keeps_good_tests() {
    // Without a config file pytest derives its rootdir from the arguments: a one-file run and
    // the whole suite must still agree on test ids.
    let fx = Fixture::new();
    git(fx.root(), &["rm", "-q", "pyproject.toml"]);
    git(fx.root(), &["commit", "-qm", "no config"]);
    let llm = StandIn::start(Wire::OpenAi, vec![code_answer(GOOD_TEXT)]).await;
    run_ok(fx.root(), &llm, &["-n", "1"]).await;
    let log = improve_json(fx.root(), &["log", "--json"]);
    assert_eq!(log[0]["outcome"], "kept", "{log:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_path_mentioned_in_prose_is_only_a_hint() {
    let fx = Fixture::new();
    let answer = format!("Here are tests for `calc/text.py`:\n\n```python\n{GOOD_TEXT}```\n");
    let llm = StandIn::start(Wire::OpenAi, vec![Answer::Text(answer)]).await;
    run_ok(fx.root(), &llm, &["-n", "1"]).await;
    let log = improve_json(fx.root(), &["log", "--json"]);
    assert_eq!(log[0]["outcome"], "kept", "{log:#}");
    assert_eq!(log[0]["files"][0], "tests/test_text_improve_1.py");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_report_figures_match_git_and_a_user_template_overrides() {
    let fx = Fixture::new();
    let llm = StandIn::start(Wire::OpenAi, mixed_answers()).await;
    let base = fx.head();
    run_ok(
        fx.root(),
        &llm,
        &["-n", "5", "--max-repairs", "0", "--focus", "edges,errors"],
    )
    .await;

    let report = improve_json(fx.root(), &["report", "--format", "json"]);
    let branch = fx.run_branch();
    // Kept iterations and files, against git.
    let commits = git(
        fx.root(),
        &["rev-list", "--count", &format!("{base}..{branch}")],
    );
    assert_eq!(report["kept"].to_string(), commits);
    let mut changed: Vec<String> = git(fx.root(), &["diff", "--name-only", &base, &branch])
        .lines()
        .map(str::to_string)
        .collect();
    changed.sort();
    let rows = report["file_rows"].as_array().unwrap();
    let mut paths: Vec<String> = rows
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    paths.sort();
    assert_eq!(paths, changed);
    assert!(rows.iter().all(|r| r["created"] == true));
    // Tests per file add up, and match pytest's own counts at the start and the end.
    let per_file: u64 = rows.iter().map(|r| r["tests"].as_u64().unwrap()).sum();
    assert_eq!(per_file, report["tests_added"].as_u64().unwrap());
    assert_eq!(report["tests_in_created_files"], report["tests_added"]);
    assert_eq!(
        report["tests_now"].as_u64().unwrap() - report["tests_baseline"].as_u64().unwrap(),
        report["tests_added"].as_u64().unwrap()
    );
    // Every test in a created file is counted: the files on the branch hold exactly that many.
    let (ok, summary) = fx.suite_passes_on_run_branch();
    assert!(
        ok && summary.contains(&format!("{} passed", report["tests_now"])),
        "{summary}"
    );
    // Focus areas partition the iterations and the tests added.
    let focus = report["focus_areas"].as_array().unwrap();
    assert_eq!(
        focus
            .iter()
            .map(|f| f["focus"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["edges", "errors"]
    );
    let its: u64 = focus
        .iter()
        .map(|f| f["iterations"].as_u64().unwrap())
        .sum();
    assert_eq!(its, 5);
    let added: u64 = focus
        .iter()
        .map(|f| f["tests_added"].as_u64().unwrap())
        .sum();
    assert_eq!(added, report["tests_added"].as_u64().unwrap());
    // LLM usage per model, and the modules touched.
    let llm_rows = report["llm"].as_array().unwrap();
    assert_eq!(llm_rows.len(), 1);
    assert_eq!(llm_rows[0]["llm"], "openai stand-in-model");
    assert_eq!(llm_rows[0]["calls"], 5);
    assert_eq!(llm_rows[0]["tokens_in"], 600);
    let modules: Vec<&str> = report["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["module"].as_str().unwrap())
        .collect();
    // ops.py kept nothing in its two tries (2 and 3) and rested: iterations 4 and 5 went to
    // text.py, and the fifth answer's tests (of ops.py) were kept there.
    let targets = report_targets(fx.root());
    assert_eq!(
        targets,
        [
            "calc/text.py",
            "calc/ops.py",
            "calc/ops.py",
            "calc/text.py",
            "calc/text.py"
        ]
    );
    assert_eq!(modules, ["calc/text.py"]);
    assert_eq!(report["modules"][0]["end"], "100.0");

    // The Markdown report says the same.
    let md = std::fs::read_to_string(fx.state_dir().join("report.md")).unwrap();
    assert!(md.contains("| `calc/text.py` | 0.0% | 100.0% |"), "{md}");
    assert!(
        md.contains("| openai stand-in-model | 5 | 600 | 225 |"),
        "{md}"
    );
    // The chart is drawn beside it and linked from it.
    assert!(md.contains("](report-chart.svg)"), "{md}");
    let svg = std::fs::read_to_string(fx.state_dir().join("report-chart.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.matches("<polyline").count() >= 2);

    // A template of the same name in the state dir wins.
    std::fs::write(
        fx.state_dir().join("report.md.hbs"),
        "custom: {{kept}} of {{iterations_done}}\n",
    )
    .unwrap();
    let mut c = improve(fx.root());
    c.args(["report", "--out", "-"]);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "custom: 2 of 5\n");
}

/// The report of a recorded run (`improve demo` replays recorded answers), with run ids, shas
/// and times filtered out.
#[test]
fn the_rendered_report_of_a_recorded_run() {
    let tmp = tempfile::tempdir().unwrap();
    let demo_dir = tmp.path().join("demo");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_improve"));
    cmd.arg("demo")
        .arg("--repo")
        .arg(&demo_dir)
        .arg("--test-cmd")
        .arg(test_cmd());
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = std::fs::read_to_string(demo_dir.join(".improve/report.md")).unwrap();
    let state_text = std::fs::read_to_string(demo_dir.join(".improve/state.json")).unwrap();
    every_saved_field_is_documented(&state_text);
    let state_text = state_text
        .replace(demo_dir.to_str().unwrap(), "[repo]")
        .replace(&super::python(), "[python]");
    let view = |args: &[&str]| {
        let mut c = improve(&demo_dir);
        c.args(args);
        let out = c.output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    // What the contract's views print, byte for byte but for ids, shas, dates and durations.
    let views = [
        ("demo_status_json", view(&["status", "--json"])),
        ("demo_log_json", view(&["log", "--json"])),
        ("demo_status", view(&["status"])),
        ("demo_log", view(&["log"])),
        // What state/README.md documents, as the demo saves it.
        ("demo_state_json", state_text),
    ];
    insta::with_settings!({filters => vec![
        (r"\d{8}-\d{6}-[0-9a-f]{4}", "[run-id]"),
        (r"\b[0-9a-f]{40}\b", "[sha]"),
        (r"\b[0-9a-f]{10}\b", "[sha]"),
        (r"- Time: .*", "- Time: [time]"),
        (r"\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:\d\d)", "[date]"),
        (r#""(elapsed_s|helpers|llm|other|queued|tests|total)": [0-9.]+"#, r#""$1": [s]"#),
        (r" in [0-9.]+s", " in [s]"),
        (r" in [0-9.]+ s\b", " in [s]"),
        (r#""(seconds|uncapped_seconds|test_timeout|llm_timeout)": [0-9.]+"#, r#""$1": [s]"#),
        (r"elapsed (\d+h )?(\d+m )?\d+s", "elapsed [s]"),
        (r"[0-9.]+ per hour", "[n] per hour"),
    ]}, {
        insta::assert_snapshot!("demo_report", report);
        for (name, text) in views {
            insta::assert_snapshot!(name, text);
        }
    });
}

/// Every field name in a saved state is named in `state/README.md` (as `` `name` ``). Keys that
/// are data, not fields (module paths, test names), are not field names.
fn every_saved_field_is_documented(state_text: &str) {
    fn keys(v: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, child) in map {
                    if !k.contains(['/', '.', ':']) && !k.starts_with("test_") {
                        out.insert(k.clone());
                    }
                    keys(child, out);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| keys(i, out)),
            _ => {}
        }
    }
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/state/README.md")).unwrap();
    let state: serde_json::Value = serde_json::from_str(state_text).unwrap();
    let mut found = std::collections::BTreeSet::new();
    keys(&state, &mut found);
    let missing: Vec<&String> = found
        .iter()
        .filter(|k| !doc.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "saved but not documented in state/README.md: {missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn quiet_prints_only_the_summary_and_the_log_file_has_every_iteration() {
    let fx = Fixture::new();
    let llm = StandIn::start(
        Wire::OpenAi,
        vec![code_answer(GOOD_TEXT), code_answer(FAILING)],
    )
    .await;
    let out = run_ok(fx.root(), &llm, &["-n", "2", "-q"]).await;
    let err = stderr(&out);
    assert!(err.starts_with("run complete"), "{err}");
    assert!(
        !err.contains("baseline") && !err.contains("[  1/2]"),
        "{err}"
    );
    assert!(err.contains("merge:") && err.contains("review:"), "{err}");
    // One JSON object per line; both iterations are there with their outcome.
    let log = std::fs::read_to_string(fx.state_dir().join("log.jsonl")).unwrap();
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let finished: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["fields"]["message"] == "iteration finished")
        .collect();
    assert_eq!(finished.len(), 2, "{log}");
    assert_eq!(finished[0]["fields"]["n"], 1);
    assert!(
        finished[1]["fields"]["reason"]
            .as_str()
            .unwrap()
            .contains("new tests fail")
    );
    assert!(
        events
            .iter()
            .any(|e| e["fields"]["message"] == "pytest finished")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tests_that_change_project_files_are_rejected_as_side_effects() {
    let fx = Fixture::new();
    // The project's own suite writes a file into the tree: that is not held against proposals.
    std::fs::write(
        fx.root().join("tests/test_writes.py"),
        "def test_writes_a_report():\n    with open('generated.txt', 'w') as f:\n        f.write('x')\n",
    )
    .unwrap();
    git(fx.root(), &["add", "-A"]);
    git(fx.root(), &["commit", "-qm", "a suite that writes a file"]);
    let rewrites_source = "def test_rewrites_source():\n    with open('calc/ops.py', 'a') as f:\n        f.write('\\n# hacked\\n')\n";
    let deletes_a_test =
        "import os\n\n\ndef test_deletes_a_test():\n    os.remove('tests/test_ops.py')\n";
    let llm = StandIn::start(
        Wire::OpenAi,
        vec![
            code_answer(rewrites_source),
            code_answer(deletes_a_test),
            code_answer(GOOD_TEXT),
        ],
    )
    .await;
    run_ok(fx.root(), &llm, &["-n", "3"]).await;
    let log = improve_json(fx.root(), &["log", "--json"]);
    let rows = log.as_array().unwrap();
    assert_eq!(rows[0]["outcome"], "rejected");
    assert!(
        rows[0]["reason"].as_str().unwrap().contains("side effects")
            && rows[0]["reason"].as_str().unwrap().contains("calc/ops.py"),
        "{log:#}"
    );
    assert_eq!(rows[1]["outcome"], "rejected");
    assert!(
        rows[1]["reason"]
            .as_str()
            .unwrap()
            .contains("tests/test_ops.py"),
        "{log:#}"
    );
    assert_eq!(rows[2]["outcome"], "kept", "{log:#}");
    // The user's tree saw none of it.
    assert!(!fx.root().join("generated.txt").exists());
    assert_eq!(
        std::fs::read_to_string(fx.root().join("calc/ops.py")).unwrap(),
        OPS
    );
    assert!(fx.root().join("tests/test_ops.py").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn tests_see_an_allow_listed_environment_plus_what_the_user_passes() {
    let fx = Fixture::new();
    let probe = "import os\n\n\ndef test_environment():\n    assert 'PATH' in os.environ\n    assert os.environ.get('APP_DATABASE_URL') == 'sqlite://'\n    assert 'APP_UNLISTED' not in os.environ\n    assert 'OPENAI_API_KEY' not in os.environ\n";
    let llm = StandIn::start(Wire::OpenAi, vec![code_answer(probe), code_answer(probe)]).await;
    let mut cmd = improve(fx.root());
    cmd.args([
        "-n",
        "1",
        "--require-coverage-gain=false",
        "--pass-env",
        "APP_DATABASE_URL,OPENAI_API_KEY",
    ])
    .env("APP_DATABASE_URL", "sqlite://")
    .env("APP_UNLISTED", "x")
    .env("OPENAI_API_KEY", "sk-test-never");
    llm.args(&mut cmd);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = improve_json(fx.root(), &["log", "--json"]);
    assert_eq!(log[0]["outcome"], "kept", "{log:#}");

    // Without --pass-env the variable stays out, and the same probe fails.
    let fx2 = Fixture::new();
    let mut cmd = improve(fx2.root());
    cmd.args(["-n", "1", "--require-coverage-gain=false"])
        .env("APP_DATABASE_URL", "sqlite://");
    llm.args(&mut cmd);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = improve_json(fx2.root(), &["log", "--json"]);
    assert_eq!(log[0]["outcome"], "rejected", "{log:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_tests_are_dropped_and_the_passing_ones_kept() {
    let fx = Fixture::new();
    let llm = StandIn::start(Wire::OpenAi, vec![code_answer(PARTLY_FAILING)]).await;
    run_ok(
        fx.root(),
        &llm,
        &["-n", "1", "--require-coverage-gain=false"],
    )
    .await;
    let log = improve_json(fx.root(), &["log", "--json"]);
    assert_eq!(log[0]["outcome"], "kept", "{log:#}");
    assert_eq!(log[0]["tests_added"], 2, "{log:#}");
    // The kept file holds exactly the passing tests, and the commit says what was dropped.
    let branch = fx.run_branch();
    let file = format!("{branch}:tests/test_text_improve_1.py");
    let kept = git(fx.root(), &["show", &file]);
    assert!(
        kept.contains("def test_add_right") && kept.contains("def test_inside"),
        "{kept}"
    );
    assert!(
        !kept.contains("test_add_table") && !kept.contains("def test_wrong"),
        "{kept}"
    );
    assert!(kept.contains("class TestClamp"), "{kept}");
    let msg = git(fx.root(), &["log", "-1", "--format=%B", &branch]);
    assert!(msg.contains("2 failing tests dropped"), "{msg}");
    assert_eq!(fx.run_commits().len(), 1, "one commit per kept iteration");
    let (ok, summary) = fx.suite_passes_on_run_branch();
    assert!(ok && summary.contains("3 passed"), "{summary}");
}

/// Passes on its first two runs in a process, fails on the third: flaky, deterministically.
const WITH_FLAKY: &str = "from calc.text import slug\n\nRUNS = {'n': 0}\n\n\ndef test_stable():\n    assert slug('A b') == 'a-b'\n\n\ndef test_flaky():\n    RUNS['n'] += 1\n    assert RUNS['n'] != 3\n";
const ONLY_FLAKY: &str =
    "RUNS = {'n': 0}\n\n\ndef test_flaky_alone():\n    RUNS['n'] += 1\n    assert RUNS['n'] != 2\n";

#[tokio::test(flavor = "multi_thread")]
async fn flaky_tests_are_dropped_on_rerun() {
    let fx = Fixture::new();
    let llm = StandIn::start(
        Wire::OpenAi,
        vec![code_answer(WITH_FLAKY), code_answer(ONLY_FLAKY)],
    )
    .await;
    run_ok(
        fx.root(),
        &llm,
        &["-n", "2", "--require-coverage-gain=false"],
    )
    .await;
    let log = improve_json(fx.root(), &["log", "--json"]);
    assert_eq!(log[0]["outcome"], "kept", "{log:#}");
    assert_eq!(log[0]["tests_added"], 1, "{log:#}");
    assert_eq!(log[1]["outcome"], "rejected", "{log:#}");
    assert!(
        log[1]["reason"]
            .as_str()
            .unwrap()
            .starts_with("flaky: test_flaky_alone"),
        "{log:#}"
    );
    let branch = fx.run_branch();
    let kept = git(
        fx.root(),
        &["show", &format!("{branch}:tests/test_text_improve_1.py")],
    );
    assert!(
        kept.contains("def test_stable") && !kept.contains("def test_flaky"),
        "{kept}"
    );
    let msg = git(fx.root(), &["log", "-1", "--format=%B", &branch]);
    assert!(msg.contains("1 flaky tests dropped"), "{msg}");

    // With --reruns 0 nobody looks, and the flaky test would have been kept.
    let fx2 = Fixture::new();
    let llm2 = StandIn::start(Wire::OpenAi, vec![code_answer(WITH_FLAKY)]).await;
    let mut cmd = improve(fx2.root());
    cmd.args(["-n", "1", "--require-coverage-gain=false", "--reruns", "0"]);
    llm2.args(&mut cmd);
    assert_eq!(output(cmd).await.status.code(), Some(0));
    let log = improve_json(fx2.root(), &["log", "--json"]);
    assert_eq!(log[0]["tests_added"], 2, "{log:#}");
}

/// The target of every iteration, in order.
fn report_targets(repo: &Path) -> Vec<String> {
    improve_json(repo, &["log", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["target"].as_str().unwrap().to_string())
        .collect()
}
