//! Every run setting, declared once in [`run_settings!`]: its name, type, default, help text,
//! how the command line and the config file spell it, and whether the run saves it. The
//! settings module turns the table into the clap arguments, the `[tool.improve]` layer, the
//! merge and `status --settings`; this file turns it into [`RunSettings`], the object saved in
//! state.json. Adding a setting is one entry here plus the code that uses it (and, for a
//! saved one, its name in state/README.md: a test checks; a new one goes last, so older
//! files keep their shape).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use super::cost::Price;

/// Which wire format the client speaks. Saved as `openai`, `anthropic` or `replay`, and typed
/// the same way on the command line and in the config file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Any OpenAI-compatible chat-completions server.
    #[default]
    #[value(name = "openai")]
    OpenAi,
    Anthropic,
    Replay,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::Replay => "replay",
        }
    }
}

/// The focus areas rotated across iterations when none are given.
pub const DEFAULT_FOCUS: &[&str] = &[
    "edge cases",
    "error handling",
    "input validation",
    "state and resource management",
    "business rules",
];

pub fn default_focus() -> Vec<String> {
    DEFAULT_FOCUS.iter().map(|s| s.to_string()).collect()
}

/// The table of settings. `$callback` is a macro that receives it whole:
///
/// - `saved { .. }`: settings kept in state.json's `settings`, in the order they are written
///   (a resume without flags uses what the run started with);
/// - `invocation { .. }`: settings of one invocation only, never saved.
///
/// Each entry: doc comments (the `--help` text; the default is appended to it), then
/// `name: T => F` where `T` is the type a layer gives (command line, file) and `F` the resolved
/// type (`T`, or `Option<T>` for a setting that may stay unset), then `arg` (clap attributes),
/// `file` (serde attributes of the config-file key, kebab-case by default; `skip`: not in the
/// file), `saved` (serde attributes of the saved field), `default` (an `Option<T>`) and `hook`
/// (the function in `settings::hooks` that turns the layers into the value and checks it).
macro_rules! run_settings {
    ($callback:ident) => {
        $callback! {
            saved {
                /// Which wire format to speak: openai (any OpenAI-compatible server), anthropic,
                /// or replay.
                provider: Provider => Provider {
                    arg: [long, value_enum],
                    file: [],
                    saved: [],
                    default: Some(Provider::OpenAi),
                    hook: provider,
                }
                /// Base URL of the LLM server; for openai it ends before /chat/completions
                /// (e.g. http://127.0.0.1:8080/v1). Default: the provider's public API.
                llm_url: String => String {
                    arg: [long, env = "IMPROVE_LLM_URL", value_name = "URL"],
                    file: [alias = "llm_url"],
                    saved: [],
                    default: None,
                    hook: llm_url,
                }
                /// Model name sent to the server.
                model: String => String {
                    arg: [long, env = "IMPROVE_MODEL", value_name = "NAME"],
                    file: [],
                    saved: [],
                    default: None,
                    hook: model,
                }
                /// Answer LLM calls from a recorded file (implies --provider replay).
                replay: PathBuf => Option<PathBuf> {
                    arg: [long, value_name = "FILE"],
                    file: [skip],
                    saved: [],
                    default: None,
                    hook: path,
                }
                /// Record every LLM exchange to this file (no secrets are written).
                record: PathBuf => Option<PathBuf> {
                    arg: [long, value_name = "FILE"],
                    file: [skip],
                    saved: [],
                    default: None,
                    hook: path,
                }
                /// How to invoke pytest. Default: <repo>/.venv/bin/python -m pytest if it
                /// exists, else python3 -m pytest.
                test_cmd: ::std::vec::Vec<String> => ::std::vec::Vec<String> {
                    arg: [long, value_name = "CMD", value_parser = parse_words],
                    file: [alias = "test_cmd", deserialize_with = "de::words"],
                    saved: [],
                    default: None,
                    hook: test_cmd,
                }
                /// The code under test: package folders or .py modules relative to the repo,
                /// comma-separated. Default: detected from the coverage and packaging config,
                /// else the tree.
                packages: Vec<String> => Vec<String> {
                    arg: [long = "package", value_name = "PATH[,PATH...]", value_delimiter = ','],
                    file: [rename = "package", alias = "packages", deserialize_with = "de::one_or_many"],
                    saved: [alias = "package", deserialize_with = "one_or_many"],
                    default: None,
                    hook: packages,
                }
                /// Where new test files go, relative to the repo. Default: where the target
                /// module's tests live as pytest collects them, else the project's main tests
                /// folder, else tests/.
                tests_dir: String => Option<String> {
                    arg: [long, value_name = "DIR"],
                    file: [alias = "tests_dir"],
                    saved: [],
                    default: None,
                    hook: tests_dir,
                }
                /// Run once in each new worktree before its first pytest run, for projects that
                /// need a build step (e.g. 'python setup.py build_ext --inplace'). Runs with the
                /// tests' environment and the test command's Python first on PATH.
                setup_cmd: String => Option<String> {
                    arg: [long, value_name = "CMD"],
                    file: [alias = "setup_cmd"],
                    saved: [],
                    default: None,
                    hook: setup_cmd,
                }
                /// Focus areas rotated across iterations, comma-separated.
                focus: Vec<String> => Vec<String> {
                    arg: [long, value_name = "A,B,...", value_delimiter = ','],
                    file: [],
                    saved: [],
                    default: Some(default_focus()),
                    hook: focus,
                }
                /// Iterations in flight at once, each in its own worktree, never two on one
                /// module; they are kept one at a time, replayed onto the run branch's tip and
                /// the suite run again there when another was kept meanwhile.
                jobs: u32 => u32 {
                    arg: [short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..)],
                    file: [],
                    saved: [],
                    default: Some(1),
                    hook: jobs,
                }
                /// Time limit of one pytest invocation; its whole process group is killed past
                /// it.
                test_timeout: Duration => Duration {
                    arg: [long, value_name = "DUR", value_parser = parse_duration],
                    file: [alias = "test_timeout", deserialize_with = "de::duration"],
                    saved: [with = "secs"],
                    default: Some(Duration::from_secs(300)),
                    hook: value,
                }
                /// Time limit of one HTTP request to the LLM.
                llm_timeout: Duration => Duration {
                    arg: [long, value_name = "DUR", value_parser = parse_duration],
                    file: [alias = "llm_timeout", deserialize_with = "de::duration"],
                    saved: [with = "secs"],
                    default: Some(Duration::from_secs(300)),
                    hook: value,
                }
                /// Consecutive iterations failing on the LLM before the run stops.
                max_llm_failures: u32 => u32 {
                    arg: [long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..)],
                    file: [alias = "max_llm_failures"],
                    saved: [],
                    default: Some(5),
                    hook: value,
                }
                /// Stop cleanly (resumable) once this invocation has spent this many tokens
                /// (in + out). Saved, but a resume starts with a fresh budget.
                max_tokens: u64 => Option<u64> {
                    arg: [long, value_name = "N"],
                    file: [alias = "max_tokens"],
                    saved: [],
                    default: None,
                    hook: this_invocation,
                }
                /// Run the tests under bubblewrap: file system read-only but for the worktree, a
                /// private /tmp, no network. Refuses to start when bubblewrap cannot sandbox on
                /// this machine. A resumed sandboxed run stays sandboxed.
                sandbox: bool => bool {
                    arg: [long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true"],
                    file: [],
                    saved: [],
                    default: Some(false),
                    hook: any,
                }
                /// Environment variables the tests may see beyond the allow-list (PATH, HOME,
                /// LANG, LC_*, PYTHON*, VIRTUAL_ENV, ...), comma-separated; never the API key.
                pass_env: Vec<String> => Vec<String> {
                    arg: [long, value_name = "NAME,...", value_delimiter = ','],
                    file: [alias = "pass_env"],
                    saved: [],
                    default: Some(Vec::new()),
                    hook: value,
                }
                /// Extra runs of the new tests, in one pytest process, to catch flaky ones
                /// (0 disables). A test that fails any of them is dropped.
                reruns: u32 => u32 {
                    arg: [long, value_name = "N"],
                    file: [],
                    saved: [],
                    default: Some(5),
                    hook: value,
                }
                /// Drop new tests that run no line or branch of the package that the suite (and
                /// the new tests before them) did not, and reject a proposal left with none
                /// (reason `no gain`); `--require-coverage-gain=false` keeps every passing test.
                /// Needs coverage.py in the test command's Python.
                require_coverage_gain: bool => bool {
                    arg: [long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true"],
                    file: [alias = "require_coverage_gain"],
                    saved: [],
                    default: Some(true),
                    hook: value,
                }
                /// Rounds in which failing new tests go back to the LLM, in the same
                /// conversation, with their failure output, before the ones still failing are
                /// dropped (0: none).
                max_repairs: u32 => u32 {
                    arg: [long, value_name = "N"],
                    file: [alias = "max_repairs"],
                    saved: [],
                    default: Some(2),
                    hook: value,
                }
                /// The most tokens a prompt may take (estimated): the module excerpt, its API,
                /// example tests and the project's guidelines are cut, in that order of
                /// priority, to fit. A server that refuses a prompt as too long gets one of half
                /// the size. At least 1000.
                max_prompt_tokens: u32 => u32 {
                    arg: [long, value_name = "N"],
                    file: [alias = "max_prompt_tokens"],
                    saved: [],
                    default: Some(10_000),
                    hook: prompt_tokens,
                }
                /// The most tokens an answer may take (`max_tokens` of each request). A model
                /// repeating itself is stopped while its answer streams, else stops there; the
                /// complete tests before the cut are kept. At least 200.
                max_answer_tokens: u32 => u32 {
                    arg: [long, value_name = "N"],
                    file: [alias = "max_answer_tokens"],
                    saved: [],
                    default: Some(2_000),
                    hook: answer_tokens,
                }
                /// How long one LLM call should take at the server's speed. Once an answer has
                /// said how fast the server reads and writes (llama.cpp's timings, else
                /// measured), prompts are cut so that reading one and writing a typical answer
                /// fit in it; `--max-prompt-tokens` stays the ceiling. A fast server never
                /// reaches it.
                call_budget: Duration => Duration {
                    arg: [long, value_name = "DUR", value_parser = parse_duration],
                    file: [alias = "call_budget", deserialize_with = "de::duration"],
                    saved: [with = "secs"],
                    default: Some(Duration::from_secs(240)),
                    hook: value,
                }
                /// Mutants of the target made per iteration, on the lines the new tests cover,
                /// to see whether the tests notice them (0 turns the check off).
                mutants: u32 => u32 {
                    arg: [long, value_name = "N"],
                    file: [],
                    saved: [],
                    default: Some(20),
                    hook: value,
                }
                /// Drop new tests that kill none of the mutants on the lines they cover, and
                /// reject a proposal left with none (reason `asserts nothing`);
                /// `--require-mutation-kill=false` only measures.
                require_mutation_kill: bool => bool {
                    arg: [long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true"],
                    file: [alias = "require_mutation_kill"],
                    saved: [],
                    default: Some(true),
                    hook: value,
                }
                /// Sampling temperature of every request, 0 to 2 (some reasoning models accept
                /// only 1).
                temperature: f32 => f32 {
                    arg: [long, value_name = "T"],
                    file: [],
                    saved: [],
                    default: Some(0.2),
                    hook: temperature,
                }
                /// Folders, relative to the repo, that packages are imported from (as setuptools'
                /// package_dir), comma-separated: `code` makes code/png.py the module `png`. The
                /// root, src and lib always are. Default: what the packaging metadata declares
                /// (package_dir, the package finder's where, poetry's from, hatch's sources).
                source_roots: Vec<String> => Vec<String> {
                    arg: [long = "source-root", value_name = "DIR[,DIR...]", value_delimiter = ','],
                    file: [rename = "source-root", alias = "source_root", alias = "source-roots", alias = "source_roots", deserialize_with = "de::one_or_many"],
                    saved: [deserialize_with = "one_or_many"],
                    default: None,
                    hook: source_roots,
                }
                /// The model's price in dollars per million tokens: IN,OUT[,CACHED_IN] (e.g.
                /// 3,15,0.3). Wins over improve's price table; needed to cap the cost of a model
                /// the table does not know on a server that is not local.
                price: Price => Option<Price> {
                    arg: [long, value_name = "IN,OUT[,CACHED_IN]", value_parser = parse_price],
                    file: [deserialize_with = "de::price"],
                    saved: [],
                    default: None,
                    hook: optional,
                }
                /// Stop cleanly (resumable) before this invocation's LLM calls would cost more
                /// than this many dollars: each call reserves its worst case (the prompt and a
                /// full answer) first, so calls in flight together cannot pass it. Saved, but a
                /// resume starts with a fresh budget.
                max_cost: f64 => Option<f64> {
                    arg: [long, value_name = "USD", allow_negative_numbers = true],
                    file: [alias = "max_cost"],
                    saved: [],
                    default: None,
                    hook: max_cost,
                }
                /// Scope the run to a change: the diff from the merge base of REV and --base
                /// to --base. Only modules with changed lines are targets, the prompt marks the
                /// changed lines, and diff coverage is measured. A resumed run keeps its own.
                since: String => Option<String> {
                    arg: [long, value_name = "REV"],
                    file: [],
                    saved: [],
                    default: None,
                    hook: since,
                }
            }
            invocation {
                /// Iterations in this run; on resume, a larger N extends the run.
                iterations: u32 => u32 {
                    arg: [short = 'n', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..)],
                    file: [],
                    default: Some(10),
                    hook: iterations,
                }
                /// Where the run branch starts. A resumed run keeps the commit it started at.
                base: String => String {
                    arg: [long, value_name = "REV"],
                    file: [],
                    default: Some(String::from("HEAD")),
                    hook: base,
                }
                /// Start a new run even though an unfinished one exists (the old state is
                /// archived).
                fresh: bool => bool {
                    arg: [long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true"],
                    file: [skip],
                    default: Some(false),
                    hook: value,
                }
                /// Stop cleanly (resumable) after this much wall time in this invocation, e.g.
                /// 8h, 90m.
                max_duration: Duration => Option<Duration> {
                    arg: [long, value_name = "DUR", value_parser = parse_duration],
                    file: [alias = "max_duration", deserialize_with = "de::duration"],
                    default: None,
                    hook: optional,
                }
            }
        }
    };
}
pub(crate) use run_settings;

/// Generates [`RunSettings`] from the `saved` part of the table.
macro_rules! saved_struct {
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
        invocation { $($rest:tt)* }
    ) => {
        /// The settings a run is made with. Saved in state.json (no secrets in here) so that a
        /// resume without flags uses what the run started with. A field missing from an older
        /// file takes its default.
        #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
        #[serde(default)]
        pub struct RunSettings {
            $(
                $(#[doc = $doc])*
                #[serde($($saved)*)]
                pub $name: $fty,
            )*
        }

        impl Default for RunSettings {
            fn default() -> Self {
                RunSettings {
                    $($name: {
                        let declared: Option<$ty> = $default;
                        declared.map(<$fty>::from).unwrap_or_default()
                    },)*
                }
            }
        }
    };
}

run_settings!(saved_struct);

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

/// A duration saved as seconds (a float).
mod secs {
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
