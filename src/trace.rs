//! `IMGBUILD_TRACE=1`: one stderr line per timed step (a build stage, a
//! registry request), with the milliseconds since the process started and
//! the step's own duration, so a slow push says where its time went
//! (docs/benchmarks.md, "Where a push's time goes"). Off by default, and
//! then a span costs one relaxed atomic load.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const UNKNOWN: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);
static START: OnceLock<Instant> = OnceLock::new();

/// Whether `IMGBUILD_TRACE` asks for the trace (read once).
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        ON => true,
        OFF => false,
        _ => {
            let on = std::env::var_os("IMGBUILD_TRACE").is_some_and(|v| !v.is_empty() && v != "0");
            STATE.store(if on { ON } else { OFF }, Ordering::Relaxed);
            start();
            on
        }
    }
}

/// Marks the start of the clock the trace lines count from (the first call wins).
pub fn start() -> Instant {
    *START.get_or_init(Instant::now)
}

/// A step being timed: its line is printed when it ends (is dropped).
pub struct Span {
    what: Option<(String, Instant)>,
}

/// Times `what` until the returned span is dropped; `what` is built only
/// when tracing is on.
pub fn span(what: impl FnOnce() -> String) -> Span {
    Span {
        what: enabled().then(|| (what(), Instant::now())),
    }
}

impl Span {
    /// Appends to the line (an outcome), when tracing is on.
    pub fn add(&mut self, more: impl FnOnce() -> String) {
        if let Some((what, _)) = &mut self.what {
            what.push_str(&more());
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some((what, began)) = self.what.take() {
            line(&what, began, began.elapsed());
        }
    }
}

fn line(what: &str, began: Instant, took: Duration) {
    let at = began.saturating_duration_since(start());
    eprintln!(
        "trace: {:>8.2} ms +{:>7.2} ms {what}",
        at.as_secs_f64() * 1e3,
        took.as_secs_f64() * 1e3
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_names_nothing_when_tracing_is_off() {
        // The closure must not run unless the trace is on: it may format URLs.
        STATE.store(OFF, Ordering::Relaxed);
        let _s = span(|| panic!("built the label of a span nobody prints"));
    }
}
