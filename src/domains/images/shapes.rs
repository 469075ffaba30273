//! Built-in procedural shape-classification domain in two looks, so the S+U pipeline runs on a
//! non-eye domain with nothing downloaded.
//!
//! Each sample is one RGB image of one shape from [`CLASSES`] on a background; the label is the
//! class index. [`Look::Synthetic`] is what a simple simulator renders (flat colours,
//! anti-aliased edges); [`Look::RealLike`] is what a camera would capture of the *same* scene.
//!
//! # Scene model (shared by both looks)
//!
//! The class is uniform over the 5 classes. The shape has a bounding radius `r` uniform in
//! 25–40 % of the side, a centre uniform over the positions that keep that bounding circle inside
//! the image, and a uniform rotation. Shapes, all inscribed in the radius-`r` circle: `circle`
//! (radius `r`), `square` (half-side `r/√2`), `triangle` (equilateral, circumradius `r`), `cross`
//! (two bars of half-length `0.92 r`, half-width `0.3 r`), `ring` (annulus, radii `0.55 r`–`r`).
//! The foreground colour is saturated (HSV: any hue, saturation 0.7–1, value 0.65–1); the
//! background is a muted random colour whose luminance (Rec. 601) differs from the foreground's
//! by at least 0.25. Edges are anti-aliased analytically: the signed distance
//! of each pixel centre to the outline becomes a coverage `clamp(0.5 − d, 0, 1)`.
//!
//! # The appearance gap (real-like look only)
//!
//! Applied in this order on a float RGB buffer in `[0, 1]` (output scale; no gamma curve is
//! modelled):
//! 1. `texture`: background clutter, value noise at three scales (2, 4 and 8 cells per side,
//!    weights 0.5/0.3/0.2, smoothstep-interpolated, so it scales with the image), added with
//!    amplitude `0.5 · texture` and a random per-channel tone (0.75–1.25). It lies fully on the
//!    background and at a quarter of that amplitude on the foreground (a printed surface is not
//!    flat either), blended by coverage.
//! 2. `lighting`: a multiplicative gain `1 + g·(u·dir) − 0.3·lighting·|u|²/2`, with `u` the pixel
//!    position in `[-1, 1]²`, `dir` a random direction and `g = 0.35·lighting·U(0.5, 1)`: a linear
//!    illumination gradient plus vignetting.
//! 3. `tint`: per-channel colour-cast multipliers.
//! 4. `contrast`: `v ← 0.5 + contrast·(v − 0.5)`.
//! 5. `blur_sigma`: separable Gaussian optics blur, σ = `blur_sigma · size/32` px (edges clamped).
//! 6. `noise_sigma`: additive i.i.d. Gaussian sensor noise, σ = `noise_sigma/255`, per channel.
//!
//! Then both looks clamp to `[0, 1]` and quantise to `u8` (round to nearest). The synthetic look
//! ignores every real-like knob. Defaults ([`ShapeParams::real_like`]): blur 1.0, noise 8,
//! texture 0.5, lighting 0.5, tint `[1.08, 1.0, 0.88]` (warm cast), contrast 0.8. The gap is
//! local and appearance-only, learnable by a small convolutional refiner; no knob moves the shape.
//! [`render`] never panics: non-finite or out-of-range knobs are replaced or clamped.
//!
//! # Determinism
//!
//! [`render`] is a pure function of `(params, seed, index)`. Two independent per-sample streams
//! are derived with SplitMix64 from `(seed, index)`: the geometry stream (class, shape, colours;
//! it depends only on `size`, so both looks of a sample share the scene exactly) and the appearance
//! stream (clutter, lighting, noise). Samples are independent of each other and of threads. The
//! streams use `rand`'s `SmallRng` (Xoshiro256++ on 64-bit targets): bytes are reproducible for a
//! given `rand` version and target word size.

use std::f32::consts::{FRAC_1_SQRT_2, TAU};

use image::RgbImage;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// Class names; the label of a sample is an index into this array.
pub const CLASSES: [&str; 5] = ["circle", "square", "triangle", "cross", "ring"];

