//! The add pipeline, stage by stage: the new tests run (1 + `--reruns` times, one process) and
//! failing ones go back to the LLM (`repair`); only tests that passed every time go on; of
//! those, only tests that add coverage, then only tests that catch a mutant; the whole suite
//! then runs with them, and tests that pollute it are found and dropped. Failing, flaky,
//! redundant and unchecking tests leave the file (by Python's own parser) in one amended
//! commit, so good tests are never thrown away with bad ones.

use std::path::Path;

use super::judge::{self, NewRun};
use super::stage::{Pipeline, Stage, StageEnd, StageResult, always, run_stages, stage_run};
use super::{covered, mutation, pollution, repair, suite, trouble};
use crate::artifacts::Label;
use crate::fsutil::write_artifact;
use crate::iteration::context::{StepCx, StepError};
use crate::state::{Kind, StageId, Step};
use crate::testid::TestId;

/// The add pipeline, in order.
const STAGES: &[Stage] = &[
    Stage {
        id: StageId::Collected,
        applies: always,
        reads_file: false,
        run: stage_run!(collect),
    },
    Stage {
        id: StageId::Passing,
        applies: always,
        reads_file: false,
        run: stage_run!(passing),
    },
    Stage {
        id: StageId::Stable,
        applies: always,
        reads_file: false,
        run: stage_run!(stable),
    },
    GAIN,
    CHECKS,
    Stage {
        id: StageId::Clean,
        applies: always,
        reads_file: true,
        run: stage_run!(whole_suite),
    },
    covered::COVERED,
];

/// Stage gain, for add iterations when `--require-coverage-gain` is on.
pub const GAIN: Stage = Stage {
    id: StageId::Gain,
    applies: |kind, s| kind == Kind::Add && s.require_coverage_gain,
    reads_file: false,
    run: stage_run!(gain),
};

/// Stage checks, for add iterations when `--mutants` is above 0.
pub const CHECKS: Stage = Stage {
    id: StageId::Checks,
    applies: |kind, s| kind == Kind::Add && s.mutants > 0,
    reads_file: true,
    run: stage_run!(mutation::check),
};

pub async fn verify_add(
    cx: &mut StepCx<'_>,
    worktree: &Path,
    test_file: &str,
) -> Result<Step, StepError> {
    let mut p = Pipeline::new(worktree.to_path_buf(), test_file);
    p.verdict.funnel.record(StageId::Proposed, cx.it().proposed);
    run_stages(cx, &mut p, STAGES).await?;
    Ok(cx.finish_verified(p.verdict))
}

/// Stages collect, run and repair: the new file runs, and goes back to the LLM while tests
/// fail and rounds are left (the values the model got wrong come from the code, see
/// [`repair::run_and_repair`]).
async fn collect(cx: &mut StepCx<'_>, p: &mut Pipeline) -> StageResult {
    let new = repair::run_and_repair(cx, &p.worktree, &p.test_file, &mut p.verdict).await?;
    let (run, tally) = (&new.run, &new.tally);
    p.verdict.pytest_summary = run.summary.clone();
    p.verdict.new_failed = tally.failing();
    let collected = if !run.cases.is_empty() && run.collection_error().is_none() {
        let n = tally.ids.len() as u32;
        p.verdict.funnel.record(StageId::Proposed, n);
        n
    } else {
        0
    };
    p.new = Some(new);
    Ok(StageEnd::Pass(collected))
}

/// Stage passing: the tests that fail after repair leave the file.
async fn passing(_: &mut StepCx<'_>, p: &mut Pipeline) -> StageResult {
    let failing = p.tally()?.failing();
    let collected = p.verdict.funnel.survivors(StageId::Collected);
    Ok(StageEnd::Drop {
        survivors: collected.saturating_sub(failing.len() as u32),
        ids: failing,
    })
}

/// Stage stable: [`judge::new_tests`] on the new file's last runs; flaky tests leave the file.
async fn stable(cx: &mut StepCx<'_>, p: &mut Pipeline) -> StageResult {
    let new = p.new_run()?;
    let (run, tally) = (&new.run, &new.tally);
    let survivors = tally.passing().len() as u32;
    let what = format!("{} runs of the new tests", 1 + cx.settings().reruns);
    let last_line = run.tail(1);
    let judged = judge::new_tests(NewRun {
        trouble: trouble(cx, &new.touched, run.timed_out, &what),
        no_cases: run.cases.is_empty(),
        exit_code: run.exit_code,
        last_line: &last_line,
        collection_error: run.collection_error().map(|c| c.message.as_str()),
        tally,
    });
    if let Some(why) = judged {
        let dropped = Vec::new();
        return Ok(StageEnd::Reject {
            survivors,
            dropped,
            why,
        });
    }
    let flaky = tally.flaky();
    p.verdict.new_tests = tally.passing();
    Ok(StageEnd::Drop {
        survivors,
        ids: flaky,
    })
}

/// Stage gain: passing tests that run nothing of the package the suite did not already run
/// (nor an earlier new test) leave the file. Measured in the new file's runs, before the whole
/// suite runs, so a proposal with no gain costs no suite run. The whole package counts, not
/// only the target: a test that reaches a helper the target calls is worth keeping too.
async fn gain(cx: &mut StepCx<'_>, p: &mut Pipeline) -> StageResult {
    let new = p.new_run()?;
    let passing = new.tally.passing();
    let redundant: Vec<String> = match new.run.gain.as_ref() {
        Some(gain) => {
            let json = serde_json::to_vec_pretty(&gain.adds).unwrap_or_default();
            write_artifact(&cx.files().coverage_gain(), &json)?;
            passing
                .iter()
                .filter(|id| {
                    TestId::new(id)
                        .prune_name(&p.test_file)
                        .is_some_and(|t| gain.redundant.contains(&t))
                })
                .cloned()
                .collect()
        }
        None => Vec::new(),
    };
    let survivors = (passing.len() - redundant.len()) as u32;
    match judge::gain(&new.tally, &redundant).reject {
        Some(why) => Ok(StageEnd::Reject {
            survivors,
            dropped: redundant,
            why,
        }),
        None => Ok(StageEnd::Drop {
            survivors,
            ids: redundant,
        }),
    }
}

/// Stages suite and pollution: the commit catches up with the run branch, the whole suite
/// runs with the new tests, and tests that turn others red are found and dropped.
async fn whole_suite(cx: &mut StepCx<'_>, p: &mut Pipeline) -> StageResult {
    let passing_before = suite::catch_up(cx)?;
    p.passing_before = passing_before.clone();
    let (worktree, test_file) = (p.worktree.clone(), p.test_file.clone());
    let verdict = &mut p.verdict;
    suite::run_suite(cx, &worktree, Label::Suite, &passing_before, verdict).await?;
    pollution::remove_polluters(cx, &worktree, &test_file, &passing_before, verdict).await?;
    Ok(suite::decided(verdict, verdict.new_tests.len()))
}
