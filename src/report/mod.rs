//! The report: a model computed from the state and git (never estimated), rendered through the
//! `report.md.hbs` template, which a file of the same name in the state dir overrides.

use std::collections::BTreeMap;
use std::path::Path;

use git2::Repository;
use serde::Serialize;

use crate::fsutil::write_atomic;
use crate::git;
use crate::prompt::{self, Templates};
use crate::state::{
    AnswerNotes, Funnel, Iteration, Outcome, RejectReason, RunCounts, RunState, Seconds,
};
use crate::testid::TestId;

mod change;
pub mod pr;

pub use change::{ChangeReport, ChangedFile};

#[derive(Debug, Serialize)]
pub struct ReportModel {
    pub run_id: String,
    pub run_branch: String,
    pub base_short: String,
    pub state: String,
    pub stop_reason: Option<String>,
    /// Iterations and tests, as `status` counts them too.
    #[serde(flatten)]
    pub counts: RunCounts,
    /// Tests added in files the run created, and in files it changed.
    pub tests_in_created_files: u32,
    pub tests_in_changed_files: u32,
    pub coverage_baseline: Option<f64>,
    pub coverage_now: Option<f64>,
    /// The same, formatted for the template (`32.3`), so both read alike.
    pub coverage_baseline_pct: Option<String>,
    pub coverage_now_pct: Option<String>,
    /// Coverage of every module a kept iteration targeted, at the start and now.
    pub modules: Vec<ModuleCoverage>,
    pub focus_areas: Vec<FocusRow>,
    pub provider: String,
    pub model: String,
    pub llm: Vec<LlmRow>,
    pub llm_calls: u32,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub elapsed: String,
    pub elapsed_s: f64,
    pub time: TimeSplit,
    pub rejection_reasons: Vec<ReasonCount>,
    pub kept_iterations: Vec<KeptRow>,
    pub file_rows: Vec<FileRow>,
    /// What the run cost, and what a kept test cost.
    pub cost: ReportCost,
    /// The chart's file name beside the report, when one was drawn.
    pub chart: Option<String>,
    /// The funnel summed over every verified iteration, by stage key (`funnel.gain`).
    pub funnel: BTreeMap<&'static str, u32>,
    /// The same, stage by stage in order, with their labels (the template's table).
    pub funnel_stages: Vec<StageRow>,
    /// Tests dropped at each stage, summed, by what they are (`dropped.flaky`).
    pub dropped: BTreeMap<&'static str, u32>,
    /// The same, stage by stage in order, with their phrases (the template's sentence).
    pub dropped_stages: Vec<DropRow>,
    /// What the answers needed before pytest saw them, summed over the iterations.
    pub answers: AnswerNotes,
    pub answers_noted: bool,
    pub repairs: u32,
    /// The mutation check over the run (None: it never ran).
    pub mutation: Option<MutationTotals>,
    /// Tests the model stood by while they failed on an assertion: possible bugs in the code.
    pub findings: Vec<FindingRow>,
    /// For a run gathered from shards (`improve gather`): each shard as gather found it.
    pub gathered: Option<crate::state::Gathered>,
    /// For a `--since` run: the change and its diff coverage.
    pub change: Option<ChangeReport>,
}

/// The mutation check summed over the iterations that ran it, and over the kept ones.
#[derive(Debug, Default, Serialize)]
pub struct MutationTotals {
    pub iterations: u32,
    pub made: u32,
    pub killed: u32,
    pub timed_out: u32,
    pub seconds: String,
    pub kept_iterations: u32,
    pub kept_made: u32,
    pub kept_killed: u32,
    /// Percent of the kept iterations' mutants their tests killed.
    pub kept_score: Option<String>,
    /// Of those, the ones they caught by an assertion or a time limit (all kills for runs saved
    /// before kills had kinds), and their percent of the mutants made.
    pub kept_checked: u32,
    pub kept_checked_score: Option<String>,
    /// The ones they only crashed (an exception from the mutated code): out of that score.
    pub kept_crashed: u32,
    /// Tests dropped for asserting nothing although they killed mutants.
    pub crash_only: u32,
}

