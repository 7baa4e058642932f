//! The ready-made CI workflows of `examples/ci` run for real: their own `run:` steps, in order,
//! with `bash -eo pipefail` as GitHub runs them, in an emulated checkout of the demo project
//! (a clone of a bare repository standing in for GitHub), with the improve under test on PATH,
//! a recorder in place of `gh` and the LLM stand-in answering with the demo's recorded answers.
//! A workflow edit that breaks the delivery (the run branch pushed, the pull request opened with
//! the report as its body, the nightly skipped while its pull request is open) fails here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use super::*;

const NIGHTLY: &str = "examples/ci/github-nightly.yml";
const PULL_REQUEST: &str = "examples/ci/github-pull-request.yml";

/// Steps the test does itself, as there is no network here: the project's virtualenv (a
/// `.venv/bin/python` that is the test's Python) and improve (the binary under test on PATH).
const EMULATED: [&str; 2] = ["install-project", "install-improve"];

/// What the workflows read from GitHub's contexts (`${{ ... }}` in their `env:` blocks). An
/// expression missing here fails the test: a workflow edit that needs a new value is noticed.
fn github_contexts(llm_url: &str) -> HashMap<String, String> {
    [
        ("vars.IMPROVE_NIGHTLY_ITERATIONS || '20'", "2"),
        ("vars.IMPROVE_NIGHTLY_MAX_COST || '2'", "1"),
        ("vars.IMPROVE_PR_ITERATIONS || '5'", "1"),
        ("vars.IMPROVE_PR_MAX_COST || '0.5'", "1"),
        ("vars.IMPROVE_LLM_URL", llm_url),
        // Priced by improve, so --max-cost needs no --price.
        ("vars.IMPROVE_MODEL", "gpt-4o-mini"),
        ("vars.IMPROVE_PRICE", ""),
        ("vars.IMPROVE_GIT", "https://example.invalid/improve.git"),
        ("secrets.IMPROVE_API_KEY", "sk-test-not-a-real-key"),
        (
            "secrets.IMPROVE_GH_TOKEN || github.token",
            "gh-token-for-test",
        ),
        ("github.ref_name", "main"),
        ("github.event.pull_request.number", "42"),
        ("github.event.pull_request.base.ref", "main"),
        ("github.event.pull_request.head.ref", "feature/reorder"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A workflow file as JSON, read by PyYAML (the test's Python has it; see scripts/tests).
fn workflow(rel: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    let out = Command::new(python())
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1], encoding='utf-8')), sys.stdout)",
        ])
        .arg(&path)
        .output()
        .expect("python starts");
    assert!(
        out.status.success(),
        "reading {rel} needs PyYAML in {} (IMPROVE_TEST_PYTHON=.venv/bin/python): {}",
        python(),
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `text` with every `${{ expr }}` replaced: from `contexts`, else a step's output
/// (`steps.<id>.outputs.<name>`) the job has written so far.
fn substitute(
    text: &str,
    contexts: &HashMap<String, String>,
    outputs: &HashMap<String, HashMap<String, String>>,
) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let len = rest[start..]
            .find("}}")
            .unwrap_or_else(|| panic!("unclosed expression in {text:?}"));
        let expr = rest[start + 3..start + len].trim();
        let value = contexts
            .get(expr)
            .cloned()
            .or_else(|| step_output(expr, outputs))
            .unwrap_or_else(|| {
                panic!("`${{{{ {expr} }}}}` is not in the test's table (github_contexts)")
            });
        out.push_str(&value);
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

/// `steps.<id>.outputs.<name>`: what that step wrote, "" when it wrote nothing (as GitHub
/// gives), None for any other expression.
fn step_output(expr: &str, outputs: &HashMap<String, HashMap<String, String>>) -> Option<String> {
    let rest = expr.strip_prefix("steps.")?;
    let (id, name) = rest.split_once(".outputs.")?;
    Some(
        outputs
            .get(id)
            .and_then(|o| o.get(name))
            .cloned()
            .unwrap_or_default(),
    )
}

/// A step's `if:`, for the forms the workflows use: clauses `steps.<id>.outputs.<name> == 'v'`
/// (or `!=`) joined by `&&`. Anything else fails the test, rather than being guessed.
fn condition_holds(cond: &str, outputs: &HashMap<String, HashMap<String, String>>) -> bool {
    cond.split("&&").all(|clause| {
        let (lhs, rhs, equal) = if let Some((l, r)) = clause.split_once("!=") {
            (l, r, false)
        } else if let Some((l, r)) = clause.split_once("==") {
            (l, r, true)
        } else {
            panic!("the test cannot evaluate `if: {cond}`")
        };
        let value = step_output(lhs.trim(), outputs)
            .unwrap_or_else(|| panic!("the test cannot evaluate `{}` in `if: {cond}`", lhs.trim()));
        let literal = rhs.trim().trim_matches('\'');
        (value == literal) == equal
    })
}

/// The `env:` block of a workflow, job or step, its expressions substituted.
fn env_block(
    node: &Value,
    contexts: &HashMap<String, String>,
    outputs: &HashMap<String, HashMap<String, String>>,
) -> Vec<(String, String)> {
    let Some(map) = node["env"].as_object() else {
        return Vec::new();
    };
    map.iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), substitute(&text, contexts, outputs))
        })
        .collect()
}

