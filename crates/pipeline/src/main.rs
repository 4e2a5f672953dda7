//! `pipeline make-vars`: checks `pipeline.toml`, refreshes the stamps make compares (one per
//! table, one content hash per input) and writes the make variables; `pipeline clean`: removes
//! what the pipeline wrote for a configuration, and nothing else; `pipeline zoo-plan` and
//! `zoo-report`: before and after the workflow engine runs a zoo of networks.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write make variables for CONFIG to OUT and refresh the stamps.
    MakeVars {
        #[arg(long, default_value = "pipeline.toml")]
        config: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Remove the work and report files CONFIG's runs wrote.
    Clean {
        #[arg(long, default_value = "pipeline.toml")]
        config: PathBuf,
    },
    /// Check ZOO and every network's configuration (refreshing its stamps); write the
    /// workflow's plan (JSON) to OUT.
    ZooPlan {
        #[arg(long)]
        zoo: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write zoo.csv and the zoo plot from PLAN's networks (their stage logs in LOGS); exit 1
    /// when a network failed.
    ZooReport {
        #[arg(long)]
        plan: PathBuf,
        #[arg(long)]
        logs: PathBuf,
        /// The stage binaries' content stamps (the Makefile's target/make/code).
        #[arg(long)]
        code: PathBuf,
        #[arg(long)]
        output_dir: PathBuf,
        /// Cores each job had (for the networks-per-hour estimate).
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
}

cli::use_allocator!();

fn main() -> std::process::ExitCode {
    cli::run("pipeline", || {
        match Args::parse().command {
            Command::MakeVars { config, out } => pipeline::make_vars(&config, &out)?,
            Command::ZooPlan { zoo, out } => {
                pipeline::zoo::write_plan(&zoo, &out)?;
            }
            Command::ZooReport {
                plan,
                logs,
                code,
                output_dir,
                threads,
            } => {
                let report = pipeline::zoo::report(&plan, &logs, &code, &output_dir, threads)?;
                cli::outln!("{report}")?;
                anyhow::ensure!(
                    report.failed.is_empty(),
                    "{} of {} networks failed or did not run ({}): see the error column of {}",
                    report.failed.len(),
                    report.networks,
                    report.failed.join(", "),
                    output_dir.join("zoo.csv").display()
                );
            }
            Command::Clean { config } => {
                let done = pipeline::clean(&config)?;
                for p in &done.removed {
                    tracing::debug!("removed {}", p.display());
                }
                cli::outln!("{done}")?;
            }
        }
        Ok(())
    })
}
