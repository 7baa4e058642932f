//! One long-lived Python process (`python/helper.py`, run with the project's interpreter) that
//! checks, tidies and prunes proposed test files with Python's own parser. A process per
//! request would cost an interpreter start each time, more than improve's own work in an
//! iteration; this one starts on first use and again if it ever dies.
//!
//! The wire: one JSON [`Request`] a line on the helper's stdin, one JSON line back on its
//! stdout, `{"ok": true, ...the op's answer}` or `{"ok": false, "error": "..."}`. Each op's
//! answer is a type here; `python/helper.py` documents the same shapes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::artifacts::scratch;
use crate::mutation::Mutant;

/// No request takes long (a parse of one file); past this the helper is taken for hung.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The helper's program: its script and the module it imports from the script's folder.
const HELPER_PY: &str = include_str!("../python/helper.py");
const MUTANTS_PY: &str = include_str!("../python/mutants.py");
const LOCALFIX_PY: &str = include_str!("../python/localfix.py");
const EXPECT_PY: &str = include_str!("../python/expect.py");

/// Why a request to the helper got no answer of use.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("cannot write to {path}: {source}")]
    Scratch {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {python}: {source}")]
    Start {
        python: String,
        source: std::io::Error,
    },
    #[error("the Python helper has no pipes")]
    NoPipes,
    /// The process failed to answer (it is dropped, and the next request starts another).
    #[error("the Python helper failed ({why}; see {})", stderr.display())]
    Failed { why: String, stderr: PathBuf },
    /// An answer that is not JSON, or not the op's answer.
    #[error("the Python helper answered {answer:?}: {source}")]
    Malformed {
        answer: String,
        source: serde_json::Error,
    },
    /// The helper's own refusal, as it says it (`line 3: invalid syntax`).
    #[error("{0}")]
    Refused(String),
}

/// One request, tagged by its `op` as `python/helper.py`'s `answer` dispatches on it.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request<'a> {
    Tidy {
        file: String,
    },
    Prune {
        file: String,
        names: &'a [String],
    },
    Salvage {
        file: String,
    },
    Merge {
        previous: String,
        file: String,
        passing: &'a [String],
    },
    Api {
        file: String,
    },
    Asserting {
        file: String,
    },
    Fix {
        file: String,
        /// Import name -> source file of each module of the package.
        modules: &'a BTreeMap<String, String>,
        /// The import name of the module under test (None: a fix iteration).
        target: Option<&'a str>,
        /// Source file -> the path the prompt showed, of each example test file.
        examples: &'a BTreeMap<String, String>,
    },
    Mutants {
        file: String,
        tests: Option<&'a BTreeMap<String, Vec<u32>>>,
        cap: u32,
    },
    Instrument(Observed<'a>),
    Adopt(Observed<'a>),
}

/// What both steps of taking expected values from the code ([`PyHelper::instrument`], then
/// [`PyHelper::adopt`]) are about.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Observed<'a> {
    /// The test file.
    #[serde(serialize_with = "as_display")]
    pub file: &'a Path,
    /// Its failing tests, as the pruner names them.
    pub tests: &'a [String],
    /// Where the instrumented run writes what it saw.
    #[serde(serialize_with = "as_display")]
    pub record: &'a Path,
    /// The top-level import name of the code under test: only what reads it is observed.
    pub package: &'a str,
}

fn as_display<S: serde::Serializer>(p: &&Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.display().to_string())
}

/// Every answer's envelope: whether the op went through, else why not.
#[derive(Debug, Deserialize)]
struct Envelope {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
}

/// The answer to [`Request::Tidy`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TidyCounts {
    /// `Test*` classes marked `__test__ = False`.
    pub marked: u32,
    /// Test functions the file defines.
    pub tests: u32,
    /// Top-level tests dropped as invalid Python, with why (`test_x (line 3: invalid syntax)`).
    #[serde(default)]
    pub dropped: Vec<String>,
}

/// The answer to [`Request::Instrument`].
#[derive(Debug, Clone, Copy, Deserialize)]
struct Instrumented {
    asserts: u32,
}

