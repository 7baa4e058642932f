//! What the prompt shows of a module: its source with line numbers, marking the lines
//! coverage.py saw never run (`!`) and the lines with a branch never taken (`?`). A short
//! module is shown whole; a longer one as what the iteration aims at: its imports plus the whole
//! functions around the missing lines, each with the class it is in (its header and its
//! `__init__`), so the model sees what to test without the rest of the file. A small model on a
//! slow server reads every prompt token at tens of tokens a second: the rest of the module is
//! minutes of reading for nothing.

use std::collections::{BTreeMap, BTreeSet};

use crate::coverage::Missing;

/// Modules up to this many lines are shown whole: their excerpt would be nearly as long.
pub const WHOLE_FILE_LINES: usize = 60;

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

/// Line number -> `!` (never run) or `?` (a branch never taken).
fn marks_of(missing: &Missing) -> BTreeMap<usize, char> {
    let mut marks: BTreeMap<usize, char> = BTreeMap::new();
    for l in &missing.lines {
        marks.insert(*l as usize, '!');
    }
    for (from, _) in &missing.branches {
        if let Ok(from) = usize::try_from(*from) {
            marks.entry(from).or_insert('?');
        }
    }
    marks
}

/// The module's top-level imports (1-based line numbers).
fn imports(lines: &[&str]) -> BTreeSet<usize> {
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            let t = l.trim_start();
            indent(l) == 0 && (t.starts_with("import ") || t.starts_with("from "))
        })
        .map(|(i, _)| i + 1)
        .collect()
}

/// What a block at `start` (1-based) needs around it to read: the header lines of the classes
/// and functions it is inside, and the `__init__` of each class (how its objects are made).
fn context_of(lines: &[&str], start: usize) -> BTreeSet<usize> {
    let mut shown = BTreeSet::new();
    let Some(first) = lines.get(start.saturating_sub(1)) else {
        return shown;
    };
    let mut level = indent(first);
    let mut i = start.saturating_sub(1);
    while level > 0 && i > 0 {
        i -= 1;
        let l = lines[i];
        if l.trim().is_empty() || indent(l) >= level || !opens_block(l) {
            continue;
        }
        level = indent(l);
        shown.insert(i + 1);
        if l.trim_start().starts_with("class ") {
            shown.extend(init_of(lines, i));
        }
    }
    shown
}

/// `shown` with the module's one-line top-level assignments (`EMPTY = "empty name"`) whose
/// name a shown line uses: a test about that code needs their values.
fn with_constants(lines: &[&str], mut shown: BTreeSet<usize>) -> BTreeSet<usize> {
    let text: String = shown
        .iter()
        .filter_map(|n| lines.get(n - 1))
        .copied()
        .collect::<Vec<_>>()
        .join("\n");
    let used = |name: &str| {
        text.match_indices(name).any(|(i, _)| {
            let before = text[..i].chars().next_back();
            let after = text[i + name.len()..].chars().next();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            !word(before) && !word(after)
        })
    };
    for (i, l) in lines.iter().enumerate() {
        let Some((name, _)) = l.split_once('=') else {
            continue;
        };
        let name = name.trim().split(':').next().unwrap_or("").trim();
        let one_line = lines
            .get(i + 1)
            .is_none_or(|n| indent(n) == 0 || n.trim().is_empty());
        if indent(l) == 0
            && one_line
            && !name.is_empty()
            && name.chars().all(|c| c.is_alphanumeric() || c == '_')
            && !l.trim_start().starts_with('#')
            && used(name)
        {
            shown.insert(i + 1);
        }
    }
    shown
}

/// The lines of the `__init__` of the class whose header is at `header` (0-based), if any.
fn init_of(lines: &[&str], header: usize) -> Vec<usize> {
    let base = indent(lines[header]);
    lines
        .iter()
        .enumerate()
        .skip(header + 1)
        .take_while(|(_, l)| l.trim().is_empty() || indent(l) > base)
        .find(|(_, l)| l.trim_start().starts_with("def __init__("))
        .map(|(i, _)| {
            let (a, b) = enclosing_block(lines, i + 1);
            (a..=b).collect()
        })
        .unwrap_or_default()
}

