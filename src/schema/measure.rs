//! What pytest and coverage.py measured at the start of the run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Tests pytest collected and ran on the base commit.
    pub tests: u32,
    pub passed: Vec<String>,
    pub failed: Vec<String>,
    pub skipped: u32,
    pub summary: String,
    pub coverage: Option<Coverage>,
    pub seconds: f64,
    /// Files the project's own suite changes in its tree when it runs: not held against a
    /// proposal.
    #[serde(default)]
    pub side_effects: Vec<String>,
    /// Where the tests live, as pytest's configuration and collection said at the base commit.
    #[serde(default)]
    pub layout: TestLayout,
    /// Test files that do not import at the base commit because the project itself or a
    /// dependency does not: no fix iteration can mend those, so none is tried.
    #[serde(default)]
    pub unfixable: Vec<Unfixable>,
    /// Packages or modules of the code under test that do not import at the base commit while
    /// the project's own tests collect without them (an optional compiled extension, a private
    /// shim): never a target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<LeftOut>,
    /// Test ids (node ids) that one of two collections of the base commit had and the other
    /// did not: cases built from a set or a dict under another hash seed. Judged by outcome
    /// counts, not by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unstable_ids: Vec<String>,
}

/// Code under test left out of the targets, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeftOut {
    /// Its import name.
    pub name: String,
    /// The error importing it gave (`ModuleNotFoundError: No module named '_yaml._yaml'`).
    pub cause: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    /// Percent of statements and branches covered, as coverage.py reports it.
    pub percent: f64,
    /// Per module (path relative to the repo), percent covered.
    pub modules: BTreeMap<String, f64>,
    /// Per module, statements never run plus branches never taken: what target choice weighs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub missing: BTreeMap<String, u32>,
    /// Over the change of a `--since` run: diff coverage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<super::DiffCoverage>,
}

/// What pytest's collection at the base commit said about the project's tests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TestLayout {
    /// pytest's `testpaths` as configured, relative to the repository (may be empty).
    #[serde(default)]
    pub testpaths: Vec<String>,
    /// pytest's `python_files` patterns.
    #[serde(default)]
    pub python_files: Vec<String>,
    /// The files pytest collected tests from (doctests excepted), relative to the repository.
    #[serde(default)]
    pub test_files: Vec<String>,
    /// The config file pytest read, relative to the repository, if any.
    #[serde(default)]
    pub inifile: Option<String>,
}

/// A test file that does not import at the base commit for a reason no rewrite of it mends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unfixable {
    pub file: String,
    /// `ModuleNotFoundError: No module named 'humanize._version'`, and what to do.
    pub cause: String,
}

/// A mutant no new test noticed, as `show` and the next prompt put it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Survivor {
    pub line: u32,
    pub operator: String,
    pub before: String,
    pub after: String,
}

impl Survivor {
    /// `line 12: `if lo > hi:` -> `if lo >= hi:``
    pub fn describe(&self) -> String {
        format!("line {}: `{}` -> `{}`", self.line, self.before, self.after)
    }
}

/// What the mutation check found in one iteration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MutationCheck {
    /// Changes possible on the lines the new tests cover, before the cap (`--mutants`).
    pub candidates: u32,
    /// Mutants put into the code and run against the tests covering them.
    pub made: u32,
    /// Of those, killed by some test (`timed_out` included).
    pub killed: u32,
    /// Killed because a test ran past its time limit (or hung) with them.
    pub timed_out: u32,
    /// Mutants that could not be put into the running code.
    #[serde(default)]
    pub not_applied: u32,
    pub survived: Vec<Survivor>,
    /// New tests that killed none of the mutants on their lines (dropped unless
    /// `--require-mutation-kill=false`).
    #[serde(default)]
    pub asserts_nothing: Vec<String>,
    /// Whether those tests were dropped (alone, or with a proposal that had no other).
    #[serde(default)]
    pub dropped: bool,
    /// Wall time of the stage.
    pub seconds: f64,
    /// How the tests the stage kept caught the mutants killed (all the new tests when it kept
    /// none); absent in runs saved before kills had kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_kills: Option<KillKinds>,
    /// New tests that hold no assertion and caught mutants only by crashing them (or running
    /// past the time limit): they check nothing and are dropped like `asserts_nothing`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crash_only: Vec<CrashOnly>,
}

/// Killed mutants, each counted once by how the tests noticed it, the first kind that applies:
/// a failed assertion, a run past the time limit, or only an exception the mutated code raised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillKinds {
    pub assertion: u32,
    pub timeout: u32,
    pub crash: u32,
}

/// A test that asserts nothing, with the mutants it killed all the same: by crashing them, by
/// making them run past the time limit, or by a check it does not own (a `pytest.raises(Exception)`
/// left unmet, an `assert` in the code under test).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashOnly {
    pub test: String,
    pub crashed: u32,
    #[serde(default)]
    pub timed_out: u32,
    #[serde(default)]
    pub unasserted: u32,
}

impl CrashOnly {
    /// `killed 2 mutants only by crashing them; it asserts nothing`
    pub fn describe(&self) -> String {
        let n = self.crashed + self.timed_out + self.unasserted;
        let (noun, them) = if n == 1 {
            ("mutant", "it")
        } else {
            ("mutants", "them")
        };
        let mut ways = Vec::new();
        if self.crashed > 0 {
            ways.push(format!("crashing {them}"));
        }
        if self.timed_out > 0 {
            ways.push(format!("making {them} run past the time limit"));
        }
        if self.unasserted > 0 {
            ways.push("a failure it expects of any kind (`raises(Exception)`)".to_string());
        }
        format!(
            "killed {n} {noun} only by {}; it asserts nothing",
            ways.join(" or ")
        )
    }
}

impl MutationCheck {
    /// Percent of the mutants made that a test killed.
    pub fn score(&self) -> Option<f64> {
        (self.made > 0).then(|| 100.0 * f64::from(self.killed) / f64::from(self.made))
    }

    /// Percent of the mutants made that the kept tests caught by an assertion or a time limit
    /// (a crash alone leaves a wrong returned value unnoticed); the plain score for runs saved
    /// before kills had kinds.
    pub fn checked_score(&self) -> Option<f64> {
        let Some(k) = self.kept_kills else {
            return self.score();
        };
        (self.made > 0).then(|| 100.0 * f64::from(k.assertion + k.timeout) / f64::from(self.made))
    }

    /// What the stage would have taken without the cap (`--mutants`), at the same time per
    /// mutant: None when the cap left nothing out.
    pub fn uncapped_seconds(&self) -> Option<f64> {
        let tried = self.made + self.not_applied;
        (tried > 0 && self.candidates > tried)
            .then(|| self.seconds * f64::from(self.candidates) / f64::from(tried))
    }

    /// `12 mutants, 9 killed (2 timed out), 3 survived: score 75%`
    pub fn summary(&self) -> String {
        let mut out = format!("{} mutants, {} killed", self.made, self.killed);
        if self.timed_out > 0 {
            out.push_str(&format!(" ({} timed out)", self.timed_out));
        }
        out.push_str(&format!(", {} survived", self.survived.len()));
        if let Some(score) = self.score() {
            out.push_str(&format!(": score {score:.0}%"));
        }
        if self.candidates > self.made + self.not_applied {
            out.push_str(&format!(
                " ({} of {} possible changes made)",
                self.made + self.not_applied,
                self.candidates
            ));
        }
        if self.not_applied > 0 {
            out.push_str(&format!("; {} could not be applied", self.not_applied));
        }
        out
    }
}
