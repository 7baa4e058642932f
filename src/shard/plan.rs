//! `improve plan`: the baseline measured once, the modules split into shards balanced by what
//! is left to cover, and the plan file the workers and gather read.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::Utc;

use crate::cli::GlobalArgs;
use crate::config;
use crate::error::{UsageError, UserError};
use crate::git;
use crate::progress::Printer;
use crate::run::setup::{new_run, open, run_context, tools};
use crate::settings::{self, CommandLine};
use crate::state::{PLAN_FORMAT, Plan, PlannedShard, RunState};
use crate::target;
use crate::testid::TestId;

/// What `improve plan` was asked.
pub struct PlanRequest {
    pub shards: u32,
    pub out: PathBuf,
    /// Also print the shard indices as a JSON array on standard output.
    pub matrix: bool,
}

pub async fn plan(
    global: &GlobalArgs,
    request: &PlanRequest,
    line: CommandLine<'_>,
    printer: Printer,
) -> Result<()> {
    let opened = open(global, &printer)?;
    let file = config::load_file_config(&opened.root)?;
    let (resolved, tree) =
        settings::resolve_in_repo(&opened.repo, &opened.root, &[line], &file, None)?;
    let tools = tools(&opened, &resolved.settings, &tree, &printer).await?;
    let planned_in = opened.root.display().to_string();
    if resolved.settings.since.is_some() {
        return Err(UsageError(
            "--since is not supported by `improve plan` yet: run `improve --since REV` on one machine".into(),
        )
        .into());
    }
    let mut state = new_run(&opened.repo, &resolved)?;
    let (ctx, _locks) = run_context(opened, &state, tools, &printer)?;
    let measured = crate::baseline::measure_baseline(&ctx, &mut state, &printer).await;
    ctx.worktrees.remove_all(&ctx.repo);
    measured.map_err(crate::run::step_failure)?;
    let shards = split(&ctx.repo, &state, request.shards)?;
    let plan = Plan {
        format: PLAN_FORMAT,
        improve_version: env!("CARGO_PKG_VERSION").into(),
        run_id: state.run_id.clone(),
        base_commit: state.base_commit.clone(),
        created_at: Utc::now(),
        planned_in,
        iterations: state.iterations_target,
        settings: state.settings.clone(),
        baseline: state.baseline.clone().unwrap_or_default(),
        shards,
    };
    let json = serde_json::to_string_pretty(&plan)?;
    crate::fsutil::write_atomic(&request.out, json.as_bytes())
        .with_context(|| format!("write the plan to {}", request.out.display()))?;
    printer.line(&format!(
        "plan {} for {} shards, {} iterations, from {}: written to {}",
        plan.run_id,
        plan.shards.len(),
        plan.iterations,
        git::short(&plan.base_commit),
        request.out.display()
    ));
    for s in &plan.shards {
        printer.line(&format!(
            "  shard {}: {} modules, {} uncovered statements, {} red test files, {} iterations",
            s.index,
            s.modules.len(),
            s.uncovered,
            s.fix_files.len(),
            s.iterations
        ));
    }
    if request.matrix {
        let indices: Vec<u32> = plan.shards.iter().map(|s| s.index).collect();
        println!("{}", serde_json::to_string(&indices)?);
    }
    Ok(())
}

/// The modules of the base commit split into `count` shards: the largest share of what is left
/// to cover goes first, each to the shard with the least so far (so no shard is the slow one
/// everybody waits for); the red test files go round the shards; the iterations are shared out
/// evenly.
fn split(repo: &git2::Repository, state: &RunState, count: u32) -> Result<Vec<PlannedShard>> {
    let base = git::oid(&state.base_commit, "the base commit")?;
    let modules = target::modules_at(repo, base, state)?;
    if count == 0 || count as usize > modules.len() {
        return Err(UsageError(format!(
            "--shards {count}: the project has {} modules to write tests for, so plan between 1 \
             and {} shards",
            modules.len(),
            modules.len()
        ))
        .into());
    }
    if state.iterations_target < count {
        return Err(UsageError(format!(
            "--iterations {} is fewer than --shards {count}: every shard needs one iteration at \
             least",
            state.iterations_target
        ))
        .into());
    }
    let baseline = state
        .baseline
        .as_ref()
        .ok_or_else(|| UserError("the baseline was not measured".into()))?;
    let uncovered = |m: &str| -> u64 {
        match baseline.coverage.as_ref().filter(|c| !c.missing.is_empty()) {
            Some(c) => u64::from(c.missing.get(m).copied().unwrap_or(0)),
            // Nothing measured: every module weighs the same.
            None => 1,
        }
    };
    let mut shards: Vec<PlannedShard> = (0..count)
        .map(|index| PlannedShard {
            index,
            modules: Vec::new(),
            fix_files: Vec::new(),
            iterations: 0,
            uncovered: 0,
        })
        .collect();
    let mut weighed: Vec<(u64, &String)> = modules.iter().map(|m| (uncovered(m), m)).collect();
    weighed.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    for (weight, module) in weighed {
        let Some(lightest) = shards
            .iter_mut()
            .min_by_key(|s| (s.uncovered, s.modules.len(), s.index))
        else {
            continue;
        };
        lightest.uncovered += weight;
        lightest.modules.push(module.clone());
    }
    for (i, file) in red_test_files(repo, base, state)?.into_iter().enumerate() {
        shards[i % count as usize].fix_files.push(file);
    }
    let (each, rest) = (
        state.iterations_target / count,
        state.iterations_target % count,
    );
    for s in &mut shards {
        s.iterations = each + u32::from(s.index < rest);
        s.modules.sort();
    }
    Ok(shards)
}

/// The test files with tests that failed at the base commit.
fn red_test_files(
    repo: &git2::Repository,
    base: git2::Oid,
    state: &RunState,
) -> Result<Vec<String>> {
    let Some(baseline) = &state.baseline else {
        return Ok(Vec::new());
    };
    let files: Vec<String> = target::test_files_at(repo, base, state)?
        .into_iter()
        .map(|(path, _)| path)
        .collect();
    let mut red: Vec<String> = baseline
        .failed
        .iter()
        .filter_map(|id| TestId::new(id).file_among(&files))
        .filter(|f| !baseline.unfixable.iter().any(|u| &u.file == f))
        .collect();
    red.sort();
    red.dedup();
    Ok(red)
}
