//! The run's scheduling: up to `--jobs` iterations in flight, each planned (which target, which
//! kind) and advanced to its end; limits, signals and the circuit breaker for a failing LLM.

use std::cell::RefCell;
use std::time::Instant;

use anyhow::Result;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;

use crate::config::Resolved;
use crate::error::{RunEnd, UserError};
use crate::git;
use crate::iteration::{self, RunContext, StepError};
use crate::progress::Printer;
use crate::state::{Iteration, Kind, Outcome, RunState};
use crate::target;

use super::*;

pub(super) async fn drive(
    ctx: &RunContext,
    run: &RefCell<RunState>,
    resolved: &Resolved,
    printer: &Printer,
    after_keep: Option<AfterKeep<'_>>,
) -> Result<RunEnd> {
    if let Some(end) = ensure_baseline(ctx, run, printer).await? {
        return Ok(end);
    }
    let plan = Plan::new(ctx, run, resolved)?;
    let mut schedule = {
        let state = run.borrow();
        printer.start(state.iterations_target, state.iterations_done());
        Schedule {
            // Iterations cut off mid-way (several, after a kill with --jobs) go first, in order.
            unfinished: state
                .iterations
                .iter()
                .filter(|i| !i.is_finished())
                .map(|i| i.n)
                .collect(),
            busy: Vec::new(),
            stop: None,
            failure: None,
        }
    };
    let mut in_flight = FuturesUnordered::new();
    loop {
        print_counts(&run.borrow(), printer);
        if ctx.cancel.is_cancelled() && schedule.stop.is_none() {
            schedule.stop = Some(RunEnd::Interrupted);
        }
        while schedule.stop.is_none() && in_flight.len() < plan.jobs {
            let Some(n) = schedule.next(ctx, run, &plan) else {
                break;
            };
            in_flight.push(async move { (n, iteration::advance(ctx, run, n).await) });
        }
        let Some((n, result)) = in_flight.next().await else {
            break;
        };
        schedule.ended(ctx, &run.borrow(), n, result, printer);
        let kept = {
            let state = run.borrow();
            state
                .index_of(n)
                .is_some_and(|i| state.iterations[i].outcome == Some(Outcome::Kept))
        };
        if let Some(hook) = after_keep.filter(|_| kept) {
            match hook(ctx, &mut run.borrow_mut()) {
                Ok(()) => iteration::crash_point("pushed", n),
                Err(e) => schedule.fail(ctx, e),
            }
        }
    }
    match schedule.failure {
        Some(e) => Err(e),
        None => Ok(schedule.stop.unwrap_or(RunEnd::Complete)),
    }
}

/// What new iterations are planned from: the modules and the test files committed at the base
/// (what the iterations test, not the user's working tree), and this session's limits.
pub(super) struct Plan<'a> {
    modules: Vec<String>,
    /// Where the tests that failed at the start live.
    test_files: Vec<String>,
    jobs: usize,
    resolved: &'a Resolved,
    session_start: Instant,
    tokens_at_start: (u64, u64),
}

impl<'a> Plan<'a> {
    fn new(ctx: &RunContext, run: &RefCell<RunState>, resolved: &'a Resolved) -> Result<Self> {
        let state = run.borrow();
        let base = git::oid(&state.base_commit, "the base commit")?;
        let mut modules = target::modules_at(&ctx.repo, base, &state)?;
        // A shard of a distributed run touches only its own share; a `--since` run, the
        // modules its change touches.
        if let Some(shard) = &state.shard {
            modules.retain(|m| shard.modules.contains(m));
        }
        if let Some(change) = &state.change {
            modules.retain(|m| change.files.contains_key(m));
        }
        if modules.is_empty() && state.change.is_none() {
            return Err(UserError(format!(
                "{} holds no Python modules to write tests for: pass --package PATH",
                state.settings.packages.join(", ")
            ))
            .into());
        }
        let test_files = target::test_files_at(&ctx.repo, base, &state)?
            .into_iter()
            .map(|(path, _)| path)
            .filter(|path| {
                state
                    .shard
                    .as_ref()
                    .is_none_or(|s| s.fix_files.contains(path))
            })
            // Tests that failed before the change are not the change's to fix.
            .filter(|_| state.change.is_none())
            .collect();
        Ok(Plan {
            modules,
            test_files,
            jobs: state.settings.jobs.max(1) as usize,
            resolved,
            session_start: Instant::now(),
            tokens_at_start: state.tokens(),
        })
    }
}

