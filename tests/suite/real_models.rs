//! What real models do that well-formed stand-ins did not: repair answers that drop the tests
//! that passed or change nothing, prompts longer than the model's context, answers cut off at
//! the token limit or repeating one block until it. Each is a stand-in answer here.

use super::*;

/// The body of each request the stand-in received.
async fn bodies(llm: &StandIn) -> Vec<serde_json::Value> {
    llm.requests()
        .await
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

/// The whole text of a request: its system prompt and every message.
fn prompt_of(body: &serde_json::Value) -> String {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// One passing test that adds coverage, one failing.
const HALF_RIGHT: &str = "from calc.ops import clamp, divide\n\n\ndef test_divide_exact():\n    assert divide(9, 3) == 3\n\n\ndef test_clamp_high():\n    assert clamp(5, 0, 3) == 5\n";
/// The repair as a fresh file: the failing test fixed, the passing one left out.
const ONLY_THE_FIX: &str =
    "from calc.ops import clamp\n\n\ndef test_clamp_high():\n    assert clamp(5, 0, 3) == 3\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_repair_answer_that_leaves_out_a_passing_test_does_not_lose_it() {
    let fx = Fixture::new();
    let llm = StandIn::start(
        Wire::OpenAi,
        vec![code_answer(HALF_RIGHT), code_answer(ONLY_THE_FIX)],
    )
    .await;
    run_ok(fx.root(), &llm, &["-n", "1"]).await;
    let log = log_of(&fx);
    assert_eq!(log[0]["outcome"], "kept", "{log:#?}");
    assert_eq!(log[0]["repairs"], 1, "{log:#?}");
    assert_eq!(log[0]["tests_added"], 2, "{log:#?}");
    // Counted once each through the funnel.
    assert_eq!(log[0]["funnel"]["collected"], 2, "{log:#?}");
    let kept = kept_file(&fx, &log[0]);
    assert!(
        kept.contains("def test_divide_exact") && kept.contains("clamp(5, 0, 3) == 3"),
        "{kept}"
    );
    assert!(
        !kept.contains("== 5\n"),
        "the failing version is gone: {kept}"
    );
}

/// A passing parametrized test and a failing one; the repair rewrites both under the same names.
const PARAMETRIZED_FIRST: &str = "import pytest\n\nfrom calc.ops import clamp, divide\n\n\n@pytest.mark.parametrize('x', [-1, -5])\ndef test_clamp_low(x):\n    assert clamp(x, 0, 3) == 0\n\n\ndef test_divide_wrong():\n    assert divide(9, 3) == 4\n";
const PARAMETRIZED_REPAIR: &str = "import pytest\n\nfrom calc.ops import clamp, divide\n\n\n@pytest.mark.parametrize('x', [9])\ndef test_clamp_low(x):\n    assert clamp(x, 0, 3) == 3\n\n\ndef test_divide_wrong():\n    assert divide(9, 3) == 3\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_repair_that_rewrites_a_passing_decorated_test_under_its_name_keeps_both() {
    let fx = Fixture::new();
    let llm = StandIn::start(
        Wire::OpenAi,
        vec![
            code_answer(PARAMETRIZED_FIRST),
            code_answer(PARAMETRIZED_REPAIR),
        ],
    )
    .await;
    run_ok(fx.root(), &llm, &["-n", "1"]).await;
    let log = log_of(&fx);
    assert_eq!(log[0]["outcome"], "kept", "{log:#?}");
    let kept = kept_file(&fx, &log[0]);
    // The passing version as it was; the answer's, under a name of its own, covers nothing
    // more and goes as redundant (it did not overwrite the first).
    assert!(kept.contains("[-1, -5])\ndef test_clamp_low(x)"), "{kept}");
    let redundant = log[0]["dropped"]["redundant"].as_array().unwrap();
    assert!(
        redundant
            .iter()
            .any(|t| t.as_str().unwrap().contains("test_clamp_low_2[9]")),
        "{log:#?}"
    );
    assert!(kept.contains("divide(9, 3) == 3"), "{kept}");
}

