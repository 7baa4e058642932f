//! Stage covered: the whole suite's measured coverage must not fall with the new tests. A test
//! that replaces the trace function (`sys.settrace`, `pdb.set_trace`), stops coverage or moves
//! the working directory leaves every test after it unmeasured: a reviewer merging it would lose
//! their coverage report. Our plugin notes, in the whole-suite run, each test after which
//! coverage no longer measured as before; the new ones among them are dropped and the suite
//! runs again. When coverage still falls, or no new test is to blame, the iteration is
//! rejected.

use super::judge;
use super::stage::{Pipeline, Stage, StageEnd, StageResult, always, stage_run};
use super::suite;
use crate::artifacts::Label;
use crate::iteration::context::StepCx;
use crate::state::{Kind, StageId};
use crate::testid::{TestId, prune_names};

pub const COVERED: Stage = Stage {
    id: StageId::Covered,
    applies: always,
    reads_file: false,
    run: stage_run!(keeps_coverage),
};

async fn keeps_coverage(cx: &mut StepCx<'_>, p: &mut Pipeline) -> StageResult {
    // What the suite ran on top of: with --jobs the tip may have moved on since.
    let (_, parent) = cx.commit_and_parent()?;
    let before = cx.run_now().coverage_at(&parent.to_string()).cloned();
    let fall = |p: &Pipeline| judge::coverage_fall(before.as_ref(), p.verdict.coverage.as_ref());
    let Some(first_fall) = fall(p) else {
        return Ok(StageEnd::Pass(survivors(cx, p)));
    };
    let blamed = blamed(p);
    let reject = |fall: &str, blamed: &[(String, String)]| StageEnd::Reject {
        survivors: 0,
        dropped: blamed.iter().map(|(t, _)| t.clone()).collect(),
        why: judge::stops_coverage(fall, blamed),
    };
    let mut names: Vec<String> = blamed
        .iter()
        .filter_map(|(t, _)| TestId::new(t).prune_name(&p.test_file))
        .collect();
    names.sort();
    names.dedup();
    let all = prune_names(&p.verdict.new_tests, &p.test_file);
    let (worktree, test_file) = (p.worktree.clone(), p.test_file.clone());
    let (label, before_tests) = (Label::SuiteCovered, p.passing_before.clone());
    if names.is_empty()
        || names.len() >= all.len()
        || !suite::rerun_without(
            cx,
            &worktree,
            &test_file,
            &names,
            StageId::Covered,
            label,
            &before_tests,
            &mut p.verdict,
        )
        .await?
    {
        return Ok(reject(&first_fall, &blamed));
    }
    if let rejected @ StageEnd::Reject { .. } = suite::decided(&p.verdict, 0) {
        return Ok(rejected);
    }
    if let Some(still) = fall(p) {
        return Ok(reject(&still, &[]));
    }
    Ok(StageEnd::Pass(survivors(cx, p)))
}

/// The new tests the plugin saw change how coverage measures, with what each did.
fn blamed(p: &Pipeline) -> Vec<(String, String)> {
    let verdict = &p.verdict;
    (verdict.new_tests.iter().chain(&verdict.fixed))
        .filter_map(|id| {
            let node = TestId::new(id).node_id(&p.worktree)?;
            let s = verdict.stoppers.iter().find(|s| s.test == node)?;
            Some((id.clone(), s.culprit.clone()))
        })
        .collect()
}

/// The tests going on: the new ones, or a fix's fixed ones.
fn survivors(cx: &StepCx<'_>, p: &Pipeline) -> u32 {
    match cx.it().kind {
        Kind::Add => p.verdict.new_tests.len() as u32,
        Kind::Fix => p.verdict.fixed.len() as u32,
    }
}
