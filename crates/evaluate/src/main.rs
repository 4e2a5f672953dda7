//! `evaluate`: clean test accuracy and attack success rate of B, of B' after every pruning
//! step and at each threshold, and of the repaired G(B, B') -> `work/evaluate/sweep.parquet`
//! and `work/evaluate/summary.parquet`. With `--predictions`, scores any model pair on any
//! dataset image by image instead.

use clap::Parser;
use fineprune::cli::{self, CommonArgs, ModelArgs};
use fineprune::deepid::DeepId;
use fineprune::evaluate::{score, score_pair, summary_table, sweep_table, Labelled, SummaryRow};
use fineprune::features::{self, Features};
use fineprune::head::Head;
use fineprune::paths::{self, Split};
use fineprune::profile::check_same_model;
use fineprune::source::Images;
use fineprune::sweep::PruneSweep;
use fineprune::table::{Column, Table};
use fineprune::{deepid, metrics, progress, Error};
use std::path::{Path, PathBuf};
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
    /// Fine-pruned models, scored when present (default: `<work>/finetune`).
    #[arg(long)]
    finetune_dir: Option<PathBuf>,
    /// Output folder (default: `<work>/evaluate`).
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Per-image mode: the pruned or repaired model B' to compare with B.
    #[arg(long, requires_all = ["data", "predictions"])]
    pruned: Option<PathBuf>,
    /// Per-image mode: the dataset to score.
    #[arg(long, requires = "pruned")]
    data: Option<PathBuf>,
    /// Per-image mode: output Parquet (index, label, b, b_prime, g).
    #[arg(long, requires = "pruned")]
    predictions: Option<PathBuf>,
}

fineprune::use_allocator!();

fn main() -> std::process::ExitCode {
    cli::stage("evaluate", |args: Args, _config, work| {
        let model = args.model.path(&work);
        match (&args.pruned, &args.data, &args.predictions) {
            (Some(pruned), Some(data), Some(out)) => per_image(&args, &model, pruned, data, out),
            _ => sweep(&args, &work, &model),
        }
    })
}

fn extract(
    nets: &[&DeepId],
    path: &Path,
    classes: usize,
    what: &str,
) -> anyhow::Result<Vec<Features>> {
    let images = Images::open(path, classes)?;
    let bar = progress::bar(images.len() as u64, what);
    let f = features::extract_many(nets, images, &|n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    Ok(f)
}

/// Predicted classes from pool_3 activations.
fn classify(net: &DeepId, f: &Features) -> anyhow::Result<Vec<u32>> {
    Ok(Head::new(net)?.classify(&f.pool_3))
}

/// A fine-tuned network: unpruned (`threshold` None) or fine-pruned.
struct Tuned {
    threshold: Option<f64>,
    channels_pruned: usize,
    net: DeepId,
}

/// The unpruned fine-tuned model and the fine-pruned model of each threshold reached, where
/// `finetune` made them from this sweep.
fn finetuned(dir: &Path, prune: &PruneSweep) -> anyhow::Result<Vec<Tuned>> {
    let mut out = Vec::new();
    let wanted = std::iter::once((None, 0)).chain(
        prune
            .hits
            .iter()
            .filter_map(|h| h.channels_pruned.map(|k| (Some(h.threshold_percent), k))),
    );
    for (threshold, k) in wanted {
        let path = dir.join(match threshold {
            Some(t) => paths::finetuned_model_file(t),
            None => paths::FINETUNED_UNPRUNED.to_string(),
        });
        if !path.exists() {
            continue;
        }
        let (w, net) = deepid::load(&path)?;
        if w.pruned_channels() != prune.order[..k] {
            return Err(Error::invalid(
                &path,
                "was fine-tuned from a different pruning sweep; re-run finetune",
            )
            .into());
        }
        out.push(Tuned {
            threshold,
            channels_pruned: k,
            net,
        });
    }
    Ok(out)
}

fn labelled(f: &Features) -> Labelled<'_> {
    Labelled {
        labels: &f.labels,
        true_labels: f.true_labels.as_deref(),
    }
}

