//! The Applied step: pytest judges the iteration's commit. An add iteration goes through the
//! stages of [`add`] (run the new tests, repair them, keep the stable ones, keep those that add
//! coverage, run the whole suite, drop polluters); a fix iteration through those of [`fix`].
//! What each stage decides is in [`judge`], as pure functions; this module runs pytest and
//! changes the file, the commit and the verdict accordingly.

mod add;
mod covered;
mod expect;
mod fix;
pub mod judge;
mod mutation;
mod pollution;
mod repair;
mod stage;
mod suite;

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::context::{StepCx, StepError};
use crate::artifacts::Label;
use crate::git;
use crate::pytest::{self, Measure};
use crate::state::{Kind, Step};
use crate::testid::prune_names;

pub use suite::{SUITE_FLAG, run_suite, still_fixed};

/// Verifies the iteration's commit in its worktree, then hands it to keeping.
pub async fn verify(cx: &mut StepCx<'_>) -> Result<Step, StepError> {
    let it = cx.it();
    let (Some(test_file), Some(commit)) = (it.test_file.clone(), it.iteration_commit.clone())
    else {
        return Ok(Step::Asked);
    };
    let commit = git::oid(&commit, "the iteration commit")?;
    let worktree = clean_worktree(cx, commit)?;
    match cx.it().kind {
        Kind::Fix => fix::verify_fix(cx, &worktree, &test_file, commit).await,
        Kind::Add => add::verify_add(cx, &worktree, &test_file).await,
    }
}

/// The iteration's worktree at its commit, with nothing else in it. A crash mid-verify can
/// leave what the tests did in the tree, or a pruned commit the state never recorded (keeping
/// would then take the unpruned one): start from the state's commit. A resumed iteration holds
/// no worktree yet and gets one here.
fn clean_worktree(cx: &StepCx<'_>, commit: git2::Oid) -> Result<PathBuf, StepError> {
    match cx.ctx.worktrees.held(cx.it().n) {
        Some(path)
            if git::head_of(&path) == Some(commit) && git::dirty_paths(&path)?.is_empty() =>
        {
            Ok(path)
        }
        _ => cx.worktree_at(commit),
    }
}

/// pytest arguments that run `test_file` once and then `reruns` more times, in one process.
fn repeated_runs(test_file: &str, reruns: usize) -> Vec<String> {
    let keep = (reruns > 0).then(|| "--keep-duplicates".to_string());
    keep.into_iter()
        .chain(std::iter::repeat_n(test_file.to_string(), 1 + reruns))
        .collect()
}

/// What the new tests' runs measure: each test's own coverage when gain is required.
fn measure_new(cx: &StepCx<'_>) -> Measure {
    if cx.settings().require_coverage_gain {
        Measure::PerTest(crate::iteration::ask::latest_coverage_json(cx))
    } else {
        Measure::Outcomes
    }
}

/// What a test run changed in the worktree, beyond what the project's own suite does. The
/// worktree is thrown away with the iteration, so nothing a test did survives it; but a
/// proposal whose tests delete or rewrite project files is not one to keep.
fn side_effects(cx: &StepCx<'_>, worktree: &Path) -> Result<Vec<String>, StepError> {
    let mut known = cx
        .state
        .baseline
        .as_ref()
        .map(|b| b.side_effects.clone())
        .unwrap_or_default();
    // What `--setup-cmd` made there is the project's build, not the tests' doing.
    known.extend(cx.ctx.worktrees.prepared_in(worktree));
    Ok(git::dirty_paths(worktree)?
        .into_iter()
        .filter(|p| !known.contains(p))
        .collect())
}

/// The facts [`judge::trouble`] weighs for a run of `what`.
fn trouble<'a>(
    cx: &StepCx<'_>,
    touched: &'a [String],
    timed_out: bool,
    what: &'a str,
) -> judge::Trouble<'a> {
    judge::Trouble {
        touched,
        timed_out,
        what,
        timeout: cx.ctx.test_cmd.timeout,
    }
}

/// One pytest run in the worktree, its time added to the iteration's pytest seconds.
async fn run_timed(
    cx: &mut StepCx<'_>,
    worktree: &Path,
    args: &[String],
    label: Label,
    measure: Measure,
) -> Result<pytest::PytestRun, StepError> {
    let files = cx.files().pytest(label);
    let ctx = cx.ctx;
    let started = Instant::now();
    // `--setup-cmd`, the first time this worktree runs tests (its time counts as pytest's).
    let ready = ctx.worktrees.ready(worktree, &ctx.cancel).await;
    let run = match ready {
        Ok(()) => {
            let test_cmd = &ctx.test_cmd;
            pytest::run(test_cmd, worktree, args, &files, measure, &ctx.cancel)
                .await
                .map_err(StepError::from)
        }
        Err(e) => Err(StepError::from(e)),
    };
    cx.it_mut().seconds.tests += started.elapsed().as_secs_f64();
    run
}

/// Removes the tests `ids` from the iteration's file and amends its commit (still one commit
/// on the run branch). Returns whether any were removed.
async fn drop_tests(
    cx: &mut StepCx<'_>,
    worktree: &Path,
    test_file: &str,
    ids: &[String],
) -> Result<bool, StepError> {
    let n = cx.it().n;
    let doomed = prune_names(ids, test_file);
    let file = worktree.join(test_file);
    let ctx = cx.ctx;
    match cx.in_helper(ctx.helper.prune(&file, &doomed)).await {
        Ok(removed) if removed > 0 => ctx.forget_bytecode(&file),
        Ok(_) => return Ok(false),
        Err(e) => {
            tracing::info!("tests could not be dropped: {e}");
            return Ok(false);
        }
    }
    let oid = git::amend_head(
        worktree,
        &[test_file.to_string()],
        &format!("improve: proposal of iteration {n}, some tests dropped"),
    )?;
    super::crash_point("pruned", n);
    cx.record_commit(oid)?;
    Ok(true)
}
