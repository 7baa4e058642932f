//! Issue 15: the mutation check. Mutants of the target on the lines the new tests cover; a
//! test that notices none is dropped as asserting nothing; hanging mutants are killed; the
//! module's file is the same, byte for byte, after the stage and after a kill inside it.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

/// `test_slug_runs` calls `slug` and checks nothing; `test_initials` checks what it returns.
const ONE_EMPTY: &str = "from calc.text import initials, slug\n\n\ndef test_slug_runs():\n    slug(\"Hello World\")\n\n\ndef test_initials():\n    assert initials(\"ada lovelace\") == \"AL\"\n";

const ONLY_EMPTY: &str =
    "from calc.text import slug\n\n\ndef test_slug_runs():\n    slug(\"Hello World\")\n";

fn mutation_of(row: &serde_json::Value) -> &serde_json::Value {
    &row["mutation"]
}

/// Every line and branch of `calc/ops.py`, so that `calc/text.py` is the only target left.
const OPS_COVERED: &str = "import pytest\n\nfrom calc.ops import add, clamp, divide\n\n\ndef test_all():\n    assert add(1, 2) == 3\n    assert divide(4, 2) == 2\n    with pytest.raises(ZeroDivisionError):\n        divide(1, 0)\n    with pytest.raises(ValueError):\n        clamp(1, 2, 0)\n    assert clamp(5, 0, 3) == 3\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_test_that_asserts_nothing_is_dropped_and_its_neighbour_kept() {
    let fx = Fixture::new();
    fx.commit_file("tests/test_ops_all.py", OPS_COVERED);
    let llm = StandIn::start(
        Wire::OpenAi,
        vec![code_answer(ONE_EMPTY), code_answer(ONLY_EMPTY)],
    )
    .await;
    // Stopped right after the first iteration's verification: the module in the worktree the
    // stage ran in is as it was, byte for byte.
    let mut cmd = improve(fx.root());
    cmd.args(["-n", "2", "--jobs", "1"])
        .env("IMPROVE_TEST_ABORT_AT", "verified:1");
    llm.args(&mut cmd);
    assert_ne!(output(cmd).await.status.code(), Some(0));
    let original = std::fs::read(fx.root().join("calc/text.py")).unwrap();
    let mut worktrees = 0;
    for wt in std::fs::read_dir(fx.state_dir().join("worktrees")).unwrap() {
        let module = wt.unwrap().path().join("calc/text.py");
        if module.is_file() {
            assert_eq!(std::fs::read(&module).unwrap(), original);
            worktrees += 1;
        }
    }
    assert_eq!(worktrees, 1, "no worktree left to look at");
    run_ok(fx.root(), &llm, &["-n", "2", "--jobs", "1"]).await;
    let log = log_of(&fx);
    assert_eq!(log[0]["target"], "calc/text.py", "{log:#?}");
    assert_eq!(log[0]["outcome"], "kept", "{log:#?}");
    assert_eq!(log[0]["tests_added"], 1, "{log:#?}");
    let kept = kept_file(&fx, &log[0]);
    assert!(
        kept.contains("def test_initials") && !kept.contains("def test_slug_runs"),
        "{kept}"
    );
    let m = mutation_of(&log[0]);
    assert!(m["made"].as_u64().unwrap() >= 3, "{m:#?}");
    assert!(m["killed"].as_u64().unwrap() >= 1, "{m:#?}");
    assert_eq!(m["dropped"], true, "{m:#?}");
    assert_eq!(
        m["asserts_nothing"],
        serde_json::json!(["tests.test_text_improve_1::test_slug_runs"]),
        "{m:#?}"
    );
    assert_eq!(
        log[0]["dropped"]["asserts_nothing"], m["asserts_nothing"],
        "{log:#?}"
    );
    // What slug returns was never checked: its mutant survived, with its line for a human.
    let survived = m["survived"].as_array().unwrap();
    assert!(
        survived
            .iter()
            .any(|s| s["line"] == 6 && s["after"] == "return None"),
        "{m:#?}"
    );
    assert_eq!(log[0]["funnel"]["gain"], 2, "{log:#?}");
    assert_eq!(log[0]["funnel"]["checks"], 1, "{log:#?}");
    assert_eq!(log[0]["funnel"]["kept"], 1, "{log:#?}");

    // A proposal of only such tests is rejected, and its prompt named what went unnoticed.
    assert_eq!(log[1]["outcome"], "rejected", "{log:#?}");
    assert!(
        log[1]["reason"]
            .as_str()
            .unwrap()
            .starts_with("asserts nothing: none of the 1 new tests"),
        "{log:#?}"
    );
    assert_eq!(mutation_of(&log[1])["dropped"], true, "{log:#?}");
    assert_eq!(log[1]["funnel"]["checks"], 0, "{log:#?}");
    let second = &llm.requests().await[1];
    let body = String::from_utf8_lossy(&second.body);
    assert!(
        body.contains("that no test noticed") && body.contains("return None"),
        "{body}"
    );

    // The show command and the report say it too.
    let shown = stdout(
        &output({
            let mut c = improve(fx.root());
            c.args(["show", "1"]);
            c
        })
        .await,
    );
    assert!(
        shown.contains("mutants:  ") && shown.contains("survived: line 6"),
        "{shown}"
    );
    assert!(
        shown.contains("1 asserts nothing: test_slug_runs"),
        "{shown}"
    );
    let report = std::fs::read_to_string(fx.state_dir().join("report.md")).unwrap();
    assert!(
        report.contains("Mutation score of the kept tests: "),
        "{report}"
    );
    // One dropped from the kept proposal, one with the rejected one.
    assert!(report.contains("2 asserting nothing"), "{report}");

    // Only measuring: the test stays.
    let fx2 = Fixture::new();
    let llm2 = StandIn::start(Wire::OpenAi, vec![code_answer(ONE_EMPTY)]).await;
    run_ok(
        fx2.root(),
        &llm2,
        &["-n", "1", "--require-mutation-kill=false"],
    )
    .await;
    let log2 = log_of(&fx2);
    assert_eq!(log2[0]["tests_added"], 2, "{log2:#?}");
    assert_eq!(mutation_of(&log2[0])["dropped"], false, "{log2:#?}");

    // Off: no mutation record at all.
    let fx3 = Fixture::new();
    let llm3 = StandIn::start(Wire::OpenAi, vec![code_answer(ONE_EMPTY)]).await;
    run_ok(fx3.root(), &llm3, &["-n", "1", "--mutants", "0"]).await;
    let log3 = log_of(&fx3);
    assert_eq!(log3[0]["tests_added"], 2, "{log3:#?}");
    assert!(log3[0]["mutation"].is_null(), "{log3:#?}");
}

