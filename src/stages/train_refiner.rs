//! `train-refiner`: the S+U schedule (refiner pretraining, discriminator pretraining, then K_g
//! refiner steps per K_d discriminator steps) on a synthetic and a real sample stage of any
//! domain: the networks' channels and the image size come from the data (both inputs must have
//! the same size and format; 8- or 16-bit, grey or RGB).
//!
//! One work unit. Images are decoded once, in parallel on rayon, and held in memory at their bit
//! depth (1.9 KB per 55×35 grey eye: 1.2M images ≈ 2.3 GB); batches are drawn by seeded sampling. Every
//! `checkpoint_every` iterations the whole trainer (R, D, both Adam states, the history buffer,
//! the step) and the metrics so far go to the version's `_scratch/`; a killed run, rerun with the
//! same params and inputs, continues from the last checkpoint. Output: per-iteration metrics as
//! the shard, and artifacts `refiner.safetensors` (with its config in the safetensors metadata),
//! `discriminator.safetensors`, `train_config.json`, sample grids (synthetic | refined | real),
//! and `refiner_check.json`: label-free statistics of the output refiner on a fixed probe of
//! 256 synthetic and 256 real training images (intensity mean and spread, sharpness, noise,
//! drift |R(x) − x|; [`crate::imagestats`]), with a collapse warning when refined images leave
//! the real images' statistics far behind. With `select = "stats"` the refiner at every
//! adversarial checkpoint is measured too, and the one closest to the real statistics is the
//! output (the probe images are training images, not a held-out set). With `select = "judge"`,
//! `select_holdout` images of each input are kept out of training, and at every adversarial
//! checkpoint and the end a fresh judge ([`crate::judge`], the same seed each time) is trained to
//! tell the held-out synthetic images, refined, from held-out real ones; the refiner it separates
//! least (lowest AUC) is the output — a label-free choice on images neither network trained on.

use std::time::Instant;

use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::common::{self, DEVICE_PARAM, PRECISION_PARAM};
use super::{InputKind, InputSpec, StageCtx, StageKind, UnitOutput, UnitSpec};
use crate::error::{Error, Result};
use crate::imagestats::RefinerCheck;
use crate::judge::{JudgeConfig, Verdict};
use crate::nn::{
    self, BackendJob, BatchSource, DiscriminatorConfig, NnError, RefinerConfig, RefinerTrainer,
    StepMetrics, TrainConfig,
};
use crate::params::{ParamSpec, ParamType};
use crate::sample::{self, PixelFormat, SampleImage, ValueRange};
use crate::storage::Root;

/// The `train-refiner` kind.
pub struct TrainRefiner;

const INPUTS: &[InputSpec] = &[
    InputSpec {
        role: "synthetic",
        kind: InputKind::Stage,
        required: true,
        doc: "Synthetic sample stage (split=train rows are used)",
    },
    InputSpec {
        role: "real",
        kind: InputKind::Stage,
        required: true,
        doc: "Unlabelled real sample stage, same image size and format (split=train rows)",
    },
];

const INT: ParamType = ParamType::Int {
    min: 0,
    max: 1 << 40,
};

