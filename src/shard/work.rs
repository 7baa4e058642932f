//! `improve work`: one shard of a plan as an ordinary durable run (same funnel, resumable,
//! `kill -9`-safe) on its own branch, restricted to the shard's modules and using the plan's
//! baseline. With `--push`, its results go to the remote after every kept iteration and when it
//! stops, and a claim ref makes sure one worker at a time holds the shard.

use std::path::{Path, PathBuf};

use anyhow::Result;
use chrono::Utc;
use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};

use super::remote::{Remote, RemoteError, data_commit, read_data};
use super::{check_base, host_name, read_plan, refs, shard_index};
use crate::cli::GlobalArgs;
use crate::config;
use crate::error::{RunEnd, UserError};
use crate::git;
use crate::iteration::RunContext;
use crate::progress::Printer;
use crate::run::setup::{check_kept_commits_on_branch, open, run_context, tools};
use crate::settings::{self, CommandLine};
use crate::state::{
    Iteration, Plan, PlannedShard, RunState, RunStatus, ShardRun, StateStore, parse_state,
};

/// What `improve work` was asked.
pub struct WorkRequest {
    pub plan: PathBuf,
    pub shard: Option<u32>,
    pub push: Option<String>,
    pub take_over: bool,
}

pub async fn work(
    global: &GlobalArgs,
    request: &WorkRequest,
    line: CommandLine<'_>,
    printer: Printer,
) -> Result<RunEnd> {
    let plan = read_plan(&request.plan)?;
    let (k, source) = shard_index(request.shard, plan.shards.len() as u32, |name| {
        std::env::var(name).ok()
    })?;
    let planned = &plan.shards[k as usize];
    let opened = open(global, &printer)?;
    check_base(&opened.repo, &plan)?;
    let root = opened.root.clone();
    let state_dir = opened.store.dir().to_path_buf();
    let publisher = Publisher {
        remote: request.push.as_deref().map(|r| Remote::new(&root, r)),
        plan_run_id: plan.run_id.clone(),
        shard: k,
    };
    let mut state = shard_state(&opened, &plan, planned, &publisher, &printer)?;
    publisher.claim(&opened.repo, &mut state, request.take_over, &printer)?;
    printer.line(&format!(
        "shard {k} of {} (from {source}): {} modules, {} iterations, on {}",
        plan.shards.len(),
        planned.modules.len(),
        state.iterations_target,
        state.run_branch
    ));
    let file = config::load_file_config(&root)?;
    relocate_test_cmd(&mut state, &plan, &root);
    let saved = Some((&state.settings, state.base_commit.as_str()));
    let (resolved, tree) = settings::resolve_in_repo(&opened.repo, &root, &[line], &file, saved)?;
    check_kept_commits_on_branch(&opened.repo, &state)?;
    state.settings = resolved.settings.clone();
    state.status = RunStatus::Running;
    state.stop_reason = None;
    state.consecutive_llm_failures = 0;
    let tools = tools(&opened, &resolved.settings, &tree, &printer).await?;
    let ctx = run_context(opened, &state, tools, &printer)?;
    let after_keep = |ctx: &RunContext, state: &mut RunState| -> Result<()> {
        publisher.publish(&ctx.repo, state, &ctx.printer)?;
        ctx.save(state)?;
        Ok(())
    };
    let end = crate::run::go(ctx, state, &resolved, &printer, Some(&after_keep)).await?;
    // The run has saved and unlocked its state; the last push sends what it ended with.
    let repo = git::open(&root)?;
    let store = StateStore::new(state_dir);
    let Some(mut state) = store.load()? else {
        return Ok(end);
    };
    let pushed = publisher.publish(&repo, &mut state, &printer)?;
    store.save(&mut state)?;
    Ok(match (pushed, end) {
        (Pushed::No(why), RunEnd::Complete) if publisher.remote.is_some() => {
            let reason = format!(
                "the shard is done but its results are not on the remote ({why}): run the same \
                 command again to push them"
            );
            printer.line(&reason);
            RunEnd::Stopped(reason)
        }
        (_, end) => end,
    })
}

/// The shard's run: the one saved in this state dir, else what an earlier worker pushed, else
/// a new one from the plan.
fn shard_state(
    opened: &crate::run::setup::Opened,
    plan: &Plan,
    planned: &PlannedShard,
    publisher: &Publisher,
    printer: &Printer,
) -> Result<RunState> {
    let run_id = refs::shard_run_id(&plan.run_id, planned.index);
    let other = "give this shard its own --state-dir";
    if let Some(s) = super::saved_run(opened, &run_id, other, printer)? {
        printer.line(&format!(
            "resuming shard {} ({} of {} iterations done)",
            planned.index,
            s.iterations_done(),
            s.iterations_target
        ));
        return Ok(s);
    }
    if let Some(restored) = publisher.restore(&opened.repo, printer)? {
        return Ok(restored);
    }
    Ok(new_shard_run(plan, planned))
}

