//! The persisted run: serde types of `state.json`, its atomic save, the lock that keeps two runs
//! off one state dir, and archiving. Every other module changes the run only through these types
//! and saves only through [`StateStore::save`], so "written atomically after every step" holds in
//! one place.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::RunSettings;

/// Bumped whenever a field changes meaning. A newer file is refused, never rewritten.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create the state dir {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the state file {path} cannot be read ({detail}); it was left as it is: move it away, or \
         run with --fresh to archive it and start a new run"
    )]
    Unreadable { path: String, detail: String },
    #[error(
        "the state file {path} was written by a newer improve (schema {found}, this one knows \
         {SCHEMA_VERSION}): upgrade improve, or run with --fresh to archive it and start over"
    )]
    NewerSchema { path: String, found: u32 },
    #[error("cannot save the run state to {path}: {source} (is the disk full?)")]
    Save {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "another improve run (pid {pid}) is using {dir}: wait for it to finish or stop it first"
    )]
    Locked { dir: String, pid: String },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot archive the old run state to {path}: {source}")]
    Archive {
        path: String,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Interrupted,
    Complete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Add,
    Fix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Kept,
    Rejected,
    Error,
}

/// The last durable step of an iteration. Resume continues from the step after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// Target, focus and kind are chosen.
    Planned,
    /// The LLM answer is saved as an artifact.
    Asked,
    /// The proposal is committed on the iteration branch.
    Applied,
    /// pytest has judged it; `verdict` says keep or reject.
    Verified,
    /// Kept on the run branch or rejected; nothing left to do.
    Finished,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    /// Percent of statements and branches covered, as coverage.py reports it.
    pub percent: f64,
    /// Per module (path relative to the repo), percent covered.
    pub modules: BTreeMap<String, f64>,
    /// Per module, statements never run plus branches never taken: what target choice weighs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub missing: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Tests pytest collected and ran on the base commit.
    pub tests: u32,
    pub passed: Vec<String>,
    pub failed: Vec<String>,
    pub skipped: u32,
    pub summary: String,
    pub coverage: Option<Coverage>,
    pub seconds: f64,
    /// Files the project's own suite changes in its tree when it runs: not held against a
    /// proposal.
    #[serde(default)]
    pub side_effects: Vec<String>,
    /// Where the tests live, as pytest's configuration and collection said at the base commit.
    #[serde(default)]
    pub layout: crate::layout::TestLayout,
    /// Test files that do not import at the base commit because the project itself or a
    /// dependency does not: no fix iteration can mend those, so none is tried.
    #[serde(default)]
    pub unfixable: Vec<crate::layout::Unfixable>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Seconds {
    pub llm: f64,
    pub tests: f64,
    /// In short Python processes that parse a test file (syntax check and tidying, pruning).
    #[serde(default)]
    pub helpers: f64,
    /// Waiting for another iteration to finish keeping (`--jobs` above 1).
    #[serde(default)]
    pub queued: f64,
    pub total: f64,
}

impl Seconds {
    /// improve's own work: the total less the LLM, pytest, the Python helpers and the queue.
    pub fn own(&self) -> f64 {
        (self.total - self.llm - self.tests - self.helpers - self.queued).max(0.0)
    }
}

/// How many of a proposal's tests survived each stage of verification, in the order the stages
/// run. Counts are pytest's test cases (a parametrized test counts once per case).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Funnel {
    /// Tests in the answer: pytest's count when the file collects, else the parser's count of
    /// test functions.
    pub proposed: u32,
    /// Collected by pytest.
    pub collected: u32,
    /// Passing on the first run (after repair rounds, when there were any).
    pub passing: u32,
    /// Passing on every rerun too.
    pub stable: u32,
    /// Adding line or branch coverage to the package (all of `stable` when the check is off).
    pub gain: u32,
    /// Not turning any other test red in the whole suite.
    pub clean: u32,
    /// In the kept commit (0 when the iteration was not kept).
    pub kept: u32,
}

