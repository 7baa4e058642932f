//! The report: a model computed from the state and git (never estimated), rendered through the
//! `report.md.hbs` template, which a file of the same name in the state dir overrides.

use std::collections::BTreeMap;
use std::path::Path;

use git2::Repository;
use serde::Serialize;

use crate::git;
use crate::prompt::{self, Templates};
use crate::state::{Outcome, RunState, write_atomic};

#[derive(Debug, Serialize)]
pub struct ReportModel {
    pub run_id: String,
    pub run_branch: String,
    pub base_short: String,
    pub state: String,
    pub stop_reason: Option<String>,
    pub iterations_target: u32,
    pub iterations_done: u32,
    pub kept: u32,
    pub rejected: u32,
    pub errors: u32,
    pub tests_baseline: Option<u32>,
    pub tests_now: Option<u32>,
    pub tests_added: u32,
    pub tests_fixed: u32,
    pub coverage_baseline: Option<f64>,
    pub coverage_now: Option<f64>,
    /// The same, formatted for the template (`32.3`), so both read alike.
    pub coverage_baseline_pct: Option<String>,
    pub coverage_now_pct: Option<String>,
    pub provider: String,
    pub model: String,
    pub llm_calls: u32,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub elapsed: String,
    pub avg_llm_s: String,
    pub avg_tests_s: String,
    pub avg_other_s: String,
    pub rejection_reasons: Vec<ReasonCount>,
    pub kept_iterations: Vec<KeptRow>,
    pub files: Vec<String>,
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
}

/// Groups reasons by their general kind ("3 of 7 new tests fail: ..." -> "new tests fail").
pub fn reason_class(reason: &str) -> String {
    let head = reason.split(':').next().unwrap_or(reason).trim();
    let words: Vec<&str> = head
        .split_whitespace()
        .filter(|w| !w.chars().all(|c| c.is_ascii_digit()) && *w != "of")
        .collect();
    words.join(" ")
}

pub fn model(repo: &Repository, state: &RunState) -> ReportModel {
    let finished: Vec<_> = state.finished().collect();
    let mut reasons: BTreeMap<String, u32> = BTreeMap::new();
    for it in finished.iter().filter(|i| i.outcome != Some(Outcome::Kept)) {
        *reasons
            .entry(reason_class(it.reason.as_deref().unwrap_or("unknown")))
            .or_default() += 1;
    }
    let mut rejection_reasons: Vec<ReasonCount> = reasons
        .into_iter()
        .map(|(reason, count)| ReasonCount { reason, count })
        .collect();
    rejection_reasons.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(&b.reason)));

    let kept_iterations: Vec<KeptRow> = state
        .kept()
        .map(|it| {
            let commit = it.commit.clone().unwrap_or_default();
            let subject = git2::Oid::from_str(&commit)
                .ok()
                .and_then(|oid| git::commit_message(repo, oid).ok())
                .and_then(|m| m.lines().next().map(str::to_string))
                .unwrap_or_default();
            KeptRow {
                n: it.n,
                target: it.target.clone(),
                focus: it.focus.clone(),
                tests_added: it.tests_added,
                commit_short: git::short(&commit).to_string(),
                commit,
                subject,
            }
        })
        .collect();
    let files: Vec<String> = state.kept().flat_map(|i| i.files.iter().cloned()).collect();
    let (tokens_in, tokens_out) = state.tokens();
    let count = finished.len().max(1) as f64;
    let sum =
        |f: fn(&crate::state::Seconds) -> f64| finished.iter().map(|i| f(&i.seconds)).sum::<f64>();
    let (llm, tests, total) = (sum(|s| s.llm), sum(|s| s.tests), sum(|s| s.total));
    ReportModel {
        run_id: state.run_id.clone(),
        run_branch: state.run_branch.clone(),
        base_short: git::short(&state.base_commit).to_string(),
        state: format!("{:?}", state.status).to_lowercase(),
        stop_reason: state.stop_reason.clone(),
        iterations_target: state.iterations_target,
        iterations_done: state.iterations_done(),
        kept: state.count(Outcome::Kept),
        rejected: state.count(Outcome::Rejected),
        errors: state.count(Outcome::Error),
        tests_baseline: state.baseline.as_ref().map(|b| b.tests),
        tests_now: state.tests_now(),
        tests_added: state.kept().map(|i| i.tests_added).sum(),
        tests_fixed: state.kept().map(|i| i.tests_fixed).sum(),
        coverage_baseline: state
            .baseline
            .as_ref()
            .and_then(|b| b.coverage.as_ref())
            .map(|c| c.percent),
        coverage_now: state.coverage_now().map(|c| c.percent),
        coverage_baseline_pct: state
            .baseline
            .as_ref()
            .and_then(|b| b.coverage.as_ref())
            .map(|c| format!("{:.1}", c.percent)),
        coverage_now_pct: state.coverage_now().map(|c| format!("{:.1}", c.percent)),
        provider: state.settings.provider.as_str().to_string(),
        model: state.settings.model.clone(),
        llm_calls: state.iterations.iter().map(|i| i.llm_calls).sum(),
        tokens_in,
        tokens_out,
        elapsed: humantime::format_duration(std::time::Duration::from_secs(
            state.elapsed_s.round() as u64,
        ))
        .to_string(),
        avg_llm_s: format!("{:.1}", llm / count),
        avg_tests_s: format!("{:.1}", tests / count),
        avg_other_s: format!("{:.1}", (total - llm - tests).max(0.0) / count),
        rejection_reasons,
        kept_iterations,
        files,
    }
}

pub fn render(
    repo: &Repository,
    state: &RunState,
    templates: &Templates,
) -> Result<String, prompt::TemplateError> {
    templates.render(prompt::REPORT, &model(repo, state))
}

pub fn write(
    repo: &Repository,
    state: &RunState,
    templates: &Templates,
    path: &Path,
) -> anyhow::Result<()> {
    let text = render(repo, state, templates)?;
    write_atomic(path, text.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write the report to {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::reason_class;

    #[test]
    fn reasons_group_by_kind() {
        assert_eq!(
            reason_class("3 of 7 new tests fail: test_a, test_b"),
            "new tests fail"
        );
        assert_eq!(
            reason_class("1 of 2 new tests fail: test_c"),
            "new tests fail"
        );
        assert_eq!(
            reason_class("invalid Python: line 3: invalid syntax"),
            "invalid Python"
        );
        assert_eq!(
            reason_class("unsafe path `../x.py`: contains `..` or `.`"),
            "unsafe path `../x.py`"
        );
    }
}
