//! Progress bars on a terminal; nothing at all in CI or when stderr is a pipe or file.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;

fn interactive() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("CI").is_none()
}

/// One bar per phase of a stage's work, with its status line as the bar's suffix.
pub struct Bars {
    bar: Mutex<ProgressBar>,
}

impl Bars {
    pub fn new() -> Self {
        Self {
            bar: Mutex::new(ProgressBar::hidden()),
        }
    }

    fn bar(&self) -> ProgressBar {
        self.bar.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Default for Bars {
    fn default() -> Self {
        Self::new()
    }
}

impl model::progress::Progress for Bars {
    fn start(&self, what: &str, len: u64) {
        let bar = if interactive() {
            let bar = ProgressBar::new(len);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:>12} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {prefix}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_message(what.to_string());
            bar
        } else {
            ProgressBar::hidden()
        };
        *self.bar.lock().unwrap_or_else(|e| e.into_inner()) = bar;
    }

    fn advance(&self, n: u64) {
        self.bar().inc(n);
    }

    fn status(&self, line: &str) {
        self.bar().set_prefix(line.to_string());
    }

    fn finish(&self) {
        self.bar().finish_and_clear();
    }
}
