//! `improve report --format pr`: the report as a pull request's description. GitHub refuses a
//! body over 65,536 characters, and a reviewer reads the first screen: the headline figures,
//! the change's diff coverage, one line per kept commit, possible bugs, the mutation score and
//! how to review. Long lists end with how many more there are; the whole stays under
//! [`MAX_BODY`] however long the run.

use std::fmt::Write as _;

use super::ReportModel;

/// Below GitHub's limit of 65,536 characters, with room for what a workflow adds around it.
pub const MAX_BODY: usize = 60_000;
/// Lines of one list at most, whatever room is left: a reviewer reads the rest in `improve log`.
const MAX_KEPT_LINES: usize = 300;
const MAX_BUG_LINES: usize = 50;
const MAX_FILE_ROWS: usize = 100;
/// A possible bug's message is cut to its first line and this many characters.
const MAX_MESSAGE: usize = 200;

/// The pull-request body of the run `m` describes.
pub fn body(m: &ReportModel) -> String {
    let head = headline(m);
    let tail = [mutation(m), review(m)].concat();
    let mut out = head;
    // Each list gets what is left after the parts that always fit, in order of what a
    // reviewer needs first.
    let lists = [diff_files(m), kept(m), bugs(m)];
    for list in lists.into_iter().flatten() {
        let room = MAX_BODY.saturating_sub(out.len() + tail.len());
        out.push_str(&list.fit(room));
    }
    out.push_str(&tail);
    out
}

/// A titled list of lines; what does not fit ends in a line saying how many more there are.
struct List {
    title: String,
    /// What follows the title before the lines (a table's header).
    lead: String,
    lines: Vec<String>,
    cap: usize,
    /// Where to read the rest.
    rest: &'static str,
}

impl List {
    fn fit(&self, room: usize) -> String {
        let mut out = format!("{}{}", self.title, self.lead);
        // The "more" line's length, allowed for before each line is taken.
        const MORE: usize = 120;
        let mut shown = 0;
        for line in self.lines.iter().take(self.cap) {
            if out.len() + line.len() + 1 + MORE > room {
                break;
            }
            out.push_str(line);
            out.push('\n');
            shown += 1;
        }
        if shown < self.lines.len() {
            let _ = writeln!(
                out,
                "\n… and {} more ({})",
                self.lines.len() - shown,
                self.rest
            );
        }
        out.push('\n');
        if out.len() > room { String::new() } else { out }
    }
}

fn headline(m: &ReportModel) -> String {
    let c = &m.counts;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## improve: {} new tests in {} commits\n",
        c.tests_added, c.kept
    );
    let stop = m
        .stop_reason
        .as_deref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "Run `{}` on `{}` from `{}`: {}{stop}. {} of {} iterations: **{} kept**, {} rejected, {} errors.\n",
        m.run_id,
        m.run_branch,
        m.base_short,
        m.state,
        c.iterations_done,
        c.iterations_target,
        c.kept,
        c.rejected,
        c.errors
    );
    let num = |n: Option<u32>| n.map_or_else(|| "-".into(), |n| n.to_string());
    let pct = |p: &Option<String>| p.as_ref().map_or_else(|| "-".into(), |p| format!("{p}%"));
    out.push_str("| | start | now |\n| --- | ---: | ---: |\n");
    let _ = writeln!(
        out,
        "| tests (pytest's collection) | {} | {} ({} added, {} fixed) |",
        num(c.tests_baseline),
        num(c.tests_now),
        c.tests_added,
        c.tests_fixed
    );
    let _ = writeln!(
        out,
        "| coverage (statements and branches) | {} | {} |",
        pct(&m.coverage_baseline_pct),
        pct(&m.coverage_now_pct)
    );
    if let Some(ch) = &m.change {
        let _ = writeln!(
            out,
            "| diff coverage since `{}` | {} | {} |",
            ch.since, ch.before, ch.after
        );
    }
    let _ = writeln!(
        out,
        "\nLLM `{}`: {} calls, {} tokens in, {} out, {}; {} in all.\n",
        m.model, m.llm_calls, m.tokens_in, m.tokens_out, m.cost.total, m.elapsed
    );
    if m.change.as_ref().is_some_and(|c| c.files.is_empty()) {
        out.push_str("The change touches no line of the code under test: nothing to do.\n\n");
    }
    out
}

