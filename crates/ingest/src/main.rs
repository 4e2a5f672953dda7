//! `ingest`: CSAW HDF5 datasets -> `work/ingest/{valid,test,poisoned_test}.parquet` and Keras
//! HDF5 weights -> `work/ingest/model.safetensors` (PyTorch tensor contract).

use anyhow::Context;
use clap::Parser;
use fineprune::cli::{self, CommonArgs};
use fineprune::paths::Split;
use fineprune::{ingest, keras, progress};
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

fineprune::use_allocator!();

fn main() -> std::process::ExitCode {
    cli::stage("ingest", |args: Args, config, paths| {
        let out_dir = args
            .output_dir
            .clone()
            .unwrap_or_else(|| paths.model().parent().expect("ingest folder").to_path_buf());
        let weights_path = args.weights.unwrap_or(config.model.weights.clone());

        let t = Instant::now();
        let weights = keras::import(&weights_path, config.model.input_scale)
            .with_context(|| "importing the Keras weights")?;
        let model_out = out_dir.join("model.safetensors");
        let classes = weights.classes();
        let inputs = [
            (
                Split::Valid,
                args.valid.unwrap_or(config.data.valid.clone()),
            ),
            (Split::Test, args.test.unwrap_or(config.data.test.clone())),
            (
                Split::PoisonedTest,
                args.poisoned_test
                    .unwrap_or(config.data.poisoned_test.clone()),
            ),
        ];
        // Convert the data first: the model file is the stage's last output, so an interrupted
        // run never looks complete to make.
        // The three files convert in parallel and appear together, only if all succeed.
        let (summaries, files): (Vec<_>, Vec<_>) = std::thread::scope(|scope| {
            let jobs: Vec<_> = inputs
                .iter()
                .map(|(split, input)| {
                    let output = out_dir.join(format!("{split}.parquet"));
                    scope.spawn(move || {
                        let bar = progress::bar(0, split.name());
                        let s =
                            ingest::ingest_dataset(input, &output, classes, &|n| bar.inc(n as u64));
                        bar.finish_and_clear();
                        s
                    })
                })
                .collect();
            jobs.into_iter()
                .map(|j| j.join().expect("ingest thread panicked"))
                .collect::<fineprune::Result<Vec<_>>>()
        })?
        .into_iter()
        .unzip();
        fineprune::atomic::commit_all(files)?;
        if !args.common.json {
            for s in &summaries {
                println!("{}", s.line());
            }
        }
        weights.save(&model_out)?;
        let model_line = format!(
            "{} -> {}: DeepID, {} classes, input scale {}, sha256 {}, {:.2} s",
            weights_path.display(),
            model_out.display(),
            classes,
            weights.provenance.input_scale,
            &weights.provenance.source_sha256[..12],
            t.elapsed().as_secs_f64()
        );
        if args.common.json {
            cli::print_json(&serde_json::json!({
                "stage": "ingest",
                "datasets": summaries,
                "model": {
                    "input": weights_path,
                    "output": model_out,
                    "classes": classes,
                    "input_scale": weights.provenance.input_scale,
                    "source_sha256": weights.provenance.source_sha256,
                },
                "seconds": t.elapsed().as_secs_f64(),
            }));
        } else {
            println!("{model_line}");
        }
        Ok(())
    })
}
