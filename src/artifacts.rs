//! The one place that names the files improve keeps in its state dir. A resume finds an LLM
//! answer by its name here, `show` and the report read prompts and coverage through it, and a
//! pytest run writes its output under a [`Label`] from it; renaming a file is a change here and
//! nowhere else.
//!
//! ```text
//! <state dir>/state.json  lock  log.jsonl  report.md  report-chart.svg  archive/
//!             groups/<pgid>            test process groups of a live run
//!             scratch/                 plugin, bytecode cache, helper output
//!             worktrees/               the iterations' worktrees
//!             runs/<run id>/baseline/  the baseline's pytest runs
//!             runs/<run id>/iterations/<nnnn>/  one iteration's prompt, answers, runs, diff
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

/// The state dir's own files.
#[derive(Debug, Clone)]
pub struct StateFiles {
    dir: PathBuf,
}

/// The files of the commits a shard pushes (`improve work`): its run's state, and its claim.
pub mod shard {
    /// The same name as the state dir's own state file: it is that file.
    pub const STATE: &str = super::STATE_FILE;
    pub const CLAIM: &str = "claim.json";
}

const STATE_FILE: &str = "state.json";

impl StateFiles {
    pub fn new(dir: PathBuf) -> Self {
        StateFiles { dir }
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }
    pub fn lock(&self) -> PathBuf {
        self.dir.join("lock")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("log.jsonl")
    }
    pub fn report(&self) -> PathBuf {
        self.dir.join("report.md")
    }
    /// The file name of a report's chart, `<report stem>-chart.svg`: it goes beside the report,
    /// which links to it by this name.
    pub fn chart_name(report: &Path) -> String {
        let stem = report
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "report".into());
        format!("{stem}-chart.svg")
    }
    pub fn groups(&self) -> PathBuf {
        self.dir.join("groups")
    }
    pub fn scratch(&self) -> PathBuf {
        self.dir.join("scratch")
    }
    pub fn worktrees(&self) -> PathBuf {
        self.dir.join("worktrees")
    }
    /// Where an unreadable state file is moved by `--fresh`.
    pub fn archive(&self, stamp: &str) -> PathBuf {
        self.dir.join("archive").join(format!("state-{stamp}.json"))
    }
    pub fn run(&self, run_id: &str) -> RunFiles {
        RunFiles {
            dir: self.dir.join("runs").join(run_id),
        }
    }
}

/// What a run keeps in the state dir's `scratch/` for itself: nothing there is read by a
/// resume, and all of it may be deleted between runs.
pub mod scratch {
    use std::path::{Path, PathBuf};

    /// Where `improve_plugin.py` is written for `-p improve_plugin`.
    pub fn plugin_dir(scratch: &Path) -> PathBuf {
        scratch.join("plugin")
    }
    /// The plugin itself, in [`plugin_dir`]: its module name is what `-p` loads.
    pub fn plugin_file(plugin_dir: &Path) -> PathBuf {
        plugin_dir.join("improve_plugin.py")
    }
    /// The project's compiled bytecode, outside the worktrees.
    pub fn bytecode(scratch: &Path) -> PathBuf {
        scratch.join("bytecode")
    }
    /// What the test command printed when asked what it has.
    pub fn preflight_log(scratch: &Path) -> PathBuf {
        scratch.join("preflight.txt")
    }
    /// What bubblewrap printed when `--sandbox` was tried.
    pub fn sandbox_probe_log(scratch: &Path) -> PathBuf {
        scratch.join("preflight-sandbox.txt")
    }
    /// The ignored package files every worktree gets.
    pub fn overlay(scratch: &Path) -> PathBuf {
        scratch.join("overlay")
    }
    /// What `--setup-cmd` made, per worktree slot, with its log.
    pub fn prepared(scratch: &Path) -> PathBuf {
        scratch.join("prepared")
    }
    pub fn setup_log(prepared: &Path, slot: &str) -> PathBuf {
        prepared.join(format!("{slot}.setup.txt"))
    }
    /// The Python helper's standard error.
    pub fn helper_stderr(scratch: &Path) -> PathBuf {
        scratch.join("helper-stderr.txt")
    }
    /// Where the Python helper's program is written: `helper.py`, run as the script, and the
    /// modules it imports from its own folder.
    pub fn helper_dir(scratch: &Path) -> PathBuf {
        scratch.join("helper")
    }
    /// The helper's script, in [`helper_dir`].
    pub fn helper_script(helper_dir: &Path) -> PathBuf {
        helper_dir.join("helper.py")
    }
    /// The mutation operators the helper imports, beside its script.
    pub fn helper_mutants(helper_dir: &Path) -> PathBuf {
        helper_dir.join("mutants.py")
    }
    /// The local fixes of proposed test files the helper imports, beside its script.
    pub fn helper_localfix(helper_dir: &Path) -> PathBuf {
        helper_dir.join("localfix.py")
    }
    /// The expected values from the code (observe, then adopt) the helper imports.
    pub fn helper_expect(helper_dir: &Path) -> PathBuf {
        helper_dir.join("expect.py")
    }
}

