//! What the LLM is asked: the prompt data of an add or a fix iteration, read from the run
//! branch's tip, and the one way any request is made: the saved answer if there is one, else
//! the request, its answer saved (fsynced) before it is used.

use std::path::PathBuf;
use std::time::Instant;

use git2::{Oid, Repository};
use serde::Serialize;

use super::context::{StepCx, StepError};
use crate::coverage::Missing;
use crate::fsutil::{read_json, write_artifact, write_durable};
use crate::llm::{ChatMessage, ChatRequest, ChatResponse, LlmError, Role};
use crate::prompt;
use crate::pyhelper::Api;
use crate::pytest::{self, CaseOutcome};
use crate::state::{AnswerStop, Kind, Outcome, RejectReason, Rejection, RunState, Step};
use crate::target;
use crate::testid::TestId;

/// Files longer than this are cut in the prompt, so one huge module cannot blow the context.
const MAX_SOURCE_CHARS: usize = 24_000;
const MAX_EXAMPLE_CHARS: usize = 6_000;
const MAX_GUIDELINE_CHARS: usize = 4_000;

/// The files a project keeps its guidance for contributors (and agents) in.
const GUIDELINE_FILES: [&str; 3] = ["CLAUDE.md", "AGENTS.md", "CONTRIBUTING.md"];

/// How the first request of an iteration ended, for the circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AskEnd {
    Answered,
    Failed,
    /// The server refused even the smallest prompt as too long for its context: not an outage.
    Refused,
}

impl AskEnd {
    /// The step the iteration is at after the ask.
    pub fn next(&self) -> Step {
        match self {
            AskEnd::Answered => Step::Asked,
            AskEnd::Failed | AskEnd::Refused => Step::Finished,
        }
    }
}

/// What came of one request.
pub enum Answer {
    Got(ChatResponse),
    /// The LLM gave no answer (after its retries).
    Failed(LlmError),
    /// Nothing was asked: the request could not be made (a repair whose earlier turns are gone).
    Unavailable,
}

/// Below this budget a prompt cannot hold the module and the instructions.
const MIN_PROMPT_TOKENS: u32 = 1_000;

/// The first request: asks for tests (or a fix), or reuses the answer a crash left saved. A
/// prompt the server refuses as too long for its context is asked again at half the budget.
pub async fn ask(cx: &mut StepCx<'_>) -> Result<AskEnd, StepError> {
    let api = module_api(cx).await?;
    let mut budget = first_prompt_budget(cx);
    loop {
        let cuts = std::cell::RefCell::new(Vec::new());
        let answer = saved_or_asked(cx, 0, |cx| {
            let (request, cut) = build_request_within(cx, budget, api.as_ref())?;
            let files = cx.files();
            write_artifact(&files.prompt(), prompt_text(&request).as_bytes())?;
            // The conversation repair rounds continue.
            let json = serde_json::to_vec_pretty(&request).unwrap_or_default();
            write_artifact(&files.request(), &json)?;
            *cuts.borrow_mut() = cut;
            Ok(Some(request))
        })
        .await?;
        cx.it_mut().prompt_cuts = cuts.into_inner();
        let why = match answer {
            Answer::Got(_) => {
                let llm = format!("{} {}", cx.ctx.llm.provider().as_str(), cx.ctx.llm.model());
                let it = cx.it_mut();
                it.llm = Some(llm);
                return Ok(AskEnd::Answered);
            }
            Answer::Failed(e) if e.is_context_length() => {
                cx.it_mut().answers.context_refusals += 1;
                if budget / 2 >= MIN_PROMPT_TOKENS {
                    budget /= 2;
                    continue;
                }
                format!("llm: {e} (even a prompt of {budget} tokens is too long for the model)")
            }
            Answer::Failed(e) => {
                let why = Rejection::new(RejectReason::LlmFailed, format!("llm: {e}"));
                cx.finish(Outcome::Error, why);
                return Ok(AskEnd::Failed);
            }
            Answer::Unavailable => {
                return Err(StepError::Internal(
                    "the first request could not be made".into(),
                ));
            }
        };
        cx.finish(Outcome::Error, Rejection::new(RejectReason::LlmFailed, why));
        return Ok(AskEnd::Refused);
    }
}