const PARAMS: &[ParamSpec] = &[
    DEVICE_PARAM,
    PRECISION_PARAM,
    ParamSpec::new(
        "architecture",
        ParamType::Choice(&["eye", "hand"]),
        "\"eye\"",
        "eye: the paper's eye R (3×3 input conv) and D (3×3 s2, 3×3 s2, pool 3×3 s1: 9×14 patches on 35×55); hand: its hand R (7×7 input conv) and D (7×7 s4, 5×5 s2, pool 3×3 s2, 3×3 s2: 7×7 patches on 224×224). Sizes ÷ width, blocks and d_divisor as set",
    ),
    ParamSpec::new(
        "width",
        ParamType::Int { min: 1, max: 1024 },
        "16",
        "Refiner feature maps (paper: 64; 16 keeps the CPU demo fast)",
    ),
    ParamSpec::new(
        "blocks",
        ParamType::Int { min: 1, max: 64 },
        "4",
        "Refiner ResNet blocks (paper: 4 for eyes, 10 for hands)",
    ),
    ParamSpec::new(
        "noise_channels",
        ParamType::Int { min: 0, max: 16 },
        "1",
        "Noise maps fed to the refiner beside the image (0 = the paper's deterministic R)",
    ),
    ParamSpec::added(
        "latent_channels",
        ParamType::Int { min: 0, max: 16 },
        "0",
        "Per-image latent inputs: k standard-normal values drawn once per image, each fed beside the image as a constant map, so the refiner can draw an appearance that varies per image (one shot's blur, noise level or exposure) as well as per pixel (0 = none, the paper)",
    ),
    ParamSpec::new(
        "noise_scale",
        ParamType::Float { min: 0.0, max: 1.0 },
        "0",
        "Initial σ of the refiner's sensor-noise branch: output + σ(x)·z, one standard-normal map per image channel, σ per pixel and learnt from D ([-1,1] units; 0 = none, the paper)",
    ),
    ParamSpec::added(
        "noise_kernel",
        ParamType::Int { min: 1, max: 31 },
        "1",
        "Odd size K of a learnt K×K filter on the sensor-noise branch's maps, started as a delta, so the branch can draw grain, blotches or clutter instead of white noise only (1 = white; needs noise_scale > 0)",
    ),
    ParamSpec::added(
        "psf_kernel",
        ParamType::Int { min: 1, max: 31 },
        "1",
        "Odd size K of a learnt K×K point-spread function on the residual refiner's image path, R(x) = k∗x + Δ(x), started as a delta (1 = none, the paper): a camera's optical blur as one linear map D's gradient moves directly (needs residual = true; on the eye demo D made it a sharpening filter instead)",
    ),
    ParamSpec::new(
        "residual",
        ParamType::Bool,
        "true",
        "Refiner output x + Δ (starts as the identity; not in the paper, which uses tanh: set false)",
    ),
    ParamSpec::new(
        "reflect_padding",
        ParamType::Bool,
        "false",
        "Refiner convolutions pad by mirroring the image instead of with zeros (zero padding lets the refiner draw frames along the edges)",
    ),
    ParamSpec::new(
        "d_divisor",
        ParamType::Int { min: 1, max: 32 },
        "4",
        "Discriminator channels = paper's ÷ this (1 = paper: 96, 64, 32, 32)",
    ),
    ParamSpec::new(
        "batch_size",
        ParamType::Int { min: 2, max: 65536 },
        "16",
        "Images per step (paper code: 512; b/2 of D's refined half come from history)",
    ),
    ParamSpec::new(
        "lambda",
        ParamType::Float { min: 0.0, max: 1e6 },
        "7.5",
        "Self-regularisation weight λ on mean |R(x) − x| over pixels, [-1,1] images (carpedm20 uses 0.5 on per-image sums ≈ 7.5 here)",
    ),
    ParamSpec::new(
        "reg_blur",
        ParamType::Float {
            min: 0.0,
            max: 64.0,
        },
        "0",
        "Self-regularisation through a Gaussian blur of σ px: λ · mean |blur(R(x) − x)| keeps the content labels depend on and leaves zero-mean fine texture (sensor noise, camera blur) nearly free; 0 = the paper's per-pixel L1",
    ),
    ParamSpec::added(
        "reg_noise",
        ParamType::Bool,
        "true",
        "Whether the self-regularisation sees the sensor-noise branch's noise (true); false: λ·|R(x) − x| on R's output without it, so zero-mean noise costs nothing and D alone sets its amplitude (on the eye demo D trained the noise down just the same)",
    ),
    ParamSpec::new(
        "d_input_noise",
        ParamType::Float { min: 0.0, max: 2.0 },
        "0",
        "Instance noise: σ of Gaussian noise added to every image the discriminator sees, in [-1,1] units (0 = off, the paper)",
    ),
    ParamSpec::added(
        "d_spectral_norm",
        ParamType::Bool,
        "false",
        "Spectral normalisation of every discriminator convolution (Miyato et al. 2018: each weight divided by its largest singular value), so the refiner cannot fool D with a small pattern that moves its logits far",
    ),
    ParamSpec::added(
        "d_r1",
        ParamType::Float { min: 0.0, max: 1e6 },
        "0",
        "Weight γ of an R1 gradient penalty on real images for the discriminator (γ/2 · squared input gradient of its per-patch logit margin, estimated by a finite difference): D is kept flat at real images, the standard remedy for a GAN that circles the data (0 = off, the paper; on the eye demo it did not make refined eyes more realistic)",
    ),
    ParamSpec::added(
        "d_highpass",
        ParamType::Float {
            min: 0.0,
            max: 64.0,
        },
        "0",
        "σ px of detail channels for the discriminator: D sees each image beside its amplified high-pass residual x − blur_σ(x), where sensor noise, grain and edge sharpness live (0 = off, the paper)",
    ),
    ParamSpec::added(
        "d_highpass_gain",
        ParamType::Float {
            min: 1e-3,
            max: 1000.0,
        },
        "8",
        "Scale of d_highpass's detail channels (8: sensor noise of σ 0.02–0.05 reaches the image's own contrast)",
    ),
    ParamSpec::new(
        "lr_r",
        ParamType::Float {
            min: 1e-9,
            max: 1.0,
        },
        "0.001",
        "Refiner Adam learning rate",
    ),
    ParamSpec::new(
        "lr_d",
        ParamType::Float {
            min: 1e-9,
            max: 1.0,
        },
        "0.001",
        "Discriminator Adam learning rate",
    ),
    ParamSpec::new(
        "beta1",
        ParamType::Float {
            min: 0.0,
            max: 0.999,
        },
        "0.9",
        "Adam β₁ of both optimisers (GAN practice: 0.5)",
    ),
    ParamSpec::new(
        "pretrain_r_steps",
        INT,
        "200",
        "Refiner steps with only the self-regularisation loss (paper: 1000)",
    ),
    ParamSpec::new(
        "pretrain_d_steps",
        INT,
        "50",
        "Discriminator pretraining steps (paper: 200)",
    ),
    ParamSpec::new(
        "steps",
        INT,
        "300",
        "Adversarial rounds, each k_g refiner + k_d discriminator steps",
    ),
    ParamSpec::new(
        "k_g",
        ParamType::Int { min: 0, max: 1000 },
        "2",
        "Refiner steps per round (public code: 2)",
    ),
    ParamSpec::new(
        "k_d",
        ParamType::Int { min: 0, max: 1000 },
        "1",
        "Discriminator steps per round",
    ),
    ParamSpec::new(
        "history_size",
        ParamType::Int {
            min: 0,
            max: 1 << 30,
        },
        "2048",
        "History buffer of refined images (carpedm20: 25,600)",
    ),
    ParamSpec::new(
        "ema_decay",
        ParamType::Float {
            min: 0.0,
            max: 0.999_999,
        },
        "0",
        "Moving average of the refiner's weights over its adversarial steps; the average is the output refiner (0 = off, the paper)",
    ),
    ParamSpec::new(
        "seed",
        ParamType::Int {
            min: 0,
            max: i64::MAX,
        },
        "42",
        "Seed for initialisation, sampling and history",
    ),
    ParamSpec::new(
        "select",
        ParamType::Choice(&["last", "stats", "judge"]),
        "\"judge\"",
        "Output refiner: the last one (the paper); or, of those at the adversarial checkpoints and the end, the one whose refined images' statistics (intensity mean and spread, sharpness, noise) are closest to the real images' (stats), or whose held-out refined images a fresh classifier tells least well from held-out real ones (judge; see select_holdout). Label-free; every candidate is in refiner_check.json",
    ),
    ParamSpec::added(
        "select_holdout",
        ParamType::Int {
            min: 8,
            max: 1 << 20,
        },
        "512",
        "With select = \"judge\": images of each input kept out of training (evenly spread over it, at most a quarter) for the selection; the judge trains on half of them and is scored on the other half",
    ),
    ParamSpec::added(
        "select_judge_steps",
        ParamType::Int {
            min: 1,
            max: 100_000,
        },
        "200",
        "With select = \"judge\": training steps of each candidate's judge (batch 32, the estimator CNN at ¼ width, the same seed for every candidate)",
    ),
    ParamSpec::new(
        "checkpoint_every",
        INT,
        "100",
        "Checkpoint (and sample grid) every N iterations; 0 = only at the end",
    ),
];

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MetricRow {
    m: StepMetrics,
    seconds: f64,
}

