//! `profile`: mean activation of every conv_3 channel over the clean validation set (and
//! with `statistic = "rnp"`, RNP's channel masks) -> `work/profile/activations.parquet`,
//! plus the validation pool_3 activations
//! (`work/profile/valid_pool_3.safetensors`) so `prune` need not recompute them.

use clap::Parser;
use cli::progress::Bars;
use cli::{CommonArgs, ModelArgs};
use defense::config::ProfileConfig;
use defense::profile::{run, ProfileFiles};
use formats::paths::Split;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    model: ModelArgs,
    /// Clean validation images, Parquet or CSAW HDF5 (default: `<work>/ingest/valid.parquet`).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Channel table (default: `<work>/profile/activations.parquet`).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Validation pool_3 activations (default: `<work>/profile/valid_pool_3.safetensors`).
    #[arg(long)]
    features_output: Option<PathBuf>,
}

cli::use_allocator!();

fn main() -> std::process::ExitCode {
    cli::stage("profile", |args: Args, config, work| {
        let t = Instant::now();
        let files = ProfileFiles {
            model: args.model.path(&work),
            valid: args.input.unwrap_or_else(|| work.dataset(Split::Valid)),
            output: args.output.unwrap_or_else(|| work.activations()),
            features_output: args.features_output.unwrap_or_else(|| work.valid_pool_3()),
        };
        let s = run(&files, &config.table::<ProfileConfig>()?, &Bars::new())?;
        let seconds = t.elapsed().as_secs_f64();
        if args.common.json {
            cli::print_json(&cli::with_seconds("profile", &s, seconds))?;
        } else {
            if let Some(r) = &s.rnp {
                cli::outln!(
                    "RNP: {} unlearning steps to {:.1}% batch accuracy{}; masked unlearned network {:.1}%; lowest masks {}",
                    r.unlearn_steps,
                    r.unlearned_accuracy,
                    if r.unlearned { "" } else { " (step cap reached)" },
                    r.recovered_accuracy,
                    s.order[..s.order.len().min(8)]
                        .iter()
                        .map(|&c| format!("{c}: {:.3}", r.masks[c]))
                        .collect::<Vec<_>>()
                        .join(", ")
                )?;
            }
            cli::outln!(
                "{} images -> {}: {} of {} channels never active; pruning order {:?}... ({}, {:.2} s)",
                s.images,
                files.output.display(),
                s.dormant_channels,
                s.order.len(),
                &s.order[..s.order.len().min(8)],
                s.statistic,
                seconds
            )?;
        }
        Ok(())
    })
}