/// The lock every run takes in the repository's git folder, whatever its state dir.
pub fn repo_lock(git_common_dir: &Path) -> PathBuf {
    git_common_dir.join("improve.lock")
}

/// Where `improve demo` copies the recording it replays.
pub fn demo_recording(state_dir: &Path) -> PathBuf {
    state_dir.join("demo-recording.json")
}

/// One run's files.
#[derive(Debug, Clone)]
pub struct RunFiles {
    dir: PathBuf,
}

impl RunFiles {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Where the state of this run goes when a new run replaces it.
    pub fn archived_state(&self, stamp: &str) -> PathBuf {
        self.dir.join(format!("state-archived-{stamp}.json"))
    }
    pub fn baseline(&self) -> PathBuf {
        self.dir.join("baseline")
    }
    /// The baseline's whole-suite run.
    pub fn baseline_suite(&self) -> PytestFiles {
        PytestFiles::new(self.baseline(), Label::Suite)
    }
    /// Gather's whole-suite run `probe` on the combined branch (the first, then bisection's).
    pub fn gather_suite(&self, probe: u32) -> PytestFiles {
        PytestFiles::new(self.dir.join("gather"), Label::Bisect(probe))
    }
    pub fn iteration(&self, n: u32) -> IterationFiles {
        IterationFiles {
            dir: self.dir.join("iterations").join(format!("{n:04}")),
        }
    }
}

/// One iteration's files: what was asked and answered, what was written, what pytest said.
#[derive(Debug, Clone)]
pub struct IterationFiles {
    dir: PathBuf,
}

impl IterationFiles {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The first prompt, as the model saw it (for the review).
    pub fn prompt(&self) -> PathBuf {
        self.dir.join("prompt.md")
    }
    /// The target module's source at the run branch's tip, read for its API (never imported).
    pub fn module_source(&self) -> PathBuf {
        self.dir.join("module.py")
    }
    /// The first request, which repair rounds continue.
    pub fn request(&self) -> PathBuf {
        self.dir.join("request.json")
    }
    /// The LLM's answer to request `round` (0: the first), saved before it is used.
    pub fn response(&self, round: u32) -> PathBuf {
        match round {
            0 => self.dir.join("response.json"),
            k => self.dir.join(format!("response-repair-{k}.json")),
        }
    }
    /// The prompt of repair round `round` (from 1).
    pub fn repair_prompt(&self, round: u32) -> PathBuf {
        self.dir.join(format!("repair-prompt-{round}.md"))
    }
    /// The test file taken from answer `round`.
    pub fn proposal(&self, round: u32) -> PathBuf {
        match round {
            0 => self.dir.join("proposal.py"),
            k => self.dir.join(format!("proposal-repair-{k}.py")),
        }
    }
    /// The diff of the iteration's commit, for `show` before it is kept.
    pub fn diff(&self) -> PathBuf {
        self.dir.join("diff.patch")
    }
    /// What each passing new test added to coverage.
    pub fn coverage_gain(&self) -> PathBuf {
        self.dir.join("coverage-gain.json")
    }
    pub fn pytest(&self, label: Label) -> PytestFiles {
        PytestFiles::new(self.dir.clone(), label)
    }
    /// A suite run's files by the label the verdict saved (`pytest-suite` when empty).
    pub fn suite_by_name(&self, saved: &str) -> PytestFiles {
        PytestFiles {
            dir: self.dir.clone(),
            stem: if saved.is_empty() {
                Label::Suite.to_string()
            } else {
                saved.to_string()
            },
        }
    }
}

