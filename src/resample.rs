//! Grey image resizing with `image`'s triangle (bilinear) filter, bit for bit, without its
//! per-pixel generic path: the taps of each output column and row are computed once, then
//! every row is a short dot product over a contiguous slice. `image::imageops::resize` took
//! ≈ 300 µs to shrink a 140×84 UnityEyes crop to 55×35 (a quarter of ingest's CPU); this
//! takes a few µs (`simgan bench --sections ingest`).
//!
//! Exactness: the same weights (`1 − |x|` at `(i − centre) / max(ratio, 1)`, normalised by their
//! sum, in f32), the same order of accumulation (a vertical pass into f32, then a horizontal
//! one), the same clamp to `[0, 255]` and round-half-away-from-zero, so the output equals
//! `resize(img, w, h, FilterType::Triangle)` exactly (tested on many sizes).

use image::GrayImage;

/// One output sample's taps: the first input index and the normalised weights.
struct Taps {
    left: usize,
    weights: Vec<f32>,
}

/// `image`'s per-output-pixel window and weights for `input` → `output` samples.
fn taps(input: u32, output: u32) -> Vec<Taps> {
    let ratio = input as f32 / output as f32;
    let sratio = if ratio < 1.0 { 1.0 } else { ratio };
    let support = sratio; // the triangle's support (1) times sratio
    (0..output)
        .map(|o| {
            let centre = (o as f32 + 0.5) * ratio;
            let left = ((centre - support).floor() as i64).clamp(0, i64::from(input) - 1);
            let right = ((centre + support).ceil() as i64).clamp(left + 1, i64::from(input));
            let centre = centre - 0.5;
            let mut weights: Vec<f32> = (left..right)
                .map(|i| {
                    let x = ((i as f32 - centre) / sratio).abs();
                    if x < 1.0 { 1.0 - x } else { 0.0 }
                })
                .collect();
            let sum: f32 = weights.iter().sum();
            for w in &mut weights {
                *w /= sum;
            }
            Taps {
                left: left as usize,
                weights,
            }
        })
        .collect()
}

/// `img` resized to `w`×`h` with the triangle filter: equal to
/// `image::imageops::resize(img, w, h, FilterType::Triangle)`.
pub fn resize_triangle(img: &GrayImage, w: u32, h: u32) -> GrayImage {
    let (iw, ih) = img.dimensions();
    if iw == 0 || ih == 0 || (iw, ih) == (w, h) || w == 0 || h == 0 {
        return image::imageops::resize(img, w, h, image::imageops::FilterType::Triangle);
    }
    let src = img.as_raw();
    let stride = iw as usize;
    // Vertical pass: ih rows → h rows, in f32 (as `image` keeps its intermediate).
    let mut mid = vec![0f32; stride * h as usize];
    for (out_row, t) in mid.chunks_exact_mut(stride).zip(taps(ih, h)) {
        for (k, &wt) in t.weights.iter().enumerate() {
            let row = &src[(t.left + k) * stride..][..stride];
            for (acc, &p) in out_row.iter_mut().zip(row) {
                *acc += f32::from(p) * wt;
            }
        }
    }
    // Horizontal pass: iw columns → w columns, clamped and rounded to u8.
    let cols = taps(iw, w);
    let mut out = Vec::with_capacity((w * h) as usize);
    for row in mid.chunks_exact(stride) {
        for t in &cols {
            let mut acc = 0f32;
            for (&p, &wt) in row[t.left..].iter().zip(&t.weights) {
                acc += p * wt;
            }
            out.push(acc.clamp(0.0, 255.0).round() as u8);
        }
    }
    // The buffer is w·h by construction.
    GrayImage::from_raw(w, h, out).unwrap_or_else(|| GrayImage::new(w, h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::imageops::FilterType;

    /// Equal to `image`'s triangle resize, pixel for pixel, shrinking and enlarging, on a
    /// textured image.
    #[test]
    fn equals_image_triangle_resize() {
        let img = GrayImage::from_fn(140, 84, |x, y| {
            image::Luma([((x * 37 + y * 91) ^ (x * y)).wrapping_mul(2654435761) as u8])
        });
        for (w, h) in [
            (55, 35),
            (70, 42),
            (1, 1),
            (139, 83),
            (200, 120),
            (55, 84),
            (140, 35),
        ] {
            let want = image::imageops::resize(&img, w, h, FilterType::Triangle);
            assert_eq!(resize_triangle(&img, w, h), want, "{w}×{h}");
        }
        let odd = image::imageops::crop_imm(&img, 3, 5, 97, 61).to_image();
        for (w, h) in [(55, 35), (13, 7)] {
            let want = image::imageops::resize(&odd, w, h, FilterType::Triangle);
            assert_eq!(resize_triangle(&odd, w, h), want, "97×61 → {w}×{h}");
        }
    }
}