/// The training run for images of `shape` = `[channels, height, width]`.
fn train_config(ctx: &StageCtx, shape: [usize; 3]) -> Result<TrainConfig> {
    let p = ctx.params;
    let (first_kernel, d) = match p.str("architecture")? {
        "hand" => (7, DiscriminatorConfig::hand()),
        _ => (3, DiscriminatorConfig::eye()),
    };
    let mut cfg = TrainConfig::new()
        .with_image_shape(shape)
        .with_refiner(
            RefinerConfig::narrow(p.usize("width")?)
                .with_first_kernel_size(first_kernel)
                .with_channels(shape[0])
                .with_blocks(p.usize("blocks")?)
                .with_residual(p.bool("residual")?)
                .with_noise_channels(p.usize("noise_channels")?)
                .with_latent_channels(p.usize("latent_channels")?)
                .with_psf_kernel(p.usize("psf_kernel")?)
                .with_noise_scale(p.float("noise_scale")?)
                .with_noise_kernel(p.usize("noise_kernel")?)
                .with_reflect_padding(p.bool("reflect_padding")?),
        )
        .with_discriminator(
            d.divided(p.usize("d_divisor")?)
                .with_spectral_norm(p.bool("d_spectral_norm")?),
        )
        .with_batch_size(p.usize("batch_size")?)
        .with_lambda(p.float("lambda")?)
        .with_reg_blur(p.float("reg_blur")?)
        .with_reg_noise(p.bool("reg_noise")?)
        .with_d_input_noise(p.float("d_input_noise")?)
        .with_d_r1(p.float("d_r1")?)
        .with_d_highpass(p.float("d_highpass")?)
        .with_d_highpass_gain(p.float("d_highpass_gain")?)
        .with_lr_r(p.float("lr_r")?)
        .with_lr_d(p.float("lr_d")?)
        .with_beta1(p.float("beta1")? as f32)
        .with_pretrain_r_steps(p.int("pretrain_r_steps")? as u64)
        .with_pretrain_d_steps(p.int("pretrain_d_steps")? as u64)
        .with_steps(p.int("steps")? as u64)
        .with_k_g(p.int("k_g")? as u64)
        .with_k_d(p.int("k_d")? as u64)
        .with_history_capacity(p.usize("history_size")?)
        .with_ema_decay(p.float("ema_decay")?)
        .with_seed(p.int("seed")? as u64);
    // The image's channels, and the detail channels with d_highpass.
    cfg.discriminator.channels = cfg.discriminator_channels();
    cfg.validate()
        .map_err(|e| ctx.err(format!("training params: {e}")))?;
    Ok(cfg)
}

