//! `improve gather`: every shard's pushed results fetched, their kept commits replayed in plan
//! order onto the run branch, and the whole suite run once on the combined branch. A commit
//! that breaks it (pollution across shards exists only here) is found by bisection and left
//! out with its reason. Idempotent: a second gather adds what
//! arrived since.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use git2::Oid;

use super::remote::{Remote, read_data};
use super::work::relocate_test_cmd;
use super::{check_base, read_plan, refs};
use crate::cli::GlobalArgs;
use crate::config;
use crate::error::RunEnd;
use crate::git;
use crate::iteration::{RunContext, SUITE_FLAG};
use crate::progress::Printer;
use crate::pytest::{self, Measure, PytestRun};
use crate::run::setup::{ensure_run_branch, open, run_context, tools};
use crate::settings::{self, CommandLine};
use crate::state::{
    Gathered, GatheredShard, Origin, Outcome, Plan, RejectReason, Rejection, RunState, RunStatus,
    parse_state,
};
use crate::testid::first_three;
use crate::worktrees::BASELINE;

/// What `improve gather` was asked.
pub struct GatherRequest {
    pub plan: PathBuf,
    pub from: String,
    pub push: Option<String>,
}

pub async fn gather(
    global: &GlobalArgs,
    request: &GatherRequest,
    line: CommandLine<'_>,
    printer: Printer,
) -> Result<RunEnd> {
    let started = Instant::now();
    let plan = read_plan(&request.plan)?;
    let opened = open(global, &printer)?;
    let root = opened.root.clone();
    let remote = Remote::new(&root, &request.from);
    let arrived = fetch_shards(&opened.repo, &remote, &plan)?;
    check_base(&opened.repo, &plan)?;
    let mut state = gathered_state(&opened, &plan, &printer)?;
    relocate_test_cmd(&mut state, &plan, &opened.root);
    let file = config::load_file_config(&opened.root)?;
    let saved = Some((&state.settings, state.base_commit.as_str()));
    let (resolved, tree) =
        settings::resolve_in_repo(&opened.repo, &opened.root, &[line], &file, saved)?;
    state.settings = resolved.settings.clone();
    let tools = tools(&opened, &resolved.settings, &tree, &printer).await?;
    let (ctx, _locks) = run_context(opened, &state, tools, &printer)?;
    ctx.save(&mut state)?;
    ensure_run_branch(&ctx.repo, &state)?;
    let mut suite_runs = 0;
    let combined = combine(&ctx, &mut state, &plan, &arrived, &mut suite_runs).await;
    ctx.worktrees.remove_all(&ctx.repo);
    let _ = git::delete_branch(&ctx.repo, &wip_branch(&state));
    combined?;
    let rows = shard_rows(&state, &plan, &arrived);
    for r in &rows {
        printer.line(&shard_line(r));
    }
    let end = settle(&mut state, rows, started, suite_runs);
    ctx.save(&mut state)?;
    if end == RunEnd::Complete {
        crate::report::write(
            &ctx.repo,
            &state,
            &ctx.templates,
            &ctx.store.files().report(),
        )?;
    }
    printer.line(&format!(
        "gathered run {} on {}: {} of {} iterations, {} kept, in {:.1} s",
        state.run_id,
        state.run_branch,
        state.iterations_done(),
        state.iterations_target,
        state.kept().count(),
        started.elapsed().as_secs_f64()
    ));
    if let Some(to) = &request.push {
        let tip = git::run_tip(&ctx.repo, &state.run_branch)?;
        Remote::new(&root, to).push(&[(tip, format!("refs/heads/{}", state.run_branch))])?;
        printer.line(&format!("pushed {} to {to}", state.run_branch));
    }
    Ok(end)
}