fn mutation_totals(finished: &[&Iteration]) -> Option<MutationTotals> {
    let mut t = MutationTotals::default();
    let mut seconds = 0.0;
    for it in finished {
        let Some(m) = it.verdict.as_ref().and_then(|v| v.mutation.as_ref()) else {
            continue;
        };
        t.iterations += 1;
        t.made += m.made;
        t.killed += m.killed;
        t.timed_out += m.timed_out;
        seconds += m.seconds;
        t.crash_only += m.crash_only.len() as u32;
        if it.outcome == Some(Outcome::Kept) {
            t.kept_iterations += 1;
            t.kept_made += m.made;
            t.kept_killed += m.killed;
            match m.kept_kills {
                Some(k) => {
                    t.kept_checked += k.assertion + k.timeout;
                    t.kept_crashed += k.crash;
                }
                None => t.kept_checked += m.killed,
            }
        }
    }
    t.seconds = format!("{seconds:.1}");
    t.kept_score = (t.kept_made > 0).then(|| pct(f64::from(t.kept_killed), f64::from(t.kept_made)));
    t.kept_checked_score =
        (t.kept_made > 0).then(|| pct(f64::from(t.kept_checked), f64::from(t.kept_made)));
    (t.iterations > 0).then_some(t)
}

/// One stage of the summed funnel.
#[derive(Debug, Serialize)]
pub struct StageRow {
    pub label: &'static str,
    pub survivors: u32,
}

/// The tests one stage dropped, summed.
#[derive(Debug, Serialize)]
pub struct DropRow {
    pub phrase: &'static str,
    pub count: u32,
}

#[derive(Debug, Serialize)]
pub struct FindingRow {
    pub n: u32,
    pub target: String,
    pub test: String,
    pub message: String,
    pub source: String,
}

#[derive(Debug, Serialize)]
pub struct ReasonCount {
    pub reason: String,
    pub count: u32,
}

