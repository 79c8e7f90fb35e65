//! `subnet replay --plot FILE.png`: the window checkpoint's held-out loss and each miner's weight share
//! over windows, drawn on a small RGB canvas (lines, stacked areas and a 5x7 pixel font) and written
//! as PNG.

use anyhow::Context;
use std::path::Path;
use validator::replay::ReplayReport;

const WIDTH: usize = 900;
const HEIGHT: usize = 640;
const MARGIN_LEFT: usize = 70;
const MARGIN_RIGHT: usize = 110;
const BACKGROUND: [u8; 3] = [255, 255, 255];
const INK: [u8; 3] = [40, 40, 40];
const GRID: [u8; 3] = [225, 225, 225];
const PALETTE: [[u8; 3]; 8] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
];

struct Canvas {
    pixels: Vec<u8>,
}

/// A plot area on the canvas: pixel rectangle and the data ranges it maps.
struct Panel {
    left: usize,
    top: usize,
    width: usize,
    height: usize,
    x_max: f64,
    y_min: f64,
    y_max: f64,
}

impl Panel {
    fn x(&self, x: f64) -> f64 {
        self.left as f64 + x / self.x_max.max(1e-12) * self.width as f64
    }

    fn y(&self, y: f64) -> f64 {
        let t = (y - self.y_min) / (self.y_max - self.y_min).max(1e-12);
        (self.top + self.height) as f64 - t * self.height as f64
    }
}

impl Canvas {
    fn new() -> Self {
        Self {
            pixels: BACKGROUND.repeat(WIDTH * HEIGHT),
        }
    }

