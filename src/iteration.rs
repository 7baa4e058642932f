//! One iteration as a durable state machine: Plan → Ask → Apply → Verify → Keep | Reject. Each
//! arrow ends in an atomic save of the state, so a resume continues after the last durable step;
//! the LLM answer is an artifact on disk before the state says `asked`, so it is never paid for
//! twice. Git effects stay in the iteration's worktree and branch until Keep, which is one
//! compare-and-swap update of the run branch.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::Utc;
use git2::{Oid, Repository};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::git::{self, GitError};
use crate::llm::{ChatMessage, ChatRequest, ChatResponse, LlmClient, LlmError, Role};
use crate::prompt::{self, Templates};
use crate::proposal;
use crate::pytest::{self, CaseOutcome, Measure, PytestError, TestCommand};
use crate::state::{
    Finding, Kind, Outcome, RunState, StateError, StateStore, Step, Verdict, write_atomic,
};
use crate::target;

/// Why an iteration could not go on. Everything else that goes wrong with a proposal is a
/// normal outcome (rejected / error) recorded in the state, not an error here.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("interrupted")]
    Cancelled,
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Template(#[from] prompt::TemplateError),
    #[error("{0}")]
    Pytest(String),
    #[error("cannot write the artifact {path}: {source}")]
    Artifact {
        path: String,
        source: std::io::Error,
    },
}

impl From<PytestError> for StepError {
    fn from(e: PytestError) -> Self {
        match e {
            PytestError::Cancelled => StepError::Cancelled,
            other => StepError::Pytest(other.to_string()),
        }
    }
}

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
}

impl RunContext {
    /// The one way the driver and the iteration persist the run.
    pub fn save(&self, state: &mut RunState) -> Result<(), StateError> {
        state.elapsed_s = self.elapsed_before + self.session_start.elapsed().as_secs_f64();
        self.store.save(state)
    }

    /// Removes what Python compiled from `source` (a file improve just wrote in a worktree).
    fn forget_bytecode(&self, source: &Path) {
        crate::worktrees::forget_bytecode(self.test_cmd.bytecode_cache.as_deref(), source);
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

fn iteration_branch(run_id: &str, n: u32) -> String {
    format!("improve-wip/{run_id}/{n:04}")
}

/// Iteration `n`'s worktree, on its own branch (re)set to `at`; returns its path.
fn iteration_worktree(
    ctx: &RunContext,
    run_id: &str,
    n: u32,
    at: Oid,
) -> Result<PathBuf, StepError> {
    Ok(ctx
        .worktrees
        .check_out(&ctx.repo, n, &iteration_branch(run_id, n), at)?)
}

/// Makes `oid` the iteration's commit in the state, and its diff the one `show` displays.
fn record_commit(
    ctx: &RunContext,
    state: &mut RunState,
    idx: usize,
    oid: Oid,
) -> Result<(), StepError> {
    let dir = ctx
        .store
        .iteration_dir(&state.run_id, state.iterations[idx].n);
    artifact(
        dir.join("diff.patch"),
        git::commit_patch(&ctx.repo, oid)?.as_bytes(),
    )?;
    state.iterations[idx].iteration_commit = Some(oid.to_string());
    Ok(())
}

/// Awaits a request to the Python helper, its time counted as the iteration's helper seconds.
async fn in_helper<T>(
    state: &mut RunState,
    idx: usize,
    request: impl std::future::Future<Output = T>,
) -> T {
    let started = Instant::now();
    let answer = request.await;
    state.iterations[idx].seconds.helpers += started.elapsed().as_secs_f64();
    answer
}

/// Writes an artifact for the review (prompt, proposal, diff...). Not fsynced: a resume never
/// relies on one (each is made again when its step is redone); only the LLM answers and the
/// state are. It is still renamed into place, so a reader never sees half a file.
fn artifact(path: PathBuf, bytes: &[u8]) -> Result<(), StepError> {
    let written = (|| {
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut tmp, bytes)?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    })();
    written.map_err(|source| StepError::Artifact {
        path: path.display().to_string(),
        source,
    })
}

/// An LLM answer: on disk for good (fsynced) before the state may say it was received, so a
/// resume never pays for it twice.
fn durable_artifact(path: PathBuf, bytes: &[u8]) -> Result<(), StepError> {
    write_atomic(&path, bytes).map_err(|source| StepError::Artifact {
        path: path.display().to_string(),
        source,
    })
}

/// Accumulates the iteration's own wall time across checkpoints and sessions.
struct Clock(Instant);

impl Clock {
    fn lap(&mut self) -> f64 {
        let s = self.0.elapsed().as_secs_f64();
        self.0 = Instant::now();
        s
    }
}

/// Drives iteration `n` from its last durable step to Finished.
///
/// Several iterations may advance at once (`--jobs`), all polled by the driver's one task, so
/// `run` is shared without locks (never borrowed across an await). Each step works on a copy of
/// the run state taken when it starts and then writes back only its own iteration, so steps of
/// other iterations that ended meanwhile are never overwritten.
pub async fn advance(ctx: &RunContext, run: &RefCell<RunState>, n: u32) -> Result<(), StepError> {
    let mut clock = Clock(Instant::now());
    loop {
        let step = {
            let state = run.borrow();
            let it = &state.iterations[index(&state, n)?];
            ctx.printer
                .doing(&format!("#{} {}: {}", it.n, it.target, doing(it.step)));
            it.step
        };
        // Keeping compares with the run branch's tip and moves it: one iteration at a time, and
        // with the state as it is once the lock is held.
        let queued = Instant::now();
        let _keeping = match step {
            Step::Verified => Some(ctx.keep_lock.lock().await),
            Step::Finished => return Ok(()),
            _ => None,
        };
        let queued = queued.elapsed().as_secs_f64();
        let mut state = run.borrow().clone();
        let idx = index(&state, n)?;
        // Reported back as 0 (an answer came) or not (the ask failed): see the write-back.
        state.consecutive_llm_failures = 0;
        state.iterations[idx].seconds.queued += queued;
        match step {
            Step::Planned => ask(ctx, &mut state, idx).await?,
            Step::Asked => apply(ctx, &mut state, idx).await?,
            Step::Applied => verify(ctx, &mut state, idx, run).await?,
            Step::Verified => keep_or_reject(ctx, &mut state, idx).await?,
            Step::Finished => return Ok(()),
        }
        state.iterations[idx].seconds.total += clock.lap();
        let done = state.iterations[idx].step;
        state.iterations[idx].timeline.push(crate::state::StepTime {
            step: done,
            at: Utc::now(),
        });
        {
            let mut shared = run.borrow_mut();
            let at = index(&shared, n)?;
            // The circuit breaker counts asks in the order they end, whichever iteration they
            // belong to: a failure adds one, an answer resets it.
            if step == Step::Planned {
                match state.consecutive_llm_failures {
                    0 => shared.consecutive_llm_failures = 0,
                    _ => shared.consecutive_llm_failures += 1,
                }
            }
            shared.iterations[at] = state.iterations.swap_remove(idx);
            ctx.save(&mut shared)?;
        }
        crash_point(step_name(done), n);
    }
}

fn index(state: &RunState, n: u32) -> Result<usize, StepError> {
    state
        .index_of(n)
        .ok_or_else(|| StepError::Pytest(format!("the state lost iteration {n}")))
}

/// What happens after `step`, for the progress bar.
fn doing(step: Step) -> &'static str {
    match step {
        Step::Planned => "asking the LLM",
        Step::Asked => "writing the proposal",
        Step::Applied => "verifying with pytest",
        Step::Verified => "keeping or rejecting",
        Step::Finished => "done",
    }
}

fn step_name(step: Step) -> &'static str {
    match step {
        Step::Planned => "planned",
        Step::Asked => "asked",
        Step::Applied => "applied",
        Step::Verified => "verified",
        Step::Finished => "finished",
    }
}

/// Ends the iteration without keeping anything.
fn finish(ctx: &RunContext, state: &mut RunState, idx: usize, outcome: Outcome, reason: String) {
    let run_id = state.run_id.clone();
    let it = &mut state.iterations[idx];
    it.outcome = Some(outcome);
    it.reason = Some(reason);
    it.step = Step::Finished;
    it.finished_at = Some(Utc::now());
    cleanup(ctx, &run_id, it.n);
}

