//! Where the project's tests live, as pytest itself says: its `testpaths` and `python_files`
//! settings (from whichever config file pytest read) and the files its collection found, asked
//! of pytest once per run in the baseline's worktree (see `python/improve_plugin.py`). From
//! that: which files are tests, where a new test file for a module goes, and whether a bare
//! `pytest` would collect it.

use crate::project::{self, TEST_DIR_NAMES, glob_match};

pub use crate::schema::{TestLayout, Unfixable};

/// Where new tests go when the project has none and pytest's config names no folder.
pub const DEFAULT_TESTS_DIR: &str = "tests";

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(d, _)| d)
}

fn base_name(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, f)| f)
}

fn is_under(path: &str, dir: &str) -> bool {
    dir.is_empty() || path == dir || path.starts_with(&format!("{dir}/"))
}

impl TestLayout {
    fn patterns(&self) -> Vec<&str> {
        if self.python_files.is_empty() {
            vec!["test_*.py", "*_test.py"]
        } else {
            self.python_files.iter().map(String::as_str).collect()
        }
    }

    /// Whether pytest takes a file of this name for a test module.
    pub fn matches_python_files(&self, path: &str) -> bool {
        let name = base_name(path);
        self.patterns().iter().any(|p| glob_match(p, name))
    }

    /// Folders every file of which belongs to the tests: those that hold collected tests and
    /// are named like a tests folder or lie outside the code under test (`packages`). The
    /// root never is, nor a package folder with a test module beside its code.
    pub fn test_dirs(&self, packages: &[String]) -> Vec<String> {
        let mut dirs: Vec<String> = self
            .test_files
            .iter()
            .map(|f| parent(f).to_string())
            .chain(
                self.testpaths
                    .iter()
                    .filter(|p| !p.ends_with(".py") && !p.contains('*'))
                    .cloned(),
            )
            .filter(|d| !d.is_empty())
            .filter(|d| {
                TEST_DIR_NAMES.contains(&base_name(d))
                    || !packages.iter().any(|p| is_under(d, p) || is_under(p, d))
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        // `tests/unit` is inside `tests`: one folder is enough.
        let tops: Vec<String> = dirs
            .iter()
            .filter(|d| !dirs.iter().any(|o| o != *d && is_under(d, o)))
            .cloned()
            .collect();
        tops
    }

    /// Whether `path` belongs to the tests rather than to the code under test.
    pub fn is_test_side(&self, path: &str, packages: &[String]) -> bool {
        self.test_side(packages)(path)
    }

    /// [`Self::is_test_side`] with the test folders worked out once, for many paths.
    pub fn test_side<'a>(&'a self, packages: &[String]) -> impl Fn(&str) -> bool + 'a {
        let dirs = self.test_dirs(packages);
        // Asked for every `.py` file of a commit: a set, not a scan of the list per file.
        let files: std::collections::HashSet<&str> =
            self.test_files.iter().map(String::as_str).collect();
        move |path: &str| {
            base_name(path) == "conftest.py"
                || files.contains(path)
                || dirs.iter().any(|d| is_under(path, d))
                || (self.matches_python_files(path) && self.collects(path))
        }
    }

    /// Whether a bare `pytest` at the repository's root would collect `path`.
    pub fn collects(&self, path: &str) -> bool {
        self.matches_python_files(path) && self.under_testpaths(path)
    }

    /// The folder for new tests when no test of the target says where its tests live: the first
    /// folder `testpaths` names, else the tests folder with the most collected files, else the
    /// folder with the most collected files (the root, for `test_six.py`), else `tests`.
    pub fn main_dir(&self, packages: &[String]) -> String {
        // Not a folder that holds the code (`testpaths = src tests` for doctests, say).
        if let Some(dir) = self
            .testpaths
            .iter()
            .map(|t| t.trim_end_matches('/'))
            .find(|t| {
                !t.ends_with(".py")
                    && !t.contains('*')
                    && *t != "."
                    && !t.is_empty()
                    && !packages.iter().any(|p| is_under(t, p) || is_under(p, t))
            })
        {
            return dir.to_string();
        }
        let count = |d: &str| self.test_files.iter().filter(|f| is_under(f, d)).count();
        let dirs = self.test_dirs(packages);
        let busiest = |candidates: Vec<String>| {
            candidates
                .into_iter()
                .max_by(|a, b| count(a).cmp(&count(b)).then(b.len().cmp(&a.len())))
        };
        if let Some(d) = busiest(dirs) {
            return d;
        }
        let parents: Vec<String> = self
            .test_files
            .iter()
            .map(|f| parent(f).to_string())
            .collect();
        busiest(parents).unwrap_or_else(|| DEFAULT_TESTS_DIR.to_string())
    }