fn diff_files(m: &ReportModel) -> Option<List> {
    let ch = m.change.as_ref().filter(|c| !c.files.is_empty())?;
    Some(List {
        title: format!(
            "### Diff coverage since `{}` (merge base `{}`)\n",
            ch.since, ch.merge_base_short
        ),
        lead:
            "| changed module | before | after | still uncovered |\n| --- | ---: | ---: | --- |\n"
                .into(),
        lines: ch
            .files
            .iter()
            .map(|f| {
                let uncovered = if f.uncovered.is_empty() {
                    "none"
                } else {
                    &f.uncovered
                };
                format!(
                    "| `{}` | {} | {} | {} |",
                    f.path,
                    f.before,
                    f.after,
                    cut(uncovered, 80)
                )
            })
            .collect(),
        cap: MAX_FILE_ROWS,
        rest: "the full table: `improve report`",
    })
}

fn kept(m: &ReportModel) -> Option<List> {
    if m.kept_iterations.is_empty() {
        return None;
    }
    Some(List {
        title: format!("### Kept commits ({})\n", m.kept_iterations.len()),
        lead: String::new(),
        lines: m
            .kept_iterations
            .iter()
            .map(|k| {
                let coverage = match (&k.coverage_before, &k.coverage_after) {
                    (Some(b), Some(a)) => format!(", coverage {b}% → {a}%"),
                    _ => String::new(),
                };
                format!(
                    "- `{}` #{} `{}` ({}): {} tests{coverage}",
                    k.commit_short,
                    k.n,
                    k.target,
                    cut(&k.focus, 40),
                    k.tests_added
                )
            })
            .collect(),
        cap: MAX_KEPT_LINES,
        rest: "`improve log`",
    })
}

fn bugs(m: &ReportModel) -> Option<List> {
    if m.findings.is_empty() {
        return None;
    }
    Some(List {
        title: format!("### Possible bugs ({})\n", m.findings.len()),
        lead: "Tests that failed on an assertion about the code and that the model stood by; not kept. A human decides whether the test or the code is wrong.\n\n".into(),
        lines: m
            .findings
            .iter()
            .map(|f| {
                let message = f.message.lines().next().unwrap_or_default();
                format!(
                    "- #{} `{}` (`{}`): {}",
                    f.n,
                    f.test,
                    f.target,
                    cut(message, MAX_MESSAGE)
                )
            })
            .collect(),
        cap: MAX_BUG_LINES,
        rest: "each with its test: `improve report`",
    })
}

fn mutation(m: &ReportModel) -> String {
    let Some(t) = &m.mutation else {
        return String::new();
    };
    format!(
        "### Mutation check\nMutation score of the kept tests: **{}** ({} of {} small changes to the code noticed by an assertion or a time limit).\n\n",
        t.kept_checked_score
            .as_ref()
            .map_or_else(|| "n/a".into(), |s| format!("{s}%")),
        t.kept_checked,
        t.kept_made
    )
}

fn review(m: &ReportModel) -> String {
    format!(
        "### How to review\nEach kept iteration is one commit that adds or changes tests only, and passed the whole suite when it was kept.\n\
         - `git log --reverse -p {base}..{branch}`: the commits, one by one.\n\
         - `improve show N`: iteration N's prompt, answer, pytest output and why it was kept or not.\n\
         - `improve report`: the full report (funnel, focus areas, files, time and cost).\n",
        base = m.base_short,
        branch = m.run_branch
    )
}

/// `text` cut to `max` characters, with `…` when cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(n: usize, cap: usize) -> List {
        List {
            title: "### Things\n".into(),
            lead: String::new(),
            lines: (0..n)
                .map(|i| format!("- thing {i} {}", "x".repeat(50)))
                .collect(),
            cap,
            rest: "`improve log`",
        }
    }

    #[test]
    fn a_list_that_does_not_fit_says_how_many_more() {
        let all = list(3, 10).fit(10_000);
        assert!(all.contains("- thing 2") && !all.contains("more"), "{all}");
        let capped = list(30, 10).fit(10_000);
        assert!(capped.contains("- thing 9") && !capped.contains("- thing 10"));
        assert!(capped.contains("… and 20 more (`improve log`)"), "{capped}");
        let tight = list(1_000, 1_000).fit(2_000);
        assert!(tight.len() <= 2_000, "{}", tight.len());
        assert!(tight.contains("more (`improve log`)"), "{tight}");
        // No room even for the title: nothing.
        assert_eq!(list(5, 5).fit(20), "");
    }

    #[test]
    fn cut_marks_what_it_cut() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcdef", 4), "abc…");
    }
}