/// The model stands by a test that contradicts the code (which clamps), in the same words.
const INSISTS: &str = "from calc.ops import clamp, divide\n\n\ndef test_divide_exact():\n    assert divide(9, 3) == 3\n\n\n# possible bug: a value above the range should raise, not be clamped\ndef test_clamp_above_range_raises():\n    assert clamp(9, 0, 5) == 9\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_repair_answer_that_changes_nothing_ends_the_repairs_without_another_call() {
    let fx = Fixture::new();
    let llm = StandIn::start(
        Wire::OpenAi,
        vec![
            code_answer(INSISTS),
            code_answer(INSISTS),
            code_answer(INSISTS),
        ],
    )
    .await;
    run_ok(fx.root(), &llm, &["-n", "1", "--max-repairs", "2"]).await;
    let log = log_of(&fx);
    assert_eq!(llm.requests().await.len(), 2, "{log:#?}");
    assert_eq!(log[0]["llm_calls"], 2, "{log:#?}");
    assert_eq!(log[0]["repairs"], 1, "{log:#?}");
    assert_eq!(log[0]["answers"]["unchanged_repairs"], 1, "{log:#?}");
    // The passing test is kept; the one the model stood by is a finding.
    assert_eq!(log[0]["outcome"], "kept", "{log:#?}");
    assert_eq!(log[0]["findings"].as_array().unwrap().len(), 1, "{log:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_three_repairs_that_changed_nothing_no_more_repairs_are_asked() {
    let fx = Fixture::new();
    let llm = StandIn::start(Wire::OpenAi, vec![code_answer(INSISTS); 10]).await;
    run_ok(fx.root(), &llm, &["-n", "4", "--max-repairs", "2"]).await;
    let log = log_of(&fx);
    // Three iterations asked for a repair once each (it changed nothing); the fourth did not.
    for row in &log[..3] {
        assert_eq!(row["llm_calls"], 2, "{log:#?}");
        assert_eq!(row["answers"]["unchanged_repairs"], 1, "{log:#?}");
    }
    assert_eq!(log[3]["llm_calls"], 1, "{log:#?}");
    assert_eq!(log[3]["repairs"], 0, "{log:#?}");
    assert_eq!(log[3]["answers"]["repairs_skipped"], 1, "{log:#?}");
    assert_eq!(llm.requests().await.len(), 7);
}

/// llama.cpp's answer to a prompt longer than its context.
fn context_refusal() -> Answer {
    Answer::Raw(ResponseTemplate::new(400).set_body_json(serde_json::json!({
        "error": {
            "code": 400,
            "message": "the request exceeds the available context size, try increasing it",
            "type": "exceed_context_size_error",
        }
    })))
}