#[derive(Debug, Serialize)]
pub struct KeptRow {
    pub n: u32,
    pub target: String,
    pub focus: String,
    pub tests_added: u32,
    pub commit: String,
    pub commit_short: String,
    pub subject: String,
    /// The iteration's dollars (`$0.012`), or `unknown`.
    pub cost: String,
    /// Overall coverage before and after this commit (percent, formatted), when measured.
    pub coverage_before: Option<String>,
    pub coverage_after: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ModuleCoverage {
    pub module: String,
    pub start: Option<String>,
    pub end: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct FocusRow {
    pub focus: String,
    pub iterations: u32,
    pub kept: u32,
    pub tests_added: u32,
    /// Share of all tests added, in percent.
    pub share: String,
}

#[derive(Debug, Serialize)]
pub struct LlmRow {
    pub llm: String,
    pub calls: u32,
    pub tokens_in: u64,
    pub tokens_out: u64,
}

#[derive(Debug, Serialize)]
pub struct FileRow {
    pub path: String,
    pub created: bool,
    pub tests: u32,
    pub iterations: Vec<u32>,
}

#[derive(Debug, Serialize)]
pub struct TimeSplit {
    pub llm_s: String,
    pub tests_s: String,
    pub other_s: String,
    /// Waiting for another iteration to finish keeping (`--jobs` above 1); None when nothing
    /// waited.
    pub queued_s: Option<String>,
    pub llm_pct: String,
    pub tests_pct: String,
    pub other_pct: String,
    pub queued_pct: String,
}

fn pct(part: f64, whole: f64) -> String {
    if whole <= 0.0 {
        return "0".into();
    }
    format!("{:.0}", 100.0 * part / whole)
}

pub fn model(repo: &Repository, state: &RunState) -> ReportModel {
    let finished: Vec<&Iteration> = state.finished().collect();
    let file_rows = file_rows(repo, state);
    let counts = state.counts();
    let tests_added = counts.tests_added;
    let start_cov = state.baseline.as_ref().and_then(|b| b.coverage.as_ref());
    let now_cov = state.coverage_now();
    let (funnel, repairs, findings) = verdict_totals(&finished);
    let mut answers = AnswerNotes::default();
    for it in &state.iterations {
        answers.add(&it.answers);
    }
    let (tokens_in, tokens_out) = state.tokens();
    let in_files = |created: bool| -> u32 {
        file_rows
            .iter()
            .filter(|f| f.created == created)
            .map(|f| f.tests)
            .sum()
    };
    ReportModel {
        funnel: funnel.by_key(),
        funnel_stages: funnel
            .counts()
            .map(|(s, survivors)| StageRow {
                label: s.label(),
                survivors,
            })
            .collect(),
        dropped: funnel
            .drops()
            .map(|(names, ids)| (names.key, ids.len() as u32))
            .collect(),
        dropped_stages: funnel
            .drops()
            .map(|(names, ids)| DropRow {
                phrase: names.phrase,
                count: ids.len() as u32,
            })
            .collect(),
        answers_noted: !answers.is_empty(),
        answers,
        repairs,
        mutation: mutation_totals(&finished),
        findings,
        run_id: state.run_id.clone(),
        run_branch: state.run_branch.clone(),
        base_short: git::short(&state.base_commit).to_string(),
        state: state.status.as_str().to_string(),
        stop_reason: state.stop_reason.clone(),
        counts,
        tests_in_created_files: in_files(true),
        tests_in_changed_files: in_files(false),
        coverage_baseline: start_cov.map(|c| c.percent),
        coverage_now: now_cov.map(|c| c.percent),
        coverage_baseline_pct: start_cov.map(|c| format!("{:.1}", c.percent)),
        coverage_now_pct: now_cov.map(|c| format!("{:.1}", c.percent)),
        modules: module_rows(state),
        focus_areas: focus_rows(&finished, tests_added),
        provider: state.settings.provider.as_str().to_string(),
        model: state.settings.model.clone(),
        llm: llm_rows(state),
        llm_calls: state.iterations.iter().map(|i| i.llm_calls).sum(),
        tokens_in,
        tokens_out,
        elapsed: humantime::format_duration(std::time::Duration::from_secs(
            state.elapsed_s.round() as u64,
        ))
        .to_string(),
        elapsed_s: (state.elapsed_s * 10.0).round() / 10.0,
        time: time_split(&finished),
        change: change::change_report(state),
        rejection_reasons: rejection_reasons(&finished),
        kept_iterations: kept_rows(repo, state),
        file_rows,
        cost: cost_summary(state),
        chart: None,
        gathered: state.gathered.clone(),
    }
}

/// Iterations not kept, by the kind of their reason, most frequent first.
fn rejection_reasons(finished: &[&Iteration]) -> Vec<ReasonCount> {
    let mut reasons: BTreeMap<&'static str, u32> = BTreeMap::new();
    for it in finished.iter().filter(|i| i.outcome != Some(Outcome::Kept)) {
        let kind = it.reject.unwrap_or(RejectReason::Unclassified);
        *reasons.entry(kind.as_str()).or_default() += 1;
    }
    let mut rows: Vec<ReasonCount> = reasons
        .into_iter()
        .map(|(reason, count)| ReasonCount {
            reason: reason.to_string(),
            count,
        })
        .collect();
    rows.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(&b.reason)));
    rows
}

