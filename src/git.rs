//! Everything git, through libgit2: the run branch, one linked worktree and branch per
//! iteration, commits, and the single compare-and-swap ref update that keeps an iteration. The
//! user's checked-out branch, index and working tree are never written: every write here goes to
//! a worktree under the state dir or to a ref of our own.

use std::path::{Path, PathBuf};

use git2::{BranchType, Oid, Repository, Signature, WorktreeAddOptions, WorktreePruneOptions};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error(
        "{path} is not a git repository: run improve inside a git checkout or pass --repo PATH"
    )]
    NotARepo { path: String },
    #[error("{path} is a bare repository: improve needs a checkout with a working tree")]
    Bare { path: String },
    #[error(
        "the repository at {path} has no commits yet: commit your code first, then run improve"
    )]
    NoCommits { path: String },
    #[error("--base `{rev}` is not a commit in this repository: {detail}")]
    BadBase { rev: String, detail: String },
    #[error(
        "the run branch {branch} is gone (deleted or renamed by hand?): restore it, or run with \
         --fresh to start a new run"
    )]
    RunBranchMissing { branch: String },
    #[error("git: {context}: {source}")]
    Op {
        context: String,
        #[source]
        source: git2::Error,
    },
    #[error("git: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

trait Context<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, GitError>;
}

impl<T> Context<T> for Result<T, git2::Error> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, GitError> {
        self.map_err(|source| GitError::Op {
            context: context(),
            source,
        })
    }
}

impl<T> Context<T> for Result<T, std::io::Error> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, GitError> {
        self.map_err(|source| GitError::Io {
            context: context(),
            source,
        })
    }
}

/// Opens the repository at exactly `path` and checks it can be worked on.
pub fn open(path: &Path) -> Result<Repository, GitError> {
    let repo = Repository::open(path).map_err(|_| GitError::NotARepo {
        path: path.display().to_string(),
    })?;
    if repo.is_bare() {
        return Err(GitError::Bare {
            path: path.display().to_string(),
        });
    }
    if repo.head().is_err() || repo.is_empty().unwrap_or(true) {
        return Err(GitError::NoCommits {
            path: path.display().to_string(),
        });
    }
    Ok(repo)
}

pub fn resolve_commit(repo: &Repository, rev: &str) -> Result<Oid, GitError> {
    repo.revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map(|c| c.id())
        .map_err(|e| GitError::BadBase {
            rev: rev.to_string(),
            detail: e.message().to_string(),
        })
}

/// Keeps the state dir out of `git status` by listing it in `.git/info/exclude` (shared by all
/// worktrees), never in the user's tracked `.gitignore`.
pub fn exclude_state_dir(
    repo: &Repository,
    repo_root: &Path,
    state_dir: &Path,
) -> Result<(), GitError> {
    let state_dir = state_dir
        .canonicalize()
        .unwrap_or_else(|_| state_dir.to_path_buf());
    let Ok(rel) = state_dir.strip_prefix(repo_root) else {
        return Ok(());
    };
    let line = format!("/{}/", rel.display());
    let exclude = repo.commondir().join("info").join("exclude");
    let existing = std::fs::read_to_string(&exclude).unwrap_or_default();
    if existing.lines().any(|l| l.trim() == line) {
        return Ok(());
    }
    if let Some(parent) = exclude.parent() {
        std::fs::create_dir_all(parent).ctx(|| format!("create {}", parent.display()))?;
    }
    let mut text = existing;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("# improve's state dir\n");
    text.push_str(&line);
    text.push('\n');
    // The user's file: never leave it torn.
    crate::fsutil::write_atomic(&exclude, text.as_bytes())
        .ctx(|| format!("write {}", exclude.display()))
}

/// A commit id kept in the state; `what` names it for the error.
pub fn oid(hex: &str, what: &str) -> Result<Oid, GitError> {
    Oid::from_str(hex).map_err(|source| GitError::Op {
        context: format!("read {what} from the state"),
        source,
    })
}