/// The public names of an add iteration's module, as its source at the tip defines them.
async fn module_api(cx: &mut StepCx<'_>) -> Result<Option<Api>, StepError> {
    if cx.it().kind == Kind::Fix {
        return Ok(None);
    }
    let Some(source) = read_at_tip(&cx.ctx.repo, cx.tip()?, &cx.it().target) else {
        return Ok(None);
    };
    let file = cx.files().module_source();
    write_artifact(&file, source.as_bytes())?;
    let ctx = cx.ctx;
    Ok(cx.in_helper(ctx.helper.api(&file)).await.ok())
}

/// The answer to request `round` (0: the first, k: repair round k): the one saved, else what
/// the LLM answers to the request `build` makes, saved for good before it is returned. Every
/// answer and every failed request counts as one call of the iteration.
pub async fn saved_or_asked(
    cx: &mut StepCx<'_>,
    round: u32,
    build: impl FnOnce(&StepCx<'_>) -> Result<Option<ChatRequest>, StepError>,
) -> Result<Answer, StepError> {
    let path = cx.files().response(round);
    // A crash after the answer was saved: reuse it, never pay for it twice.
    if let Some(saved) = read_json::<ChatResponse>(&path) {
        count_call(cx, round, Some(&saved));
        return Ok(Answer::Got(saved));
    }
    let Some(request) = build(cx)? else {
        return Ok(Answer::Unavailable);
    };
    if let Some(deadline) = cx.ctx.deadline
        && expected_call(&cx.run_now()).is_some_and(|e| Instant::now() + e > deadline)
    {
        return Err(StepError::Deadline);
    }
    // `--max-cost`: the call's worst case is held against the cap until it answers.
    let ctx = cx.ctx;
    let reservation = match (&ctx.budget, ctx.pricing.worst_case(&request)) {
        (Some(budget), Some(worst)) => Some(tokio::select! {
            r = budget.reserve_waiting(worst) => r.ok_or(StepError::Budget)?,
            _ = ctx.cancel.cancelled() => return Err(StepError::Cancelled),
        }),
        _ => None,
    };
    let started = Instant::now();
    let call = cx.ctx.llm.complete(&request, &cx.ctx.cancel);
    // A local server's call is stopped at the deadline: nobody pays for it, and the run's
    // budget is the user's night. A paid call runs on: its answer is paid for anyway.
    let result = match cx.ctx.deadline.filter(|_| cx.ctx.llm.is_local()) {
        Some(deadline) => tokio::select! {
            r = call => r,
            _ = tokio::time::sleep_until(deadline.into()) => {
                cx.it_mut().seconds.llm += started.elapsed().as_secs_f64();
                return Err(StepError::Deadline);
            }
        },
        None => call.await,
    };
    cx.it_mut().seconds.llm += started.elapsed().as_secs_f64();
    match result {
        Ok(response) => {
            let json = serde_json::to_vec_pretty(&response).unwrap_or_default();
            write_durable(&path, &json)?;
            cx.ctx
                .saw_prompt_size(request_chars(&request), response.tokens_in);
            let cost = count_call(cx, round, Some(&response));
            if let Some(r) = reservation {
                r.settle(cost.unwrap_or(0.0));
            }
            Ok(Answer::Got(response))
        }
        Err(LlmError::Cancelled) => Err(StepError::Cancelled),
        Err(e) => {
            count_call(cx, round, None);
            Ok(Answer::Failed(e))
        }
    }
}

/// How long an LLM call takes on this run's server, as measured so far: the mean of the calls
/// made (None before the first).
fn expected_call(state: &RunState) -> Option<std::time::Duration> {
    let (seconds, calls) = state.iterations.iter().fold((0.0, 0u32), |(s, c), it| {
        (s + it.seconds.llm, c + it.llm_calls)
    });
    (calls > 0).then(|| std::time::Duration::from_secs_f64(seconds / f64::from(calls)))
}

/// One call on the iteration's books: its tokens by class, its dollars (returned; None when
/// unpriced or unanswered), and what stopping it early saved.
fn count_call(cx: &mut StepCx<'_>, round: u32, response: Option<&ChatResponse>) -> Option<f64> {
    cx.ctx.saw_speed(response.and_then(|r| r.speed));
    let call = response.map(|r| cx.ctx.pricing.call(round, r));
    let it = cx.it_mut();
    it.llm_calls += 1;
    if let Some(call) = call {
        it.tokens_cached += call.tokens_cached;
        it.tokens_cache_write += call.tokens_cache_write;
        match call.cost_usd {
            Some(usd) => it.cost_usd += usd,
            None => it.calls_unpriced += 1,
        }
        it.calls.push(call);
    }
    if let Some(r) = response {
        it.tokens_in += r.tokens_in;
        it.tokens_out += r.tokens_out;
        if let Some(stop) = r.stopped {
            let notes = &mut it.answers;
            notes.stopped += 1;
            if stop.reason.is_runaway() {
                notes.runaways += 1;
            }
            notes.tokens_saved += stop.tokens_saved;
            notes.stops.push(AnswerStop {
                round,
                reason: stop.reason.as_str().to_string(),
                tokens_received: stop.tokens_received,
                tokens_saved: stop.tokens_saved,
            });
        }
    }
    call.and_then(|c| c.cost_usd)
}

/// The request as the review shows it.
fn prompt_text(request: &ChatRequest) -> String {
    format!(
        "# system\n\n{}\n\n# user\n\n{}\n",
        request.system,
        request
            .messages
            .first()
            .map(|m| m.content.as_str())
            .unwrap_or("")
    )
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
    /// The module's public functions, classes and methods with their signatures.
    api: Option<String>,
    /// Mutants of the module the last iteration on it left alive: what its tests miss.
    unnoticed: Vec<String>,
    /// Example tests were cut or left out to fit (so "no tests yet" would be untrue).
    examples_cut: bool,
    /// The module's whole source, for narrowing the excerpt (not shown as such).
    #[serde(skip)]
    full_source: String,
    /// The change a `--since` run is about, as far as this module goes.
    change: Option<ChangeNote>,
    /// Its lines (sorted), marked in the excerpt.
    #[serde(skip)]
    changed: Vec<u32>,
}

/// What the prompt says of the change in the module.
#[derive(Serialize)]
struct ChangeNote {
    /// `--since` as given.
    since: String,
    /// `12-20, 31`
    lines: String,
}

#[derive(Serialize)]
struct NamedText {
    name: String,
    path: String,
    text: String,
    /// Cut to fit the prompt budget already.
    #[serde(skip)]
    cut: bool,
}

impl NamedText {
    fn new(path: String, text: &str, max: usize) -> Self {
        NamedText {
            name: path.clone(),
            path,
            text: cut(text, max),
            cut: false,
        }
    }
}

/// `text` cut to at most `max` bytes (at a character boundary), saying so.
pub fn cut_text(text: &str, max: usize) -> String {
    cut(text, max)
}

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

/// The coverage report of the run branch's tip: the last kept iteration's suite run, else the
/// baseline's. Missing lines are read from it on demand rather than kept in the state.
pub fn latest_coverage_json(cx: &StepCx<'_>) -> Option<PathBuf> {
    let run = cx.ctx.store.run(&cx.state.run_id);
    let kept: Vec<_> = cx.state.kept().collect();
    kept.iter()
        .rev()
        .filter_map(|i| Some((i.n, i.verdict.as_ref().filter(|v| v.coverage.is_some())?)))
        .map(|(n, v)| {
            run.iteration(n)
                .suite_by_name(&v.suite_label)
                .coverage_json()
        })
        .chain(std::iter::once(run.baseline_suite().coverage_json()))
        .find(|p| p.is_file())
}

/// The first request of the iteration, from the run branch's tip, in the prompt budget.
pub fn build_request(cx: &StepCx<'_>) -> Result<ChatRequest, StepError> {
    Ok(build_request_within(cx, first_prompt_budget(cx), None)?.0)
}

/// The most a prompt may hold, in tokens: `--max-prompt-tokens`.
pub fn prompt_budget(cx: &StepCx<'_>) -> u32 {
    let ceiling = cx.settings().max_prompt_tokens;
    let answer = typical_answer_tokens(&cx.state).unwrap_or(cx.settings().max_answer_tokens / 2);
    let call = cx.settings().call_budget.as_secs_f64();
    let local = cx.ctx.llm.is_local() && cx.ctx.llm.provider() != crate::llm::Provider::Replay;
    // Its reading in the budget's tokens: a tokenizer that packs fewer characters into a
    // token than the budget counts reads fewer budget tokens a second than it says.
    let measured = cx
        .ctx
        .speed()
        .map(|s| match cx.ctx.prompt_chars_per_token() {
            Some(chars) => s.in_budget_tokens(chars, CHARS_PER_TOKEN as f64),
            None => s,
        });
    measured
        .or(local.then_some(ASSUMED_LOCAL_SPEED))
        .and_then(|speed| tokens_in_time(speed, call, answer))
        .map_or(ceiling, |fit| fit.clamp(MIN_PROMPT_TOKENS, ceiling))
}

/// A server on this machine before its first answer says how fast it is: a CPU-only
/// workstation running a small model (40 tokens/s read, 6 written). A paid API is fast enough
/// that only `--max-prompt-tokens` binds.
const ASSUMED_LOCAL_SPEED: crate::llm::ServerSpeed = crate::llm::ServerSpeed {
    prompt_per_second: Some(40.0),
    generated_per_second: Some(6.0),
    source: crate::llm::SpeedSource::Measured,
};

/// The prompt tokens the server reads in what `call` seconds leave after writing an answer of
/// `answer` tokens (reading keeps at least a quarter of the time); None when its reading speed
/// is unknown.
fn tokens_in_time(speed: crate::llm::ServerSpeed, call: f64, answer: u32) -> Option<u32> {
    let read = speed.prompt_per_second.filter(|r| *r > 0.0)?;
    let writing = speed
        .generated_per_second
        .filter(|w| *w > 0.0)
        .map_or(0.0, |w| f64::from(answer) / w);
    let reading = (call - writing).max(call / 4.0);
    Some((reading * read).min(f64::from(u32::MAX)) as u32)
}

/// The median answer length of this run's iterations so far, in tokens per call.
fn typical_answer_tokens(state: &RunState) -> Option<u32> {
    let mut per_call: Vec<u64> = state
        .iterations
        .iter()
        .filter(|i| i.llm_calls > 0 && i.tokens_out > 0)
        .map(|i| i.tokens_out / u64::from(i.llm_calls))
        .collect();
    per_call.sort_unstable();
    per_call
        .get(per_call.len() / 2)
        .map(|t| u32::try_from(*t).unwrap_or(u32::MAX))
}

/// The first prompt's share of the budget: a repair round sends it again with the answer and
/// the failures after it, so when repairs may follow, room for those is kept (at least half
/// the budget stays the first prompt's).
fn first_prompt_budget(cx: &StepCx<'_>) -> u32 {
    let (budget, settings) = (prompt_budget(cx), cx.settings());
    if settings.max_repairs == 0 {
        return budget;
    }
    let repair_turns = 2 * settings.max_answer_tokens + REPAIR_NOTE_TOKENS;
    budget.saturating_sub(repair_turns).max(budget / 2)
}

/// What a repair prompt holds besides the file: the failures, cut to fit, and the instructions.
const REPAIR_NOTE_TOKENS: u32 = 500;

/// A request's size as the budget counts it (characters over [`CHARS_PER_TOKEN`]).
pub fn request_tokens(request: &ChatRequest) -> usize {
    request_chars(request) / CHARS_PER_TOKEN
}

/// The characters of a request's system prompt and messages.
fn request_chars(request: &ChatRequest) -> usize {
    request.system.len()
        + request
            .messages
            .iter()
            .map(|m| m.content.len())
            .sum::<usize>()
}

/// The first request in a prompt of about `budget` tokens, and what was cut to fit.
fn build_request_within(
    cx: &StepCx<'_>,
    budget: u32,
    api: Option<&Api>,
) -> Result<(ChatRequest, Vec<String>), StepError> {
    let max_chars = budget as usize * CHARS_PER_TOKEN;
    if cx.it().kind == Kind::Fix {
        return Ok((build_fix_request(cx, max_chars)?, Vec::new()));
    }
    let dead = api.map_or(&[][..], |a| &a.superseded[..]);
    let (mut data, missing) = prompt_data(cx, cx.tip()?, dead)?;
    data.api = api
        .map(|a| a.text.as_str())
        .filter(|t| !t.trim().is_empty())
        .map(|a| cut(a, MAX_EXAMPLE_CHARS));
    let cuts = fit(cx, &mut data, missing.as_ref(), max_chars)?;
    let request = first_request(cx, format!("add:{}", cx.it().target), prompt::ADD, &data)?;
    Ok((request, cuts))
}

/// A cheap, cautious estimate: code runs about three characters a token.
pub const CHARS_PER_TOKEN: usize = 3;

/// Cuts `data` until its prompt fits `max_chars`, in reverse order of what matters most: the
/// project's guidelines, then example tests, then the API summary, then the module itself
/// (narrowed to the functions with the most missing lines). Says what was cut.
fn fit(
    cx: &StepCx<'_>,
    data: &mut PromptData,
    missing: Option<&Missing>,
    max_chars: usize,
) -> Result<Vec<String>, StepError> {
    let templates = &cx.ctx.templates;
    let size = |d: &PromptData| -> Result<usize, StepError> {
        Ok(templates.render(prompt::SYSTEM, d)?.len() + templates.render(prompt::ADD, d)?.len())
    };
    let mut cuts = Vec::new();
    loop {
        let over = size(data)?.saturating_sub(max_chars);
        if over == 0 {
            return Ok(cuts);
        }
        if let Some(cut) = shrink_last(&mut data.guidelines, over, "the guidelines") {
            cuts.push(cut);
        } else if let Some(cut) = shrink_last(&mut data.existing_tests, over, "the example") {
            data.examples_cut = true;
            cuts.push(cut);
        } else if data.api.take().is_some() {
            cuts.push("the module's API summary left out".into());
        } else {
            cuts.push(shrink_module(data, missing, over));
            return Ok(cuts);
        }
    }
}

/// Cuts the last of `items` by `over` characters (and the note saying so), or leaves it out
/// when little would be left or it was cut already.
fn shrink_last(items: &mut Vec<NamedText>, over: usize, what: &str) -> Option<String> {
    const LEAST: usize = 1_000;
    const NOTE: usize = 64;
    let last = items.last_mut()?;
    if !last.cut && last.text.len() > over + NOTE + LEAST {
        last.text = cut(&last.text, last.text.len() - over - NOTE);
        last.cut = true;
        return Some(format!("{what} {} cut short", last.path));
    }
    let gone = items.pop()?;
    Some(format!("{what} {} left out", gone.path))
}

/// The module's part of the prompt, `over` characters shorter.
fn shrink_module(data: &mut PromptData, missing: Option<&Missing>, over: usize) -> String {
    match (&data.numbered, missing) {
        (Some(numbered), Some(m)) => {
            let room = numbered.len().saturating_sub(over);
            let (text, note) =
                crate::excerpt::excerpt_within(&data.full_source, m, &data.changed, room);
            // Lines the model cannot see are no aim it can take.
            let shown = m.within(&crate::excerpt::shown_lines(&text));
            data.missing_summary = (!shown.is_empty()).then(|| shown.summary());
            data.numbered = Some(text);
            note.unwrap_or_else(|| "the module excerpt cut short".into())
        }
        _ => {
            data.source = cut(&data.source, data.source.len().saturating_sub(over));
            "the module's source cut short".into()
        }
    }
}

/// What the first prompt shows; `dead`: line ranges of definitions no test can reach (their
/// missing lines are no aim).
fn prompt_data(
    cx: &StepCx<'_>,
    tip: Oid,
    dead: &[(u32, u32)],
) -> Result<(PromptData, Option<Missing>), StepError> {
    let (repo, state, it) = (&cx.ctx.repo, &cx.state, cx.it());
    let import_name = crate::project::import_name(&it.target, &state.settings.source_roots);
    let source = read_at_tip(repo, tip, &it.target).unwrap_or_default();
    // The tests at the run branch's tip: the project's own plus those kept earlier in the run,
    // so the model sees what is already covered.
    let test_files = target::test_files_at(repo, tip, state)?;
    let tests_dir = target::tests_dir_for(&it.target, state, &test_files);
    let existing_tests = example_tests(&test_files, &import_name);
    let guidelines = GUIDELINE_FILES
        .iter()
        .filter_map(|name| {
            let text = read_at_tip(repo, tip, name)?;
            Some(NamedText::new(name.to_string(), &text, MAX_GUIDELINE_CHARS))
        })
        .collect();
    let changed: Vec<u32> = state
        .change
        .as_ref()
        .map(|c| c.lines(&it.target).to_vec())
        .unwrap_or_default();
    let missing = latest_coverage_json(cx)
        .and_then(|path| crate::coverage::read_missing(&path, &it.target))
        .map(|m| only_changed(m, &changed, state.change.is_some()))
        .map(|m| m.outside(dead));
    let data = PromptData {
        numbered: missing
            .as_ref()
            .map(|m| crate::excerpt::excerpt(&source, m, &changed)),
        missing_summary: missing
            .as_ref()
            .filter(|m| !m.is_empty())
            .map(|m| m.summary()),
        module_path: it.target.clone(),
        module_stem: std::path::Path::new(&it.target)
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default(),
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
        api: None,
        unnoticed: unnoticed(state, &it.target),
        examples_cut: false,
        full_source: source.clone(),
        change: state.change.as_ref().map(|c| ChangeNote {
            since: c.since.clone(),
            lines: crate::coverage::ranges(&changed),
        }),
        changed,
    };
    Ok((data, missing))
}

/// In a `--since` run, what is missing of the change only: the excerpt and the summary aim at
/// the changed lines no test runs, not at the rest of the module.
fn only_changed(mut missing: Missing, changed: &[u32], scoped: bool) -> Missing {
    if scoped {
        let in_change = |line: i64| u32::try_from(line).is_ok_and(|l| changed.contains(&l));
        missing.lines.retain(|l| changed.contains(l));
        missing.branches.retain(|(from, _)| in_change(*from));
    }
    missing
}

/// The shortest test functions of the files that import the module, else (when those hold
/// only test classes) the first two such files, cut.
fn example_tests(test_files: &[(String, String)], import_name: &str) -> Vec<NamedText> {
    let importing = target::tests_importing(test_files, import_name, usize::MAX);
    let shortest = crate::examples::shortest_tests(&importing, crate::examples::SHOWN);
    if shortest.is_empty() {
        return importing
            .into_iter()
            .take(2)
            .map(|(path, text)| NamedText::new(path, &text, MAX_EXAMPLE_CHARS))
            .collect();
    }
    shortest
        .into_iter()
        .map(|e| NamedText::new(e.path, &e.text, MAX_EXAMPLE_CHARS))
        .collect()
}

/// How many survivors of the last mutation check of a module the next prompt for it shows.
const UNNOTICED_SHOWN: usize = 3;

/// The mutants that survived the latest mutation check of `target`, described.
fn unnoticed(state: &RunState, target: &str) -> Vec<String> {
    state
        .iterations
        .iter()
        .rev()
        .filter(|i| i.target == target && i.is_finished())
        .find_map(|i| i.verdict.as_ref()?.mutation.as_ref())
        .map(|m| {
            m.survived
                .iter()
                .take(UNNOTICED_SHOWN)
                .map(|s| s.describe())
                .collect()
        })
        .unwrap_or_default()
}

/// An iteration's first request: the system prompt and one user turn from `template`. `tag`
/// names its purpose for recordings (`add:<module>`, `fix:<test file>`).
fn first_request<T: Serialize>(
    cx: &StepCx<'_>,
    tag: String,
    template: &str,
    data: &T,
) -> Result<ChatRequest, StepError> {
    let templates = &cx.ctx.templates;
    Ok(ChatRequest {
        tag,
        system: templates.render(prompt::SYSTEM, data)?,
        messages: vec![ChatMessage {
            role: Role::User,
            content: templates.render(template, data)?,
        }],
        max_tokens: cx.settings().max_answer_tokens,
        temperature: cx.settings().temperature,
        // Repair rounds send this prefix again: worth a cache write (1.25 times the input
        // price on Anthropic) only when one may follow.
        cache_prefix: cx.settings().max_repairs > 0,
    })
}

/// A failing test as a prompt shows it.
#[derive(Serialize, Clone, Debug)]
pub struct Failure {
    pub name: String,
    pub message: String,
    pub detail: String,
}

/// The first failure of each of `ids` (the new file runs several times; one report each).
pub fn first_failures(cases: &[pytest::TestCase], ids: &[String]) -> Vec<Failure> {
    ids.iter()
        .filter_map(|id| {
            cases
                .iter()
                .find(|c| {
                    &c.id == id && matches!(c.outcome, CaseOutcome::Failed | CaseOutcome::Error)
                })
                .map(|c| Failure {
                    name: c.id.clone(),
                    message: c.message.clone(),
                    detail: c.detail.clone(),
                })
        })
        .collect()
}

#[derive(Serialize)]
struct FixData {
    test_file: String,
    file: String,
    failures: Vec<Failure>,
    sources: Vec<NamedText>,
}

/// The tests of `test_file` that failed at the run's start and are not fixed yet, with the
/// failure pytest reported then (from the baseline's JUnit report).
pub fn open_failures(cx: &StepCx<'_>, test_file: &str) -> Vec<Failure> {
    let state: &RunState = &cx.state;
    let xml = cx.ctx.store.run(&state.run_id).baseline_suite().junit();
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
        .filter(|id| !fixed.contains(&id) && TestId::new(id).file_among(&files).is_some())
        .collect();
    let mut failures = first_failures(&cases, &ids);
    // A failure not in the report (it was removed by hand) still gets named.
    for id in ids {
        if !failures.iter().any(|f| f.name == id) {
            failures.push(Failure {
                name: id,
                message: String::new(),
                detail: String::new(),
            });
        }
    }
    failures
}

/// The fix prompt: the failing file and up to three modules it imports, cut to share
/// `max_chars`.
fn build_fix_request(cx: &StepCx<'_>, max_chars: usize) -> Result<ChatRequest, StepError> {
    let file_chars = MAX_SOURCE_CHARS.min(max_chars / 2);
    let source_chars = MAX_SOURCE_CHARS.min(max_chars / 6);
    let tip = cx.tip()?;
    let (repo, it) = (&cx.ctx.repo, cx.it());
    let file = read_at_tip(repo, tip, &it.target).unwrap_or_default();
    let side = target::test_side(&cx.state);
    let packages = &cx.state.settings.packages;
    let this_file = [(it.target.clone(), file.clone())];
    let sources = crate::git::python_files_where(repo, tip, |p| {
        crate::project::in_packages(p, packages) && !side(p)
    })?
    .into_iter()
    .filter(|(path, _)| {
        let name = crate::project::import_name(path, &cx.state.settings.source_roots);
        !target::tests_importing(&this_file, &name, 1).is_empty()
    })
    .take(3)
    .map(|(path, text)| NamedText::new(path, &text, source_chars))
    .collect();
    let data = FixData {
        test_file: it.target.clone(),
        file: cut(&file, file_chars),
        failures: open_failures(cx, &it.target),
        sources,
    };
    first_request(cx, format!("fix:{}", it.target), prompt::FIX, &data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_server_gets_prompts_it_reads_within_the_call_budget() {
        let speed = |read, write| crate::llm::ServerSpeed {
            prompt_per_second: read,
            generated_per_second: write,
            source: crate::llm::SpeedSource::Server,
        };
        // 40 tokens/s read, 6 written: a 600-token answer takes 100 s of a 240 s budget, and
        // the 140 s left read 5600 tokens.
        assert_eq!(
            tokens_in_time(speed(Some(40.0), Some(6.0)), 240.0, 600),
            Some(5600)
        );
        // Writing alone would overrun the budget: reading keeps a quarter of it.
        assert_eq!(
            tokens_in_time(speed(Some(40.0), Some(1.0)), 240.0, 600),
            Some(2400)
        );
        assert_eq!(tokens_in_time(speed(None, Some(6.0)), 240.0, 600), None);
    }
}
