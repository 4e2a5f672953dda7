//! `ingest`: CSAW HDF5 datasets -> `work/ingest/{valid,test,poisoned_test}.parquet` and Keras
//! HDF5 weights -> `work/ingest/model.safetensors` (PyTorch tensor contract).

use clap::Parser;
use cli::progress::Bars;
use cli::CommonArgs;
use defense::config::FinetuneConfig;
use formats::ingest::{run, IngestFiles};
use formats::paths::Split;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
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
        let t = Instant::now();
        let min_valid_images = config.table::<FinetuneConfig>()?.min_valid_images();
        let data = config.data;
        let files = IngestFiles {
            datasets: [
                (Split::Valid, args.valid.unwrap_or(data.valid)),
                (Split::Test, args.test.unwrap_or(data.test)),
                (
                    Split::PoisonedTest,
                    args.poisoned_test.unwrap_or(data.poisoned_test),
                ),
            ],
            weights: args.weights.unwrap_or(config.model.weights),
            input_scale: config.model.input_scale,
            min_valid_images,
            output_dir: args.output_dir.unwrap_or_else(|| work.stage("ingest")),
        };
        let s = run(&files, &Bars::new())?;
        let seconds = t.elapsed().as_secs_f64();
        if args.common.json {
            cli::print_json(&cli::with_seconds("ingest", &s, seconds))?;
            return Ok(());
        }
        for d in &s.datasets {
            cli::outln!("{}", d.line())?;
        }
        let m = &s.model;
        cli::outln!(
            "{} -> {}: DeepID, {} classes, input scale {}, sha256 {}, {seconds:.2} s",
            m.input.display(),
            m.output.display(),
            m.classes,
            m.input_scale,
            &m.source_sha256[..12]
        )?;
        Ok(())
    })
}
