//! Small PNG plots: line plots (loss curves: training loss per step, validation loss where measured;
//! any other series) and a confusion-matrix heatmap, drawn pixel by pixel with a 3x5 bitmap font for
//! axis numbers and labels: no font files, no system libraries, the same bytes on every machine.

use std::path::Path;

use anyhow::{Context, Result};

const W: usize = 800;
const H: usize = 500;
const LEFT: usize = 70;
const RIGHT: usize = 20;
const TOP: usize = 30;
const BOTTOM: usize = 50;
const SCALE: usize = 2;

type Rgb = [u8; 3];
const WHITE: Rgb = [255, 255, 255];
const BLACK: Rgb = [0, 0, 0];
const GREY: Rgb = [225, 225, 225];
const BLUE: Rgb = [31, 119, 180];
const RED: Rgb = [214, 39, 40];
const GREEN: Rgb = [44, 160, 44];

/// Colours of line-plot series, in order.
pub const PALETTE: [Rgb; 3] = [BLUE, RED, GREEN];

/// 3x5 glyphs, rows top to bottom, 3 bits each (4 = left pixel).
pub(crate) fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        '+' => [0, 2, 7, 2, 0],
        'e' => [0, 7, 7, 4, 7],
        's' => [0, 3, 6, 1, 6],
        't' => [2, 7, 2, 2, 3],
        'p' => [0, 7, 5, 7, 4],
        'l' => [6, 2, 2, 2, 7],
        'o' => [0, 7, 5, 5, 7],
        'r' => [0, 5, 6, 4, 4],
        'a' => [0, 3, 5, 5, 3],
        'i' => [2, 0, 2, 2, 2],
        'n' => [0, 6, 5, 5, 5],
        'v' => [0, 5, 5, 5, 2],
        'b' => [4, 4, 7, 5, 7],
        'c' => [0, 7, 4, 4, 7],
        'd' => [1, 1, 7, 5, 7],
        'f' => [3, 4, 7, 4, 4],
        'g' => [7, 5, 7, 1, 7],
        'h' => [4, 4, 7, 5, 5],
        'j' => [1, 0, 1, 5, 7],
        'k' => [4, 5, 6, 6, 5],
        'm' => [0, 7, 7, 5, 5],
        'q' => [0, 7, 5, 7, 1],
        'u' => [0, 5, 5, 5, 7],
        'w' => [0, 5, 5, 7, 7],
        'x' => [0, 5, 2, 2, 5],
        'y' => [5, 5, 7, 1, 7],
        'z' => [0, 7, 2, 4, 7],
        '_' => [0, 0, 0, 0, 7],
        ':' => [0, 2, 0, 2, 0],
        '(' => [1, 2, 2, 2, 1],
        ')' => [4, 2, 2, 2, 4],
        '/' => [1, 1, 2, 4, 4],
        _ => [0; 5],
    }
}

struct Canvas {
    px: Vec<u8>,
    w: usize,
    h: usize,
}

impl Canvas {
    fn new() -> Self {
        Self::sized(W, H)
    }

    fn sized(w: usize, h: usize) -> Self {
        Self {
            px: WHITE.repeat(w * h),
            w,
            h,
        }
    }

    fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            let i = 3 * (y as usize * self.w + x as usize);
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn rect(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb) {
        for y in y0..y1 {
            for x in x0..x1 {
                self.set(x, y, c);
            }
        }
    }

