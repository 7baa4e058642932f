//! Issue 3's stages, each driven by a stand-in answer: coverage gain, pollution, repair rounds,
//! possible bugs, fix iterations, and the funnel that records them.

use super::*;

/// Serves `answers` (each a test file in a fenced block) from a stand-in, runs `improve` with
/// `args` on `fx`, which must exit 0, and returns the stand-in for its requests.
async fn run_answers(fx: &Fixture, answers: &[&str], args: &[&str]) -> StandIn {
    let llm = StandIn::start(
        Wire::OpenAi,
        answers.iter().map(|a| code_answer(a)).collect(),
    )
    .await;
    run_ok(fx.root(), &llm, args).await;
    llm
}

/// `test_add_again` runs only what the project's own test already runs.
const WITH_REDUNDANT: &str = "from calc.ops import add, clamp\n\n\ndef test_add_again():\n    assert add(1, 1) == 2\n\n\ndef test_clamp_low():\n    assert clamp(-5, 0, 3) == 0\n";
const ONLY_REDUNDANT: &str =
    "from calc.ops import add\n\n\ndef test_add_small():\n    assert add(0, 1) == 1\n";

#[tokio::test(flavor = "multi_thread")]
async fn tests_that_add_no_coverage_are_dropped_and_a_proposal_of_only_those_is_no_gain() {
    let fx = Fixture::new();
    run_answers(&fx, &[WITH_REDUNDANT, ONLY_REDUNDANT], &["-n", "2"]).await;
    let log = log_of(&fx);
    assert_eq!(log[0]["outcome"], "kept", "{log:#?}");
    assert_eq!(log[0]["tests_added"], 1, "{log:#?}");
    let kept = kept_file(&fx, &log[0]);
    assert!(
        kept.contains("def test_clamp_low") && !kept.contains("def test_add_again"),
        "{kept}"
    );
    assert_eq!(log[0]["funnel"]["stable"], 2, "{log:#?}");
    assert_eq!(log[0]["funnel"]["gain"], 1, "{log:#?}");
    assert_eq!(log[0]["funnel"]["kept"], 1, "{log:#?}");
    assert_eq!(log[1]["outcome"], "rejected", "{log:#?}");
    assert!(
        log[1]["reason"].as_str().unwrap().starts_with("no gain"),
        "{log:#?}"
    );

    // With the check off, the redundant test stays.
    let fx2 = Fixture::new();
    run_answers(
        &fx2,
        &[WITH_REDUNDANT],
        &["-n", "1", "--require-coverage-gain=false"],
    )
    .await;
    assert_eq!(log_of(&fx2)[0]["tests_added"], 2);
}

/// `test_clamp_low_and_patch` replaces `calc.ops.add` and never puts it back: every test that
/// runs after it in the same process and adds numbers fails.
const POLLUTING: &str = "import pytest\n\nimport calc.ops\nfrom calc.ops import clamp, divide\n\n\ndef test_divide_half():\n    assert divide(1, 2) == 0.5\n\n\ndef test_clamp_low_and_patch():\n    assert clamp(-5, 0, 3) == 0\n    calc.ops.add = lambda a, b: 0\n\n\ndef test_divide_by_zero():\n    with pytest.raises(ZeroDivisionError):\n        divide(1, 0)\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_test_that_pollutes_another_is_found_by_bisection_and_dropped() {
    let fx = Fixture::new();
    // A project test that runs after the new file (its name sorts last) and adds numbers.
    std::fs::write(
        fx.root().join("tests/test_zz_defaults.py"),
        "from calc import ops\n\n\ndef test_add_default():\n    assert ops.add(2, 2) == 4\n",
    )
    .unwrap();
    git(fx.root(), &["add", "-A"]);
    git(fx.root(), &["commit", "-qm", "a test that runs last"]);
    run_answers(&fx, &[POLLUTING], &["-n", "1"]).await;

    let log = log_of(&fx);
    assert_eq!(log[0]["outcome"], "kept", "{log:#?}");
    assert_eq!(log[0]["tests_added"], 2, "{log:#?}");
    let kept = kept_file(&fx, &log[0]);
    assert!(
        !kept.contains("test_clamp_low_and_patch")
            && kept.contains("def test_divide_half")
            && kept.contains("def test_divide_by_zero"),
        "{kept}"
    );
    assert_eq!(log[0]["funnel"]["gain"], 3, "{log:#?}");
    assert_eq!(log[0]["funnel"]["clean"], 2, "{log:#?}");
    assert_eq!(
        log[0]["polluters"][0].as_str().unwrap().rsplit("::").next(),
        Some("test_clamp_low_and_patch"),
        "{log:#?}"
    );
    let (ok, out) = fx.suite_passes_on_run_branch();
    assert!(ok, "{out}");
}