/// The tip of the run branch, which must exist.
pub fn run_tip(repo: &Repository, run_branch: &str) -> Result<Oid, GitError> {
    branch_tip(repo, run_branch)?.ok_or_else(|| GitError::RunBranchMissing {
        branch: run_branch.to_string(),
    })
}

pub fn branch_tip(repo: &Repository, branch: &str) -> Result<Option<Oid>, GitError> {
    match repo.find_branch(branch, BranchType::Local) {
        Ok(b) => Ok(b.get().target()),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e).ctx(|| format!("read branch {branch}")),
    }
}

pub fn create_branch(
    repo: &Repository,
    branch: &str,
    at: Oid,
    force: bool,
) -> Result<(), GitError> {
    let commit = repo.find_commit(at).ctx(|| format!("find commit {at}"))?;
    repo.branch(branch, &commit, force)
        .ctx(|| format!("create branch {branch}"))?;
    Ok(())
}

pub fn delete_branch(repo: &Repository, branch: &str) -> Result<(), GitError> {
    // The reference itself, not `Branch::delete`: that one refuses a branch a worktree has
    // checked out, as a slot left by a killed session may still have.
    match repo.find_reference(&format!("refs/heads/{branch}")) {
        Ok(mut r) => r.delete().ctx(|| format!("delete branch {branch}")),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(()),
        Err(e) => Err(e).ctx(|| format!("find branch {branch}")),
    }
}

/// A linked worktree checked out on its own branch.
#[derive(Debug, Clone)]
pub struct Worktree {
    pub name: String,
    pub path: PathBuf,
    pub branch: String,
}

/// Creates (or re-creates, after a crash) a worktree at `path` on `branch`, which is (re)set to
/// `at`. Whatever a crashed attempt left there is discarded first.
pub fn add_worktree(
    repo: &Repository,
    name: &str,
    path: &Path,
    branch: &str,
    at: Oid,
) -> Result<Worktree, GitError> {
    remove_worktree(repo, name, path)?;
    create_branch(repo, branch, at, true)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).ctx(|| format!("create {}", parent.display()))?;
    }
    let reference = repo
        .find_reference(&format!("refs/heads/{branch}"))
        .ctx(|| format!("find branch {branch}"))?;
    let mut opts = WorktreeAddOptions::new();
    opts.reference(Some(&reference));
    repo.worktree(name, path, Some(&opts))
        .ctx(|| format!("add worktree {}", path.display()))?;
    Ok(Worktree {
        name: name.to_string(),
        path: path.to_path_buf(),
        branch: branch.to_string(),
    })
}

/// Whether `path` holds a usable linked worktree registered as `name`, whose `.git` file
/// still points at its own administrative folder (tests ran there and could have rewritten it;
/// opened through a rewritten one, a checkout could land in another repository's files).
pub fn is_worktree(repo: &Repository, name: &str, path: &Path) -> bool {
    let admin = repo.commondir().join("worktrees").join(name);
    let points_home = std::fs::read_to_string(path.join(".git")).is_ok_and(|link| {
        link.trim()
            .strip_prefix("gitdir:")
            .is_some_and(|dir| Path::new(dir.trim()) == admin)
    });
    points_home
        && repo
            .find_worktree(name)
            .is_ok_and(|wt| wt.validate().is_ok() && wt.path() == path)
        && Repository::open(path).is_ok()
}

