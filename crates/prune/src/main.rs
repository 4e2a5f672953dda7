//! `prune`: remove conv_3 channels one at a time in profile order, record validation accuracy
//! after each step (`work/prune/sweep.parquet`), and keep the pruned network B' at the first
//! step that loses each threshold (`work/prune/bd_net_prime_{T}_percent_threshold.safetensors`).

use clap::Parser;
use cli::progress::Bars;
use cli::{CommonArgs, ModelArgs};
use defense::config::{check_thresholds, PruneConfig};
use defense::prune::{run, PruneFiles};
use formats::paths::label;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    model: ModelArgs,
    /// Channel profile (default: `<work>/profile/activations.parquet`).
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Validation pool_3 activations (default: `<work>/profile/valid_pool_3.safetensors`).
    #[arg(long)]
    features: Option<PathBuf>,
    /// Output folder (default: `<work>/prune`).
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Thresholds in percentage points, comma-separated (overrides `[prune] thresholds`).
    #[arg(long, value_delimiter = ',')]
    thresholds: Option<Vec<f64>>,
}

cli::use_allocator!();

fn main() -> std::process::ExitCode {
    cli::stage("prune", |args: Args, config, work| {
        let t = Instant::now();
        let thresholds = match args.thresholds {
            Some(t) => {
                check_thresholds(&t).map_err(|m| cli::Usage(format!("--thresholds: {m}")))?;
                t
            }
            None => config.table::<PruneConfig>()?.thresholds,
        };
        let files = PruneFiles {
            model: args.model.path(&work),
            profile: args.profile.unwrap_or_else(|| work.activations()),
            features: args.features.unwrap_or_else(|| work.valid_pool_3()),
            output_dir: args.output_dir.unwrap_or_else(|| work.stage("prune")),
        };
        let s = run(&files, &thresholds, &Bars::new())?;
        let seconds = t.elapsed().as_secs_f64();
        if args.common.json {
            cli::print_json(&cli::with_seconds("prune", &s, seconds))?;
            return Ok(());
        }
        for m in &s.models {
            cli::outln!(
                "threshold {} points: {} channels pruned, validation accuracy {:.2}% -> {}",
                label(m.threshold_percent),
                m.channels_pruned,
                m.valid_accuracy,
                m.path.display()
            )?;
        }
        cli::outln!(
            "{} steps -> {} ({seconds:.2} s)",
            s.steps,
            s.output.display()
        )?;
        Ok(())
    })
}
