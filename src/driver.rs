//! The loop: opens the repo and the state, starts or resumes the run, measures the baseline, then
//! plans and advances iterations until the target is reached, a limit or the LLM stops it, or a
//! signal interrupts it. It knows nothing of HTTP, git internals or pytest flags.

use std::cell::RefCell;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use chrono::Utc;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;

use crate::cli::{GlobalArgs, RunArgs};
use crate::config::{self, Resolved, RunSettings};
use crate::error::{RunEnd, UsageError, UserError};
use crate::git;
use crate::iteration::{self, RunContext, StepError};
use crate::llm::{ApiKey, LlmClient, LlmSettings, Provider, RetryPolicy};
use crate::prepare::{Preparer, SetupCommand};
use crate::progress::Printer;
use crate::prompt::Templates;
use crate::pyhelper::PyHelper;
use crate::pytest::{self, CoverageSpec, TestCommand};
use crate::report;
use crate::settings::{self, CommandLine};
use crate::state::{Iteration, Kind, Outcome, RunState, RunStatus, SCHEMA_VERSION, StateStore};
use crate::target;
use crate::testid::first_three;
use crate::worktrees::WorktreePool;

/// The API key, from the environment only: IMPROVE_API_KEY, else the provider's usual variable.
pub fn api_key(provider: Provider) -> Option<ApiKey> {
    let specific = match provider {
        Provider::OpenAi => Some("OPENAI_API_KEY"),
        Provider::Anthropic => Some("ANTHROPIC_API_KEY"),
        Provider::Replay => None,
    };
    std::iter::once("IMPROVE_API_KEY")
        .chain(specific)
        .filter_map(|name| std::env::var(name).ok())
        .find(|v| !v.trim().is_empty())
        .map(ApiKey::new)
}

fn new_run_id() -> String {
    format!(
        "{}-{:04x}",
        Utc::now().format("%Y%m%d-%H%M%S"),
        fastrand::u16(..)
    )
}

pub async fn run(global: &GlobalArgs, args: &RunArgs, printer: Printer) -> Result<RunEnd> {
    let opened = open(global, &printer)?;
    let file = config::load_file_config(&opened.root)?;
    let lines = [CommandLine {
        args,
        matches: None,
    }];
    let fresh = settings::fresh(&lines, &file);
    let existing = load_existing(&opened.store, fresh, &printer)?;
    let previous_id = existing.as_ref().map(|s| s.run_id.clone());
    let resume = existing.filter(|s| s.status != RunStatus::Complete && !fresh);

    // The project as the base commit has it: that is what every worktree tests.
    let saved = resume
        .as_ref()
        .map(|s| (&s.settings, s.base_commit.as_str()));
    let (resolved, tree) =
        settings::resolve_in_repo(&opened.repo, &opened.root, &lines, &file, saved)?;
    let llm = llm_client(&resolved.settings)?;
    let scratch = opened.store.files().scratch();
    std::fs::create_dir_all(&scratch).with_context(|| format!("create {}", scratch.display()))?;
    let test_cmd = test_command(&resolved.settings, &scratch, &tree, &printer).await?;
    let templates = Templates::load(Some(opened.store.dir()))?;
    let state = match resume {
        Some(s) => resume_run(&opened.repo, s, args, &resolved, &printer)?,
        None => start_run(&opened, &resolved, previous_id, &printer)?,
    };
    let ctx = run_context(opened, &state, llm, test_cmd, templates, &printer)?;
    go(ctx, state, &resolved, &printer).await
}

/// A repository and a state dir this process may use: both locked, the state dir excluded from
/// git, and what a killed run left behind cleaned up.
struct Opened {
    root: std::path::PathBuf,
    repo: git2::Repository,
    store: StateStore,
    _lock: crate::fsutil::RunLock,
    _repo_lock: crate::fsutil::RunLock,
}

