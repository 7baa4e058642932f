//! The fix pipeline: a fix iteration is kept when tests that failed at the start now pass,
//! every time, and in the whole suite; nothing that passed stops passing; and only the test
//! file changed. Its stages are the add pipeline's ids; gain and checks do not apply.

use std::path::Path;

use git2::Oid;

use super::judge::{self, Tally};
use super::stage::{Pipeline, Stage, StageEnd, StageResult, always, run_stages, stage_run};
use super::suite::{self, run_suite, still_fixed};
use super::{add, covered, repeated_runs, run_timed, side_effects, trouble};
use crate::artifacts::Label;
use crate::git;
use crate::iteration::ask::open_failures;
use crate::iteration::context::{StepCx, StepError};
use crate::pytest::Measure;
use crate::state::{StageId, Step};
use crate::testid::TestId;

/// The fix pipeline, in order.
const STAGES: &[Stage] = &[
    Stage {
        id: StageId::Stable,
        applies: always,
        reads_file: false,
        run: stage_run!(run_fixed_file),
    },
    add::GAIN,
    add::CHECKS,
    Stage {
        id: StageId::Clean,
        applies: always,
        reads_file: false,
        run: stage_run!(whole_suite),
    },
    covered::COVERED,
];

pub async fn verify_fix(
    cx: &mut StepCx<'_>,
    worktree: &Path,
    test_file: &str,
    commit: Oid,
) -> Result<Step, StepError> {
    let mut p = Pipeline::new(worktree.to_path_buf(), test_file);
    p.targeted = open_failures(cx, test_file)
        .into_iter()
        .map(|f| f.name)
        .collect();
    p.verdict
        .funnel
        .record(StageId::Proposed, p.targeted.len() as u32);
    let changed: Vec<String> = git::commit_changes(&cx.ctx.repo, commit)?
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p != test_file)
        .collect();
    match judge::fix_scope(test_file, &changed) {
        Some(why) => p.verdict.set_rejection(why),
        None => run_stages(cx, &mut p, STAGES).await?,
    }
    Ok(cx.finish_verified(p.verdict))
}

/// Stages collected, passing and stable at once: runs the fixed file 1 + `--reruns` times;
/// the targeted tests that passed every time are fixed.
async fn run_fixed_file(cx: &mut StepCx<'_>, p: &mut Pipeline) -> StageResult {
    let args = repeated_runs(&p.test_file, cx.settings().reruns as usize);
    let run = run_timed(cx, &p.worktree, &args, Label::Fix, Measure::Outcomes).await?;
    let touched = side_effects(cx, &p.worktree)?;
    let tally = Tally::of(&run.cases);
    let verdict = &mut p.verdict;
    verdict.pytest_summary = run.summary.clone();
    let passing = tally.passing();
    let flaky = tally.flaky();
    // A file that did not even import (its id names no test) is fixed once it collects and
    // its tests pass.
    let collects = run.collection_error().is_none() && !passing.is_empty();
    let targeted = &p.targeted;
    let fixed: Vec<String> = targeted
        .iter()
        .filter(|id| passing.contains(id) || (TestId::new(id).is_file() && collects))
        .cloned()
        .collect();
    let flaky: Vec<String> = targeted
        .iter()
        .filter(|id| flaky.contains(id))
        .cloned()
        .collect();
    verdict.new_failed = tally.failing();
    let collected = targeted.iter().filter(|id| tally.ids.contains(id)).count();
    let funnel = &mut verdict.funnel;
    funnel.record(StageId::Collected, collected as u32);
    funnel.record(StageId::Passing, (fixed.len() + flaky.len()) as u32);
    // A fix keeps its flaky tests out of what it claims, not out of its file.
    funnel.drop(StageId::Stable, &flaky);
    let what = trouble(cx, &touched, run.timed_out, "the fixed file");
    let judged = judge::fix_run(what, &fixed, &flaky, targeted);
    let survivors = fixed.len() as u32;
    verdict.fixed = fixed;
    Ok(match judged {
        Some(why) => StageEnd::Reject {
            survivors,
            dropped: Vec::new(),
            why,
        },
        None => StageEnd::Pass(survivors),
    })
}

/// Stage suite: the fixed tests must pass beside all the others, and nothing that passed
/// may fail.
async fn whole_suite(cx: &mut StepCx<'_>, p: &mut Pipeline) -> StageResult {
    let passing_before = suite::catch_up(cx)?;
    p.passing_before = passing_before.clone();
    let verdict = &mut p.verdict;
    let suite = run_suite(cx, &p.worktree, Label::Suite, &passing_before, verdict).await?;
    verdict.fixed = still_fixed(std::mem::take(&mut verdict.fixed), &suite);
    if verdict.is_kept() && verdict.fixed.is_empty() {
        verdict.set_rejection(judge::fixed_fail_in_suite());
    }
    Ok(suite::decided(verdict, verdict.fixed.len()))
}
