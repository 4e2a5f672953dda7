//! Human- and tool-readable reports: the reference's `performance.csv`, CSV copies of the
//! evaluate tables, and the sweep plot (PNG and SVG).

use defense::results::{EvaluateSweep, Kind, Summary, SweepStep};
use formats::atomic::{self, AtomicFile};
use formats::error::{Error, Result};
use formats::table::Floats;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

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
    atomic::write_bytes(path, text.as_bytes())
}

/// Networks shown as points rather than curves: (legend, colour, points (fraction, percent)).
pub type Markers = Vec<(String, RGBColor, Vec<(f64, f64)>)>;

/// What the sweep plot shows.
pub struct PlotData {
    pub title: String,
    /// Fraction of conv_3 channels pruned at each step.
    pub fraction: Vec<f64>,
    /// (legend, colour, dashed, percent per step).
    pub series: Vec<(String, RGBColor, bool, Vec<f64>)>,
    /// (label, fraction) of each threshold reached.
    pub thresholds: Vec<(String, f64)>,
    /// Networks outside the sweep, e.g. the fine-pruned ones.
    pub markers: Markers,
}

/// Sans-serif TrueType fonts that plot text can use, most preferred first.
const FONTS: [&str; 5] = [
    "DejaVuSans.ttf",
    "LiberationSans-Regular.ttf",
    "NotoSans-Regular.ttf",
    "FreeSans.ttf",
    "Arial.ttf",
];
const FONT_DIRS: [&str; 4] = [
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "/Library/Fonts",
    "C:\\Windows\\Fonts",
];

/// `$FINEPRUNE_FONT`, else the first of [`FONTS`] found below the usual font folders.
fn find_font() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("FINEPRUNE_FONT") {
        return Some(p.into());
    }
    fn walk(dir: &Path, depth: usize, found: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() && depth > 0 {
                walk(&path, depth - 1, found);
            } else if e.file_name().to_str().is_some_and(|n| FONTS.contains(&n)) {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    for dir in FONT_DIRS {
        walk(Path::new(dir), 4, &mut found);
    }
    found.sort_by_key(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        (FONTS.iter().position(|f| *f == name), p.clone())
    });
    found.into_iter().next()
}

fn register_font() -> Result<()> {
    static DONE: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let font = find_font().ok_or_else(|| {
            format!(
                "no TrueType font for plot text ({} under {}); install one (Debian: fonts-dejavu-core) or set FINEPRUNE_FONT",
                FONTS.join(", "),
                FONT_DIRS.join(", ")
            )
        })?;
        let bytes = std::fs::read(&font).map_err(|e| format!("{}: {e}", font.display()))?;
        plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            Box::leak(bytes.into_boxed_slice()),
        )
        .map_err(|_| format!("{}: not a usable TrueType font", font.display()))
    })
    .clone()
    .map_err(Error::Other)
}

const SIZE: (u32, u32) = (1100, 680);