/// Seeded sampling of in-memory images into batches.
pub(crate) struct ImageBank {
    synthetic: Vec<SampleImage>,
    real: Vec<SampleImage>,
    /// Pixel values ↦ `[-1, 1]` for each set (their schemas'); refined images are written in the
    /// synthetic set's.
    synthetic_range: ValueRange,
    real_range: ValueRange,
    rng: SmallRng,
}

impl ImageBank {
    fn draw(images: &[SampleImage], rng: &mut SmallRng, n: usize) -> Vec<SampleImage> {
        (0..n)
            .map(|_| images[rng.random_range(0..images.len())].clone())
            .collect()
    }
}

impl<B: burn::tensor::backend::Backend> BatchSource<B> for ImageBank {
    fn synthetic(
        &mut self,
        batch_size: usize,
        device: &B::Device,
    ) -> std::result::Result<Tensor<B, 4>, NnError> {
        sample::to_tensor(
            &Self::draw(&self.synthetic, &mut self.rng, batch_size),
            self.synthetic_range,
            device,
        )
    }
    fn real(
        &mut self,
        batch_size: usize,
        device: &B::Device,
    ) -> std::result::Result<Tensor<B, 4>, NnError> {
        sample::to_tensor(
            &Self::draw(&self.real, &mut self.rng, batch_size),
            self.real_range,
            device,
        )
    }
}

/// How the output refiner is picked among the adversarial checkpoints and the end.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Select {
    /// The last one (the paper).
    Last,
    /// The smallest distance of the statistics check.
    Stats,
    /// The lowest AUC of a fresh judge between held-out refined and held-out real images.
    Judge,
}

impl Select {
    /// Scores this close to the lowest count as a tie, which goes to the later (longer
    /// trained) refiner. For the judge: AUC differences below what its few hundred held-out
    /// images resolve, and a saturated judge (every candidate at ≈ 1.0) keeps the last refiner.
    fn tie(self) -> f64 {
        match self {
            Select::Judge => 0.005,
            Select::Last | Select::Stats => 0.0,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Select::Last => "last",
            Select::Stats => "stats",
            Select::Judge => "judge",
        }
    }
}

/// The last `PROBE` images of a bank (the statistics check's probe without a held-out set).
fn probe(images: &[SampleImage]) -> &[SampleImage] {
    &images[images.len().saturating_sub(PROBE)..]
}

/// The index of the latest score within `tie` of the lowest (0 for none).
fn pick(scores: &[f64], tie: f64) -> usize {
    let low = scores.iter().copied().fold(f64::INFINITY, f64::min);
    scores.iter().rposition(|s| *s <= low + tie).unwrap_or(0)
}

/// The fewest images of each input `select = "judge"` holds out (else it keeps the last refiner).
const MIN_HOLDOUT: usize = 8;

/// Images kept out of training for `select = "judge"`.
#[derive(Default)]
struct Holdout {
    synthetic: Vec<SampleImage>,
    real: Vec<SampleImage>,
    /// Training steps of each candidate's judge.
    judge_steps: u64,
}

/// Move `n` images, evenly spread (every k-th: a set stored in class order still gives every
/// class), out of `images`; at most a quarter of them.
fn hold_out(images: &mut Vec<SampleImage>, n: usize) -> Vec<SampleImage> {
    let n = n.min(images.len() / 4);
    if n == 0 {
        return Vec::new();
    }
    let k = images.len() / n;
    let mut kept = Vec::with_capacity(images.len() - n);
    let mut out = Vec::with_capacity(n);
    for (i, img) in std::mem::take(images).into_iter().enumerate() {
        if i % k == k - 1 && out.len() < n {
            out.push(img);
        } else {
            kept.push(img);
        }
    }
    *images = kept;
    out
}

/// What the training job hands back to the stage.
struct Trained {
    metrics: Vec<MetricRow>,
    refiner: Vec<u8>,
    /// The statistics check of every candidate, and which was chosen.
    check: serde_json::Value,
    discriminator: Vec<u8>,
    grids: Vec<(String, Vec<u8>)>,
    resumed_from: u64,
}