/// `test_clamp_inside` expects the wrong value; the first repair gets it wrong again, the
/// second right.
const WRONG_ONCE: &str = "from calc.ops import clamp, divide\n\n\ndef test_divide_exact():\n    assert divide(9, 3) == 3\n\n\ndef test_clamp_inside():\n    assert clamp(7, 0, 5) == 7\n";
const REPAIR_STILL_WRONG: &str = "from calc.ops import clamp, divide\n\n\ndef test_divide_exact():\n    assert divide(9, 3) == 3\n\n\ndef test_clamp_inside():\n    assert clamp(7, 0, 5) == 0\n";
const REPAIR_RIGHT: &str = "from calc.ops import clamp, divide\n\n\ndef test_divide_exact():\n    assert divide(9, 3) == 3\n\n\ndef test_clamp_inside():\n    assert clamp(7, 0, 5) == 5\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_repair_that_works_on_the_second_round_is_kept_and_the_conversation_goes_on() {
    let fx = Fixture::new();
    let llm = run_answers(
        &fx,
        &[WRONG_ONCE, REPAIR_STILL_WRONG, REPAIR_RIGHT],
        &["-n", "1"],
    )
    .await;
    let log = log_of(&fx);
    assert_eq!(log[0]["outcome"], "kept", "{log:#?}");
    assert_eq!(log[0]["repairs"], 2, "{log:#?}");
    assert_eq!(log[0]["tests_added"], 2, "{log:#?}");
    assert_eq!(log[0]["llm_calls"], 3, "{log:#?}");
    assert_eq!(log[0]["findings"].as_array().unwrap().len(), 0, "{log:#?}");
    let kept = kept_file(&fx, &log[0]);
    assert!(kept.contains("clamp(7, 0, 5) == 5"), "{kept}");

    // Each repair continues the first conversation: the model's earlier answers are in it,
    // and the last turn shows the failure pytest reported.
    let requests = llm.requests().await;
    assert_eq!(requests.len(), 3);
    let messages = |i: usize| -> Vec<serde_json::Value> {
        let body: serde_json::Value = serde_json::from_slice(&requests[i].body).unwrap();
        body["messages"].as_array().unwrap().clone()
    };
    let (first, second, third) = (messages(0), messages(1), messages(2));
    assert_eq!(second.len(), first.len() + 2);
    assert_eq!(third.len(), first.len() + 4);
    assert_eq!(second[first.len()]["role"], "assistant");
    assert!(
        second[first.len()]["content"]
            .as_str()
            .unwrap()
            .contains("== 7"),
        "{second:#?}"
    );
    let ask = third.last().unwrap()["content"].as_str().unwrap();
    assert!(
        ask.contains("test_clamp_inside") && ask.contains("assert 5 == 0"),
        "{ask}"
    );
    assert!(
        !ask.contains("test_divide_exact\n"),
        "only failing tests are shown: {ask}"
    );
}

