//! The realism judge: a fresh classifier, apart from the refiner's discriminator, trained to tell
//! one image set from another and scored on images it never saw. Its ROC AUC says how well a
//! plain CNN separates the two sets: ≈ 0.5 when they look alike, → 1.0 when it always can.
//!
//! Each set is shuffled (seeded) and cut into a training and a test half; the judge is the
//! estimator CNN family ([`crate::nn::GazeNetConfig::for_input`]) with two logits and softmax
//! cross-entropy, trained on balanced batches, then scored by P(set b) on both test halves. The
//! AUC is the Mann–Whitney statistic (ties count half); accuracy thresholds P at ½.

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::nn::{
    self, BackendJob, DeviceSpec, GazeNetConfig, GazeTrainConfig, GazeTrainer, HeadLoss, NnError,
};
use crate::sample::{self, SampleImage, ValueRange};

/// How a judge is trained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JudgeConfig {
    /// Optimisation steps.
    pub steps: u64,
    /// Images per step (half from each set).
    pub batch_size: usize,
    /// Channel divisor of the CNN (4 = a quarter of the paper's gaze net).
    pub divisor: usize,
    /// Seed of the split, the batches and the weights.
    pub seed: u64,
    /// Learning rate (Adam).
    pub lr: f64,
    /// Pixel values ↦ `[-1, 1]` for both sets (the real set's; `None`: the bit depth's range).
    pub range: Option<ValueRange>,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        JudgeConfig {
            steps: 300,
            batch_size: 32,
            divisor: 4,
            seed: 1,
            lr: 1e-3,
            range: None,
        }
    }
}

/// What a judge found on held-out images.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    /// ROC AUC of P(set b) on the test halves.
    pub auc: f64,
    /// Share of test images put on their own side of P = ½.
    pub accuracy: f64,
    /// Training images (both sets).
    pub n_train: usize,
    /// Test images (both sets).
    pub n_test: usize,
}

/// Train a judge to tell `a` from `b` and score it on their held-out halves. Both sets need at
/// least 2 images of one size and channel count.
pub fn judge(
    device: &DeviceSpec,
    a: &[SampleImage],
    b: &[SampleImage],
    cfg: &JudgeConfig,
) -> Result<Verdict, NnError> {
    let split = Split::new(a, b, cfg)?;
    let (pa, pb) = nn::run_on(device, split.job(a, b, cfg))??;
    Ok(split.verdict(&pa, &pb))
}

/// [`judge`] on a backend the caller already runs on (e.g. inside a training job).
pub fn judge_on<B: AutodiffBackend>(
    device: &B::Device,
    a: &[SampleImage],
    b: &[SampleImage],
    cfg: &JudgeConfig,
) -> Result<Verdict, NnError> {
    let split = Split::new(a, b, cfg)?;
    let (pa, pb) = split.job(a, b, cfg).run::<B>(device.clone())?;
    Ok(split.verdict(&pa, &pb))
}

/// The seeded train / test halves of both sets, checked.
struct Split {
    a_train: Vec<usize>,
    a_test: Vec<usize>,
    b_train: Vec<usize>,
    b_test: Vec<usize>,
}

impl Split {
    fn new(a: &[SampleImage], b: &[SampleImage], cfg: &JudgeConfig) -> Result<Split, NnError> {
        let shape = |s: &SampleImage| (s.channels, s.height, s.width);
        let Some(first) = a.first().or(b.first()) else {
            return Err(NnError::InvalidConfig(
                "judge: both image sets are empty".into(),
            ));
        };
        if a.len() < 2 || b.len() < 2 {
            return Err(NnError::InvalidConfig(format!(
                "judge: need at least 2 images per set, got {} and {}",
                a.len(),
                b.len()
            )));
        }
        if let Some(odd) = a.iter().chain(b).find(|s| shape(s) != shape(first)) {
            return Err(NnError::InvalidConfig(format!(
                "judge: images of different shapes ({:?} and {:?})",
                shape(first),
                shape(odd)
            )));
        }
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let mut halves = |n: usize| {
            let mut idx: Vec<usize> = (0..n).collect();
            idx.shuffle(&mut rng);
            let test = idx.split_off(n / 2);
            (idx, test)
        };
        let (a_train, a_test) = halves(a.len());
        let (b_train, b_test) = halves(b.len());
        Ok(Split {
            a_train,
            a_test,
            b_train,
            b_test,
        })
    }