fn new_shard_run(plan: &Plan, planned: &PlannedShard) -> RunState {
    let mut state = RunState::start(
        refs::shard_run_id(&plan.run_id, planned.index),
        refs::branch(&plan.run_id, planned.index),
        plan.base_commit.clone(),
        planned.iterations,
        plan.settings.clone(),
    );
    state.baseline = Some(plan.baseline.clone());
    state.shard = Some(ShardRun {
        plan_run_id: plan.run_id.clone(),
        index: planned.index,
        shards: plan.shards.len() as u32,
        modules: planned.modules.clone(),
        fix_files: planned.fix_files.clone(),
        host: host_name(),
        worker: new_worker_name(),
        claim: None,
        pushed_at: None,
    });
    state
}

fn new_worker_name() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// A test command inside the repository the plan was made in (its `.venv`) is taken inside
/// this clone instead.
pub(super) fn relocate_test_cmd(state: &mut RunState, plan: &Plan, root: &Path) {
    let here = root.display().to_string();
    if plan.planned_in == here {
        return;
    }
    for word in &mut state.settings.test_cmd {
        if let Some(rest) = word.strip_prefix(&plan.planned_in)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            *word = format!("{here}{rest}");
        }
    }
}

/// What a claim commit says about its worker.
#[derive(Debug, Serialize, Deserialize)]
struct ClaimNote {
    worker: String,
    host: String,
    pid: u32,
    at: chrono::DateTime<Utc>,
}

/// How a push went.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Yes,
    /// Not pushed (no remote, or the remote refused): why.
    No(String),
}

struct Publisher {
    remote: Option<Remote>,
    plan_run_id: String,
    shard: u32,
}

impl Publisher {
    fn claim_ref(&self) -> String {
        refs::claim(&self.plan_run_id, self.shard)
    }

    fn state_ref(&self) -> String {
        refs::state(&self.plan_run_id, self.shard)
    }

    fn branch_ref(&self) -> String {
        format!("refs/heads/{}", refs::branch(&self.plan_run_id, self.shard))
    }

    /// What an earlier worker of this shard pushed, as a run to resume here: its kept commits
    /// fetched, the iterations it had in flight planned again from scratch.
    fn restore(&self, repo: &Repository, printer: &Printer) -> Result<Option<RunState>> {
        let Some(remote) = &self.remote else {
            return Ok(None);
        };
        let (state_ref, branch_ref) = (self.state_ref(), self.branch_ref());
        let listed = remote.list(&[state_ref.clone(), branch_ref.clone()])?;
        if !listed.contains_key(&state_ref) {
            return Ok(None);
        }
        let mut pairs = vec![(state_ref.clone(), state_ref.clone())];
        if listed.contains_key(&branch_ref) {
            pairs.push((branch_ref.clone(), branch_ref));
        }
        remote.fetch(&pairs)?;
        let oid = repo.refname_to_id(&state_ref)?;
        let bytes = read_data(repo, oid, crate::artifacts::shard::STATE)?;
        let source = format!("{state_ref} on {}", remote.name);
        let mut state = parse_state(&String::from_utf8_lossy(&bytes), &source)?;
        for it in state.iterations.iter_mut().filter(|i| !i.is_finished()) {
            *it = Iteration::new(it.n, it.target.clone(), it.focus.clone(), it.kind);
        }
        if let Some(shard) = state.shard.as_mut() {
            // A new worker: the earlier one's claim is not this one's.
            shard.worker = new_worker_name();
            shard.claim = None;
            shard.host = host_name();
        }
        printer.line(&format!(
            "resuming shard {} from what {} holds: {} of {} iterations done, {} kept",
            self.shard,
            remote.name,
            state.iterations_done(),
            state.iterations_target,
            state.kept().count()
        ));
        Ok(Some(state))
    }

