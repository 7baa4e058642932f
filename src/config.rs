//! Resolved settings of a run: command line > environment > `[tool.improve]` in pyproject.toml
//! (or improve.toml) > the saved settings of a resumed run > defaults. Also detects the package
//! and the tests folder, because a guess that is ambiguous must stop the run before it starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cli::{RunArgs, parse_duration};
use crate::error::UsageError;
use crate::llm::Provider;
use crate::project::{self, ProjectTree};

pub const DEFAULT_FOCUS: &[&str] = &[
    "edge cases",
    "error handling",
    "input validation",
    "state and resource management",
    "business rules",
];

/// The settings a run is made with. Saved in state.json (no secrets in here) so that a resume
/// without flags uses what the run started with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunSettings {
    pub provider: Provider,
    pub llm_url: String,
    pub model: String,
    pub replay: Option<PathBuf>,
    pub record: Option<PathBuf>,
    pub test_cmd: Vec<String>,
    /// The code under test: package folders and module files, relative to the repository.
    /// Runs saved before several were possible hold one string under `package`.
    #[serde(alias = "package", deserialize_with = "one_or_many")]
    pub packages: Vec<String>,
    /// Where new tests go, when the user said so; otherwise each target's tests folder as
    /// pytest's collection shows it (see [`crate::layout`]).
    #[serde(default)]
    pub tests_dir: Option<String>,
    /// Run once in each new worktree before its first pytest run (a build step).
    #[serde(default)]
    pub setup_cmd: Option<String>,
    pub focus: Vec<String>,
    pub jobs: u32,
    #[serde(with = "humantime_serde_secs")]
    pub test_timeout: Duration,
    #[serde(with = "humantime_serde_secs")]
    pub llm_timeout: Duration,
    pub max_llm_failures: u32,
    pub max_tokens: Option<u64>,
    /// Tests run under bubblewrap. Saved, so a resume stays sandboxed.
    #[serde(default)]
    pub sandbox: bool,
    /// Variables the tests may see beyond the allow-list.
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// Extra runs of the new tests to catch flaky ones (0: none).
    #[serde(default = "default_reruns")]
    pub reruns: u32,
    /// New tests must add coverage to the package to be kept.
    #[serde(default = "default_true")]
    pub require_coverage_gain: bool,
    /// Repair rounds for failing new tests.
    #[serde(default = "default_max_repairs")]
    pub max_repairs: u32,
    /// The prompt budget in (estimated) tokens.
    #[serde(default = "default_max_prompt_tokens")]
    pub max_prompt_tokens: u32,
    /// `max_tokens` of every request.
    #[serde(default = "default_max_answer_tokens")]
    pub max_answer_tokens: u32,
    /// Mutants of the target per iteration (0: no mutation check).
    #[serde(default = "default_mutants")]
    pub mutants: u32,
    /// New tests that kill no mutant are dropped.
    #[serde(default = "default_true")]
    pub require_mutation_kill: bool,
}

/// One string or a list of them (TOML, state.json).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The items, a single string split at commas.
    pub fn items(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => s.split(',').map(str::to_string).collect(),
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(OneOrMany::deserialize(d)?.items())
}

fn default_true() -> bool {
    true
}

fn default_max_repairs() -> u32 {
    2
}

fn default_max_prompt_tokens() -> u32 {
    10_000
}

fn default_max_answer_tokens() -> u32 {
    2_000
}

fn default_mutants() -> u32 {
    20
}

fn default_reruns() -> u32 {
    5
}

