//! Makes a worktree run as the user's checkout does. A clean checkout lacks the files git
//! ignores but the code needs: a `_version.py` written at install time (setuptools-scm,
//! hatch-vcs), compiled extensions, compiled translations. Those that live inside the package
//! folders are copied from the user's tree (never caches or secret-looking files, within size
//! limits), and `--setup-cmd` runs once in each new worktree for projects that need a build
//! step. A worktree switch removes everything git does not track, so both are kept aside
//! (under the state dir's `scratch/`) and put back after every switch.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::git;

/// Caps on what is copied from the user's tree: a generated file is small; a folder of data
/// sets that happens to be ignored is not something to copy into every worktree.
const MAX_FILE_BYTES: u64 = 64 << 20;
const MAX_TOTAL_BYTES: u64 = 256 << 20;
const MAX_FILES: usize = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("cannot copy {path}: {source}")]
    Copy {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Git(#[from] git::GitError),
    /// `--setup-cmd` failed: the message names it, its exit code and its last lines.
    #[error("{0}")]
    Setup(String),
    #[error("interrupted")]
    Cancelled,
}

/// Files kept aside to be put back into a worktree: paths relative to the worktree, stored
/// under `dir` at the same paths.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    dir: PathBuf,
    files: Vec<String>,
}

impl Snapshot {
    /// Copies `files` (relative to `from`) into `dir`, which is made anew.
    fn take(from: &Path, files: Vec<String>, dir: PathBuf) -> Result<Snapshot, PrepareError> {
        let _ = std::fs::remove_dir_all(&dir);
        for f in &files {
            copy_keeping_mtime(&from.join(f), &dir.join(f)).map_err(|source| {
                PrepareError::Copy {
                    path: from.join(f).display().to_string(),
                    source,
                }
            })?;
        }
        Ok(Snapshot { dir, files })
    }

    /// Puts every file back into `worktree`, where git left none of them.
    fn restore(&self, worktree: &Path) -> Result<(), PrepareError> {
        for f in &self.files {
            let to = worktree.join(f);
            copy_keeping_mtime(&self.dir.join(f), &to).map_err(|source| PrepareError::Copy {
                path: to.display().to_string(),
                source,
            })?;
        }
        Ok(())
    }
}

/// Copies a file and its modification time: Python's bytecode cache checks a source's mtime,
/// so a restored file that kept it is not compiled again.
fn copy_keeping_mtime(from: &Path, to: &Path) -> std::io::Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(from, to)?;
    let modified = std::fs::metadata(from)?.modified()?;
    std::fs::File::options()
        .write(true)
        .open(to)?
        .set_modified(modified)
}

/// Whether an ignored file is worth bringing into a worktree: not a cache, not bytecode, not
/// something that looks like a secret.
fn worth_copying(path: &str) -> bool {
    const CACHES: &[&str] = &[
        "__pycache__",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
        ".hypothesis",
        ".tox",
        ".nox",
        ".venv",
        "node_modules",
        ".git",
    ];
    const SECRET_WORDS: &[&str] = &[
        "secret",
        "token",
        "credential",
        "password",
        "passwd",
        "id_rsa",
        "id_ed25519",
    ];
    const SECRET_ENDINGS: &[&str] = &[".pem", ".key", ".p12", ".pfx", ".keystore", ".jks"];
    let lower = path.to_ascii_lowercase();
    let name = lower.rsplit('/').next().unwrap_or(&lower);
    !path
        .split('/')
        .any(|part| CACHES.contains(&part) || part.ends_with(".egg-info"))
        && !name.ends_with(".pyc")
        && !name.ends_with(".pyo")
        && !name.starts_with(".env")
        && !name.ends_with(".swp")
        && !SECRET_WORDS.iter().any(|w| name.contains(w))
        && !SECRET_ENDINGS.iter().any(|e| name.ends_with(e))
}

/// The ignored files of the user's package folders that a worktree gets, within the limits;
/// what was left out for size is logged.
fn ignored_in_packages(repo_root: &Path, packages: &[String]) -> Result<Vec<String>, PrepareError> {
    let dirs: Vec<String> = packages
        .iter()
        .filter(|p| !p.ends_with(".py"))
        .cloned()
        .collect();
    if dirs.is_empty() {
        return Ok(Vec::new());
    }
    let mut total = 0u64;
    let mut out = Vec::new();
    for path in git::untracked_files(repo_root, &dirs, false)? {
        if !worth_copying(&path) {
            continue;
        }
        let size = std::fs::metadata(repo_root.join(&path)).map_or(0, |m| m.len());
        if size > MAX_FILE_BYTES || total + size > MAX_TOTAL_BYTES || out.len() >= MAX_FILES {
            tracing::warn!(
                "not copying the ignored file {path} into worktrees: over the size limits"
            );
            continue;
        }
        total += size;
        out.push(path);
    }
    Ok(out)
}

/// How `--setup-cmd` runs: in the worktree, with the tests' environment and the test
/// command's Python first on PATH (so `pip` is the venv's).
#[derive(Debug, Clone)]
pub struct SetupCommand {
    pub command: String,
    pub env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    pub timeout: Duration,
}

impl SetupCommand {
    pub fn new(
        command: String,
        python: Option<&str>,
        pass_env: &[String],
        timeout: Duration,
    ) -> Self {
        let env =
            crate::process::with_python_bin(crate::process::test_environment(pass_env), python);
        SetupCommand {
            command,
            env,
            timeout,
        }
    }
}

