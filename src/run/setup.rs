//! The run's setup: the repository and state dir opened and locked, the settings resolved, the
//! LLM client and the test command made, a run started or resumed, the baseline measured.

use std::cell::RefCell;
use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::cli::{GlobalArgs, RunArgs};
use crate::config::{self, Resolved, RunSettings};
use crate::error::{RunEnd, UsageError, UserError};
use crate::git;
use crate::iteration::{self, RunContext};
use crate::llm::{ApiKey, LlmClient, LlmSettings, Provider, RetryPolicy};
use crate::prepare::{Preparer, SetupCommand};
use crate::progress::Printer;
use crate::prompt::Templates;
use crate::pyhelper::PyHelper;
use crate::pytest::{self, CoverageSpec, TestCommand};
use crate::state::{RunState, RunStatus, StateStore};
use crate::testid::first_three;
use crate::worktrees::WorktreePool;

use super::*;

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

pub(crate) fn new_run_id() -> String {
    format!(
        "{}-{:04x}",
        Utc::now().format("%Y%m%d-%H%M%S"),
        fastrand::u16(..)
    )
}

/// A repository and a state dir this process may use: both locked, the state dir excluded from
/// git, and what a killed run left behind cleaned up.
pub(crate) struct Opened {
    pub(crate) root: std::path::PathBuf,
    pub(crate) repo: git2::Repository,
    pub(crate) store: StateStore,
    pub(crate) _lock: crate::fsutil::RunLock,
    pub(crate) _repo_lock: crate::fsutil::RunLock,
}

pub(crate) fn open(global: &GlobalArgs, printer: &Printer) -> Result<Opened> {
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
pub(crate) fn load_existing(
    store: &StateStore,
    fresh: bool,
    printer: &Printer,
) -> Result<Option<RunState>> {
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

/// The client for the run's LLM. `--max-cost` with a model that has no price is refused here,
/// before anything else starts.
pub(crate) fn llm_client(settings: &RunSettings) -> Result<LlmClient> {
    let client = LlmClient::new(
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
    .map_err(|e| UserError(e.to_string()))?;
    crate::cost::check_cap(&pricing(settings, &client), settings.max_cost)?;
    Ok(client)
}

pub(crate) fn pricing(settings: &RunSettings, llm: &LlmClient) -> crate::cost::Pricing {
    crate::cost::Pricing::resolve(&settings.model, settings.price, llm.is_local())
}

/// How pytest is run for this project: the user's command, checked to have pytest, with what
/// its Python has (coverage.py, plugins that would fight ours) and our plugin.
pub(crate) async fn test_command(
    settings: &RunSettings,
    scratch: &Path,
    tree: &crate::project::ProjectTree,
    printer: &Printer,
) -> Result<TestCommand> {
    let mut test_cmd = TestCommand {
        words: settings.test_cmd.clone(),
        coverage: None,
        timeout: settings.test_timeout,
        import_roots: import_roots(&settings.packages, &settings.source_roots),
        import_names: settings
            .packages
            .iter()
            .map(|p| crate::project::import_name(p, &settings.source_roots))
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
            &settings.source_roots,
            crate::project::tests_inside(tree, &settings.packages),
        ));
    } else {
        printer.line(
            "note: coverage.py is not available to the test command; coverage will not be measured",
        );
    }
    Ok(test_cmd)
}

pub(crate) fn resume_run(
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

/// Starts `state` (made by [`new_run`]) as the repository's run: the previous one, if any, is
/// archived.
pub(crate) fn start_run(
    opened: &Opened,
    state: RunState,
    previous_id: Option<String>,
    printer: &Printer,
) -> Result<RunState> {
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
/// What a run's context is made of besides the repository and the state dir: the LLM client,
/// the test command (checked to run pytest) and the templates. The same for a run, a plan, a
/// shard and a gather.
pub(crate) struct Tools {
    pub(crate) llm: LlmClient,
    pub(crate) test_cmd: TestCommand,
    pub(crate) templates: Templates,
}

pub(crate) async fn tools(
    opened: &Opened,
    settings: &RunSettings,
    tree: &crate::project::ProjectTree,
    printer: &Printer,
) -> Result<Tools> {
    let llm = llm_client(settings)?;
    let scratch = opened.store.files().scratch();
    std::fs::create_dir_all(&scratch)
        .map_err(|e| UserError(format!("cannot create {}: {e}", scratch.display())))?;
    let test_cmd = test_command(settings, &scratch, tree, printer).await?;
    let templates = Templates::load(Some(opened.store.dir()))?;
    Ok(Tools {
        llm,
        test_cmd,
        templates,
    })
}

pub(crate) fn run_context(
    opened: Opened,
    state: &RunState,
    Tools {
        llm,
        test_cmd,
        templates,
    }: Tools,
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
    let pricing = pricing(settings, &llm);
    if let Some(note) = pricing.shadow_note() {
        printer.line(&note);
    }
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
        deadline: None,
        server_speed: Default::default(),
        prompt_chars_per_token: Default::default(),
        pricing,
        budget: None,
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

/// The folders the packages are imported from (`""`, `src`, a declared source root), each once.
pub(crate) fn import_roots(packages: &[String], source_roots: &[String]) -> Vec<String> {
    let mut roots: Vec<String> = Vec::new();
    for root in packages
        .iter()
        .map(|p| crate::project::import_root(p, source_roots))
    {
        if !roots.contains(&root) {
            roots.push(root);
        }
    }
    roots
}

/// A run branch moved back past kept commits would make every later iteration see "broken"
/// tests that are simply gone; say so instead. Commits the user added on top are fine.
pub(crate) fn check_kept_commits_on_branch(
    repo: &git2::Repository,
    state: &RunState,
) -> Result<()> {
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
pub(crate) fn ensure_run_branch(repo: &git2::Repository, state: &RunState) -> Result<()> {
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

pub(crate) fn new_run(repo: &git2::Repository, resolved: &Resolved) -> Result<RunState> {
    let base = git::resolve_commit(repo, &resolved.base).map_err(|e| UsageError(e.to_string()))?;
    let run_id = new_run_id();
    let run_branch = format!("improve/{run_id}");
    let mut state = RunState::start(
        run_id,
        run_branch,
        base.to_string(),
        resolved.iterations,
        resolved.settings.clone(),
    );
    if let Some(since) = &resolved.settings.since {
        let modules = crate::target::modules_at(repo, base, &state)?;
        let change = crate::change::resolve(repo, since, base, &modules)
            .map_err(|e| UsageError(e.to_string()))?;
        state.change = Some(change);
    }
    Ok(state)
}

/// Measures the baseline unless the run already has it; Some when a signal ended the run then.
pub(crate) async fn ensure_baseline(
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
