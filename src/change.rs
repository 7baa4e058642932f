//! `--since REV`: the change a run is scoped to (the diff from the merge base of REV and the base
//! commit to the base commit, as git computes it), and diff coverage over it as diff-cover
//! defines it (changed executable lines run by a test over changed executable lines), measured
//! from coverage.py's JSON report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use git2::{DiffOptions, Oid, Repository};

pub use crate::schema::{Change, DiffCoverage, FileDiffCoverage};

#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(
        "--since `{rev}` is not a commit in this repository: {detail} (fetch it first, e.g. `git fetch origin main`)"
    )]
    UnknownRevision { rev: String, detail: String },
    #[error(
        "--since `{rev}` and the base commit {base} share no history (no merge base): pass a \
         revision the base branches from (in CI, fetch with full history: `fetch-depth: 0`)"
    )]
    NoMergeBase { rev: String, base: String },
    #[error("git could not diff {from}..{to}: {detail}")]
    Diff {
        from: String,
        to: String,
        detail: String,
    },
}

/// The change from the merge base of `since` and `base` to `base`: the added and changed lines
/// of each of `modules` (the code under test) it touches, and how many other files it touches.
pub fn resolve(
    repo: &Repository,
    since: &str,
    base: Oid,
    modules: &[String],
) -> Result<Change, ChangeError> {
    let since_commit = repo
        .revparse_single(since)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| ChangeError::UnknownRevision {
            rev: since.to_string(),
            detail: e.message().to_string(),
        })?
        .id();
    let merge_base = repo
        .merge_base(since_commit, base)
        .map_err(|_| ChangeError::NoMergeBase {
            rev: since.to_string(),
            base: crate::git::short(&base.to_string()).to_string(),
        })?;
    let changed = changed_lines(repo, merge_base, base).map_err(|e| ChangeError::Diff {
        from: merge_base.to_string(),
        to: base.to_string(),
        detail: e.message().to_string(),
    })?;
    let mut change = Change {
        since: since.to_string(),
        since_commit: since_commit.to_string(),
        merge_base: merge_base.to_string(),
        ..Change::default()
    };
    for (path, lines) in changed {
        if modules.contains(&path) && !lines.is_empty() {
            change.files.insert(path, lines);
        } else {
            change.other_files += 1;
        }
    }
    Ok(change)
}

/// Every file the diff `from..to` touches, with the lines it adds or changes (new side, 1-based;
/// empty for a file only deleted or renamed).
fn changed_lines(
    repo: &Repository,
    from: Oid,
    to: Oid,
) -> Result<BTreeMap<String, Vec<u32>>, git2::Error> {
    let old = repo.find_commit(from)?.tree()?;
    let new = repo.find_commit(to)?.tree()?;
    let mut opts = DiffOptions::new();
    opts.context_lines(0);
    let diff = repo.diff_tree_to_tree(Some(&old), Some(&new), Some(&mut opts))?;
    let mut files: BTreeMap<String, Vec<u32>> = diff
        .deltas()
        .filter_map(|d| d.new_file().path().or(d.old_file().path()))
        .map(|p| (p.to_string_lossy().into_owned(), Vec::new()))
        .collect();
    diff.foreach(
        &mut |_, _| true,
        None,
        None,
        Some(&mut |delta, _hunk, line| {
            if line.origin() == '+'
                && let (Some(path), Some(n)) = (delta.new_file().path(), line.new_lineno())
            {
                files
                    .entry(path.to_string_lossy().into_owned())
                    .or_default()
                    .push(n);
            }
            true
        }),
    )?;
    Ok(files)
}

/// Diff coverage of `change` from a `coverage json` report; None when the report cannot be read.
/// A changed file the report does not list (never imported, outside `--source`) has no
/// executable line as far as coverage.py knows, and is left out, as diff-cover leaves it.
pub fn diff_coverage(change: &Change, coverage_json: &Path) -> Option<DiffCoverage> {
    let text = std::fs::read_to_string(coverage_json).ok()?;
    let report: serde_json::Value = serde_json::from_str(&text).ok()?;
    let files = report.get("files")?;
    let mut out = DiffCoverage::default();
    for (path, changed) in &change.files {
        let Some(file) = files.get(path) else {
            continue;
        };
        let measured = measure_file(file, changed);
        out.covered += measured.covered;
        out.lines += measured.lines;
        out.files.insert(path.clone(), measured);
    }
    out.percent = percent(out.covered, out.lines);
    Some(out)
}

