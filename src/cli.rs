//! Command-line definitions (clap). Doc comments here are the `--help` text users read, so they
//! say what a flag does and what its default is. Run options live at the top level because
//! running is the default command; the review commands are subcommands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use crate::settings::{RunArgs, parse_duration};

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
        /// Print one JSON object (fields as in the contract); with --settings, an array.
        #[arg(long)]
        json: bool,
        /// Print every setting as a run here would resolve it now (the run options given
        /// here, the environment, the config file, the unfinished run's saved settings, the
        /// defaults) and where each value came from.
        #[arg(long)]
        settings: bool,
        #[command(flatten)]
        run: Box<RunArgs>,
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
        /// markdown (from the report.md.hbs template), json (one object), or pr (a compact
        /// Markdown body for a pull request, under 65,536 characters).
        #[arg(long, value_enum, default_value_t = ReportFormat::Markdown)]
        format: ReportFormat,
    },
    /// Run the whole loop on a bundled example, offline (no API key, no network).
    Demo(DemoArgs),
    /// Plan a run spread over several machines: measure the baseline once, split the modules
    /// into shards balanced by what is left to cover, and write the plan file every worker
    /// (`improve work`) and `improve gather` read. Takes the run options.
    Plan {
        /// How many shards (workers).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        shards: u32,
        /// Where to write the plan (JSON).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Also print the shard indices as a JSON array on standard output (a CI matrix).
        #[arg(long)]
        matrix: bool,
        #[command(flatten)]
        run: Box<RunArgs>,
    },
    /// Run one shard of a plan: an ordinary resumable run on branch
    /// improve/<run-id>-shard-<K>, restricted to the shard's modules. Exit 3: stopped, run the
    /// same command again to resume.
    Work {
        /// The plan file `improve plan` wrote.
        #[arg(long, value_name = "FILE")]
        plan: PathBuf,
        /// The shard, 0-based. Default: IMPROVE_SHARD, else JOB_COMPLETION_INDEX (Kubernetes
        /// Indexed Job, 0-based), else SLURM_ARRAY_TASK_ID minus SLURM_ARRAY_TASK_MIN (Slurm
        /// array), else CI_NODE_INDEX (GitLab `parallel:`, 1-based).
        #[arg(long, value_name = "K")]
        shard: Option<u32>,
        /// Push the shard's branch and state to this git remote (name or URL) after every kept
        /// iteration and when it stops; a restarted worker resumes from what it pushed.
        #[arg(long, value_name = "REMOTE")]
        push: Option<String>,
        /// Take the shard over from a worker that holds it (one that is gone for good).
        #[arg(long)]
        take_over: bool,
        #[command(flatten)]
        run: Box<RunArgs>,
    },
    /// Gather a plan's shards: fetch their results, replay their kept commits onto
    /// improve/<run-id>, run the combined suite (leaving out a commit that breaks it). Exit 3
    /// while shards are missing; run it again later to add what arrived.
    Gather {
        /// The plan file `improve plan` wrote.
        #[arg(long, value_name = "FILE")]
        plan: PathBuf,
        /// The git remote the workers pushed to.
        #[arg(long, value_name = "REMOTE", default_value = "origin")]
        from: String,
        /// Push the gathered run branch to this remote.
        #[arg(long, value_name = "REMOTE")]
        push: Option<String>,
        #[command(flatten)]
        run: Box<RunArgs>,
    },
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Markdown,
    Json,
    Pr,
}
