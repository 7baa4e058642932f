//! Resolved settings of a run. Every setting is declared once, in the table of
//! schema/settings.rs; this module turns the table, in one expansion, into the command-line
//! flags, the config-file layer (read by file.rs), the one merge of the layers — command line > environment >
//! `[tool.improve]` in pyproject.toml (or improve.toml) > the saved settings of a resumed run >
//! the declared default — and the per-setting checks (hooks.rs), and shows the result with
//! where each value came from (`improve status --settings`, show.rs).

mod file;
mod hooks;
pub mod show;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Serialize;

use file::de;
pub use file::{LoadedFile, load_file_config};

use crate::error::UsageError;
use crate::project::ProjectTree;
use crate::schema::{Price, Provider, RunSettings, default_focus, run_settings};

pub use crate::cost::parse_price;

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A flag on the command line.
    Flag,
    /// An environment variable clap reads for the flag.
    Env,
    /// The config file, named.
    File(String),
    /// The saved settings of the run being resumed.
    Saved,
    /// The declared default (or what was detected, where there is none).
    Default,
}

/// A value a layer gives, and which layer.
#[derive(Debug, Clone)]
pub struct Given<T> {
    pub value: T,
    pub source: Source,
}

/// One setting across the layers: the highest of command line, environment and file; the saved
/// run's value; the declared default.
#[derive(Debug, Clone)]
pub struct Layer<T> {
    pub given: Option<Given<T>>,
    pub saved: Option<T>,
    pub default: Option<T>,
}

impl<T: Clone> Layer<T> {
    /// What the command line, the environment or the file says, else the saved run.
    pub fn pick(&self) -> Option<(T, Source)> {
        match (&self.given, &self.saved) {
            (Some(g), _) => Some((g.value.clone(), g.source.clone())),
            (None, Some(s)) => Some((s.clone(), Source::Saved)),
            (None, None) => None,
        }
    }

    /// [`Layer::pick`], else the default.
    pub fn pick_or_default(&self) -> Option<(T, Source)> {
        self.pick()
            .or_else(|| self.default.clone().map(|d| (d, Source::Default)))
    }

    /// The value of the command line or the environment (not the file's).
    pub fn typed(&self) -> Option<&T> {
        self.given
            .as_ref()
            .filter(|g| matches!(g.source, Source::Flag | Source::Env))
            .map(|g| &g.value)
    }
}

/// A saved field as a layer: a setting that may be unset is saved as an `Option`.
trait SavedLayer<T> {
    fn layer(&self) -> Option<T>;
}

impl<T: Clone> SavedLayer<T> for T {
    fn layer(&self) -> Option<T> {
        Some(self.clone())
    }
}

impl<T: Clone> SavedLayer<T> for Option<T> {
    fn layer(&self) -> Option<T> {
        self.clone()
    }
}

/// The options as one command line parsed them; `matches` tells a flag from an environment
/// variable (without them, every value counts as a flag).
#[derive(Clone, Copy)]
pub struct CommandLine<'a> {
    pub args: &'a RunArgs,
    pub matches: Option<&'a ArgMatches>,
}

impl CommandLine<'_> {
    fn source(&self, id: &str) -> Source {
        match self.matches.and_then(|m| m.value_source(id)) {
            Some(ValueSource::EnvVariable) => Source::Env,
            _ => Source::Flag,
        }
    }
}

/// The first command line's flag, else the first one's environment value (`status --settings`
/// reads the options given before and after `status`).
fn given<T>(
    lines: &[CommandLine<'_>],
    id: &str,
    get: impl Fn(&RunArgs) -> Option<T>,
) -> Option<Given<T>> {
    let mut found: Vec<Given<T>> = lines
        .iter()
        .filter_map(|c| {
            get(c.args).map(|value| Given {
                value,
                source: c.source(id),
            })
        })
        .collect();
    let flag = found
        .iter()
        .position(|g| g.source == Source::Flag)
        .unwrap_or(0);
    (flag < found.len()).then(|| found.swap_remove(flag))
}

fn from_file<T>(file: &LoadedFile, value: Option<T>) -> Option<Given<T>> {
    value.map(|value| Given {
        value,
        source: Source::File(file.name.clone().unwrap_or_default()),
    })
}

/// What the per-setting hooks may look at besides their own layer.
pub struct Cx<'a> {
    pub repo_root: &'a Path,
    pub tree: &'a ProjectTree,
    pub layers: &'a Layers,
    /// The commit the resumed run started at.
    pub saved_base: Option<&'a str>,
}

