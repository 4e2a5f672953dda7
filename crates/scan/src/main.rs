//! `scan`: from clean validation images only, Neural Cleanse's trigger inversion on B and on
//! every network finetune made -> `work/scan/<network>.parquet` (per label: mask L1, anomaly
//! index, the inverted trigger's success on held-out images), `work/scan/<network>_trigger.safetensors`
//! (the most anomalous label's trigger) and `work/scan/summary.parquet` (per network: the
//! flagged label and the estimated residual attack success).

use clap::Parser;
use cli::progress::Bars;
use cli::{CommonArgs, ModelArgs};
use defense::config::ScanConfig;
use defense::scan::{run, ScanFiles};
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
        let t = Instant::now();
        let files = ScanFiles {
            model: args.model.path(&work),
            valid: args.input.unwrap_or_else(|| work.dataset(Split::Valid)),
            prune_sweep: args.prune_sweep.unwrap_or_else(|| work.prune_sweep()),
            finetune_dir: args.finetune_dir.unwrap_or_else(|| work.stage("finetune")),
            output_dir: args.output_dir.unwrap_or_else(|| work.stage("scan")),
        };
        let s = run(&files, &config.table::<ScanConfig>()?, &Bars::new())?;
        let seconds = t.elapsed().as_secs_f64();
        if args.common.json {
            cli::print_json(&cli::with_seconds("scan", &s, seconds))?;
            return Ok(());
        }
        for r in &s.rows {
            cli::outln!(
                "{:<20} top label {:>5} (anomaly index {:5.2}{}), mask L1 {:7.1}; estimated attack success of B's trigger {} ({} labels inverted)",
                r.network,
                r.top_label,
                r.anomaly_index,
                if r.flagged { ", FLAGGED" } else { "" },
                r.mask_l1,
                r.estimated_attack_success
                    .map_or("n/a (B not flagged)".into(), |e| format!("{e:.2}%")),
                r.labels_inverted
            )?;
        }
        cli::outln!(
            "-> {} ({seconds:.2} s)",
            s.outputs.last().expect("the summary").display()
        )?;
        Ok(())
    })
}