/// A fixture whose guidelines alone fill a small prompt.
fn with_long_guidelines() -> Fixture {
    let fx = Fixture::new();
    let rule = "- Every test states in its name what it checks, and checks one thing.\n";
    std::fs::write(fx.root().join("CONTRIBUTING.md"), rule.repeat(50)).unwrap();
    git(fx.root(), &["add", "-A"]);
    git(fx.root(), &["commit", "-qm", "guidelines"]);
    fx
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prompt_refused_as_too_long_is_asked_again_at_half_the_size() {
    let fx = with_long_guidelines();
    let llm = StandIn::start(
        Wire::OpenAi,
        vec![context_refusal(), code_answer(GOOD_TEXT)],
    )
    .await;
    // No repairs: the first prompt has the whole budget (none kept for repair turns).
    let args = [
        "-n",
        "1",
        "--max-prompt-tokens",
        "2400",
        "--max-repairs",
        "0",
    ];
    run_ok(fx.root(), &llm, &args).await;
    let log = log_of(&fx);
    assert_eq!(log[0]["outcome"], "kept", "{log:#?}");
    assert_eq!(log[0]["llm_calls"], 2, "{log:#?}");
    assert_eq!(log[0]["answers"]["context_refusals"], 1, "{log:#?}");
    let bodies = bodies(&llm).await;
    let (first, second) = (prompt_of(&bodies[0]), prompt_of(&bodies[1]));
    // The guidelines fit the first prompt whole; the second is half the size, cut to fit.
    assert_eq!(first.matches("checks one thing").count(), 50, "{first}");
    assert!(second.matches("checks one thing").count() < 25, "{second}");
    assert!(second.len() <= 1200 * 3, "{} characters", second.len());
    assert!(second.contains("def initials(name)"), "{second}");
    // What was cut to fit is recorded for `show`.
    let cuts = log[0]["prompt_cuts"].as_array().unwrap();
    assert!(
        cuts.iter()
            .any(|c| c.as_str().unwrap().contains("CONTRIBUTING.md")),
        "{cuts:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_that_cannot_take_even_a_small_prompt_is_not_an_outage() {
    let fx = Fixture::new();
    let llm = StandIn::start(
        Wire::OpenAi,
        vec![context_refusal(), context_refusal(), code_answer(GOOD_OPS)],
    )
    .await;
    // One LLM failure would stop the run; refusals of a too-long prompt are not failures.
    let args = [
        "-n",
        "2",
        "--max-prompt-tokens",
        "2000",
        "--max-llm-failures",
        "1",
        "--max-repairs",
        "0",
    ];
    run_ok(fx.root(), &llm, &args).await;
    let log = log_of(&fx);
    assert_eq!(log[0]["outcome"], "error", "{log:#?}");
    assert!(
        log[0]["reason"]
            .as_str()
            .unwrap()
            .contains("too long for the model"),
        "{log:#?}"
    );
    assert_eq!(log[0]["answers"]["context_refusals"], 2, "{log:#?}");
    assert_eq!(log[1]["outcome"], "kept", "{log:#?}");
}

/// A chat completion cut at the token limit (`finish_reason: length`).
fn cut_off(text: &str) -> Answer {
    Answer::Raw(ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "stand-in",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "length"}],
        "usage": {"prompt_tokens": 900, "completion_tokens": 2000, "total_tokens": 2900}
    })))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_off_answer_keeps_its_tests_up_to_their_last_whole_statement() {
    let fx = Fixture::new();
    let answer = "Here you go.\n\n```python\nfrom calc.text import initials, slug\n\n\ndef test_slug():\n    assert slug(\"A  B\") == \"a-b\"\n\n\ndef test_initials():\n    assert initials(\"ada lovelace\") == \"AL\"\n    assert initials(\"b";
    let llm = StandIn::start(Wire::OpenAi, vec![cut_off(answer)]).await;
    run_ok(fx.root(), &llm, &["-n", "1", "--max-answer-tokens", "777"]).await;
    let log = log_of(&fx);
    assert_eq!(log[0]["outcome"], "kept", "{log:#?}");
    // The test cut inside keeps its whole statements; the line cut inside goes.
    assert_eq!(log[0]["tests_added"], 2, "{log:#?}");
    assert_eq!(log[0]["answers"]["salvaged"], 1, "{log:#?}");
    assert_eq!(log[0]["answers"]["salvaged_tests"], 2, "{log:#?}");
    let kept = kept_file(&fx, &log[0]);
    assert!(
        kept.trim_end()
            .ends_with("def test_initials():\n    assert initials(\"ada lovelace\") == \"AL\""),
        "{kept}"
    );
    assert!(!kept.contains("initials(\"b"), "{kept}");
    assert_eq!(bodies(&llm).await[0]["max_tokens"], 777);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_repeating_itself_is_cut_and_what_came_before_is_kept() {
    let fx = Fixture::new();
    let mut answer = String::from(
        "```python\nimport pytest\n\nfrom calc.text import initials, slug\n\n\ndef test_slug():\n    assert slug(\"A  B\") == \"a-b\"\n\n\ndef test_initials_rejects_blank():\n",
    );
    for _ in 0..40 {
        answer.push_str("    with pytest.raises(ValueError):\n        initials(\" \")\n");
    }
    let llm = StandIn::start(Wire::OpenAi, vec![cut_off(&answer)]).await;
    run_ok(fx.root(), &llm, &["-n", "1"]).await;
    let log = log_of(&fx);
    assert_eq!(log[0]["outcome"], "kept", "{log:#?}");
    // The test the model repeated a block in is whole with its first copy.
    assert_eq!(log[0]["tests_added"], 2, "{log:#?}");
    assert_eq!(log[0]["answers"]["repeating"], 1, "{log:#?}");
    let kept = kept_file(&fx, &log[0]);
    assert_eq!(
        kept.matches("pytest.raises(ValueError)").count(),
        1,
        "{kept}"
    );
    // The default answer budget.
    assert_eq!(bodies(&llm).await[0]["max_tokens"], 2000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_writing_one_test_over_and_over_under_new_names_is_cut() {
    // As Qwen2.5-Coder-0.5B did on pysnooper: each copy numbered and named anew.
    let fx = Fixture::new();
    let mut answer = String::from("```python\nfrom calc.text import slug\n\n");
    for k in 1..=30 {
        answer.push_str(&format!(
            "def test_slug_{k}():\n    # Test case {k}: spaces\n    assert slug(\"a  b\") == \"a-b\"\n\n"
        ));
    }
    answer.push_str("def test_slug_31():\n    # Test case 31");
    let llm = StandIn::start(Wire::OpenAi, vec![cut_off(&answer)]).await;
    run_ok(fx.root(), &llm, &["-n", "1"]).await;
    let log = log_of(&fx);
    assert_eq!(log[0]["outcome"], "kept", "{log:#?}");
    assert_eq!(log[0]["tests_added"], 1, "{log:#?}");
    assert_eq!(log[0]["answers"]["repeating"], 1, "{log:#?}");
    assert_eq!(log[0]["answers"]["salvaged_tests"], 1, "{log:#?}");
}

/// Uses a function `calc.ops` does not have: the model invented it.
const INVENTED: &str = "from calc import ops\n\n\ndef test_clamp_high():\n    assert ops.clamp(5, 0, 3) == 3\n\n\ndef test_saturate():\n    assert ops.saturate(5, 0, 3) == 3\n";
const REPAIRED: &str = "from calc import ops\n\n\ndef test_saturate_is_clamp():\n    assert ops.clamp(-1, 0, 3) == 0\n";

#[tokio::test(flavor = "multi_thread")]
async fn the_prompt_shows_the_modules_names_and_a_repair_for_a_missing_one_lists_them() {
    let fx = Fixture::new();
    let llm = StandIn::start(
        Wire::OpenAi,
        vec![code_answer(INVENTED), code_answer(REPAIRED)],
    )
    .await;
    run_ok(fx.root(), &llm, &["-n", "1"]).await;
    let bodies = bodies(&llm).await;
    let first = prompt_of(&bodies[0]);
    // The first target is calc/text.py, with its functions and signatures.
    assert!(
        first.contains("What `calc.text` defines") && first.contains("def initials(name)"),
        "{first}"
    );
    let repair = bodies[1]["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(repair.contains("defines only these names"), "{repair}");
    assert!(
        repair.contains("initials") && repair.contains("slug"),
        "{repair}"
    );
    let log = log_of(&fx);
    assert_eq!(log[0]["outcome"], "kept", "{log:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_new_test_is_not_run_again_for_flakiness() {
    let fx = Fixture::new();
    let llm = StandIn::start(Wire::OpenAi, vec![code_answer(FAILING)]).await;
    run_ok(
        fx.root(),
        &llm,
        &["-n", "1", "--max-repairs", "0", "--reruns", "5"],
    )
    .await;
    let log = log_of(&fx);
    let summary = log[0]["pytest_summary"].as_str().unwrap();
    // Two tests, six runs asked for: each failed once and was skipped five times.
    assert!(
        summary.contains("2 failed") && summary.contains("10 skipped"),
        "{summary}"
    );
}

/// `GOOD_TEXT` as a small model writes it: `pytest.raises` without `import pytest`.
const NO_IMPORT_PYTEST: &str = "from calc.text import initials, slug\n\n\ndef test_slug():\n    assert slug(\"Hello  World\") == \"hello-world\"\n\n\ndef test_initials_empty():\n    with pytest.raises(ValueError):\n        initials(\"   \")\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_import_pytest_is_added_without_a_repair_call() {
    let fx = Fixture::new();
    let llm = StandIn::start(Wire::OpenAi, vec![code_answer(NO_IMPORT_PYTEST)]).await;
    run_ok(fx.root(), &llm, &["-n", "1"]).await;
    let log = log_of(&fx);
    assert_eq!(llm.requests().await.len(), 1, "{log:#?}");
    assert_eq!(log[0]["outcome"], "kept", "{log:#?}");
    assert_eq!(log[0]["repairs"], 0, "{log:#?}");
    assert_eq!(log[0]["tests_added"], 2, "{log:#?}");
    assert_eq!(log[0]["answers"]["repairs_avoided"], 1, "{log:#?}");
    assert_eq!(
        log[0]["local_fixes"],
        serde_json::json!(["added `import pytest`"])
    );
    assert!(kept_file(&fx, &log[0]).contains("import pytest\n"));
    let show = improve_json(fx.root(), &["show", "1", "--json"]);
    assert_eq!(show["local_fixes"], log[0]["local_fixes"], "{show:#?}");
    let text = stdout(&output(improve_cmd(fx.root(), &["show", "1"])).await);
    assert!(text.contains("fixed:    added `import pytest`"), "{text}");
    assert!(text.contains("1 repairs avoided by local fixes"), "{text}");
}

fn improve_cmd(repo: &Path, args: &[&str]) -> Command {
    let mut c = improve(repo);
    c.args(args);
    c
}

/// For `calc/ops.py`: `clamp` used without an import, `divide` imported from a wrong path, and
/// the example test the prompt shows (tests/test_ops.py) written again under a new name.
const SLOPPY_OPS: &str = "from ops import divide\n\n\ndef test_divide():\n    assert divide(6, 3) == 2\n\n\ndef test_clamp_high():\n    assert clamp(5, 0, 3) == 3\n\n\ndef test_add_again():\n    # as the example does\n    assert add(2, 3) == 5\n";

#[tokio::test(flavor = "multi_thread")]
async fn imports_are_fixed_and_a_copied_example_test_dropped_without_a_repair_call() {
    let fx = Fixture::new();
    let llm = StandIn::start(Wire::OpenAi, vec![code_answer(SLOPPY_OPS)]).await;
    run_ok(fx.root(), &llm, &["-n", "1", "--package", "calc/ops.py"]).await;
    let log = log_of(&fx);
    let requests = bodies(&llm).await;
    assert_eq!(requests.len(), 1, "{log:#?}");
    // The prompt showed the example that the answer copied.
    assert!(
        prompt_of(&requests[0]).contains("def test_add():\n    assert add(2, 3) == 5"),
        "{}",
        prompt_of(&requests[0])
    );
    assert_eq!(log[0]["outcome"], "kept", "{log:#?}");
    assert_eq!(log[0]["repairs"], 0, "{log:#?}");
    assert_eq!(log[0]["tests_added"], 2, "{log:#?}");
    let fixes: Vec<&str> = log[0]["local_fixes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(
        fixes,
        [
            "rewrote `from ops import divide` as `from calc.ops import divide`",
            "dropped test_add_again: a copy of the example test tests/test_ops.py::test_add",
            // Not `add`: only the copy used it.
            "added `from calc.ops import clamp`",
        ],
        "{log:#?}"
    );
    let kept = kept_file(&fx, &log[0]);
    assert!(
        kept.starts_with("from calc.ops import divide\nfrom calc.ops import clamp\n"),
        "{kept}"
    );
    assert!(!kept.contains("test_add_again"), "{kept}");
    let show = improve_json(fx.root(), &["show", "1", "--json"]);
    assert_eq!(
        show["local_fixes"].as_array().unwrap().len(),
        3,
        "{show:#?}"
    );
}

/// A repair answer that fixes the failing test and, as small models do, leaves out `import
/// pytest` it still needs.
const REPAIR_WITHOUT_IMPORT: &str = "from calc.ops import clamp, divide\n\n\ndef test_divide_exact():\n    assert divide(9, 3) == 3\n\n\ndef test_clamp_high():\n    assert clamp(5, 0, 3) == 3\n\n\ndef test_clamp_reversed():\n    with pytest.raises(ValueError):\n        clamp(1, 3, 0)\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_repair_answer_is_fixed_locally_too_and_the_report_counts_the_repair_avoided() {
    let fx = Fixture::new();
    let llm = StandIn::start(
        Wire::OpenAi,
        vec![code_answer(HALF_RIGHT), code_answer(REPAIR_WITHOUT_IMPORT)],
    )
    .await;
    run_ok(fx.root(), &llm, &["-n", "1"]).await;
    let log = log_of(&fx);
    assert_eq!(llm.requests().await.len(), 2, "{log:#?}");
    assert_eq!(log[0]["outcome"], "kept", "{log:#?}");
    assert_eq!(log[0]["repairs"], 1, "{log:#?}");
    assert_eq!(log[0]["tests_added"], 3, "{log:#?}");
    assert_eq!(
        log[0]["local_fixes"],
        serde_json::json!(["repair 1: added `import pytest`"]),
        "{log:#?}"
    );
    // A second round was left: the missing import would have cost it.
    assert_eq!(log[0]["answers"]["repairs_avoided"], 1, "{log:#?}");
    let report = stdout(&output(improve_cmd(fx.root(), &["report"])).await);
    assert!(
        report.contains("1 repairs avoided by local fixes"),
        "{report}"
    );
}

/// One test passes; the other fails with a very long message, as a test printing a large value
/// does: its output alone would overflow the prompt budget of the repair.
const FAILS_AT_LENGTH: &str = "from calc.ops import clamp, divide\n\n\ndef test_divide_exact():\n    assert divide(9, 3) == 3\n\n\ndef test_clamp_high():\n    raise AssertionError('clamp gave ' + 'much too much output ' * 2000)\n";

#[tokio::test(flavor = "multi_thread")]
async fn the_first_prompt_leaves_room_for_repairs_and_a_repair_prompt_stays_in_the_budget() {
    let fx = Fixture::new();
    let llm = StandIn::start(
        Wire::OpenAi,
        vec![code_answer(FAILS_AT_LENGTH), code_answer(ONLY_THE_FIX)],
    )
    .await;
    let budget = 2000;
    let args = [
        "-n",
        "1",
        "--max-prompt-tokens",
        "2000",
        "--max-answer-tokens",
        "500",
        "--max-repairs",
        "1",
    ];
    run_ok(fx.root(), &llm, &args).await;
    let bodies = bodies(&llm).await;
    assert_eq!(bodies.len(), 2, "one repair");
    let size = |b: &serde_json::Value| prompt_of(b).len();
    // The first prompt keeps room for the answer and the repair turn...
    assert!(size(&bodies[0]) <= budget / 2 * 3, "{}", size(&bodies[0]));
    // ...and the repair, with a long failure output, stays in the budget.
    assert!(
        size(&bodies[1]) <= budget * 3,
        "{} characters",
        size(&bodies[1])
    );
    let repair = prompt_of(&bodies[1]);
    assert!(
        repair.contains("much too much output") && repair.contains("test_clamp_high"),
        "{repair}"
    );
    let log = log_of(&fx);
    let cuts = log[0]["prompt_cuts"]
        .as_array()
        .unwrap_or_else(|| panic!("{} {:#?}", repair.len(), log[0]));
    assert!(
        cuts.iter().any(|c| c
            .as_str()
            .unwrap()
            .contains("repair round 1: the failures' output cut short")),
        "{cuts:?}"
    );
}

/// A llama.cpp answer (non-streamed) with its `timings`: a server reading `read` prompt tokens
/// a second and writing `write`.
fn timed_answer(code: &str, read: f64, write: f64) -> Answer {
    Answer::Raw(ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("```python\n{code}```\n")}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1500, "completion_tokens": 200},
        "timings": {"prompt_n": 1500, "prompt_per_second": read, "predicted_n": 200, "predicted_per_second": write}
    })))
}

