//! `finetune`: trains each pruned network B' on the clean validation set, pruned channels held
//! at zero, and the unpruned network B with the same recipe ->
//! `work/finetune/bd_net_fineprune_{T}_percent_threshold.safetensors`,
//! `work/finetune/bd_net_finetuned.safetensors` and `work/finetune/models.json` (what was
//! trained, with which settings, how it went).

use clap::Parser;
use cli::progress::Bars;
use cli::{CommonArgs, ModelArgs};
use defense::config::FinetuneConfig;
use defense::finetune::{run, FinetuneFiles};
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
        let t = Instant::now();
        let ft = config.table::<FinetuneConfig>()?;
        let files = FinetuneFiles {
            model: args.model.path(&work),
            valid: args.input.unwrap_or_else(|| work.dataset(Split::Valid)),
            prune_dir: args.prune_dir.unwrap_or_else(|| work.stage("prune")),
            output_dir: args.output_dir.unwrap_or_else(|| work.stage("finetune")),
        };
        let s = run(&files, &ft, &Bars::new())?;
        if args.common.json {
            let seconds = t.elapsed().as_secs_f64();
            cli::print_json(&cli::with_seconds("finetune", &s, seconds))?;
            return Ok(());
        }
        for m in &s.models {
            let held_out = m.checkpoints.last().and_then(|c| c.holdout_accuracy);
            for out in &m.models {
                cli::outln!(
                    "{}: {} channels pruned, {} steps, held-out accuracy {} -> {}",
                    m.name,
                    m.channels_pruned,
                    ft.steps,
                    held_out.map_or("n/a".into(), |a| format!("{a:.2}%")),
                    out.display()
                )?;
            }
        }
        Ok(())
    })
}
