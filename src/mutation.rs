//! The mutation check's data: the mutants the Python helper makes of a target module
//! (`python/mutants.py`), what the pytest plugin's mutation loop says of each
//! (`python/improve_plugin.py`), and the record an iteration keeps of them. Which tests that
//! drops is decided in `iteration::verify::judge`; the stage runs in
//! `iteration::verify::mutation`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One change to the target's source, as the helper made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mutant {
    pub id: u32,
    /// The line of the statement changed (as coverage.py counts it).
    pub line: u32,
    pub operator: String,
    /// The changed line, before and after (stripped), for a human.
    pub before: String,
    pub after: String,
    /// The bytes of the file replaced, and by what.
    pub start: u64,
    pub end: u64,
    pub text: String,
    /// The functions around the change, outermost first: (name, first line).
    pub scopes: Vec<(String, u32)>,
    /// The new tests (as `prune` names them) that cover the line.
    #[serde(default)]
    pub tests: Vec<String>,
}

/// What became of one mutant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MutantStatus {
    /// A test failed with it.
    Killed,
    /// A test ran past its time limit with it (stopped by an alarm): killed.
    TimedOut,
    /// A test never stopped with it: the process group was killed. Killed too.
    Hung,
    /// Every test covering it passed.
    Survived,
    /// It could not be put into the running code (no live function runs the line).
    NotApplied,
}

impl MutantStatus {
    fn parse(word: &str) -> Option<MutantStatus> {
        Some(match word {
            "killed" => MutantStatus::Killed,
            "timed out" => MutantStatus::TimedOut,
            "hung" => MutantStatus::Hung,
            "survived" => MutantStatus::Survived,
            "not applied" => MutantStatus::NotApplied,
            _ => return None,
        })
    }

    pub fn is_killed(self) -> bool {
        matches!(
            self,
            MutantStatus::Killed | MutantStatus::TimedOut | MutantStatus::Hung
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MutantStatus::Killed => "killed",
            MutantStatus::TimedOut => "timed out (killed)",
            MutantStatus::Hung => "hung (killed with its process group)",
            MutantStatus::Survived => "survived",
            MutantStatus::NotApplied => "not applied",
        }
    }
}

/// One line the plugin appends to its output file.
#[derive(Debug, Deserialize)]
struct Event {
    #[serde(default)]
    baseline: Option<Vec<String>>,
    #[serde(default)]
    start: Option<u32>,
    #[serde(default)]
    id: Option<u32>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    by: Vec<String>,
}

/// What the mutation processes said, merged over every process of one stage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Results {
    /// Tests that passed unmutated in the first process (None: it said nothing).
    pub baseline: Option<BTreeSet<String>>,
    /// Per mutant id: what became of it, and the tests that killed it.
    pub status: BTreeMap<u32, (MutantStatus, Vec<String>)>,
}

impl Results {
    /// Adds what one process wrote to `path`. A mutant it started and never finished was
    /// running when the process died: it hung (the process outlived its limit and was killed).
    pub fn read(&mut self, path: &Path) {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut running = None;
        for line in text.lines() {
            let Ok(event) = serde_json::from_str::<Event>(line) else {
                continue;
            };
            if let Some(passing) = event.baseline {
                self.baseline
                    .get_or_insert_with(|| passing.into_iter().collect());
            } else if let Some(id) = event.start {
                running = Some(id);
            } else if let (Some(id), Some(status)) = (
                event.id,
                event.status.as_deref().and_then(MutantStatus::parse),
            ) {
                self.status.entry(id).or_insert((status, event.by));
                running = running.filter(|r| *r != id);
            }
        }
        if let Some(id) = running {
            self.status
                .entry(id)
                .or_insert((MutantStatus::Hung, Vec::new()));
        }
    }

    /// The mutants of `all` nothing was said of yet.
    pub fn unfinished<'a>(&self, all: &'a [Mutant]) -> Vec<&'a Mutant> {
        all.iter()
            .filter(|m| !self.status.contains_key(&m.id))
            .collect()
    }
}

pub use crate::schema::{MutationCheck, Survivor};

