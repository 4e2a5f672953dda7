//! A zoo's combined results: `zoo.csv`, every row of each network's summary with the network's
//! name first (a failed network: one row with its error), and `zoo.png` / `zoo.svg`, the
//! networks side by side: clean accuracy and attack success of B, B', G(B, B'), the
//! fine-pruned network and G(B, fine-pruned), one row of panels per threshold.

use crate::plot::{self, draw_legend, DrawResult, Figure, Sample, FONT};
use crate::Result;
use defense::results::{Kind, Scores, Summary};
use defense::scan::ScanRow;
use formats::table::{Column, Floats, Table};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// How one network of the zoo ended.
pub struct Outcome {
    pub name: String,
    /// `ok`, `failed` (a stage failed) or `not run` (out of date, nothing failed).
    pub status: &'static str,
    /// Its summary and scan rows (none when it did not scan), or why there is none.
    pub result: std::result::Result<(Summary, Vec<ScanRow>), String>,
    /// Seconds of all its jobs and their largest peak memory (MB), where the engine measured.
    pub cost: Option<(f64, f64)>,
}

/// The files [`write`] makes, in the order it writes them (the table last).
pub const FILES: [&str; 3] = ["zoo.png", "zoo.svg", "zoo.csv"];

/// Networks drawn at most; the table always has every one.
const PLOTTED: usize = 40;

/// Writes the zoo's table and plot into `out_dir`.
pub fn write(outcomes: &[Outcome], out_dir: &Path) -> Result<Vec<PathBuf>> {
    let files = FILES.map(|f| out_dir.join(f));
    let plotted: Vec<(&str, &Summary)> = outcomes
        .iter()
        .filter_map(|o| Some((o.name.as_str(), &o.result.as_ref().ok()?.0)))
        .take(PLOTTED)
        .collect();
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    let figure = ZooPlot::new(&plotted, outcomes.len() - failed, failed);
    plot::write(&figure, &files[0], &files[1])?;
    table(outcomes).write_csv(&files[2], Floats::Fixed(2))?;
    Ok(files.to_vec())
}

/// `model`, `status` (`ok`, `failed` or `not run`), `error`, `seconds` and `peak_rss_mb` (the network's
/// jobs), then the summary's columns.
pub fn table(outcomes: &[Outcome]) -> Table {
    const OWN: usize = 5;
    let mut t = Table::new()
        .with("model", Column::Text(Vec::new()))
        .with("status", Column::Text(Vec::new()))
        .with("error", Column::Text(Vec::new()))
        .with("seconds", Column::Float(Vec::new()))
        .with("peak_rss_mb", Column::Float(Vec::new()));
    let empty = crate::scan::summary_table(&Summary { rows: Vec::new() }, &[]);
    t.columns.extend(empty.columns);
    for o in outcomes {
        let (rows, error, summary) = match &o.result {
            Ok((s, scan)) => (
                s.rows.len(),
                None,
                Some(crate::scan::summary_table(s, scan)),
            ),
            Err(e) => (1, Some(e.clone()), None),
        };
        let status = o.status;
        for (i, value) in [Some(o.name.clone()), Some(status.into()), error]
            .into_iter()
            .enumerate()
        {
            t.columns[i].1.extend_from(&Column::Text(vec![value; rows]));
        }
        let (seconds, rss) = o.cost.unzip();
        t.columns[3]
            .1
            .extend_from(&Column::Float(vec![seconds; rows]));
        t.columns[4].1.extend_from(&Column::Float(vec![rss; rows]));
        for (name, column) in t.columns.iter_mut().skip(OWN) {
            match summary
                .as_ref()
                .and_then(|s| s.columns.iter().find(|(n, _)| n == name))
            {
                Some((_, values)) => column.extend_from(values),
                None => (0..rows).for_each(|_| column.push_null()),
            }
        }
    }
    t
}

/// One score of a network.
type Score = fn(&Scores) -> f64;

/// The kinds of network compared, with their bar colours.
const KINDS: [(Kind, &str, RGBColor); 5] = [
    (Kind::Backdoored, "backdoored B", plot::GREY),
    (Kind::Pruned, "pruned B'", plot::ORANGE),
    (Kind::Repaired, "repaired G(B, B')", plot::BLUE),
    (Kind::FinePruned, "fine-pruned", plot::VERMILLION),
    (
        Kind::RepairedFinePruned,
        "repaired G(B, fine-pruned)",
        plot::PURPLE,
    ),
];

