//! The live progress bar on stderr: how far the run is (commands started out of `--commands`,
//! or time out of `--duration`) and the current rate of answers over the last second. Hidden
//! with `--quiet` and when stderr is not a terminal, so scripts and CI logs only get the report.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the bar is redrawn.
pub(crate) const TICK: Duration = Duration::from_millis(200);
/// The window of the current rate.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// What the bar counts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Goal {
    /// Commands started, out of this many.
    Commands(u64),
    /// Milliseconds, out of this many.
    Millis(u64),
}

/// The counters the bar shows, read at one tick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// Commands (sessions) taken from the budget.
    pub(crate) started: u64,
    /// Commands answered (acknowledged or rejected).
    pub(crate) answered: u64,
    /// Commands failed.
    pub(crate) failed: u64,
}

/// The progress bar.
#[derive(Debug)]
pub(crate) struct Progress {
    bar: ProgressBar,
    goal: Goal,
    started_at: Instant,
    /// (instant, answered) of the ticks in the last [`RATE_WINDOW`].
    window: VecDeque<(Instant, u64)>,
}

impl Progress {
    /// A bar towards `goal`, hidden if `quiet` or stderr is not a terminal.
    pub(crate) fn new(goal: Goal, quiet: bool) -> Progress {
        let (length, template) = match goal {
            Goal::Commands(n) => (
                n,
                "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} {msg}",
            ),
            Goal::Millis(ms) => (ms, "{spinner} {elapsed_precise} [{bar:30}] {msg}"),
        };
        let target = if quiet || !std::io::stderr().is_terminal() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(Some(length), target);
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress {
            bar,
            goal,
            started_at: Instant::now(),
            window: VecDeque::new(),
        }
    }

    /// Redraws with the counters of `now`.
    pub(crate) fn update(&mut self, now: Snapshot) {
        let at = Instant::now();
        self.window.push_back((at, now.answered));
        while self
            .window
            .front()
            .is_some_and(|(t, _)| at.duration_since(*t) > RATE_WINDOW)
        {
            self.window.pop_front();
        }
        let rate = match self.window.front() {
            Some((t, answered)) if at > *t => {
                now.answered.saturating_sub(*answered) as f64 / at.duration_since(*t).as_secs_f64()
            }
            _ => 0.0,
        };
        let position = match self.goal {
            Goal::Commands(_) => now.started,
            Goal::Millis(ms) => u64::try_from(self.started_at.elapsed().as_millis())
                .unwrap_or(u64::MAX)
                .min(ms),
        };
        self.bar.set_position(position);
        self.bar.set_message(format!(
            "{rate:.0} commands/s  answered {}  failed {}",
            now.answered, now.failed
        ));
    }

    /// Removes the bar before the report is printed.
    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
