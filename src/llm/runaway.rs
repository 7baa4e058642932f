//! Watches an answer as it streams in and says when it can no longer give a new test, so the
//! client can close the connection instead of paying for the rest. Pure: text in, a verdict out.
//!
//! Five stops, checked on each complete line of the first Python (or untagged) code block:
//! - the code block closed and it defines a test: what follows is prose;
//! - a block of lines written again, the same lines (the copies are dropped);
//! - a test written again under a new name, with the same decorators, arguments and body (the
//!   copy is dropped);
//! - one function enumerating statements that differ only in their literals (more than
//!   [`ENUMERATION`] in a row), or blocks of statements that differ only in what their brackets
//!   hold and the names they assign ([`COARSE_COPIES`] in a row): its statements before the
//!   enumeration and the first [`ENUMERATION_KEPT`] enumerated ones are kept;
//! - one statement that keeps growing (a line past [`LONG_LINE`] characters, or more than
//!   [`MAX_LITERALS`] literals): the statements before it are kept.
//!
//! The same ideas as the helper's `salvage` (python/helper.py: `cut_repetition`, `same_tests`),
//! which mends an answer cut at the token limit after the fact; here they stop the answer early.
//! What is kept always ends on a whole statement and gets its code block closed, so it parses.

use serde::{Deserialize, Serialize};

/// More than this many statements in a row with one shape (literals aside) is an enumeration.
pub const ENUMERATION: usize = 8;
/// Enumerated statements kept after an enumeration stop.
pub const ENUMERATION_KEPT: usize = 3;
/// Longest block of statements looked for as a repeat.
const MAX_PERIOD: usize = 30;
/// Longest block of statements whose shape is looked for as an enumeration (e.g. a
/// `with pytest.raises(...)` and the call under it).
const MAX_SHAPE_PERIOD: usize = 3;
/// Blocks of two to this many statements with one coarse shape (bracket contents and assigned
/// names aside) are an enumeration after [`COARSE_COPIES`] copies in a row: a model writing
/// "Test case 7" with the object of case 6 nested once more.
const MAX_COARSE_PERIOD: usize = 6;
pub const COARSE_COPIES: usize = 6;
/// A raw line this long is no line a person writes: a literal counting on (`{1, 2, ..., 377`).
pub const LONG_LINE: usize = 1000;
/// A statement with more literals than this is a table the model will not end.
pub const MAX_LITERALS: usize = 100;

/// Why an answer was stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The code block with the tests closed; the rest would be prose.
    CodeClosed,
    /// A block of lines written again, the same lines.
    RepeatedBlock,
    /// A test written again under a new name, with the same body.
    RepeatedTest,
    /// One function enumerating statements that differ only in literals.
    Enumeration,
    /// One statement growing on (a literal counting on, a table with no end).
    LongStatement,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::CodeClosed => "code_closed",
            StopReason::RepeatedBlock => "repeated_block",
            StopReason::RepeatedTest => "repeated_test",
            StopReason::Enumeration => "enumeration",
            StopReason::LongStatement => "long_statement",
        }
    }

    /// A runaway: the model would have gone on to the token limit.
    pub fn is_runaway(self) -> bool {
        self != StopReason::CodeClosed
    }
}

/// A stop: why, and the answer to keep (its code block closed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub reason: StopReason,
    pub text: String,
}

/// Fed the answer's text as it arrives; [`Watcher::push`] returns a [`Stop`] once.
#[derive(Debug, Default)]
pub struct Watcher {
    text: String,
    /// Bytes of `text` already read as whole lines.
    scanned: usize,
    block: Option<Block>,
    /// The first code block with a test was read to its end: nothing more is watched.
    done: bool,
}

/// The code block being read.
#[derive(Debug, Default)]
struct Block {
    /// Tagged with a language other than Python: skipped, as `proposal::parse` skips it.
    other_lang: bool,
    lexer: Lexer,
    pending: Option<Logical>,
    lines: Vec<Logical>,
    has_test: bool,
    open_test: Option<OpenTest>,
    /// Keys of the tests read to their end.
    tests: Vec<String>,
}

/// One statement (a logical line: brackets and triple-quoted strings may span raw lines).
#[derive(Debug, Clone, Default)]
struct Logical {
    indent: usize,
    /// The text without comments, whitespace collapsed.
    norm: String,
    /// `norm` with every string and number literal replaced by a placeholder.
    shape: String,
    /// `shape` with bracket contents and plain names blanked ([`coarse_shape`]), made once.
    coarse: String,
    /// String and number literals in it.
    literals: usize,
    /// One of its raw lines is longer than [`LONG_LINE`].
    long_line: bool,
    /// Byte offsets in the answer: the first raw line's start, the last one's end.
    start: usize,
    end: usize,
}