    /// A file name for new tests of `stem` that pytest's `python_files` accepts.
    pub fn file_name(&self, stem: &str, n: u32, k: u32) -> String {
        let suffix = if k == 0 {
            format!("{n}")
        } else {
            format!("{n}_{k}")
        };
        let mut candidates = vec![
            format!("test_{stem}_improve_{suffix}.py"),
            format!("{stem}_improve_{suffix}_test.py"),
        ];
        // The project's own pattern (`check_*.py`), its one `*` filled in.
        candidates.extend(
            self.patterns()
                .iter()
                .filter(|p| {
                    p.matches('*').count() == 1
                        && p.ends_with(".py")
                        && !p.contains(['?', '[', '/'])
                })
                .map(|p| p.replace('*', &format!("{stem}_improve_{suffix}"))),
        );
        candidates
            .iter()
            .find(|c| self.matches_python_files(c))
            .unwrap_or(&candidates[0])
            .clone()
    }

    /// Whether `path` lies where a bare `pytest` looks (`testpaths`, else anywhere).
    fn under_testpaths(&self, path: &str) -> bool {
        self.testpaths.is_empty()
            || self.testpaths.iter().any(|t| {
                let t = t.trim_end_matches('/');
                t == "." || is_under(path, t) || glob_match(t, path)
            })
    }

    /// The arguments of a whole-suite run that also runs `extra` (new test files a bare
    /// `pytest` would not collect); none when pytest finds them all. A name `python_files`
    /// does not take is added to it for the run (`-o`); a file outside `testpaths` is named
    /// after pytest's own paths. Never a file inside a path already given: pytest drops an
    /// argument that lies inside another.
    pub fn suite_args(&self, extra: &[String]) -> Vec<String> {
        let missing: Vec<&String> = extra.iter().filter(|f| !self.collects(f)).collect();
        let mut args = Vec::new();
        let mut names: Vec<String> = missing
            .iter()
            .filter(|f| !self.matches_python_files(f))
            .map(|f| base_name(f).to_string())
            .collect();
        names.sort();
        names.dedup();
        if !names.is_empty() {
            let mut patterns: Vec<String> = self.patterns().iter().map(|p| p.to_string()).collect();
            patterns.extend(names);
            args.push("-o".to_string());
            args.push(format!("python_files={}", patterns.join(" ")));
        }
        let outside: Vec<String> = missing
            .iter()
            .filter(|f| !self.under_testpaths(f))
            .map(|f| f.to_string())
            .collect();
        if !outside.is_empty() {
            args.extend(self.testpaths.iter().cloned());
            args.extend(outside);
        }
        args
    }
}

/// The file a collection error's id (`tests.test_x`) names.
fn file_of_module_id(id: &str) -> String {
    format!("{}.py", id.replace('.', "/"))
}

/// The innermost frame of a pytest traceback (`src/pkg/__init__.py:5: in <module>`).
fn innermost_frame(detail: &str) -> Option<&str> {
    detail
        .lines()
        .filter_map(|l| {
            let (path, rest) = l.split_once(".py:")?;
            let digits = rest.split(':').next()?;
            (!digits.is_empty()
                && digits.chars().all(|c| c.is_ascii_digit())
                && !path.contains(' '))
            .then_some(&l[..path.len() + 3])
        })
        .next_back()
}

/// The `E   ...Error: ...` line of a traceback, else its last line.
fn error_line(detail: &str, message: &str) -> String {
    detail
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("E ").map(str::trim))
        .filter(|l| !l.is_empty())
        .or_else(|| detail.lines().rev().map(str::trim).find(|l| !l.is_empty()))
        .unwrap_or(message)
        .to_string()
}

