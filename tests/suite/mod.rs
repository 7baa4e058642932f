//! Shared helpers: a real git repository with a small Python package, the real `improve` binary,
//! real pytest, and a real HTTP server standing in for the LLM.

#![allow(dead_code)]

mod bad_input;
mod ci_workflows;
mod cost;
mod distributed;
mod first_minutes;
mod jobs;
mod layouts;
mod loop_run;
mod mutation;
mod real_models;
mod resume;
mod sandbox;
mod settings;
mod since;
mod stops_coverage;
mod streaming;
mod wire;
mod yield_stages;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// The Python that has pytest and coverage: `IMPROVE_TEST_PYTHON` (the test script sets it to
/// its venv), else `python3`.
pub fn python() -> String {
    std::env::var("IMPROVE_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

pub fn test_cmd() -> String {
    format!("{} -m pytest", python())
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub const OPS: &str = r#"def add(a, b):
    return a + b


def divide(a, b):
    if b == 0:
        raise ZeroDivisionError("division by zero")
    return a / b


def clamp(x, lo, hi):
    if lo > hi:
        raise ValueError("lo must not exceed hi")
    return max(lo, min(x, hi))
"#;

/// More left to cover than in `OPS` (never imported at the start), so it is the first target.
pub const TEXT: &str = r#"SEPARATOR = "-"
EMPTY_NAME = "empty name"


def slug(s):
    return SEPARATOR.join(s.lower().split())


def initials(name):
    parts = name.split()
    if not parts:
        raise ValueError(EMPTY_NAME)
    return "".join(p[0].upper() for p in parts)
"#;

/// A git repository in a temp dir with a package `calc` (two modules) and one passing test.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("calc")).unwrap();
        std::fs::create_dir_all(root.join("tests")).unwrap();
        std::fs::write(root.join("calc/__init__.py"), "").unwrap();
        std::fs::write(root.join("calc/ops.py"), OPS).unwrap();
        std::fs::write(root.join("calc/text.py"), TEXT).unwrap();
        std::fs::write(
            root.join("tests/test_ops.py"),
            "from calc.ops import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
        )
        .unwrap();
        std::fs::write(
            root.join("pyproject.toml"),
            "[tool.pytest.ini_options]\npythonpath = [\".\"]\n",
        )
        .unwrap();
        git(root, &["init", "-q", "-b", "main"]);
        git(root, &["add", "-A"]);
        git(root, &["commit", "-qm", "initial"]);
        Fixture { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `text` to `path` (relative to the root) and commits it.
    pub fn commit_file(&self, path: &str, text: &str) {
        std::fs::write(self.root().join(path), text).unwrap();
        git(self.root(), &["add", "-A"]);
        git(self.root(), &["commit", "-qm", &format!("{path} written")]);
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root().join(".improve")
    }

    pub fn head(&self) -> String {
        git(self.root(), &["rev-parse", "HEAD"])
    }

    /// The run branch named in the state.
    pub fn run_branch(&self) -> String {
        let state: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(self.state_dir().join("state.json")).unwrap(),
        )
        .unwrap();
        state["run_branch"].as_str().unwrap().to_string()
    }

    /// Commits on the run branch since the base, oldest first.
    pub fn run_commits(&self) -> Vec<String> {
        let branch = self.run_branch();
        let out = git(
            self.root(),
            &["rev-list", "--reverse", &format!("main..{branch}")],
        );
        out.lines().map(str::to_string).collect()
    }

    /// Runs pytest on a fresh checkout of the run branch (not the user's tree).
    pub fn suite_passes_on_run_branch(&self) -> (bool, String) {
        let branch = self.run_branch();
        let check = tempfile::tempdir().unwrap();
        let wt = check.path().join("wt");
        git(
            self.root(),
            &[
                "worktree",
                "add",
                "-q",
                "--detach",
                wt.to_str().unwrap(),
                &branch,
            ],
        );
        let out = Command::new(python())
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .current_dir(&wt)
            .output()
            .unwrap();
        git(
            self.root(),
            &["worktree", "remove", "--force", wt.to_str().unwrap()],
        );
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    }
}

/// The real binary with a clean environment for keys and fast retries.
pub fn improve(repo: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_improve"));
    cmd.arg("--repo").arg(repo);
    for key in [
        "IMPROVE_API_KEY",
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "IMPROVE_LLM_URL",
        "IMPROVE_MODEL",
        "IMPROVE_TEST_ABORT_AT",
    ] {
        cmd.env_remove(key);
    }
    cmd.env("IMPROVE_RETRY_BASE_MS", "10");
    cmd
}

/// Runs a command on a blocking thread so the stand-in server keeps serving meanwhile.
pub async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("improve starts"))
        .await
        .expect("join")
}