fn kept_rows(repo: &Repository, state: &RunState) -> Vec<KeptRow> {
    state
        .kept()
        .map(|it| {
            let commit = it.commit.clone().unwrap_or_default();
            let subject = git2::Oid::from_str(&commit)
                .ok()
                .and_then(|oid| git::commit_message(repo, oid).ok())
                .and_then(|m| m.lines().next().map(str::to_string))
                .unwrap_or_default();
            let verdict = it.verdict.as_ref();
            KeptRow {
                coverage_before: verdict
                    .and_then(|v| v.coverage_before)
                    .map(|p| format!("{p:.1}")),
                coverage_after: verdict
                    .and_then(|v| v.coverage.as_ref())
                    .map(|c| format!("{:.1}", c.percent)),
                n: it.n,
                target: it.target.clone(),
                focus: it.focus.clone(),
                tests_added: it.tests_added,
                commit_short: git::short(&commit).to_string(),
                commit,
                subject,
                cost: it.cost().map_or_else(|| "unknown".into(), crate::cost::usd),
            }
        })
        .collect()
}

/// Files from git (what the kept commits really add or change), tests from the verdicts.
fn file_rows(repo: &Repository, state: &RunState) -> Vec<FileRow> {
    let mut rows: BTreeMap<String, FileRow> = BTreeMap::new();
    for it in state.kept() {
        let Some(oid) = it
            .commit
            .as_deref()
            .and_then(|c| git2::Oid::from_str(c).ok())
        else {
            continue;
        };
        for (path, created) in git::commit_changes(repo, oid).unwrap_or_default() {
            let tests = it.verdict.as_ref().map_or(0, |v| {
                v.new_tests
                    .iter()
                    .filter(|id| TestId::new(id).in_file(&path))
                    .count() as u32
            });
            let row = rows.entry(path.clone()).or_insert(FileRow {
                path,
                created,
                tests: 0,
                iterations: Vec::new(),
            });
            row.tests += tests;
            row.iterations.push(it.n);
        }
    }
    rows.into_values().collect()
}

/// Coverage of every module a kept iteration targeted, at the start and now.
fn module_rows(state: &RunState) -> Vec<ModuleCoverage> {
    let start_cov = state.baseline.as_ref().and_then(|b| b.coverage.as_ref());
    let now_cov = state.coverage_now();
    let mut touched: Vec<String> = state.kept().map(|i| i.target.clone()).collect();
    touched.sort();
    touched.dedup();
    touched
        .into_iter()
        .map(|m| ModuleCoverage {
            start: start_cov
                .and_then(|c| c.modules.get(&m))
                .map(|p| format!("{p:.1}")),
            end: now_cov
                .and_then(|c| c.modules.get(&m))
                .map(|p| format!("{p:.1}")),
            module: m,
        })
        .collect()
}

/// Per focus area in the order they first came up: iterations, kept, tests added.
fn focus_rows(finished: &[&Iteration], tests_added: u32) -> Vec<FocusRow> {
    let mut focus_order: Vec<String> = Vec::new();
    for it in finished {
        if !focus_order.contains(&it.focus) {
            focus_order.push(it.focus.clone());
        }
    }
    focus_order
        .into_iter()
        .map(|focus| {
            let of_focus: Vec<_> = finished.iter().filter(|i| i.focus == focus).collect();
            let kept: Vec<_> = of_focus
                .iter()
                .filter(|i| i.outcome == Some(Outcome::Kept))
                .collect();
            let added: u32 = kept.iter().map(|i| i.tests_added).sum();
            FocusRow {
                iterations: of_focus.len() as u32,
                kept: kept.len() as u32,
                tests_added: added,
                share: pct(f64::from(added), f64::from(tests_added)),
                focus,
            }
        })
        .collect()
}