/// Gives the iteration's worktree back and deletes its branch. Failing to clean up loses
/// nothing (the state and artifacts hold the iteration), so it is logged, not fatal.
fn cleanup(ctx: &RunContext, run_id: &str, n: u32) {
    ctx.worktrees.release(&ctx.repo, n);
    if let Err(e) = git::delete_branch(&ctx.repo, &iteration_branch(run_id, n)) {
        tracing::warn!("could not delete the branch of iteration {n}: {e}");
    }
}

#[derive(Serialize)]
struct PromptData {
    module_path: String,
    module_stem: String,
    import_name: String,
    focus: String,
    focus_slug: String,
    source: String,
    coverage: Option<f64>,
    tests_dir: String,
    existing_tests: Vec<NamedText>,
    guidelines: Vec<NamedText>,
    /// The source with line numbers and coverage marks (an excerpt for large modules), when
    /// coverage was measured.
    numbered: Option<String>,
    /// `lines 16, 24, 54-58; branches 15->16`, when something is not covered.
    missing_summary: Option<String>,
}

#[derive(Serialize)]
struct NamedText {
    name: String,
    path: String,
    text: String,
}

/// Files longer than this are cut in the prompt, so one huge module cannot blow the context.
const MAX_SOURCE_CHARS: usize = 24_000;
const MAX_EXAMPLE_CHARS: usize = 6_000;
const MAX_GUIDELINE_CHARS: usize = 4_000;

fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}\n# ... (cut: {} more characters)\n",
        &text[..end],
        text.len() - end
    )
}

/// Reads prompt material from the run branch's tip, not from the user's working tree (which may
/// hold uncommitted edits the tests would not see).
fn read_at_tip(repo: &Repository, tip: Oid, path: &str) -> Option<String> {
    let commit = repo.find_commit(tip).ok()?;
    let entry = commit
        .tree()
        .ok()?
        .get_path(std::path::Path::new(path))
        .ok()?;
    let blob = repo.find_blob(entry.id()).ok()?;
    Some(String::from_utf8_lossy(blob.content()).into_owned())
}

/// The coverage JSON of the run branch's tip: the last kept iteration's suite run, else the
/// baseline's. Missing lines are read from it on demand rather than kept in the state.
fn latest_coverage_json(ctx: &RunContext, state: &RunState) -> Option<PathBuf> {
    let kept: Vec<_> = state.kept().collect();
    kept.iter()
        .rev()
        .filter(|i| i.verdict.as_ref().is_some_and(|v| v.coverage.is_some()))
        .map(|i| {
            let label = match i.verdict.as_ref().map(|v| v.suite_label.as_str()) {
                Some(l) if !l.is_empty() => l,
                _ => "pytest-suite",
            };
            ctx.store
                .iteration_dir(&state.run_id, i.n)
                .join(format!("{label}.coverage.json"))
        })
        .chain(std::iter::once(
            ctx.store
                .run_dir(&state.run_id)
                .join("baseline")
                .join("pytest-suite.coverage.json"),
        ))
        .find(|p| p.is_file())
}

fn build_request(
    ctx: &RunContext,
    state: &RunState,
    idx: usize,
    tip: Oid,
) -> Result<ChatRequest, StepError> {
    let it = &state.iterations[idx];
    if it.kind == Kind::Fix {
        return build_fix_request(ctx, state, idx, tip);
    }
    let import_name = crate::project::import_name(&it.target);
    let source = read_at_tip(&ctx.repo, tip, &it.target).unwrap_or_default();
    // The tests at the run branch's tip: the project's own plus those kept earlier in the run,
    // so the model sees what is already covered.
    let test_files = target::test_files_at(&ctx.repo, tip, state)?;
    let tests_dir = target::tests_dir_for(&it.target, state, &test_files);
    let existing_tests = target::tests_importing(&test_files, &import_name, 2)
        .into_iter()
        .map(|(path, text)| NamedText {
            name: path.clone(),
            path,
            text: cut(&text, MAX_EXAMPLE_CHARS),
        })
        .collect();
    let guidelines = ["CLAUDE.md", "AGENTS.md", "CONTRIBUTING.md"]
        .iter()
        .filter_map(|name| {
            read_at_tip(&ctx.repo, tip, name).map(|text| NamedText {
                name: name.to_string(),
                path: name.to_string(),
                text: cut(&text, MAX_GUIDELINE_CHARS),
            })
        })
        .collect();
    let module_stem = std::path::Path::new(&it.target)
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let missing = latest_coverage_json(ctx, state)
        .and_then(|path| crate::excerpt::read_missing(&path, &it.target));
    let numbered = missing
        .as_ref()
        .map(|m| crate::excerpt::excerpt(&source, m));
    let missing_summary = missing.filter(|m| !m.is_empty()).map(|m| m.summary());
    let data = PromptData {
        numbered,
        missing_summary,
        module_path: it.target.clone(),
        module_stem,
        import_name,
        focus: it.focus.clone(),
        focus_slug: it.focus.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        source: cut(&source, MAX_SOURCE_CHARS),
        coverage: state
            .coverage_now()
            .and_then(|c| c.modules.get(&it.target).copied()),
        tests_dir: if tests_dir.is_empty() {
            ".".to_string()
        } else {
            tests_dir
        },
        existing_tests,
        guidelines,
    };
    first_request(ctx, format!("add:{}", it.target), prompt::ADD, &data)
}

/// An iteration's first request: the system prompt and one user turn from `template`. `tag`
/// names its purpose for recordings (`add:<module>`, `fix:<test file>`).
fn first_request<T: Serialize>(
    ctx: &RunContext,
    tag: String,
    template: &str,
    data: &T,
) -> Result<ChatRequest, StepError> {
    Ok(ChatRequest {
        tag,
        system: ctx.templates.render(prompt::SYSTEM, data)?,
        messages: vec![ChatMessage {
            role: Role::User,
            content: ctx.templates.render(template, data)?,
        }],
        max_tokens: 4096,
        temperature: 0.2,
    })
}

#[derive(Serialize)]
struct FixData {
    test_file: String,
    file: String,
    failures: Vec<RepairFailure>,
    sources: Vec<NamedText>,
}

/// The tests of the target file that failed at the run's start and are not fixed yet, with
/// the failure pytest reported then (from the baseline's JUnit report).
fn open_failures(ctx: &RunContext, state: &RunState, test_file: &str) -> Vec<RepairFailure> {
    let xml = ctx
        .store
        .run_dir(&state.run_id)
        .join("baseline")
        .join("pytest-suite.xml");
    let cases = std::fs::read_to_string(xml)
        .map(|x| pytest::parse_junit(&x))
        .unwrap_or_default();
    let fixed = state.fixed_tests();
    let files = [test_file.to_string()];
    let ids: Vec<String> = state
        .baseline
        .as_ref()
        .map(|b| b.failed.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|id| !fixed.contains(&id) && target::test_file_of(id, &files).is_some())
        .collect();
    let mut failures = first_failures(&cases, &ids);
    // A failure not in the report (it was removed by hand) still gets named.
    for id in ids {
        if !failures.iter().any(|f| f.name == id) {
            failures.push(RepairFailure {
                name: id,
                message: String::new(),
                detail: String::new(),
            });
        }
    }
    failures
}

fn build_fix_request(
    ctx: &RunContext,
    state: &RunState,
    idx: usize,
    tip: Oid,
) -> Result<ChatRequest, StepError> {
    let it = &state.iterations[idx];
    let file = read_at_tip(&ctx.repo, tip, &it.target).unwrap_or_default();
    let side = target::test_side(state);
    let packages = &state.settings.packages;
    let sources = git::python_files_where(&ctx.repo, tip, |p| {
        crate::project::in_packages(p, packages) && !side(p)
    })?
    .into_iter()
    .filter(|(path, _)| {
        let name = crate::project::import_name(path);
        !target::tests_importing(&[(it.target.clone(), file.clone())], &name, 1).is_empty()
    })
    .take(3)
    .map(|(path, text)| NamedText {
        name: path.clone(),
        path,
        text: cut(&text, MAX_SOURCE_CHARS),
    })
    .collect();
    let data = FixData {
        test_file: it.target.clone(),
        file: cut(&file, MAX_SOURCE_CHARS),
        failures: open_failures(ctx, state, &it.target),
        sources,
    };
    first_request(ctx, format!("fix:{}", it.target), prompt::FIX, &data)
}

