//! What a new user meets in the first minutes: the report on standard output, `show --json`,
//! summaries without colour codes, and no test process left running after `kill -9`.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn report_prints_markdown_on_stdout_and_out_writes_a_file() {
    let fx = Fixture::new();
    let llm = StandIn::start(Wire::OpenAi, vec![code_answer(GOOD_TEXT)]).await;
    run_ok(fx.root(), &llm, &["-n", "1"]).await;
    let written = std::fs::read_to_string(fx.state_dir().join("report.md")).unwrap();
    let out = improve(fx.root()).arg("report").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // The same report; only the chart, drawn beside report.md, is not linked from stdout.
    let chart = "![Tests and coverage after each iteration](report-chart.svg)\n\n";
    assert!(written.contains(chart));
    assert_eq!(stdout(&out), written.replace(chart, ""));
    assert!(stdout(&out).contains("calc/text.py"));

    let file = fx.root().join("elsewhere.md");
    let out = improve(fx.root())
        .args(["report", "--out"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("calc/text.py")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn show_json_has_the_fields_of_the_text_view() {
    let fx = Fixture::new();
    let llm = StandIn::start(Wire::OpenAi, vec![code_answer(PARTLY_FAILING)]).await;
    run_ok(fx.root(), &llm, &["-n", "1", "--max-repairs", "0"]).await;
    let v = improve_json(fx.root(), &["show", "1", "--json"]);
    let log = improve_json(fx.root(), &["log", "--json"]);
    assert_eq!(v["n"], 1);
    assert_eq!(v["target"], log[0]["target"]);
    assert_eq!(v["outcome"], "kept");
    assert_eq!(v["commit"], log[0]["commit"]);
    assert_eq!(v["dropped"][0]["why"], "failing", "{v:#}");
    assert_eq!(v["funnel"]["kept"], log[0]["funnel"]["kept"], "{v:#}");
    let file = log[0]["files"][0].as_str().unwrap();
    assert!(v["diff"].as_str().unwrap().contains(file), "{v:#}");
    let text = stdout(&improve(fx.root()).args(["show", "1"]).output().unwrap());
    assert!(text.contains(v["commit"].as_str().unwrap()), "{text}");
    assert!(
        text.contains(&format!(
            "pytest:   {}",
            v["pytest_summary"].as_str().unwrap()
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_project_that_forces_colour_gets_plain_summaries() {
    let fx = Fixture::new();
    std::fs::write(
        fx.root().join("pyproject.toml"),
        "[tool.pytest.ini_options]\npythonpath = [\".\"]\naddopts = \"--color=yes\"\n",
    )
    .unwrap();
    git(fx.root(), &["commit", "-qam", "colour"]);
    let llm = StandIn::start(
        Wire::OpenAi,
        vec![code_answer(GOOD_TEXT), code_answer(FAILING)],
    )
    .await;
    run_ok(fx.root(), &llm, &["-n", "2", "--max-repairs", "0"]).await;
    for args in [
        &["show", "1"][..],
        &["show", "2"],
        &["show", "1", "--json"],
        &["log"],
        &["log", "--json"],
        &["status"],
        &["report"],
    ] {
        let out = improve(fx.root()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(!stdout(&out).contains('\x1b'), "{args:?}: {}", stdout(&out));
        assert!(!stdout(&out).contains("[31m"), "{args:?}: {}", stdout(&out));
    }
    let state = std::fs::read_to_string(fx.state_dir().join("state.json")).unwrap();
    assert!(!state.contains("\\u001b"), "{state}");
}

/// The process group of `pid`, from /proc.
fn group_of(pid: i32) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    text.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_dash_nine_during_pytest_leaves_no_test_process_after_the_resume() {
    let fx = Fixture::new();
    let pid_file = std::env::temp_dir().join(format!("improve-kill9-{}.pid", std::process::id()));
    let _ = std::fs::remove_file(&pid_file);
    let hang = format!(
        "import subprocess\nimport time\n\n\ndef test_hangs():\n    child = subprocess.Popen(['sleep', '300'])\n    with open({:?}, 'w') as f:\n        f.write(str(child.pid))\n    time.sleep(300)\n",
        pid_file.display().to_string()
    );
    let llm = StandIn::start(Wire::OpenAi, vec![code_answer(&hang)]).await;
    let mut cmd = improve(fx.root());
    cmd.args(["-n", "1", "--test-timeout", "3s"]);
    llm.args(&mut cmd);
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let sleeper = pid_written_to(&pid_file).await;
    let leader = group_of(sleeper).unwrap();
    assert_ne!(leader, sleeper);
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
    // pytest, the group's leader, dies with improve; the test's own child lives on.
    assert!(
        !still_running_after_grace(leader),
        "pytest outlived improve's kill -9"
    );
    assert!(std::path::Path::new(&format!("/proc/{sleeper}")).exists());

    // The resume ends the group the killed run recorded, before anything else.
    let mut cmd = improve(fx.root());
    cmd.args(["--test-timeout", "3s"]);
    llm.args(&mut cmd);
    let out = output(cmd).await;
    assert!(
        stderr(&out).contains("ended 1 test process group"),
        "{}",
        stderr(&out)
    );
    assert!(
        !still_running_after_grace(sleeper),
        "the hanging test's child survived the resume"
    );
    if let Ok(t) = std::fs::read_to_string(&pid_file) {
        if let Ok(p) = t.trim().parse::<i32>() {
            assert!(
                !still_running_after_grace(p),
                "the resumed run left its child running"
            );
        }
        let _ = std::fs::remove_file(&pid_file);
    }
}