/// Points an existing worktree at `branch`, (re)set to `at`, and makes its files exactly that
/// commit: whatever another iteration changed, added or left ignored there is removed. Only the
/// files that differ are written, so a switch costs what changed, not the size of the tree.
/// Returns the files the checkout wrote, relative to the worktree.
pub fn switch_worktree(
    repo: &Repository,
    path: &Path,
    branch: &str,
    at: Oid,
) -> Result<Vec<String>, GitError> {
    let refname = format!("refs/heads/{branch}");
    // Through the reference itself: libgit2 refuses to force a branch that some worktree has
    // checked out, which is exactly the case when an iteration's commit is replayed.
    repo.reference(&refname, at, true, "improve: iteration branch")
        .ctx(|| format!("set branch {branch}"))?;
    let wt = Repository::open(path).ctx(|| format!("open worktree {}", path.display()))?;
    wt.set_head(&refname)
        .ctx(|| format!("check out {branch} in {}", path.display()))?;
    let mut written = Vec::new();
    let mut opts = git2::build::CheckoutBuilder::new();
    opts.force()
        .remove_untracked(true)
        .remove_ignored(true)
        .notify_on(git2::CheckoutNotificationType::UPDATED)
        .notify(|_, file, _, _, _| {
            if let Some(file) = file.and_then(Path::to_str) {
                written.push(file.to_string());
            }
            true
        });
    wt.checkout_head(Some(&mut opts))
        .ctx(|| format!("check out {branch} in {}", path.display()))?;
    drop(opts);
    // The checkout leaves folders a test made but no file in them.
    for dir in empty_dirs(&wt, path) {
        let _ = std::fs::remove_dir_all(path.join(dir));
    }
    Ok(written)
}

/// Leaves a worktree on its commit without a branch: git lets a branch be checked out in one
/// worktree at a time, so an idle worktree must not keep one.
pub fn detach_worktree(path: &Path) -> Result<(), GitError> {
    let wt = Repository::open(path).ctx(|| format!("open worktree {}", path.display()))?;
    let head = wt
        .head()
        .and_then(|h| h.peel_to_commit())
        .ctx(|| format!("read the HEAD of {}", path.display()))?;
    wt.set_head_detached(head.id())
        .ctx(|| format!("detach the HEAD of {}", path.display()))
}

/// Removes a worktree folder and its administrative entry; absent ones are fine.
pub fn remove_worktree(repo: &Repository, name: &str, path: &Path) -> Result<(), GitError> {
    if path.exists() {
        std::fs::remove_dir_all(path).ctx(|| format!("remove {}", path.display()))?;
    }
    if let Ok(wt) = repo.find_worktree(name) {
        let mut opts = WorktreePruneOptions::new();
        opts.valid(true).working_tree(true).locked(true);
        wt.prune(Some(&mut opts))
            .ctx(|| format!("prune worktree {name}"))?;
    }
    // A kill while libgit2 was creating the worktree can leave an entry it cannot open (so
    // cannot prune) but that still blocks re-creating it: remove it by hand.
    let admin = repo.commondir().join("worktrees").join(name);
    if admin.exists() {
        std::fs::remove_dir_all(&admin).ctx(|| format!("remove {}", admin.display()))?;
    }
    Ok(())
}

pub fn signature(repo: &Repository) -> Result<Signature<'static>, GitError> {
    repo.signature()
        .or_else(|_| Signature::now("improve", "improve@localhost"))
        .ctx(|| "make a commit signature".into())
}

/// Stages `files` (relative to the worktree) and returns the tree and the current HEAD commit.
fn stage<'r>(
    repo: &'r Repository,
    files: &[String],
) -> Result<(git2::Tree<'r>, git2::Commit<'r>), GitError> {
    let mut index = repo.index().ctx(|| "read the worktree index".into())?;
    for f in files {
        index.add_path(Path::new(f)).ctx(|| format!("stage {f}"))?;
    }
    index.write().ctx(|| "write the worktree index".into())?;
    let tree_id = index.write_tree().ctx(|| "write tree".into())?;
    let tree = repo.find_tree(tree_id).ctx(|| "find tree".into())?;
    let head = repo
        .head()
        .and_then(|h| h.peel_to_commit())
        .ctx(|| "read the worktree HEAD".into())?;
    Ok((tree, head))
}

