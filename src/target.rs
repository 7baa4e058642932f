//! Choosing what the next iteration works on: a test file red since the start (a fix), else the
//! module with the most left to cover, weighed against how often it was tried and kept nothing;
//! and the focus areas in rotation. Also gathers what the prompt shows about a module: its
//! import name and the existing tests that import it.

use std::path::Path;

use crate::state::{Coverage, Kind, RunState};
use crate::testid::TestId;

/// The package's modules (`pkg/sub/mod.py`) among `files` (path, text): files in folders that
/// are packages all the way down, without `__init__.py` files that define nothing. A package
/// that is a single module (`six.py`) is its own one module.
pub fn list_modules(files: &[(String, String)], package: &str) -> Vec<String> {
    if package.ends_with(".py") {
        return files
            .iter()
            .filter(|(p, _)| p == package)
            .map(|(p, _)| p.clone())
            .collect();
    }
    let paths: std::collections::BTreeSet<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    let in_package = |path: &str| {
        let mut dir = Path::new(path).parent();
        while let Some(d) = dir {
            if d.as_os_str().is_empty() || !d.starts_with(package) {
                break;
            }
            if !paths.contains(format!("{}/__init__.py", d.display()).as_str()) {
                return false;
            }
            dir = d.parent();
        }
        true
    };
    let mut out: Vec<String> = files
        .iter()
        .filter(|(path, text)| {
            path.starts_with(&format!("{package}/"))
                && !path.contains("/__pycache__/")
                && in_package(path)
                && (!path.ends_with("/__init__.py") || defines_something(text))
        })
        .map(|(p, _)| p.clone())
        .collect();
    out.sort();
    out
}

/// An `__init__.py` that only re-exports or documents has nothing to test.
fn defines_something(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with("def ") || l.starts_with("async def ") || l.starts_with("class ")
    })
}

/// Whether `path` is one of the tests (pytest's at the base, the folder the user named, the
/// files the run added) rather than code under test.
pub fn test_side(state: &RunState) -> impl Fn(&str) -> bool + '_ {
    let layout = state.baseline.as_ref().map(|b| &b.layout);
    let side = layout.map(|l| l.test_side(&state.settings.packages));
    let added: Vec<&str> = state
        .kept()
        .filter_map(|i| i.test_file.as_deref())
        .collect();
    move |path: &str| {
        side.as_ref().is_some_and(|f| f(path))
            || added.contains(&path)
            || state
                .settings
                .tests_dir
                .as_deref()
                .is_some_and(|d| path.starts_with(&format!("{d}/")))
    }
}

/// The tests at `commit`, as (path, text).
pub fn test_files_at(
    repo: &git2::Repository,
    commit: git2::Oid,
    state: &RunState,
) -> Result<Vec<(String, String)>, crate::git::GitError> {
    let side = test_side(state);
    crate::git::python_files_where(repo, commit, |p| side(p))
}

/// The modules of the code under test at `commit`, tests (inside a package too) left out.
pub fn modules_at(
    repo: &git2::Repository,
    commit: git2::Oid,
    state: &RunState,
) -> Result<Vec<String>, crate::git::GitError> {
    let side = test_side(state);
    let left_out = |package: &str| {
        let name = crate::project::import_name(package, &state.settings.source_roots);
        state
            .baseline
            .iter()
            .flat_map(|b| b.left_out.iter())
            .any(|l| l.name == name)
    };
    let mut modules = Vec::new();
    for package in state.settings.packages.iter().filter(|p| !left_out(p)) {
        let files = crate::git::python_files_at(repo, commit, package)?;
        modules.extend(
            list_modules(&files, package)
                .into_iter()
                .filter(|m| !side(m)),
        );
    }
    modules.sort();
    modules.dedup();
    Ok(modules)
}

/// Where new tests for `module` go: the folder the user named; else where the existing tests
/// that import it live (the folder most of them share); else the project's main tests folder.
pub fn tests_dir_for(module: &str, state: &RunState, test_files: &[(String, String)]) -> String {
    if let Some(dir) = &state.settings.tests_dir {
        return dir.clone();
    }
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    let name = crate::project::import_name(module, &state.settings.source_roots);
    for (path, _) in tests_importing(test_files, &name, usize::MAX) {
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d).to_string();
        *counts.entry(dir).or_default() += 1;
    }
    if let Some((dir, _)) = counts.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))) {
        return dir.clone();
    }
    state
        .baseline
        .as_ref()
        .map(|b| b.layout.main_dir(&state.settings.packages))
        .unwrap_or_else(|| crate::layout::DEFAULT_TESTS_DIR.to_string())
}

