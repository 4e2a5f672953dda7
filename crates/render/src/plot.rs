//! The sweep plot: two panels over the fraction of conv_3 channels pruned, clean test accuracy
//! above and attack success rate below, each with the pruned network B' (dashed), the repaired
//! ensemble G (solid) and the backdoored B (thin), B''s validation accuracy (dotted, above),
//! a dashed vertical line per threshold labelled above the panels, and the fine-tuned networks
//! as markers. The legend sits below the panels, so it never covers data, and shows each
//! series as it is drawn. Colours are the Okabe-Ito palette (told apart with colour-blindness).

use crate::text::Bitmap;
use crate::{Error, Result};
use formats::atomic::{self, AtomicFile};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// How a curve is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Line {
    Solid,
    Dashed,
    Dotted,
    /// A thin solid line, for references.
    Thin,
}

impl Line {
    fn width(self) -> u32 {
        match self {
            Line::Solid => 5,
            Line::Dashed | Line::Dotted => 3,
            Line::Thin => 1,
        }
    }

    /// Dash and gap lengths in pixels; none for a solid line.
    fn dashes(self) -> Option<(u32, u32)> {
        match self {
            Line::Dashed => Some((12, 7)),
            Line::Dotted => Some((3, 5)),
            Line::Solid | Line::Thin => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Marker {
    Circle,
    Triangle,
    Square,
    Cross,
    /// Hollow: an estimate rather than a measurement.
    Ring,
}

/// A value per sweep step.
#[derive(Debug, Clone)]
pub struct Curve {
    pub name: String,
    pub color: RGBColor,
    pub line: Line,
    pub values: Vec<f64>,
}

/// Networks outside the sweep, at (fraction pruned, percent).
#[derive(Debug, Clone)]
pub struct Points {
    pub name: String,
    pub color: RGBColor,
    pub marker: Marker,
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone)]
pub struct Panel {
    pub y_label: String,
    pub curves: Vec<Curve>,
    pub points: Vec<Points>,
}

/// What the sweep plot shows.
#[derive(Debug, Clone)]
pub struct PlotData {
    pub title: String,
    /// Fraction of conv_3 channels pruned at each step.
    pub fraction: Vec<f64>,
    /// (label, fraction) of each threshold reached.
    pub thresholds: Vec<(String, f64)>,
    pub panels: Vec<Panel>,
}

pub const BLUE: RGBColor = RGBColor(0, 114, 178);
pub const ORANGE: RGBColor = RGBColor(230, 159, 0);
pub const GREEN: RGBColor = RGBColor(0, 158, 115);
pub const VERMILLION: RGBColor = RGBColor(213, 94, 0);
pub const PURPLE: RGBColor = RGBColor(204, 121, 167);
pub const SKY: RGBColor = RGBColor(86, 180, 233);
pub const GREY: RGBColor = RGBColor(110, 110, 110);
pub const BLACK: RGBColor = RGBColor(0, 0, 0);

const SIZE: (u32, u32) = (1400, 1100);
pub const FONT: &str = "sans-serif";
const THRESHOLD: RGBColor = RGBColor(150, 150, 150);

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
fn find_font() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FINEPRUNE_FONT") {
        return Some(p.into());
    }
    fn walk(dir: &Path, depth: usize, found: &mut Vec<PathBuf>) {
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

/// The font's bytes, registered with plotters as `sans-serif` on first use.
fn font() -> Result<&'static [u8]> {
    static FONT_BYTES: std::sync::OnceLock<std::result::Result<&'static [u8], String>> =
        std::sync::OnceLock::new();
    FONT_BYTES
        .get_or_init(|| {
            let font = find_font().ok_or_else(|| {
                format!(
                    "no TrueType font for plot text ({} under {}); install one (Debian: fonts-dejavu-core) or set FINEPRUNE_FONT",
                    FONTS.join(", "),
                    FONT_DIRS.join(", ")
                )
            })?;
            let bytes = std::fs::read(&font).map_err(|e| format!("{}: {e}", font.display()))?;
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            let bad = || format!("{}: not a usable TrueType font", font.display());
            plotters::style::register_font(FONT, FontStyle::Normal, bytes).map_err(|_| bad())?;
            ab_glyph::FontRef::try_from_slice(bytes).map_err(|_| bad())?;
            Ok(bytes)
        })
        .clone()
        .map_err(Error::Font)
}

/// A picture that draws itself on any plotters backend.
pub trait Figure {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

/// Draws `figure` to `png` and `svg`, each written atomically.
pub fn write(figure: &impl Figure, png: &Path, svg: &Path) -> Result<()> {
    let font = font()?;
    let png_out = AtomicFile::new(png)?;
    {
        let backend = Bitmap::new(BitMapBackend::new(png_out.temp_path(), figure.size()), font)
            .ok_or_else(|| Error::Font("the plot font cannot be read".into()))?;
        let root = backend.into_drawing_area();
        figure
            .draw(&root)
            .map_err(|e| formats::Error::invalid(png, format!("drawing failed: {e}")))?;
        root.present()
            .map_err(|e| formats::Error::invalid(png, format!("writing failed: {e}")))?;
    }
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, figure.size()).into_drawing_area();
        figure
            .draw(&root)
            .map_err(|e| formats::Error::invalid(svg, format!("drawing failed: {e}")))?;
        root.present()
            .map_err(|e| formats::Error::invalid(svg, format!("writing failed: {e}")))?;
    }
    atomic::write_bytes(svg, text.as_bytes())?;
    Ok(png_out.commit()?)
}