/// Calls and tokens per LLM that answered (a resumed run may have switched).
fn llm_rows(state: &RunState) -> Vec<LlmRow> {
    let mut rows: BTreeMap<String, LlmRow> = BTreeMap::new();
    for it in state.iterations.iter().filter(|i| i.llm_calls > 0) {
        let name = it.llm.clone().unwrap_or_else(|| {
            format!(
                "{} {}",
                state.settings.provider.as_str(),
                state.settings.model
            )
        });
        let row = rows.entry(name.clone()).or_insert(LlmRow {
            llm: name,
            calls: 0,
            tokens_in: 0,
            tokens_out: 0,
        });
        row.calls += it.llm_calls;
        row.tokens_in += it.tokens_in;
        row.tokens_out += it.tokens_out;
    }
    rows.into_values().collect()
}

/// The funnel (with its dropped tests), repairs and findings summed over every verdict.
fn verdict_totals(finished: &[&Iteration]) -> (Funnel, u32, Vec<FindingRow>) {
    let mut funnel = Funnel::default();
    let mut repairs = 0;
    let mut findings = Vec::new();
    for it in finished {
        let Some(v) = &it.verdict else { continue };
        funnel.add(&v.funnel);
        repairs += v.repairs;
        findings.extend(v.findings.iter().map(|f| FindingRow {
            n: it.n,
            target: it.target.clone(),
            test: f.test.clone(),
            message: f.message.clone(),
            source: f.source.clone(),
        }));
    }
    (funnel, repairs, findings)
}

/// Where the iterations' time went: the LLM, pytest, the rest, and waiting to keep.
fn time_split(finished: &[&Iteration]) -> TimeSplit {
    let sum = |f: fn(&Seconds) -> f64| finished.iter().map(|i| f(&i.seconds)).sum::<f64>();
    let (llm, tests, total) = (sum(|s| s.llm), sum(|s| s.tests), sum(|s| s.total));
    let queued = sum(|s| s.queued);
    let other = (total - llm - tests - queued).max(0.0);
    TimeSplit {
        llm_s: format!("{llm:.1}"),
        tests_s: format!("{tests:.1}"),
        other_s: format!("{other:.1}"),
        queued_s: (queued >= 0.05).then(|| format!("{queued:.1}")),
        llm_pct: pct(llm, total),
        tests_pct: pct(tests, total),
        other_pct: pct(other, total),
        queued_pct: pct(queued, total),
    }
}

pub fn render(
    repo: &Repository,
    state: &RunState,
    templates: &Templates,
) -> Result<String, prompt::TemplateError> {
    render_with_chart(repo, state, templates, None)
}

fn render_with_chart(
    repo: &Repository,
    state: &RunState,
    templates: &Templates,
    chart: Option<String>,
) -> Result<String, prompt::TemplateError> {
    let mut m = model(repo, state);
    m.chart = chart;
    templates.render(prompt::REPORT, &m)
}

