//! The persisted run: serde types of `state.json`, and its save (atomic, through
//! [`crate::fsutil`]), load, lock and archive. Every other module changes the run only through
//! these types and saves only through [`StateStore::save`], so "written atomically after every
//! step" holds in one place. Each reason an iteration was not kept is saved with its kind
//! ([`RejectReason`]), which is what the report groups by and the verify stages act on.

use std::path::{Path, PathBuf};

use chrono::Utc;

use crate::artifacts::{RunFiles, StateFiles};
use crate::fsutil::{self, LockError, RunLock, write_atomic};
pub use crate::schema::*;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create the state dir {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the state file {path} cannot be read ({detail}); it was left as it is: move it away, or \
         run with --fresh to archive it and start a new run"
    )]
    Unreadable { path: String, detail: String },
    #[error(
        "the state file {path} was written by a newer improve (schema {found}, this one knows \
         {SCHEMA_VERSION}): upgrade improve, or run with --fresh to archive it and start over"
    )]
    NewerSchema { path: String, found: u32 },
    #[error("cannot save the run state to {path}: {source} (is the disk full?)")]
    Save {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot archive the old run state to {path}: {source}")]
    Archive {
        path: String,
        source: std::io::Error,
    },
}

/// A `state.json` read from `source` (a file, or a ref for a shard's pushed state): the schema
/// version checked before the shape, so a newer file gets the helpful message.
pub fn parse_state(text: &str, source: &str) -> Result<RunState, StateError> {
    let unreadable = |detail: String| StateError::Unreadable {
        path: source.to_string(),
        detail,
    };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| unreadable(e.to_string()))?;
    let version = value
        .get("schema_version")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| unreadable("no schema_version".into()))?;
    if version > u64::from(SCHEMA_VERSION) {
        return Err(StateError::NewerSchema {
            path: source.to_string(),
            found: u32::try_from(version).unwrap_or(u32::MAX),
        });
    }
    let mut value = value;
    upgrade_funnels(&mut value);
    serde_json::from_value(value).map_err(|e| unreadable(e.to_string()))
}

/// The state dir on disk (its files are named in [`crate::artifacts`]).
#[derive(Debug, Clone)]
pub struct StateStore {
    files: StateFiles,
}

impl RunState {
    /// A new run on `run_branch` from `base_commit`, nothing done yet: the one place a run
    /// starts from (a run, a shard of a plan, a gathered run).
    pub fn start(
        run_id: String,
        run_branch: String,
        base_commit: String,
        iterations_target: u32,
        settings: RunSettings,
    ) -> RunState {
        let now = Utc::now();
        RunState {
            schema_version: SCHEMA_VERSION,
            run_id,
            run_branch,
            base_commit,
            created_at: now,
            updated_at: now,
            status: RunStatus::Running,
            stop_reason: None,
            iterations_target,
            settings,
            baseline: None,
            iterations: Vec::new(),
            elapsed_s: 0.0,
            consecutive_llm_failures: 0,
            shard: None,
            gathered: None,
            pricing: None,
            invocation_start_cost_usd: 0.0,
            change: None,
        }
    }
}

impl StateStore {
    pub fn new(dir: PathBuf) -> Self {
        StateStore {
            files: StateFiles::new(dir),
        }
    }

    pub fn dir(&self) -> &Path {
        self.files.dir()
    }

    pub fn files(&self) -> &StateFiles {
        &self.files
    }

    pub fn state_path(&self) -> PathBuf {
        self.files.state()
    }

    /// The files of run `run_id`.
    pub fn run(&self, run_id: &str) -> RunFiles {
        self.files.run(run_id)
    }

    pub fn ensure_dir(&self) -> Result<(), StateError> {
        std::fs::create_dir_all(self.dir()).map_err(|source| StateError::CreateDir {
            path: self.dir().display().to_string(),
            source,
        })
    }

    /// Takes the run lock, or says which process holds it.
    pub fn lock(&self) -> Result<RunLock, StateError> {
        self.ensure_dir()?;
        Ok(fsutil::lock_file(&self.files.lock(), self.dir())?)
    }

    /// Whether a run holds the lock, asked without taking it (so `status` never disturbs a run
    /// that is starting).
    pub fn is_locked(&self) -> bool {
        fsutil::is_locked(&self.files.lock())
    }

