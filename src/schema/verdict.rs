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
    /// The whole suite's coverage is lower with the new tests (one replaced the trace
    /// function, stopped coverage, ...).
    StopsCoverage,
    /// The passing cases belong to parametrized functions that also fail.
    OnlyCasesOfFailingFunctions,
    FixChangesOtherFiles,
    FixesNone,
    BreaksPassingTests,
    NewTestsFailInSuite,
    FixedTestsFailInSuite,
    ConflictsWithKept,
    FailsAfterReplay,
    /// Kept on its shard, but the suite of every shard's commits together fails with it
    /// (`improve gather`).
    BreaksCombinedSuite,
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
            RejectReason::StopsCoverage => "stops coverage",
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
            RejectReason::BreaksCombinedSuite => "breaks the suite combined with other shards",
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

/// A stage of verification, in the order the stages run (a proposal's tests enter at
/// `Proposed`). Saved in each verdict's funnel; its serde name is the key `log --json` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageId {
    /// Tests in the answer: pytest's count when the file collects, else the parser's count.
    Proposed,
    /// Collected by pytest.
    Collected,
    /// Passing on the first run (after repair rounds, when there were any).
    Passing,
    /// Passing on every rerun too.
    Stable,
    /// Adding line or branch coverage to the package (all of `stable` when the check is off).
    Gain,
    /// Killing at least one mutant of the target on the lines they cover (all of `gain` when
    /// the check is off, or found no mutant to judge a test by).
    Checks,
    /// Not turning any other test red in the whole suite.
    Clean,
    /// Not lowering the whole suite's measured coverage (a test that replaces the trace
    /// function or stops coverage does).
    Covered,
    /// In the kept commit (0 when the iteration was not kept).
    Kept,
}

/// How the tests a stage drops are named: in `log --json` and the report's context, in
/// `show`, and in the report's sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropNames {
    pub key: &'static str,
    pub word: &'static str,
    pub phrase: &'static str,
}

impl StageId {
    pub const ALL: [StageId; 9] = [
        StageId::Proposed,
        StageId::Collected,
        StageId::Passing,
        StageId::Stable,
        StageId::Gain,
        StageId::Checks,
        StageId::Clean,
        StageId::Covered,
        StageId::Kept,
    ];

    /// The funnel's key in `log --json` and the report's context.
    pub fn key(self) -> &'static str {
        match self {
            StageId::Proposed => "proposed",
            StageId::Collected => "collected",
            StageId::Passing => "passing",
            StageId::Stable => "stable",
            StageId::Gain => "gain",
            StageId::Checks => "checks",
            StageId::Clean => "clean",
            StageId::Covered => "covered",
            StageId::Kept => "kept",
        }
    }

    /// What surviving the stage means, as `show` and the report head their columns.
    pub fn label(self) -> &'static str {
        match self {
            StageId::Gain => "coverage gain",
            StageId::Checks => "catches a mutant",
            StageId::Clean => "no pollution",
            StageId::Covered => "keeps coverage",
            other => other.key(),
        }
    }

    /// The names of the tests this stage drops; None for a stage that drops none.
    pub fn drops(self) -> Option<DropNames> {
        let (key, word, phrase) = match self {
            StageId::Passing => ("failing", "failing", "failing"),
            StageId::Stable => ("flaky", "flaky", "flaky"),
            StageId::Gain => ("redundant", "redundant", "adding no coverage"),
            StageId::Checks => ("asserts_nothing", "asserts nothing", "asserting nothing"),
            StageId::Clean => ("polluting", "polluting", "polluting other tests"),
            StageId::Covered => ("stops_coverage", "stops coverage", "stopping coverage"),
            _ => return None,
        };
        Some(DropNames { key, word, phrase })
    }
}

/// What one stage left of a proposal's tests, and the tests it took out of the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageCount {
    pub stage: StageId,
    /// Counts are pytest's test cases (a parametrized test counts once per case).
    pub survivors: u32,
    /// Test ids removed from the proposal at this stage (the file amended without them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<String>,
}

/// How many of a proposal's tests survived each stage of verification, in the order the
/// stages run. A stage that did not run (the proposal was rejected before it) has no entry
/// and counts 0.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Funnel {
    stages: Vec<StageCount>,
}

impl Funnel {
    /// Sets how many tests survived `stage`.
    pub fn record(&mut self, stage: StageId, survivors: u32) {
        self.entry(stage).survivors = survivors;
    }

    /// Records that `stage` took `ids` out of the proposal.
    pub fn drop(&mut self, stage: StageId, ids: &[String]) {
        self.entry(stage).dropped.extend(ids.iter().cloned());
    }

    fn entry(&mut self, stage: StageId) -> &mut StageCount {
        let at = match self.stages.binary_search_by_key(&stage, |s| s.stage) {
            Ok(at) => at,
            Err(at) => {
                let count = StageCount {
                    stage,
                    survivors: 0,
                    dropped: Vec::new(),
                };
                self.stages.insert(at, count);
                at
            }
        };
        &mut self.stages[at]
    }