impl Logical {
    fn opens_block(&self) -> bool {
        self.norm.ends_with(':')
    }
    fn is_decorator(&self) -> bool {
        self.norm.starts_with('@')
    }
    fn is_def(&self) -> bool {
        ["def ", "async def ", "class "]
            .iter()
            .any(|p| self.norm.starts_with(p))
    }
    /// Grown past what a person writes in one statement.
    fn runs_on(&self) -> bool {
        self.literals > MAX_LITERALS || self.long_line
    }
    fn is_test_def(&self) -> bool {
        ["def test", "async def test", "class Test"]
            .iter()
            .any(|p| self.norm.starts_with(p))
    }
}

/// A test function whose end has not been read yet.
#[derive(Debug)]
struct OpenTest {
    indent: usize,
    /// Index of its first line (a decorator, else the `def`).
    first: usize,
    /// Decorators and the signature without the name.
    head: String,
}

impl Watcher {
    pub fn new() -> Watcher {
        Watcher::default()
    }

    /// Adds the next piece of the answer. `Some` once the answer can give no new test: stop
    /// reading. Every later call returns `None`.
    pub fn push(&mut self, delta: &str) -> Option<Stop> {
        if self.done {
            return None;
        }
        self.text.push_str(delta);
        while let Some(nl) = self.text[self.scanned..].find('\n') {
            let start = self.scanned;
            let end = start + nl + 1;
            self.scanned = end;
            if let Some(stop) = self.line(start, end) {
                self.done = true;
                return Some(stop);
            }
        }
        let stop = self.long_tail();
        self.done = stop.is_some();
        stop
    }

    /// The line still being written is past [`LONG_LINE`] characters.
    fn long_tail(&mut self) -> Option<Stop> {
        let tail = self.text.len() - self.scanned;
        let block = self.block.as_mut().filter(|b| !b.other_lang)?;
        if tail <= LONG_LINE {
            return None;
        }
        block.long_statement(&self.text)
    }

    /// One raw line, `text[start..end]` (with its newline).
    fn line(&mut self, start: usize, end: usize) -> Option<Stop> {
        let raw = self.text[start..end]
            .trim_end_matches(['\n', '\r'])
            .to_string();
        let trimmed = raw.trim();
        match &mut self.block {
            None => {
                if let Some(info) = raw.trim_start().strip_prefix("```") {
                    let info = info.trim().to_ascii_lowercase();
                    let other_lang =
                        !info.is_empty() && !matches!(info.as_str(), "python" | "py" | "python3");
                    self.block = Some(Block {
                        other_lang,
                        ..Block::default()
                    });
                }
                None
            }
            Some(block) if trimmed == "```" => {
                let stop = if block.other_lang {
                    None
                } else {
                    block.flush();
                    if let Some(stop) = block.close_test(&self.text, usize::MAX) {
                        Some(stop)
                    } else if block.has_test {
                        Some(Stop {
                            reason: StopReason::CodeClosed,
                            text: self.text[..end].to_string(),
                        })
                    } else {
                        None
                    }
                };
                self.block = None;
                stop
            }
            Some(block) if block.other_lang => None,
            Some(block) => match block.read(&raw, start, end) {
                Some(logical) => block.statement(logical, &self.text),
                None => block
                    .pending
                    .as_ref()
                    .is_some_and(Logical::runs_on)
                    .then(|| block.long_statement(&self.text))
                    .flatten(),
            },
        }
    }
}

impl Block {
    /// A raw line into the statement being read; the statement once it is whole.
    fn read(&mut self, raw: &str, start: usize, end: usize) -> Option<Logical> {
        let continuing = self.pending.is_some();
        if !continuing && (raw.trim().is_empty() || raw.trim_start().starts_with('#')) {
            return None;
        }
        let pending = self.pending.get_or_insert_with(|| Logical {
            indent: raw.len() - raw.trim_start().len(),
            start,
            ..Logical::default()
        });
        let more = self.lexer.line(raw, pending);
        pending.long_line |= raw.len() > LONG_LINE;
        pending.end = end;
        if more {
            return None;
        }
        let mut logical = self.pending.take()?;
        logical.norm = logical.norm.trim().to_string();
        logical.shape = logical.shape.trim().to_string();
        logical.coarse = coarse_shape(&logical.shape);
        Some(logical)
    }