/// Draws the plot to `png` and `svg`, each written atomically.
pub fn plot(data: &PlotData, png: &Path, svg: &Path) -> Result<()> {
    register_font()?;
    let png_out = AtomicFile::new(png)?;
    {
        let root = BitMapBackend::new(png_out.temp_path(), SIZE).into_drawing_area();
        draw(&root, data).map_err(|e| Error::invalid(png, format!("drawing failed: {e}")))?;
        root.present()
            .map_err(|e| Error::invalid(png, format!("writing failed: {e}")))?;
    }
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, SIZE).into_drawing_area();
        draw(&root, data).map_err(|e| Error::invalid(svg, format!("drawing failed: {e}")))?;
        root.present()
            .map_err(|e| Error::invalid(svg, format!("writing failed: {e}")))?;
    }
    atomic::write_bytes(svg, text.as_bytes())?;
    png_out.commit()
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    data: &PlotData,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .caption(&data.title, ("sans-serif", 26))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..1f64, 0f64..101f64)?;
    chart
        .configure_mesh()
        .x_desc("fraction of conv_3 channels pruned")
        .y_desc("percent of test images")
        .x_label_formatter(&|x| format!("{:.0}%", x * 100.0))
        .y_label_formatter(&|y| format!("{y:.0}%"))
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for (i, (label, x)) in data.thresholds.iter().enumerate() {
        let grey = RGBColor(120, 120, 120);
        chart.draw_series(DashedLineSeries::new(
            [(*x, 0.0), (*x, 101.0)],
            6,
            4,
            grey.stroke_width(1),
        ))?;
        chart.draw_series(std::iter::once(Text::new(
            label.clone(),
            // Staggered: neighbouring thresholds are often one step apart.
            (*x, 97.0 - 4.0 * i as f64),
            ("sans-serif", 14).into_font().color(&grey),
        )))?;
    }
    for (name, color, dashed, values) in &data.series {
        let points: Vec<(f64, f64)> = data
            .fraction
            .iter()
            .copied()
            .zip(values.iter().copied())
            .collect();
        let style = color.stroke_width(if *dashed { 2 } else { 3 });
        let anno = if *dashed {
            chart.draw_series(DashedLineSeries::new(points, 8, 5, style))?
        } else {
            chart.draw_series(LineSeries::new(points, style))?
        };
        let c = *color;
        anno.label(name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], c.stroke_width(3)));
    }
    for (name, color, points) in &data.markers {
        let c = *color;
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 6, c.filled())))?
            .label(name.clone())
            .legend(move |(x, y)| Circle::new((x + 12, y), 5, c.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::MiddleLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .label_font(("sans-serif", 15))
        .draw()?;
    Ok(())
}

const BLUE: RGBColor = RGBColor(31, 119, 180);
const RED: RGBColor = RGBColor(214, 39, 40);
const LIGHT_BLUE: RGBColor = RGBColor(120, 180, 230);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN: RGBColor = RGBColor(44, 160, 44);
const PURPLE: RGBColor = RGBColor(148, 103, 189);
const GREY: RGBColor = RGBColor(127, 127, 127);
const BLACK: RGBColor = RGBColor(20, 20, 20);

/// The report stage: from evaluate's sweep and summary tables to `performance.csv`,
/// `sweep.csv`, `plot.png`, `plot.svg` and `summary.csv` in `out_dir`; returns the files.
pub fn run(
    sweep_path: &Path,
    summary_path: &Path,
    out_dir: &Path,
) -> Result<Vec<std::path::PathBuf>> {
    let sweep = EvaluateSweep::read(sweep_path)?;
    let summary = Summary::read(summary_path)?;
    summary.check_against(summary_path, &sweep)?;
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
    let mut marks = Vec::new();
    let mut markers: Markers = Vec::new();
    for row in &summary.rows {
        let x = row.channels_pruned as f64 / total;
        let (label, color_clean, color_asr) = match row.network {
            Kind::FinePruned => ("fine-pruned", GREEN, PURPLE),
            Kind::FineTuned => ("fine-tuned, unpruned", GREY, BLACK),
            Kind::Pruned => {
                if let Some(t) = row.threshold_percent {
                    marks.push((format!("{t} pt"), x));
                }
                continue;
            }
            _ => continue,
        };
        for (what, color, v) in [
            (
                "clean accuracy",
                color_clean,
                row.scores.clean_test_accuracy,
            ),
            ("attack success", color_asr, row.scores.attack_success_rate),
        ] {
            let label = format!("{label}: {what}");
            let point = (x, v);
            match markers.iter_mut().find(|m| m.0 == label) {
                Some(m) => m.2.push(point),
                None => markers.push((label, color, vec![point])),
            }
        }
    }
    let series = |f: &dyn Fn(&SweepStep) -> f64| sweep.steps.iter().map(f).collect::<Vec<_>>();
    let data = PlotData {
        title: "Pruning conv_3: clean accuracy and attack success".into(),
        fraction: series(&|s| s.channels_pruned as f64 / total),
        series: vec![
            (
                "pruned B': clean accuracy".into(),
                LIGHT_BLUE,
                true,
                series(&|s| s.pruned.clean_test_accuracy),
            ),
            (
                "pruned B': attack success".into(),
                ORANGE,
                true,
                series(&|s| s.pruned.attack_success_rate),
            ),
            (
                "repaired G: clean accuracy".into(),
                BLUE,
                false,
                series(&|s| s.repaired.clean_test_accuracy),
            ),
            (
                "repaired G: attack success".into(),
                RED,
                false,
                series(&|s| s.repaired.attack_success_rate),
            ),
        ],
        thresholds: marks,
        markers,
    };

    // performance.csv, sweep.csv, summary.csv, plot.png, plot.svg
    let files = formats::paths::REPORT_FILES.map(|f| out_dir.join(f));
    write_performance_csv(&files[0], &performance)?;
    sweep.to_table().write_csv(&files[1], Floats::Repr)?;
    plot(&data, &files[3], &files[4])?;
    // The summary goes last: it is what make takes as the stage's completion.
    summary.to_table().write_csv(&files[2], Floats::Fixed(2))?;
    Ok(files.to_vec())
}