/// What is left to cover of the change in `module`: changed lines no test runs plus branches
/// from changed lines no test takes. None when diff coverage was not measured for it.
fn change_gaps(coverage: &Coverage, module: &str) -> Option<u32> {
    Some(coverage.diff.as_ref()?.files.get(module)?.gaps())
}

/// The next target. Each module's weight is what is left to cover in it (statements never run
/// plus branches never taken, at the run branch's tip), divided by one plus the iterations that
/// already targeted it and once more by one plus those that kept nothing; ties go to the lower
/// coverage, then the name. A module whose last two iterations kept nothing rests while the
/// run's last four iterations include one of them, unless every other module is out too.
/// Fully covered modules come last. Without coverage figures the weight is 1 for every module,
/// so the least targeted comes first. In a `--since` run what is left to cover is the
/// change's (its lines never run and branches never taken), and a module with none left is
/// done: never chosen. Modules in `busy` (targeted by an iteration in flight)
/// are never chosen; None when every module is.
pub fn choose_target(
    modules: &[String],
    state: &RunState,
    coverage: Option<&Coverage>,
    busy: &[String],
) -> Option<String> {
    let on = |m: &str| -> Vec<&crate::state::Iteration> {
        state
            .iterations
            .iter()
            .filter(|i| i.target == m && i.kind == Kind::Add)
            .collect()
    };
    let weight = |m: &str| -> f64 {
        let its = on(m);
        let misses = its
            .iter()
            .filter(|i| i.is_finished() && i.outcome != Some(crate::state::Outcome::Kept))
            .count();
        let gaps = match (coverage, &state.change) {
            (Some(c), Some(_)) => f64::from(change_gaps(c, m).unwrap_or(1)),
            (Some(c), None) if !c.missing.is_empty() => {
                f64::from(c.missing.get(m).copied().unwrap_or(0))
            }
            _ => 1.0,
        };
        gaps / (1.0 + its.len() as f64) / (1.0 + misses as f64)
    };
    let recent: Vec<u32> = state.iterations.iter().rev().take(4).map(|i| i.n).collect();
    let rested = |m: &str| {
        let its = on(m);
        let last_two: Vec<_> = its.iter().rev().take(2).collect();
        last_two.len() == 2
            && last_two
                .iter()
                .all(|i| i.is_finished() && i.outcome != Some(crate::state::Outcome::Kept))
            && last_two.iter().any(|i| recent.contains(&i.n))
    };
    let cov = |m: &str| {
        coverage
            .and_then(|c| c.modules.get(m).copied())
            .unwrap_or(0.0)
    };
    let best = |pool: Vec<&String>| {
        pool.into_iter()
            .max_by(|a, b| {
                weight(a)
                    .total_cmp(&weight(b))
                    .then(cov(b).total_cmp(&cov(a)))
                    .then(b.cmp(a))
            })
            .cloned()
    };
    // Never two iterations on one module at once (`--jobs`): their tests would be written
    // against the same gaps and the second would mostly repeat the first. In a `--since` run,
    // a module whose changed lines all run is done.
    let done =
        |m: &str| state.change.is_some() && coverage.and_then(|c| change_gaps(c, m)) == Some(0);
    let free: Vec<&String> = modules
        .iter()
        .filter(|m| !busy.contains(m) && !done(m))
        .collect();
    let awake: Vec<&String> = free.iter().copied().filter(|m| !rested(m)).collect();
    if awake.is_empty() {
        best(free)
    } else {
        best(awake)
    }
}

pub fn focus_for(n: u32, focus: &[String]) -> String {
    if focus.is_empty() {
        return "edge cases".into();
    }
    focus[(n.saturating_sub(1) as usize) % focus.len()].clone()
}

