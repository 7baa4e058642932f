//! One run spread over many machines. `improve plan` measures the baseline once and splits the
//! modules into shards; `improve work` runs one shard as an ordinary durable run and pushes its
//! results to a git remote; `improve gather` replays every shard's kept commits onto the run
//! branch and checks the combined suite (once; bisecting only when it fails). Results travel through git only: a shard's branch, a
//! ref holding its `state.json`, and a ref that says which worker holds the shard.

use std::path::Path;

use crate::error::{UsageError, UserError};
use crate::state::{PLAN_FORMAT, Plan};

pub mod gather;
pub mod plan;
mod remote;
pub mod work;

/// The names results travel under, declared once for the worker and for gather.
pub mod refs {
    /// The shard's branch. Not `improve/<id>/shard-K`: git cannot hold that beside the
    /// gathered `improve/<id>` in one repository (a ref cannot be a file and a folder).
    pub fn branch(run_id: &str, shard: u32) -> String {
        format!("improve/{run_id}-shard-{shard}")
    }

    /// A commit whose tree is the shard run's `state.json`.
    pub fn state(run_id: &str, shard: u32) -> String {
        format!("refs/improve/state/{run_id}/shard-{shard}")
    }

    /// The worker that holds the shard: each push extends this chain of commits.
    pub fn claim(run_id: &str, shard: u32) -> String {
        format!("refs/improve/claim/{run_id}/shard-{shard}")
    }

    /// Where gather keeps a shard's fetched branch.
    pub fn gathered_branch(run_id: &str, shard: u32) -> String {
        format!("refs/improve/gathered/{run_id}/shard-{shard}")
    }

    /// The run id of shard `shard`'s own run.
    pub fn shard_run_id(run_id: &str, shard: u32) -> String {
        format!("{run_id}-shard-{shard}")
    }
}

/// The run this state dir holds when it is `run_id`. Another unfinished run is refused (`other`
/// says what to do instead), a finished one archived.
fn saved_run(
    opened: &crate::run::setup::Opened,
    run_id: &str,
    other: &str,
    printer: &crate::progress::Printer,
) -> anyhow::Result<Option<crate::state::RunState>> {
    use crate::state::RunStatus;
    match crate::run::setup::load_existing(&opened.store, false, printer)? {
        Some(s) if s.run_id == run_id => Ok(Some(s)),
        Some(s) if s.status != RunStatus::Complete => Err(UserError(format!(
            "the state dir {} holds the unfinished run {}: finish it first, or {other}",
            opened.store.dir().display(),
            s.run_id
        ))
        .into()),
        Some(s) => {
            opened.store.archive_current(Some(&s.run_id))?;
            Ok(None)
        }
        None => Ok(None),
    }
}

/// Reads a plan file, refusing one that is damaged or from a newer improve.
pub fn read_plan(path: &Path) -> Result<Plan, UserError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UserError(format!("cannot read the plan {}: {e}", path.display())))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        UserError(format!(
            "the plan {} is damaged ({e}): make it again with `improve plan`",
            path.display()
        ))
    })?;
    let format = value.get("format").and_then(|f| f.as_u64()).unwrap_or(0);
    if format > u64::from(PLAN_FORMAT) {
        return Err(UserError(format!(
            "the plan {} was written by a newer improve ({}, plan format {format}; this one reads \
             {PLAN_FORMAT}): use the same improve on every machine",
            path.display(),
            value
                .get("improve_version")
                .and_then(|v| v.as_str())
                .unwrap_or("unknown version")
        )));
    }
    serde_json::from_value(value).map_err(|e| {
        UserError(format!(
            "the plan {} is damaged ({e}): make it again with `improve plan`",
            path.display()
        ))
    })
}