/// The model stands by a test that contradicts the code (which clamps): a possible bug.
const INSISTS: &str = "from calc.ops import clamp, divide\n\n\ndef test_divide_exact():\n    assert divide(9, 3) == 3\n\n\n# possible bug: a value above the range should raise, not be clamped\ndef test_clamp_above_range_raises():\n    assert clamp(9, 0, 5) == 9\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_test_the_model_insists_on_is_reported_as_a_possible_bug_not_kept() {
    let fx = Fixture::new();
    run_answers(&fx, &[INSISTS, INSISTS, INSISTS], &["-n", "1"]).await;
    let log = log_of(&fx);
    assert_eq!(log[0]["outcome"], "kept", "{log:#?}");
    // The model answered the same file: the repairs end there (see real_models.rs).
    assert_eq!(log[0]["repairs"], 1, "{log:#?}");
    let kept = kept_file(&fx, &log[0]);
    assert!(!kept.contains("test_clamp_above_range_raises"), "{kept}");
    let findings = log[0]["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{log:#?}");
    assert!(
        findings[0]["test"]
            .as_str()
            .unwrap()
            .ends_with("::test_clamp_above_range_raises"),
        "{findings:#?}"
    );
    assert!(
        findings[0]["source"]
            .as_str()
            .unwrap()
            .contains("assert clamp(9, 0, 5) == 9"),
        "{findings:#?}"
    );
    let mut c = improve(fx.root());
    c.args(["report", "--out", "-"]);
    let report = stdout(&c.output().unwrap());
    assert!(
        report.contains("Possible bugs") && report.contains("test_clamp_above_range_raises"),
        "{report}"
    );
}

/// A test file that is red at the start: one test expects the wrong slug.
const RED_FILE: &str = "from calc.text import initials, slug\n\n\ndef test_initials_ok():\n    assert initials('ada lovelace') == 'AL'\n\n\ndef test_slug_keeps_case():\n    assert slug('Hello World') == 'Hello-World'\n";
/// Makes the red test pass by deleting it (and the other): not a fix.
const FIX_BY_DELETING: &str = "from calc.text import initials\n\n\ndef test_initials_ok():\n    assert initials('ada lovelace') == 'AL'\n";
const REAL_FIX: &str = "from calc.text import initials, slug\n\n\ndef test_initials_ok():\n    assert initials('ada lovelace') == 'AL'\n\n\ndef test_slug_keeps_case():\n    assert slug('Hello World') == 'hello-world'\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_red_suite_is_not_refused_and_fix_iterations_repair_it_first() {
    let fx = Fixture::new();
    std::fs::write(fx.root().join("tests/test_text.py"), RED_FILE).unwrap();
    git(fx.root(), &["add", "-A"]);
    git(fx.root(), &["commit", "-qm", "a red test"]);
    let llm = run_answers(&fx, &[FIX_BY_DELETING, REAL_FIX, GOOD_OPS], &["-n", "3"]).await;
    let log = log_of(&fx);
    let kinds: Vec<&str> = log.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["fix", "fix", "add"], "{log:#?}");
    assert_eq!(log[0]["target"], "tests/test_text.py");
    assert_eq!(log[0]["outcome"], "rejected", "{log:#?}");
    assert!(
        log[0]["reason"].as_str().unwrap().contains("fixes none"),
        "{log:#?}"
    );
    assert_eq!(log[1]["outcome"], "kept", "{log:#?}");
    assert_eq!(log[1]["tests_fixed"], 1, "{log:#?}");
    assert_eq!(log[1]["files"][0], "tests/test_text.py");
    assert_eq!(log[2]["outcome"], "kept", "{log:#?}");

    let status = improve_json(fx.root(), &["status", "--json"]);
    assert_eq!(status["tests_fixed"], 1, "{status:#}");
    let msg = git(
        fx.root(),
        &[
            "log",
            "-1",
            "--format=%B",
            log[1]["commit"].as_str().unwrap(),
        ],
    );
    assert!(
        msg.starts_with("improve #2: fix 1 failing tests in tests/test_text.py")
            && msg.contains("Kind: fix")
            && msg.contains("Tests fixed: 1"),
        "{msg}"
    );
    // The fix touched the test file only, and the prompt carried the failure and the code.
    let changed = git(
        fx.root(),
        &[
            "show",
            "--name-only",
            "--format=",
            log[1]["commit"].as_str().unwrap(),
        ],
    );
    assert_eq!(changed, "tests/test_text.py");
    let body: serde_json::Value = serde_json::from_slice(&llm.requests().await[0].body).unwrap();
    let ask = body["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        ask.contains("test_slug_keeps_case")
            && ask.contains("AssertionError")
            && ask.contains("def slug(s):"),
        "{ask}"
    );
    let (ok, out) = fx.suite_passes_on_run_branch();
    assert!(ok, "{out}");
}