fn open(global: &GlobalArgs, printer: &Printer) -> Result<Opened> {
    let root = config::repo_root(global.repo.as_deref())?;
    let repo = git::open(&root)?;
    let state_dir = config::state_dir(&root, global.state_dir.as_deref());
    let store = StateStore::new(state_dir.clone());
    let lock = store.lock()?;
    // Runs with different --state-dir on one repository would fight over its refs: one lock
    // per repository too, in git's common dir (shared by every worktree).
    let repo_lock =
        crate::fsutil::lock_file(&crate::artifacts::repo_lock(repo.commondir()), &root)?;
    git::exclude_state_dir(&repo, &root, &state_dir)?;
    let ended = crate::process::adopt_group_records(&store.files().groups());
    if !ended.is_empty() {
        printer.line(&format!(
            "ended {} test process group(s) that a killed run left behind",
            ended.len()
        ));
    }
    for stale in git::remove_stale_ref_locks(&repo)? {
        tracing::warn!(
            "removed a ref lock left by a killed run: {}",
            stale.display()
        );
    }
    if let Err(e) = crate::logging::set_log_file(&store.files().log()) {
        printer.line(&format!(
            "note: no log file in {}: {e}",
            state_dir.display()
        ));
    }
    Ok(Opened {
        root,
        repo,
        store,
        _lock: lock,
        _repo_lock: repo_lock,
    })
}

