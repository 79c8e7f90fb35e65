//! PNG figures of runs, drawn with plotters in DejaVu Sans: a replay's (or a localnet's) held-out
//! loss over windows above each miner's share as stacked bands, and the efficacy experiment's
//! curves.

use anyhow::Context;
use plotters::coord::Shift;
use plotters::coord::types::{RangedCoordf64, RangedCoordu64};
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;
use validator::replay::ReplayReport;

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 720;
const FONT: &str = "sans-serif";
const INK: RGBColor = RGBColor(40, 40, 40);
const FLOOR: RGBColor = RGBColor(110, 110, 110);
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];

/// A figure: a loss curve on top (with the lowest reachable loss, where known), stacked shares
/// below (weights, or emission), one band per miner.
pub struct Chart {
    pub first_window: u64,
    pub losses: Vec<f64>,
    pub floor: Option<f64>,
    pub shares_title: String,
    /// Per band: its label, its colour and its share in each window.
    pub bands: Vec<(String, [u8; 3], Vec<f64>)>,
}

/// The colour of band `k` among the honest (blues and greens) or the others (reds and oranges).
pub fn band_color(k: usize, honest: bool) -> [u8; 3] {
    const HONEST: [[u8; 3]; 4] = [
        [31, 119, 180],
        [44, 160, 44],
        [23, 190, 207],
        [127, 127, 127],
    ];
    const OTHER: [[u8; 3]; 4] = [
        [214, 39, 40],
        [255, 127, 14],
        [227, 119, 194],
        [140, 86, 75],
    ];
    if honest {
        HONEST[k % HONEST.len()]
    } else {
        OTHER[k % OTHER.len()]
    }
}

/// Draws the replayed windows: held-out loss of each window's checkpoint on top, each uid's weight
/// share as stacked bands below.
pub fn plot(report: &ReplayReport, path: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(!report.windows.is_empty(), "no windows to plot");
    let mut uids: Vec<u16> = report
        .windows
        .iter()
        .flat_map(|w| w.decisions.iter().map(|d| d.uid))
        .collect();
    uids.sort_unstable();
    uids.dedup();
    let bands = uids
        .iter()
        .enumerate()
        .map(|(k, &uid)| {
            let shares = report
                .windows
                .iter()
                .map(|w| {
                    w.decisions
                        .iter()
                        .find(|d| d.uid == uid)
                        .map_or(0.0, |d| d.weight)
                })
                .collect();
            let RGBColor(r, g, b) = PALETTE[k % PALETTE.len()];
            (format!("uid {uid}"), [r, g, b], shares)
        })
        .collect();
    draw(
        &Chart {
            first_window: report.windows[0].window,
            losses: report.windows.iter().map(|w| w.base_loss).collect(),
            floor: None,
            shares_title: "weight share".into(),
            bands,
        },
        path,
    )
}

/// The font the figures use, registered once: the same on every machine, none read from the
/// system.
fn register_font() -> anyhow::Result<()> {
    static ONCE: Once = Once::new();
    let mut failed = false;
    ONCE.call_once(|| {
        failed = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .is_err();
    });
    anyhow::ensure!(!failed, "the embedded DejaVu Sans font did not load");
    Ok(())
}

/// Renders `paint` on a white canvas and writes it to `path` as an RGB PNG.
fn write_png(
    path: &Path,
    size: (u32, u32),
    paint: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    register_font()?;
    let mut pixels = vec![255u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        root.fill(&WHITE)?;
        paint(&root)?;
        root.present()?;
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), size.0, size.1);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(())
}

/// The range `values` (and `floor`) span, padded by 5% (at least 1e-3) on each side.
fn value_range(values: impl Iterator<Item = f64>, floor: Option<f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .chain(floor)
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if lo > hi {
        return 0.0..1.0;
    }
    let pad = ((hi - lo) * 0.05).max(1e-3);
    lo - pad..hi + pad
}

