//! `profile`: mean activation of every conv_3 channel over the clean validation set ->
//! `work/profile/activations.parquet`, plus the validation pool_3 activations
//! (`work/profile/valid_pool_3.safetensors`) so `prune` need not recompute them.

use clap::Parser;
use fineprune::cli::{self, CommonArgs, ModelArgs};
use fineprune::features::{self, POOL3_LEN};
use fineprune::paths::Split;
use fineprune::profile::{statistic_name, Profile};
use fineprune::source::Images;
use fineprune::{deepid, progress};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    model: ModelArgs,
    /// Clean validation images, Parquet or CSAW HDF5 (default: `<work>/ingest/valid.parquet`).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Channel table (default: `<work>/profile/activations.parquet`).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Validation pool_3 activations (default: `<work>/profile/valid_pool_3.safetensors`).
    #[arg(long)]
    features_output: Option<PathBuf>,
}

fineprune::use_allocator!();

fn main() -> std::process::ExitCode {
    cli::stage("profile", |args: Args, config, paths| {
        let t = Instant::now();
        let model = args.model.path(&paths);
        let input = args.input.unwrap_or_else(|| paths.dataset(Split::Valid));
        let output = args.output.unwrap_or_else(|| paths.activations());
        let features_output = args.features_output.unwrap_or_else(|| paths.valid_pool_3());

        let (weights, net) = deepid::load(&model)?;
        let images = Images::open(&input, weights.classes())?;
        let bar = progress::bar(images.len() as u64, "profile");
        let features = features::extract(&net, images, &|n| bar.inc(n as u64))?;
        bar.finish_and_clear();
        let fingerprint = weights.fingerprint();
        let profile = Profile::new(
            &features.stats,
            config.profile.statistic,
            fingerprint.clone(),
        );
        features.save(&features_output, &fingerprint)?;
        profile.write(&output)?;

        let dormant = profile.pool_3_mean.iter().filter(|m| **m == 0.0).count();
        let seconds = t.elapsed().as_secs_f64();
        if args.common.json {
            cli::print_json(&serde_json::json!({
                "stage": "profile",
                "images": features.len(),
                "statistic": statistic_name(profile.statistic),
                "order": profile.order,
                "dormant_channels": dormant,
                "outputs": [output, features_output],
                "seconds": seconds,
            }));
        } else {
            println!(
                "{} images -> {}: {} of {} channels never active; pruning order {:?}... ({}, {:.2} s)",
                features.len(),
                output.display(),
                dormant,
                profile.order.len(),
                &profile.order[..profile.order.len().min(8)],
                statistic_name(profile.statistic),
                seconds
            );
        }
        debug_assert_eq!(features.pool_3.len(), features.len() * POOL3_LEN);
        Ok(())
    })
}
