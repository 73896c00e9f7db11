//! Progress: a bar on a terminal; in workflows (no terminal) periodic info logs with cells done,
//! rate and ETA, so a Nextflow or Galaxy job log shows a long run advancing. `--progress` chooses.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, logs otherwise.
    Auto,
    Bar,
    Log,
    None,
}

static MODE: OnceLock<ProgressMode> = OnceLock::new();

/// Sets the process-wide mode (once, from the command line).
pub fn set_mode(mode: ProgressMode) {
    let _ = MODE.set(mode);
}

/// The mode in force, `Auto` resolved against the terminal.
pub fn mode() -> ProgressMode {
    match MODE.get().copied().unwrap_or(ProgressMode::Auto) {
        ProgressMode::Auto if std::io::IsTerminal::is_terminal(&std::io::stderr()) => {
            ProgressMode::Bar
        }
        ProgressMode::Auto => ProgressMode::Log,
        m => m,
    }
}

/// How often log mode reports at most.
const LOG_EVERY: Duration = Duration::from_secs(10);

pub struct Progress {
    bar: Option<ProgressBar>,
    log: bool,
    what: String,
    unit: &'static str,
    total: u64,
    done: u64,
    start: Instant,
    last_log: Instant,
    next_fraction: u64,
}

impl Progress {
    /// `what` names the work in logs (e.g. the input file).
    pub fn new(total: u64, unit: &'static str, what: &str) -> Self {
        let m = mode();
        let bar = (m == ProgressMode::Bar).then(|| bar(total, unit));
        let now = Instant::now();
        Self {
            bar,
            log: m == ProgressMode::Log,
            what: what.to_string(),
            unit,
            total,
            done: 0,
            start: now,
            last_log: now,
            next_fraction: 1,
        }
    }

    pub fn inc(&mut self, n: u64) {
        self.done += n;
        if let Some(b) = &self.bar {
            b.inc(n);
        }
        // Every 10 s, and at each tenth of the work, whichever comes first.
        let tenth = self.done * 10 >= self.next_fraction * self.total.max(1);
        if self.log && self.done < self.total && (self.last_log.elapsed() >= LOG_EVERY || tenth) {
            while self.done * 10 >= self.next_fraction * self.total.max(1) {
                self.next_fraction += 1;
            }
            self.last_log = Instant::now();
            let secs = self.start.elapsed().as_secs_f64().max(1e-9);
            let rate = self.done as f64 / secs;
            let eta = (self.total - self.done) as f64 / rate.max(1e-9);
            log::info!(
                "{}: {}/{} {} ({:.0}%), {:.1} {}/s, ETA {}",
                self.what,
                self.done,
                self.total,
                self.unit,
                100.0 * self.done as f64 / self.total.max(1) as f64,
                rate,
                self.unit,
                hms(eta)
            );
        }
    }

    pub fn finish(self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        let secs = self.start.elapsed().as_secs_f64();
        if self.log {
            log::info!(
                "{}: {} {} in {} ({:.1} {}/s)",
                self.what,
                self.done,
                self.unit,
                hms(secs),
                self.done as f64 / secs.max(1e-9),
                self.unit
            );
        }
    }
}

fn hms(secs: f64) -> String {
    let s = secs.round().clamp(0.0, 1e9) as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn bar(len: u64, unit: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{{spinner}} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}})"
    )) {
        pb.set_style(style);
    }
    pb
}

pub fn bytes_bar(len: u64) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
    ) {
        pb.set_style(style);
    }
    pb
}

#[cfg(test)]
mod tests {
    use super::hms;

    #[test]
    fn durations() {
        assert_eq!(hms(0.0), "0:00:00");
        assert_eq!(hms(3725.4), "1:02:05");
        assert_eq!(hms(f64::INFINITY), "277777:46:40");
    }
}