/// Commits the given files (paths relative to the worktree) on the worktree's branch.
pub fn commit_files(worktree: &Path, files: &[String], message: &str) -> Result<Oid, GitError> {
    let repo =
        Repository::open(worktree).ctx(|| format!("open worktree {}", worktree.display()))?;
    let (tree, parent) = stage(&repo, files)?;
    let sig = signature(&repo)?;
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &[&parent])
        .ctx(|| "commit in the worktree".into())
}

/// Paths that differ in a worktree from its HEAD: changed, deleted or new files (ignored ones
/// excepted). After a test run, these are what the tests did to the tree.
pub fn dirty_paths(worktree: &Path) -> Result<Vec<String>, GitError> {
    let repo =
        Repository::open(worktree).ctx(|| format!("open worktree {}", worktree.display()))?;
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false);
    let statuses = repo
        .statuses(Some(&mut opts))
        .ctx(|| "read the worktree status".into())?;
    let mut paths: Vec<String> = statuses
        .iter()
        .filter_map(|e| e.path().ok().map(str::to_string))
        .collect();
    // Git sees no folder without files, but a test that made one (`mkdir_p('out')`) wrote
    // into the project all the same.
    paths.extend(empty_dirs(&repo, worktree));
    paths.sort();
    Ok(paths)
}

/// The topmost folders under `root` that hold no file at any depth and that git does not
/// ignore (`out/`, with its slash), `.git` left out. A checkout never makes one.
pub fn empty_dirs(repo: &Repository, root: &Path) -> Vec<String> {
    fn walk(repo: &Repository, root: &Path, dir: &Path, found: &mut Vec<String>) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        let mut empty = true;
        let mut inside = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            // A file (ignored or not) makes its folder no empty one; only folders need the
            // ignore rules, to leave `.venv/` and the like unwalked.
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            let walked = is_dir
                && rel != Path::new(".git")
                && !repo.status_should_ignore(rel).unwrap_or(false);
            if walked && walk(repo, root, &path, &mut inside) {
                inside.push(format!("{}/", rel.display()));
            } else {
                empty = false;
            }
        }
        // An empty folder is reported whole, not folder by folder.
        if !empty {
            found.append(&mut inside);
        }
        empty
    }
    let mut found = Vec::new();
    walk(repo, root, root, &mut found);
    found
}