/// Which pytest run of an iteration (or of the baseline) a set of files belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    /// The baseline's collection (`--collect-only`).
    Collect,
    /// The new test file, run 1 + reruns times.
    New,
    /// The new test file after repair round k.
    NewRepaired(u32),
    /// The new test file with its failing asserts recording what the code gave.
    Observed,
    /// The new test file with expected values taken from the code.
    NewAdopted,
    /// The fixed test file of a fix iteration.
    Fix,
    /// The whole suite.
    Suite,
    /// The whole suite again after dropping polluters, round k (from 2).
    SuiteRound(u32),
    /// The whole suite after replaying onto a tip that moved.
    SuiteReplayed,
    /// The whole suite again after dropping tests that stop coverage.
    SuiteCovered,
    /// Probe k of the bisection for a polluting test.
    Bisect(u32),
    /// Process k of the mutation check (the next one takes the mutants a killed one left).
    Mutants(u32),
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Label::Collect => write!(f, "pytest-collect"),
            Label::New => write!(f, "pytest-new"),
            Label::NewRepaired(k) => write!(f, "pytest-new-repair-{k}"),
            Label::Observed => write!(f, "pytest-observed"),
            Label::NewAdopted => write!(f, "pytest-new-adopted"),
            Label::Fix => write!(f, "pytest-fix"),
            Label::Suite => write!(f, "pytest-suite"),
            Label::SuiteRound(k) => write!(f, "pytest-suite-{k}"),
            Label::SuiteReplayed => write!(f, "pytest-suite-replayed"),
            Label::SuiteCovered => write!(f, "pytest-suite-covered"),
            Label::Bisect(k) => write!(f, "pytest-bisect-{k}"),
            Label::Mutants(k) => write!(f, "pytest-mutants-{k}"),
        }
    }
}

/// The files of one pytest run: its console output, JUnit report, coverage data and report,
/// and what our plugin wrote.
#[derive(Debug, Clone)]
pub struct PytestFiles {
    dir: PathBuf,
    stem: String,
}

impl PytestFiles {
    pub fn new(dir: PathBuf, label: Label) -> Self {
        PytestFiles {
            dir,
            stem: label.to_string(),
        }
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The label as saved in a verdict.
    pub fn name(&self) -> &str {
        &self.stem
    }
    fn with(&self, suffix: &str) -> PathBuf {
        self.dir.join(format!("{}{suffix}", self.stem))
    }
    pub fn output(&self) -> PathBuf {
        self.with(".txt")
    }
    pub fn junit(&self) -> PathBuf {
        self.with(".xml")
    }
    pub fn coverage_data(&self) -> PathBuf {
        self.with(".coverage")
    }
    pub fn coverage_json(&self) -> PathBuf {
        self.with(".coverage.json")
    }
    pub fn coverage_log(&self) -> PathBuf {
        self.with(".coverage.txt")
    }
    pub fn gain(&self) -> PathBuf {
        self.with(".gain.json")
    }
    /// The tests after which coverage stopped measuring as before (whole-suite runs).
    pub fn stoppers(&self) -> PathBuf {
        self.with(".stoppers.json")
    }
    /// A copy of the coverage report the gain is measured against, beside the run's other
    /// files: under --sandbox only they are visible.
    pub fn gain_before(&self) -> PathBuf {
        self.with(".gain-before.json")
    }
    pub fn project(&self) -> PathBuf {
        self.with(".project.json")
    }
    /// The mutants the plugin is to run (written by improve).
    pub fn mutants(&self) -> PathBuf {
        self.with(".mutants.json")
    }
    /// What the plugin said of each mutant, one JSON line per event.
    pub fn mutants_out(&self) -> PathBuf {
        self.with(".mutants.jsonl")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_ones_a_resume_of_an_older_run_finds() {
        let state = StateFiles::new(PathBuf::from("/s"));
        let it = state.run("r1").iteration(7);
        assert_eq!(it.dir(), Path::new("/s/runs/r1/iterations/0007"));
        assert_eq!(
            it.response(0),
            Path::new("/s/runs/r1/iterations/0007/response.json")
        );
        assert!(it.response(2).ends_with("response-repair-2.json"));
        assert!(it.repair_prompt(1).ends_with("repair-prompt-1.md"));
        assert!(it.proposal(1).ends_with("proposal-repair-1.py"));
        assert!(
            it.pytest(Label::SuiteRound(2))
                .coverage_json()
                .ends_with("pytest-suite-2.coverage.json")
        );
        assert!(
            it.suite_by_name("")
                .coverage_json()
                .ends_with("pytest-suite.coverage.json")
        );
        assert_eq!(
            state.run("r1").baseline_suite().junit(),
            Path::new("/s/runs/r1/baseline/pytest-suite.xml")
        );
        assert_eq!(
            StateFiles::chart_name(Path::new("/out/report.md")),
            "report-chart.svg"
        );
    }
}