    pub fn survivors(&self, stage: StageId) -> u32 {
        self.get(stage).map_or(0, |s| s.survivors)
    }

    pub fn dropped(&self, stage: StageId) -> &[String] {
        self.get(stage).map_or(&[], |s| s.dropped.as_slice())
    }

    fn get(&self, stage: StageId) -> Option<&StageCount> {
        self.stages.iter().find(|s| s.stage == stage)
    }

    /// Every stage with its survivors (0 for one that did not run), in order.
    pub fn counts(&self) -> impl Iterator<Item = (StageId, u32)> + '_ {
        StageId::ALL.into_iter().map(|s| (s, self.survivors(s)))
    }

    /// Every stage's survivors under its key (`{"proposed": 9, "collected": 9, ...}`): what
    /// `log --json`, `show --json` and the report's context show.
    pub fn by_key(&self) -> std::collections::BTreeMap<&'static str, u32> {
        self.counts().map(|(s, n)| (s.key(), n)).collect()
    }

    /// The tests each stage that drops tests dropped, with what they are called, in order.
    pub fn drops(&self) -> impl Iterator<Item = (DropNames, &[String])> + '_ {
        StageId::ALL
            .into_iter()
            .filter_map(|s| Some((s.drops()?, self.dropped(s))))
    }

    /// Adds `other`'s counts and drops to this one (the report's sums).
    pub fn add(&mut self, other: &Funnel) {
        for s in &other.stages {
            let entry = self.entry(s.stage);
            entry.survivors += s.survivors;
            entry.dropped.extend(s.dropped.iter().cloned());
        }
    }

    /// `proposed 9 -> collected 9 -> passing 8 -> ...`, for `show` and logs.
    pub fn line(&self) -> String {
        self.counts()
            .map(|(s, n)| format!("{} {n}", s.label()))
            .collect::<Vec<_>>()
            .join(" -> ")
    }
}

/// What verification decided. Saved as the fields `keep`, `reason` and `reject` that older
/// runs have, so a verdict saved by any improve loads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "DecisionFields", into = "DecisionFields")]
pub enum Decision {
    /// Verification is under way (a saved verdict always has one of the others).
    #[default]
    Pending,
    Keep,
    Reject(Rejection),
}

#[derive(Serialize, Deserialize)]
struct DecisionFields {
    keep: bool,
    reason: Option<String>,
    /// The kind of `reason` (runs saved before it was recorded have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reject: Option<RejectReason>,
}

impl From<DecisionFields> for Decision {
    fn from(f: DecisionFields) -> Self {
        match (f.keep, f.reason, f.reject) {
            (true, _, _) => Decision::Keep,
            (false, Some(text), reason) => Decision::Reject(Rejection {
                reason: reason.unwrap_or(RejectReason::Unclassified),
                text,
            }),
            (false, None, Some(reason)) => Decision::Reject(Rejection::new(reason, "rejected")),
            (false, None, None) => Decision::Pending,
        }
    }
}

impl From<Decision> for DecisionFields {
    fn from(d: Decision) -> Self {
        match d {
            Decision::Pending => DecisionFields {
                keep: false,
                reason: None,
                reject: None,
            },
            Decision::Keep => DecisionFields {
                keep: true,
                reason: None,
                reject: None,
            },
            Decision::Reject(r) => DecisionFields {
                keep: false,
                reason: Some(r.text),
                reject: Some(r.reason),
            },
        }
    }
}

/// What verification found; kept in the state so that a resume after Verify does not rerun pytest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    #[serde(flatten)]
    pub decision: Decision,
    /// Test ids of the new file that passed.
    pub new_tests: Vec<String>,
    pub new_failed: Vec<String>,
    /// Overall coverage at the tip this iteration was kept on (percent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage_before: Option<f64>,
    /// In a `--since` run, diff coverage at that tip (percent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_coverage_before: Option<f64>,
    /// Rounds in which failing tests went back to the LLM.
    #[serde(default)]
    pub repairs: u32,
    /// Tests that kept failing on an assertion about the source after repair: possible bugs
    /// for a human to look at. Never kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
    /// Tests after which coverage no longer measured as before, in the whole suite's last run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stoppers: Vec<Stopper>,
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
        self.decision = Decision::Reject(rejection);
    }

    /// Clears the rejection: the suite passed, the iteration is to be kept.
    pub fn accept(&mut self) {
        self.decision = Decision::Keep;
    }

    pub fn is_kept(&self) -> bool {
        self.decision == Decision::Keep
    }

    /// Why it is rejected, when it is.
    pub fn rejection(&self) -> Option<&Rejection> {
        match &self.decision {
            Decision::Reject(r) => Some(r),
            _ => None,
        }
    }
}

/// A test after which coverage no longer measured as before, and what it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stopper {
    pub test: String,
    /// `replaced the trace function`, `stopped coverage`, `changed the working directory`, ...
    pub culprit: String,
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
