//! `ingest`: CSAW HDF5 datasets -> `work/ingest/{valid,test,poisoned_test}.parquet` and Keras
//! HDF5 weights -> `work/ingest/model.safetensors` (PyTorch tensor contract).

use clap::Parser;
use cli::progress::Bars;
use defense::config::FinetuneConfig;
use defense::ingest::{run, IngestFiles};
use formats::paths::{Split, Stage};
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Validation data (overrides `[data] valid`).
    #[arg(long)]
    valid: Option<PathBuf>,
    /// Clean test data (overrides `[data] test`).
    #[arg(long)]
    test: Option<PathBuf>,
    /// Triggered test data (overrides `[data] poisoned_test`).
    #[arg(long)]
    poisoned_test: Option<PathBuf>,
    /// Keras weights (overrides `[model] weights`).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Output folder (default: `<work>/ingest`).
    #[arg(long)]
    output_dir: Option<PathBuf>,
}

cli::use_allocator!();

fn main() -> std::process::ExitCode {
    cli::stage("ingest", |args: Args, config, work| {
        let data = config.data.clone();
        let files = IngestFiles {
            datasets: [
                (Split::Valid, args.valid.unwrap_or(data.valid)),
                (Split::Test, args.test.unwrap_or(data.test)),
                (
                    Split::PoisonedTest,
                    args.poisoned_test.unwrap_or(data.poisoned_test),
                ),
            ],
            weights: args.weights.unwrap_or(config.model.weights.clone()),
            input_scale: config.model.input_scale,
            min_valid_images: config.table::<FinetuneConfig>()?.min_valid_images(),
            output_dir: args.output_dir.unwrap_or_else(|| work.stage(Stage::Ingest)),
        };
        Ok(run(&files, &Bars::new())?)
    })
}