/// Records the shards as found, and ends the gathered run: complete once every shard is,
/// else stopped until the rest have pushed.
fn settle(
    state: &mut RunState,
    rows: Vec<GatheredShard>,
    started: Instant,
    suite_runs: u32,
) -> RunEnd {
    let waiting: Vec<String> = rows
        .iter()
        .filter(|r| r.missing || r.status.as_deref() != Some(RunStatus::Complete.as_str()))
        .map(|r| format!("{} ({})", r.index, r.status.as_deref().unwrap_or("missing")))
        .collect();
    state.gathered = Some(Gathered {
        shards: rows,
        seconds: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        suite_runs,
    });
    if waiting.is_empty() {
        state.status = RunStatus::Complete;
        state.stop_reason = None;
        return RunEnd::Complete;
    }
    let reason = format!("shards not done yet: {}", waiting.join(", "));
    state.status = RunStatus::Interrupted;
    state.stop_reason = Some(reason.clone());
    RunEnd::Stopped(format!(
        "{reason}; run `improve gather` again when they have pushed"
    ))
}

/// Each shard's pushed run, fetched (None: nothing pushed yet).
fn fetch_shards(
    repo: &git2::Repository,
    remote: &Remote,
    plan: &Plan,
) -> Result<Vec<Option<RunState>>> {
    let listed = remote.list(&[
        format!("refs/improve/state/{}/*", plan.run_id),
        format!("refs/heads/improve/{}-shard-*", plan.run_id),
    ])?;
    let mut pairs = Vec::new();
    for s in &plan.shards {
        let state_ref = refs::state(&plan.run_id, s.index);
        let branch = format!("refs/heads/{}", refs::branch(&plan.run_id, s.index));
        if listed.contains_key(&state_ref) {
            pairs.push((state_ref.clone(), state_ref));
        }
        if listed.contains_key(&branch) {
            pairs.push((branch, refs::gathered_branch(&plan.run_id, s.index)));
        }
    }
    remote.fetch(&pairs)?;
    let mut out = Vec::new();
    for s in &plan.shards {
        let state_ref = refs::state(&plan.run_id, s.index);
        let Ok(oid) = repo.refname_to_id(&state_ref) else {
            out.push(None);
            continue;
        };
        let bytes = read_data(repo, oid, crate::artifacts::shard::STATE)?;
        let source = format!("{state_ref} from {}", remote.name);
        out.push(Some(parse_state(
            &String::from_utf8_lossy(&bytes),
            &source,
        )?));
    }
    Ok(out)
}

/// The gathered run saved here, else a new one from the plan.
fn gathered_state(
    opened: &crate::run::setup::Opened,
    plan: &Plan,
    printer: &Printer,
) -> Result<RunState> {
    let other = "gather into another --state-dir";
    if let Some(s) = super::saved_run(opened, &plan.run_id, other, printer)? {
        return Ok(s);
    }
    let mut state = RunState::start(
        plan.run_id.clone(),
        format!("improve/{}", plan.run_id),
        plan.base_commit.clone(),
        plan.iterations,
        plan.settings.clone(),
    );
    state.baseline = Some(plan.baseline.clone());
    state.gathered = Some(Gathered::default());
    Ok(state)
}

/// Every shard in plan order: its new iterations taken in and its new kept commits replayed;
/// then the whole suite runs once on the combined branch. Only when it fails does gather
/// bisect (over every new commit, whichever shard it came from): a run of 100 shards costs
/// one suite run, not 100, unless something breaks.
async fn combine(
    ctx: &RunContext,
    state: &mut RunState,
    plan: &Plan,
    arrived: &[Option<RunState>],
    suite_runs: &mut u32,
) -> Result<()> {
    let before = git::run_tip(&ctx.repo, &state.run_branch)?;
    let mut replayed = Vec::new();
    for (planned, shard) in plan.shards.iter().zip(arrived) {
        let Some(shard) = shard else { continue };
        replayed.extend(take_in(ctx, state, planned.index, shard)?);
    }
    ctx.save(state)?;
    if !replayed.is_empty() {
        check_combined(ctx, state, before, replayed, suite_runs).await?;
        ctx.save(state)?;
    }
    Ok(())
}