/// `improve <args>` on `repo` against the stand-in `llm`, which must exit 0.
pub async fn run_ok(repo: &Path, llm: &StandIn, args: &[&str]) -> Output {
    let mut cmd = improve(repo);
    cmd.args(args);
    llm.args(&mut cmd);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    out
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

pub fn json(cmd: Command) -> serde_json::Value {
    let mut cmd = cmd;
    let out = cmd.output().expect("improve starts");
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("valid JSON")
}

/// The pid a hanging test wrote to `pid_file` (waiting up to 15 s for it); the file is removed.
pub async fn pid_written_to(pid_file: &Path) -> i32 {
    for _ in 0..300 {
        if std::fs::read_to_string(pid_file).is_ok_and(|t| !t.trim().is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let pid = std::fs::read_to_string(pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = std::fs::remove_file(pid_file);
    pid
}

/// Waits up to 5 s for `pid` to be gone; a zombie waiting for its new parent to reap it counts
/// as gone (it runs no more). Returns whether it still runs.
pub fn still_running_after_grace(pid: i32) -> bool {
    let running = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit(')').next().unwrap_or("").split_whitespace().next() != Some("Z"))
            .unwrap_or(false)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while running() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    running()
}

/// `improve <args>` on `repo`, which must succeed and print JSON (`status --json`, `log --json`).
pub fn improve_json(repo: &Path, args: &[&str]) -> serde_json::Value {
    let mut c = improve(repo);
    c.args(args);
    json(c)
}

/// What `improve <args>` on `repo` prints on standard output (a review command: no LLM).
pub async fn improve_stdout(repo: &Path, args: &[&str]) -> String {
    let mut c = improve(repo);
    c.args(args);
    stdout(&output(c).await)
}

/// The flags that point `improve` at a stand-in speaking `wire` at `url`.
fn point_at(cmd: &mut Command, wire: Wire, url: &str) {
    let provider = match wire {
        Wire::OpenAi => "openai",
        Wire::Anthropic => "anthropic",
    };
    cmd.args(["--provider", provider, "--llm-url", url]).args([
        "--model",
        "stand-in-model",
        "--test-cmd",
        &test_cmd(),
    ]);
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    OpenAi,
    Anthropic,
}

/// What the stand-in does for one call.
#[derive(Clone)]
pub enum Answer {
    /// A 200 with this text as the model's answer.
    Text(String),
    /// A raw response (status, headers, body), for misbehaviour.
    Raw(ResponseTemplate),
}

pub fn code_answer(code: &str) -> Answer {
    Answer::Text(format!("Here are the tests.\n\n```python\n{code}```\n"))
}

/// Serves queued answers in order; once the queue is empty, answers 500.
pub struct Queue {
    wire: Wire,
    answers: Mutex<VecDeque<Answer>>,
    /// How long every answer takes, as a real model's would.
    latency: std::time::Duration,
    /// Text answers to a request that asks to stream come as server-sent events.
    streams: bool,
}

/// The server-sent events that stream `pieces` in `wire`'s format, usage included.
pub fn sse_events(wire: Wire, pieces: &[String]) -> Vec<String> {
    let event = |name: &str, data: serde_json::Value| match wire {
        Wire::OpenAi => format!("data: {data}\n\n"),
        Wire::Anthropic => format!("event: {name}\ndata: {data}\n\n"),
    };
    let mut out = Vec::new();
    match wire {
        Wire::OpenAi => {
            out.push(event(
                "",
                serde_json::json!({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}),
            ));
            for p in pieces {
                out.push(event(
                    "",
                    serde_json::json!({"choices": [{"index": 0, "delta": {"content": p}}]}),
                ));
            }
            out.push(event("", serde_json::json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})));
            out.push(event("", serde_json::json!({"choices": [], "usage": {"prompt_tokens": 120, "completion_tokens": 45}})));
            out.push("data: [DONE]\n\n".into());
        }
        Wire::Anthropic => {
            out.push(event("message_start", serde_json::json!({"type": "message_start", "message": {"usage": {"input_tokens": 120, "output_tokens": 1}}})));
            out.push(event("content_block_start", serde_json::json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
            for p in pieces {
                out.push(event("content_block_delta", serde_json::json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}})));
            }
            out.push(event(
                "content_block_stop",
                serde_json::json!({"type": "content_block_stop", "index": 0}),
            ));
            out.push(event("message_delta", serde_json::json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 45}})));
            out.push(event(
                "message_stop",
                serde_json::json!({"type": "message_stop"}),
            ));
        }
    }
    out
}

