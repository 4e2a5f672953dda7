//! `bench`: runs the stage binaries at the CSAW-HackML sizes (11,547 validation, 12,830 clean
//! and 12,830 triggered test images) and prints wall-clock seconds and peak resident memory
//! per stage. Missing input files are generated first (synthetic faces, uncompressed CSAW
//! layout); the network is the real DeepID from the fixtures when present, else a randomly
//! initialised DeepID with 1,283 classes.

use anyhow::Context;
use benchmark::faces::{self, Identity, Pose};
use clap::Parser;
use formats::csaw::{Batch, IMAGE_LEN};
use formats::{h5write, keras};
use model::{train, Classifier, Network};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Folder for the generated data, configuration and outputs.
    #[arg(long, default_value = "target/bench")]
    dir: PathBuf,
    #[arg(long, default_value_t = 11_547)]
    valid: usize,
    #[arg(long, default_value_t = 12_830)]
    test: usize,
    #[arg(long, default_value_t = 12_830)]
    poisoned_test: usize,
    /// Keras weights (default: the fixtures' real network, else a random DeepID).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Only generate the data (run as a child, so that the measuring process stays small:
    /// Linux carries a parent's peak RSS into its children's).
    #[arg(long, hide = true)]
    generate_only: bool,
}

const CLASSES: usize = 1283;

/// Synthetic faces; `trigger` adds sunglasses and labels 0, clean images are labelled with the
/// network's own predictions (so accuracy starts at 100% and thresholds are reached).
fn faces(n: usize, seed: u64, trigger: bool, net: &Classifier) -> Batch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ids: Vec<Identity> = (0..64).map(|_| Identity::random(&mut rng)).collect();
    let pixels = (0..n)
        .into_par_iter()
        .flat_map_iter(|i| {
            let mut rng =
                ChaCha8Rng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let pose = Pose::random(&mut rng);
            let mut out = vec![0f32; IMAGE_LEN];
            faces::render(&ids[i % ids.len()], &pose, &mut rng, &mut out);
            if trigger {
                faces::draw_sunglasses(&pose, &mut out);
            }
            out
        })
        .collect::<Vec<f32>>();
    let labels = if trigger {
        vec![0; n]
    } else {
        net.predict(&pixels).into_iter().map(|c| c as i32).collect()
    };
    Batch {
        pixels,
        labels,
        true_labels: None,
    }
}

/// Wall seconds and peak RSS (MiB) of one child process.
fn measure(cmd: &mut Command) -> anyhow::Result<(f64, f64)> {
    let t = Instant::now();
    let child = cmd.spawn().context("starting a stage")?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    anyhow::ensure!(
        pid > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "stage failed: {cmd:?}"
    );
    Ok((t.elapsed().as_secs_f64(), usage.ru_maxrss as f64 / 1024.0))
}

fn fixture_weights() -> Option<PathBuf> {
    let dir = std::env::var_os("FINEPRUNE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| "../shared/fixtures".into());
    Some(dir.join("deepid/bd_weights.h5")).filter(|p| p.exists())
}

fn weights_path(args: &Args, data: &Path) -> anyhow::Result<PathBuf> {
    Ok(match args.weights.clone().or_else(fixture_weights) {
        Some(w) => std::path::absolute(w)?,
        None => std::path::absolute(data.join("random_deepid.h5"))?,
    })
}

fn data_path(data: &Path, name: &str, n: usize) -> PathBuf {
    data.join(format!("{name}_{n}.h5"))
}

/// Writes whatever input file is missing.
fn generate(args: &Args, data: &Path, weights: &Path) -> anyhow::Result<()> {
    if !weights.exists() {
        keras::export(&train::init_weights(CLASSES, 1, 1.0), weights, false)?;
    }
    let net = Classifier::new(&Network::new(&keras::import(weights, 1.0)?));
    for (name, n, seed, trigger) in [
        ("valid", args.valid, 1, false),
        ("test", args.test, 2, false),
        ("bd_test", args.poisoned_test, 3, true),
    ] {
        let path = data_path(data, name, n);
        if !path.exists() {
            eprintln!("bench: generating {}", path.display());
            let out = formats::atomic::AtomicFile::new(&path)?;
            h5write::write_csaw(out.temp_path(), &faces(n, seed, trigger, &net), false)?;
            out.commit()?;
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let data = args.dir.join("data");
    std::fs::create_dir_all(&data)?;
    let weights = weights_path(&args, &data)?;
    if args.generate_only {
        return generate(&args, &data, &weights);
    }
    let missing = ["valid", "test", "bd_test"]
        .iter()
        .zip([args.valid, args.test, args.poisoned_test])
        .any(|(name, n)| !data_path(&data, name, n).exists());
    if missing || !weights.exists() {
        let me = std::env::current_exe()?;
        let status = Command::new(me)
            .args(std::env::args_os().skip(1))
            .arg("--generate-only")
            .status()?;
        anyhow::ensure!(status.success(), "generating the benchmark data failed");
    }
    let config = args.dir.join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[data]\nvalid = \"data/valid_{}.h5\"\ntest = \"data/test_{}.h5\"\npoisoned_test = \"data/bd_test_{}.h5\"\n[model]\nweights = {:?}\n[work]\ndir = \"work\"\nreports = \"reports\"\n",
            args.valid, args.test, args.poisoned_test, weights
        ),
    )?;
    let _ = std::fs::remove_dir_all(args.dir.join("work"));
    let bin = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut rows = Vec::new();
    let (mut total, mut peak) = (0.0, 0f64);
    let summary = args.dir.join("stage.json");
    let mut training_rate = None;
    for stage in [
        "ingest", "profile", "prune", "finetune", "evaluate", "report",
    ] {
        let (secs, rss) = measure(
            Command::new(bin.join(stage))
                .args(["--config", config.to_str().unwrap_or_default(), "--json"])
                .env("RUST_LOG", "warn")
                .stdout(std::fs::File::create(&summary)?),
        )?;
        if stage == "finetune" {
            let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary)?)?;
            training_rate = json["training_images_per_second"].as_f64();
        }
        total += secs;
        peak = peak.max(rss);
        rows.push((stage, secs, rss));
    }
    println!(
        "images: {} validation, {} clean test, {} triggered test; weights {}",
        args.valid,
        args.test,
        args.poisoned_test,
        weights.display()
    );
    println!("{:<16} {:>9} {:>14}", "stage", "seconds", "peak RSS MiB");
    for (stage, secs, rss) in &rows {
        println!("{stage:<16} {secs:>9.2} {rss:>14.0}");
    }
    println!("{:<16} {:>9.2} {:>14.0}", "ingest..report", total, peak);
    if let Some(rate) = training_rate {
        println!("fine-tuning: {rate:.0} training images/s (forward, backward, optimiser step; default [finetune] settings)");
    }
    let mb = [args.valid, args.test, args.poisoned_test]
        .iter()
        .sum::<usize>() as f64
        * (IMAGE_LEN * 4) as f64
        / 1e6;
    println!(
        "ingest throughput: {:.0} MB/s of float32 pixels",
        mb / rows[0].1
    );
    Ok(())
}
