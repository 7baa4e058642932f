//! The loop: opens the repo and the state, starts or resumes the run, measures the baseline, then
//! plans and advances iterations until the target is reached, a limit or the LLM stops it, or a
//! signal interrupts it. It knows nothing of HTTP, git internals or pytest flags.

use std::cell::RefCell;

use anyhow::Result;

use crate::cli::{GlobalArgs, RunArgs};
use crate::config::{self, Resolved};
use crate::error::RunEnd;
use crate::iteration::{self, RunContext};
use crate::progress::Printer;
use crate::report;
use crate::settings::{self, CommandLine};
use crate::state::{RunState, RunStatus};

mod print;
mod schedule;
pub(crate) mod setup;

use print::*;
pub(crate) use schedule::step_failure;
use schedule::*;
pub use setup::api_key;
use setup::*;

pub async fn run(global: &GlobalArgs, args: &RunArgs, printer: Printer) -> Result<RunEnd> {
    let opened = open(global, &printer)?;
    let file = config::load_file_config(&opened.root)?;
    let lines = [CommandLine {
        args,
        matches: None,
    }];
    let fresh = settings::fresh(&lines, &file);
    let existing = load_existing(&opened.store, fresh, &printer)?;
    let previous_id = existing.as_ref().map(|s| s.run_id.clone());
    let resume = existing.filter(|s| s.status != RunStatus::Complete && !fresh);

    // The project as the base commit has it: that is what every worktree tests.
    let saved = resume
        .as_ref()
        .map(|s| (&s.settings, s.base_commit.as_str()));
    let (resolved, tree) =
        settings::resolve_in_repo(&opened.repo, &opened.root, &lines, &file, saved)?;
    let new = match &resume {
        Some(_) => None,
        None => Some(new_run(&opened.repo, &resolved)?),
    };
    if let Some(state) = new.as_ref().filter(|s| touches_no_code(s)) {
        return end_without_change(&opened, state.clone(), previous_id, &printer);
    }
    let tools = tools(&opened, &resolved.settings, &tree, &printer).await?;
    let state = match (resume, new) {
        (Some(s), _) => resume_run(&opened.repo, s, args, &resolved, &printer)?,
        (None, Some(state)) => start_run(&opened, state, previous_id, &printer)?,
        // `new` is made exactly when there is nothing to resume.
        (None, None) => anyhow::bail!("no run to resume and none started"),
    };
    let ctx = run_context(opened, &state, tools, &printer)?;
    go(ctx, state, &resolved, &printer, None).await
}

/// A `--since` change that touches no line of the code under test: nothing to do.
fn touches_no_code(state: &RunState) -> bool {
    state.change.as_ref().is_some_and(|c| c.files.is_empty())
}

/// Ends a run whose change touches no code under test at once, complete, with a report that
/// says why (no baseline, no LLM, no pytest: there is nothing to measure).
fn end_without_change(
    opened: &Opened,
    state: RunState,
    previous_id: Option<String>,
    printer: &Printer,
) -> Result<RunEnd> {
    let mut state = start_run(opened, state, previous_id, printer)?;
    let (since, others) = state
        .change
        .as_ref()
        .map(|c| (c.since.clone(), c.other_files))
        .unwrap_or_default();
    let why = format!(
        "the change since {since} touches no line of the code under test ({others} other files): nothing to do"
    );
    printer.line(&format!("--since {since}: {why}"));
    state.status = RunStatus::Complete;
    state.stop_reason = Some(why);
    opened.store.save(&mut state)?;
    ensure_run_branch(&opened.repo, &state)?;
    let templates = crate::prompt::Templates::load(Some(opened.store.dir()))?;
    let report_path = opened.store.files().report();
    report::write(&opened.repo, &state, &templates, &report_path)?;
    print_summary(&state, &RunEnd::Complete, &report_path, &opened.root);
    Ok(RunEnd::Complete)
}

/// What a caller of [`go`] does after each kept iteration (a shard pushes its results). An
/// error ends the run like a failing step.
pub(crate) type AfterKeep<'a> = &'a dyn Fn(&RunContext, &mut RunState) -> Result<()>;

/// The locks a run holds until it ends, and the repository's folder for the summary.
pub(crate) struct Locks {
    root: std::path::PathBuf,
    _lock: crate::fsutil::RunLock,
    _repo_lock: crate::fsutil::RunLock,
}

/// Runs the iterations and ends the run: its status saved, the report written when complete,
/// the summary printed.
pub(crate) async fn go(
    (mut ctx, locks): (RunContext, Locks),
    mut state: RunState,
    resolved: &Resolved,
    printer: &Printer,
    after_keep: Option<AfterKeep<'_>>,
) -> Result<RunEnd> {
    ctx.deadline = resolved.max_duration.map(|d| ctx.session_start + d);
    ctx.budget = state.settings.max_cost.map(crate::cost::Budget::new);
    state.pricing = Some(ctx.pricing.info.clone());
    state.invocation_start_cost_usd = state.cost().0;
    // The state is saved before the run branch exists, so a crash in between leaves a run
    // whose branch is simply created on resume, never an orphan branch and a second run.
    ctx.save(&mut state)?;
    iteration::crash_point("saved", 0);
    ensure_run_branch(&ctx.repo, &state)?;
    iteration::crash_point("started", 0);
    install_signal_handlers(ctx.cancel.clone());

    let run = RefCell::new(state);
    let end = drive(&ctx, &run, resolved, printer, after_keep).await;
    // Nothing in flight needs a worktree any more; a resumed iteration gets one again.
    ctx.worktrees.remove_all(&ctx.repo);
    let mut state = run.into_inner();
    printer.finish();
    let end = end?;
    (state.status, state.stop_reason) = match &end {
        RunEnd::Complete => (RunStatus::Complete, None),
        RunEnd::Stopped(reason) => (RunStatus::Interrupted, Some(reason.clone())),
        RunEnd::Interrupted => (
            RunStatus::Interrupted,
            Some("interrupted by a signal".into()),
        ),
    };
    ctx.save(&mut state)?;
    let report_path = ctx.store.files().report();
    if end == RunEnd::Complete {
        report::write(&ctx.repo, &state, &ctx.templates, &report_path)?;
    }
    print_summary(&state, &end, &report_path, &locks.root);
    Ok(end)
}
