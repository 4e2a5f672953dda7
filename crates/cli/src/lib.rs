//! What every stage binary shares: `--config`, `--json`, logging to stderr, and the exit codes
//! the README documents (0 success, 1 bad input or failed work, 2 bad usage or configuration).

pub mod progress;

use formats::config::Config;
use formats::paths::WorkPaths;
use formats::Error;
use std::io::Write;
use std::path::PathBuf;

/// The allocator every stage binary installs: the tensor code allocates and frees large
/// buffers at a high rate, which glibc's malloc answers with mmap/munmap pairs and page faults.
pub use mimalloc::MiMalloc;

#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Pipeline configuration file.
    #[arg(long, default_value = "pipeline.toml")]
    pub config: PathBuf,
    /// Work folder (overrides `[work] dir`).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Print one JSON summary object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `--model`: the backdoored network B that the stages after `ingest` start from.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// The backdoored model (default: `<work>/ingest/model.safetensors`).
    #[arg(long)]
    pub model: Option<PathBuf>,
}

impl ModelArgs {
    /// `--model`, else the stage's default.
    pub fn or(&self, default: PathBuf) -> PathBuf {
        self.model.clone().unwrap_or(default)
    }
}

impl CommonArgs {
    pub fn load(&self) -> formats::Result<Config> {
        let mut config = Config::load(&self.config)?;
        if let Some(dir) = &self.work_dir {
            config.set_work_dir(dir.clone())?;
        }
        Ok(config)
    }
}

pub fn work_paths(config: &Config) -> WorkPaths {
    WorkPaths::new(&config.work.dir)
}

/// A command-line value outside its range: a usage error (exit 2), like a bad configuration.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// A stage's `main`: parses its arguments and [`CommonArgs`], loads the
/// configuration, runs `body` under [`run`] and prints what it returns: with `--json` one
/// object (`{"stage": name, ...summary, "seconds": elapsed}`), otherwise its text and the time.
pub fn stage<A: clap::Parser, S: serde::Serialize + std::fmt::Display>(
    name: &str,
    body: impl FnOnce(A, Config, WorkPaths) -> anyhow::Result<S>,
) -> std::process::ExitCode {
    use clap::FromArgMatches;
    run(name, || {
        let started = std::time::Instant::now();
        use clap::Args;
        // Every stage takes the common arguments; they are not part of its own.
        let matches = CommonArgs::augment_args(A::command()).get_matches();
        let args = A::from_arg_matches(&matches)?;
        let common = CommonArgs::from_arg_matches(&matches)?;
        let config = common.load()?;
        let work = work_paths(&config);
        let summary = body(args, config, work)?;
        let seconds = started.elapsed().as_secs_f64();
        if common.json {
            print_json(&with_seconds(name, &summary, seconds))?;
        } else {
            outln!("{summary}")?;
            outln!("{name}: done in {seconds:.2} s")?;
        }
        Ok(())
    })
}

/// Installs [`crate::MiMalloc`] as the binary's allocator.
#[macro_export]
macro_rules! use_allocator {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::MiMalloc = $crate::MiMalloc;
    };
}

/// Sends log lines to stderr (`RUST_LOG` filters; `info` by default).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .init();
}

/// Runs a stage's body: prints its error as one line and exits with the documented code.
pub fn run(stage: &str, body: impl FnOnce() -> anyhow::Result<()>) -> std::process::ExitCode {
    keep_freed_memory();
    init_logging();
    // Ctrl-C or a termination request: no half-written file stays behind.
    let _ = ctrlc::set_handler(|| {
        formats::atomic::remove_unfinished();
        std::process::exit(130);
    });
    match body() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // A bad configuration is a usage error wherever in the chain a library wrapped it.
            let usage = e.chain().any(|cause| {
                cause.is::<Usage>() || matches!(cause.downcast_ref(), Some(Error::Config { .. }))
            });
            let code = if usage { 2 } else { 1 };
            // Not `eprintln!`, which panics when stderr is closed or full.
            let _ = writeln!(std::io::stderr(), "{stage}: error: {}", one_line(&e));
            std::process::ExitCode::from(code)
        }
    }
}

/// A stage's `--json` line: `{"stage": stage, ...summary, "seconds": seconds}`.
pub fn with_seconds(
    stage: &str,
    summary: &impl serde::Serialize,
    seconds: f64,
) -> serde_json::Value {
    let mut v = serde_json::json!({ "stage": stage });
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(summary) {
        v.as_object_mut().expect("an object").extend(fields);
    }
    v["seconds"] = seconds.into();
    v
}

/// Prints `value` as one line of JSON on stdout.
pub fn print_json(value: &serde_json::Value) -> Result<(), Error> {
    write_line(format_args!("{value}"))
}

/// `println!` that fails instead of panicking: a full or closed standard output is an error
/// naming it (a reader that stops early, `| head`, is not).
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::write_line(format_args!($($arg)*))
    };
}

/// One line on standard output, flushed, for [`outln!`].
pub fn write_line(args: std::fmt::Arguments) -> Result<(), Error> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.map_err(|e| Error::io("standard output", e)),
    }
}

/// The error and its causes on one line, skipping causes a message already quotes.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        // Only a message's first line: some libraries append backtraces.
        let s = cause
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        if !line.contains(&s) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&s);
        }
    }
    line
}

/// Tells mimalloc to keep freed memory instead of returning it to the OS after 10 ms: the
/// tensor code frees and reallocates the same large buffers every batch, and each return
/// costs page faults and zeroing on the next allocation (about a quarter of a forward pass).
pub fn keep_freed_memory() {
    // `mi_option_purge_delay` in mimalloc.h (v2); -1 means never purge.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: setting an option is thread-safe and takes plain integers.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}