fn missing_module(error: &str) -> Option<&str> {
    let rest = error.split("No module named '").nth(1)?;
    rest.split('\'').next()
}

/// Test files whose collection failed because the code under test raised on import (the
/// innermost frame is in a package) or a module that is neither the project's nor in the
/// worktree is missing (a dependency that is not installed).
pub fn unfixable_files(
    cases: &[crate::pytest::TestCase],
    packages: &[String],
    import_names: &[String],
    worktree: &std::path::Path,
) -> Vec<Unfixable> {
    let tops: Vec<&str> = import_names
        .iter()
        .map(|n| n.split('.').next().unwrap_or(n))
        .collect();
    let mut out = Vec::new();
    for case in cases.iter().filter(|c| {
        c.outcome == crate::pytest::CaseOutcome::Error
            && crate::testid::TestId::new(&c.id).is_file()
    }) {
        let error = error_line(&case.detail, &case.message);
        let frame = innermost_frame(&case.detail).unwrap_or("");
        let in_package = packages.iter().any(|p| {
            is_under(frame, p)
                || frame.contains(&format!("/{p}/"))
                || frame.ends_with(&format!("/{p}"))
        });
        let cause = match missing_module(&error) {
            _ if in_package => Some(format!("{error}, raised by {frame}")),
            Some(m) => {
                let top = m.split('.').next().unwrap_or(m);
                let local = tops.contains(&top)
                    || worktree.join(top).exists()
                    || worktree.join(format!("{top}.py")).exists();
                (!local).then(|| format!("{error}: install {top} in the test command's Python"))
            }
            None => None,
        };
        if let Some(cause) = cause {
            out.push(Unfixable {
                file: file_of_module_id(&case.id),
                cause,
            });
        }
    }
    out
}

