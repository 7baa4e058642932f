//! What a run shows while it works: one line per finished iteration, and on a terminal an
//! indicatif bar with k/N, kept/rejected counts, an ETA and the step of the iteration in flight.
//! Nothing is drawn when stderr is not a terminal, with `-q`, or with `-v` (where log lines
//! would tear the bar).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone)]
pub struct Printer {
    quiet: bool,
    bar: Option<ProgressBar>,
}

impl Printer {
    pub fn new(quiet: bool, verbose: u8) -> Printer {
        let draw = !quiet && verbose == 0 && std::io::stderr().is_terminal();
        let bar = draw.then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{bar:30.cyan/blue} {pos}/{len} {prefix}  ETA {eta}  {wide_msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        Printer { quiet, bar }
    }

    /// A line above the bar (or plainly on stderr), unless `-q`.
    pub fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    pub fn start(&self, total: u32, done: u32) {
        if let Some(bar) = &self.bar {
            bar.set_length(u64::from(total));
            bar.set_position(u64::from(done));
        }
    }

    /// What the run is doing now, e.g. `#4 pkg/a.py: verifying with pytest`.
    pub fn doing(&self, text: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(text.to_string());
        }
    }

    /// The bar's counts; `spent`: the run's dollars so far, when its price is known.
    pub fn counts(
        &self,
        (done, total): (u32, u32),
        [kept, rejected, errors]: [u32; 3],
        spent: Option<String>,
    ) {
        if let Some(bar) = &self.bar {
            bar.set_length(u64::from(total));
            bar.set_position(u64::from(done));
            let spent = spent.map(|s| format!(", {s}")).unwrap_or_default();
            bar.set_prefix(format!(
                "{kept} kept, {rejected} rejected, {errors} errors{spent}"
            ));
        }
    }

    /// Removes the bar before the final summary.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
