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

/// How a test failed under a mutant, as the plugin classified its exception.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KillKind {
    /// A failed `assert`, `pytest.raises`/`warns` not met, a unittest or mock `assert*`.
    Assertion,
    /// The run went past its time limit (or never stopped).
    Timeout,
    /// Any other exception: the mutated code raised it.
    Crash,
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
    #[serde(default)]
    how: BTreeMap<String, KillKind>,
}

/// What the mutation processes said, merged over every process of one stage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Results {
    /// Tests that passed unmutated in the first process (None: it said nothing).
    pub baseline: Option<BTreeSet<String>>,
    /// Per mutant id: what became of it, and the tests that killed it.
    pub status: BTreeMap<u32, (MutantStatus, Vec<String>)>,
    /// Per mutant id: how each test that killed it failed.
    pub how: BTreeMap<u32, BTreeMap<String, KillKind>>,
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
                if !self.status.contains_key(&id) {
                    self.how.insert(id, event.how);
                }
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

    /// How `test` killed mutant `id`, if it did. A process that died under a mutant named no
    /// test: the mutant hung for every test covering it. A kill the plugin gave no kind counts
    /// as an assertion.
    pub fn kill_kind(&self, id: u32, test: &str) -> Option<KillKind> {
        let (status, by) = self.status.get(&id)?;
        if *status == MutantStatus::Hung && by.is_empty() {
            return Some(KillKind::Timeout);
        }
        if !by.iter().any(|t| t == test) {
            return None;
        }
        let told = self.how.get(&id).and_then(|h| h.get(test)).copied();
        Some(told.unwrap_or(if *status == MutantStatus::Hung {
            KillKind::Timeout
        } else {
            KillKind::Assertion
        }))
    }

    /// The mutants of `all` nothing was said of yet.
    pub fn unfinished<'a>(&self, all: &'a [Mutant]) -> Vec<&'a Mutant> {
        all.iter()
            .filter(|m| !self.status.contains_key(&m.id))
            .collect()
    }
}

pub use crate::schema::{CrashOnly, KillKinds, MutationCheck, Survivor};

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

/// The mutants one test killed, by how it failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TestKills {
    pub assertion: u32,
    pub timeout: u32,
    pub crash: u32,
}

impl TestKills {
    pub fn any(&self) -> bool {
        self.assertion + self.timeout + self.crash > 0
    }

    fn add(&mut self, kind: KillKind) {
        match kind {
            KillKind::Assertion => self.assertion += 1,
            KillKind::Timeout => self.timeout += 1,
            KillKind::Crash => self.crash += 1,
        }
    }
}

/// Per new test (as `prune` names it): the mutants it killed, by kind, among those it was run
/// against. A test is judged only when it passed unmutated and some mutant on its lines was
/// put into the code; the others are absent.
pub fn kills_by_test(mutants: &[Mutant], results: &Results) -> BTreeMap<String, TestKills> {
    let mut judged: BTreeMap<String, TestKills> = BTreeMap::new();
    let passing = |t: &String| results.baseline.as_ref().is_some_and(|b| b.contains(t));
    for m in mutants {
        let Some((status, _)) = results.status.get(&m.id) else {
            continue;
        };
        if *status == MutantStatus::NotApplied {
            continue;
        }
        for t in m.tests.iter().filter(|t| passing(t)) {
            let kills = judged.entry(t.clone()).or_default();
            if let Some(kind) = results.kill_kind(m.id, t) {
                kills.add(kind);
            }
        }
    }
    judged
}

/// The mutants killed by the tests `kept` (prune names) says yes to, each counted once by the
/// best way one of them noticed it (an assertion, else a time limit, else a crash).
pub fn kept_kills(mutants: &[Mutant], results: &Results, kept: impl Fn(&str) -> bool) -> KillKinds {
    let mut kinds = KillKinds::default();
    for m in mutants {
        let best = m
            .tests
            .iter()
            .filter(|t| kept(t))
            .filter_map(|t| results.kill_kind(m.id, t))
            .min();
        match best {
            Some(KillKind::Assertion) => kinds.assertion += 1,
            Some(KillKind::Timeout) => kinds.timeout += 1,
            Some(KillKind::Crash) => kinds.crash += 1,
            None => {}
        }
    }
    kinds
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
        assert!(judged["test_a"].any());
        assert_eq!(
            judged["test_a"].assertion, 1,
            "a kill of no kind counts as an assertion"
        );
        assert!(!judged["test_b"].any());
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

    #[test]
    fn kills_have_kinds_and_the_kept_tests_count_each_mutant_once_by_its_best() {
        let r = results(&[
            r#"{"baseline": ["test_calls", "test_value"]}"#,
            r#"{"id": 1, "status": "killed", "by": ["test_calls", "test_value"], "how": {"test_calls": "crash", "test_value": "assertion"}}"#,
            r#"{"id": 2, "status": "killed", "by": ["test_calls"], "how": {"test_calls": "crash"}}"#,
            r#"{"id": 3, "status": "timed out", "by": ["test_value"], "how": {"test_value": "timeout"}}"#,
            r#"{"start": 4}"#,
        ]);
        let both = ["test_calls", "test_value"];
        let mutants = [
            mutant(1, &both),
            mutant(2, &both),
            mutant(3, &both),
            mutant(4, &both),
        ];
        let judged = kills_by_test(&mutants, &r);
        let calls = judged["test_calls"];
        // Mutant 4 hung with no test named: a timeout for every test covering it.
        assert_eq!((calls.assertion, calls.timeout, calls.crash), (0, 1, 2));
        let value = judged["test_value"];
        assert_eq!((value.assertion, value.timeout, value.crash), (1, 2, 0));
        let all = kept_kills(&mutants, &r, |_| true);
        assert_eq!(
            all,
            KillKinds {
                assertion: 1,
                timeout: 2,
                crash: 1
            }
        );
        let calls_only = kept_kills(&mutants, &r, |t| t == "test_calls");
        assert_eq!((calls_only.assertion, calls_only.crash), (0, 2));
    }
}