#[tokio::test(flavor = "multi_thread")]
async fn once_the_server_says_it_is_slow_prompts_are_sized_to_the_call_budget() {
    let fx = with_long_guidelines();
    // 5 tokens/s read, 4 written: in a 60 s call, a 200-token answer takes 50 s and leaves
    // 10 s of reading, less than a quarter of the budget: 15 s, 75 tokens, so the floor of
    // 1000 tokens (3000 characters).
    let llm = StandIn::start(
        Wire::OpenAi,
        vec![
            timed_answer(GOOD_TEXT, 5.0, 4.0),
            timed_answer(GOOD_OPS, 5.0, 4.0),
        ],
    )
    .await;
    let args = [
        "-n",
        "2",
        "--call-budget",
        "60s",
        "--require-coverage-gain=false",
    ];
    run_ok(fx.root(), &llm, &args).await;
    let bodies = bodies(&llm).await;
    assert_eq!(bodies.len(), 2);
    let (first, second) = (prompt_of(&bodies[0]), prompt_of(&bodies[1]));
    // The first call assumed a modest local server (40 read, 6 written a second): about
    // 2900 tokens, half of them kept for a repair; the second knows the server is slower.
    assert!(
        first.len() > second.len(),
        "{} vs {}",
        first.len(),
        second.len()
    );
    assert!(
        first.len() <= 2934 / 2 * 3 + 1000,
        "{} characters",
        first.len()
    );
    assert!(second.len() <= 1000 * 3, "{} characters", second.len());
    let log = log_of(&fx);
    let cuts = log[1]["prompt_cuts"].as_array().unwrap();
    assert!(
        cuts.iter()
            .any(|c| c.as_str().unwrap().contains("CONTRIBUTING.md")),
        "{cuts:?}"
    );
}

