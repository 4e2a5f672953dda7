//! `finetune`: trains each pruned network B' (one per threshold reached) on the clean
//! validation set, with a held-out share for early stopping, keeping the pruned conv_3
//! channels exactly zero -> `work/finetune/bd_net_fineprune_{T}_percent_threshold.safetensors`
//! and `work/finetune/models.json` (what was trained, with which settings, how it went).

use clap::Parser;
use fineprune::cli::{self, CommonArgs, ModelArgs};
use fineprune::config::FinetuneConfig;
use fineprune::paths::{self, Split};
use fineprune::profile::check_same_model;
use fineprune::source::Images;
use fineprune::sweep::PruneSweep;
use fineprune::train::{self, Examples, Settings};
use fineprune::weights::DeepIdWeights;
use fineprune::{progress, Error};
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

/// The settings as recorded in each model's metadata.
fn settings_json(c: &FinetuneConfig) -> String {
    serde_json::to_string(c).expect("settings serialize")
}

fn main() -> std::process::ExitCode {
    cli::stage("finetune", |args: Args, config, work| {
        let ft = &config.finetune;
        let t = Instant::now();
        let model = args.model.path(&work);
        let input = args.input.unwrap_or_else(|| work.dataset(Split::Valid));
        let prune_dir = args.prune_dir.unwrap_or_else(|| work.stage("prune"));
        let out_dir = args.output_dir.unwrap_or_else(|| work.stage("finetune"));
        let sweep_path = prune_dir.join("sweep.parquet");

        let backdoored = DeepIdWeights::load(&model)?;
        let sweep = PruneSweep::read(&sweep_path)?;
        check_same_model(
            &sweep_path,
            &sweep.model_fingerprint,
            &backdoored.fingerprint(),
        )?;
        let valid = Images::open(&input, backdoored.classes())?.read_all()?;
        let data = Examples {
            labels: valid.labels.iter().map(|&l| l as u32).collect(),
            pixels: valid.pixels,
        };
        if data.len() < 2 {
            return Err(
                Error::invalid(&input, "fine-tuning needs at least 2 validation images").into(),
            );
        }
        let (train_set, holdout) = data.split(ft.holdout, ft.seed);
        let settings = Settings {
            epochs: ft.epochs,
            batch_size: ft.batch_size,
            learning_rate: ft.learning_rate,
            optimizer: ft.optimizer,
            seed: ft.seed,
            patience: 2,
        };

        let reached: Vec<_> = sweep
            .hits
            .iter()
            .filter(|h| h.channels_pruned.is_some())
            .collect();
        let keep: Vec<PathBuf> = reached
            .iter()
            .map(|h| out_dir.join(paths::finetuned_model_file(h.threshold_percent)))
            .collect();
        paths::remove_stale(&out_dir, paths::FINETUNED_PREFIX, &keep)?;
        let mut records = Vec::new();
        for (hit, out) in reached.iter().zip(&keep) {
            let label = paths::label(hit.threshold_percent);
            let pruned_path = prune_dir.join(paths::pruned_model_file(hit.threshold_percent));
            let pruned = DeepIdWeights::load(&pruned_path)?;
            let channels = pruned.pruned_channels();
            let bar = progress::bar((train_set.len() * ft.epochs) as u64, &format!("{label} pt"));
            let mut log = |e: &train::Epoch| {
                let line = format!(
                    "threshold {label}: epoch {}/{}: loss {:.4}, training accuracy {:.2}%, held-out accuracy {:.2}%",
                    e.epoch,
                    ft.epochs,
                    e.loss,
                    e.train_accuracy,
                    e.holdout_accuracy.unwrap_or_default()
                );
                bar.set_prefix(line.clone());
                tracing::info!("{line}");
            };
            let (mut tuned, history) = train::train(
                &pruned,
                &train_set,
                Some(&holdout),
                &settings,
                &channels,
                &mut log,
                &|n| bar.inc(n as u64),
            )?;
            bar.finish_and_clear();
            let extra = &mut tuned.provenance.extra;
            extra.insert("pruned_channels".into(), serde_json::to_string(&channels)?);
            extra.insert("threshold_percent".into(), label.clone());
            extra.insert("finetune".into(), settings_json(ft));
            extra.insert(
                "finetuned_from".into(),
                paths::pruned_model_file(hit.threshold_percent),
            );
            tuned.save(out)?;
            let best = history
                .iter()
                .filter_map(|e| e.holdout_accuracy)
                .fold(f64::NAN, f64::max);
            if !args.common.json {
                println!(
                    "threshold {label} points: {} channels pruned, {} epochs, held-out accuracy {best:.2}% -> {}",
                    channels.len(),
                    history.len(),
                    out.display()
                );
            }
            records.push(serde_json::json!({
                "threshold_percent": hit.threshold_percent,
                "channels_pruned": channels.len(),
                "model": paths::finetuned_model_file(hit.threshold_percent),
                "holdout_accuracy": best,
                "epochs": history,
            }));
        }
        let manifest = serde_json::json!({
            "settings": ft,
            "train_images": train_set.len(),
            "holdout_images": holdout.len(),
            "models": records,
        });
        fineprune::atomic::write_bytes(
            &out_dir.join("models.json"),
            serde_json::to_string_pretty(&manifest)?.as_bytes(),
        )?;
        if args.common.json {
            cli::print_json(&serde_json::json!({
                "stage": "finetune",
                "models": manifest["models"],
                "seconds": t.elapsed().as_secs_f64(),
            }));
        }
        Ok(())
    })
}

fineprune::use_allocator!();
