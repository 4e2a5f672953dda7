//! `synth`: draws the built-in backdoored face benchmark and trains a BadNet on it, writing
//! exactly the files a user would bring: `[data] valid`, `test`, `poisoned_test`, `bd_valid.h5`
//! beside them (CSAW layout) and `[model] weights` (Keras weights-only HDF5). The training
//! split stays in `<work>/synth/train.h5`. Files not written by `synth` are never overwritten.

use benchmark::{run, SynthConfig, SynthFiles};
use clap::Parser;
use cli::progress::Bars;
use cli::CommonArgs;
use std::time::Instant;

#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

cli::use_allocator!();

fn main() -> std::process::ExitCode {
    cli::stage("synth", |args: Args, config, work| {
        let t = Instant::now();
        let sc = config.table::<SynthConfig>()?;
        eprintln!(
            "synth: building the built-in synthetic benchmark: {} identities, {}",
            sc.identities,
            sc.describe()
        );
        let files = SynthFiles {
            valid: config.data.valid,
            test: config.data.test,
            poisoned_test: config.data.poisoned_test,
            weights: config.model.weights,
            input_scale: config.model.input_scale,
            work_dir: work.stage("synth"),
        };
        let s = run(&files, &sc, &Bars::new())?;
        let seconds = t.elapsed().as_secs_f64();
        if args.common.json {
            cli::print_json(&cli::with_seconds("synth", &s, seconds))?;
            return Ok(());
        }
        cli::outln!(
            "synthetic BadNet: clean test accuracy {:.2}%, attack success rate {:.2}% ({} training images, {:.1} s training, {seconds:.1} s total)",
            s.clean_test_accuracy, s.attack_success_rate, s.train_images, s.train_seconds
        )?;
        for p in &s.outputs {
            cli::outln!("{}", p.display())?;
        }
        Ok(())
    })
}