/// Minimum Rec. 601 luminance difference (in `[0, 1]`) between foreground and background.
const MIN_LUMA_CONTRAST: f32 = 0.25;

/// Which look to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// Flat colours: what a simple simulator renders.
    Synthetic,
    /// Clutter, lighting, colour cast, low contrast, blur and noise: what a camera captures.
    RealLike,
}

/// Every knob of the domain (see the module docs for the exact model).
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeParams {
    /// Which look to render; the knobs below apply to [`Look::RealLike`] only.
    pub look: Look,
    /// Square image side in px (default 32; meant for 16..=128; 0 is rendered as 1).
    pub size: u32,
    /// Optics blur σ in px at size 32, scaled by `size/32`.
    pub blur_sigma: f32,
    /// Sensor noise standard deviation in 8-bit levels.
    pub noise_sigma: f32,
    /// Background clutter amplitude, `0..=1`.
    pub texture: f32,
    /// Illumination gradient and vignetting strength, `0..=1`.
    pub lighting: f32,
    /// Colour-cast multipliers for R, G, B.
    pub tint: [f32; 3],
    /// Contrast multiplier around mid grey (1 = unchanged).
    pub contrast: f32,
}

impl ShapeParams {
    /// The synthetic look (the real-like knobs hold their defaults and are ignored).
    pub fn synthetic(size: u32) -> Self {
        Self {
            look: Look::Synthetic,
            ..Self::real_like(size)
        }
    }

    /// The real-like look with the default appearance gap.
    pub fn real_like(size: u32) -> Self {
        Self {
            look: Look::RealLike,
            size,
            blur_sigma: 1.0,
            noise_sigma: 8.0,
            texture: 0.5,
            lighting: 0.5,
            tint: [1.08, 1.0, 0.88],
            contrast: 0.8,
        }
    }
}

const GEOMETRY_STREAM: u64 = 0x6A09_E667_F3BC_C908;
const APPEARANCE_STREAM: u64 = 0xBB67_AE85_84CA_A73B;
/// Value-noise scales: (cells per side, weight). At most 8 cells: 81 lattice values.
const SCALES: [(usize, f32); 3] = [(2, 0.5), (4, 0.3), (8, 0.2)];
const CLUTTER_GAIN: f32 = 0.5;
const FG_CLUTTER: f32 = 0.25;
const GRADIENT_GAIN: f32 = 0.35;
const VIGNETTE_GAIN: f32 = 0.3;

