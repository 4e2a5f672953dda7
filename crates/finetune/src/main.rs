//! `finetune`: trains each pruned network B' (one per threshold reached; thresholds that
//! prune the same channels share one run) on the clean validation set, keeping the pruned
//! conv_3 channels exactly zero, and, unless `[finetune] unpruned = false`, the unpruned
//! network B with the same recipe, for the comparison the paper makes ->
//! `work/finetune/bd_net_fineprune_{T}_percent_threshold.safetensors`,
//! `work/finetune/bd_net_finetuned.safetensors` and `work/finetune/models.json` (what was
//! trained, with which settings, how it went).

use clap::Parser;
use fineprune::cli::{self, CommonArgs, ModelArgs};
use fineprune::paths::{self, Split};
use fineprune::profile::check_same_model;
use fineprune::source::Images;
use fineprune::sweep::PruneSweep;
use fineprune::train::{self, Examples, Recipe};
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

/// One network to fine-tune and the files it becomes.
struct Job {
    /// `None` for the unpruned network.
    channels_pruned: Option<usize>,
    thresholds: Vec<f64>,
    source: PathBuf,
    outputs: Vec<PathBuf>,
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
        let recipe = Recipe::finetune(ft);

        // Thresholds that prune the same number of channels prune the same network.
        let mut jobs: Vec<Job> = Vec::new();
        for hit in &sweep.hits {
            let Some(k) = hit.channels_pruned else {
                continue;
            };
            let out = out_dir.join(paths::finetuned_model_file(hit.threshold_percent));
            match jobs.iter_mut().find(|j| j.channels_pruned == Some(k)) {
                Some(j) => {
                    j.thresholds.push(hit.threshold_percent);
                    j.outputs.push(out);
                }
                None => jobs.push(Job {
                    channels_pruned: Some(k),
                    thresholds: vec![hit.threshold_percent],
                    source: prune_dir.join(paths::pruned_model_file(hit.threshold_percent)),
                    outputs: vec![out],
                }),
            }
        }
        if ft.unpruned {
            jobs.push(Job {
                channels_pruned: None,
                thresholds: Vec::new(),
                source: model.clone(),
                outputs: vec![out_dir.join(paths::FINETUNED_UNPRUNED)],
            });
        }
        let keep: Vec<PathBuf> = jobs.iter().flat_map(|j| j.outputs.clone()).collect();
        paths::remove_stale(&out_dir, paths::FINETUNED_PREFIX, &keep)?;
        if !ft.unpruned {
            paths::remove_stale(&out_dir, paths::FINETUNED_UNPRUNED, &[])?;
        }

        let mut records = Vec::new();
        let (mut trained_images, mut training_s) = (0usize, 0f64);
        for job in &jobs {
            let name = match job.channels_pruned {
                Some(_) => format!(
                    "threshold {} pt",
                    job.thresholds
                        .iter()
                        .map(|t| paths::label(*t))
                        .collect::<Vec<_>>()
                        .join("/")
                ),
                None => "unpruned".to_string(),
            };
            let mut start = DeepIdWeights::load(&job.source)?;
            let channels = start.pruned_channels();
            if job
                .channels_pruned
                .is_some_and(|k| channels != sweep.order[..k])
            {
                return Err(Error::invalid(
                    &job.source,
                    "was not pruned by this sweep; re-run prune",
                )
                .into());
            }
            train::reinitialise(&mut start, &ft.reinit, ft.seed);
            let batch = ft.batch_size.min(train_set.len());
            let bar = progress::bar((ft.steps * batch) as u64, &name);
            let t_job = Instant::now();
            let mut log = |c: &train::Checkpoint| {
                let line = format!(
                    "{name}: step {}/{}: loss {:.4}, training accuracy {:.2}%{}",
                    c.step,
                    ft.steps,
                    c.loss,
                    c.train_accuracy,
                    c.holdout_accuracy
                        .map(|a| format!(", held-out accuracy {a:.2}%"))
                        .unwrap_or_default()
                );
                bar.set_prefix(line.clone());
                tracing::info!("{line}");
            };
            let train::Fitted {
                weights: mut tuned,
                history,
                step_seconds,
            } = train::fit(
                &start,
                &train_set,
                (!holdout.is_empty()).then_some(&holdout),
                &recipe,
                &channels,
                &mut log,
                &|n| bar.inc(n as u64),
            )?;
            bar.finish_and_clear();
            (trained_images, training_s) =
                (trained_images + ft.steps * batch, training_s + step_seconds);
            tracing::info!(
                "{name}: {:.1} s, of which {step_seconds:.1} s training steps ({:.0} images/s)",
                t_job.elapsed().as_secs_f64(),
                (ft.steps * batch) as f64 / step_seconds
            );
            let source_name = job
                .source
                .file_name()
                .map(|f| f.to_string_lossy().into_owned());
            let extra = &mut tuned.provenance.extra;
            extra.insert("pruned_channels".into(), serde_json::to_string(&channels)?);
            extra.insert("finetune".into(), serde_json::to_string(ft)?);
            extra.insert("finetuned_from".into(), source_name.unwrap_or_default());
            let thresholds: Vec<Option<f64>> = match job.channels_pruned {
                Some(_) => job.thresholds.iter().map(|&t| Some(t)).collect(),
                None => vec![None],
            };
            for (threshold, out) in thresholds.iter().zip(&job.outputs) {
                match threshold {
                    Some(t) => tuned
                        .provenance
                        .extra
                        .insert("threshold_percent".into(), paths::label(*t)),
                    None => tuned.provenance.extra.remove("threshold_percent"),
                };
                tuned.save(out)?;
                if !args.common.json {
                    println!(
                        "{name}: {} channels pruned, {} steps, held-out accuracy {} -> {}",
                        channels.len(),
                        ft.steps,
                        history
                            .last()
                            .and_then(|c| c.holdout_accuracy)
                            .map(|a| format!("{a:.2}%"))
                            .unwrap_or_else(|| "n/a".into()),
                        out.display()
                    );
                }
            }
            records.push(serde_json::json!({
                "thresholds_percent": job.thresholds,
                "channels_pruned": channels.len(),
                "models": job.outputs.iter().map(|o| o.file_name().map(|f| f.to_string_lossy().into_owned())).collect::<Vec<_>>(),
                "checkpoints": history,
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
                "train_images": train_set.len(),
                // Images through forward, backward and optimiser step, per second of training.
                "training_images_per_second": trained_images as f64 / training_s.max(1e-9),
                "seconds": t.elapsed().as_secs_f64(),
            }));
        }
        Ok(())
    })
}

fineprune::use_allocator!();