/// Which iterations run, and why none more start.
pub(super) struct Schedule {
    unfinished: std::collections::VecDeque<u32>,
    /// In flight, with their targets.
    busy: Vec<(u32, String)>,
    /// Why no new iteration starts; the run ends with it once those in flight are done.
    stop: Option<RunEnd>,
    failure: Option<anyhow::Error>,
}

impl Schedule {
    /// The next iteration to start: a resumed one, else a newly planned one; None (with `stop`
    /// set when the run must end) when there is none.
    fn next(&mut self, ctx: &RunContext, run: &RefCell<RunState>, plan: &Plan<'_>) -> Option<u32> {
        let n = match self.unfinished.pop_front() {
            Some(n) => n,
            None => match plan_next(ctx, run, plan, &self.busy) {
                Ok(Planned::Started(n)) => n,
                Ok(Planned::Stop(end)) => {
                    self.stop = end;
                    return None;
                }
                Err(e) => {
                    // As for a failing step: stop those in flight and wait for them.
                    self.fail(ctx, e);
                    return None;
                }
            },
        };
        let state = run.borrow();
        let target = state
            .index_of(n)
            .map(|i| state.iterations[i].target.clone())
            .unwrap_or_default();
        self.busy.push((n, target));
        Some(n)
    }

    /// Fatal for the run: the others stop at their next await and are waited for, so no pytest
    /// is left running and every state they reached is saved.
    fn fail(&mut self, ctx: &RunContext, e: anyhow::Error) {
        ctx.cancel.cancel();
        self.stop = Some(RunEnd::Interrupted);
        self.failure.get_or_insert(e);
    }

    /// Iteration `n` stopped advancing: finished, interrupted or failed.
    fn ended(
        &mut self,
        ctx: &RunContext,
        state: &RunState,
        n: u32,
        result: Result<(), StepError>,
        printer: &Printer,
    ) {
        self.busy.retain(|(b, _)| *b != n);
        match result {
            Ok(()) => {}
            Err(StepError::Cancelled) => {
                self.stop.get_or_insert(RunEnd::Interrupted);
                return;
            }
            // The iteration resumes from its last step next time, as after a signal.
            Err(StepError::Deadline) => {
                self.stop.get_or_insert(RunEnd::Stopped(
                    "--max-duration reached (the LLM call of an iteration in flight would not \
                     have finished before it)"
                        .into(),
                ));
                return;
            }
            Err(StepError::Budget) => {
                self.stop.get_or_insert(budget_stop(ctx));
                return;
            }
            Err(e) => return self.fail(ctx, step_failure(e)),
        }
        let Some(it) = state.index_of(n).map(|i| &state.iterations[i]) else {
            return;
        };
        print_iteration(state, it, printer);
        if self.stop.is_none()
            && state.consecutive_llm_failures >= state.settings.max_llm_failures
            && state.iterations.len() < state.iterations_target as usize
        {
            self.stop = Some(RunEnd::Stopped(format!(
                "{} iterations in a row failed on the LLM (last: {})",
                state.consecutive_llm_failures,
                it.reason.as_deref().unwrap_or_default()
            )));
        }
    }
}

pub(super) enum Planned {
    Started(u32),
    /// Nothing more to start: None when the run is simply complete (or every module left is
    /// busy), else why it stops.
    Stop(Option<RunEnd>),
}