struct TrainJob<'a> {
    stage: &'a str,
    cfg: TrainConfig,
    bank: ImageBank,
    scratch: Root,
    checkpoint_every: u64,
    /// How the output refiner is picked.
    select: Select,
    /// Held-out images (empty unless `select = "judge"`).
    holdout: Holdout,
    /// The float type R and D compute in (the `precision` param).
    precision: nn::Precision,
}

/// A candidate output refiner, measured.
#[derive(Serialize, Deserialize)]
struct Candidate {
    check: RefinerCheck,
    distance: f64,
    /// The held-out judge's verdict on its refined images against real ones (`select = "judge"`).
    #[serde(default)]
    judge: Option<Verdict>,
}

impl Candidate {
    /// What `select` minimises (lower = better). A collapsed refiner (the statistics check) is
    /// picked by the judge only if every candidate collapsed.
    fn score(&self, select: Select) -> f64 {
        match (select, &self.judge) {
            (Select::Judge, Some(v)) => {
                v.auc
                    + if self.check.collapse().is_some() {
                        1.0
                    } else {
                        0.0
                    }
            }
            _ => self.distance,
        }
    }
}

/// How many synthetic and real images the statistics check uses.
const PROBE: usize = 256;

/// Crash injection for tests: abort after this many checkpoints (`SIMGAN_CRASH_AFTER_CHECKPOINTS`).
fn crash_after_checkpoints() -> Option<u64> {
    std::env::var("SIMGAN_CRASH_AFTER_CHECKPOINTS")
        .ok()?
        .parse()
        .ok()
}

