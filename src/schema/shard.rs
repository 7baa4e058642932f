//! A run spread over machines: the plan file `improve plan` writes, what a shard's run saves
//! about the shard it is, and what `improve gather` records of each shard it gathered.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Baseline, RunSettings};

/// The plan format this build writes and reads; a newer one is refused.
pub const PLAN_FORMAT: u32 = 1;

/// What `improve plan` writes: one baseline, measured once, and each shard's share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// [`PLAN_FORMAT`] when written.
    pub format: u32,
    /// The improve that wrote it (`CARGO_PKG_VERSION`).
    pub improve_version: String,
    pub run_id: String,
    pub base_commit: String,
    pub created_at: DateTime<Utc>,
    /// The repository the plan was made in: a test command inside it is taken relative to
    /// each worker's own clone.
    pub planned_in: String,
    /// Iterations over all shards.
    pub iterations: u32,
    pub settings: RunSettings,
    pub baseline: Baseline,
    pub shards: Vec<PlannedShard>,
}

/// One shard's share: modules no other shard touches, the red test files it fixes, and its
/// iterations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedShard {
    /// 0-based.
    pub index: u32,
    pub modules: Vec<String>,
    /// Test files with failing tests at the base commit, for fix iterations.
    pub fix_files: Vec<String>,
    pub iterations: u32,
    /// Statements the baseline left uncovered in its modules: what the shards are balanced by.
    pub uncovered: u64,
}

/// A run that is one shard of a plan (`improve work`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardRun {
    /// The plan's run id; this run's own id is `<plan run id>-shard-<index>`.
    pub plan_run_id: String,
    pub index: u32,
    pub shards: u32,
    pub modules: Vec<String>,
    pub fix_files: Vec<String>,
    /// The machine it runs on (the last one, after a restart elsewhere).
    pub host: String,
    /// A random name for this worker's state dir: its claim says it, so a worker restarted on
    /// the same state knows the claim is its own.
    pub worker: String,
    /// The commit this worker pushed to claim the shard; its pushes extend it, so a second
    /// worker's claim makes them fail instead of both winning.
    #[serde(default)]
    pub claim: Option<String>,
    /// When the last push of its results went through.
    #[serde(default)]
    pub pushed_at: Option<DateTime<Utc>>,
}

/// A run that `improve gather` put together from a plan's shards.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Gathered {
    pub shards: Vec<GatheredShard>,
    /// Seconds of the last gather (fetch, replay, whole-suite runs).
    pub seconds: f64,
    /// Whole-suite runs gather made (one per shard with new commits, more when bisecting).
    pub suite_runs: u32,
}

/// One shard as gather last found it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GatheredShard {
    pub index: u32,
    /// No results pushed yet.
    pub missing: bool,
    pub host: Option<String>,
    /// The shard run's status (`complete`, `interrupted`, `running`).
    pub status: Option<String>,
    pub wall_s: f64,
    pub iterations: u32,
    pub iterations_planned: u32,
    pub kept: u32,
    /// Kept on the shard, left out of the combined branch.
    pub left_out: u32,
    pub tokens_in: u64,
    pub tokens_out: u64,
}

/// Where a gathered iteration came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    pub shard: u32,
    /// Its number in the shard's own run.
    pub n: u32,
    /// Its commit on the shard's branch, when kept there.
    pub commit: Option<String>,
}
