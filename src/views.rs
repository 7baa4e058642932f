//! The review commands: `status`, `log`, `show`, `report`. They read the state (without taking
//! the run lock, so they work while a run is going) and git; they never write either.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde_json::{Value, json};

use crate::cli::{GlobalArgs, ReportFormat};
use crate::config;
use crate::error::UserError;
use crate::git;
use crate::prompt::Templates;
use crate::report;
use crate::state::{Iteration, Outcome, RunState, RunStatus, StateStore};

pub(crate) fn load(global: &GlobalArgs) -> Result<(std::path::PathBuf, StateStore, RunState)> {
    let repo_root = config::repo_root(global.repo.as_deref())?;
    let store = StateStore::new(config::state_dir(&repo_root, global.state_dir.as_deref()));
    match store.load()? {
        Some(state) => Ok((repo_root, store, state)),
        None => Err(UserError(format!(
            "no run in {}: start one with `improve --iterations N`",
            store.dir().display()
        ))
        .into()),
    }
}

/// `running` in the file but nobody holds the lock: the process died.
fn effective_status(store: &StateStore, state: &RunState) -> RunStatus {
    if state.status == RunStatus::Running && !store.is_locked() {
        RunStatus::Interrupted
    } else {
        state.status
    }
}

fn status_word(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Running => "running",
        RunStatus::Interrupted => "interrupted",
        RunStatus::Complete => "complete",
    }
}

pub(crate) fn outcome_word(o: Option<Outcome>) -> &'static str {
    match o {
        Some(Outcome::Kept) => "kept",
        Some(Outcome::Rejected) => "rejected",
        Some(Outcome::Error) => "error",
        None => "",
    }
}

pub(crate) fn kind_word(k: crate::state::Kind) -> &'static str {
    match k {
        crate::state::Kind::Add => "add",
        crate::state::Kind::Fix => "fix",
    }
}

/// Where the project's tests live, as the baseline's collection showed (`.` for the root).
fn tests_dirs(state: &RunState) -> Vec<String> {
    let Some(b) = &state.baseline else {
        return Vec::new();
    };
    let mut dirs = b.layout.test_dirs(&state.settings.packages);
    if dirs.is_empty() {
        dirs.push(b.layout.main_dir(&state.settings.packages));
    }
    dirs.into_iter()
        .map(|d| if d.is_empty() { ".".into() } else { d })
        .collect()
}

pub fn status_json(store: &StateStore, state: &RunState) -> Value {
    let (tokens_in, tokens_out) = state.tokens();
    json!({
        "run_id": state.run_id,
        "run_branch": state.run_branch,
        "base_commit": state.base_commit,
        "state": status_word(effective_status(store, state)),
        "iterations_target": state.iterations_target,
        "iterations_done": state.iterations_done(),
        "kept": state.count(Outcome::Kept),
        "rejected": state.count(Outcome::Rejected),
        "errors": state.count(Outcome::Error),
        "tests_baseline": state.baseline.as_ref().map(|b| b.tests),
        "tests_now": state.tests_now(),
        "tests_added": state.kept().map(|i| i.tests_added).sum::<u32>(),
        "tests_fixed": state.kept().map(|i| i.tests_fixed).sum::<u32>(),
        "coverage_baseline": state.baseline.as_ref().and_then(|b| b.coverage.as_ref()).map(|c| c.percent),
        "coverage_now": state.coverage_now().map(|c| c.percent),
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "elapsed_s": (state.elapsed_s * 10.0).round() / 10.0,
        "stop_reason": state.stop_reason,
        "packages": state.settings.packages,
        "tests_dirs": tests_dirs(state),
    })
}

pub fn status(global: &GlobalArgs, as_json: bool) -> Result<()> {
    let (_, store, state) = load(global)?;
    let v = status_json(&store, &state);
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let num = |k: &str| {
        v[k].as_u64()
            .map(|n| n.to_string())
            .unwrap_or_else(|| "-".into())
    };
    let pct = |k: &str| {
        v[k].as_f64()
            .map(|p| format!("{p:.1}%"))
            .unwrap_or_else(|| "not measured".into())
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "run {}  on {}  ({})",
        state.run_id,
        state.run_branch,
        v["state"].as_str().unwrap_or("")
    );
    if let Some(r) = &state.stop_reason {
        let _ = writeln!(out, "stopped: {r}");
    }
    let _ = writeln!(
        out,
        "iterations {} of {}: {} kept, {} rejected, {} errors",
        num("iterations_done"),
        num("iterations_target"),
        num("kept"),
        num("rejected"),
        num("errors")
    );
    if v["state"] == "running" {
        let _ = writeln!(out, "{}", eta(&state));
    }
    let _ = writeln!(
        out,
        "tests {} -> {} ({} added)",
        num("tests_baseline"),
        num("tests_now"),
        num("tests_added")
    );
    let _ = writeln!(
        out,
        "coverage {} -> {}",
        pct("coverage_baseline"),
        pct("coverage_now")
    );
    let _ = writeln!(
        out,
        "tokens {} in / {} out, elapsed {}",
        num("tokens_in"),
        num("tokens_out"),
        humantime::format_duration(std::time::Duration::from_secs(
            state.elapsed_s.round() as u64
        ))
    );
    print!("{out}");
    Ok(())
}

