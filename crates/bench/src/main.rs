//! `bench`: runs the stage binaries at the CSAW-HackML sizes (11,547 validation, 12,830 clean
//! and 12,830 triggered test images) and prints wall-clock seconds, peak resident memory and
//! images per second per stage. Missing input files are generated first; the network is the
//! real DeepID from the fixtures when present, else a randomly initialised DeepID with 1,283
//! classes.

use anyhow::Context;
use bench::{Inputs, Sizes};
use clap::Parser;
use std::path::PathBuf;
use std::process::Command;

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

fn fixture_weights() -> Option<PathBuf> {
    let dir = std::env::var_os("FINEPRUNE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| "../shared/fixtures".into());
    Some(dir.join("deepid/bd_weights.h5")).filter(|p| p.exists())
}

fn main() -> std::process::ExitCode {
    cli::run("bench", || {
        let args = Args::parse();
        let sizes = Sizes {
            valid: args.valid,
            test: args.test,
            poisoned_test: args.poisoned_test,
        };
        let data = args.dir.join("data");
        std::fs::create_dir_all(&data).with_context(|| data.display().to_string())?;
        let weights = args
            .weights
            .clone()
            .or_else(fixture_weights)
            .unwrap_or_else(|| data.join("random_deepid.h5"));
        let inputs = Inputs::new(&data, sizes, std::path::absolute(weights)?);
        if args.generate_only {
            return Ok(inputs.generate(sizes)?);
        }
        if !inputs.all_exist() {
            let status = Command::new(std::env::current_exe()?)
                .args(std::env::args_os().skip(1))
                .arg("--generate-only")
                .status()?;
            anyhow::ensure!(status.success(), "generating the benchmark data failed");
        }
        let bin = std::env::current_exe()?;
        let rates = bench::floor::rates();
        let rows = bench::run(
            &args.dir,
            bin.parent().context("no binary folder")?,
            &inputs,
            sizes,
        )?;
        cli::outln!(
            "{}",
            bench::Report {
                sizes,
                inputs: &inputs,
                rows: &rows,
                rates,
            }
        )?;
        Ok(())
    })
}
