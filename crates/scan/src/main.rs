//! `scan`: from clean validation images only, Neural Cleanse's trigger inversion on B and on
//! every network finetune made -> `work/scan/<network>.parquet` (per label: mask L1, anomaly
//! index, the inverted trigger's success on held-out images), `work/scan/<network>_trigger.safetensors`
//! (the most anomalous label's trigger) and `work/scan/summary.parquet` (per network: the
//! flagged label and the estimated residual attack success).

use clap::Parser;
use cli::progress::Bars;
use cli::ModelArgs;
use defense::config::ScanConfig;
use defense::scan::{run, ScanFiles};
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Clean validation images (default: `<work>/ingest/valid.parquet`).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Prune sweep (default: `<work>/prune/sweep.parquet`).
    #[arg(long)]
    prune_sweep: Option<PathBuf>,
    /// Fine-tuned networks and their `models.json` (default: `<work>/finetune`).
    #[arg(long)]
    finetune_dir: Option<PathBuf>,
    /// Output folder (default: `<work>/scan`).
    #[arg(long)]
    output_dir: Option<PathBuf>,
}

cli::use_allocator!();

fn main() -> std::process::ExitCode {
    cli::stage("scan", |args: Args, config, work| {
        let d = ScanFiles::in_work(&work);
        let files = ScanFiles {
            model: args.model.or(d.model),
            valid: args.input.unwrap_or(d.valid),
            prune_sweep: args.prune_sweep.unwrap_or(d.prune_sweep),
            finetune_dir: args.finetune_dir.unwrap_or(d.finetune_dir),
            output_dir: args.output_dir.unwrap_or(d.output_dir),
        };
        Ok(run(&files, &config.table::<ScanConfig>()?, &Bars::new())?)
    })
}