/// `TestCase` is a data holder the tests build, not a test class: pytest would warn that it
/// cannot collect it.
const WITH_NON_TEST_CLASS: &str = "from calc.text import initials\n\n\nclass TestCase:\n    def __init__(self, name, expected):\n        self.name = name\n        self.expected = expected\n\n\ndef test_initials_table():\n    for case in [TestCase('ada lovelace', 'AL'), TestCase('x', 'X')]:\n        assert initials(case.name) == case.expected\n";

#[tokio::test(flavor = "multi_thread")]
async fn test_classes_that_are_not_tests_are_marked_so() {
    let fx = Fixture::new();
    run_answers(&fx, &[WITH_NON_TEST_CLASS], &["-n", "1"]).await;
    let log = log_of(&fx);
    assert_eq!(log[0]["outcome"], "kept", "{log:#?}");
    assert_eq!(log[0]["tests_added"], 1, "{log:#?}");
    let kept = kept_file(&fx, &log[0]);
    assert!(
        kept.contains("class TestCase:\n    __test__ = False"),
        "{kept}"
    );
    // pytest no longer warns about it.
    let (ok, out) = fx.suite_passes_on_run_branch();
    assert!(ok && !out.contains("PytestCollectionWarning"), "{out}");
}

/// Imports a name the module does not have: the file does not collect.
const DOES_NOT_COLLECT: &str = "from calc.ops import clamp, divide, multiply\n\n\ndef test_divide_exact():\n    assert divide(9, 3) == 3\n";
const COLLECTS: &str = "from calc.ops import clamp, divide\n\n\ndef test_divide_exact():\n    assert divide(9, 3) == 3\n\n\ndef test_clamp_low():\n    assert clamp(-1, 0, 3) == 0\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_does_not_collect_gets_one_repair_round() {
    let fx = Fixture::new();
    let llm = run_answers(&fx, &[DOES_NOT_COLLECT, COLLECTS], &["-n", "1"]).await;
    let log = log_of(&fx);
    assert_eq!(log[0]["outcome"], "kept", "{log:#?}");
    assert_eq!(log[0]["repairs"], 1, "{log:#?}");
    assert_eq!(log[0]["tests_added"], 2, "{log:#?}");
    // The repair request showed the import error pytest reported.
    let requests = llm.requests().await;
    assert_eq!(requests.len(), 2);
    let body: serde_json::Value = serde_json::from_slice(&requests[1].body).unwrap();
    let ask = body["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        ask.contains("to collect") && ask.contains("multiply"),
        "{ask}"
    );

    // Only one round for a file that does not collect: a second broken answer is rejected.
    let fx2 = Fixture::new();
    let llm2 = run_answers(&fx2, &[DOES_NOT_COLLECT, DOES_NOT_COLLECT], &["-n", "1"]).await;
    let log = log_of(&fx2);
    assert_eq!(log[0]["outcome"], "rejected", "{log:#?}");
    assert!(
        log[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("does not collect"),
        "{log:#?}"
    );
    assert_eq!(llm2.requests().await.len(), 2);
}

