//! The baseline: before the first iteration, the whole suite runs at the base commit in a
//! worktree of its own (never in the user's tree), after pytest has said where the project's
//! tests are and the code under test was checked to import from that worktree. What passes
//! there is what every iteration is judged against.

use std::path::{Path, PathBuf};

use crate::artifacts::{Label, PytestFiles};
use crate::coverage::Coverage;
use crate::git;
use crate::iteration::{RunContext, SUITE_FLAG, StepError};
use crate::layout::TestLayout;
use crate::progress::Printer;
use crate::pytest::{self, CaseOutcome, TestCase};
use crate::state::{Baseline, LeftOut, RunState};
use crate::testid::{TestId, first_three, node_file};
use crate::worktrees;

/// Runs the whole suite at the base commit in a worktree of its own (never in the user's tree),
/// after asking pytest where the project's tests are and checking that the code under test
/// imports from that worktree.
pub async fn measure_baseline(
    ctx: &RunContext,
    state: &mut RunState,
    printer: &Printer,
) -> Result<(), StepError> {
    printer.line("measuring the baseline: running the whole suite at the base commit");
    printer.doing("baseline: running the whole suite");
    let base = git::oid(&state.base_commit, "the base commit")?;
    let branch = format!("improve-wip/{}/baseline", state.run_id);
    let path = ctx
        .worktrees
        .check_out(&ctx.repo, worktrees::BASELINE, &branch, base)?;
    let measured = baseline_in(ctx, state, &path).await;
    // The slot, and what Python compiled there, goes on to the first iteration.
    ctx.worktrees.release(&ctx.repo, worktrees::BASELINE);
    let _ = git::delete_branch(&ctx.repo, &branch);
    let baseline = measured?;
    for line in baseline_notes(&baseline, &state.settings.packages) {
        printer.line(&line);
    }
    printer.line(&format!(
        "baseline: {}{}",
        if baseline.summary.is_empty() {
            "no tests"
        } else {
            &baseline.summary
        },
        baseline
            .coverage
            .as_ref()
            .map(|c| format!(", coverage {:.1}%", c.percent))
            .unwrap_or_default()
    ));
    state.baseline = Some(baseline);
    Ok(())
}

async fn baseline_in(
    ctx: &RunContext,
    state: &RunState,
    path: &Path,
) -> Result<Baseline, StepError> {
    ctx.worktrees.ready(path, &ctx.cancel).await?;
    let files = ctx.store.run(&state.run_id);
    let (layout, left_out, collected) = discover(ctx, state, path, files.baseline()).await?;
    let run = pytest::run(
        &ctx.test_cmd,
        path,
        &[SUITE_FLAG.to_string()],
        &files.baseline_suite(),
        pytest::Measure::Report,
        &ctx.cancel,
    )
    .await?;
    let prepared = ctx.worktrees.prepared_in(path);
    let side_effects: Vec<String> = git::dirty_paths(path)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !prepared.contains(p))
        .collect();
    if run.timed_out {
        return Err(StepError::Project(format!(
            "the suite at the base commit did not finish within --test-timeout ({}): raise --test-timeout",
            humantime::format_duration(ctx.test_cmd.timeout)
        )));
    }
    if run.cases.is_empty() && !matches!(run.exit_code, Some(0) | Some(5)) {
        return Err(StepError::Project(format!(
            "pytest could not run the suite at the base commit (exit {:?}): {} (full output: {})",
            run.exit_code,
            run.tail(1).trim(),
            run.output_path.display()
        )));
    }
    let unfixable = crate::layout::unfixable_files(
        &run.cases,
        &state.settings.packages,
        &ctx.test_cmd.import_names,
        path,
    );
    let unstable_ids = unstable_ids(&collected, &run.cases, path, &layout.test_files);
    Ok(Baseline {
        tests: run.cases.len() as u32,
        passed: run.ids_with(CaseOutcome::Passed),
        failed: run.failing(),
        skipped: run.count(CaseOutcome::Skipped) as u32,
        summary: run.summary.clone(),
        // No test ran any code: coverage.py has no data to report, and that is 0 %.
        coverage: run
            .coverage
            .clone()
            .or_else(|| {
                (run.cases.is_empty() && ctx.test_cmd.coverage.is_some()).then(Coverage::default)
            })
            .map(|c| crate::change::with_diff(c, state, &files.baseline_suite().coverage_json())),
        seconds: run.duration.as_secs_f64(),
        side_effects,
        layout,
        unfixable,
        left_out,
        unstable_ids,
    })
}

