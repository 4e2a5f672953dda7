//! `finetune`: trains each pruned network B' on the clean validation set, pruned channels held
//! at zero, and the unpruned network B with the same recipe ->
//! `work/finetune/bd_net_fineprune_{T}_percent_threshold.safetensors`,
//! `work/finetune/bd_net_finetuned.safetensors` and `work/finetune/models.json` (what was
//! trained, with which settings, how it went).

use clap::Parser;
use cli::progress::Bars;
use cli::ModelArgs;
use defense::config::FinetuneConfig;
use defense::finetune::{run, FinetuneFiles};
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Clean validation images (default: `<work>/ingest/valid.parquet`).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Folder of the pruned models and their sweep (default: `<work>/prune`).
    #[arg(long)]
    prune_dir: Option<PathBuf>,
    /// Output folder (default: `<work>/finetune`).
    #[arg(long)]
    output_dir: Option<PathBuf>,
}

cli::use_allocator!();

fn main() -> std::process::ExitCode {
    cli::stage("finetune", |args: Args, config, work| {
        let d = FinetuneFiles::in_work(&work);
        let files = FinetuneFiles {
            model: args.model.or(d.model),
            valid: args.input.unwrap_or(d.valid),
            prune_dir: args.prune_dir.unwrap_or(d.prune_dir),
            output_dir: args.output_dir.unwrap_or(d.output_dir),
        };
        Ok(run(
            &files,
            &config.table::<FinetuneConfig>()?,
            &Bars::new(),
        )?)
    })
}
