//! Label-free image statistics, for judging a refiner without labels: per-set mean and spread of
//! intensity, sharpness (energy of the Laplacian) and a sensor-noise estimate (Immerkær's
//! fast noise variance estimator), on grey levels in `[0, 1]` (luma of RGB; 16-bit scaled).
//!
//! [`RefinerCheck`] compares a refiner's output with its synthetic inputs and the real images:
//! how far each statistic moved from synthetic toward real ([`RefinerCheck::distance`], 0 =
//! refined matches real, 1 = no closer than synthetic), how far the refiner moved its inputs
//! (`drift`, mean |R(x) − x|), and whether the run collapsed ([`RefinerCheck::collapse`]:
//! refined images far outside the real images' statistics, or a drift far beyond the gap it was
//! meant to close). `train-refiner` uses the distance to pick its output refiner (`select =
//! "stats"`) and writes the check; the report flags a collapse.

use serde::{Deserialize, Serialize};

use crate::sample::SampleImage;

/// Aggregate statistics of a set of images (means over the images).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImageStats {
    /// Images measured.
    pub n: usize,
    /// Mean grey level.
    pub mean: f64,
    /// Standard deviation of grey levels within an image.
    pub std: f64,
    /// Mean squared 4-neighbour Laplacian (high = sharp edges or noise).
    pub sharpness: f64,
    /// Estimated noise standard deviation (Immerkær 1996).
    pub noise: f64,
}

fn grey(img: &SampleImage) -> (usize, usize, Vec<f64>) {
    let g = img.to_gray8();
    let (w, h) = (g.width() as usize, g.height() as usize);
    (w, h, g.as_raw().iter().map(|v| *v as f64 / 255.0).collect())
}

fn one(img: &SampleImage) -> [f64; 4] {
    let (w, h, v) = grey(img);
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    let (mut lap, mut noise, mut cells) = (0f64, 0f64, 0f64);
    for y in 1..h.saturating_sub(1) {
        for x in 1..w.saturating_sub(1) {
            let at = |dx: isize, dy: isize| {
                v[(y as isize + dy) as usize * w + (x as isize + dx) as usize]
            };
            let l = at(-1, 0) + at(1, 0) + at(0, -1) + at(0, 1) - 4.0 * at(0, 0);
            lap += l * l;
            // Immerkær's mask [[1,-2,1],[-2,4,-2],[1,-2,1]] cancels image structure up to second
            // order; what is left is noise.
            let m = at(-1, -1) + at(1, -1) + at(-1, 1) + at(1, 1)
                - 2.0 * (at(0, -1) + at(0, 1) + at(-1, 0) + at(1, 0))
                + 4.0 * at(0, 0);
            noise += m.abs();
            cells += 1.0;
        }
    }
    let cells = cells.max(1.0);
    [
        mean,
        std,
        lap / cells,
        (std::f64::consts::PI / 2.0).sqrt() * noise / (6.0 * cells),
    ]
}

impl ImageStats {
    /// Statistics of `images` (rayon over images).
    pub fn of(images: &[SampleImage]) -> ImageStats {
        use rayon::prelude::*;
        let sums = images.par_iter().map(one).reduce(
            || [0.0; 4],
            |a, b| [a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]],
        );
        let n = images.len().max(1) as f64;
        ImageStats {
            n: images.len(),
            mean: sums[0] / n,
            std: sums[1] / n,
            sharpness: sums[2] / n,
            noise: sums[3] / n,
        }
    }

    fn values(&self) -> [f64; 4] {
        [self.mean, self.std, self.sharpness.sqrt(), self.noise]
    }
}

