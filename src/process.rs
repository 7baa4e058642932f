//! Child processes that run untrusted code (pytest, `--setup-cmd`, helpers): each in a process
//! group of its own with stdin closed and output to a file, killed whole on timeout, on
//! cancellation and after it exits (a test that left a background process behind does not leave
//! it running all night), and dying with us. The groups of running tests are recorded in the
//! state dir, so the next run ends what a `kill -9` left behind.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start `{cmd}`: {source} (check --test-cmd)")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("cannot write the output of a test process to {path}: {source}")]
    Output {
        path: String,
        source: std::io::Error,
    },
    #[error("cancelled")]
    Cancelled,
}

/// Process groups of tests running now, so a forced exit can end them (they do not get the
/// terminal's signals: they are in groups of their own).
static LIVE_GROUPS: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// Where the process groups of running tests are recorded (one file per group, named by its id,
/// holding its leader's start time), so that the next `improve` of this state dir can end those a
/// `kill -9` left behind: the parent-death signal ends only a group's leader, not the children a
/// hanging test started.
static GROUP_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// `(process group, start time)` of `pid`, from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(i32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

fn group_has_members(pgid: i32) -> bool {
    std::fs::read_dir("/proc").is_ok_and(|entries| {
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .any(|pid| proc_stat(pid).is_some_and(|(group, _)| group == pgid))
    })
}

/// What became of a process group we killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupEnd {
    Killed,
    /// Nothing was left of it: every process had exited.
    AlreadyGone,
}

/// Kills a process group. A group already gone is a normal end; any other failure (a group
/// we may not signal) is returned, for the caller to log: a process may be left running.
pub fn kill_group(pgid: i32) -> std::io::Result<GroupEnd> {
    // SAFETY: signalling a process group we created.
    let rc = unsafe { libc::killpg(pgid, libc::SIGKILL) };
    if rc == 0 {
        return Ok(GroupEnd::Killed);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ESRCH) => Ok(GroupEnd::AlreadyGone),
        _ => Err(err),
    }
}

/// [`kill_group`], with a failure logged; whether the group was there to kill.
fn end_group(pgid: i32) -> bool {
    match kill_group(pgid) {
        Ok(end) => end == GroupEnd::Killed,
        Err(e) => {
            tracing::warn!("cannot kill the test process group {pgid}: {e}; it may still run");
            false
        }
    }
}

/// Ends the test process groups that an earlier `improve` recorded in `dir` and that still
/// run, then records this one's there. Called with the run lock held, so no live `improve`
/// owns them. A group counts as the same when its leader has the recorded start time, or when
/// its leader is gone but members remain (a pid is not reused while its group has members).
/// Returns the groups ended.
pub fn adopt_group_records(dir: &Path) -> Vec<i32> {
    let mut ended = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let recorded = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
            .zip(
                std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|t| t.trim().parse::<u64>().ok()),
            );
        if let Some((pgid, start)) = recorded.filter(|(g, _)| *g > 1) {
            let same = match proc_stat(pgid) {
                Some((_, now)) => now == start,
                None => group_has_members(pgid),
            };
            if same && end_group(pgid) {
                ended.push(pgid);
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    let _ = std::fs::create_dir_all(dir);
    let _ = GROUP_DIR.set(dir.to_path_buf());
    ended
}

fn record_group(pgid: i32) {
    if let (Some(dir), Some((_, start))) = (GROUP_DIR.get(), proc_stat(pgid)) {
        let _ =
            crate::fsutil::write_atomic(&dir.join(pgid.to_string()), start.to_string().as_bytes());
    }
}

fn forget_group(pgid: i32) {
    if let Some(dir) = GROUP_DIR.get() {
        let _ = std::fs::remove_file(dir.join(pgid.to_string()));
    }
}

pub fn kill_live_groups() {
    let groups = live_groups();
    for pgid in groups.iter() {
        end_group(*pgid);
        forget_group(*pgid);
    }
}

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// None when it was killed (by us on timeout, or by a signal).
    pub code: Option<i32>,
    pub timed_out: bool,
}

