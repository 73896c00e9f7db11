//! A small PNG line plot of the loss curves (training loss per step, validation loss where measured),
//! drawn pixel by pixel with a 3x5 bitmap font for the axis numbers: no font files, no system
//! libraries, the same bytes on every machine.

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
        'm' => [0, 6, 7, 5, 5],
        'd' => [1, 1, 7, 5, 7],
        'u' => [0, 5, 5, 5, 7],
        'c' => [0, 7, 4, 4, 7],
        _ => [0; 5],
    }
}

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn new() -> Self {
        Self {
            px: WHITE.repeat(W * H),
        }
    }

    fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < W && (y as usize) < H {
            let i = 3 * (y as usize * W + x as usize);
            self.px[i..i + 3].copy_from_slice(&c);
        }
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
    let mut cv = Canvas::new();
    let pts = train.iter().chain(val).filter(|(_, y)| y.is_finite());
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
    cv.text((W / 2) as i64 - 16, (H - 18) as i64, "step", BLACK);
    cv.text(8, 8, "loss", BLACK);
    cv.text((W - RIGHT) as i64 - 150, 8, "train", BLUE);
    cv.text((W - RIGHT) as i64 - 70, 8, "val", RED);
    for (series, colour) in [(train, BLUE), (val, RED)] {
        let p: Vec<(i64, i64)> = series
            .iter()
            .filter(|(_, y)| y.is_finite())
            .map(|&(x, y)| map(x, y))
            .collect();
        for w in p.windows(2) {
            cv.line(w[0], w[1], colour);
        }
        if colour == RED {
            for &(x, y) in &p {
                for dx in -2..=2 {
                    for dy in -2..=2 {
                        cv.set(x + dx, y + dy, colour);
                    }
                }
            }
        }
    }
    crate::fsutil::write_with(path, |tmp| {
        let f = std::fs::File::create(tmp)?;
        let mut enc = png::Encoder::new(std::io::BufWriter::new(f), W as u32, H as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().context("PNG header")?;
        w.write_image_data(&cv.px).context("PNG data")?;
        w.finish().context("PNG end")?;
        Ok(())
    })
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
}
