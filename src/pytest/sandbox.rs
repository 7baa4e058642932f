//! `--sandbox`: every test run under bubblewrap.

use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::process::{Exit, ProcessError, spawn_and_wait, test_environment};

/// `words` under bubblewrap: the whole file system read-only, the worktree and the artifacts
/// folder writable, a private /tmp, no network (a new network namespace has only its own
/// loopback), its own pid namespace, and death with us.
pub fn sandboxed(
    words: &[String],
    worktree: &Path,
    artifacts: &Path,
    plugin: Option<&Path>,
) -> Vec<String> {
    let mut w: Vec<String> = [
        "bwrap",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--tmpfs",
        "/tmp",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // The private /tmp hides whatever lives under the real one; the Python environment may
    // (a venv in a temp folder), so it comes back read-only.
    if let Some(prefix) = words
        .first()
        .map(Path::new)
        .and_then(|p| p.parent())
        .and_then(|bin| bin.parent())
        .filter(|prefix| prefix.starts_with("/tmp"))
    {
        let p = prefix.display().to_string();
        w.extend(["--ro-bind".into(), p.clone(), p]);
    }
    // Our plugin may live under the real /tmp too (a state dir in a temp repo).
    if let Some(dir) = plugin.filter(|d| d.starts_with("/tmp")) {
        let p = dir.display().to_string();
        w.extend(["--ro-bind".into(), p.clone(), p]);
    }
    for rw in [worktree, artifacts] {
        let p = rw.display().to_string();
        w.extend(["--bind".into(), p.clone(), p]);
    }
    // The worktree's `.git` file says where its repository is; improve commits through it after
    // the tests ran, so a test must not be able to point it at the user's own checkout.
    let gitlink = worktree.join(".git");
    if gitlink.is_file() {
        let p = gitlink.display().to_string();
        w.extend(["--ro-bind".into(), p.clone(), p]);
    }
    w.extend(
        [
            "--unshare-net",
            "--unshare-pid",
            "--die-with-parent",
            "--chdir",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    w.push(worktree.display().to_string());
    w.push("--".into());
    w.extend(words.iter().cloned());
    w
}

/// Checks that bubblewrap runs here and can create the namespaces the sandbox needs.
pub async fn sandbox_preflight(scratch: &Path) -> Result<(), String> {
    let cancel = CancellationToken::new();
    let words: Vec<String> = sandboxed(&["true".to_string()], scratch, scratch, None);
    let out = crate::artifacts::scratch::sandbox_probe_log(scratch);
    let result = spawn_and_wait(
        &words,
        scratch,
        &out,
        Duration::from_secs(30),
        &cancel,
        &test_environment(&[]),
    )
    .await;
    match result {
        Ok(Exit { code: Some(0), .. }) => Ok(()),
        Ok(_) => {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            Err(format!(
                "--sandbox: bubblewrap cannot create its namespaces here ({}); run without \
                 --sandbox on a machine you trust, or allow user namespaces",
                text.lines().last().unwrap_or("no output").trim()
            ))
        }
        Err(ProcessError::Spawn { .. }) => Err(
            "--sandbox needs bubblewrap: install it (`apt-get install bubblewrap`) or run without --sandbox"
                .into(),
        ),
        Err(e) => Err(format!("--sandbox: {e}")),
    }
}
