//! What a run prints as it goes and when it ends.

use std::path::Path;

use crate::error::RunEnd;
use crate::git;
use crate::progress::Printer;
use crate::state::{Iteration, Outcome, RunState};

pub(super) fn print_counts(state: &RunState, printer: &Printer) {
    printer.counts(
        (state.iterations_done(), state.iterations_target),
        [
            state.count(Outcome::Kept),
            state.count(Outcome::Rejected),
            state.count(Outcome::Error),
        ],
        crate::cost::running_total(state),
    );
}

pub(super) fn print_iteration(state: &RunState, it: &Iteration, printer: &Printer) {
    let target = state.iterations_target;
    tracing::info!(
        n = it.n,
        target = %it.target,
        focus = %it.focus,
        outcome = ?it.outcome,
        reason = it.reason.as_deref().unwrap_or(""),
        commit = it.commit.as_deref().unwrap_or(""),
        tests_added = it.tests_added,
        tokens_in = it.tokens_in,
        tokens_out = it.tokens_out,
        llm_s = it.seconds.llm,
        tests_s = it.seconds.tests,
        total_s = it.seconds.total,
        "iteration finished"
    );
    let outcome = it
        .outcome
        .map(|o| o.as_str().to_string())
        .unwrap_or_default();
    let detail = match (&it.commit, &it.reason) {
        (Some(c), _) => format!("+{} tests, {}", it.tests_added, git::short(c)),
        (None, Some(r)) => r.clone(),
        _ => String::new(),
    };
    // The run's running total, beside the iteration's time, when the price is known.
    let spent = crate::cost::running_total(state)
        .map(|total| format!(", {} so far", total))
        .unwrap_or_default();
    printer.line(&format!(
        "[{:>3}/{target}] {outcome:<8} {} ({}) {detail} [{:.1}s{spent}]",
        it.n, it.target, it.focus, it.seconds.total
    ));
}

/// The few lines a user reads in the morning: what happened, where the report is, how to
/// review and how to merge.
pub(super) fn print_summary(state: &RunState, end: &RunEnd, report: &Path, repo_root: &Path) {
    let added: u32 = state.kept().map(|i| i.tests_added).sum();
    let coverage = match (
        state.baseline.as_ref().and_then(|b| b.coverage.as_ref()),
        state.coverage_now(),
    ) {
        (Some(a), Some(b)) => format!(", coverage {:.1}% -> {:.1}%", a.percent, b.percent),
        _ => String::new(),
    };
    let headline = match end {
        RunEnd::Complete => "run complete".to_string(),
        RunEnd::Stopped(reason) => {
            format!("run stopped: {reason}; run the same command again to resume")
        }
        RunEnd::Interrupted => "run interrupted; run the same command again to resume".to_string(),
    };
    let git = format!(
        "git -C {}",
        shell_words::quote(&repo_root.display().to_string())
    );
    let branch = &state.run_branch;
    let mut lines = vec![
        headline,
        format!(
            "{} of {} iterations: {} kept, {} rejected, {} errors; {added} tests added{coverage}",
            state.iterations_done(),
            state.iterations_target,
            state.count(Outcome::Kept),
            state.count(Outcome::Rejected),
            state.count(Outcome::Error),
        ),
    ];
    if let Some(cost) = cost_line(state) {
        lines.push(cost);
    }
    if *end == RunEnd::Complete {
        lines.push(format!("report:  {}", report.display()));
    }
    lines.push(format!(
        "review:  {git} log --stat {} ^{}   (or: improve log, improve show N)",
        branch,
        git::short(&state.base_commit)
    ));
    if state.kept().next().is_some() {
        lines.push(format!(
            "merge:   {git} merge {branch}   (or cherry-pick the commits you want)"
        ));
    }
    eprintln!("{}", lines.join("\n"));
}

/// What the run cost, this invocation and in all, or why that is not known.
fn cost_line(state: &RunState) -> Option<String> {
    let pricing = state.pricing.as_ref()?;
    Some(match crate::cost::run_total(state) {
        Some(total) => format!(
            "cost:    {} this invocation, {} for the run ({} price of {})",
            crate::cost::usd(total - state.invocation_start_cost_usd),
            crate::cost::usd(total),
            pricing.source.as_str(),
            pricing.model
        ),
        None => format!(
            "cost:    unknown: improve has no price for {}; pass --price IN,OUT[,CACHED_IN]",
            pricing.model
        ),
    })
}