/// Appends the shard's finished iterations gather has not seen, numbered after the others,
/// and replays its new kept commits (in the order the shard kept them) onto the run branch.
/// Returns the replayed iterations' indices, in replay order.
fn take_in(
    ctx: &RunContext,
    state: &mut RunState,
    shard: u32,
    run: &RunState,
) -> Result<Vec<usize>> {
    let seen = |n: u32, state: &RunState| {
        state.iterations.iter().any(|i| {
            i.origin
                .as_ref()
                .is_some_and(|o| o.shard == shard && o.n == n)
        })
    };
    let mut new: Vec<_> = run
        .finished()
        .filter(|i| !seen(i.n, state))
        .cloned()
        .collect();
    new.sort_by_key(|i| i.n);
    let mut kept: Vec<(u32, usize)> = Vec::new();
    for mut it in new {
        // The order the shard kept them in: a later commit may build on an earlier one.
        let shard_order = it.keep_seq.unwrap_or(it.n);
        it.origin = Some(Origin {
            shard,
            n: it.n,
            commit: it.commit.clone(),
        });
        it.n = state.iterations.len() as u32 + 1;
        it.keep_seq = None;
        if it.outcome == Some(Outcome::Kept) {
            kept.push((shard_order, state.iterations.len()));
            // Measured on the shard's branch, not this one: gather measures it again.
            if let Some(v) = it.verdict.as_mut() {
                v.coverage = None;
            }
        }
        state.iterations.push(it);
    }
    kept.sort();
    let mut tip = git::run_tip(&ctx.repo, &state.run_branch)?;
    let mut replayed = Vec::new();
    for (_, i) in kept {
        let source = state.iterations[i]
            .origin
            .as_ref()
            .and_then(|o| o.commit.as_deref())
            .and_then(|c| Oid::from_str(c).ok());
        let message = source.map(|c| gathered_message(ctx, state, i, c));
        let picked = match (source, message) {
            (Some(c), Some(m)) => git::replay_as(&ctx.repo, c, tip, Some(&m))?,
            _ => None,
        };
        match picked {
            Some(commit) => {
                tip = commit;
                let seq = state.next_keep_seq();
                let it = &mut state.iterations[i];
                it.commit = Some(commit.to_string());
                it.keep_seq = Some(seq);
                replayed.push(i);
            }
            None => leave_out(
                &mut state.iterations[i],
                Rejection::new(
                    RejectReason::ConflictsWithKept,
                    format!("kept on shard {shard}, but conflicts with what other shards kept"),
                ),
            ),
        }
    }
    git::create_branch(&ctx.repo, &state.run_branch, tip, true)?;
    Ok(replayed)
}

/// The shard commit's message with the gathered run's trailers: `Improve-Run` and
/// `Improve-Iteration` name the gathered run, `Improve-Shard` the shard and its number there.
fn gathered_message(ctx: &RunContext, state: &RunState, i: usize, commit: Oid) -> String {
    let it = &state.iterations[i];
    let origin = it.origin.as_ref();
    let (shard, n) = origin.map_or((0, 0), |o| (o.shard, o.n));
    let text = git::commit_message(&ctx.repo, commit).unwrap_or_default();
    let body: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("Improve-Run:") && !l.starts_with("Improve-Iteration:"))
        .collect();
    let mut body = body.join("\n");
    body = body.replacen(&format!("improve #{n}:"), &format!("improve #{}:", it.n), 1);
    format!(
        "{}\n\nImprove-Run: {}\nImprove-Iteration: {}\nImprove-Shard: {shard} (its iteration {n})\n",
        body.trim_end(),
        state.run_id,
        it.n
    )
}

/// The shard iteration `i` of the gathered run came from.
fn shard_of(state: &RunState, i: usize) -> u32 {
    state.iterations[i].origin.as_ref().map_or(0, |o| o.shard)
}