/// An answer's text in the pieces a model streams it in: here one line each.
pub fn lines_of(text: &str) -> Vec<String> {
    text.split_inclusive('\n').map(str::to_string).collect()
}

impl Respond for Queue {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let next = self.answers.lock().unwrap().pop_front();
        let asks_stream = serde_json::from_slice::<serde_json::Value>(&req.body)
            .is_ok_and(|b| b["stream"] == true);
        let template = match next {
            Some(Answer::Text(text)) if self.streams && asks_stream => ResponseTemplate::new(200)
                .set_body_raw(sse_events(self.wire, &lines_of(&text)).concat(), "text/event-stream"),
            Some(Answer::Text(text)) => ResponseTemplate::new(200).set_body_json(match self.wire {
                Wire::OpenAi => serde_json::json!({
                    "id": "chatcmpl-1", "object": "chat.completion", "model": "stand-in",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 120, "completion_tokens": 45, "total_tokens": 165}
                }),
                Wire::Anthropic => serde_json::json!({
                    "id": "msg_1", "type": "message", "role": "assistant", "model": "stand-in",
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": "end_turn",
                    "usage": {"input_tokens": 120, "output_tokens": 45}
                }),
            }),
            Some(Answer::Raw(t)) => t,
            None => ResponseTemplate::new(500).set_body_string("stand-in: no answer queued"),
        };
        // Raw answers keep a delay of their own.
        if self.latency.is_zero() {
            template
        } else {
            template.set_delay(self.latency)
        }
    }
}

pub struct StandIn {
    pub server: MockServer,
    pub wire: Wire,
}

impl StandIn {
    pub async fn start(wire: Wire, answers: Vec<Answer>) -> StandIn {
        StandIn::with_latency(wire, answers, std::time::Duration::ZERO).await
    }

    /// A stand-in whose every answer takes `latency`.
    pub async fn with_latency(
        wire: Wire,
        answers: Vec<Answer>,
        latency: std::time::Duration,
    ) -> StandIn {
        StandIn::serve(wire, answers, latency, false).await
    }

    /// A stand-in that streams its text answers (server-sent events) when asked to.
    pub async fn streaming(wire: Wire, answers: Vec<Answer>) -> StandIn {
        StandIn::serve(wire, answers, std::time::Duration::ZERO, true).await
    }

    async fn serve(
        wire: Wire,
        answers: Vec<Answer>,
        latency: std::time::Duration,
        streams: bool,
    ) -> StandIn {
        let server = MockServer::start().await;
        let route = match wire {
            Wire::OpenAi => "/v1/chat/completions",
            Wire::Anthropic => "/v1/messages",
        };
        Mock::given(method("POST"))
            .and(path(route))
            .respond_with(Queue {
                wire,
                answers: Mutex::new(answers.into()),
                latency,
                streams,
            })
            .mount(&server)
            .await;
        StandIn { server, wire }
    }

    /// The `--llm-url` for this stand-in.
    pub fn url(&self) -> String {
        match self.wire {
            Wire::OpenAi => format!("{}/v1", self.server.uri()),
            Wire::Anthropic => self.server.uri(),
        }
    }

    pub async fn requests(&self) -> Vec<Request> {
        self.server.received_requests().await.unwrap_or_default()
    }

    /// Adds the flags that point `improve` at this stand-in.
    pub fn args(&self, cmd: &mut Command) {
        point_at(cmd, self.wire, &self.url());
    }
}

pub type Shared<T> = Arc<Mutex<T>>;

pub const GOOD_OPS: &str = "import pytest\n\nfrom calc.ops import clamp, divide\n\n\ndef test_divide():\n    assert divide(6, 3) == 2\n\n\ndef test_divide_by_zero():\n    with pytest.raises(ZeroDivisionError):\n        divide(1, 0)\n\n\ndef test_clamp_high():\n    assert clamp(5, 0, 3) == 3\n";
pub const GOOD_TEXT: &str = "import pytest\n\nfrom calc.text import initials, slug\n\n\ndef test_slug():\n    assert slug(\"Hello  World\") == \"hello-world\"\n\n\ndef test_initials():\n    assert initials(\"ada lovelace\") == \"AL\"\n\n\ndef test_initials_empty():\n    with pytest.raises(ValueError):\n        initials(\"   \")\n";
/// Good answer number `i`: `GOOD_TEXT` for even `i`, `GOOD_OPS` for odd, each with a literal
/// of its own. A queue of answers meets its iterations in any order with `--jobs` or kills, so
/// a module may get the same answer twice, and a test that is a copy of one kept before (shown
/// as an example) is dropped: variants keep every answer worth keeping.
pub fn good_answer(i: usize) -> Answer {
    code_answer(&if i.is_multiple_of(2) {
        GOOD_TEXT
            .replace("World\")", &format!("World{i}\")"))
            .replace("\"hello-world\"", &format!("\"hello-world{i}\""))
    } else {
        GOOD_OPS.replace(
            "divide(6, 3) == 2",
            &format!("divide(6 * {i}, 3) == 2 * {i}"),
        )
    })
}

