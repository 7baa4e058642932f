//! Verification's record: the verdict, its funnel, and why an iteration was not kept.

use serde::{Deserialize, Serialize};

use super::{Coverage, MutationCheck};

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
    pub mutation: Option<MutationCheck>,
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
