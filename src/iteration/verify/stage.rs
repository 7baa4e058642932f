//! A verification stage is a value: its id (which names it in the funnel, `show`, `log --json`
//! and the report), whether it applies to this iteration, and a run that says how many tests
//! go on, which leave the file, or why the iteration stops. The add and fix pipelines are
//! ordered lists of stages; [`run_stages`] runs one and records what each stage left and
//! dropped, so adding a stage is a new run function, one line in a list, its reject reasons and
//! its setting.

use std::path::PathBuf;

use futures_util::future::LocalBoxFuture;

use super::judge::{self, Tally};
use super::repair::Repaired;
use crate::config::RunSettings;
use crate::iteration::context::{StepCx, StepError};
use crate::state::{Kind, Rejection, StageId, Verdict};
use crate::testid::{TestId, prune_names};

/// What a stage decided.
pub enum StageEnd {
    /// `survivors` tests go on; none leaves the file here.
    Pass(u32),
    /// `ids` leave the file (whole functions, so every case of a parametrized one);
    /// `survivors` go on.
    Drop { survivors: u32, ids: Vec<String> },
    /// The iteration stops here, with `survivors` counted for this stage, and `dropped` the
    /// tests it stopped for (counted as dropped with the proposal).
    Reject {
        survivors: u32,
        dropped: Vec<String>,
        why: Rejection,
    },
}

pub type StageResult = Result<StageEnd, StepError>;
type Run = for<'a, 'b> fn(&'a mut StepCx<'b>, &'a mut Pipeline) -> LocalBoxFuture<'a, StageResult>;

pub struct Stage {
    pub id: StageId,
    /// Whether the stage judges this iteration; one that does not lets every test through.
    pub applies: fn(Kind, &RunSettings) -> bool,
    /// Whether the stage runs tests from the file, so tests dropped before it must be out of
    /// the file first.
    pub reads_file: bool,
    pub run: Run,
}

/// Makes a [`Run`] of an `async fn(&mut StepCx, &mut Pipeline) -> StageResult`.
macro_rules! stage_run {
    ($f:path) => {{
        fn run<'a, 'b>(
            cx: &'a mut StepCx<'b>,
            p: &'a mut Pipeline,
        ) -> futures_util::future::LocalBoxFuture<'a, StageResult> {
            Box::pin($f(cx, p))
        }
        run
    }};
}
pub(crate) use stage_run;

pub fn always(_: Kind, _: &RunSettings) -> bool {
    true
}

/// What the stages of one iteration share.
pub struct Pipeline {
    pub worktree: PathBuf,
    pub test_file: String,
    pub verdict: Verdict,
    /// The new file's last runs (add), once they ran.
    pub new: Option<Repaired>,
    /// The failing tests a fix iteration aims at.
    pub targeted: Vec<String>,
    /// What passed before at the tip the whole suite ran on (set by the suite stage).
    pub passing_before: Vec<String>,
    /// Tests the stages dropped that are still in the file, with the stage that dropped them.
    pending: Vec<(StageId, Vec<String>)>,
}

impl Pipeline {
    pub fn new(worktree: PathBuf, test_file: &str) -> Self {
        Pipeline {
            worktree,
            test_file: test_file.to_string(),
            verdict: Verdict::default(),
            new: None,
            targeted: Vec::new(),
            passing_before: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// The new file's last runs; only stages after the run stage ask.
    pub fn new_run(&self) -> Result<&Repaired, StepError> {
        self.new
            .as_ref()
            .ok_or_else(|| StepError::Internal("a stage ran before the new tests did".into()))
    }

    pub fn tally(&self) -> Result<&Tally, StepError> {
        Ok(&self.new_run()?.tally)
    }
}

/// Runs `stages` in order until one rejects, recording each one's survivors and drops in the
/// verdict's funnel.
pub async fn run_stages(
    cx: &mut StepCx<'_>,
    p: &mut Pipeline,
    stages: &[Stage],
) -> Result<(), StepError> {
    let mut survivors = p.verdict.funnel.survivors(StageId::Proposed);
    for stage in stages {
        if !(stage.applies)(cx.it().kind, cx.settings()) {
            p.verdict.funnel.record(stage.id, survivors);
            continue;
        }
        if stage.reads_file && !flush_drops(cx, p).await? {
            return Ok(());
        }
        match (stage.run)(cx, p).await? {
            StageEnd::Pass(n) => survivors = n,
            StageEnd::Drop { survivors: n, ids } => {
                survivors = n;
                if !ids.is_empty() {
                    p.pending.push((stage.id, ids));
                }
            }
            StageEnd::Reject {
                survivors,
                dropped,
                why,
            } => {
                p.verdict.funnel.record(stage.id, survivors);
                p.verdict.funnel.drop(stage.id, &dropped);
                p.verdict.set_rejection(why);
                return Ok(());
            }
        }
        p.verdict.funnel.record(stage.id, survivors);
    }
    flush_drops(cx, p).await?;
    Ok(())
}

/// Takes the tests the stages dropped out of the file (one amended commit), and records them
/// as dropped. False when the iteration was rejected for it: they could not be removed, or
/// nothing would be left.
async fn flush_drops(cx: &mut StepCx<'_>, p: &mut Pipeline) -> Result<bool, StepError> {
    let pending = std::mem::take(&mut p.pending);
    let all: Vec<String> = pending.iter().flat_map(|(_, ids)| ids.clone()).collect();
    if all.is_empty() {
        return Ok(true);
    }
    let (worktree, test_file) = (p.worktree.clone(), p.test_file.clone());
    if !super::drop_tests(cx, &worktree, &test_file, &all).await? {
        let redundant = dropped_at(&pending, StageId::Gain);
        let why = match &p.new {
            Some(new) => judge::unprunable(&new.tally, &redundant),
            None => judge::unprunable(&Tally::default(), &all),
        };
        p.verdict.set_rejection(why);
        return Ok(false);
    }
    for (stage, ids) in &pending {
        p.verdict.funnel.drop(*stage, ids);
    }
    // Whole functions go, so every case of a dropped parametrized test goes.
    let dropped = prune_names(&all, &test_file);
    p.verdict.new_tests.retain(|id| {
        TestId::new(id)
            .prune_name(&test_file)
            .is_none_or(|t| !dropped.contains(&t))
    });
    if p.verdict.new_tests.is_empty() {
        let failing = dropped_at(&pending, StageId::Passing);
        p.verdict
            .set_rejection(judge::nothing_left(&failing, p.tally()?.ids.len()));
        return Ok(false);
    }
    Ok(true)
}

fn dropped_at(pending: &[(StageId, Vec<String>)], stage: StageId) -> Vec<String> {
    pending
        .iter()
        .filter(|(s, _)| *s == stage)
        .flat_map(|(_, ids)| ids.clone())
        .collect()
}
