//! What a night costs: dollars from the stand-in's own usage (cached reads and cache writes
//! included) at known prices, the `--max-cost` cap with calls in flight together, prompt
//! caching on a repair round, and the bad input around prices and caps.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::*;

/// What the stand-in reported for one call, in OpenAI's terms: every prompt token in
/// `prompt`, of which `cached` read from the cache and `written` written to it.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    prompt: u64,
    cached: u64,
    written: u64,
    output: u64,
}

/// A stand-in that reports usage the way the APIs do: prompt tokens from the request's size,
/// and a prompt cache for the stable prefix (the system prompt and the first user turn): on
/// Anthropic written on a first request and read by the next requests that send it again
/// (only when the request marks it with `cache_control`), on OpenAI read in 128-token steps
/// once it has been sent before. Every usage it reports goes into its log.
struct Metered {
    wire: Wire,
    answers: Mutex<VecDeque<String>>,
    seen_prefixes: Mutex<Vec<String>>,
    log: Arc<Mutex<Vec<Usage>>>,
    latency: Duration,
}

impl Metered {
    fn usage(&self, body: &serde_json::Value) -> Usage {
        let text = |v: &serde_json::Value| -> String {
            match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Array(blocks) => blocks
                    .iter()
                    .map(|b| b["text"].as_str().unwrap_or_default())
                    .collect(),
                _ => String::new(),
            }
        };
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        let all: String = messages.iter().map(|m| text(&m["content"])).collect();
        let (system, first_user) = match self.wire {
            Wire::OpenAi => (text(&messages[0]["content"]), text(&messages[1]["content"])),
            Wire::Anthropic => (text(&body["system"]), text(&messages[0]["content"])),
        };
        let prefix = format!("{system}{first_user}");
        let prompt = ((text(&body["system"]).len() + all.len()) / 4) as u64;
        let prefix_tokens = (prefix.len() / 4) as u64;
        let marked = body["messages"][0]["content"][0]["cache_control"]["type"] == "ephemeral";
        let mut seen = self.seen_prefixes.lock().unwrap();
        let again = seen.contains(&prefix);
        if !again {
            seen.push(prefix);
        }
        let (cached, written) = match self.wire {
            Wire::OpenAi if again => (prefix_tokens / 128 * 128, 0),
            Wire::OpenAi => (0, 0),
            Wire::Anthropic if !marked => (0, 0),
            Wire::Anthropic if again => (prefix_tokens, 0),
            Wire::Anthropic => (0, prefix_tokens),
        };
        Usage {
            prompt,
            cached,
            written,
            output: 300,
        }
    }
}

impl Respond for Metered {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        let Some(text) = self.answers.lock().unwrap().pop_front() else {
            return ResponseTemplate::new(500).set_body_string("stand-in: no answer queued");
        };
        let u = self.usage(&body);
        self.log.lock().unwrap().push(u);
        let answer = match self.wire {
            Wire::OpenAi => serde_json::json!({
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": u.prompt, "completion_tokens": u.output,
                          "prompt_tokens_details": {"cached_tokens": u.cached}}
            }),
            Wire::Anthropic => serde_json::json!({
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": u.prompt - u.cached - u.written, "output_tokens": u.output,
                          "cache_read_input_tokens": u.cached, "cache_creation_input_tokens": u.written}
            }),
        };
        ResponseTemplate::new(200)
            .set_body_json(answer)
            .set_delay(self.latency)
    }
}

struct Meter {
    server: MockServer,
    wire: Wire,
    log: Arc<Mutex<Vec<Usage>>>,
    model: &'static str,
}

impl Meter {
    async fn start(
        wire: Wire,
        model: &'static str,
        answers: Vec<&str>,
        latency: Duration,
    ) -> Meter {
        let server = MockServer::start().await;
        let log = Arc::new(Mutex::new(Vec::new()));
        Mock::given(method("POST"))
            .respond_with(Metered {
                wire,
                answers: Mutex::new(
                    answers
                        .iter()
                        .map(|a| format!("Here are the tests.\n\n```python\n{a}```\n"))
                        .collect(),
                ),
                seen_prefixes: Mutex::new(Vec::new()),
                log: log.clone(),
                latency,
            })
            .mount(&server)
            .await;
        Meter {
            server,
            wire,
            log,
            model,
        }
    }

