//! From an LLM answer to a file to write. The answer is untrusted: the code block is extracted
//! here, and the path it lands at is decided here, by [`safe_test_path`], the only function in
//! the tool that approves a path for writing.

use std::path::{Component, Path, PathBuf};

use crate::layout::TestLayout;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub code: String,
    /// A path the model suggested (first-line comment or the line before the fence): a hint only.
    pub path_hint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    #[error("the answer has no code block")]
    NoCode,
    /// The block as far as it goes, for what a cut-off answer got right.
    #[error("the answer's code block is not closed (was the answer cut off?)")]
    Unclosed(Proposal),
    #[error("the answer's code block has no test function")]
    NoTests,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("unsafe path `{0}`: empty")]
    Empty(String),
    #[error("unsafe path `{0}`: absolute")]
    Absolute(String),
    #[error("unsafe path `{0}`: contains `..` or `.`")]
    Traversal(String),
    #[error("unsafe path `{0}`: contains a control character or backslash")]
    BadChar(String),
    #[error("unsafe path `{0}`: outside the tests folder `{1}`")]
    OutsideTests(String, String),
    #[error("unsafe path `{0}`: goes through a symlink")]
    Symlink(String),
    #[error("unsafe path `{0}`: not a .py file")]
    NotPython(String),
    #[error("unsafe path `{0}`: a parent is not a folder")]
    NotADir(String),
    #[error("unsafe path `{0}`: too long or too deep")]
    TooLong(String),
}

impl PathError {
    /// An attempt to write somewhere the tool must never write (absolute, `..`, a symlink,
    /// control characters), as opposed to a hint that is merely unusable (outside the tests
    /// folder, not a .py file), which is ignored like any other hint.
    pub fn is_hostile(&self) -> bool {
        matches!(
            self,
            PathError::Absolute(_)
                | PathError::Traversal(_)
                | PathError::Symlink(_)
                | PathError::BadChar(_)
        )
    }
}

/// Extracts the test file from an answer: the first fenced block tagged python (or untagged)
/// that defines a test.
pub fn parse(answer: &str) -> Result<Proposal, ProposalError> {
    let lines: Vec<&str> = answer.lines().collect();
    let mut blocks: Vec<(Option<String>, String, bool)> = Vec::new(); // (hint, code, python-tagged)
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            let info = info.trim().to_ascii_lowercase();
            let tagged = matches!(info.as_str(), "python" | "py" | "python3");
            let other_lang = !info.is_empty() && !tagged;
            let before_hint = lines[..i]
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .and_then(|l| path_in_text(l));
            let mut body = Vec::new();
            let mut closed = false;
            i += 1;
            while i < lines.len() {
                if lines[i].trim() == "```" {
                    closed = true;
                    break;
                }
                body.push(lines[i]);
                i += 1;
            }
            if !closed {
                if other_lang {
                    break;
                }
                let hint = body
                    .first()
                    .and_then(|first| first_line_hint(first))
                    .or(before_hint);
                // A last line the answer did not end may be cut inside: salvage drops it.
                let mut code = body.join("\n");
                if !body.is_empty() && answer.ends_with('\n') {
                    code.push('\n');
                }
                return Err(ProposalError::Unclosed(Proposal {
                    code,
                    path_hint: hint,
                }));
            }
            if !other_lang {
                let hint = body
                    .first()
                    .and_then(|first| first_line_hint(first))
                    .or(before_hint);
                blocks.push((hint, body.join("\n") + "\n", tagged));
            }
        }
        i += 1;
    }
    if blocks.is_empty() {
        return Err(ProposalError::NoCode);
    }
    let defines_test = |code: &str| {
        code.lines().any(|l| {
            let t = l.trim_start();
            t.starts_with("def test")
                || t.starts_with("async def test")
                || t.starts_with("class Test")
        })
    };
    let pick = blocks
        .iter()
        .find(|(_, code, tagged)| *tagged && defines_test(code))
        .or_else(|| blocks.iter().find(|(_, code, _)| defines_test(code)));
    match pick {
        Some((hint, code, _)) => Ok(Proposal {
            code: code.clone(),
            path_hint: hint.clone(),
        }),
        None => Err(ProposalError::NoTests),
    }
}

/// `# tests/test_x.py`, `# file: tests/test_x.py`, `# path: ...`
fn first_line_hint(line: &str) -> Option<String> {
    let rest = line.trim().strip_prefix('#')?.trim();
    let rest = ["file:", "filename:", "path:", "File:", "Path:"]
        .iter()
        .find_map(|p| rest.strip_prefix(p))
        .unwrap_or(rest)
        .trim();
    (rest.ends_with(".py") && !rest.contains(' ')).then(|| rest.to_string())
}

