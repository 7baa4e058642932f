//! What the prompt shows of a module: its source with line numbers, marking the lines
//! coverage.py saw never run (`!`) and the lines with a branch never taken (`?`). A small
//! module is shown whole; a large one as its imports plus the whole functions around the
//! missing lines, so the model sees what to test without the rest of the file.

use std::collections::{BTreeMap, BTreeSet};

use crate::coverage::Missing;

/// Modules up to this many lines are shown whole.
pub const WHOLE_FILE_LINES: usize = 250;

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn opens_block(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("def ") || t.starts_with("async def ") || t.starts_with("class ")
}

/// The 1-based line range of the outermost-but-one block (function or method) around `line`.
fn enclosing_block(lines: &[&str], line: usize) -> (usize, usize) {
    let idx = line.saturating_sub(1).min(lines.len().saturating_sub(1));
    let target_indent = indent(lines[idx]);
    // The nearest def/class above with less indentation (or the line itself, if it is one).
    let mut start = idx;
    let mut found = opens_block(lines[idx]);
    while !found && start > 0 {
        start -= 1;
        let l = lines[start];
        if !l.trim().is_empty() && opens_block(l) && indent(l) < target_indent {
            found = true;
        }
    }
    if !found {
        return (line, line);
    }
    // Decorators belong to it.
    while start > 0 && lines[start - 1].trim_start().starts_with('@') {
        start -= 1;
    }
    let def_line = (start..=idx)
        .find(|i| opens_block(lines[*i]))
        .unwrap_or(start);
    let base = indent(lines[def_line]);
    let mut end = def_line + 1;
    while end < lines.len() && (lines[end].trim().is_empty() || indent(lines[end]) > base) {
        end += 1;
    }
    while end > def_line + 1 && lines[end - 1].trim().is_empty() {
        end -= 1;
    }
    (start + 1, end)
}

/// The numbered source or excerpt described in the module doc.
pub fn excerpt(source: &str, missing: &Missing) -> String {
    let lines: Vec<&str> = source.lines().collect();
    let mut marks: BTreeMap<usize, char> = BTreeMap::new();
    for l in &missing.lines {
        marks.insert(*l as usize, '!');
    }
    for (from, _) in &missing.branches {
        if let Ok(from) = usize::try_from(*from) {
            marks.entry(from).or_insert('?');
        }
    }
    let shown: BTreeSet<usize> = if lines.len() <= WHOLE_FILE_LINES {
        (1..=lines.len()).collect()
    } else {
        let mut s = BTreeSet::new();
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim_start();
            if indent(l) == 0 && (t.starts_with("import ") || t.starts_with("from ")) {
                s.insert(i + 1);
            }
        }
        for line in marks.keys().filter(|l| **l >= 1 && **l <= lines.len()) {
            let (a, b) = enclosing_block(&lines, *line);
            s.extend(a..=b);
        }
        s
    };
    let mut out = String::new();
    let mut last = 0;
    for n in shown {
        if last != 0 && n > last + 1 {
            out.push_str("     ...\n");
        }
        let mark = marks.get(&n).copied().unwrap_or(' ');
        out.push_str(&format!("{n:>4}{mark} {}\n", lines[n - 1]));
        last = n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_fold_ranges_and_exits() {
        let m = Missing {
            lines: vec![16, 24, 54, 55, 56, 57, 58, 61],
            branches: vec![(15, 16), (23, -20)],
        };
        assert_eq!(
            m.summary(),
            "lines 16, 24, 54-58, 61; branches 15->16, 23->exit"
        );
    }

    #[test]
    fn small_files_are_shown_whole_with_marks() {
        let src = "import os\n\ndef f(x):\n    if x:\n        return 1\n    return 2\n";
        let m = Missing {
            lines: vec![5],
            branches: vec![(4, 5)],
        };
        let e = excerpt(src, &m);
        assert_eq!(e.lines().count(), 6);
        assert!(
            e.contains("   4? ") && e.contains("   5!         return 1"),
            "{e}"
        );
    }

    #[test]
    fn large_files_show_imports_and_whole_functions_around_missing_lines() {
        let mut src = String::from("import os\nfrom x import y\n\n");
        for i in 0..100 {
            src.push_str(&format!(
                "def f{i}(a):\n    if a:\n        return {i}\n    return -1\n\n"
            ));
        }
        // f50 starts at line 3 + 50*5 + 1 = 254; its `return 50` is line 256.
        let m = Missing {
            lines: vec![256],
            branches: vec![],
        };
        let e = excerpt(&src, &m);
        assert!(
            e.contains("   1  import os") && e.contains("   2  from x import y"),
            "{e}"
        );
        assert!(
            e.contains(" 254  def f50(a):")
                && e.contains(" 256!         return 50")
                && e.contains(" 257      return -1"),
            "{e}"
        );
        assert!(!e.contains("def f49") && !e.contains("def f51"), "{e}");
        assert!(e.contains("     ...\n"));
    }
}
