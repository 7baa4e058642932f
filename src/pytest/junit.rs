//! What pytest said, read from its JUnit XML (any `junit_family`) and its closing line, never
//! from its console text otherwise.

use quick_xml::events::Event;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseOutcome {
    Passed,
    Failed,
    Error,
    Skipped,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TestCase {
    /// `classname::name` as pytest writes them, e.g. `tests.test_a.TestX::test_y`.
    pub id: String,
    pub outcome: CaseOutcome,
    pub message: String,
    /// The traceback pytest wrote for a failure or an error (cut to a few thousand characters).
    pub detail: String,
}

/// `text` without ANSI escape sequences (colours, cursor moves): a plugin may colour its
/// output whatever `--color` says.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        // CSI: ESC [ parameters, ended by a letter; other escapes are two characters long.
        if chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() || c == '~' {
                    break;
                }
            }
        } else if matches!(chars.next(), Some('(' | ')')) {
            // A character set designation: ESC ( B.
            chars.next();
        }
    }
    out
}

/// pytest's closing line (`== 3 passed, 1 failed in 0.20s ==`), without the decoration.
pub fn summary_line(output: &str) -> String {
    let output = strip_ansi(output);
    const WORDS: &[&str] = &[
        "passed",
        "failed",
        "error",
        "no tests ran",
        "skipped",
        "deselected",
    ];
    output
        .lines()
        .rev()
        .map(|l| l.trim().trim_matches('=').trim())
        .find(|l| {
            WORDS.iter().any(|w| l.contains(w)) && (l.contains(" in ") || l.starts_with("no tests"))
        })
        .unwrap_or("")
        .to_string()
}

/// Test cases from pytest's JUnit XML (any `junit_family`). Unreadable XML yields what was read.
/// How much of a failure's traceback is kept: enough for a repair prompt.
const MAX_DETAIL: usize = 3000;

fn push_detail(detail: &mut String, text: &str) {
    if detail.len() >= MAX_DETAIL {
        return;
    }
    detail.push_str(text);
    if detail.len() > MAX_DETAIL {
        let mut end = MAX_DETAIL;
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        detail.truncate(end);
    }
}

