//! Answers streamed: a runaway is stopped while it streams (the stand-in sees the client hang
//! up), its complete tests are kept, and the state says what stopping saved.

use std::time::{Duration, Instant};

use super::*;

/// GOOD_TEXT's three tests, then a test enumerating one assert with new literals, 150 times.
fn runaway_answer() -> String {
    let mut code =
        format!("{GOOD_TEXT}\n\ndef test_slug_cases():\n    assert slug(\"\") == \"\"\n");
    for k in 0..150 {
        code.push_str(&format!("    assert slug(\"Word{k}\") == \"word{k}\"\n"));
    }
    format!("Here are the tests.\n\n```python\n{code}```\n\nThey cover slug and initials.\n")
}

/// The saved state's iteration 1.
fn iteration_one(fx: &Fixture) -> serde_json::Value {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.state_dir().join("state.json")).unwrap())
            .unwrap();
    state["iterations"][0].clone()
}

async fn a_runaway_is_stopped_while_streaming(wire: Wire) {
    let fx = Fixture::new();
    let pause = Duration::from_millis(30);
    let llm = SlowStream::start(wire, vec![runaway_answer()], pause).await;
    let events = sse_events(wire, &lines_of(&runaway_answer())).len();
    let mut cmd = improve(fx.root());
    cmd.args(["-n", "1", "--max-answer-tokens", "2000"]);
    llm.args(&mut cmd);
    let started = Instant::now();
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // The client hung up soon after the enumeration began, long before the answer's end.
    let mut served = Vec::new();
    for _ in 0..100 {
        served = llm.served.lock().unwrap().clone();
        if !served.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served.len(), 1, "one call");
    let (written, closed) = served[0];
    assert!(
        closed,
        "the client read the whole stream ({written} events)"
    );
    assert!(
        written < 60 && written < events,
        "{written} of {events} events written"
    );
    assert!(
        started.elapsed() < pause * events as u32 + Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(llm.bodies.lock().unwrap()[0]["stream"], true);

    // The complete tests before the runaway are kept.
    let status = improve_json(fx.root(), &["status", "--json"]);
    assert_eq!(status["kept"], 1, "{status}");
    let row = &log_of(&fx)[0];
    let kept = kept_file(&fx, row);
    for test in [
        "def test_slug(",
        "def test_initials(",
        "def test_initials_empty(",
    ] {
        assert!(kept.contains(test), "{test} not kept:\n{kept}");
    }
    assert!(!kept.contains("Word3"), "{kept}");

    // The state says why it stopped and what that saved; log --json shows the same.
    let it = iteration_one(&fx);
    let answers = &it["answers"];
    assert_eq!(answers["stopped"], 1, "{answers}");
    assert_eq!(answers["runaways"], 1, "{answers}");
    let stop = &answers["stops"][0];
    assert_eq!(stop["reason"], "enumeration", "{answers}");
    assert_eq!(stop["round"], 0);
    let received = stop["tokens_received"].as_u64().unwrap();
    let saved = answers["tokens_saved"].as_u64().unwrap();
    assert!(received > 0 && saved == 2000 - received, "{answers}");
    assert_eq!(row["answers"], *answers);
    assert_eq!(it["tokens_out"].as_u64(), Some(received));

    // The answer saved is what was kept: the enumeration's first three statements, closed.
    let show = stdout(
        &output({
            let mut c = improve(fx.root());
            c.args(["show", "1"]);
            c
        })
        .await,
    );
    assert!(
        show.contains("stopped:  the first answer while streaming (enumeration)"),
        "{show}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runaway_openai_stream_is_cut_and_its_complete_tests_kept() {
    a_runaway_is_stopped_while_streaming(Wire::OpenAi).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runaway_anthropic_stream_is_cut_and_its_complete_tests_kept() {
    a_runaway_is_stopped_while_streaming(Wire::Anthropic).await;
}

/// A stand-in that streams (in one piece): the answers are read as events, each stopped once
/// its code block closes, and the run goes as with whole answers.
#[tokio::test(flavor = "multi_thread")]
async fn streamed_answers_in_both_formats_run_as_whole_ones_do() {
    for wire in [Wire::OpenAi, Wire::Anthropic] {
        let fx = Fixture::new();
        let llm = StandIn::streaming(wire, vec![code_answer(GOOD_TEXT)]).await;
        run_ok(fx.root(), &llm, &["-n", "1"]).await;
        let requests = llm.requests().await;
        assert_eq!(requests.len(), 1);
        let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
        assert_eq!(body["stream"], true);
        let status = improve_json(fx.root(), &["status", "--json"]);
        assert_eq!(status["kept"], 1, "{status}");
        let answers = &iteration_one(&fx)["answers"];
        assert_eq!(answers["stopped"], 1, "{answers}");
        assert_eq!(answers["runaways"], 0, "{answers}");
        assert_eq!(answers["tokens_saved"], 0, "{answers}");
        assert_eq!(answers["stops"][0]["reason"], "code_closed", "{answers}");
    }
}