/// A `.py` path mentioned on a prose line, e.g. "**tests/test_x.py**:" or "`tests/test_x.py`".
fn path_in_text(line: &str) -> Option<String> {
    line.split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| matches!(c, '`' | '*' | ':' | '"' | '\'' | ',' | '(' | ')'))
        })
        .find(|w| w.ends_with(".py") && w.len() > 3)
        .map(|w| w.to_string())
}

/// Approves `candidate` (relative to `root`) for writing, or says why not: it must be relative,
/// made of plain names, end in `.py`, lie under `tests_dir`, and no existing part of it may be a
/// symlink or a non-folder. Checked against the file system as it is now.
pub fn safe_test_path(root: &Path, tests_dir: &str, candidate: &str) -> Result<PathBuf, PathError> {
    let err_path = candidate.to_string();
    if candidate.trim().is_empty() {
        return Err(PathError::Empty(err_path));
    }
    if candidate.chars().any(|c| c.is_control() || c == '\\') {
        return Err(PathError::BadChar(err_path));
    }
    let path = Path::new(candidate);
    // Names past these limits fail in the file system (ENAMETOOLONG) rather than here.
    if candidate.len() > 200
        || candidate.split('/').any(|seg| seg.len() > 100)
        || candidate.split('/').count() > 8
    {
        return Err(PathError::TooLong(err_path));
    }
    if path.is_absolute() || candidate.starts_with('~') {
        return Err(PathError::Absolute(err_path));
    }
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::RootDir | Component::Prefix(_) => return Err(PathError::Absolute(err_path)),
            Component::ParentDir | Component::CurDir => return Err(PathError::Traversal(err_path)),
        }
    }
    // Component parsing folds `a/./b` into `a/b`; refuse it anyway, it is not a name we choose.
    if candidate.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(PathError::Traversal(err_path));
    }
    if path.extension().and_then(|e| e.to_str()) != Some("py") {
        return Err(PathError::NotPython(err_path));
    }
    let tests: Vec<_> = Path::new(tests_dir).components().collect();
    let under_tests = parts.len() > tests.len()
        && tests
            .iter()
            .zip(&parts)
            .all(|(t, p)| matches!(t, Component::Normal(n) if n == p));
    if !under_tests {
        return Err(PathError::OutsideTests(err_path, tests_dir.to_string()));
    }
    let mut walked = root.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        walked.push(part);
        match std::fs::symlink_metadata(&walked) {
            Ok(meta) if meta.file_type().is_symlink() => return Err(PathError::Symlink(err_path)),
            Ok(meta) if i + 1 < parts.len() && !meta.is_dir() => {
                return Err(PathError::NotADir(err_path));
            }
            _ => {}
        }
    }
    Ok(walked)
}

/// `dir/name`, or `name` for the repository's root.
fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Where the proposal goes, with pytest's default `python_files`: see [`choose_test_path_for`].
pub fn choose_test_path(
    root: &Path,
    tests_dir: &str,
    hint: Option<&str>,
    target_stem: &str,
    n: u32,
) -> Result<String, PathError> {
    choose_test_path_for(
        root,
        tests_dir,
        hint,
        target_stem,
        n,
        &TestLayout::default(),
    )
}

