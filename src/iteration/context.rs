//! What every step of an iteration works with: the run's shared parts ([`RunContext`]), the
//! step's own copy of the run state ([`StepCx`]), and what stops a step ([`StepError`]).

use std::cell::{Ref, RefCell};
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::Utc;
use git2::{Oid, Repository};
use tokio_util::sync::CancellationToken;

use crate::artifacts::IterationFiles;
use crate::config::RunSettings;
use crate::fsutil::WriteError;
use crate::git::{self, GitError};
use crate::llm::LlmClient;
use crate::prepare::PrepareError;
use crate::process::ProcessError;
use crate::prompt::{self, Templates};
use crate::pytest::TestCommand;
use crate::state::{
    Iteration, Outcome, Rejection, RunState, StateError, StateStore, Step, Verdict,
};

/// Why an iteration could not go on. Everything else that goes wrong with a proposal is a
/// normal outcome (rejected / error) recorded in the state, not an error here.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("interrupted")]
    Cancelled,
    /// `--max-duration` came: an LLM call would not finish before it, or was stopped at it.
    #[error("--max-duration reached")]
    Deadline,
    /// `--max-cost`: the next call's worst case would pass the cap; it was not made.
    #[error("--max-cost reached")]
    Budget,
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Template(#[from] prompt::TemplateError),
    #[error(transparent)]
    Artifact(#[from] WriteError),
    /// The project or its test command cannot be run as it is: the user's to fix.
    #[error("{0}")]
    Project(String),
    /// A broken invariant of improve itself: a bug, never the user's fault.
    #[error("internal error (a bug in improve): {0}")]
    Internal(String),
}

impl From<ProcessError> for StepError {
    fn from(e: ProcessError) -> Self {
        match e {
            ProcessError::Cancelled => StepError::Cancelled,
            other => StepError::Project(other.to_string()),
        }
    }
}

impl From<PrepareError> for StepError {
    fn from(e: PrepareError) -> Self {
        match e {
            PrepareError::Cancelled => StepError::Cancelled,
            other => StepError::Project(other.to_string()),
        }
    }
}

/// Answer tokens a second below which a server is slow: a repair of a few hundred tokens takes
/// it over ten seconds of writing alone (hosted endpoints write 50 and more).
pub const SLOW_WRITING: f64 = 30.0;

/// What every iteration needs from the run; owned by the driver.
pub struct RunContext {
    pub repo: Repository,
    pub store: StateStore,
    pub templates: Templates,
    pub printer: crate::progress::Printer,
    pub llm: LlmClient,
    pub test_cmd: TestCommand,
    pub cancel: CancellationToken,
    /// When this session started, and the run's elapsed time before it.
    pub session_start: Instant,
    pub elapsed_before: f64,
    /// Keeping is serialized: one iteration at a time compares with and moves the run branch.
    pub keep_lock: tokio::sync::Mutex<()>,
    /// Parses, tidies and prunes test files (one Python process for the whole run).
    pub helper: crate::pyhelper::PyHelper,
    /// The worktrees iterations work in, reused from one to the next.
    pub worktrees: crate::worktrees::WorktreePool,
    /// When `--max-duration` ends this invocation: no LLM call starts that would not finish by
    /// then, and one to a local server still running then is stopped.
    pub deadline: Option<Instant>,
    /// How fast the server last said (or was seen) to read and write: what prompts are sized
    /// by (`--call-budget`). Unknown until the first answer of this session.
    pub server_speed: std::sync::Mutex<Option<crate::llm::ServerSpeed>>,
    /// Characters of prompt a token of the server's tokenizer holds, as its latest answer
    /// counted them: what turns a speed in its tokens into one in the budget's.
    pub prompt_chars_per_token: std::sync::Mutex<Option<f64>>,
    /// The price of the run's model: every answered call is costed at it.
    pub pricing: crate::cost::Pricing,
    /// `--max-cost`: the ledger every call reserves its worst case in before it is made.
    pub budget: Option<crate::cost::Budget>,
}

impl RunContext {
    /// The one way the driver and the iteration persist the run.
    pub fn save(&self, state: &mut RunState) -> Result<(), StateError> {
        state.elapsed_s = self.elapsed_before + self.session_start.elapsed().as_secs_f64();
        self.store.save(state)
    }

    /// The server's speed as the latest answer gave it.
    pub fn speed(&self) -> Option<crate::llm::ServerSpeed> {
        *self.server_speed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the server writes so slowly that a repair takes minutes (a small model on a
    /// modest machine, which seldom repairs anything anyway): under [`SLOW_WRITING`].
    pub fn slow_server(&self) -> bool {
        self.speed()
            .and_then(|s| s.generated_per_second)
            .is_some_and(|w| w < SLOW_WRITING)
    }

    /// Remembers the speed an answer gave, when it gave one.
    pub fn saw_speed(&self, speed: Option<crate::llm::ServerSpeed>) {
        if let Some(speed) = speed {
            *self.server_speed.lock().unwrap_or_else(|p| p.into_inner()) = Some(speed);
        }
    }

    /// Remembers how many characters of a prompt of `chars` the server read as `tokens`.
    pub fn saw_prompt_size(&self, chars: usize, tokens: u64) {
        if tokens > 0 && chars > 0 {
            *self
                .prompt_chars_per_token
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(chars as f64 / tokens as f64);
        }
    }

    /// Characters of prompt per token of the server's tokenizer, as its latest answer counted.
    pub fn prompt_chars_per_token(&self) -> Option<f64> {
        *self
            .prompt_chars_per_token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Removes what Python compiled from `source` (a file improve just wrote in a worktree).
    pub fn forget_bytecode(&self, source: &Path) {
        crate::worktrees::forget_bytecode(self.test_cmd.bytecode_cache.as_deref(), source);
    }
}

/// One step of iteration `n`: the run's context, a copy of the run state taken when the step
/// started (the step writes back only its own iteration), and the shared run as it is now.
pub struct StepCx<'a> {
    pub ctx: &'a RunContext,
    pub state: RunState,
    idx: usize,
    run: &'a RefCell<RunState>,
}

impl<'a> StepCx<'a> {
    pub fn new(ctx: &'a RunContext, run: &'a RefCell<RunState>, n: u32) -> Result<Self, StepError> {
        let state = run.borrow().clone();
        let idx = index(&state, n)?;
        Ok(StepCx {
            ctx,
            state,
            idx,
            run,
        })
    }

    pub fn it(&self) -> &Iteration {
        &self.state.iterations[self.idx]
    }

    pub fn it_mut(&mut self) -> &mut Iteration {
        &mut self.state.iterations[self.idx]
    }

    pub fn settings(&self) -> &RunSettings {
        &self.state.settings
    }

    pub fn files(&self) -> IterationFiles {
        self.ctx
            .store
            .run(&self.state.run_id)
            .iteration(self.it().n)
    }

    /// The run as it is now, other iterations' steps included (never held across an await).
    pub fn run_now(&self) -> Ref<'a, RunState> {
        self.run.borrow()
    }

    /// The run branch's tip.
    pub fn tip(&self) -> Result<Oid, StepError> {
        Ok(git::run_tip(&self.ctx.repo, &self.state.run_branch)?)
    }

    /// The iteration's worktree, on its own branch (re)set to `at`.
    pub fn worktree_at(&self, at: Oid) -> Result<PathBuf, StepError> {
        let n = self.it().n;
        Ok(self.ctx.worktrees.check_out(
            &self.ctx.repo,
            n,
            &iteration_branch(&self.state.run_id, n),
            at,
        )?)
    }

    /// Makes `oid` the iteration's commit in the state, and its diff the one `show` displays.
    pub fn record_commit(&mut self, oid: Oid) -> Result<(), StepError> {
        let patch = git::commit_patch(&self.ctx.repo, oid)?;
        crate::fsutil::write_artifact(&self.files().diff(), patch.as_bytes())?;
        self.it_mut().iteration_commit = Some(oid.to_string());
        Ok(())
    }

    /// The iteration's commit, and the commit it was made on.
    pub fn commit_and_parent(&self) -> Result<(Oid, Oid), StepError> {
        let commit = self
            .it()
            .iteration_commit
            .as_deref()
            .map(|c| git::oid(c, "the iteration commit"))
            .transpose()?
            .ok_or_else(|| StepError::Internal("the state lost the iteration commit".into()))?;
        let parent = self
            .ctx
            .repo
            .find_commit(commit)
            .and_then(|c| c.parent_id(0))
            .map_err(|source| GitError::Op {
                context: "read the iteration commit".into(),
                source,
            })?;
        Ok((commit, parent))
    }

    /// Awaits a request to the Python helper, its time counted as the iteration's helper seconds.
    pub async fn in_helper<T>(&mut self, request: impl std::future::Future<Output = T>) -> T {
        let started = Instant::now();
        let answer = request.await;
        self.it_mut().seconds.helpers += started.elapsed().as_secs_f64();
        answer
    }

    /// Ends the iteration without keeping anything.
    pub fn finish(&mut self, outcome: Outcome, why: Rejection) -> Step {
        let it = self.it_mut();
        it.outcome = Some(outcome);
        it.reason = Some(why.text);
        it.reject = Some(why.reason);
        it.finished_at = Some(Utc::now());
        cleanup(self.ctx, &self.state.run_id, self.it().n);
        Step::Finished
    }

    /// Verification is done; keeping or rejecting is the next step.
    pub fn finish_verified(&mut self, verdict: Verdict) -> Step {
        self.it_mut().verdict = Some(verdict);
        Step::Verified
    }

    /// The step's iteration, to write back into the shared run.
    pub fn into_iteration(mut self) -> Iteration {
        self.state.iterations.swap_remove(self.idx)
    }
}

pub fn index(state: &RunState, n: u32) -> Result<usize, StepError> {
    state
        .index_of(n)
        .ok_or_else(|| StepError::Internal(format!("the state lost iteration {n}")))
}

pub fn iteration_branch(run_id: &str, n: u32) -> String {
    format!("improve-wip/{run_id}/{n:04}")
}

/// Gives the iteration's worktree back and deletes its branch. Failing to clean up loses
/// nothing (the state and artifacts hold the iteration), so it is logged, not fatal.
pub fn cleanup(ctx: &RunContext, run_id: &str, n: u32) {
    ctx.worktrees.release(&ctx.repo, n);
    if let Err(e) = git::delete_branch(&ctx.repo, &iteration_branch(run_id, n)) {
        tracing::warn!("could not delete the branch of iteration {n}: {e}");
    }
}

/// Test-only crash injection: `IMPROVE_TEST_ABORT_AT=<checkpoint>[:<n>]` kills the process with
/// SIGKILL right after that checkpoint, exactly as `kill -9` would.
pub fn crash_point(name: &str, n: u32) {
    let Ok(spec) = std::env::var("IMPROVE_TEST_ABORT_AT") else {
        return;
    };
    let (point, at) = match spec.split_once(':') {
        Some((p, k)) => (p.to_string(), k.parse::<u32>().ok()),
        None => (spec.clone(), None),
    };
    if point == name && at.is_none_or(|k| k == n) {
        // SAFETY: sending a signal to ourselves.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
