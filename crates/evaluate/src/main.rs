//! `evaluate`: clean test accuracy and attack success rate of B, of B' after every pruning
//! step and at each threshold, of the fine-tuned networks, and of the repaired G(B, B') ->
//! `work/evaluate/sweep.parquet`, `work/evaluate/targets.parquet` (attack success per target
//! label) and `work/evaluate/summary.parquet`. (`predict` gives the answers of B, B' and G
//! image by image.)

use clap::Parser;
use cli::progress::Bars;
use cli::{CommonArgs, ModelArgs};
use defense::evaluate::{run, EvaluateFiles};
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
        let t = Instant::now();
        let model = args.model.path(&work);
        let json = args.common.json;
        let files = EvaluateFiles {
            model,
            prune_sweep: args.prune_sweep.unwrap_or_else(|| work.prune_sweep()),
            test: args.test.unwrap_or_else(|| work.dataset(Split::Test)),
            poisoned_test: args
                .poisoned_test
                .unwrap_or_else(|| work.dataset(Split::PoisonedTest)),
            finetune_dir: args.finetune_dir.unwrap_or_else(|| work.stage("finetune")),
            output_dir: args.output_dir.unwrap_or_else(|| work.stage("evaluate")),
        };
        let s = run(&files, &Bars::new())?;
        let seconds = t.elapsed().as_secs_f64();
        if json {
            cli::print_json(&cli::with_seconds("evaluate", &s, seconds))?;
            return Ok(());
        }
        for r in &s.summary {
            let threshold = r
                .threshold_percent
                .map(|t| format!("{t} points"))
                .unwrap_or_default();
            let flags = r
                .scores
                .flagged_poisoned
                .map(|f| format!(", flags {f:.2}% of triggered images"));
            cli::outln!(
                "{:<12} {threshold:>9} {:>2} channels: clean accuracy {:6.2}%, attack success {:6.2}%{}",
                r.network.as_str(),
                r.channels_pruned,
                r.scores.clean_test_accuracy,
                r.scores.attack_success_rate,
                flags.unwrap_or_default()
            )?;
        }
        let [sweep, targets, summary] = &s.outputs;
        cli::outln!(
            "-> {}, {}, {} ({seconds:.2} s)",
            sweep.display(),
            targets.display(),
            summary.display()
        )?;
        Ok(())
    })
}
