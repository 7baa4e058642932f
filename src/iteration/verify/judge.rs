//! The keep-or-reject rules of verification, as pure functions of what pytest reported: each
//! stage's facts in, its judgement out. No pytest, git or file system here, so every rule is
//! unit-tested on its own.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use crate::mutation::{CrashOnly, MutationCheck, TestKills};
use crate::pytest::{CaseOutcome, TestCase};
use crate::state::{Coverage, RejectReason, Rejection};
use crate::testid::{first_three, names};

/// Each test id's outcomes over the runs of the new file, in the order pytest first ran them.
#[derive(Debug, Default)]
pub struct Tally {
    pub ids: Vec<String>,
    passed: HashMap<String, u32>,
    failed: HashMap<String, u32>,
}

impl Tally {
    pub fn of(cases: &[TestCase]) -> Tally {
        let mut tally = Tally::default();
        for case in cases {
            if !tally.ids.contains(&case.id) {
                tally.ids.push(case.id.clone());
            }
            match case.outcome {
                CaseOutcome::Passed => *tally.passed.entry(case.id.clone()).or_default() += 1,
                CaseOutcome::Failed | CaseOutcome::Error => {
                    *tally.failed.entry(case.id.clone()).or_default() += 1
                }
                CaseOutcome::Skipped => {}
            }
        }
        tally
    }
    fn select(&self, keep: impl Fn(u32, u32) -> bool) -> Vec<String> {
        self.ids
            .iter()
            .filter(|id| {
                keep(
                    self.passed.get(*id).copied().unwrap_or(0),
                    self.failed.get(*id).copied().unwrap_or(0),
                )
            })
            .cloned()
            .collect()
    }
    /// Never passed.
    pub fn failing(&self) -> Vec<String> {
        self.select(|p, f| p == 0 && f > 0)
    }
    /// Passed and failed.
    pub fn flaky(&self) -> Vec<String> {
        self.select(|p, f| p > 0 && f > 0)
    }
    /// Passed every time.
    pub fn passing(&self) -> Vec<String> {
        self.select(|p, f| p > 0 && f == 0)
    }
}

/// What disqualifies a pytest run of `what` whatever its results.
#[derive(Debug, Clone, Copy)]
pub struct Trouble<'a> {
    /// Project files the run changed.
    pub touched: &'a [String],
    pub timed_out: bool,
    pub what: &'a str,
    /// `--test-timeout`, for the message.
    pub timeout: Duration,
}

pub fn trouble(t: Trouble<'_>) -> Option<Rejection> {
    if !t.touched.is_empty() {
        Some(Rejection::new(
            RejectReason::SideEffects,
            format!(
                "side effects: {} changed {}",
                t.what,
                first_three(t.touched.iter().map(String::as_str))
            ),
        ))
    } else if t.timed_out {
        Some(Rejection::new(
            RejectReason::TimedOut,
            format!(
                "timed out: {} ran past --test-timeout ({})",
                t.what,
                humantime::format_duration(t.timeout)
            ),
        ))
    } else {
        None
    }
}

/// What the runs of the new test file (after any repair) showed.
#[derive(Debug, Clone, Copy)]
pub struct NewRun<'a> {
    pub trouble: Trouble<'a>,
    /// pytest reported no case at all, and its exit code and last line of output.
    pub no_cases: bool,
    pub exit_code: Option<i32>,
    pub last_line: &'a str,
    /// The message of the file's collection error, when it had one.
    pub collection_error: Option<&'a str>,
    pub tally: &'a Tally,
}

