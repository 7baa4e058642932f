//! Running pytest on untrusted tests, as a child of [`crate::process`] (its own process group,
//! killed whole on timeout or cancellation; stdin closed; output to a file, so a grandchild
//! holding a pipe cannot hang us; an environment without secrets), under coverage.py and with
//! our plugin when they are there. Results come from pytest's JUnit XML ([`junit`]), never from
//! parsing its console text; coverage from coverage.py's JSON ([`crate::coverage`]). Where each
//! run's files go is [`crate::artifacts::PytestFiles`]'s to say.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::artifacts::PytestFiles;
use crate::coverage::{self, Coverage, Gain};
use crate::process::{run_helper, spawn_and_wait, test_environment, with_python_bin};
use crate::state::Stopper;

mod junit;
pub mod plugin_env;
mod sandbox;

pub use crate::process::ProcessError as PytestError;
pub use junit::{CaseOutcome, TestCase, parse_junit, strip_ansi, summary_line};
pub use sandbox::{sandbox_preflight, sandboxed};

/// How to start pytest: the words of `--test-cmd`, and coverage settings when coverage.py can
/// wrap it (only when the command is `<python> -m pytest ...`).
#[derive(Debug, Clone)]
pub struct TestCommand {
    pub words: Vec<String>,
    pub coverage: Option<CoverageSpec>,
    pub timeout: Duration,
    /// The folders, relative to the worktree, that hold the packages (`""`, `src`, a declared
    /// source root such as pypng's `code`: see [`crate::project::import_root`]). They go
    /// first on PYTHONPATH so an editable install of the user's checkout cannot make the tests
    /// import the user's working tree instead of the worktree under test.
    pub import_roots: Vec<String>,
    /// The top-level import names of the code under test, checked in [`Measure::Discover`].
    pub import_names: Vec<String>,
    /// Arguments that turn off plugins which would fight ours (pytest-cov's own coverage,
    /// xdist's workers): see [`preflight`].
    pub extra_args: Vec<String>,
    /// Run every test under bubblewrap (`--sandbox`).
    pub sandbox: bool,
    /// Variables the user lets through to the tests beyond the allow-list (`--pass-env`).
    pub pass_env: Vec<String>,
    /// Where `improve_plugin.py` was written (see [`install_plugin`]); None runs pytest bare.
    pub plugin_dir: Option<PathBuf>,
    /// Where the project's compiled bytecode is kept (our plugin's `sys.pycache_prefix`),
    /// outside the worktrees, so that runs in a reused worktree compile only what changed. None
    /// (and always under the sandbox, where a test could plant bytecode for a later run to
    /// load), or no plugin: no bytecode is written at all.
    pub bytecode_cache: Option<PathBuf>,
}

/// What a pytest run measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Measure {
    /// Nothing beyond pass and fail.
    Outcomes,
    /// Coverage of each test on its own, and what each test that passed every time adds beyond
    /// the coverage report given (the run branch's tip; None: nothing covered) and the tests
    /// before it: [`PytestRun::gain`], worked out inside the pytest process by our plugin.
    PerTest(Option<PathBuf>),
    /// Coverage of the whole run, summed up in a report (`<label>.coverage.json`).
    Report,
    /// What pytest's configuration and collection say about the project's tests, and where
    /// the code under test is imported from (`<label>.project.json`, see [`Discovery`]).
    Discover,
    /// The collected tests against the mutants in `<label>.mutants.json`, by our plugin's
    /// mutation loop, which writes `<label>.mutants.jsonl`.
    Mutants,
}

/// Writes the pytest plugin shipped in the binary into `dir`, for `-p improve_plugin`.
pub fn install_plugin(dir: &Path) -> std::io::Result<PathBuf> {
    let dir = crate::artifacts::scratch::plugin_dir(dir);
    std::fs::create_dir_all(&dir)?;
    crate::fsutil::write_atomic(
        &crate::artifacts::scratch::plugin_file(&dir),
        include_str!("../../python/improve_plugin.py").as_bytes(),
    )?;
    Ok(dir)
}