/// A small model's guess at a value: `divide(9, 3)` is `3.0`, not `4`; its other test passes.
const WRONG_VALUE: &str = "from calc.ops import clamp, divide\n\n\ndef test_divide_exact():\n    assert divide(9, 3) == 4\n    assert divide(1, 4) == 0.25\n\n\ndef test_clamp_high():\n    assert clamp(5, 0, 3) == 3\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_expected_value_becomes_the_value_the_code_gave_and_the_commit_says_so() {
    let fx = Fixture::new();
    let llm = StandIn::start(Wire::OpenAi, vec![code_answer(WRONG_VALUE)]).await;
    run_ok(fx.root(), &llm, &["-n", "1", "--max-repairs", "0"]).await;
    let log = log_of(&fx);
    assert_eq!(llm.requests().await.len(), 1, "{log:#?}");
    assert_eq!(log[0]["outcome"], "kept", "{log:#?}");
    assert_eq!(log[0]["tests_added"], 2, "{log:#?}");
    assert_eq!(log[0]["answers"]["values_adopted"], 1, "{log:#?}");
    let values = serde_json::json!(["test_divide_exact line 5: expected `4` -> `3.0`"]);
    assert_eq!(log[0]["values_from_code"], values, "{log:#?}");
    let kept = kept_file(&fx, &log[0]);
    assert!(
        kept.contains("    assert divide(9, 3) == 3.0\n    assert divide(1, 4) == 0.25\n"),
        "{kept}"
    );
    let message = git(fx.root(), &["log", "-1", "--format=%B", &fx.run_branch()]);
    assert!(
        message.contains(
            "Expected values taken from the code (check that each is what it should do):\n\
             - test_divide_exact line 5: expected `4` -> `3.0`\n"
        ),
        "{message}"
    );
    let show = improve_json(fx.root(), &["show", "1", "--json"]);
    assert_eq!(show["values_from_code"], values, "{show:#?}");
    let text = stdout(&output(improve_cmd(fx.root(), &["show", "1"])).await);
    assert!(
        text.contains("value:    test_divide_exact line 5: expected `4` -> `3.0` (from the code)"),
        "{text}"
    );
    assert!(
        text.contains("1 expected values taken from the code"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_test_the_model_stood_by_through_a_repair_keeps_its_value_and_stays_a_finding() {
    let fx = Fixture::new();
    let llm = StandIn::start(
        Wire::OpenAi,
        vec![code_answer(WRONG_VALUE), code_answer(WRONG_VALUE)],
    )
    .await;
    run_ok(fx.root(), &llm, &["-n", "1", "--max-repairs", "1"]).await;
    let log = log_of(&fx);
    assert_eq!(log[0]["repairs"], 1, "{log:#?}");
    assert!(log[0].get("values_from_code").is_none(), "{log:#?}");
    assert_eq!(log[0]["findings"].as_array().unwrap().len(), 1, "{log:#?}");
    assert_eq!(log[0]["tests_added"], 1, "{log:#?}");
    assert!(!kept_file(&fx, &log[0]).contains("test_divide_exact"));
}

/// One test with an unterminated string, as a small model quotes a quote; two valid ones.
const ONE_BROKEN: &str = "from calc.ops import clamp, divide\n\n\ndef test_divide_exact():\n    assert divide(9, 3) == 3\n\n\ndef test_quotes():\n    assert str(clamp(1, 0, 3)) == 'it's 1'\n\n\ndef test_clamp_high():\n    assert clamp(5, 0, 3) == 3\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_test_that_is_not_valid_python_is_dropped_and_the_others_are_kept() {
    let fx = Fixture::new();
    let llm = StandIn::start(Wire::OpenAi, vec![code_answer(ONE_BROKEN)]).await;
    run_ok(fx.root(), &llm, &["-n", "1"]).await;
    let log = log_of(&fx);
    assert_eq!(llm.requests().await.len(), 1, "{log:#?}");
    assert_eq!(log[0]["outcome"], "kept", "{log:#?}");
    assert_eq!(log[0]["tests_added"], 2, "{log:#?}");
    assert_eq!(
        log[0]["local_fixes"],
        serde_json::json!([
            "dropped test_quotes (line 9: unterminated string literal (detected at line 9)): invalid Python"
        ]),
        "{log:#?}"
    );
    assert!(!kept_file(&fx, &log[0]).contains("test_quotes"));
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_server_too_slow_for_repairs_the_values_come_from_the_code_before_any_repair() {
    let fx = Fixture::new();
    // llama.cpp's timings: 5 answer tokens a second, a repair would take minutes.
    let slow = |code: &str| timed_answer(code, 40.0, 5.0);
    let llm = StandIn::start(Wire::OpenAi, vec![slow(WRONG_VALUE), slow(WRONG_VALUE)]).await;
    run_ok(fx.root(), &llm, &["-n", "1", "--max-repairs", "2"]).await;
    let log = log_of(&fx);
    assert_eq!(
        llm.requests().await.len(),
        1,
        "no repair was asked: {log:#?}"
    );
    assert_eq!(log[0]["repairs"], 0, "{log:#?}");
    assert_eq!(log[0]["outcome"], "kept", "{log:#?}");
    assert_eq!(log[0]["tests_added"], 2, "{log:#?}");
    assert_eq!(
        log[0]["values_from_code"],
        serde_json::json!(["test_divide_exact line 5: expected `4` -> `3.0`"]),
        "{log:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_slow_server_one_repair_that_changed_nothing_is_enough_to_ask_for_none_again() {
    let fx = Fixture::new();
    // The model stands by a test that is no value to take (`>`), on a server writing 5 tokens
    // a second: its one repair changes nothing, and the next iteration asks for none.
    let insists =
        "from calc.ops import clamp\n\n\ndef test_clamp_above():\n    assert clamp(9, 0, 5) > 5\n";
    let slow = || timed_answer(insists, 40.0, 5.0);
    let llm = StandIn::start(Wire::OpenAi, vec![slow(), slow(), slow(), slow()]).await;
    run_ok(fx.root(), &llm, &["-n", "2", "--max-repairs", "2"]).await;
    let log = log_of(&fx);
    assert_eq!(log[0]["llm_calls"], 2, "{log:#?}");
    assert_eq!(log[0]["answers"]["unchanged_repairs"], 1, "{log:#?}");
    assert_eq!(log[1]["llm_calls"], 1, "{log:#?}");
    assert_eq!(log[1]["answers"]["repairs_skipped"], 1, "{log:#?}");
    assert_eq!(llm.requests().await.len(), 3);
}