pub fn parse_junit(xml: &str) -> Vec<TestCase> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut cases = Vec::new();
    let mut current: Option<TestCase> = None;
    let mut in_failure = false;
    loop {
        match reader.read_event() {
            Ok(Event::Text(t)) if in_failure => {
                if let Some(case) = current.as_mut() {
                    push_detail(&mut case.detail, &t);
                }
            }
            Ok(Event::GeneralRef(r)) if in_failure => {
                if let Some(case) = current.as_mut() {
                    push_detail(&mut case.detail, &resolve_ref(&r));
                }
            }
            Ok(Event::End(e)) if matches!(e.name().0, "failure" | "error") => in_failure = false,
            Ok(Event::Start(e)) if e.name().0 == "testcase" => {
                cases.extend(current.replace(testcase_from(&e)));
                in_failure = false;
            }
            // A self-closing testcase has no children: it passed and is complete.
            Ok(Event::Empty(e)) if e.name().0 == "testcase" => {
                cases.extend(current.take());
                cases.push(testcase_from(&e));
            }
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => {
                in_failure = record_result(current.as_mut(), &e);
            }
            Ok(Event::End(e)) if e.name().0 == "testcase" => {
                in_failure = false;
                cases.extend(current.take());
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    cases.extend(current.take());
    cases
}

/// An entity or character reference inside a failure's text.
fn resolve_ref(r: &quick_xml::events::BytesRef<'_>) -> String {
    match (r.resolve_char_ref(), &**r) {
        (Ok(Some(c)), _) => c.to_string(),
        (_, "lt") => "<".into(),
        (_, "gt") => ">".into(),
        (_, "amp") => "&".into(),
        (_, "quot") => "\"".into(),
        (_, "apos") => "'".into(),
        (_, other) => format!("&{other};"),
    }
}

/// A `failure`, `error` or `skipped` element inside `case`: its outcome and message. Returns
/// whether the text that follows is the failure's traceback.
fn record_result(case: Option<&mut TestCase>, e: &quick_xml::events::BytesStart<'_>) -> bool {
    let outcome = match e.name().0 {
        "failure" => CaseOutcome::Failed,
        "error" => CaseOutcome::Error,
        "skipped" => CaseOutcome::Skipped,
        _ => return false,
    };
    let Some(case) = case else {
        return false;
    };
    // A failing test whose teardown also errors is still a failure.
    if case.outcome == CaseOutcome::Passed || outcome == CaseOutcome::Failed {
        case.outcome = outcome;
    }
    if case.message.is_empty() {
        case.message = e
            .attributes()
            .flatten()
            .find(|a| a.key.0 == "message")
            .and_then(|a| {
                a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .ok()
                    .map(|v| v.into_owned())
            })
            .unwrap_or_default();
    }
    // Only the first traceback: a file given several times (the reruns) reports its collection
    // error once per run, and a prompt needs it once.
    matches!(outcome, CaseOutcome::Failed | CaseOutcome::Error) && case.detail.is_empty()
}

fn testcase_from(e: &quick_xml::events::BytesStart<'_>) -> TestCase {
    let mut classname = String::new();
    let mut name = String::new();
    for attr in e.attributes().flatten() {
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map(|v| v.into_owned())
            .unwrap_or_default();
        match attr.key.0 {
            "classname" => classname = value,
            "name" => name = value,
            _ => {}
        }
    }
    let id = if classname.is_empty() {
        name
    } else {
        format!("{classname}::{name}")
    };
    TestCase {
        id,
        outcome: CaseOutcome::Passed,
        message: String::new(),
        detail: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_outcomes_and_ids() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="4">
<testcase classname="tests.test_a" name="test_ok" time="0.001" />
<testcase classname="tests.test_a.TestX" name="test_bad" time="0.001"><failure message="assert 1 == 2">def test_bad():
&gt;       assert 1 == 2 &amp;&#65;</failure></testcase>
<testcase classname="tests.test_a" name="test_skip" time="0"><skipped type="pytest.skip" message="nope">s</skipped></testcase>
<testcase classname="" name="tests.test_b" time="0"><error message="collection failure">boom</error></testcase>
</testsuite></testsuites>"#;
        let cases = parse_junit(xml);
        let got: Vec<(&str, CaseOutcome)> =
            cases.iter().map(|c| (c.id.as_str(), c.outcome)).collect();
        assert_eq!(
            got,
            vec![
                ("tests.test_a::test_ok", CaseOutcome::Passed),
                ("tests.test_a.TestX::test_bad", CaseOutcome::Failed),
                ("tests.test_a::test_skip", CaseOutcome::Skipped),
                ("tests.test_b", CaseOutcome::Error),
            ]
        );
        assert_eq!(cases[1].message, "assert 1 == 2");
        assert_eq!(cases[1].detail, "def test_bad():\n>       assert 1 == 2 &A");
        assert_eq!(cases[0].detail, "");
    }

    #[test]
    fn colour_codes_never_reach_a_summary() {
        let out = "\x1b[31m\x1b[1m===== \x1b[0m\x1b[31m6 errors\x1b[0m\x1b[31m in 0.30s\x1b[0m\x1b[31m\x1b[1m =====\x1b[0m\n";
        assert_eq!(summary_line(out), "6 errors in 0.30s");
        assert_eq!(strip_ansi("a\x1b[2Kb\x1b(Bc"), "abc");
    }

    #[test]
    fn summary_line_strips_decoration() {
        let out = "....F\n=== short test summary info ===\nFAILED x\n======= 4 passed, 1 failed in 0.12s =======\n";
        assert_eq!(summary_line(out), "4 passed, 1 failed in 0.12s");
        assert_eq!(
            summary_line("\nno tests ran in 0.01s\n"),
            "no tests ran in 0.01s"
        );
    }

    #[test]
    fn a_collection_error_reported_once_per_run_keeps_one_traceback() {
        let xml = r#"<testsuites><testsuite><testcase classname="" name="tests.test_x"><error message="collection failure">ImportError: no x</error><error message="collection failure">ImportError: no x</error></testcase></testsuite></testsuites>"#;
        let cases = parse_junit(xml);
        assert_eq!(cases.len(), 1);
        assert_eq!(cases[0].detail, "ImportError: no x");
        assert_eq!(cases[0].outcome, CaseOutcome::Error);
    }
}
