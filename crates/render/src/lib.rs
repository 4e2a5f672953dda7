//! Human- and tool-readable reports: the reference's `performance.csv`, CSV copies of the
//! evaluate tables, and the sweep plot (PNG and SVG).

mod error;
pub mod plot;
pub mod scan;
mod text;
pub mod zoo;

use defense::results::{EvaluateSweep, Kind, Scores, Summary, SweepStep, Targets};
use formats::atomic;
use formats::table::Floats;
use plot::{Curve, Line, Marker, Panel, PlotData, Points};
use std::path::{Path, PathBuf};

pub use error::{Error, Result};

/// `Neurons Pruned,Accuracy,ASR`: the repaired network's test accuracy and attack success
/// per step, exactly as the reference script writes it (Python's csv module: CRLF lines).
pub fn write_performance_csv(path: &Path, steps: &[(usize, f64, f64)]) -> Result<()> {
    let mut text = String::from("Neurons Pruned,Accuracy,ASR\r\n");
    for (k, acc, asr) in steps {
        text += &format!(
            "{},{},{}\r\n",
            Floats::Repr.format(*k as f64),
            Floats::Repr.format(*acc),
            Floats::Repr.format(*asr)
        );
    }
    Ok(atomic::write_bytes(path, text.as_bytes())?)
}

/// What the report stage reads and where it writes.
pub struct ReportFiles {
    pub sweep: PathBuf,
    pub summary: PathBuf,
    pub targets: PathBuf,
    /// The scan's summary: reported where it exists.
    pub scan: PathBuf,
    pub output_dir: PathBuf,
}

impl ReportFiles {
    /// The files make gives the stage for the run `config` in the work folder `work`.
    pub fn in_work(config: &formats::config::Config, work: &formats::paths::WorkPaths) -> Self {
        use formats::paths::{Stage, EVAL_TARGETS, SCAN_SUMMARY};
        Self {
            sweep: work.eval_sweep(),
            summary: work.eval_summary(),
            targets: work.stage(Stage::Evaluate).join(EVAL_TARGETS),
            scan: work.stage(Stage::Scan).join(SCAN_SUMMARY),
            output_dir: config.work.reports.clone(),
        }
    }
}

/// The files the report stage wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReportSummary {
    pub outputs: Vec<PathBuf>,
}

impl std::fmt::Display for ReportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let lines: Vec<String> = self
            .outputs
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        f.write_str(&lines.join("\n"))
    }
}

/// The report stage: from evaluate's sweep, summary and targets tables to `performance.csv`,
/// `sweep.csv`, `targets.csv`, `plot.png`, `plot.svg` and `summary.csv` in `out_dir`, and where
/// the scan at `scan_path` ran, `scan.csv`, the trigger images and the estimated residual
/// attack success in `summary.csv`; returns the files.
pub fn run(files: &ReportFiles) -> Result<ReportSummary> {
    let ReportFiles {
        sweep: sweep_path,
        summary: summary_path,
        targets: targets_path,
        scan: scan_path,
        output_dir: out_dir,
    } = files;
    let files = formats::paths::REPORT_FILES.map(|f| out_dir.join(f));
    formats::written::check_paths(
        &[
            ("the per-step scores", sweep_path),
            ("the summary", summary_path),
            ("the per-target scores", targets_path),
            ("the scan summary", scan_path),
        ],
        &files
            .iter()
            .map(|f| ("a report file", f.as_path()))
            .collect::<Vec<_>>(),
    )?;
    let sweep = EvaluateSweep::read(sweep_path)?;
    let summary = Summary::read(summary_path)?;
    summary.check_against(summary_path, &sweep)?;
    let targets = Targets::read(targets_path)?;
    targets.check_against(targets_path, &summary)?;
    let performance: Vec<_> = sweep
        .steps
        .iter()
        .map(|s| {
            let g = &s.repaired;
            (
                s.channels_pruned,
                g.clean_test_accuracy,
                g.attack_success_rate,
            )
        })
        .collect();

    let total = sweep.channels() as f64;
    let scanned = if scan_path.exists() {
        defense::scan::read_summary(scan_path)?
    } else {
        Vec::new()
    };
    let estimated = scan::estimates(&summary, &scanned);
    let data = plot_data(&sweep, &summary, &estimated, total);

    let [performance_csv, sweep_csv, summary_csv, targets_csv, png, svg] = &files;
    write_performance_csv(performance_csv, &performance)?;
    sweep.to_table().write_csv(sweep_csv, Floats::Repr)?;
    targets
        .to_table()
        .write_csv(targets_csv, Floats::Fixed(2))?;
    plot::write(&data, png, svg)?;
    let mut written = files.to_vec();
    if !scanned.is_empty() {
        written.extend(scan::write(scan_path, &scanned, &summary, out_dir)?);
    }
    // The summary goes last: it is what make takes as the stage's completion.
    scan::summary_table(&summary, &scanned).write_csv(summary_csv, Floats::Fixed(2))?;
    Ok(ReportSummary { outputs: written })
}