/// The answer to [`Request::Adopt`]: the expected values taken from the code.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Adopted {
    /// Asserts whose literal became the value the code gave.
    pub adopted: u32,
    /// One line each (`test_a line 7: expected \`3\` -> \`4\``).
    pub values: Vec<String>,
}

/// The answer to [`Request::Prune`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
struct Pruned {
    removed: u32,
}

/// The answer to [`Request::Salvage`]: what [`PyHelper::salvage`] kept of a cut-off file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Salvaged {
    /// Complete tests left.
    pub tests: u32,
    /// Lines cut because the model repeated a block (0: it did not).
    #[serde(rename = "repetition")]
    pub repeated_lines: u32,
}

/// The answer to [`Request::Merge`]: what [`PyHelper::merge`] made of a repair answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Merged {
    /// Test functions in the merged file.
    pub tests: u32,
    /// Passing tests carried over from the file before the repair.
    pub kept: u32,
    /// Tests of the answer that are new or differ from the file it was given: 0 when the model
    /// changed nothing.
    pub changed: u32,
}

/// The answer to [`Request::Api`]: a module's public names with their signatures, for the
/// prompt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Api {
    pub text: String,
    /// Every top-level name the module defines or imports.
    pub names: Vec<String>,
    /// [first, last] lines of the top-level definitions an import further down binds again:
    /// no test reaches them.
    #[serde(default)]
    pub superseded: Vec<(u32, u32)>,
}

/// The answer to [`Request::Asserting`].
#[derive(Debug, Clone, Deserialize)]
struct Asserting {
    tests: BTreeMap<String, bool>,
}

/// The answer to [`Request::Fix`]: what [`PyHelper::fix`] put right in a test file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct LocalFixes {
    /// What was done, one line each (`added \`import pytest\``).
    pub fixes: Vec<String>,
    /// Imports added or rewritten: each would have failed the tests that need it.
    pub imports: u32,
    /// Tests dropped as copies of example tests.
    pub dropped: Vec<String>,
    /// Test functions left in the file.
    pub tests: u32,
}

/// What the local fixes of a test file know of the project.
pub struct FixContext<'a> {
    /// Import name -> source file of each module of the package.
    pub modules: &'a BTreeMap<String, String>,
    /// The import name of the module under test (None: a fix iteration).
    pub target: Option<&'a str>,
    /// Source file -> the path the prompt showed, of each example test file.
    pub examples: &'a BTreeMap<String, String>,
}

/// The answer to [`Request::Mutants`].
#[derive(Debug, Clone, Deserialize)]
struct Mutants {
    /// Changes possible on the lines asked about.
    candidates: u32,
    mutants: Vec<Mutant>,
}

