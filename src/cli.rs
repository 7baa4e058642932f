//! Command-line definitions (clap). Doc comments here are the `--help` text users read, so they
//! say what a flag does and what its default is. Run options live at the top level because
//! running is the default command; the review commands are subcommands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::llm::Provider;

#[derive(Debug, Parser)]
#[command(
    name = "improve",
    version,
    about = "Improve a Python project's pytest suite overnight, one verified commit at a time.",
    long_about = "Runs numbered iterations against a Python repository: each picks a module, asks an \
LLM for new pytest tests, applies them on a git branch in its own worktree, verifies them with \
pytest and keeps them only if they pass. Progress is saved after every step: run the same command \
again to resume an interrupted run.",
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// The git repository to improve (default: the current directory).
    #[arg(long, global = true, value_name = "PATH")]
    pub repo: Option<PathBuf>,

    /// Where run state, artifacts, worktrees and reports live (default: <repo>/.improve).
    #[arg(long, global = true, value_name = "PATH")]
    pub state_dir: Option<PathBuf>,

    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Print only errors and the final summary.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Where the run stands.
    Status {
        /// Print one JSON object (fields as in the contract).
        #[arg(long)]
        json: bool,
    },
    /// One row per finished iteration.
    Log {
        /// Print a JSON array, one object per finished iteration.
        #[arg(long)]
        json: bool,
    },
    /// One iteration: target, focus, outcome, reason, pytest summary, timings, diff.
    Show {
        /// The iteration number.
        #[arg(value_parser = clap::value_parser!(u32).range(1..))]
        n: u32,
        /// The same fields as one JSON object, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Print the run's report on standard output: Markdown (also written to
    /// <state-dir>/report.md when a run completes), or the same figures as JSON.
    Report {
        /// Write the report to this file instead (`-`: standard output).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// markdown (from the report.md.hbs template) or json (one object).
        #[arg(long, value_enum, default_value_t = ReportFormat::Markdown)]
        format: ReportFormat,
    },
    /// Run the whole loop on a bundled example, offline (no API key, no network).
    Demo(DemoArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Iterations to run on the demo project.
    #[arg(short = 'n', long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub iterations: u32,

    /// How to invoke pytest (default: $VIRTUAL_ENV/bin/python, else ./.venv/bin/python, else
    /// python3, each with `-m pytest`).
    #[arg(long, value_name = "CMD")]
    pub test_cmd: Option<String>,
}

/// Options of a run. Every one is optional here so that the environment and
/// `[tool.improve]` can fill what the command line leaves out (see config.rs).
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// Iterations in this run (default 10); on resume, a larger N extends the run.
    #[arg(short = 'n', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub iterations: Option<u32>,

    /// Iterations in flight at once (default 1), each in its own worktree, never two on one
    /// module; they are kept one at a time, replayed onto the run branch's tip and the suite
    /// run again there when another was kept meanwhile.
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,

    /// Which wire format to speak: openai (any OpenAI-compatible server), anthropic, or replay.
    #[arg(long, value_enum)]
    pub provider: Option<ProviderArg>,

    /// Base URL of the LLM server; for openai it ends before /chat/completions
    /// (e.g. http://127.0.0.1:8080/v1).
    #[arg(long, env = "IMPROVE_LLM_URL", value_name = "URL")]
    pub llm_url: Option<String>,

    /// Model name sent to the server.
    #[arg(long, env = "IMPROVE_MODEL", value_name = "NAME")]
    pub model: Option<String>,

    /// Answer LLM calls from a recorded file (implies --provider replay).
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,

    /// Record every LLM exchange to this file (no secrets are written).
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,

    /// How to invoke pytest (default: <repo>/.venv/bin/python -m pytest if it exists, else
    /// python3 -m pytest).
    #[arg(long, value_name = "CMD")]
    pub test_cmd: Option<String>,

    /// The code under test: package folders or .py modules relative to the repo,
    /// comma-separated (auto-detected from the coverage and packaging config, else the tree).
    #[arg(long, value_name = "PATH[,PATH...]", value_delimiter = ',')]
    pub package: Option<Vec<String>>,

    /// Where new test files go, relative to the repo (default: where the target module's tests
    /// live as pytest collects them, else the project's main tests folder, else tests/).
    #[arg(long, value_name = "DIR")]
    pub tests_dir: Option<String>,

    /// Run once in each new worktree before its first pytest run, for projects that need a
    /// build step (e.g. 'python setup.py build_ext --inplace'). Runs with the tests' environment
    /// and the test command's Python first on PATH.
    #[arg(long, value_name = "CMD")]
    pub setup_cmd: Option<String>,

    /// Focus areas rotated across iterations, comma-separated.
    #[arg(long, value_name = "A,B,...", value_delimiter = ',')]
    pub focus: Option<Vec<String>>,

    /// Where the run branch starts (default HEAD).
    #[arg(long, value_name = "REV")]
    pub base: Option<String>,

    /// Start a new run even though an unfinished one exists (the old state is archived).
    #[arg(long)]
    pub fresh: bool,

    /// Stop cleanly (resumable) after this much wall time in this invocation, e.g. 8h, 90m.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub max_duration: Option<std::time::Duration>,

    /// Stop cleanly (resumable) once this invocation has spent this many tokens (in + out).
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u64>,

    /// Time limit of one pytest invocation (default 5m); its whole process group is killed past it.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub test_timeout: Option<std::time::Duration>,

    /// Time limit of one HTTP request to the LLM (default 5m).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub llm_timeout: Option<std::time::Duration>,

    /// Environment variables the tests may see beyond the allow-list (PATH, HOME, LANG, LC_*,
    /// PYTHON*, VIRTUAL_ENV, ...), comma-separated; never the API key.
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    pub pass_env: Option<Vec<String>>,

    /// Extra runs of the new tests, in one pytest process, to catch flaky ones (default 5;
    /// 0 disables). A test that fails any of them is dropped.
    #[arg(long, value_name = "N")]
    pub reruns: Option<u32>,

    /// Drop new tests that run no line or branch of the package that the suite (and the new
    /// tests before them) did not, and reject a proposal left with none (reason `no gain`). On by default; `--require-coverage-gain=false` keeps
    /// every passing test. Needs coverage.py in the test command's Python.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub require_coverage_gain: Option<bool>,

    /// Rounds in which failing new tests go back to the LLM, in the same conversation, with
    /// their failure output, before the ones still failing are dropped (default 2; 0: none).
    #[arg(long, value_name = "N")]
    pub max_repairs: Option<u32>,

    /// The most tokens a prompt may take (estimated): the module excerpt, its API, example
    /// tests and the project's guidelines are cut, in that order of priority, to fit. A server
    /// that refuses a prompt as too long gets one of half the size (default 10000).
    #[arg(long, value_name = "N")]
    pub max_prompt_tokens: Option<u32>,

    /// The most tokens an answer may take (`max_tokens` of each request; default 2000). A
    /// model repeating itself stops there; the complete tests before the cut are kept.
    #[arg(long, value_name = "N")]
    pub max_answer_tokens: Option<u32>,

    /// Mutants of the target made per iteration, on the lines the new tests cover, to see
    /// whether the tests notice them (default 20; 0 turns the check off).
    #[arg(long, value_name = "N")]
    pub mutants: Option<u32>,

    /// Drop new tests that kill none of the mutants on the lines they cover, and reject a
    /// proposal left with none (reason `asserts nothing`). On by default;
    /// `--require-mutation-kill=false` only measures.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub require_mutation_kill: Option<bool>,

    /// Run the tests under bubblewrap: file system read-only but for the worktree, a private
    /// /tmp, no network. Refuses to start when bubblewrap cannot sandbox on this machine.
    #[arg(long)]
    pub sandbox: bool,

    /// Consecutive iterations failing on the LLM before the run stops (default 5).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_llm_failures: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Markdown,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProviderArg {
    Openai,
    Anthropic,
    Replay,
}

impl From<ProviderArg> for Provider {
    fn from(p: ProviderArg) -> Provider {
        match p {
            ProviderArg::Openai => Provider::OpenAi,
            ProviderArg::Anthropic => Provider::Anthropic,
            ProviderArg::Replay => Provider::Replay,
        }
    }
}

pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. 90s, 30m, 8h"))?;
    if d.is_zero() {
        return Err("a duration must be longer than zero".into());
    }
    Ok(d)
}