    /// Loads the run state; `Ok(None)` when there is none yet. A file that does not parse is
    /// reported and left where it is.
    pub fn load(&self) -> Result<Option<RunState>, StateError> {
        let path = self.state_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StateError::Unreadable {
                    path: path.display().to_string(),
                    detail: e.to_string(),
                });
            }
        };
        parse_state(&text, &path.display().to_string()).map(Some)
    }

    /// Writes state.json atomically: temp file in the same folder, write, fsync, rename, fsync the
    /// folder. A crash at any instant leaves the previous or the next version.
    pub fn save(&self, state: &mut RunState) -> Result<(), StateError> {
        state.updated_at = Utc::now();
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| StateError::Save {
            path: self.state_path().display().to_string(),
            source: std::io::Error::other(e),
        })?;
        write_atomic(&self.state_path(), &bytes).map_err(|source| StateError::Save {
            path: self.state_path().display().to_string(),
            source,
        })
    }

    /// Moves the current state.json (readable or not) into the archive; nothing is deleted.
    pub fn archive_current(&self, run_id: Option<&str>) -> Result<Option<PathBuf>, StateError> {
        let from = self.state_path();
        if !from.exists() {
            return Ok(None);
        }
        let stamp = Utc::now().format("%Y%m%d-%H%M%S");
        let stamp = stamp.to_string();
        let to = match run_id {
            Some(id) => self.files.run(id).archived_state(&stamp),
            None => self.files.archive(&stamp),
        };
        let archive_err = |source| StateError::Archive {
            path: to.display().to_string(),
            source,
        };
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(archive_err)?;
        }
        std::fs::rename(&from, &to).map_err(archive_err)?;
        Ok(Some(to))
    }
}

/// Where a run saved before the funnel was a list of stages kept the tests each stage
/// dropped: the verdict's field, by the stage's serde name.
const LEGACY_DROPS: [(&str, &str); 4] = [
    ("passing", "pruned"),
    ("stable", "flaky"),
    ("gain", "redundant"),
    ("clean", "polluters"),
];

/// Turns each verdict's funnel saved as one object of counts (with its drops in separate
/// fields) into the list of stages this improve saves.
fn upgrade_funnels(state: &mut serde_json::Value) {
    use serde_json::{Value, json};
    let Some(iterations) = state.get_mut("iterations").and_then(Value::as_array_mut) else {
        return;
    };
    for verdict in iterations.iter_mut().filter_map(|i| i.get_mut("verdict")) {
        let Some(counts) = verdict.get("funnel").and_then(Value::as_object).cloned() else {
            continue;
        };
        let mutation = verdict.get("mutation").cloned().unwrap_or(Value::Null);
        let dropped = |stage: &str| -> Value {
            if stage == "checks" && mutation["dropped"] == json!(true) {
                return mutation["asserts_nothing"].clone();
            }
            LEGACY_DROPS
                .iter()
                .find(|(s, _)| *s == stage)
                .map_or(Value::Null, |(_, field)| verdict[*field].clone())
        };
        let stages: Vec<Value> = counts
            .iter()
            .map(|(stage, n)| json!({"stage": stage, "survivors": n, "dropped": dropped(stage)}))
            .map(|mut s| {
                if !s["dropped"].is_array() {
                    s["dropped"] = json!([]);
                }
                s
            })
            .collect();
        let mut stages = stages;
        stages.sort_by_key(|s| stage_rank(s["stage"].as_str().unwrap_or_default()));
        verdict["funnel"] = Value::Array(stages);
    }
}