/// A module whose loop never ends when its step is removed; and one that takes SIGALRM for
/// itself, so the per-run alarm cannot stop that loop.
const LOOPS: &str = "import signal\n\n\ndef count_up(n):\n    i = 0\n    while i < n:\n        i += 1\n    return i\n\n\ndef settle(n):\n    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n    while n > 0:\n        n -= 1\n    return n\n";

fn loops_fixture() -> Fixture {
    let fx = Fixture::new();
    fx.commit_file("calc/loops.py", LOOPS);
    fx
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_mutant_is_killed_by_the_time_limit_and_one_that_ignores_it_with_its_process_group()
 {
    let fx = loops_fixture();
    let tests = "from calc.loops import count_up, settle\n\n\ndef test_count_up():\n    assert count_up(3) == 3\n\n\ndef test_settle():\n    assert settle(4) == 0\n";
    let llm = StandIn::start(Wire::OpenAi, vec![code_answer(tests)]).await;
    let started = std::time::Instant::now();
    run_ok(
        fx.root(),
        &llm,
        &["-n", "1", "--focus", "calc/loops.py", "--mutants", "30"],
    )
    .await;
    let log = log_of(&fx);
    assert_eq!(log[0]["outcome"], "kept", "{log:#?}");
    assert_eq!(log[0]["tests_added"], 2, "{log:#?}");
    let m = mutation_of(&log[0]);
    // `i += 1` and `n -= 1` removed: both loops run for ever. The first is stopped by the
    // alarm, the second (which ignores it) by the watchdog killing the process group; the
    // mutants after it still ran, in a new process.
    assert!(m["timed_out"].as_u64().unwrap() >= 2, "{m:#?}");
    let made = m["made"].as_u64().unwrap();
    assert_eq!(
        made + m["not_applied"].as_u64().unwrap(),
        m["candidates"].as_u64().unwrap().min(30),
        "{m:#?}"
    );
    let iteration = fx
        .state_dir()
        .join("runs")
        .read_dir()
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("iterations/0001");
    let events = std::fs::read_to_string(iteration.join("pytest-mutants-1.mutants.jsonl")).unwrap();
    assert!(events.contains("\"status\": \"hung\""), "{events}");
    assert!(
        iteration.join("pytest-mutants-2.mutants.jsonl").is_file(),
        "no second process took over after the hang"
    );
    assert!(started.elapsed() < Duration::from_secs(120));
    assert_eq!(
        git(
            fx.root(),
            &["show", &format!("{}:calc/loops.py", fx.run_branch())]
        ),
        LOOPS.trim_end()
    );
}

/// `test_initials` sleeps under mutants, so the stage is long enough to be killed inside.
const SLOW_UNDER_MUTANTS: &str = "import os\nimport time\n\nfrom calc.text import initials\n\n\ndef test_initials():\n    if os.environ.get(\"IMPROVE_MUTANTS\"):\n        time.sleep(0.3)\n    assert initials(\"ada lovelace\") == \"AL\"\n\n\ndef test_initials_empty():\n    import pytest\n    with pytest.raises(ValueError):\n        initials(\"  \")\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_inside_the_stage_leaves_the_module_as_it_was_and_the_resume_finishes() {
    let fx = Fixture::new();
    let original = std::fs::read(fx.root().join("calc/text.py")).unwrap();
    let llm = StandIn::start(Wire::OpenAi, vec![code_answer(SLOW_UNDER_MUTANTS)]).await;
    let mut cmd = improve(fx.root());
    cmd.args(["-n", "1"]);
    llm.args(&mut cmd);
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for a mutant to be running, then kill -9.
    let mut killed_inside = false;
    for _ in 0..600 {
        let events = glob_mutant_events(&fx.state_dir());
        if events.contains("\"start\"") {
            unsafe {
                libc::kill(child.id() as i32, libc::SIGKILL);
            }
            killed_inside = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.wait();
    assert!(killed_inside, "the mutation stage never started");
    // Whatever the tests' processes were doing, the module in the worktree is as it was.
    for wt in std::fs::read_dir(fx.state_dir().join("worktrees")).unwrap() {
        let module = wt.unwrap().path().join("calc/text.py");
        if module.is_file() {
            assert_eq!(std::fs::read(&module).unwrap(), original);
        }
    }
    run_ok(fx.root(), &llm, &["-n", "1"]).await;
    let log = log_of(&fx);
    assert_eq!(log[0]["outcome"], "kept", "{log:#?}");
    assert_eq!(log[0]["tests_added"], 2, "{log:#?}");
    assert!(
        mutation_of(&log[0])["killed"].as_u64().unwrap() >= 1,
        "{log:#?}"
    );
    let on_branch = git(
        fx.root(),
        &["show", &format!("{}:calc/text.py", fx.run_branch())],
    );
    assert_eq!(
        on_branch,
        String::from_utf8(original.clone()).unwrap().trim_end()
    );
    assert_eq!(
        std::fs::read(fx.root().join("calc/text.py")).unwrap(),
        original
    );
    assert_eq!(git(fx.root(), &["status", "--porcelain"]), "");
}

/// Every mutation event written anywhere under the state dir.
fn glob_mutant_events(dir: &Path) -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.push_str(&glob_mutant_events(&p));
        } else if p.to_string_lossy().ends_with(".mutants.jsonl") {
            out.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
        }
    }
    out
}