fn leave_out(it: &mut crate::state::Iteration, why: Rejection) {
    it.outcome = Some(Outcome::Rejected);
    it.reason = Some(why.text.clone());
    it.reject = Some(why.reason);
    it.commit = None;
    it.keep_seq = None;
    if let Some(v) = it.verdict.as_mut() {
        v.set_rejection(why);
    }
}

fn wip_branch(state: &RunState) -> String {
    format!("improve-wip/{}/gather", state.run_id)
}

/// Runs the whole suite on the run branch with the shard's replayed commits on top of
/// `before`; while it fails, bisects to the first commit that breaks it, leaves that one out
/// and replays the rest without it.
async fn check_combined(
    ctx: &RunContext,
    state: &mut RunState,
    before: Oid,
    replayed: Vec<usize>,
    suite_runs: &mut u32,
) -> Result<()> {
    let commit_of = |state: &RunState, i: usize| {
        state.iterations[i]
            .commit
            .as_deref()
            .and_then(|c| Oid::from_str(c).ok())
    };
    let mut chain: Vec<(usize, Oid)> = replayed
        .iter()
        .filter_map(|&i| commit_of(state, i).map(|c| (i, c)))
        .collect();
    while let Some(&(last, tip)) = chain.last() {
        let run = suite_at(ctx, state, tip, suite_runs).await?;
        let broken = breaking(state, &run);
        if broken.is_empty() {
            // The figures after the last of them are the combined branch's own.
            if let Some(v) = state.iterations[last].verdict.as_mut() {
                v.coverage = run.coverage.clone();
                v.pytest_summary = run.summary.clone();
                v.suite_tests = run.cases.len() as u32;
                v.suite_passed = run.ids_with(crate::pytest::CaseOutcome::Passed).len() as u32;
            }
            return Ok(());
        }
        let (bad, why) = first_breaking(ctx, state, &chain, broken, suite_runs).await?;
        let culprit = bad - 1;
        let shard = shard_of(state, chain[culprit].0);
        leave_out(
            &mut state.iterations[chain[culprit].0],
            Rejection::new(
                RejectReason::BreaksCombinedSuite,
                format!(
                    "kept on shard {shard}, but with the other shards' commits the suite \
                     fails: {}",
                    first_three(why.iter().map(String::as_str))
                ),
            ),
        );
        let mut onto = if culprit == 0 {
            before
        } else {
            chain[culprit - 1].1
        };
        let mut rebuilt: Vec<(usize, Oid)> = chain[..culprit].to_vec();
        for &(i, c) in &chain[culprit + 1..] {
            let shard = shard_of(state, i);
            match git::replay_as(&ctx.repo, c, onto, None)? {
                Some(n) => {
                    state.iterations[i].commit = Some(n.to_string());
                    rebuilt.push((i, n));
                    onto = n;
                }
                None => leave_out(
                    &mut state.iterations[i],
                    Rejection::new(
                        RejectReason::ConflictsWithKept,
                        format!(
                            "kept on shard {shard}, but conflicts once a commit before it was left out"
                        ),
                    ),
                ),
            }
        }
        git::create_branch(&ctx.repo, &state.run_branch, onto, true)?;
        chain = rebuilt;
    }
    Ok(())
}

/// The base passes and the whole `chain` fails (with `broken`): bisects to the shortest prefix
/// that fails, and returns its length and what fails there.
async fn first_breaking(
    ctx: &RunContext,
    state: &RunState,
    chain: &[(usize, Oid)],
    broken: Vec<String>,
    suite_runs: &mut u32,
) -> Result<(usize, Vec<String>)> {
    let (mut good, mut bad, mut why) = (0, chain.len(), broken);
    while bad - good > 1 {
        let mid = (good + bad) / 2;
        let probe = suite_at(ctx, state, chain[mid - 1].1, suite_runs).await?;
        let failing = breaking(state, &probe);
        if failing.is_empty() {
            good = mid;
        } else {
            (bad, why) = (mid, failing);
        }
    }
    Ok((bad, why))
}