/// Radially averaged power spectrum of `images` (grey, mean removed per image), averaged over
/// the images: `bins` values of log10 power for radial frequencies 0 < f ≤ ½ cycles/pixel, bin
/// k covering (k/bins, (k+1)/bins] × ½; `None` for a band no frequency of the images falls in
/// (small images, many bands). Blur lowers the high bins, noise raises them; two sets
/// that look alike have close curves. A separable DFT, O(h·w·(h + w)) per image.
pub fn radial_spectrum(images: &[SampleImage], bins: usize) -> Vec<Option<f64>> {
    use rayon::prelude::*;
    let bins = bins.max(1);
    let (sum, count) = images
        .par_iter()
        .map(|img| {
            let (w, h, v) = grey(img);
            let mut power = vec![0f64; bins];
            let mut count = vec![0usize; bins];
            if w == 0 || h == 0 {
                return (power, count);
            }
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            // Rows: X[y][u] = Σ_x v[y][x] e^{-2πi u x / w}.
            let tw: Vec<(f64, f64)> = (0..w * w)
                .map(|k| {
                    let a = -2.0 * std::f64::consts::PI * ((k / w) * (k % w) % w) as f64 / w as f64;
                    (a.cos(), a.sin())
                })
                .collect();
            let th: Vec<(f64, f64)> = (0..h * h)
                .map(|k| {
                    let a = -2.0 * std::f64::consts::PI * ((k / h) * (k % h) % h) as f64 / h as f64;
                    (a.cos(), a.sin())
                })
                .collect();
            let mut rows = vec![(0f64, 0f64); h * w];
            for y in 0..h {
                for u in 0..w {
                    let (mut re, mut im) = (0.0, 0.0);
                    for x in 0..w {
                        let p = v[y * w + x] - mean;
                        let (c, s) = tw[u * w + x];
                        re += p * c;
                        im += p * s;
                    }
                    rows[y * w + u] = (re, im);
                }
            }
            // Columns, then bin |F|² by radius (frequencies folded to [−½, ½]).
            for t in 0..h {
                for u in 0..w {
                    let (mut re, mut im) = (0.0, 0.0);
                    for y in 0..h {
                        let (a, b) = rows[y * w + u];
                        let (c, s) = th[t * h + y];
                        re += a * c - b * s;
                        im += a * s + b * c;
                    }
                    let fx = if u <= w / 2 { u } else { w - u } as f64 / w as f64;
                    let fy = if t <= h / 2 { t } else { h - t } as f64 / h as f64;
                    let r = (fx * fx + fy * fy).sqrt();
                    if r <= 0.0 || r > 0.5 {
                        continue;
                    }
                    let k = ((r / 0.5 * bins as f64).ceil() as usize).clamp(1, bins) - 1;
                    power[k] += (re * re + im * im) / (w * h) as f64;
                    count[k] += 1;
                }
            }
            for (p, &c) in power.iter_mut().zip(&count) {
                if c > 0 {
                    *p /= c as f64;
                }
            }
            (power, count)
        })
        .reduce(
            || (vec![0f64; bins], vec![0usize; bins]),
            |(mut p, mut c), (q, d)| {
                for k in 0..bins {
                    // Count images that had this bin, to average per image.
                    p[k] += q[k];
                    c[k] += usize::from(d[k] > 0);
                }
                (p, c)
            },
        );
    sum.iter()
        .zip(&count)
        .map(|(&p, &c)| (c > 0 && p > 0.0).then(|| (p / c as f64).log10()))
        .collect()
}

/// Names of the statistics compared by [`RefinerCheck::distance`], in order.
pub const STATISTICS: [&str; 4] = ["mean", "std", "sharpness", "noise"];

/// A refiner's output against its inputs and the real images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefinerCheck {
    /// Training step the refiner was taken at.
    pub step: u64,
    /// Statistics of the synthetic images fed to the refiner.
    pub synthetic: ImageStats,
    /// Of the same images refined.
    pub refined: ImageStats,
    /// Of real images.
    pub real: ImageStats,
    /// Mean |R(x) − x| over pixels, grey levels in [0, 1].
    pub drift: f64,
}

impl RefinerCheck {
    /// Measure: `synthetic` and their refinements `refined` (same order), and `real` images.
    pub fn measure(
        step: u64,
        synthetic: &[SampleImage],
        refined: &[SampleImage],
        real: &[SampleImage],
    ) -> RefinerCheck {
        let drift = synthetic
            .iter()
            .zip(refined)
            .map(|(a, b)| {
                let (_, _, x) = grey(a);
                let (_, _, y) = grey(b);
                x.iter().zip(&y).map(|(p, q)| (p - q).abs()).sum::<f64>() / x.len().max(1) as f64
            })
            .sum::<f64>()
            / synthetic.len().max(1) as f64;
        RefinerCheck {
            step,
            synthetic: ImageStats::of(synthetic),
            refined: ImageStats::of(refined),
            real: ImageStats::of(real),
            drift,
        }
    }

    /// Per statistic, |refined − real| / |synthetic − real| (0: refined matches real; 1: no
    /// closer than the synthetic images; > 1: further away). A statistic on which synthetic and
    /// real already agree (gap < 2 % of the real value) counts as 0 when the refiner kept it so.
    pub fn ratios(&self) -> [f64; 4] {
        let (s, r, t) = (
            self.synthetic.values(),
            self.refined.values(),
            self.real.values(),
        );
        let mut out = [0.0; 4];
        for k in 0..4 {
            let gap = (s[k] - t[k]).abs();
            let floor = 0.02 * t[k].abs().max(1e-3);
            out[k] = (r[k] - t[k]).abs() / gap.max(floor);
        }
        out
    }

    /// Mean of [`Self::ratios`]: how far from real the refined images still are, relative to
    /// where the synthetic ones started (lower is better; the label-free selection criterion).
    pub fn distance(&self) -> f64 {
        self.ratios().iter().sum::<f64>() / 4.0
    }

