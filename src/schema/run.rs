//! The run and its iterations as state.json saves them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    Baseline, CallCost, Change, Coverage, Gathered, Origin, PriceInForce, RejectReason,
    RunSettings, ShardRun, Verdict,
};

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
    /// Of `tokens_in`, those read from the server's prompt cache, and those written to it.
    #[serde(default)]
    pub tokens_cached: u64,
    #[serde(default)]
    pub tokens_cache_write: u64,
    /// Dollars the priced calls cost, at the prices in force when each was made.
    #[serde(default)]
    pub cost_usd: f64,
    /// Answered calls with no price (an unknown model served elsewhere): `cost_usd` leaves
    /// them out, so the iteration's cost is unknown.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub calls_unpriced: u32,
    /// Each answered call's token classes and cost (`show N`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<CallCost>,
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
    /// What was fixed in the answers without the model (`added \`import pytest\``, `dropped
    /// test_x: a copy of the example test tests/test_a.py::test_y`), a repair answer's prefixed
    /// `repair N: `.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_fixes: Vec<String>,
    /// Expected values of failing asserts taken from what the code gave, one line each
    /// (`test_a line 7: expected \`3\` -> \`4\``): the review checks each is what the code
    /// should do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values_from_code: Vec<String>,
    /// What was left out of the first prompt to fit the budget (`--max-prompt-tokens`, halved
    /// after each refusal of the server).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompt_cuts: Vec<String>,
    /// The shard and number it had there, for an iteration `improve gather` brought in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// How the model's answers fared before pytest saw them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Answers whose imports were fixed locally while a repair round was left: a repair call
    /// each that the missing or wrong import would have cost.
    #[serde(default)]
    pub repairs_avoided: u32,
    /// Answers stopped while streaming because they could give no new test (any reason).
    #[serde(default)]
    pub stopped: u32,
    /// Those of them stopped as runaways (a block repeated, a test again under a new name, an
    /// enumeration), not only after their code block closed.
    #[serde(default)]
    pub runaways: u32,
    /// Answer tokens those stops saved, estimated: each runaway call's `max_tokens` less the
    /// tokens received when it was stopped (an upper bound; 0 for a stop after the code block).
    #[serde(default)]
    pub tokens_saved: u64,
    /// Each stopped call: which answer, why, and the tokens received and saved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stops: Vec<AnswerStop>,
    /// Iterations whose failing tests were dropped without a repair call because every repair
    /// the model was asked for in this run so far changed nothing.
    #[serde(default)]
    pub repairs_skipped: u32,
    /// Asserts of failing new tests whose expected literal became the value the code gave
    /// (never a test the model stood by through a repair; each is listed in the local fixes).
    #[serde(default)]
    pub values_adopted: u32,
}

/// One answer stopped while streaming.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerStop {
    /// 0: the first answer; k: repair round k.
    pub round: u32,
    /// `code_closed`, `repeated_block`, `repeated_test`, `enumeration` or `long_statement`.
    pub reason: String,
    pub tokens_received: u64,
    pub tokens_saved: u64,
}

/// Repairs asked for in a run, all of which changed nothing, after which none is asked any more:
/// a model that stands by its failing tests this often will not mend the next ones either, and
/// on a slow server each such call costs minutes.
pub const FUTILE_REPAIRS: u32 = 3;

impl RunState {
    /// Every repair of the run so far changed nothing, and there were `enough` of them
    /// ([`FUTILE_REPAIRS`], or fewer where each costs minutes).
    pub fn repairs_futile(&self, enough: u32) -> bool {
        let (asked, unchanged) = self.iterations.iter().fold((0, 0), |(a, u), it| {
            let rounds = it.verdict.as_ref().map_or(0, |v| v.repairs);
            (a + rounds, u + it.answers.unchanged_repairs)
        });
        asked >= enough.max(1) && unchanged == asked
    }
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
        self.repairs_avoided += other.repairs_avoided;
        self.stopped += other.stopped;
        self.runaways += other.runaways;
        self.tokens_saved += other.tokens_saved;
        self.repairs_skipped += other.repairs_skipped;
        self.values_adopted += other.values_adopted;
        self.stops.extend(other.stops.iter().cloned());
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
            tokens_cached: 0,
            tokens_cache_write: 0,
            cost_usd: 0.0,
            calls_unpriced: 0,
            calls: Vec::new(),
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
            local_fixes: Vec::new(),
            values_from_code: Vec::new(),
            prompt_cuts: Vec::new(),
            origin: None,
        }
    }

    pub fn is_finished(&self) -> bool {
        self.step == Step::Finished
    }

    /// The iteration's dollars; None when a call had no price, or the iteration was saved
    /// before calls were priced (tokens, but no calls on the books).
    pub fn cost(&self) -> Option<f64> {
        let unpriced_before = self.tokens_in > 0 && self.calls.is_empty();
        (self.calls_unpriced == 0 && !unpriced_before).then_some(self.cost_usd)
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
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
    /// Set when this run is one shard of a plan (`improve work`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardRun>,
    /// Set when this run was put together from a plan's shards (`improve gather`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gathered: Option<Gathered>,
    /// The price the latest invocation costed its calls at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<PriceInForce>,
    /// What the run had cost (priced calls) when the latest invocation started: `status`
    /// shows the difference as this invocation's.
    #[serde(default)]
    pub invocation_start_cost_usd: f64,
    /// What `--since` scopes the run to (None: the whole code under test).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
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
    /// Every iteration's dollars (priced calls), and the iterations whose cost is unknown.
    pub fn cost(&self) -> (f64, u32) {
        self.iterations.iter().fold((0.0, 0), |(c, u), i| {
            (c + i.cost_usd, u + u32::from(i.cost().is_none()))
        })
    }
    /// Prompt tokens read from the cache, over the run.
    pub fn tokens_cached(&self) -> u64 {
        self.iterations.iter().map(|i| i.tokens_cached).sum()
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

    /// The coverage measured at `commit`: the baseline's at the base commit, a kept
    /// iteration's at its commit, the latest otherwise.
    pub fn coverage_at(&self, commit: &str) -> Option<&Coverage> {
        if commit == self.base_commit {
            return self.baseline.as_ref().and_then(|b| b.coverage.as_ref());
        }
        self.kept()
            .find(|i| i.commit.as_deref() == Some(commit))
            .and_then(|i| i.verdict.as_ref().and_then(|v| v.coverage.as_ref()))
            .or_else(|| self.coverage_now())
    }

    /// Diff coverage of the change (`--since`) at the run's start, as the baseline measured it.
    pub fn diff_coverage_baseline(&self) -> Option<&super::DiffCoverage> {
        self.baseline.as_ref()?.coverage.as_ref()?.diff.as_ref()
    }

    /// Diff coverage of the change at the run branch's tip.
    pub fn diff_coverage_now(&self) -> Option<&super::DiffCoverage> {
        self.coverage_now()?.diff.as_ref()
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