impl TrainJob<'_> {
    fn grid<B: AutodiffBackend>(
        &self,
        trainer: &RefinerTrainer<B>,
        step: u64,
    ) -> Result<(String, Vec<u8>)> {
        let n = 8.min(self.bank.synthetic.len()).min(self.bank.real.len());
        let synth: Vec<SampleImage> = self.bank.synthetic[..n].to_vec();
        let real: Vec<SampleImage> = self.bank.real[..n].to_vec();
        let bits = synth.first().map(|i| i.format().bits).unwrap_or(8);
        let range = self.bank.synthetic_range;
        let x = sample::to_tensor::<B::InnerBackend>(&synth, range, trainer.device())?;
        let refined = sample::from_tensor(trainer.refine(x), bits, range, &synth)?;
        let view = |v: Vec<SampleImage>, r: ValueRange| -> Vec<SampleImage> {
            v.into_iter().map(|i| i.for_view(r)).collect()
        };
        let (synth, refined, real) = (
            view(synth, range),
            view(refined, range),
            view(real, self.bank.real_range),
        );
        let png = common::grid_png(&[&synth, &refined, &real], 2, "sample grid")?;
        Ok((format!("samples-{step:07}.png"), png))
    }

    /// The trainer's output refiner measured: the statistics check on the probe images (the
    /// held-out images with `select = "judge"`, else the last `PROBE` of each bank; the same
    /// every time) and, with `select = "judge"`, a fresh judge's verdict on the held-out images.
    fn check<B: AutodiffBackend>(
        &self,
        trainer: &RefinerTrainer<B>,
        step: u64,
    ) -> Result<Candidate> {
        let judged = self.select == Select::Judge;
        let (synth, real) = if judged {
            (&self.holdout.synthetic[..], &self.holdout.real[..])
        } else {
            (probe(&self.bank.synthetic), probe(&self.bank.real))
        };
        let bits = synth.first().map(|i| i.format().bits).unwrap_or(8);
        let refiner = trainer.output_refiner();
        let mut refined = Vec::with_capacity(synth.len());
        let range = self.bank.synthetic_range;
        for chunk in synth.chunks(64) {
            let x = sample::to_tensor::<B::InnerBackend>(chunk, range, trainer.device())?;
            refined.extend(sample::from_tensor(
                nn::refine(&refiner, x),
                bits,
                range,
                chunk,
            )?);
        }
        let judge = if judged {
            let cfg = JudgeConfig {
                steps: self.holdout.judge_steps,
                // The same judge (split, weights, batches) for every candidate.
                seed: self.cfg.seed ^ 0x005e_1ec7,
                range: Some(self.bank.real_range),
                ..JudgeConfig::default()
            };
            let v = crate::judge::judge_on::<B>(trainer.device(), &refined, real, &cfg)
                .map_err(|e| Error::stage(self.stage, format!("selection judge: {e}")))?;
            tracing::info!(
                stage = self.stage,
                step,
                auc = v.auc,
                "selection judge: held-out refined vs real"
            );
            Some(v)
        } else {
            None
        };
        let check = RefinerCheck::measure(step, synth, &refined, real);
        let distance = check.distance();
        Ok(Candidate {
            check,
            distance,
            judge,
        })
    }

    fn train<B: AutodiffBackend>(mut self, device: B::Device) -> Result<Trained> {
        let err = |e: NnError| Error::stage(self.stage, e.to_string());
        let (mut trainer, mut metrics) = match self.scratch.get("checkpoint.bin")? {
            Some(bytes) => {
                let t = RefinerTrainer::<B>::load_checkpoint(&bytes, &device).map_err(err)?;
                let m: Vec<MetricRow> = match self.scratch.get("metrics.json")? {
                    Some(b) => serde_json::from_slice(&b).map_err(|source| Error::Json {
                        path: self.scratch.url_of("metrics.json"),
                        source,
                    })?,
                    None => Vec::new(),
                };
                tracing::info!(
                    stage = self.stage,
                    step = t.step_count(),
                    "resuming training from checkpoint"
                );
                (t, m)
            }
            None => {
                nn::seed::<B>(&device, self.cfg.seed);
                (
                    RefinerTrainer::<B>::new(self.cfg.clone(), &device).map_err(err)?,
                    Vec::new(),
                )
            }
        };
        trainer.set_precision(self.precision);
        let resumed_from = trainer.step_count();
        metrics.retain(|r| r.m.step < resumed_from);
        // Batches after a resume are drawn from a generator seeded by the step, so a resumed run
        // does not repeat the batches of the first one.
        self.bank.rng = SmallRng::seed_from_u64(
            self.cfg.seed ^ resumed_from.wrapping_mul(0xA24B_AED4_963E_E407),
        );
        let total = self.cfg.total_iterations();
        let adversarial_from = self.cfg.pretrain_r_steps + self.cfg.pretrain_d_steps;
        let mut grids = Vec::new();
        let mut checkpoints = 0u64;
        // Every candidate's check, and the best candidate's weights (kept in the scratch folder
        // so a resumed run still knows them).
        let mut candidates: Vec<Candidate> = match self.scratch.get("candidates.json")? {
            Some(b) => serde_json::from_slice(&b).map_err(|source| Error::Json {
                path: self.scratch.url_of("candidates.json"),
                source,
            })?,
            None => Vec::new(),
        };
        candidates.retain(|c| c.check.step <= resumed_from);
        for i in resumed_from..total {
            let t = Instant::now();
            let m = trainer.step(i, &mut self.bank).map_err(err)?;
            metrics.push(MetricRow {
                m,
                seconds: t.elapsed().as_secs_f64(),
            });
            let done = i + 1;
            if self.checkpoint_every > 0 && done % self.checkpoint_every == 0 && done < total {
                self.scratch.put(
                    "checkpoint.bin",
                    trainer.save_checkpoint(true).map_err(err)?,
                )?;
                let mbytes = serde_json::to_vec(&metrics).map_err(|source| Error::Json {
                    path: self.scratch.url_of("metrics.json"),
                    source,
                })?;
                self.scratch.put("metrics.json", mbytes)?;
                grids.push(self.grid(&trainer, done)?);
                if self.select != Select::Last && done > adversarial_from {
                    let c = self.check(&trainer, done)?;
                    // Keep its weights if it is the pick so far (the rule the end applies).
                    let scores: Vec<f64> = candidates
                        .iter()
                        .chain([&c])
                        .map(|c| c.score(self.select))
                        .collect();
                    if pick(&scores, self.select.tie()) == candidates.len() {
                        let w = nn::save_refiner(&trainer.output_refiner(), &self.cfg.refiner)
                            .map_err(err)?;
                        self.scratch.put("best_refiner.safetensors", w)?;
                    }
                    candidates.push(c);
                    let cbytes = serde_json::to_vec(&candidates).map_err(|source| Error::Json {
                        path: self.scratch.url_of("candidates.json"),
                        source,
                    })?;
                    self.scratch.put("candidates.json", cbytes)?;
                }
                checkpoints += 1;
                if crash_after_checkpoints().is_some_and(|n| checkpoints >= n) {
                    eprintln!(
                        "SIMGAN_CRASH_AFTER_CHECKPOINTS: aborting after {checkpoints} checkpoints"
                    );
                    std::process::abort();
                }
            }
        }
        grids.push(self.grid(&trainer, total)?);
        let mut refiner =
            nn::save_refiner(&trainer.output_refiner(), &self.cfg.refiner).map_err(err)?;
        let last = self.check(&trainer, total)?;
        // The latest candidate within the tie margin of the lowest score: the end, or the
        // checkpoint kept in `best_refiner.safetensors` (the pick at its time, and no later
        // candidate displaced it).
        let scores: Vec<f64> = candidates
            .iter()
            .chain([&last])
            .map(|c| c.score(self.select))
            .collect();
        let best = candidates.get(pick(&scores, self.select.tie()));
        let chosen = match (self.select != Select::Last, best) {
            (true, Some(b)) => {
                refiner = self
                    .scratch
                    .get_required("best_refiner.safetensors")?
                    .to_vec();
                (b.check.clone(), b.judge)
            }
            _ => (last.check.clone(), last.judge),
        };
        let (chosen, chosen_judge) = chosen;
        candidates.push(last);
        let check = serde_json::json!({
            "select": self.select.name(),
            "chosen_step": chosen.step,
            "chosen": chosen,
            "distance": chosen.distance(),
            "judge": chosen_judge,
            "holdout": self.holdout.synthetic.len(),
            "collapse": chosen.collapse(),
            "candidates": candidates.iter().map(|c| serde_json::json!({"step": c.check.step, "distance": c.distance, "drift": c.check.drift, "judge_auc": c.judge.map(|v| v.auc), "collapse": c.check.collapse()})).collect::<Vec<_>>(),
        });
        let discriminator =
            nn::save_discriminator(trainer.discriminator(), &self.cfg.discriminator)
                .map_err(err)?;
        Ok(Trained {
            metrics,
            refiner,
            check,
            discriminator,
            grids,
            resumed_from,
        })
    }
}

