//! Stage repair: failing new tests (or a file that does not collect, once) go back to the LLM
//! in the same conversation with their failure output, for up to `--max-repairs` rounds, and
//! the corrected file replaces the proposal (the iteration commit is amended). A repair that
//! breaks a file that collected is undone. Tests the model stands by while they fail on an
//! assertion about the code become findings: possible bugs for a human to look at. The values
//! of the other failing asserts come from the code ([`expect`]): after the repairs, or before
//! any on a server too slow for them.

use std::path::Path;

use serde::Serialize;

use super::judge::Tally;
use super::{expect, measure_new, repeated_runs, run_timed, side_effects};
use crate::artifacts::Label;
use crate::fsutil::{read_json, write_artifact};
use crate::git;
use crate::iteration::apply::{tidy_answer, write_test_file};
use crate::iteration::ask::{self, Answer, Failure, first_failures};
use crate::iteration::context::{StepCx, StepError};
use crate::llm::{ChatMessage, ChatRequest, ChatResponse, Role};
use crate::prompt;
use crate::pytest::PytestRun;
use crate::state::{FUTILE_REPAIRS, Finding, Verdict};
use crate::testid::{TestId, prune_names};

/// The new file's last runs, after any repair.
pub struct Repaired {
    pub run: PytestRun,
    /// Project files those runs changed.
    pub touched: Vec<String>,
    pub tally: Tally,
}

impl Repaired {
    /// The new file's `run`, with what it changed in `worktree`.
    fn after(cx: &StepCx<'_>, worktree: &Path, run: PytestRun) -> Result<Repaired, StepError> {
        Ok(Repaired {
            touched: side_effects(cx, worktree)?,
            tally: Tally::of(&run.cases),
            run,
        })
    }
}

/// Runs the new tests, and repairs them while they fail and rounds are left. Fills the
/// verdict's repairs and findings.
pub async fn run_and_repair(
    cx: &mut StepCx<'_>,
    worktree: &Path,
    test_file: &str,
    verdict: &mut Verdict,
) -> Result<Repaired, StepError> {
    let args = repeated_runs(test_file, cx.settings().reruns as usize);
    let measure = measure_new(cx);
    let run = run_timed(cx, worktree, &args, Label::New, measure.clone()).await?;
    let mut new = Repaired::after(cx, worktree, run)?;
    // On a slow server the values come from the code before any repair, and one repair that
    // changed nothing is enough to ask for none again: each costs minutes. Elsewhere the model
    // is asked first, and a test it stands by is a finding, not a value to take.
    let slow = cx.ctx.slow_server();
    if slow {
        take_values(cx, worktree, test_file, &mut new, &[]).await?;
    }
    let first_failing = first_failures(&new.run.cases, &new.tally.failing());
    let mut repairs = 0;
    let futile = cx
        .state
        .repairs_futile(if slow { 1 } else { FUTILE_REPAIRS });
    if futile && !new.tally.failing().is_empty() && cx.settings().max_repairs > 0 {
        cx.it_mut().answers.repairs_skipped += 1;
    }
    while !futile
        && repairs < cx.settings().max_repairs
        && new.touched.is_empty()
        && !new.run.timed_out
    {
        let uncollectable = new.run.does_not_collect();
        let failures = failures_to_repair(&new, test_file, uncollectable, repairs);
        if failures.is_empty() {
            break;
        }
        let before = (cx.it().iteration_commit.clone(), new.run.clone());
        let passing = prune_names(&new.tally.passing(), test_file);
        let round = Round {
            failures: &failures,
            passing: &passing,
            collection: uncollectable,
            number: repairs + 1,
        };
        match repair_round(cx, worktree, test_file, round).await? {
            RoundEnd::Applied => repairs += 1,
            // The model stands by its file: asking again would bring the same.
            RoundEnd::Unchanged => {
                repairs += 1;
                break;
            }
            RoundEnd::Unusable => break,
        }
        let label = Label::NewRepaired(repairs);
        let run = run_timed(cx, worktree, &args, label, measure.clone()).await?;
        new = Repaired::after(cx, worktree, run)?;
        if let (true, (Some(previous), previous_run)) =
            (!uncollectable && new.run.does_not_collect(), before)
        {
            // The repair broke a file that collected: go back to the version before it, whose
            // passing tests are still worth keeping.
            let previous = git::oid(&previous, "the iteration commit")?;
            cx.worktree_at(previous)?;
            cx.record_commit(previous)?;
            new = Repaired {
                touched: Vec::new(),
                tally: Tally::of(&previous_run.cases),
                run: previous_run,
            };
            break;
        }
    }
    verdict.repairs = repairs;
    if repairs > 0 {
        verdict.findings = findings(worktree, test_file, &new, &first_failing);
    }
    if !slow {
        take_values(cx, worktree, test_file, &mut new, &verdict.findings).await?;
    }
    Ok(new)
}