pub type DrawResult<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

impl Figure for PlotData {
    fn size(&self) -> (u32, u32) {
        SIZE
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let root = root.margin(12, 0, 0, 0).titled(&self.title, (FONT, 30))?;
        let legend = legend_entries(self);
        let legend_height = 34 * legend.len().div_ceil(3) as u32 + 30;
        let (charts, below) = root.split_vertically(root.dim_in_pixel().1 - legend_height);
        let panels = charts.split_evenly((self.panels.len().max(1), 1));
        for (i, (area, panel)) in panels.iter().zip(&self.panels).enumerate() {
            draw_panel(area, self, panel, i == 0)?;
        }
        draw_legend(&below, &legend)
    }
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    data: &PlotData,
    panel: &Panel,
    first: bool,
) -> DrawResult<DB> {
    // Room above the first panel for the threshold labels.
    let top = if first { 56 } else { 16 };
    let mut chart = ChartBuilder::on(area)
        .margin_top(top)
        .margin_left(20)
        .margin_right(40)
        .margin_bottom(8)
        .x_label_area_size(56)
        .y_label_area_size(76)
        .build_cartesian_2d(0f64..1f64, 0f64..102f64)?;
    chart
        .configure_mesh()
        .x_desc("fraction of conv_3 channels pruned")
        .y_desc(&panel.y_label)
        .x_label_formatter(&|x| format!("{:.0}%", x * 100.0))
        .y_label_formatter(&|y| format!("{y:.0}%"))
        .label_style((FONT, 19))
        .axis_desc_style((FONT, 21))
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()?;
    for (_, x) in &data.thresholds {
        chart.draw_series(DashedLineSeries::new(
            [(*x, 0.0), (*x, 102.0)],
            7,
            5,
            THRESHOLD.stroke_width(2),
        ))?;
    }
    if first {
        // Labels in rows above the panel: a label that would touch the one before it on a row
        // goes to the next row.
        let style = TextStyle::from((FONT, 19).into_font()).color(&GREY);
        let mut row_ends: Vec<i32> = Vec::new();
        for (label, x) in &data.thresholds {
            let (px, py) = chart.backend_coord(&(*x, 102.0));
            let width = area.estimate_text_size(label, &style)?.0 as i32;
            let left = px - width / 2;
            let row = row_ends.iter().position(|&end| left > end + 8);
            let row = row.unwrap_or_else(|| {
                row_ends.push(i32::MIN);
                row_ends.len() - 1
            });
            row_ends[row] = left + width;
            let y = py - 24 - 22 * row as i32;
            let (ox, oy) = area.get_base_pixel();
            area.draw(&Text::new(
                label.clone(),
                (left - ox, y - oy),
                style.clone(),
            ))?;
        }
    }
    let xy = |values: &[f64]| -> Vec<(f64, f64)> {
        data.fraction
            .iter()
            .copied()
            .zip(values.iter().copied())
            .collect()
    };
    for c in &panel.curves {
        let points = xy(&c.values);
        let style = c.color.stroke_width(c.line.width());
        match c.line.dashes() {
            None => chart.draw_series(LineSeries::new(points, style))?,
            Some((on, off)) => chart.draw_series(DashedLineSeries::new(points, on, off, style))?,
        };
    }
    // Markers at one x are spread sideways, so none hides another.
    let (ox, oy) = area.get_base_pixel();
    for p in &panel.points {
        for xy in &p.points {
            let same_x: Vec<&Points> = panel
                .points
                .iter()
                .filter(|q| q.points.iter().any(|o| o.0 == xy.0))
                .collect();
            let i = same_x.iter().position(|q| q.name == p.name).unwrap_or(0) as i32;
            let shift = (2 * i - (same_x.len() as i32 - 1)) * 9;
            let (px, py) = chart.backend_coord(xy);
            marker(area, (px - ox + shift, py - oy), p.marker, p.color)?;
        }
    }
    Ok(())
}

