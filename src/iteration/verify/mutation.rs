//! Stage checks: do the new tests notice when the code is wrong? The helper makes up to
//! `--mutants` single changes of the target on the lines the new tests cover (by their own
//! coverage in the new file's runs); our plugin runs the tests covering each one with it put
//! into the running code, in one pytest process. A test that kills none of the mutants on its
//! lines asserts nothing worth keeping and is dropped (unless `--require-mutation-kill=false`);
//! so is one that holds no assertion (the helper reads the test file) and killed mutants only
//! by crashing them: a wrong value it returns would go unnoticed.
//!
//! The mutants are swapped into the functions' code objects in memory: the module's file is
//! never written, so a kill in the middle leaves nothing to undo. That is still checked, not
//! assumed: the file's bytes after the stage must be those before it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use super::judge;
use super::run_timed;
use super::stage::{Pipeline, StageEnd, StageResult};
use crate::artifacts::Label;
use crate::coverage::Gain;
use crate::fsutil::write_artifact;
use crate::iteration::context::{StepCx, StepError};
use crate::mutation::{Mutant, MutationCheck, Results};
use crate::pytest::Measure;
use crate::testid::TestId;

/// A process killed by its watchdog leaves the mutants after the one that hung to a new
/// process; past this many, the rest are left unjudged.
const MAX_PROCESSES: u32 = 4;

/// Runs the check on `verdict.new_tests`, drops the tests it finds asserting nothing and
/// records what it found. Returns why the iteration stops when no test is left.
pub async fn check(cx: &mut StepCx<'_>, p: &mut Pipeline) -> StageResult {
    let (worktree, test_file) = (p.worktree.as_path(), p.test_file.as_str());
    let gain = p.new.as_ref().and_then(|n| n.run.gain.as_ref());
    let verdict = &mut p.verdict;
    let all = verdict.new_tests.len() as u32;
    let cap = cx.settings().mutants;
    let started = Instant::now();
    let target = worktree.join(&cx.it().target);
    let names = test_names(&verdict.new_tests, test_file);
    let covers = gain.map(|g| lines_covered(g, &names, &cx.it().target));
    let original = std::fs::read(&target)
        .map_err(|e| StepError::Internal(format!("cannot read {}: {e}", target.display())))?;
    let ctx = cx.ctx;
    let made = cx
        .in_helper(ctx.helper.mutants(&target, covers.as_ref(), cap))
        .await;
    let (mut mutants, candidates) = match made {
        Ok(made) => made,
        Err(e) => {
            tracing::info!("no mutants made of {}: {e}", target.display());
            return Ok(StageEnd::Pass(all));
        }
    };
    if covers.is_none() {
        // Without each test's coverage, every test runs against every mutant.
        let all: Vec<String> = names.values().cloned().collect();
        mutants.iter_mut().for_each(|m| m.tests = all.clone());
    }
    let results = run_mutants(cx, worktree, test_file, &target, &mutants).await?;
    restore_if_changed(&target, &original)?;
    let mut record = MutationCheck::from_results(&mutants, &results, candidates);
    let judged = crate::mutation::kills_by_test(&mutants, &results);
    let asserting = match cx
        .in_helper(ctx.helper.asserting(&worktree.join(test_file)))
        .await
    {
        Ok(asserting) => asserting,
        Err(e) => {
            // Unknown: every test counts as asserting (only the rule on kills applies).
            tracing::info!("cannot tell which tests of {test_file} assert: {e}");
            BTreeMap::new()
        }
    };
    let verdict_of = judge::mutation(&names, &judged, &asserting, &record, covers.is_some());
    let require = cx.settings().require_mutation_kill;
    // The kills of the tests the stage keeps (of all of them when it keeps all or none).
    let gone: Vec<&String> = verdict_of.judgement.drop.iter().collect();
    let kept = |name: &str| {
        !require
            || verdict_of.judgement.reject.is_some()
            || !names.iter().any(|(id, n)| n == name && gone.contains(&id))
    };
    record.kept_kills = Some(crate::mutation::kept_kills(&mutants, &results, kept));
    record.asserts_nothing = verdict_of.asserts_nothing;
    record.crash_only = verdict_of.crash_only;
    // Dropped alone, or with the whole proposal.
    record.dropped =
        require && (verdict_of.judgement.reject.is_some() || !verdict_of.judgement.drop.is_empty());
    record.seconds = started.elapsed().as_secs_f64();
    verdict.mutation = Some(record);
    if !require {
        return Ok(StageEnd::Pass(all));
    }
    if let Some(why) = verdict_of.judgement.reject {
        let dropped = verdict.mutation.as_ref().map(|m| {
            let crashed = m.crash_only.iter().map(|c| c.test.clone());
            m.asserts_nothing.iter().cloned().chain(crashed).collect()
        });
        return Ok(StageEnd::Reject {
            survivors: 0,
            dropped: dropped.unwrap_or_default(),
            why,
        });
    }
    let drop = verdict_of.judgement.drop;
    Ok(StageEnd::Drop {
        survivors: all.saturating_sub(drop.len() as u32),
        ids: drop,
    })
}

/// Each new test id with the name the plugin and the coverage give its function.
fn test_names(ids: &[String], test_file: &str) -> BTreeMap<String, String> {
    ids.iter()
        .filter_map(|id| Some((id.clone(), TestId::new(id).prune_name(test_file)?)))
        .collect()
}

/// Per test name, the lines of `target` it ran.
fn lines_covered(
    gain: &Gain,
    names: &BTreeMap<String, String>,
    target: &str,
) -> BTreeMap<String, Vec<u32>> {
    names
        .values()
        .map(|name| {
            let lines = gain
                .covers
                .get(name)
                .and_then(|files| files.get(target))
                .cloned()
                .unwrap_or_default();
            (name.clone(), lines)
        })
        .collect()
}

/// Runs the mutants, a new process taking over the ones a killed process left.
async fn run_mutants(
    cx: &mut StepCx<'_>,
    worktree: &Path,
    test_file: &str,
    target: &Path,
    mutants: &[Mutant],
) -> Result<Results, StepError> {
    let mut results = Results::default();
    for k in 1..=MAX_PROCESSES {
        let left = results.unfinished(mutants);
        if left.is_empty() {
            break;
        }
        let files = cx.files().pytest(Label::Mutants(k));
        let spec = serde_json::json!({
            "target": target.display().to_string(),
            "mutants": left,
        });
        let text = serde_json::to_vec_pretty(&spec).unwrap_or_default();
        write_artifact(&files.mutants(), &text)?;
        let args = [test_file.to_string()];
        let run = run_timed(cx, worktree, &args, Label::Mutants(k), Measure::Mutants).await?;
        let known = results.status.len();
        results.read(&files.mutants_out());
        if run.timed_out {
            tracing::info!("the mutation check's process {k} timed out");
        }
        if results.status.len() == known {
            // It said nothing (it did not even collect): another would not either.
            break;
        }
    }
    Ok(results)
}

/// The target's bytes are those before the stage (a test may have written it): put back and
/// said in the log when not.
fn restore_if_changed(target: &Path, original: &[u8]) -> Result<(), StepError> {
    if std::fs::read(target).is_ok_and(|now| now == original) {
        return Ok(());
    }
    tracing::warn!(
        "{} changed during the mutation check: restored",
        target.display()
    );
    crate::fsutil::write_atomic(target, original)
        .map_err(|e| StepError::Internal(format!("cannot restore {}: {e}", target.display())))
}
