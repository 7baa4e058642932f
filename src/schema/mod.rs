//! Everything `state.json` saves, as plain serde data: the run, its iterations, their
//! verdicts, and what pytest and coverage.py measured. Nothing here imports the rest of the
//! crate, so the saved format is read in one place, and a field added here is a field saved;
//! `state/README.md` documents each one (a test checks it). Behaviour lives elsewhere:
//! [`crate::state`] loads and saves, the iteration's steps fill these in.

mod change;
mod cost;
mod measure;
mod run;
mod settings;
mod shard;
mod verdict;

pub use change::*;
pub use cost::*;
pub use measure::*;
pub use run::*;
pub use settings::*;
pub use shard::*;
pub use verdict::*;

/// Bumped whenever a field changes meaning. A newer file is refused, never rewritten.
pub const SCHEMA_VERSION: u32 = 1;
