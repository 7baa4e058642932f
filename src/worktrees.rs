//! The run's worktrees: a few linked worktrees ("slots") under the state dir, handed from one
//! iteration to the next instead of being created and removed for each.
//!
//! Creating a worktree writes every file of the project and removing it deletes them again; on
//! a large project that is most of improve's own time per iteration. Switching a slot to the
//! next iteration's branch writes only the files that differ. With the bytecode cache (see
//! [`crate::pytest::TestCommand::bytecode_cache`]), what Python compiled for a slot's files
//! stays valid too, so pytest compiles only what changed instead of the package and the suite
//! in every run. A slot is never shared: an iteration holds its own from writing its proposal
//! until it ends, and `--jobs N` needs at most N of them.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use git2::{Oid, Repository};

use tokio_util::sync::CancellationToken;

use crate::git::{self, GitError};
use crate::prepare::{PrepareError, Preparer};

/// Who holds a slot: an iteration's number, or [`BASELINE`].
pub type Holder = u32;

/// The baseline's run of the whole suite (iterations are numbered from 1).
pub const BASELINE: Holder = 0;

pub struct WorktreePool {
    dir: PathBuf,
    run_id: String,
    bytecode: Option<PathBuf>,
    /// What every checkout gets besides git's files (see [`crate::prepare`]).
    prep: Preparer,
    /// One entry per slot made so far: who holds it, if anyone.
    slots: Mutex<Vec<Option<Holder>>>,
}

impl WorktreePool {
    /// Slots live in `dir` (the state dir's `worktrees`); `bytecode` is the project's bytecode cache
    /// (see [`crate::pytest::TestCommand::bytecode_cache`]), if runs have one.
    pub fn new(dir: PathBuf, run_id: &str, bytecode: Option<PathBuf>, prep: Preparer) -> Self {
        WorktreePool {
            dir,
            run_id: run_id.to_string(),
            bytecode,
            prep,
            slots: Mutex::new(Vec::new()),
        }
    }

    fn name(&self, slot: usize) -> String {
        format!("improve-{}-slot{slot}", self.run_id)
    }