/// The plot's panels: clean accuracy, then attack success, over the fraction pruned; the
/// scan's `estimated` attack success (per summary row) as hollow rings beside the measured.
fn plot_data(
    sweep: &EvaluateSweep,
    summary: &Summary,
    estimated: &[Option<f64>],
    total: f64,
) -> PlotData {
    let series = |f: &dyn Fn(&SweepStep) -> f64| sweep.steps.iter().map(f).collect::<Vec<_>>();
    // Thresholds that prune the same channels share one line: "2/4 pt".
    let mut thresholds: Vec<(String, f64)> = Vec::new();
    for r in summary.rows.iter().filter(|r| r.network == Kind::Pruned) {
        let (Some(t), x) = (r.threshold_percent, r.channels_pruned as f64 / total) else {
            continue;
        };
        match thresholds.iter_mut().find(|(_, at)| *at == x) {
            Some((label, _)) => *label = label.replace(" pt", &format!("/{t} pt")),
            None => thresholds.push((format!("{t} pt"), x)),
        }
    }
    let backdoored = summary.rows.iter().find(|r| r.network == Kind::Backdoored);
    let markers = [
        (
            Kind::FinePruned,
            "fine-pruned",
            Marker::Circle,
            plot::VERMILLION,
        ),
        (
            Kind::RepairedFinePruned,
            "repaired G(B, fine-pruned)",
            Marker::Triangle,
            plot::PURPLE,
        ),
        (
            Kind::FineTuned,
            "fine-tuned, unpruned",
            Marker::Square,
            plot::BLACK,
        ),
        (
            Kind::RepairedFineTuned,
            "repaired G(B, fine-tuned)",
            Marker::Cross,
            plot::SKY,
        ),
    ];
    let panel = |y_label: &str, score: fn(&Scores) -> f64, attack: bool| {
        let mut curves = vec![
            Curve {
                name: "backdoored B".into(),
                color: plot::GREY,
                line: Line::Thin,
                values: series(&|_| backdoored.map_or(f64::NAN, |b| score(&b.scores))),
            },
            Curve {
                name: "repaired G(B, B')".into(),
                color: plot::BLUE,
                line: Line::Solid,
                values: series(&|s| score(&s.repaired)),
            },
            Curve {
                name: "pruned B'".into(),
                color: plot::ORANGE,
                line: Line::Dashed,
                values: series(&|s| score(&s.pruned)),
            },
        ];
        if !attack {
            curves.push(Curve {
                name: "pruned B': validation accuracy".into(),
                color: plot::GREEN,
                line: Line::Dotted,
                values: series(&|s| s.valid_accuracy),
            });
        }
        let points = markers
            .iter()
            .map(|&(kind, name, marker, color)| Points {
                name: name.into(),
                color,
                marker,
                points: summary
                    .rows
                    .iter()
                    .filter(|r| r.network == kind)
                    .map(|r| (r.channels_pruned as f64 / total, score(&r.scores)))
                    .collect(),
            })
            .chain(attack.then(|| {
                Points {
                    name: "estimated by the scan (clean data only)".into(),
                    color: plot::GREEN,
                    marker: Marker::Ring,
                    points: summary
                        .rows
                        .iter()
                        .zip(estimated)
                        .filter_map(|(r, e)| e.map(|e| (r.channels_pruned as f64 / total, e)))
                        .collect(),
                }
            }))
            .filter(|p| !p.points.is_empty())
            .collect();
        Panel {
            y_label: y_label.into(),
            curves,
            points,
        }
    };
    PlotData {
        title: "Pruning conv_3: clean accuracy and attack success".into(),
        fraction: series(&|s| s.channels_pruned as f64 / total),
        thresholds,
        panels: vec![
            panel("clean test accuracy", |s| s.clean_test_accuracy, false),
            panel("attack success rate", |s| s.attack_success_rate, true),
        ],
    }
}