/// Test files among `files` (path, text) that import `import_name`, at most `limit`.
pub fn tests_importing(
    files: &[(String, String)],
    import_name: &str,
    limit: usize,
) -> Vec<(String, String)> {
    let (parent, leaf) = match import_name.rsplit_once('.') {
        Some((p, l)) => (p.to_string(), l.to_string()),
        None => (String::new(), import_name.to_string()),
    };
    files
        .iter()
        .filter(|(_, text)| {
            text.lines().any(|l| {
                let l = l.trim();
                l.starts_with(&format!("from {import_name} import"))
                    || l == format!("import {import_name}")
                    || l.starts_with(&format!("import {import_name} "))
                    || (!parent.is_empty()
                        && l.starts_with(&format!("from {parent} import"))
                        && l.split(|c: char| !c.is_alphanumeric() && c != '_')
                            .any(|w| w == leaf))
            })
        })
        .take(limit)
        .cloned()
        .collect()
}

/// The next fix iteration's test file: one holding tests that failed at the start and are not
/// fixed yet, tried fewer than `MAX_FIX_ATTEMPTS` times and not in flight. Fix iterations go
/// first: a red suite is where the night starts.
pub fn choose_fix_target(
    state: &RunState,
    test_files: &[String],
    busy: &[String],
) -> Option<String> {
    let baseline = state.baseline.as_ref()?;
    let fixed = state.fixed_tests();
    let mut open: Vec<String> = baseline
        .failed
        .iter()
        .filter(|id| !fixed.contains(id))
        .filter_map(|id| TestId::new(id).file_among(test_files))
        .filter(|f| !busy.contains(f))
        // A file that does not import because the project or a dependency does not is not the
        // test's fault: rewriting it would only hide that.
        .filter(|f| !baseline.unfixable.iter().any(|u| &u.file == f))
        .filter(|f| {
            state
                .iterations
                .iter()
                .filter(|i| i.kind == Kind::Fix && &i.target == f)
                .count()
                < MAX_FIX_ATTEMPTS
        })
        .collect();
    open.sort();
    open.dedup();
    open.into_iter().next()
}