/// What each worktree gets besides its checkout.
pub struct Preparer {
    /// The user's ignored package files, copied aside when this session started.
    overlay: Snapshot,
    setup: Option<SetupCommand>,
    /// Where the products of `--setup-cmd` are kept, one folder per worktree.
    store: PathBuf,
    /// Worktrees whose setup has run, with what it made.
    done: Mutex<Vec<(PathBuf, Snapshot)>>,
}

impl Preparer {
    /// Nothing to copy, nothing to run (tests, and projects that need neither).
    pub fn none() -> Self {
        Preparer {
            overlay: Snapshot::default(),
            setup: None,
            store: PathBuf::new(),
            done: Mutex::new(Vec::new()),
        }
    }

    /// Copies the ignored files of the user's package folders aside (into `scratch/overlay`).
    pub fn new(
        repo_root: &Path,
        packages: &[String],
        scratch: &Path,
        setup: Option<SetupCommand>,
    ) -> Result<Self, PrepareError> {
        let files = ignored_in_packages(repo_root, packages)?;
        let overlay = Snapshot::take(
            repo_root,
            files,
            crate::artifacts::scratch::overlay(scratch),
        )?;
        Ok(Preparer {
            overlay,
            setup,
            store: crate::artifacts::scratch::prepared(scratch),
            done: Mutex::new(Vec::new()),
        })
    }

    /// The files copied from the user's tree into every worktree.
    pub fn copied(&self) -> &[String] {
        &self.overlay.files
    }

    fn done(&self) -> std::sync::MutexGuard<'_, Vec<(PathBuf, Snapshot)>> {
        self.done.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// After a checkout: puts back the copied files and what the setup made here before. A
    /// worktree that was made anew (`fresh`) gets its setup run again by [`Self::ready`].
    pub fn restore(&self, worktree: &Path, fresh: bool) -> Result<(), PrepareError> {
        if fresh {
            self.done().retain(|(p, _)| p != worktree);
        }
        self.overlay.restore(worktree)?;
        let made = self
            .done()
            .iter()
            .find(|(p, _)| p == worktree)
            .map(|(_, s)| s.clone());
        if let Some(made) = made {
            made.restore(worktree)?;
        }
        Ok(())
    }

    /// Paths in `worktree` that preparation put there (not something a test did).
    pub fn made_in(&self, worktree: &Path) -> Vec<String> {
        let mut out = self.overlay.files.clone();
        if let Some((_, s)) = self.done().iter().find(|(p, _)| p == worktree) {
            out.extend(s.files.iter().cloned());
        }
        out
    }

    /// Before the first pytest run in `worktree`: runs `--setup-cmd` there once and keeps
    /// aside what it made. Cheap when it has run.
    pub async fn ready(
        &self,
        worktree: &Path,
        cancel: &CancellationToken,
    ) -> Result<(), PrepareError> {
        let Some(setup) = &self.setup else {
            return Ok(());
        };
        if self.done().iter().any(|(p, _)| p == worktree) {
            return Ok(());
        }
        let before: Vec<String> = git::untracked_files(worktree, &[], true)?;
        let name = worktree
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "worktree".into());
        std::fs::create_dir_all(&self.store).map_err(|source| PrepareError::Copy {
            path: self.store.display().to_string(),
            source,
        })?;
        let log = crate::artifacts::scratch::setup_log(&self.store, &name);
        let words = vec!["sh".to_string(), "-c".to_string(), setup.command.clone()];
        let result = crate::process::spawn_and_wait(
            &words,
            worktree,
            &log,
            setup.timeout,
            cancel,
            &setup.env,
        )
        .await;
        let crate::process::Exit { code, timed_out } = match result {
            Ok(r) => r,
            Err(crate::process::ProcessError::Cancelled) => return Err(PrepareError::Cancelled),
            Err(e) => {
                return Err(PrepareError::Setup(format!(
                    "--setup-cmd `{}`: {e}",
                    setup.command
                )));
            }
        };
        if timed_out || code != Some(0) {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = tail[tail.len().saturating_sub(3)..].join(" | ");
            let status = if timed_out {
                format!(
                    "did not finish within {}",
                    humantime::format_duration(setup.timeout)
                )
            } else {
                format!(
                    "failed with exit code {}",
                    code.map_or("none (killed)".into(), |c| c.to_string())
                )
            };
            return Err(PrepareError::Setup(format!(
                "--setup-cmd `{}` {status} in a new worktree: {tail} (full output: {}); fix it and run the same command again",
                setup.command,
                log.display()
            )));
        }
        let made: Vec<String> = git::untracked_files(worktree, &[], true)?
            .into_iter()
            .filter(|p| !before.contains(p) && worth_copying(p))
            .collect();
        let snapshot = Snapshot::take(worktree, made, self.store.join(&name))?;
        self.done().push((worktree.to_path_buf(), snapshot));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_and_secrets_stay_behind() {
        for ok in [
            "pkg/_version.py",
            "src/pkg/_speedups.cpython-311-x86_64-linux-gnu.so",
            "pkg/locale/de/LC_MESSAGES/pkg.mo",
        ] {
            assert!(worth_copying(ok), "{ok}");
        }
        for no in [
            "pkg/__pycache__/a.cpython-311.pyc",
            "pkg/a.pyc",
            "pkg/.env",
            "pkg/.env.local",
            "pkg/server.pem",
            "pkg/api_token.txt",
            "pkg/.pytest_cache/v/cache",
            "src/pkg.egg-info/PKG-INFO",
        ] {
            assert!(!worth_copying(no), "{no}");
        }
    }
}
