//! The add pipeline, stage by stage: the new tests run (1 + `--reruns` times, one process) and
//! failing ones go back to the LLM (`repair`); only tests that passed every time go on; of
//! those, only tests that add coverage; the whole suite then runs with them, and tests that
//! pollute it are found and dropped. Failing, flaky and redundant tests leave the file (by
//! Python's own parser) in one amended commit, so good tests are never thrown away with bad
//! ones.

use std::path::Path;

use super::judge::{self, Judgement, NewRun};
use super::repair::{self, Repaired};
use super::{drop_tests, mutation, pollution, suite, trouble};
use crate::artifacts::Label;
use crate::fsutil::write_artifact;
use crate::iteration::context::{StepCx, StepError};
use crate::state::Verdict;
use crate::testid::{TestId, prune_names};

pub async fn verify_add(
    cx: &mut StepCx<'_>,
    worktree: &Path,
    test_file: &str,
) -> Result<(), StepError> {
    let mut verdict = Verdict {
        funnel: crate::state::Funnel {
            proposed: cx.it().proposed,
            ..Default::default()
        },
        ..Default::default()
    };
    // Stages collect, run, repair and stable.
    let new = repair::run_and_repair(cx, worktree, test_file, &mut verdict).await?;
    if let Some(why) = judge_new(cx, &new, &mut verdict) {
        verdict.set_rejection(why);
        cx.finish_verified(verdict);
        return Ok(());
    }
    // Stage gain, and the tests it drops.
    let redundant = redundant_tests(cx, &new, test_file)?;
    let passing = new.tally.passing();
    verdict.funnel.gain = (passing.len() - redundant.len()) as u32;
    let Judgement { drop, reject } = judge::gain(&new.tally, &redundant);
    if let Some(why) = reject {
        verdict.set_rejection(why);
        verdict.redundant = redundant;
        cx.finish_verified(verdict);
        return Ok(());
    }
    if !drop.is_empty() && !drop_tests(cx, worktree, test_file, &drop).await? {
        verdict.set_rejection(judge::unprunable(&new.tally, &redundant));
        cx.finish_verified(verdict);
        return Ok(());
    }
    verdict.pruned = new.tally.failing();
    verdict.flaky = new.tally.flaky();
    // Whole functions go, so every case of a dropped parametrized test goes.
    let dropped = prune_names(&drop, test_file);
    verdict.new_tests = passing
        .into_iter()
        .filter(|id| {
            TestId::new(id)
                .prune_name(test_file)
                .is_none_or(|t| !dropped.contains(&t))
        })
        .collect();
    verdict.redundant = redundant;
    if verdict.new_tests.is_empty() {
        verdict.set_rejection(judge::nothing_left(&verdict.pruned, new.tally.ids.len()));
        cx.finish_verified(verdict);
        return Ok(());
    }
    // Stage checks, before the whole suite: a proposal of tests that assert nothing costs no
    // suite run.
    let gain = new.run.gain.as_ref();
    if let Some(why) = mutation::check(cx, worktree, test_file, gain, &mut verdict).await? {
        verdict.set_rejection(why);
        cx.finish_verified(verdict);
        return Ok(());
    }
    // Stages suite and pollution.
    let passing_before = suite::catch_up(cx)?;
    suite::run_suite(cx, worktree, Label::Suite, &passing_before, &mut verdict).await?;
    pollution::remove_polluters(cx, worktree, test_file, &passing_before, &mut verdict).await?;
    verdict.funnel.clean = if verdict.keep {
        verdict.new_tests.len() as u32
    } else {
        0
    };
    cx.finish_verified(verdict);
    Ok(())
}

/// The funnel up to `stable`, and [`judge::new_tests`] on the new file's last runs.
fn judge_new(
    cx: &StepCx<'_>,
    new: &Repaired,
    verdict: &mut Verdict,
) -> Option<crate::state::Rejection> {
    let (run, tally) = (&new.run, &new.tally);
    verdict.pytest_summary = run.summary.clone();
    verdict.new_failed = tally.failing();
    if !run.cases.is_empty() && run.collection_error().is_none() {
        verdict.funnel.proposed = tally.ids.len() as u32;
        verdict.funnel.collected = tally.ids.len() as u32;
    }
    verdict.funnel.passing = verdict
        .funnel
        .collected
        .saturating_sub(tally.failing().len() as u32);
    verdict.funnel.stable = tally.passing().len() as u32;
    let what = format!("{} runs of the new tests", 1 + cx.settings().reruns);
    let last_line = run.tail(1);
    judge::new_tests(NewRun {
        trouble: trouble(cx, &new.touched, run.timed_out, &what),
        no_cases: run.cases.is_empty(),
        exit_code: run.exit_code,
        last_line: &last_line,
        collection_error: run.collection_error().map(|c| c.message.as_str()),
        tally,
    })
}

/// Passing tests that run nothing of the package the suite did not already run (nor an
/// earlier new test): measured in the new file's runs, before the whole suite runs, so a
/// proposal with no gain costs no suite run. The whole package counts, not only the target:
/// a test that reaches a helper the target calls is worth keeping too.
fn redundant_tests(
    cx: &StepCx<'_>,
    new: &Repaired,
    test_file: &str,
) -> Result<Vec<String>, StepError> {
    let Some(gain) = new
        .run
        .gain
        .as_ref()
        .filter(|_| cx.settings().require_coverage_gain)
    else {
        return Ok(Vec::new());
    };
    let json = serde_json::to_vec_pretty(&gain.adds).unwrap_or_default();
    write_artifact(&cx.files().coverage_gain(), &json)?;
    Ok(new
        .tally
        .passing()
        .into_iter()
        .filter(|id| {
            TestId::new(id)
                .prune_name(test_file)
                .is_some_and(|t| gain.redundant.contains(&t))
        })
        .collect())
}