/// The whole suite at `commit`, in gather's one worktree.
async fn suite_at(
    ctx: &RunContext,
    state: &RunState,
    commit: Oid,
    suite_runs: &mut u32,
) -> Result<PytestRun> {
    let path = ctx
        .worktrees
        .check_out(&ctx.repo, BASELINE, &wip_branch(state), commit)?;
    ctx.worktrees
        .ready(&path, &ctx.cancel)
        .await
        .map_err(crate::iteration::StepError::from)
        .map_err(crate::run::step_failure)?;
    *suite_runs += 1;
    let files = ctx.store.run(&state.run_id).gather_suite(*suite_runs);
    let run = pytest::run(
        &ctx.test_cmd,
        &path,
        &[SUITE_FLAG.to_string()],
        &files,
        Measure::Report,
        &ctx.cancel,
    )
    .await
    .map_err(crate::iteration::StepError::from)
    .map_err(crate::run::step_failure)?;
    Ok(run)
}

/// What fails in `run` that did not fail at the base (tests whose ids change between
/// processes aside); a run that timed out or never ran breaks everything.
fn breaking(state: &RunState, run: &PytestRun) -> Vec<String> {
    if run.timed_out {
        return vec!["(the suite timed out)".into()];
    }
    if run.cases.is_empty() && !matches!(run.exit_code, Some(0) | Some(5)) {
        return vec![format!("(pytest exited {:?})", run.exit_code)];
    }
    let (failed, unstable) = state
        .baseline
        .as_ref()
        .map_or((&[][..], &[][..]), |b| (&b.failed[..], &b.unstable_ids[..]));
    run.failing()
        .into_iter()
        .filter(|id| !failed.contains(id) && !unstable.contains(id))
        .collect()
}

/// Each shard as gather found it: its own figures, and what gather left out of it.
fn shard_rows(state: &RunState, plan: &Plan, arrived: &[Option<RunState>]) -> Vec<GatheredShard> {
    plan.shards
        .iter()
        .zip(arrived)
        .map(|(planned, shard)| {
            let Some(run) = shard else {
                return GatheredShard {
                    index: planned.index,
                    missing: true,
                    iterations_planned: planned.iterations,
                    ..Default::default()
                };
            };
            let (tokens_in, tokens_out) = run.tokens();
            let left_out = state
                .finished()
                .filter(|i| i.origin.as_ref().is_some_and(|o| o.shard == planned.index))
                .filter(|i| {
                    matches!(
                        i.reject,
                        Some(RejectReason::BreaksCombinedSuite)
                            | Some(RejectReason::ConflictsWithKept)
                    ) && i.origin.as_ref().is_some_and(|o| o.commit.is_some())
                })
                .count() as u32;
            GatheredShard {
                index: planned.index,
                missing: false,
                host: run.shard.as_ref().map(|s| s.host.clone()),
                status: Some(run.status.as_str().to_string()),
                wall_s: (run.elapsed_s * 10.0).round() / 10.0,
                iterations: run.iterations_done(),
                iterations_planned: planned.iterations,
                kept: run.kept().count() as u32,
                left_out,
                tokens_in,
                tokens_out,
            }
        })
        .collect()
}

fn shard_line(r: &GatheredShard) -> String {
    if r.missing {
        return format!("  shard {}: missing (nothing pushed yet)", r.index);
    }
    format!(
        "  shard {}: {} on {}, {} of {} iterations, {} kept, {} left out, {:.1} s",
        r.index,
        r.status.as_deref().unwrap_or("-"),
        r.host.as_deref().unwrap_or("-"),
        r.iterations,
        r.iterations_planned,
        r.kept,
        r.left_out,
        r.wall_s
    )
}