/// Draws `chart` to a PNG file.
pub fn draw(chart: &Chart, path: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(!chart.losses.is_empty(), "no windows to plot");
    write_png(path, (WIDTH, HEIGHT), |root| {
        let (top, bottom) = root.split_vertically(HEIGHT * 45 / 100);
        draw_losses(&top, chart)?;
        draw_shares(&bottom, chart)
    })
}

/// The windows a chart spans, as the x axis reads them.
fn windows(chart: &Chart) -> std::ops::Range<u64> {
    let first = chart.first_window;
    first..first + (chart.losses.len().max(2) - 1) as u64
}

/// A panel over windows (x) and values (y).
type Panel<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordu64, RangedCoordf64>>;

/// A titled panel on `area` with its axes: windows `x` across, `y` up, described by `y_desc`.
fn panel<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    title: &str,
    x: std::ops::Range<u64>,
    y: std::ops::Range<f64>,
    y_desc: &str,
) -> anyhow::Result<Panel<'a, 'b>> {
    let mut plot = ChartBuilder::on(area)
        .caption(title, (FONT, 22).into_font().color(&INK))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y)?;
    plot.configure_mesh()
        .x_desc("window")
        .y_desc(y_desc)
        .label_style((FONT, 14).into_font().color(&INK))
        .axis_desc_style((FONT, 15).into_font().color(&INK))
        .light_line_style(WHITE)
        .y_label_formatter(&|y| format!("{y:.2}"))
        .draw()?;
    Ok(plot)
}

/// The legend of the panel's labelled series, in its upper right corner.
fn legend<'b: 'a, 'a>(plot: &mut Panel<'a, 'b>) -> anyhow::Result<()> {
    plot.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 14).into_font().color(&INK))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .draw()?;
    Ok(())
}

/// A dashed horizontal line at `floor` across windows `x`, labelled `label`.
fn floor_line(
    plot: &mut Panel<'_, '_>,
    x: std::ops::Range<u64>,
    floor: f64,
    label: &str,
) -> anyhow::Result<()> {
    let line = DashedLineSeries::new(
        [(x.start, floor), (x.end, floor)],
        8,
        6,
        FLOOR.stroke_width(1),
    );
    plot.draw_series(line)?
        .label(label)
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], FLOOR.stroke_width(1)));
    Ok(())
}

/// The loss panel, with the floor as a dashed line.
fn draw_losses(area: &DrawingArea<BitMapBackend<'_>, Shift>, chart: &Chart) -> anyhow::Result<()> {
    let (area, _) = area.split_horizontally(WIDTH - 150);
    let range = value_range(chart.losses.iter().copied(), chart.floor);
    let mut plot = panel(&area, "held-out loss", windows(chart), range, "loss (nats)")?;
    let first = chart.first_window;
    let points = chart
        .losses
        .iter()
        .enumerate()
        .map(|(i, &l)| (first + i as u64, l));
    plot.draw_series(LineSeries::new(points, PALETTE[0].stroke_width(2)))?
        .label("global checkpoint")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], PALETTE[0].stroke_width(2)));
    if let Some(floor) = chart.floor {
        floor_line(&mut plot, windows(chart), floor, "entropy floor")?;
    }
    legend(&mut plot)
}

/// The share panel: stacked bands, one per label, in order, with their legend on the right.
fn draw_shares(area: &DrawingArea<BitMapBackend<'_>, Shift>, chart: &Chart) -> anyhow::Result<()> {
    let (area, legend) = area.split_horizontally(WIDTH - 150);
    let mut plot = panel(
        &area,
        &chart.shares_title,
        windows(chart),
        0.0..1.0,
        "share",
    )?;
    // Each band is drawn as the area under its cumulative share, the highest first, so that each
    // lower one covers all but its own part.
    let n = chart.losses.len();
    let first = chart.first_window;
    let mut cumulative = vec![0.0; n];
    let mut tops = Vec::new();
    for (_, color, values) in &chart.bands {
        for (w, top) in cumulative.iter_mut().enumerate() {
            *top += values.get(w).copied().unwrap_or(0.0);
        }
        tops.push((RGBColor(color[0], color[1], color[2]), cumulative.clone()));
    }
    for (color, top) in tops.iter().rev() {
        let points = top.iter().enumerate().map(|(w, &y)| (first + w as u64, y));
        plot.draw_series(AreaSeries::new(points, 0.0, color.filled()))?;
    }
    for (k, (label, color, _)) in chart.bands.iter().enumerate().take(24) {
        let y = 40 + 20 * k as i32;
        let color = RGBColor(color[0], color[1], color[2]);
        legend.draw(&Rectangle::new([(8, y), (22, y + 12)], color.filled()))?;
        legend.draw(&Text::new(
            label.clone(),
            (28, y - 1),
            (FONT, 14).into_font().color(&INK),
        ))?;
    }
    Ok(())
}