async fn ask(ctx: &RunContext, state: &mut RunState, idx: usize) -> Result<(), StepError> {
    let n = state.iterations[idx].n;
    let dir = ctx.store.iteration_dir(&state.run_id, n);
    let response_path = dir.join("response.json");
    let saved: Option<ChatResponse> = std::fs::read_to_string(&response_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let response = match saved {
        // A crash after the answer was saved: reuse it, never pay for it twice.
        Some(r) => r,
        None => {
            let tip = git::run_tip(&ctx.repo, &state.run_branch)?;
            let request = build_request(ctx, state, idx, tip)?;
            let prompt_text = format!(
                "# system\n\n{}\n\n# user\n\n{}\n",
                request.system,
                request
                    .messages
                    .first()
                    .map(|m| m.content.as_str())
                    .unwrap_or("")
            );
            artifact(dir.join("prompt.md"), prompt_text.as_bytes())?;
            // The conversation repair rounds continue.
            artifact(
                dir.join("request.json"),
                &serde_json::to_vec_pretty(&request).unwrap_or_default(),
            )?;
            let started = Instant::now();
            let result = ctx.llm.complete(&request, &ctx.cancel).await;
            state.iterations[idx].seconds.llm += started.elapsed().as_secs_f64();
            match result {
                Ok(r) => {
                    let json = serde_json::to_vec_pretty(&r).unwrap_or_default();
                    durable_artifact(response_path, &json)?;
                    r
                }
                Err(LlmError::Cancelled) => return Err(StepError::Cancelled),
                Err(e) => {
                    state.consecutive_llm_failures += 1;
                    state.iterations[idx].llm_calls += 1;
                    finish(ctx, state, idx, Outcome::Error, format!("llm: {e}"));
                    return Ok(());
                }
            }
        }
    };
    state.consecutive_llm_failures = 0;
    let it = &mut state.iterations[idx];
    it.llm_calls += 1;
    it.tokens_in += response.tokens_in;
    it.tokens_out += response.tokens_out;
    it.llm = Some(format!(
        "{} {}",
        ctx.llm.provider().as_str(),
        ctx.llm.model()
    ));
    it.step = Step::Asked;
    Ok(())
}

async fn apply(ctx: &RunContext, state: &mut RunState, idx: usize) -> Result<(), StepError> {
    let run_id = state.run_id.clone();
    let n = state.iterations[idx].n;
    let dir = ctx.store.iteration_dir(&run_id, n);
    let response: Option<ChatResponse> = std::fs::read_to_string(dir.join("response.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let Some(response) = response else {
        // The artifact vanished (removed by hand): ask again rather than guess.
        state.iterations[idx].step = Step::Planned;
        return Ok(());
    };
    let proposal = match proposal::parse(&response.text) {
        Ok(p) => p,
        Err(e) => {
            let cut_off = if response.truncated() {
                " (the answer hit the token limit)"
            } else {
                ""
            };
            finish(ctx, state, idx, Outcome::Rejected, format!("{e}{cut_off}"));
            return Ok(());
        }
    };
    let proposal_file = dir.join("proposal.py");
    artifact(proposal_file.clone(), proposal.code.as_bytes())?;
    let tidied = in_helper(state, idx, ctx.helper.tidy(&proposal_file)).await;
    let proposed = match tidied {
        Ok((_, tests)) => tests,
        Err(msg) => {
            finish(
                ctx,
                state,
                idx,
                Outcome::Rejected,
                format!("invalid Python: {msg}"),
            );
            return Ok(());
        }
    };
    // Tidied (non-test `Test*` classes marked) by the step above.
    let code = std::fs::read_to_string(&proposal_file).unwrap_or(proposal.code);

    let tip = git::run_tip(&ctx.repo, &state.run_branch)?;
    let wt_path = iteration_worktree(ctx, &run_id, n, tip)?;

    let it = &state.iterations[idx];
    let stem = std::path::Path::new(&it.target)
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "module".into());
    // A fix rewrites the failing test file itself; new tests get a file of their own.
    let chosen = if it.kind == Kind::Fix {
        Ok(it.target.clone())
    } else {
        let test_files = target::test_files_at(&ctx.repo, tip, state)?;
        let layout = state
            .baseline
            .as_ref()
            .map(|b| b.layout.clone())
            .unwrap_or_default();
        proposal::choose_test_path_for(
            &wt_path,
            &target::tests_dir_for(&it.target, state, &test_files),
            proposal.path_hint.as_deref(),
            &stem,
            n,
            &layout,
        )
    };
    let rel = match chosen {
        Ok(rel) => rel,
        Err(e) => {
            finish(ctx, state, idx, Outcome::Rejected, e.to_string());
            return Ok(());
        }
    };
    let abs = wt_path.join(&rel);
    // The path is approved, but the file system may still refuse it (a name it cannot hold):
    // that costs this proposal, not the run.
    let written = abs
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&abs, &code));
    ctx.forget_bytecode(&abs);
    if let Err(e) = written {
        finish(
            ctx,
            state,
            idx,
            Outcome::Rejected,
            format!("cannot write {rel}: {e}"),
        );
        return Ok(());
    }
    let oid = git::commit_files(
        &wt_path,
        std::slice::from_ref(&rel),
        &format!("improve: proposal of iteration {n} for {}", it.target),
    )?;
    record_commit(ctx, state, idx, oid)?;

    let it = &mut state.iterations[idx];
    it.proposed = proposed;
    it.test_file = Some(rel);
    it.step = Step::Applied;
    Ok(())
}

/// The first three of `items`, and how many more: `a, b, c and 4 more`.
pub(crate) fn first_three<'a>(items: impl ExactSizeIterator<Item = &'a str>) -> String {
    let total = items.len();
    let shown: Vec<&str> = items.take(3).collect();
    let more = if total > 3 {
        format!(" and {} more", total - 3)
    } else {
        String::new()
    };
    format!("{}{more}", shown.join(", "))
}

/// Test names without their module path.
fn names(ids: &[String]) -> String {
    first_three(ids.iter().map(|id| id.rsplit("::").next().unwrap_or(id)))
}

