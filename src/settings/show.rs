//! `improve status --settings`: every setting as a run in this repository would resolve it now
//! (command line, environment, config file, the unfinished run's saved settings, defaults),
//! and where each value came from. views.rs gathers the layers; this renders the rows.

use std::fmt::Write as _;

use anyhow::Result;
use clap::Args as _;
use serde_json::json;

use super::{Row, RunArgs, Source};

/// The rows as text (one line each: flag, source, value) or as a JSON array.
pub fn render(rows: &[Row], as_json: bool) -> Result<String> {
    Ok(if as_json {
        let rows: Vec<_> = rows.iter().map(json_row).collect();
        serde_json::to_string_pretty(&rows)? + "\n"
    } else {
        text(rows)
    })
}

/// The flag and the environment variable of a setting, as clap knows them.
fn flag_and_env(name: &str) -> (String, Option<String>) {
    let cmd = RunArgs::augment_args(clap::Command::new("improve"));
    let arg = cmd.get_arguments().find(|a| a.get_id() == name);
    let flag = arg
        .and_then(|a| a.get_long())
        .map_or_else(|| name.to_string(), |l| format!("--{l}"));
    let env = arg
        .and_then(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned());
    (flag, env)
}

fn source_text(name: &str, source: &Source) -> String {
    match source {
        Source::Flag => "flag".into(),
        Source::Env => match flag_and_env(name).1 {
            Some(var) => format!("env {var}"),
            None => "env".into(),
        },
        Source::File(file) => format!("file {file}"),
        Source::Saved => "saved run".into(),
        Source::Default => "default".into(),
    }
}

/// One line a setting: its flag, where the value came from, the value (`-`: none).
fn text(rows: &[Row]) -> String {
    let flags: Vec<String> = rows.iter().map(|r| flag_and_env(r.name).0).collect();
    let sources: Vec<String> = rows
        .iter()
        .map(|r| source_text(r.name, &r.source))
        .collect();
    let wf = flags.iter().map(String::len).max().unwrap_or(0);
    let ws = sources.iter().map(String::len).max().unwrap_or(0);
    let mut out = String::new();
    for ((row, flag), source) in rows.iter().zip(&flags).zip(&sources) {
        let value = row.value.as_deref().unwrap_or("-");
        let _ = writeln!(out, "{flag:wf$}  {source:ws$}  {value}");
    }
    out
}

fn json_row(row: &Row) -> serde_json::Value {
    let (flag, env) = flag_and_env(row.name);
    let (source, file) = match &row.source {
        Source::File(f) => ("file", Some(f.clone())),
        Source::Flag => ("flag", None),
        Source::Env => ("env", None),
        Source::Saved => ("saved run", None),
        Source::Default => ("default", None),
    };
    json!({
        "name": row.name,
        "flag": flag,
        "value": row.value,
        "source": source,
        "file": file,
        "env": if source == "env" { env } else { None },
    })
}
