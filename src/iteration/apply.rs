//! An answer becomes a test file: parsed (the code block), tidied by Python's own parser,
//! written into the worktree and committed. The first answer gets a file of its own (a fix
//! rewrites its test file); a repair answer replaces the file and amends the commit.

use std::collections::BTreeMap;
use std::path::Path;

use super::context::{StepCx, StepError};
use crate::fsutil::{read_json, write_artifact};
use crate::git;
use crate::llm::ChatResponse;
use crate::project::import_name;
use crate::proposal::{self, Proposal, ProposalError};
use crate::pyhelper::{FixContext, LocalFixes};
use crate::state::{Iteration, Kind, Outcome, RejectReason, Rejection, Step};
use crate::target;

/// An answer's test file, tidied.
pub struct Tidied {
    pub code: String,
    /// Test functions in it, by the parser's count.
    pub tests: u32,
    /// Where the answer said the file goes.
    pub path_hint: Option<String>,
}

/// The Asked step: the first answer's file, committed on the iteration's branch.
pub async fn apply(cx: &mut StepCx<'_>) -> Result<Step, StepError> {
    let Some(response) = read_json::<ChatResponse>(&cx.files().response(0)) else {
        // The artifact vanished (removed by hand): ask again rather than guess.
        return Ok(Step::Planned);
    };
    let tip = cx.tip()?;
    let worktree = cx.worktree_at(tip)?;
    let tidied = match tidy_answer(cx, &worktree, &response, 0).await? {
        Ok(t) => t,
        Err(why) => {
            return Ok(cx.finish(Outcome::Rejected, why));
        }
    };
    let rel = match test_path(cx, &worktree, tip, tidied.path_hint.as_deref())? {
        Ok(rel) => rel,
        Err(why) => {
            return Ok(cx.finish(Outcome::Rejected, why));
        }
    };
    if let Err(why) = write_test_file(cx, &worktree, &rel, &tidied.code) {
        return Ok(cx.finish(Outcome::Rejected, why));
    }
    let message = format!(
        "improve: proposal of iteration {} for {}",
        cx.it().n,
        cx.it().target
    );
    let oid = git::commit_files(&worktree, std::slice::from_ref(&rel), &message)?;
    cx.record_commit(oid)?;
    let it = cx.it_mut();
    it.proposed = tidied.tests;
    it.test_file = Some(rel);
    Ok(Step::Applied)
}

/// The test file of answer `round`, parsed, tidied (non-test `Test*` classes marked) and fixed
/// locally (see [`local_fixes`]); saved as the round's proposal artifact. Err says why the
/// answer holds no usable file. `worktree` holds the package at the run branch's tip.
pub async fn tidy_answer(
    cx: &mut StepCx<'_>,
    worktree: &Path,
    response: &ChatResponse,
    round: u32,
) -> Result<Result<Tidied, Rejection>, StepError> {
    let parsed = match proposal::parse(&response.text) {
        Err(ProposalError::Unclosed(partial)) => salvage(cx, partial, round).await?,
        other => other,
    };
    let proposal = match parsed {
        Ok(p) => p,
        Err(e) => {
            let cut_off = if response.truncated() {
                " (the answer hit the token limit)"
            } else {
                ""
            };
            return Ok(Err(Rejection::new(
                parse_reason(&e),
                format!("{e}{cut_off}"),
            )));
        }
    };
    let file = cx.files().proposal(round);
    write_artifact(&file, proposal.code.as_bytes())?;
    let ctx = cx.ctx;
    let mut tests = match cx.in_helper(ctx.helper.tidy(&file)).await {
        Ok(tidy) if tidy.tests == 0 && !tidy.dropped.is_empty() => {
            return Ok(Err(Rejection::new(
                RejectReason::InvalidPython,
                format!("invalid Python: every test is: {}", tidy.dropped.join(", ")),
            )));
        }
        Ok(tidy) => {
            let fixes = tidy
                .dropped
                .iter()
                .map(|t| format!("dropped {t}: invalid Python"));
            note_fixes(cx.it_mut(), round, fixes);
            tidy.tests
        }
        Err(msg) => {
            return Ok(Err(Rejection::new(
                RejectReason::InvalidPython,
                format!("invalid Python: {msg}"),
            )));
        }
    };
    if let Some(fixed) = local_fixes(cx, worktree, &file, round).await? {
        if fixed.tests == 0 {
            return Ok(Err(Rejection::new(
                RejectReason::NoTestFunction,
                "every test of the answer is a copy of an example test",
            )));
        }
        tests = fixed.tests;
    }
    Ok(Ok(Tidied {
        code: std::fs::read_to_string(&file).unwrap_or(proposal.code),
        tests,
        path_hint: proposal.path_hint,
    }))
}

