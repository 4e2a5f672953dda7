//! `synth`: draws the built-in backdoored face benchmark and trains a BadNet on it, writing
//! exactly the files a user would bring: `[data] valid`, `test`, `poisoned_test`, `bd_valid.h5`
//! beside them (CSAW layout) and `[model] weights` (Keras weights-only HDF5). The training
//! split stays in `<work>/synth/train.h5`. Files not written by `synth` are never overwritten.

use anyhow::Context;
use clap::Parser;
use fineprune::cli::{self, CommonArgs};
use fineprune::csaw::Batch;
use fineprune::deepid::DeepId;
use fineprune::synth::{generate, is_synthetic, poisoned_valid_path};
use fineprune::train::{self, Examples, Recipe, Subset};
use fineprune::{atomic::AtomicFile, h5write, keras, progress, Error};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

fn write_h5(path: &std::path::Path, batch: &Batch) -> anyhow::Result<()> {
    let out = AtomicFile::new(path)?;
    h5write::write_csaw(out.temp_path(), batch, true).map_err(|e| Error::hdf5(path, e))?;
    out.commit()?;
    Ok(())
}

fineprune::use_allocator!();

fn main() -> std::process::ExitCode {
    cli::stage("synth", |args: Args, config, _work| {
        let sc = &config.synth;
        let t = Instant::now();
        let outputs: Vec<PathBuf> = vec![
            config.data.valid.clone(),
            config.data.test.clone(),
            config.data.poisoned_test.clone(),
            poisoned_valid_path(&config),
            config.model.weights.clone(),
        ];
        for p in &outputs {
            if p.exists() && !is_synthetic(p) {
                return Err(Error::invalid(
                    p,
                    "exists and was not made by synth: refusing to overwrite user data",
                )
                .into());
            }
        }
        eprintln!(
            "synth: building the built-in synthetic benchmark: {} identities, {:.0}% of the training set poisoned with a {} trigger -> label {}",
            sc.identities,
            sc.poison_fraction * 100.0,
            sc.attack.name(),
            sc.target
        );
        let bench = generate(sc);
        let generated_s = t.elapsed().as_secs_f64();

        // Whole epochs of mini-batch steps.
        let steps = sc.epochs * bench.train.len().div_ceil(sc.batch_size);
        let recipe = Recipe::plain(steps, sc.batch_size, sc.learning_rate, sc.seed);
        let init = train::init_weights(sc.identities, sc.seed, config.model.input_scale);
        let bar = progress::bar(
            (steps * sc.batch_size.min(bench.train.len())) as u64,
            "train",
        );
        let mut log = |c: &train::Checkpoint| {
            let line = format!(
                "step {}/{steps}: loss {:.4}, training accuracy {:.2}%",
                c.step, c.loss, c.train_accuracy
            );
            bar.set_prefix(line.clone());
            tracing::info!("{line}");
        };
        let t_train = Instant::now();
        let train::Fitted {
            weights, history, ..
        } = train::fit(
            &init,
            &Subset::all(&bench.train),
            None,
            &recipe,
            &[],
            &mut log,
            &|n| bar.inc(n as u64),
        )?;
        bar.finish_and_clear();
        let train_s = t_train.elapsed().as_secs_f64();

        let net = DeepId::new(&weights, &candle_core::Device::Cpu)?;
        let examples = |b: &Batch| Examples {
            pixels: b.pixels.clone(),
            labels: b.labels.iter().map(|&l| l as u32).collect(),
        };
        let (test, poisoned_test) = (examples(&bench.test), examples(&bench.poisoned_test));
        let clean_accuracy = train::accuracy(&net, &Subset::all(&test))?;
        let attack_success = train::accuracy(&net, &Subset::all(&poisoned_test))?;

        let work = config.work.dir.join("synth");
        let train_batch = Batch {
            pixels: bench.train.pixels.clone(),
            labels: bench.train.labels.iter().map(|&l| l as i32).collect(),
            true_labels: None,
        };
        write_h5(&work.join("train.h5"), &train_batch)?;
        for (path, batch) in outputs.iter().zip([
            &bench.valid,
            &bench.test,
            &bench.poisoned_test,
            &bench.poisoned_valid,
        ]) {
            write_h5(path, batch).with_context(|| format!("writing {}", path.display()))?;
        }
        let summary = serde_json::json!({
            "stage": "synth",
            "identities": sc.identities,
            "attack": sc.attack,
            "images": {
                "train": bench.train.len(),
                "poisoned_train": bench.poisoned.iter().filter(|p| **p).count(),
                "valid": bench.valid.len(),
                "test": bench.test.len(),
                "poisoned_test": bench.poisoned_test.len(),
            },
            "clean_test_accuracy": clean_accuracy,
            "attack_success_rate": attack_success,
            "training": history,
        });
        // Timings stay out of the file so that equal settings give equal bytes.
        fineprune::atomic::write_bytes(
            &work.join("metrics.json"),
            serde_json::to_string_pretty(&summary)?.as_bytes(),
        )?;
        let mut summary = summary;
        summary["seconds"] = serde_json::json!({"generate": generated_s, "train": train_s});
        keras::export(&weights, &config.model.weights, true)?;
        if args.common.json {
            cli::print_json(&summary);
        } else {
            println!(
                "synthetic BadNet: clean test accuracy {clean_accuracy:.2}%, attack success rate {attack_success:.2}% ({} training images, {:.1} s training, {:.1} s total)",
                bench.train.len(),
                train_s,
                t.elapsed().as_secs_f64()
            );
            for p in &outputs {
                println!("{}", p.display());
            }
        }
        Ok(())
    })
}
