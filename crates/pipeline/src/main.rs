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
                let plan = pipeline::zoo::plan(&zoo)?;
                let json = serde_json::to_string_pretty(&plan)? + "\n";
                formats::atomic::write_bytes(&out, json.as_bytes())?;
                for n in plan.networks.iter().filter(|n| n.error.is_some()) {
                    tracing::warn!("{}: left out: {}", n.name, n.error.as_deref().unwrap_or(""));
                }
            }
            Command::ZooReport {
                plan,
                logs,
                output_dir,
                threads,
            } => {
                let text =
                    std::fs::read_to_string(&plan).map_err(|e| formats::Error::io(&plan, e))?;
                let plan: pipeline::zoo::Plan = serde_json::from_str(&text)
                    .map_err(|e| formats::Error::invalid(&plan, e.to_string()))?;
                let outcomes = pipeline::zoo::outcomes(&plan, &logs);
                std::fs::create_dir_all(&output_dir)
                    .map_err(|e| formats::Error::io(&output_dir, e))?;
                let files = reports::zoo::write(&outcomes, &output_dir)?;
                let failed: Vec<&str> = outcomes
                    .iter()
                    .filter(|o| o.result.is_err())
                    .map(|o| o.name.as_str())
                    .collect();
                cli::outln!(
                    "zoo: {} networks, {} failed or not run -> {}",
                    outcomes.len(),
                    failed.len(),
                    files
                        .last()
                        .map_or(String::new(), |f| f.display().to_string())
                )?;
                let costs: Vec<(f64, f64)> = outcomes.iter().filter_map(|o| o.cost).collect();
                if !costs.is_empty() {
                    let mean = costs.iter().map(|c| c.0).sum::<f64>() / costs.len() as f64;
                    let peak = costs.iter().map(|c| c.1).fold(0.0, f64::max);
                    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                    let parallel = (cores / threads.max(1)).max(1) as f64;
                    cli::outln!(
                        "zoo: per network {mean:.1} s of job time (the last run of each stage), at most {peak:.0} MB per job; about {:.0} networks an hour with {} job(s) at a time",
                        3600.0 * parallel / mean,
                        parallel
                    )?;
                }
                anyhow::ensure!(
                    failed.is_empty(),
                    "{} of {} networks failed or did not run ({}): see the error column of {}",
                    failed.len(),
                    outcomes.len(),
                    failed.join(", "),
                    output_dir.join("zoo.csv").display()
                );
            }
            Command::Clean { config } => {
                let done = pipeline::clean(&config)?;
                for p in &done.removed {
                    tracing::debug!("removed {}", p.display());
                }
                cli::outln!("clean: removed {} files and folders", done.removed.len())?;
                for d in &done.kept {
                    cli::outln!(
                        "clean: kept {}: it holds files the pipeline did not write",
                        d.display()
                    )?;
                }
            }
        }
        Ok(())
    })
}