struct ZooPlot<'a> {
    title: String,
    networks: &'a [(&'a str, &'a Summary)],
    thresholds: Vec<f64>,
}

impl<'a> ZooPlot<'a> {
    /// `ok` networks have results (at most [`PLOTTED`] of them in `networks`), `failed` none.
    fn new(networks: &'a [(&'a str, &'a Summary)], ok: usize, failed: usize) -> Self {
        let mut thresholds: Vec<f64> = networks
            .iter()
            .flat_map(|(_, s)| s.rows.iter().filter_map(|r| r.threshold_percent))
            .collect();
        thresholds.sort_by(f64::total_cmp);
        thresholds.dedup();
        let mut notes = Vec::new();
        if networks.len() < ok {
            notes.push(format!("first {} of {ok} networks", networks.len()));
        }
        if failed > 0 {
            notes.push(format!("{failed} failed: see zoo.csv"));
        }
        let notes = match notes.is_empty() {
            true => String::new(),
            false => format!(" ({})", notes.join("; ")),
        };
        Self {
            title: format!("Fine-pruning across the zoo{notes}"),
            networks,
            thresholds,
        }
    }

    /// The score of `kind` at `threshold` (B has none) in `summary`.
    fn score(summary: &Summary, kind: Kind, threshold: f64, score: Score) -> Option<f64> {
        summary
            .rows
            .iter()
            .find(|r| {
                r.network == kind
                    && (kind == Kind::Backdoored || r.threshold_percent == Some(threshold))
            })
            .map(|r| score(&r.scores))
    }
}

impl Figure for ZooPlot<'_> {
    fn size(&self) -> (u32, u32) {
        // Two panels side by side, each about 150 px per network so names fit.
        let width = (240 + 300 * self.networks.len() as u32).clamp(1200, 8000);
        (width, 200 + 330 * self.thresholds.len().max(1) as u32)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let root = root.margin(12, 0, 0, 0).titled(&self.title, (FONT, 30))?;
        let (charts, below) = root.split_vertically(root.dim_in_pixel().1 - 100);
        let rows = charts.split_evenly((self.thresholds.len().max(1), 2));
        let scores: [(&str, Score); 2] = [
            ("clean test accuracy", |s| s.clean_test_accuracy),
            ("attack success rate", |s| s.attack_success_rate),
        ];
        let n = self.networks.len().max(1) as f64;
        for (i, area) in rows.iter().enumerate() {
            let Some(&threshold) = self.thresholds.get(i / 2) else {
                continue;
            };
            let (what, score) = scores[i % 2];
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{what}, {threshold} pt threshold"), (FONT, 20))
                .margin(10)
                .x_label_area_size(34)
                .y_label_area_size(60)
                .build_cartesian_2d(0f64..n, 0f64..102f64)?;
            let names: Vec<&str> = self.networks.iter().map(|(name, _)| *name).collect();
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(names.len().max(1) * 2 + 1)
                .x_label_formatter(&|x| {
                    let i = x.floor() as usize;
                    let centre = (x - x.floor() - 0.5).abs() < 1e-9;
                    if centre {
                        names.get(i).map_or(String::new(), |s| s.to_string())
                    } else {
                        String::new()
                    }
                })
                .y_label_formatter(&|y| format!("{y:.0}%"))
                .label_style((FONT, 16))
                .light_line_style(RGBColor(238, 238, 238))
                .draw()?;
            let width = 0.8 / KINDS.len() as f64;
            for (j, (_, summary)) in self.networks.iter().enumerate() {
                for (k, (kind, _, color)) in KINDS.iter().enumerate() {
                    if let Some(v) = Self::score(summary, *kind, threshold, score) {
                        let x0 = j as f64 + 0.1 + k as f64 * width;
                        chart.draw_series(std::iter::once(Rectangle::new(
                            [(x0, 0.0), (x0 + width * 0.9, v)],
                            color.filled(),
                        )))?;
                    }
                }
            }
        }
        let legend: Vec<(Sample, String)> = KINDS
            .iter()
            .map(|(_, name, color)| (Sample::Bar(*color), name.to_string()))
            .collect();
        draw_legend(&below, &legend)
    }
}