/// The blocks around marked lines, each with how many marked lines it holds.
fn marked_blocks(lines: &[&str], marks: &BTreeMap<usize, char>) -> BTreeMap<(usize, usize), usize> {
    let mut blocks = BTreeMap::new();
    for line in marks.keys().filter(|l| **l >= 1 && **l <= lines.len()) {
        *blocks.entry(enclosing_block(lines, *line)).or_default() += 1;
    }
    blocks
}

/// The shown lines, numbered and marked; with a second mark, `+`, on the lines of the change a
/// `--since` run is about (none: one mark only, as without `--since`).
fn render(
    lines: &[&str],
    shown: &BTreeSet<usize>,
    marks: &BTreeMap<usize, char>,
    changed: &[u32],
) -> String {
    let mut out = String::new();
    let mut last = 0;
    for &n in shown {
        if last != 0 && n > last + 1 {
            out.push_str("     ...\n");
        }
        let mark = marks.get(&n).copied().unwrap_or(' ');
        let line = lines[n - 1];
        if changed.is_empty() {
            out.push_str(&format!("{n:>4}{mark} {line}\n"));
        } else {
            let plus = if u32::try_from(n).is_ok_and(|n| changed.binary_search(&n).is_ok()) {
                '+'
            } else {
                ' '
            };
            out.push_str(&format!("{n:>4}{mark}{plus} {line}\n"));
        }
        last = n;
    }
    out
}

/// The numbered source or excerpt described in the module doc; `changed` (sorted) are the
/// lines of a `--since` change, marked `+`.
pub fn excerpt(source: &str, missing: &Missing, changed: &[u32]) -> String {
    let lines: Vec<&str> = source.lines().collect();
    let marks = marks_of(missing);
    let shown: BTreeSet<usize> = if lines.len() <= WHOLE_FILE_LINES {
        (1..=lines.len()).collect()
    } else {
        let mut s = imports(&lines);
        for (a, b) in marked_blocks(&lines, &marks).into_keys() {
            s.extend(a..=b);
            s.extend(context_of(&lines, a));
        }
        with_constants(&lines, s)
    };
    render(&lines, &shown, &marks, changed)
}

/// [`excerpt`] in at most `max_chars`: when it is longer, the imports and the functions with
/// the most missing lines, as many as fit (at least one, cut at a line if it alone is too
/// long). The second value says what was left out.
pub fn excerpt_within(
    source: &str,
    missing: &Missing,
    changed: &[u32],
    max_chars: usize,
) -> (String, Option<String>) {
    let whole = excerpt(source, missing, changed);
    if whole.len() <= max_chars {
        return (whole, None);
    }
    let lines: Vec<&str> = source.lines().collect();
    let marks = marks_of(missing);
    let mut ranked: Vec<((usize, usize), usize)> =
        marked_blocks(&lines, &marks).into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut shown = imports(&lines);
    let mut taken = 0;
    for ((a, b), _) in &ranked {
        let mut trial = shown.clone();
        trial.extend(*a..=*b);
        trial.extend(context_of(&lines, *a));
        let trial = with_constants(&lines, trial);
        if taken > 0 && render(&lines, &trial, &marks, changed).len() > max_chars {
            break;
        }
        shown = trial;
        taken += 1;
    }
    let mut text = render(&lines, &shown, &marks, changed);
    if text.len() > max_chars {
        let end = text[..floor_boundary(&text, max_chars)]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        text.truncate(end);
        text.push_str("     ... (cut)\n");
    }
    let note = format!(
        "the module excerpt narrowed to the {taken} of {} functions with the most missing lines",
        ranked.len()
    );
    (text, Some(note))
}

/// The source line numbers an excerpt made by [`excerpt`] shows.
pub fn shown_lines(excerpt: &str) -> BTreeSet<u32> {
    excerpt
        .lines()
        .filter_map(|l| {
            let t = l.trim_start();
            let digits = t.len() - t.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            t[..digits].parse().ok()
        })
        .collect()
}