#[derive(Debug, Clone)]
pub struct CoverageSpec {
    /// What to measure: package folders relative to the worktree, or module names.
    pub source: Vec<String>,
    /// Test files inside the packages, which are not code under test (coverage `--omit`).
    pub omit: Vec<String>,
}

/// Source folders as absolute paths (module names as they are): what a test that changes the
/// working directory does cannot change what is measured.
fn absolute_sources(source: &[String], cwd: &Path) -> Vec<String> {
    source
        .iter()
        .map(|s| {
            let dir = cwd.join(s);
            if dir.is_dir() {
                dir.display().to_string()
            } else {
                s.clone()
            }
        })
        .collect()
}

impl CoverageSpec {
    /// The `--source` of coverage.py for `packages`: folders as they are, single-module
    /// projects by import name (coverage takes a file path for a package name), named from
    /// their source root (`source_roots`, see [`crate::project::import_name`]).
    pub fn for_packages(packages: &[String], source_roots: &[String], omit: Vec<String>) -> Self {
        CoverageSpec {
            source: packages
                .iter()
                .map(|p| {
                    if p.ends_with(".py") {
                        crate::project::import_name(p, source_roots)
                    } else {
                        p.clone()
                    }
                })
                .collect(),
            omit,
        }
    }
}

/// What pytest said in a [`Measure::Discover`] run (written by `python/improve_plugin.py`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Discovery {
    #[serde(default)]
    pub testpaths: Vec<String>,
    #[serde(default)]
    pub python_files: Vec<String>,
    /// Files holding collected tests (relative to the rootdir), doctests excepted.
    #[serde(default)]
    pub files: Vec<String>,
    #[serde(default)]
    pub inifile: Option<String>,
    /// Per import name of the code under test: where it was imported from, or why not.
    #[serde(default)]
    pub imports: BTreeMap<String, ImportCheck>,
    /// The node ids collected.
    #[serde(default)]
    pub ids: Vec<String>,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct ImportCheck {
    /// `__file__`, and `__path__` for packages (a namespace package has only the latter).
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub path: Vec<String>,
    /// `ModuleNotFoundError: No module named 'x._version'` when the import failed.
    #[serde(default)]
    pub error: Option<String>,
}