/// One resolved setting, as `status --settings` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: &'static str,
    pub value: Option<String>,
    pub source: Source,
}

fn row<F: Shown>(rows: &mut Vec<Row>, name: &'static str, (value, source): (F, Source)) -> F {
    rows.push(Row {
        name,
        value: value.shown(),
        source,
    });
    value
}

macro_rules! layered {
    (
        saved { $(
            $(#[doc = $doc:literal])*
            $name:ident: $ty:ty => $fty:ty {
                arg: [$($arg:tt)*],
                file: [$($file:tt)*],
                saved: [$($saved:tt)*],
                default: $default:expr,
                hook: $hook:ident,
            }
        )* }
        invocation { $(
            $(#[doc = $idoc:literal])*
            $iname:ident: $ity:ty => $ifty:ty {
                arg: [$($iarg:tt)*],
                file: [$($ifile:tt)*],
                default: $idefault:expr,
                hook: $ihook:ident,
            }
        )* }
    ) => {
        /// Options of a run (see the settings table in schema/settings.rs): one flag per
        /// setting, every one optional so that the environment, the config file and the saved
        /// run can fill what the command line leaves out. The help text is the table's, with
        /// its default.
        #[derive(Debug, Clone, Default, clap::Args)]
        pub struct RunArgs {
            $(
                #[arg($($iarg)*, help = help(&[$($idoc),*], {
                    let d: Option<$ity> = $idefault;
                    d
                }))]
                pub $iname: Option<$ity>,
            )*
            $(
                #[arg($($arg)*, help = help(&[$($doc),*], {
                    let d: Option<$ty> = $default;
                    d
                }))]
                pub $name: Option<$ty>,
            )*
        }

        /// The settings a config file may hold (`[tool.improve]` or improve.toml); every one
        /// optional. Keys are the flag names (kebab-case; the snake_case spellings are read
        /// too). Unknown keys are an error: a typo in a setting that silently does nothing
        /// would cost a night.
        #[derive(Debug, Clone, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        pub struct FileConfig {
            $(
                #[serde(default, $($file)*)]
                pub $name: Option<$ty>,
            )*
            $(
                #[serde(default, $($ifile)*)]
                pub $iname: Option<$ity>,
            )*
        }

        /// Every setting across its layers.
        pub struct Layers {
            $(pub $name: Layer<$ty>,)*
            $(pub $iname: Layer<$ity>,)*
        }

        impl Layers {
            /// The one merge: command line (flag, then environment), file, saved run, default.
            pub fn new(lines: &[CommandLine<'_>], file: &LoadedFile, saved: Option<&RunSettings>) -> Layers {
                let f = &file.config;
                Layers {
                    $($name: Layer {
                        given: given(lines, stringify!($name), |a| a.$name.clone())
                            .or_else(|| from_file(file, f.$name.clone())),
                        saved: saved.and_then(|s| SavedLayer::<$ty>::layer(&s.$name)),
                        default: $default,
                    },)*
                    $($iname: Layer {
                        given: given(lines, stringify!($iname), |a| a.$iname.clone())
                            .or_else(|| from_file(file, f.$iname.clone())),
                        saved: None,
                        default: $idefault,
                    },)*
                }
            }
        }

        /// Everything a run needs besides the repository handle and the secret.
        #[derive(Debug, Clone)]
        pub struct Resolved {
            pub settings: RunSettings,
            $(pub $iname: $ifty,)*
            /// Each setting's value and source, in the table's order.
            pub rows: Vec<Row>,
        }

        /// Each setting's hook on its layer, in the table's order.
        pub fn resolve_layers(cx: &Cx<'_>) -> Result<Resolved, UsageError> {
            let l = cx.layers;
            let mut rows = Vec::new();
            $(let $name: $fty = row(&mut rows, stringify!($name), hooks::$hook(&l.$name, cx)?);)*
            $(let $iname: $ifty = row(&mut rows, stringify!($iname), hooks::$ihook(&l.$iname, cx)?);)*
            Ok(Resolved {
                settings: RunSettings { $($name,)* },
                $($iname,)*
                rows,
            })
        }

        /// The names of the saved settings, in state.json's order.
        pub const SAVED: &[&str] = &[$(stringify!($name)),*];
        /// The names of the settings of one invocation.
        pub const INVOCATION: &[&str] = &[$(stringify!($iname)),*];

        /// Each setting's declared default as `--help` shows it (None: no fixed default).
        pub fn declared_defaults() -> Vec<(&'static str, Option<String>)> {
            vec![
                $((stringify!($name), { let d: Option<$ty> = $default; d.shown() }),)*
                $((stringify!($iname), { let d: Option<$ity> = $idefault; d.shown() }),)*
            ]
        }
    };
}