/// Where the proposal goes. A model's hint is checked (an unsafe hint rejects the proposal) and
/// used when it names a new file that pytest's `python_files` accepts; otherwise the tool names
/// the file itself, so a proposal never overwrites an existing test file. With the tests at
/// the repository's root, only the hint's file name is used: a folder it names could be code.
pub fn choose_test_path_for(
    root: &Path,
    tests_dir: &str,
    hint: Option<&str>,
    target_stem: &str,
    n: u32,
    layout: &TestLayout,
) -> Result<String, PathError> {
    if let Some(hint) = hint {
        let hint = match hint.rsplit_once('/') {
            // A bare file name means "in the tests folder".
            None => join(tests_dir, hint),
            Some((_, name))
                if tests_dir.is_empty() && !hint.starts_with('/') && !hint.contains("..") =>
            {
                name.to_string()
            }
            Some(_) => hint.to_string(),
        };
        match safe_test_path(root, tests_dir, &hint) {
            Ok(abs) => {
                let name_ok = abs
                    .file_name()
                    .and_then(|f| f.to_str())
                    .is_some_and(|f| layout.matches_python_files(f));
                if name_ok && !abs.exists() {
                    return Ok(hint);
                }
            }
            Err(e) if e.is_hostile() => return Err(e),
            Err(e) => tracing::info!("ignoring the model's path hint: {e}"),
        }
    }
    let stem: String = target_stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let mut k = 0;
    loop {
        let name = join(tests_dir, &layout.file_name(&stem, n, k));
        let abs = safe_test_path(root, tests_dir, &name)?;
        if !abs.exists() {
            return Ok(name);
        }
        k += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_python_block_and_its_hint() {
        let answer = "Here are tests.\n\n```python\n# tests/test_calc_edges.py\nimport calc\n\ndef test_x():\n    assert calc.add(1, 2) == 3\n```\nDone.";
        let p = parse(answer).unwrap();
        assert_eq!(p.path_hint.as_deref(), Some("tests/test_calc_edges.py"));
        assert!(p.code.contains("def test_x"));
        assert!(!p.code.contains("```"));
    }

    #[test]
    fn hint_from_the_line_before_the_fence() {
        let answer = "**`tests/test_a.py`**:\n```py\ndef test_a():\n    pass\n```";
        assert_eq!(
            parse(answer).unwrap().path_hint.as_deref(),
            Some("tests/test_a.py")
        );
    }

    #[test]
    fn skips_blocks_without_tests_and_other_languages() {
        let answer = "```bash\npip install x\n```\n```python\nx = 1\n```\n```python\ndef test_b():\n    pass\n```";
        assert_eq!(parse(answer).unwrap().code, "def test_b():\n    pass\n");
    }

    #[test]
    fn answers_without_code_or_cut_off() {
        assert_eq!(
            parse("I cannot help with that."),
            Err(ProposalError::NoCode)
        );
        let Err(ProposalError::Unclosed(partial)) =
            parse("```python\n# tests/test_a.py\ndef test_a():\n    assert")
        else {
            panic!("an unclosed block is not reported as such");
        };
        assert_eq!(partial.code, "# tests/test_a.py\ndef test_a():\n    assert");
        assert_eq!(partial.path_hint.as_deref(), Some("tests/test_a.py"));
        // Cut after a whole line: the line keeps its end.
        let Err(ProposalError::Unclosed(partial)) = parse("```python\ndef test_a():\n    f()\n")
        else {
            panic!("an unclosed block is not reported as such");
        };
        assert_eq!(partial.code, "def test_a():\n    f()\n");
        assert_eq!(parse("```python\nx = 1\n```"), Err(ProposalError::NoTests));
    }

    #[test]
    fn refuses_escaping_paths() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("tests")).unwrap();
        let root = tmp.path();
        for bad in [
            "../x.py",
            "tests/../src/x.py",
            "/etc/x.py",
            "tests/./x.py",
            "src/test_x.py",
            "tests/x.txt",
            "tests",
            "",
            "tests\\..\\x.py",
            "~/x.py",
            "testsx/test_a.py",
        ] {
            assert!(
                safe_test_path(root, "tests", bad).is_err(),
                "{bad} was accepted"
            );
        }
        assert!(safe_test_path(root, "tests", "tests/sub/test_x.py").is_ok());
    }

    #[test]
    fn refuses_paths_through_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("tests")).unwrap();
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("tests/link")).unwrap();
        let err = safe_test_path(tmp.path(), "tests", "tests/link/test_x.py").unwrap_err();
        assert!(matches!(err, PathError::Symlink(_)));
        std::os::unix::fs::symlink(
            outside.path().join("f.py"),
            tmp.path().join("tests/test_f.py"),
        )
        .unwrap();
        assert!(matches!(
            safe_test_path(tmp.path(), "tests", "tests/test_f.py").unwrap_err(),
            PathError::Symlink(_)
        ));
    }

    #[test]
    fn never_overwrites_an_existing_test_file() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("tests")).unwrap();
        std::fs::write(tmp.path().join("tests/test_a.py"), "").unwrap();
        let chosen =
            choose_test_path(tmp.path(), "tests", Some("tests/test_a.py"), "a", 3).unwrap();
        assert_eq!(chosen, "tests/test_a_improve_3.py");
        let chosen =
            choose_test_path(tmp.path(), "tests", Some("tests/test_new.py"), "a", 3).unwrap();
        assert_eq!(chosen, "tests/test_new.py");
        assert!(choose_test_path(tmp.path(), "tests", Some("../evil.py"), "a", 3).is_err());
        assert!(choose_test_path(tmp.path(), "tests", Some("/etc/evil.py"), "a", 3).is_err());
        // Merely unusable hints are ignored: the module itself, a bare name, an overlong name.
        let chosen = choose_test_path(tmp.path(), "tests", Some("pkg/a.py"), "a", 4).unwrap();
        assert_eq!(chosen, "tests/test_a_improve_4.py");
        let chosen = choose_test_path(tmp.path(), "tests", Some("test_bare.py"), "a", 4).unwrap();
        assert_eq!(chosen, "tests/test_bare.py");
        let long = format!("tests/test_{}.py", "x".repeat(300));
        assert_eq!(
            choose_test_path(tmp.path(), "tests", Some(&long), "a", 4).unwrap(),
            "tests/test_a_improve_4.py"
        );
    }

    #[test]
    fn tests_at_the_root_take_only_the_hints_file_name() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("pkg")).unwrap();
        let root = TestLayout::default();
        let chosen =
            choose_test_path_for(tmp.path(), "", Some("pkg/test_x.py"), "six", 2, &root).unwrap();
        assert_eq!(chosen, "test_x.py");
        let chosen = choose_test_path_for(tmp.path(), "", None, "six", 2, &root).unwrap();
        assert_eq!(chosen, "test_six_improve_2.py");
        assert!(choose_test_path_for(tmp.path(), "", Some("../evil.py"), "six", 2, &root).is_err());
        let suffix = TestLayout {
            python_files: vec!["*_test.py".into()],
            ..TestLayout::default()
        };
        let chosen =
            choose_test_path_for(tmp.path(), "pkg", Some("test_x.py"), "core", 2, &suffix).unwrap();
        assert_eq!(chosen, "pkg/core_improve_2_test.py");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Path segments from a mix of the dangerous and the ordinary, unicode included.
    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("..".to_string()),
            Just(".".to_string()),
            Just("tests".to_string()),
            Just("link".to_string()),
            Just("".to_string()),
            Just("~".to_string()),
            "[a-z_]{1,8}(\\.py)?",
            "\\PC{1,6}",
            "[\\\\\\x00-\\x1f/]{1,3}",
        ]
    }

    fn candidate() -> impl Strategy<Value = String> {
        (
            proptest::bool::ANY,
            proptest::collection::vec(segment(), 1..6),
        )
            .prop_map(|(abs, segs)| {
                let joined = segs.join("/");
                if abs { format!("/{joined}") } else { joined }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever the model writes, an approved path is a .py file strictly inside the
        /// tests folder of the root, reached through real folders only.
        #[test]
        fn approved_paths_stay_inside_the_tests_folder(candidate in candidate()) {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path();
            std::fs::create_dir_all(root.join("tests/sub")).unwrap();
            let outside = tempfile::tempdir().unwrap();
            std::os::unix::fs::symlink(outside.path(), root.join("tests/link")).unwrap();
            if let Ok(approved) = safe_test_path(root, "tests", &candidate) {
                let rel = approved.strip_prefix(root).unwrap();
                prop_assert!(rel.starts_with("tests"));
                prop_assert!(rel.components().count() >= 2);
                prop_assert!(rel.components().all(|c| matches!(c, Component::Normal(_))));
                prop_assert_eq!(approved.extension().and_then(|e| e.to_str()), Some("py"));
                prop_assert!(!candidate.split('/').any(|s| s == ".." || s == "."));
                prop_assert!(!candidate.starts_with("tests/link/"));
                prop_assert!(!candidate.starts_with('/'));
                // No existing part of it is a symlink.
                let mut walked = root.to_path_buf();
                for part in rel.components() {
                    walked.push(part);
                    let is_link = std::fs::symlink_metadata(&walked).map(|m| m.file_type().is_symlink()).unwrap_or(false);
                    prop_assert!(!is_link);
                }
            }
        }

        /// A hostile hint never yields a path: the proposal is refused, not redirected.
        #[test]
        fn traversal_and_absolute_hints_are_refused(prefix in "[a-z]{0,5}", name in "[a-z]{1,8}") {
            let tmp = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(tmp.path().join("tests")).unwrap();
            for hint in [
                format!("tests/../{prefix}{name}.py"),
                format!("/tmp/{prefix}/test_{name}.py"),
                format!("tests/{prefix}/../../test_{name}.py"),
            ] {
                let result = choose_test_path(tmp.path(), "tests", Some(&hint), "m", 1);
                prop_assert!(result.is_err(), "{} was accepted", hint);
            }
        }
    }
}
