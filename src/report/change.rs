//! The report's part about a `--since` run's change: diff coverage before and after, per file.

use serde::Serialize;

use crate::change::shown;
use crate::coverage::ranges;
use crate::git;
use crate::state::RunState;

/// The change and its diff coverage, as the report shows them.
#[derive(Debug, Serialize)]
pub struct ChangeReport {
    pub since: String,
    pub merge_base_short: String,
    /// Modules of the code under test the change touches, and other files it touches.
    pub modules: usize,
    pub other_files: u32,
    /// Diff coverage at the start and now (`62.5%`, `n/a`), and the changed executable lines.
    pub before: String,
    pub after: String,
    pub covered: Option<u32>,
    pub lines: Option<u32>,
    pub files: Vec<ChangedFile>,
}

/// One changed module: diff coverage at the start and now, and its changed lines no test runs.
#[derive(Debug, Serialize)]
pub struct ChangedFile {
    pub path: String,
    pub before: String,
    pub after: String,
    /// Changed executable lines.
    pub lines: Option<u32>,
    /// `12, 30-33`, empty when every changed line runs.
    pub uncovered: String,
}

pub fn change_report(state: &RunState) -> Option<ChangeReport> {
    let change = state.change.as_ref()?;
    let (start, now) = (state.diff_coverage_baseline(), state.diff_coverage_now());
    let files = change
        .files
        .keys()
        .map(|path| {
            let (b, n) = (
                start.and_then(|d| d.files.get(path)),
                now.and_then(|d| d.files.get(path)),
            );
            ChangedFile {
                path: path.clone(),
                before: b.map_or_else(|| "-".into(), |f| shown(f.percent)),
                after: n.map_or_else(|| "-".into(), |f| shown(f.percent)),
                lines: n.map(|f| f.lines),
                uncovered: n.map(|f| ranges(&f.missing)).unwrap_or_default(),
            }
        })
        .collect();
    Some(ChangeReport {
        since: change.since.clone(),
        merge_base_short: git::short(&change.merge_base).to_string(),
        modules: change.files.len(),
        other_files: change.other_files,
        before: start.map_or_else(|| "not measured".into(), |d| shown(d.percent)),
        after: now.map_or_else(|| "not measured".into(), |d| shown(d.percent)),
        covered: now.map(|d| d.covered),
        lines: now.map(|d| d.lines),
        files,
    })
}
