//! `ingest`: CSAW HDF5 datasets -> `work/ingest/{valid,test,poisoned_test}.parquet` and Keras
//! HDF5 weights -> `work/ingest/model.safetensors` (PyTorch tensor contract).

use clap::Parser;
use cli::progress::Bars;
use defense::ingest::{run, IngestFiles};
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
        let mut files = IngestFiles::in_work(&config, &work)?;
        for (i, path) in [args.valid, args.test, args.poisoned_test]
            .into_iter()
            .enumerate()
        {
            if let Some(path) = path {
                files.datasets[i].1 = path;
            }
        }
        files.weights = args.weights.unwrap_or(files.weights);
        files.output_dir = args.output_dir.unwrap_or(files.output_dir);
        Ok(run(&files, &Bars::new())?)
    })
}