/// The expected values of the tests of `new` failing on an assertion (but `findings`) taken
/// from the code ([`expect`]); `new` becomes the run after.
async fn take_values(
    cx: &mut StepCx<'_>,
    worktree: &Path,
    test_file: &str,
    new: &mut Repaired,
    findings: &[Finding],
) -> Result<(), StepError> {
    if !new.touched.is_empty() || new.run.timed_out {
        return Ok(());
    }
    let failing: Vec<String> = first_failures(&new.run.cases, &new.tally.failing())
        .into_iter()
        .filter(|f| is_assertion(f) && !findings.iter().any(|g| g.test == f.name))
        .map(|f| f.name)
        .collect();
    let tests = prune_names(&failing, test_file);
    if let Some(run) = expect::adopt_values(cx, worktree, test_file, &tests).await? {
        *new = Repaired::after(cx, worktree, run)?;
    }
    Ok(())
}

/// What the next repair round shows the model: the file's collection error (in the first
/// round only), else its failing tests.
fn failures_to_repair(
    new: &Repaired,
    test_file: &str,
    uncollectable: bool,
    repairs: u32,
) -> Vec<Failure> {
    if !uncollectable {
        return first_failures(&new.run.cases, &new.tally.failing());
    }
    if repairs > 0 {
        return Vec::new();
    }
    let case = new.run.collection_error();
    vec![Failure {
        name: test_file.to_string(),
        message: case.map(|c| c.message.clone()).unwrap_or_default(),
        detail: case
            .map(|c| c.detail.clone())
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| new.run.tail(30)),
    }]
}

/// Tests failing on an assertion about the code before and after repair, with the model
/// standing by the test.
fn findings(
    worktree: &Path,
    test_file: &str,
    new: &Repaired,
    first_failing: &[Failure],
) -> Vec<Finding> {
    let file_text = std::fs::read_to_string(worktree.join(test_file)).unwrap_or_default();
    first_failures(&new.run.cases, &new.tally.failing())
        .into_iter()
        .filter(|f| {
            is_assertion(f)
                && first_failing
                    .iter()
                    .any(|g| g.name == f.name && is_assertion(g))
        })
        .map(|f| Finding {
            source: function_source(&file_text, &f.name),
            test: f.name,
            message: f.message.lines().next().unwrap_or_default().to_string(),
        })
        .collect()
}

/// A failure on an assertion about what the code did (not an error in the test itself).
fn is_assertion(f: &Failure) -> bool {
    f.message.starts_with("assert") || f.detail.contains("AssertionError")
}

/// The source of test `id`'s function in `file` (by its name and indentation), for findings.
fn function_source(file: &str, id: &str) -> String {
    let name = TestId::new(id).function();
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

#[derive(Serialize, Clone)]
struct RepairData<'a> {
    test_file: &'a str,
    failures: &'a [Failure],
    count: usize,
    collection: bool,
    file: String,
    round: u32,
    max: u32,
    /// The names the module under test defines, when a failure says a name is missing.
    names: Option<String>,
}

/// What one repair round is about.
struct Round<'a> {
    failures: &'a [Failure],
    /// The tests that pass already (as the pruner names them): they stay as they are.
    passing: &'a [String],
    /// The file did not collect.
    collection: bool,
    number: u32,
}