/// Draws several curves over windows (index 0 first) in one panel, with the lowest reachable value
/// dashed where known and a legend, to a PNG file.
pub fn curves(
    title: &str,
    series: &[(String, Vec<f64>)],
    floor: Option<f64>,
    path: &Path,
) -> anyhow::Result<()> {
    let n = series.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    anyhow::ensure!(n > 0, "no values to plot");
    let x_max = (n.max(2) - 1) as u64;
    let range = value_range(series.iter().flat_map(|(_, v)| v.iter().copied()), floor);
    write_png(path, (WIDTH, HEIGHT), |root| {
        let mut plot = panel(root, title, 0..x_max, range, "loss (nats)")?;
        if let Some(floor) = floor {
            floor_line(&mut plot, 0..x_max, floor, "floor")?;
        }
        for (k, (label, values)) in series.iter().enumerate() {
            let color = PALETTE[k % PALETTE.len()];
            let points = values
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(i, &v)| (i as u64, v));
            plot.draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        legend(&mut plot)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pixels(path: &Path) -> (u32, u32, Vec<u8>) {
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    fn count(buf: &[u8], [r, g, b]: [u8; 3]) -> usize {
        buf.chunks(3).filter(|p| p == &[r, g, b]).count()
    }

    #[test]
    fn a_chart_draws_its_curve_its_bands_and_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.png");
        let (honest, other) = (band_color(0, true), band_color(0, false));
        draw(
            &Chart {
                first_window: 3,
                losses: vec![2.0, 1.5, 1.2, 1.1],
                floor: Some(1.0),
                shares_title: "emission share".into(),
                bands: vec![
                    ("honest".into(), honest, vec![0.5, 0.7, 0.8, 0.9]),
                    ("cheat".into(), other, vec![0.5, 0.3, 0.2, 0.1]),
                ],
            },
            &path,
        )
        .unwrap();
        let (width, height, buf) = pixels(&path);
        assert_eq!((width, height), (WIDTH, HEIGHT));
        // The honest band covers more of the panel than the cheater's, as its shares say.
        let (h, o) = (count(&buf, honest), count(&buf, other));
        assert!(h > 2 * o && o > 1000, "honest {h} px, other {o} px");
        // The curve is drawn, and text (anti-aliased glyphs: greys between ink and white) is there.
        let RGBColor(r, g, b) = PALETTE[0];
        assert!(count(&buf, [r, g, b]) > 100);
        let greys = buf
            .chunks(3)
            .filter(|p| p[0] == p[1] && p[1] == p[2] && p[0] > 60 && p[0] < 200)
            .count();
        assert!(greys > 500, "{greys} grey pixels");
    }

    #[test]
    fn curves_refuse_nothing_to_draw_and_draw_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        assert!(curves("t", &[], None, &path).is_err());
        let series = vec![
            ("one".to_string(), vec![3.0, 2.0, 1.5]),
            ("two".to_string(), vec![3.0, f64::NAN, 1.8]),
        ];
        curves("held-out loss by window", &series, Some(1.0), &path).unwrap();
        let (width, height, buf) = pixels(&path);
        assert_eq!((width, height), (WIDTH, HEIGHT));
        let RGBColor(r, g, b) = PALETTE[1];
        assert!(count(&buf, [r, g, b]) > 50);
    }
}
