//! One long-lived Python process (`python/helper.py`, run with the project's interpreter) that
//! checks, tidies and prunes proposed test files with Python's own parser. A process per
//! request would cost an interpreter start each time, more than improve's own work in an
//! iteration; this one starts on first use and again if it ever dies.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// No request takes long (a parse of one file); past this the helper is taken for hung.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub struct PyHelper {
    python: String,
    scratch: PathBuf,
    running: tokio::sync::Mutex<Option<Running>>,
}

struct Running {
    // Held so that the process is killed with the helper (kill_on_drop).
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl PyHelper {
    pub fn new(python: &str, scratch: &Path) -> PyHelper {
        PyHelper {
            python: python.to_string(),
            scratch: scratch.to_path_buf(),
            running: tokio::sync::Mutex::new(None),
        }
    }

    fn start(&self) -> Result<Running, String> {
        let stderr = std::fs::File::create(crate::artifacts::scratch::helper_stderr(&self.scratch))
            .map_err(|e| format!("cannot write to {}: {e}", self.scratch.display()))?;
        let mut child = Command::new(&self.python)
            .arg("-c")
            // mutants.py first: it defines what helper.py's `mutants` op calls.
            .arg(concat!(
                include_str!("../python/mutants.py"),
                include_str!("../python/helper.py")
            ))
            .current_dir(&self.scratch)
            .env_clear()
            .envs(crate::process::test_environment(&[]))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.python))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("the Python helper has no pipes".into());
        };
        Ok(Running {
            _child: child,
            stdin,
            stdout: BufReader::new(stdout),
        })
    }

    /// One request, one answer. A helper that fails to answer is dropped (and killed) and the
    /// next request starts a new one.
    async fn call(&self, request: Value) -> Result<Value, String> {
        let mut slot = self.running.lock().await;
        if slot.is_none() {
            *slot = Some(self.start()?);
        }
        let Some(running) = slot.as_mut() else {
            return Err("the Python helper did not start".into());
        };
        let exchange = async {
            let mut line = request.to_string();
            line.push('\n');
            running.stdin.write_all(line.as_bytes()).await?;
            running.stdin.flush().await?;
            let mut answer = String::new();
            running.stdout.read_line(&mut answer).await?;
            Ok::<String, std::io::Error>(answer)
        };
        let answer = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(Ok(answer)) if !answer.is_empty() => answer,
            outcome => {
                *slot = None;
                let why = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    Ok(Ok(_)) => "it exited".into(),
                    Err(_) => "no answer within a minute".into(),
                };
                return Err(format!(
                    "the Python helper failed ({why}; see {})",
                    crate::artifacts::scratch::helper_stderr(&self.scratch).display()
                ));
            }
        };
        let value: Value = serde_json::from_str(&answer)
            .map_err(|e| format!("the Python helper answered {answer:?}: {e}"))?;
        if value["ok"] == Value::Bool(true) {
            Ok(value)
        } else {
            Err(value["error"].as_str().unwrap_or("failed").to_string())
        }
    }

    /// Checks `file` is valid Python and marks `Test*` classes that are not tests with
    /// `__test__ = False`. `Ok` carries the classes marked and the test functions the file
    /// defines; `Err` the syntax error as Python reports it (`line 3: invalid syntax`).
    pub async fn tidy(&self, file: &Path) -> Result<(u32, u32), String> {
        let v = self
            .call(json!({"op": "tidy", "file": file.display().to_string()}))
            .await?;
        let count = |k: &str| {
            v[k].as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0)
        };
        Ok((count("marked"), count("tests")))
    }

    /// Removes the test functions `names` (`test_a`, `TestK::test_b`) from `file`; returns how
    /// many went. The file is left as it was when the result would not parse.
    pub async fn prune(&self, file: &Path, names: &[String]) -> Result<u32, String> {
        let v = self
            .call(json!({"op": "prune", "file": file.display().to_string(), "names": names}))
            .await?;
        Ok(v["removed"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0))
    }

    /// Keeps what a cut-off test file got right: a block the model repeated cut, then its
    /// complete top-level statements (written back to `file`).
    pub async fn salvage(&self, file: &Path) -> Result<Salvaged, String> {
        let v = self
            .call(json!({"op": "salvage", "file": file.display().to_string()}))
            .await?;
        Ok(Salvaged {
            tests: count(&v, "tests"),
            repeated_lines: count(&v, "repetition"),
        })
    }

    /// Makes `file` (a repair answer) the tests of `previous` named in `passing`, as they were,
    /// plus the answer's other tests, with the statements both need once.
    pub async fn merge(
        &self,
        previous: &Path,
        file: &Path,
        passing: &[String],
    ) -> Result<Merged, String> {
        let v = self
            .call(json!({
                "op": "merge",
                "previous": previous.display().to_string(),
                "file": file.display().to_string(),
                "passing": passing,
            }))
            .await?;
        Ok(Merged {
            tests: count(&v, "tests"),
            kept: count(&v, "kept"),
            changed: count(&v, "changed"),
        })
    }

    /// The public API of the module whose source is `file`, read by the parser (never imported).
    pub async fn api(&self, file: &Path) -> Result<Api, String> {
        let v = self
            .call(json!({"op": "api", "file": file.display().to_string()}))
            .await?;
        Ok(Api {
            text: v["text"].as_str().unwrap_or_default().to_string(),
            names: v["names"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|n| n.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// Up to `cap` mutants of the module `file`, on the lines each test in `tests` covers
    /// (`None`: on any line inside a function), with the number of changes possible there.
    pub async fn mutants(
        &self,
        file: &Path,
        tests: Option<&std::collections::BTreeMap<String, Vec<u32>>>,
        cap: u32,
    ) -> Result<(Vec<crate::mutation::Mutant>, u32), String> {
        let v = self
            .call(json!({
                "op": "mutants",
                "file": file.display().to_string(),
                "tests": tests,
                "cap": cap,
            }))
            .await?;
        let mutants = serde_json::from_value(v["mutants"].clone())
            .map_err(|e| format!("the Python helper's mutants: {e}"))?;
        Ok((mutants, count(&v, "candidates")))
    }
}

fn count(v: &Value, key: &str) -> u32 {
    v[key]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

/// What [`PyHelper::salvage`] kept of a cut-off file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Salvaged {
    /// Complete tests left.
    pub tests: u32,
    /// Lines cut because the model repeated a block (0: it did not).
    pub repeated_lines: u32,
}

/// What [`PyHelper::merge`] made of a repair answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Merged {
    /// Test functions in the merged file.
    pub tests: u32,
    /// Passing tests carried over from the file before the repair.
    pub kept: u32,
    /// Tests of the answer that are new or differ from the file it was given: 0 when the model
    /// changed nothing.
    pub changed: u32,
}

/// A module's public names with their signatures, for the prompt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Api {
    pub text: String,
    /// Every top-level name the module defines or imports.
    pub names: Vec<String>,
}
