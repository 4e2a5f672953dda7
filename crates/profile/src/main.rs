//! `profile`: mean activation of every conv_3 channel over the clean validation set (and
//! with `statistic = "rnp"`, RNP's channel masks) -> `work/profile/activations.parquet`,
//! plus the validation pool_3 activations
//! (`work/profile/valid_pool_3.safetensors`) so `prune` need not recompute them.

use clap::Parser;
use cli::progress::Bars;
use cli::ModelArgs;
use defense::config::ProfileConfig;
use defense::profile::{run, ProfileFiles};
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about)]
struct Args {
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
        let d = ProfileFiles::in_work(&work);
        let files = ProfileFiles {
            model: args.model.or(d.model),
            valid: args.input.unwrap_or(d.valid),
            output: args.output.unwrap_or(d.output),
            features_output: args.features_output.unwrap_or(d.features_output),
        };
        Ok(run(
            &files,
            &config.table::<ProfileConfig>()?,
            &Bars::new(),
        )?)
    })
}