async fn verify(
    ctx: &RunContext,
    state: &mut RunState,
    idx: usize,
    shared: &RefCell<RunState>,
) -> Result<(), StepError> {
    let run_id = state.run_id.clone();
    let it = &state.iterations[idx];
    let n = it.n;
    let (Some(test_file), Some(commit)) = (it.test_file.clone(), it.iteration_commit.clone())
    else {
        state.iterations[idx].step = Step::Asked;
        return Ok(());
    };
    let commit_oid = git::oid(&commit, "the iteration commit")?;
    // A crash mid-verify can leave what the tests did in the tree, or a pruned commit the state
    // never recorded (keeping would then take the unpruned one): start from the state's commit.
    // A resumed iteration holds no worktree yet and gets one here.
    let wt_path = match ctx.worktrees.held(n) {
        Some(path)
            if git::head_of(&path) == Some(commit_oid) && git::dirty_paths(&path)?.is_empty() =>
        {
            path
        }
        _ => iteration_worktree(ctx, &run_id, n, commit_oid)?,
    };
    if state.iterations[idx].kind == Kind::Fix {
        return verify_fix(ctx, state, idx, shared, &wt_path, &test_file, commit_oid).await;
    }
    let mut verdict = Verdict::default();
    verdict.funnel.proposed = state.iterations[idx].proposed;

    // One pytest process runs the new file 1 + `reruns` times (TestGen-LLM's filter against
    // flaky tests), recording which lines of the package each test runs.
    let reruns = state.settings.reruns as usize;
    let args = repeated_runs(&test_file, reruns);
    let measure = if state.settings.require_coverage_gain {
        Measure::PerTest(latest_coverage_json(ctx, state))
    } else {
        Measure::Outcomes
    };
    let mut new = run_timed(
        ctx,
        state,
        idx,
        &wt_path,
        &args,
        "pytest-new",
        measure.clone(),
    )
    .await?;
    let mut touched = side_effects(ctx, state, &wt_path)?;
    let mut tally = Tally::of(&new.cases);
    // Repair: failing tests (or a file that does not collect, once) go back to the LLM in the
    // same conversation with their failure output, for up to --max-repairs rounds.
    let first_failing = first_failures(&new.cases, &tally.failing());
    let max_repairs = state.settings.max_repairs;
    let mut repairs = 0;
    loop {
        let uncollectable = new.does_not_collect();
        let failures = if uncollectable && repairs == 0 {
            let case = new.collection_error();
            vec![RepairFailure {
                name: test_file.clone(),
                message: case.map(|c| c.message.clone()).unwrap_or_default(),
                detail: case
                    .map(|c| c.detail.clone())
                    .filter(|d| !d.is_empty())
                    .unwrap_or_else(|| new.tail(30)),
            }]
        } else if uncollectable {
            Vec::new()
        } else {
            first_failures(&new.cases, &tally.failing())
        };
        let before_repair = (state.iterations[idx].iteration_commit.clone(), new.clone());
        if failures.is_empty()
            || repairs >= max_repairs
            || !touched.is_empty()
            || new.timed_out
            || !repair(
                ctx,
                state,
                idx,
                &wt_path,
                &test_file,
                &failures,
                uncollectable,
                repairs + 1,
            )
            .await?
        {
            break;
        }
        repairs += 1;
        new = run_timed(
            ctx,
            state,
            idx,
            &wt_path,
            &args,
            &format!("pytest-new-repair-{repairs}"),
            measure.clone(),
        )
        .await?;
        touched = side_effects(ctx, state, &wt_path)?;
        tally = Tally::of(&new.cases);
        let worse = !uncollectable && new.does_not_collect();
        if let (true, (Some(previous), previous_run)) = (worse, before_repair) {
            // The repair broke a file that collected: go back to the version before it, whose
            // passing tests are still worth keeping.
            let previous_oid = git::oid(&previous, "the iteration commit")?;
            iteration_worktree(ctx, &run_id, n, previous_oid)?;
            record_commit(ctx, state, idx, previous_oid)?;
            new = previous_run;
            touched = Vec::new();
            tally = Tally::of(&new.cases);
            break;
        }
    }
    verdict.repairs = repairs;
    if repairs > 0 {
        // Failing on an assertion about the code before and after repair, with the model
        // standing by the test: a possible bug in the source, for a human to look at.
        let still = tally.failing();
        let file_text = std::fs::read_to_string(wt_path.join(&test_file)).unwrap_or_default();
        verdict.findings = first_failures(&new.cases, &still)
            .into_iter()
            .filter(|f| {
                is_assertion(&f.message, &f.detail)
                    && first_failing
                        .iter()
                        .any(|g| g.name == f.name && is_assertion(&g.message, &g.detail))
            })
            .map(|f| Finding {
                source: function_source(&file_text, &f.name),
                test: f.name,
                message: f.message.lines().next().unwrap_or_default().to_string(),
            })
            .collect();
    }
    verdict.pytest_summary = new.summary.clone();
    verdict.new_failed = tally.failing();
    if !new.cases.is_empty() && new.collection_error().is_none() {
        verdict.funnel.proposed = tally.ids.len() as u32;
        verdict.funnel.collected = tally.ids.len() as u32;
    }
    let failing = tally.failing();
    let flaky = tally.flaky();
    let passing = tally.passing();
    verdict.funnel.passing = verdict
        .funnel
        .collected
        .saturating_sub(failing.len() as u32);
    verdict.funnel.stable = passing.len() as u32;
    let runs_of_new = format!("{} runs of the new tests", 1 + reruns);
    let reject_reason = if let Some(trouble) = trouble(ctx, &touched, new.timed_out, &runs_of_new) {
        Some(trouble)
    } else if new.cases.is_empty() {
        Some(match new.exit_code {
            Some(5) => "no tests collected from the proposal".to_string(),
            _ => format!("does not collect: {}", new.tail(1).trim()),
        })
    } else if let Some(case) = new.collection_error() {
        Some(format!("does not collect: {}", case.message))
    } else if passing.is_empty() && !failing.is_empty() {
        Some(format!(
            "{} of {} new tests fail: {}",
            failing.len(),
            tally.ids.len(),
            names(&failing)
        ))
    } else if passing.is_empty() && !flaky.is_empty() {
        Some(format!("flaky: {} fail on rerun", names(&flaky)))
    } else if passing.is_empty() {
        Some("no new test ran (all skipped)".to_string())
    } else {
        None
    };
    if let Some(reason) = reject_reason {
        verdict.reason = Some(reason);
        finish_verified(state, idx, verdict);
        return Ok(());
    }

    // Coverage gain: a passing test that runs nothing of the package the suite did not
    // already run (nor an earlier new test) is redundant. The whole package, not only the
    // target: a test that reaches a helper the target calls is worth keeping too. Measured from the run above, before the whole suite runs, so a
    // proposal with no gain costs no suite run.
    let mut redundant = Vec::new();
    if let Some(gain) = new
        .gain
        .as_ref()
        .filter(|_| state.settings.require_coverage_gain)
    {
        artifact(
            ctx.store
                .iteration_dir(&run_id, n)
                .join("coverage-gain.json"),
            &serde_json::to_vec_pretty(&gain.adds).unwrap_or_default(),
        )?;
        redundant = passing
            .iter()
            .filter(|id| test_name(id, &test_file).is_some_and(|t| gain.redundant.contains(&t)))
            .cloned()
            .collect();
    }
    verdict.funnel.gain = (passing.len() - redundant.len()) as u32;
    if redundant.len() == passing.len() {
        verdict.reason = Some(format!(
            "no gain: the {} passing new tests cover nothing the suite did not",
            passing.len()
        ));
        verdict.redundant = redundant;
        finish_verified(state, idx, verdict);
        return Ok(());
    }

    // Good tests are not thrown away with bad ones: failing, flaky and redundant tests leave
    // the file (by Python's own parser) in one amended commit, and the rest go on.
    let doomed: Vec<String> = [&failing, &flaky, &redundant]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    if !doomed.is_empty() && !drop_tests(ctx, state, idx, &wt_path, &test_file, &doomed).await? {
        verdict.reason = Some(if !failing.is_empty() {
            format!(
                "{} of {} new tests fail: {} (and they could not be removed alone)",
                failing.len(),
                tally.ids.len(),
                names(&failing)
            )
        } else if !flaky.is_empty() {
            format!("flaky: {} fail on rerun", names(&flaky))
        } else {
            format!(
                "redundant tests could not be removed: {}",
                names(&redundant)
            )
        });
        finish_verified(state, idx, verdict);
        return Ok(());
    }
    verdict.pruned = failing;
    verdict.flaky = flaky;
    // Whole functions go, so every case of a dropped parametrized test goes.
    let dropped_fns: Vec<String> = prune_names(&doomed, &test_file);
    verdict.new_tests = passing
        .into_iter()
        .filter(|id| test_name(id, &test_file).is_none_or(|t| !dropped_fns.contains(&t)))
        .collect();
    verdict.redundant = redundant;
    if verdict.new_tests.is_empty() {
        // Every passing case belonged to a test function dropped whole (a parametrized test
        // with a failing case): nothing is left to keep.
        verdict.reason = Some(format!(
            "{} of {} new tests fail, and the passing ones are cases of the same functions: {}",
            verdict.pruned.len(),
            tally.ids.len(),
            names(&verdict.pruned)
        ));
        finish_verified(state, idx, verdict);
        return Ok(());
    }

    let passing_before = catch_up(ctx, state, idx, shared)?;
    run_suite(
        ctx,
        state,
        idx,
        &wt_path,
        "pytest-suite",
        &passing_before,
        &mut verdict,
    )
    .await?;
    remove_polluters(
        ctx,
        state,
        idx,
        &wt_path,
        &test_file,
        &passing_before,
        &mut verdict,
    )
    .await?;
    verdict.funnel.clean = if verdict.keep {
        verdict.new_tests.len() as u32
    } else {
        0
    };
    finish_verified(state, idx, verdict);
    Ok(())
}

/// pytest arguments that run `test_file` once and then `reruns` more times, in one process.
fn repeated_runs(test_file: &str, reruns: usize) -> Vec<String> {
    let keep = (reruns > 0).then(|| "--keep-duplicates".to_string());
    keep.into_iter()
        .chain(std::iter::repeat_n(test_file.to_string(), 1 + reruns))
        .collect()
}