/// Starts `words` in its own process group and waits for it, the timeout or cancellation; in the
/// last two cases the whole group is killed. The group is also killed after a normal exit, so a
/// test that left a background process behind does not leave it running all night. `env` is the
/// child's whole environment (see `pytest::test_environment`).
pub(crate) async fn spawn_and_wait(
    words: &[String],
    cwd: &Path,
    output_path: &Path,
    timeout: Duration,
    cancel: &CancellationToken,
    env: &[(std::ffi::OsString, std::ffi::OsString)],
) -> Result<Exit, ProcessError> {
    let output_err = |source| ProcessError::Output {
        path: output_path.display().to_string(),
        source,
    };
    let mut child = command(words, cwd, output_path, env)?
        .spawn()
        .map_err(|source| ProcessError::Spawn {
            cmd: shell_words::join(words),
            source,
        })?;
    let pgid = child.id().and_then(|p| i32::try_from(p).ok());
    if let Some(g) = pgid {
        // Recorded before waiting: a kill -9 from here on leaves a record to act on.
        record_group(g);
        live_groups().push(g);
    }
    let end = || {
        if let Some(g) = pgid {
            end_group(g);
        }
    };
    let result = tokio::select! {
        status = child.wait() => {
            end();
            let status = status.map_err(output_err)?;
            Ok(Exit { code: status.code(), timed_out: false })
        }
        _ = tokio::time::sleep(timeout) => {
            end();
            let _ = child.wait().await;
            Ok(Exit { code: None, timed_out: true })
        }
        _ = cancel.cancelled() => {
            end();
            let _ = child.wait().await;
            Err(ProcessError::Cancelled)
        }
    };
    if let Some(g) = pgid {
        live_groups().retain(|x| *x != g);
        forget_group(g);
    }
    result
}

fn live_groups() -> std::sync::MutexGuard<'static, Vec<i32>> {
    LIVE_GROUPS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The child of [`spawn_and_wait`], not started yet: its own group, stdin closed, stdout and
/// stderr to `output_path`, only `env` in its environment, and death with us.
fn command(
    words: &[String],
    cwd: &Path,
    output_path: &Path,
    env: &[(std::ffi::OsString, std::ffi::OsString)],
) -> Result<tokio::process::Command, ProcessError> {
    let output_err = |source| ProcessError::Output {
        path: output_path.display().to_string(),
        source,
    };
    let out = std::fs::File::create(output_path).map_err(output_err)?;
    let err = out.try_clone().map_err(output_err)?;
    let (program, rest) = words.split_first().ok_or_else(|| ProcessError::Spawn {
        cmd: String::new(),
        source: std::io::Error::other("empty command"),
    })?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(rest)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0)
        .kill_on_drop(true)
        // Only what `env` holds: an allow-list, so a secret we did not think of stays out.
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        // Never beside the sources in a worktree, where it would look like something the tests
        // wrote; our plugin sends the project's bytecode to a cache of its own.
        .env("PYTHONDONTWRITEBYTECODE", "1");
    // SAFETY: the closure runs in the child between fork and exec and only makes one
    // async-signal-safe system call. The leader dies with the thread that started it (a
    // runtime worker, alive as long as improve); a kill -9 of improve then ends it at once.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(command)
}

/// Runs a short helper command (a Python one-liner, `--version`) with the tests' environment
/// and a one-minute limit; returns its exit code and the last line it printed.
pub async fn run_helper(
    words: &[String],
    cwd: &Path,
    out: &Path,
) -> Result<(Option<i32>, String), String> {
    let cancel = CancellationToken::new();
    let exit = spawn_and_wait(
        words,
        cwd,
        out,
        Duration::from_secs(60),
        &cancel,
        &test_environment(&[]),
    )
    .await
    .map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string();
    Ok((exit.code, last))
}

/// The API key variables: never in a test's environment, whatever `--pass-env` says.
pub fn is_api_key_var(name: &str) -> bool {
    matches!(
        name.to_ascii_uppercase().as_str(),
        "IMPROVE_API_KEY" | "OPENAI_API_KEY" | "ANTHROPIC_API_KEY"
    )
}

/// What a test may see of our environment: the system's and Python's own variables.
fn is_allowed_var(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TERM",
        "TMPDIR",
        "TEMP",
        "TMP",
        "LD_LIBRARY_PATH",
        "NO_COLOR",
        "SYSTEMROOT",
    ];
    const PREFIXES: &[&str] = &[
        "LC_",
        "PYTHON",
        "PYENV_",
        "VIRTUAL_ENV",
        "CONDA_",
        "PYTEST_",
        "COVERAGE_",
    ];
    EXACT.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The hash seed every pytest run gets unless the user set one: a project that builds its
/// parametrized cases by iterating a set gets the same test ids in every process, so the
/// baseline's ids are still there in the next run.
pub const HASH_SEED: (&str, &str) = ("PYTHONHASHSEED", "0");

/// The user's own hash seed, if they set one.
pub fn users_hash_seed() -> Option<String> {
    std::env::var(HASH_SEED.0).ok()
}