/// Stages collect, run and stable: the proposal goes on when at least one new test passed on
/// every run.
pub fn new_tests(run: NewRun<'_>) -> Option<Rejection> {
    if let Some(t) = trouble(run.trouble) {
        return Some(t);
    }
    if run.no_cases {
        return Some(match run.exit_code {
            Some(5) => Rejection::new(
                RejectReason::NothingCollected,
                "no tests collected from the proposal",
            ),
            _ => does_not_collect(run.last_line.trim()),
        });
    }
    if let Some(message) = run.collection_error {
        return Some(does_not_collect(message));
    }
    let tally = run.tally;
    if !tally.passing().is_empty() {
        return None;
    }
    let failing = tally.failing();
    let flaky = tally.flaky();
    Some(if !failing.is_empty() {
        new_tests_fail(&failing, tally.ids.len(), "")
    } else if !flaky.is_empty() {
        flaky_tests(&flaky)
    } else {
        Rejection::new(RejectReason::AllSkipped, "no new test ran (all skipped)")
    })
}

fn does_not_collect(what: &str) -> Rejection {
    Rejection::new(
        RejectReason::DoesNotCollect,
        format!("does not collect: {what}"),
    )
}

fn new_tests_fail(failing: &[String], total: usize, more: &str) -> Rejection {
    Rejection::new(
        RejectReason::NewTestsFail,
        format!(
            "{} of {total} new tests fail: {}{more}",
            failing.len(),
            names(failing)
        ),
    )
}

fn flaky_tests(flaky: &[String]) -> Rejection {
    Rejection::new(
        RejectReason::Flaky,
        format!("flaky: {} fail on rerun", names(flaky)),
    )
}

/// What a stage decided: the tests to drop from the file before going on, or why the
/// iteration stops here.
#[derive(Debug, Default, PartialEq)]
pub struct Judgement {
    pub drop: Vec<String>,
    pub reject: Option<Rejection>,
}

/// Stage gain: tests that add no coverage (`redundant`) go, with the failing and the flaky
/// ones; when every passing test is redundant, nothing is worth a suite run.
pub fn gain(tally: &Tally, redundant: &[String]) -> Judgement {
    let passing = tally.passing();
    if redundant.len() == passing.len() {
        return Judgement {
            drop: Vec::new(),
            reject: Some(Rejection::new(
                RejectReason::NoGain,
                format!(
                    "no gain: the {} passing new tests cover nothing the suite did not",
                    passing.len()
                ),
            )),
        };
    }
    Judgement {
        drop: [tally.failing(), tally.flaky(), redundant.to_vec()].concat(),
        reject: None,
    }
}

/// What stage checks decided, with the tests it found asserting nothing.
#[derive(Debug, Default, PartialEq)]
pub struct Checked {
    pub judgement: Judgement,
    /// New test ids that killed none of the mutants on their lines.
    pub asserts_nothing: Vec<String>,
    /// New tests (ids) that hold no assertion and killed mutants only by crashing them.
    pub crash_only: Vec<CrashOnly>,
}

/// Stage checks: a test (id -> name in `names`) that was judged (`kills`: name -> the mutants
/// it killed, by kind) and killed nothing asserts nothing and goes; so does one that holds no
/// assertion (`asserting`: name -> whether its body or a helper it calls asserts anything,
/// `pytest.raises(Exception)` not counted; a test absent from it counts as asserting) however
/// it killed mutants (by crashing them, a run past the time limit, or a `raises(Exception)` left
/// unmet): a returned value it never looks at could be anything. When that is every test, the proposal goes. Without each
/// test's own coverage (`per_test` false) every test ran against every mutant, wherever it
/// was: no test is dropped for killing none.
pub fn mutation(
    names: &BTreeMap<String, String>,
    kills: &BTreeMap<String, TestKills>,
    asserting: &BTreeMap<String, bool>,
    check: &MutationCheck,
    per_test: bool,
) -> Checked {
    let mut asserts_nothing = Vec::new();
    let mut crash_only = Vec::new();
    for (id, name) in names {
        let Some(k) = kills.get(name) else { continue };
        if !k.any() {
            if per_test {
                asserts_nothing.push(id.clone());
            }
        } else if asserting.get(name) == Some(&false) {
            // Its kills that look like assertions are not its own: a `pytest.raises(Exception)`
            // left unmet, or an `assert` in the mutated code.
            crash_only.push(CrashOnly {
                test: id.clone(),
                crashed: k.crash,
                timed_out: k.timeout,
                unasserted: k.assertion,
            });
        }
    }
    let gone = asserts_nothing.len() + crash_only.len();
    if gone == 0 {
        return Checked::default();
    }
    let reject = (gone == names.len())
        .then(|| no_test_asserts(names.len(), &asserts_nothing, &crash_only, check));
    let drop = if reject.is_some() {
        Vec::new()
    } else {
        asserts_nothing
            .iter()
            .cloned()
            .chain(crash_only.iter().map(|c| c.test.clone()))
            .collect()
    };
    Checked {
        judgement: Judgement { drop, reject },
        asserts_nothing,
        crash_only,
    }
}

