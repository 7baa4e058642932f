//! The persisted run: serde types of `state.json`, and its save (atomic, through
//! [`crate::fsutil`]), load, lock and archive. Every other module changes the run only through
//! these types and saves only through [`StateStore::save`], so "written atomically after every
//! step" holds in one place. Each reason an iteration was not kept is saved with its kind
//! ([`RejectReason`]), which is what the report groups by and the verify stages act on.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::artifacts::{RunFiles, StateFiles};
use crate::config::RunSettings;
pub use crate::coverage::Coverage;
use crate::fsutil::{self, LockError, RunLock, write_atomic};

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
    #[error(transparent)]
    Lock(#[from] LockError),
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

impl RunStatus {
    /// The word the state file, `status` and the report use.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Complete => "complete",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Add,
    Fix,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Add => "add",
            Kind::Fix => "fix",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Kept,
    Rejected,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Kept => "kept",
            Outcome::Rejected => "rejected",
            Outcome::Error => "error",
        }
    }
}

/// Why an iteration was not kept: what the report groups by and what the verify stages act
/// on. Saved beside the reason's text, which names the tests and files of the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The LLM gave no answer (an error outcome, not a rejection).
    LlmFailed,
    NoCodeBlock,
    UnclosedCodeBlock,
    NoTestFunction,
    InvalidPython,
    UnsafePath,
    CannotWrite,
    SideEffects,
    TimedOut,
    NothingCollected,
    DoesNotCollect,
    NewTestsFail,
    Flaky,
    AllSkipped,
    NoGain,
    RedundantNotRemoved,
    /// No new test noticed a mutant of the lines it covers.
    AssertsNothing,
    /// The passing cases belong to parametrized functions that also fail.
    OnlyCasesOfFailingFunctions,
    FixChangesOtherFiles,
    FixesNone,
    BreaksPassingTests,
    NewTestsFailInSuite,
    FixedTestsFailInSuite,
    ConflictsWithKept,
    FailsAfterReplay,
    /// Recorded by an improve that did not save kinds yet.
    Unclassified,
}

impl RejectReason {
    /// The reason's kind in words, as the report groups rejections.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::LlmFailed => "llm",
            RejectReason::NoCodeBlock => "the answer has no code block",
            RejectReason::UnclosedCodeBlock => "the answer's code block is not closed",
            RejectReason::NoTestFunction => "the answer's code block has no test function",
            RejectReason::InvalidPython => "invalid Python",
            RejectReason::UnsafePath => "unsafe path",
            RejectReason::CannotWrite => "cannot write",
            RejectReason::SideEffects => "side effects",
            RejectReason::TimedOut => "timed out",
            RejectReason::NothingCollected => "no tests collected from the proposal",
            RejectReason::DoesNotCollect => "does not collect",
            RejectReason::NewTestsFail => "new tests fail",
            RejectReason::Flaky => "flaky",
            RejectReason::AllSkipped => "no new test ran (all skipped)",
            RejectReason::NoGain => "no gain",
            RejectReason::RedundantNotRemoved => "redundant tests could not be removed",
            RejectReason::AssertsNothing => "asserts nothing",
            RejectReason::OnlyCasesOfFailingFunctions => {
                "new tests fail, and the passing ones are cases of the same functions"
            }
            RejectReason::FixChangesOtherFiles => "a fix may change only its test file",
            RejectReason::FixesNone => "fixes none of the failing tests",
            RejectReason::BreaksPassingTests => "breaks passing tests",
            RejectReason::NewTestsFailInSuite => "new tests fail in the whole suite",
            RejectReason::FixedTestsFailInSuite => "the fixed tests fail in the whole suite",
            RejectReason::ConflictsWithKept => "conflicts with what was kept meanwhile",
            RejectReason::FailsAfterReplay => "fails after replaying onto what was kept meanwhile",
            RejectReason::Unclassified => "unclassified (recorded by an older improve)",
        }
    }

    /// The whole suite turned tests red: new tests may be polluting the others.
    pub fn is_pollution(self) -> bool {
        matches!(
            self,
            RejectReason::BreaksPassingTests | RejectReason::NewTestsFailInSuite
        )
    }
}

/// A reason and its text (`2 of 5 new tests fail: test_a, test_b`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub text: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, text: impl Into<String>) -> Self {
        Rejection {
            reason,
            text: text.into(),
        }
    }
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

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Planned => "planned",
            Step::Asked => "asked",
            Step::Applied => "applied",
            Step::Verified => "verified",
            Step::Finished => "finished",
        }
    }
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
    /// Killing at least one mutant of the target on the lines they cover (all of `gain` when
    /// the check is off, or found no mutant to judge a test by).
    #[serde(default)]
    pub checks: u32,
    /// Not turning any other test red in the whole suite.
    pub clean: u32,
    /// In the kept commit (0 when the iteration was not kept).
    pub kept: u32,
}