/// Files in the working tree at `root` that git does not track, under `under` (all of it when
/// empty): ignored ones, and untracked ones too when `untracked`. Folders are listed file by
/// file; symbolic links and other non-files are left out.
pub fn untracked_files(
    root: &Path,
    under: &[String],
    untracked: bool,
) -> Result<Vec<String>, GitError> {
    let repo = Repository::open(root).ctx(|| format!("open {}", root.display()))?;
    let mut opts = git2::StatusOptions::new();
    opts.include_ignored(true)
        .recurse_ignored_dirs(true)
        .include_untracked(untracked)
        .recurse_untracked_dirs(untracked)
        .exclude_submodules(true);
    for dir in under {
        opts.pathspec(dir);
    }
    let statuses = repo
        .statuses(Some(&mut opts))
        .ctx(|| format!("read the status of {}", root.display()))?;
    let wanted = |st: git2::Status| st.is_ignored() || (untracked && st.is_wt_new());
    let mut paths: Vec<String> = statuses
        .iter()
        .filter(|e| wanted(e.status()))
        .filter_map(|e| e.path().ok().map(str::to_string))
        .filter(|p| std::fs::symlink_metadata(root.join(p)).is_ok_and(|m| m.file_type().is_file()))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Replaces the worktree's HEAD commit by one with `files` as they are now (same parent), so
/// the iteration stays one commit on top of the run branch.
pub fn amend_head(worktree: &Path, files: &[String], message: &str) -> Result<Oid, GitError> {
    let repo =
        Repository::open(worktree).ctx(|| format!("open worktree {}", worktree.display()))?;
    let (tree, head) = stage(&repo, files)?;
    head.amend(Some("HEAD"), None, None, None, Some(message), Some(&tree))
        .ctx(|| "amend the iteration commit".into())
}

/// The commit a worktree's HEAD points at.
pub fn head_of(worktree: &Path) -> Option<Oid> {
    Repository::open(worktree)
        .ok()?
        .head()
        .ok()?
        .peel_to_commit()
        .ok()
        .map(|c| c.id())
}

/// Removes lock files left in our own ref namespaces (`improve/`, `improve-wip/`) and
/// worktrees by a process killed mid-update; libgit2, like git, refuses to touch a ref whose `.lock` exists.
/// Only called while holding the repository-wide improve lock, so no live improve owns them.
pub fn remove_stale_ref_locks(repo: &Repository) -> Result<Vec<PathBuf>, GitError> {
    let mut removed = Vec::new();
    for namespace in ["improve", "improve-wip"] {
        let root = repo.commondir().join("refs").join("heads").join(namespace);
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "lock") {
                    std::fs::remove_file(&path).ctx(|| format!("remove {}", path.display()))?;
                    removed.push(path);
                }
            }
        }
    }
    // The same for the index and HEAD of our own worktrees (`improve-<run>-<n>`): a kill while
    // an iteration committed leaves them locked, and the resumed iteration must commit there.
    if let Ok(entries) = std::fs::read_dir(repo.commondir().join("worktrees")) {
        for entry in entries.flatten() {
            if !entry.file_name().to_string_lossy().starts_with("improve-") {
                continue;
            }
            for name in ["index.lock", "HEAD.lock"] {
                let path = entry.path().join(name);
                if path.exists() {
                    std::fs::remove_file(&path).ctx(|| format!("remove {}", path.display()))?;
                    removed.push(path);
                }
            }
        }
    }
    Ok(removed)
}