    fn command(&self, repo: &Path, args: &[&str]) -> Command {
        let mut cmd = improve(repo);
        let (provider, url) = match self.wire {
            Wire::OpenAi => ("openai", format!("{}/v1", self.server.uri())),
            Wire::Anthropic => ("anthropic", self.server.uri()),
        };
        cmd.args([
            "--provider",
            provider,
            "--llm-url",
            &url,
            "--model",
            self.model,
        ])
        .args(["--test-cmd", &test_cmd(), "--mutants", "0"])
        .args(args);
        cmd
    }

    fn usage(&self) -> Vec<Usage> {
        self.log.lock().unwrap().clone()
    }

    /// What the stand-in's usage costs at `[input, output, cached, write]` dollars per million.
    fn dollars(&self, p: [f64; 4]) -> f64 {
        self.usage()
            .iter()
            .map(|u| {
                let plain = u.prompt - u.cached - u.written;
                (plain as f64 * p[0]
                    + u.output as f64 * p[1]
                    + u.cached as f64 * p[2]
                    + u.written as f64 * p[3])
                    / 1e6
            })
            .sum()
    }
}

/// One passing test that adds coverage, one failing: a repair round follows.
const HALF_RIGHT: &str = "from calc.ops import clamp, divide\n\n\ndef test_divide_exact():\n    assert divide(9, 3) == 3\n\n\ndef test_clamp_high():\n    assert clamp(5, 0, 3) == 5\n";
const THE_FIX: &str = "from calc.ops import clamp, divide\n\n\ndef test_divide_exact():\n    assert divide(9, 3) == 3\n\n\ndef test_clamp_high():\n    assert clamp(5, 0, 3) == 3\n";

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 0.0001
}