impl BackendJob for TrainJob<'_> {
    type Output = Result<Trained>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        self.train::<B>(device)
    }
}

/// Load the train split of a sample input and decode it; with its value range.
fn load_images(ctx: &StageCtx, role: &str) -> Result<(Vec<SampleImage>, ValueRange)> {
    let committed = ctx.stage_input(role)?;
    let loaded = sample::load(ctx.root, committed, Some("train"))?;
    if loaded.images.is_empty() {
        return Err(ctx.err(format!("input `{role}` has no split=train rows")));
    }
    let range = loaded.range();
    Ok((loaded.images, range))
}

/// `[channels, height, width]` of both inputs, which must agree.
fn image_shape(
    ctx: &StageCtx,
    synthetic: &[SampleImage],
    real: &[SampleImage],
) -> Result<[usize; 3]> {
    let desc = |i: &SampleImage| (i.width, i.height, i.format());
    let (s, r) = match (synthetic.first(), real.first()) {
        (Some(s), Some(r)) => (desc(s), desc(r)),
        _ => return Err(ctx.err("an input has no images")),
    };
    if s != r {
        let show = |(w, h, f): (u32, u32, PixelFormat)| format!("{w}×{h} {f}");
        return Err(ctx.err(format!(
            "inputs `synthetic` ({}) and `real` ({}) must have one image size and format (resize or convert at ingest)",
            show(s),
            show(r)
        )));
    }
    Ok([s.2.channels as usize, s.1 as usize, s.0 as usize])
}

