//! Per-setting hooks: each turns one setting's merged [`Layer`] into its value and where it came
//! from, and checks what needs checking. The table in schema/settings.rs names each setting's
//! hook; most settings use [`value`].

use std::path::{Path, PathBuf};

use super::{Cx, Layer, Source, base_rev};
use crate::error::UsageError;
use crate::project;
use crate::schema::Provider;

type Hooked<T> = Result<(T, Source), UsageError>;

/// The highest layer's value, else the default.
pub fn value<T: Clone>(l: &Layer<T>, _: &Cx<'_>) -> Hooked<T> {
    l.pick_or_default()
        .ok_or_else(|| UsageError("a setting without a value or a default".into()))
}

/// [`value`] for a setting that may stay unset.
pub fn optional<T: Clone>(l: &Layer<T>, _: &Cx<'_>) -> Hooked<Option<T>> {
    Ok(match l.pick_or_default() {
        Some((v, source)) => (Some(v), source),
        None => (None, Source::Default),
    })
}

/// A limit of this invocation: saved with the run, but a resume starts afresh.
pub fn this_invocation<T: Clone>(l: &Layer<T>, _: &Cx<'_>) -> Hooked<Option<T>> {
    Ok(match &l.given {
        Some(g) => (Some(g.value.clone()), g.source.clone()),
        None => (None, Source::Default),
    })
}

/// `--max-cost`: a limit of this invocation, more than zero dollars.
pub fn max_cost(l: &Layer<f64>, cx: &Cx<'_>) -> Hooked<Option<f64>> {
    let (cap, source) = this_invocation(l, cx)?;
    if let Some(c) = cap.filter(|c| !(c.is_finite() && *c > 0.0)) {
        return Err(UsageError(format!(
            "--max-cost {c}: a cap must be more than 0 dollars (e.g. --max-cost 5)"
        )));
    }
    Ok((cap, source))
}

/// `--since`: what the run was started with stays its scope; a resume asked for another one is
/// refused rather than mixing two scopes in one run.
pub fn since(l: &Layer<String>, cx: &Cx<'_>) -> Hooked<Option<String>> {
    let resuming = cx.saved_base.is_some();
    match (&l.given, &l.saved) {
        (Some(g), saved) if resuming && saved.as_ref() != Some(&g.value) => {
            Err(UsageError(format!(
                "--since {}: this run was started {}; resume it without --since, or start a new \
             run with --fresh",
                g.value,
                saved
                    .as_ref()
                    .map_or("without --since".into(), |s| format!("with --since {s}"))
            )))
        }
        _ => optional(l, cx),
    }
}

/// `--jobs`: at least one (the file is not range-checked as the flag is).
pub fn jobs(l: &Layer<u32>, cx: &Cx<'_>) -> Hooked<u32> {
    at_least_one(l, cx, "jobs")
}

/// `--iterations`: at least one.
pub fn iterations(l: &Layer<u32>, cx: &Cx<'_>) -> Hooked<u32> {
    at_least_one(l, cx, "iterations")
}

fn at_least_one(l: &Layer<u32>, cx: &Cx<'_>, name: &str) -> Hooked<u32> {
    let (n, source) = value(l, cx)?;
    if n == 0 {
        return Err(UsageError(format!("{name} must be at least 1")));
    }
    Ok((n, source))
}

/// On when any layer turns it on: a resumed sandboxed run stays sandboxed.
pub fn any(l: &Layer<bool>, _: &Cx<'_>) -> Hooked<bool> {
    Ok(match (&l.given, l.saved) {
        (Some(g), _) if g.value => (true, g.source.clone()),
        (_, Some(saved)) => (saved, Source::Saved),
        (Some(g), _) => (false, g.source.clone()),
        (None, _) => (l.default.unwrap_or(false), Source::Default),
    })
}

/// A file named on the command line, saved as an absolute path so that a resume from another
/// folder finds it.
pub fn path(l: &Layer<PathBuf>, _: &Cx<'_>) -> Hooked<Option<PathBuf>> {
    Ok(match l.pick() {
        Some((p, source)) => (Some(absolute(&p)), source),
        None => (None, Source::Default),
    })
}