mod humantime_serde_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// `[tool.improve]` / improve.toml. Unknown keys are an error: a typo in a setting that silently
/// does nothing would cost a night.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    #[serde(alias = "iterations")]
    pub iterations: Option<u32>,
    pub jobs: Option<u32>,
    pub provider: Option<String>,
    #[serde(alias = "llm_url")]
    pub llm_url: Option<String>,
    pub model: Option<String>,
    #[serde(alias = "test_cmd")]
    pub test_cmd: Option<String>,
    #[serde(alias = "packages")]
    pub package: Option<OneOrMany>,
    #[serde(alias = "tests_dir")]
    pub tests_dir: Option<String>,
    #[serde(alias = "setup_cmd")]
    pub setup_cmd: Option<String>,
    pub focus: Option<Vec<String>>,
    pub base: Option<String>,
    #[serde(alias = "max_duration")]
    pub max_duration: Option<String>,
    #[serde(alias = "max_tokens")]
    pub max_tokens: Option<u64>,
    #[serde(alias = "test_timeout")]
    pub test_timeout: Option<String>,
    #[serde(alias = "llm_timeout")]
    pub llm_timeout: Option<String>,
    #[serde(alias = "max_llm_failures")]
    pub max_llm_failures: Option<u32>,
    pub sandbox: Option<bool>,
    #[serde(alias = "pass_env")]
    pub pass_env: Option<Vec<String>>,
    pub reruns: Option<u32>,
    #[serde(alias = "require_coverage_gain")]
    pub require_coverage_gain: Option<bool>,
    #[serde(alias = "max_repairs")]
    pub max_repairs: Option<u32>,
    #[serde(alias = "max_prompt_tokens")]
    pub max_prompt_tokens: Option<u32>,
    #[serde(alias = "max_answer_tokens")]
    pub max_answer_tokens: Option<u32>,
    pub mutants: Option<u32>,
    #[serde(alias = "require_mutation_kill")]
    pub require_mutation_kill: Option<bool>,
}

/// Reads `improve.toml` (whole file) or else `[tool.improve]` of `pyproject.toml`.
pub fn load_file_config(repo_root: &Path) -> Result<FileConfig, UsageError> {
    let improve_toml = repo_root.join("improve.toml");
    if improve_toml.is_file() {
        let text = read(&improve_toml)?;
        return toml::from_str(&text).map_err(|e| {
            UsageError(format!(
                "{} is not valid: {}",
                improve_toml.display(),
                one_line(&e.to_string())
            ))
        });
    }
    let pyproject = repo_root.join("pyproject.toml");
    if !pyproject.is_file() {
        return Ok(FileConfig::default());
    }
    let text = read(&pyproject)?;
    let value: toml::Table = match toml::from_str(&text) {
        Ok(v) => v,
        // A pyproject.toml we cannot parse is the project's business, not a reason to refuse.
        Err(e) => {
            tracing::warn!(
                "ignoring {}: {}",
                pyproject.display(),
                one_line(&e.to_string())
            );
            return Ok(FileConfig::default());
        }
    };
    let Some(section) = value.get("tool").and_then(|t| t.get("improve")).cloned() else {
        return Ok(FileConfig::default());
    };
    section.try_into().map_err(|e: toml::de::Error| {
        UsageError(format!(
            "[tool.improve] in {} is not valid: {}",
            pyproject.display(),
            one_line(&e.to_string())
        ))
    })
}

fn read(path: &Path) -> Result<String, UsageError> {
    std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Everything a run needs besides the repository handle and the secret.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub iterations: u32,
    pub base: String,
    pub max_duration: Option<Duration>,
    pub settings: RunSettings,
}

/// The layers a setting comes from, highest first: the command line (which holds the
/// environment variables clap reads), the config file, the saved settings of the run being
/// resumed; the default comes last, at each field.
struct Layers<'a> {
    cli: &'a RunArgs,
    file: &'a FileConfig,
    saved: Option<&'a RunSettings>,
}

