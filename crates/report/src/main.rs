//! `report`: `reports/performance.csv` in the reference script's exact format, `sweep.csv` and
//! `summary.csv` with every column, and `plot.png` / `plot.svg`.

use clap::Parser;
use fineprune::cli::{self, CommonArgs};
use fineprune::report::{plot, write_performance_csv, write_table_csv, Markers, PlotData};
use fineprune::table::Table;
use fineprune::Error;
use plotters::style::RGBColor;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Per-step scores (default: `<work>/evaluate/sweep.parquet`).
    #[arg(long)]
    sweep: Option<PathBuf>,
    /// Per-network scores (default: `<work>/evaluate/summary.parquet`).
    #[arg(long)]
    summary: Option<PathBuf>,
    /// Output folder (overrides `[work] reports`).
    #[arg(long)]
    output_dir: Option<PathBuf>,
}

const BLUE: RGBColor = RGBColor(31, 119, 180);
const RED: RGBColor = RGBColor(214, 39, 40);
const LIGHT_BLUE: RGBColor = RGBColor(120, 180, 230);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN: RGBColor = RGBColor(44, 160, 44);
const PURPLE: RGBColor = RGBColor(148, 103, 189);
const GREY: RGBColor = RGBColor(127, 127, 127);
const BLACK: RGBColor = RGBColor(20, 20, 20);

fineprune::use_allocator!();

fn main() -> std::process::ExitCode {
    cli::stage("report", |args: Args, config, work| {
        let t = Instant::now();
        let sweep_path = args.sweep.unwrap_or_else(|| work.eval_sweep());
        let summary_path = args.summary.unwrap_or_else(|| work.eval_summary());
        let out = args.output_dir.unwrap_or(config.work.reports.clone());
        let sweep = Table::read(&sweep_path)?;
        let summary = Table::read(&summary_path)?;

        let full = |name: &str| -> anyhow::Result<Vec<f64>> {
            Ok(sweep
                .floats(name)?
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| Error::invalid(&sweep_path, format!("`{name}` has nulls")))?)
        };
        let steps = sweep.ints("channels_pruned")?;
        let g_acc = full("repaired_clean_accuracy")?;
        let g_asr = full("repaired_attack_success_rate")?;
        let performance: Vec<_> = steps
            .iter()
            .zip(g_acc.iter().zip(&g_asr))
            .map(|(k, (a, s))| (*k as usize, *a, *s))
            .collect();

        let networks = summary.texts("network")?;
        let thresholds = summary.floats("threshold_percent")?;
        let channels = summary.ints("channels_pruned")?;
        let total = (steps.len() - 1).max(1) as f64;
        let mut marks = Vec::new();
        let mut markers: Markers = Vec::new();
        let clean = summary.floats("clean_test_accuracy")?;
        let asr = summary.floats("attack_success_rate")?;
        for i in 0..networks.len() {
            let x = channels[i] as f64 / total;
            let (label, color_clean, color_asr) = match networks[i].as_deref() {
                Some("fine_pruned") => ("fine-pruned", GREEN, PURPLE),
                Some("fine_tuned") => ("fine-tuned, unpruned", GREY, BLACK),
                Some("pruned") => {
                    if let Some(t) = thresholds[i] {
                        marks.push((format!("{t} pt"), x));
                    }
                    continue;
                }
                _ => continue,
            };
            for (what, color, v) in [
                ("clean accuracy", color_clean, clean[i]),
                ("attack success", color_asr, asr[i]),
            ] {
                let label = format!("{label}: {what}");
                let point = (x, v.unwrap_or_default());
                match markers.iter_mut().find(|m| m.0 == label) {
                    Some(m) => m.2.push(point),
                    None => markers.push((label, color, vec![point])),
                }
            }
        }
        let data = PlotData {
            title: "Pruning conv_3: clean accuracy and attack success".into(),
            fraction: steps.iter().map(|&k| k as f64 / total).collect(),
            series: vec![
                (
                    "pruned B': clean accuracy".into(),
                    LIGHT_BLUE,
                    true,
                    full("pruned_clean_accuracy")?,
                ),
                (
                    "pruned B': attack success".into(),
                    ORANGE,
                    true,
                    full("pruned_attack_success_rate")?,
                ),
                ("repaired G: clean accuracy".into(), BLUE, false, g_acc),
                ("repaired G: attack success".into(), RED, false, g_asr),
            ],
            thresholds: marks,
            markers,
        };

        let files = [
            out.join("performance.csv"),
            out.join("sweep.csv"),
            out.join("summary.csv"),
            out.join("plot.png"),
            out.join("plot.svg"),
        ];
        write_performance_csv(&files[0], &performance)?;
        write_table_csv(&files[1], &sweep)?;
        plot(&data, &files[3], &files[4])?;
        // The summary goes last: it is what make takes as the stage's completion.
        write_table_csv(&files[2], &summary)?;
        if args.common.json {
            cli::print_json(&serde_json::json!({
                "stage": "report",
                "outputs": files,
                "seconds": t.elapsed().as_secs_f64(),
            }));
        } else {
            for f in &files {
                println!("{}", f.display());
            }
        }
        Ok(())
    })
}