/// The provider: `--provider`, else replay when `--replay` is given, else the file's, the saved
/// run's, replay when the saved run replays, openai.
pub fn provider_of(cx: &Cx<'_>) -> (Provider, Source) {
    let (l, replay) = (&cx.layers.provider, &cx.layers.replay);
    if let Some(p) = l.typed() {
        let source = l.given.as_ref().map_or(Source::Flag, |g| g.source.clone());
        return (*p, source);
    }
    if let Some(r) = &replay.given {
        return (Provider::Replay, r.source.clone());
    }
    if let Some(picked) = l.pick() {
        return picked;
    }
    match replay.saved {
        Some(_) => (Provider::Replay, Source::Default),
        None => (l.default.unwrap_or_default(), Source::Default),
    }
}

pub fn provider(_: &Layer<Provider>, cx: &Cx<'_>) -> Hooked<Provider> {
    let (provider, source) = provider_of(cx);
    if provider == Provider::Replay {
        match path(&cx.layers.replay, cx)?.0 {
            None => {
                return Err(UsageError(
                    "--provider replay needs --replay FILE (a file written by --record)".into(),
                ));
            }
            Some(path) if !path.is_file() => {
                return Err(UsageError(format!(
                    "--replay {}: no such file",
                    path.display()
                )));
            }
            Some(_) => {}
        }
    }
    Ok((provider, source))
}

/// The URL and the model are saved for their provider only.
fn for_provider(l: &Layer<String>, cx: &Cx<'_>) -> (Provider, Option<(String, Source)>) {
    let provider = provider_of(cx).0;
    let same = cx.layers.provider.saved == Some(provider);
    let saved = l.saved.clone().filter(|_| same);
    let endpoint = Layer { saved, ..l.clone() };
    (provider, endpoint.pick())
}

pub fn llm_url(l: &Layer<String>, cx: &Cx<'_>) -> Hooked<String> {
    let (provider, picked) = for_provider(l, cx);
    let (url, source) = picked.unwrap_or_else(|| (default_url(provider).into(), Source::Default));
    if provider != Provider::Replay && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(UsageError(format!(
            "--llm-url `{url}` must start with http:// or https://"
        )));
    }
    Ok((url, source))
}

pub fn model(l: &Layer<String>, cx: &Cx<'_>) -> Hooked<String> {
    match for_provider(l, cx) {
        (_, Some((m, source))) if !m.trim().is_empty() => Ok((m, source)),
        (Provider::Replay, _) => Ok(("replay".to_string(), Source::Default)),
        _ => Err(UsageError(
            "no model given: pass --model NAME or set IMPROVE_MODEL".into(),
        )),
    }
}

fn default_url(provider: Provider) -> &'static str {
    match provider {
        Provider::OpenAi => "https://api.openai.com/v1",
        Provider::Anthropic => "https://api.anthropic.com",
        Provider::Replay => "replay",
    }
}

pub fn test_cmd(l: &Layer<Vec<String>>, cx: &Cx<'_>) -> Hooked<Vec<String>> {
    Ok(l.pick_or_default()
        .unwrap_or_else(|| (super::default_test_cmd(cx.repo_root), Source::Default)))
}

/// The code under test: as given (checked), else as the resumed run had it, else detected.
pub fn packages(l: &Layer<Vec<String>>, cx: &Cx<'_>) -> Hooked<Vec<String>> {
    match (&l.given, &l.saved) {
        (Some(g), _) => Ok((check_packages(cx.repo_root, &g.value)?, g.source.clone())),
        (None, Some(s)) => Ok((s.clone(), Source::Saved)),
        (None, None) => Ok((
            project::detect_packages(cx.tree).map_err(UsageError)?,
            Source::Default,
        )),
    }
}

/// The folders packages are imported from besides the root, `src` and `lib`: as given
/// (checked; an empty value turns detection off), else as the resumed run had them, else what
/// the packaging metadata declares.
pub fn source_roots(l: &Layer<Vec<String>>, cx: &Cx<'_>) -> Hooked<Vec<String>> {
    match (&l.given, &l.saved) {
        (Some(g), _) => {
            let mut roots: Vec<String> = Vec::new();
            for item in g.value.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
                let root = check_dir(cx.repo_root, item, "--source-root", true)?;
                if !cx.repo_root.join(&root).is_dir() {
                    return Err(UsageError(format!(
                        "--source-root `{item}` is a file: name the folder packages are imported from"
                    )));
                }
                if !roots.contains(&root) {
                    roots.push(root);
                }
            }
            Ok((roots, g.source.clone()))
        }
        (None, Some(s)) => Ok((s.clone(), Source::Saved)),
        (None, None) => Ok((project::source_roots(cx.tree), Source::Default)),
    }
}

