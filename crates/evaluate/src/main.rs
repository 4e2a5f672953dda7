//! `evaluate`: clean test accuracy and attack success rate of B, of B' after every pruning
//! step and at each threshold, of the fine-tuned networks, and of the repaired G(B, B') ->
//! `work/evaluate/sweep.parquet`, `work/evaluate/targets.parquet` (attack success per target
//! label) and `work/evaluate/summary.parquet`. (`predict` gives the answers of B, B' and G
//! image by image.)

use clap::Parser;
use cli::progress::Bars;
use cli::ModelArgs;
use defense::evaluate::{run, EvaluateFiles};
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Prune sweep (default: `<work>/prune/sweep.parquet`).
    #[arg(long)]
    prune_sweep: Option<PathBuf>,
    /// Clean test images, Parquet or CSAW HDF5 (default: `<work>/ingest/test.parquet`).
    #[arg(long)]
    test: Option<PathBuf>,
    /// Triggered test images (default: `<work>/ingest/poisoned_test.parquet`).
    #[arg(long)]
    poisoned_test: Option<PathBuf>,
    /// Fine-tuned models and their `models.json` (default: `<work>/finetune`).
    #[arg(long)]
    finetune_dir: Option<PathBuf>,
    /// Output folder (default: `<work>/evaluate`).
    #[arg(long)]
    output_dir: Option<PathBuf>,
}

cli::use_allocator!();

fn main() -> std::process::ExitCode {
    cli::stage("evaluate", |args: Args, _config, work| {
        let d = EvaluateFiles::in_work(&work);
        let files = EvaluateFiles {
            model: args.model.or(d.model),
            prune_sweep: args.prune_sweep.unwrap_or(d.prune_sweep),
            test: args.test.unwrap_or(d.test),
            poisoned_test: args.poisoned_test.unwrap_or(d.poisoned_test),
            finetune_dir: args.finetune_dir.unwrap_or(d.finetune_dir),
            output_dir: args.output_dir.unwrap_or(d.output_dir),
        };
        Ok(run(&files, &Bars::new())?)
    })
}