/// The saved run, if any. With `--fresh`, a state file that does not load is archived instead
/// of stopping the run.
fn load_existing(store: &StateStore, fresh: bool, printer: &Printer) -> Result<Option<RunState>> {
    match store.load() {
        Ok(s) => Ok(s),
        Err(e) if fresh => {
            let to = store.archive_current(None)?;
            printer.line(&format!(
                "the unreadable state file was archived to {} ({e})",
                to.map(|p| p.display().to_string()).unwrap_or_default()
            ));
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

fn llm_client(settings: &RunSettings) -> Result<LlmClient> {
    Ok(LlmClient::new(
        LlmSettings {
            provider: settings.provider,
            url: settings.llm_url.clone(),
            model: settings.model.clone(),
            request_timeout: settings.llm_timeout,
            retry: RetryPolicy::from_env_or_default(),
            replay: settings.replay.clone(),
            record: settings.record.clone(),
        },
        api_key(settings.provider),
    )
    .map_err(|e| UserError(e.to_string()))?)
}

/// How pytest is run for this project: the user's command, checked to have pytest, with what
/// its Python has (coverage.py, plugins that would fight ours) and our plugin.
async fn test_command(
    settings: &RunSettings,
    scratch: &Path,
    tree: &crate::project::ProjectTree,
    printer: &Printer,
) -> Result<TestCommand> {
    let mut test_cmd = TestCommand {
        words: settings.test_cmd.clone(),
        coverage: None,
        timeout: settings.test_timeout,
        import_roots: import_roots(&settings.packages),
        import_names: settings
            .packages
            .iter()
            .map(|p| crate::project::import_name(p))
            .collect(),
        extra_args: Vec::new(),
        sandbox: settings.sandbox,
        pass_env: settings.pass_env.clone(),
        plugin_dir: None,
        bytecode_cache: Some(crate::artifacts::scratch::bytecode(scratch)),
    };
    if settings.sandbox {
        pytest::sandbox_preflight(scratch)
            .await
            .map_err(UserError)?;
    }
    let found = pytest::preflight(&test_cmd, scratch, scratch)
        .await
        .map_err(UserError)?;
    test_cmd.extra_args = found.extra_args.clone();
    // Per-test coverage and an in-process coverage report come from our pytest plugin.
    match pytest::install_plugin(scratch) {
        Ok(dir) => test_cmd.plugin_dir = Some(dir),
        Err(e) => printer.line(&format!(
            "note: cannot write the pytest plugin to {}: {e}; running without it",
            scratch.display()
        )),
    }
    if found.coverage {
        test_cmd.coverage = Some(CoverageSpec::for_packages(
            &settings.packages,
            crate::project::tests_inside(tree, &settings.packages),
        ));
    } else {
        printer.line(
            "note: coverage.py is not available to the test command; coverage will not be measured",
        );
    }
    Ok(test_cmd)
}

fn resume_run(
    repo: &git2::Repository,
    mut s: RunState,
    args: &RunArgs,
    resolved: &Resolved,
    printer: &Printer,
) -> Result<RunState> {
    // Checked before anything is saved: a run whose kept commits are gone from git is the
    // user's to sort out, and its state stays exactly as it was.
    check_kept_commits_on_branch(repo, &s)?;
    if let Some(n) = args.iterations {
        // Never below what is done: "done 7 of 5" helps nobody.
        s.iterations_target = n.max(s.iterations_done());
    }
    s.settings = resolved.settings.clone();
    s.status = RunStatus::Running;
    s.stop_reason = None;
    // A resume is a fresh chance for the LLM: the breaker counts within a session.
    s.consecutive_llm_failures = 0;
    printer.line(&format!(
        "resuming run {} ({} of {} iterations done) on {}",
        s.run_id,
        s.iterations_done(),
        s.iterations_target,
        s.run_branch
    ));
    Ok(s)
}

fn start_run(
    opened: &Opened,
    resolved: &Resolved,
    previous_id: Option<String>,
    printer: &Printer,
) -> Result<RunState> {
    let state = new_run(&opened.repo, resolved)?;
    // Only now, with every check passed, is the previous run moved aside.
    if let Some(old_id) = previous_id {
        let to = opened.store.archive_current(Some(&old_id))?;
        printer.line(&format!(
            "previous run {old_id} archived to {}",
            to.map(|p| p.display().to_string()).unwrap_or_default()
        ));
    }
    printer.line(&format!(
        "new run {} on branch {} from {}",
        state.run_id,
        state.run_branch,
        git::short(&state.base_commit)
    ));
    Ok(state)
}

/// What the iterations share: the repository, the LLM, pytest, the Python helper and the
/// worktrees (prepared with what git ignores in the package folders).
fn run_context(
    opened: Opened,
    state: &RunState,
    llm: LlmClient,
    test_cmd: TestCommand,
    templates: Templates,
    printer: &Printer,
) -> Result<(RunContext, Locks)> {
    let Opened {
        root,
        repo,
        store,
        _lock,
        _repo_lock,
    } = opened;
    let scratch = store.files().scratch();
    let settings = &state.settings;
    let helper = PyHelper::new(test_cmd.python().unwrap_or("python3"), &scratch);
    let setup = settings.setup_cmd.clone().map(|c| {
        SetupCommand::new(
            c,
            test_cmd.python(),
            &settings.pass_env,
            settings.test_timeout,
        )
    });
    let prep = Preparer::new(&root, &settings.packages, &scratch, setup)
        .map_err(|e| UserError(format!("cannot prepare the worktrees: {e}")))?;
    if !prep.copied().is_empty() {
        printer.line(&format!(
            "worktrees get {} files git ignores from your package folders: {}",
            prep.copied().len(),
            first_three(prep.copied().iter().map(String::as_str))
        ));
    }
    let cache = test_cmd
        .bytecode_cache
        .clone()
        .filter(|_| !test_cmd.sandbox);
    let worktrees = WorktreePool::new(store.files().worktrees(), &state.run_id, cache, prep);
    worktrees.detach_leftovers(&repo);
    let ctx = RunContext {
        repo,
        store,
        templates,
        printer: printer.clone(),
        llm,
        test_cmd,
        cancel: CancellationToken::new(),
        session_start: Instant::now(),
        elapsed_before: state.elapsed_s,
        keep_lock: tokio::sync::Mutex::new(()),
        helper,
        worktrees,
    };
    Ok((
        ctx,
        Locks {
            root,
            _lock,
            _repo_lock,
        },
    ))
}

/// The locks a run holds until it ends, and the repository's folder for the summary.
struct Locks {
    root: std::path::PathBuf,
    _lock: crate::fsutil::RunLock,
    _repo_lock: crate::fsutil::RunLock,
}

/// Runs the iterations and ends the run: its status saved, the report written when complete,
/// the summary printed.
async fn go(
    (ctx, locks): (RunContext, Locks),
    mut state: RunState,
    resolved: &Resolved,
    printer: &Printer,
) -> Result<RunEnd> {
    // The state is saved before the run branch exists, so a crash in between leaves a run
    // whose branch is simply created on resume, never an orphan branch and a second run.
    ctx.save(&mut state)?;
    iteration::crash_point("saved", 0);
    ensure_run_branch(&ctx.repo, &state)?;
    iteration::crash_point("started", 0);
    install_signal_handlers(ctx.cancel.clone());

    let run = RefCell::new(state);
    let end = drive(&ctx, &run, resolved, printer).await;
    // Nothing in flight needs a worktree any more; a resumed iteration gets one again.
    ctx.worktrees.remove_all(&ctx.repo);
    let mut state = run.into_inner();
    printer.finish();
    let end = end?;
    (state.status, state.stop_reason) = match &end {
        RunEnd::Complete => (RunStatus::Complete, None),
        RunEnd::Stopped(reason) => (RunStatus::Interrupted, Some(reason.clone())),
        RunEnd::Interrupted => (
            RunStatus::Interrupted,
            Some("interrupted by a signal".into()),
        ),
    };
    ctx.save(&mut state)?;
    let report_path = ctx.store.files().report();
    if end == RunEnd::Complete {
        report::write(&ctx.repo, &state, &ctx.templates, &report_path)?;
    }
    print_summary(&state, &end, &report_path, &locks.root);
    Ok(end)
}

/// The folders the packages are imported from (`""`, `src`), each once.
fn import_roots(packages: &[String]) -> Vec<String> {
    let mut roots: Vec<String> = Vec::new();
    for root in packages.iter().map(|p| crate::project::import_root(p)) {
        if !roots.contains(&root) {
            roots.push(root);
        }
    }
    roots
}

/// A run branch moved back past kept commits would make every later iteration see "broken"
/// tests that are simply gone; say so instead. Commits the user added on top are fine.
fn check_kept_commits_on_branch(repo: &git2::Repository, state: &RunState) -> Result<()> {
    if state.kept().next().is_none() {
        return Ok(());
    }
    let tip = git::run_tip(repo, &state.run_branch)?;
    for it in state.kept() {
        let Some(commit) = it
            .commit
            .as_deref()
            .and_then(|c| git2::Oid::from_str(c).ok())
        else {
            continue;
        };
        let on_branch = tip == commit || repo.graph_descendant_of(tip, commit).unwrap_or(false);
        if !on_branch {
            return Err(UserError(format!(
                "the run branch {} was moved: the kept commit {} of iteration {} is no longer on \
                 it; put it back (`git branch -f {} <commit>`) or run with --fresh",
                state.run_branch,
                git::short(&commit.to_string()),
                it.n,
                state.run_branch
            ))
            .into());
        }
    }
    Ok(())
}

/// Creates the run branch at the base when it does not exist yet. A missing branch of a run
/// that already kept commits is the user's doing (deleted or renamed): say so, change nothing.
fn ensure_run_branch(repo: &git2::Repository, state: &RunState) -> Result<()> {
    if git::branch_tip(repo, &state.run_branch)?.is_some() {
        return Ok(());
    }
    if state.kept().next().is_some() {
        return Err(git::GitError::RunBranchMissing {
            branch: state.run_branch.clone(),
        }
        .into());
    }
    let base = git::oid(&state.base_commit, "the base commit")?;
    git::create_branch(repo, &state.run_branch, base, false)?;
    Ok(())
}

fn new_run(repo: &git2::Repository, resolved: &Resolved) -> Result<RunState> {
    let base = git::resolve_commit(repo, &resolved.base).map_err(|e| UsageError(e.to_string()))?;
    let run_id = new_run_id();
    let run_branch = format!("improve/{run_id}");
    Ok(RunState {
        schema_version: SCHEMA_VERSION,
        run_id,
        run_branch,
        base_commit: base.to_string(),
        created_at: Utc::now(),
        updated_at: Utc::now(),
        status: RunStatus::Running,
        stop_reason: None,
        iterations_target: resolved.iterations,
        settings: resolved.settings.clone(),
        baseline: None,
        iterations: Vec::new(),
        elapsed_s: 0.0,
        consecutive_llm_failures: 0,
    })
}

async fn drive(
    ctx: &RunContext,
    run: &RefCell<RunState>,
    resolved: &Resolved,
    printer: &Printer,
) -> Result<RunEnd> {
    if let Some(end) = ensure_baseline(ctx, run, printer).await? {
        return Ok(end);
    }
    let plan = Plan::new(ctx, run, resolved)?;
    let mut schedule = {
        let state = run.borrow();
        printer.start(state.iterations_target, state.iterations_done());
        Schedule {
            // Iterations cut off mid-way (several, after a kill with --jobs) go first, in order.
            unfinished: state
                .iterations
                .iter()
                .filter(|i| !i.is_finished())
                .map(|i| i.n)
                .collect(),
            busy: Vec::new(),
            stop: None,
            failure: None,
        }
    };
    let mut in_flight = FuturesUnordered::new();
    loop {
        print_counts(&run.borrow(), printer);
        if ctx.cancel.is_cancelled() && schedule.stop.is_none() {
            schedule.stop = Some(RunEnd::Interrupted);
        }
        while schedule.stop.is_none() && in_flight.len() < plan.jobs {
            let Some(n) = schedule.next(ctx, run, &plan) else {
                break;
            };
            in_flight.push(async move { (n, iteration::advance(ctx, run, n).await) });
        }
        let Some((n, result)) = in_flight.next().await else {
            break;
        };
        schedule.ended(ctx, &run.borrow(), n, result, printer);
    }
    match schedule.failure {
        Some(e) => Err(e),
        None => Ok(schedule.stop.unwrap_or(RunEnd::Complete)),
    }
}

/// Measures the baseline unless the run already has it; Some when a signal ended the run then.
async fn ensure_baseline(
    ctx: &RunContext,
    run: &RefCell<RunState>,
    printer: &Printer,
) -> Result<Option<RunEnd>> {
    if run.borrow().baseline.is_some() {
        return Ok(None);
    }
    let mut state = run.borrow().clone();
    if let Err(e) = crate::baseline::measure_baseline(ctx, &mut state, printer).await {
        return step_end(e).map(Some);
    }
    ctx.save(&mut state)?;
    *run.borrow_mut() = state;
    iteration::crash_point("baseline", 0);
    Ok(None)
}

/// What new iterations are planned from: the modules and the test files committed at the base
/// (what the iterations test, not the user's working tree), and this session's limits.
struct Plan<'a> {
    modules: Vec<String>,
    /// Where the tests that failed at the start live.
    test_files: Vec<String>,
    jobs: usize,
    resolved: &'a Resolved,
    session_start: Instant,
    tokens_at_start: (u64, u64),
}

impl<'a> Plan<'a> {
    fn new(ctx: &RunContext, run: &RefCell<RunState>, resolved: &'a Resolved) -> Result<Self> {
        let state = run.borrow();
        let base = git::oid(&state.base_commit, "the base commit")?;
        let modules = target::modules_at(&ctx.repo, base, &state)?;
        if modules.is_empty() {
            return Err(UserError(format!(
                "{} holds no Python modules to write tests for: pass --package PATH",
                state.settings.packages.join(", ")
            ))
            .into());
        }
        let test_files = target::test_files_at(&ctx.repo, base, &state)?
            .into_iter()
            .map(|(path, _)| path)
            .collect();
        Ok(Plan {
            modules,
            test_files,
            jobs: state.settings.jobs.max(1) as usize,
            resolved,
            session_start: Instant::now(),
            tokens_at_start: state.tokens(),
        })
    }
}

/// Which iterations run, and why none more start.
struct Schedule {
    unfinished: std::collections::VecDeque<u32>,
    /// In flight, with their targets.
    busy: Vec<(u32, String)>,
    /// Why no new iteration starts; the run ends with it once those in flight are done.
    stop: Option<RunEnd>,
    failure: Option<anyhow::Error>,
}

impl Schedule {
    /// The next iteration to start: a resumed one, else a newly planned one; None (with `stop`
    /// set when the run must end) when there is none.
    fn next(&mut self, ctx: &RunContext, run: &RefCell<RunState>, plan: &Plan<'_>) -> Option<u32> {
        let n = match self.unfinished.pop_front() {
            Some(n) => n,
            None => match plan_next(ctx, run, plan, &self.busy) {
                Ok(Planned::Started(n)) => n,
                Ok(Planned::Stop(end)) => {
                    self.stop = end;
                    return None;
                }
                Err(e) => {
                    // As for a failing step: stop those in flight and wait for them.
                    self.fail(ctx, e);
                    return None;
                }
            },
        };
        let state = run.borrow();
        let target = state
            .index_of(n)
            .map(|i| state.iterations[i].target.clone())
            .unwrap_or_default();
        self.busy.push((n, target));
        Some(n)
    }

    /// Fatal for the run: the others stop at their next await and are waited for, so no pytest
    /// is left running and every state they reached is saved.
    fn fail(&mut self, ctx: &RunContext, e: anyhow::Error) {
        ctx.cancel.cancel();
        self.stop = Some(RunEnd::Interrupted);
        self.failure.get_or_insert(e);
    }

    /// Iteration `n` stopped advancing: finished, interrupted or failed.
    fn ended(
        &mut self,
        ctx: &RunContext,
        state: &RunState,
        n: u32,
        result: Result<(), StepError>,
        printer: &Printer,
    ) {
        self.busy.retain(|(b, _)| *b != n);
        match result {
            Ok(()) => {}
            Err(StepError::Cancelled) => {
                self.stop.get_or_insert(RunEnd::Interrupted);
                return;
            }
            Err(e) => return self.fail(ctx, step_failure(e)),
        }
        let Some(it) = state.index_of(n).map(|i| &state.iterations[i]) else {
            return;
        };
        print_iteration(it, state.iterations_target, printer);
        if self.stop.is_none()
            && state.consecutive_llm_failures >= state.settings.max_llm_failures
            && state.iterations.len() < state.iterations_target as usize
        {
            self.stop = Some(RunEnd::Stopped(format!(
                "{} iterations in a row failed on the LLM (last: {})",
                state.consecutive_llm_failures,
                it.reason.as_deref().unwrap_or_default()
            )));
        }
    }
}

fn print_counts(state: &RunState, printer: &Printer) {
    printer.counts(
        state.iterations_done(),
        state.iterations_target,
        state.count(Outcome::Kept),
        state.count(Outcome::Rejected),
        state.count(Outcome::Error),
    );
}

/// What the driver does with an iteration's error: a signal ends the run resumably, a test
/// command that cannot run is the user's to fix, anything else is a fault.
fn step_end(e: StepError) -> Result<RunEnd> {
    match e {
        StepError::Cancelled => Ok(RunEnd::Interrupted),
        other => Err(step_failure(other)),
    }
}

fn step_failure(e: StepError) -> anyhow::Error {
    match e {
        StepError::Project(msg) => UserError(msg).into(),
        other => other.into(),
    }
}

enum Planned {
    Started(u32),
    /// Nothing more to start: None when the run is simply complete (or every module left is
    /// busy), else why it stops.
    Stop(Option<RunEnd>),
}

/// Plans the next iteration (numbered in order, saved before any work) unless the target, a
/// limit, or busy modules say otherwise.
fn plan_next(
    ctx: &RunContext,
    run: &RefCell<RunState>,
    plan: &Plan<'_>,
    busy: &[(u32, String)],
) -> Result<Planned> {
    let (modules, test_files) = (&plan.modules, &plan.test_files);
    let mut state = run.borrow_mut();
    if state.iterations.len() >= state.iterations_target as usize {
        return Ok(Planned::Stop(None));
    }
    if let Some(reason) = limit_reached(&state, plan) {
        return Ok(Planned::Stop(Some(RunEnd::Stopped(reason))));
    }
    let n = state.iterations.len() as u32 + 1;
    let coverage = state.coverage_now().cloned();
    let busy: Vec<String> = busy.iter().map(|(_, t)| t.clone()).collect();
    let iteration = if let Some(file) = target::choose_fix_target(&state, test_files, &busy) {
        Iteration::new(n, file, "fix failing tests".into(), Kind::Fix)
    } else if let Some(target) = target::choose_target(modules, &state, coverage.as_ref(), &busy) {
        let focus = target::focus_for(n, &state.settings.focus);
        Iteration::new(n, target, focus, Kind::Add)
    } else {
        return Ok(Planned::Stop(None));
    };
    state.iterations.push(iteration);
    ctx.save(&mut state)?;
    iteration::crash_point("planned", n);
    Ok(Planned::Started(n))
}

/// The limits count from the start of this invocation, so that a stopped run resumes with the
/// same command (a budget per night, not per run).
fn limit_reached(state: &RunState, plan: &Plan<'_>) -> Option<String> {
    let (resolved, session_start, tokens_at_start) =
        (plan.resolved, plan.session_start, plan.tokens_at_start);
    if let Some(max) = resolved.max_duration
        && session_start.elapsed() >= max
    {
        return Some(format!(
            "--max-duration {} reached",
            humantime::format_duration(max)
        ));
    }
    if let Some(max) = resolved.settings.max_tokens {
        let (i, o) = state.tokens();
        let spent = (i + o).saturating_sub(tokens_at_start.0 + tokens_at_start.1);
        if spent >= max {
            return Some(format!("--max-tokens {max} reached ({spent} spent)"));
        }
    }
    None
}

fn print_iteration(it: &Iteration, target: u32, printer: &Printer) {
    tracing::info!(
        n = it.n,
        target = %it.target,
        focus = %it.focus,
        outcome = ?it.outcome,
        reason = it.reason.as_deref().unwrap_or(""),
        commit = it.commit.as_deref().unwrap_or(""),
        tests_added = it.tests_added,
        tokens_in = it.tokens_in,
        tokens_out = it.tokens_out,
        llm_s = it.seconds.llm,
        tests_s = it.seconds.tests,
        total_s = it.seconds.total,
        "iteration finished"
    );
    let outcome = it
        .outcome
        .map(|o| o.as_str().to_string())
        .unwrap_or_default();
    let detail = match (&it.commit, &it.reason) {
        (Some(c), _) => format!("+{} tests, {}", it.tests_added, git::short(c)),
        (None, Some(r)) => r.clone(),
        _ => String::new(),
    };
    printer.line(&format!(
        "[{:>3}/{target}] {outcome:<8} {} ({}) {detail} [{:.1}s]",
        it.n, it.target, it.focus, it.seconds.total
    ));
}

/// The few lines a user reads in the morning: what happened, where the report is, how to
/// review and how to merge.
fn print_summary(state: &RunState, end: &RunEnd, report: &Path, repo_root: &Path) {
    let added: u32 = state.kept().map(|i| i.tests_added).sum();
    let coverage = match (
        state.baseline.as_ref().and_then(|b| b.coverage.as_ref()),
        state.coverage_now(),
    ) {
        (Some(a), Some(b)) => format!(", coverage {:.1}% -> {:.1}%", a.percent, b.percent),
        _ => String::new(),
    };
    let headline = match end {
        RunEnd::Complete => "run complete".to_string(),
        RunEnd::Stopped(reason) => {
            format!("run stopped: {reason}; run the same command again to resume")
        }
        RunEnd::Interrupted => "run interrupted; run the same command again to resume".to_string(),
    };
    let git = format!(
        "git -C {}",
        shell_words::quote(&repo_root.display().to_string())
    );
    let branch = &state.run_branch;
    let mut lines = vec![
        headline,
        format!(
            "{} of {} iterations: {} kept, {} rejected, {} errors; {added} tests added{coverage}",
            state.iterations_done(),
            state.iterations_target,
            state.count(Outcome::Kept),
            state.count(Outcome::Rejected),
            state.count(Outcome::Error),
        ),
    ];
    if *end == RunEnd::Complete {
        lines.push(format!("report:  {}", report.display()));
    }
    lines.push(format!(
        "review:  {git} log --stat {} ^{}   (or: improve log, improve show N)",
        branch,
        git::short(&state.base_commit)
    ));
    if state.kept().next().is_some() {
        lines.push(format!(
            "merge:   {git} merge {branch}   (or cherry-pick the commits you want)"
        ));
    }
    eprintln!("{}", lines.join("\n"));
}

fn install_signal_handlers(cancel: CancellationToken) {
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        let mut count = 0;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            count += 1;
            if count == 1 {
                eprintln!("stopping: saving state (press Ctrl-C again to quit at once)");
                cancel.cancel();
            } else {
                // Every save is atomic, so quitting here still leaves a consistent state; the
                // tests in their own process groups would not see our exit, so end them first.
                crate::process::kill_live_groups();
                std::process::exit(130);
            }
        }
    });
}