/// A first request and a repair round on `wire`, priced by the built-in table: the repair
/// reads the prefix from the cache, and every view shows the same dollars the stand-in's usage
/// comes to.
async fn repair_round_is_costed_with_its_cache_reads(
    wire: Wire,
    model: &'static str,
    price: [f64; 4],
) -> (Fixture, Meter) {
    let fx = Fixture::new();
    let meter = Meter::start(wire, model, vec![HALF_RIGHT, THE_FIX], Duration::ZERO).await;
    let out = output(meter.command(fx.root(), &["-n", "1", "--max-repairs", "1"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let usage = meter.usage();
    assert_eq!(usage.len(), 2, "{usage:?}");
    assert!(usage[1].cached > 0, "the repair read the prefix: {usage:?}");
    let expected = meter.dollars(price);

    let status = improve_json(fx.root(), &["status", "--json"]);
    assert!(
        close(status["cost_usd"].as_f64().unwrap(), expected),
        "{status:#}\n{expected}"
    );
    assert!(
        close(status["cost_usd_invocation"].as_f64().unwrap(), expected),
        "{status:#}"
    );
    assert_eq!(status["price"]["source"], "table", "{status:#}");
    assert_eq!(status["tokens_cached"], usage[1].cached, "{status:#}");
    assert!(status["cached_share"].as_f64().unwrap() > 0.0, "{status:#}");

    let log = log_of(&fx);
    assert!(
        close(log[0]["cost_usd"].as_f64().unwrap(), expected),
        "{log:#?}"
    );
    assert_eq!(log[0]["tokens_cached"], usage[1].cached, "{log:#?}");

    let show = improve_json(fx.root(), &["show", "1", "--json"]);
    let calls = show["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{show:#}");
    assert_eq!(
        (calls[0]["round"].as_u64(), calls[1]["round"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(calls[1]["tokens_cached"], usage[1].cached, "{show:#}");
    assert_eq!(calls[1]["tokens_in"], usage[1].prompt, "{show:#}");
    assert!(show["cached_share"].as_f64().unwrap() > 0.0, "{show:#}");
    let mut c = improve(fx.root());
    c.args(["show", "1"]);
    let text = stdout(&output(c).await);
    assert!(
        text.contains("call:     repair 1:") && text.contains("read from cache"),
        "{text}"
    );

    let report = improve_json(fx.root(), &["report", "--format", "json"]);
    assert!(
        close(report["cost"]["cost_usd"].as_f64().unwrap(), expected),
        "{report:#}"
    );
    assert_eq!(report["cost"]["known"], true);
    assert_eq!(report["cost"]["kept_tests"], 2);
    let dollars = |v: &serde_json::Value| -> f64 {
        v.as_str().unwrap().trim_start_matches('$').parse().unwrap()
    };
    let per_test = dollars(&report["cost"]["per_kept_test"]);
    assert!((per_test - expected / 2.0).abs() <= 0.00006, "{report:#}");
    assert_eq!(
        report["kept_iterations"][0]["cost"].as_str(),
        Some(usd(expected).as_str())
    );
    let md = std::fs::read_to_string(fx.state_dir().join("report.md")).unwrap();
    assert!(
        md.contains("per kept test") && md.contains("read from the server's cache"),
        "{md}"
    );
    assert!(
        md.contains(report["cost"]["table_hash"].as_str().unwrap()),
        "{md}"
    );
    (fx, meter)
}

/// The summaries' dollars: a tenth of a cent below a dollar.
fn usd(x: f64) -> String {
    match x.abs() {
        a if a == 0.0 || a >= 1.0 => format!("${x:.2}"),
        a if a >= 0.01 => format!("${x:.3}"),
        _ => format!("${x:.4}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_marks_the_prefix_for_the_cache_and_the_repair_reads_it() {
    let (_fx, meter) = repair_round_is_costed_with_its_cache_reads(
        Wire::Anthropic,
        "claude-sonnet-4-5-20250929",
        [3.0, 15.0, 0.3, 3.75],
    )
    .await;
    let requests = meter.server.received_requests().await.unwrap();
    let bodies: Vec<serde_json::Value> = requests
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    for body in &bodies {
        assert_eq!(
            body["system"][0]["cache_control"]["type"], "ephemeral",
            "{body:#}"
        );
        assert_eq!(
            body["messages"][0]["content"][0]["cache_control"]["type"],
            "ephemeral"
        );
    }
    // The repair resends the marked prefix byte for byte; its later turns carry no mark.
    assert_eq!(bodies[1]["system"], bodies[0]["system"]);
    assert_eq!(bodies[1]["messages"][0], bodies[0]["messages"][0]);
    assert!(
        bodies[1]["messages"][2]["content"].is_string(),
        "{:#}",
        bodies[1]
    );
    let usage = meter.usage();
    assert!(usage[0].written > 0 && usage[0].cached == 0, "{usage:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_repair_rounds_keep_the_prefix_first_and_read_it_from_the_cache() {
    let (_fx, meter) = repair_round_is_costed_with_its_cache_reads(
        Wire::OpenAi,
        "gpt-4o-mini-2024-07-18",
        [0.15, 0.6, 0.075, 0.15],
    )
    .await;
    let requests = meter.server.received_requests().await.unwrap();
    let body = |i: usize| serde_json::from_slice::<serde_json::Value>(&requests[i].body).unwrap();
    assert_eq!(body(1)["messages"][0], body(0)["messages"][0]);
    assert_eq!(body(1)["messages"][1], body(0)["messages"][1]);
}

/// `--max-cost` with four calls in flight that answer late: the run stops (exit 3) without
/// passing the cap, by the stand-in's own count, and the same command resumes and adds to
/// the run's total without passing the cap again.
#[tokio::test(flavor = "multi_thread")]
async fn max_cost_holds_with_jobs_and_the_same_command_resumes() {
    let fx = Fixture::new();
    let answers = [GOOD_OPS, GOOD_TEXT].repeat(12);
    let meter = Meter::start(
        Wire::OpenAi,
        "stand-in-model",
        answers,
        Duration::from_millis(400),
    )
    .await;
    let price = [20.0, 80.0, 20.0, 25.0];
    let cap = 0.3;
    let args = [
        "-n",
        "12",
        "--jobs",
        "4",
        "--max-repairs",
        "0",
        "--require-coverage-gain=false",
        "--price",
        "20,80",
        "--max-cost",
        "0.3",
        "--max-answer-tokens",
        "400",
    ];
    let out = output(meter.command(fx.root(), &args)).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--max-cost 0.3 reached"),
        "{}",
        stderr(&out)
    );
    let first = meter.dollars(price);
    let calls = meter.usage().len();
    assert!(first <= cap && calls >= 2, "{first} for {calls} calls");
    let status = improve_json(fx.root(), &["status", "--json"]);
    assert!(
        close(status["cost_usd"].as_f64().unwrap(), first),
        "{status:#} {first}"
    );
    assert!(status["cost_usd"].as_f64().unwrap() <= cap);
    assert_eq!(status["state"], "interrupted");
    assert!(
        status["iterations_done"].as_u64().unwrap() < 12,
        "{status:#}"
    );

    let out = output(meter.command(fx.root(), &args)).await;
    assert!(matches!(out.status.code(), Some(0 | 3)), "{}", stderr(&out));
    assert!(stderr(&out).contains("resuming run"), "{}", stderr(&out));
    let both = meter.dollars(price);
    assert!(meter.usage().len() > calls, "the resumed run made calls");
    let status = improve_json(fx.root(), &["status", "--json"]);
    assert!(
        close(status["cost_usd"].as_f64().unwrap(), both),
        "{status:#} {both}"
    );
    let this = status["cost_usd_invocation"].as_f64().unwrap();
    assert!(close(this, both - first) && this <= cap, "{status:#}");
}

/// `--max-cost` for a model improve has no price for, on a server that is not this machine:
/// refused before any request (the address is unroutable: a request would hang, not fail).
#[tokio::test(flavor = "multi_thread")]
async fn a_cap_with_an_unknown_price_refuses_to_start_and_says_how_to_price() {
    let fx = Fixture::new();
    let mut cmd = improve(fx.root());
    cmd.args([
        "--llm-url",
        "http://192.0.2.1:9/v1",
        "--model",
        "somebodys-model",
    ])
    .args(["--test-cmd", &test_cmd(), "--max-cost", "5"]);
    let started = std::time::Instant::now();
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("--price IN,OUT[,CACHED_IN]") && err.contains("somebodys-model"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        !fx.state_dir().join("state.json").exists(),
        "nothing started"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_prices_and_caps_are_usage_errors_and_a_shadowed_entry_is_noted() {
    let fx = Fixture::new();
    for (args, says) in [
        (vec!["--price", "3"], "IN,OUT[,CACHED_IN]"),
        (vec!["--price", "3,x"], "IN,OUT[,CACHED_IN]"),
        (vec!["--price=-1,2"], "IN,OUT[,CACHED_IN]"),
        (vec!["--max-cost", "0"], "more than 0 dollars"),
        (vec!["--max-cost=-2"], "more than 0 dollars"),
        (vec!["--max-cost", "lots"], "--max-cost"),
    ] {
        let mut cmd = improve(fx.root());
        cmd.args(["--llm-url", "http://127.0.0.1:9/v1", "--model", "m"])
            .args(&args);
        let out = output(cmd).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    // The user's price for a model the table knows: a note says whose wins.
    let meter = Meter::start(Wire::OpenAi, "gpt-4o", vec![GOOD_OPS], Duration::ZERO).await;
    let out = output(meter.command(
        fx.root(),
        &["-n", "1", "--price", "1,2", "--max-repairs", "0"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("note: --price 1,2 replaces the price table's")
            && err.contains("the user's price wins"),
        "{err}"
    );
    let status = improve_json(fx.root(), &["status", "--json"]);
    assert_eq!(status["price"]["source"], "user");
    assert!(close(
        status["cost_usd"].as_f64().unwrap(),
        meter.dollars([1.0, 2.0, 1.0, 1.25])
    ));
}