impl StageKind for TrainRefiner {
    fn name(&self) -> &'static str {
        "train-refiner"
    }
    fn about(&self) -> &'static str {
        "Train the SimGAN refiner against a local patch discriminator (S+U learning)"
    }
    fn code_version(&self) -> &'static str {
        "3"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn inputs(&self) -> &'static [InputSpec] {
        INPUTS
    }
    fn schema(&self) -> &'static str {
        "train_metrics"
    }

    fn plan(&self, _ctx: &StageCtx) -> Result<Vec<UnitSpec>> {
        Ok(vec![UnitSpec {
            index: 0,
            spec: serde_json::Value::Null,
        }])
    }

    fn run_unit(&self, ctx: &StageCtx, _unit: &UnitSpec, out: &mut UnitOutput) -> Result<()> {
        let device = common::device(ctx)?;
        let (mut synthetic, synthetic_range) = load_images(ctx, "synthetic")?;
        let (mut real, real_range) = load_images(ctx, "real")?;
        if synthetic_range != real_range {
            // The discriminator would see the same pixel value as two different inputs.
            let window = |r: ValueRange| match r.window {
                Some(w) => format!(", window ±{w}"),
                None => String::new(),
            };
            return Err(ctx.err(format!(
                "inputs `synthetic` (pixel range {} … {}{}) and `real` ({} … {}{}) must map pixel values to the networks alike: give both stages the same range (for depth: the same depth_max_mm and network_depth)",
                synthetic_range.lo,
                synthetic_range.hi,
                window(synthetic_range),
                real_range.lo,
                real_range.hi,
                window(real_range)
            )));
        }
        let cfg = train_config(ctx, image_shape(ctx, &synthetic, &real)?)?;
        let select = match ctx.params.str("select")? {
            "stats" => Select::Stats,
            "judge" => Select::Judge,
            _ => Select::Last,
        };
        // The judge needs a few held-out images of each input; with fewer than
        // 4 · MIN_HOLDOUT training images in either, the last refiner is the output (noted).
        let mut select_note = None;
        let select = if select == Select::Judge && synthetic.len().min(real.len()) / 4 < MIN_HOLDOUT
        {
            let why = format!(
                "select = \"judge\" needs at least {} training images per input to hold {MIN_HOLDOUT} out for the judge (synthetic {}, real {}); the output is the last refiner",
                4 * MIN_HOLDOUT,
                synthetic.len(),
                real.len()
            );
            tracing::warn!(stage = ctx.stage, "{why}");
            select_note = Some(why);
            Select::Last
        } else {
            select
        };
        let holdout = if select == Select::Judge {
            let n = ctx.params.usize("select_holdout")?;
            Holdout {
                synthetic: hold_out(&mut synthetic, n),
                real: hold_out(&mut real, n),
                judge_steps: ctx.params.int("select_judge_steps")? as u64,
            }
        } else {
            Holdout::default()
        };
        let bank = ImageBank {
            synthetic,
            real,
            synthetic_range,
            real_range,
            rng: SmallRng::seed_from_u64(cfg.seed),
        };
        tracing::info!(stage = ctx.stage, synthetic = bank.synthetic.len(), real = bank.real.len(), iterations = cfg.total_iterations(), %device, "training refiner");
        let config_json = serde_json::to_vec_pretty(&cfg).map_err(|source| Error::Json {
            path: "train_config.json".into(),
            source,
        })?;
        let job = TrainJob {
            stage: ctx.stage,
            cfg,
            bank,
            scratch: ctx.scratch(),
            checkpoint_every: ctx.params.int("checkpoint_every")? as u64,
            select,
            holdout,
            precision: common::precision(ctx)?,
        };
        let mut trained = nn::run_on(&device, job)??;
        let rows: Vec<(StepMetrics, f64)> = trained
            .metrics
            .iter()
            .map(|r| (r.m.clone(), r.seconds))
            .collect();
        out.write(&common::metrics_batch(&rows, None)?)?;
        out.artifact("refiner.safetensors", trained.refiner)?;
        out.artifact("discriminator.safetensors", trained.discriminator)?;
        out.artifact("train_config.json", config_json)?;
        if let Some(note) = select_note {
            trained.check["select_note"] = serde_json::Value::String(note);
        }
        if let Some(why) = trained.check["collapse"].as_str() {
            tracing::warn!(stage = ctx.stage, "the refiner looks collapsed: {why}");
        }
        let check = serde_json::to_vec_pretty(&trained.check).map_err(|source| Error::Json {
            path: "refiner_check.json".into(),
            source,
        })?;
        out.artifact("refiner_check.json", check)?;
        for (name, png) in trained.grids {
            out.artifact(&name, png)?;
        }
        if trained.resumed_from > 0 {
            tracing::info!(
                stage = ctx.stage,
                from = trained.resumed_from,
                "training resumed from a checkpoint"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Pixels;

    /// A 1×1 grey image whose one pixel is `v` (to tell images apart).
    fn px(v: u8) -> SampleImage {
        SampleImage {
            width: 1,
            height: 1,
            channels: 1,
            pixels: Pixels::U8(vec![v]),
        }
    }

    fn values(images: &[SampleImage]) -> Vec<u8> {
        images
            .iter()
            .map(|i| match &i.pixels {
                Pixels::U8(p) => p[0],
                Pixels::U16(_) => unreachable!("8-bit test images"),
            })
            .collect()
    }

    #[test]
    fn the_pick_is_the_latest_score_within_the_tie_of_the_lowest() {
        assert_eq!(pick(&[0.9, 0.73, 0.76, 0.8], 0.005), 1);
        assert_eq!(pick(&[0.9, 0.73, 0.734, 0.8], 0.005), 2);
        // A saturated judge: every candidate ≈ 1, the last one wins.
        assert_eq!(pick(&[1.0, 1.0, 0.9999, 1.0], 0.005), 3);
        // No margin: the lowest, and the later of exact ties.
        assert_eq!(pick(&[0.5, 0.4, 0.4, 0.6], 0.0), 2);
        assert_eq!(pick(&[], 0.005), 0);
    }

    #[test]
    fn the_holdout_is_spread_over_the_set_and_at_most_a_quarter() {
        // Stored in class order (40 of class 0, then 40 of class 1): every k-th image still
        // holds out both classes.
        let mut set: Vec<SampleImage> = (0..80).map(px).collect();
        let out = hold_out(&mut set, 8);
        assert_eq!(values(&out), vec![9, 19, 29, 39, 49, 59, 69, 79]);
        assert_eq!(set.len(), 72);
        assert!(values(&set).iter().all(|v| v % 10 != 9));
        // Asked for more than a quarter: a quarter.
        let mut small: Vec<SampleImage> = (0..10).map(px).collect();
        assert_eq!(hold_out(&mut small, 100).len(), 2);
        assert_eq!(small.len(), 8);
        // Too few to hold any out.
        let mut tiny: Vec<SampleImage> = (0..3).map(px).collect();
        assert!(hold_out(&mut tiny, 8).is_empty());
        assert_eq!(tiny.len(), 3);
    }
}