impl Layers<'_> {
    /// The command line's value, else the file's, else the saved run's.
    fn pick<T>(
        &self,
        cli: Option<T>,
        file: Option<T>,
        saved: impl FnOnce(&RunSettings) -> T,
    ) -> Option<T> {
        cli.or(file).or_else(|| self.saved.map(saved))
    }

    /// [`Layers::pick`] for a setting the saved run may not have.
    fn pick_opt<T>(
        &self,
        cli: Option<T>,
        file: Option<T>,
        saved: impl FnOnce(&RunSettings) -> Option<T>,
    ) -> Option<T> {
        cli.or(file).or_else(|| self.saved.and_then(saved))
    }

    /// A duration: the command line's, else the file's (parsed, named `name` in the error),
    /// else the saved run's.
    fn duration(
        &self,
        cli: Option<Duration>,
        file: &Option<String>,
        name: &str,
        saved: impl FnOnce(&RunSettings) -> Duration,
    ) -> Result<Option<Duration>, UsageError> {
        Ok(self.pick(cli, file_duration(file, name)?, saved))
    }
}

fn file_duration(v: &Option<String>, name: &str) -> Result<Option<Duration>, UsageError> {
    v.as_deref()
        .map(|s| {
            parse_duration(s).map_err(|e| UsageError(format!("{name} in the config file: {e}")))
        })
        .transpose()
}

/// Merges the layers. `saved` is the settings of the run being resumed, if any.
pub fn resolve(
    repo_root: &Path,
    cli: &RunArgs,
    file: &FileConfig,
    saved: Option<&RunSettings>,
    tree: &ProjectTree,
) -> Result<Resolved, UsageError> {
    let l = Layers { cli, file, saved };
    let (provider, replay) = provider_and_replay(&l)?;
    let (llm_url, model) = endpoint(&l, provider)?;
    let (iterations, jobs) = counts(&l)?;
    let checks = verification(&l);
    let (max_prompt_tokens, max_answer_tokens) = token_limits(&l)?;
    let default_secs = Duration::from_secs(300);
    let settings = RunSettings {
        provider,
        llm_url,
        model,
        replay,
        record: l.pick_opt(cli.record.as_deref().map(absolute), None, |s| {
            s.record.clone()
        }),
        test_cmd: test_cmd(&l, repo_root)?,
        packages: packages(&l, repo_root, tree)?,
        tests_dir: match cli.tests_dir.as_ref().or(file.tests_dir.as_ref()) {
            Some(t) => Some(check_dir(repo_root, t, "--tests-dir", false)?),
            None => saved.and_then(|s| s.tests_dir.clone()),
        },
        setup_cmd: l
            .pick_opt(cli.setup_cmd.clone(), file.setup_cmd.clone(), |s| {
                s.setup_cmd.clone()
            })
            .filter(|c| !c.trim().is_empty()),
        focus: focus(&l)?,
        jobs,
        test_timeout: l
            .duration(cli.test_timeout, &file.test_timeout, "test-timeout", |s| {
                s.test_timeout
            })?
            .unwrap_or(default_secs),
        llm_timeout: l
            .duration(cli.llm_timeout, &file.llm_timeout, "llm-timeout", |s| {
                s.llm_timeout
            })?
            .unwrap_or(default_secs),
        max_llm_failures: l
            .pick(cli.max_llm_failures, file.max_llm_failures, |s| {
                s.max_llm_failures
            })
            .unwrap_or(5),
        // Limits are for this invocation: a stopped run resumes with the same command.
        max_tokens: cli.max_tokens.or(file.max_tokens),
        sandbox: cli.sandbox || file.sandbox.unwrap_or(false) || saved.is_some_and(|s| s.sandbox),
        pass_env: l
            .pick(cli.pass_env.clone(), file.pass_env.clone(), |s| {
                s.pass_env.clone()
            })
            .unwrap_or_default(),
        reruns: checks.reruns,
        require_coverage_gain: checks.require_coverage_gain,
        max_repairs: checks.max_repairs,
        max_prompt_tokens,
        max_answer_tokens,
        mutants: checks.mutants,
        require_mutation_kill: checks.require_mutation_kill,
    };
    Ok(Resolved {
        iterations,
        base: cli
            .base
            .clone()
            .or_else(|| file.base.clone())
            .unwrap_or_else(|| "HEAD".into()),
        max_duration: cli
            .max_duration
            .or(file_duration(&file.max_duration, "max-duration")?),
        settings,
    })
}

