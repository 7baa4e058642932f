//! Stage suite: the iteration's commit catches up with the run branch, then the whole suite
//! runs (with coverage) in the worktree, beside everything kept so far, and is judged against
//! what passed before.

use std::path::Path;

use super::judge::{self, SuiteRun};
use super::stage::StageEnd;
use super::{run_timed, side_effects, trouble};
use crate::artifacts::Label;
use crate::git;
use crate::iteration::context::{StepCx, StepError};
use crate::pytest::{CaseOutcome, Measure, PytestRun};
use crate::state::{StageId, Verdict};
use crate::testid::{TestId, pruned_by};

/// A test file of the project that does not import would otherwise stop the whole session,
/// and every proposal after it would look broken.
pub const SUITE_FLAG: &str = "--continue-on-collection-errors";

/// Moves the iteration's commit onto the run branch's tip, if other iterations were kept since
/// it was made (with `--jobs`, while this one waited for the LLM or ran its new tests), and
/// returns the tests that pass there: what its whole-suite run is judged against. The suite then
/// runs beside everything kept so far, and keeping needs no second run unless the tip moves
/// again meanwhile. A conflict leaves the commit where it is, for keeping to reject.
///
/// The tip and what passes there come from the run as it is now, not from the copy this step
/// started with: another iteration may have been kept since.
pub fn catch_up(cx: &mut StepCx<'_>) -> Result<Vec<String>, StepError> {
    let (commit, parent) = cx.commit_and_parent()?;
    // Kept commits move the run branch and the run's state in one go (no await between), so
    // the two agree here.
    let tip = cx.tip()?;
    let passing = {
        let now = cx.run_now();
        if parent == tip {
            return Ok(now.passing_at(Some(&tip.to_string())));
        }
        now.passing_at_tip()
    };
    let Some(replayed) = git::replay_onto(&cx.ctx.repo, commit, tip)? else {
        return Ok(cx.state.passing_at(Some(&parent.to_string())));
    };
    cx.worktree_at(replayed)?;
    cx.record_commit(replayed)?;
    Ok(passing)
}

/// Runs the whole suite and judges it: nothing that passed in `passing_before` may fail, and
/// every new test must pass among all the others. Fills the verdict's suite figures, and
/// accepts it or says why not.
pub async fn run_suite(
    cx: &mut StepCx<'_>,
    worktree: &Path,
    label: Label,
    passing_before: &[String],
    verdict: &mut Verdict,
) -> Result<PytestRun, StepError> {
    let mut args = vec![SUITE_FLAG.to_string()];
    args.extend(suite_paths(cx));
    let suite = run_timed(cx, worktree, &args, label, Measure::Report).await?;
    verdict.suite_label = label.to_string();
    let suite_passed = suite.ids_with(CaseOutcome::Passed);
    verdict.pytest_summary = suite.summary.clone();
    verdict.suite_tests = suite.cases.len() as u32;
    verdict.suite_passed = suite_passed.len() as u32;
    let report = cx.files().pytest(label).coverage_json();
    verdict.coverage =
        (suite.coverage.clone()).map(|c| crate::change::with_diff(c, &cx.state, &report));
    verdict.stoppers = suite.stoppers.clone();
    let failed_before = cx.state.baseline.as_ref().map_or(&[][..], |b| &b.failed);
    let new_file = cx.it().test_file.as_deref().unwrap_or_default();
    verdict.regressions = judge::regressions(
        passing_before,
        failed_before,
        &suite.failing(),
        &suite.cases.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
        |id| TestId::new(id).in_file(new_file),
    );
    verdict.failed_in_suite = verdict
        .new_tests
        .iter()
        .filter(|id| !suite_passed.contains(id))
        .cloned()
        .collect();
    let touched = side_effects(cx, worktree)?;
    let judged = judge::suite(SuiteRun {
        trouble: trouble(
            cx,
            &touched,
            suite.timed_out,
            "the suite with the new tests",
        ),
        regressions: &verdict.regressions,
        new_failing: &verdict.failed_in_suite,
    });
    match judged {
        Some(why) => verdict.set_rejection(why),
        None => verdict.accept(),
    }
    Ok(suite)
}

/// Takes the new tests of the functions `names` out of the file (recorded as dropped at
/// `stage`) and runs the whole suite again without them, as `label`. False when the file could
/// not lose them; nothing changed then.
#[allow(clippy::too_many_arguments)]
pub async fn rerun_without(
    cx: &mut StepCx<'_>,
    worktree: &Path,
    test_file: &str,
    names: &[String],
    stage: StageId,
    label: Label,
    passing_before: &[String],
    verdict: &mut Verdict,
) -> Result<bool, StepError> {
    let ids: Vec<String> = (verdict.new_tests.iter())
        .filter(|id| pruned_by(id, test_file, names))
        .cloned()
        .collect();
    if !super::drop_tests(cx, worktree, test_file, &ids).await? {
        return Ok(false);
    }
    verdict.funnel.drop(stage, &ids);
    verdict.new_tests.retain(|id| !ids.contains(id));
    run_suite(cx, worktree, label, passing_before, verdict).await?;
    Ok(true)
}

/// The suite stage's end: `survivors` go on when the verdict keeps them, none when it
/// rejects.
pub fn decided(verdict: &Verdict, survivors: usize) -> StageEnd {
    match verdict.rejection() {
        Some(why) => StageEnd::Reject {
            survivors: 0,
            dropped: Vec::new(),
            why: why.clone(),
        },
        None => StageEnd::Pass(survivors as u32),
    }
}

/// The paths of a whole-suite run when the run's new test files lie where a bare `pytest` does
/// not look (`testpaths` naming one file, say): pytest's own paths and those files. Empty
/// otherwise, so pytest's configuration decides as it does for the user.
fn suite_paths(cx: &StepCx<'_>) -> Vec<String> {
    let Some(baseline) = &cx.state.baseline else {
        return Vec::new();
    };
    let mut added: Vec<String> = cx
        .state
        .kept()
        .filter_map(|i| i.test_file.clone())
        .collect();
    added.extend(cx.it().test_file.clone());
    baseline.layout.suite_args(&added)
}

/// The fixed tests that pass in the whole suite `suite` (a file fixed from not importing: that
/// it no longer fails to).
pub fn still_fixed(fixed: Vec<String>, suite: &PytestRun) -> Vec<String> {
    let passed = suite.ids_with(CaseOutcome::Passed);
    let failing = suite.failing();
    fixed
        .into_iter()
        .filter(|id| passed.contains(id) || (TestId::new(id).is_file() && !failing.contains(id)))
        .collect()
}
