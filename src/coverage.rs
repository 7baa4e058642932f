//! What coverage.py measured, in the shapes improve uses: a run's totals and per-module
//! percentages ([`Coverage`], saved in the state), the lines and branches a module never ran
//! ([`Missing`], for the prompt), and what each new test adds ([`Gain`], from our plugin).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::schema::Coverage;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Missing {
    pub lines: Vec<u32>,
    /// (from, to); a negative `to` is an exit from the function, as coverage.py writes it.
    pub branches: Vec<(i64, i64)>,
}

impl Missing {
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.branches.is_empty()
    }

    /// What is missing on the lines in `shown` (a branch by the line it leaves).
    pub fn within(&self, shown: &std::collections::BTreeSet<u32>) -> Missing {
        let on = |line: i64| u32::try_from(line).is_ok_and(|l| shown.contains(&l));
        Missing {
            lines: self
                .lines
                .iter()
                .copied()
                .filter(|l| shown.contains(l))
                .collect(),
            branches: self
                .branches
                .iter()
                .copied()
                .filter(|(from, _)| on(*from))
                .collect(),
        }
    }

    /// What is missing outside the line ranges `dead` ([first, last] each).
    pub fn outside(&self, dead: &[(u32, u32)]) -> Missing {
        let live = |l: u32| !dead.iter().any(|&(a, b)| (a..=b).contains(&l));
        Missing {
            lines: self.lines.iter().copied().filter(|&l| live(l)).collect(),
            branches: (self.branches.iter().copied())
                .filter(|&(from, _)| u32::try_from(from).map_or(true, live))
                .collect(),
        }
    }

    /// `lines 16, 24, 54-58; branches 15->16, 23->exit`
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.lines.is_empty() {
            parts.push(format!("lines {}", ranges(&self.lines)));
        }
        if !self.branches.is_empty() {
            let shown: Vec<String> = self
                .branches
                .iter()
                .map(|(from, to)| {
                    if *to < 0 {
                        format!("{from}->exit")
                    } else {
                        format!("{from}->{to}")
                    }
                })
                .collect();
            parts.push(format!("branches {}", shown.join(", ")));
        }
        parts.join("; ")
    }
}

/// `16, 24, 54-58`
pub fn ranges(lines: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let start = lines[i];
        let mut end = start;
        while i + 1 < lines.len() && lines[i + 1] == end + 1 {
            i += 1;
            end = lines[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(", ")
}

/// The missing lines and branches of `module` in a `coverage json` file.
pub fn read_missing(coverage_json: &Path, module: &str) -> Option<Missing> {
    let text = std::fs::read_to_string(coverage_json).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let file = value.get("files")?.get(module)?;
    let lines = file
        .get("missing_lines")
        .and_then(|l| l.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_u64())
                .filter_map(|v| u32::try_from(v).ok())
                .collect()
        })
        .unwrap_or_default();
    let branches = file
        .get("missing_branches")
        .and_then(|b| b.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|pair| Some((pair.get(0)?.as_i64()?, pair.get(1)?.as_i64()?)))
                .collect()
        })
        .unwrap_or_default();
    Some(Missing { lines, branches })
}

/// Overall and per-file percent from `coverage json`.
pub fn parse_report(json: &str) -> Option<Coverage> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let percent = value.get("totals")?.get("percent_covered")?.as_f64()?;
    let mut modules = BTreeMap::new();
    let mut missing = BTreeMap::new();
    if let Some(files) = value.get("files").and_then(|f| f.as_object()) {
        for (path, data) in files {
            let summary = data.get("summary");
            if let Some(p) = summary
                .and_then(|s| s.get("percent_covered"))
                .and_then(|p| p.as_f64())
            {
                modules.insert(path.clone(), round2(p));
            }
            let count = |key: &str| {
                summary
                    .and_then(|s| s.get(key))
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0)
            };
            let gaps = count("missing_lines") + count("missing_branches");
            missing.insert(path.clone(), u32::try_from(gaps).unwrap_or(u32::MAX));
        }
    }
    Some(Coverage {
        percent: round2(percent),
        modules,
        missing,
        diff: None,
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// What each new test adds to the package's coverage (worked out by `python/improve_plugin.py`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Gain {
    /// Per test (as `prune` names it), per module: the lines and branches it alone reaches.
    pub adds: BTreeMap<String, BTreeMap<String, Added>>,
    /// Tests that reach nothing the suite at the tip and earlier candidates did not.
    pub redundant: Vec<String>,
    /// Per test, per module: every line it ran (the lines the mutation check mutates).
    #[serde(default)]
    pub covers: BTreeMap<String, BTreeMap<String, Vec<u32>>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Added {
    pub lines: Vec<u32>,
    pub branches: Vec<(i64, i64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_json_totals_and_files() {
        let json = r#"{"totals": {"percent_covered": 61.2345}, "files": {"pkg/a.py": {"summary": {"percent_covered": 50.0}}}}"#;
        let c = parse_report(json).unwrap();
        assert_eq!(c.percent, 61.23);
        assert_eq!(c.modules.get("pkg/a.py"), Some(&50.0));
    }
}