/// The LLM's URL and model. They are saved for their provider only.
fn endpoint(l: &Layers<'_>, provider: Provider) -> Result<(String, String), UsageError> {
    let endpoint = Layers {
        saved: l.saved.filter(|s| s.provider == provider),
        ..*l
    };
    let (cli, file) = (l.cli, l.file);
    let url = endpoint
        .pick(cli.llm_url.clone(), file.llm_url.clone(), |s| {
            s.llm_url.clone()
        })
        .unwrap_or_else(|| default_url(provider).to_string());
    check_url(provider, &url)?;
    let model = endpoint.pick(cli.model.clone(), file.model.clone(), |s| s.model.clone());
    Ok((url, check_model(provider, model)?))
}

/// How the new tests are verified.
struct Verification {
    reruns: u32,
    require_coverage_gain: bool,
    max_repairs: u32,
    mutants: u32,
    require_mutation_kill: bool,
}

fn verification(l: &Layers<'_>) -> Verification {
    let (cli, file) = (l.cli, l.file);
    let required = |cli: Option<bool>, file: Option<bool>, saved: fn(&RunSettings) -> bool| {
        l.pick(cli, file, saved).unwrap_or(true)
    };
    Verification {
        reruns: l
            .pick(cli.reruns, file.reruns, |s| s.reruns)
            .unwrap_or_else(default_reruns),
        require_coverage_gain: required(
            cli.require_coverage_gain,
            file.require_coverage_gain,
            |s| s.require_coverage_gain,
        ),
        max_repairs: l
            .pick(cli.max_repairs, file.max_repairs, |s| s.max_repairs)
            .unwrap_or_else(default_max_repairs),
        mutants: l
            .pick(cli.mutants, file.mutants, |s| s.mutants)
            .unwrap_or_else(default_mutants),
        require_mutation_kill: required(
            cli.require_mutation_kill,
            file.require_mutation_kill,
            |s| s.require_mutation_kill,
        ),
    }
}

/// The prompt and answer budgets in tokens.
fn token_limits(l: &Layers<'_>) -> Result<(u32, u32), UsageError> {
    let (cli, file) = (l.cli, l.file);
    let prompt = l
        .pick(cli.max_prompt_tokens, file.max_prompt_tokens, |s| {
            s.max_prompt_tokens
        })
        .unwrap_or_else(default_max_prompt_tokens);
    let answer = l
        .pick(cli.max_answer_tokens, file.max_answer_tokens, |s| {
            s.max_answer_tokens
        })
        .unwrap_or_else(default_max_answer_tokens);
    if prompt < 1_000 {
        return Err(UsageError(
            "--max-prompt-tokens must be at least 1000: a prompt holds the module and the instructions".into(),
        ));
    }
    if answer < 200 {
        return Err(UsageError(
            "--max-answer-tokens must be at least 200: an answer holds a whole test file".into(),
        ));
    }
    Ok((prompt, answer))
}

/// How many iterations, and how many at a time: at least one of each.
fn counts(l: &Layers<'_>) -> Result<(u32, u32), UsageError> {
    let iterations = l.cli.iterations.or(l.file.iterations).unwrap_or(10);
    if iterations == 0 {
        return Err(UsageError("iterations must be at least 1".into()));
    }
    let jobs = l.pick(l.cli.jobs, l.file.jobs, |s| s.jobs).unwrap_or(1);
    if jobs == 0 {
        return Err(UsageError("jobs must be at least 1".into()));
    }
    Ok((iterations, jobs))
}