/// Why a proposal none of whose `total` tests checks anything is rejected.
fn no_test_asserts(
    total: usize,
    asserts_nothing: &[String],
    crash_only: &[CrashOnly],
    check: &MutationCheck,
) -> Rejection {
    let text = match crash_only.first() {
        None => {
            let example = check
                .survived
                .first()
                .map(|s| format!(", e.g. {}", s.describe()))
                .unwrap_or_default();
            format!(
                "asserts nothing: none of the {total} new tests noticed any of the {} mutants of the lines they cover{example}",
                check.made
            )
        }
        Some(first) => {
            let name = first.test.rsplit("::").next().unwrap_or(&first.test);
            let mut text = format!(
                "asserts nothing: none of the {total} new tests checks what the code returns: {name} {}",
                first.describe()
            );
            if crash_only.len() > 1 {
                text.push_str(&format!(" ({} more like it)", crash_only.len() - 1));
            }
            if !asserts_nothing.is_empty() {
                text.push_str(&format!(
                    "; {} noticed none of the {} mutants",
                    asserts_nothing.len(),
                    check.made
                ));
            }
            text
        }
    };
    Rejection::new(RejectReason::AssertsNothing, text)
}

/// The tests to drop could not be removed from the file alone.
pub fn unprunable(tally: &Tally, redundant: &[String]) -> Rejection {
    let failing = tally.failing();
    let flaky = tally.flaky();
    if !failing.is_empty() {
        new_tests_fail(
            &failing,
            tally.ids.len(),
            " (and they could not be removed alone)",
        )
    } else if !flaky.is_empty() {
        flaky_tests(&flaky)
    } else {
        Rejection::new(
            RejectReason::RedundantNotRemoved,
            format!("redundant tests could not be removed: {}", names(redundant)),
        )
    }
}

/// Every passing case belonged to a test function dropped whole (a parametrized test with a
/// failing case): nothing is left to keep.
pub fn nothing_left(pruned: &[String], total: usize) -> Rejection {
    Rejection::new(
        RejectReason::OnlyCasesOfFailingFunctions,
        format!(
            "{} of {total} new tests fail, and the passing ones are cases of the same functions: {}",
            pruned.len(),
            names(pruned)
        ),
    )
}

/// Tests the iteration broke, of a whole-suite run whose `failing_now` failed or errored: those
/// that passed before, and, when test ids changed from one process to the next (cases built
/// from a set or a dict under another hash seed), failures nobody can match to a test of
/// before, when there are more of them than tests that failed before and are gone. A test
/// that passed before and was not collected now is not broken: its id changed.
pub fn regressions(
    passing_before: &[String],
    failed_before: &[String],
    failing_now: &[String],
    ids_now: &[String],
    is_new: impl Fn(&str) -> bool,
) -> Vec<String> {
    // Every suite run asks this, over suites of thousands of tests: look ids up in sets.
    let passed: HashSet<&String> = passing_before.iter().collect();
    let failed: HashSet<&String> = failed_before.iter().collect();
    let now: HashSet<&String> = ids_now.iter().collect();
    let known = |id: &String| passed.contains(id) || failed.contains(id);
    let mut broken: Vec<String> = failing_now
        .iter()
        .filter(|id| passed.contains(id))
        .cloned()
        .collect();
    let unmatched: Vec<String> = failing_now
        .iter()
        .filter(|id| !known(id) && !is_new(id))
        .cloned()
        .collect();
    let failed_and_gone = failed_before.iter().filter(|id| !now.contains(id)).count();
    if unmatched.len() > failed_and_gone {
        broken.extend(unmatched);
    }
    broken
}