    /// A statement read whole at the end of the block (an unclosed bracket).
    fn flush(&mut self) {
        if let Some(mut logical) = self.pending.take() {
            logical.norm = logical.norm.trim().to_string();
            self.lines.push(logical);
        }
    }

    /// A whole statement: the checks that can stop the answer here.
    fn statement(&mut self, logical: Logical, text: &str) -> Option<Stop> {
        if let Some(stop) = self.close_test(text, logical.indent) {
            return Some(stop);
        }
        if logical.runs_on() {
            return self.long_statement(text);
        }
        let index = self.lines.len();
        if logical.is_test_def() {
            self.has_test = true;
        }
        if logical.norm.starts_with("def test") || logical.norm.starts_with("async def test") {
            let mut first = index;
            while first > 0
                && self.lines[first - 1].is_decorator()
                && self.lines[first - 1].indent == logical.indent
            {
                first -= 1;
            }
            let mut head: Vec<&str> = self.lines[first..index]
                .iter()
                .map(|l| l.norm.as_str())
                .collect();
            head.push(logical.norm.find('(').map_or("", |i| &logical.norm[i..]));
            self.open_test = Some(OpenTest {
                indent: logical.indent,
                first,
                head: head.join("\n"),
            });
        }
        self.lines.push(logical);
        self.repeated_block(text)
            .or_else(|| self.enumeration(text))
            .or_else(|| self.coarse_enumeration(text))
    }

    /// A statement that grows on: what came before it is kept.
    fn long_statement(&mut self, text: &str) -> Option<Stop> {
        self.pending = None;
        let keep = self.kept_end()?;
        Some(self.stop(StopReason::LongStatement, text, keep))
    }

    /// The open test ends before a statement at `indent` (`usize::MAX`: the block's end). A
    /// test that does what an earlier one does stops the answer before it.
    fn close_test(&mut self, text: &str, indent: usize) -> Option<Stop> {
        let open = self.open_test.as_ref()?;
        if indent != usize::MAX && indent > open.indent {
            return None;
        }
        let open = self.open_test.take()?;
        let def = self
            .lines
            .iter()
            .skip(open.first)
            .position(|l| l.is_def())?
            + open.first;
        let body: Vec<String> = self.lines[def + 1..]
            .iter()
            .map(|l| format!("{}|{}", l.indent - open.indent.min(l.indent), l.norm))
            .collect();
        let key = format!("{}\n{}", open.head, body.join("\n"));
        if self.tests.contains(&key) {
            let keep = self.lines[open.first].start;
            self.lines.truncate(open.first);
            return Some(self.stop(StopReason::RepeatedTest, text, keep));
        }
        self.tests.push(key);
        None
    }

    /// The last statements are copies of the block before them, often enough to be a loop.
    fn repeated_block(&mut self, text: &str) -> Option<Stop> {
        let n = self.lines.len();
        let key = |l: &Logical| (l.indent, l.norm.clone());
        for p in 1..=MAX_PERIOD.min(n / 2) {
            let block: Vec<_> = self.lines[n - p..].iter().map(key).collect();
            let mut copies = 1;
            while (copies + 1) * p <= n
                && self.lines[n - (copies + 1) * p..n - copies * p]
                    .iter()
                    .map(key)
                    .eq(block.iter().cloned())
            {
                copies += 1;
            }
            let has_def = self.lines[n - p..].iter().any(Logical::is_def);
            let needed = match p {
                _ if has_def => 2,
                1 => 6,
                2 | 3 => 3,
                _ => 2,
            };
            if copies >= needed {
                let first_end = n - (copies - 1) * p;
                self.lines.truncate(first_end);
                let keep = self.kept_end()?;
                return Some(self.stop(StopReason::RepeatedBlock, text, keep));
            }
        }
        None
    }

    /// The last statements enumerate one shape (literals aside), more than [`ENUMERATION`] of
    /// them: the first [`ENUMERATION_KEPT`] are kept.
    fn enumeration(&mut self, text: &str) -> Option<Stop> {
        let n = self.lines.len();
        for p in 1..=MAX_SHAPE_PERIOD {
            let copies_needed = ENUMERATION + 1;
            if copies_needed * p > n {
                break;
            }
            let shape = |l: &Logical| (l.indent, l.shape.clone());
            let block: Vec<_> = self.lines[n - p..].iter().map(shape).collect();
            if self.lines[n - p..]
                .iter()
                .any(|l| l.is_def() || l.is_decorator())
            {
                continue;
            }
            let same = (1..copies_needed).all(|k| {
                self.lines[n - (k + 1) * p..n - k * p]
                    .iter()
                    .map(shape)
                    .eq(block.iter().cloned())
            });
            if same {
                // Where the enumeration started: the first copy of the shape in this run.
                let mut copies = copies_needed;
                while (copies + 1) * p <= n
                    && self.lines[n - (copies + 1) * p..n - copies * p]
                        .iter()
                        .map(shape)
                        .eq(block.iter().cloned())
                {
                    copies += 1;
                }
                let started = n - copies * p;
                self.lines.truncate(started + ENUMERATION_KEPT * p);
                let keep = self.kept_end()?;
                return Some(self.stop(StopReason::Enumeration, text, keep));
            }
        }
        None
    }