/// The provider, and the recording to replay (saved as an absolute path, so a resume from
/// another folder finds it).
fn provider_and_replay(l: &Layers<'_>) -> Result<(Provider, Option<PathBuf>), UsageError> {
    let (cli, file, saved) = (l.cli, l.file, l.saved);
    let replay = cli
        .replay
        .as_deref()
        .map(absolute)
        .or_else(|| saved.and_then(|s| s.replay.clone()));
    let provider = match (cli.provider, &file.provider) {
        (Some(p), _) => p.into(),
        (None, _) if cli.replay.is_some() => Provider::Replay,
        (None, Some(name)) => parse_provider(name)?,
        (None, None) => saved.map(|s| s.provider).unwrap_or(if replay.is_some() {
            Provider::Replay
        } else {
            Provider::OpenAi
        }),
    };
    if provider == Provider::Replay {
        match &replay {
            None => {
                return Err(UsageError(
                    "--provider replay needs --replay FILE (a file written by --record)".into(),
                ));
            }
            Some(path) if !path.is_file() => {
                return Err(UsageError(format!(
                    "--replay {}: no such file",
                    path.display()
                )));
            }
            Some(_) => {}
        }
    }
    Ok((provider, replay))
}

fn check_url(provider: Provider, llm_url: &str) -> Result<(), UsageError> {
    if provider != Provider::Replay
        && !(llm_url.starts_with("http://") || llm_url.starts_with("https://"))
    {
        return Err(UsageError(format!(
            "--llm-url `{llm_url}` must start with http:// or https://"
        )));
    }
    Ok(())
}

fn check_model(provider: Provider, model: Option<String>) -> Result<String, UsageError> {
    match (model, provider) {
        (Some(m), _) if !m.trim().is_empty() => Ok(m),
        (_, Provider::Replay) => Ok("replay".to_string()),
        _ => Err(UsageError(
            "no model given: pass --model NAME or set IMPROVE_MODEL".into(),
        )),
    }
}

fn test_cmd(l: &Layers<'_>, repo_root: &Path) -> Result<Vec<String>, UsageError> {
    match l.cli.test_cmd.clone().or_else(|| l.file.test_cmd.clone()) {
        Some(text) => parse_test_cmd(&text),
        None => Ok(match l.saved {
            Some(s) => s.test_cmd.clone(),
            None => default_test_cmd(repo_root),
        }),
    }
}

/// The code under test: as given (checked), else as the resumed run had it, else detected.
fn packages(
    l: &Layers<'_>,
    repo_root: &Path,
    tree: &ProjectTree,
) -> Result<Vec<String>, UsageError> {
    let given = l
        .cli
        .package
        .clone()
        .or_else(|| l.file.package.as_ref().map(OneOrMany::items));
    match (given, l.saved) {
        (Some(list), _) => check_packages(repo_root, &list),
        (None, Some(s)) => Ok(s.packages.clone()),
        (None, None) => project::detect_packages(tree).map_err(UsageError),
    }
}

fn focus(l: &Layers<'_>) -> Result<Vec<String>, UsageError> {
    let focus: Vec<String> = l
        .pick(l.cli.focus.clone(), l.file.focus.clone(), |s| {
            s.focus.clone()
        })
        .unwrap_or_else(|| DEFAULT_FOCUS.iter().map(|s| s.to_string()).collect())
        .into_iter()
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .collect();
    if focus.is_empty() {
        return Err(UsageError("--focus needs at least one area".into()));
    }
    Ok(focus)
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

fn parse_provider(name: &str) -> Result<Provider, UsageError> {
    match name {
        "openai" => Ok(Provider::OpenAi),
        "anthropic" => Ok(Provider::Anthropic),
        "replay" => Ok(Provider::Replay),
        other => Err(UsageError(format!(
            "provider `{other}` is unknown: use openai, anthropic or replay"
        ))),
    }
}

fn default_url(provider: Provider) -> &'static str {
    match provider {
        Provider::OpenAi => "https://api.openai.com/v1",
        Provider::Anthropic => "https://api.anthropic.com",
        Provider::Replay => "replay",
    }
}