    fn save(&self, path: &Path) -> Result<()> {
        crate::fsutil::write_with(path, |tmp| {
            let f = std::fs::File::create(tmp)?;
            let mut enc =
                png::Encoder::new(std::io::BufWriter::new(f), self.w as u32, self.h as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header().context("PNG header")?;
            w.write_image_data(&self.px).context("PNG data")?;
            w.finish().context("PNG end")?;
            Ok(())
        })
    }

    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.set(x, y, c);
            self.set(x, y + 1, c);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    fn text(&mut self, x: i64, y: i64, s: &str, c: Rgb) {
        for (k, ch) in s.chars().enumerate() {
            let g = glyph(ch);
            for (r, bits) in g.iter().enumerate() {
                for col in 0..3 {
                    if bits & (4 >> col) != 0 {
                        for dy in 0..SCALE {
                            for dx in 0..SCALE {
                                self.set(
                                    x + ((k * 4 + col) * SCALE + dx) as i64,
                                    y + (r * SCALE + dy) as i64,
                                    c,
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    fn text_width(s: &str) -> i64 {
        (s.chars().count() * 4 * SCALE) as i64
    }
}

fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// Draws `train` (step, loss) as a line and `val` as a line with dots; writes a PNG.
pub fn loss_curve(path: &Path, train: &[(f64, f64)], val: &[(f64, f64)]) -> Result<()> {
    let series = [
        Series {
            name: "train",
            points: train,
            dots: false,
        },
        Series {
            name: "val",
            points: val,
            dots: true,
        },
    ];
    line_plot(path, "step", "loss", &series)
}

/// One line of a [`line_plot`]: its legend name, (x, y) points and whether points get dots.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: &'a [(f64, f64)],
    pub dots: bool,
}

/// Line plot of up to three series (colours from [`PALETTE`]), y from 0; writes a PNG.
pub fn line_plot(path: &Path, x_label: &str, y_label: &str, series: &[Series]) -> Result<()> {
    let mut cv = Canvas::new();
    let pts = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(_, y)| y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, 0f64, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x1 < x0 {
        (x0, x1, y1) = (0.0, 1.0, 1.0);
    }
    if x1 == x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    y1 *= 1.05;
    let (pw, ph) = ((W - LEFT - RIGHT) as f64, (H - TOP - BOTTOM) as f64);
    let map = |x: f64, y: f64| -> (i64, i64) {
        (
            (LEFT as f64 + (x - x0) / (x1 - x0) * pw).round() as i64,
            (TOP as f64 + (1.0 - (y - y0) / (y1 - y0)) * ph).round() as i64,
        )
    };
    // Grid, ticks and numbers.
    for k in 0..=5 {
        let f = k as f64 / 5.0;
        let (gx, _) = map(x0 + f * (x1 - x0), y0);
        let (_, gy) = map(x0, y0 + f * (y1 - y0));
        cv.line((gx, TOP as i64), (gx, (H - BOTTOM) as i64), GREY);
        cv.line((LEFT as i64, gy), ((W - RIGHT) as i64, gy), GREY);
        let xs = fmt_num((x0 + f * (x1 - x0)).round());
        cv.text(
            gx - Canvas::text_width(&xs) / 2,
            (H - BOTTOM + 8) as i64,
            &xs,
            BLACK,
        );
        let ys = fmt_num(y0 + f * (y1 - y0));
        cv.text(
            LEFT as i64 - 6 - Canvas::text_width(&ys),
            gy - 5,
            &ys,
            BLACK,
        );
    }
    cv.line(
        (LEFT as i64, TOP as i64),
        (LEFT as i64, (H - BOTTOM) as i64),
        BLACK,
    );
    cv.line(
        (LEFT as i64, (H - BOTTOM) as i64),
        ((W - RIGHT) as i64, (H - BOTTOM) as i64),
        BLACK,
    );
    cv.text(
        (W / 2) as i64 - Canvas::text_width(x_label) / 2,
        (H - 18) as i64,
        x_label,
        BLACK,
    );
    cv.text(8, 8, y_label, BLACK);
    let mut legend_x = (W - RIGHT) as i64;
    for (s, colour) in series.iter().zip(PALETTE).rev() {
        legend_x -= Canvas::text_width(s.name) + 30;
        cv.text(legend_x, 8, s.name, colour);
    }
    for (s, colour) in series.iter().zip(PALETTE) {
        let p: Vec<(i64, i64)> = s
            .points
            .iter()
            .filter(|(_, y)| y.is_finite())
            .map(|&(x, y)| map(x, y))
            .collect();
        for w in p.windows(2) {
            cv.line(w[0], w[1], colour);
        }
        if s.dots {
            for &(x, y) in &p {
                for dx in -2..=2 {
                    for dy in -2..=2 {
                        cv.set(x + dx, y + dy, colour);
                    }
                }
            }
        }
    }
    cv.save(path)
}

/// A confusion-matrix heatmap: row `t`, column `p` holds the cells of true class `t` predicted as
/// `p`, shaded by the fraction of row `t` (white 0 to dark blue 1), with the count written in the
/// cell when it fits. Classes are numbered along the axes (0-based, in the order of the matrix).
pub fn confusion_heatmap(path: &Path, confusion: &[Vec<u64>]) -> Result<()> {
    let k = confusion.len().max(1);
    let (left, top, side) = (70usize, 50usize, 600usize);
    let cell = (side / k).max(2);
    let grid = cell * k;
    let mut cv = Canvas::sized(left + grid + 30, top + grid + 60);
    for (t, row) in confusion.iter().enumerate() {
        let total: u64 = row.iter().sum();
        for (p, &n) in row.iter().enumerate() {
            let f = if total > 0 {
                n as f64 / total as f64
            } else {
                0.0
            };
            let shade = |lo: u8, hi: u8| (lo as f64 + f * (hi as f64 - lo as f64)).round() as u8;
            let colour = [shade(255, 8), shade(255, 48), shade(255, 107)];
            let (x0, y0) = ((left + p * cell) as i64, (top + t * cell) as i64);
            cv.rect((x0, y0), (x0 + cell as i64, y0 + cell as i64), colour);
            let label = n.to_string();
            if Canvas::text_width(&label) + 4 <= cell as i64 && cell >= 14 {
                let ink = if f > 0.5 { WHITE } else { BLACK };
                cv.text(
                    x0 + (cell as i64 - Canvas::text_width(&label)) / 2,
                    y0 + cell as i64 / 2 - 5,
                    &label,
                    ink,
                );
            }
        }
    }
    // Grid lines, class numbers where they fit.
    for i in 0..=k {
        let o = (i * cell) as i64;
        cv.line(
            (left as i64 + o, top as i64),
            (left as i64 + o, (top + grid) as i64),
            GREY,
        );
        cv.line(
            (left as i64, top as i64 + o),
            ((left + grid) as i64, top as i64 + o),
            GREY,
        );
    }
    let step = (((3 * 4 * SCALE) as f64 / cell as f64).ceil() as usize).max(1);
    for i in (0..k).step_by(step) {
        let s = i.to_string();
        let c = (i * cell + cell / 2) as i64;
        cv.text(
            left as i64 + c - Canvas::text_width(&s) / 2,
            (top + grid + 6) as i64,
            &s,
            BLACK,
        );
        cv.text(
            left as i64 - 6 - Canvas::text_width(&s),
            top as i64 + c - 5,
            &s,
            BLACK,
        );
    }
    cv.text(
        (left + grid / 2) as i64 - Canvas::text_width("predicted") / 2,
        (top + grid + 30) as i64,
        "predicted",
        BLACK,
    );
    cv.text(8, 12, "true (rows) x predicted (columns)", BLACK);
    cv.save(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_decodable_png_with_the_curve() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("loss.png");
        let train: Vec<(f64, f64)> = (1..=100)
            .map(|s| (s as f64, 2.0 / (s as f64).sqrt()))
            .collect();
        loss_curve(&p, &train, &[(50.0, 0.4), (100.0, 0.3)]).unwrap();
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&p).unwrap()));
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (W as u32, H as u32));
        let blue = buf.chunks(3).filter(|c| *c == BLUE).count();
        let red = buf.chunks(3).filter(|c| *c == RED).count();
        assert!(blue > 500 && red > 20, "{blue} {red}");
        // Empty input still gives a picture (axes only).
        loss_curve(&p, &[], &[]).unwrap();
    }

    #[test]
    fn heatmap_is_a_png() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.png");
        confusion_heatmap(&p, &[vec![5, 1], vec![0, 7]]).unwrap();
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&p).unwrap()));
        assert!(dec.read_info().is_ok());
        confusion_heatmap(&p, &[]).unwrap();
    }
}