/// The iteration's commit, and the commit it was made on.
fn commit_and_parent(
    ctx: &RunContext,
    state: &RunState,
    idx: usize,
) -> Result<(Oid, Oid), StepError> {
    let commit = state.iterations[idx]
        .iteration_commit
        .as_deref()
        .map(|c| git::oid(c, "the iteration commit"))
        .transpose()?
        .ok_or_else(|| StepError::Pytest("the state lost the iteration commit".into()))?;
    let parent = ctx
        .repo
        .find_commit(commit)
        .and_then(|c| c.parent_id(0))
        .map_err(|source| GitError::Op {
            context: "read the iteration commit".into(),
            source,
        })?;
    Ok((commit, parent))
}

/// Moves the iteration's commit onto the run branch's tip, if other iterations were kept since
/// it was made (with `--jobs`, while this one waited for the LLM or ran its new tests), and
/// returns the tests that pass there: what its whole-suite run is judged against. The suite then
/// runs beside everything kept so far, and keeping needs no second run unless the tip moves
/// again meanwhile. A conflict leaves the commit where it is, for keeping to reject.
///
/// The tip and what passes there come from the run as it is now (`shared`), not from the copy
/// this step started with: another iteration may have been kept since.
fn catch_up(
    ctx: &RunContext,
    state: &mut RunState,
    idx: usize,
    shared: &RefCell<RunState>,
) -> Result<Vec<String>, StepError> {
    let (commit, parent) = commit_and_parent(ctx, state, idx)?;
    // Kept commits move the run branch and the run's state in one go (no await between), so
    // the two agree here.
    let tip = git::run_tip(&ctx.repo, &state.run_branch)?;
    let now = shared.borrow();
    if parent == tip {
        return Ok(now.passing_at(Some(&tip.to_string())));
    }
    let passing = now.passing_at_tip();
    drop(now);
    let Some(replayed) = git::replay_onto(&ctx.repo, commit, tip)? else {
        return Ok(state.passing_at(Some(&parent.to_string())));
    };
    let n = state.iterations[idx].n;
    iteration_worktree(ctx, &state.run_id.clone(), n, replayed)?;
    record_commit(ctx, state, idx, replayed)?;
    Ok(passing)
}

/// What disqualifies a pytest run of `what` whatever its results: it changed project files,
/// or it ran out of time.
fn trouble(ctx: &RunContext, touched: &[String], timed_out: bool, what: &str) -> Option<String> {
    if !touched.is_empty() {
        Some(format!(
            "side effects: {what} changed {}",
            first_three(touched.iter().map(String::as_str))
        ))
    } else if timed_out {
        Some(format!(
            "timed out: {what} ran past --test-timeout ({})",
            humantime::format_duration(ctx.test_cmd.timeout)
        ))
    } else {
        None
    }
}

/// A fix iteration is kept when tests that failed at the start now pass, every time, and in
/// the whole suite; nothing that passed stops passing; and only the test file changed.
async fn verify_fix(
    ctx: &RunContext,
    state: &mut RunState,
    idx: usize,
    shared: &RefCell<RunState>,
    wt_path: &Path,
    test_file: &str,
    commit: Oid,
) -> Result<(), StepError> {
    let mut verdict = Verdict::default();
    let targeted: Vec<String> = open_failures(ctx, state, test_file)
        .into_iter()
        .map(|f| f.name)
        .collect();
    verdict.funnel.proposed = targeted.len() as u32;
    let changed: Vec<String> = git::commit_changes(&ctx.repo, commit)?
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p != test_file)
        .collect();
    if !changed.is_empty() {
        verdict.reason = Some(format!(
            "a fix may change only {test_file}, not {}",
            first_three(changed.iter().map(String::as_str))
        ));
        finish_verified(state, idx, verdict);
        return Ok(());
    }
    let args = repeated_runs(test_file, state.settings.reruns as usize);
    let run = run_timed(
        ctx,
        state,
        idx,
        wt_path,
        &args,
        "pytest-fix",
        Measure::Outcomes,
    )
    .await?;
    let touched = side_effects(ctx, state, wt_path)?;
    let tally = Tally::of(&run.cases);
    verdict.pytest_summary = run.summary.clone();
    let passing = tally.passing();
    let flaky = tally.flaky();
    // A file that did not even import (its id has no `::`) is fixed once it collects and its
    // tests pass.
    let collects = run.collection_error().is_none() && !passing.is_empty();
    let fixed: Vec<String> = targeted
        .iter()
        .filter(|id| passing.contains(id) || (!id.contains("::") && collects))
        .cloned()
        .collect();
    verdict.flaky = targeted
        .iter()
        .filter(|id| flaky.contains(id))
        .cloned()
        .collect();
    verdict.new_failed = tally.failing();
    verdict.funnel.collected = targeted.iter().filter(|id| tally.ids.contains(id)).count() as u32;
    verdict.funnel.passing = (fixed.len() + verdict.flaky.len()) as u32;
    verdict.funnel.stable = fixed.len() as u32;
    verdict.funnel.gain = fixed.len() as u32;
    verdict.reason = if let Some(trouble) = trouble(ctx, &touched, run.timed_out, "the fixed file")
    {
        Some(trouble)
    } else if fixed.is_empty() && !verdict.flaky.is_empty() {
        Some(format!("flaky: {} fail on rerun", names(&verdict.flaky)))
    } else if fixed.is_empty() {
        Some(format!(
            "fixes none of the {} failing tests: {}",
            targeted.len(),
            names(&targeted)
        ))
    } else {
        None
    };
    if verdict.reason.is_some() {
        finish_verified(state, idx, verdict);
        return Ok(());
    }
    let passing_before = catch_up(ctx, state, idx, shared)?;
    let suite = run_suite(
        ctx,
        state,
        idx,
        wt_path,
        "pytest-suite",
        &passing_before,
        &mut verdict,
    )
    .await?;
    verdict.fixed = still_fixed(fixed, &suite);
    if verdict.keep && verdict.fixed.is_empty() {
        verdict.keep = false;
        verdict.reason = Some("the fixed tests fail in the whole suite".into());
    }
    verdict.funnel.clean = if verdict.keep {
        verdict.fixed.len() as u32
    } else {
        0
    };
    finish_verified(state, idx, verdict);
    Ok(())
}

/// The fixed tests that pass in the whole suite `suite` (a file fixed from not importing: that
/// it no longer fails to).
fn still_fixed(fixed: Vec<String>, suite: &pytest::PytestRun) -> Vec<String> {
    let passed = suite.ids_with(CaseOutcome::Passed);
    let failing = suite.failing();
    fixed
        .into_iter()
        .filter(|id| passed.contains(id) || (!id.contains("::") && !failing.contains(id)))
        .collect()
}

/// Pollution: when the whole suite turns tests red that passed before, or new tests fail only
/// beside the others, the new tests to blame are found and dropped, and the suite runs again
/// (up to three rounds). New tests failing in the suite are dropped themselves; a previously
/// passing test gone red is pinned on a new test by bisection: the victims run with half of
/// the new tests at a time, in suite order, until one test alone reproduces the failure.
async fn remove_polluters(
    ctx: &RunContext,
    state: &mut RunState,
    idx: usize,
    wt_path: &Path,
    test_file: &str,
    passing_before: &[String],
    verdict: &mut Verdict,
) -> Result<(), StepError> {
    for round in 1..=3 {
        let polluted = verdict
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("breaks ") || r.contains("fail in the whole suite"));
        if verdict.keep || !polluted {
            return Ok(());
        }
        let new_names = prune_names(&verdict.new_tests, test_file);
        // New tests that failed in the suite: its verdict listed them as not passing there.
        let mut culprits: Vec<String> = verdict
            .new_tests
            .iter()
            .filter(|id| verdict.failed_in_suite.contains(id))
            .filter_map(|id| test_name(id, test_file))
            .collect();
        if culprits.is_empty() && !verdict.regressions.is_empty() {
            let victims: Vec<String> = verdict
                .regressions
                .iter()
                .filter_map(|id| node_id(wt_path, id))
                .collect();
            if victims.is_empty() {
                return Ok(());
            }
            let mut pool = new_names.clone();
            let mut probes = 0;
            while pool.len() > 1 {
                let (a, b) = pool.split_at(pool.len() / 2);
                let (a, b) = (a.to_vec(), b.to_vec());
                probes += 1;
                if reproduces(ctx, state, idx, wt_path, test_file, &victims, &a, probes).await? {
                    pool = a;
                    continue;
                }
                probes += 1;
                if reproduces(ctx, state, idx, wt_path, test_file, &victims, &b, probes).await? {
                    pool = b;
                    continue;
                }
                // Only together do they pollute: no single test to blame.
                return Ok(());
            }
            probes += 1;
            if pool.len() == 1
                && reproduces(ctx, state, idx, wt_path, test_file, &victims, &pool, probes).await?
            {
                culprits = pool;
            }
        }
        culprits.sort();
        culprits.dedup();
        if culprits.is_empty() || culprits.len() == new_names.len() {
            return Ok(());
        }
        let ids: Vec<String> = verdict
            .new_tests
            .iter()
            .filter(|id| test_name(id, test_file).is_some_and(|t| culprits.contains(&t)))
            .cloned()
            .collect();
        if !drop_tests(ctx, state, idx, wt_path, test_file, &ids).await? {
            return Ok(());
        }
        verdict.polluters.extend(ids);
        verdict
            .new_tests
            .retain(|id| test_name(id, test_file).is_none_or(|t| !culprits.contains(&t)));
        let label = format!("pytest-suite-{}", round + 1);
        run_suite(ctx, state, idx, wt_path, &label, passing_before, verdict).await?;
    }
    Ok(())
}

