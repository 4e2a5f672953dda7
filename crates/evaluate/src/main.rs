//! `evaluate`: clean test accuracy and attack success rate of B, of B' after every pruning
//! step and at each threshold, and of the repaired G(B, B') -> `work/evaluate/sweep.parquet`
//! and `work/evaluate/summary.parquet`. With `--predictions`, scores any model pair on any
//! dataset image by image instead.

use clap::Parser;
use fineprune::cli::{self, CommonArgs};
use fineprune::deepid::DeepId;
use fineprune::evaluate::{score, score_pair, summary_table, sweep_table, Labelled, SummaryRow};
use fineprune::features::{self, Features};
use fineprune::head::Head;
use fineprune::paths::Split;
use fineprune::profile::check_same_model;
use fineprune::source::Images;
use fineprune::sweep::{predictions_per_step, PruneSweep};
use fineprune::table::{Column, Table};
use fineprune::{deepid, metrics, progress, Error};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// The backdoored model B (default: `<work>/ingest/model.safetensors`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Prune sweep (default: `<work>/prune/sweep.parquet`).
    #[arg(long)]
    prune_sweep: Option<PathBuf>,
    /// Clean test images, Parquet or CSAW HDF5 (default: `<work>/ingest/test.parquet`).
    #[arg(long)]
    test: Option<PathBuf>,
    /// Triggered test images (default: `<work>/ingest/poisoned_test.parquet`).
    #[arg(long)]
    poisoned_test: Option<PathBuf>,
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

#[global_allocator]
static ALLOCATOR: fineprune::MiMalloc = fineprune::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::run("evaluate", || {
        let args = Args::parse();
        let config = args.common.load()?;
        let work = cli::work_paths(&config);
        let model = args.model.clone().unwrap_or_else(|| work.model());
        match (&args.pruned, &args.data, &args.predictions) {
            (Some(pruned), Some(data), Some(out)) => per_image(&args, &model, pruned, data, out),
            _ => sweep(&args, &work, &model),
        }
    })
}

fn extract(net: &DeepId, path: &Path, classes: usize, what: &str) -> anyhow::Result<Features> {
    let images = Images::open(path, classes)?;
    let bar = progress::bar(images.len() as u64, what);
    let f = features::extract(net, images, &|n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    Ok(f)
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
    let clean = extract(&net, &test, classes, "test")?;
    let triggered = extract(&net, &poisoned, classes, "poisoned")?;

    let head = Head::new(&net)?;
    let bar = progress::bar(2 * prune.order.len() as u64, "sweep");
    let clean_steps =
        predictions_per_step(&head, clean.pool_3.clone(), &prune.order, &|| bar.inc(1))?;
    let poisoned_steps =
        predictions_per_step(&head, triggered.pool_3.clone(), &prune.order, &|| {
            bar.inc(1)
        })?;
    bar.finish_and_clear();

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
    let predict = |net: &DeepId, what| -> anyhow::Result<(Features, Vec<u32>)> {
        let f = extract(net, data, classes, what)?;
        let head = Head::new(net)?;
        let pred = head.classify(&head.linear(&f.pool_3)?)?;
        Ok((f, pred))
    };
    let (f, pb) = predict(&b, "B")?;
    let (_, pp) = predict(&b_prime, "B'")?;
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