impl MutationCheck {
    /// The record of `mutants` as `results` left them.
    pub fn from_results(mutants: &[Mutant], results: &Results, candidates: u32) -> Self {
        let mut check = MutationCheck {
            candidates,
            ..Default::default()
        };
        for m in mutants {
            match results.status.get(&m.id).map(|(s, _)| *s) {
                Some(MutantStatus::NotApplied) | None => check.not_applied += 1,
                Some(status) => {
                    check.made += 1;
                    if status.is_killed() {
                        check.killed += 1;
                    }
                    if matches!(status, MutantStatus::TimedOut | MutantStatus::Hung) {
                        check.timed_out += 1;
                    }
                    if status == MutantStatus::Survived {
                        check.survived.push(Survivor {
                            line: m.line,
                            operator: m.operator.clone(),
                            before: m.before.clone(),
                            after: m.after.clone(),
                        });
                    }
                }
            }
        }
        check
    }
}

/// Per new test (as `prune` names it): whether it killed a mutant, among those it was run
/// against. A test is judged only when it passed unmutated and some mutant on its lines was
/// put into the code; the others are absent.
pub fn kills_by_test(mutants: &[Mutant], results: &Results) -> BTreeMap<String, bool> {
    let mut judged = BTreeMap::new();
    let passing = |t: &String| results.baseline.as_ref().is_some_and(|b| b.contains(t));
    for m in mutants {
        let Some((status, by)) = results.status.get(&m.id) else {
            continue;
        };
        if *status == MutantStatus::NotApplied {
            continue;
        }
        for t in m.tests.iter().filter(|t| passing(t)) {
            let killed = judged.entry(t.clone()).or_insert(false);
            // A mutant whose process died under it names no test (which one was running is
            // not known): it counts for every test covering it.
            *killed |= by.contains(t) || (*status == MutantStatus::Hung && by.is_empty());
        }
    }
    judged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mutant(id: u32, tests: &[&str]) -> Mutant {
        Mutant {
            id,
            line: 10 + id,
            operator: "comparison".into(),
            before: "a < b".into(),
            after: "a <= b".into(),
            start: 0,
            end: 1,
            text: "<=".into(),
            scopes: vec![("f".into(), 1)],
            tests: tests.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn results(lines: &[&str]) -> Results {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, lines.join("\n")).unwrap();
        let mut r = Results::default();
        r.read(&path);
        r
    }

    #[test]
    fn a_mutant_started_and_never_finished_hung() {
        let r = results(&[
            r#"{"baseline": ["test_a", "test_b"]}"#,
            r#"{"start": 1}"#,
            r#"{"id": 1, "status": "killed", "by": ["test_a"]}"#,
            r#"{"start": 2}"#,
        ]);
        assert_eq!(r.status[&1], (MutantStatus::Killed, vec!["test_a".into()]));
        assert_eq!(r.status[&2].0, MutantStatus::Hung);
        let all = [mutant(1, &[]), mutant(2, &[]), mutant(3, &[])];
        let left: Vec<u32> = r.unfinished(&all).iter().map(|m| m.id).collect();
        assert_eq!(left, vec![3]);
    }

    #[test]
    fn a_test_that_kills_nothing_on_its_lines_is_found_and_others_are_not_judged() {
        let r = results(&[
            r#"{"baseline": ["test_a", "test_b", "test_c"]}"#,
            r#"{"id": 1, "status": "killed", "by": ["test_a"]}"#,
            r#"{"id": 2, "status": "survived", "by": []}"#,
            r#"{"id": 3, "status": "not applied", "why": "no live function"}"#,
            r#"{"id": 4, "status": "killed", "by": ["test_d"]}"#,
        ]);
        let mutants = [
            mutant(1, &["test_a", "test_b"]),
            mutant(2, &["test_b"]),
            mutant(3, &["test_c"]),
            mutant(4, &["test_d"]),
        ];
        let judged = kills_by_test(&mutants, &r);
        assert_eq!(judged.get("test_a"), Some(&true));
        assert_eq!(judged.get("test_b"), Some(&false));
        // Its only mutant was not applied; test_d did not pass unmutated.
        assert_eq!(judged.get("test_c"), None);
        assert_eq!(judged.get("test_d"), None);
        let check = MutationCheck::from_results(&mutants, &r, 9);
        assert_eq!((check.made, check.killed, check.not_applied), (3, 2, 1));
        assert_eq!(check.survived.len(), 1);
        assert_eq!(check.survived[0].describe(), "line 12: `a < b` -> `a <= b`");
        assert_eq!(
            check.summary(),
            "3 mutants, 2 killed, 1 survived: score 67% (4 of 9 possible changes made); 1 could not be applied"
        );
    }
}