/// Whether running `victims` beside the new tests `subset` (files in path order, as the whole
/// suite runs them) turns a victim red.
#[allow(clippy::too_many_arguments)]
async fn reproduces(
    ctx: &RunContext,
    state: &mut RunState,
    idx: usize,
    wt_path: &Path,
    test_file: &str,
    victims: &[String],
    subset: &[String],
    probe: u32,
) -> Result<bool, StepError> {
    let mut args: Vec<String> = victims
        .iter()
        .cloned()
        .chain(subset.iter().map(|t| format!("{test_file}::{t}")))
        .collect();
    // Stable: keeps the order within a file.
    args.sort_by(|a, b| a.split("::").next().cmp(&b.split("::").next()));
    let run = run_timed(
        ctx,
        state,
        idx,
        wt_path,
        &args,
        &format!("pytest-bisect-{probe}"),
        Measure::Outcomes,
    )
    .await?;
    let failed = run.failing();
    Ok(victims.iter().any(|v| {
        failed
            .iter()
            .any(|f| node_id(wt_path, f).as_deref() == Some(v.as_str()))
    }))
}

/// pytest's node id (`tests/test_x.py::TestK::test_b[1]`) of a JUnit id
/// (`tests.test_x.TestK::test_b[1]`): the longest dotted prefix that names a file in the
/// worktree is the module, the rest the classes.
fn node_id(worktree: &Path, id: &str) -> Option<String> {
    let (class_path, name) = id.rsplit_once("::")?;
    let parts: Vec<&str> = class_path.split('.').collect();
    (1..=parts.len()).rev().find_map(|k| {
        let file = format!("{}.py", parts[..k].join("/"));
        worktree.join(&file).is_file().then(|| {
            std::iter::once(file)
                .chain(parts[k..].iter().map(|c| c.to_string()))
                .chain(std::iter::once(name.to_string()))
                .collect::<Vec<_>>()
                .join("::")
        })
    })
}

/// A failing test as a repair prompt shows it.
#[derive(Serialize, Clone)]
struct RepairFailure {
    name: String,
    message: String,
    detail: String,
}

/// The first failure of each of `ids` (the new file runs several times; one report each).
fn first_failures(cases: &[pytest::TestCase], ids: &[String]) -> Vec<RepairFailure> {
    ids.iter()
        .filter_map(|id| {
            cases
                .iter()
                .find(|c| {
                    &c.id == id && matches!(c.outcome, CaseOutcome::Failed | CaseOutcome::Error)
                })
                .map(|c| RepairFailure {
                    name: c.id.clone(),
                    message: c.message.clone(),
                    detail: c.detail.clone(),
                })
        })
        .collect()
}

/// A failure on an assertion about what the code did (not an error in the test itself).
fn is_assertion(message: &str, detail: &str) -> bool {
    message.starts_with("assert") || detail.contains("AssertionError")
}

/// The source of test `id`'s function in `file` (by its name and indentation), for findings.
fn function_source(file: &str, id: &str) -> String {
    let name = id.rsplit("::").next().unwrap_or(id);
    let name = name.split('[').next().unwrap_or(name);
    let lines: Vec<&str> = file.lines().collect();
    let Some(start) = lines.iter().position(|l| {
        let t = l.trim_start();
        t.starts_with(&format!("def {name}(")) || t.starts_with(&format!("async def {name}("))
    }) else {
        return String::new();
    };
    let indent = lines[start].len() - lines[start].trim_start().len();
    let end = lines[start + 1..]
        .iter()
        .position(|l| !l.trim().is_empty() && l.len() - l.trim_start().len() <= indent)
        .map_or(lines.len(), |k| start + 1 + k);
    lines[start..end].join("\n").trim_end().to_string()
}

#[derive(Serialize)]
struct RepairData<'a> {
    test_file: &'a str,
    failures: &'a [RepairFailure],
    count: usize,
    collection: bool,
    file: String,
    round: u32,
    max: u32,
}

