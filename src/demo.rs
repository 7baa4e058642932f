//! `improve demo`: the whole loop, offline, on the bundled `examples/demo` package with its
//! recorded LLM answers. The project is written to a new folder (kept afterwards, so the user
//! can review it with the same commands as a real run).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use include_dir::{Dir, include_dir};

use crate::cli::{DemoArgs, GlobalArgs, RunArgs};
use crate::error::{RunEnd, UsageError};
use crate::git;
use crate::progress::Printer;
use crate::run;

static DEMO: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/examples/demo");
const RECORDING: &str = "recording.json";

/// The Python to run pytest with when none is given: an active venv, then `./.venv` (where the
/// README's set-up puts one), then `python3`.
fn demo_test_cmd() -> String {
    let candidates = [
        std::env::var_os("VIRTUAL_ENV").map(|v| PathBuf::from(v).join("bin/python")),
        std::env::current_dir()
            .ok()
            .map(|d| d.join(".venv/bin/python")),
    ];
    let python = candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "python3".into());
    shell_words::join([python.as_str(), "-m", "pytest"])
}

fn write_tree(dir: &Dir<'_>, to: &Path) -> Result<()> {
    for file in dir.files() {
        if file.path() == Path::new(RECORDING) {
            continue;
        }
        let dest = to.join(file.path());
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("create {}", parent.display()))?;
        }
        std::fs::write(&dest, file.contents())
            .with_context(|| format!("write {}", dest.display()))?;
    }
    for sub in dir.dirs() {
        write_tree(sub, to)?;
    }
    Ok(())
}

fn init_repo(root: &Path) -> Result<()> {
    let mut opts = git2::RepositoryInitOptions::new();
    opts.initial_head("main");
    let repo = git2::Repository::init_opts(root, &opts)
        .with_context(|| format!("git init {}", root.display()))?;
    let mut index = repo.index()?;
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None)?;
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;
    let sig = git::signature(&repo)?;
    repo.commit(
        Some("HEAD"),
        &sig,
        &sig,
        "inventory demo: initial import",
        &tree,
        &[],
    )?;
    Ok(())
}

/// The price the demo's recorded calls are costed at: gpt-4o-mini's in the built-in table
/// (dollars per million tokens in, out, cached in).
const DEMO_PRICE: crate::schema::Price = crate::schema::Price {
    input: 0.15,
    output: 0.60,
    cached_input: Some(0.075),
    cache_write: None,
};

pub async fn run(global: &GlobalArgs, args: &DemoArgs, printer: Printer) -> Result<RunEnd> {
    let root = match &global.repo {
        Some(p) => {
            if p.exists()
                && std::fs::read_dir(p)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(true)
            {
                return Err(UsageError(format!(
                    "--repo {} is not empty: the demo creates its project in a new or empty folder",
                    p.display()
                ))
                .into());
            }
            std::fs::create_dir_all(p).with_context(|| format!("create {}", p.display()))?;
            p.canonicalize()?
        }
        None => tempfile::Builder::new()
            .prefix("improve-demo-")
            .tempdir()
            .context("create a folder for the demo")?
            .keep(),
    };
    write_tree(&DEMO, &root)?;
    init_repo(&root)?;
    let state_dir = global
        .state_dir
        .clone()
        .unwrap_or_else(|| root.join(".improve"));
    std::fs::create_dir_all(&state_dir)?;
    let recording = crate::artifacts::demo_recording(&state_dir);
    let recorded = DEMO
        .get_file(RECORDING)
        .context("the demo's recording is missing from this build")?;
    std::fs::write(&recording, recorded.contents())?;
    printer.line(&format!(
        "demo project: {} (a git repository with an inventory package)",
        root.display()
    ));

    let run_global = GlobalArgs {
        repo: Some(root.clone()),
        state_dir: Some(state_dir),
        ..global.clone()
    };
    let run_args = RunArgs {
        iterations: Some(args.iterations),
        replay: Some(recording),
        // The recording's model is a stand-in: its calls are costed at a declared price
        // (gpt-4o-mini's list price), so the report shows what such a run would cost.
        price: Some(DEMO_PRICE),
        test_cmd: Some(crate::config::parse_test_cmd(
            &args.test_cmd.clone().unwrap_or_else(demo_test_cmd),
        )?),
        ..RunArgs::default()
    };
    let end = run::run(&run_global, &run_args, printer).await?;
    eprintln!(
        "try: improve log --repo {0}   improve show 1 --repo {0}   improve status --repo {0}",
        root.display()
    );
    Ok(end)
}
