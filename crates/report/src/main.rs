//! `report`: `reports/performance.csv` in the reference script's exact format, `sweep.csv`,
//! `summary.csv` and `targets.csv` with every column, and `plot.png` / `plot.svg`.

use clap::Parser;
use formats::paths;
use render::ReportFiles;
use std::path::PathBuf;

#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Per-step scores (default: `<work>/evaluate/sweep.parquet`).
    #[arg(long)]
    sweep: Option<PathBuf>,
    /// Per-network scores (default: `<work>/evaluate/summary.parquet`).
    #[arg(long)]
    summary: Option<PathBuf>,
    /// Attack success per target label (default: `targets.parquet` beside the summary, where
    /// evaluate writes it).
    #[arg(long)]
    targets: Option<PathBuf>,
    /// The scan's summary (default: `<work>/scan/summary.parquet`; none there, no scan in the
    /// report).
    #[arg(long)]
    scan: Option<PathBuf>,
    /// Output folder (overrides `[work] reports`).
    #[arg(long)]
    output_dir: Option<PathBuf>,
}

cli::use_allocator!();

fn main() -> std::process::ExitCode {
    cli::stage("report", |args: Args, config, work| {
        let d = ReportFiles::in_work(&config, &work);
        let summary = args.summary.unwrap_or(d.summary);
        let files = ReportFiles {
            sweep: args.sweep.unwrap_or(d.sweep),
            // Beside the summary it is given.
            targets: args
                .targets
                .unwrap_or_else(|| summary.with_file_name(paths::EVAL_TARGETS)),
            summary,
            scan: args.scan.unwrap_or(d.scan),
            output_dir: args.output_dir.unwrap_or(d.output_dir),
        };
        Ok(render::run(&files)?)
    })
}
