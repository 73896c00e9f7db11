//! A PNG heatmap of a square similarity matrix (module × module), drawn pixel by pixel with the 3x5
//! bitmap font of [`crate::train::plot`]: no font files, the same bytes on every machine.
//!
//! Colours: a diverging blue–white–red scale over [−1, 1] (cosine similarity), with a colour bar.
//! Rows and columns are labelled with their index (every label when they fit, else every n-th).

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::train::plot::glyph;

type Rgb = [u8; 3];
const WHITE: Rgb = [255, 255, 255];
const BLACK: Rgb = [0, 0, 0];
const BLUE: [f64; 3] = [33.0, 102.0, 172.0];
const RED: [f64; 3] = [178.0, 24.0, 43.0];
const MARGIN: usize = 60;
const BAR: usize = 80;
const SCALE: usize = 2;

/// Colour of a value in [−1, 1]: blue (−1) through white (0) to red (1); NaN is grey.
pub fn colour(v: f64) -> Rgb {
    if !v.is_finite() {
        return [160, 160, 160];
    }
    let v = v.clamp(-1.0, 1.0);
    let end = if v < 0.0 { BLUE } else { RED };
    let t = v.abs();
    let mix = |k: usize| (255.0 + (end[k] - 255.0) * t).round() as u8;
    [mix(0), mix(1), mix(2)]
}

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: usize, y: usize, c: Rgb) {
        if x < self.w && y < self.h {
            let i = 3 * (y * self.w + x);
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn rect(&mut self, x: usize, y: usize, w: usize, h: usize, c: Rgb) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, c);
            }
        }
    }

    fn text(&mut self, x: usize, y: usize, s: &str, c: Rgb) {
        for (k, ch) in s.chars().enumerate() {
            for (r, bits) in glyph(ch).iter().enumerate() {
                for col in 0..3 {
                    if bits & (4 >> col) != 0 {
                        self.rect(x + (k * 4 + col) * SCALE, y + r * SCALE, SCALE, SCALE, c);
                    }
                }
            }
        }
    }
}

fn text_width(s: &str) -> usize {
    s.chars().count() * 4 * SCALE
}

/// Draws the `n × n` row-major matrix `m` (values expected in [−1, 1]) as a PNG at `path` (written
/// atomically).
pub fn similarity_heatmap(path: &Path, m: &[f64], n: usize) -> Result<()> {
    let bytes = similarity_heatmap_png(m, n)?;
    crate::fsutil::write_bytes(path, &bytes)
}

/// The PNG bytes of [`similarity_heatmap`].
pub fn similarity_heatmap_png(m: &[f64], n: usize) -> Result<Vec<u8>> {
    if n == 0 || m.len() != n * n {
        bail!("heatmap needs a non-empty square matrix");
    }
    let cell = (600 / n).clamp(2, 40);
    let side = cell * n;
    let (w, h) = (MARGIN + side + BAR + 20, MARGIN + side + 30);
    let mut cv = Canvas {
        w,
        h,
        px: WHITE.repeat(w * h),
    };
    for i in 0..n {
        for j in 0..n {
            cv.rect(
                MARGIN + j * cell,
                MARGIN + i * cell,
                cell,
                cell,
                colour(m[i * n + j]),
            );
        }
    }
    // Labels: as many as fit without overlapping (12 px per label).
    let every = (12usize).div_ceil(cell).max(1);
    for i in (0..n).step_by(every) {
        let s = i.to_string();
        let y = MARGIN + i * cell + cell / 2;
        cv.text(MARGIN - 4 - text_width(&s), y.saturating_sub(5), &s, BLACK);
        let x = MARGIN + i * cell + cell / 2;
        cv.text(x.saturating_sub(text_width(&s) / 2), MARGIN - 14, &s, BLACK);
    }
    cv.text(MARGIN, 10, "modules", BLACK);
    // Colour bar from 1 (top) to -1 (bottom).
    let bx = MARGIN + side + 20;
    for y in 0..side {
        let v = 1.0 - 2.0 * y as f64 / (side.max(2) - 1) as f64;
        cv.rect(bx, MARGIN + y, 16, 1, colour(v));
    }
    cv.text(bx + 20, MARGIN, "1", BLACK);
    cv.text(bx + 20, MARGIN + side / 2 - 5, "0", BLACK);
    cv.text(bx + 20, MARGIN + side - 10, "-1", BLACK);
    let mut out = vec![];
    {
        let mut enc = png::Encoder::new(&mut out, w as u32, h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header().context("PNG header")?;
        wr.write_image_data(&cv.px).context("PNG data")?;
        wr.finish().context("PNG end")?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodable_with_the_right_colours() {
        let m = [1.0, -0.5, -0.5, 1.0];
        let bytes = similarity_heatmap_png(&m, 2).unwrap();
        let dec = png::Decoder::new(std::io::Cursor::new(&bytes));
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        let w = info.width as usize;
        let at = |x: usize, y: usize| {
            [
                buf[3 * (y * w + x)],
                buf[3 * (y * w + x) + 1],
                buf[3 * (y * w + x) + 2],
            ]
        };
        // 2 modules: cells of 40 px from (60, 60).
        assert_eq!(at(70, 70), colour(1.0));
        assert_eq!(at(110, 70), colour(-0.5));
        assert_eq!(bytes, similarity_heatmap_png(&m, 2).unwrap());
        assert!(similarity_heatmap_png(&m, 3).is_err());
        assert_eq!(colour(0.0), WHITE);
    }
}
