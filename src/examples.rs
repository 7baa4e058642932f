//! The example tests a prompt shows: the shortest test functions of the files that import the
//! target, with those files' imports, instead of whole files. They show the model the project's
//! style and fixtures at a fraction of the prompt: a small model on a slow server reads every
//! token of a whole test file at tens of tokens a second, and copies long examples back.

/// How many test functions a prompt shows, over all files.
pub const SHOWN: usize = 3;

/// A test function shorter than this many lines shows little style; longer than the other
/// limit, it is more to read than to learn from.
const MIN_LINES: usize = 2;
const MAX_LINES: usize = 40;

/// One file's part of the examples: its imports and the test functions chosen from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub path: String,
    pub text: String,
}

/// The `limit` shortest top-level test functions of `files` (path, text), grouped by file in
/// the files' order, each file with its top-level imports.
pub fn shortest_tests(files: &[(String, String)], limit: usize) -> Vec<Example> {
    let mut found: Vec<(usize, usize, Vec<&str>)> = Vec::new();
    for (f, (_, text)) in files.iter().enumerate() {
        for function in test_functions(text) {
            if (MIN_LINES..=MAX_LINES).contains(&function.len()) {
                found.push((f, function.len(), function));
            }
        }
    }
    // Shortest first; a tie goes to the file listed first, then to the earlier function.
    found.sort_by_key(|(f, len, _)| (*len, *f));
    found.truncate(limit);
    let mut out = Vec::new();
    for (f, (path, text)) in files.iter().enumerate() {
        let chosen: Vec<String> = found
            .iter()
            .filter(|(g, _, _)| *g == f)
            .map(|(_, _, lines)| lines.join("\n"))
            .collect();
        if chosen.is_empty() {
            continue;
        }
        let imports: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("import ") || l.starts_with("from "))
            .collect();
        let mut parts = Vec::new();
        if !imports.is_empty() {
            parts.push(imports.join("\n"));
        }
        parts.extend(chosen);
        out.push(Example {
            path: path.clone(),
            text: parts.join("\n\n\n"),
        });
    }
    out
}

/// The top-level `def test_*` functions of a file (with their decorators), as lines.
fn test_functions(text: &str) -> Vec<Vec<&str>> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if !(l.starts_with("def test") || l.starts_with("async def test")) {
            i += 1;
            continue;
        }
        let mut start = i;
        while start > 0 && lines[start - 1].starts_with('@') {
            start -= 1;
        }
        let mut end = i + 1;
        while end < lines.len()
            && (lines[end].trim().is_empty() || lines[end].starts_with([' ', '\t']))
        {
            end += 1;
        }
        while end > i + 1 && lines[end - 1].trim().is_empty() {
            end -= 1;
        }
        out.push(lines[start..end].to_vec());
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: &str = "import pytest\nfrom calc.ops import add, clamp\n\n\n@pytest.mark.parametrize('a', [1, 2])\ndef test_long(a):\n    x = add(a, 1)\n    y = add(x, 1)\n    assert y == a + 2\n\n\ndef test_short():\n    assert add(1, 1) == 2\n\n\nclass TestClamp:\n    def test_in(self):\n        assert clamp(1, 0, 2) == 1\n\n\ndef helper():\n    return 1\n";
    const OTHER: &str = "from calc.ops import divide\n\n\ndef test_divide():\n    assert divide(4, 2) == 2\n\n\ndef test_one_liner(): assert True\n";

    #[test]
    fn the_shortest_test_functions_come_with_their_files_imports() {
        let files = [
            ("tests/test_a.py".to_string(), LONG.to_string()),
            ("tests/test_b.py".to_string(), OTHER.to_string()),
        ];
        let shown = shortest_tests(&files, 2);
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert_eq!(shown[0].path, "tests/test_a.py");
        assert!(
            shown[0]
                .text
                .starts_with("import pytest\nfrom calc.ops import add, clamp")
        );
        assert!(
            shown[0]
                .text
                .contains("def test_short():\n    assert add(1, 1) == 2")
        );
        assert!(!shown[0].text.contains("test_long") && !shown[0].text.contains("helper"));
        assert!(shown[1].text.contains("def test_divide():"), "{shown:?}");
        // A one-line function is too short to show anything.
        assert!(!shown[1].text.contains("one_liner"));
    }

    #[test]
    fn decorators_belong_to_their_function() {
        let files = [("t.py".to_string(), LONG.to_string())];
        let shown = shortest_tests(&files, 3);
        assert!(
            shown[0]
                .text
                .contains("@pytest.mark.parametrize('a', [1, 2])\ndef test_long(a):"),
            "{shown:?}"
        );
    }
}