/// One repair round: the failures go back to the LLM in the conversation of the iteration's
/// first answer, and the corrected file replaces the proposal (the iteration commit is
/// amended). The answer is saved before use, so a resumed verify never pays for it twice.
/// Returns false when there is nothing usable to apply (the LLM failed, or its answer holds no
/// valid file): the failing tests are then dropped as they are.
#[allow(clippy::too_many_arguments)]
async fn repair(
    ctx: &RunContext,
    state: &mut RunState,
    idx: usize,
    wt_path: &Path,
    test_file: &str,
    failures: &[RepairFailure],
    collection: bool,
    round: u32,
) -> Result<bool, StepError> {
    let n = state.iterations[idx].n;
    let dir = ctx.store.iteration_dir(&state.run_id, n);
    let response_path = dir.join(format!("response-repair-{round}.json"));
    let saved: Option<ChatResponse> = std::fs::read_to_string(&response_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let response = match saved {
        Some(r) => r,
        None => {
            let mut request: ChatRequest = match std::fs::read_to_string(dir.join("request.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
            {
                Some(r) => r,
                None => {
                    let tip = git::run_tip(&ctx.repo, &state.run_branch)?;
                    build_request(ctx, state, idx, tip)?
                }
            };
            request.tag = format!("repair:{}", state.iterations[idx].target);
            let answer = |path: PathBuf| -> Option<String> {
                std::fs::read_to_string(path)
                    .ok()
                    .and_then(|t| serde_json::from_str::<ChatResponse>(&t).ok())
                    .map(|r| r.text)
            };
            let mut turns = vec![answer(dir.join("response.json"))];
            for k in 1..round {
                turns.push(std::fs::read_to_string(dir.join(format!("repair-prompt-{k}.md"))).ok());
                turns.push(answer(dir.join(format!("response-repair-{k}.json"))));
            }
            for (i, turn) in turns.into_iter().enumerate() {
                let Some(content) = turn else {
                    return Ok(false);
                };
                let role = if i % 2 == 0 {
                    Role::Assistant
                } else {
                    Role::User
                };
                request.messages.push(ChatMessage { role, content });
            }
            let data = RepairData {
                test_file,
                failures,
                count: failures.len(),
                collection,
                file: std::fs::read_to_string(wt_path.join(test_file)).unwrap_or_default(),
                round,
                max: state.settings.max_repairs,
            };
            let prompt_text = ctx.templates.render(prompt::REPAIR, &data)?;
            artifact(
                dir.join(format!("repair-prompt-{round}.md")),
                prompt_text.as_bytes(),
            )?;
            request.messages.push(ChatMessage {
                role: Role::User,
                content: prompt_text,
            });
            let started = Instant::now();
            let result = ctx.llm.complete(&request, &ctx.cancel).await;
            state.iterations[idx].seconds.llm += started.elapsed().as_secs_f64();
            match result {
                Ok(r) => {
                    durable_artifact(
                        response_path,
                        &serde_json::to_vec_pretty(&r).unwrap_or_default(),
                    )?;
                    r
                }
                Err(LlmError::Cancelled) => return Err(StepError::Cancelled),
                Err(e) => {
                    state.iterations[idx].llm_calls += 1;
                    tracing::warn!("iteration {n}: repair round {round} got no answer: {e}");
                    return Ok(false);
                }
            }
        }
    };
    let it = &mut state.iterations[idx];
    it.llm_calls += 1;
    it.tokens_in += response.tokens_in;
    it.tokens_out += response.tokens_out;
    let Ok(proposal) = proposal::parse(&response.text) else {
        return Ok(false);
    };
    let proposal_file = dir.join(format!("proposal-repair-{round}.py"));
    artifact(proposal_file.clone(), proposal.code.as_bytes())?;
    let tidied = in_helper(state, idx, ctx.helper.tidy(&proposal_file)).await;
    if tidied.is_err() {
        return Ok(false);
    }
    let code = std::fs::read_to_string(&proposal_file).unwrap_or(proposal.code);
    if std::fs::write(wt_path.join(test_file), &code).is_err() {
        return Ok(false);
    }
    ctx.forget_bytecode(&wt_path.join(test_file));
    let oid = git::amend_head(
        wt_path,
        &[test_file.to_string()],
        &format!("improve: proposal of iteration {n}, repair round {round}"),
    )?;
    record_commit(ctx, state, idx, oid)?;
    Ok(true)
}

/// Each test id's outcomes over the runs of the new file, in the order pytest first ran them.
struct Tally {
    ids: Vec<String>,
    passed: std::collections::HashMap<String, u32>,
    failed: std::collections::HashMap<String, u32>,
}

impl Tally {
    fn of(cases: &[pytest::TestCase]) -> Tally {
        let mut tally = Tally {
            ids: Vec::new(),
            passed: Default::default(),
            failed: Default::default(),
        };
        for case in cases {
            if !tally.ids.contains(&case.id) {
                tally.ids.push(case.id.clone());
            }
            match case.outcome {
                CaseOutcome::Passed => *tally.passed.entry(case.id.clone()).or_default() += 1,
                CaseOutcome::Failed | CaseOutcome::Error => {
                    *tally.failed.entry(case.id.clone()).or_default() += 1
                }
                _ => {}
            }
        }
        tally
    }
    fn select(&self, keep: impl Fn(u32, u32) -> bool) -> Vec<String> {
        self.ids
            .iter()
            .filter(|id| {
                keep(
                    self.passed.get(*id).copied().unwrap_or(0),
                    self.failed.get(*id).copied().unwrap_or(0),
                )
            })
            .cloned()
            .collect()
    }
    /// Never passed.
    fn failing(&self) -> Vec<String> {
        self.select(|p, f| p == 0 && f > 0)
    }
    /// Passed and failed.
    fn flaky(&self) -> Vec<String> {
        self.select(|p, f| p > 0 && f > 0)
    }
    /// Passed every time.
    fn passing(&self) -> Vec<String> {
        self.select(|p, f| p > 0 && f == 0)
    }
}

/// A test file of the project that does not import would otherwise stop the whole session,
/// and every proposal after it would look broken.
pub const SUITE_FLAG: &str = "--continue-on-collection-errors";

/// Runs the whole suite (with coverage) in the worktree and judges it: nothing that passed in
/// `passing_before` may fail, and every new test must pass among all the others. Fills the
/// verdict's suite figures and its reason (None: keep).
async fn run_suite(
    ctx: &RunContext,
    state: &mut RunState,
    idx: usize,
    wt_path: &Path,
    label: &str,
    passing_before: &[String],
    verdict: &mut Verdict,
) -> Result<pytest::PytestRun, StepError> {
    let mut args = vec![SUITE_FLAG.to_string()];
    args.extend(suite_paths(state, idx));
    let suite = run_timed(ctx, state, idx, wt_path, &args, label, Measure::Report).await?;
    verdict.suite_label = label.to_string();
    let suite_passed = suite.ids_with(CaseOutcome::Passed);
    verdict.pytest_summary = suite.summary.clone();
    verdict.suite_tests = suite.cases.len() as u32;
    verdict.suite_passed = suite_passed.len() as u32;
    verdict.coverage = suite.coverage.clone();
    verdict.regressions = passing_before
        .iter()
        .filter(|id| !suite_passed.contains(id))
        .cloned()
        .collect();
    let new_failing_in_suite: Vec<String> = verdict
        .new_tests
        .iter()
        .filter(|id| !suite_passed.contains(id))
        .cloned()
        .collect();
    verdict.failed_in_suite = new_failing_in_suite.clone();
    let touched = side_effects(ctx, state, wt_path)?;
    verdict.reason = if let Some(trouble) = trouble(
        ctx,
        &touched,
        suite.timed_out,
        "the suite with the new tests",
    ) {
        Some(trouble)
    } else if !verdict.regressions.is_empty() {
        Some(format!(
            "breaks {} passing tests: {}",
            verdict.regressions.len(),
            names(&verdict.regressions)
        ))
    } else if !new_failing_in_suite.is_empty() {
        Some(format!(
            "{} new tests fail in the whole suite: {}",
            new_failing_in_suite.len(),
            names(&new_failing_in_suite)
        ))
    } else {
        None
    };
    verdict.keep = verdict.reason.is_none();
    Ok(suite)
}

/// The paths of a whole-suite run when the run's new test files lie where a bare `pytest` does
/// not look (`testpaths` naming one file, say): pytest's own paths and those files. Empty
/// otherwise, so pytest's configuration decides as it does for the user.
fn suite_paths(state: &RunState, idx: usize) -> Vec<String> {
    let Some(baseline) = &state.baseline else {
        return Vec::new();
    };
    let mut added: Vec<String> = state.kept().filter_map(|i| i.test_file.clone()).collect();
    added.extend(state.iterations[idx].test_file.clone());
    baseline.layout.suite_args(&added)
}

/// A test id as the pruning script names it: `test_a` for a function (parameters dropped: a
/// parametrized test goes whole), `TestK::test_b` for a method. None for an id of another file.
fn test_name(id: &str, test_file: &str) -> Option<String> {
    let module = test_file
        .strip_suffix(".py")
        .unwrap_or(test_file)
        .replace('/', ".");
    let (class_path, name) = id.rsplit_once("::")?;
    let name = name.split('[').next().unwrap_or(name);
    if class_path == module {
        Some(name.to_string())
    } else {
        class_path
            .strip_prefix(&format!("{module}."))
            .map(|class| format!("{class}::{name}"))
    }
}

/// [`test_name`] of each id, sorted and without repeats.
fn prune_names(ids: &[String], test_file: &str) -> Vec<String> {
    let mut names: Vec<String> = ids
        .iter()
        .filter_map(|id| test_name(id, test_file))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// What a test run changed in the worktree, beyond what the project's own suite does. The
/// worktree is thrown away with the iteration, so nothing a test did survives it; but a
/// proposal whose tests delete or rewrite project files is not one to keep.
fn side_effects(
    ctx: &RunContext,
    state: &RunState,
    worktree: &std::path::Path,
) -> Result<Vec<String>, StepError> {
    let mut known = state
        .baseline
        .as_ref()
        .map(|b| b.side_effects.clone())
        .unwrap_or_default();
    // What `--setup-cmd` made there is the project's build, not the tests' doing.
    known.extend(ctx.worktrees.prepared_in(worktree));
    Ok(git::dirty_paths(worktree)?
        .into_iter()
        .filter(|p| !known.contains(p))
        .collect())
}

/// One pytest run in the worktree, its time added to the iteration's pytest seconds.
async fn run_timed(
    ctx: &RunContext,
    state: &mut RunState,
    idx: usize,
    worktree: &std::path::Path,
    args: &[String],
    label: &str,
    measure: Measure,
) -> Result<pytest::PytestRun, StepError> {
    let dir = ctx
        .store
        .iteration_dir(&state.run_id, state.iterations[idx].n);
    let started = Instant::now();
    // `--setup-cmd`, the first time this worktree runs tests (its time counts as pytest's).
    let ready = ctx.worktrees.ready(worktree, &ctx.cancel).await;
    let run = match ready {
        Ok(()) => {
            pytest::run(
                &ctx.test_cmd,
                worktree,
                args,
                &dir,
                label,
                measure,
                &ctx.cancel,
            )
            .await
        }
        Err(crate::prepare::PrepareError::Cancelled) => Err(PytestError::Cancelled),
        Err(e) => {
            state.iterations[idx].seconds.tests += started.elapsed().as_secs_f64();
            return Err(StepError::Pytest(e.to_string()));
        }
    };
    state.iterations[idx].seconds.tests += started.elapsed().as_secs_f64();
    Ok(run?)
}

/// Removes the tests `ids` from the proposal's file and amends the iteration commit (still one
/// commit on the run branch); `why` goes in the commit message. Returns whether any were removed.
async fn drop_tests(
    ctx: &RunContext,
    state: &mut RunState,
    idx: usize,
    worktree: &std::path::Path,
    test_file: &str,
    ids: &[String],
) -> Result<bool, StepError> {
    let n = state.iterations[idx].n;
    let doomed = prune_names(ids, test_file);
    let pruned = in_helper(
        state,
        idx,
        ctx.helper.prune(&worktree.join(test_file), &doomed),
    )
    .await;
    match pruned {
        Ok(removed) if removed > 0 => ctx.forget_bytecode(&worktree.join(test_file)),
        Ok(_) => return Ok(false),
        Err(e) => {
            tracing::info!("tests could not be dropped: {e}");
            return Ok(false);
        }
    }
    let oid = git::amend_head(
        worktree,
        &[test_file.to_string()],
        &format!("improve: proposal of iteration {n}, some tests dropped"),
    )?;
    crash_point("pruned", n);
    record_commit(ctx, state, idx, oid)?;
    Ok(true)
}

/// Replays the iteration's commit onto `tip` in its worktree and runs the whole suite there.
/// Returns the replayed commit, or None with `verdict.reason` saying why it cannot be kept.
async fn replay(
    ctx: &RunContext,
    state: &mut RunState,
    idx: usize,
    commit: Oid,
    tip: Oid,
    verdict: &mut Verdict,
) -> Result<Option<Oid>, StepError> {
    let run_id = state.run_id.clone();
    let n = state.iterations[idx].n;
    let tip_text = tip.to_string();
    verdict.replayed_onto = Some(tip_text.clone());
    let Some(replayed) = git::replay_onto(&ctx.repo, commit, tip)? else {
        verdict.reason = Some(format!(
            "conflicts with what was kept meanwhile (replayed onto {})",
            git::short(&tip_text)
        ));
        return Ok(None);
    };
    let wt_path = iteration_worktree(ctx, &run_id, n, replayed)?;
    let passing_before = state.passing_at_tip();
    let suite = run_suite(
        ctx,
        state,
        idx,
        &wt_path,
        "pytest-suite-replayed",
        &passing_before,
        verdict,
    )
    .await?;
    // A fix must still fix beside what was kept meanwhile.
    if state.iterations[idx].kind == Kind::Fix && verdict.reason.is_none() {
        verdict.fixed = still_fixed(std::mem::take(&mut verdict.fixed), &suite);
        if verdict.fixed.is_empty() {
            verdict.reason = Some("the fixed tests fail in the whole suite".into());
            verdict.keep = false;
        }
    }
    if let Some(reason) = &verdict.reason {
        verdict.reason = Some(format!(
            "after replaying onto {} (kept meanwhile): {reason}",
            git::short(&tip_text)
        ));
        return Ok(None);
    }
    record_commit(ctx, state, idx, replayed)?;
    Ok(Some(replayed))
}

fn finish_verified(state: &mut RunState, idx: usize, verdict: Verdict) {
    let it = &mut state.iterations[idx];
    it.verdict = Some(verdict);
    it.step = Step::Verified;
}

fn commit_message(state: &RunState, idx: usize, verdict: &Verdict) -> String {
    let it = &state.iterations[idx];
    let added = verdict.new_tests.len();
    let fixed = verdict.fixed.len();
    let file = it.test_file.clone().unwrap_or_default();
    let (kind, subject) = match it.kind {
        Kind::Fix => ("fix", format!("fix {fixed} failing tests in {}", it.target)),
        Kind::Add => ("add", format!("add {added} tests for {}", it.target)),
    };
    let coverage = match (state.coverage_now(), &verdict.coverage) {
        (Some(before), Some(after)) => {
            let module = match (
                before.modules.get(&it.target),
                after.modules.get(&it.target),
            ) {
                (Some(b), Some(a)) => format!(" ({}: {b:.1}% -> {a:.1}%)", it.target),
                (None, Some(a)) => format!(" ({}: {a:.1}%)", it.target),
                _ => String::new(),
            };
            format!("{:.1}% -> {:.1}%{module}", before.percent, after.percent)
        }
        _ => "not measured".to_string(),
    };
    format!(
        "improve #{n}: {subject}\n\n\
         Target: {target}\n\
         Focus: {focus}\n\
         Kind: {kind}\n\
         Tests added: {added} ({file}){dropped}\n\
         Tests fixed: {fixed}\n\
         Pytest: {summary}\n\
         Coverage: {coverage}\n\n\
         Improve-Run: {run}\n\
         Improve-Iteration: {n}\n",
        n = it.n,
        target = it.target,
        focus = it.focus,
        summary = verdict.pytest_summary,
        run = state.run_id,
        dropped = [
            (verdict.pruned.len(), "failing"),
            (verdict.flaky.len(), "flaky"),
        ]
        .iter()
        .filter(|(k, _)| *k > 0)
        .map(|(k, what)| format!("; {k} {what} tests dropped"))
        .collect::<String>(),
    )
}

async fn keep_or_reject(
    ctx: &RunContext,
    state: &mut RunState,
    idx: usize,
) -> Result<(), StepError> {
    let run_id = state.run_id.clone();
    let it = &state.iterations[idx];
    let n = it.n;
    let Some(mut verdict) = it.verdict.clone() else {
        state.iterations[idx].step = Step::Applied;
        return Ok(());
    };
    if !verdict.keep {
        let reason = verdict.reason.clone().unwrap_or_else(|| "rejected".into());
        finish(ctx, state, idx, Outcome::Rejected, reason);
        return Ok(());
    }
    verdict.coverage_before = state.coverage_now().map(|c| c.percent);
    verdict.funnel.kept = (verdict.new_tests.len() + verdict.fixed.len()) as u32;
    state.iterations[idx].verdict = Some(verdict.clone());
    let base = git::oid(&state.base_commit, "the base commit")?;
    let kept = match git::find_kept_commit(&ctx.repo, &state.run_branch, &run_id, n, base)? {
        // The ref was moved before a crash cut the state save short: it is already kept.
        Some(oid) => oid,
        None => {
            let tip = git::run_tip(&ctx.repo, &state.run_branch)?;
            let (mut iteration_commit, parent) = commit_and_parent(ctx, state, idx)?;
            if parent != tip {
                // Another iteration was kept while this one was verified: what passed beside
                // the old tip must pass again beside the new one.
                // On success the replayed commit is the iteration's commit from here on.
                match replay(ctx, state, idx, iteration_commit, tip, &mut verdict).await? {
                    Some(replayed) => iteration_commit = replayed,
                    None => {
                        let reason = verdict.reason.clone().unwrap_or_default();
                        verdict.funnel.kept = 0;
                        verdict.funnel.clean = 0;
                        state.iterations[idx].verdict = Some(verdict);
                        finish(ctx, state, idx, Outcome::Rejected, reason);
                        return Ok(());
                    }
                }
                state.iterations[idx].verdict = Some(verdict.clone());
            }
            let message = commit_message(state, idx, &verdict);
            let oid = git::keep_on_run_branch(
                &ctx.repo,
                &state.run_branch,
                tip,
                iteration_commit,
                &message,
            )?;
            crash_point("kept-ref", n);
            oid
        }
    };
    let files = git::commit_changes(&ctx.repo, kept)?
        .into_iter()
        .map(|(path, _)| path)
        .collect();
    let seq = state.next_keep_seq();
    let it = &mut state.iterations[idx];
    it.keep_seq = Some(seq);
    it.commit = Some(kept.to_string());
    it.files = files;
    it.tests_added = verdict.new_tests.len() as u32;
    it.tests_fixed = verdict.fixed.len() as u32;
    it.outcome = Some(Outcome::Kept);
    it.reason = None;
    it.step = Step::Finished;
    it.finished_at = Some(Utc::now());
    cleanup(ctx, &run_id, n);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::prune_names;

    #[test]
    fn failing_ids_become_names_the_pruner_knows() {
        let ids = vec![
            "tests.test_x::test_a[2-2-5]".to_string(),
            "tests.test_x::test_a[1-2-3]".to_string(),
            "tests.test_x.TestK::test_b".to_string(),
            "tests.test_other::test_c".to_string(),
        ];
        assert_eq!(
            prune_names(&ids, "tests/test_x.py"),
            ["TestK::test_b", "test_a"]
        );
    }
}