impl Funnel {
    /// `proposed 9 -> collected 9 -> passing 8 -> ...`, for `show` and logs.
    pub fn line(&self) -> String {
        format!(
            "proposed {} -> collected {} -> passing {} -> stable {} -> coverage gain {} -> no pollution {} -> kept {}",
            self.proposed,
            self.collected,
            self.passing,
            self.stable,
            self.gain,
            self.clean,
            self.kept
        )
    }
}

/// What verification found; kept in the state so that a resume after Verify does not rerun pytest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub keep: bool,
    pub reason: Option<String>,
    /// Test ids of the new file that passed.
    pub new_tests: Vec<String>,
    pub new_failed: Vec<String>,
    /// Failing tests removed from the proposal before the rest were kept.
    #[serde(default)]
    pub pruned: Vec<String>,
    /// Tests that failed on a rerun and were dropped as flaky.
    #[serde(default)]
    pub flaky: Vec<String>,
    /// Passing tests dropped because they add no coverage to the package.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redundant: Vec<String>,
    /// New tests that turned other tests red in the whole suite, found by bisection and dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub polluters: Vec<String>,
    /// Overall coverage at the tip this iteration was kept on (percent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage_before: Option<f64>,
    /// Rounds in which failing tests went back to the LLM.
    #[serde(default)]
    pub repairs: u32,
    /// Tests that kept failing on an assertion about the source after repair: possible bugs
    /// for a human to look at. Never kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
    /// New tests that passed alone but failed in the whole suite's last run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_in_suite: Vec<String>,
    #[serde(default)]
    pub funnel: Funnel,
    /// Previously passing tests that fail with the proposal in the suite.
    pub regressions: Vec<String>,
    /// Tests collected in the whole suite with the proposal, and how many passed.
    pub suite_tests: u32,
    pub suite_passed: u32,
    pub pytest_summary: String,
    pub coverage: Option<Coverage>,
    /// Tests that failed at the run's start and pass with this iteration (fix iterations).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fixed: Vec<String>,
    /// Set when the run branch moved while this iteration was verified and its commit was
    /// replayed onto the new tip (and the suite run again there) before keeping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_onto: Option<String>,
    /// The artifact label of the suite run the figures above come from (`pytest-suite` when
    /// empty): its coverage report is what the next prompt's missing lines are read from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub suite_label: String,
}

/// A test the LLM stood by while it failed on an assertion about the source's behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The test's id as pytest's JUnit report names it.
    pub test: String,
    /// The failure pytest reported (its first line).
    pub message: String,
    /// The test's source, as last proposed.
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Iteration {
    pub n: u32,
    pub target: String,
    pub focus: String,
    pub kind: Kind,
    pub step: Step,
    pub outcome: Option<Outcome>,
    pub reason: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub llm_calls: u32,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// Who answered (`openai gpt-4o-mini`): a resumed run may have switched.
    #[serde(default)]
    pub llm: Option<String>,
    /// The test file the proposal writes, relative to the repo.
    pub test_file: Option<String>,
    /// The commit on the iteration's own branch (before keeping).
    pub iteration_commit: Option<String>,
    /// The commit on the run branch; set only when kept.
    pub commit: Option<String>,
    pub files: Vec<String>,
    pub tests_added: u32,
    pub tests_fixed: u32,
    /// Test functions in the proposal, by the parser's count (the funnel's start when pytest
    /// cannot collect the file).
    #[serde(default)]
    pub proposed: u32,
    pub verdict: Option<Verdict>,
    pub seconds: Seconds,
    /// The order in which kept iterations landed on the run branch: with `--jobs` above 1 it
    /// need not be the order of their numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_seq: Option<u32>,
    /// When each step ended (`asked`, `applied`, `verified`, `finished`), in this iteration's
    /// own time line: with `--jobs` above 1, iterations overlap.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<StepTime>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepTime {
    pub step: Step,
    pub at: DateTime<Utc>,
}

impl Iteration {
    pub fn new(n: u32, target: String, focus: String, kind: Kind) -> Self {
        Iteration {
            n,
            target,
            focus,
            kind,
            step: Step::Planned,
            outcome: None,
            reason: None,
            started_at: Utc::now(),
            finished_at: None,
            llm_calls: 0,
            tokens_in: 0,
            tokens_out: 0,
            llm: None,
            test_file: None,
            iteration_commit: None,
            commit: None,
            files: Vec::new(),
            tests_added: 0,
            tests_fixed: 0,
            proposed: 0,
            verdict: None,
            seconds: Seconds::default(),
            keep_seq: None,
            timeline: Vec::new(),
        }
    }