/// Draws a marker centred on pixel `at` of `area`.
fn marker<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    at: (i32, i32),
    marker: Marker,
    color: RGBColor,
) -> DrawResult<DB> {
    let (fill, edge) = (color.filled(), BLACK.stroke_width(1));
    let r = 8;
    let (x, y) = at;
    match marker {
        Marker::Circle => {
            area.draw(&Circle::new(at, r, fill))?;
            area.draw(&Circle::new(at, r, edge))
        }
        Marker::Triangle => {
            let corners = vec![
                (x, y - r - 2),
                (x + r + 1, y + r - 2),
                (x - r - 1, y + r - 2),
            ];
            area.draw(&Polygon::new(corners.clone(), fill))?;
            area.draw(&PathElement::new(
                [corners.clone(), vec![corners[0]]].concat(),
                edge,
            ))
        }
        Marker::Square => {
            let corners = [(x - r + 1, y - r + 1), (x + r - 1, y + r - 1)];
            area.draw(&Rectangle::new(corners, fill))?;
            area.draw(&Rectangle::new(corners, edge))
        }
        Marker::Cross => area.draw(&Cross::new(at, r, color.stroke_width(3))),
        Marker::Ring => area.draw(&Circle::new(at, r + 1, color.stroke_width(3))),
    }
}

/// One legend line: how it is drawn and its name.
pub enum Sample {
    Line(Line, RGBColor),
    Marker(Marker, RGBColor),
    Threshold,
    Bar(RGBColor),
}

fn legend_entries(data: &PlotData) -> Vec<(Sample, String)> {
    let mut entries: Vec<(Sample, String)> = Vec::new();
    for panel in &data.panels {
        for c in &panel.curves {
            if !entries.iter().any(|(_, n)| *n == c.name) {
                entries.push((Sample::Line(c.line, c.color), c.name.clone()));
            }
        }
    }
    for panel in &data.panels {
        for p in &panel.points {
            if !entries.iter().any(|(_, n)| *n == p.name) {
                entries.push((Sample::Marker(p.marker, p.color), p.name.clone()));
            }
        }
    }
    if !data.thresholds.is_empty() {
        entries.push((
            Sample::Threshold,
            "accuracy-drop threshold (validation, points)".into(),
        ));
    }
    entries
}

/// Legend lines in three columns, each sample drawn as its series is.
pub fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[(Sample, String)],
) -> DrawResult<DB> {
    let (w, _) = area.dim_in_pixel();
    let columns = 3;
    let column_width = (w as i32 - 120) / columns;
    let style = TextStyle::from((FONT, 19).into_font()).color(&BLACK);
    for (i, (sample, name)) in entries.iter().enumerate() {
        let x = 100 + (i as i32 % columns) * column_width;
        let y = 20 + (i as i32 / columns) * 34;
        let (a, b) = ((x, y), (x + 48, y));
        match sample {
            Sample::Line(line, color) => {
                let style = color.stroke_width(line.width());
                match line.dashes() {
                    None => area.draw(&PathElement::new(vec![a, b], style))?,
                    Some((on, off)) => {
                        area.draw(&DashedPathElement::new(vec![a, b], on, off, style))?
                    }
                }
            }
            Sample::Marker(m, color) => marker(area, (x + 24, y), *m, *color)?,
            Sample::Bar(color) => area.draw(&Rectangle::new(
                [(x + 12, y - 9), (x + 36, y + 9)],
                color.filled(),
            ))?,
            Sample::Threshold => area.draw(&DashedPathElement::new(
                vec![a, b],
                7,
                5,
                THRESHOLD.stroke_width(2),
            ))?,
        }
        area.draw(&Text::new(name.clone(), (x + 60, y - 11), style.clone()))?;
    }
    Ok(())
}
