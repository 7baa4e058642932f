//! The review commands: `status`, `log`, `show`, `report`. They read the state (without taking
//! the run lock, so they work while a run is going) and git; they never write either.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;
use serde_json::{Value, json};

use crate::cli::{GlobalArgs, ReportFormat};
use crate::config;
use crate::error::UserError;
use crate::git;
use crate::prompt::Templates;
use crate::report;
use crate::settings::{self, CommandLine};
use crate::state::{
    Funnel, Iteration, Outcome, RunCounts, RunState, RunStatus, StageId, StateStore,
};

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

/// `status --settings`: every setting as a run here would resolve it now, and where each value
/// came from. Reads the state and the config file; starts nothing.
pub fn status_settings(global: &GlobalArgs, lines: &[CommandLine<'_>], json: bool) -> Result<()> {
    let root = config::repo_root(global.repo.as_deref())?;
    let repo = git::open(&root)?;
    let file = config::load_file_config(&root)?;
    let store = StateStore::new(config::state_dir(&root, global.state_dir.as_deref()));
    let resume = match settings::fresh(lines, &file) {
        true => None,
        false => store.load()?.filter(|s| s.status != RunStatus::Complete),
    };
    let saved = resume
        .as_ref()
        .map(|s| (&s.settings, s.base_commit.as_str()));
    let (resolved, _) = settings::resolve_in_repo(&repo, &root, lines, &file, saved)?;
    print!("{}", settings::show::render(&resolved.rows, json)?);
    Ok(())
}

/// `running` in the file but nobody holds the lock: the process died.
fn effective_status(store: &StateStore, state: &RunState) -> RunStatus {
    if state.status == RunStatus::Running && !store.is_locked() {
        RunStatus::Interrupted
    } else {
        state.status
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

/// What `status` shows, for its text and its `--json` alike.
#[derive(Debug, Serialize)]
pub struct StatusView {
    pub run_id: String,
    pub run_branch: String,
    pub base_commit: String,
    pub state: &'static str,
    #[serde(flatten)]
    pub counts: RunCounts,
    pub coverage_baseline: Option<f64>,
    pub coverage_now: Option<f64>,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// Dollars (`cost_usd`, `cost_usd_invocation`), cached tokens and the price.
    #[serde(flatten)]
    pub cost: crate::cost::CostView,
    pub elapsed_s: f64,
    pub stop_reason: Option<String>,
    pub packages: Vec<String>,
    pub tests_dirs: Vec<String>,
    /// A `--since` run's change and its diff coverage (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<ChangeView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff_coverage_baseline: Option<Option<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff_coverage_now: Option<Option<f64>>,
}

/// What `status` says of a `--since` run's change.
#[derive(Debug, Serialize)]
pub struct ChangeView {
    pub since: String,
    pub since_commit: String,
    pub merge_base: String,
    /// The modules of the code under test it touches, with their changed lines.
    pub files: std::collections::BTreeMap<String, Vec<u32>>,
    pub other_files: u32,
    /// Changed executable lines, and those a test runs now.
    pub lines: Option<u32>,
    pub covered: Option<u32>,
}

impl ChangeView {
    fn of(state: &RunState) -> Option<ChangeView> {
        let c = state.change.as_ref()?;
        let now = state.diff_coverage_now();
        Some(ChangeView {
            since: c.since.clone(),
            since_commit: c.since_commit.clone(),
            merge_base: c.merge_base.clone(),
            files: c.files.clone(),
            other_files: c.other_files,
            lines: now.map(|d| d.lines),
            covered: now.map(|d| d.covered),
        })
    }
}

impl StatusView {
    pub fn of(store: &StateStore, state: &RunState) -> Self {
        let (tokens_in, tokens_out) = state.tokens();
        StatusView {
            run_id: state.run_id.clone(),
            run_branch: state.run_branch.clone(),
            base_commit: state.base_commit.clone(),
            state: effective_status(store, state).as_str(),
            counts: state.counts(),
            coverage_baseline: state
                .baseline
                .as_ref()
                .and_then(|b| b.coverage.as_ref())
                .map(|c| c.percent),
            coverage_now: state.coverage_now().map(|c| c.percent),
            tokens_in,
            tokens_out,
            cost: crate::cost::CostView::of(state),
            elapsed_s: (state.elapsed_s * 10.0).round() / 10.0,
            stop_reason: state.stop_reason.clone(),
            packages: state.settings.packages.clone(),
            tests_dirs: tests_dirs(state),
            change: ChangeView::of(state),
            diff_coverage_baseline: state
                .change
                .as_ref()
                .map(|_| state.diff_coverage_baseline().and_then(|d| d.percent)),
            diff_coverage_now: state
                .change
                .as_ref()
                .map(|_| state.diff_coverage_now().and_then(|d| d.percent)),
        }
    }

    /// The view as `status` prints it.
    pub fn text(&self, state: &RunState) -> String {
        let num = |n: Option<u32>| n.map_or_else(|| "-".into(), |n| n.to_string());
        let pct = |p: Option<f64>| p.map_or_else(|| "not measured".into(), |p| format!("{p:.1}%"));
        let c = &self.counts;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "run {}  on {}  ({})",
            self.run_id, self.run_branch, self.state
        );
        if let Some(r) = &self.stop_reason {
            let _ = writeln!(out, "stopped: {r}");
        }
        let _ = writeln!(
            out,
            "iterations {} of {}: {} kept, {} rejected, {} errors",
            c.iterations_done, c.iterations_target, c.kept, c.rejected, c.errors
        );
        if self.state == RunStatus::Running.as_str() {
            let _ = writeln!(out, "{}", eta(state));
        }
        let _ = writeln!(
            out,
            "tests {} -> {} ({} added)",
            num(c.tests_baseline),
            num(c.tests_now),
            c.tests_added
        );
        let _ = writeln!(
            out,
            "coverage {} -> {}",
            pct(self.coverage_baseline),
            pct(self.coverage_now)
        );
        if let Some(change) = &self.change {
            let _ = writeln!(
                out,
                "diff coverage since {} {} -> {} ({} modules changed; {} of {} changed lines run now)",
                change.since,
                crate::change::shown(self.diff_coverage_baseline.flatten()),
                crate::change::shown(self.diff_coverage_now.flatten()),
                change.files.len(),
                num(change.covered),
                num(change.lines),
            );
        }
        let _ = writeln!(
            out,
            "tokens {} in / {} out, elapsed {}",
            self.tokens_in,
            self.tokens_out,
            humantime::format_duration(std::time::Duration::from_secs(
                state.elapsed_s.round() as u64
            ))
        );
        let _ = writeln!(out, "{}", self.cost.text());
        out
    }
}

pub fn status(global: &GlobalArgs, as_json: bool) -> Result<()> {
    let (_, store, state) = load(global)?;
    let view = StatusView::of(&store, &state);
    if as_json {
        // Through a JSON value, so the keys come out sorted as they always have.
        let value = serde_json::to_value(&view)?;
        return print_out(&format!("{}\n", serde_json::to_string_pretty(&value)?));
    }
    print_out(&view.text(&state))
}

/// Prints to standard output. A closed pipe (`improve log | head`) ends the output quietly:
/// the reader has what it wanted.
pub fn print_out(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
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
    let mut row = log_row(it);
    // Only when there is something to say, so that rows stay short.
    if !it.answers.is_empty() {
        row["answers"] = json!(it.answers);
    }
    if !it.prompt_cuts.is_empty() {
        row["prompt_cuts"] = json!(it.prompt_cuts);
    }
    if !it.local_fixes.is_empty() {
        row["local_fixes"] = json!(it.local_fixes);
    }
    if !it.values_from_code.is_empty() {
        row["values_from_code"] = json!(it.values_from_code);
    }
    // A `--since` run's kept iterations: diff coverage of the change before and after.
    let diff = it
        .verdict
        .as_ref()
        .filter(|_| it.commit.is_some())
        .and_then(|v| Some((v, v.coverage.as_ref()?.diff.as_ref()?)));
    if let Some((v, d)) = diff {
        row["diff_coverage"] = json!({
            "before": v.diff_coverage_before,
            "after": d.percent,
            "covered": d.covered,
            "lines": d.lines,
        });
    }
    row
}

fn log_row(it: &Iteration) -> Value {
    json!({
        "n": it.n,
        "target": it.target,
        "focus": it.focus,
        "kind": it.kind.as_str(),
        "outcome": it.outcome.map_or("", Outcome::as_str),
        "reason": it.reason,
        "tests_added": it.tests_added,
        "tests_fixed": it.tests_fixed,
        "commit": it.commit,
        "files": it.files,
        "llm_calls": it.llm_calls,
        "tokens_in": it.tokens_in,
        "tokens_out": it.tokens_out,
        "tokens_cached": it.tokens_cached,
        "tokens_cache_write": it.tokens_cache_write,
        // Null when a call of the iteration had no price.
        "cost_usd": it.cost().map(crate::cost::cents4),
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
        "funnel": it.verdict.as_ref().map(|v| funnel_counts(&v.funnel)),
        "dropped": it.verdict.as_ref().map(|v| dropped_by_stage(&v.funnel)),
        "mutation": it.verdict.as_ref().and_then(|v| v.mutation.as_ref()).map(|m| json!({
            "made": m.made,
            "killed": m.killed,
            "timed_out": m.timed_out,
            "survived": m.survived,
            "not_applied": m.not_applied,
            "candidates": m.candidates,
            "score": m.score().map(round1),
            "asserts_nothing": m.asserts_nothing,
            // Tests with no assertion that caught mutants only by crashing them.
            "crash_only": m.crash_only.iter().map(|c| json!({
                "test": c.test,
                "crashed": c.crashed,
                "timed_out": c.timed_out,
                "why": c.describe(),
            })).collect::<Vec<_>>(),
            // How the kept tests caught the killed mutants, each once: by an assertion, a time
            // limit, or only a crash (null for runs saved before kills had kinds).
            "by_assertion": m.kept_kills.map(|k| k.assertion),
            "by_timeout": m.kept_kills.map(|k| k.timeout),
            "by_crash": m.kept_kills.map(|k| k.crash),
            "checked_score": m.checked_score().map(round1),
            "dropped": m.dropped,
            "seconds": round2(m.seconds),
            "uncapped_seconds": m.uncapped_seconds().map(round1),
        })),
        "polluters": it.verdict.as_ref().map(|v| v.funnel.dropped(StageId::Clean).to_vec()).unwrap_or_default(),
        "coverage": it.verdict.as_ref().filter(|_| it.commit.is_some()).map(|v| json!({
            "before": v.coverage_before,
            "after": v.coverage.as_ref().map(|c| c.percent),
        })),

        "repairs": it.verdict.as_ref().map(|v| v.repairs).unwrap_or(0),
        "findings": it.verdict.as_ref().map(|v| v.findings.clone()).unwrap_or_default(),
    })
}

/// Each stage's survivors, under its key (`{"proposed": 9, "collected": 9, ...}`).
pub fn funnel_counts(funnel: &Funnel) -> Value {
    json!(funnel.by_key())
}

/// The tests each dropping stage took out, under what they are (`{"flaky": [...], ...}`).
fn dropped_by_stage(funnel: &Funnel) -> Value {
    let dropped: std::collections::BTreeMap<&str, &[String]> = funnel
        .drops()
        .map(|(names, ids)| (names.key, ids))
        .collect();
    json!(dropped)
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
        return print_out(&format!("{}\n", serde_json::to_string_pretty(&rows)?));
    }
    print_out(&log_text(&state))
}

/// One line per finished iteration, in columns.
fn log_text(state: &RunState) -> String {
    let width = |f: fn(&Iteration) -> usize, least: usize| {
        state.finished().map(f).max().unwrap_or(least).max(least)
    };
    let target_w = width(|i| i.target.len(), 6);
    let focus_w = width(|i| i.focus.len(), 5);
    let mut out = format!(
        "{:>4}  {:<8}  {:<target_w$}  {:<focus_w$}  {:>5}  {:>8}  commit / reason\n",
        "#", "outcome", "target", "focus", "tests", "cost"
    );
    for it in state.finished() {
        let detail = match (&it.commit, &it.reason) {
            (Some(c), _) => git::short(c).to_string(),
            (None, Some(r)) => r.clone(),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{:>4}  {:<8}  {:<target_w$}  {:<focus_w$}  {:>5}  {:>8}  {detail}",
            it.n,
            it.outcome.map_or("", Outcome::as_str),
            it.target,
            it.focus,
            it.tests_added,
            it.cost().map_or_else(|| "unknown".into(), crate::cost::usd)
        );
    }
    out
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
            print_out(&report::render(&repo, &state, &templates)?)?;
        }
        (ReportFormat::Json, path) => {
            let text = serde_json::to_string_pretty(&report::model(&repo, &state))? + "\n";
            write_or_print(&text, path.as_deref())?;
        }
        (ReportFormat::Pr, path) => {
            write_or_print(
                &report::pr::body(&report::model(&repo, &state)),
                path.as_deref(),
            )?;
        }
    }
    Ok(())
}

/// `text` into the file at `path`, else on standard output.
fn write_or_print(text: &str, path: Option<&Path>) -> Result<()> {
    match path {
        Some(path) => {
            crate::fsutil::write_atomic(path, text.as_bytes())
                .map_err(|e| UserError(format!("cannot write {}: {e}", path.display())))?;
            eprintln!("report written to {}", path.display());
            Ok(())
        }
        None => print_out(text),
    }
}