    pub fn is_finished(&self) -> bool {
        self.step == Step::Finished
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub schema_version: u32,
    pub run_id: String,
    pub run_branch: String,
    pub base_commit: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub status: RunStatus,
    /// Why the run last stopped early (limit, LLM failures, signal); None when complete.
    pub stop_reason: Option<String>,
    pub iterations_target: u32,
    pub settings: RunSettings,
    pub baseline: Option<Baseline>,
    pub iterations: Vec<Iteration>,
    /// Wall time spent running, summed over every session of this run.
    pub elapsed_s: f64,
    /// Iterations in a row that ended on an LLM failure (the circuit breaker's count).
    pub consecutive_llm_failures: u32,
}

impl RunState {
    pub fn finished(&self) -> impl Iterator<Item = &Iteration> {
        self.iterations.iter().filter(|i| i.is_finished())
    }
    pub fn iterations_done(&self) -> u32 {
        self.finished().count() as u32
    }
    pub fn count(&self, outcome: Outcome) -> u32 {
        self.finished()
            .filter(|i| i.outcome == Some(outcome))
            .count() as u32
    }
    pub fn tokens(&self) -> (u64, u64) {
        self.iterations
            .iter()
            .fold((0, 0), |(a, b), i| (a + i.tokens_in, b + i.tokens_out))
    }
    /// Kept iterations in the order they landed on the run branch.
    pub fn kept(&self) -> impl Iterator<Item = &Iteration> {
        let mut kept: Vec<&Iteration> = self
            .finished()
            .filter(|i| i.outcome == Some(Outcome::Kept))
            .collect();
        kept.sort_by_key(|i| i.keep_seq.unwrap_or(i.n));
        kept.into_iter()
    }
    /// The number the next kept iteration lands as.
    pub fn next_keep_seq(&self) -> u32 {
        self.kept()
            .map(|i| i.keep_seq.unwrap_or(i.n))
            .max()
            .unwrap_or(0)
            + 1
    }
    /// Tests known to pass at the run branch's tip: the baseline's passing tests plus every
    /// kept iteration's new tests. Keeping compares against this set.
    pub fn passing_at_tip(&self) -> Vec<String> {
        self.passing_at(None)
    }
    /// Tests known to pass at `commit` (the base or a kept commit; None or an unknown commit
    /// mean the tip): what an iteration started from `commit` is verified against.
    pub fn passing_at(&self, commit: Option<&str>) -> Vec<String> {
        let mut ids: Vec<String> = self
            .baseline
            .as_ref()
            .map(|b| b.passed.clone())
            .unwrap_or_default();
        if commit == Some(self.base_commit.as_str()) {
            return ids;
        }
        for it in self.kept() {
            if let Some(v) = &it.verdict {
                ids.extend(v.new_tests.iter().cloned());
                ids.extend(v.fixed.iter().cloned());
            }
            if commit.is_some() && it.commit.as_deref() == commit {
                break;
            }
        }
        ids
    }
    /// Tests that failed at the start and a kept fix iteration made pass.
    pub fn fixed_tests(&self) -> Vec<&String> {
        self.kept()
            .filter_map(|i| i.verdict.as_ref())
            .flat_map(|v| v.fixed.iter())
            .collect()
    }
    /// Where iteration `n` sits in `iterations`.
    pub fn index_of(&self, n: u32) -> Option<usize> {
        self.iterations.iter().position(|i| i.n == n)
    }
    /// The last measured test count: the suite run of the latest kept iteration, else the baseline.
    pub fn tests_now(&self) -> Option<u32> {
        self.kept()
            .filter_map(|i| i.verdict.as_ref().map(|v| v.suite_tests))
            .last()
            .or(self.baseline.as_ref().map(|b| b.tests))
    }
    pub fn coverage_now(&self) -> Option<&Coverage> {
        self.kept()
            .filter_map(|i| i.verdict.as_ref().and_then(|v| v.coverage.as_ref()))
            .last()
            .or(self.baseline.as_ref().and_then(|b| b.coverage.as_ref()))
    }
}

/// The state dir on disk: `state.json`, `lock`, `runs/<run-id>/…` artifacts, `worktrees/`.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

/// Holds the run lock until dropped. The kernel releases a `flock` when its process dies, even
/// under `kill -9`, so a lock left by a dead run is taken over without any guesswork about pids.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl StateStore {
    pub fn new(dir: PathBuf) -> Self {
        StateStore { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    pub fn run_dir(&self, run_id: &str) -> PathBuf {
        self.dir.join("runs").join(run_id)
    }

    pub fn iteration_dir(&self, run_id: &str, n: u32) -> PathBuf {
        self.run_dir(run_id)
            .join("iterations")
            .join(format!("{n:04}"))
    }

    pub fn worktrees_dir(&self) -> PathBuf {
        self.dir.join("worktrees")
    }

    pub fn ensure_dir(&self) -> Result<(), StateError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| StateError::CreateDir {
            path: self.dir.display().to_string(),
            source,
        })
    }