/// Where the whole suite's coverage with the new tests is below what it was without them (by
/// more than the report's rounding): overall (`52.0% -> 40.0%`) or in a module
/// (`calc/ops.py 80.0% -> 40.0%`). Tests only ever add to what runs, so any fall means some
/// code ran unmeasured.
pub fn coverage_fall(before: Option<&Coverage>, after: Option<&Coverage>) -> Option<String> {
    let (before, after) = (before?, after?);
    let fell = |b: f64, a: f64| a + 0.05 < b;
    if fell(before.percent, after.percent) {
        return Some(format!("{:.1}% -> {:.1}%", before.percent, after.percent));
    }
    before.modules.iter().find_map(|(module, &b)| {
        let a = after.modules.get(module).copied().unwrap_or(0.0);
        fell(b, a).then(|| format!("{module} {b:.1}% -> {a:.1}%"))
    })
}

/// The whole suite's coverage fell with the new tests (`fall` says where); `blamed` are the new
/// tests (with what they did) the plugin saw change how coverage measures, none when no single
/// one is to blame.
pub fn stops_coverage(fall: &str, blamed: &[(String, String)]) -> Rejection {
    let who = if blamed.is_empty() {
        "and no new test is to blame alone".to_string()
    } else {
        let each: Vec<String> = blamed
            .iter()
            .map(|(test, culprit)| format!("{test} {culprit}"))
            .collect();
        each.join("; ")
    };
    Rejection::new(
        RejectReason::StopsCoverage,
        format!("stops coverage: {fall} with the new tests: {who}"),
    )
}

/// What the whole suite showed with the iteration's tests in it.
#[derive(Debug, Clone, Copy)]
pub struct SuiteRun<'a> {
    pub trouble: Trouble<'a>,
    /// Tests that passed before and do not now.
    pub regressions: &'a [String],
    /// New tests that do not pass beside the others.
    pub new_failing: &'a [String],
}

/// Stage suite: nothing that passed may fail, and every new test must pass among the others.
pub fn suite(run: SuiteRun<'_>) -> Option<Rejection> {
    if let Some(t) = trouble(run.trouble) {
        Some(t)
    } else if !run.regressions.is_empty() {
        Some(Rejection::new(
            RejectReason::BreaksPassingTests,
            format!(
                "breaks {} passing tests: {}",
                run.regressions.len(),
                names(run.regressions)
            ),
        ))
    } else if !run.new_failing.is_empty() {
        Some(Rejection::new(
            RejectReason::NewTestsFailInSuite,
            format!(
                "{} new tests fail in the whole suite: {}",
                run.new_failing.len(),
                names(run.new_failing)
            ),
        ))
    } else {
        None
    }
}

/// A fix may change its test file only.
pub fn fix_scope(test_file: &str, changed: &[String]) -> Option<Rejection> {
    (!changed.is_empty()).then(|| {
        Rejection::new(
            RejectReason::FixChangesOtherFiles,
            format!(
                "a fix may change only {test_file}, not {}",
                first_three(changed.iter().map(String::as_str))
            ),
        )
    })
}

/// Stage run of a fix: some of the `targeted` tests (failing at the start) now pass every time.
pub fn fix_run(
    trouble: Trouble<'_>,
    fixed: &[String],
    flaky: &[String],
    targeted: &[String],
) -> Option<Rejection> {
    if let Some(t) = self::trouble(trouble) {
        Some(t)
    } else if fixed.is_empty() && !flaky.is_empty() {
        Some(flaky_tests(flaky))
    } else if fixed.is_empty() {
        Some(Rejection::new(
            RejectReason::FixesNone,
            format!(
                "fixes none of the {} failing tests: {}",
                targeted.len(),
                names(targeted)
            ),
        ))
    } else {
        None
    }
}

