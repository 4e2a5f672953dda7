//! `pipeline make-vars`: checks `pipeline.toml`, refreshes the stamps make compares (one per
//! table, one content hash per input) and writes the make variables; `pipeline clean`: removes
//! what the pipeline wrote for a configuration, and nothing else.

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
}

cli::use_allocator!();

fn main() -> std::process::ExitCode {
    cli::run("pipeline", || {
        match Args::parse().command {
            Command::MakeVars { config, out } => pipeline::make_vars(&config, &out)?,
            Command::Clean { config } => {
                let done = pipeline::clean(&config)?;
                for p in &done.removed {
                    tracing::debug!("removed {}", p.display());
                }
                println!("clean: removed {} files and folders", done.removed.len());
                for d in &done.kept {
                    println!(
                        "clean: kept {}: it holds files the pipeline did not write",
                        d.display()
                    );
                }
            }
        }
        Ok(())
    })
}