/// The environment tests run with: the allow-listed variables without anything that looks like
/// a secret, plus what `pass_env` names (which may be secret-looking, a test database's
/// password say, but never the API key), and a fixed hash seed unless the user chose one.
pub fn test_environment(pass_env: &[String]) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    let mut vars = filter_environment(std::env::vars_os(), pass_env);
    if !vars.iter().any(|(k, _)| k == HASH_SEED.0) {
        vars.push((HASH_SEED.0.into(), HASH_SEED.1.into()));
    }
    vars
}

/// `env` with the folder of `python` (an absolute path, a venv's `bin/python`) first on PATH,
/// as an activated venv has it: tests that run the project's scripts or console entry points
/// find the venv's, not whatever else PATH holds.
pub fn with_python_bin(
    mut env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    python: Option<&str>,
) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    let Some(bin) = python
        .map(std::path::Path::new)
        .and_then(std::path::Path::parent)
        .filter(|b| b.is_absolute())
    else {
        return env;
    };
    let old = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let mut path = bin.as_os_str().to_owned();
    if !old.is_empty() {
        path.push(":");
        path.push(old);
    }
    env.retain(|(k, _)| k != "PATH");
    env.push(("PATH".into(), path));
    env
}

fn filter_environment(
    vars: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    pass_env: &[String],
) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    vars.filter(|(name, _)| {
        let name = name.to_string_lossy();
        if is_api_key_var(&name) {
            return false;
        }
        pass_env.iter().any(|p| *p == name) || (is_allowed_var(&name) && !is_secret_var(&name))
    })
    .collect()
}

/// Environment variables whose names look like secrets never reach the tests. The API key
/// variables are named explicitly; the patterns catch the rest of the usual suspects.
pub fn is_secret_var(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    const EXACT: &[&str] = &["IMPROVE_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"];
    const PATTERNS: &[&str] = &[
        "API_KEY",
        "APIKEY",
        "SECRET",
        "TOKEN",
        "PASSWORD",
        "CREDENTIAL",
    ];
    EXACT.contains(&upper.as_str()) || PATTERNS.iter().any(|p| upper.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_pythons_folder_goes_first_on_path_as_in_an_activated_venv() {
        let env = vec![("PATH".into(), "/usr/bin:/bin".into())];
        let path = |env: &[(std::ffi::OsString, std::ffi::OsString)]| {
            env.iter()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| v.to_string_lossy().to_string())
        };
        let with = with_python_bin(env.clone(), Some("/p/.venv/bin/python"));
        assert_eq!(path(&with).as_deref(), Some("/p/.venv/bin:/usr/bin:/bin"));
        assert_eq!(with.len(), 1, "one PATH");
        // `python3` from PATH: nothing to put first.
        assert_eq!(
            path(&with_python_bin(env.clone(), Some("python3"))),
            path(&env)
        );
        assert_eq!(
            path(&with_python_bin(Vec::new(), Some("/p/bin/python"))).as_deref(),
            Some("/p/bin")
        );
    }

    #[test]
    fn the_test_environment_is_an_allow_list() {
        let ours = || {
            [
                ("PATH", "/bin"),
                ("PYTHONHASHSEED", "0"),
                ("LC_ALL", "C"),
                ("DATABASE_URL", "postgres://x"),
                ("DB_PASSWORD", "hunter2"),
                ("PYTHON_TOKEN", "t"),
                ("OPENAI_API_KEY", "sk"),
            ]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
        };
        let names = |pass: &[&str]| -> Vec<String> {
            let pass: Vec<String> = pass.iter().map(|s| s.to_string()).collect();
            filter_environment(ours(), &pass)
                .into_iter()
                .map(|(k, _)| k.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names(&[]), ["PATH", "PYTHONHASHSEED", "LC_ALL"]);
        assert_eq!(
            names(&["DATABASE_URL", "DB_PASSWORD", "OPENAI_API_KEY"]),
            [
                "PATH",
                "PYTHONHASHSEED",
                "LC_ALL",
                "DATABASE_URL",
                "DB_PASSWORD"
            ]
        );
    }

    #[test]
    fn secret_variables_are_recognised() {
        for name in [
            "OPENAI_API_KEY",
            "anthropic_api_key",
            "IMPROVE_API_KEY",
            "GITHUB_TOKEN",
            "DB_PASSWORD",
        ] {
            assert!(is_secret_var(name), "{name}");
        }
        for name in ["PATH", "HOME", "PYTHONPATH", "LANG"] {
            assert!(!is_secret_var(name), "{name}");
        }
    }
}