/// Render sample `index` of the stream seeded by `seed`: the image and its class (index into CLASSES).
/// Deterministic: same (params, seed, index) -> same bytes, on any thread, independent of other indices.
pub fn render(p: &ShapeParams, seed: u64, index: u64) -> (RgbImage, usize) {
    let size = p.size.max(1);
    let scene = scene_for(seed, index, size);
    let cov = coverage(&scene, size);
    let mut buf = vec![0f32; cov.len() * 3];
    match p.look {
        Look::Synthetic => {
            for (px, &a) in buf.chunks_exact_mut(3).zip(cov.iter()) {
                for (c, v) in px.iter_mut().enumerate() {
                    *v = scene.bg[c] + a * (scene.fg[c] - scene.bg[c]);
                }
            }
        }
        Look::RealLike => {
            let mut rng = SmallRng::seed_from_u64(stream_seed(seed, index, APPEARANCE_STREAM));
            develop(p, &scene, &cov, size, &mut rng, &mut buf);
        }
    }
    let mut img = RgbImage::new(size, size);
    let out: &mut [u8] = &mut img;
    for (o, &v) in out.iter_mut().zip(buf.iter()) {
        *o = (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
    }
    (img, scene.class)
}

/// SplitMix64 finaliser (a bijection on `u64`).
fn splitmix64(z: u64) -> u64 {
    let mut z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Seed of one per-sample stream; for a fixed seed, distinct indices give distinct seeds.
fn stream_seed(seed: u64, index: u64, stream: u64) -> u64 {
    splitmix64(splitmix64(seed ^ stream) ^ index)
}

/// One scene: class, geometry (pixel units, y down) and colours.
#[derive(Debug, Clone, PartialEq)]
struct Scene {
    class: usize,
    cx: f32,
    cy: f32,
    r: f32,
    cos: f32,
    sin: f32,
    fg: [f32; 3],
    bg: [f32; 3],
}

/// The scene of sample `index`: a function of `(seed, index, size)` only, never of the look.
fn scene_for(seed: u64, index: u64, size: u32) -> Scene {
    let rng = &mut SmallRng::seed_from_u64(stream_seed(seed, index, GEOMETRY_STREAM));
    let side = size as f32;
    let class = rng.random_range(0..CLASSES.len());
    let r = side * rng.random_range(0.25f32..0.40);
    let cx = r + rng.random::<f32>() * (side - 2.0 * r);
    let cy = r + rng.random::<f32>() * (side - 2.0 * r);
    let theta = rng.random::<f32>() * TAU;
    let (h, s, v) = (
        rng.random::<f32>(),
        rng.random_range(0.7f32..1.0),
        rng.random_range(0.65f32..1.0),
    );
    let fg = hsv(h, s, v);
    let bg = background(rng, fg);
    Scene {
        class,
        cx,
        cy,
        r,
        cos: theta.cos(),
        sin: theta.sin(),
        fg,
        bg,
    }
}

fn luma(c: [f32; 3]) -> f32 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}

fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    let h6 = (h * 6.0).rem_euclid(6.0);
    let f = h6.fract();
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match h6 as u32 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// A muted random colour with enough luminance contrast against `fg` (grey fallback).
fn background(rng: &mut SmallRng, fg: [f32; 3]) -> [f32; 3] {
    for _ in 0..64 {
        let c: [f32; 3] = [rng.random(), rng.random(), rng.random()];
        let m = (c[0] + c[1] + c[2]) / 3.0;
        let c = c.map(|v| m + 0.6 * (v - m));
        if (luma(c) - luma(fg)).abs() >= MIN_LUMA_CONTRAST {
            return c;
        }
    }
    if luma(fg) > 0.5 { [0.12; 3] } else { [0.88; 3] }
}

/// Signed distance to an axis-aligned box of half-extents `(bx, by)`.
fn sd_box(x: f32, y: f32, bx: f32, by: f32) -> f32 {
    let (dx, dy) = (x.abs() - bx, y.abs() - by);
    let (ox, oy) = (dx.max(0.0), dy.max(0.0));
    (ox * ox + oy * oy).sqrt() + dx.max(dy).min(0.0)
}

/// Signed distance to an equilateral triangle of circumradius `rad`, centroid at the origin.
fn sd_triangle(x: f32, y: f32, rad: f32) -> f32 {
    let k = 3f32.sqrt();
    let h = rad * k / 2.0; // half the side
    let (mut px, mut py) = (x.abs() - h, y + h / k);
    if px + k * py > 0.0 {
        (px, py) = ((px - k * py) / 2.0, (-k * px - py) / 2.0);
    }
    px -= px.clamp(-2.0 * h, 0.0);
    let l = (px * px + py * py).sqrt();
    if py > 0.0 { -l } else { l }
}

/// Signed distance (px, negative inside) from point `(x, y)` to the scene's shape.
fn signed_distance(s: &Scene, x: f32, y: f32) -> f32 {
    let (dx, dy) = (x - s.cx, y - s.cy);
    let (u, v) = (s.cos * dx + s.sin * dy, s.cos * dy - s.sin * dx);
    let r = s.r;
    match s.class {
        0 => (u * u + v * v).sqrt() - r,
        1 => sd_box(u, v, r * FRAC_1_SQRT_2, r * FRAC_1_SQRT_2),
        2 => sd_triangle(u, v, r),
        3 => sd_box(u, v, 0.92 * r, 0.3 * r).min(sd_box(u, v, 0.3 * r, 0.92 * r)),
        _ => ((u * u + v * v).sqrt() - 0.775 * r).abs() - 0.225 * r,
    }
}

/// Per-pixel foreground coverage in `[0, 1]` (row-major), anti-aliased over one pixel.
fn coverage(s: &Scene, size: u32) -> Vec<f32> {
    let w = size as usize;
    let mut cov = Vec::with_capacity(w * w);
    for y in 0..w {
        for x in 0..w {
            let d = signed_distance(s, x as f32 + 0.5, y as f32 + 0.5);
            cov.push((0.5 - d).clamp(0.0, 1.0));
        }
    }
    cov
}

fn finite_or(x: f32, default: f32) -> f32 {
    if x.is_finite() { x } else { default }
}

/// Smoothstep-interpolated value noise on a `(k+1)²` lattice at position `(fx, fy)` in `[0, 1)²`.
fn value_noise(lattice: &[f32; 81], k: usize, fx: f32, fy: f32) -> f32 {
    let (gx, gy) = (fx * k as f32, fy * k as f32);
    let (ix, iy) = ((gx as usize).min(k - 1), (gy as usize).min(k - 1));
    let smooth = |t: f32| t * t * (3.0 - 2.0 * t);
    let (sx, sy) = (smooth(gx - ix as f32), smooth(gy - iy as f32));
    let row = k + 1;
    let at = |i: usize, j: usize| lattice[j * row + i];
    let top = at(ix, iy) + sx * (at(ix + 1, iy) - at(ix, iy));
    let bottom = at(ix, iy + 1) + sx * (at(ix + 1, iy + 1) - at(ix, iy + 1));
    top + sy * (bottom - top)
}

/// The real-like look: clutter, lighting, tint, contrast, blur, noise (into `buf`, RGB-interleaved).
fn develop(
    p: &ShapeParams,
    s: &Scene,
    cov: &[f32],
    size: u32,
    rng: &mut SmallRng,
    buf: &mut [f32],
) {
    let (w, side) = (size as usize, size as f32);
    let texture = finite_or(p.texture, 0.0).clamp(0.0, 1.0);
    let lighting = finite_or(p.lighting, 0.0).clamp(0.0, 1.0);
    let tint = p.tint.map(|t| finite_or(t, 1.0).clamp(0.0, 4.0));
    let contrast = finite_or(p.contrast, 1.0).clamp(0.0, 2.0);

    // Appearance draws, always in this order and number.
    let mut lattices = [[0f32; 81]; 3];
    for (lattice, &(k, _)) in lattices.iter_mut().zip(SCALES.iter()) {
        for v in lattice.iter_mut().take((k + 1) * (k + 1)) {
            *v = rng.random::<f32>() * 2.0 - 1.0;
        }
    }
    let tone: [f32; 3] = std::array::from_fn(|_| 0.75 + 0.5 * rng.random::<f32>());
    let phi = rng.random::<f32>() * TAU;
    let grad = lighting * GRADIENT_GAIN * rng.random_range(0.5f32..1.0);
    let (gx, gy) = (grad * phi.cos(), grad * phi.sin());
    let vignette = lighting * VIGNETTE_GAIN * 0.5;

    for y in 0..w {
        let fy = (y as f32 + 0.5) / side;
        let uy = 2.0 * fy - 1.0;
        for x in 0..w {
            let fx = (x as f32 + 0.5) / side;
            let ux = 2.0 * fx - 1.0;
            let i = y * w + x;
            let a = cov[i];
            let mut field = 0.0;
            for (lattice, &(k, weight)) in lattices.iter().zip(SCALES.iter()) {
                field += weight * value_noise(lattice, k, fx, fy);
            }
            let clutter = texture * CLUTTER_GAIN * field * (1.0 - (1.0 - FG_CLUTTER) * a);
            let gain = (1.0 + gx * ux + gy * uy - vignette * (ux * ux + uy * uy)).max(0.0);
            for c in 0..3 {
                let base = s.bg[c] + a * (s.fg[c] - s.bg[c]);
                let lit = (base + clutter * tone[c]).clamp(0.0, 1.0) * gain * tint[c];
                buf[i * 3 + c] = 0.5 + contrast * (lit - 0.5);
            }
        }
    }

    let sigma = (finite_or(p.blur_sigma, 0.0) * side / 32.0).min(side);
    if sigma > 0.05 {
        gaussian_blur(buf, w, sigma);
    }
    let noise = finite_or(p.noise_sigma, 0.0).max(0.0) / 255.0;
    if noise > 0.0 {
        for v in buf.iter_mut() {
            let z: f32 = StandardNormal.sample(rng);
            *v += noise * z;
        }
    }
}

/// Separable Gaussian blur of a `w×w` RGB-interleaved buffer, clamping at the edges.
fn gaussian_blur(buf: &mut [f32], w: usize, sigma: f32) {
    let radius = ((3.0 * sigma).ceil() as usize).max(1);
    let mut kernel: Vec<f32> = (0..=2 * radius)
        .map(|k| {
            let d = k as f32 - radius as f32;
            (-d * d / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let total: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= total);
    let mut tmp = vec![0f32; buf.len()];
    blur_pass(buf, &mut tmp, w, &kernel, true);
    blur_pass(&tmp, buf, w, &kernel, false);
}

/// One 1-D pass of [`gaussian_blur`] (odd-length `kernel`), along rows or along columns.
fn blur_pass(src: &[f32], dst: &mut [f32], w: usize, kernel: &[f32], along_rows: bool) {
    let radius = kernel.len() / 2;
    for y in 0..w {
        for x in 0..w {
            let mut acc = [0f32; 3];
            for (k, &wk) in kernel.iter().enumerate() {
                let tap = |v: usize| (v + k).saturating_sub(radius).min(w - 1);
                let j = 3 * if along_rows {
                    y * w + tap(x)
                } else {
                    tap(y) * w + x
                };
                for (c, a) in acc.iter_mut().enumerate() {
                    *a += wk * src[j + c];
                }
            }
            dst[(y * w + x) * 3..][..3].copy_from_slice(&acc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn px(img: &RgbImage, x: usize, y: usize, c: usize) -> f32 {
        img.as_raw()[(y * img.width() as usize + x) * 3 + c] as f32
    }

    /// Mean |4-neighbour Laplacian| over the given pixels and all channels (8-bit levels).
    fn mean_abs_laplacian(img: &RgbImage, at: &[(usize, usize)]) -> f32 {
        let mut sum = 0.0;
        for &(x, y) in at {
            for c in 0..3 {
                let l = 4.0 * px(img, x, y, c)
                    - px(img, x - 1, y, c)
                    - px(img, x + 1, y, c)
                    - px(img, x, y - 1, c)
                    - px(img, x, y + 1, c);
                sum += l.abs();
            }
        }
        sum / (at.len() * 3).max(1) as f32
    }

    type Pixels = Vec<(usize, usize)>;

    /// Interior pixels of `img` split into flat ones (3×3 neighbourhood one constant colour) and
    /// edge ones (the rest).
    fn flat_and_edges(img: &RgbImage) -> (Pixels, Pixels) {
        let w = img.width() as usize;
        let (mut flat, mut edges) = (Vec::new(), Vec::new());
        for y in 1..w - 1 {
            for x in 1..w - 1 {
                let centre = img.get_pixel(x as u32, y as u32);
                let same = (0..9).all(|k| {
                    img.get_pixel((x + k % 3 - 1) as u32, (y + k / 3 - 1) as u32) == centre
                });
                if same {
                    flat.push((x, y))
                } else {
                    edges.push((x, y))
                }
            }
        }
        (flat, edges)
    }

    /// Mean |pixel − 3×3 box mean| over the given pixels and all channels.
    fn box_residual(img: &RgbImage, at: &[(usize, usize)]) -> f32 {
        let mut sum = 0.0;
        for &(x, y) in at {
            for c in 0..3 {
                let mean = (0..9)
                    .map(|k| px(img, x + k % 3 - 1, y + k / 3 - 1, c))
                    .sum::<f32>()
                    / 9.0;
                sum += (px(img, x, y, c) - mean).abs();
            }
        }
        sum / (at.len() * 3).max(1) as f32
    }

    /// Centroid of the pixels closer (along the bg→fg axis) to the image's own foreground colour,
    /// with both reference colours measured from `img` where the true coverage is 1 or 0.
    fn mask_centroid(img: &RgbImage, cov: &[f32]) -> (f32, f32) {
        let w = img.width() as usize;
        let mean_where = |pred: &dyn Fn(f32) -> bool| {
            let (mut m, mut n) = ([0f32; 3], 0.0);
            for (i, _) in cov.iter().enumerate().filter(|&(_, &a)| pred(a)) {
                for (c, mc) in m.iter_mut().enumerate() {
                    *mc += px(img, i % w, i / w, c);
                }
                n += 1.0;
            }
            m.map(|v| v / n)
        };
        let (fg, bg) = (
            mean_where(&|a: f32| a >= 0.999),
            mean_where(&|a: f32| a <= 0.001),
        );
        let d: [f32; 3] = std::array::from_fn(|c| fg[c] - bg[c]);
        let dd: f32 = d.iter().map(|v| v * v).sum();
        let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
        for i in 0..w * w {
            let t: f32 = (0..3)
                .map(|c| (px(img, i % w, i / w, c) - bg[c]) * d[c])
                .sum::<f32>()
                / dd;
            if t > 0.5 {
                sx += (i % w) as f32 + 0.5;
                sy += (i / w) as f32 + 0.5;
                n += 1.0;
            }
        }
        (sx / n, sy / n)
    }

    #[test]
    fn deterministic_and_index_dependent() {
        for p in [ShapeParams::synthetic(32), ShapeParams::real_like(32)] {
            let (a, ca) = render(&p, 7, 3);
            let (b, cb) = render(&p, 7, 3);
            assert_eq!((a.as_raw(), ca), (b.as_raw(), cb));
            let q = p.clone();
            let joined = std::thread::spawn(move || render(&q, 7, 3)).join();
            assert!(joined.is_ok(), "render thread panicked");
            if let Ok((t, ct)) = joined {
                assert_eq!((a.as_raw(), ca), (t.as_raw(), ct));
            }
            assert_ne!(a.as_raw(), render(&p, 7, 4).0.as_raw());
            assert_ne!(a.as_raw(), render(&p, 8, 3).0.as_raw());
        }
    }

    #[test]
    fn classes_roughly_uniform() {
        let mut counts = [0usize; 5];
        for i in 0..500 {
            counts[render(&ShapeParams::synthetic(32), 11, i).1] += 1;
        }
        assert!(
            counts.iter().all(|&c| (60..=140).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn synthetic_square_is_two_flat_colours() {
        let p = ShapeParams::synthetic(32);
        let squares: Vec<u64> = (0..200)
            .filter(|&i| scene_for(3, i, 32).class == 1)
            .take(10)
            .collect();
        assert_eq!(squares.len(), 10);
        for i in squares {
            let (img, class) = render(&p, 3, i);
            let s = scene_for(3, i, 32);
            assert_eq!(class, 1);
            let corner = *img.get_pixel(0, 0);
            let centre = *img.get_pixel(s.cx as u32, s.cy as u32);
            let q = |c: [f32; 3]| c.map(|v| (v * 255.0 + 0.5) as u8);
            assert_eq!((corner.0, centre.0), (q(s.bg), q(s.fg)));
            let flat = img
                .pixels()
                .filter(|&&v| v == corner || v == centre)
                .count();
            assert!(flat * 10 >= 8 * 32 * 32, "sample {i}: {flat} flat pixels");
        }
    }

    #[test]
    fn synthetic_ignores_real_like_knobs() {
        let p = ShapeParams {
            blur_sigma: 3.0,
            noise_sigma: 30.0,
            texture: 1.0,
            ..ShapeParams::synthetic(32)
        };
        assert_eq!(
            render(&p, 5, 9).0.as_raw(),
            render(&ShapeParams::synthetic(32), 5, 9).0.as_raw()
        );
    }

    #[test]
    fn real_like_is_noisier_in_flat_regions() {
        let (mut syn, mut real) = (0.0, 0.0);
        for i in 0..20 {
            let (s, _) = render(&ShapeParams::synthetic(32), 21, i);
            let (r, _) = render(&ShapeParams::real_like(32), 21, i);
            let (flat, _) = flat_and_edges(&s);
            syn += box_residual(&s, &flat) / 20.0;
            real += box_residual(&r, &flat) / 20.0;
        }
        assert!(
            real > syn + 2.0,
            "flat-region residual: synthetic {syn}, real-like {real}"
        );
    }

    /// Noise off (it would raise the Laplacian everywhere): at the synthetic edges, blur and lower
    /// contrast must flatten the second derivative.
    #[test]
    fn real_like_edges_are_softer() {
        let p = ShapeParams {
            noise_sigma: 0.0,
            ..ShapeParams::real_like(32)
        };
        let (mut syn, mut real) = (0.0, 0.0);
        for i in 0..20 {
            let (s, _) = render(&ShapeParams::synthetic(32), 22, i);
            let (_, edges) = flat_and_edges(&s);
            syn += mean_abs_laplacian(&s, &edges);
            real += mean_abs_laplacian(&render(&p, 22, i).0, &edges);
        }
        assert!(
            real < 0.6 * syn,
            "edge |Laplacian|: synthetic {syn}, real-like {real}"
        );
    }

    #[test]
    fn real_like_has_warm_cast() {
        let mut shift = 0.0;
        for i in 0..50 {
            let (s, _) = render(&ShapeParams::synthetic(32), 23, i);
            let (r, _) = render(&ShapeParams::real_like(32), 23, i);
            let rb = |img: &RgbImage| {
                img.pixels()
                    .map(|v| v.0[0] as f32 - v.0[2] as f32)
                    .sum::<f32>()
                    / 1024.0
            };
            shift += (rb(&r) - rb(&s)) / 50.0;
        }
        assert!(shift > 5.0, "mean (R−B) shift {shift}");
    }

    #[test]
    fn both_looks_share_class_and_geometry() {
        for i in 0..100 {
            assert_eq!(
                render(&ShapeParams::synthetic(32), 31, i).1,
                render(&ShapeParams::real_like(32), 31, i).1
            );
        }
        let p = ShapeParams {
            lighting: 0.0,
            texture: 0.0,
            ..ShapeParams::real_like(32)
        };
        for i in 0..30 {
            let cov = coverage(&scene_for(31, i, 32), 32);
            let (a, b) = (
                render(&ShapeParams::synthetic(32), 31, i).0,
                render(&p, 31, i).0,
            );
            let ((ax, ay), (bx, by)) = (mask_centroid(&a, &cov), mask_centroid(&b, &cov));
            let dist = ((ax - bx).powi(2) + (ay - by).powi(2)).sqrt();
            assert!(
                dist <= 1.5,
                "sample {i}: centroids ({ax},{ay}) vs ({bx},{by})"
            );
        }
    }

    #[test]
    fn any_size_and_bad_knobs_render() {
        for size in [0u32, 1, 16, 17, 32, 64, 128] {
            for p in [ShapeParams::synthetic(size), ShapeParams::real_like(size)] {
                let (img, class) = render(&p, 1, 2);
                assert_eq!(img.dimensions(), (size.max(1), size.max(1)));
                assert!(class < CLASSES.len());
            }
        }
        let bad = ShapeParams {
            blur_sigma: f32::NAN,
            noise_sigma: -3.0,
            texture: f32::INFINITY,
            lighting: 9.0,
            tint: [f32::NAN, -1.0, 100.0],
            contrast: f32::NEG_INFINITY,
            ..ShapeParams::real_like(32)
        };
        assert_eq!(render(&bad, 1, 2).0.dimensions(), (32, 32));
    }
}
