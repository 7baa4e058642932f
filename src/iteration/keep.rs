//! Keeping: at keep time, if the run branch moved since the iteration's suite run, its commit
//! is replayed there and the suite runs again; then the run branch moves to it in one
//! compare-and-swap, with the commit message the review reads. Anything else ends the
//! iteration rejected.

use chrono::Utc;
use git2::Oid;

use super::context::{StepCx, StepError, cleanup, crash_point};
use super::verify::judge;
use crate::artifacts::Label;
use crate::git;
use crate::state::{Kind, Outcome, RejectReason, Rejection, StageId, Step, Verdict};

/// The Verified step: keeps what verification accepted, rejects the rest.
pub async fn keep_or_reject(cx: &mut StepCx<'_>) -> Result<Step, StepError> {
    let Some(mut verdict) = cx.it().verdict.clone() else {
        return Ok(Step::Applied);
    };
    if !verdict.is_kept() {
        let why = verdict
            .rejection()
            .cloned()
            .unwrap_or_else(|| Rejection::new(RejectReason::Unclassified, "rejected"));
        return Ok(cx.finish(Outcome::Rejected, why));
    }
    verdict.coverage_before = cx.state.coverage_now().map(|c| c.percent);
    verdict.diff_coverage_before = cx.state.diff_coverage_now().and_then(|d| d.percent);
    let kept = verdict.new_tests.len() + verdict.fixed.len();
    verdict.funnel.record(StageId::Kept, kept as u32);
    cx.it_mut().verdict = Some(verdict.clone());
    let base = git::oid(&cx.state.base_commit, "the base commit")?;
    let (repo, branch, n) = (&cx.ctx.repo, &cx.state.run_branch, cx.it().n);
    let kept = match git::find_kept_commit(repo, branch, &cx.state.run_id, n, base)? {
        // The ref was moved before a crash cut the state save short: it is already kept.
        Some(oid) => oid,
        None => match move_run_branch(cx, &mut verdict).await? {
            Some(oid) => oid,
            None => return Ok(Step::Finished),
        },
    };
    record_kept(cx, kept, &verdict)
}

/// Moves the run branch to the iteration's commit (replayed onto the tip first, if the tip
/// moved while it was verified). None when the replay rejected it; the iteration is then
/// finished.
async fn move_run_branch(
    cx: &mut StepCx<'_>,
    verdict: &mut Verdict,
) -> Result<Option<Oid>, StepError> {
    let tip = cx.tip()?;
    let (mut commit, parent) = cx.commit_and_parent()?;
    if parent != tip {
        // Another iteration was kept while this one was verified: what passed beside the old
        // tip must pass again beside the new one. The replayed commit is the iteration's from
        // here on.
        match replay(cx, commit, tip, verdict).await? {
            Ok(replayed) => commit = replayed,
            Err(why) => {
                verdict.funnel.record(StageId::Kept, 0);
                verdict.funnel.record(StageId::Clean, 0);
                cx.it_mut().verdict = Some(verdict.clone());
                cx.finish(Outcome::Rejected, why);
                return Ok(None);
            }
        }
        cx.it_mut().verdict = Some(verdict.clone());
    }
    let message = commit_message(cx, verdict);
    let oid = git::keep_on_run_branch(&cx.ctx.repo, &cx.state.run_branch, tip, commit, &message)?;
    crash_point("kept-ref", cx.it().n);
    Ok(Some(oid))
}