/// One file of a coverage.py JSON report, over its changed lines.
fn measure_file(file: &serde_json::Value, changed: &[u32]) -> FileDiffCoverage {
    let numbers = |key: &str| -> BTreeSet<u32> {
        file.get(key)
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
            .collect()
    };
    let (executed, missing) = (numbers("executed_lines"), numbers("missing_lines"));
    let changed: BTreeSet<u32> = changed.iter().copied().collect();
    let covered = changed.intersection(&executed).count() as u32;
    let missing: Vec<u32> = changed.intersection(&missing).copied().collect();
    let lines = covered + missing.len() as u32;
    let missing_branches = file
        .get("missing_branches")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|pair| pair.get(0)?.as_u64())
        .filter(|from| u32::try_from(*from).is_ok_and(|f| changed.contains(&f)))
        .count() as u32;
    FileDiffCoverage {
        covered,
        lines,
        percent: percent(covered, lines),
        missing,
        missing_branches,
    }
}

fn percent(covered: u32, lines: u32) -> Option<f64> {
    (lines > 0).then(|| (10_000.0 * f64::from(covered) / f64::from(lines)).round() / 100.0)
}

/// `coverage` with the diff coverage of the run's change (`--since`) from the report at `json`.
pub fn with_diff(
    mut coverage: crate::schema::Coverage,
    state: &crate::schema::RunState,
    json: &Path,
) -> crate::schema::Coverage {
    if let Some(change) = &state.change {
        coverage.diff = diff_coverage(change, json);
    }
    coverage
}

/// `12.5%`, or `n/a` for a change with no executable line.
pub fn shown(percent: Option<f64>) -> String {
    percent.map_or_else(|| "n/a".into(), |p| format!("{p:.1}%"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::git::tests_support::commit;

    #[test]
    fn the_change_is_the_lines_the_base_adds_since_the_merge_base() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let first = commit(
            &repo,
            &[
                ("pkg/a.py", "x = 1\ny = 2\nz = 3\n"),
                ("pkg/b.py", "b = 1\n"),
                ("README.md", "hi\n"),
            ],
        );
        let second = commit(
            &repo,
            &[
                ("pkg/a.py", "x = 1\ny = 20\nz = 3\nw = 4\n"),
                ("README.md", "hello\n"),
                ("tests/test_a.py", "def test(): pass\n"),
            ],
        );
        let modules = vec!["pkg/a.py".to_string(), "pkg/b.py".to_string()];
        let change = resolve(&repo, &first.to_string(), second, &modules).unwrap();
        assert_eq!(change.merge_base, first.to_string());
        assert_eq!(change.lines("pkg/a.py"), &[2, 4]);
        assert!(change.lines("pkg/b.py").is_empty());
        assert_eq!(change.other_files, 2);
        // Since the base itself: nothing changed.
        let none = resolve(&repo, "HEAD", second, &modules).unwrap();
        assert!(none.files.is_empty());
        assert!(matches!(
            resolve(&repo, "no-such-branch", second, &modules),
            Err(ChangeError::UnknownRevision { .. })
        ));
        // A root commit of its own: no history in common.
        let orphan = {
            let sig = git2::Signature::now("t", "t@example.com").unwrap();
            let tree = repo.find_commit(first).unwrap().tree().unwrap();
            repo.commit(None, &sig, &sig, "orphan", &tree, &[]).unwrap()
        };
        let err = resolve(&repo, &orphan.to_string(), second, &modules).unwrap_err();
        assert!(matches!(err, ChangeError::NoMergeBase { .. }), "{err}");
        assert!(err.to_string().contains("fetch-depth: 0"), "{err}");
    }

    #[test]
    fn diff_coverage_counts_changed_executable_lines_as_diff_cover_does() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("coverage.json");
        std::fs::write(
            &json,
            r#"{"files": {"pkg/a.py": {"executed_lines": [1, 2, 3, 5], "missing_lines": [6, 7],
                "missing_branches": [[5, 6], [3, -1]]}}}"#,
        )
        .unwrap();
        let change = Change {
            // Line 4 is blank or a comment: not executable. pkg/c.py is not in the report.
            files: [
                ("pkg/a.py".to_string(), vec![2, 4, 5, 6]),
                ("pkg/c.py".to_string(), vec![1]),
            ]
            .into(),
            ..Change::default()
        };
        let d = diff_coverage(&change, &json).unwrap();
        assert_eq!((d.covered, d.lines), (2, 3));
        assert_eq!(d.percent, Some(66.67));
        let a = &d.files["pkg/a.py"];
        assert_eq!(a.missing, vec![6]);
        assert_eq!(a.missing_branches, 1);
        assert_eq!(a.gaps(), 2);
        assert!(!d.files.contains_key("pkg/c.py"));
        assert_eq!(shown(d.percent), "66.7%");
        assert_eq!(shown(None), "n/a");
    }
}
