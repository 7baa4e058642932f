//! `improve show N`: one iteration, as text for a person or as JSON for scripts. Both are
//! rendered from one view, so they carry the same fields.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::artifacts::IterationFiles;
use crate::cli::GlobalArgs;
use crate::error::UserError;
use crate::git;
use crate::state::{AnswerNotes, Funnel, Iteration, Outcome, Seconds};
use crate::testid::names_up_to;
use crate::views::{funnel_counts, load, print_out};

#[derive(Debug, Serialize)]
pub struct ShowView {
    pub n: u32,
    pub run_id: String,
    pub target: String,
    pub focus: String,
    pub kind: &'static str,
    /// `kept`, `rejected`, `error`, or null while the iteration is in progress.
    pub outcome: Option<&'static str>,
    /// The last step reached (`finished` once done).
    pub step: &'static str,
    pub reason: Option<String>,
    pub pytest_summary: Option<String>,
    /// New tests that failed, and tests that passed before and broke.
    pub failing: Vec<String>,
    pub broke: Vec<String>,
    /// Each stage's survivors, under its key.
    #[serde(serialize_with = "as_counts")]
    pub funnel: Option<Funnel>,
    pub dropped: Vec<Dropped>,
    /// What the mutation check found (null: it did not run).
    pub mutation: Option<crate::mutation::MutationCheck>,
    pub repairs: u32,
    pub possible_bugs: Vec<PossibleBug>,
    pub coverage_before: Option<f64>,
    pub coverage_after: Option<f64>,
    /// A kept iteration of a `--since` run: the change's diff coverage before and after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff_coverage: Option<DiffShown>,
    pub commit: Option<String>,
    pub seconds: Seconds,
    pub llm_calls: u32,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// Of `tokens_in`, read from the server's cache and written to it.
    pub tokens_cached: u64,
    pub tokens_cache_write: u64,
    /// Percent of the prompt tokens read from the cache (null before any call).
    pub cached_share: Option<f64>,
    /// The iteration's dollars; null when a call had no price.
    pub cost_usd: Option<f64>,
    /// Each answered call: round, token classes and dollars.
    pub calls: Vec<crate::state::CallCost>,
    /// When each step ended, in seconds from the iteration's start.
    pub steps: Vec<(&'static str, f64)>,
    pub prompt: Option<String>,
    /// What was left out of the prompt to fit its budget.
    pub prompt_cuts: Vec<String>,
    pub answer: Option<String>,
    /// What the answers needed before pytest saw them.
    pub answers: AnswerNotes,
    /// What was fixed in the answers without the model.
    pub local_fixes: Vec<String>,
    /// Expected values taken from the code.
    pub values_from_code: Vec<String>,
    /// The kept commit's patch, or the rejected proposal's; null when it never became a file.
    pub diff: Option<String>,
}

/// Diff coverage before and after a kept iteration, as `show` gives it.
#[derive(Debug, Serialize)]
pub struct DiffShown {
    pub before: Option<f64>,
    pub after: Option<f64>,
    /// Changed executable lines run after it, of `lines`.
    pub covered: u32,
    pub lines: u32,
}

impl DiffShown {
    fn of(kept: &crate::state::Verdict) -> Option<DiffShown> {
        let after = kept.coverage.as_ref()?.diff.as_ref()?;
        Some(DiffShown {
            before: kept.diff_coverage_before,
            after: after.percent,
            covered: after.covered,
            lines: after.lines,
        })
    }
}

fn as_counts<S: serde::Serializer>(f: &Option<Funnel>, s: S) -> Result<S::Ok, S::Error> {
    f.as_ref().map(funnel_counts).serialize(s)
}

#[derive(Debug, Serialize)]
pub struct Dropped {
    /// `failing`, `flaky`, `redundant`, `asserts nothing` or `polluting`.
    pub why: &'static str,
    pub tests: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct PossibleBug {
    pub test: String,
    pub message: String,
}

fn view(repo_root: &Path, files: &IterationFiles, run_id: &str, it: &Iteration) -> ShowView {
    let v = it.verdict.as_ref();
    let list =
        |f: fn(&crate::state::Verdict) -> &Vec<String>| v.map(|v| f(v).clone()).unwrap_or_default();
    let dropped = v
        .map(|v| {
            (v.funnel.drops())
                .filter(|(_, ids)| !ids.is_empty())
                .map(|(names, ids)| Dropped {
                    why: names.word,
                    tests: ids.to_vec(),
                })
                .collect()
        })
        .unwrap_or_default();
    let kept_coverage = v.filter(|_| it.commit.is_some());
    let path_of = |p: std::path::PathBuf| p.exists().then(|| p.display().to_string());
    ShowView {
        n: it.n,
        run_id: run_id.to_string(),
        target: it.target.clone(),
        focus: it.focus.clone(),
        kind: it.kind.as_str(),
        outcome: it
            .is_finished()
            .then(|| it.outcome.map_or("", Outcome::as_str)),
        step: it.step.as_str(),
        reason: it.reason.clone(),
        pytest_summary: v.map(|v| v.pytest_summary.clone()),
        failing: list(|v| &v.new_failed),
        broke: list(|v| &v.regressions),
        funnel: v.map(|v| v.funnel.clone()),
        dropped,
        mutation: v.and_then(|v| v.mutation.clone()),
        repairs: v.map_or(0, |v| v.repairs),
        possible_bugs: v
            .map(|v| {
                v.findings
                    .iter()
                    .map(|f| PossibleBug {
                        test: f.test.clone(),
                        message: f.message.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        coverage_before: kept_coverage.and_then(|v| v.coverage_before),
        coverage_after: kept_coverage.and_then(|v| v.coverage.as_ref().map(|c| c.percent)),
        diff_coverage: kept_coverage.and_then(DiffShown::of),
        commit: it.commit.clone(),
        seconds: it.seconds,
        llm_calls: it.llm_calls,
        tokens_in: it.tokens_in,
        tokens_out: it.tokens_out,
        tokens_cached: it.tokens_cached,
        tokens_cache_write: it.tokens_cache_write,
        cached_share: crate::cost::share(it.tokens_cached, it.tokens_in),
        cost_usd: it.cost().map(crate::cost::cents4),
        calls: it.calls.clone(),
        steps: it
            .timeline
            .iter()
            .map(|t| {
                let ms = (t.at - it.started_at).num_milliseconds() as f64;
                (t.step.as_str(), (ms / 100.0).round() / 10.0)
            })
            .collect(),
        prompt: path_of(files.prompt()),
        prompt_cuts: it.prompt_cuts.clone(),
        answer: path_of(files.response(0)),
        answers: it.answers.clone(),
        local_fixes: it.local_fixes.clone(),
        values_from_code: it.values_from_code.clone(),
        diff: diff(repo_root, files, it),
    }
}

fn diff(repo_root: &Path, files: &IterationFiles, it: &Iteration) -> Option<String> {
    match &it.commit {
        Some(c) => git2::Oid::from_str(c).ok().and_then(|oid| {
            git::open(repo_root)
                .ok()
                .and_then(|repo| git::commit_patch(&repo, oid).ok())
        }),
        None => std::fs::read_to_string(files.diff()).ok(),
    }
}

pub fn render_text(v: &ShowView) -> String {
    let mut out = String::new();
    what_and_outcome(v, &mut out);
    verification(v, &mut out);
    cost_and_files(v, &mut out);
    out
}

/// What the iteration was about and how it ended.
fn what_and_outcome(v: &ShowView, out: &mut String) {
    let _ = writeln!(out, "iteration {} of run {}", v.n, v.run_id);
    let _ = writeln!(out, "target:   {}", v.target);
    let _ = writeln!(out, "focus:    {}", v.focus);
    let _ = writeln!(out, "kind:     {}", v.kind);
    let outcome = match v.outcome {
        Some(o) => o.to_string(),
        None => format!("in progress ({})", v.step),
    };
    let _ = writeln!(out, "outcome:  {outcome}");
    if let Some(r) = &v.reason {
        let _ = writeln!(out, "reason:   {r}");
    }
    if let Some(summary) = &v.pytest_summary {
        let _ = writeln!(out, "pytest:   {summary}");
    }
    if !v.failing.is_empty() {
        let _ = writeln!(out, "failing:  {}", v.failing.join(", "));
    }
    if !v.broke.is_empty() {
        let _ = writeln!(out, "broke:    {}", v.broke.join(", "));
    }
}

/// What verification did with the proposal's tests.
fn verification(v: &ShowView, out: &mut String) {
    if let Some(f) = &v.funnel {
        let _ = writeln!(out, "funnel:   {}", f.line());
    }
    for d in &v.dropped {
        let _ = writeln!(
            out,
            "dropped:  {} {}: {}",
            d.tests.len(),
            d.why,
            names_up_to(&d.tests, 5)
        );
    }
    if let Some(m) = &v.mutation {
        let uncapped = m
            .uncapped_seconds()
            .map(|s| format!("; all {} would take about {s:.0} s", m.candidates))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "mutants:  {} ({:.1} s{uncapped})",
            m.summary(),
            m.seconds
        );
        if let Some(k) = m.kept_kills {
            let score = m
                .checked_score()
                .map(|s| format!(": score {s:.0}% without crashes"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "kills:    {} by an assertion, {} by a time limit, {} only by a crash (kept tests){score}",
                k.assertion, k.timeout, k.crash
            );
        }
        for c in &m.crash_only {
            let name = c.test.rsplit("::").next().unwrap_or(&c.test);
            let _ = writeln!(out, "crashed:  {name} {}", c.describe());
        }
        for s in m.survived.iter().take(5) {
            let _ = writeln!(out, "survived: {}", s.describe());
        }
    }
    if v.repairs > 0 {
        let _ = writeln!(out, "repairs:  {} round(s) with the LLM", v.repairs);
    }
    for b in &v.possible_bugs {
        let _ = writeln!(out, "possible bug: {} -- {}", b.test, b.message);
    }
    if let (Some(b), Some(a)) = (v.coverage_before, v.coverage_after) {
        let _ = writeln!(out, "coverage: {b:.1}% -> {a:.1}%");
    }
    if let Some(d) = &v.diff_coverage {
        let _ = writeln!(
            out,
            "diff coverage: {} -> {} ({} of {} changed lines run)",
            crate::change::shown(d.before),
            crate::change::shown(d.after),
            d.covered,
            d.lines
        );
    }
    if let Some(c) = &v.commit {
        let _ = writeln!(out, "commit:   {c}");
    }
}

/// Where the time and the tokens went, the artifacts, and the diff.
fn cost_and_files(v: &ShowView, out: &mut String) {
    let s = &v.seconds;
    let _ = writeln!(
        out,
        "time:     {:.1}s total, {:.1}s LLM, {:.1}s pytest, {:.2}s Python helpers, {:.1}s waiting to keep, {:.2}s other; {} LLM call(s), {} tokens in, {} out",
        s.total,
        s.llm,
        s.tests,
        s.helpers,
        s.queued,
        s.own(),
        v.llm_calls,
        v.tokens_in,
        v.tokens_out
    );
    calls_text(v, out);
    if !v.steps.is_empty() {
        let steps: Vec<String> = v
            .steps
            .iter()
            .map(|(step, at)| format!("{step} +{at:.1}s"))
            .collect();
        let _ = writeln!(out, "steps:    {}", steps.join(", "));
    }
    for (label, path) in [("prompt", &v.prompt), ("answer", &v.answer)] {
        if let Some(p) = path {
            let _ = writeln!(out, "{label}:   {p}");
        }
    }
    if !v.prompt_cuts.is_empty() {
        let _ = writeln!(out, "to fit:   {}", v.prompt_cuts.join("; "));
    }
    let a = &v.answers;
    if !a.is_empty() {
        let _ = writeln!(
            out,
            "answers:  {} cut off ({} complete tests kept), {} repeating, {} repairs changing nothing, {} prompts refused as too long, {} repairs avoided by local fixes, {} expected values taken from the code",
            a.salvaged,
            a.salvaged_tests,
            a.repeating,
            a.unchanged_repairs,
            a.context_refusals,
            a.repairs_avoided,
            a.values_adopted
        );
    }
    for fix in &v.local_fixes {
        let _ = writeln!(out, "fixed:    {fix}");
    }
    for value in &v.values_from_code {
        let _ = writeln!(out, "value:    {value} (from the code)");
    }
    for stop in &a.stops {
        let which = match stop.round {
            0 => "the first answer".to_string(),
            k => format!("repair {k}"),
        };
        let _ = writeln!(
            out,
            "stopped:  {which} while streaming ({}): {} tokens received, about {} saved",
            stop.reason.replace('_', " "),
            stop.tokens_received,
            stop.tokens_saved
        );
    }
    match &v.diff {
        Some(d) => {
            let _ = writeln!(out, "\n{d}");
        }
        None => {
            let _ = writeln!(out, "\n(no diff: the proposal never became a file)");
        }
    }
}

pub fn show(global: &GlobalArgs, n: u32, as_json: bool) -> Result<()> {
    let (repo_root, store, state) = load(global)?;
    let Some(it) = state.iterations.iter().find(|i| i.n == n) else {
        return Err(UserError(format!(
            "iteration {n} does not exist: this run has {} (see `improve log`)",
            state.iterations.len()
        ))
        .into());
    };
    let files = store.run(&state.run_id).iteration(n);
    let v = view(&repo_root, &files, &state.run_id, it);
    if as_json {
        print_out(&format!("{}\n", serde_json::to_string_pretty(&v)?))
    } else {
        print_out(&render_text(&v))
    }
}

/// Each call's tokens and dollars, and the iteration's, with the share the cache served.
fn calls_text(v: &ShowView, out: &mut String) {
    let dollars = |c: Option<f64>| c.map_or_else(|| "unknown".into(), crate::cost::usd);
    for c in &v.calls {
        let which = match c.round {
            0 => "first".to_string(),
            k => format!("repair {k}"),
        };
        let _ = writeln!(
            out,
            "call:     {which}: {} tokens in ({} cached, {} written to cache), {} out, {}",
            c.tokens_in,
            c.tokens_cached,
            c.tokens_cache_write,
            c.tokens_out,
            dollars(c.cost_usd)
        );
    }
    if !v.calls.is_empty() {
        let share = v
            .cached_share
            .map(|s| format!("; {s:.1}% of prompt tokens read from cache"))
            .unwrap_or_default();
        let _ = writeln!(out, "cost:     {}{share}", dollars(v.cost_usd));
    }
}