pub fn parse_test_cmd(text: &str) -> Result<Vec<String>, UsageError> {
    let words = shell_words::split(text).map_err(|e| {
        UsageError(format!(
            "--test-cmd `{text}` cannot be split into words: {e}"
        ))
    })?;
    if words.is_empty() {
        return Err(UsageError("--test-cmd is empty".into()));
    }
    Ok(words)
}

pub fn default_test_cmd(repo_root: &Path) -> Vec<String> {
    let venv_python = repo_root.join(".venv/bin/python");
    let python = if venv_python.is_file() {
        venv_python.display().to_string()
    } else {
        "python3".to_string()
    };
    vec![python, "-m".into(), "pytest".into()]
}

/// A relative folder inside the repo, normalized to forward slashes without a trailing one. A
/// tests folder may not exist yet (the first kept iteration creates it).
fn check_dir(
    repo_root: &Path,
    rel: &str,
    flag: &str,
    must_exist: bool,
) -> Result<String, UsageError> {
    let trimmed = rel.trim().trim_end_matches('/').to_string();
    let p = Path::new(&trimmed);
    if trimmed.is_empty()
        || p.is_absolute()
        || p.components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(UsageError(format!(
            "{flag} `{rel}` must be a folder relative to the repository, without `..`"
        )));
    }
    if must_exist && !repo_root.join(p).exists() {
        return Err(UsageError(format!(
            "{flag} `{rel}`: no such folder or module in {}",
            repo_root.display()
        )));
    }
    Ok(trimmed)
}

/// `--package a,b`: each a folder or a `.py` module inside the repository.
fn check_packages(repo_root: &Path, list: &[String]) -> Result<Vec<String>, UsageError> {
    let mut out = Vec::new();
    for item in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let path = check_dir(repo_root, item, "--package", true)?;
        let abs = repo_root.join(&path);
        if abs.is_file() && !path.ends_with(".py") {
            return Err(UsageError(format!(
                "--package `{item}` is a file but not a Python module: name a package folder or a .py file"
            )));
        }
        if !out.contains(&path) {
            out.push(path);
        }
    }
    if out.is_empty() {
        return Err(UsageError(
            "--package needs at least one folder or module".into(),
        ));
    }
    Ok(out)
}

/// Resolves `--repo`: it must exist; relative paths are taken from the current directory.
pub fn repo_root(arg: Option<&Path>) -> Result<PathBuf, UsageError> {
    let path = match arg {
        Some(p) => p.to_path_buf(),
        None => std::env::current_dir()
            .map_err(|e| UsageError(format!("cannot read the current directory: {e}")))?,
    };
    if !path.is_dir() {
        return Err(UsageError(format!(
            "--repo {}: no such directory",
            path.display()
        )));
    }
    path.canonicalize()
        .map_err(|e| UsageError(format!("--repo {}: {e}", path.display())))
}