/// `key=value` lines a step wrote to `$GITHUB_OUTPUT`.
fn read_outputs(file: &Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            assert!(
                !l.contains("<<"),
                "multi-line outputs are not emulated: {l}"
            );
            let (k, v) = l.split_once('=').expect("key=value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// An executable script at `path`.
fn write_script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The shebang line for a script run by the test's Python.
fn python_shebang() -> String {
    let py = python();
    if py.starts_with('/') {
        format!("#!{py}\n")
    } else {
        format!("#!/usr/bin/env {py}\n")
    }
}

/// The machine a job runs on: a temp dir with the tools on PATH (`gh` a recorder, `improve` the
/// binary under test behind a recorder), the runner's files, and the logs the test reads.
struct Runner {
    dir: tempfile::TempDir,
}

impl Runner {
    fn new() -> Runner {
        let runner = Runner {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(runner.tools()).unwrap();
        std::fs::create_dir_all(runner.temp()).unwrap();
        runner.answer_pr_list("[]");
        runner.install_recorders();
        runner
    }

    fn tools(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    /// `$RUNNER_TEMP`.
    fn temp(&self) -> PathBuf {
        self.dir.path().join("runner-temp")
    }

    fn gh_log(&self) -> PathBuf {
        self.dir.path().join("gh.jsonl")
    }

    fn improve_log(&self) -> PathBuf {
        self.dir.path().join("improve.jsonl")
    }

    fn summary(&self) -> PathBuf {
        self.dir.path().join("step-summary.md")
    }

    /// What the `gh` recorder answers to `gh pr list` (a JSON array, as `--json` prints it).
    fn answer_pr_list(&self, json: &str) {
        std::fs::write(self.dir.path().join("pr-list.json"), json).unwrap();
    }

    /// `gh`: appends its argv, the `--body-file`'s content and its GH_TOKEN as a JSON line to
    /// the log; answers `pr list` with the canned JSON (through `jq` for `--jq`, as gh does),
    /// `pr create` with a URL. `improve`: logs its argv, then is the binary under test.
    fn install_recorders(&self) {
        let gh = format!(
            r#"{shebang}import json, os, subprocess, sys
argv = sys.argv[1:]
entry = {{"argv": argv, "token": os.environ.get("GH_TOKEN")}}
if "--body-file" in argv:
    with open(argv[argv.index("--body-file") + 1], encoding="utf-8") as f:
        entry["body"] = f.read()
with open({log:?}, "a", encoding="utf-8") as f:
    f.write(json.dumps(entry) + "\n")
if argv[:2] == ["pr", "list"]:
    with open({answer:?}, encoding="utf-8") as f:
        out = f.read()
    if "--jq" in argv:
        jq = ["jq", "-r", argv[argv.index("--jq") + 1]]
        out = subprocess.run(jq, input=out, capture_output=True, text=True, check=True).stdout
    sys.stdout.write(out)
elif argv[:2] == ["pr", "create"]:
    print("https://github.com/owner/project/pull/101")
"#,
            shebang = python_shebang(),
            log = self.gh_log(),
            answer = self.dir.path().join("pr-list.json"),
        );
        write_script(&self.tools().join("gh"), &gh);
        let improve = format!(
            r#"{shebang}import json, os, sys
with open({log:?}, "a", encoding="utf-8") as f:
    f.write(json.dumps(sys.argv[1:]) + "\n")
os.execv({real:?}, [{real:?}] + sys.argv[1:])
"#,
            shebang = python_shebang(),
            log = self.improve_log(),
            real = env!("CARGO_BIN_EXE_improve"),
        );
        write_script(&self.tools().join("improve"), &improve);
    }

    /// The `gh` calls so far, in order.
    fn gh_calls(&self) -> Vec<Value> {
        json_lines(&self.gh_log())
    }

    /// The `improve` invocations so far, in order (each its argv).
    fn improve_calls(&self) -> Vec<Vec<String>> {
        json_lines(&self.improve_log())
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap())
            .collect()
    }

    /// Runs `job` of `doc` in `checkout`: its steps in order, the `uses:` and emulated ones
    /// skipped, each `run:` with the merged `env:` blocks. Returns the ids of the steps that ran.
    fn run_job(
        &self,
        doc: &Value,
        job: &str,
        checkout: &Path,
        contexts: &HashMap<String, String>,
    ) -> Vec<String> {
        let job_node = &doc["jobs"][job];
        let steps = job_node["steps"].as_array().expect("the job has steps");
        let mut outputs: HashMap<String, HashMap<String, String>> = HashMap::new();
        let mut ran = Vec::new();
        for step in steps {
            let id = step["id"]
                .as_str()
                .unwrap_or_else(|| panic!("every step has an id: {step}"));
            if step.get("uses").is_some() || EMULATED.contains(&id) {
                continue;
            }
            if let Some(cond) = step["if"].as_str()
                && !condition_holds(cond, &outputs)
            {
                continue;
            }
            let script = step["run"].as_str().expect("a step without uses: runs");
            assert!(
                !script.contains("${{"),
                "step {id}: its shell reads environment variables only (map expressions into env:)"
            );
            let mut env = env_block(doc, contexts, &outputs);
            env.extend(env_block(job_node, contexts, &outputs));
            env.extend(env_block(step, contexts, &outputs));
            let written = self.run_step(id, script, &env, checkout);
            outputs.insert(id.to_string(), written);
            ran.push(id.to_string());
        }
        ran
    }

    /// One `run:` as GitHub runs it (`bash --noprofile --norc -eo pipefail FILE`); it must
    /// succeed. Returns what it wrote to `$GITHUB_OUTPUT`.
    fn run_step(
        &self,
        id: &str,
        script: &str,
        env: &[(String, String)],
        checkout: &Path,
    ) -> HashMap<String, String> {
        let file = self.dir.path().join(format!("step-{id}.sh"));
        std::fs::write(&file, script).unwrap();
        let output_file = self.dir.path().join(format!("output-{id}"));
        let path = format!(
            "{}:{}",
            self.tools().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("bash");
        cmd.args(["--noprofile", "--norc", "-eo", "pipefail"])
            .arg(&file)
            .current_dir(checkout);
        for (key, _) in std::env::vars() {
            if key.starts_with("IMPROVE_") || key.starts_with("GITHUB_") || key.starts_with("GH_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("PATH", path)
            .env("CI", "true")
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_OUTPUT", &output_file)
            .env("GITHUB_STEP_SUMMARY", self.summary())
            .env("RUNNER_TEMP", self.temp())
            // Fast retries, as every test of improve has them.
            .env("IMPROVE_RETRY_BASE_MS", "10")
            .envs(env.iter().map(|(k, v)| (k, v)));
        let out = cmd.output().expect("bash starts");
        assert!(
            out.status.success(),
            "step {id} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
        std::fs::write(self.step_stdout_file(id), &out.stdout).unwrap();
        read_outputs(&output_file)
    }

    fn step_stdout_file(&self, id: &str) -> PathBuf {
        self.dir.path().join(format!("stdout-{id}"))
    }

    /// What the last run of step `id` printed.
    fn step_stdout(&self, id: &str) -> String {
        std::fs::read_to_string(self.step_stdout_file(id)).unwrap()
    }
}

fn json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The demo's recorded answers: (tag, text), e.g. ("add:inventory/parsing.py", "...").
fn recorded_answers() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo/recording.json");
    let recording: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    recording["exchanges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let tag = e["tag"].as_str().unwrap().to_string();
            let text = e["response"]["text"].as_str().unwrap().to_string();
            (tag, text)
        })
        .collect()
}

/// Answers each request with the demo's recorded answer for the module the prompt names: an
/// `add:` answer for a first request, the `repair:` answer when the conversation goes on.
/// Notes every tag asked for, so a test sees which modules were targets.
struct Recorded {
    answers: Vec<(String, String)>,
    /// After this many requests, every answer is a 500 (the LLM down).
    limit: usize,
    served: Shared<HashMap<String, usize>>,
    asked: Shared<Vec<String>>,
}

/// The module in "Write new pytest tests for the module `inventory/x.py`".
fn module_named(text: &str) -> Option<String> {
    let marker = "for the module `";
    let start = text.find(marker)? + marker.len();
    let len = text[start..].find('`')?;
    Some(text[start..start + len].to_string())
}

impl Respond for Recorded {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
        let users: Vec<&str> = body["messages"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter(|m| m["role"] == "user")
                    .filter_map(|m| m["content"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        let module = users
            .first()
            .and_then(|u| module_named(u))
            .unwrap_or_default();
        let kind = if users.len() > 1 { "repair" } else { "add" };
        let tag = format!("{kind}:{module}");
        let count = {
            let mut asked = self.asked.lock().unwrap();
            asked.push(tag.clone());
            asked.len()
        };
        if count > self.limit {
            return ResponseTemplate::new(500).set_body_string("stand-in: down");
        }
        let n = {
            let mut served = self.served.lock().unwrap();
            let n = served.entry(tag.clone()).or_default();
            *n += 1;
            *n - 1
        };
        let Some((_, text)) = self.answers.iter().filter(|(t, _)| *t == tag).nth(n) else {
            return ResponseTemplate::new(500).set_body_string(format!("no recorded answer {tag}"));
        };
        ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "stand-in",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 45, "total_tokens": 165}
        }))
    }
}

/// A stand-in serving the recorded answers to the first `limit` requests; `asked` fills with
/// the tags requested.
async fn recorded_stand_in(limit: usize) -> (MockServer, Shared<Vec<String>>) {
    let server = MockServer::start().await;
    let asked: Shared<Vec<String>> = Arc::default();
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(Recorded {
            answers: recorded_answers(),
            limit,
            served: Arc::default(),
            asked: asked.clone(),
        })
        .mount(&server)
        .await;
    (server, asked)
}

/// Copies the demo project (without its recording) into `to`.
fn copy_demo(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "recording.json" || name == "__pycache__" || name.starts_with('.') {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_demo(&entry.path(), &to.join(&*name));
        } else {
            std::fs::copy(entry.path(), to.join(&*name)).unwrap();
        }
    }
}

/// GitHub's side: a bare repository holding the demo project on `main`, and the checkouts.
struct Remote {
    dir: tempfile::TempDir,
}

impl Remote {
    fn new() -> Remote {
        let remote = Remote {
            dir: tempfile::tempdir().unwrap(),
        };
        let seed = remote.seed();
        copy_demo(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo"),
            &seed,
        );
        git(&seed, &["init", "-q", "-b", "main"]);
        git(&seed, &["add", "-A"]);
        git(&seed, &["commit", "-qm", "The inventory demo"]);
        git(
            remote.dir.path(),
            &["init", "-q", "--bare", "-b", "main", "origin.git"],
        );
        git(
            &seed,
            &["remote", "add", "origin", remote.bare().to_str().unwrap()],
        );
        git(&seed, &["push", "-q", "origin", "main"]);
        remote
    }

    fn bare(&self) -> PathBuf {
        self.dir.path().join("origin.git")
    }

    /// The repository the test commits in before pushing (a developer's clone).
    fn seed(&self) -> PathBuf {
        self.dir.path().join("seed")
    }

    /// What actions/checkout with `fetch-depth: 0` leaves: a clone with every branch of the
    /// remote, at `rev`; plus the emulated install-project step (`.venv/bin/python`).
    fn checkout(&self, name: &str, rev: &str) -> PathBuf {
        let dir = self.dir.path().join(name);
        git(
            self.dir.path(),
            &["clone", "-q", self.bare().to_str().unwrap(), name],
        );
        git(&dir, &["checkout", "-q", "--detach", rev]);
        std::fs::create_dir_all(dir.join(".venv/bin")).unwrap();
        write_script(
            &dir.join(".venv/bin/python"),
            &format!("#!/bin/sh\nexec {:?} \"$@\"\n", python()),
        );
        dir
    }

    /// `git -C origin.git <args>`.
    fn git(&self, args: &[&str]) -> String {
        git(&self.bare(), args)
    }

    /// The commits `branch` has on the remote past `base`, oldest first, as (sha, message).
    fn commits(&self, base: &str, branch: &str) -> Vec<(String, String)> {
        self.git(&["rev-list", "--reverse", &format!("{base}..{branch}")])
            .lines()
            .map(|sha| {
                (
                    sha.to_string(),
                    self.git(&["log", "-1", "--format=%B", sha]),
                )
            })
            .collect()
    }
}

/// `improve report --format pr` in `checkout`, as the test sees it after the job.
fn pr_report(checkout: &Path) -> String {
    let mut cmd = improve(checkout);
    cmd.args(["report", "--format", "pr"]);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

/// The argv of a gh call.
fn argv(call: &Value) -> Vec<&str> {
    call["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

/// The value after `flag` in `args`.
fn flag<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| *a == flag)?;
    args.get(i + 1).copied()
}

/// Checks a pull-request body: it is the `report --format pr` output, names every kept commit,
/// and fits GitHub's limit.
fn assert_pr_body(body: &str, report: &str, commits: &[(String, String)]) {
    assert_eq!(body, report, "the body is `improve report --format pr`");
    assert!(
        body.starts_with('#'),
        "the body starts with its heading: {body}"
    );
    assert!(body.chars().count() < 65_536, "{} characters", body.len());
    for (sha, _) in commits {
        assert!(
            body.contains(&sha[..7]),
            "the body lists kept commit {sha}:\n{body}"
        );
    }
}

/// Every commit carries its iteration's trailer, and they are distinct iterations.
fn assert_iteration_trailers(commits: &[(String, String)]) {
    let iterations: std::collections::BTreeSet<&str> = commits
        .iter()
        .map(|(sha, msg)| {
            msg.lines()
                .find_map(|l| l.strip_prefix("Improve-Iteration: "))
                .unwrap_or_else(|| panic!("commit {sha} has no Improve-Iteration trailer:\n{msg}"))
        })
        .collect();
    assert_eq!(iterations.len(), commits.len(), "one commit per iteration");
}

#[tokio::test(flavor = "multi_thread")]
async fn nightly_workflow_pushes_the_run_and_opens_one_draft_pr_then_skips_while_it_is_open() {
    let doc = workflow(NIGHTLY);
    assert!(doc["true"]["schedule"].is_array(), "on: schedule");
    let remote = Remote::new();
    let main = remote.git(&["rev-parse", "main"]);
    let (llm, asked) = recorded_stand_in(usize::MAX).await;
    let contexts = github_contexts(&format!("{}/v1", llm.uri()));
    let runner = Runner::new();

    // Night 1: no nightly pull request open.
    let checkout = remote.checkout("night-1", "main");
    let ran = tokio::task::block_in_place(|| runner.run_job(&doc, "nightly", &checkout, &contexts));
    assert_eq!(
        ran,
        ["pending", "improve", "status", "push", "pull-request"],
        "the steps that ran"
    );
    let runs = runner.improve_calls();
    assert_eq!(
        runs[0],
        [
            "--iterations",
            "2",
            "--max-cost",
            "1",
            "--max-duration",
            "5h"
        ],
        "improve runs with the workflow's N and USD"
    );
    let status = improve_json(&checkout, &["status", "--json"]);
    let branch = status["run_branch"].as_str().unwrap();
    assert_eq!(status["kept"], 2, "both iterations kept: {status}");
    let commits = remote.commits(&main, branch);
    assert_eq!(
        commits.len(),
        2,
        "the run branch was pushed with its kept commits"
    );
    assert_eq!(
        remote.git(&["rev-parse", branch]),
        git(&checkout, &["rev-parse", branch]),
        "the remote has the run branch's tip"
    );
    assert_iteration_trailers(&commits);

    let calls = runner.gh_calls();
    assert!(
        calls.iter().all(|c| c["token"] == "gh-token-for-test"),
        "{calls:?}"
    );
    let creates: Vec<&Value> = calls
        .iter()
        .filter(|c| argv(c)[..2] == ["pr", "create"])
        .collect();
    assert_eq!(creates.len(), 1, "one pull request: {calls:?}");
    let args = argv(creates[0]);
    assert!(args.contains(&"--draft"), "{args:?}");
    assert_eq!(flag(&args, "--head"), Some(branch));
    assert_eq!(flag(&args, "--base"), Some("main"));
    assert_eq!(flag(&args, "--label"), Some("improve-nightly"));
    assert!(flag(&args, "--body-file").is_some(), "{args:?}");
    let body = creates[0]["body"].as_str().unwrap();
    assert_pr_body(body, &pr_report(&checkout), &commits);
    let summary = std::fs::read_to_string(runner.summary()).unwrap();
    assert!(
        summary.starts_with('#'),
        "the report went to the job summary: {summary}"
    );

    // Night 2: that pull request is still open: nothing runs, nothing new is opened.
    runner.answer_pr_list(r#"[{"number": 101}]"#);
    let requests = asked.lock().unwrap().len();
    let checkout = remote.checkout("night-2", "main");
    let ran = tokio::task::block_in_place(|| runner.run_job(&doc, "nightly", &checkout, &contexts));
    assert_eq!(ran, ["pending"], "only the check ran");
    let new_calls = &runner.gh_calls()[calls.len()..];
    assert_eq!(new_calls.len(), 1, "{new_calls:?}");
    let args = argv(&new_calls[0]);
    assert_eq!(args[..2], ["pr", "list"]);
    assert_eq!(flag(&args, "--label"), Some("improve-nightly"));
    assert_eq!(flag(&args, "--state"), Some("open"));
    assert_eq!(
        runner.improve_calls().len(),
        runs.len(),
        "improve did not run"
    );
    assert_eq!(asked.lock().unwrap().len(), requests, "no LLM request");
    assert!(!checkout.join(".improve").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_request_workflow_improves_the_change_and_opens_a_follow_up_into_its_branch() {
    let doc = workflow(PULL_REQUEST);
    let job = &doc["jobs"]["improve"];
    let condition = job["if"].as_str().unwrap();
    assert!(
        condition.contains("github.event.pull_request.head.repo.full_name == github.repository"),
        "forked pull requests are skipped: {condition}"
    );
    assert!(
        condition.contains("labels.*.name, 'improve'"),
        "{condition}"
    );
    let checkout_step = &job["steps"][0];
    assert_eq!(
        checkout_step["with"]["ref"], "${{ github.event.pull_request.head.sha }}",
        "the emulated checkout is the pull request's head"
    );
    assert_eq!(checkout_step["with"]["fetch-depth"], 0);

    // The pull request: one commit on feature/reorder changing inventory/reorder.py.
    let remote = Remote::new();
    let seed = remote.seed();
    git(&seed, &["checkout", "-q", "-b", "feature/reorder"]);
    let module = seed.join("inventory/reorder.py");
    let code = std::fs::read_to_string(&module).unwrap();
    let changed = code.replace(
        "if annual_demand == 0 or order_cost == 0:",
        "if not annual_demand or not order_cost:",
    );
    assert_ne!(code, changed);
    std::fs::write(&module, changed).unwrap();
    git(&seed, &["commit", "-qam", "reorder: simpler zero test"]);
    git(&seed, &["push", "-q", "origin", "feature/reorder"]);
    let head = git(&seed, &["rev-parse", "HEAD"]);

    let (llm, asked) = recorded_stand_in(usize::MAX).await;
    let contexts = github_contexts(&format!("{}/v1", llm.uri()));
    let runner = Runner::new();
    let checkout = remote.checkout("pr", &head);
    let ran = tokio::task::block_in_place(|| runner.run_job(&doc, "improve", &checkout, &contexts));
    assert_eq!(ran, ["improve", "status", "push", "pull-request"]);

    let runs = runner.improve_calls();
    assert_eq!(flag(&str_args(&runs[0]), "--since"), Some("origin/main"));
    assert_eq!(flag(&str_args(&runs[0]), "--base"), Some("HEAD"));
    let asked = asked.lock().unwrap().clone();
    assert!(!asked.is_empty(), "the LLM was asked");
    assert!(
        asked.iter().all(|t| t.ends_with(":inventory/reorder.py")),
        "only the changed module is a target: {asked:?}"
    );
    let commits = remote.commits(&head, "improve/pr-42");
    let status = improve_json(&checkout, &["status", "--json"]);
    assert_eq!(status["kept"], 1, "{status}");
    assert_eq!(
        commits.len(),
        1,
        "the kept commit was pushed to improve/pr-42"
    );
    assert_eq!(
        remote.git(&["rev-parse", "improve/pr-42~1"]),
        head,
        "it starts at the pull request's head"
    );
    assert_iteration_trailers(&commits);

    let calls = runner.gh_calls();
    let creates: Vec<&Value> = calls
        .iter()
        .filter(|c| argv(c)[..2] == ["pr", "create"])
        .collect();
    assert_eq!(creates.len(), 1, "{calls:?}");
    let args = argv(creates[0]);
    assert_eq!(flag(&args, "--head"), Some("improve/pr-42"));
    assert_eq!(
        flag(&args, "--base"),
        Some("feature/reorder"),
        "the follow-up goes into the pull request's branch"
    );
    let body = creates[0]["body"].as_str().unwrap();
    assert_pr_body(body, &pr_report(&checkout), &commits);

    // A new push to the pull request, its follow-up (#43) open: a new run from the new head
    // replaces improve/pr-42 and the follow-up is edited, not opened again.
    let code = std::fs::read_to_string(&module).unwrap();
    let changed = code.replace(
        "return on_hand + on_order <= point",
        "return (on_hand + on_order) <= point",
    );
    assert_ne!(code, changed);
    std::fs::write(&module, changed).unwrap();
    git(&seed, &["commit", "-qam", "reorder: brackets"]);
    git(&seed, &["push", "-q", "origin", "feature/reorder"]);
    let head = git(&seed, &["rev-parse", "HEAD"]);
    let (llm, _asked) = recorded_stand_in(usize::MAX).await;
    let contexts = github_contexts(&format!("{}/v1", llm.uri()));
    runner.answer_pr_list(r#"[{"number": 43}]"#);
    let checkout = remote.checkout("pr-push", &head);
    let ran = tokio::task::block_in_place(|| runner.run_job(&doc, "improve", &checkout, &contexts));
    assert_eq!(ran, ["improve", "status", "push", "pull-request"]);
    let commits = remote.commits(&head, "improve/pr-42");
    assert_eq!(
        commits.len(),
        1,
        "improve/pr-42 was replaced by the new run"
    );
    let new_calls = &runner.gh_calls()[calls.len()..];
    let writes: Vec<&Value> = new_calls
        .iter()
        .filter(|c| matches!(argv(c)[..2], ["pr", "create"] | ["pr", "edit"]))
        .collect();
    assert_eq!(writes.len(), 1, "{new_calls:?}");
    let args = argv(writes[0]);
    assert_eq!(
        args[..3],
        ["pr", "edit", "43"],
        "the open follow-up is updated"
    );
    let body = writes[0]["body"].as_str().unwrap();
    assert_pr_body(body, &pr_report(&checkout), &commits);
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_request_workflow_that_changes_no_code_opens_nothing() {
    let doc = workflow(PULL_REQUEST);
    let remote = Remote::new();
    let seed = remote.seed();
    git(&seed, &["checkout", "-q", "-b", "feature/reorder"]);
    let readme = seed.join("README.md");
    let text = std::fs::read_to_string(&readme).unwrap();
    std::fs::write(&readme, format!("{text}\nA line of documentation.\n")).unwrap();
    git(&seed, &["commit", "-qam", "docs only"]);
    git(&seed, &["push", "-q", "origin", "feature/reorder"]);
    let head = git(&seed, &["rev-parse", "HEAD"]);
    let (llm, asked) = recorded_stand_in(usize::MAX).await;
    let contexts = github_contexts(&format!("{}/v1", llm.uri()));
    let runner = Runner::new();
    let checkout = remote.checkout("pr", &head);
    let ran = tokio::task::block_in_place(|| runner.run_job(&doc, "improve", &checkout, &contexts));
    assert_eq!(
        ran,
        ["improve", "status"],
        "nothing kept: no push, no pull request"
    );
    assert!(asked.lock().unwrap().is_empty(), "no LLM request");
    assert!(runner.gh_calls().is_empty(), "{:?}", runner.gh_calls());
    assert_eq!(remote.git(&["branch", "--list", "improve/*"]), "");
}

#[tokio::test(flavor = "multi_thread")]
async fn nightly_workflow_delivers_what_a_run_stopped_early_kept() {
    let doc = workflow(NIGHTLY);
    let remote = Remote::new();
    let main = remote.git(&["rev-parse", "main"]);
    // One answer, then the LLM is down: after 5 iterations in a row failing on it, improve
    // stops with exit 3, its first iteration kept.
    let (llm, _asked) = recorded_stand_in(1).await;
    let mut contexts = github_contexts(&format!("{}/v1", llm.uri()));
    let iterations = contexts
        .get_mut("vars.IMPROVE_NIGHTLY_ITERATIONS || '20'")
        .unwrap();
    *iterations = "8".into();
    let runner = Runner::new();
    let checkout = remote.checkout("night", "main");
    let ran = tokio::task::block_in_place(|| runner.run_job(&doc, "nightly", &checkout, &contexts));
    assert_eq!(
        ran,
        ["pending", "improve", "status", "push", "pull-request"]
    );
    let status = improve_json(&checkout, &["status", "--json"]);
    assert!(
        runner
            .step_stdout("improve")
            .contains("::notice::improve stopped at a limit"),
        "improve exited 3: {}",
        runner.step_stdout("improve")
    );
    assert_ne!(
        status["state"], "complete",
        "the run stopped early: {status}"
    );
    assert!(status["iterations_done"].as_u64().unwrap() < 8, "{status}");
    assert_eq!(status["kept"], 1, "{status}");
    let branch = status["run_branch"].as_str().unwrap();
    assert_eq!(
        remote.commits(&main, branch).len(),
        1,
        "what was kept is pushed"
    );
    let creates = runner
        .gh_calls()
        .into_iter()
        .filter(|c| argv(c)[..2] == ["pr", "create"])
        .count();
    assert_eq!(creates, 1, "and proposed");
}

fn str_args(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}
