//! How long work tells its caller how far it got. Libraries only report; the command-line
//! crate draws bars on a terminal and stays quiet elsewhere.

pub trait Progress: Sync {
    /// A phase of `len` units (images, steps) called `what` begins.
    fn start(&self, what: &str, len: u64);
    /// `n` more units are done.
    fn advance(&self, n: u64);
    /// A status line for the running phase (the latest loss, say).
    fn status(&self, line: &str);
    /// The phase is over.
    fn finish(&self);
}

/// Reports nowhere.
pub struct Quiet;

impl Progress for Quiet {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn status(&self, _: &str) {}
    fn finish(&self) {}
}