/// Tries per failing test file before it is left to a human.
pub const MAX_FIX_ATTEMPTS: usize = 2;

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(n: u32, target: &str, kept: bool) -> crate::state::Iteration {
        let mut it = crate::state::Iteration::new(n, target.into(), "f".into(), Kind::Add);
        it.step = crate::state::Step::Finished;
        it.outcome = Some(if kept {
            crate::state::Outcome::Kept
        } else {
            crate::state::Outcome::Rejected
        });
        it
    }

    fn coverage(missing: &[(&str, u32)]) -> Coverage {
        Coverage {
            percent: 50.0,
            modules: missing.iter().map(|(m, _)| (m.to_string(), 50.0)).collect(),
            missing: missing.iter().map(|(m, k)| (m.to_string(), *k)).collect(),
            diff: None,
        }
    }

    #[test]
    fn targets_weigh_what_is_missing_and_what_was_tried() {
        let modules: Vec<String> = ["pkg/a.py", "pkg/b.py", "pkg/c.py"]
            .map(String::from)
            .to_vec();
        let mut state = crate::state::tests::sample_state();
        state.iterations.clear();
        let cov = coverage(&[("pkg/a.py", 40), ("pkg/b.py", 25), ("pkg/c.py", 0)]);
        // The most left to cover first.
        assert_eq!(
            choose_target(&modules, &state, Some(&cov), &[]).as_deref(),
            Some("pkg/a.py")
        );
        // Targeted once and kept nothing: 40 / 2 / 2 = 10 < 25.
        state.iterations.push(finished(1, "pkg/a.py", false));
        assert_eq!(
            choose_target(&modules, &state, Some(&cov), &[]).as_deref(),
            Some("pkg/b.py")
        );
        // Busy modules are never chosen; fully covered ones only when nothing else is left.
        assert_eq!(
            choose_target(&modules, &state, Some(&cov), &["pkg/b.py".into()]).as_deref(),
            Some("pkg/a.py")
        );
        assert_eq!(
            choose_target(
                &modules,
                &state,
                Some(&cov),
                &["pkg/a.py".into(), "pkg/b.py".into()]
            )
            .as_deref(),
            Some("pkg/c.py")
        );
        assert_eq!(choose_target(&modules, &state, Some(&cov), &modules), None);
    }

    #[test]
    fn a_since_run_weighs_the_change_and_leaves_a_covered_change_alone() {
        use crate::schema::{Change, DiffCoverage, FileDiffCoverage};
        let modules: Vec<String> = ["pkg/a.py", "pkg/b.py"].map(String::from).to_vec();
        let mut state = crate::state::tests::sample_state();
        state.iterations.clear();
        state.change = Some(Change {
            files: [("pkg/a.py".into(), vec![1]), ("pkg/b.py".into(), vec![2])].into(),
            ..Change::default()
        });
        let file = |missing: Vec<u32>, branches: u32| FileDiffCoverage {
            missing,
            missing_branches: branches,
            ..FileDiffCoverage::default()
        };
        // pkg/a.py has more left to cover overall, pkg/b.py more of the change.
        let mut cov = coverage(&[("pkg/a.py", 90), ("pkg/b.py", 5)]);
        cov.diff = Some(DiffCoverage {
            files: [
                ("pkg/a.py".into(), file(vec![1], 0)),
                ("pkg/b.py".into(), file(vec![2, 3], 1)),
            ]
            .into(),
            ..DiffCoverage::default()
        });
        assert_eq!(
            choose_target(&modules, &state, Some(&cov), &[]).as_deref(),
            Some("pkg/b.py")
        );
        // Every changed line of pkg/b.py runs now: it is done, even when it is all that is left.
        cov.diff
            .as_mut()
            .unwrap()
            .files
            .insert("pkg/b.py".into(), file(vec![], 0));
        assert_eq!(
            choose_target(&modules, &state, Some(&cov), &[]).as_deref(),
            Some("pkg/a.py")
        );
        assert_eq!(
            choose_target(&modules, &state, Some(&cov), &["pkg/a.py".into()]),
            None
        );
    }

    #[test]
    fn a_module_that_keeps_producing_nothing_rests() {
        let modules: Vec<String> = ["pkg/a.py", "pkg/b.py"].map(String::from).to_vec();
        let mut state = crate::state::tests::sample_state();
        state.iterations = vec![
            finished(1, "pkg/a.py", false),
            finished(2, "pkg/a.py", false),
        ];
        // a has far more left to cover, but its last two tries kept nothing: it rests.
        let cov = coverage(&[("pkg/a.py", 1000), ("pkg/b.py", 1)]);
        assert_eq!(
            choose_target(&modules, &state, Some(&cov), &[]).as_deref(),
            Some("pkg/b.py")
        );
        // Alone, it is still chosen rather than nothing.
        assert_eq!(
            choose_target(&modules, &state, Some(&cov), &["pkg/b.py".into()]).as_deref(),
            Some("pkg/a.py")
        );
        // Four iterations later it wakes up.
        for n in 3..=6 {
            state.iterations.push(finished(n, "pkg/b.py", true));
        }
        assert_eq!(
            choose_target(&modules, &state, Some(&cov), &[]).as_deref(),
            Some("pkg/a.py")
        );
    }

    fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect()
    }

    #[test]
    fn lists_modules_skipping_empty_init_and_non_packages() {
        let f = files(&[
            (
                "pkg/__init__.py",
                "\"\"\"Docs only.\"\"\"\nfrom .a import x\n",
            ),
            ("pkg/a.py", "x = 1\n"),
            ("pkg/sub/__init__.py", "def y():\n    return 2\n"),
            ("pkg/data/b.py", "z = 3\n"),
            ("other/c.py", "def c(): pass\n"),
        ]);
        assert_eq!(
            list_modules(&f, "pkg"),
            vec!["pkg/a.py", "pkg/sub/__init__.py"]
        );
    }

    #[test]
    fn finds_tests_importing_a_module() {
        let f = files(&[
            ("tests/test_a.py", "from pkg.a import f\n"),
            ("tests/test_b.py", "from pkg import b, c\n"),
            ("tests/test_c.py", "from pkg.ab import f\n"),
        ]);
        let names =
            |found: Vec<(String, String)>| found.into_iter().map(|t| t.0).collect::<Vec<_>>();
        assert_eq!(
            names(tests_importing(&f, "pkg.a", 5)),
            vec!["tests/test_a.py"]
        );
        assert_eq!(
            names(tests_importing(&f, "pkg.b", 5)),
            vec!["tests/test_b.py"]
        );
    }

    #[test]
    fn focus_rotates() {
        let f = vec!["a".to_string(), "b".to_string()];
        assert_eq!(
            [focus_for(1, &f), focus_for(2, &f), focus_for(3, &f)],
            ["a", "b", "a"]
        );
    }
}
