//! Test ids as pytest's JUnit report writes them, `tests.test_x.TestK::test_b[1]`: the dotted
//! module and classes, `::`, then the test's name with its parameters. A file that did not
//! collect is reported under its dotted module alone, with no `::`. Everything improve needs of
//! an id (its file, pytest's node id, the name the pruner removes, a short name for messages)
//! is worked out here.

use std::path::Path;

/// A test id, borrowed from wherever it is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestId<'a>(&'a str);

impl<'a> TestId<'a> {
    pub fn new(id: &'a str) -> Self {
        TestId(id)
    }

    pub fn as_str(self) -> &'a str {
        self.0
    }

    /// The id of a file that did not collect (an import or syntax error), not of a test.
    pub fn is_file(self) -> bool {
        !self.0.contains("::")
    }

    /// `tests.test_x.TestK` of `tests.test_x.TestK::test_b[1]`; the whole id of a file.
    fn class_path(self) -> &'a str {
        self.0.rsplit_once("::").map_or(self.0, |(c, _)| c)
    }

    /// `test_b[1]`: the name with its parameters, for messages.
    pub fn name(self) -> &'a str {
        self.0.rsplit("::").next().unwrap_or(self.0)
    }

    /// `test_b`: the test function's name.
    pub fn function(self) -> &'a str {
        let name = self.name();
        name.split('[').next().unwrap_or(name)
    }

    /// Whether the id belongs to the test file `file` (`tests/test_x.py`).
    pub fn in_file(self, file: &str) -> bool {
        let module = dotted(file);
        let class_path = self.0.split("::").next().unwrap_or("");
        class_path == module || class_path.starts_with(&format!("{module}."))
    }

    /// The one of `files` (repo-relative) the id belongs to: the longest dotted prefix that
    /// names a file.
    pub fn file_among(self, files: &[String]) -> Option<String> {
        let parts: Vec<&str> = self.class_path().split('.').collect();
        (1..=parts.len()).rev().find_map(|k| {
            let file = format!("{}.py", parts[..k].join("/"));
            files.contains(&file).then_some(file)
        })
    }

    /// pytest's node id (`tests/test_x.py::TestK::test_b[1]`): the longest dotted prefix that
    /// names a file in `worktree` is the module, the rest the classes.
    pub fn node_id(self, worktree: &Path) -> Option<String> {
        let (class_path, name) = self.0.rsplit_once("::")?;
        let parts: Vec<&str> = class_path.split('.').collect();
        (1..=parts.len()).rev().find_map(|k| {
            let file = format!("{}.py", parts[..k].join("/"));
            worktree.join(&file).is_file().then(|| {
                std::iter::once(file)
                    .chain(parts[k..].iter().map(|c| c.to_string()))
                    .chain(std::iter::once(name.to_string()))
                    .collect::<Vec<_>>()
                    .join("::")
            })
        })
    }

    /// The name the pruning helper removes from `test_file`: `test_a` for a function (its
    /// parameters dropped: a parametrized test goes whole), `TestK::test_b` for a method. None
    /// for an id of another file.
    pub fn prune_name(self, test_file: &str) -> Option<String> {
        let module = dotted(test_file);
        let (class_path, _) = self.0.rsplit_once("::")?;
        let name = self.function();
        if class_path == module {
            Some(name.to_string())
        } else {
            class_path
                .strip_prefix(&format!("{module}."))
                .map(|class| format!("{class}::{name}"))
        }
    }
}

/// The file of pytest's node id `tests/test_x.py::TestK::test_b`.
pub fn node_file(node_id: &str) -> &str {
    node_id.split("::").next().unwrap_or(node_id)
}

/// `tests.test_x` of `tests/test_x.py`.
fn dotted(file: &str) -> String {
    file.strip_suffix(".py").unwrap_or(file).replace('/', ".")
}

/// [`TestId::prune_name`] of each id, sorted and without repeats.
pub fn prune_names(ids: &[String], test_file: &str) -> Vec<String> {
    let mut names: Vec<String> = ids
        .iter()
        .filter_map(|id| TestId::new(id).prune_name(test_file))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Whether the test `id` is one that pruning `names` removes from `test_file`.
pub fn pruned_by(id: &str, test_file: &str, names: &[String]) -> bool {
    TestId::new(id)
        .prune_name(test_file)
        .is_some_and(|t| names.contains(&t))
}

/// The first three of `items`, and how many more: `a, b, c and 4 more`.
pub fn first_three<'a>(items: impl ExactSizeIterator<Item = &'a str>) -> String {
    first_few(items, 3)
}

/// The first `shown` of `items`, and how many more.
fn first_few<'a>(items: impl ExactSizeIterator<Item = &'a str>, shown: usize) -> String {
    let total = items.len();
    let first: Vec<&str> = items.take(shown).collect();
    let more = if total > shown {
        format!(" and {} more", total - shown)
    } else {
        String::new()
    };
    format!("{}{more}", first.join(", "))
}

/// Test names without their module path, and not hundreds of them: `test_a, test_b[2] and 3
/// more`.
pub fn names(ids: &[String]) -> String {
    names_up_to(ids, 3)
}

/// [`names`], showing up to `shown` of them.
pub fn names_up_to(ids: &[String], shown: usize) -> String {
    first_few(ids.iter().map(|id| TestId::new(id).name()), shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_ids_become_names_the_pruner_knows() {
        let ids = vec![
            "tests.test_x::test_a[2-2-5]".to_string(),
            "tests.test_x::test_a[1-2-3]".to_string(),
            "tests.test_x.TestK::test_b".to_string(),
            "tests.test_other::test_c".to_string(),
        ];
        assert_eq!(
            prune_names(&ids, "tests/test_x.py"),
            ["TestK::test_b", "test_a"]
        );
        assert!(pruned_by(
            "tests.test_x::test_a[9]",
            "tests/test_x.py",
            &["test_a".into()]
        ));
        assert!(!pruned_by(
            "tests.test_x::test_ab",
            "tests/test_x.py",
            &["test_a".into()]
        ));
    }

    #[test]
    fn an_id_knows_its_file_and_its_node_id() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("tests/sub")).unwrap();
        std::fs::write(tmp.path().join("tests/sub/test_x.py"), "").unwrap();
        let id = TestId::new("tests.sub.test_x.TestK::test_b[1]");
        assert_eq!(
            id.node_id(tmp.path()).as_deref(),
            Some("tests/sub/test_x.py::TestK::test_b[1]")
        );
        assert_eq!(id.name(), "test_b[1]");
        assert_eq!(id.function(), "test_b");
        assert!(id.in_file("tests/sub/test_x.py"));
        assert!(!id.in_file("tests/sub/test_xy.py"));
        assert!(TestId::new("tests.test_x::test_a").in_file("tests/test_x.py"));
        assert!(!TestId::new("tests.sub.test_x::test_a").in_file("tests/test_x.py"));
        assert_eq!(
            id.file_among(&["tests/sub/test_x.py".into()]).as_deref(),
            Some("tests/sub/test_x.py")
        );
        let file = TestId::new("tests.sub.test_x");
        assert!(file.is_file() && !id.is_file());
        assert_eq!(
            file.file_among(&["tests/sub/test_x.py".into()]).as_deref(),
            Some("tests/sub/test_x.py")
        );
    }

    #[test]
    fn long_lists_are_cut_to_three() {
        let ids: Vec<String> = (1..=5).map(|k| format!("t.test_m::test_{k}")).collect();
        assert_eq!(names(&ids), "test_1, test_2, test_3 and 2 more");
        assert_eq!(names(&ids[..2]), "test_1, test_2");
    }
}