/// Time left at the pace of the iterations finished so far, `--jobs` of them at a time.
fn eta(state: &RunState) -> String {
    let done: Vec<f64> = state.finished().map(|i| i.seconds.total).collect();
    let left = state
        .iterations_target
        .saturating_sub(state.iterations_done());
    if done.is_empty() {
        return format!("{left} iterations left; no pace yet for an estimate");
    }
    let per = done.iter().sum::<f64>() / done.len() as f64;
    let jobs = f64::from(state.settings.jobs.max(1));
    let secs = (per * f64::from(left) / jobs).round() as u64;
    let at_once = match state.settings.jobs {
        0 | 1 => String::new(),
        j => format!(", {j} at a time"),
    };
    format!(
        "{left} iterations left, about {} at {:.0} s each{at_once}",
        humantime::format_duration(std::time::Duration::from_secs(secs)),
        per
    )
}

pub fn log_json(it: &Iteration) -> Value {
    json!({
        "n": it.n,
        "target": it.target,
        "focus": it.focus,
        "kind": kind_word(it.kind),
        "outcome": outcome_word(it.outcome),
        "reason": it.reason,
        "tests_added": it.tests_added,
        "tests_fixed": it.tests_fixed,
        "commit": it.commit,
        "files": it.files,
        "llm_calls": it.llm_calls,
        "tokens_in": it.tokens_in,
        "tokens_out": it.tokens_out,
        "seconds": {
            "llm": round1(it.seconds.llm),
            "tests": round1(it.seconds.tests),
            "total": round1(it.seconds.total),
            "helpers": round2(it.seconds.helpers),
            "queued": round2(it.seconds.queued),
            // improve's own work: git, saving, parsing answers and reports.
            "other": round2(it.seconds.own()),
        },
        "test_file": it.test_file,
        "pytest_summary": it.verdict.as_ref().map(|v| v.pytest_summary.clone()),
        "funnel": it.verdict.as_ref().map(|v| v.funnel),
        "dropped": it.verdict.as_ref().map(|v| json!({
            "failing": v.pruned,
            "flaky": v.flaky,
            "redundant": v.redundant,
            "polluting": v.polluters,
        })),
        "polluters": it.verdict.as_ref().map(|v| v.polluters.clone()).unwrap_or_default(),
        "coverage": it.verdict.as_ref().filter(|_| it.commit.is_some()).map(|v| json!({
            "before": v.coverage_before,
            "after": v.coverage.as_ref().map(|c| c.percent),
        })),
        "repairs": it.verdict.as_ref().map(|v| v.repairs).unwrap_or(0),
        "findings": it.verdict.as_ref().map(|v| v.findings.clone()).unwrap_or_default(),
    })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub fn log(global: &GlobalArgs, as_json: bool) -> Result<()> {
    let (_, _, state) = load(global)?;
    if as_json {
        let rows: Vec<Value> = state.finished().map(log_json).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let target_w = state
        .finished()
        .map(|i| i.target.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let focus_w = state
        .finished()
        .map(|i| i.focus.len())
        .max()
        .unwrap_or(5)
        .max(5);
    println!(
        "{:>4}  {:<8}  {:<target_w$}  {:<focus_w$}  {:>5}  commit / reason",
        "#", "outcome", "target", "focus", "tests"
    );
    for it in state.finished() {
        let detail = match (&it.commit, &it.reason) {
            (Some(c), _) => git::short(c).to_string(),
            (None, Some(r)) => r.clone(),
            _ => String::new(),
        };
        println!(
            "{:>4}  {:<8}  {:<target_w$}  {:<focus_w$}  {:>5}  {detail}",
            it.n,
            outcome_word(it.outcome),
            it.target,
            it.focus,
            it.tests_added
        );
    }
    Ok(())
}

pub fn report(global: &GlobalArgs, out: Option<&Path>, format: ReportFormat) -> Result<()> {
    let (repo_root, store, state) = load(global)?;
    let repo = git::open(&repo_root)?;
    let path = match (out, format) {
        (Some(p), _) if p == Path::new("-") => None,
        (Some(p), _) => Some(p.to_path_buf()),
        // On standard output, as `coverage report` and `git log` print theirs.
        (None, _) => None,
    };
    match (format, path) {
        (ReportFormat::Markdown, Some(path)) => {
            let templates = Templates::load(Some(store.dir()))?;
            report::write(&repo, &state, &templates, &path)?;
            eprintln!("report written to {}", path.display());
        }
        (ReportFormat::Markdown, None) => {
            let templates = Templates::load(Some(store.dir()))?;
            print!("{}", report::render(&repo, &state, &templates)?);
        }
        (ReportFormat::Json, path) => {
            let text = serde_json::to_string_pretty(&report::model(&repo, &state))? + "\n";
            match path {
                Some(path) => {
                    crate::state::write_atomic(&path, text.as_bytes())
                        .map_err(|e| UserError(format!("cannot write {}: {e}", path.display())))?;
                    eprintln!("report written to {}", path.display());
                }
                None => print!("{text}"),
            }
        }
    }
    Ok(())
}

pub(crate) fn step_word(step: crate::state::Step) -> &'static str {
    match step {
        crate::state::Step::Planned => "planned",
        crate::state::Step::Asked => "asked",
        crate::state::Step::Applied => "applied",
        crate::state::Step::Verified => "verified",
        crate::state::Step::Finished => "finished",
    }
}