/// Plans the next iteration (numbered in order, saved before any work) unless the target, a
/// limit, or busy modules say otherwise.
pub(super) fn plan_next(
    ctx: &RunContext,
    run: &RefCell<RunState>,
    plan: &Plan<'_>,
    busy: &[(u32, String)],
) -> Result<Planned> {
    let (modules, test_files) = (&plan.modules, &plan.test_files);
    let mut state = run.borrow_mut();
    if state.iterations.len() >= state.iterations_target as usize {
        return Ok(Planned::Stop(None));
    }
    if let Some(reason) = limit_reached(&state, plan) {
        return Ok(Planned::Stop(Some(RunEnd::Stopped(reason))));
    }
    if let Some(budget) = &ctx.budget
        && !budget.room_for(ctx.pricing.least_call(state.settings.max_answer_tokens))
    {
        return Ok(Planned::Stop(Some(budget_stop(ctx))));
    }
    let n = state.iterations.len() as u32 + 1;
    let coverage = state.coverage_now().cloned();
    let busy: Vec<String> = busy.iter().map(|(_, t)| t.clone()).collect();
    let iteration = if let Some(file) = target::choose_fix_target(&state, test_files, &busy) {
        Iteration::new(n, file, "fix failing tests".into(), Kind::Fix)
    } else if let Some(target) = target::choose_target(modules, &state, coverage.as_ref(), &busy) {
        let focus = target::focus_for(n, &state.settings.focus);
        Iteration::new(n, target, focus, Kind::Add)
    } else {
        return Ok(Planned::Stop(None));
    };
    state.iterations.push(iteration);
    ctx.save(&mut state)?;
    iteration::crash_point("planned", n);
    Ok(Planned::Started(n))
}

/// The limits count from the start of this invocation, so that a stopped run resumes with the
/// same command (a budget per night, not per run).
pub(super) fn limit_reached(state: &RunState, plan: &Plan<'_>) -> Option<String> {
    let (resolved, session_start, tokens_at_start) =
        (plan.resolved, plan.session_start, plan.tokens_at_start);
    if let Some(max) = resolved.max_duration
        && session_start.elapsed() >= max
    {
        return Some(format!(
            "--max-duration {} reached",
            humantime::format_duration(max)
        ));
    }
    if let Some(max) = resolved.settings.max_tokens {
        let (i, o) = state.tokens();
        let spent = (i + o).saturating_sub(tokens_at_start.0 + tokens_at_start.1);
        if spent >= max {
            return Some(format!("--max-tokens {max} reached ({spent} spent)"));
        }
    }
    None
}

/// `--max-cost` stops the run: no further call fits in what is left of the cap.
fn budget_stop(ctx: &RunContext) -> RunEnd {
    let (spent, cap) = ctx
        .budget
        .as_ref()
        .map_or((0.0, 0.0), |b| (b.spent(), b.cap()));
    RunEnd::Stopped(format!(
        "--max-cost {cap} reached: this invocation spent {}, and the next call's worst case \
         would pass the cap",
        crate::cost::usd(spent)
    ))
}

/// What the driver does with an iteration's error: a signal ends the run resumably, a test
/// command that cannot run is the user's to fix, anything else is a fault.
pub(super) fn step_end(e: StepError) -> Result<RunEnd> {
    match e {
        StepError::Cancelled => Ok(RunEnd::Interrupted),
        StepError::Deadline => Ok(RunEnd::Stopped("--max-duration reached".into())),
        StepError::Budget => Ok(RunEnd::Stopped("--max-cost reached".into())),
        other => Err(step_failure(other)),
    }
}

pub(crate) fn step_failure(e: StepError) -> anyhow::Error {
    match e {
        StepError::Project(msg) => UserError(msg).into(),
        other => other.into(),
    }
}

pub(super) fn install_signal_handlers(cancel: CancellationToken) {
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        let mut count = 0;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            count += 1;
            if count == 1 {
                eprintln!("stopping: saving state (press Ctrl-C again to quit at once)");
                cancel.cancel();
            } else {
                // Every save is atomic, so quitting here still leaves a consistent state; the
                // tests in their own process groups would not see our exit, so end them first.
                crate::process::kill_live_groups();
                std::process::exit(130);
            }
        }
    });
}
