//! `improve`: an overnight loop that asks an LLM for pytest tests, verifies them in git worktrees
//! and keeps only what passes, one commit per kept iteration. See `shared/contract.md` for the
//! user-facing contract, and the README's Layout section for how the modules divide the work.

pub mod artifacts;
pub mod baseline;
pub mod change;
pub mod chart;
pub mod cli;
pub mod config;
pub mod cost;
pub mod coverage;
pub mod demo;
pub mod error;
pub mod examples;
pub mod excerpt;
pub mod fsutil;
pub mod git;
pub mod ini;
pub mod iteration;
pub mod layout;
pub mod llm;
pub mod logging;
pub mod mutation;
pub mod prepare;
pub mod process;
pub mod progress;
pub mod project;
pub mod prompt;
pub mod proposal;
pub mod pyhelper;
pub mod pytest;
pub mod report;
pub mod run;
pub mod schema;
pub mod settings;
pub mod shard;
pub mod show;
pub mod state;
pub mod target;
pub mod testid;
pub mod views;
pub mod worktrees;
