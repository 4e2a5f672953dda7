//! `synth`: draws the built-in backdoored face benchmark and trains a BadNet on it, writing
//! exactly the files a user would bring: `[data] valid`, `test`, `poisoned_test`, `bd_valid.h5`
//! beside them (CSAW layout) and `[model] weights` (Keras weights-only HDF5). The training
//! split stays in `<work>/synth/train.h5`. Files not written by `synth` are never overwritten.

use badnets::{run, SynthConfig, SynthFiles};
use clap::Parser;
use cli::progress::Bars;

#[derive(Parser)]
#[command(version, about)]
struct Args {}

cli::use_allocator!();

fn main() -> std::process::ExitCode {
    cli::stage("synth", |_: Args, config, work| {
        let sc = config.table::<SynthConfig>()?;
        eprintln!(
            "synth: building the built-in synthetic benchmark: {} identities, {}",
            sc.identities,
            sc.describe()
        );
        let files = SynthFiles::in_work(&config, &work);
        Ok(run(&files, &sc, &Bars::new())?)
    })
}