    fn set(&mut self, x: i64, y: i64, color: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < WIDTH && (y as usize) < HEIGHT {
            let i = 3 * (y as usize * WIDTH + x as usize);
            self.pixels[i..i + 3].copy_from_slice(&color);
        }
    }

    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), color: [u8; 3], thick: i64) {
        let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        for s in 0..=steps {
            let t = s as f64 / steps as f64;
            let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
            for dx in 0..thick {
                for dy in 0..thick {
                    self.set(x.round() as i64 + dx, y.round() as i64 + dy, color);
                }
            }
        }
    }

    fn column(&mut self, x: i64, y_top: f64, y_bottom: f64, color: [u8; 3]) {
        let (a, b) = (y_top.round() as i64, y_bottom.round() as i64);
        for y in a.min(b)..=a.max(b) {
            self.set(x, y, color);
        }
    }

    /// Text in the 5x7 font at `scale`, top-left at (x, y).
    fn text(&mut self, x: usize, y: usize, text: &str, color: [u8; 3], scale: usize) {
        for (i, c) in text.chars().enumerate() {
            let rows = glyph(c);
            for (r, row) in rows.iter().enumerate() {
                for col in 0..5 {
                    if row & (0b10000 >> col) != 0 {
                        for sx in 0..scale {
                            for sy in 0..scale {
                                self.set(
                                    (x + i * 6 * scale + col * scale + sx) as i64,
                                    (y + r * scale + sy) as i64,
                                    color,
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    fn frame(&mut self, p: &Panel, title: &str, y_labels: &[f64]) {
        for &v in y_labels {
            let y = p.y(v);
            self.line((p.left as f64, y), ((p.left + p.width) as f64, y), GRID, 1);
            self.text(
                8,
                (y as usize).saturating_sub(3),
                &format!("{v:.2}"),
                INK,
                1,
            );
        }
        let (l, t, r, b) = (
            p.left as f64,
            p.top as f64,
            (p.left + p.width) as f64,
            (p.top + p.height) as f64,
        );
        self.line((l, t), (l, b), INK, 1);
        self.line((l, b), (r, b), INK, 1);
        self.text(p.left, p.top.saturating_sub(22), title, INK, 2);
    }

    fn write(&self, path: &Path) -> anyhow::Result<()> {
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mut encoder =
            png::Encoder::new(std::io::BufWriter::new(file), WIDTH as u32, HEIGHT as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&self.pixels)?;
        writer.finish()?;
        Ok(())
    }
}

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
/// share as stacked areas below.
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
            (format!("uid {uid}"), PALETTE[k % PALETTE.len()], shares)
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

/// Draws `chart` to a PNG file.
pub fn draw(chart: &Chart, path: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(!chart.losses.is_empty(), "no windows to plot");
    let mut canvas = Canvas::new();
    let n = chart.losses.len();
    let x_max = (n.max(2) - 1) as f64;
    let width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;

    draw_losses(&mut canvas, chart, x_max, width);
    draw_shares(&mut canvas, chart, x_max, width);
    let label = format!(
        "window {} to {}",
        chart.first_window,
        chart.first_window + n as u64 - 1
    );
    canvas.text(MARGIN_LEFT, HEIGHT - 30, &label, INK, 2);
    canvas.text(MARGIN_LEFT, 290, &label, INK, 1);
    canvas.write(path)
}

/// The loss panel, with the floor as a dashed line.
fn draw_losses(canvas: &mut Canvas, chart: &Chart, x_max: f64, width: usize) {
    let losses = &chart.losses;
    let (lo, hi) = losses
        .iter()
        .chain(&chart.floor)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &l| {
            (a.min(l), b.max(l))
        });
    let pad = ((hi - lo) * 0.05).max(1e-3);
    let loss_panel = Panel {
        left: MARGIN_LEFT,
        top: 40,
        width,
        height: 230,
        x_max,
        y_min: lo - pad,
        y_max: hi + pad,
    };
    let ticks: Vec<f64> = (0..=4)
        .map(|i| loss_panel.y_min + (loss_panel.y_max - loss_panel.y_min) * i as f64 / 4.0)
        .collect();
    canvas.frame(&loss_panel, "held-out loss", &ticks);
    if let Some(floor) = chart.floor {
        let y = loss_panel.y(floor);
        for px in (0..width).step_by(12) {
            let x = (loss_panel.left + px) as f64;
            canvas.line((x, y), (x + 6.0, y), PALETTE[3], 1);
        }
        canvas.text(
            loss_panel.left + width + 8,
            (y as usize).saturating_sub(3),
            "floor",
            PALETTE[3],
            1,
        );
    }
    for (i, pair) in losses.windows(2).enumerate() {
        canvas.line(
            (loss_panel.x(i as f64), loss_panel.y(pair[0])),
            (loss_panel.x(i as f64 + 1.0), loss_panel.y(pair[1])),
            PALETTE[0],
            2,
        );
    }
}

/// The share panel: stacked areas, one band each, in order, with their legend.
fn draw_shares(canvas: &mut Canvas, chart: &Chart, x_max: f64, width: usize) {
    let n = chart.losses.len();
    let share_panel = Panel {
        left: MARGIN_LEFT,
        top: 350,
        width,
        height: 230,
        x_max,
        y_min: 0.0,
        y_max: 1.0,
    };
    canvas.frame(
        &share_panel,
        &chart.shares_title,
        &[0.0, 0.25, 0.5, 0.75, 1.0],
    );
    let share = |w: usize, band: &[f64]| band.get(w).copied().unwrap_or(0.0);
    for px in 0..=width {
        let x = px as f64 / width as f64 * x_max;
        let (i, t) = (x.floor() as usize, x - x.floor());
        let mut bottom = 0.0;
        for (_, color, values) in &chart.bands {
            let a = share(i.min(n - 1), values);
            let b = share((i + 1).min(n - 1), values);
            let value = a + t * (b - a);
            if value > 0.0 {
                canvas.column(
                    (share_panel.left + px) as i64,
                    share_panel.y(bottom + value),
                    share_panel.y(bottom),
                    *color,
                );
            }
            bottom += value;
        }
    }
    for (k, (label, color, _)) in chart.bands.iter().enumerate().take(20) {
        let y = share_panel.top + 10 + 14 * k;
        let x = WIDTH - MARGIN_RIGHT + 12;
        for dy in 0..8 {
            canvas.line(
                (x as f64, (y + dy) as f64),
                ((x + 10) as f64, (y + dy) as f64),
                *color,
                1,
            );
        }
        canvas.text(x + 16, y, label, INK, 1);
    }
}

/// Draws several curves over windows (index 0 first) in one panel, with the lowest reachable value
/// dashed where known and a legend below, to a PNG file.
pub fn curves(
    title: &str,
    series: &[(String, Vec<f64>)],
    floor: Option<f64>,
    path: &Path,
) -> anyhow::Result<()> {
    let n = series.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    anyhow::ensure!(n > 0, "no values to plot");
    let (lo, hi) = series
        .iter()
        .flat_map(|(_, v)| v.iter())
        .chain(&floor)
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &l| {
            (a.min(l), b.max(l))
        });
    let pad = ((hi - lo) * 0.05).max(1e-3);
    let width = WIDTH - MARGIN_LEFT - 40;
    let panel = Panel {
        left: MARGIN_LEFT,
        top: 40,
        width,
        height: 420,
        x_max: (n.max(2) - 1) as f64,
        y_min: lo - pad,
        y_max: hi + pad,
    };
    let mut canvas = Canvas::new();
    let ticks: Vec<f64> = (0..=6)
        .map(|i| panel.y_min + (panel.y_max - panel.y_min) * i as f64 / 6.0)
        .collect();
    canvas.frame(&panel, title, &ticks);
    if let Some(floor) = floor {
        let y = panel.y(floor);
        for px in (0..width).step_by(12) {
            let x = (panel.left + px) as f64;
            canvas.line((x, y), (x + 6.0, y), INK, 1);
        }
        canvas.text(
            panel.left + 4,
            (y as usize).saturating_sub(10),
            "floor",
            INK,
            1,
        );
    }
    for (k, (label, values)) in series.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        for (i, pair) in values.windows(2).enumerate() {
            canvas.line(
                (panel.x(i as f64), panel.y(pair[0])),
                (panel.x(i as f64 + 1.0), panel.y(pair[1])),
                color,
                2,
            );
        }
        let y = panel.top + panel.height + 40 + 16 * k;
        for dy in 0..8 {
            canvas.line(
                (MARGIN_LEFT as f64, (y + dy) as f64),
                ((MARGIN_LEFT + 14) as f64, (y + dy) as f64),
                color,
                1,
            );
        }
        canvas.text(MARGIN_LEFT + 22, y, label, INK, 1);
    }
    canvas.text(
        MARGIN_LEFT,
        panel.top + panel.height + 12,
        &format!("window 0 to {}", n - 1),
        INK,
        1,
    );
    canvas.write(path)
}

/// 5x7 glyphs, one row per byte, high bit on the left; unknown characters are blank.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_lowercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        ',' => [0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '/' => [0x01, 0x01, 0x02, 0x04, 0x08, 0x10, 0x10],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        'a' => [0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F],
        'b' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E],
        'c' => [0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E],
        'f' => [0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08],
        'j' => [0x02, 0x00, 0x06, 0x02, 0x02, 0x12, 0x0C],
        'k' => [0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12],
        'm' => [0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11],
        'p' => [0x00, 0x00, 0x1E, 0x11, 0x1E, 0x10, 0x10],
        'q' => [0x00, 0x00, 0x0D, 0x13, 0x0F, 0x01, 0x01],
        'v' => [0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'x' => [0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11],
        'y' => [0x00, 0x00, 0x11, 0x11, 0x0F, 0x01, 0x0E],
        'z' => [0x00, 0x00, 0x1F, 0x02, 0x04, 0x08, 0x1F],
        'd' => [0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F],
        'e' => [0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E],
        'g' => [0x00, 0x0F, 0x11, 0x11, 0x0F, 0x01, 0x0E],
        'h' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11],
        'i' => [0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E],
        'l' => [0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'n' => [0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11],
        'o' => [0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E],
        'r' => [0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10],
        's' => [0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E],
        't' => [0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06],
        'u' => [0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D],
        'w' => [0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A],
        _ => [0; 7],
    }
}