    fn job<'a>(
        &'a self,
        a: &'a [SampleImage],
        b: &'a [SampleImage],
        cfg: &'a JudgeConfig,
    ) -> JudgeJob<'a> {
        JudgeJob {
            a,
            b,
            a_train: &self.a_train,
            b_train: &self.b_train,
            a_test: &self.a_test,
            b_test: &self.b_test,
            cfg,
        }
    }

    /// The verdict from P(set b) on the test halves of a (`pa`) and b (`pb`).
    fn verdict(&self, pa: &[f32], pb: &[f32]) -> Verdict {
        let correct =
            pa.iter().filter(|&&p| p < 0.5).count() + pb.iter().filter(|&&p| p >= 0.5).count();
        Verdict {
            auc: auc(pa, pb),
            accuracy: correct as f64 / (pa.len() + pb.len()) as f64,
            n_train: self.a_train.len() + self.b_train.len(),
            n_test: pa.len() + pb.len(),
        }
    }
}

/// ROC AUC of scores `neg` (set a) against `pos` (set b): P(pos > neg) + ½ P(pos = neg), by
/// ranks (O(n log n)).
pub fn auc(neg: &[f32], pos: &[f32]) -> f64 {
    if neg.is_empty() || pos.is_empty() {
        return f64::NAN;
    }
    let mut all: Vec<(f32, bool)> = neg
        .iter()
        .map(|&s| (s, false))
        .chain(pos.iter().map(|&s| (s, true)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    // Sum of the positives' ranks (1-based, ties averaged).
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += mid * all[i..=j].iter().filter(|e| e.1).count() as f64;
        i = j + 1;
    }
    let (np, nn) = (pos.len() as f64, neg.len() as f64);
    (rank_sum - np * (np + 1.0) / 2.0) / (np * nn)
}

struct JudgeJob<'a> {
    a: &'a [SampleImage],
    b: &'a [SampleImage],
    a_train: &'a [usize],
    b_train: &'a [usize],
    a_test: &'a [usize],
    b_test: &'a [usize],
    cfg: &'a JudgeConfig,
}

impl BackendJob for JudgeJob<'_> {
    /// P(set b) for the test halves of a and of b.
    type Output = Result<(Vec<f32>, Vec<f32>), NnError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let s = &self.a[0];
        let (c, h, w) = (s.channels as usize, s.height as usize, s.width as usize);
        let range = self
            .cfg
            .range
            .unwrap_or_else(|| ValueRange::full(s.format().bits));
        let net = GazeNetConfig::for_input(c, h, w, 2, self.cfg.divisor);
        net.validate()?;
        let cfg = GazeTrainConfig::new()
            .with_net(net)
            .with_loss(HeadLoss::CrossEntropy)
            .with_lr(self.cfg.lr)
            .with_batch_size(self.cfg.batch_size)
            .with_seed(self.cfg.seed)
            .with_decay_steps(self.cfg.steps);
        nn::seed::<B>(&device, self.cfg.seed);
        let mut trainer = GazeTrainer::<B>::new(cfg, &device)?;
        let mut rng = SmallRng::seed_from_u64(self.cfg.seed ^ 0x006a_7564_6765);
        let half = (self.cfg.batch_size / 2).max(1);
        for _ in 0..self.cfg.steps {
            // Balanced batch: `half` images of each set, one-hot targets [1, 0] / [0, 1].
            let mut imgs = Vec::with_capacity(2 * half);
            let mut targets = Vec::with_capacity(4 * half);
            for (set, train, class) in [(self.a, self.a_train, 0), (self.b, self.b_train, 1)] {
                for _ in 0..half {
                    imgs.push(set[train[rng.random_range(0..train.len())]].clone());
                    targets.extend(if class == 0 { [1.0, 0.0] } else { [0.0, 1.0] });
                }
            }
            let x = sample::to_tensor::<B>(&imgs, range, &device)?; // [2·half, c, h, w]
            let y = Tensor::<B, 2>::from_data(TensorData::new(targets, [2 * half, 2]), &device); // [2·half, 2]
            trainer.step(x, y)?;
        }
        let model = trainer.model().valid();
        let score = |set: &[SampleImage], idx: &[usize]| -> Result<Vec<f32>, NnError> {
            let mut out = Vec::with_capacity(idx.len());
            for chunk in idx.chunks(256) {
                let imgs: Vec<SampleImage> = chunk.iter().map(|&i| set[i].clone()).collect();
                let x = sample::to_tensor::<B::InnerBackend>(&imgs, range, &device)?; // [n, c, h, w]
                let logits = nn::predict_raw(&model, x)?; // [n, 2] row-major
                out.extend(logits.chunks_exact(2).map(|l| p_second(l[0], l[1])));
            }
            Ok(out)
        };
        Ok((score(self.a, self.a_test)?, score(self.b, self.b_test)?))
    }
}