/// The unified diff a commit introduces over its first parent.
pub fn commit_patch(repo: &Repository, commit: Oid) -> Result<String, GitError> {
    let c = repo
        .find_commit(commit)
        .ctx(|| format!("find commit {commit}"))?;
    let tree = c.tree().ctx(|| "read tree".into())?;
    let parent_tree = match c.parent(0) {
        Ok(p) => Some(p.tree().ctx(|| "read parent tree".into())?),
        Err(_) => None,
    };
    let diff = repo
        .diff_tree_to_tree(parent_tree.as_ref(), Some(&tree), None)
        .ctx(|| "diff".into())?;
    let mut out = Vec::new();
    diff.print(git2::DiffFormat::Patch, |_, _, line| {
        if matches!(line.origin(), '+' | '-' | ' ') {
            out.push(line.origin() as u8);
        }
        out.extend_from_slice(line.content());
        true
    })
    .ctx(|| "print diff".into())?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Paths a commit adds (`true`) or changes (`false`) relative to its first parent.
pub fn commit_changes(repo: &Repository, commit: Oid) -> Result<Vec<(String, bool)>, GitError> {
    let c = repo
        .find_commit(commit)
        .ctx(|| format!("find commit {commit}"))?;
    let tree = c.tree().ctx(|| "read tree".into())?;
    let parent_tree = c.parent(0).ok().and_then(|p| p.tree().ok());
    let diff = repo
        .diff_tree_to_tree(parent_tree.as_ref(), Some(&tree), None)
        .ctx(|| "diff".into())?;
    Ok(diff
        .deltas()
        .filter_map(|d| {
            let added = d.status() == git2::Delta::Added;
            d.new_file()
                .path()
                .map(|p| (p.display().to_string(), added))
        })
        .collect())
}

pub fn commit_message(repo: &Repository, commit: Oid) -> Result<String, GitError> {
    let c = repo
        .find_commit(commit)
        .ctx(|| format!("find commit {commit}"))?;
    Ok(c.message().unwrap_or_default().to_string())
}

/// The commit on the run branch that carries these trailers, if the iteration was already kept
/// (a crash between the ref update and the state save leaves exactly this situation).
pub fn find_kept_commit(
    repo: &Repository,
    run_branch: &str,
    run_id: &str,
    n: u32,
    stop_at: Oid,
) -> Result<Option<Oid>, GitError> {
    let Some(tip) = branch_tip(repo, run_branch)? else {
        return Ok(None);
    };
    let mut walk = repo.revwalk().ctx(|| "walk the run branch".into())?;
    walk.push(tip).ctx(|| "walk the run branch".into())?;
    walk.hide(stop_at).ctx(|| "walk the run branch".into())?;
    let run_trailer = format!("Improve-Run: {run_id}");
    let n_trailer = format!("Improve-Iteration: {n}");
    for oid in walk {
        let oid = oid.ctx(|| "walk the run branch".into())?;
        let msg = commit_message(repo, oid)?;
        if msg.lines().any(|l| l.trim() == run_trailer)
            && msg.lines().any(|l| l.trim() == n_trailer)
        {
            return Ok(Some(oid));
        }
    }
    Ok(None)
}

/// Keeps an iteration: a commit with `tree_of`'s tree and the final message on top of the run
/// branch tip, and one compare-and-swap update of the run branch. Fails (changing nothing) when
/// the tip is no longer `expected_tip`.
pub fn keep_on_run_branch(
    repo: &Repository,
    run_branch: &str,
    expected_tip: Oid,
    tree_of: Oid,
    message: &str,
) -> Result<Oid, GitError> {
    let source = repo
        .find_commit(tree_of)
        .ctx(|| format!("find commit {tree_of}"))?;
    let tree = source.tree().ctx(|| "read tree".into())?;
    let parent = repo
        .find_commit(expected_tip)
        .ctx(|| format!("find commit {expected_tip}"))?;
    let sig = signature(repo)?;
    let new = repo
        .commit(None, &sig, &sig, message, &tree, &[&parent])
        .ctx(|| "write the kept commit".into())?;
    repo.reference_matching(
        &format!("refs/heads/{run_branch}"),
        new,
        true,
        expected_tip,
        &format!(
            "improve: keep {}",
            message.lines().next().unwrap_or_default()
        ),
    )
    .ctx(|| format!("move {run_branch} (did it change under the run?)"))?;
    Ok(new)
}

/// Re-applies `commit` (a one-commit change on its own parent) on top of `onto`: the change an
/// iteration verified, moved past what was kept meanwhile. None when the two conflict.
pub fn replay_onto(repo: &Repository, commit: Oid, onto: Oid) -> Result<Option<Oid>, GitError> {
    replay_as(repo, commit, onto, None)
}

/// [`replay_onto`] with another commit message (`None`: the commit's own).
pub fn replay_as(
    repo: &Repository,
    commit: Oid,
    onto: Oid,
    message: Option<&str>,
) -> Result<Option<Oid>, GitError> {
    let picked = repo
        .find_commit(commit)
        .ctx(|| format!("find commit {commit}"))?;
    let base = repo
        .find_commit(onto)
        .ctx(|| format!("find commit {onto}"))?;
    let mut index = repo
        .cherrypick_commit(&picked, &base, 0, None)
        .ctx(|| format!("replay {commit} onto {onto}"))?;
    if index.has_conflicts() {
        return Ok(None);
    }
    let tree_id = index
        .write_tree_to(repo)
        .ctx(|| "write the replayed tree".into())?;
    let tree = repo
        .find_tree(tree_id)
        .ctx(|| "read the replayed tree".into())?;
    let sig = signature(repo)?;
    let message = message.unwrap_or(picked.message().unwrap_or("improve: replayed proposal"));
    let new = repo
        .commit(None, &sig, &sig, message, &tree, &[&base])
        .ctx(|| "write the replayed commit".into())?;
    Ok(Some(new))
}

/// The `.py` files under `folder` in `commit`'s tree, as (path, text). What is committed is
/// what the tests run against; the user's working tree may hold anything.
pub fn python_files_at(
    repo: &Repository,
    commit: Oid,
    folder: &str,
) -> Result<Vec<(String, String)>, GitError> {
    let folder = folder.trim_end_matches('/');
    if folder.ends_with(".py") {
        return python_files_where(repo, commit, |p| p == folder);
    }
    let prefix = format!("{folder}/");
    python_files_where(repo, commit, |p| {
        folder.is_empty() || p.starts_with(&prefix)
    })
}

/// Every file committed in `commit`, with the text of the configuration files that package
/// detection reads: the project as the worktrees will see it.
pub fn project_tree(
    repo: &Repository,
    commit: Oid,
) -> Result<crate::project::ProjectTree, GitError> {
    let tree = repo
        .find_commit(commit)
        .and_then(|c| c.tree())
        .ctx(|| format!("read the tree of {commit}"))?;
    let mut files = Vec::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |root, entry| {
        if entry.kind() == Some(git2::ObjectType::Blob)
            && let Ok(name) = entry.name()
        {
            files.push(format!("{root}{name}"));
        }
        git2::TreeWalkResult::Ok
    })
    .ctx(|| "walk the tree".into())?;
    let read = |name: &str| {
        let entry = tree.get_path(Path::new(name)).ok()?;
        let blob = repo.find_blob(entry.id()).ok()?;
        Some(String::from_utf8_lossy(blob.content()).into_owned())
    };
    Ok(crate::project::ProjectTree::new(files, read))
}

