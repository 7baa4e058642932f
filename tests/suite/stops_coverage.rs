//! Stage covered: a kept commit never lowers the whole suite's measured coverage. A new test
//! that switches coverage off for the tests after it is found by our plugin and dropped, with
//! what it did; one that only changes the working directory harms nothing, since improve
//! measures with absolute paths, and is kept.

use super::*;

/// Runs after the new test file (`test_text_improve_1.py`): what it covers is lost when a new
/// test switched coverage off.
const LATER_TEST: &str = "from calc.ops import clamp, divide\n\n\ndef test_divide():\n    assert divide(6, 3) == 2\n\n\ndef test_clamp():\n    assert clamp(9, 0, 3) == 3\n";

const SETTRACE: &str = "import sys\n\nfrom calc.text import initials, slug\n\n\ndef test_initials():\n    assert initials('ada lovelace') == 'AL'\n\n\ndef test_slug_then_untrace():\n    assert slug('A B') == 'a-b'\n    sys.settrace(None)\n";

const CHDIR: &str = "import os\nimport tempfile\n\nfrom calc.text import initials, slug\n\n\ndef test_initials():\n    assert initials('ada lovelace') == 'AL'\n\n\ndef test_slug_elsewhere():\n    os.chdir(tempfile.gettempdir())\n    assert slug('A B') == 'a-b'\n";

fn fixture() -> Fixture {
    let fx = Fixture::new();
    fx.commit_file("tests/test_zz_later.py", LATER_TEST);
    fx
}

#[tokio::test(flavor = "multi_thread")]
async fn a_test_that_switches_coverage_off_is_dropped_and_its_neighbour_kept() {
    let fx = fixture();
    let llm = StandIn::start(Wire::OpenAi, vec![code_answer(SETTRACE)]).await;
    run_ok(fx.root(), &llm, &["-n", "1"]).await;
    let log = log_of(&fx);
    assert_eq!(log[0]["outcome"], "kept", "{log:#?}");
    assert_eq!(log[0]["tests_added"], 1, "{log:#?}");
    let dropped = log[0]["dropped"]["stops_coverage"].as_array().unwrap();
    assert_eq!(dropped.len(), 1, "{log:#?}");
    assert!(
        dropped[0]
            .as_str()
            .unwrap()
            .ends_with("test_slug_then_untrace"),
        "{log:#?}"
    );
    assert_eq!(log[0]["funnel"]["clean"], 2, "{log:#?}");
    assert_eq!(log[0]["funnel"]["covered"], 1, "{log:#?}");
    let kept = kept_file(&fx, &log[0]);
    assert!(
        kept.contains("def test_initials") && !kept.contains("settrace"),
        "{kept}"
    );
    // The kept commit's coverage is not below the start's.
    let status = improve_json(fx.root(), &["status", "--json"]);
    let (start, now) = (
        status["coverage_baseline"].as_f64().unwrap(),
        status["coverage_now"].as_f64().unwrap(),
    );
    assert!(now > start, "{status:#}");
    let shown = stdout(&improve(fx.root()).args(["show", "1"]).output().unwrap());
    assert!(shown.contains("stops coverage: "), "{shown}");

    // A proposal whose only test switches coverage off is rejected, saying what it did.
    let fx = fixture();
    let only = "import sys\n\nfrom calc.text import slug\n\n\ndef test_slug_then_untrace():\n    assert slug('A B') == 'a-b'\n    sys.settrace(None)\n";
    let llm = StandIn::start(Wire::OpenAi, vec![code_answer(only)]).await;
    run_ok(fx.root(), &llm, &["-n", "1"]).await;
    let log = log_of(&fx);
    assert_eq!(log[0]["outcome"], "rejected", "{log:#?}");
    let reason = log[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("stops coverage: ")
            && reason.contains("test_slug_then_untrace replaced the trace function"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_test_that_changes_the_working_directory_is_kept_and_coverage_still_measured() {
    let fx = fixture();
    let llm = StandIn::start(Wire::OpenAi, vec![code_answer(CHDIR)]).await;
    run_ok(fx.root(), &llm, &["-n", "1"]).await;
    let log = log_of(&fx);
    assert_eq!(log[0]["outcome"], "kept", "{log:#?}");
    assert_eq!(log[0]["tests_added"], 2, "{log:#?}");
    // What the tests after it covered (clamp's upper bound) is still measured.
    let status = improve_json(fx.root(), &["status", "--json"]);
    let st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.state_dir().join("state.json")).unwrap())
            .unwrap();
    let ops = |c: &serde_json::Value| c["modules"]["calc/ops.py"].as_f64().unwrap();
    let (start, now) = (
        ops(&st["baseline"]["coverage"]),
        ops(&st["iterations"][0]["verdict"]["coverage"]),
    );
    assert_eq!(now, start, "{st:#}");
    assert!(
        status["coverage_now"].as_f64().unwrap() > status["coverage_baseline"].as_f64().unwrap(),
        "{status:#}"
    );
}
