//! What the user sees while work runs: a progress bar on a terminal, plain
//! lines in CI, every step with `-v`. Only the CLI prints.

use crate::build::Event;
use crate::digest::Digest;
use crate::output::BuildResult;
use crate::registry::PushOutcome;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;

/// Progress on a terminal (one bar over fetching and layer building), plain
/// lines in CI; `-v` prints every step.
pub fn event_printer(verbose: bool) -> impl Fn(Event) + Sync {
    let bar = (std::io::stderr().is_terminal() && !verbose).then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed}] {bar:30} {pos}/{len} {wide_msg}")
                .expect("a valid template"),
        );
        bar
    });
    let say = {
        let bar = bar.clone();
        move |line: String| match &bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    };
    move |e: Event| match e {
        Event::Base {
            platform,
            name,
            digest,
        } => say(format!("[{platform}] base {name} @ {digest}")),
        Event::Python { platform, info } => say(format!("[{platform}] python {info}")),
        Event::Wheels { platform, count } => {
            if let Some(b) = &bar {
                // Each wheel is fetched once and becomes one layer.
                b.inc_length(2 * count as u64);
            }
            say(format!("[{platform}] {count} packages to install"))
        }
        Event::Fetched { filename, bytes } => {
            say(format!("downloaded {filename} ({})", human(bytes)))
        }
        Event::Progress { label } => {
            if let Some(b) = &bar {
                b.inc(1);
                b.set_message(label);
            }
        }
        Event::Done => {
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
        }
        Event::Layer {
            platform,
            label,
            digest,
            size,
            cached,
        } => {
            if verbose || !cached {
                say(format!(
                    "[{platform}] layer {} {} {label}{}",
                    digest.short(),
                    human(size),
                    if cached { " (cached)" } else { "" }
                ))
            }
        }
        Event::Warning(w) => say(format!("warning: {w}")),
        Event::Detail(d) => {
            if verbose {
                say(d)
            }
        }
    }
}

pub use crate::text::human;

/// A bar over the blobs a push uploads (each layer and each config), on a
/// terminal only; `on_blob` moves it on.
pub struct PushProgress {
    bar: Option<ProgressBar>,
    labels: HashMap<Digest, String>,
}

impl PushProgress {
    pub fn new(result: &BuildResult) -> PushProgress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let n: usize = result.images.iter().map(|i| i.layers.len() + 1).sum();
            let bar = ProgressBar::new(n as u64);
            bar.set_style(
                ProgressStyle::with_template("{spinner} pushing {bar:30} {pos}/{len} {wide_msg}")
                    .expect("a valid template"),
            );
            bar
        });
        let labels = result
            .images
            .iter()
            .flat_map(|i| {
                i.layers
                    .iter()
                    .map(|l| (l.layer.digest.clone(), l.label.clone()))
            })
            .collect();
        PushProgress { bar, labels }
    }

    pub fn on_blob(&self, d: &Digest, o: &PushOutcome) {
        if let Some(b) = &self.bar {
            b.inc(1);
            b.set_message(format!(
                "{o:?} {}",
                self.labels.get(d).map(String::as_str).unwrap_or("config")
            ));
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_shown_in_binary_units() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(5 << 20), "5.0 MiB");
    }
}
