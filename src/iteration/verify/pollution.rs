//! Stage pollution: when the whole suite turns tests red that passed before, or new tests fail
//! only beside the others, the new tests to blame are found and dropped, and the suite runs
//! again (up to three rounds). New tests failing in the suite are dropped themselves; a
//! previously passing test gone red is pinned on a new test by bisection: the victims run with
//! half of the new tests at a time, in suite order, until one test alone reproduces the failure.

use std::path::Path;

use super::run_timed;
use super::suite::rerun_without;
use crate::artifacts::Label;
use crate::iteration::context::{StepCx, StepError};
use crate::pytest::Measure;
use crate::state::{StageId, Verdict};
use crate::testid::{TestId, node_file, prune_names};

const MAX_ROUNDS: u32 = 3;

pub async fn remove_polluters(
    cx: &mut StepCx<'_>,
    worktree: &Path,
    test_file: &str,
    passing_before: &[String],
    verdict: &mut Verdict,
) -> Result<(), StepError> {
    for round in 1..=MAX_ROUNDS {
        let polluted = verdict.rejection().is_some_and(|r| r.reason.is_pollution());
        if !polluted {
            return Ok(());
        }
        let new_names = prune_names(&verdict.new_tests, test_file);
        let mut culprits = match failing_in_suite(verdict, test_file) {
            found if !found.is_empty() => found,
            _ => bisect(cx, worktree, test_file, verdict, &new_names).await?,
        };
        culprits.sort();
        culprits.dedup();
        if culprits.is_empty() || culprits.len() == new_names.len() {
            return Ok(());
        }
        let label = Label::SuiteRound(round + 1);
        let (stage, before) = (StageId::Clean, passing_before);
        if !rerun_without(
            cx, worktree, test_file, &culprits, stage, label, before, verdict,
        )
        .await?
        {
            return Ok(());
        }
    }
    Ok(())
}

/// New tests that failed in the suite: its verdict listed them as not passing there.
fn failing_in_suite(verdict: &Verdict, test_file: &str) -> Vec<String> {
    verdict
        .new_tests
        .iter()
        .filter(|id| verdict.failed_in_suite.contains(id))
        .filter_map(|id| TestId::new(id).prune_name(test_file))
        .collect()
}

/// The one new test (of `new_names`) that alone turns the regressions red; none when no
/// single test is to blame.
async fn bisect(
    cx: &mut StepCx<'_>,
    worktree: &Path,
    test_file: &str,
    verdict: &Verdict,
    new_names: &[String],
) -> Result<Vec<String>, StepError> {
    let victims: Vec<String> = verdict
        .regressions
        .iter()
        .filter_map(|id| TestId::new(id).node_id(worktree))
        .collect();
    if victims.is_empty() {
        return Ok(Vec::new());
    }
    let mut pool = new_names.to_vec();
    let mut probes = 0;
    while pool.len() > 1 {
        let (a, b) = pool.split_at(pool.len() / 2);
        let (a, b) = (a.to_vec(), b.to_vec());
        probes += 1;
        if reproduces(cx, worktree, test_file, &victims, &a, probes).await? {
            pool = a;
            continue;
        }
        probes += 1;
        if reproduces(cx, worktree, test_file, &victims, &b, probes).await? {
            pool = b;
            continue;
        }
        // Only together do they pollute: no single test to blame.
        return Ok(Vec::new());
    }
    probes += 1;
    let alone =
        pool.len() == 1 && reproduces(cx, worktree, test_file, &victims, &pool, probes).await?;
    Ok(if alone { pool } else { Vec::new() })
}

/// Whether running `victims` beside the new tests `subset` (files in path order, as the whole
/// suite runs them) turns a victim red.
async fn reproduces(
    cx: &mut StepCx<'_>,
    worktree: &Path,
    test_file: &str,
    victims: &[String],
    subset: &[String],
    probe: u32,
) -> Result<bool, StepError> {
    let mut args: Vec<String> = victims
        .iter()
        .cloned()
        .chain(subset.iter().map(|t| format!("{test_file}::{t}")))
        .collect();
    // Stable: keeps the order within a file.
    args.sort_by(|a, b| node_file(a).cmp(node_file(b)));
    let run = run_timed(cx, worktree, &args, Label::Bisect(probe), Measure::Outcomes).await?;
    let failed = run.failing();
    Ok(victims.iter().any(|v| {
        failed
            .iter()
            .any(|f| TestId::new(f).node_id(worktree).as_deref() == Some(v.as_str()))
    }))
}
