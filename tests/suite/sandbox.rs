//! `--sandbox`: generated tests run under bubblewrap. Each probe below is a test that passes
//! only if the sandbox stops it, so "kept" proves the sandbox; the same probe without
//! `--sandbox` is rejected, which proves the probe. Needs bubblewrap (`.ci/run` installs it).

use std::io::Read;
use std::net::TcpListener;

use super::*;

fn probe_writes_outside(target: &Path) -> String {
    format!(
        "import pytest\n\n\ndef test_cannot_write_outside_the_worktree():\n    with pytest.raises(OSError):\n        with open({:?}, 'w') as f:\n            f.write('escaped')\n",
        target.display().to_string()
    )
}

fn probe_connects(port: u16) -> String {
    format!(
        "import socket\n\nimport pytest\n\n\ndef test_cannot_reach_the_host():\n    with pytest.raises(OSError):\n        socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn sandboxed_tests_cannot_write_outside_the_worktree_nor_reach_the_network() {
    let fx = Fixture::new();
    // Outside the worktree and outside /tmp (whose sandbox copy is private): the real one must
    // stay untouched.
    let escape = PathBuf::from(format!(
        "/var/tmp/improve-escape-{}.txt",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&escape);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();

    let answers = vec![
        code_answer(&probe_writes_outside(&escape)),
        code_answer(&probe_connects(port)),
    ];
    let llm = StandIn::start(Wire::OpenAi, answers).await;
    run_ok(
        fx.root(),
        &llm,
        &["-n", "2", "--require-coverage-gain=false", "--sandbox"],
    )
    .await;
    let log = improve_json(fx.root(), &["log", "--json"]);
    assert_eq!(log[0]["outcome"], "kept", "the write went through: {log:#}");
    assert_eq!(
        log[1]["outcome"], "kept",
        "the connection went through: {log:#}"
    );
    assert!(
        !escape.exists(),
        "a sandboxed test wrote {}",
        escape.display()
    );
    let mut accepted = listener.accept();
    if let Ok((stream, _)) = accepted.as_mut() {
        let mut buf = [0u8; 1];
        let _ = stream.read(&mut buf);
    }
    assert!(
        accepted.is_err(),
        "a sandboxed test connected to 127.0.0.1:{port}"
    );

    // The same probes without --sandbox do escape, so the probes themselves are sound.
    let fx2 = Fixture::new();
    let llm2 = StandIn::start(
        Wire::OpenAi,
        vec![code_answer(&probe_writes_outside(&escape))],
    )
    .await;
    run_ok(
        fx2.root(),
        &llm2,
        &["-n", "1", "--require-coverage-gain=false"],
    )
    .await;
    let log = improve_json(fx2.root(), &["log", "--json"]);
    assert_eq!(log[0]["outcome"], "rejected", "{log:#}");
    assert!(escape.exists());
    let _ = std::fs::remove_file(&escape);
}

#[test]
fn without_bubblewrap_the_sandbox_refuses_to_start() {
    let fx = Fixture::new();
    // A PATH without bwrap, but with git and python reachable through absolute paths.
    let empty = tempfile::tempdir().unwrap();
    let mut cmd = improve(fx.root());
    cmd.args([
        "--sandbox",
        "--llm-url",
        "http://127.0.0.1:9/v1",
        "--model",
        "m",
        "--test-cmd",
        &test_cmd(),
    ])
    .env("PATH", empty.path());
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("bubblewrap"), "{}", stderr(&out));
    assert!(
        !fx.state_dir().join("state.json").exists(),
        "nothing may run unsandboxed"
    );
}

/// Opens the worktree's `.git` file (which says where the repository is) for writing, without
/// changing it.
const PROBE_GITLINK: &str = "import pathlib\n\nimport pytest\n\n\ndef test_cannot_touch_the_git_link():\n    link = pathlib.Path(__file__).resolve().parents[1] / '.git'\n    assert link.is_file()\n    with pytest.raises(OSError):\n        open(link, 'a').close()\n";

/// The outcome of one iteration whose answer is `probe`, run with `extra` arguments.
async fn outcome_of(probe: &str, extra: &[&str]) -> String {
    let fx = Fixture::new();
    let llm = StandIn::start(Wire::OpenAi, vec![code_answer(probe)]).await;
    let mut args = vec!["-n", "1", "--require-coverage-gain=false"];
    args.extend_from_slice(extra);
    run_ok(fx.root(), &llm, &args).await;
    let log = improve_json(fx.root(), &["log", "--json"]);
    log[0]["outcome"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn sandboxed_tests_cannot_rewrite_the_worktree_git_link() {
    assert_eq!(outcome_of(PROBE_GITLINK, &["--sandbox"]).await, "kept");
    // Without --sandbox the probe can open it, so the probe is sound.
    assert_eq!(outcome_of(PROBE_GITLINK, &[]).await, "rejected");
}
