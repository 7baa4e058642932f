//! The git remote results travel through, spoken with the `git` command (so the user's
//! credential helpers, SSH keys and proxies apply), and the small commits improve makes to carry
//! a shard's state and claim.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use git2::{Oid, Repository};

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("cannot run git {what}: {detail}")]
    Run { what: String, detail: String },
    #[error("the remote {remote} refused the push: {detail}")]
    Rejected { remote: String, detail: String },
    #[error("git: {0}")]
    Git(#[from] git2::Error),
}

/// A remote by name (`origin`) or URL, used from the repository at `root`.
pub struct Remote {
    root: PathBuf,
    pub name: String,
}

impl Remote {
    pub fn new(root: &Path, name: &str) -> Self {
        Remote {
            root: root.to_path_buf(),
            name: name.to_string(),
        }
    }

    fn git(&self, what: &str, args: &[String]) -> Result<std::process::Output, RemoteError> {
        Command::new("git")
            .arg("-C")
            .arg(&self.root)
            .args(args)
            // A worker in a job array has nobody to type a password.
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .map_err(|e| RemoteError::Run {
                what: what.into(),
                detail: e.to_string(),
            })
    }

    /// The refs of the remote that match `patterns` (as `git ls-remote` takes them).
    pub fn list(&self, patterns: &[String]) -> Result<BTreeMap<String, Oid>, RemoteError> {
        let mut args = vec!["ls-remote".to_string(), self.name.clone()];
        args.extend(patterns.iter().cloned());
        let out = self.git("ls-remote", &args)?;
        if !out.status.success() {
            return Err(RemoteError::Run {
                what: format!("ls-remote {}", self.name),
                detail: last_line(&out.stderr),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (oid, name) = l.split_once('\t')?;
                Some((name.trim().to_string(), Oid::from_str(oid.trim()).ok()?))
            })
            .collect())
    }

    /// Fetches each remote ref into the local ref beside it (forced: these are copies).
    pub fn fetch(&self, pairs: &[(String, String)]) -> Result<(), RemoteError> {
        if pairs.is_empty() {
            return Ok(());
        }
        let mut args = vec![
            "fetch".to_string(),
            "--quiet".into(),
            "--no-tags".into(),
            self.name.clone(),
        ];
        args.extend(pairs.iter().map(|(from, to)| format!("+{from}:{to}")));
        let out = self.git("fetch", &args)?;
        if !out.status.success() {
            return Err(RemoteError::Run {
                what: format!("fetch from {}", self.name),
                detail: last_line(&out.stderr),
            });
        }
        Ok(())
    }

    /// Pushes every `(commit, ref)` at once or none (`--atomic`), never forced: a ref that
    /// moved on the remote since makes the whole push fail.
    pub fn push(&self, updates: &[(Oid, String)]) -> Result<(), RemoteError> {
        let mut args = vec![
            "push".to_string(),
            "--atomic".into(),
            "--quiet".into(),
            self.name.clone(),
        ];
        args.extend(updates.iter().map(|(oid, to)| format!("{oid}:{to}")));
        let out = self.git("push", &args)?;
        if !out.status.success() {
            return Err(RemoteError::Rejected {
                remote: self.name.clone(),
                detail: last_line(&out.stderr),
            });
        }
        Ok(())
    }
}

/// What git said went wrong, in one line: the server's own words (`remote: ...`) and the ref
/// it rejected, else git's last error.
fn last_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("hint:"))
        .collect();
    let said: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("remote:").map(str::trim))
        .filter(|l| !l.is_empty())
        .chain(lines.iter().copied().filter(|l| l.contains("rejected]")))
        .collect();
    if !said.is_empty() {
        return said.join("; ");
    }
    lines
        .iter()
        .rev()
        .find(|l| l.starts_with("error:") || l.starts_with("fatal:"))
        .or(lines.last())
        .map(|l| l.to_string())
        .unwrap_or_else(|| "no reason given".into())
}

/// A commit holding `files` (name, bytes) on top of `parent`, pointed to by no ref.
pub fn data_commit(
    repo: &Repository,
    files: &[(&str, &[u8])],
    parent: Option<Oid>,
    message: &str,
) -> Result<Oid, RemoteError> {
    let mut tree = repo.treebuilder(None)?;
    for (name, bytes) in files {
        let blob = repo.blob(bytes)?;
        tree.insert(name, blob, 0o100644)?;
    }
    let tree = repo.find_tree(tree.write()?)?;
    let sig = crate::git::signature(repo).map_err(|e| RemoteError::Run {
        what: "commit".into(),
        detail: e.to_string(),
    })?;
    let parents: Vec<git2::Commit<'_>> = parent
        .map(|p| repo.find_commit(p))
        .transpose()?
        .into_iter()
        .collect();
    let parents: Vec<&git2::Commit<'_>> = parents.iter().collect();
    Ok(repo.commit(None, &sig, &sig, message, &tree, &parents)?)
}

/// The file `name` in `commit`'s tree.
pub fn read_data(repo: &Repository, commit: Oid, name: &str) -> Result<Vec<u8>, RemoteError> {
    let tree = repo.find_commit(commit)?.tree()?;
    let entry = tree.get_path(Path::new(name))?;
    Ok(repo.find_blob(entry.id())?.content().to_vec())
}