    fn path(&self, slot: usize) -> PathBuf {
        self.dir.join(format!("{}-slot{slot}", self.run_id))
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<Option<Holder>>> {
        // A panic while holding it cannot leave the list half-updated (each use is one write).
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The worktree `holder` works in, checked out on `branch`, which is (re)set to `at`. The
    /// holder keeps the slot (and gets it again here, switched to `at`) until [`Self::release`].
    pub fn check_out(
        &self,
        repo: &Repository,
        holder: Holder,
        branch: &str,
        at: Oid,
    ) -> Result<PathBuf, GitError> {
        let slot = {
            let mut slots = self.slots();
            let slot = match slots.iter().position(|h| *h == Some(holder)) {
                Some(k) => k,
                None => match slots.iter().position(Option::is_none) {
                    Some(k) => k,
                    None => {
                        slots.push(None);
                        slots.len() - 1
                    }
                },
            };
            slots[slot] = Some(holder);
            slot
        };
        let (name, path) = (self.name(slot), self.path(slot));
        // A slot left by a killed session is reused as it is; one that is missing or broken
        // (removed by hand, or a kill while git made it) is made again from scratch.
        let switched = git::is_worktree(repo, &name, &path)
            .then(|| git::switch_worktree(repo, &path, branch, at))
            .and_then(|r| {
                r.inspect_err(|e| tracing::warn!("remaking worktree {name}: {e}"))
                    .ok()
            });
        let fresh = switched.is_none();
        match switched {
            Some(written) => {
                for file in written {
                    forget_bytecode(self.bytecode.as_deref(), &path.join(file));
                }
            }
            None => {
                if let Some(cache) = &self.bytecode {
                    let _ = std::fs::remove_dir_all(cache_dir(cache, &path));
                }
                if let Err(e) = git::add_worktree(repo, &name, &path, branch, at) {
                    self.slots()[slot] = None;
                    return Err(e);
                }
            }
        }
        // The checkout removed whatever git does not track: put back what the code needs.
        if let Err(e) = self.prep.restore(&path, fresh) {
            self.slots()[slot] = None;
            return Err(GitError::Io {
                context: format!("prepare the worktree {}", path.display()),
                source: std::io::Error::other(e.to_string()),
            });
        }
        Ok(path)
    }

    /// Before the first pytest run in `path`: `--setup-cmd`, once per worktree.
    pub async fn ready(&self, path: &Path, cancel: &CancellationToken) -> Result<(), PrepareError> {
        self.prep.ready(path, cancel).await
    }

    /// Paths that preparation put into `path`, which a test run did not make.
    pub fn prepared_in(&self, path: &Path) -> Vec<String> {
        self.prep.made_in(path)
    }

    /// The ignored files copied from the user's package folders into every worktree.
    pub fn copied(&self) -> &[String] {
        self.prep.copied()
    }

    /// The worktree `holder` holds, if any.
    pub fn held(&self, holder: Holder) -> Option<PathBuf> {
        let k = self.slots().iter().position(|h| *h == Some(holder))?;
        Some(self.path(k))
    }

    /// Gives the holder's slot back. Its files are cleaned by the next checkout.
    pub fn release(&self, repo: &Repository, holder: Holder) {
        let mut slots = self.slots();
        if let Some(k) = slots.iter().position(|h| *h == Some(holder)) {
            self.detach(repo, k);
            slots[k] = None;
        }
    }

    /// Detaches the HEAD of every slot a killed session left, before any is handed out: git
    /// lets a branch be checked out in one worktree only, and an iteration resumed in another
    /// slot than before must check its branch out again.
    pub fn detach_leftovers(&self, repo: &Repository) {
        for dir_name in self.on_disk() {
            if let Some(k) = dir_name
                .rsplit_once("-slot")
                .and_then(|(_, k)| k.parse::<usize>().ok())
            {
                self.detach(repo, k);
            }
        }
    }

    /// Leaves slot `k` on its commit without a branch, so that no branch is held by a slot
    /// nobody works in. One that is not a sound worktree is left for `check_out` to remake.
    fn detach(&self, repo: &Repository, k: usize) {
        let (name, path) = (self.name(k), self.path(k));
        if git::is_worktree(repo, &name, &path)
            && let Err(e) = git::detach_worktree(&path)
        {
            tracing::warn!("could not detach worktree {name}: {e}");
        }
    }

    /// The names of this run's slot folders on disk, whoever made them.
    fn on_disk(&self) -> Vec<String> {
        let prefix = format!("{}-slot", self.run_id);
        std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .filter(|f| f.starts_with(&prefix))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes every slot of the run (this session's and any a killed one left), and their
    /// bytecode. Failing to remove one loses nothing: a later session reuses or remakes it.
    pub fn remove_all(&self, repo: &Repository) {
        for dir_name in self.on_disk() {
            let path = self.dir.join(&dir_name);
            if let Some(cache) = &self.bytecode {
                let _ = std::fs::remove_dir_all(cache_dir(cache, &path));
            }
            if let Err(e) = git::remove_worktree(repo, &format!("improve-{dir_name}"), &path) {
                tracing::warn!("could not remove worktree {}: {e}", path.display());
            }
        }
        self.slots().clear();
    }
}

/// Where Python keeps the bytecode of files in `dir` under the cache prefix `cache`: the
/// absolute path, its root stripped, below the prefix (as `sys.pycache_prefix` and pytest's
/// assertion rewriter both do).
fn cache_dir(cache: &Path, dir: &Path) -> PathBuf {
    cache.join(dir.strip_prefix("/").unwrap_or(dir))
}

/// Removes what Python and pytest compiled from `source`. They check a source's size and
/// modification time to the second, so a file rewritten within the same second at the same
/// size would otherwise run as its old self.
pub fn forget_bytecode(cache: Option<&Path>, source: &Path) {
    let (Some(cache), Some(dir), Some(stem)) = (
        cache,
        source.parent(),
        source
            .file_name()
            .and_then(|f| f.to_str())
            .and_then(|f| f.strip_suffix(".py")),
    ) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(cache_dir(cache, dir)) else {
        return;
    };
    let start = format!("{stem}.");
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&start) && name.ends_with(".pyc") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    use crate::git::tests_support::commit;

    fn fake_bytecode(cache: &Path, source: &Path) -> PathBuf {
        let dir = cache_dir(cache, source.parent().unwrap());
        std::fs::create_dir_all(&dir).unwrap();
        let stem = source.file_stem().unwrap().to_str().unwrap();
        let pyc = dir.join(format!("{stem}.cpython-311.pyc"));
        std::fs::write(&pyc, "bytecode").unwrap();
        pyc
    }

    #[test]
    fn a_slot_is_handed_on_clean_with_only_what_changed_rewritten() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init(tmp.path().join("repo")).unwrap();
        let a = commit(
            &repo,
            &[
                (".gitignore", "*.log\n"),
                ("pkg/core.py", "X = 1\n"),
                ("pkg/util.py", "Y = 2\n"),
                ("tests/test_core.py", "def test_x():\n    pass\n"),
            ],
        );
        let b = commit(
            &repo,
            &[("pkg/core.py", "X = 3\n"), ("tests/test_new.py", "\n")],
        );
        let cache = tmp.path().join("bytecode");
        let pool = WorktreePool::new(
            tmp.path().join("worktrees"),
            "r",
            Some(cache.clone()),
            Preparer::none(),
        );

        let first = pool.check_out(&repo, 1, "wip/1", a).unwrap();
        assert_eq!(pool.held(1), Some(first.clone()));
        // What iteration 1's tests leave behind.
        std::fs::write(first.join("junk.txt"), "x").unwrap();
        std::fs::write(first.join("run.log"), "x").unwrap();
        std::fs::create_dir_all(first.join("out/deep")).unwrap();
        std::fs::write(first.join("out/deep/f"), "x").unwrap();
        std::fs::create_dir_all(first.join("made/by/mkdir_p")).unwrap();
        std::fs::write(first.join("tests/test_core.py"), "broken").unwrap();
        let util_inode = std::fs::metadata(first.join("pkg/util.py")).unwrap().ino();
        let core_pyc = fake_bytecode(&cache, &first.join("pkg/core.py"));
        let util_pyc = fake_bytecode(&cache, &first.join("pkg/util.py"));
        let test_pyc = fake_bytecode(&cache, &first.join("tests/test_core.py"));
        pool.release(&repo, 1);
        assert_eq!(pool.held(1), None);
        // Its branch can go once it is given back.
        git::delete_branch(&repo, "wip/1").unwrap();

        let second = pool.check_out(&repo, 2, "wip/2", b).unwrap();
        assert_eq!(second, first, "the slot is reused");
        for gone in ["junk.txt", "run.log", "out", "made"] {
            assert!(!second.join(gone).exists(), "{gone} is left");
        }
        assert_eq!(
            std::fs::read_to_string(second.join("tests/test_core.py")).unwrap(),
            "def test_x():\n    pass\n"
        );
        assert_eq!(
            std::fs::read_to_string(second.join("pkg/core.py")).unwrap(),
            "X = 3\n"
        );
        assert!(second.join("tests/test_new.py").is_file());
        let wt = Repository::open(&second).unwrap();
        assert_eq!(wt.head().unwrap().name().ok(), Some("refs/heads/wip/2"));
        assert_eq!(wt.head().unwrap().peel_to_commit().unwrap().id(), b);
        assert!(git::dirty_paths(&second).unwrap().is_empty());
        // An unchanged file is not written again, and its bytecode stays; changed files lose
        // theirs.
        assert_eq!(
            std::fs::metadata(second.join("pkg/util.py")).unwrap().ino(),
            util_inode
        );
        assert!(util_pyc.exists());
        assert!(!core_pyc.exists());
        assert!(!test_pyc.exists());

        // Two holders at once never share a slot.
        let third = pool.check_out(&repo, 3, "wip/3", a).unwrap();
        assert_ne!(third, second);
        assert_eq!(pool.check_out(&repo, 2, "wip/2", a).unwrap(), second);

        pool.remove_all(&repo);
        assert!(!second.exists() && !third.exists());
        assert!(repo.worktrees().unwrap().is_empty());
        assert!(!cache_dir(&cache, &second).exists());
    }

    #[test]
    fn a_slot_whose_git_link_was_rewritten_is_remade_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init(tmp.path().join("repo")).unwrap();
        let a = commit(&repo, &[("pkg/core.py", "X = 1\n")]);
        let other = Repository::init(tmp.path().join("other")).unwrap();
        let other_head = commit(&other, &[("mine.txt", "the user's own work\n")]);
        let pool = WorktreePool::new(tmp.path().join("worktrees"), "r", None, Preparer::none());
        let slot = pool.check_out(&repo, 1, "wip/1", a).unwrap();
        pool.release(&repo, 1);
        // A test pointed the slot at another checkout.
        std::fs::write(
            slot.join(".git"),
            format!("gitdir: {}\n", other.path().display()),
        )
        .unwrap();

        let again = pool.check_out(&repo, 2, "wip/2", a).unwrap();
        assert_eq!(again, slot);
        assert_eq!(
            git::head_of(&again),
            Some(a),
            "the slot is this repository's again"
        );
        assert_eq!(
            other.head().unwrap().peel_to_commit().unwrap().id(),
            other_head
        );
        assert!(other.find_reference("refs/heads/wip/2").is_err());
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("other/mine.txt")).unwrap(),
            "the user's own work\n"
        );
    }

    #[test]
    fn a_slot_left_on_a_branch_by_a_killed_session_does_not_block_that_branch() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init(tmp.path().join("repo")).unwrap();
        let a = commit(&repo, &[("pkg/core.py", "X = 1\n")]);
        let dir = tmp.path().join("worktrees");
        // The killed session: iteration 2 held the second slot.
        let killed = WorktreePool::new(dir.clone(), "r", None, Preparer::none());
        killed.check_out(&repo, 1, "wip/1", a).unwrap();
        let held = killed.check_out(&repo, 2, "wip/2", a).unwrap();
        drop(killed);

        // The resumed session hands the first slot to iteration 2 before anything else.
        let resumed = WorktreePool::new(dir, "r", None, Preparer::none());
        resumed.detach_leftovers(&repo);
        let slot = resumed.check_out(&repo, 2, "wip/2", a).unwrap();
        assert_ne!(slot, held);
        let wt = Repository::open(&slot).unwrap();
        assert_eq!(wt.head().unwrap().name().ok(), Some("refs/heads/wip/2"));
    }
}