/// Replays the iteration's commit onto `tip` in its worktree and runs the whole suite there.
/// Returns the replayed commit, or why it cannot be kept (also in the verdict).
async fn replay(
    cx: &mut StepCx<'_>,
    commit: Oid,
    tip: Oid,
    verdict: &mut Verdict,
) -> Result<Result<Oid, Rejection>, StepError> {
    let tip_text = tip.to_string();
    let short = git::short(&tip_text).to_string();
    verdict.replayed_onto = Some(tip_text);
    let Some(replayed) = git::replay_onto(&cx.ctx.repo, commit, tip)? else {
        let why = judge::conflicts(&short);
        verdict.set_rejection(why.clone());
        return Ok(Err(why));
    };
    let worktree = cx.worktree_at(replayed)?;
    let passing_before = cx.state.passing_at_tip();
    let label = Label::SuiteReplayed;
    let suite = super::verify::run_suite(cx, &worktree, label, &passing_before, verdict).await?;
    // A fix must still fix beside what was kept meanwhile.
    if cx.it().kind == Kind::Fix && verdict.is_kept() {
        verdict.fixed = super::verify::still_fixed(std::mem::take(&mut verdict.fixed), &suite);
        if verdict.fixed.is_empty() {
            verdict.set_rejection(judge::fixed_fail_in_suite());
        }
    }
    if let Some(why) = verdict.rejection() {
        let why = judge::after_replay(&short, why);
        verdict.set_rejection(why.clone());
        return Ok(Err(why));
    }
    cx.record_commit(replayed)?;
    Ok(Ok(replayed))
}

/// The iteration is kept as `kept`: its files, counts and place in the keep order.
fn record_kept(cx: &mut StepCx<'_>, kept: Oid, verdict: &Verdict) -> Result<Step, StepError> {
    let files = git::commit_changes(&cx.ctx.repo, kept)?
        .into_iter()
        .map(|(path, _)| path)
        .collect();
    let seq = cx.state.next_keep_seq();
    let it = cx.it_mut();
    it.keep_seq = Some(seq);
    it.commit = Some(kept.to_string());
    it.files = files;
    it.tests_added = verdict.new_tests.len() as u32;
    it.tests_fixed = verdict.fixed.len() as u32;
    it.outcome = Some(Outcome::Kept);
    it.reason = None;
    it.reject = None;
    it.finished_at = Some(Utc::now());
    cleanup(cx.ctx, &cx.state.run_id, cx.it().n);
    Ok(Step::Finished)
}

fn commit_message(cx: &StepCx<'_>, verdict: &Verdict) -> String {
    let (state, it) = (&cx.state, cx.it());
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
    // In a `--since` run: the change's diff coverage.
    let diff = match (
        state.diff_coverage_now(),
        verdict.coverage.as_ref().and_then(|c| c.diff.as_ref()),
    ) {
        (Some(before), Some(after)) => format!(
            "\nDiff coverage: {} -> {} (since {})",
            crate::change::shown(before.percent),
            crate::change::shown(after.percent),
            state.change.as_ref().map_or("", |c| c.since.as_str())
        ),
        _ => String::new(),
    };
    let dropped: String = [
        (verdict.funnel.dropped(StageId::Passing).len(), "failing"),
        (verdict.funnel.dropped(StageId::Stable).len(), "flaky"),
    ]
    .iter()
    .filter(|(k, _)| *k > 0)
    .map(|(k, what)| format!("; {k} {what} tests dropped"))
    .collect();
    // Values a kept test asserts because the code gave them, not because the model expected
    // them (`test_a line 7: ...`, `TestK::test_b line 9: ...`).
    let kept = |value: &&String| {
        let test = value.split(" line ").next().unwrap_or_default();
        let id_end = format!("::{test}");
        (verdict.new_tests.iter())
            .any(|id| id.split('[').next().is_some_and(|f| f.ends_with(&id_end)))
    };
    let values: Vec<String> = (it.values_from_code.iter().filter(kept))
        .map(|v| format!("- {v}"))
        .collect();
    let values = match values.is_empty() {
        true => String::new(),
        false => format!(
            "\n\nExpected values taken from the code (check that each is what it should do):\n{}",
            values.join("\n")
        ),
    };
    format!(
        "improve #{n}: {subject}\n\n\
         Target: {target}\n\
         Focus: {focus}\n\
         Kind: {kind}\n\
         Tests added: {added} ({file}){dropped}\n\
         Tests fixed: {fixed}\n\
         Pytest: {summary}\n\
         Coverage: {coverage}{diff}{values}\n\n\
         Improve-Run: {run}\n\
         Improve-Iteration: {n}\n",
        n = it.n,
        target = it.target,
        focus = it.focus,
        summary = verdict.pytest_summary,
        run = state.run_id,
    )
}