/// Where new tests go, when the user said so (checked).
pub fn tests_dir(l: &Layer<String>, cx: &Cx<'_>) -> Hooked<Option<String>> {
    Ok(match (&l.given, &l.saved) {
        (Some(g), _) => (
            Some(check_dir(cx.repo_root, &g.value, "--tests-dir", false)?),
            g.source.clone(),
        ),
        (None, Some(s)) => (Some(s.clone()), Source::Saved),
        (None, None) => (None, Source::Default),
    })
}

/// A blank setup command is none.
pub fn setup_cmd(l: &Layer<String>, cx: &Cx<'_>) -> Hooked<Option<String>> {
    let (cmd, source) = optional(l, cx)?;
    Ok((cmd.filter(|c| !c.trim().is_empty()), source))
}

pub fn focus(l: &Layer<Vec<String>>, cx: &Cx<'_>) -> Hooked<Vec<String>> {
    let (focus, source) = value(l, cx)?;
    let focus: Vec<String> = focus
        .into_iter()
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .collect();
    if focus.is_empty() {
        return Err(UsageError("--focus needs at least one area".into()));
    }
    Ok((focus, source))
}

pub fn prompt_tokens(l: &Layer<u32>, cx: &Cx<'_>) -> Hooked<u32> {
    let (n, source) = value(l, cx)?;
    if n < 1_000 {
        return Err(UsageError(
            "--max-prompt-tokens must be at least 1000: a prompt holds the module and the instructions".into(),
        ));
    }
    Ok((n, source))
}

pub fn answer_tokens(l: &Layer<u32>, cx: &Cx<'_>) -> Hooked<u32> {
    let (n, source) = value(l, cx)?;
    if n < 200 {
        return Err(UsageError(
            "--max-answer-tokens must be at least 200: an answer holds a whole test file".into(),
        ));
    }
    Ok((n, source))
}

pub fn temperature(l: &Layer<f32>, cx: &Cx<'_>) -> Hooked<f32> {
    let (t, source) = value(l, cx)?;
    if !(0.0..=2.0).contains(&t) {
        return Err(UsageError(format!(
            "--temperature {t}: must be between 0 and 2"
        )));
    }
    Ok((t, source))
}

pub fn base(l: &Layer<String>, cx: &Cx<'_>) -> Hooked<String> {
    Ok(base_rev(l, cx.saved_base))
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// A relative folder inside the repo, normalized to forward slashes without a trailing one. A
/// tests folder may not exist yet (the first kept iteration creates it).
fn check_dir(
    repo_root: &Path,
    rel: &str,
    flag: &str,
    must_exist: bool,
) -> Result<String, UsageError> {
    let trimmed = rel.trim().trim_end_matches('/').to_string();
    let p = Path::new(&trimmed);
    if trimmed.is_empty()
        || p.is_absolute()
        || p.components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(UsageError(format!(
            "{flag} `{rel}` must be a folder relative to the repository, without `..`"
        )));
    }
    // A folder that does not exist yet is made by the first kept iteration; a file is no place
    // for tests.
    if !must_exist && repo_root.join(p).is_file() {
        return Err(UsageError(format!(
            "{flag} `{rel}` is a file, not a folder: name the folder new tests go in"
        )));
    }
    if must_exist && !repo_root.join(p).exists() {
        return Err(UsageError(format!(
            "{flag} `{rel}`: no such folder or module in {}",
            repo_root.display()
        )));
    }
    Ok(trimmed)
}

/// `--package a,b`: each a folder or a `.py` module inside the repository.
fn check_packages(repo_root: &Path, list: &[String]) -> Result<Vec<String>, UsageError> {
    let mut out = Vec::new();
    for item in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let path = check_dir(repo_root, item, "--package", true)?;
        let abs = repo_root.join(&path);
        if abs.is_file() && !path.ends_with(".py") {
            return Err(UsageError(format!(
                "--package `{item}` is a file but not a Python module: name a package folder or a .py file"
            )));
        }
        if !out.contains(&path) {
            out.push(path);
        }
    }
    if out.is_empty() {
        return Err(UsageError(
            "--package needs at least one folder or module".into(),
        ));
    }
    Ok(out)
}