/// Every operator, on a module with a multi-line statement and non-ASCII text before the
/// changes (the offsets are bytes): each mutant parses, keeps every line where it was, and
/// changes only what it says.
const OPERATORS: &str = "def f(a, b, flag):\n    \"\"\"Ünïcode before the changes.\"\"\"\n    label = \"é\" + str(a)\n    if a < b and not flag:\n        return max(a,\n                   b)\n    total = a * 2\n    total += 1\n    return total == 3 or a is None\n\n\nX = 1 + 2\n";

#[tokio::test(flavor = "multi_thread")]
async fn the_helper_makes_each_kind_of_mutant_on_the_covered_lines_only() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("m.py");
    std::fs::write(&module, OPERATORS).unwrap();
    let helper = improve::pyhelper::PyHelper::new(&python(), dir.path());
    let tests: std::collections::BTreeMap<String, Vec<u32>> = [
        ("test_a".to_string(), vec![3, 4, 5]),
        ("test_b".to_string(), vec![7, 8, 9, 12]),
    ]
    .into_iter()
    .collect();
    let (mutants, candidates) = helper.mutants(&module, Some(&tests), 100).await.unwrap();
    assert_eq!(mutants.len() as u32, candidates, "{mutants:#?}");
    let original = OPERATORS.as_bytes();
    let mut operators = std::collections::BTreeSet::new();
    for m in &mutants {
        // Line 12 is module level: no test's run can see it change.
        assert!([3, 4, 5, 7, 8, 9].contains(&m.line), "{m:#?}");
        assert_eq!(m.scopes, vec![("f".to_string(), 1)], "{m:#?}");
        let mut bytes = original[..m.start as usize].to_vec();
        bytes.extend_from_slice(m.text.as_bytes());
        bytes.extend_from_slice(&original[m.end as usize..]);
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(
            text.lines().count(),
            OPERATORS.lines().count(),
            "{m:#?}\n{text}"
        );
        assert_ne!(m.before, m.after, "{m:#?}");
        let check = std::process::Command::new(python())
            .args(["-c", "import ast, sys; ast.parse(sys.stdin.read())"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(text.as_bytes())?;
                c.wait()
            })
            .unwrap();
        assert!(check.success(), "{m:#?}\n{text}");
        let expected_tests: Vec<&str> = if m.line <= 5 {
            vec!["test_a"]
        } else {
            vec!["test_b"]
        };
        assert_eq!(m.tests, expected_tests, "{m:#?}");
        operators.insert(m.operator.clone());
    }
    for op in [
        "comparison",
        "boolean",
        "arithmetic",
        "constant",
        "statement removed",
        "return",
    ] {
        assert!(operators.contains(op), "no {op} mutant: {mutants:#?}");
    }
    let described: Vec<String> = mutants
        .iter()
        .map(|m| format!("{}: {} -> {}", m.line, m.before, m.after))
        .collect();
    for expected in [
        "4: if a < b and not flag: -> if a <= b and not flag:",
        "4: if a < b and not flag: -> if a < b or not flag:",
        "4: if a < b and not flag: -> if a < b and flag:",
        "3: label = \"é\" + str(a) -> label = \"é\" - str(a)",
        "5: return max(a, -> return None",
        "7: total = a * 2 -> total = a * 3",
        "9: return total == 3 or a is None -> return total == 3 or a is not None",
    ] {
        assert!(
            described.iter().any(|d| d == expected),
            "{expected} not in {described:#?}"
        );
    }
    // The cap spreads the mutants over the tests: both get some.
    let (capped, _) = helper.mutants(&module, Some(&tests), 4).await.unwrap();
    assert_eq!(capped.len(), 4);
    assert!(
        capped.iter().any(|m| m.tests == ["test_a"])
            && capped.iter().any(|m| m.tests == ["test_b"])
    );
}