    /// Takes the run lock, or says which process holds it.
    pub fn lock(&self) -> Result<RunLock, StateError> {
        self.ensure_dir()?;
        lock_file(&self.dir.join("lock"), &self.dir)
    }

    /// Whether a run holds the lock, asked without taking it (so `status` never disturbs a run
    /// that is starting).
    pub fn is_locked(&self) -> bool {
        let Ok(file) = File::open(self.dir.join("lock")) else {
            return false;
        };
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
        rc != 0
    }

    /// Loads the run state; `Ok(None)` when there is none yet. A file that does not parse is
    /// reported and left where it is.
    pub fn load(&self) -> Result<Option<RunState>, StateError> {
        let path = self.state_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StateError::Unreadable {
                    path: path.display().to_string(),
                    detail: e.to_string(),
                });
            }
        };
        let unreadable = |detail: String| StateError::Unreadable {
            path: path.display().to_string(),
            detail,
        };
        // Check the version before the shape, so a newer file gets the helpful message.
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
        let version = value
            .get("schema_version")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| unreadable("no schema_version".into()))?;
        if version > u64::from(SCHEMA_VERSION) {
            return Err(StateError::NewerSchema {
                path: path.display().to_string(),
                found: u32::try_from(version).unwrap_or(u32::MAX),
            });
        }
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| unreadable(e.to_string()))
    }

    /// Writes state.json atomically: temp file in the same folder, write, fsync, rename, fsync the
    /// folder. A crash at any instant leaves the previous or the next version.
    pub fn save(&self, state: &mut RunState) -> Result<(), StateError> {
        state.updated_at = Utc::now();
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| StateError::Save {
            path: self.state_path().display().to_string(),
            source: std::io::Error::other(e),
        })?;
        write_atomic(&self.state_path(), &bytes).map_err(|source| StateError::Save {
            path: self.state_path().display().to_string(),
            source,
        })
    }

    /// Moves the current state.json (readable or not) into the archive; nothing is deleted.
    pub fn archive_current(&self, run_id: Option<&str>) -> Result<Option<PathBuf>, StateError> {
        let from = self.state_path();
        if !from.exists() {
            return Ok(None);
        }
        let stamp = Utc::now().format("%Y%m%d-%H%M%S");
        let to = match run_id {
            Some(id) => self
                .run_dir(id)
                .join(format!("state-archived-{stamp}.json")),
            None => self.dir.join("archive").join(format!("state-{stamp}.json")),
        };
        let archive_err = |source| StateError::Archive {
            path: to.display().to_string(),
            source,
        };
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(archive_err)?;
        }
        std::fs::rename(&from, &to).map_err(archive_err)?;
        Ok(Some(to))
    }
}

