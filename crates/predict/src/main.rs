//! `predict`: classifies photos (PNG, JPEG, or folders of them), CSAW HDF5 files and image
//! Parquet tables with the backdoored network B and, with `--pruned`, the repaired ensemble G
//! (class N = "backdoor" where B and B' disagree). One row per image, as CSV on stdout or in
//! `--output x.csv` / `x.parquet`.

use clap::Parser;
use cli::progress::Bars;
use defense::predict::{run, to_table, Output, PredictFiles};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The network B: safetensors (as `ingest` writes it) or Keras HDF5.
    #[arg(long)]
    model: PathBuf,
    /// A pruned or fine-pruned network B' made from B: adds `pruned_class` and G's
    /// `repaired_class`.
    #[arg(long)]
    pruned: Option<PathBuf>,
    /// Where the predictions go: `.csv` or `.parquet` (default: CSV on stdout).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Also list the K most probable classes of each image.
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// What pixels are multiplied by, for Keras models (safetensors files record theirs).
    #[arg(long, default_value_t = 1.0)]
    input_scale: f64,
    /// Replace `--output` even if fineprune did not write the file there.
    #[arg(long, requires = "output")]
    force: bool,
    /// Print one JSON summary object on stdout (the predictions then need `--output`).
    #[arg(long, requires = "output")]
    json: bool,
    /// Photos, folders of photos, CSAW HDF5 files, image Parquet tables.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

cli::use_allocator!();

fn main() -> std::process::ExitCode {
    cli::run("predict", || {
        let args = Args::parse();
        let t = Instant::now();
        let output = Output::new(args.output)?;
        let files = PredictFiles {
            model: args.model,
            pruned: args.pruned,
            inputs: args.inputs,
            input_scale: args.input_scale,
            top_k: args.top_k,
        };
        output.check(&files, args.force)?;
        formats::config::check_input_scale("--input-scale", files.input_scale)
            .map_err(cli::Usage)?;
        let (predictions, summary) = run(&files, &Bars::new())?;
        output.write(&to_table(&predictions, files.top_k, summary.classes))?;
        let seconds = t.elapsed().as_secs_f64();
        if args.json {
            cli::print_json(&cli::with_seconds("predict", &summary, seconds))?;
        } else if let Some(p) = output.path() {
            cli::outln!(
                "{} images -> {} ({:.0} images/s){}",
                summary.images,
                p.display(),
                summary.images as f64 / seconds,
                summary
                    .flagged_backdoor
                    .map_or(String::new(), |n| format!(", {n} flagged as backdoor"))
            )?;
        }
        Ok(())
    })
}