impl Funnel {
    /// `proposed 9 -> collected 9 -> passing 8 -> ...`, for `show` and logs.
    pub fn line(&self) -> String {
        format!(
            "proposed {} -> collected {} -> passing {} -> stable {} -> coverage gain {} -> catches a mutant {} -> no pollution {} -> kept {}",
            self.proposed,
            self.collected,
            self.passing,
            self.stable,
            self.gain,
            self.checks,
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
    /// The kind of `reason` (runs saved before it was recorded have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject: Option<RejectReason>,
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
    /// What the mutation check made of the new tests (None: it did not run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutation: Option<crate::mutation::MutationCheck>,
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

impl Verdict {
    /// Rejects the iteration for `rejection` (a later stage may still set another).
    pub fn set_rejection(&mut self, rejection: Rejection) {
        self.keep = false;
        self.reason = Some(rejection.text);
        self.reject = Some(rejection.reason);
    }

    /// Clears the rejection: the suite passed, the iteration is to be kept.
    pub fn accept(&mut self) {
        self.keep = true;
        self.reason = None;
        self.reject = None;
    }

    /// Why it is rejected, when it is; a run saved before reasons had kinds has none.
    pub fn rejection(&self) -> Option<Rejection> {
        Some(Rejection::new(self.reject?, self.reason.clone()?))
    }
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
    /// The kind of `reason` (runs saved before it was recorded have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject: Option<RejectReason>,
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
    /// What the model's answers needed: salvage, cut repetitions, unchanged repairs.
    #[serde(default, skip_serializing_if = "AnswerNotes::is_empty")]
    pub answers: AnswerNotes,
    /// What was left out of the first prompt to fit the budget (`--max-prompt-tokens`, halved
    /// after each refusal of the server).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompt_cuts: Vec<String>,
}

/// How the model's answers fared before pytest saw them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerNotes {
    /// Answers cut off (at the token limit, or a code block never closed) whose complete tests
    /// were kept.
    #[serde(default)]
    pub salvaged: u32,
    /// The complete tests those answers held.
    #[serde(default)]
    pub salvaged_tests: u32,
    /// Answers in which the model repeated a block over and over (the repetition was cut).
    #[serde(default)]
    pub repeating: u32,
    /// Repair answers that changed none of the failing tests: the repair rounds ended there.
    #[serde(default)]
    pub unchanged_repairs: u32,
    /// Prompts the server refused as longer than its context (each retried at half the size).
    #[serde(default)]
    pub context_refusals: u32,
}

impl AnswerNotes {
    pub fn is_empty(&self) -> bool {
        *self == AnswerNotes::default()
    }

    pub fn add(&mut self, other: &AnswerNotes) {
        self.salvaged += other.salvaged;
        self.salvaged_tests += other.salvaged_tests;
        self.repeating += other.repeating;
        self.unchanged_repairs += other.unchanged_repairs;
        self.context_refusals += other.context_refusals;
    }
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
            reject: None,
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
            answers: AnswerNotes::default(),
            prompt_cuts: Vec::new(),
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
    /// The counts every summary of the run shows (`status`, the report).
    pub fn counts(&self) -> RunCounts {
        RunCounts {
            iterations_target: self.iterations_target,
            iterations_done: self.iterations_done(),
            kept: self.count(Outcome::Kept),
            rejected: self.count(Outcome::Rejected),
            errors: self.count(Outcome::Error),
            tests_baseline: self.baseline.as_ref().map(|b| b.tests),
            tests_now: self.tests_now(),
            tests_added: self.kept().map(|i| i.tests_added).sum(),
            tests_fixed: self.kept().map(|i| i.tests_fixed).sum(),
        }
    }

    pub fn coverage_now(&self) -> Option<&Coverage> {
        self.kept()
            .filter_map(|i| i.verdict.as_ref().and_then(|v| v.coverage.as_ref()))
            .last()
            .or(self.baseline.as_ref().and_then(|b| b.coverage.as_ref()))
    }
}

/// Iterations and tests of a run, as its summaries show them.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RunCounts {
    pub iterations_target: u32,
    pub iterations_done: u32,
    pub kept: u32,
    pub rejected: u32,
    pub errors: u32,
    /// Tests pytest collected at the start, and in the last suite run of a kept iteration.
    pub tests_baseline: Option<u32>,
    pub tests_now: Option<u32>,
    pub tests_added: u32,
    pub tests_fixed: u32,
}

/// The state dir on disk (its files are named in [`crate::artifacts`]).
#[derive(Debug, Clone)]
pub struct StateStore {
    files: StateFiles,
}

impl StateStore {
    pub fn new(dir: PathBuf) -> Self {
        StateStore {
            files: StateFiles::new(dir),
        }
    }

    pub fn dir(&self) -> &Path {
        self.files.dir()
    }

    pub fn files(&self) -> &StateFiles {
        &self.files
    }

    pub fn state_path(&self) -> PathBuf {
        self.files.state()
    }

    /// The files of run `run_id`.
    pub fn run(&self, run_id: &str) -> RunFiles {
        self.files.run(run_id)
    }

    pub fn ensure_dir(&self) -> Result<(), StateError> {
        std::fs::create_dir_all(self.dir()).map_err(|source| StateError::CreateDir {
            path: self.dir().display().to_string(),
            source,
        })
    }

    /// Takes the run lock, or says which process holds it.
    pub fn lock(&self) -> Result<RunLock, StateError> {
        self.ensure_dir()?;
        Ok(fsutil::lock_file(&self.files.lock(), self.dir())?)
    }

    /// Whether a run holds the lock, asked without taking it (so `status` never disturbs a run
    /// that is starting).
    pub fn is_locked(&self) -> bool {
        fsutil::is_locked(&self.files.lock())
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
        let stamp = stamp.to_string();
        let to = match run_id {
            Some(id) => self.files.run(id).archived_state(&stamp),
            None => self.files.archive(&stamp),
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
                test_cmd: vec!["python3".into(), "-m".into(), "pytest".into()],
                packages: vec!["pkg".into()],
                focus: vec!["edge cases".into()],
                test_timeout: Duration::from_secs(60),
                llm_timeout: Duration::from_secs(60),
                // Every other setting as declared.
                ..RunSettings::default()
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
    fn archive_moves_and_keeps_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path().to_path_buf());
        store.save(&mut sample_state()).unwrap();
        let to = store.archive_current(Some("r1")).unwrap().unwrap();
        assert!(to.is_file());
        assert!(!store.state_path().exists());
    }
}