run_settings!(layered);

/// Merges the layers for a run in `repo_root` whose base commit has `tree`. `saved` is the run
/// being resumed, if any, with the commit it started at.
pub fn resolve(
    repo_root: &Path,
    lines: &[CommandLine<'_>],
    file: &LoadedFile,
    saved: Option<(&RunSettings, &str)>,
    tree: &ProjectTree,
) -> Result<Resolved, UsageError> {
    let layers = Layers::new(lines, file, saved.map(|s| s.0));
    resolve_layers(&Cx {
        repo_root,
        tree,
        layers: &layers,
        saved_base: saved.map(|s| s.1),
    })
}

/// The revision the run starts at: a resumed run's base commit, else `--base`, else the
/// default. The one place that decides it; the driver needs it before the rest (the project's
/// files are read at that commit).
pub fn base_rev(layer: &Layer<String>, saved_base: Option<&str>) -> (String, Source) {
    match saved_base {
        Some(commit) => (commit.to_string(), Source::Saved),
        None => layer
            .pick_or_default()
            .unwrap_or_else(|| ("HEAD".into(), Source::Default)),
    }
}

/// A value as `--help` and `status --settings` show it.
pub trait Shown {
    fn shown(&self) -> Option<String>;
}

macro_rules! shown_by_display {
    ($($t:ty),*) => {
        $(impl Shown for $t {
            fn shown(&self) -> Option<String> {
                Some(self.to_string())
            }
        })*
    };
}

shown_by_display!(u32, u64, f32, f64, bool, String);

impl Shown for crate::schema::Price {
    fn shown(&self) -> Option<String> {
        Some(crate::cost::shown(self))
    }
}

impl Shown for Duration {
    fn shown(&self) -> Option<String> {
        Some(humantime::format_duration(*self).to_string())
    }
}

impl Shown for PathBuf {
    fn shown(&self) -> Option<String> {
        Some(self.display().to_string())
    }
}

impl Shown for Provider {
    fn shown(&self) -> Option<String> {
        Some(self.as_str().to_string())
    }
}

impl Shown for Vec<String> {
    fn shown(&self) -> Option<String> {
        (!self.is_empty()).then(|| self.join(", "))
    }
}

impl<T: Shown> Shown for Option<T> {
    fn shown(&self) -> Option<String> {
        self.as_ref().and_then(Shown::shown)
    }
}

/// A setting's help: its doc lines as one paragraph, then its default.
fn help<T: Shown>(docs: &[&str], default: Option<T>) -> String {
    let text = docs.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ");
    match default.shown() {
        Some(d) => format!("{text} [default: {d}]"),
        None => text,
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. 90s, 30m, 8h"))?;
    if d.is_zero() {
        return Err("a duration must be longer than zero".into());
    }
    Ok(d)
}

/// A command as shell words (`--test-cmd`).
pub fn parse_words(text: &str) -> Result<Vec<String>, String> {
    let words = shell_words::split(text)
        .map_err(|e| format!("`{text}` cannot be split into words: {e}"))?;
    if words.is_empty() {
        return Err("the command is empty".into());
    }
    Ok(words)
}

pub fn parse_test_cmd(text: &str) -> Result<Vec<String>, UsageError> {
    parse_words(text).map_err(|e| UsageError(format!("--test-cmd {e}")))
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

/// Whether this invocation starts a new run although one is unfinished (`--fresh`), needed
/// before the rest: it decides whether there is a saved run to resume.
pub fn fresh(lines: &[CommandLine<'_>], file: &LoadedFile) -> bool {
    Layers::new(lines, file, None)
        .fresh
        .pick_or_default()
        .is_some_and(|(fresh, _)| fresh)
}

/// The settings of a run in `repo`, as a run resolves them: the base revision first (a resumed
/// run's commit, else `--base`), then the project at that commit, then every other setting.
/// `saved`: the run being resumed, with the commit it started at.
pub fn resolve_in_repo(
    repo: &git2::Repository,
    repo_root: &Path,
    lines: &[CommandLine<'_>],
    file: &LoadedFile,
    saved: Option<(&RunSettings, &str)>,
) -> anyhow::Result<(Resolved, ProjectTree)> {
    let layers = Layers::new(lines, file, saved.map(|s| s.0));
    let saved_base = saved.map(|s| s.1);
    let (base, _) = base_rev(&layers.base, saved_base);
    let base_oid =
        crate::git::resolve_commit(repo, &base).map_err(|e| UsageError(e.to_string()))?;
    let tree = crate::git::project_tree(repo, base_oid)?;
    let resolved = resolve_layers(&Cx {
        repo_root,
        tree: &tree,
        layers: &layers,
        saved_base,
    })?;
    Ok((resolved, tree))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn run(
        root: &Path,
        cli: &RunArgs,
        file: FileConfig,
        tree: &ProjectTree,
    ) -> Result<Resolved, UsageError> {
        let lines = [CommandLine {
            args: cli,
            matches: None,
        }];
        let file = LoadedFile {
            config: file,
            name: Some("improve.toml".into()),
        };
        resolve(root, &lines, &file, None, tree)
    }

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
            packages: Some(vec!["six.py".into(), "b/".into()]),
            ..RunArgs::default()
        };
        let r = run(tmp.path(), &cli, FileConfig::default(), &tree).unwrap();
        assert_eq!(r.settings.packages, ["six.py", "b"]);
        let file: FileConfig = toml::from_str("model = \"m\"\npackage = [\"a\"]").unwrap();
        let r = run(tmp.path(), &RunArgs::default(), file, &tree).unwrap();
        assert_eq!(r.settings.packages, ["a"]);
        let file: FileConfig = toml::from_str("model = \"m\"").unwrap();
        let r = run(tmp.path(), &RunArgs::default(), file, &tree).unwrap();
        assert_eq!(r.settings.packages, ["a", "b"]);
        assert_eq!(r.settings.tests_dir, None);
    }

    #[test]
    fn a_package_that_is_not_there_is_a_usage_error() {
        let tmp = repo_with(&["pkg"], &["pkg/__init__.py", "README"]);
        for bad in ["nope", "../x", "README"] {
            let cli = RunArgs {
                model: Some("m".into()),
                packages: Some(vec![bad.into()]),
                ..RunArgs::default()
            };
            let err = run(tmp.path(), &cli, FileConfig::default(), &tree_of(&[])).unwrap_err();
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
        let r = run(
            tmp.path(),
            &cli,
            file.clone(),
            &tree_of(&["pkg/__init__.py"]),
        )
        .unwrap();
        assert_eq!(r.settings.model, "from-cli");
        assert_eq!(r.settings.focus, vec!["a", "b"]);
        assert_eq!(r.settings.test_timeout, Duration::from_secs(10));
        let r2 = run(
            tmp.path(),
            &RunArgs::default(),
            file,
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
        let err = run(
            tmp.path(),
            &RunArgs::default(),
            FileConfig::default(),
            &tree_of(&["pkg/__init__.py"]),
        )
        .unwrap_err();
        assert!(err.0.contains("--model"));
    }

    #[test]
    fn each_value_says_where_it_came_from() {
        let tmp = repo_with(&["pkg"], &["pkg/__init__.py"]);
        let file: FileConfig = toml::from_str("reruns = 3\nmax_repairs = 4").unwrap();
        let cli = RunArgs {
            model: Some("m".into()),
            ..RunArgs::default()
        };
        let mut saved = RunSettings {
            mutants: 7,
            ..RunSettings::default()
        };
        saved.packages = vec!["pkg".into()];
        saved.llm_url = "http://x".into();
        let lines = [CommandLine {
            args: &cli,
            matches: None,
        }];
        let file = LoadedFile {
            config: file,
            name: Some("improve.toml".into()),
        };
        let tree = tree_of(&["pkg/__init__.py"]);
        let r = resolve(tmp.path(), &lines, &file, Some((&saved, "abc")), &tree).unwrap();
        let source = |name: &str| {
            r.rows
                .iter()
                .find(|row| row.name == name)
                .unwrap()
                .source
                .clone()
        };
        assert_eq!(source("model"), Source::Flag);
        assert_eq!(source("reruns"), Source::File("improve.toml".into()));
        assert_eq!(source("max_repairs"), Source::File("improve.toml".into()));
        assert_eq!(source("mutants"), Source::Saved);
        assert_eq!(source("jobs"), Source::Saved);
        assert_eq!(source("iterations"), Source::Default);
        assert_eq!((r.base.as_str(), source("base")), ("abc", Source::Saved));
        assert_eq!((r.settings.reruns, r.settings.mutants), (3, 7));
        assert_eq!(r.rows.len(), SAVED.len() + INVOCATION.len());
    }

    #[test]
    fn an_empty_saved_object_takes_every_default() {
        let s: RunSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(s, RunSettings::default());
        assert_eq!((s.reruns, s.mutants, s.jobs), (5, 20, 1));
        assert_eq!(s.test_timeout, Duration::from_secs(300));
        assert!(s.require_coverage_gain && s.require_mutation_kill && !s.sandbox);
    }

    #[test]
    fn every_setting_has_a_kebab_and_a_snake_file_key() {
        for name in SAVED.iter().chain(INVOCATION) {
            if matches!(*name, "replay" | "record" | "fresh") {
                continue;
            }
            let value = match *name {
                "provider" => "\"openai\"".to_string(),
                "price" => "\"3,15\"".to_string(),
                "max_cost" => "2.5".to_string(),
                "test_timeout" | "llm_timeout" | "max_duration" | "call_budget" => {
                    "\"5m\"".to_string()
                }
                "focus" | "pass_env" | "packages" | "source_roots" => "[\"a\"]".to_string(),
                "sandbox" | "require_coverage_gain" | "require_mutation_kill" => "true".into(),
                "llm_url" | "model" | "test_cmd" | "tests_dir" | "setup_cmd" | "base" | "since" => {
                    "\"x\"".into()
                }
                _ => "3".into(),
            };
            let key = match *name {
                "packages" => "package",
                "source_roots" => "source_root",
                _ => name,
            };
            for spelt in [key.replace('_', "-"), key.to_string()] {
                let parsed = toml::from_str::<FileConfig>(&format!("{spelt} = {value}"));
                assert!(parsed.is_ok(), "{spelt}: {parsed:?}");
            }
        }
    }

    /// state/README.md documents every saved setting.
    #[test]
    fn the_state_readme_documents_every_saved_setting() {
        let readme = include_str!("../../state/README.md");
        let line = readme
            .lines()
            .find(|l| l.starts_with("| `settings` |"))
            .unwrap();
        for name in SAVED {
            assert!(
                line.contains(name),
                "state/README.md: `settings` does not mention {name}"
            );
        }
    }

    /// Every default the README's options table states is the declared one.
    #[test]
    fn the_readme_states_the_declared_defaults() {
        let readme = include_str!("../../README.md");
        let mut checked = 0;
        for (name, default) in declared_defaults() {
            let Some(default) = default else { continue };
            let flag = format!("--{}", flag_of(name));
            let names_flag = |cell: &str| {
                cell.match_indices(&flag).any(|(at, _)| {
                    let next = cell[at + flag.len()..].chars().next();
                    !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
                })
            };
            let Some(row) = readme
                .lines()
                .find(|l| l.starts_with("| ") && l.split('|').nth(1).is_some_and(names_flag))
            else {
                continue;
            };
            let Some(stated) = row.split("(default").nth(1) else {
                continue;
            };
            let stated = stated.trim_start_matches(':').trim();
            let stated = stated
                .split([';', ')'])
                .next()
                .unwrap_or("")
                .trim_matches('`');
            if stated.starts_with("drop") {
                continue;
            }
            assert_eq!(stated, default, "README's default of --{}", flag_of(name));
            checked += 1;
        }
        assert!(checked >= 11, "only {checked} defaults found in README.md");
    }

    fn flag_of(name: &str) -> String {
        match name {
            "packages" => "package".into(),
            "source_roots" => "source-root".into(),
            n => n.replace('_', "-"),
        }
    }
}
