//! Expected values from the code: after the repair rounds (or where none is asked), a new test
//! that still fails on `assert <expr> == <literal>` gets, for that literal, the value the code
//! gave, when it gave the same one every time and Python writes it as a literal. A small model
//! reads the code right and guesses the value wrong far more often than it finds a bug; the
//! tests that hold a finding (the model stood by them through a repair) are left alone, and
//! every value taken is listed in the iteration and its commit message for the review.
//!
//! One pytest run of the file with those asserts rewritten to record what they saw (the
//! Python helper's `instrument`), the file put back, the values written in (`adopt`), the
//! iteration commit amended, and the file run again as the pipeline runs it.

use std::path::Path;

use super::{measure_new, repeated_runs, run_timed};
use crate::artifacts::Label;
use crate::fsutil::write_artifact;
use crate::git;
use crate::iteration::context::{StepCx, StepError};
use crate::project::import_name;
use crate::pyhelper::{Adopted, Observed};
use crate::pytest::{Measure, PytestRun};

/// Where the instrumented run writes what it saw, in the worktree (the only place a sandboxed
/// test may write that outlives its process); removed after.
const RECORD_FILE: &str = ".improve-observed.jsonl";

/// Takes the expected values of the failing tests `tests` (as the pruner names them) from the
/// code and runs the file again as the pipeline runs it: that run, or None when no value could
/// be taken (the file is then as it was).
pub async fn adopt_values(
    cx: &mut StepCx<'_>,
    worktree: &Path,
    test_file: &str,
    tests: &[String],
) -> Result<Option<PytestRun>, StepError> {
    if tests.is_empty() {
        return Ok(None);
    }
    let Some(adopted) = observe(cx, worktree, test_file, tests).await? else {
        return Ok(None);
    };
    let n = cx.it().n;
    let message = format!("improve: proposal of iteration {n}, expected values from the code");
    let oid = git::amend_head(worktree, &[test_file.to_string()], &message)?;
    cx.record_commit(oid)?;
    let it = cx.it_mut();
    it.answers.values_adopted += adopted.adopted;
    for value in adopted.values {
        if !it.values_from_code.contains(&value) {
            it.values_from_code.push(value);
        }
    }
    let args = repeated_runs(test_file, cx.settings().reruns as usize);
    let run = run_timed(cx, worktree, &args, Label::NewAdopted, measure_new(cx)).await?;
    Ok(Some(run))
}

/// The instrumented run and the values it saw written into the file. None when no assert could
/// be observed or none took a value (the file is then as it was).
async fn observe(
    cx: &mut StepCx<'_>,
    worktree: &Path,
    test_file: &str,
    tests: &[String],
) -> Result<Option<Adopted>, StepError> {
    let (file, record) = (worktree.join(test_file), worktree.join(RECORD_FILE));
    let import_name = import_name(&cx.it().target, &cx.state.settings.source_roots);
    let package = import_name
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string();
    let Ok(original) = std::fs::read(&file) else {
        return Ok(None);
    };
    let _ = std::fs::remove_file(&record);
    let ctx = cx.ctx;
    let observed = Observed {
        file: &file,
        tests,
        record: &record,
        package: &package,
    };
    let instrumented = cx.in_helper(ctx.helper.instrument(observed)).await;
    let n = cx.it().n;
    match instrumented {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(e) => {
            tracing::info!("iteration {n}: no expected values taken: {e}");
            write_artifact(&file, &original)?;
            return Ok(None);
        }
    }
    let args = [test_file.to_string()];
    let ran = run_timed(cx, worktree, &args, Label::Observed, Measure::Outcomes).await;
    write_artifact(&file, &original)?;
    ran?;
    let adopted = cx.in_helper(ctx.helper.adopt(observed)).await;
    let _ = std::fs::remove_file(&record);
    match adopted {
        Ok(a) if a.adopted > 0 => Ok(Some(a)),
        Ok(_) => Ok(None),
        Err(e) => {
            tracing::info!("iteration {n}: no expected values taken: {e}");
            write_artifact(&file, &original)?;
            Ok(None)
        }
    }
}