    /// Why this refiner looks collapsed, if it does: a statistic moved more than twice as far
    /// from the real images as the synthetic images were (refined images far outside the real
    /// images' statistics), or a drift from the inputs more than three times the grey-level gap
    /// between the synthetic and real images (plus 0.05).
    pub fn collapse(&self) -> Option<String> {
        let ratios = self.ratios();
        let (r, t) = (self.refined.values(), self.real.values());
        for (k, name) in STATISTICS.iter().enumerate() {
            if ratios[k] > 2.0 && (r[k] - t[k]).abs() > 0.02 {
                return Some(format!(
                    "refined images' {name} is {:.3} against {:.3} for real images — {:.1}× further from real than the synthetic images were",
                    r[k], t[k], ratios[k]
                ));
            }
        }
        let gap = (self.synthetic.mean - self.real.mean).abs()
            + (self.synthetic.std - self.real.std).abs();
        let limit = 3.0 * gap + 0.05;
        (self.drift > limit).then(|| {
            format!(
                "the refiner moves its inputs by {:.3} grey levels on average (mean |R(x) − x| on [0, 1]), more than 3× the synthetic-to-real gap + 0.05 = {limit:.3}: it is not preserving the images (raise lambda)",
                self.drift
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::GrayImage;

    fn img(mut f: impl FnMut(u32, u32) -> u8) -> SampleImage {
        SampleImage::from_gray(GrayImage::from_fn(32, 32, |x, y| image::Luma([f(x, y)])))
    }

    #[test]
    fn spectrum_of_noise_is_flat_and_of_a_smooth_image_falls() {
        let mut s: u64 = 3;
        let mut rnd = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 56) as u8
        };
        let noise: Vec<SampleImage> = (0..4).map(|_| img(|_, _| rnd())).collect();
        let smooth = vec![img(|x, y| {
            // Periodic in the 32×32 frame (no leakage): 2 and 1 cycles across.
            let t = std::f64::consts::TAU / 32.0;
            (128.0 + 100.0 * ((2.0 * t * x as f64).sin() * (t * y as f64).cos())) as u8
        })];
        let (n, m) = (radial_spectrum(&noise, 8), radial_spectrum(&smooth, 8));
        assert_eq!(n.len(), 8);
        // White noise: every band within a factor ~2 of the others (log10 spread < 0.35).
        let n: Vec<f64> = n.into_iter().map(|v| v.unwrap()).collect();
        let m: Vec<f64> = m.into_iter().map(|v| v.unwrap()).collect();
        let (lo, hi) = n
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert!(hi - lo < 0.35, "{n:?}");
        // A pure wave at (2/32, 1/32) cycles/pixel, radius 0.070: all its power in band 1
        // ((0.0625, 0.125]), orders of magnitude above every other band.
        for (k, &v) in m.iter().enumerate() {
            assert!(k == 1 || m[1] - v > 4.0, "{m:?}");
        }
        assert!(radial_spectrum(&[], 4).iter().all(Option::is_none));
    }

    #[test]
    fn noise_estimate_sees_noise_not_structure() {
        let smooth = img(|x, y| (x * 4 + y * 2) as u8);
        let mut s: u64 = 7;
        let noisy = img(|x, y| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x * 4 + y * 2) as i64 + ((s >> 33) % 21) as i64 - 10).clamp(0, 255) as u8
        });
        let a = ImageStats::of(&[smooth]);
        let b = ImageStats::of(&[noisy]);
        assert!(a.noise < 1e-9, "a linear ramp has no noise: {a:?}");
        assert!(b.noise > 0.01 && b.sharpness > a.sharpness, "{b:?}");
    }

    #[test]
    fn distance_and_collapse() {
        let syn: Vec<SampleImage> = (0..4).map(|k| img(|x, _| (100 + k + x) as u8)).collect();
        let real: Vec<SampleImage> = (0..4).map(|k| img(|x, _| (60 + k + x) as u8)).collect();
        // A refiner that maps synthetic onto real exactly.
        let perfect = RefinerCheck::measure(0, &syn, &real, &real);
        assert!(
            perfect.distance() < 1e-9 && perfect.collapse().is_none(),
            "{perfect:?}"
        );
        // The identity: no closer than synthetic.
        let identity = RefinerCheck::measure(0, &syn, &syn, &real);
        assert!(
            (identity.ratios()[0] - 1.0).abs() < 1e-9,
            "{:?}",
            identity.ratios()
        );
        assert!(identity.collapse().is_none());
        // A refiner that turns everything black: collapsed (its contrast is gone, and it moved
        // the pixels far more than the gap).
        let black: Vec<SampleImage> = (0..4).map(|_| img(|_, _| 0)).collect();
        let c = RefinerCheck::measure(0, &syn, &black, &real);
        assert!(c.collapse().is_some_and(|w| w.contains("std")), "{c:?}");
        // One that overshoots the real tone by far: collapsed on the mean.
        let white: Vec<SampleImage> = (0..4)
            .map(|k| img(|x, _| (230 + k + x / 2) as u8))
            .collect();
        let c = RefinerCheck::measure(0, &syn, &white, &real);
        assert!(c.collapse().is_some_and(|w| w.contains("mean")), "{c:?}");
    }
}