    /// The last blocks of 2 to [`MAX_COARSE_PERIOD`] statements have one coarse shape,
    /// [`COARSE_COPIES`] of them: the first [`ENUMERATION_KEPT`] are kept.
    fn coarse_enumeration(&mut self, text: &str) -> Option<Stop> {
        let n = self.lines.len();
        let coarse: Vec<(usize, &str)> = self
            .lines
            .iter()
            .map(|l| (l.indent, l.coarse.as_str()))
            .collect();
        for p in 2..=MAX_COARSE_PERIOD {
            if COARSE_COPIES * p > n {
                break;
            }
            let block = &coarse[n - p..];
            // One shape over and over is a one-statement enumeration, the fine check's to judge.
            if block.iter().all(|c| *c == block[0])
                || self.lines[n - p..]
                    .iter()
                    .any(|l| l.is_def() || l.is_decorator())
            {
                continue;
            }
            let same = (1..COARSE_COPIES).all(|k| coarse[n - (k + 1) * p..n - k * p] == *block);
            if same {
                let started = n - COARSE_COPIES * p;
                self.lines.truncate(started + ENUMERATION_KEPT * p);
                let keep = self.kept_end()?;
                return Some(self.stop(StopReason::Enumeration, text, keep));
            }
        }
        None
    }

    /// Where the kept statements end, after dropping a last line that would open a block with
    /// no body (a `def`, a `with ...:`) or a decorator with nothing to decorate.
    fn kept_end(&mut self) -> Option<usize> {
        while self
            .lines
            .last()
            .is_some_and(|l| l.opens_block() || l.is_decorator())
        {
            self.lines.pop();
        }
        self.lines.last().map(|l| l.end)
    }

    fn stop(&self, reason: StopReason, text: &str, keep: usize) -> Stop {
        let mut kept = text[..keep].to_string();
        if !kept.ends_with('\n') {
            kept.push('\n');
        }
        kept.push_str("```\n");
        Stop { reason, text: kept }
    }
}

/// Just enough of Python's tokenizer to find where a statement ends (brackets, strings,
/// comments, backslashes) and to replace literals with placeholders.
#[derive(Debug, Default)]
struct Lexer {
    depth: u32,
    /// Inside a string: its quote character and whether it is triple-quoted.
    string: Option<(char, bool)>,
    /// String and number literals read so far.
    literals: usize,
}

impl Lexer {
    /// Reads a raw line into the statement's `norm`, `shape` and `literals`; whether the
    /// statement goes on to the next line.
    fn line(&mut self, raw: &str, statement: &mut Logical) -> bool {
        let Logical {
            norm,
            shape,
            literals,
            ..
        } = statement;
        let seen = self.literals;
        let more = self.read_line(raw, norm, shape);
        *literals += self.literals - seen;
        more
    }