impl TestCommand {
    /// The Python interpreter behind `<python> -m pytest`, if the command has that shape.
    pub fn python(&self) -> Option<&str> {
        match self.words.as_slice() {
            [python, dash_m, pytest, ..] if dash_m == "-m" && pytest == "pytest" => Some(python),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PytestRun {
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub duration: Duration,
    pub cases: Vec<TestCase>,
    /// pytest's own last line, e.g. `3 passed, 1 failed in 0.21s`.
    pub summary: String,
    pub output_path: PathBuf,
    pub coverage: Option<Coverage>,
    /// What each new test adds to coverage ([`Measure::PerTest`] runs with coverage.py).
    pub gain: Option<Gain>,
    /// What pytest said of the project ([`Measure::Discover`] runs with our plugin).
    pub discovery: Option<Discovery>,
    /// Tests after which coverage stopped measuring as before ([`Measure::Report`] runs with
    /// coverage.py).
    pub stoppers: Vec<Stopper>,
}

impl PytestRun {
    pub fn ids_with(&self, outcome: CaseOutcome) -> Vec<String> {
        self.cases
            .iter()
            .filter(|c| c.outcome == outcome)
            .map(|c| c.id.clone())
            .collect()
    }
    /// Ids of cases that failed or errored.
    pub fn failing(&self) -> Vec<String> {
        [
            self.ids_with(CaseOutcome::Failed),
            self.ids_with(CaseOutcome::Error),
        ]
        .concat()
    }
    /// A file that did not collect shows up as an error case without `::` in its id.
    pub fn collection_error(&self) -> Option<&TestCase> {
        self.cases.iter().find(|c| {
            c.outcome == CaseOutcome::Error && crate::testid::TestId::new(&c.id).is_file()
        })
    }
    /// pytest could not collect what it was given (an import or syntax error; not "no tests").
    pub fn does_not_collect(&self) -> bool {
        self.collection_error().is_some() || (self.cases.is_empty() && self.exit_code != Some(5))
    }
    pub fn count(&self, outcome: CaseOutcome) -> usize {
        self.cases.iter().filter(|c| c.outcome == outcome).count()
    }
    /// The last lines of the output, for reasons and the `show` command.
    pub fn tail(&self, lines: usize) -> String {
        let text = strip_ansi(&std::fs::read_to_string(&self.output_path).unwrap_or_default());
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// One pytest invocation in `cwd` with `args` appended to the command. Its output, JUnit XML and
/// coverage go to `files`.
pub async fn run(
    cmd: &TestCommand,
    cwd: &Path,
    args: &[String],
    files: &PytestFiles,
    measure: Measure,
    cancel: &CancellationToken,
) -> Result<PytestRun, PytestError> {
    std::fs::create_dir_all(files.dir()).map_err(|source| PytestError::Output {
        path: files.dir().display().to_string(),
        source,
    })?;
    for stale in [
        files.junit(),
        files.coverage_json(),
        files.gain(),
        files.project(),
        files.mutants_out(),
        files.stoppers(),
    ] {
        let _ = std::fs::remove_file(stale);
    }
    // coverage.py wraps pytest only when the command is `<python> -m pytest` and it is there.
    let python = match (&measure, &cmd.coverage) {
        (Measure::PerTest(_) | Measure::Report, Some(_)) => cmd.python(),
        _ => None,
    };
    let mut words = command_words(cmd, cwd, args, files, python);
    if cmd.sandbox {
        words = sandboxed(&words, cwd, files.dir(), cmd.plugin_dir.as_deref());
    }
    let env = environment(cmd, cwd, files, &measure, python.is_some());
    let started = Instant::now();
    let exit = spawn_and_wait(&words, cwd, &files.output(), cmd.timeout, cancel, &env).await?;
    let duration = started.elapsed();
    let coverage = match python {
        Some(python) if measure == Measure::Report => {
            coverage_report(cmd, cwd, files, python, exit.timed_out, cancel).await?
        }
        _ => None,
    };
    let text = std::fs::read_to_string(files.output()).unwrap_or_default();
    let summary = if exit.timed_out {
        format!(
            "timed out after {}",
            humantime::format_duration(cmd.timeout)
        )
    } else {
        summary_line(&text)
    };
    tracing::info!(
        label = files.name(),
        cwd = %cwd.display(),
        exit_code = ?exit.code,
        timed_out = exit.timed_out,
        seconds = duration.as_secs_f64(),
        summary = %summary,
        "pytest finished"
    );
    Ok(PytestRun {
        stoppers: crate::fsutil::read_json(&files.stoppers()).unwrap_or_default(),
        discovery: (measure == Measure::Discover)
            .then(|| crate::fsutil::read_json(&files.project()))
            .flatten(),
        exit_code: exit.code,
        timed_out: exit.timed_out,
        duration,
        cases: std::fs::read_to_string(files.junit())
            .map(|xml| parse_junit(&xml))
            .unwrap_or_default(),
        summary,
        output_path: files.output(),
        coverage,
        gain: crate::fsutil::read_json(&files.gain()),
    })
}

/// The words of one pytest run: the test command (under `coverage run` when `python` is
/// given), our fixed options, the plugins' switches, then `args`.
fn command_words(
    cmd: &TestCommand,
    cwd: &Path,
    args: &[String],
    files: &PytestFiles,
    python: Option<&str>,
) -> Vec<String> {
    let mut words: Vec<String> = match (python, &cmd.coverage) {
        (Some(python), Some(spec)) => {
            let mut w = vec![
                python.to_string(),
                "-m".into(),
                "coverage".into(),
                "run".into(),
                "--branch".into(),
                format!("--source={}", absolute_sources(&spec.source, cwd).join(",")),
                format!("--data-file={}", files.coverage_data().display()),
            ];
            if !spec.omit.is_empty() {
                w.push(format!("--omit={}", spec.omit.join(",")));
            }
            w.extend(["-m".into(), "pytest".into()]);
            w.extend(cmd.words[3..].iter().cloned());
            w
        }
        _ => cmd.words.clone(),
    };
    words.extend([
        // Without a config file pytest picks the rootdir from the arguments, and test ids of a
        // one-file run would then differ from the whole suite's: pin it to the worktree.
        format!("--rootdir={}", cwd.display()),
        format!("--junitxml={}", files.junit().display()),
        "-p".into(),
        "no:cacheprovider".into(),
        "-q".into(),
        "-rfE".into(),
        // After the project's addopts, so an `addopts = --color=yes` puts no escape codes into
        // the summaries `show`, `log` and the report print.
        "--color=no".into(),
    ]);
    if cmd.plugin_dir.is_some() {
        words.extend(["-p".into(), "improve_plugin".into()]);
    }
    words.extend(cmd.extra_args.iter().cloned());
    words.extend(args.iter().cloned());
    words
}

type Env = Vec<(std::ffi::OsString, std::ffi::OsString)>;

/// The environment of one pytest run: the allow-listed variables, PYTHONPATH with the worktree's
/// import roots first and our plugin last, and what the plugin is asked to write.
fn environment(
    cmd: &TestCommand,
    cwd: &Path,
    files: &PytestFiles,
    measure: &Measure,
    coverage: bool,
) -> Env {
    let mut env: Env = with_python_bin(test_environment(&cmd.pass_env), cmd.python())
        .into_iter()
        .filter(|(k, _)| k != "PYTHONPATH")
        .collect();
    env.push(("PYTHONPATH".into(), pythonpath(cmd, cwd)));
    if cmd.plugin_dir.is_none() {
        return env;
    }
    // Our plugin caches bytecode outside the worktree (a user's PYTHONDONTWRITEBYTECODE keeps
    // it out of their source folders, which this never touches).
    if let Some(cache) = cmd.bytecode_cache.as_ref().filter(|_| !cmd.sandbox) {
        env.push((plugin_env::BYTECODE_CACHE.into(), cache.clone().into()));
    }
    match measure {
        Measure::PerTest(before) if coverage => {
            env.push((plugin_env::GAIN_OUT.into(), files.gain().into()));
            let copy = files.gain_before();
            if let Some(b) = before
                && std::fs::copy(b, &copy).is_ok()
            {
                env.push((plugin_env::GAIN_BEFORE.into(), copy.into()));
            }
        }
        Measure::Report if coverage => {
            env.push((
                plugin_env::COVERAGE_JSON.into(),
                files.coverage_json().into(),
            ));
            env.push((plugin_env::STOPPERS_OUT.into(), files.stoppers().into()));
        }
        Measure::Mutants => {
            env.push((plugin_env::MUTANTS.into(), files.mutants().into()));
            env.push((plugin_env::MUTANTS_OUT.into(), files.mutants_out().into()));
        }
        Measure::Discover => {
            env.push((plugin_env::PROJECT_OUT.into(), files.project().into()));
            env.push((
                plugin_env::IMPORT_CHECK.into(),
                cmd.import_names.join(",").into(),
            ));
        }
        _ => {}
    }
    env
}

/// The worktree's import roots, then the user's PYTHONPATH, then our plugin: a project module
/// of the plugin's name would win, not ours.
fn pythonpath(cmd: &TestCommand, cwd: &Path) -> std::ffi::OsString {
    let roots: Vec<std::ffi::OsString> = if cmd.import_roots.is_empty() {
        vec![cwd.as_os_str().to_owned()]
    } else {
        cmd.import_roots
            .iter()
            .map(|r| cwd.join(r).into_os_string())
            .collect()
    };
    let mut pythonpath = std::ffi::OsString::new();
    for extra in roots
        .into_iter()
        .chain(std::env::var_os("PYTHONPATH"))
        .chain(cmd.plugin_dir.clone().map(Into::into))
        .filter(|p| !p.is_empty())
    {
        if !pythonpath.is_empty() {
            pythonpath.push(":");
        }
        pythonpath.push(extra);
    }
    pythonpath
}

/// The whole run's coverage: the report our plugin wrote in-process, else one made by
/// `coverage json` from the data file (no plugin).
async fn coverage_report(
    cmd: &TestCommand,
    cwd: &Path,
    files: &PytestFiles,
    python: &str,
    timed_out: bool,
    cancel: &CancellationToken,
) -> Result<Option<Coverage>, PytestError> {
    let json = files.coverage_json();
    if !json.is_file() && !timed_out && files.coverage_data().exists() {
        let words = vec![
            python.to_string(),
            "-m".into(),
            "coverage".into(),
            "json".into(),
            format!("--data-file={}", files.coverage_data().display()),
            "-o".into(),
            json.display().to_string(),
            "-q".into(),
        ];
        let env = test_environment(&cmd.pass_env);
        spawn_and_wait(
            &words,
            cwd,
            &files.coverage_log(),
            cmd.timeout,
            cancel,
            &env,
        )
        .await?;
    }
    Ok(std::fs::read_to_string(&json)
        .ok()
        .and_then(|j| coverage::parse_report(&j)))
}

/// What the test command's Python has besides pytest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Preflight {
    pub coverage: bool,
    /// Arguments that keep installed plugins from fighting our coverage: pytest-cov's own
    /// measurement (`--no-cov`) and xdist's worker processes (`-p no:xdist` would break an
    /// `addopts = -n auto`; `-n 0` keeps one process).
    pub extra_args: Vec<String>,
}

/// Checks that the test command has pytest, and whether coverage.py (and plugins that would
/// interfere with it) are there too.
pub async fn preflight(cmd: &TestCommand, cwd: &Path, scratch: &Path) -> Result<Preflight, String> {
    // `<python> -m pytest`: one interpreter start answers every question. All are looked up,
    // not imported (importing pytest alone takes a tenth of a second); a pytest that is there
    // but broken fails the baseline run, which shows its output. Any other command can only be
    // asked for its version.
    let words: Vec<String> = match cmd.python() {
        Some(python) => [
            python,
            "-c",
            "import importlib.util as u, sys\n\
             if u.find_spec('pytest') is None: sys.exit('No module named pytest')\n\
             print(' '.join(n for n in ('coverage', 'pytest_cov', 'xdist') if u.find_spec(n)) or 'none')",
        ]
        .map(String::from)
        .to_vec(),
        None => cmd
            .words
            .iter()
            .cloned()
            .chain(["--version".into()])
            .collect(),
    };
    let (code, last) = run_helper(
        &words,
        cwd,
        &crate::artifacts::scratch::preflight_log(scratch),
    )
    .await?;
    if code != Some(0) {
        return Err(format!(
            "`{}` does not run pytest ({last}): install pytest for that Python \
             (e.g. `python3 -m pip install pytest coverage`) or pass --test-cmd",
            shell_words::join(&cmd.words)
        ));
    }
    if cmd.python().is_none() {
        return Ok(Preflight::default());
    }
    let has = |name: &str| last.split_whitespace().any(|w| w == name);
    let mut extra_args = Vec::new();
    if has("pytest_cov") {
        extra_args.push("--no-cov".to_string());
    }
    if has("xdist") {
        extra_args.extend(["-n".to_string(), "0".to_string()]);
    }
    Ok(Preflight {
        coverage: has("coverage"),
        extra_args,
    })
}