/// The plan's base commit, which the repository must have.
pub fn check_base(repo: &git2::Repository, plan: &Plan) -> Result<git2::Oid, UserError> {
    git2::Oid::from_str(&plan.base_commit)
        .ok()
        .filter(|oid| repo.find_commit(*oid).is_ok())
        .ok_or_else(|| {
            UserError(format!(
                "the plan's base commit {} is not in this repository: run in a clone of the \
                 repository the plan was made in (or `git fetch` that commit), or make a new \
                 plan here",
                crate::git::short(&plan.base_commit)
            ))
        })
}

/// Where a worker's shard index can come from besides `--shard`, in the order they are read,
/// and what each counts from.
const INDEX_VARIABLES: &[(&str, &str, u32)] = &[
    ("IMPROVE_SHARD", "improve", 0),
    ("JOB_COMPLETION_INDEX", "a Kubernetes Indexed Job", 0),
    ("SLURM_ARRAY_TASK_ID", "a Slurm job array", 0),
    ("CI_NODE_INDEX", "a GitLab CI `parallel:` job", 1),
];

/// The shard this worker runs, 0-based, and where it came from.
pub fn shard_index(
    flag: Option<u32>,
    shards: u32,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(u32, String), UsageError> {
    let found = match flag {
        Some(k) => Some((i64::from(k), "--shard".to_string())),
        None => INDEX_VARIABLES.iter().find_map(|(name, engine, from)| {
            let raw = env(name)?;
            let value: i64 = raw.trim().parse().ok()?;
            // A Slurm array may start anywhere (`--array=1-4`): its own minimum is shard 0.
            let offset = if *name == "SLURM_ARRAY_TASK_ID" {
                env("SLURM_ARRAY_TASK_MIN")
                    .and_then(|m| m.trim().parse::<i64>().ok())
                    .unwrap_or(0)
            } else {
                i64::from(*from)
            };
            Some((value - offset, format!("{name}={raw} ({engine})")))
        }),
    };
    let Some((k, source)) = found else {
        return Err(UsageError(
            "no shard index: pass --shard K (0-based), or run under an engine that sets one \
             (IMPROVE_SHARD, JOB_COMPLETION_INDEX, SLURM_ARRAY_TASK_ID, CI_NODE_INDEX)"
                .into(),
        ));
    };
    if k < 0 || k >= i64::from(shards) {
        return Err(UsageError(format!(
            "shard {k} (from {source}) is outside the plan, which has shards 0 to {}",
            shards.saturating_sub(1)
        )));
    }
    Ok((k as u32, source))
}

/// This machine's name, for the per-shard lines of the report.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_index_comes_from_the_flag_else_the_engines_own_variable() {
        assert_eq!(shard_index(Some(2), 4, env(&[])).unwrap().0, 2);
        let k8s = [("JOB_COMPLETION_INDEX", "3")];
        assert_eq!(shard_index(None, 4, env(&k8s)).unwrap().0, 3);
        // Slurm counts from the array's own start.
        let slurm = [("SLURM_ARRAY_TASK_ID", "5"), ("SLURM_ARRAY_TASK_MIN", "4")];
        assert_eq!(shard_index(None, 4, env(&slurm)).unwrap().0, 1);
        // GitLab's CI_NODE_INDEX is 1-based.
        let gitlab = [("CI_NODE_INDEX", "1")];
        assert_eq!(shard_index(None, 4, env(&gitlab)).unwrap().0, 0);
        // The flag wins over every variable.
        assert_eq!(shard_index(Some(0), 4, env(&k8s)).unwrap().0, 0);
    }

    #[test]
    fn an_index_outside_the_plan_or_none_at_all_is_a_usage_error() {
        let e = shard_index(Some(4), 4, env(&[])).unwrap_err().to_string();
        assert!(e.contains("shard 4") && e.contains("0 to 3"), "{e}");
        let e = shard_index(None, 4, env(&[("CI_NODE_INDEX", "0")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("shard -1"), "{e}");
        let e = shard_index(None, 4, env(&[])).unwrap_err().to_string();
        assert!(e.contains("--shard K"), "{e}");
    }
}
