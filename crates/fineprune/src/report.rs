//! Human- and tool-readable reports: the reference's `performance.csv`, CSV copies of the
//! evaluate tables, and the sweep plot (PNG and SVG).

use crate::atomic::AtomicFile;
use crate::error::{Error, Result, WithPath};
use crate::table::{Column, Table};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// A float as Python's `repr` writes it (`100.0`, `1.3333333333333335`), so the CSV files
/// match the reference byte for byte.
pub fn py_float(v: f64) -> String {
    format!("{v:?}")
}

/// `Neurons Pruned,Accuracy,ASR`: the repaired network's test accuracy and attack success
/// per step, exactly as the reference script writes it (Python's csv module: CRLF lines).
pub fn write_performance_csv(path: &Path, steps: &[(usize, f64, f64)]) -> Result<()> {
    let mut text = String::from("Neurons Pruned,Accuracy,ASR\r\n");
    for (k, acc, asr) in steps {
        text += &format!(
            "{},{},{}\r\n",
            py_float(*k as f64),
            py_float(*acc),
            py_float(*asr)
        );
    }
    crate::atomic::write_bytes(path, text.as_bytes())
}

/// Writes a table as CSV (nulls as empty fields), columns in table order.
pub fn write_table_csv(path: &Path, table: &Table) -> Result<()> {
    let out = AtomicFile::new(path)?;
    let temp = out.temp_path().to_path_buf();
    let csv_err = |e: csv::Error| Error::invalid(&temp, e.to_string());
    let mut w = csv::Writer::from_writer(out.create()?);
    w.write_record(table.columns.iter().map(|(n, _)| n.as_str()))
        .map_err(csv_err)?;
    for row in 0..table.rows() {
        let fields = table.columns.iter().map(|(_, c)| match c {
            Column::Int(v) => v[row].map(|x| x.to_string()).unwrap_or_default(),
            Column::Float(v) => v[row].map(py_float).unwrap_or_default(),
            Column::Text(v) => v[row].clone().unwrap_or_default(),
        });
        w.write_record(fields).map_err(csv_err)?;
    }
    w.flush().at(&temp)?;
    drop(w);
    out.commit()
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

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn register_font() -> Result<()> {
    static DONE: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let bytes = std::fs::read(FONT).map_err(|e| {
            format!("{FONT}: {e} (install Debian's fonts-dejavu-core for plot text)")
        })?;
        plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            Box::leak(bytes.into_boxed_slice()),
        )
        .map_err(|_| format!("{FONT}: not a usable TrueType font"))
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
    crate::atomic::write_bytes(svg, text.as_bytes())?;
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