/// The `.py` files of `commit` for which `keep` holds, as (path, text).
pub fn python_files_where(
    repo: &Repository,
    commit: Oid,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<(String, String)>, GitError> {
    let tree = repo
        .find_commit(commit)
        .and_then(|c| c.tree())
        .ctx(|| format!("read the tree of {commit}"))?;
    let mut found = Vec::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |root, entry| {
        if let Ok(name) = entry.name()
            && entry.kind() == Some(git2::ObjectType::Blob)
            && name.ends_with(".py")
        {
            let path = format!("{root}{name}");
            if keep(&path) {
                found.push((path, entry.id()));
            }
        }
        git2::TreeWalkResult::Ok
    })
    .ctx(|| "walk the tree".into())?;
    let mut out = Vec::with_capacity(found.len());
    for (path, id) in found {
        let blob = repo.find_blob(id).ctx(|| format!("read {path}"))?;
        out.push((path, String::from_utf8_lossy(blob.content()).into_owned()));
    }
    out.sort();
    Ok(out)
}

pub fn short(oid: &str) -> &str {
    oid.get(..10).unwrap_or(oid)
}

/// Test fixtures shared by the modules' unit tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use std::path::Path;

    use git2::{Oid, Repository};

    /// Commits `files` (path, content) on top of HEAD in `repo` and returns the commit.
    pub(crate) fn commit(repo: &Repository, files: &[(&str, &str)]) -> Oid {
        let root = repo.workdir().unwrap().to_path_buf();
        let mut index = repo.index().unwrap();
        for (path, text) in files {
            let full = root.join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(&full, text).unwrap();
            index.add_path(Path::new(path)).unwrap();
        }
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, "c", &tree, &parents)
            .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_a_test_made_is_dirty_even_without_a_file_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        tests_support::commit(
            &repo,
            &[(".gitignore", "build/\n"), ("pkg/mod.py", "x = 1\n")],
        );
        assert!(dirty_paths(dir.path()).unwrap().is_empty());
        for made in ["out", "a/b/c", "build/tmp", "pkg/empty"] {
            std::fs::create_dir_all(dir.path().join(made)).unwrap();
        }
        std::fs::write(dir.path().join("new.txt"), "x").unwrap();
        // The topmost empty folder only; an ignored one not at all.
        assert_eq!(
            dirty_paths(dir.path()).unwrap(),
            ["a/", "new.txt", "out/", "pkg/empty/"]
        );
    }
}
