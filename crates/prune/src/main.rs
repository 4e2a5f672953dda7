//! `prune`: remove conv_3 channels one at a time in profile order, record validation accuracy
//! after each step (`work/prune/sweep.parquet`), and keep the pruned network B' at the first
//! step that loses each threshold (`work/prune/bd_net_prime_{T}_percent_threshold.safetensors`).

use clap::Parser;
use fineprune::cli::{self, CommonArgs, ModelArgs};
use fineprune::config::check_thresholds;
use fineprune::features::Features;
use fineprune::head::Head;
use fineprune::profile::{check_same_model, Profile};
use fineprune::sweep::{thresholds_reached, PruneSweep};
use fineprune::{deepid, metrics, paths, progress, Error};
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

fineprune::use_allocator!();

fn main() -> std::process::ExitCode {
    cli::stage("prune", |args: Args, config, work| {
        let t = Instant::now();
        let thresholds = args.thresholds.unwrap_or(config.prune.thresholds.clone());
        check_thresholds(&thresholds).map_err(|message| Error::Config {
            path: config.source.clone(),
            message,
        })?;
        let model = args.model.path(&work);
        let profile_path = args.profile.unwrap_or_else(|| work.activations());
        let features_path = args.features.unwrap_or_else(|| work.valid_pool_3());
        let out_dir = args.output_dir.unwrap_or_else(|| work.stage("prune"));
        let sweep_path = out_dir.join("sweep.parquet");

        let (weights, net) = deepid::load(&model)?;
        let fingerprint = weights.fingerprint();
        let profile = Profile::read(&profile_path)?;
        check_same_model(&profile_path, &profile.model_fingerprint, &fingerprint)?;
        let features = Features::load(&features_path, &fingerprint)?;
        if features.is_empty() {
            return Err(Error::invalid(&features_path, "the validation set is empty").into());
        }

        let head = Head::new(&net)?;
        let bar = progress::bar(features.len() as u64, "prune");
        let steps = head.sweep(&features.pool_3, &profile.order, &|n| bar.inc(n as u64));
        bar.finish_and_clear();
        let valid_accuracy: Vec<f64> = steps
            .iter()
            .map(|p| metrics::accuracy(p, &features.labels))
            .collect();
        let hits = thresholds_reached(&valid_accuracy, &thresholds);

        let model_path = |t| out_dir.join(paths::pruned_model_file(t));
        let keep: Vec<PathBuf> = hits
            .iter()
            .filter(|h| h.channels_pruned.is_some())
            .map(|h| model_path(h.threshold_percent))
            .collect();
        paths::remove_stale(&out_dir, paths::PRUNED_PREFIX, &keep)?;
        for hit in &hits {
            let path = model_path(hit.threshold_percent);
            match hit.channels_pruned {
                Some(k) => {
                    let channels = &profile.order[..k];
                    let mut pruned = weights.clone();
                    pruned.prune_conv3(channels);
                    pruned
                        .provenance
                        .extra
                        .insert("pruned_channels".into(), serde_json::to_string(channels)?);
                    pruned.provenance.extra.insert(
                        "threshold_percent".into(),
                        paths::label(hit.threshold_percent),
                    );
                    pruned.save(&path)?;
                    if !args.common.json {
                        println!(
                            "threshold {} points: {} channels pruned, validation accuracy {:.2}% -> {}",
                            paths::label(hit.threshold_percent),
                            k,
                            valid_accuracy[k],
                            path.display()
                        );
                    }
                }
                None => {
                    tracing::warn!(
                        "threshold {} points never reached: pruning every channel leaves validation accuracy at {:.2}% (from {:.2}%)",
                        paths::label(hit.threshold_percent),
                        valid_accuracy.last().copied().unwrap_or_default(),
                        valid_accuracy[0]
                    );
                }
            }
        }
        let sweep = PruneSweep {
            order: profile.order.clone(),
            valid_accuracy,
            hits,
            model_fingerprint: fingerprint,
        };
        sweep.write(&sweep_path)?;
        if args.common.json {
            cli::print_json(&serde_json::json!({
                "stage": "prune",
                "valid_accuracy_unpruned": sweep.valid_accuracy[0],
                "thresholds": sweep.hits,
                "output": sweep_path,
                "seconds": t.elapsed().as_secs_f64(),
            }));
        } else {
            println!(
                "{} steps -> {} ({:.2} s)",
                sweep.order.len(),
                sweep_path.display(),
                t.elapsed().as_secs_f64()
            );
        }
        Ok(())
    })
}