/// Why the code under test cannot be tested from `worktree`, if it cannot: it does not import
/// there, or it is imported from somewhere else (an installed copy, the user's own checkout).
/// `source_roots`: the run's declared source roots (see [`project::import_root`]).
pub fn import_problem(
    name: &str,
    check: &crate::pytest::ImportCheck,
    worktree: &std::path::Path,
    packages: &[String],
    source_roots: &[String],
) -> Option<String> {
    if let Some(error) = &check.error {
        // The package that failed, not whichever comes first.
        let package = packages
            .iter()
            .find(|p| project::import_name(p, source_roots) == name)
            .or(packages.first());
        let hint = match missing_module(error) {
            Some(m) if m.starts_with(&format!("{}.", name.split('.').next().unwrap_or(name))) => {
                let rel = m.replace('.', "/");
                let root = package
                    .map(|p| project::import_root(p, source_roots))
                    .unwrap_or_default();
                let folder = if root.is_empty() {
                    rel
                } else {
                    format!("{root}/{rel}")
                };
                let file = format!("{folder}.py");
                // The package itself is there: it is the name made from its path that is
                // wrong (a folder the packaging imports from that the metadata did not say).
                let parent = package
                    .filter(|p| **p == file || **p == folder)
                    .filter(|p| worktree.join(p).exists())
                    .and_then(|p| p.rsplit_once('/'))
                    .map(|(dir, _)| dir);
                match parent {
                    Some(dir) => {
                        format!(
                            "`{file}` is there, but not importable as `{m}`: if it is imported \
                             from `{dir}/` (setuptools' package_dir), pass --source-root {dir}"
                        )
                    }
                    _ => format!(
                        "`{file}` is not committed (generated at install or build time?) and \
                         not in your checkout either: pass --setup-cmd with the command that \
                         makes it, e.g. --setup-cmd 'pip install -e .'"
                    ),
                }
            }
            Some(m) => format!(
                "install {} in the test command's Python",
                m.split('.').next().unwrap_or(m)
            ),
            None => "if the project needs a build step, pass --setup-cmd CMD; if this is not \
                     the code to test, pass --package PATH"
                .to_string(),
        };
        return Some(format!(
            "`{name}` does not import in a clean checkout of the base commit ({error}): {hint}"
        ));
    }
    let places: Vec<&String> = check.file.iter().chain(check.path.iter()).collect();
    let root = worktree
        .canonicalize()
        .unwrap_or_else(|_| worktree.to_path_buf());
    let inside = places.iter().any(|p| {
        let p = std::path::Path::new(p.as_str());
        p.canonicalize()
            .unwrap_or_else(|_| p.to_path_buf())
            .starts_with(&root)
    });
    (!inside && !places.is_empty()).then(|| {
        format!(
            "the tests import `{name}` from {}, not from the checkout under test: pass --package \
             with the folder that holds it (detected: {})",
            places[0],
            packages.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(testpaths: &[&str], python_files: &[&str], files: &[&str]) -> TestLayout {
        TestLayout {
            testpaths: testpaths.iter().map(|s| s.to_string()).collect(),
            python_files: python_files.iter().map(|s| s.to_string()).collect(),
            test_files: files.iter().map(|s| s.to_string()).collect(),
            inifile: None,
        }
    }

    fn pkgs(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    fn error_case(id: &str, detail: &str) -> crate::pytest::TestCase {
        crate::pytest::TestCase {
            id: id.into(),
            outcome: crate::pytest::CaseOutcome::Error,
            message: "collection failure".into(),
            detail: detail.into(),
        }
    }

    #[test]
    fn collection_errors_the_project_or_a_dependency_causes_are_unfixable() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("tests")).unwrap();
        let version = "ImportError while importing test module '/wt/tests/test_time.py'.\nTraceback:\n/usr/lib/python3.11/importlib/__init__.py:126: in import_module\n    return _bootstrap._gcd_import(name[level:], package, level)\ntests/test_time.py:3: in <module>\n    import humanize\nsrc/humanize/__init__.py:5: in <module>\n    from humanize._version import __version__\nE   ModuleNotFoundError: No module named 'humanize._version'";
        let numpy = "Traceback:\ntests/test_np.py:1: in <module>\n    import numpy\nE   ModuleNotFoundError: No module named 'numpy'";
        let own_bug = "Traceback:\ntests/test_x.py:1: in <module>\n    from humanize.time import gone\nE   ImportError: cannot import name 'gone' from 'humanize.time' (/wt/src/humanize/time.py)";
        let local = "Traceback:\ntests/test_y.py:1: in <module>\n    import tests.helpers\nE   ModuleNotFoundError: No module named 'tests.helpers'";
        let cases = [
            error_case("tests.test_time", version),
            error_case("tests.test_np", numpy),
            error_case("tests.test_x", own_bug),
            error_case("tests.test_y", local),
        ];
        let got = unfixable_files(
            &cases,
            &["src/humanize".into()],
            &["humanize".into()],
            tmp.path(),
        );
        let files: Vec<&str> = got.iter().map(|u| u.file.as_str()).collect();
        assert_eq!(files, ["tests/test_time.py", "tests/test_np.py"]);
        assert!(
            got[0].cause.contains("humanize._version")
                && got[0].cause.contains("src/humanize/__init__.py"),
            "{}",
            got[0].cause
        );
        assert!(got[1].cause.contains("install numpy"), "{}", got[1].cause);
    }

    #[test]
    fn an_import_from_outside_the_worktree_or_a_failing_one_is_a_problem() {
        let wt = tempfile::tempdir().unwrap();
        let pkgs = vec!["src/humanize".to_string()];
        let inside = crate::pytest::ImportCheck {
            file: Some(
                wt.path()
                    .join("src/humanize/__init__.py")
                    .display()
                    .to_string(),
            ),
            ..Default::default()
        };
        assert_eq!(
            import_problem("humanize", &inside, wt.path(), &pkgs, &[]),
            None
        );
        let outside = crate::pytest::ImportCheck {
            file: Some("/home/u/humanize/src/humanize/__init__.py".into()),
            ..Default::default()
        };
        let msg = import_problem("humanize", &outside, wt.path(), &pkgs, &[]).unwrap();
        assert!(
            msg.contains("/home/u/humanize") && msg.contains("--package"),
            "{msg}"
        );
        let failing = crate::pytest::ImportCheck {
            error: Some("ModuleNotFoundError: No module named 'humanize._version'".into()),
            ..Default::default()
        };
        let msg = import_problem("humanize", &failing, wt.path(), &pkgs, &[]).unwrap();
        assert!(
            msg.contains("src/humanize/_version.py") && msg.contains("--setup-cmd"),
            "{msg}"
        );
        // A module in a folder the metadata did not declare: it is there, named wrong.
        std::fs::create_dir_all(wt.path().join("code")).unwrap();
        std::fs::write(wt.path().join("code/png.py"), "").unwrap();
        let clash = crate::pytest::ImportCheck {
            error: Some(
                "ModuleNotFoundError: No module named 'code.png'; 'code' is not a package".into(),
            ),
            ..Default::default()
        };
        let pkgs = vec!["code/png.py".to_string()];
        let msg = import_problem("code.png", &clash, wt.path(), &pkgs, &[]).unwrap();
        assert!(msg.contains("--source-root code"), "{msg}");
        assert!(!msg.contains("not committed"), "{msg}");
    }

    #[test]
    fn tests_inside_the_package() {
        let l = layout(
            &[],
            &[],
            &["toolz/tests/test_a.py", "toolz/tests/test_b.py"],
        );
        let p = pkgs(&["toolz", "tlz"]);
        assert_eq!(l.test_dirs(&p), ["toolz/tests"]);
        assert!(l.is_test_side("toolz/tests/helpers.py", &p));
        assert!(!l.is_test_side("toolz/itertoolz.py", &p));
        assert_eq!(l.main_dir(&p), "toolz/tests");
    }

    #[test]
    fn test_files_at_the_root() {
        let l = layout(&[], &[], &["test_six.py"]);
        let p = pkgs(&["six.py"]);
        assert!(l.test_dirs(&p).is_empty());
        assert!(l.is_test_side("test_six.py", &p));
        assert!(!l.is_test_side("six.py", &p));
        assert_eq!(l.main_dir(&p), "");
        assert!(l.collects("test_six_improve_1.py"));
    }

    #[test]
    fn a_test_module_beside_the_code_does_not_make_the_package_a_test_folder() {
        let l = layout(&[], &[], &["pkg/test_core.py"]);
        let p = pkgs(&["pkg"]);
        assert!(l.test_dirs(&p).is_empty());
        assert!(!l.is_test_side("pkg/core.py", &p));
        assert!(l.is_test_side("pkg/test_core.py", &p));
    }

    #[test]
    fn testpaths_decide_what_a_bare_pytest_collects() {
        let l = layout(&["test.py"], &["test*.py"], &["test.py"]);
        assert!(!l.collects("tests/test_x_improve_1.py"));
        assert_eq!(
            l.suite_args(&["test_x_improve_1.py".into()]),
            ["test.py", "test_x_improve_1.py"]
        );
        // A name python_files does not take, where pytest looks: named in python_files for
        // the run, never as a path inside another (pytest would drop it).
        let l = layout(&[], &["tests.py"], &["tests.py"]);
        assert_eq!(
            l.suite_args(&["test_j_improve_3.py".into()]),
            ["-o", "python_files=tests.py test_j_improve_3.py"]
        );
        let l = layout(&["tests"], &[], &[]);
        assert_eq!(l.main_dir(&[]), "tests");
        assert!(l.collects("tests/sub/test_x.py"));
        assert!(!l.collects("other/test_x.py"));
        assert!(l.suite_args(&["tests/test_y.py".into()]).is_empty());
    }

    #[test]
    fn a_testpath_that_holds_the_code_is_no_place_for_new_tests() {
        let l = layout(&["src", "tests"], &[], &["tests/test_a.py"]);
        assert_eq!(l.main_dir(&pkgs(&["src/humanize"])), "tests");
    }

    #[test]
    fn zero_tests_go_to_a_new_tests_folder() {
        let l = layout(&[], &[], &[]);
        assert_eq!(l.main_dir(&pkgs(&["pkg"])), "tests");
    }

    #[test]
    fn file_names_follow_python_files() {
        assert_eq!(
            layout(&[], &[], &[]).file_name("core", 3, 0),
            "test_core_improve_3.py"
        );
        assert_eq!(
            layout(&[], &["*_test.py"], &[]).file_name("core", 3, 1),
            "core_improve_3_1_test.py"
        );
        assert_eq!(
            layout(&[], &["check_*.py"], &[]).file_name("core", 3, 0),
            "check_core_improve_3.py"
        );
    }
}