/// One parametrized test whose second case fails: pruning takes the whole function.
const ONE_PARAMETRIZED: &str = "import pytest\n\nfrom calc.ops import clamp\n\n\n@pytest.mark.parametrize('x, want', [(-1, 0), (9, 9)])\ndef test_clamp_table(x, want):\n    assert clamp(x, 0, 5) == want\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_proposal_left_without_tests_after_pruning_is_rejected() {
    let fx = Fixture::new();
    run_answers(&fx, &[ONE_PARAMETRIZED], &["-n", "1", "--max-repairs", "0"]).await;
    let log = log_of(&fx);
    assert_eq!(log[0]["outcome"], "rejected", "{log:#?}");
    assert!(
        log[0]["reason"]
            .as_str()
            .unwrap()
            .contains("cases of the same functions"),
        "{log:#?}"
    );
    assert!(fx.run_commits().is_empty());
}

const ONE_FAILS: &str = "from calc.ops import clamp\n\n\ndef test_clamp_low():\n    assert clamp(-1, 0, 5) == 0\n\n\ndef test_clamp_wrong():\n    assert clamp(9, 0, 5) == 9\n";
const REPAIR_BREAKS_IT: &str = "from calc.ops import clamp, nothing_here\n\n\ndef test_clamp_low():\n    assert clamp(-1, 0, 5) == 0\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_repair_that_breaks_the_file_is_undone_and_the_passing_tests_kept() {
    let fx = Fixture::new();
    run_answers(
        &fx,
        &[ONE_FAILS, REPAIR_BREAKS_IT],
        &["-n", "1", "--max-repairs", "1"],
    )
    .await;
    let log = log_of(&fx);
    assert_eq!(log[0]["outcome"], "kept", "{log:#?}");
    assert_eq!(log[0]["tests_added"], 1, "{log:#?}");
    let kept = kept_file(&fx, &log[0]);
    assert!(
        kept.contains("def test_clamp_low") && !kept.contains("nothing_here"),
        "{kept}"
    );
}

/// A project test file that does not import at all.
const BROKEN_IMPORT: &str = "from calc.text import slug, no_such_function\n\n\ndef test_slug():\n    assert slug('A b') == 'a-b'\n";
const IMPORT_FIXED: &str =
    "from calc.text import slug\n\n\ndef test_slug():\n    assert slug('A b') == 'a-b'\n";

fn with_broken_test_file() -> Fixture {
    let fx = Fixture::new();
    std::fs::write(fx.root().join("tests/test_text.py"), BROKEN_IMPORT).unwrap();
    git(fx.root(), &["add", "-A"]);
    git(
        fx.root(),
        &["commit", "-qm", "a test file that does not import"],
    );
    fx
}

#[tokio::test(flavor = "multi_thread")]
async fn a_test_file_that_does_not_import_neither_blocks_the_run_nor_escapes_fixing() {
    // Two failed fixes, then the file is left to a human: the add iteration after them is
    // kept although that file still does not collect in the suite.
    let fx = with_broken_test_file();
    run_answers(&fx, &[BROKEN_IMPORT, BROKEN_IMPORT, GOOD_OPS], &["-n", "3"]).await;
    let log = log_of(&fx);
    let kinds: Vec<&str> = log.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["fix", "fix", "add"], "{log:#?}");
    assert_eq!(log[2]["outcome"], "kept", "{log:#?}");

    // A fix that makes it import counts as a fixed test.
    let fx2 = with_broken_test_file();
    run_answers(&fx2, &[IMPORT_FIXED], &["-n", "1"]).await;
    let log = log_of(&fx2);
    assert_eq!(log[0]["kind"], "fix", "{log:#?}");
    assert_eq!(log[0]["outcome"], "kept", "{log:#?}");
    assert_eq!(log[0]["tests_fixed"], 1, "{log:#?}");
    let (ok, out) = fx2.suite_passes_on_run_branch();
    assert!(ok, "{out}");
}