/// Fixes in the answer file what needs no model, before pytest runs it (so no repair round
/// is spent on it): missing imports, imports of the package under a wrong path, copies of
/// the example tests the prompt showed. What was done is recorded in the iteration; an
/// answer whose imports were fixed while a repair round was left counts as a repair avoided.
/// None when nothing was done (or the helper failed: the file stays as it was).
async fn local_fixes(
    cx: &mut StepCx<'_>,
    worktree: &Path,
    file: &Path,
    round: u32,
) -> Result<Option<LocalFixes>, StepError> {
    let tip = cx.tip()?;
    let (repo, state, it) = (&cx.ctx.repo, &cx.state, cx.it());
    let roots = &state.settings.source_roots;
    let modules: BTreeMap<String, String> = target::modules_at(repo, tip, state)?
        .into_iter()
        .map(|m| {
            (
                import_name(&m, roots),
                worktree.join(&m).display().to_string(),
            )
        })
        .collect();
    let target = (it.kind == Kind::Add).then(|| import_name(&it.target, roots));
    let examples: BTreeMap<String, String> = match &target {
        Some(name) => target::tests_importing(&target::test_files_at(repo, tip, state)?, name, 2)
            .into_iter()
            .map(|(path, _)| (worktree.join(&path).display().to_string(), path))
            .collect(),
        None => BTreeMap::new(),
    };
    let project = FixContext {
        modules: &modules,
        target: target.as_deref(),
        examples: &examples,
    };
    let ctx = cx.ctx;
    let fixed = match cx.in_helper(ctx.helper.fix(file, &project)).await {
        Ok(f) if !f.fixes.is_empty() => f,
        Ok(_) => return Ok(None),
        Err(e) => {
            tracing::info!("iteration {}: no local fixes: {e}", cx.it().n);
            return Ok(None);
        }
    };
    let max_repairs = cx.settings().max_repairs;
    let it = cx.it_mut();
    note_fixes(it, round, fixed.fixes.iter().cloned());
    if fixed.imports > 0 && round < max_repairs {
        it.answers.repairs_avoided += 1;
    }
    Ok(Some(fixed))
}

/// Records in the iteration what was put right without a model in answer `round`, once each.
fn note_fixes(it: &mut Iteration, round: u32, fixes: impl Iterator<Item = String>) {
    for fix in fixes {
        let line = match round {
            0 => fix,
            k => format!("repair {k}: {fix}"),
        };
        if !it.local_fixes.contains(&line) {
            it.local_fixes.push(line);
        }
    }
}

/// What a cut-off answer (its code block never closed) got right: its complete tests, after
/// cutting a block the model repeated. The unclosed block stays the error when no test is left.
async fn salvage(
    cx: &mut StepCx<'_>,
    partial: Proposal,
    round: u32,
) -> Result<Result<Proposal, ProposalError>, StepError> {
    let file = cx.files().proposal(round);
    write_artifact(&file, partial.code.as_bytes())?;
    let ctx = cx.ctx;
    let salvaged = match cx.in_helper(ctx.helper.salvage(&file)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::info!("a cut-off answer could not be salvaged: {e}");
            return Ok(Err(ProposalError::Unclosed(partial)));
        }
    };
    let notes = &mut cx.it_mut().answers;
    if salvaged.repeated_lines > 0 {
        notes.repeating += 1;
    }
    if salvaged.tests == 0 {
        return Ok(Err(ProposalError::Unclosed(partial)));
    }
    notes.salvaged += 1;
    notes.salvaged_tests += salvaged.tests;
    Ok(Ok(Proposal {
        code: std::fs::read_to_string(&file).unwrap_or_default(),
        path_hint: partial.path_hint,
    }))
}

fn parse_reason(e: &ProposalError) -> RejectReason {
    match e {
        ProposalError::NoCode => RejectReason::NoCodeBlock,
        ProposalError::Unclosed(_) => RejectReason::UnclosedCodeBlock,
        ProposalError::NoTests => RejectReason::NoTestFunction,
    }
}

/// Where the first answer's tests go: a fix rewrites the failing test file itself; new tests
/// get a file of their own, where pytest's configuration collects them.
fn test_path(
    cx: &StepCx<'_>,
    worktree: &Path,
    tip: git2::Oid,
    hint: Option<&str>,
) -> Result<Result<String, Rejection>, StepError> {
    let it = cx.it();
    if it.kind == Kind::Fix {
        return Ok(Ok(it.target.clone()));
    }
    let stem = Path::new(&it.target)
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "module".into());
    let test_files = target::test_files_at(&cx.ctx.repo, tip, &cx.state)?;
    let layout = cx
        .state
        .baseline
        .as_ref()
        .map(|b| b.layout.clone())
        .unwrap_or_default();
    let chosen = proposal::choose_test_path_for(
        worktree,
        &target::tests_dir_for(&it.target, &cx.state, &test_files),
        hint,
        &stem,
        it.n,
        &layout,
    );
    Ok(chosen.map_err(|e| Rejection::new(RejectReason::UnsafePath, e.to_string())))
}

/// Writes `code` to `rel` in the worktree. The path is approved, but the file system may still
/// refuse it (a name it cannot hold): that costs this answer, not the run.
pub fn write_test_file(
    cx: &StepCx<'_>,
    worktree: &Path,
    rel: &str,
    code: &str,
) -> Result<(), Rejection> {
    let abs = worktree.join(rel);
    let written = abs
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&abs, code));
    cx.ctx.forget_bytecode(&abs);
    written.map_err(|e| {
        Rejection::new(
            RejectReason::CannotWrite,
            format!("cannot write {rel}: {e}"),
        )
    })
}