/// Softmax probability of the second of two logits.
fn p_second(l0: f32, l1: f32) -> f32 {
    1.0 / (1.0 + (l0 - l1).exp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Pixels;

    #[test]
    fn auc_by_ranks() {
        assert_eq!(auc(&[0.1, 0.2], &[0.3, 0.4]), 1.0);
        assert_eq!(auc(&[0.3, 0.4], &[0.1, 0.2]), 0.0);
        assert_eq!(auc(&[0.5, 0.5], &[0.5, 0.5]), 0.5);
        // One of four pairs misordered, one tied: (2 + 0.5) / 4.
        assert!((auc(&[0.1, 0.3], &[0.3, 0.4]) - 0.875).abs() < 1e-12);
        assert!(auc(&[], &[0.1]).is_nan());
    }

    /// `n` grey 12×12 images: noise around mid-grey, plus (if `square`) a bright 4×4 square at
    /// a random place.
    fn images(n: usize, seed: u64, square: bool) -> Vec<SampleImage> {
        let mut rng = SmallRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let mut px: Vec<u8> = (0..144).map(|_| rng.random_range(100..156)).collect();
                if square {
                    let (x0, y0) = (rng.random_range(0..8), rng.random_range(0..8));
                    for y in y0..y0 + 4 {
                        for x in x0..x0 + 4 {
                            px[y * 12 + x] = 250;
                        }
                    }
                }
                SampleImage {
                    width: 12,
                    height: 12,
                    channels: 1,
                    pixels: Pixels::U8(px),
                }
            })
            .collect()
    }

    #[test]
    fn one_distribution_is_near_chance_and_two_clearly_different_are_separated() {
        let cfg = JudgeConfig {
            steps: 60,
            batch_size: 16,
            divisor: 8,
            ..JudgeConfig::default()
        };
        let cpu = DeviceSpec::Cpu;
        let same = judge(&cpu, &images(200, 1, false), &images(200, 2, false), &cfg).unwrap();
        let apart = judge(&cpu, &images(200, 1, false), &images(200, 3, true), &cfg).unwrap();
        assert_eq!((same.n_train, same.n_test), (200, 200));
        assert!((same.auc - 0.5).abs() < 0.12, "{same:?}");
        assert!(apart.auc > 0.95 && apart.accuracy > 0.85, "{apart:?}");
    }

    #[test]
    fn bad_sets_are_errors_not_panics() {
        let cpu = DeviceSpec::Cpu;
        let cfg = JudgeConfig::default();
        assert!(judge(&cpu, &[], &[], &cfg).is_err());
        assert!(judge(&cpu, &images(1, 1, false), &images(4, 1, false), &cfg).is_err());
        let mut odd = images(4, 1, false);
        odd[0].width = 6;
        odd[0].height = 24;
        assert!(judge(&cpu, &odd, &images(4, 2, false), &cfg).is_err());
    }
}