    fn read_line(&mut self, raw: &str, norm: &mut String, shape: &mut String) -> bool {
        let chars: Vec<char> = raw.chars().collect();
        let mut i = 0;
        // A statement going on to this line: one space between its raw lines.
        space(norm);
        space(shape);
        while i < chars.len() {
            let c = chars[i];
            if self.string.is_some() {
                i = self.in_string(&chars, i, norm);
                continue;
            }
            match c {
                '#' => break,
                '\'' | '"' => {
                    i = self.open_string(&chars, i, norm, shape);
                    continue;
                }
                '0'..='9'
                    if !shape
                        .chars()
                        .last()
                        .is_some_and(|p| p.is_ascii_alphanumeric() || p == '_') =>
                {
                    self.literals += 1;
                    i = number(&chars, i, norm, shape);
                    continue;
                }
                '(' | '[' | '{' => self.depth += 1,
                ')' | ']' | '}' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
            if c.is_whitespace() {
                space(norm);
                space(shape);
            } else {
                norm.push(c);
                shape.push(c);
            }
            i += 1;
        }
        // A one-quote string the line did not close: broken, end it here.
        if matches!(self.string, Some((_, false))) {
            self.string = None;
        }
        let backslash = norm.trim_end().ends_with('\\') && self.string.is_none();
        if backslash {
            let t = norm.trim_end().len() - 1;
            norm.truncate(t);
            let t = shape.trim_end().trim_end_matches('\\').len();
            shape.truncate(t);
        }
        self.depth > 0 || self.string.is_some() || backslash
    }

    /// A string's character at `i` (an escape takes two); where to go on.
    fn in_string(&mut self, chars: &[char], i: usize, norm: &mut String) -> usize {
        let Some((quote, triple)) = self.string else {
            return i + 1;
        };
        let c = chars[i];
        norm.push(c);
        if c == '\\' {
            if let Some(&next) = chars.get(i + 1) {
                norm.push(next);
            }
            return i + 2;
        }
        if c == quote {
            if !triple {
                self.string = None;
            } else if chars.get(i + 1) == Some(&quote) && chars.get(i + 2) == Some(&quote) {
                norm.push(quote);
                norm.push(quote);
                self.string = None;
                return i + 3;
            }
        }
        i + 1
    }

    /// A string's opening quote(s) at `i`, its prefix (r, b, f, rb...) taken into the literal.
    fn open_string(
        &mut self,
        chars: &[char],
        i: usize,
        norm: &mut String,
        shape: &mut String,
    ) -> usize {
        let c = chars[i];
        let prefix = shape
            .chars()
            .rev()
            .take_while(|ch| ch.is_ascii_alphanumeric() || *ch == '_')
            .collect::<String>();
        if !prefix.is_empty()
            && prefix.len() <= 2
            && prefix.chars().all(|ch| "rRbBuUfF".contains(ch))
        {
            shape.truncate(shape.len() - prefix.len());
        }
        let triple = chars.get(i + 1) == Some(&c) && chars.get(i + 2) == Some(&c);
        self.literals += 1;
        shape.push('S');
        norm.push(c);
        self.string = Some((c, triple));
        if triple {
            norm.push(c);
            norm.push(c);
            return i + 3;
        }
        i + 1
    }
}

/// A statement's shape with what its brackets hold collapsed to `…` and its plain names (not
/// a called function, an attribute or a keyword) blanked: `d2 = OMD([(S, S)])` and
/// `nested = OMD([(S, {S: S})])` are both `_ = OMD(…)`, `assert d2 == {S: S}` and
/// `assert nested == {}` both `assert _ == {…}`.
fn coarse_shape(shape: &str) -> String {
    let mut collapsed = String::with_capacity(shape.len());
    let mut depth = 0u32;
    for c in shape.chars() {
        match c {
            '(' | '[' | '{' => {
                if depth == 0 {
                    collapsed.push(c);
                    collapsed.push('…');
                }
                depth += 1;
            }
            ')' | ']' | '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    collapsed.push(c);
                }
            }
            _ if depth == 0 => collapsed.push(c),
            _ => {}
        }
    }
    blank_names(&collapsed)
}

/// Python's keywords a statement's shape keeps (`None`, `True` and `False` are values: blanked).
const KEYWORDS: &[&str] = &[
    "and", "as", "assert", "async", "await", "break", "continue", "def", "del", "elif", "else",
    "except", "for", "from", "global", "if", "import", "in", "is", "lambda", "nonlocal", "not",
    "or", "pass", "raise", "return", "try", "while", "with", "yield",
];

/// Each name not right after a `.` nor right before a `(` as `_`.
fn blank_names(shape: &str) -> String {
    let chars: Vec<char> = shape.chars().collect();
    let mut out = String::with_capacity(shape.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let starts_name = (c.is_alphabetic() || c == '_')
            && !(i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_'));
        if !starts_name {
            out.push(c);
            i += 1;
            continue;
        }
        let end = (i..chars.len())
            .find(|&j| !(chars[j].is_alphanumeric() || chars[j] == '_'))
            .unwrap_or(chars.len());
        let name: String = chars[i..end].iter().collect();
        let attribute = i > 0 && chars[i - 1] == '.';
        let called = chars.get(end) == Some(&'(');
        // The literal placeholders stay what they are.
        let placeholder = name == "S" || name == "N";
        if attribute || called || placeholder || KEYWORDS.contains(&name.as_str()) {
            out.push_str(&name);
        } else {
            out.push('_');
        }
        i = end;
    }
    out
}

/// One space at the end, unless there is one or nothing yet.
fn space(s: &mut String) {
    if !s.is_empty() && !s.ends_with(' ') {
        s.push(' ');
    }
}

/// A number at `i` (with a unary minus right before it: `-1` is a literal too); where to go on.
fn number(chars: &[char], mut i: usize, norm: &mut String, shape: &mut String) -> usize {
    if shape.ends_with('-') {
        let before = shape[..shape.len() - 1].trim_end();
        if before.is_empty() || before.ends_with(['(', '[', ',', '=', ' ']) {
            shape.pop();
        }
    }
    while i < chars.len()
        && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '.')
    {
        norm.push(chars[i]);
        i += 1;
    }
    shape.push('N');
    i
}

