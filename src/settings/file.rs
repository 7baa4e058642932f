//! `[tool.improve]` in pyproject.toml, or improve.toml: the config-file layer, generated from
//! the settings table. Keys are the flag names (kebab-case; the snake_case spellings are read
//! too). Unknown keys are an error: a typo in a setting that silently does nothing would cost a
//! night.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::UsageError;
use crate::schema::{Provider, run_settings};

macro_rules! file_config {
    (
        saved { $(
            $(#[doc = $doc:literal])*
            $name:ident: $ty:ty => $fty:ty {
                arg: [$($arg:tt)*],
                file: [$($file:tt)*],
                saved: [$($saved:tt)*],
                default: $default:expr,
                hook: $hook:ident,
            }
        )* }
        invocation { $(
            $(#[doc = $idoc:literal])*
            $iname:ident: $ity:ty => $ifty:ty {
                arg: [$($iarg:tt)*],
                file: [$($ifile:tt)*],
                default: $idefault:expr,
                hook: $ihook:ident,
            }
        )* }
    ) => {
        /// The settings a config file may hold; every one optional.
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        pub struct FileConfig {
            $(
                #[serde(default, $($file)*)]
                pub $name: Option<$ty>,
            )*
            $(
                #[serde(default, $($ifile)*)]
                pub $iname: Option<$ity>,
            )*
        }
    };
}

run_settings!(file_config);

/// A config file's settings and the file they came from (None: no file).
#[derive(Debug, Default)]
pub struct LoadedFile {
    pub config: FileConfig,
    /// `improve.toml`, or `pyproject.toml [tool.improve]`.
    pub name: Option<String>,
}

/// Reads `improve.toml` (whole file) or else `[tool.improve]` of `pyproject.toml`.
pub fn load_file_config(repo_root: &Path) -> Result<LoadedFile, UsageError> {
    let improve_toml = repo_root.join("improve.toml");
    if improve_toml.is_file() {
        let text = read(&improve_toml)?;
        let config = toml::from_str(&text).map_err(|e| {
            UsageError(format!(
                "{} is not valid: {}",
                improve_toml.display(),
                one_line(&e.to_string())
            ))
        })?;
        return Ok(loaded(config, "improve.toml"));
    }
    let pyproject = repo_root.join("pyproject.toml");
    if !pyproject.is_file() {
        return Ok(LoadedFile::default());
    }
    let text = read(&pyproject)?;
    let value: toml::Table = match toml::from_str(&text) {
        Ok(v) => v,
        // A pyproject.toml we cannot parse is the project's business, not a reason to refuse.
        Err(e) => {
            tracing::warn!(
                "ignoring {}: {}",
                pyproject.display(),
                one_line(&e.to_string())
            );
            return Ok(LoadedFile::default());
        }
    };
    let Some(section) = value.get("tool").and_then(|t| t.get("improve")).cloned() else {
        return Ok(LoadedFile::default());
    };
    let config = section.try_into().map_err(|e: toml::de::Error| {
        UsageError(format!(
            "[tool.improve] in {} is not valid: {}",
            pyproject.display(),
            one_line(&e.to_string())
        ))
    })?;
    Ok(loaded(config, "pyproject.toml [tool.improve]"))
}

fn loaded(config: FileConfig, name: &str) -> LoadedFile {
    LoadedFile {
        config,
        name: Some(name.to_string()),
    }
}

fn read(path: &Path) -> Result<String, UsageError> {
    std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// How the file spells values whose type is not TOML's own.
mod de {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    use crate::schema::OneOrMany;

    pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        super::super::parse_duration(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }

    pub fn words<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
        let text = String::deserialize(d)?;
        super::super::parse_words(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }

    pub fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
        Ok(Some(OneOrMany::deserialize(d)?.items()))
    }
}