/// How a repair round ended.
enum RoundEnd {
    /// The corrected file replaced the proposal.
    Applied,
    /// The answer changed none of the tests.
    Unchanged,
    /// Nothing usable came back (no answer, or no valid file in it).
    Unusable,
}

/// One repair round: asks (or reuses the saved answer), then writes the corrected file and
/// amends the iteration commit. The tests that passed stay as they were, whatever the answer
/// did with them. When nothing is applied, the failing tests are dropped as they are.
async fn repair_round(
    cx: &mut StepCx<'_>,
    worktree: &Path,
    test_file: &str,
    round: Round<'_>,
) -> Result<RoundEnd, StepError> {
    let (n, number) = (cx.it().n, round.number);
    let data = RepairData {
        test_file,
        failures: round.failures,
        count: round.failures.len(),
        collection: round.collection,
        file: std::fs::read_to_string(worktree.join(test_file)).unwrap_or_default(),
        round: number,
        max: cx.settings().max_repairs,
        names: missing_names(cx, worktree, round.failures).await,
    };
    let mut cuts = Vec::new();
    let asked = ask::saved_or_asked(cx, number, |cx| repair_request(cx, &data, &mut cuts)).await?;
    for cut in cuts {
        if !cx.it().prompt_cuts.contains(&cut) {
            cx.it_mut().prompt_cuts.push(cut);
        }
    }
    let response = match asked {
        Answer::Got(r) => r,
        Answer::Failed(e) => {
            tracing::warn!("iteration {n}: repair round {number} got no answer: {e}");
            return Ok(RoundEnd::Unusable);
        }
        Answer::Unavailable => return Ok(RoundEnd::Unusable),
    };
    if tidy_answer(cx, worktree, &response, number).await?.is_err() {
        return Ok(RoundEnd::Unusable);
    }
    match merge_answer(cx, worktree, test_file, &round).await {
        RoundEnd::Applied => {}
        other => return Ok(other),
    }
    let code = std::fs::read_to_string(cx.files().proposal(number)).unwrap_or_default();
    if write_test_file(cx, worktree, test_file, &code).is_err() {
        return Ok(RoundEnd::Unusable);
    }
    let oid = git::amend_head(
        worktree,
        &[test_file.to_string()],
        &format!("improve: proposal of iteration {n}, repair round {number}"),
    )?;
    cx.record_commit(oid)?;
    Ok(RoundEnd::Applied)
}

/// Makes the round's answer file the tests that passed (as they were) plus the answer's
/// others.
async fn merge_answer(
    cx: &mut StepCx<'_>,
    worktree: &Path,
    test_file: &str,
    round: &Round<'_>,
) -> RoundEnd {
    let n = cx.it().n;
    let answer = cx.files().proposal(round.number);
    let ctx = cx.ctx;
    let previous = worktree.join(test_file);
    let merge = ctx.helper.merge(&previous, &answer, round.passing);
    match cx.in_helper(merge).await {
        Ok(merged) if merged.changed == 0 => {
            tracing::info!(
                "iteration {n}: repair round {} changed no test; no more rounds",
                round.number
            );
            cx.it_mut().answers.unchanged_repairs += 1;
            RoundEnd::Unchanged
        }
        Ok(_) => RoundEnd::Applied,
        Err(e) => {
            tracing::info!(
                "iteration {n}: repair round {} cannot be merged: {e}",
                round.number
            );
            RoundEnd::Unusable
        }
    }
}