/// Every test in it fails: nothing to keep (and no value to take from the code: `>` is not `==`).
pub const FAILING: &str = "from calc.ops import add\n\n\ndef test_add_wrong():\n    assert add(1, 1) > 2\n\n\ndef test_add_wrong_too():\n    assert add(2, 2) > 4\n";
/// Some tests pass, some fail (one parametrized case, one method): the failing ones go.
pub const PARTLY_FAILING: &str = "import pytest\n\nfrom calc.ops import add, clamp\n\n\ndef test_add_right():\n    assert add(1, 1) == 2\n\n\n@pytest.mark.parametrize('a, b, total', [(1, 2, 3), (2, 2, 5)])\ndef test_add_table(a, b, total):\n    assert add(a, b) == total\n\n\nclass TestClamp:\n    def test_inside(self):\n        assert clamp(2, 0, 5) == 2\n\n    def test_wrong(self):\n        assert clamp(9, 0, 5) > 5\n";
pub const INVALID: &str = "def test_broken(:\n    pass\n";
pub const ESCAPING: &str = "# ../../evil_test.py\ndef test_evil():\n    assert True\n";

/// The finished iterations, as `improve log --json` lists them.
pub fn log_of(fx: &Fixture) -> Vec<serde_json::Value> {
    improve_json(fx.root(), &["log", "--json"])
        .as_array()
        .unwrap()
        .clone()
}

/// The file the kept commit of iteration `n` added, as it is on the run branch.
pub fn kept_file(fx: &Fixture, row: &serde_json::Value) -> String {
    let file = row["files"][0].as_str().unwrap();
    git(fx.root(), &["show", &format!("{}:{file}", fx.run_branch())])
}

/// A stand-in that streams slowly, event by event, over a real socket (wiremock sends a body in
/// one piece), and notes whether the client closed the connection before the last event.
pub struct SlowStream {
    pub wire: Wire,
    addr: std::net::SocketAddr,
    /// Per request served: (events written, whether the client closed before the end).
    pub served: Shared<Vec<(usize, bool)>>,
    /// The bodies of the requests received.
    pub bodies: Shared<Vec<serde_json::Value>>,
}

impl SlowStream {
    /// Serves each answer's text as one event per line, `pause` after each; answers 500 once
    /// the queue is empty.
    pub async fn start(wire: Wire, answers: Vec<String>, pause: std::time::Duration) -> SlowStream {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let queue = Arc::new(Mutex::new(VecDeque::from(answers)));
        let served: Shared<Vec<(usize, bool)>> = Arc::default();
        let bodies: Shared<Vec<serde_json::Value>> = Arc::default();
        let (served2, bodies2) = (served.clone(), bodies.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let queue = queue.clone();
                let served = served2.clone();
                let bodies = bodies2.clone();
                tokio::spawn(async move {
                    // The request: headers, then as many bytes as content-length says.
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    let body_start = loop {
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..body_start]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < body_start + length {
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let body: serde_json::Value =
                        serde_json::from_slice(&buf[body_start..body_start + length])
                            .unwrap_or_default();
                    let streams = body["stream"] == true;
                    bodies.lock().unwrap().push(body);
                    let Some(text) = queue.lock().unwrap().pop_front() else {
                        let _ = socket
                            .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 9\r\nconnection: close\r\n\r\nno answer")
                            .await;
                        return;
                    };
                    assert!(streams, "the client asked for a whole answer");
                    let events = sse_events(wire, &lines_of(&text));
                    let _ = socket
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n")
                        .await;
                    let mut written = 0;
                    let mut closed = false;
                    for event in &events {
                        if socket.write_all(event.as_bytes()).await.is_err()
                            || socket.flush().await.is_err()
                        {
                            closed = true;
                            break;
                        }
                        written += 1;
                        tokio::time::sleep(pause).await;
                    }
                    served.lock().unwrap().push((written, closed));
                });
            }
        });
        SlowStream {
            wire,
            addr,
            served,
            bodies,
        }
    }

    pub fn url(&self) -> String {
        match self.wire {
            Wire::OpenAi => format!("http://{}/v1", self.addr),
            Wire::Anthropic => format!("http://{}", self.addr),
        }
    }

    pub fn args(&self, cmd: &mut Command) {
        point_at(cmd, self.wire, &self.url());
    }
}