fn floor_boundary(text: &str, at: usize) -> usize {
    let mut end = at.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
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
        let e = excerpt(src, &m, &[]);
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
        let e = excerpt(&src, &m, &[]);
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

    #[test]
    fn a_method_comes_with_its_class_header_and_init() {
        let mut src = String::from(
            "import os\n\n\nclass Shelf:\n    def __init__(self, n):\n        self.n = n\n\n",
        );
        for i in 0..30 {
            src.push_str(&format!(
                "    def m{i}(self, a):\n        if a:\n            return {i}\n        return -1\n\n"
            ));
        }
        // m20 starts at line 8 + 20*5 = 108; its `return 20` is line 110.
        let m = Missing {
            lines: vec![110],
            branches: vec![],
        };
        let e = excerpt(&src, &m, &[]);
        assert!(e.contains("   4  class Shelf:"), "{e}");
        assert!(
            e.contains("   5      def __init__(self, n):")
                && e.contains("   6          self.n = n"),
            "{e}"
        );
        assert!(
            e.contains(" 108      def m20(self, a):") && e.contains(" 110!             return 20"),
            "{e}"
        );
        assert!(!e.contains("def m19") && !e.contains("def m21"), "{e}");
    }

    #[test]
    fn the_constants_a_shown_function_uses_are_shown_too() {
        let mut src = String::from("LIMIT = 3\nOTHER = 4\nLIMITS = 5\n\n");
        for i in 0..30 {
            src.push_str(&format!(
                "def f{i}(a):\n    if a > LIMIT:\n        return {i}\n    return -1\n\n"
            ));
        }
        // f20 starts at line 5 + 20*5 = 105; its `return 20` is line 107.
        let e = excerpt(
            &src,
            &Missing {
                lines: vec![107],
                branches: vec![],
            },
            &[],
        );
        assert!(e.contains("   1  LIMIT = 3"), "{e}");
        assert!(!e.contains("OTHER") && !e.contains("LIMITS"), "{e}");
    }

    #[test]
    fn the_lines_of_a_change_get_a_second_mark() {
        let src = "import os\n\ndef f(x):\n    if x:\n        return 1\n    return 2\n";
        let m = Missing {
            lines: vec![5],
            branches: vec![(4, 5)],
        };
        let e = excerpt(src, &m, &[4, 5]);
        assert!(e.contains("   3   def f(x):\n"), "{e}");
        assert!(e.contains("   4?+     if x:\n"), "{e}");
        assert!(e.contains("   5!+         return 1\n"), "{e}");
    }

    #[test]
    fn a_tight_budget_keeps_the_functions_with_the_most_missing_lines() {
        let mut src = String::from("import os\n\n");
        for i in 0..100 {
            src.push_str(&format!(
                "def f{i}(a):\n    if a:\n        return {i}\n    return -1\n\n"
            ));
        }
        // f10 (lines 53-56) misses two lines, f90 (lines 453-456) one.
        let m = Missing {
            lines: vec![55, 56, 455],
            branches: vec![],
        };
        let (whole, note) = excerpt_within(&src, &m, &[], 10_000);
        assert!(note.is_none() && whole.contains("def f90"), "{whole}");
        let (tight, note) = excerpt_within(&src, &m, &[], 120);
        assert!(
            tight.contains("def f10") && !tight.contains("def f90"),
            "{tight}"
        );
        assert!(tight.contains("import os"), "{tight}");
        assert_eq!(
            note.as_deref(),
            Some("the module excerpt narrowed to the 1 of 2 functions with the most missing lines")
        );
        // What the prompt then says is missing: the lines it shows, not f90's.
        let shown = shown_lines(&tight);
        assert!(shown.contains(&1) && shown.contains(&53) && !shown.contains(&453));
        assert_eq!(m.within(&shown).summary(), "lines 55-56");
    }
}
