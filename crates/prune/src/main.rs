//! `prune`: remove conv_3 channels one at a time in profile order, record validation accuracy
//! after each step (`work/prune/sweep.parquet`), and keep the pruned network B' at the first
//! step that loses each threshold (`work/prune/bd_net_prime_{T}_percent_threshold.safetensors`).

use clap::Parser;
use cli::progress::Bars;
use cli::ModelArgs;
use defense::config::{check_thresholds, PruneConfig};
use defense::prune::{run, PruneFiles};
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about)]
struct Args {
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
        let thresholds = match args.thresholds {
            Some(t) => {
                check_thresholds(&t).map_err(|m| cli::Usage(format!("--thresholds: {m}")))?;
                t
            }
            None => config.table::<PruneConfig>()?.thresholds,
        };
        let d = PruneFiles::in_work(&work);
        let files = PruneFiles {
            model: args.model.or(d.model),
            profile: args.profile.unwrap_or(d.profile),
            features: args.features.unwrap_or(d.features),
            output_dir: args.output_dir.unwrap_or(d.output_dir),
        };
        Ok(run(&files, &thresholds, &Bars::new())?)
    })
}