    /// Makes this worker the shard's holder on the remote, or says who holds it.
    fn claim(
        &self,
        repo: &Repository,
        state: &mut RunState,
        take_over: bool,
        printer: &Printer,
    ) -> Result<()> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let claim_ref = self.claim_ref();
        let Some(shard) = state.shard.as_mut() else {
            return Ok(());
        };
        let held = shard.claim.as_deref().and_then(|c| Oid::from_str(c).ok());
        let listed = remote.list(std::slice::from_ref(&claim_ref))?;
        let parent = match listed.get(&claim_ref) {
            None => None,
            Some(r) if Some(*r) == held => return Ok(()),
            Some(r) => {
                remote.fetch(&[(claim_ref.clone(), claim_ref.clone())])?;
                let note: Option<ClaimNote> = read_data(repo, *r, crate::artifacts::shard::CLAIM)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok());
                match note {
                    // Its own push landed before the worker died: the claim is still its own.
                    Some(n) if n.worker == shard.worker => {
                        shard.claim = Some(r.to_string());
                        return Ok(());
                    }
                    other if !take_over => {
                        return Err(UserError(format!(
                            "shard {} of run {} is held by another worker ({}): run one worker \
                             per shard; if that worker is gone for good, run again with \
                             --take-over",
                            self.shard,
                            self.plan_run_id,
                            other.map_or("unknown".into(), |n| format!(
                                "pid {} on {} since {}",
                                n.pid,
                                n.host,
                                n.at.format("%Y-%m-%d %H:%M:%S UTC")
                            ))
                        ))
                        .into());
                    }
                    _ => {
                        printer.line(&format!("taking shard {} over (--take-over)", self.shard));
                        Some(*r)
                    }
                }
            }
        };
        let commit = claim_commit(repo, shard, parent)?;
        remote.push(&[(commit, claim_ref)]).map_err(|e| {
            UserError(format!(
                "cannot claim shard {} on {}: {e} (did another worker claim it just now?)",
                self.shard, remote.name
            ))
        })?;
        shard.claim = Some(commit.to_string());
        Ok(())
    }

    /// Records the run's state under the state ref, then pushes the branch, the state and a
    /// new link of the claim together. A push the remote refuses keeps everything here (the
    /// next push sends it); one refused because another worker took the shard stops this one.
    fn publish(
        &self,
        repo: &Repository,
        state: &mut RunState,
        printer: &Printer,
    ) -> Result<Pushed> {
        let state_ref = self.state_ref();
        let parent = repo.refname_to_id(&state_ref).ok();
        let json = serde_json::to_vec_pretty(state)?;
        let message = format!(
            "improve: state of {} ({} of {} iterations done, {} kept)",
            state.run_id,
            state.iterations_done(),
            state.iterations_target,
            state.kept().count()
        );
        let saved = data_commit(
            repo,
            &[(crate::artifacts::shard::STATE, &json)],
            parent,
            &message,
        )?;
        repo.reference(&state_ref, saved, true, "improve: shard state")?;
        let Some(remote) = &self.remote else {
            return Ok(Pushed::No("no --push remote".into()));
        };
        let Some(shard) = state.shard.as_mut() else {
            return Ok(Pushed::No("not a shard".into()));
        };
        let held = shard.claim.as_deref().and_then(|c| Oid::from_str(c).ok());
        let heartbeat = claim_commit(repo, shard, held)?;
        let tip = git::run_tip(repo, &refs::branch(&self.plan_run_id, self.shard))?;
        let updates = [
            (heartbeat, self.claim_ref()),
            (tip, self.branch_ref()),
            (saved, state_ref),
        ];
        match remote.push(&updates) {
            Ok(()) => {
                shard.claim = Some(heartbeat.to_string());
                shard.pushed_at = Some(Utc::now());
                Ok(Pushed::Yes)
            }
            Err(e @ RemoteError::Rejected { .. }) => {
                let now = remote.list(&[self.claim_ref()]).ok();
                let holder = now.as_ref().and_then(|l| l.get(&self.claim_ref()));
                if let (Some(h), Some(mine)) = (holder, held)
                    && *h != mine
                {
                    return Err(UserError(format!(
                        "shard {} was taken over by another worker: this one stops; its results \
                         stay on this machine",
                        self.shard
                    ))
                    .into());
                }
                printer.line(&format!(
                    "note: {e}; the results stay here and the next push sends them"
                ));
                Ok(Pushed::No(e.to_string()))
            }
            Err(e) => {
                printer.line(&format!(
                    "note: {e}; the results stay here and the next push sends them"
                ));
                Ok(Pushed::No(e.to_string()))
            }
        }
    }
}

fn claim_commit(repo: &Repository, shard: &ShardRun, parent: Option<Oid>) -> Result<Oid> {
    let note = ClaimNote {
        worker: shard.worker.clone(),
        host: host_name(),
        pid: std::process::id(),
        at: Utc::now(),
    };
    let json = serde_json::to_vec_pretty(&note)?;
    let message = format!(
        "improve: shard {} held by pid {} on {}",
        shard.index, note.pid, note.host
    );
    Ok(data_commit(
        repo,
        &[(crate::artifacts::shard::CLAIM, &json)],
        parent,
        &message,
    )?)
}