/// Tokens in `text`, estimated at three characters a token, as the prompt budget counts.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `text` in pieces of `step` characters; the stop, if any.
    fn watch(text: &str, step: usize) -> Option<Stop> {
        let mut w = Watcher::new();
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(step) {
            if let Some(stop) = w.push(&piece.iter().collect::<String>()) {
                // Once only.
                assert_eq!(w.push("more\n"), None);
                return Some(stop);
            }
        }
        None
    }

    fn watch_all_ways(text: &str) -> Option<Stop> {
        let first = watch(text, 1);
        for step in [3, 7, 64, 10_000] {
            assert_eq!(watch(text, step), first, "step {step}");
        }
        first
    }

    const HEAD: &str = "Here are the tests.\n\n```python\nimport pytest\n\nfrom pkg import urlutils\n\n\ndef test_quote():\n    assert urlutils.quote('a b') == 'a%20b'\n\n\n";

    #[test]
    fn a_closed_code_block_with_tests_stops_before_the_prose() {
        let answer = format!("{HEAD}```\n\nThese tests cover quoting. Also, consider...\n");
        let stop = watch_all_ways(&answer).unwrap();
        assert_eq!(stop.reason, StopReason::CodeClosed);
        assert_eq!(stop.text, format!("{HEAD}```\n"));
        assert!(!stop.reason.is_runaway());
    }

    #[test]
    fn a_closed_block_without_tests_or_in_another_language_does_not_stop() {
        let answer = "Install it:\n```bash\npip install pkg\ndef test_x(): pass\n```\n\n```python\nimport pkg\n```\nthen\n";
        assert_eq!(watch_all_ways(answer), None);
    }

    #[test]
    fn an_enumeration_keeps_what_came_before_and_three_of_it() {
        let mut answer = format!(
            "{HEAD}def test_unquote():\n    assert urlutils.unquote('') == ''\n    s = 'x'\n    assert urlutils.unquote(s) == s\n"
        );
        let before = answer.clone();
        let cases = [
            "%41", "%42", "%43", "%44", "%45", "%46", "%47", "%48", "%49", "%4A",
        ];
        let lines: Vec<String> = cases
            .iter()
            .map(|c| format!("    assert urlutils.unquote('{c}') == 'A'  # case {c}\n"))
            .collect();
        for line in &lines {
            answer.push_str(line);
        }
        let stop = watch_all_ways(&answer).unwrap();
        assert_eq!(stop.reason, StopReason::Enumeration);
        assert_eq!(
            stop.text,
            format!("{before}{}{}{}```\n", lines[0], lines[1], lines[2])
        );
        assert!(stop.reason.is_runaway());
        // Stopped at the ninth, not before.
        let eight: String = lines[..8].concat();
        assert_eq!(watch(&format!("{before}{eight}"), 5), None);
    }

    #[test]
    fn an_enumeration_of_two_line_blocks_is_one_too() {
        let mut answer = format!("{HEAD}def test_bad():\n");
        for k in 0..12 {
            answer.push_str(&format!(
                "    with pytest.raises(ValueError):\n        urlutils.parse({k}, \"x{k}\")\n"
            ));
        }
        let stop = watch_all_ways(&answer).unwrap();
        assert_eq!(stop.reason, StopReason::Enumeration);
        assert!(
            stop.text.ends_with("urlutils.parse(2, \"x2\")\n```\n"),
            "{}",
            stop.text
        );
        assert!(!stop.text.contains("parse(3,"));
    }

    #[test]
    fn a_repeated_block_keeps_its_first_copy() {
        let copy = "    u = urlutils.URL('http://a/b')\n    assert u.host == 'a'\n    assert u.path == '/b'\n    assert u.to_text() == 'http://a/b'\n";
        let answer = format!("{HEAD}def test_url():\n{copy}{copy}{copy}");
        let stop = watch_all_ways(&answer).unwrap();
        assert_eq!(stop.reason, StopReason::RepeatedBlock);
        assert_eq!(stop.text, format!("{HEAD}def test_url():\n{copy}```\n"));
    }

    #[test]
    fn a_repeated_test_with_its_name_is_a_repeated_block() {
        let test = "def test_quote_again():\n    assert urlutils.quote('x') == 'x'\n\n\n";
        let answer = format!("{HEAD}{test}{test}{test}");
        let stop = watch_all_ways(&answer).unwrap();
        assert_eq!(stop.reason, StopReason::RepeatedBlock);
        assert_eq!(
            stop.text,
            format!("{HEAD}def test_quote_again():\n    assert urlutils.quote('x') == 'x'\n```\n")
        );
    }

    #[test]
    fn a_test_written_again_under_a_new_name_is_dropped() {
        let body = "    u = urlutils.URL('http://a')\n    assert u.host == 'a'  # the host\n";
        let answer = format!(
            "{HEAD}def test_host():\n{body}\n\ndef test_host_again():\n    # same thing\n{body}\n\ndef test_other():\n    pass\n"
        );
        let stop = watch_all_ways(&answer).unwrap();
        assert_eq!(stop.reason, StopReason::RepeatedTest);
        assert_eq!(
            stop.text,
            format!("{HEAD}def test_host():\n{body}\n\n```\n")
        );
        // At the block's end too.
        let answer = format!("{HEAD}def test_a():\n{body}\ndef test_b():\n{body}```\nprose\n");
        let stop = watch_all_ways(&answer).unwrap();
        assert_eq!(stop.reason, StopReason::RepeatedTest);
        assert_eq!(stop.text, format!("{HEAD}def test_a():\n{body}\n```\n"));
    }

    #[test]
    fn the_same_body_under_other_decorators_or_arguments_is_a_new_test() {
        let answer = format!(
            "{HEAD}@pytest.mark.parametrize('s', ['a'])\ndef test_a(s):\n    assert urlutils.quote(s)\n\n@pytest.mark.parametrize('s', ['b'])\ndef test_b(s):\n    assert urlutils.quote(s)\n\ndef test_c(s='c'):\n    assert urlutils.quote(s)\n\n```\n"
        );
        assert_eq!(
            watch_all_ways(&answer).unwrap().reason,
            StopReason::CodeClosed
        );
    }

    #[test]
    fn a_normal_answer_with_many_similar_asserts_is_not_stopped() {
        let answer = format!(
            "{HEAD}def test_many():\n    assert urlutils.quote('a') == 'a'\n    assert urlutils.unquote('a') == 'a'\n    assert urlutils.quote_plus('a b') == 'a+b'\n    assert urlutils.unquote_plus('a+b') == 'a b'\n    assert urlutils.quote('b') == 'b'\n    assert urlutils.quote('c') == 'c'\n    assert urlutils.quote('d') == 'd'\n\n\ndef test_table():\n    data = {{\n        'a': 1,\n        'a': 1,\n        'a': 1,\n        'a': 1,\n        'a': 1,\n        'a': 1,\n        'a': 1,\n    }}\n    assert data\n    s = '''\nx\nx\nx\nx\nx\nx\nx\n'''\n    assert s\n    next(it)\n    next(it)\n    next(it)\n    next(it)\n    next(it)\n"
        );
        assert_eq!(watch_all_ways(&answer), None);
        // Eight of one shape, then something else: no enumeration.
        let mut answer = format!("{HEAD}def test_eight():\n");
        for k in 0..8 {
            answer.push_str(&format!("    assert urlutils.quote('{k}') == '{k}'\n"));
        }
        answer.push_str("    assert urlutils.unquote('x') == 'x'\n");
        for k in 0..8 {
            answer.push_str(&format!("    assert urlutils.quote('{k}') == '{k}'\n"));
        }
        assert_eq!(watch_all_ways(&answer), None);
    }

    #[test]
    fn the_lexer_finds_statements_and_shapes() {
        let mut lexer = Lexer::default();
        let mut statement = Logical::default();
        assert!(!lexer.line(
            "assert f(r'a#b', -1.5e3, x2, 0x1F) == \"q\\\"\"  # note",
            &mut statement,
        ));
        assert_eq!(
            statement.norm,
            "assert f(r'a#b', -1.5e3, x2, 0x1F) == \"q\\\"\" "
        );
        assert_eq!(statement.shape, "assert f(S, N, x2, N) == S ");
        assert_eq!(statement.literals, 4);
        let mut statement = Logical::default();
        assert!(lexer.line("x = [1,", &mut statement));
        assert!(lexer.line("  2] + \\", &mut statement));
        assert!(!lexer.line("  y", &mut statement));
        assert_eq!(statement.shape, "x = [N, N] + y");
        assert_eq!(statement.literals, 2);
    }

    #[test]
    fn coarse_shapes_collapse_brackets_and_assigned_names() {
        assert_eq!(
            coarse_shape("d2 = OMD([(S, S), (S, {S: S})])"),
            coarse_shape("nested = OMD([(S, S)])")
        );
        assert_eq!(coarse_shape("a, b = f(N)"), "_, _ = f(…)");
        assert_eq!(coarse_shape("assert len(d) == N"), "assert len(…) == N");
        assert_eq!(coarse_shape("x.y = f(N)"), "_.y = f(…)");
        assert_eq!(coarse_shape("assert x == f(N)"), "assert _ == f(…)");
        assert_eq!(
            coarse_shape("assert d2 == {S: S}"),
            coarse_shape("assert nested == {}")
        );
        assert_eq!(coarse_shape("with pytest.raises(E):"), "with _.raises(…):");
        assert_eq!(coarse_shape("x_1 = N"), "_ = N");
    }

    /// Blocks like those Qwen2.5-Coder-1.5B wrote for boltons' OrderedMultiDict: each "test
    /// case" a new name, its object nested once more.
    fn test_case(k: usize) -> String {
        let mut value = "'v'".to_string();
        for _ in 0..k {
            value = format!("{{'k': {value}}}");
        }
        format!(
            "    # Test case {k}\n    d{k} = OMD([('key', {value})])\n    assert d{k} == {{'key': {value}}}\n    assert list(d{k}.keys()) == ['key']\n    assert list(d{k}.values()) == [{value}]\n\n"
        )
    }

    #[test]
    fn blocks_that_differ_in_names_and_nesting_are_an_enumeration() {
        let before = format!("{HEAD}def test_omd():\n    empty = OMD()\n    assert not empty\n\n");
        let cases: Vec<String> = (1..=12).map(test_case).collect();
        let answer = format!("{before}{}", cases.concat());
        let stop = watch_all_ways(&answer).unwrap();
        assert_eq!(stop.reason, StopReason::Enumeration);
        let kept_cases = cases[..3].concat();
        assert_eq!(
            stop.text,
            format!(
                "{before}{}```\n",
                kept_cases.trim_end_matches('\n').to_owned() + "\n"
            )
        );
        // Five copies may be meant.
        let five = format!("{before}{}```\n", cases[..5].concat());
        assert_eq!(
            watch_all_ways(&five).unwrap().reason,
            StopReason::CodeClosed
        );
    }

    #[test]
    fn a_line_that_grows_on_is_stopped_before_it_ends() {
        let before = format!(
            "{HEAD}def test_bad_input():\n    with pytest.raises(TypeError):\n        IndexedSet(None)\n\n"
        );
        let mut answer =
            format!("{before}    with pytest.raises(TypeError):\n        IndexedSet({{");
        for k in 1..400 {
            answer.push_str(&format!("{k}, "));
        }
        let stop = watch_all_ways(&answer).unwrap();
        assert_eq!(stop.reason, StopReason::LongStatement);
        assert!(stop.reason.is_runaway());
        // The `with` left without its body goes too.
        assert_eq!(stop.text, format!("{}\n```\n", before.trim_end()));
    }

    #[test]
    fn a_statement_of_endless_lines_is_stopped_at_its_hundredth_literal() {
        let before = format!("{HEAD}def test_table():\n    assert urlutils.quote('') == ''\n");
        let mut answer = format!("{before}    table = [\n");
        for k in 0..200 {
            answer.push_str(&format!("        ('%{k:02X}', {k}),\n"));
        }
        let stop = watch_all_ways(&answer).unwrap();
        assert_eq!(stop.reason, StopReason::LongStatement);
        assert_eq!(stop.text, format!("{before}```\n"));
        // Fifty pairs are a table a test may hold.
        let mut answer = format!("{before}    table = [\n");
        for k in 0..50 {
            answer.push_str(&format!("        ('%{k:02X}', {k}),\n"));
        }
        answer.push_str("    ]\n    assert table\n```\n");
        assert_eq!(
            watch_all_ways(&answer).unwrap().reason,
            StopReason::CodeClosed
        );
    }

    #[test]
    fn tokens_are_estimated_at_three_characters() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abcd"), 2);
        assert_eq!(estimate_tokens("ééé"), 1);
    }
}