/// Asks pytest, in the baseline's worktree, where the tests are (its config and collection),
/// and checks that the code under test imports, from that worktree. A package that does not
/// import there is left out of the targets when the project's tests collect without it (an
/// optional extension, a private shim); when they do not, or nothing else is left, it stops
/// the run with what to do.
async fn discover(
    ctx: &RunContext,
    state: &RunState,
    path: &Path,
    dir: PathBuf,
) -> Result<(TestLayout, Vec<LeftOut>, Vec<String>), StepError> {
    let args = ["--collect-only".to_string(), SUITE_FLAG.to_string()];
    let files = PytestFiles::new(dir, Label::Collect);
    let run = pytest::run(
        &ctx.test_cmd,
        path,
        &args,
        &files,
        pytest::Measure::Discover,
        &ctx.cancel,
    )
    .await?;
    let tests_collect = run.collection_error().is_none();
    let Some(found) = run.discovery else {
        // pytest stopped before collecting (a bad option in its config, say): the suite run
        // says why in its own words; without our plugin there is nothing to learn here.
        return Ok((TestLayout::default(), Vec::new(), Vec::new()));
    };
    let mut left_out = Vec::new();
    for (name, check) in &found.imports {
        let packages = &state.settings.packages;
        let roots = &state.settings.source_roots;
        let Some(problem) = crate::layout::import_problem(name, check, path, packages, roots)
        else {
            continue;
        };
        match &check.error {
            Some(error) if tests_collect && left_out.len() + 1 < found.imports.len() => {
                left_out.push(LeftOut {
                    name: name.clone(),
                    cause: error.clone(),
                });
            }
            _ => return Err(StepError::Project(problem)),
        }
    }
    let layout = TestLayout {
        testpaths: found.testpaths,
        python_files: found.python_files,
        test_files: found.files,
        inifile: found.inifile,
    };
    Ok((layout, left_out, found.ids))
}

/// The node ids one of the two collections of the base commit (`collected`, pytest's
/// `--collect-only`, and the baseline's run) had and the other did not. None when the
/// collection listed no ids (no plugin).
fn unstable_ids(
    collected: &[String],
    cases: &[TestCase],
    worktree: &Path,
    test_files: &[String],
) -> Vec<String> {
    if collected.is_empty() {
        return Vec::new();
    }
    // Test cases of the collected test files: not a file's collection error, not a doctest.
    let node_ids = |keep: &dyn Fn(&TestCase) -> bool| -> std::collections::BTreeSet<String> {
        cases
            .iter()
            .filter(|c| !TestId::new(&c.id).is_file() && keep(c))
            .filter_map(|c| TestId::new(&c.id).node_id(worktree))
            .filter(|n| test_files.iter().any(|f| f == node_file(n)))
            .collect()
    };
    let ran = node_ids(&|_| true);
    // An error the run reports as a case (a class that fails to collect) is not in a
    // collection's list of ids: not an id that changed.
    let ran_cleanly = node_ids(&|c| c.outcome != CaseOutcome::Error);
    let listed: std::collections::BTreeSet<String> = collected.iter().cloned().collect();
    let mut unstable: Vec<String> = listed.difference(&ran).cloned().collect();
    unstable.extend(ran_cleanly.difference(&listed).cloned());
    unstable
}

/// What the user should know about the baseline before the first iteration.
fn baseline_notes(baseline: &Baseline, packages: &[String]) -> Vec<String> {
    let layout = &baseline.layout;
    let mut notes = vec![format!(
        "project: code under test {}; tests {}{}",
        packages.join(", "),
        match layout.test_files.len() {
            0 => "none yet".to_string(),
            n => {
                let mut dirs = layout.test_dirs(packages);
                if dirs.is_empty() {
                    dirs.push(layout.main_dir(packages));
                }
                let shown: Vec<&str> = dirs
                    .iter()
                    .map(|d| if d.is_empty() { "." } else { d.as_str() })
                    .collect();
                format!("in {} ({n} files)", shown.join(", "))
            }
        },
        layout
            .inifile
            .as_deref()
            .map(|f| format!(", pytest config {f}"))
            .unwrap_or_default()
    )];
    if crate::process::users_hash_seed().is_none() {
        let (name, value) = crate::process::HASH_SEED;
        notes.push(format!(
            "tests run with {name}={value}, so test ids built from sets are the same in every \
             run (set {name} to choose another)"
        ));
    }
    let main = layout.main_dir(packages);
    let probe = layout.file_name("x", 1, 0);
    let probe = if main.is_empty() {
        probe
    } else {
        format!("{main}/{probe}")
    };
    if !layout.collects(&probe) {
        let setting = if layout.matches_python_files(&probe) {
            format!("testpaths ({})", layout.testpaths.join(", "))
        } else {
            format!("python_files ({})", layout.python_files.join(" "))
        };
        notes.push(format!(
            "note: pytest's {setting} do not take new test files in {}: improve runs them by \
             name, and a bare `pytest` will not until you add them there",
            if main.is_empty() { "." } else { &main }
        ));
    }
    if !baseline.unstable_ids.is_empty() {
        notes.push(format!(
            "note: {} test ids differ between two collections of the base commit ({}): cases \
             built from a set or a dict; they are judged by how many pass and fail, not by id",
            baseline.unstable_ids.len(),
            first_three(baseline.unstable_ids.iter().map(String::as_str))
        ));
    }
    for gone in &baseline.left_out {
        notes.push(format!(
            "note: `{}` is left out of the targets: it does not import here ({}) while the \
             project's tests collect without it (an optional extension or a private shim?)",
            gone.name, gone.cause
        ));
    }
    if let Some(first) = baseline.unfixable.first() {
        let files: Vec<String> = baseline.unfixable.iter().map(|u| u.file.clone()).collect();
        notes.push(format!(
            "note: {} test files do not import at the base commit because the project or a \
             dependency does not ({}): {}; no fix iteration will touch them",
            files.len(),
            first.cause,
            first_three(files.iter().map(String::as_str))
        ));
    }
    notes
}