/// The tests a fix fixed alone fail beside the others.
pub fn fixed_fail_in_suite() -> Rejection {
    Rejection::new(
        RejectReason::FixedTestsFailInSuite,
        "the fixed tests fail in the whole suite",
    )
}

/// The iteration's commit does not apply onto what was kept meanwhile (`tip`, short).
pub fn conflicts(tip: &str) -> Rejection {
    Rejection::new(
        RejectReason::ConflictsWithKept,
        format!("conflicts with what was kept meanwhile (replayed onto {tip})"),
    )
}

/// The suite, run again beside what was kept meanwhile, rejected the iteration.
pub fn after_replay(tip: &str, why: &Rejection) -> Rejection {
    Rejection::new(
        RejectReason::FailsAfterReplay,
        format!("after replaying onto {tip} (kept meanwhile): {}", why.text),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(id: &str, outcome: CaseOutcome) -> TestCase {
        TestCase {
            id: id.into(),
            outcome,
            message: String::new(),
            detail: String::new(),
        }
    }

    /// Two runs of a file: `a` passes twice, `b` fails twice, `c` passes then fails.
    fn two_runs() -> Tally {
        use CaseOutcome::*;
        Tally::of(&[
            case("t.test_m::test_a", Passed),
            case("t.test_m::test_b", Failed),
            case("t.test_m::test_c", Passed),
            case("t.test_m::test_a", Passed),
            case("t.test_m::test_b", Error),
            case("t.test_m::test_c", Failed),
        ])
    }

    fn calm(tally: &Tally) -> NewRun<'_> {
        NewRun {
            trouble: Trouble {
                touched: &[],
                timed_out: false,
                what: "6 runs of the new tests",
                timeout: Duration::from_secs(60),
            },
            no_cases: false,
            exit_code: Some(1),
            last_line: "",
            collection_error: None,
            tally,
        }
    }

    #[test]
    fn a_tally_sorts_tests_by_what_every_run_said() {
        let t = two_runs();
        assert_eq!(t.passing(), ["t.test_m::test_a"]);
        assert_eq!(t.failing(), ["t.test_m::test_b"]);
        assert_eq!(t.flaky(), ["t.test_m::test_c"]);
    }

    #[test]
    fn one_stable_test_is_enough_to_go_on() {
        let t = two_runs();
        assert_eq!(new_tests(calm(&t)), None);
    }

    #[test]
    fn a_run_that_changed_files_or_timed_out_is_rejected_whatever_passed() {
        let t = two_runs();
        let touched = ["setup.cfg".to_string()];
        let mut run = calm(&t);
        run.trouble.touched = &touched;
        let r = new_tests(run).unwrap();
        assert_eq!(r.reason, RejectReason::SideEffects);
        assert_eq!(
            r.text,
            "side effects: 6 runs of the new tests changed setup.cfg"
        );
        let mut run = calm(&t);
        run.trouble.timed_out = true;
        let r = new_tests(run).unwrap();
        assert_eq!(r.reason, RejectReason::TimedOut);
        assert_eq!(
            r.text,
            "timed out: 6 runs of the new tests ran past --test-timeout (1m)"
        );
    }

    #[test]
    fn a_file_that_does_not_collect_says_why() {
        let t = Tally::default();
        let mut run = calm(&t);
        run.no_cases = true;
        run.exit_code = Some(5);
        assert_eq!(
            new_tests(run).unwrap().reason,
            RejectReason::NothingCollected
        );
        run.exit_code = Some(2);
        run.last_line = "  ERROR: file not found  ";
        assert_eq!(
            new_tests(run).unwrap(),
            Rejection::new(
                RejectReason::DoesNotCollect,
                "does not collect: ERROR: file not found"
            )
        );
        let t = two_runs();
        let mut run = calm(&t);
        run.collection_error = Some("ImportError: no module x");
        assert_eq!(
            new_tests(run).unwrap().text,
            "does not collect: ImportError: no module x"
        );
    }

    #[test]
    fn with_nothing_stable_failing_beats_flaky_beats_skipped() {
        use CaseOutcome::*;
        let failing = Tally::of(&[
            case("t.test_m::test_b", Failed),
            case("t.test_m::test_c", Passed),
            case("t.test_m::test_c", Failed),
        ]);
        assert_eq!(
            new_tests(calm(&failing)).unwrap(),
            Rejection::new(RejectReason::NewTestsFail, "1 of 2 new tests fail: test_b")
        );
        let flaky = Tally::of(&[
            case("t.test_m::test_c", Passed),
            case("t.test_m::test_c", Failed),
        ]);
        assert_eq!(
            new_tests(calm(&flaky)).unwrap(),
            Rejection::new(RejectReason::Flaky, "flaky: test_c fail on rerun")
        );
        let skipped = Tally::of(&[case("t.test_m::test_s", Skipped)]);
        assert_eq!(
            new_tests(calm(&skipped)).unwrap().reason,
            RejectReason::AllSkipped
        );
    }

    #[test]
    fn gain_drops_the_bad_and_the_redundant_and_keeps_the_rest() {
        use CaseOutcome::*;
        let t = Tally::of(&[
            case("t.test_m::test_a", Passed),
            case("t.test_m::test_d", Passed),
            case("t.test_m::test_b", Failed),
        ]);
        let j = gain(&t, &["t.test_m::test_d".into()]);
        assert_eq!(j.reject, None);
        assert_eq!(j.drop, ["t.test_m::test_b", "t.test_m::test_d"]);
        let j = gain(&t, &["t.test_m::test_a".into(), "t.test_m::test_d".into()]);
        assert_eq!(j.reject.unwrap().reason, RejectReason::NoGain);
        assert!(j.drop.is_empty());
    }

    #[test]
    fn tests_that_cannot_be_pruned_reject_by_their_worst_kind() {
        let t = two_runs();
        let r = unprunable(&t, &[]);
        assert_eq!(r.reason, RejectReason::NewTestsFail);
        assert!(r.text.ends_with("(and they could not be removed alone)"));
        let only_redundant = Tally::default();
        assert_eq!(
            unprunable(&only_redundant, &["t.test_m::test_d".into()]).reason,
            RejectReason::RedundantNotRemoved
        );
        assert_eq!(
            nothing_left(&["t.test_m::test_p[1]".into()], 3).reason,
            RejectReason::OnlyCasesOfFailingFunctions
        );
    }

    #[test]
    fn the_suite_rejects_regressions_before_new_failures_and_both_are_pollution() {
        let calm = Trouble {
            touched: &[],
            timed_out: false,
            what: "the suite with the new tests",
            timeout: Duration::from_secs(1),
        };
        let broken = ["t.test_old::test_x".to_string()];
        let new = ["t.test_m::test_a".to_string()];
        let r = suite(SuiteRun {
            trouble: calm,
            regressions: &broken,
            new_failing: &new,
        })
        .unwrap();
        assert_eq!(r.text, "breaks 1 passing tests: test_x");
        assert!(r.reason.is_pollution());
        let r = suite(SuiteRun {
            trouble: calm,
            regressions: &[],
            new_failing: &new,
        })
        .unwrap();
        assert_eq!(r.text, "1 new tests fail in the whole suite: test_a");
        assert!(r.reason.is_pollution());
        assert_eq!(
            suite(SuiteRun {
                trouble: calm,
                regressions: &[],
                new_failing: &[],
            }),
            None
        );
        assert!(!fixed_fail_in_suite().reason.is_pollution());
    }

    #[test]
    fn a_fix_is_judged_on_its_file_and_on_what_it_fixed() {
        assert_eq!(fix_scope("tests/test_a.py", &[]), None);
        assert_eq!(
            fix_scope("tests/test_a.py", &["pkg/a.py".into()])
                .unwrap()
                .text,
            "a fix may change only tests/test_a.py, not pkg/a.py"
        );
        let calm = Trouble {
            touched: &[],
            timed_out: false,
            what: "the fixed file",
            timeout: Duration::from_secs(1),
        };
        let targeted = ["t.test_a::test_x".to_string()];
        assert_eq!(fix_run(calm, &targeted, &[], &targeted), None);
        assert_eq!(
            fix_run(calm, &[], &targeted, &targeted).unwrap().reason,
            RejectReason::Flaky
        );
        assert_eq!(
            fix_run(calm, &[], &[], &targeted).unwrap().text,
            "fixes none of the 1 failing tests: test_x"
        );
    }

    #[test]
    fn a_replay_names_the_tip_and_keeps_the_first_reason() {
        let inner = Rejection::new(
            RejectReason::BreaksPassingTests,
            "breaks 1 passing tests: t",
        );
        let r = after_replay("abc1234567", &inner);
        assert_eq!(r.reason, RejectReason::FailsAfterReplay);
        assert_eq!(
            r.text,
            "after replaying onto abc1234567 (kept meanwhile): breaks 1 passing tests: t"
        );
        assert_eq!(conflicts("abc").reason, RejectReason::ConflictsWithKept);
    }

    #[test]
    fn a_test_killing_no_mutant_goes_and_a_proposal_of_only_such_tests_is_rejected() {
        let names: BTreeMap<String, String> = [
            ("t.py::test_real", "test_real"),
            ("t.py::test_empty", "test_empty"),
            ("t.py::test_unjudged", "test_unjudged"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let killed = |n: u32| TestKills {
            assertion: n,
            ..Default::default()
        };
        let mut kills: BTreeMap<String, TestKills> =
            [("test_real", killed(1)), ("test_empty", killed(0))]
                .into_iter()
                .map(|(a, b)| (a.to_string(), b))
                .collect();
        let asserting = BTreeMap::new();
        let check = MutationCheck {
            made: 4,
            killed: 2,
            ..Default::default()
        };
        let c = mutation(&names, &kills, &asserting, &check, true);
        assert_eq!(c.judgement.drop, vec!["t.py::test_empty".to_string()]);
        assert_eq!(c.judgement.reject, None);
        // Without each test's coverage, nothing is dropped.
        let c = mutation(&names, &kills, &asserting, &check, false);
        assert_eq!(c, Checked::default());
        kills.insert("test_real".into(), killed(0));
        kills.insert("test_unjudged".into(), killed(0));
        let c = mutation(&names, &kills, &asserting, &check, true);
        let why = c.judgement.reject.unwrap();
        assert_eq!(why.reason, RejectReason::AssertsNothing);
        assert!(
            why.text.starts_with(
                "asserts nothing: none of the 3 new tests noticed any of the 4 mutants"
            ),
            "{}",
            why.text
        );
        assert!(c.judgement.drop.is_empty());
    }

    #[test]
    fn a_test_that_asserts_nothing_and_only_crashed_mutants_goes_and_one_that_asserts_stays() {
        let names: BTreeMap<String, String> = [
            ("t.py::test_calls", "test_calls"),
            ("t.py::test_value", "test_value"),
            ("t.py::test_raises_any", "test_raises_any"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let crashed = TestKills {
            crash: 2,
            ..Default::default()
        };
        let mut kills: BTreeMap<String, TestKills> = [
            ("test_calls", crashed),
            // It asserts, and crashed its mutants: today's rule keeps it.
            ("test_value", crashed),
            (
                "test_raises_any",
                TestKills {
                    timeout: 1,
                    ..Default::default()
                },
            ),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b))
        .collect();
        let asserting: BTreeMap<String, bool> = [
            ("test_calls", false),
            ("test_value", true),
            ("test_raises_any", false),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b))
        .collect();
        let check = MutationCheck {
            made: 4,
            killed: 3,
            ..Default::default()
        };
        let c = mutation(&names, &kills, &asserting, &check, true);
        assert_eq!(
            c.judgement.drop,
            ids(&["t.py::test_calls", "t.py::test_raises_any"])
        );
        assert!(c.asserts_nothing.is_empty());
        assert_eq!(
            c.crash_only[0].describe(),
            "killed 2 mutants only by crashing them; it asserts nothing"
        );
        assert_eq!(
            c.crash_only[1].describe(),
            "killed 1 mutant only by making it run past the time limit; it asserts nothing"
        );
        // The same without each test's coverage: the kills are the test's own all the same.
        let c = mutation(&names, &kills, &asserting, &check, false);
        assert_eq!(c.judgement.drop.len(), 2);
        // A `pytest.raises(Exception)` left unmet is no assertion of its own either.
        kills.get_mut("test_calls").unwrap().assertion = 1;
        let c = mutation(&names, &kills, &asserting, &check, true);
        assert_eq!(c.judgement.drop.len(), 2);
        assert_eq!(
            c.crash_only[0].describe(),
            "killed 3 mutants only by crashing them or a failure it expects of any kind (`raises(Exception)`); it asserts nothing"
        );
        // Only such tests: the proposal goes, saying why.
        let only: BTreeMap<String, String> = [("t.py::test_raises_any", "test_raises_any")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        kills.get_mut("test_raises_any").unwrap().crash = 1;
        let why = mutation(&only, &kills, &asserting, &check, true)
            .judgement
            .reject
            .unwrap();
        assert_eq!(
            why.text,
            "asserts nothing: none of the 1 new tests checks what the code returns: test_raises_any killed 2 mutants only by crashing them or making them run past the time limit; it asserts nothing"
        );
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_passing_test_that_fails_is_broken_and_one_no_longer_collected_is_not() {
        let before = ids(&["t.a::x", "t.a::y[1]", "t.a::y[2]"]);
        let now_ids = ids(&["t.a::x", "t.a::y[2]", "t.a::y[9]", "t.new::n"]);
        // y[1] is gone (its id changed), x fails: only x is broken.
        let broken = regressions(&before, &[], &ids(&["t.a::x"]), &now_ids, |id| {
            id.starts_with("t.new")
        });
        assert_eq!(broken, ["t.a::x"]);
        // A failure of a case whose id changed is a failure nobody can match: broken too.
        let broken = regressions(&before, &[], &ids(&["t.a::y[9]"]), &now_ids, |id| {
            id.starts_with("t.new")
        });
        assert_eq!(broken, ["t.a::y[9]"]);
        // ... unless as many tests failed before and are gone now (the same failure, renamed).
        let failed_before = ids(&["t.a::z[7]"]);
        let broken = regressions(
            &before,
            &failed_before,
            &ids(&["t.a::y[9]"]),
            &now_ids,
            |id| id.starts_with("t.new"),
        );
        assert!(broken.is_empty(), "{broken:?}");
        // The iteration's own tests are judged elsewhere.
        let broken = regressions(&before, &[], &ids(&["t.new::n"]), &now_ids, |id| {
            id.starts_with("t.new")
        });
        assert!(broken.is_empty(), "{broken:?}");
    }

    #[test]
    fn coverage_falls_overall_or_in_one_module_but_not_by_rounding() {
        let cov = |total: f64, ops: f64| Coverage {
            percent: total,
            modules: [("calc/ops.py".to_string(), ops)].into(),
            ..Default::default()
        };
        let fall = |b, a| coverage_fall(Some(&b), Some(&a));
        assert_eq!(
            fall(cov(98.0, 90.0), cov(55.9, 90.0)).unwrap(),
            "98.0% -> 55.9%"
        );
        // More covered overall, less in one module: code ran unmeasured.
        assert_eq!(
            fall(cov(40.0, 80.0), cov(52.0, 40.0)).unwrap(),
            "calc/ops.py 80.0% -> 40.0%"
        );
        assert_eq!(fall(cov(40.0, 80.0), cov(39.98, 80.0)), None);
        assert_eq!(coverage_fall(None, Some(&cov(1.0, 1.0))), None);
        let why = stops_coverage(
            "98.0% -> 55.9%",
            &[("t::test_x".into(), "replaced the trace function".into())],
        );
        assert_eq!(why.reason, RejectReason::StopsCoverage);
        assert!(
            why.text.ends_with("t::test_x replaced the trace function"),
            "{}",
            why.text
        );
    }
}