fn stage_rank(key: &str) -> usize {
    StageId::ALL
        .iter()
        .position(|s| s.key() == key)
        .unwrap_or(usize::MAX)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::RunSettings;
    use crate::llm::Provider;
    use std::time::Duration;

    pub(crate) fn sample_state() -> RunState {
        RunState {
            schema_version: SCHEMA_VERSION,
            run_id: "20261124-101500-ab12".into(),
            run_branch: "improve/20261124-101500-ab12".into(),
            base_commit: "0".repeat(40),
            created_at: Utc::now(),
            updated_at: Utc::now(),
            status: RunStatus::Running,
            stop_reason: None,
            iterations_target: 3,
            settings: RunSettings {
                provider: Provider::OpenAi,
                llm_url: "http://127.0.0.1:1/v1".into(),
                model: "m".into(),
                test_cmd: vec!["python3".into(), "-m".into(), "pytest".into()],
                packages: vec!["pkg".into()],
                focus: vec!["edge cases".into()],
                test_timeout: Duration::from_secs(60),
                llm_timeout: Duration::from_secs(60),
                // Every other setting as declared.
                ..RunSettings::default()
            },
            baseline: None,
            iterations: vec![Iteration::new(
                1,
                "pkg/a.py".into(),
                "edge cases".into(),
                Kind::Add,
            )],
            elapsed_s: 0.0,
            consecutive_llm_failures: 0,
            shard: None,
            gathered: None,
            pricing: None,
            invocation_start_cost_usd: 0.0,
            change: None,
        }
    }

    #[test]
    fn save_then_load_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path().to_path_buf());
        let state = sample_state();
        store.save(&mut state.clone()).unwrap();
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(loaded.run_id, state.run_id);
        assert_eq!(loaded.iterations, state.iterations);
        assert_eq!(loaded.settings, state.settings);
    }

    #[test]
    fn a_funnel_saved_as_one_object_loads_as_stages_with_their_drops() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path().to_path_buf());
        let mut saved = serde_json::to_value(sample_state()).unwrap();
        saved["iterations"][0]["verdict"] = serde_json::json!({
            "keep": false, "reason": "no gain: all redundant", "new_tests": [],
            "new_failed": ["t::test_b"], "pruned": ["t::test_b"], "flaky": [],
            "redundant": ["t::test_a"], "regressions": [], "suite_tests": 0,
            "suite_passed": 0, "pytest_summary": "", "coverage": null,
            "funnel": {"proposed": 2, "collected": 2, "passing": 1, "stable": 1, "gain": 0,
                       "checks": 0, "clean": 0, "kept": 0},
        });
        std::fs::write(store.state_path(), saved.to_string()).unwrap();
        let state = store.load().unwrap().unwrap();
        let v = state.iterations[0].verdict.as_ref().unwrap();
        assert_eq!(v.funnel.survivors(StageId::Proposed), 2);
        assert_eq!(v.funnel.survivors(StageId::Passing), 1);
        assert_eq!(v.funnel.dropped(StageId::Passing), ["t::test_b"]);
        assert_eq!(v.funnel.dropped(StageId::Gain), ["t::test_a"]);
        let why = v.rejection().unwrap();
        // Saved before reasons had kinds.
        assert_eq!(why.reason, RejectReason::Unclassified);
        assert_eq!(why.text, "no gain: all redundant");
        let line = v.funnel.line();
        assert!(
            line.starts_with("proposed 2 -> collected 2 -> passing 1"),
            "{line}"
        );
    }

    #[test]
    fn truncated_file_is_reported_and_left_in_place() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path().to_path_buf());
        std::fs::write(store.state_path(), "{\"schema_version\": 1, \"run_").unwrap();
        let err = store.load().unwrap_err();
        assert!(matches!(err, StateError::Unreadable { .. }), "{err}");
        assert!(err.to_string().contains("--fresh"));
        assert_eq!(
            std::fs::read_to_string(store.state_path()).unwrap(),
            "{\"schema_version\": 1, \"run_"
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path().to_path_buf());
        std::fs::write(store.state_path(), "{\"schema_version\": 99}").unwrap();
        assert!(matches!(
            store.load().unwrap_err(),
            StateError::NewerSchema { found: 99, .. }
        ));
    }

    #[test]
    fn second_lock_is_refused_with_the_holder_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path().to_path_buf());
        let first = store.lock().unwrap();
        let err = store.lock().unwrap_err();
        assert!(
            err.to_string().contains(&std::process::id().to_string()),
            "{err}"
        );
        drop(first);
        store.lock().unwrap();
    }

    #[test]
    fn archive_moves_and_keeps_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StateStore::new(tmp.path().to_path_buf());
        store.save(&mut sample_state()).unwrap();
        let to = store.archive_current(Some("r1")).unwrap().unwrap();
        assert!(to.is_file());
        assert!(!store.state_path().exists());
    }
}