pub fn state_dir(repo_root: &Path, arg: Option<&Path>) -> PathBuf {
    match arg {
        Some(p) if p.is_absolute() => p.to_path_buf(),
        Some(p) => std::env::current_dir()
            .map(|cwd| cwd.join(p))
            .unwrap_or_else(|_| p.to_path_buf()),
        None => repo_root.join(".improve"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_with(dirs: &[&str], files: &[&str]) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        for d in dirs {
            std::fs::create_dir_all(tmp.path().join(d)).unwrap();
        }
        for f in files {
            std::fs::write(tmp.path().join(f), "").unwrap();
        }
        tmp
    }

    fn tree_of(files: &[&str]) -> ProjectTree {
        ProjectTree::new(files.iter().map(|s| s.to_string()), |_| None)
    }

    #[test]
    fn packages_come_from_the_command_line_else_the_file_else_detection() {
        let tmp = repo_with(
            &["a", "b", "tests"],
            &["a/__init__.py", "b/__init__.py", "six.py"],
        );
        let tree = tree_of(&["a/__init__.py", "b/__init__.py"]);
        let cli = RunArgs {
            model: Some("m".into()),
            package: Some(vec!["six.py".into(), "b/".into()]),
            ..RunArgs::default()
        };
        let r = resolve(tmp.path(), &cli, &FileConfig::default(), None, &tree).unwrap();
        assert_eq!(r.settings.packages, ["six.py", "b"]);
        let file: FileConfig = toml::from_str("model = \"m\"\npackage = [\"a\"]").unwrap();
        let r = resolve(tmp.path(), &RunArgs::default(), &file, None, &tree).unwrap();
        assert_eq!(r.settings.packages, ["a"]);
        let file: FileConfig = toml::from_str("model = \"m\"").unwrap();
        let r = resolve(tmp.path(), &RunArgs::default(), &file, None, &tree).unwrap();
        assert_eq!(r.settings.packages, ["a", "b"]);
        assert_eq!(r.settings.tests_dir, None);
    }

    #[test]
    fn a_package_that_is_not_there_is_a_usage_error() {
        let tmp = repo_with(&["pkg"], &["pkg/__init__.py", "README"]);
        for bad in ["nope", "../x", "README"] {
            let cli = RunArgs {
                model: Some("m".into()),
                package: Some(vec![bad.into()]),
                ..RunArgs::default()
            };
            let err = resolve(
                tmp.path(),
                &cli,
                &FileConfig::default(),
                None,
                &tree_of(&[]),
            )
            .unwrap_err();
            assert!(err.0.contains("--package"), "{bad}: {}", err.0);
        }
    }

    #[test]
    fn a_saved_single_package_still_loads() {
        let json = serde_json::json!({
            "provider": "openai", "llm_url": "http://x", "model": "m", "replay": null,
            "record": null, "test_cmd": ["python3", "-m", "pytest"], "package": "src/pkg",
            "tests_dir": "tests", "focus": ["a"], "jobs": 1, "test_timeout": 1.0,
            "llm_timeout": 1.0, "max_llm_failures": 5, "max_tokens": null
        });
        let s: RunSettings = serde_json::from_value(json).unwrap();
        assert_eq!(s.packages, ["src/pkg"]);
        assert_eq!(s.tests_dir.as_deref(), Some("tests"));
    }

    #[test]
    fn command_line_beats_file_beats_saved() {
        let tmp = repo_with(&["pkg", "tests"], &["pkg/__init__.py"]);
        let file: FileConfig =
            toml::from_str("model = \"from-file\"\nfocus = [\"a\", \"b\"]\ntest-timeout = \"10s\"")
                .unwrap();
        let cli = RunArgs {
            model: Some("from-cli".into()),
            ..RunArgs::default()
        };
        let r = resolve(
            tmp.path(),
            &cli,
            &file,
            None,
            &tree_of(&["pkg/__init__.py"]),
        )
        .unwrap();
        assert_eq!(r.settings.model, "from-cli");
        assert_eq!(r.settings.focus, vec!["a", "b"]);
        assert_eq!(r.settings.test_timeout, Duration::from_secs(10));
        let r2 = resolve(
            tmp.path(),
            &RunArgs::default(),
            &file,
            None,
            &tree_of(&["pkg/__init__.py"]),
        )
        .unwrap();
        assert_eq!(r2.settings.model, "from-file");
    }

    #[test]
    fn unknown_file_key_is_rejected() {
        let err = toml::from_str::<FileConfig>("iteratoins = 3").unwrap_err();
        assert!(err.to_string().contains("iteratoins"));
    }

    #[test]
    fn missing_model_is_a_usage_error() {
        let tmp = repo_with(&["pkg", "tests"], &["pkg/__init__.py"]);
        let err = resolve(
            tmp.path(),
            &RunArgs::default(),
            &FileConfig::default(),
            None,
            &tree_of(&["pkg/__init__.py"]),
        )
        .unwrap_err();
        assert!(err.0.contains("--model"));
    }
}
