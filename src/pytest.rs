//! Running pytest on untrusted tests: its own process group (killed whole on timeout or
//! cancellation), stdin closed, output to a file (so a grandchild holding a pipe cannot hang us),
//! and an environment without secrets. Results come from pytest's JUnit XML, never from parsing
//! its console text; coverage from coverage.py's JSON.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use quick_xml::events::Event;
use tokio_util::sync::CancellationToken;

use crate::state::Coverage;

#[derive(Debug, thiserror::Error)]
pub enum PytestError {
    #[error("cannot start `{cmd}`: {source} (check --test-cmd)")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("cannot write pytest output to {path}: {source}")]
    Output {
        path: String,
        source: std::io::Error,
    },
    #[error("pytest was cancelled")]
    Cancelled,
}

/// How to start pytest: the words of `--test-cmd`, and coverage settings when coverage.py can
/// wrap it (only when the command is `<python> -m pytest ...`).
#[derive(Debug, Clone)]
pub struct TestCommand {
    pub words: Vec<String>,
    pub coverage: Option<CoverageSpec>,
    pub timeout: Duration,
    /// The folders, relative to the worktree, that hold the packages (`""`, `src`). They go
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
}

/// Writes the pytest plugin shipped in the binary into `dir`, for `-p improve_plugin`.
pub fn install_plugin(dir: &Path) -> std::io::Result<PathBuf> {
    let dir = dir.join("plugin");
    std::fs::create_dir_all(&dir)?;
    crate::state::write_atomic(
        &dir.join("improve_plugin.py"),
        include_str!("../python/improve_plugin.py").as_bytes(),
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

impl CoverageSpec {
    /// The `--source` of coverage.py for `packages`: folders as they are, single-module
    /// projects by import name (coverage takes a file path for a package name).
    pub fn for_packages(packages: &[String], omit: Vec<String>) -> Self {
        CoverageSpec {
            source: packages
                .iter()
                .map(|p| {
                    if p.ends_with(".py") {
                        crate::project::import_name(p)
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseOutcome {
    Passed,
    Failed,
    Error,
    Skipped,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TestCase {
    /// `classname::name` as pytest writes them, e.g. `tests.test_a.TestX::test_y`.
    pub id: String,
    pub outcome: CaseOutcome,
    pub message: String,
    /// The traceback pytest wrote for a failure or an error (cut to a few thousand characters).
    pub detail: String,
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
        self.cases
            .iter()
            .find(|c| c.outcome == CaseOutcome::Error && !c.id.contains("::"))
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

/// The API key variables: never in a test's environment, whatever `--pass-env` says.
pub fn is_api_key_var(name: &str) -> bool {
    matches!(
        name.to_ascii_uppercase().as_str(),
        "IMPROVE_API_KEY" | "OPENAI_API_KEY" | "ANTHROPIC_API_KEY"
    )
}

/// What a test may see of our environment: the system's and Python's own variables.
fn is_allowed_var(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TERM",
        "TMPDIR",
        "TEMP",
        "TMP",
        "LD_LIBRARY_PATH",
        "NO_COLOR",
        "SYSTEMROOT",
    ];
    const PREFIXES: &[&str] = &[
        "LC_",
        "PYTHON",
        "PYENV_",
        "VIRTUAL_ENV",
        "CONDA_",
        "PYTEST_",
        "COVERAGE_",
    ];
    EXACT.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The environment tests run with: the allow-listed variables without anything that looks like
/// a secret, plus what `pass_env` names (which may be secret-looking, a test database's
/// password say, but never the API key).
pub fn test_environment(pass_env: &[String]) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    filter_environment(std::env::vars_os(), pass_env)
}

fn filter_environment(
    vars: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    pass_env: &[String],
) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    vars.filter(|(name, _)| {
        let name = name.to_string_lossy();
        if is_api_key_var(&name) {
            return false;
        }
        pass_env.iter().any(|p| *p == name) || (is_allowed_var(&name) && !is_secret_var(&name))
    })
    .collect()
}

/// Environment variables whose names look like secrets never reach the tests. The API key
/// variables are named explicitly; the patterns catch the rest of the usual suspects.
pub fn is_secret_var(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    const EXACT: &[&str] = &["IMPROVE_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"];
    const PATTERNS: &[&str] = &[
        "API_KEY",
        "APIKEY",
        "SECRET",
        "TOKEN",
        "PASSWORD",
        "CREDENTIAL",
    ];
    EXACT.contains(&upper.as_str()) || PATTERNS.iter().any(|p| upper.contains(p))
}

/// One pytest invocation in `cwd` with `args` appended to the command. Output goes to
/// `artifacts/<label>.txt`, JUnit XML to `artifacts/<label>.xml`.
pub async fn run(
    cmd: &TestCommand,
    cwd: &Path,
    args: &[String],
    artifacts: &Path,
    label: &str,
    measure: Measure,
    cancel: &CancellationToken,
) -> Result<PytestRun, PytestError> {
    std::fs::create_dir_all(artifacts).map_err(|source| PytestError::Output {
        path: artifacts.display().to_string(),
        source,
    })?;
    let output_path = artifacts.join(format!("{label}.txt"));
    let junit_path = artifacts.join(format!("{label}.xml"));
    let _ = std::fs::remove_file(&junit_path);
    let cov_data = artifacts.join(format!("{label}.coverage"));
    let cov_json = artifacts.join(format!("{label}.coverage.json"));
    let _ = std::fs::remove_file(&cov_json);

    let gain_json = artifacts.join(format!("{label}.gain.json"));
    let _ = std::fs::remove_file(&gain_json);
    let coverage = match (&measure, &cmd.coverage, cmd.python()) {
        (Measure::PerTest(_) | Measure::Report, Some(spec), Some(python)) => {
            Some((spec, python.to_string()))
        }
        _ => None,
    };
    let mut words: Vec<String> = match &coverage {
        Some((spec, python)) => {
            let mut w = vec![
                python.clone(),
                "-m".into(),
                "coverage".into(),
                "run".into(),
                "--branch".into(),
                format!("--source={}", spec.source.join(",")),
                format!("--data-file={}", cov_data.display()),
            ];
            if !spec.omit.is_empty() {
                w.push(format!("--omit={}", spec.omit.join(",")));
            }
            w.extend(["-m".into(), "pytest".into()]);
            w.extend(cmd.words[3..].iter().cloned());
            w
        }
        None => cmd.words.clone(),
    };
    words.extend([
        // Without a config file pytest picks the rootdir from the arguments, and test ids of a
        // one-file run would then differ from the whole suite's: pin it to the worktree.
        format!("--rootdir={}", cwd.display()),
        format!("--junitxml={}", junit_path.display()),
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

    if cmd.sandbox {
        words = sandboxed(&words, cwd, artifacts, cmd.plugin_dir.as_deref());
    }
    let roots: Vec<std::ffi::OsString> = if cmd.import_roots.is_empty() {
        vec![cwd.as_os_str().to_owned()]
    } else {
        cmd.import_roots
            .iter()
            .map(|r| cwd.join(r).into_os_string())
            .collect()
    };
    let mut pythonpath = std::ffi::OsString::new();
    // The plugin goes last: a project module of the same name would win, not ours.
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
    let mut env: Vec<_> = test_environment(&cmd.pass_env)
        .into_iter()
        .filter(|(k, _)| k != "PYTHONPATH")
        .collect();
    env.push((std::ffi::OsString::from("PYTHONPATH"), pythonpath));
    // Our plugin caches bytecode outside the worktree (a user's PYTHONDONTWRITEBYTECODE keeps
    // it out of their source folders, which this never touches).
    if let Some(cache) = cmd.bytecode_cache.as_ref().filter(|_| !cmd.sandbox)
        && cmd.plugin_dir.is_some()
    {
        env.push(("IMPROVE_BYTECODE_CACHE".into(), cache.clone().into()));
    }
    if coverage.is_some() && cmd.plugin_dir.is_some() {
        match &measure {
            Measure::PerTest(before) => {
                env.push(("IMPROVE_GAIN_OUT".into(), gain_json.clone().into()));
                // A copy beside the run's other files: under --sandbox only they are visible.
                let copy = artifacts.join(format!("{label}.gain-before.json"));
                if let Some(b) = before
                    && std::fs::copy(b, &copy).is_ok()
                {
                    env.push(("IMPROVE_GAIN_BEFORE".into(), copy.into()));
                }
            }
            Measure::Report => env.push(("IMPROVE_COVERAGE_JSON".into(), cov_json.clone().into())),
            Measure::Outcomes | Measure::Discover => {}
        }
    }
    let project_json = artifacts.join(format!("{label}.project.json"));
    if measure == Measure::Discover && cmd.plugin_dir.is_some() {
        let _ = std::fs::remove_file(&project_json);
        env.push(("IMPROVE_PROJECT_OUT".into(), project_json.clone().into()));
        env.push((
            "IMPROVE_IMPORT_CHECK".into(),
            cmd.import_names.join(",").into(),
        ));
    }
    let started = Instant::now();
    let (exit_code, timed_out) =
        spawn_and_wait(&words, cwd, &output_path, cmd.timeout, cancel, &env).await?;
    let base_env = test_environment(&cmd.pass_env);
    let duration = started.elapsed();

    let cases = std::fs::read_to_string(&junit_path)
        .map(|xml| parse_junit(&xml))
        .unwrap_or_default();
    let text = std::fs::read_to_string(&output_path).unwrap_or_default();
    let summary = if timed_out {
        format!(
            "timed out after {}",
            humantime::format_duration(cmd.timeout)
        )
    } else {
        summary_line(&text)
    };

    let coverage = match coverage {
        // The plugin wrote the report in-process: no second Python process for it.
        Some(_) if measure == Measure::Report && cov_json.is_file() => {
            std::fs::read_to_string(&cov_json)
                .ok()
                .and_then(|j| parse_coverage_json(&j))
        }
        Some((_, python)) if measure == Measure::Report && !timed_out && cov_data.exists() => {
            let words = vec![
                python,
                "-m".into(),
                "coverage".into(),
                "json".into(),
                format!("--data-file={}", cov_data.display()),
                "-o".into(),
                cov_json.display().to_string(),
                "-q".into(),
            ];
            let log = artifacts.join(format!("{label}.coverage.txt"));
            spawn_and_wait(&words, cwd, &log, cmd.timeout, cancel, &base_env).await?;
            std::fs::read_to_string(&cov_json)
                .ok()
                .and_then(|j| parse_coverage_json(&j))
        }
        _ => None,
    };

    tracing::info!(
        label,
        cwd = %cwd.display(),
        exit_code = ?exit_code,
        timed_out,
        seconds = duration.as_secs_f64(),
        summary = %summary,
        "pytest finished"
    );
    let gain = std::fs::read_to_string(&gain_json)
        .ok()
        .and_then(|j| serde_json::from_str(&j).ok());
    let discovery = (measure == Measure::Discover)
        .then(|| std::fs::read_to_string(&project_json).ok())
        .flatten()
        .and_then(|j| serde_json::from_str(&j).ok());
    Ok(PytestRun {
        discovery,
        exit_code,
        timed_out,
        duration,
        cases,
        summary,
        output_path,
        coverage,
        gain,
    })
}

/// `words` under bubblewrap: the whole file system read-only, the worktree and the artifacts
/// folder writable, a private /tmp, no network (a new network namespace has only its own
/// loopback), its own pid namespace, and death with us.
pub fn sandboxed(
    words: &[String],
    worktree: &Path,
    artifacts: &Path,
    plugin: Option<&Path>,
) -> Vec<String> {
    let mut w: Vec<String> = [
        "bwrap",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--tmpfs",
        "/tmp",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // The private /tmp hides whatever lives under the real one; the Python environment may
    // (a venv in a temp folder), so it comes back read-only.
    if let Some(prefix) = words
        .first()
        .map(Path::new)
        .and_then(|p| p.parent())
        .and_then(|bin| bin.parent())
        .filter(|prefix| prefix.starts_with("/tmp"))
    {
        let p = prefix.display().to_string();
        w.extend(["--ro-bind".into(), p.clone(), p]);
    }
    // Our plugin may live under the real /tmp too (a state dir in a temp repo).
    if let Some(dir) = plugin.filter(|d| d.starts_with("/tmp")) {
        let p = dir.display().to_string();
        w.extend(["--ro-bind".into(), p.clone(), p]);
    }
    for rw in [worktree, artifacts] {
        let p = rw.display().to_string();
        w.extend(["--bind".into(), p.clone(), p]);
    }
    // The worktree's `.git` file says where its repository is; improve commits through it after
    // the tests ran, so a test must not be able to point it at the user's own checkout.
    let gitlink = worktree.join(".git");
    if gitlink.is_file() {
        let p = gitlink.display().to_string();
        w.extend(["--ro-bind".into(), p.clone(), p]);
    }
    w.extend(
        [
            "--unshare-net",
            "--unshare-pid",
            "--die-with-parent",
            "--chdir",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    w.push(worktree.display().to_string());
    w.push("--".into());
    w.extend(words.iter().cloned());
    w
}

/// Checks that bubblewrap runs here and can create the namespaces the sandbox needs.
pub async fn sandbox_preflight(scratch: &Path) -> Result<(), String> {
    let cancel = CancellationToken::new();
    let words: Vec<String> = sandboxed(&["true".to_string()], scratch, scratch, None);
    let out = scratch.join("preflight-sandbox.txt");
    let result = spawn_and_wait(
        &words,
        scratch,
        &out,
        Duration::from_secs(30),
        &cancel,
        &test_environment(&[]),
    )
    .await;
    match result {
        Ok((Some(0), _)) => Ok(()),
        Ok(_) => {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            Err(format!(
                "--sandbox: bubblewrap cannot create its namespaces here ({}); run without \
                 --sandbox on a machine you trust, or allow user namespaces",
                text.lines().last().unwrap_or("no output").trim()
            ))
        }
        Err(PytestError::Spawn { .. }) => Err(
            "--sandbox needs bubblewrap: install it (`apt-get install bubblewrap`) or run without --sandbox"
                .into(),
        ),
        Err(e) => Err(format!("--sandbox: {e}")),
    }
}

/// Process groups of tests running now, so a forced exit can end them (they do not get the
/// terminal's signals: they are in groups of their own).
static LIVE_GROUPS: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// Where the process groups of running tests are recorded (one file per group, named by its id,
/// holding its leader's start time), so that the next `improve` of this state dir can end those a
/// `kill -9` left behind: the parent-death signal ends only a group's leader, not the children a
/// hanging test started.
static GROUP_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// `(process group, start time)` of `pid`, from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(i32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

fn group_has_members(pgid: i32) -> bool {
    std::fs::read_dir("/proc").is_ok_and(|entries| {
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .any(|pid| proc_stat(pid).is_some_and(|(group, _)| group == pgid))
    })
}

/// Kills a process group; a group already gone is fine, anything else is logged.
fn kill_group(pgid: i32) -> bool {
    // SAFETY: signalling a process group we created.
    let rc = unsafe { libc::killpg(pgid, libc::SIGKILL) };
    let err = std::io::Error::last_os_error();
    if rc != 0 && err.raw_os_error() != Some(libc::ESRCH) {
        tracing::warn!("cannot kill the test process group {pgid}: {err}");
    }
    rc == 0
}

/// Ends the test process groups that an earlier `improve` recorded in `dir` and that still
/// run, then records this one's there. Called with the run lock held, so no live `improve`
/// owns them. A group counts as the same when its leader has the recorded start time, or when
/// its leader is gone but members remain (a pid is not reused while its group has members).
/// Returns the groups ended.
pub fn adopt_group_records(dir: &Path) -> Vec<i32> {
    let mut ended = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let recorded = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
            .zip(
                std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|t| t.trim().parse::<u64>().ok()),
            );
        if let Some((pgid, start)) = recorded.filter(|(g, _)| *g > 1) {
            let same = match proc_stat(pgid) {
                Some((_, now)) => now == start,
                None => group_has_members(pgid),
            };
            if same && kill_group(pgid) {
                ended.push(pgid);
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    let _ = std::fs::create_dir_all(dir);
    let _ = GROUP_DIR.set(dir.to_path_buf());
    ended
}

fn record_group(pgid: i32) {
    if let (Some(dir), Some((_, start))) = (GROUP_DIR.get(), proc_stat(pgid)) {
        let _ =
            crate::state::write_atomic(&dir.join(pgid.to_string()), start.to_string().as_bytes());
    }
}

fn forget_group(pgid: i32) {
    if let Some(dir) = GROUP_DIR.get() {
        let _ = std::fs::remove_file(dir.join(pgid.to_string()));
    }
}

pub fn kill_live_groups() {
    let groups = LIVE_GROUPS.lock().unwrap_or_else(|p| p.into_inner());
    for pgid in groups.iter() {
        kill_group(*pgid);
        forget_group(*pgid);
    }
}

/// Starts `words` in its own process group and waits for it, the timeout or cancellation; in the
/// last two cases the whole group is killed. The group is also killed after a normal exit, so a
/// test that left a background process behind does not leave it running all night.
pub(crate) async fn spawn_and_wait(
    words: &[String],
    cwd: &Path,
    output_path: &Path,
    timeout: Duration,
    cancel: &CancellationToken,
    // The whole environment of the child (see `test_environment`).
    env: &[(std::ffi::OsString, std::ffi::OsString)],
) -> Result<(Option<i32>, bool), PytestError> {
    let output_err = |source| PytestError::Output {
        path: output_path.display().to_string(),
        source,
    };
    let out = std::fs::File::create(output_path).map_err(output_err)?;
    let err = out.try_clone().map_err(output_err)?;
    let (program, rest) = words.split_first().ok_or_else(|| PytestError::Spawn {
        cmd: String::new(),
        source: std::io::Error::other("empty command"),
    })?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(rest)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0)
        .kill_on_drop(true)
        // Only what `env` holds: an allow-list, so a secret we did not think of stays out.
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        // Never beside the sources in a worktree, where it would look like something the tests
        // wrote; our plugin sends the project's bytecode to a cache of its own.
        .env("PYTHONDONTWRITEBYTECODE", "1");
    // SAFETY: the closure runs in the child between fork and exec and only makes one
    // async-signal-safe system call. The leader dies with the thread that started it (a
    // runtime worker, alive as long as improve); a kill -9 of improve then ends it at once.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|source| PytestError::Spawn {
        cmd: shell_words::join(words),
        source,
    })?;
    let pid = child.id();
    let pgid = pid.and_then(|p| i32::try_from(p).ok());
    if let Some(g) = pgid {
        // Recorded before waiting: a kill -9 from here on leaves a record to act on.
        record_group(g);
        LIVE_GROUPS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(g);
    }
    let end_group = || {
        if let Some(g) = pgid {
            kill_group(g);
        }
    };
    let result = tokio::select! {
        status = child.wait() => {
            end_group();
            let status = status.map_err(output_err)?;
            Ok((status.code(), false))
        }
        _ = tokio::time::sleep(timeout) => {
            end_group();
            let _ = child.wait().await;
            Ok((None, true))
        }
        _ = cancel.cancelled() => {
            end_group();
            let _ = child.wait().await;
            Err(PytestError::Cancelled)
        }
    };
    if let Some(g) = pgid {
        LIVE_GROUPS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|x| *x != g);
        forget_group(g);
    }
    result
}

/// `text` without ANSI escape sequences (colours, cursor moves): a plugin may colour its
/// output whatever `--color` says.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        // CSI: ESC [ parameters, ended by a letter; other escapes are two characters long.
        if chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() || c == '~' {
                    break;
                }
            }
        } else if matches!(chars.next(), Some('(' | ')')) {
            // A character set designation: ESC ( B.
            chars.next();
        }
    }
    out
}

/// pytest's closing line (`== 3 passed, 1 failed in 0.20s ==`), without the decoration.
pub fn summary_line(output: &str) -> String {
    let output = strip_ansi(output);
    const WORDS: &[&str] = &[
        "passed",
        "failed",
        "error",
        "no tests ran",
        "skipped",
        "deselected",
    ];
    output
        .lines()
        .rev()
        .map(|l| l.trim().trim_matches('=').trim())
        .find(|l| {
            WORDS.iter().any(|w| l.contains(w)) && (l.contains(" in ") || l.starts_with("no tests"))
        })
        .unwrap_or("")
        .to_string()
}

/// Test cases from pytest's JUnit XML (any `junit_family`). Unreadable XML yields what was read.
/// How much of a failure's traceback is kept: enough for a repair prompt.
const MAX_DETAIL: usize = 3000;

fn push_detail(detail: &mut String, text: &str) {
    if detail.len() >= MAX_DETAIL {
        return;
    }
    detail.push_str(text);
    if detail.len() > MAX_DETAIL {
        let mut end = MAX_DETAIL;
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        detail.truncate(end);
    }
}

pub fn parse_junit(xml: &str) -> Vec<TestCase> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut cases = Vec::new();
    let mut current: Option<TestCase> = None;
    let mut in_failure = false;
    loop {
        match reader.read_event() {
            Ok(Event::Text(t)) if in_failure => {
                if let Some(case) = current.as_mut() {
                    push_detail(&mut case.detail, &t);
                }
            }
            Ok(Event::GeneralRef(r)) if in_failure => {
                let text = match (r.resolve_char_ref(), &*r) {
                    (Ok(Some(c)), _) => c.to_string(),
                    (_, "lt") => "<".into(),
                    (_, "gt") => ">".into(),
                    (_, "amp") => "&".into(),
                    (_, "quot") => "\"".into(),
                    (_, "apos") => "'".into(),
                    (_, other) => format!("&{other};"),
                };
                if let Some(case) = current.as_mut() {
                    push_detail(&mut case.detail, &text);
                }
            }
            Ok(Event::End(e)) if matches!(e.name().0, "failure" | "error") => in_failure = false,
            Ok(Event::Start(e)) if e.name().0 == "testcase" => {
                if let Some(done) = current.take() {
                    cases.push(done);
                }
                current = Some(testcase_from(&e));
                in_failure = false;
            }
            // A self-closing testcase has no children: it passed and is complete.
            Ok(Event::Empty(e)) if e.name().0 == "testcase" => {
                if let Some(done) = current.take() {
                    cases.push(done);
                }
                cases.push(testcase_from(&e));
            }
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => {
                let outcome = match e.name().0 {
                    "failure" => Some(CaseOutcome::Failed),
                    "error" => Some(CaseOutcome::Error),
                    "skipped" => Some(CaseOutcome::Skipped),
                    _ => None,
                };
                in_failure = matches!(outcome, Some(CaseOutcome::Failed | CaseOutcome::Error));
                if let (Some(outcome), Some(case)) = (outcome, current.as_mut()) {
                    // A failing test whose teardown also errors is still a failure.
                    if case.outcome == CaseOutcome::Passed || outcome == CaseOutcome::Failed {
                        case.outcome = outcome;
                    }
                    if case.message.is_empty() {
                        case.message = e
                            .attributes()
                            .flatten()
                            .find(|a| a.key.0 == "message")
                            .and_then(|a| {
                                a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                                    .ok()
                                    .map(|v| v.into_owned())
                            })
                            .unwrap_or_default();
                    }
                }
            }
            Ok(Event::End(e)) if e.name().0 == "testcase" => {
                in_failure = false;
                if let Some(done) = current.take() {
                    cases.push(done);
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    if let Some(done) = current.take() {
        cases.push(done);
    }
    cases
}

fn testcase_from(e: &quick_xml::events::BytesStart<'_>) -> TestCase {
    let mut classname = String::new();
    let mut name = String::new();
    for attr in e.attributes().flatten() {
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map(|v| v.into_owned())
            .unwrap_or_default();
        match attr.key.0 {
            "classname" => classname = value,
            "name" => name = value,
            _ => {}
        }
    }
    let id = if classname.is_empty() {
        name
    } else {
        format!("{classname}::{name}")
    };
    TestCase {
        id,
        outcome: CaseOutcome::Passed,
        message: String::new(),
        detail: String::new(),
    }
}

/// Overall and per-file percent from `coverage json`.
pub fn parse_coverage_json(json: &str) -> Option<Coverage> {
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
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Runs a short helper command (a Python one-liner, `--version`) with the tests' environment
/// and a one-minute limit; returns its exit code and the last line it printed.
async fn run_helper(
    words: &[String],
    cwd: &Path,
    out: &Path,
) -> Result<(Option<i32>, String), String> {
    let cancel = CancellationToken::new();
    let (code, _) = spawn_and_wait(
        words,
        cwd,
        out,
        Duration::from_secs(60),
        &cancel,
        &test_environment(&[]),
    )
    .await
    .map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string();
    Ok((code, last))
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
    let (code, last) = run_helper(&words, cwd, &scratch.join("preflight.txt")).await?;
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

/// What each new test adds to the package's coverage (worked out by `python/improve_plugin.py`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Gain {
    /// Per test (as `prune` names it), per module: the lines and branches it alone reaches.
    pub adds: std::collections::BTreeMap<String, std::collections::BTreeMap<String, Added>>,
    /// Tests that reach nothing the suite at the tip and earlier candidates did not.
    pub redundant: Vec<String>,
}

#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
pub struct Added {
    pub lines: Vec<u32>,
    pub branches: Vec<(i64, i64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_outcomes_and_ids() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="4">
<testcase classname="tests.test_a" name="test_ok" time="0.001" />
<testcase classname="tests.test_a.TestX" name="test_bad" time="0.001"><failure message="assert 1 == 2">def test_bad():
&gt;       assert 1 == 2 &amp;&#65;</failure></testcase>
<testcase classname="tests.test_a" name="test_skip" time="0"><skipped type="pytest.skip" message="nope">s</skipped></testcase>
<testcase classname="" name="tests.test_b" time="0"><error message="collection failure">boom</error></testcase>
</testsuite></testsuites>"#;
        let cases = parse_junit(xml);
        let got: Vec<(&str, CaseOutcome)> =
            cases.iter().map(|c| (c.id.as_str(), c.outcome)).collect();
        assert_eq!(
            got,
            vec![
                ("tests.test_a::test_ok", CaseOutcome::Passed),
                ("tests.test_a.TestX::test_bad", CaseOutcome::Failed),
                ("tests.test_a::test_skip", CaseOutcome::Skipped),
                ("tests.test_b", CaseOutcome::Error),
            ]
        );
        assert_eq!(cases[1].message, "assert 1 == 2");
        assert_eq!(cases[1].detail, "def test_bad():\n>       assert 1 == 2 &A");
        assert_eq!(cases[0].detail, "");
    }

    #[test]
    fn colour_codes_never_reach_a_summary() {
        let out = "\x1b[31m\x1b[1m===== \x1b[0m\x1b[31m6 errors\x1b[0m\x1b[31m in 0.30s\x1b[0m\x1b[31m\x1b[1m =====\x1b[0m\n";
        assert_eq!(summary_line(out), "6 errors in 0.30s");
        assert_eq!(strip_ansi("a\x1b[2Kb\x1b(Bc"), "abc");
    }

    #[test]
    fn summary_line_strips_decoration() {
        let out = "....F\n=== short test summary info ===\nFAILED x\n======= 4 passed, 1 failed in 0.12s =======\n";
        assert_eq!(summary_line(out), "4 passed, 1 failed in 0.12s");
        assert_eq!(
            summary_line("\nno tests ran in 0.01s\n"),
            "no tests ran in 0.01s"
        );
    }

    #[test]
    fn the_test_environment_is_an_allow_list() {
        let ours = || {
            [
                ("PATH", "/bin"),
                ("PYTHONHASHSEED", "0"),
                ("LC_ALL", "C"),
                ("DATABASE_URL", "postgres://x"),
                ("DB_PASSWORD", "hunter2"),
                ("PYTHON_TOKEN", "t"),
                ("OPENAI_API_KEY", "sk"),
            ]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
        };
        let names = |pass: &[&str]| -> Vec<String> {
            let pass: Vec<String> = pass.iter().map(|s| s.to_string()).collect();
            filter_environment(ours(), &pass)
                .into_iter()
                .map(|(k, _)| k.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names(&[]), ["PATH", "PYTHONHASHSEED", "LC_ALL"]);
        assert_eq!(
            names(&["DATABASE_URL", "DB_PASSWORD", "OPENAI_API_KEY"]),
            [
                "PATH",
                "PYTHONHASHSEED",
                "LC_ALL",
                "DATABASE_URL",
                "DB_PASSWORD"
            ]
        );
    }

    #[test]
    fn secret_variables_are_recognised() {
        for name in [
            "OPENAI_API_KEY",
            "anthropic_api_key",
            "IMPROVE_API_KEY",
            "GITHUB_TOKEN",
            "DB_PASSWORD",
        ] {
            assert!(is_secret_var(name), "{name}");
        }
        for name in ["PATH", "HOME", "PYTHONPATH", "LANG"] {
            assert!(!is_secret_var(name), "{name}");
        }
    }

    #[test]
    fn coverage_json_totals_and_files() {
        let json = r#"{"totals": {"percent_covered": 61.2345}, "files": {"pkg/a.py": {"summary": {"percent_covered": 50.0}}}}"#;
        let c = parse_coverage_json(json).unwrap();
        assert_eq!(c.percent, 61.23);
        assert_eq!(c.modules.get("pkg/a.py"), Some(&50.0));
    }
}