/// The names the target module defines, when a failure says the tests used one it does not
/// have (an AttributeError, ImportError or NameError): the model invented it.
async fn missing_names(
    cx: &mut StepCx<'_>,
    worktree: &Path,
    failures: &[Failure],
) -> Option<String> {
    const SAYS_MISSING: [&str; 4] = [
        "AttributeError",
        "ImportError",
        "NameError",
        "has no attribute",
    ];
    let missing = failures.iter().any(|f| {
        SAYS_MISSING
            .iter()
            .any(|s| f.message.contains(s) || f.detail.contains(s))
    });
    if !missing {
        return None;
    }
    let module = worktree.join(&cx.it().target);
    let ctx = cx.ctx;
    let api = cx.in_helper(ctx.helper.api(&module)).await.ok()?;
    let names: Vec<&str> = api
        .names
        .iter()
        .map(String::as_str)
        .filter(|n| !n.starts_with('_'))
        .collect();
    (!names.is_empty()).then(|| names.join(", "))
}

/// The conversation so far (first request, its answer, earlier repair prompts and answers)
/// and this round's prompt, in the prompt budget; None when an earlier turn's file is gone.
/// Over the budget, the earlier repair rounds go first (the first request and its answer stay,
/// byte for byte, so a server's prompt cache still serves them), then the failures' output is
/// cut.
fn repair_request(
    cx: &StepCx<'_>,
    data: &RepairData<'_>,
    cuts: &mut Vec<String>,
) -> Result<Option<ChatRequest>, StepError> {
    let budget = ask::prompt_budget(cx) as usize;
    let Some(mut request) = conversation(cx, data.round)? else {
        return Ok(None);
    };
    let round = data.round;
    if ask::request_tokens(&request) + prompt_tokens(cx, data)? > budget && round > 1 {
        request.messages.truncate(2);
        cuts.push(format!(
            "repair round {round}: the earlier repair rounds left out"
        ));
    }
    let room = budget.saturating_sub(ask::request_tokens(&request));
    let mut failures: Vec<Failure> = data.failures.to_vec();
    let mut detail = MAX_DETAIL_CHARS;
    loop {
        let trial = RepairData {
            failures: &failures,
            ..data.clone()
        };
        if detail <= MIN_DETAIL_CHARS || prompt_tokens(cx, &trial)? <= room {
            break;
        }
        detail /= 2;
        for f in &mut failures {
            f.detail = ask::cut_text(&f.detail, detail);
        }
        if detail <= MAX_DETAIL_CHARS / 2 && !cuts.iter().any(|c| c.contains("output cut")) {
            cuts.push(format!(
                "repair round {round}: the failures' output cut short"
            ));
        }
    }
    let shown = RepairData {
        failures: &failures,
        ..data.clone()
    };
    let prompt_text = cx.ctx.templates.render(prompt::REPAIR, &shown)?;
    write_artifact(&cx.files().repair_prompt(round), prompt_text.as_bytes())?;
    request.messages.push(ChatMessage {
        role: Role::User,
        content: prompt_text,
    });
    Ok(Some(request))
}

/// A failure's output is shown up to this many characters, and cut no shorter than the other.
const MAX_DETAIL_CHARS: usize = 8_000;
const MIN_DETAIL_CHARS: usize = 250;

fn prompt_tokens(cx: &StepCx<'_>, data: &RepairData<'_>) -> Result<usize, StepError> {
    Ok(cx.ctx.templates.render(prompt::REPAIR, data)?.len() / ask::CHARS_PER_TOKEN)
}

/// The first request and the turns after it, up to this round's prompt.
fn conversation(cx: &StepCx<'_>, round: u32) -> Result<Option<ChatRequest>, StepError> {
    let files = cx.files();
    let mut request = match read_json::<ChatRequest>(&files.request()) {
        Some(r) => r,
        None => ask::build_request(cx)?,
    };
    request.tag = format!("repair:{}", cx.it().target);
    let answer = |k: u32| read_json::<ChatResponse>(&files.response(k)).map(|r| r.text);
    let mut turns = vec![answer(0)];
    for k in 1..round {
        turns.push(std::fs::read_to_string(files.repair_prompt(k)).ok());
        turns.push(answer(k));
    }
    for (i, turn) in turns.into_iter().enumerate() {
        let Some(content) = turn else {
            return Ok(None);
        };
        let role = if i % 2 == 0 {
            Role::Assistant
        } else {
            Role::User
        };
        request.messages.push(ChatMessage { role, content });
    }
    Ok(Some(request))
}
