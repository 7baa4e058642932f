//! Both wire formats, recording and replay, and an endpoint that misbehaves the way real ones do.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_wire_format_end_to_end() {
    let fx = Fixture::new();
    let llm = StandIn::start(Wire::Anthropic, vec![code_answer(GOOD_TEXT)]).await;
    let mut cmd = improve(fx.root());
    cmd.args(["-n", "1"]).env("ANTHROPIC_API_KEY", "ant-key-1");
    llm.args(&mut cmd);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let requests = llm.requests().await;
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.headers.get("x-api-key").unwrap(), "ant-key-1");
    assert_eq!(r.headers.get("anthropic-version").unwrap(), "2023-06-01");
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["model"], "stand-in-model");
    // The stable prefix as blocks marked for the prompt cache.
    assert!(
        body["system"][0]["text"]
            .as_str()
            .unwrap()
            .contains("pytest")
    );
    assert_eq!(body["system"][0]["cache_control"]["type"], "ephemeral");
    assert!(
        body["messages"][0]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("calc/text.py")
    );
    let status = improve_json(fx.root(), &["status", "--json"]);
    assert_eq!(status["kept"], 1);
    assert_eq!(status["tokens_in"], 120);
    assert_eq!(status["tokens_out"], 45);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_prompt_carries_the_module_its_tests_and_the_guidelines() {
    let fx = Fixture::new();
    std::fs::write(fx.root().join("AGENTS.md"), "Always use plain asserts.\n").unwrap();
    git(fx.root(), &["add", "AGENTS.md"]);
    git(fx.root(), &["commit", "-qm", "guidelines"]);
    let llm = StandIn::start(
        Wire::OpenAi,
        vec![code_answer(GOOD_TEXT), code_answer(GOOD_OPS)],
    )
    .await;
    run_ok(
        fx.root(),
        &llm,
        &["-n", "2", "--focus", "boundaries,errors"],
    )
    .await;
    let requests = llm.requests().await;
    let bodies: Vec<serde_json::Value> = requests
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    let user = |i: usize| {
        bodies[i]["messages"][1]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(bodies[0]["messages"][0]["role"], "system");
    assert_eq!(bodies[0]["model"], "stand-in-model");
    assert!(
        bodies[0]["max_tokens"].as_u64().is_some() && bodies[0]["temperature"].as_f64().is_some()
    );
    // The most left to cover first: text.py has no tests at all.
    assert!(
        user(0).contains("`calc/text.py`") && user(0).contains("def initials"),
        "{}",
        user(0)
    );
    assert!(user(0).contains("boundaries") && user(0).contains("Always use plain asserts."));
    // The second targets ops.py and shows the existing test that imports it.
    assert!(
        user(1).contains("`calc/ops.py`")
            && user(1).contains("tests/test_ops.py")
            && user(1).contains("def test_add"),
        "{}",
        user(1)
    );
    assert!(user(1).contains("errors"));
    // Coverage-guided: text.py was never imported, so every line is marked; in ops.py only
    // what test_add does not run is.
    assert!(
        user(0).contains("   5! def slug(s):")
            && user(0).contains("Not covered yet: lines 1-2, 5-6, 9-13; branches 11->12, 11->13"),
        "{}",
        user(0)
    );
    assert!(
        user(1).contains("   1  def add(a, b):")
            && user(1).contains("   6!     if b == 0:")
            && user(1).contains("branches 6->7, 6->8")
            && user(1).contains("   7!         raise ZeroDivisionError"),
        "{}",
        user(1)
    );
    assert!(
        requests
            .iter()
            .all(|r| r.headers.get("authorization").is_none()),
        "no key set, no header"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recorded_run_replays_without_the_network() {
    let fx = Fixture::new();
    let llm = StandIn::start(
        Wire::OpenAi,
        vec![code_answer(GOOD_TEXT), code_answer(FAILING)],
    )
    .await;
    let recording = tempfile::tempdir().unwrap();
    let file = recording.path().join("rec.json");
    let mut cmd = improve(fx.root());
    cmd.args(["-n", "2", "--max-repairs", "0", "--record"])
        .arg(&file);
    llm.args(&mut cmd);
    assert_eq!(output(cmd).await.status.code(), Some(0));

    let fx2 = Fixture::new();
    let mut cmd = improve(fx2.root());
    cmd.args(["-n", "2", "--max-repairs", "0", "--replay"])
        .arg(&file)
        .arg("--test-cmd")
        .arg(test_cmd());
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let outcomes = |fx: &Fixture| -> Vec<String> {
        let log = improve_json(fx.root(), &["log", "--json"]);
        log.as_array()
            .unwrap()
            .iter()
            .map(|r| format!("{} {}", r["target"], r["outcome"]))
            .collect()
    };
    assert_eq!(outcomes(&fx), outcomes(&fx2));
    assert_eq!(
        llm.requests().await.len(),
        2,
        "the replay must not call the server"
    );
}

fn status_answer(code: u16) -> Answer {
    Answer::Raw(ResponseTemplate::new(code).set_body_string("overloaded"))
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_and_server_errors_are_retried() {
    let fx = Fixture::new();
    let answers = vec![
        Answer::Raw(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "1")
                .set_body_string("slow down"),
        ),
        status_answer(503),
        code_answer(GOOD_TEXT),
    ];
    let llm = StandIn::start(Wire::OpenAi, answers).await;
    let mut cmd = improve(fx.root());
    cmd.args(["-n", "1"]);
    llm.args(&mut cmd);
    let started = std::time::Instant::now();
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "Retry-After was not honoured"
    );
    assert_eq!(llm.requests().await.len(), 3);
    assert_eq!(fx.run_commits().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_llm_that_keeps_failing_stops_the_run_resumably() {
    let fx = Fixture::new();
    // Queue empty: every call answers 500. Two iterations in a row fail, then the run stops.
    let llm = StandIn::start(Wire::OpenAi, vec![]).await;
    let mut cmd = improve(fx.root());
    cmd.args(["-n", "4", "--max-llm-failures", "2"]);
    llm.args(&mut cmd);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("failed on the LLM"),
        "{}",
        stderr(&out)
    );
    let status = improve_json(fx.root(), &["status", "--json"]);
    assert_eq!(status["state"], "interrupted");
    assert_eq!(status["errors"], 2);
    let log = improve_json(fx.root(), &["log", "--json"]);
    assert!(
        log[0]["reason"].as_str().unwrap().contains("500"),
        "{log:#}"
    );

    // The endpoint recovers: the same command resumes and finishes.
    let llm2 = StandIn::start(
        Wire::OpenAi,
        vec![code_answer(GOOD_TEXT), code_answer(GOOD_OPS)],
    )
    .await;
    run_ok(fx.root(), &llm2, &[]).await;
    let status = improve_json(fx.root(), &["status", "--json"]);
    assert_eq!(status["iterations_done"], 4);
    assert_eq!(status["kept"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_kind_of_misbehaviour_is_classified_and_the_run_goes_on() {
    let fx = Fixture::new();
    let truncated = ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "choices": [{"message": {"content": "```python\ndef test_a():\n    assert"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 4096}
    }));
    let garbage =
        || Answer::Raw(ResponseTemplate::new(200).set_body_string("{\"choices\": [{\"mess"));
    let slow = || {
        Answer::Raw(
            ResponseTemplate::new(200)
                .set_delay(std::time::Duration::from_secs(3))
                .set_body_string("late"),
        )
    };
    let mut answers = vec![
        // 1: a 429 without Retry-After and a 502 are retried, then the answer is kept.
        status_answer(429),
        status_answer(502),
        code_answer(GOOD_TEXT),
        // 2: an empty answer; 3: cut off at the token limit; 4: prose without code.
        Answer::Text(String::new()),
        Answer::Raw(truncated),
        Answer::Text("I am sorry, I cannot write tests for this module.".into()),
    ];
    // 5: malformed JSON on every attempt; 6: slower than --llm-timeout on every attempt.
    answers.extend((0..5).map(|_| garbage()));
    answers.extend((0..5).map(|_| slow()));
    let llm = StandIn::start(Wire::OpenAi, answers).await;
    run_ok(
        fx.root(),
        &llm,
        &["-n", "6", "--llm-timeout", "1s", "--max-llm-failures", "3"],
    )
    .await;
    let log = improve_json(fx.root(), &["log", "--json"]);
    let row = |i: usize| {
        (
            log[i]["outcome"].as_str().unwrap().to_string(),
            log[i]["reason"].as_str().unwrap_or("").to_string(),
        )
    };
    assert_eq!(row(0).0, "kept", "{log:#}");
    assert_eq!(
        row(1),
        ("rejected".into(), "the answer has no code block".into())
    );
    assert_eq!(row(2).0, "rejected");
    assert!(
        row(2).1.contains("not closed") && row(2).1.contains("token limit"),
        "{}",
        row(2).1
    );
    assert_eq!(
        row(3),
        ("rejected".into(), "the answer has no code block".into())
    );
    assert_eq!(row(4).0, "error");
    assert!(row(4).1.contains("could not be read"), "{}", row(4).1);
    assert_eq!(row(5).0, "error");
    assert!(row(5).1.contains("did not answer"), "{}", row(5).1);
    // Tokens of the truncated answer were paid for and are counted.
    assert_eq!(log[2]["tokens_out"], 4096);
    assert_eq!(llm.requests().await.len(), 16);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_is_an_error_per_iteration_then_a_clean_stop() {
    let fx = Fixture::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = improve(fx.root());
    cmd.args([
        "-n",
        "5",
        "--max-llm-failures",
        "2",
        "--model",
        "m",
        "--test-cmd",
        &test_cmd(),
    ])
    .arg("--llm-url")
    .arg(format!("http://127.0.0.1:{port}/v1"));
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let log = improve_json(fx.root(), &["log", "--json"]);
    assert_eq!(log.as_array().unwrap().len(), 2);
    assert!(
        log[0]["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{port}")),
        "{log:#}"
    );
}