/// Issue 22: functions for the strict check, each run by one test of `STRICT_TESTS` (so that
/// every test adds coverage of its own). Removing `count = len(items)` makes any call raise.
const CHUNKS: &str = "def split(items, size):\n    count = len(items)\n    return [items[i:i + size] for i in range(0, count, size)]\n\n\ndef chunks(items, size):\n    count = len(items)\n    return [items[i:i + size] for i in range(0, count, size)]\n\n\ndef pairs(items):\n    count = len(items)\n    return [items[i:i + 2] for i in range(0, count, 2)]\n\n\ndef check_size(size):\n    if size <= 0:\n        raise ValueError(\"size must be positive\")\n    return size\n";

/// A call and nothing else; the same inside `pytest.raises(Exception)`; an assertion in a
/// helper of the file; a specific exception the code raises.
const STRICT_TESTS: &str = "import pytest\n\nfrom calc.chunks import check_size, chunks, pairs, split\n\n\ndef test_split_runs():\n    split([1, 2, 3], 2)\n    split('a', 1)\n\n\ndef test_chunks_any_error():\n    chunks([1, 2, 3], 2)\n    with pytest.raises(Exception):\n        chunks([1], 0)\n\n\ndef same(got, want):\n    assert got == want\n\n\ndef test_pairs_through_helper():\n    same(pairs([1, 2, 3]), [[1, 2], [3]])\n\n\ndef test_check_size_rejects_zero():\n    with pytest.raises(ValueError):\n        check_size(0)\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_test_that_asserts_nothing_is_dropped_even_when_it_crashes_mutants() {
    let fx = Fixture::new();
    fx.commit_file("calc/chunks.py", CHUNKS);
    let llm = StandIn::start(Wire::OpenAi, vec![code_answer(STRICT_TESTS)]).await;
    run_ok(
        fx.root(),
        &llm,
        &["-n", "1", "--focus", "calc/chunks.py", "--mutants", "40"],
    )
    .await;
    let log = log_of(&fx);
    assert_eq!(log[0]["target"], "calc/chunks.py", "{log:#?}");
    assert_eq!(log[0]["outcome"], "kept", "{log:#?}");
    let kept = kept_file(&fx, &log[0]);
    assert!(
        kept.contains("def test_pairs_through_helper")
            && kept.contains("def test_check_size_rejects_zero"),
        "{kept}"
    );
    assert!(
        !kept.contains("def test_split_runs") && !kept.contains("def test_chunks_any_error"),
        "{kept}"
    );
    let m = mutation_of(&log[0]);
    let crash_only = m["crash_only"].as_array().unwrap();
    let why = |name: &str| -> String {
        crash_only
            .iter()
            .find(|c| c["test"].as_str().unwrap().ends_with(name))
            .map(|c| c["why"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{name} not dropped: {m:#?}"))
    };
    // Each crashed a mutant (`count = len(items)` removed): it asserts nothing all the same.
    let split = why("::test_split_runs");
    assert!(
        split.starts_with("killed ")
            && split.ends_with("only by crashing them; it asserts nothing")
            || split == "killed 1 mutant only by crashing it; it asserts nothing",
        "{split}"
    );
    assert!(
        why("::test_chunks_any_error").ends_with("; it asserts nothing"),
        "{m:#?}"
    );
    assert_eq!(
        log[0]["dropped"]["asserts_nothing"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "{log:#?}"
    );
    assert_eq!(log[0]["funnel"]["checks"], 2, "{log:#?}");
    // The kept tests caught mutants by their assertions (the helper's, the raise removed).
    assert!(m["by_assertion"].as_u64().unwrap() >= 2, "{m:#?}");
    assert!(m["checked_score"].as_f64().is_some(), "{m:#?}");

    let shown = stdout(
        &output({
            let mut c = improve(fx.root());
            c.args(["show", "1"]);
            c
        })
        .await,
    );
    assert!(shown.contains("kills:    "), "{shown}");
    assert!(
        shown.contains("crashed:  test_split_runs killed ") && shown.contains("it asserts nothing"),
        "{shown}"
    );
    let report = std::fs::read_to_string(fx.state_dir().join("report.md")).unwrap();
    assert!(
        report.contains("2 tests that assert nothing were dropped although they crashed mutants"),
        "{report}"
    );
}

/// Issue 22's figures: answers mixing good tests, tests asserting a wrong value and tests that
/// assert nothing (calls alone, calls under `pytest.raises(Exception)`), each on a function of
/// its own; how many of each kind are kept, with the check on and with `--mutants 0`, and the
/// seconds per iteration. Prints them; run with
/// `cargo test --test all -- --ignored suite::mutation::measure_strict_mix --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement: prints figures"]
async fn measure_strict_mix() {
    const FUNCTIONS: usize = 13;
    let module: String = (0..FUNCTIONS)
        .map(|k| format!("def g{k}(items, size):\n    count = len(items) + {k}\n    return [items[i:i + size] for i in range(0, count - {k}, size)]\n\n\n"))
        .collect();
    // Per answer, the kind of test each function gets: rotated from one answer to the next.
    let kinds = [
        "good",
        "good",
        "good",
        "good",
        "wrong",
        "wrong",
        "wrong",
        "call",
        "calls",
        "raises_after",
        "raises_only",
        "call",
        "raises_after",
    ];
    let test_of = |kind: &str, k: usize| -> String {
        let body = match kind {
            "good" => format!("    assert g{k}([1, 2, 3], 2) == [[1, 2], [3]]\n"),
            "wrong" => format!("    assert g{k}([1, 2, 3], 2) == [[1, 2, 3]]\n"),
            "call" => format!("    g{k}([1, 2, 3], 2)\n"),
            "calls" => format!("    g{k}([1, 2, 3], 2)\n    g{k}('abc', 1)\n"),
            "raises_after" => format!(
                "    g{k}([1, 2, 3], 2)\n    with pytest.raises(Exception):\n        g{k}([1], 0)\n"
            ),
            _ => format!(
                "    with pytest.raises(Exception):\n        g{k}(None, 1)\n    g{k}([4, 5], 1)\n"
            ),
        };
        format!("def test_{kind}_{k}():\n{body}\n\n")
    };
    for mutants in ["20", "0"] {
        let (mut kept, mut total) = (BTreeMap::<&str, u32>::new(), BTreeMap::<&str, u32>::new());
        let mut seconds = Vec::new();
        for shift in 0..4 {
            let fx = Fixture::new();
            fx.commit_file("calc/gen.py", &module);
            let mut answer = String::from("import pytest\n\nfrom calc.gen import *\n\n\n");
            let mut names = Vec::new();
            for k in 0..FUNCTIONS {
                let kind = kinds[(k + shift) % FUNCTIONS];
                answer.push_str(&test_of(kind, k));
                names.push((kind, format!("def test_{kind}_{k}(")));
            }
            let llm = StandIn::start(Wire::OpenAi, vec![code_answer(&answer)]).await;
            run_ok(
                fx.root(),
                &llm,
                &[
                    "-n",
                    "1",
                    "--focus",
                    "calc/gen.py",
                    "--mutants",
                    mutants,
                    "--max-repairs",
                    "0",
                ],
            )
            .await;
            let log = log_of(&fx);
            assert_eq!(log[0]["target"], "calc/gen.py", "{log:#?}");
            seconds.push(log[0]["seconds"]["total"].as_f64().unwrap());
            let file = if log[0]["outcome"] == "kept" {
                kept_file(&fx, &log[0])
            } else {
                String::new()
            };
            for (kind, def) in &names {
                let class = match *kind {
                    "good" => "good",
                    "wrong" => "wrong value",
                    _ => "asserts nothing",
                };
                *total.entry(class).or_default() += 1;
                if file.contains(def.as_str()) {
                    *kept.entry(class).or_default() += 1;
                }
            }
        }
        let mean = seconds.iter().sum::<f64>() / seconds.len() as f64;
        println!(
            "--mutants {mutants}: kept {kept:?} of {total:?}; seconds per iteration {seconds:?} (mean {mean:.1})"
        );
    }
}