/// One answer line read: the op's answer, or the helper's refusal.
fn read_answer<T: DeserializeOwned>(line: &str) -> Result<T, HelperError> {
    let malformed = |source| HelperError::Malformed {
        answer: line.to_string(),
        source,
    };
    let envelope: Envelope = serde_json::from_str(line).map_err(malformed)?;
    if !envelope.ok {
        return Err(HelperError::Refused(
            envelope.error.unwrap_or_else(|| "failed".into()),
        ));
    }
    serde_json::from_str(line).map_err(malformed)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

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

    /// Writes the helper's files (the binary's copies, whatever the checkout) and starts it:
    /// `python helper.py` finds `mutants.py` and `localfix.py` beside it, first on its path.
    fn start(&self) -> Result<Running, HelperError> {
        let dir = scratch::helper_dir(&self.scratch);
        let write = |file: &Path, text: &str| {
            std::fs::create_dir_all(&dir)
                .and_then(|()| crate::fsutil::write_atomic(file, text.as_bytes()))
                .map_err(|source| HelperError::Scratch {
                    path: dir.clone(),
                    source,
                })
        };
        write(&scratch::helper_mutants(&dir), MUTANTS_PY)?;
        write(&scratch::helper_localfix(&dir), LOCALFIX_PY)?;
        write(&scratch::helper_expect(&dir), EXPECT_PY)?;
        let script = scratch::helper_script(&dir);
        write(&script, HELPER_PY)?;
        let stderr_path = scratch::helper_stderr(&self.scratch);
        let stderr =
            std::fs::File::create(&stderr_path).map_err(|source| HelperError::Scratch {
                path: self.scratch.clone(),
                source,
            })?;
        let mut child = Command::new(&self.python)
            .arg(&script)
            .current_dir(&self.scratch)
            .env_clear()
            .envs(crate::process::test_environment(&[]))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| HelperError::Start {
                python: self.python.clone(),
                source,
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(HelperError::NoPipes);
        };
        Ok(Running {
            _child: child,
            stdin,
            stdout: BufReader::new(stdout),
        })
    }

    /// One request, one answer. A helper that fails to answer is dropped (and killed) and the
    /// next request starts a new one.
    async fn call<T: DeserializeOwned>(&self, request: Request<'_>) -> Result<T, HelperError> {
        let mut line =
            serde_json::to_string(&request).map_err(|source| HelperError::Malformed {
                answer: String::new(),
                source,
            })?;
        line.push('\n');
        let mut slot = self.running.lock().await;
        if slot.is_none() {
            *slot = Some(self.start()?);
        }
        let Some(running) = slot.as_mut() else {
            return Err(HelperError::NoPipes);
        };
        let exchange = async {
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
                return Err(HelperError::Failed {
                    why,
                    stderr: scratch::helper_stderr(&self.scratch),
                });
            }
        };
        read_answer(&answer)
    }

    /// Checks `file` is valid Python and marks `Test*` classes that are not tests with
    /// `__test__ = False`. `Ok` carries the classes marked and the test functions the file
    /// defines; `Err` the syntax error as Python reports it (`line 3: invalid syntax`).
    pub async fn tidy(&self, file: &Path) -> Result<TidyCounts, HelperError> {
        self.call(Request::Tidy { file: path(file) }).await
    }

    /// Removes the test functions `names` (`test_a`, `TestK::test_b`) from `file`; returns how
    /// many went. The file is left as it was when the result would not parse.
    pub async fn prune(&self, file: &Path, names: &[String]) -> Result<u32, HelperError> {
        let file = path(file);
        let pruned: Pruned = self.call(Request::Prune { file, names }).await?;
        Ok(pruned.removed)
    }

    /// Keeps what a cut-off test file got right: a block the model repeated cut, then its
    /// complete top-level statements (written back to `file`).
    pub async fn salvage(&self, file: &Path) -> Result<Salvaged, HelperError> {
        self.call(Request::Salvage { file: path(file) }).await
    }

    /// Makes `file` (a repair answer) the tests of `previous` named in `passing`, as they were,
    /// plus the answer's other tests, with the statements both need once.
    pub async fn merge(
        &self,
        previous: &Path,
        file: &Path,
        passing: &[String],
    ) -> Result<Merged, HelperError> {
        self.call(Request::Merge {
            previous: path(previous),
            file: path(file),
            passing,
        })
        .await
    }

    /// The public API of the module whose source is `file`, read by the parser (never imported).
    pub async fn api(&self, file: &Path) -> Result<Api, HelperError> {
        self.call(Request::Api { file: path(file) }).await
    }

    /// For each test function of the test file `file` (as `prune` names it), whether it holds
    /// an assertion of any kind, in its body or in a helper of the file it calls (read by the
    /// parser; `pytest.raises(Exception)` does not count).
    pub async fn asserting(&self, file: &Path) -> Result<BTreeMap<String, bool>, HelperError> {
        let answer: Asserting = self.call(Request::Asserting { file: path(file) }).await?;
        Ok(answer.tests)
    }

    /// Fixes in `file` what needs no model: missing imports (`pytest`, names of the package),
    /// imports of the package under a wrong path; and drops copies of example tests.
    pub async fn fix(
        &self,
        file: &Path,
        project: &FixContext<'_>,
    ) -> Result<LocalFixes, HelperError> {
        self.call(Request::Fix {
            file: path(file),
            modules: project.modules,
            target: project.target,
            examples: project.examples,
        })
        .await
    }

    /// Rewrites, in the failing tests of `o.file`, each `assert <expr> == <literal>` whose
    /// `<expr>` reads the code under test into a call that records what `<expr>` gave into
    /// `o.record` (and lets the test go on). Returns how many asserts were rewritten; the caller
    /// runs the file, then puts it back.
    pub async fn instrument(&self, o: Observed<'_>) -> Result<u32, HelperError> {
        let done: Instrumented = self.call(Request::Instrument(o)).await?;
        Ok(done.asserts)
    }

    /// Gives each assert that [`Self::instrument`] prepared and that failed in the run, always
    /// on one value that Python writes as a literal, that value.
    pub async fn adopt(&self, o: Observed<'_>) -> Result<Adopted, HelperError> {
        self.call(Request::Adopt(o)).await
    }

    /// Up to `cap` mutants of the module `file`, on the lines each test in `tests` covers
    /// (`None`: on any line inside a function), with the number of changes possible there.
    pub async fn mutants(
        &self,
        file: &Path,
        tests: Option<&BTreeMap<String, Vec<u32>>>,
        cap: u32,
    ) -> Result<(Vec<Mutant>, u32), HelperError> {
        let file = path(file);
        let made: Mutants = self.call(Request::Mutants { file, tests, cap }).await?;
        Ok((made.mutants, made.candidates))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_by_op_as_the_helper_reads_them() {
        let names = vec!["test_a".to_string()];
        let prune = Request::Prune {
            file: "t.py".into(),
            names: &names,
        };
        assert_eq!(
            serde_json::to_string(&prune).unwrap(),
            r#"{"op":"prune","file":"t.py","names":["test_a"]}"#
        );
        let observed = Request::Adopt(Observed {
            file: Path::new("t.py"),
            tests: &names,
            record: Path::new("r.jsonl"),
            package: "calc",
        });
        assert_eq!(
            serde_json::to_string(&observed).unwrap(),
            r#"{"op":"adopt","file":"t.py","tests":["test_a"],"record":"r.jsonl","package":"calc"}"#
        );
        let mutants = Request::Mutants {
            file: "m.py".into(),
            tests: None,
            cap: 3,
        };
        assert_eq!(
            serde_json::to_string(&mutants).unwrap(),
            r#"{"op":"mutants","file":"m.py","tests":null,"cap":3}"#
        );
    }

    #[test]
    fn every_op_the_rust_side_sends_is_one_the_helper_answers() {
        for op in [
            "tidy",
            "prune",
            "salvage",
            "merge",
            "api",
            "asserting",
            "fix",
            "mutants",
        ] {
            assert!(
                HELPER_PY.contains(&format!("if op == \"{op}\":")),
                "helper.py does not dispatch {op:?}"
            );
        }
    }

    #[test]
    fn answers_are_typed_and_refusals_keep_the_helpers_words() {
        let salvaged: Salvaged =
            read_answer(r#"{"ok": true, "tests": 2, "repetition": 7}"#).unwrap();
        assert_eq!(
            salvaged,
            Salvaged {
                tests: 2,
                repeated_lines: 7
            }
        );
        let refused =
            read_answer::<TidyCounts>(r#"{"ok": false, "error": "line 3: invalid syntax"}"#);
        assert_eq!(refused.unwrap_err().to_string(), "line 3: invalid syntax");
        let bare = read_answer::<Pruned>(r#"{"ok": false}"#);
        assert_eq!(bare.unwrap_err().to_string(), "failed");
        let missing = read_answer::<Merged>(r#"{"ok": true, "tests": 1}"#);
        assert!(matches!(missing, Err(HelperError::Malformed { .. })));
        let junk = read_answer::<Api>("Traceback (most recent call last):");
        assert!(matches!(junk, Err(HelperError::Malformed { .. })));
    }
}