fn sweep(args: &Args, work: &fineprune::paths::WorkPaths, model: &Path) -> anyhow::Result<()> {
    let t = Instant::now();
    let sweep_path = args
        .prune_sweep
        .clone()
        .unwrap_or_else(|| work.prune_sweep());
    let test = args
        .test
        .clone()
        .unwrap_or_else(|| work.dataset(Split::Test));
    let poisoned = args
        .poisoned_test
        .clone()
        .unwrap_or_else(|| work.dataset(Split::PoisonedTest));
    let out_dir = args
        .output_dir
        .clone()
        .unwrap_or_else(|| work.stage("evaluate"));

    let (weights, net) = deepid::load(model)?;
    let prune = PruneSweep::read(&sweep_path)?;
    check_same_model(
        &sweep_path,
        &prune.model_fingerprint,
        &weights.fingerprint(),
    )?;
    let classes = weights.classes();
    let backdoor = classes as u32;
    let tuned = finetuned(
        &args
            .finetune_dir
            .clone()
            .unwrap_or_else(|| work.stage("finetune")),
        &prune,
    )?;
    let nets: Vec<&DeepId> = std::iter::once(&net)
        .chain(tuned.iter().map(|t| &t.net))
        .collect();
    let mut clean_all = extract(&nets, &test, classes, "test")?;
    let mut triggered_all = extract(&nets, &poisoned, classes, "poisoned")?;
    let (clean, triggered) = (clean_all.remove(0), triggered_all.remove(0));
    tracing::debug!("forward passes done at {:.2} s", t.elapsed().as_secs_f64());

    let head = Head::new(&net)?;
    let bar = progress::bar((clean.len() + triggered.len()) as u64, "sweep");
    let clean_steps = head.sweep(&clean.pool_3, &prune.order, &|n| bar.inc(n as u64));
    let poisoned_steps = head.sweep(&triggered.pool_3, &prune.order, &|n| bar.inc(n as u64));
    bar.finish_and_clear();
    tracing::debug!("pruning sweeps done at {:.2} s", t.elapsed().as_secs_f64());

    let (c, p) = (labelled(&clean), labelled(&triggered));
    let b = (clean_steps[0].as_slice(), poisoned_steps[0].as_slice());
    let steps: Vec<_> = clean_steps
        .iter()
        .zip(&poisoned_steps)
        .map(|(cs, ps)| score_pair(&c, &p, b, (cs, ps), backdoor))
        .collect();

    let mut rows = vec![SummaryRow {
        network: "backdoored".into(),
        threshold_percent: None,
        channels_pruned: 0,
        valid_accuracy: Some(prune.valid_accuracy[0]),
        scores: score(&c, b.0, &p, b.1),
    }];
    for hit in &prune.hits {
        let Some(k) = hit.channels_pruned else {
            continue;
        };
        for (network, scores) in [("pruned", &steps[k].0), ("repaired", &steps[k].1)] {
            rows.push(SummaryRow {
                network: network.into(),
                threshold_percent: Some(hit.threshold_percent),
                channels_pruned: k,
                valid_accuracy: Some(prune.valid_accuracy[k]),
                scores: scores.clone(),
            });
        }
    }

    for (tuned, (fc, fp)) in tuned.iter().zip(clean_all.iter().zip(&triggered_all)) {
        let f_pred = (classify(&tuned.net, fc)?, classify(&tuned.net, fp)?);
        let (fine, repaired) = score_pair(&c, &p, b, (&f_pred.0, &f_pred.1), backdoor);
        let network = match tuned.threshold {
            Some(_) => "fine_pruned",
            None => "fine_tuned",
        };
        for (network, scores) in [
            (network.to_string(), fine),
            (format!("repaired_{network}"), repaired),
        ] {
            rows.push(SummaryRow {
                network,
                threshold_percent: tuned.threshold,
                channels_pruned: tuned.channels_pruned,
                valid_accuracy: None,
                scores,
            });
        }
    }
    let sweep_out = out_dir.join("sweep.parquet");
    let summary_out = out_dir.join("summary.parquet");
    sweep_table(&prune.order, &prune.valid_accuracy, &steps).write(&sweep_out)?;
    summary_table(&rows).write(&summary_out)?;
    if args.common.json {
        cli::print_json(&serde_json::json!({
            "stage": "evaluate",
            "summary": rows,
            "outputs": [sweep_out, summary_out],
            "seconds": t.elapsed().as_secs_f64(),
        }));
    } else {
        for r in &rows {
            println!(
                "{:<12} {:>9} {:>2} channels: clean accuracy {:6.2}%, attack success {:6.2}%{}",
                r.network,
                r.threshold_percent
                    .map(|t| format!("{t} points"))
                    .unwrap_or_default(),
                r.channels_pruned,
                r.scores.clean_test_accuracy,
                r.scores.attack_success_rate,
                r.scores
                    .flagged_poisoned
                    .map(|f| format!(", flags {f:.2}% of triggered images"))
                    .unwrap_or_default()
            );
        }
        println!(
            "-> {}, {} ({:.2} s)",
            sweep_out.display(),
            summary_out.display(),
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Predictions of B, B' and G for every image of one dataset.
fn per_image(
    args: &Args,
    model: &Path,
    pruned: &Path,
    data: &Path,
    out: &Path,
) -> anyhow::Result<()> {
    let (weights, b) = deepid::load(model)?;
    let (pruned_weights, b_prime) = deepid::load(pruned)?;
    if pruned_weights.classes() != weights.classes() {
        return Err(Error::invalid(
            pruned,
            format!(
                "has {} classes, the backdoored model {}",
                pruned_weights.classes(),
                weights.classes()
            ),
        )
        .into());
    }
    let classes = weights.classes();
    let mut both = extract(&[&b, &b_prime], data, classes, "score")?;
    let (f, f_prime) = (both.remove(0), both.remove(0));
    let (pb, pp) = (classify(&b, &f)?, classify(&b_prime, &f_prime)?);
    let g = metrics::repaired(&pb, &pp, classes as u32);
    let ints = |v: &[u32]| Column::ints(v.iter().map(|&x| x as i32));
    let mut table = Table::new()
        .with("index", Column::ints(0..f.len() as i32))
        .with("label", Column::ints(f.labels.iter().copied()));
    if let Some(t) = &f.true_labels {
        table = table.with("true_label", Column::ints(t.iter().copied()));
    }
    table
        .with("b", ints(&pb))
        .with("b_prime", ints(&pp))
        .with("g", ints(&g))
        .meta("backdoor_label", classes.to_string())
        .write(out)?;
    let summary = serde_json::json!({
        "stage": "evaluate",
        "images": f.len(),
        "accuracy_b": metrics::accuracy(&pb, &f.labels),
        "accuracy_b_prime": metrics::accuracy(&pp, &f.labels),
        "accuracy_g": metrics::accuracy(&g, &f.labels),
        "flagged": metrics::flagged(&pb, &pp),
        "output": out,
    });
    if args.common.json {
        cli::print_json(&summary);
    } else {
        println!(
            "{} images: label agreement B {:.2}%, B' {:.2}%, G {:.2}%; G flags {:.2}% -> {}",
            f.len(),
            summary["accuracy_b"].as_f64().unwrap_or_default(),
            summary["accuracy_b_prime"].as_f64().unwrap_or_default(),
            summary["accuracy_g"].as_f64().unwrap_or_default(),
            summary["flagged"].as_f64().unwrap_or_default(),
            out.display()
        );
    }
    Ok(())
}
