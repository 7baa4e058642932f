//! The fix pipeline: a fix iteration is kept when tests that failed at the start now pass,
//! every time, and in the whole suite; nothing that passed stops passing; and only the test
//! file changed.

use std::path::Path;

use git2::Oid;

use super::judge::{self, Tally};
use super::suite::{self, run_suite, still_fixed};
use super::{repeated_runs, run_timed, side_effects, trouble};
use crate::artifacts::Label;
use crate::git;
use crate::iteration::ask::open_failures;
use crate::iteration::context::{StepCx, StepError};
use crate::pytest::Measure;
use crate::state::Verdict;
use crate::testid::TestId;

pub async fn verify_fix(
    cx: &mut StepCx<'_>,
    worktree: &Path,
    test_file: &str,
    commit: Oid,
) -> Result<(), StepError> {
    let mut verdict = Verdict::default();
    let targeted: Vec<String> = open_failures(cx, test_file)
        .into_iter()
        .map(|f| f.name)
        .collect();
    verdict.funnel.proposed = targeted.len() as u32;
    let changed: Vec<String> = git::commit_changes(&cx.ctx.repo, commit)?
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p != test_file)
        .collect();
    if let Some(why) = judge::fix_scope(test_file, &changed) {
        verdict.set_rejection(why);
        cx.finish_verified(verdict);
        return Ok(());
    }
    let fixed = run_fixed_file(cx, worktree, test_file, &targeted, &mut verdict).await?;
    if verdict.reason.is_some() {
        cx.finish_verified(verdict);
        return Ok(());
    }
    let passing_before = suite::catch_up(cx)?;
    let suite = run_suite(cx, worktree, Label::Suite, &passing_before, &mut verdict).await?;
    verdict.fixed = still_fixed(fixed, &suite);
    if verdict.keep && verdict.fixed.is_empty() {
        verdict.set_rejection(judge::fixed_fail_in_suite());
    }
    verdict.funnel.clean = if verdict.keep {
        verdict.fixed.len() as u32
    } else {
        0
    };
    cx.finish_verified(verdict);
    Ok(())
}

/// Runs the fixed file 1 + `--reruns` times and returns the targeted tests it fixed; the
/// verdict says why not when it fixed none for good.
async fn run_fixed_file(
    cx: &mut StepCx<'_>,
    worktree: &Path,
    test_file: &str,
    targeted: &[String],
    verdict: &mut Verdict,
) -> Result<Vec<String>, StepError> {
    let args = repeated_runs(test_file, cx.settings().reruns as usize);
    let run = run_timed(cx, worktree, &args, Label::Fix, Measure::Outcomes).await?;
    let touched = side_effects(cx, worktree)?;
    let tally = Tally::of(&run.cases);
    verdict.pytest_summary = run.summary.clone();
    let passing = tally.passing();
    let flaky = tally.flaky();
    // A file that did not even import (its id names no test) is fixed once it collects and
    // its tests pass.
    let collects = run.collection_error().is_none() && !passing.is_empty();
    let fixed: Vec<String> = targeted
        .iter()
        .filter(|id| passing.contains(id) || (TestId::new(id).is_file() && collects))
        .cloned()
        .collect();
    verdict.flaky = targeted
        .iter()
        .filter(|id| flaky.contains(id))
        .cloned()
        .collect();
    verdict.new_failed = tally.failing();
    verdict.funnel.collected = targeted.iter().filter(|id| tally.ids.contains(id)).count() as u32;
    verdict.funnel.passing = (fixed.len() + verdict.flaky.len()) as u32;
    verdict.funnel.stable = fixed.len() as u32;
    verdict.funnel.gain = fixed.len() as u32;
    verdict.funnel.checks = fixed.len() as u32;
    let what = trouble(cx, &touched, run.timed_out, "the fixed file");
    if let Some(why) = judge::fix_run(what, &fixed, &verdict.flaky, targeted) {
        verdict.set_rejection(why);
    }
    Ok(fixed)
}