/// Takes an exclusive `flock` on `path`, writing our pid into it for the message another run
/// shows. A lock held a moment by a `status` probe is waited out (up to a second).
pub fn lock_file(path: &Path, what: &Path) -> Result<RunLock, StateError> {
    let lock_err = |source| StateError::Lock {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(lock_err)?;
    let mut tries = 0;
    loop {
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(lock_err(err));
        }
        tries += 1;
        if tries >= 10 {
            let pid = std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            return Err(StateError::Locked {
                dir: what.display().to_string(),
                pid: if pid.is_empty() {
                    "unknown".into()
                } else {
                    pid
                },
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    file.set_len(0).map_err(lock_err)?;
    writeln!(file, "{}", std::process::id()).map_err(lock_err)?;
    Ok(RunLock { _file: file })
}

/// The one helper that writes files that must never be torn: state, artifacts the resume
/// relies on, recordings.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // A bare file name has an empty parent: that is the current folder.
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    // The temp file is created 0600; keep the mode of the file it replaces (the user's
    // .git/info/exclude, say), and make new files readable like any other.
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions())
        .unwrap_or_else(|_| std::os::unix::fs::PermissionsExt::from_mode(0o644));
    tmp.as_file().set_permissions(mode)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::llm::Provider;
    use std::time::Duration;

    pub(crate) fn sample_state() -> RunState {
        RunState {
            schema_version: SCHEMA_VERSION,
            run_id: "20261124-101500-ab12".into(),
            run_branch: "improve/20261124-101500-ab12".into(),
            base_commit: "0".repeat(40),
            created_at: Utc::now(),
            updated_at: Utc::now(),
            status: RunStatus::Running,
            stop_reason: None,
            iterations_target: 3,
            settings: RunSettings {
                provider: Provider::OpenAi,
                llm_url: "http://127.0.0.1:1/v1".into(),
                model: "m".into(),
                replay: None,
                record: None,
                test_cmd: vec!["python3".into(), "-m".into(), "pytest".into()],
                packages: vec!["pkg".into()],
                tests_dir: None,
                setup_cmd: None,
                focus: vec!["edge cases".into()],
                jobs: 1,
                test_timeout: Duration::from_secs(60),
                llm_timeout: Duration::from_secs(60),
                max_llm_failures: 5,
                max_tokens: None,
                sandbox: false,
                reruns: 5,
                require_coverage_gain: true,
                max_repairs: 2,
                pass_env: Vec::new(),
            },
            baseline: None,
            iterations: vec![Iteration::new(
                1,
                "pkg/a.py".into(),
                "edge cases".into(),
                Kind::Add,
            )],
            elapsed_s: 0.0,
            consecutive_llm_failures: 0,
        }
    }

    #[test]
    fn save_then_load_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path().to_path_buf());
        let state = sample_state();
        store.save(&mut state.clone()).unwrap();
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(loaded.run_id, state.run_id);
        assert_eq!(loaded.iterations, state.iterations);
        assert_eq!(loaded.settings, state.settings);
    }

    #[test]
    fn truncated_file_is_reported_and_left_in_place() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path().to_path_buf());
        std::fs::write(store.state_path(), "{\"schema_version\": 1, \"run_").unwrap();
        let err = store.load().unwrap_err();
        assert!(matches!(err, StateError::Unreadable { .. }), "{err}");
        assert!(err.to_string().contains("--fresh"));
        assert_eq!(
            std::fs::read_to_string(store.state_path()).unwrap(),
            "{\"schema_version\": 1, \"run_"
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path().to_path_buf());
        std::fs::write(store.state_path(), "{\"schema_version\": 99}").unwrap();
        assert!(matches!(
            store.load().unwrap_err(),
            StateError::NewerSchema { found: 99, .. }
        ));
    }

    #[test]
    fn second_lock_is_refused_with_the_holder_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path().to_path_buf());
        let first = store.lock().unwrap();
        let err = store.lock().unwrap_err();
        assert!(
            err.to_string().contains(&std::process::id().to_string()),
            "{err}"
        );
        drop(first);
        store.lock().unwrap();
    }

    #[test]
    fn atomic_writes_keep_the_mode_of_the_file_they_replace() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        write_atomic(&path, b"a").unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&path, b"b").unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"b");
    }

    #[test]
    fn archive_moves_and_keeps_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path().to_path_buf());
        store.save(&mut sample_state()).unwrap();
        let to = store.archive_current(Some("r1")).unwrap().unwrap();
        assert!(to.is_file());
        assert!(!store.state_path().exists());
    }
}