/// Writes the report and, beside it, its chart (`<report stem>-chart.svg`, linked from it).
pub fn write(
    repo: &Repository,
    state: &RunState,
    templates: &Templates,
    path: &Path,
) -> anyhow::Result<()> {
    let chart_name = crate::artifacts::StateFiles::chart_name(path);
    let points = crate::chart::points(state);
    let chart = if points.len() > 1 {
        let svg = crate::chart::render_svg(&points)?;
        let chart_path = path.with_file_name(&chart_name);
        write_atomic(&chart_path, svg.as_bytes()).map_err(|e| {
            anyhow::anyhow!("cannot write the chart to {}: {e}", chart_path.display())
        })?;
        Some(chart_name)
    } else {
        None
    };
    let text = render_with_chart(repo, state, templates, chart)?;
    write_atomic(path, text.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write the report to {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::rejection_reasons;
    use crate::state::{Iteration, Kind, Outcome, RejectReason, Step};

    fn rejected(n: u32, reject: Option<RejectReason>, text: &str) -> Iteration {
        let mut it = Iteration::new(n, "pkg/a.py".into(), "f".into(), Kind::Add);
        it.step = Step::Finished;
        it.outcome = Some(Outcome::Rejected);
        it.reason = Some(text.into());
        it.reject = reject;
        it
    }

    #[test]
    fn reasons_group_by_their_kind_whatever_their_words() {
        let its = [
            rejected(
                1,
                Some(RejectReason::NewTestsFail),
                "3 of 7 new tests fail: a, b",
            ),
            rejected(
                2,
                Some(RejectReason::NewTestsFail),
                "1 of 2 new tests fail: c",
            ),
            rejected(
                3,
                Some(RejectReason::UnsafePath),
                "unsafe path `../x.py`: ..",
            ),
            rejected(4, None, "a reason an older improve saved"),
        ];
        let rows = rejection_reasons(&its.iter().collect::<Vec<_>>());
        let got: Vec<(&str, u32)> = rows.iter().map(|r| (r.reason.as_str(), r.count)).collect();
        assert_eq!(
            got,
            [
                ("new tests fail", 2),
                ("unclassified (recorded by an older improve)", 1),
                ("unsafe path", 1),
            ]
        );
    }
}

/// The run's dollars beside its yield: total, per kept iteration, per kept test, and kept tests
/// per hour and per 100 calls. Figures in dollars are `unknown` when a call had no price.
#[derive(Debug, Serialize)]
pub struct ReportCost {
    /// The figures `status --json` carries (`cost_usd`, `cached_share`, `price`, ...).
    #[serde(flatten)]
    pub view: crate::cost::CostView,
    pub known: bool,
    pub total: String,
    pub this_invocation: String,
    pub per_kept_iteration: String,
    pub per_kept_test: String,
    pub kept_tests: u32,
    pub kept_tests_per_hour: Option<String>,
    pub kept_tests_per_100_calls: Option<String>,
    /// `table gpt-4o: 2.5,10,1.25 per million tokens`, or why there is none.
    pub price: String,
    pub table_hash: String,
    pub table_date: String,
}

fn cost_summary(state: &RunState) -> ReportCost {
    let view = crate::cost::CostView::of(state);
    let counts = state.counts();
    let kept_tests = counts.tests_added + counts.tests_fixed;
    let calls: u32 = state.iterations.iter().map(|i| i.llm_calls).sum();
    // Unrounded: the view's dollars are rounded for JSON.
    let total = crate::cost::run_total(state);
    let per = |n: u32| match (total, n) {
        (Some(c), n) if n > 0 => crate::cost::usd(c / f64::from(n)),
        (Some(_), _) => "n/a".into(),
        (None, _) => "unknown".into(),
    };
    let dollars = |c: Option<f64>| c.map_or_else(|| "unknown".into(), crate::cost::usd);
    let hours = state.elapsed_s / 3600.0;
    let price = match &view.price {
        Some(p) => match &p.price {
            Some(price) => format!(
                "{} price of `{}`{}: {} dollars per million tokens (in, out, cached in)",
                p.source.as_str(),
                p.model,
                p.entry
                    .as_ref()
                    .map(|e| format!(" (entry `{e}`)"))
                    .unwrap_or_default(),
                crate::cost::shown(&crate::cost::with_cached(price))
            ),
            None => format!(
                "unknown: improve's table has no price for `{}` and it was not served locally; pass --price IN,OUT[,CACHED_IN]",
                p.model
            ),
        },
        None => "not recorded (a run from before prices were kept)".into(),
    };
    ReportCost {
        known: view.cost_usd.is_some(),
        total: dollars(view.cost_usd),
        this_invocation: dollars(view.cost_usd_invocation),
        per_kept_iteration: per(counts.kept),
        per_kept_test: per(kept_tests),
        kept_tests,
        kept_tests_per_hour: (hours > 0.0).then(|| format!("{:.1}", f64::from(kept_tests) / hours)),
        kept_tests_per_100_calls: (calls > 0)
            .then(|| format!("{:.1}", f64::from(kept_tests) * 100.0 / f64::from(calls))),
        price,
        table_hash: crate::cost::table_hash(),
        table_date: crate::cost::table_date(),
        view,
    }
}
