//! One iteration as a durable state machine: Plan → Ask → Apply → Verify → Keep | Reject. Each
//! arrow ends in an atomic save of the state, so a resume continues after the last durable step;
//! the LLM answer is an artifact on disk before the state says `asked`, so it is never paid for
//! twice. Git effects stay in the iteration's worktree and branch until Keep, which is one
//! compare-and-swap update of the run branch.
//!
//! - [`context`]: the run's context, a step's copy of the state, the errors that stop a step;
//! - [`ask`]: prompts, requests, and the one "saved answer, else ask, then save";
//! - [`apply`]: an answer's test file parsed, tidied, written and committed;
//! - [`verify`]: the add and fix pipelines as named stages (catch-up with the run branch
//!   among them), their rules in `verify::judge`;
//! - [`keep`]: replay at keep time, and the keep or reject itself.

mod apply;
mod ask;
mod context;
mod keep;
mod verify;

use std::cell::RefCell;
use std::time::Instant;

use chrono::Utc;

pub use context::{RunContext, StepError, crash_point};
pub use verify::SUITE_FLAG;

use crate::state::{RunState, Step, StepTime};
use ask::AskEnd;
use context::StepCx;

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
            let it = &state.iterations[context::index(&state, n)?];
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
        let mut cx = StepCx::new(ctx, run, n)?;
        cx.it_mut().seconds.queued += queued.elapsed().as_secs_f64();
        // Each step says which comes next; only here is it assigned.
        let (done, asked) = match step {
            Step::Planned => {
                let end = ask::ask(&mut cx).await?;
                (end.next(), Some(end))
            }
            Step::Asked => (apply::apply(&mut cx).await?, None),
            Step::Applied => (verify::verify(&mut cx).await?, None),
            Step::Verified => (keep::keep_or_reject(&mut cx).await?, None),
            Step::Finished => return Ok(()),
        };
        cx.it_mut().step = done;
        cx.it_mut().seconds.total += clock.lap();
        cx.it_mut().timeline.push(StepTime {
            step: done,
            at: Utc::now(),
        });
        write_back(ctx, run, cx, asked)?;
        crash_point(done.as_str(), n);
    }
}

/// Puts the step's iteration into the shared run and saves it. The circuit breaker counts asks
/// in the order they end, whichever iteration they belong to: a failure adds one, an answer
/// resets it.
fn write_back(
    ctx: &RunContext,
    run: &RefCell<RunState>,
    cx: StepCx<'_>,
    asked: Option<AskEnd>,
) -> Result<(), StepError> {
    let it = cx.into_iteration();
    let mut shared = run.borrow_mut();
    let at = context::index(&shared, it.n)?;
    match asked {
        Some(AskEnd::Answered) => shared.consecutive_llm_failures = 0,
        Some(AskEnd::Failed) => shared.consecutive_llm_failures += 1,
        // A prompt too long for the model says nothing about whether the LLM is up.
        Some(AskEnd::Refused) | None => {}
    }
    shared.iterations[at] = it;
    ctx.save(&mut shared)?;
    Ok(())
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
