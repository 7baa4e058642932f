//! Reads `[tool.improve]` in pyproject.toml, or improve.toml, into the config-file layer
//! ([`FileConfig`], generated from the settings table with the other layers in mod.rs).

use std::path::Path;

use super::FileConfig;
use crate::error::UsageError;

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
pub(super) mod de {
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

    /// `price = "3,15,0.3"` or `price = [3, 15, 0.3]`.
    pub fn price<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<crate::schema::Price>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Spelt {
            Text(String),
            Numbers(Vec<f64>),
        }
        let text = match Spelt::deserialize(d)? {
            Spelt::Text(t) => t,
            Spelt::Numbers(n) => n.iter().map(f64::to_string).collect::<Vec<_>>().join(","),
        };
        crate::cost::parse_price(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }

    pub fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
        Ok(Some(OneOrMany::deserialize(d)?.items()))
    }
}
