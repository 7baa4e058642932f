//! What `--since` scopes a run to, and the diff coverage measured over it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The change a `--since` run is about: the diff from the merge base of `since` and the base
/// commit to the base commit, as lines of the code under test.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// `--since` as the user gave it.
    pub since: String,
    /// What it resolved to when the run started.
    pub since_commit: String,
    pub merge_base: String,
    /// Each module of the code under test the change touches, with its added or changed lines
    /// (1-based, at the base commit; the run adds tests only, so they stay valid).
    pub files: BTreeMap<String, Vec<u32>>,
    /// Files the change touches besides those (tests, docs, configuration).
    pub other_files: u32,
}

impl Change {
    /// The changed lines of `module`; empty for a module the change does not touch.
    pub fn lines(&self, module: &str) -> &[u32] {
        self.files.get(module).map_or(&[], Vec::as_slice)
    }
}

/// Diff coverage as diff-cover defines it: of the changed lines coverage.py counts as
/// executable, the share some test ran; per file and overall.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiffCoverage {
    /// Changed executable lines run by a test.
    pub covered: u32,
    /// Changed executable lines.
    pub lines: u32,
    /// `covered / lines` in percent; None when the change has no executable line.
    pub percent: Option<f64>,
    pub files: BTreeMap<String, FileDiffCoverage>,
}

/// One changed file's diff coverage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileDiffCoverage {
    pub covered: u32,
    pub lines: u32,
    pub percent: Option<f64>,
    /// Changed executable lines no test runs.
    pub missing: Vec<u32>,
    /// Branches from changed lines no test takes: with `missing`, what a target's priority is.
    #[serde(default)]
    pub missing_branches: u32,
}

impl FileDiffCoverage {
    /// What is left to cover of the change in this file: lines never run, branches never taken.
    pub fn gaps(&self) -> u32 {
        self.missing.len() as u32 + self.missing_branches
    }
}
