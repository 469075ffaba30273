//! Training loops: the S+U refiner/discriminator trainer with the paper's schedule, the gaze
//! estimator trainer, and the image ↔ tensor helpers and inference entry points stages use.
//!
//! The loop follows burn's `examples/wgan`: the refined images are detached (computed on the
//! inner, non-autodiff backend) for the D step; `GradientsParams::from_grads(loss.backward(),
//! &model)` keeps only one model's gradients; `optim.step(lr, model, grads)` updates it.
//!
//! Everything D sees passes through one place, `RefinerTrainer::d_input`: instance noise
//! ([`TrainConfig::d_input_noise`]) and the detail channels ([`TrainConfig::d_highpass`]).
//!
//! Schedule ([`TrainConfig::phase`]): iteration `i` (0-based) is
//! - `i < pretrain_r_steps`: [`Phase::PretrainRefiner`] — R with the self-regularisation loss only;
//! - then `pretrain_d_steps` of [`Phase::PretrainDiscriminator`] — D against the pretrained R;
//! - then `steps` rounds of `k_g` [`Phase::Refiner`] steps followed by `k_d`
//!   [`Phase::Discriminator`] steps.
//!
//! Defaults ([`TrainConfig::new`]) are the paper's eye networks with the public
//! hyper-parameters known to train on 35×55 grey eyes in `[-1, 1]` (carpedm20's TensorFlow
//! code): Adam with lr 1e-3 for R and D (β = 0.9, 0.999), K_g = 2, K_d = 1, pretraining 1,000 R /
//! 200 D steps, a 25,600-image history, and carpedm20's self-regularisation strength. carpedm20
//! uses λ = 0.5 on per-image *sums* (1,925 pixels against 126 patches); our losses are *means*
//! (see [`super::loss`]), so the same balance is λ = 0.5 · 1925 / 126 ≈ 7.6, and the default is
//! 7.5. (λ = 0.5 in mean form is ≈ 15× weaker: in the toy test the refiner then drifts 2–5× further
//! from its input than the real domain is.) Batch 32 (the paper and carpedm20 use 512 on GPUs).
//! On the 2-core CPU (burn 0.21 flex, which runs these convolutions on one core) the full-width
//! networks take ≈ 11 s per R + D iteration at batch 64 (`bench_cpu(64, 64, 3)`), far too slow
//! for a demo; use [`TrainConfig::cpu_demo`] (refiner width 16, discriminator a quarter wide,
//! batch 16), whose iterations take well under a second (`bench_cpu(16, 16, 5)`, with the
//! full-width discriminator: 0.8 s).

use burn::config::Config;
use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer, Sgd, SgdConfig};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use image::GrayImage;

use super::NnError;
use super::backend::init_seeded;
use super::history::HistoryBuffer;
use super::loss::{
    CLASS_REAL, CLASS_REFINED, discriminator_loss, gaussian_blur, patch_accuracy,
    refiner_adversarial_loss, scalar, self_regularization_loss,
};
use super::model::{
    Discriminator, DiscriminatorConfig, GazeNet, GazeNetConfig, Refiner, RefinerConfig,
};
use super::precision::{Precision, cast_module};

/// σ of the random input step ([-1, 1] units) of the finite-difference R1 penalty
/// ([`TrainConfig::d_r1`]): below the eye demo's real sensor noise (σ 0.02–0.07 in these units),
/// so the penalty measures D's slope at the real images, not its response to noise of the size
/// D must tell apart.
pub const R1_SIGMA: f64 = 0.01;

// ---------------------------------------------------------------------------------------------
// Config, schedule, metrics
// ---------------------------------------------------------------------------------------------

/// Everything that defines a refiner training run (serialised into checkpoints as JSON).
#[derive(Config, Debug, PartialEq)]
pub struct TrainConfig {
    /// Refiner architecture.
    #[config(default = "RefinerConfig::new()")]
    pub refiner: RefinerConfig,
    /// Discriminator architecture.
    #[config(default = "DiscriminatorConfig::new()")]
    pub discriminator: DiscriminatorConfig,
    /// `[channels, height, width]` of the images (35×55 grey eyes by default).
    #[config(default = "[1, 35, 55]")]
    pub image_shape: [usize; 3],
    /// Images per step, for synthetic and real batches alike (≥ 2; D takes b/2 from history).
    #[config(default = 32)]
    pub batch_size: usize,
    /// Self-regularisation weight λ on `mean |R(x) − x|` (7.5 ≈ carpedm20's 0.5 on sums; see
    /// the module docs).
    #[config(default = 7.5)]
    pub lambda: f64,
    /// σ in pixels of the Gaussian blur ψ the self-regularisation compares through
    /// (`λ · mean |ψ(R(x)) − ψ(x)|`); 0 = ψ = identity, the paper's per-pixel L1. See
    /// [`super::loss::self_regularization_loss`].
    #[config(default = 0.0)]
    pub reg_blur: f64,
    /// Whether the self-regularisation sees the refiner's sensor-noise branch (true, as it
    /// always did). False: it compares R's output *without* that branch's term, so zero-mean
    /// sensor noise costs nothing and D alone sets its amplitude. Why one would: D is piecewise
    /// linear (LeakyReLU), so the expected adversarial gradient on a noise amplitude σ,
    /// `E[∇D · z] = σ · E[∂²D]` (Stein), comes only from D's curvature, while the L1's, `λ·E|z|`,
    /// is first order. On the eye demo the noise ended no larger without the L1 on it: D itself
    /// trained it down (docs/eye-demo-tuning.md).
    #[config(default = true)]
    pub reg_noise: bool,
    /// Instance noise: σ of Gaussian noise added to every image the discriminator sees (real,
    /// refined, and the refined images of the refiner's step), in the networks' `[-1, 1]`
    /// units; 0 = off (the paper). It blurs the two distributions into each other, so D cannot
    /// win on pixel-exact patterns that a refiner can game, and its gradient stays informative.
    #[config(default = 0.0)]
    pub d_input_noise: f64,
    /// σ in pixels of a detail channel for the discriminator: D sees each image beside its
    /// high-pass residual `d_highpass_gain · (x − G_σ ∗ x)` (so its input has twice the image's
    /// channels); 0 = off (the paper). Sensor noise, grain and edge sharpness live in the residual
    /// at a small amplitude next to the image's tone; a D that sees them amplified, in a channel
    /// of their own, tells a noise-free, sharp render from a noisy, blurred photo from the first
    /// step, and its gradient asks the refiner for that texture. Linear, so R's gradient passes.
    #[config(default = 0.0)]
    pub d_highpass: f64,
    /// Scale of the detail channels ([`Self::d_highpass`]): at 8, sensor noise of σ ≈ 0.02–0.05
    /// in `[-1, 1]` units reaches the amplitude of the image's own contrast.
    #[config(default = 8.0)]
    pub d_highpass_gain: f64,
    /// Weight γ of a gradient penalty on real images for the discriminator (R1, Mescheder et
    /// al. 2018: `γ/2 · ‖∇ₓ s(y)‖²`, s = D's refined-minus-real logit per patch, averaged over
    /// patches and batch); 0 = off (the paper). R1 is the standard remedy for a GAN that circles
    /// the data instead of converging to it (a D that is flat on real images cannot keep
    /// rewarding a refiner for patterns real images do not have); on the eye demo it did not make
    /// the refined eyes more realistic (docs/eye-demo-tuning.md, *An R1 penalty*). It needs no
    /// gradient of a gradient here: the squared gradient along a random direction is estimated
    /// by a finite difference, `E_ε (s(y + ε) − s(y))² / σ² = ‖∇ₓ s‖²` for ε ~ N(0, σ²) with
    /// σ = [`R1_SIGMA`], so one more forward of D on each real batch buys it.
    #[config(default = 0.0)]
    pub d_r1: f64,
    /// Refiner learning rate (Adam).
    #[config(default = 1e-3)]
    pub lr_r: f64,
    /// Discriminator learning rate (Adam).
    #[config(default = 1e-3)]
    pub lr_d: f64,
    /// Adam β₁ for both optimisers.
    #[config(default = 0.9)]
    pub beta1: f32,
    /// Adam β₂ for both optimisers.
    #[config(default = 0.999)]
    pub beta2: f32,
    /// Refiner steps with only the self-regularisation loss (paper: 1,000 eyes, 500 hands).
    #[config(default = 1000)]
    pub pretrain_r_steps: u64,
    /// Discriminator steps against the pretrained refiner (paper: 200).
    #[config(default = 200)]
    pub pretrain_d_steps: u64,
    /// Refiner steps per adversarial round (public code: 2; 50 is reported to collapse).
    #[config(default = 2)]
    pub k_g: u64,
    /// Discriminator steps per adversarial round (1).
    #[config(default = 1)]
    pub k_d: u64,
    /// Adversarial rounds (each `k_g + k_d` iterations).
    #[config(default = 10000)]
    pub steps: u64,
    /// History buffer capacity in images (carpedm20: 25,600).
    #[config(default = 25600)]
    pub history_capacity: usize,
    /// Seed for weight initialisation and history sampling.
    #[config(default = 42)]
    pub seed: u64,
    /// Clip every parameter's gradient to this L2 norm (carpedm20 clips at 50); none by default.
    pub grad_clip_norm: Option<f32>,
    /// Exponential moving average of the refiner's weights over the adversarial refiner steps
    /// (`ema ← d·ema + (1 − d)·R` after each): the average, not the last iterate, is the trained
    /// refiner. 0 = off (the paper). Smooths the oscillation of a short GAN run.
    #[config(default = 0.0)]
    pub ema_decay: f64,
}

impl TrainConfig {
    /// A CPU-sized run on 35×55 eyes: refiner width 16, discriminator channels ÷ 4, batch 16,
    /// 200 + 50 pretraining steps, 300 rounds (1,150 iterations), a 2,048-image history.
    pub fn cpu_demo() -> Self {
        Self::new()
            .with_refiner(RefinerConfig::narrow(16))
            .with_discriminator(DiscriminatorConfig::narrow(4))
            .with_batch_size(16)
            .with_pretrain_r_steps(200)
            .with_pretrain_d_steps(50)
            .with_steps(300)
            .with_history_capacity(2048)
    }

    /// Check the values before building a trainer.
    pub fn validate(&self) -> Result<(), NnError> {
        self.refiner.validate()?;
        if !(0.0..1.0).contains(&self.ema_decay) {
            return Err(NnError::InvalidConfig(format!(
                "ema_decay must be in [0, 1), got {}",
                self.ema_decay
            )));
        }
        self.discriminator.validate()?;
        if self.refiner.channels != self.image_shape[0]
            || self.discriminator.channels != self.discriminator_channels()
        {
            return Err(NnError::InvalidConfig(format!(
                "image_shape {:?} has {} channels: the refiner needs {} and the discriminator {} \
                 (with its detail channels), but they have {} and {}",
                self.image_shape,
                self.image_shape[0],
                self.image_shape[0],
                self.discriminator_channels(),
                self.refiner.channels,
                self.discriminator.channels
            )));
        }
        if self.image_shape.contains(&0) {
            return Err(NnError::InvalidConfig(format!(
                "image_shape {:?} has a zero",
                self.image_shape
            )));
        }
        if self.batch_size < 2 {
            return Err(NnError::InvalidConfig(format!(
                "batch_size must be ≥ 2, got {}",
                self.batch_size
            )));
        }
        if self.k_g + self.k_d == 0 && self.steps > 0 {
            return Err(NnError::InvalidConfig("k_g + k_d must be > 0".into()));
        }
        if !(self.d_r1 >= 0.0 && self.d_r1.is_finite()) {
            return Err(NnError::InvalidConfig(format!(
                "d_r1 must be finite and >= 0, got {}",
                self.d_r1
            )));
        }
        if !(self.d_input_noise >= 0.0 && self.d_input_noise <= 2.0) {
            return Err(NnError::InvalidConfig(format!(
                "d_input_noise must be in [0, 2], got {}",
                self.d_input_noise
            )));
        }
        if !(self.d_highpass >= 0.0 && self.d_highpass <= 64.0) {
            return Err(NnError::InvalidConfig(format!(
                "d_highpass must be in [0, 64] px, got {}",
                self.d_highpass
            )));
        }
        if !(self.d_highpass_gain > 0.0 && self.d_highpass_gain <= 1000.0) {
            return Err(NnError::InvalidConfig(format!(
                "d_highpass_gain must be in (0, 1000], got {}",
                self.d_highpass_gain
            )));
        }
        if !(self.reg_blur >= 0.0 && self.reg_blur <= 64.0) {
            return Err(NnError::InvalidConfig(format!(
                "reg_blur must be in [0, 64] px, got {}",
                self.reg_blur
            )));
        }
        if !(self.lambda >= 0.0 && self.lr_r > 0.0 && self.lr_d > 0.0) {
            return Err(NnError::InvalidConfig(format!(
                "lambda must be ≥ 0 and learning rates > 0, got λ={} lr_r={} lr_d={}",
                self.lambda, self.lr_r, self.lr_d
            )));
        }
        Ok(())
    }

    /// Input channels of the discriminator: the image's, twice over with the detail channels
    /// of [`Self::d_highpass`].
    pub fn discriminator_channels(&self) -> usize {
        let c = self.image_shape[0];
        if self.d_highpass > 0.0 { 2 * c } else { c }
    }

    /// All iterations of the run: pretraining plus `steps × (k_g + k_d)`.
    pub fn total_iterations(&self) -> u64 {
        self.pretrain_r_steps + self.pretrain_d_steps + self.steps * (self.k_g + self.k_d)
    }

    /// What iteration `i` does, or `None` past the end of the run.
    pub fn phase(&self, i: u64) -> Option<Phase> {
        if i < self.pretrain_r_steps {
            return Some(Phase::PretrainRefiner);
        }
        let i = i - self.pretrain_r_steps;
        if i < self.pretrain_d_steps {
            return Some(Phase::PretrainDiscriminator);
        }
        let j = i - self.pretrain_d_steps;
        let round = self.k_g + self.k_d;
        if round == 0 || j >= self.steps * round {
            return None;
        }
        Some(if j % round < self.k_g {
            Phase::Refiner
        } else {
            Phase::Discriminator
        })
    }

    pub(crate) fn adam_config(&self) -> AdamConfig {
        AdamConfig::new()
            .with_beta_1(self.beta1)
            .with_beta_2(self.beta2)
            .with_grad_clipping(self.grad_clip_norm.map(GradientClippingConfig::Norm))
    }
}

/// What one training iteration does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Refiner, self-regularisation only.
    PretrainRefiner,
    /// Discriminator against the pretrained refiner.
    PretrainDiscriminator,
    /// Adversarial refiner step.
    Refiner,
    /// Adversarial discriminator step.
    Discriminator,
}

/// Losses and accuracies of one iteration (`None` where the iteration did not compute them).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepMetrics {
    /// The iteration index (0-based) this describes.
    pub step: u64,
    /// What the iteration did.
    pub phase: Phase,
    /// Refiner local adversarial loss (mean patch cross-entropy towards "real").
    pub adv_loss: Option<f32>,
    /// Self-regularisation loss λ·mean|R(x) − x|.
    pub reg_loss: Option<f32>,
    /// Refiner total loss (adv + reg, or reg alone while pretraining).
    pub refiner_loss: Option<f32>,
    /// Discriminator loss (refined + real cross-entropies, plus the R1 penalty when
    /// [`TrainConfig::d_r1`] is on).
    pub d_loss: Option<f32>,
    /// Fraction of real patches D classifies as real.
    pub d_acc_real: Option<f32>,
    /// Fraction of refined patches D classifies as refined.
    pub d_acc_refined: Option<f32>,
    /// Whether half of D's refined batch came from the history buffer.
    pub used_history: bool,
    /// Images in the history buffer after the iteration.
    pub history_len: usize,
}

impl StepMetrics {
    fn new(step: u64, phase: Phase, history_len: usize) -> Self {
        Self {
            step,
            phase,
            adv_loss: None,
            reg_loss: None,
            refiner_loss: None,
            d_loss: None,
            d_acc_real: None,
            d_acc_refined: None,
            used_history: false,
            history_len,
        }
    }
}

/// Where [`RefinerTrainer::step`] gets its batches: synthetic and real images as
/// `[batch, c, h, w]` tensors in `[-1, 1]` (see [`gray_to_tensor`]).
pub trait BatchSource<B: Backend> {
    /// Next batch of synthetic images.
    fn synthetic(&mut self, batch_size: usize, device: &B::Device)
    -> Result<Tensor<B, 4>, NnError>;
    /// Next batch of real images.
    fn real(&mut self, batch_size: usize, device: &B::Device) -> Result<Tensor<B, 4>, NnError>;
}

// ---------------------------------------------------------------------------------------------
// Refiner trainer
// ---------------------------------------------------------------------------------------------

/// Adam over module `M` on autodiff backend `B`.
pub type AdamOptimizer<M, B> = OptimizerAdaptor<Adam, M, B>;

/// R, D, their Adam optimisers, the history buffer and the iteration counter.
pub struct RefinerTrainer<B: AutodiffBackend> {
    pub(crate) config: TrainConfig,
    pub(crate) refiner: Refiner<B>,
    pub(crate) discriminator: Discriminator<B>,
    pub(crate) optim_r: AdamOptimizer<Refiner<B>, B>,
    pub(crate) optim_d: AdamOptimizer<Discriminator<B>, B>,
    pub(crate) history: HistoryBuffer,
    /// The moving average of the refiner's weights, when `config.ema_decay > 0`.
    pub(crate) ema: Option<Refiner<B::InnerBackend>>,
    pub(crate) step: u64,
    pub(crate) device: B::Device,
    /// The float type R and D compute in (mixed precision: the weights, the optimiser state and
    /// the losses stay f32; see [`super::precision`]). Not part of the checkpoint.
    pub(crate) precision: Precision,
}

/// `ema ← decay·ema + (1 − decay)·current`, parameter by parameter (both modules of one
/// architecture: the visit order pairs the parameters).
pub(crate) fn ema_update<B: Backend, M: Module<B>>(ema: M, current: &M, decay: f64) -> M {
    struct Collect<B: Backend>(Vec<Tensor<B, 1>>);
    impl<B: Backend> ModuleVisitor<B> for Collect<B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let t = param.val();
            let n = t.shape().num_elements();
            self.0.push(t.reshape([n]));
        }
    }
    struct Blend<B: Backend> {
        current: std::vec::IntoIter<Tensor<B, 1>>,
        decay: f64,
    }
    impl<B: Backend> ModuleMapper<B> for Blend<B> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, tensor, mapper) = param.consume();
            let tensor = match self.current.next() {
                Some(c) => {
                    let dims = tensor.dims();
                    tensor.mul_scalar(self.decay) + c.reshape(dims).mul_scalar(1.0 - self.decay)
                }
                None => tensor,
            };
            Param::from_mapped_value(id, tensor, mapper)
        }
    }
    let mut collect = Collect(Vec::new());
    current.visit(&mut collect);
    ema.map(&mut Blend {
        current: collect.0.into_iter(),
        decay,
    })
}

/// Seed for the history buffer's generator at iteration `step` of a run seeded `seed`.
pub(crate) fn history_seed(seed: u64, step: u64) -> u64 {
    seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5851_F42D_4C95_7F2D
}

impl<B: AutodiffBackend> RefinerTrainer<B> {
    /// Fresh networks (seeded from `config.seed`), fresh optimisers, empty history, step 0.
    pub fn new(config: TrainConfig, device: &B::Device) -> Result<Self, NnError> {
        config.validate()?;
        let (refiner, discriminator) = init_seeded::<B, _>(device, config.seed, || {
            (
                config.refiner.init::<B>(device),
                config.discriminator.init::<B>(device),
            )
        });
        Ok(Self {
            optim_r: config.adam_config().init(),
            optim_d: config.adam_config().init(),
            history: HistoryBuffer::new(
                config.history_capacity,
                config.image_shape,
                history_seed(config.seed, 0),
            ),
            ema: (config.ema_decay > 0.0).then(|| refiner.valid()),
            refiner,
            discriminator,
            step: 0,
            device: device.clone(),
            config,
            precision: Precision::F32,
        })
    }

    /// The run's configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The refiner being trained (autodiff backend; `.valid()` for inference).
    pub fn refiner(&self) -> &Refiner<B> {
        &self.refiner
    }

    /// The discriminator being trained.
    pub fn discriminator(&self) -> &Discriminator<B> {
        &self.discriminator
    }

    /// The history buffer.
    pub fn history(&self) -> &HistoryBuffer {
        &self.history
    }

    /// Iterations completed (the next [`Self::step`] index on resume).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Whether every iteration of the schedule has run.
    pub fn is_done(&self) -> bool {
        self.step >= self.config.total_iterations()
    }

    /// The device the trainer lives on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// The trained refiner, for inference: the weights' moving average when `ema_decay > 0`,
    /// else the refiner being trained.
    pub fn output_refiner(&self) -> Refiner<B::InnerBackend> {
        match &self.ema {
            Some(ema) => ema.clone(),
            None => self.refiner.valid(),
        }
    }

    /// Refine a batch with [`Self::output_refiner`], without autodiff.
    pub fn refine(&self, batch: Tensor<B::InnerBackend, 4>) -> Tensor<B::InnerBackend, 4> {
        self.output_refiner().forward(batch)
    }

    fn check_batch<BB: Backend>(
        &self,
        t: &Tensor<BB, 4>,
        context: &'static str,
    ) -> Result<usize, NnError> {
        let [b, c, h, w] = t.dims();
        if b == 0 || [c, h, w] != self.config.image_shape {
            return Err(NnError::Shape {
                context,
                message: format!(
                    "got [{b}, {c}, {h}, {w}], expected [batch ≥ 1, {:?}]",
                    self.config.image_shape
                ),
            });
        }
        Ok(b)
    }

    /// Compute in `precision` from now on (mixed precision: f32 weights, optimiser state and
    /// losses; the forward and backward passes in bf16/f16 through cast copies of R and D).
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    /// R(x) in the trainer's precision, differentiable w.r.t. R's f32 weights, as f32, and
    /// what the self-regularisation compares with x: R(x) itself, or with
    /// [`TrainConfig::reg_noise`] off R's output without its sensor-noise term.
    fn refine_tracked(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let p = self.precision;
        let r = cast_module(self.refiner.clone(), p);
        let (y, clean) = r.forward_split(p.cast(x), None, !self.config.reg_noise);
        let y = p.cast_back(y); // [b, c, h, w]
        let regularised = clean.map(|c| p.cast_back(c)).unwrap_or_else(|| y.clone());
        (y, regularised)
    }

    /// One refiner step with only the self-regularisation loss.
    pub fn pretrain_r_step(&mut self, synthetic: Tensor<B, 4>) -> Result<StepMetrics, NnError> {
        self.check_batch(&synthetic, "pretrain_r_step")?;
        let (_, regularised) = self.refine_tracked(synthetic.clone()); // [b, 1, 35, 55]
        let reg = self_regularization_loss(
            regularised,
            synthetic,
            self.config.lambda,
            self.config.reg_blur,
        );
        let grads = GradientsParams::from_grads(reg.backward(), &self.refiner);
        self.refiner = self
            .optim_r
            .step(self.config.lr_r, self.refiner.clone(), grads);
        if self.ema.is_some() {
            // The average starts where the adversarial phase does.
            self.ema = Some(self.refiner.valid());
        }
        let mut m = StepMetrics::new(self.step, Phase::PretrainRefiner, self.history.len());
        let reg = scalar(reg)?;
        m.reg_loss = Some(reg);
        m.refiner_loss = Some(reg);
        self.step += 1;
        Ok(m)
    }

    /// One adversarial refiner step: local adversarial loss + self-regularisation. D is frozen
    /// (its parameters are not differentiated).
    pub fn r_step(&mut self, synthetic: Tensor<B, 4>) -> Result<StepMetrics, NnError> {
        self.check_batch(&synthetic, "r_step")?;
        let p = self.precision;
        let (refined, regularised) = self.refine_tracked(synthetic.clone()); // [b, 1, 35, 55]
        let reg = self_regularization_loss(
            regularised,
            synthetic,
            self.config.lambda,
            self.config.reg_blur,
        );
        let frozen_d = cast_module(self.discriminator.clone().no_grad(), p);
        let seen = self.d_input(refined); // [b, 1, 35, 55]
        let logits = p.cast_back(frozen_d.forward(p.cast(seen))); // [b, 2, 9, 14]
        let adv = refiner_adversarial_loss(logits.clone());
        let total = adv.clone() + reg.clone();
        let grads = GradientsParams::from_grads(total.backward(), &self.refiner);
        self.refiner = self
            .optim_r
            .step(self.config.lr_r, self.refiner.clone(), grads);

        if let Some(ema) = self.ema.take() {
            let current = self.refiner.valid();
            self.ema = Some(ema_update(ema, &current, self.config.ema_decay));
        }
        let mut m = StepMetrics::new(self.step, Phase::Refiner, self.history.len());
        m.adv_loss = Some(scalar(adv)?);
        m.reg_loss = Some(scalar(reg)?);
        m.refiner_loss = Some(scalar(total)?);
        m.d_acc_refined = Some(patch_accuracy(logits.detach(), CLASS_REFINED)?);
        self.step += 1;
        Ok(m)
    }

    /// An image batch as the discriminator sees it: plus instance noise when
    /// [`TrainConfig::d_input_noise`] > 0 (drawn from the backend's seeded generator), then
    /// beside its detail channels when [`TrainConfig::d_highpass`] > 0.
    fn d_input<T: Backend>(&self, x: Tensor<T, 4>) -> Tensor<T, 4> {
        let sigma = self.config.d_input_noise;
        let x = if sigma > 0.0 {
            let z = Tensor::random(
                x.dims(),
                burn::tensor::Distribution::Normal(0.0, sigma),
                &x.device(),
            );
            x + z // [b, c, h, w]
        } else {
            x
        };
        let hp = self.config.d_highpass;
        if hp > 0.0 {
            let detail =
                (x.clone() - gaussian_blur(x.clone(), hp)).mul_scalar(self.config.d_highpass_gain); // [b, c, h, w]
            Tensor::cat(vec![x, detail], 1) // [b, 2c, h, w]
        } else {
            x
        }
    }

    /// One discriminator step on refined (half current, half history when available) vs real
    /// images; then `b/2` current refined images go into the history buffer.
    pub fn d_step(
        &mut self,
        synthetic: Tensor<B, 4>,
        real: Tensor<B, 4>,
    ) -> Result<StepMetrics, NnError> {
        self.d_step_as(synthetic, real, Phase::Discriminator)
    }

    /// A discriminator step while pretraining (same update as [`Self::d_step`], history included).
    pub fn pretrain_d_step(
        &mut self,
        synthetic: Tensor<B, 4>,
        real: Tensor<B, 4>,
    ) -> Result<StepMetrics, NnError> {
        self.d_step_as(synthetic, real, Phase::PretrainDiscriminator)
    }

    fn d_step_as(
        &mut self,
        synthetic: Tensor<B, 4>,
        real: Tensor<B, 4>,
        phase: Phase,
    ) -> Result<StepMetrics, NnError> {
        let b = self.check_batch(&synthetic, "d_step (synthetic)")?;
        self.check_batch(&real, "d_step (real)")?;
        let [c, h, w] = self.config.image_shape;
        let half = b / 2;
        let used_history = self.history.can_sample(half);
        let n_current = if used_history { half } else { b };

        // Refined images are inputs to D, not functions of R's parameters: inner backend.
        let p = self.precision;
        let refiner = cast_module(self.refiner.valid(), p);
        let current =
            p.cast_back(refiner.forward(p.cast(synthetic.inner().narrow(0, 0, n_current)))); // [n_current, 1, 35, 55]
        let old = if used_history {
            self.history.sample(half)
        } else {
            None
        };
        let fake = match old {
            Some(old) => {
                let old = Tensor::<B::InnerBackend, 4>::from_data(
                    TensorData::new(old, [half, c, h, w]),
                    &self.device,
                );
                Tensor::cat(vec![current.clone(), old], 0) // [b, 1, 35, 55]
            }
            None => current.clone(), // [b, 1, 35, 55]
        };
        let fake = self.d_input(Tensor::<B, 4>::from_inner(fake)); // [b, 1, 35, 55]
        let real = self.d_input(real); // [b, 1, 35, 55]

        // In `precision`, through a cast of D whose gradients reach its f32 weights.
        let d = cast_module(self.discriminator.clone(), p);
        let logits_fake = p.cast_back(d.forward(p.cast(fake))); // [b, 2, 9, 14]
        let logits_real = p.cast_back(d.forward(p.cast(real.clone()))); // [b, 2, 9, 14]
        let mut loss = discriminator_loss(logits_fake.clone(), logits_real.clone());
        if self.config.d_r1 > 0.0 {
            // ‖∇ₓ s‖² along one random direction per pixel, by a forward difference.
            let eps = Tensor::<B, 4>::random(
                real.dims(),
                burn::tensor::Distribution::Normal(0.0, R1_SIGMA),
                &self.device,
            ); // [b, c_d, h, w]
            let logits_eps = p.cast_back(d.forward(p.cast(real.clone() + eps))); // [b, 2, ph, pw]
            let margin = |l: Tensor<B, 4>| {
                l.clone().narrow(1, CLASS_REFINED, 1) - l.narrow(1, CLASS_REAL, 1)
            }; // [b, 1, ph, pw]
            let diff = margin(logits_eps) - margin(logits_real.clone()); // [b, 1, ph, pw]
            let penalty = diff
                .powi_scalar(2)
                .mean()
                .mul_scalar(0.5 * self.config.d_r1 / (R1_SIGMA * R1_SIGMA)); // [1]
            loss = loss + penalty;
        }
        let grads = GradientsParams::from_grads(loss.backward(), &self.discriminator);
        self.discriminator = self
            .optim_d
            .step(self.config.lr_d, self.discriminator.clone(), grads);

        let newest = current
            .narrow(0, 0, half)
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()?;
        self.history.push(&newest)?;

        let mut m = StepMetrics::new(self.step, phase, self.history.len());
        m.d_loss = Some(scalar(loss)?);
        m.d_acc_real = Some(patch_accuracy(logits_real.detach(), CLASS_REAL)?);
        m.d_acc_refined = Some(patch_accuracy(logits_fake.detach(), CLASS_REFINED)?);
        m.used_history = used_history;
        self.step += 1;
        Ok(m)
    }

    /// Run iteration `i` of the schedule with batches from `source`; afterwards
    /// [`Self::step_count`] is `i + 1`. Errors past the end of the schedule.
    pub fn step<S: BatchSource<B>>(
        &mut self,
        i: u64,
        source: &mut S,
    ) -> Result<StepMetrics, NnError> {
        let phase = self.config.phase(i).ok_or_else(|| {
            NnError::InvalidConfig(format!(
                "iteration {i} is past the schedule's {} iterations",
                self.config.total_iterations()
            ))
        })?;
        let b = self.config.batch_size;
        let device = self.device.clone();
        self.step = i;
        match phase {
            Phase::PretrainRefiner => self.pretrain_r_step(source.synthetic(b, &device)?),
            Phase::Refiner => self.r_step(source.synthetic(b, &device)?),
            Phase::PretrainDiscriminator => {
                let synthetic = source.synthetic(b, &device)?;
                self.pretrain_d_step(synthetic, source.real(b, &device)?)
            }
            Phase::Discriminator => {
                let synthetic = source.synthetic(b, &device)?;
                self.d_step(synthetic, source.real(b, &device)?)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Images ↔ tensors, inference
// ---------------------------------------------------------------------------------------------

/// Grey images (all the same size) → `[n, 1, h, w]` in `[-1, 1]` (`v / 127.5 − 1`).
pub fn gray_to_tensor<B: Backend>(
    images: &[GrayImage],
    device: &B::Device,
) -> Result<Tensor<B, 4>, NnError> {
    let first = images.first().ok_or(NnError::Shape {
        context: "gray_to_tensor",
        message: "no images".into(),
    })?;
    let (w, h) = first.dimensions();
    let mut data = Vec::with_capacity(images.len() * (w * h) as usize);
    for (i, img) in images.iter().enumerate() {
        if img.dimensions() != (w, h) {
            return Err(NnError::Shape {
                context: "gray_to_tensor",
                message: format!(
                    "image {i} is {:?}, image 0 is {:?} (w, h)",
                    img.dimensions(),
                    (w, h)
                ),
            });
        }
        data.extend(img.as_raw().iter().map(|v| *v as f32 / 127.5 - 1.0));
    }
    Ok(Tensor::from_data(
        TensorData::new(data, [images.len(), 1, h as usize, w as usize]),
        device,
    ))
}

/// `[n, 1, h, w]` in `[-1, 1]` → grey images (clamped, rounded).
pub fn tensor_to_gray<B: Backend>(tensor: Tensor<B, 4>) -> Result<Vec<GrayImage>, NnError> {
    let [n, c, h, w] = tensor.dims();
    if c != 1 {
        return Err(NnError::Shape {
            context: "tensor_to_gray",
            message: format!("expected 1 channel, got {c}"),
        });
    }
    let values = tensor.into_data().convert::<f32>().to_vec::<f32>()?;
    let per = h * w;
    let mut out = Vec::with_capacity(n);
    for chunk in values.chunks_exact(per) {
        let px: Vec<u8> = chunk
            .iter()
            .map(|v| ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8)
            .collect();
        let img = GrayImage::from_raw(w as u32, h as u32, px).ok_or(NnError::Shape {
            context: "tensor_to_gray",
            message: format!("{per} pixels do not make a {w}×{h} image"),
        })?;
        out.push(img);
    }
    Ok(out)
}

/// Refine a batch for inference. Use a non-autodiff backend (e.g. a refiner loaded with
/// [`super::checkpoint::load_refiner`] on `CpuBackend`, or `trainer.refiner().valid()`).
pub fn refine<B: Backend>(refiner: &Refiner<B>, batch: Tensor<B, 4>) -> Tensor<B, 4> {
    refiner.forward(batch) // [batch, 1, 35, 55]
}

/// Refine a batch for inference with the noise maps (if the refiner has any) drawn on the
/// host: image `i`'s noise from a generator seeded `seed ^ i·φ`, in parallel. The output depends
/// only on the weights, the images and `seed` — not on the lane, the thread, the device or what
/// else drew from the backend's (process-wide) generator meanwhile.
pub fn refine_seeded<B: Backend>(
    refiner: &Refiner<B>,
    batch: Tensor<B, 4>,
    seed: u64,
) -> Tensor<B, 4> {
    let noise = refiner.noise_maps();
    if noise == 0 {
        return refiner.forward(batch);
    }
    let [b, _, h, w] = batch.dims();
    let z = seeded_noise(b, noise * h * w, seed);
    let device = batch.device();
    let z = Tensor::from_data(TensorData::new(z, [b, noise, h, w]), &device); // [b, noise, h, w]
    refiner.forward_noise(batch, Some(z)) // [b, c, h, w]
}

/// `images × per` standard-normal values, image `i`'s from a generator seeded `seed ^ (i+1)·φ`
/// (in parallel, the same whatever the thread count).
pub fn seeded_noise(images: usize, per: usize, seed: u64) -> Vec<f32> {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    use rayon::prelude::*;
    let mut z = vec![0f32; images * per];
    z.par_chunks_exact_mut(per.max(1))
        .enumerate()
        .for_each(|(i, out)| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(
                seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            for v in out {
                *v = rand_distr::StandardNormal.sample(&mut rng);
            }
        });
    z
}

/// Refine grey images in chunks of `batch_size`, returning grey images in the same order.
pub fn refine_images<B: Backend>(
    refiner: &Refiner<B>,
    images: &[GrayImage],
    batch_size: usize,
    device: &B::Device,
) -> Result<Vec<GrayImage>, NnError> {
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(batch_size.max(1)) {
        let batch = gray_to_tensor::<B>(chunk, device)?;
        out.extend(tensor_to_gray(refine(refiner, batch))?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Gaze trainer
// ---------------------------------------------------------------------------------------------

/// Optimiser of the gaze CNN.
#[derive(Config, Debug, PartialEq, Eq, Copy)]
pub enum GazeOptimizer {
    /// Adam (β = 0.9, 0.999).
    Adam,
    /// SGD with momentum `GazeTrainConfig::momentum` (the paper: SGD, lr 0.001).
    Sgd,
}

/// The loss on the estimator's outputs (set by the task it is trained for).
#[derive(Config, Debug, PartialEq, Eq, Copy)]
pub enum HeadLoss {
    /// `‖ŷ − y/‖y‖‖²` summed over the outputs (the paper's loss on the unit gaze vector).
    UnitVector,
    /// Softmax cross-entropy against one-hot (or soft) targets.
    CrossEntropy,
    /// Squared error, mean over the outputs.
    Mse,
    /// One Gaussian heatmap per joint, mean squared error on every stack of a stacked hourglass
    /// ([`super::hourglass`]); targets are joints as `(u, v)` input coordinates.
    Heatmap,
}

/// Estimator training run (the gaze CNN family, any head).
#[derive(Config, Debug, PartialEq)]
pub struct GazeTrainConfig {
    /// Network sizes.
    #[config(default = "GazeNetConfig::new()")]
    pub net: GazeNetConfig,
    /// Loss on the outputs.
    #[config(default = "HeadLoss::UnitVector")]
    pub loss: HeadLoss,
    /// Optimiser.
    #[config(default = "GazeOptimizer::Adam")]
    pub optimizer: GazeOptimizer,
    /// Learning rate (paper: 0.001).
    #[config(default = 1e-3)]
    pub lr: f64,
    /// SGD momentum (ignored by Adam); 0 disables it.
    #[config(default = 0.9)]
    pub momentum: f64,
    /// Images per step (used by callers; the trainer accepts any batch).
    #[config(default = 64)]
    pub batch_size: usize,
    /// Seed for weight initialisation.
    #[config(default = 42)]
    pub seed: u64,
    /// Cosine learning-rate decay from `lr` to `lr / 20` over this many steps (0 = constant lr).
    /// Ending at a small rate makes the final weights, and so the scores, far less dependent on
    /// the last few batches.
    #[config(default = 0)]
    pub decay_steps: u64,
}

impl GazeTrainConfig {
    /// The learning rate at step `t` (see [`GazeTrainConfig::decay_steps`]).
    pub fn lr_at(&self, t: u64) -> f64 {
        cosine_lr(self.lr, self.decay_steps, t)
    }
}

/// `lr` decayed on a cosine to `lr / 20` over `decay_steps` (0 = constant), at step `t`.
pub(crate) fn cosine_lr(lr: f64, decay_steps: u64, t: u64) -> f64 {
    if decay_steps == 0 {
        return lr;
    }
    let progress = (t as f64 / decay_steps as f64).min(1.0);
    let floor = lr / 20.0;
    floor + (lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

pub(crate) enum GazeOptim<B: AutodiffBackend> {
    Adam(OptimizerAdaptor<Adam, GazeNet<B>, B>),
    Sgd(OptimizerAdaptor<Sgd<B::InnerBackend>, GazeNet<B>, B>),
}

/// The gaze CNN with its optimiser. Loss: mean over the batch of ‖ŷ − y‖², with y the target
/// gaze normalised to unit length (the paper's Euclidean loss on the unit gaze vector).
pub struct GazeTrainer<B: AutodiffBackend> {
    pub(crate) config: GazeTrainConfig,
    pub(crate) model: GazeNet<B>,
    pub(crate) optim: GazeOptim<B>,
    pub(crate) step: u64,
    pub(crate) device: B::Device,
    /// The float type the net computes in (mixed precision, as [`RefinerTrainer`]'s).
    pub(crate) precision: Precision,
}

/// Normalise `[batch, 3]` rows to unit length.
fn unit_rows<B: Backend>(v: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = v
        .clone()
        .powf_scalar(2.0)
        .sum_dim(1)
        .sqrt()
        .clamp_min(1e-12); // [batch, 1]
    v / norm // [batch, 3]
}

pub(crate) fn gaze_optim<B: AutodiffBackend>(config: &GazeTrainConfig) -> GazeOptim<B> {
    match config.optimizer {
        GazeOptimizer::Adam => GazeOptim::Adam(AdamConfig::new().init()),
        GazeOptimizer::Sgd => {
            let momentum = (config.momentum > 0.0)
                .then(|| MomentumConfig::new().with_momentum(config.momentum));
            GazeOptim::Sgd(SgdConfig::new().with_momentum(momentum).init())
        }
    }
}

impl<B: AutodiffBackend> GazeTrainer<B> {
    /// Fresh network (seeded) and optimiser.
    pub fn new(config: GazeTrainConfig, device: &B::Device) -> Result<Self, NnError> {
        if !config.lr.is_finite() || config.lr <= 0.0 {
            return Err(NnError::InvalidConfig(format!(
                "gaze lr must be > 0, got {}",
                config.lr
            )));
        }
        config.net.validate()?;
        let model = init_seeded::<B, _>(device, config.seed, || config.net.init::<B>(device).ok())
            .ok_or_else(|| NnError::InvalidConfig("gaze net failed to build".into()))?;
        Ok(Self {
            optim: gaze_optim(&config),
            model,
            step: 0,
            device: device.clone(),
            config,
            precision: Precision::F32,
        })
    }

    /// Compute in `precision` from now on (mixed precision, as [`RefinerTrainer::set_precision`]).
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    /// The run's configuration.
    pub fn config(&self) -> &GazeTrainConfig {
        &self.config
    }

    /// The network (autodiff backend; `.valid()` for inference).
    pub fn model(&self) -> &GazeNet<B> {
        &self.model
    }

    /// Steps taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The device the trainer lives on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// One optimisation step on images `[batch, c, h, w]` and targets `[batch, outputs]` (gaze
    /// vectors, one-hot classes or regression labels, per [`GazeTrainConfig::loss`]); returns
    /// the loss before the update.
    pub fn step(&mut self, images: Tensor<B, 4>, targets: Tensor<B, 2>) -> Result<f32, NnError> {
        let [b, c, h, w] = images.dims();
        let net = &self.config.net;
        let k = net.outputs;
        if b == 0 || [c, h, w] != [net.channels, net.height, net.width] || targets.dims() != [b, k]
        {
            return Err(NnError::Shape {
                context: "GazeTrainer::step",
                message: format!(
                    "images [{b}, {c}, {h}, {w}] and targets {:?}; expected [b, {}, {}, {}] and [b, {k}]",
                    targets.dims(),
                    net.channels,
                    net.height,
                    net.width
                ),
            });
        }
        let p = self.precision;
        let model = cast_module(self.model.clone(), p);
        let pred = p.cast_back(model.forward(p.cast(images))); // [b, outputs]
        let loss: Tensor<B, 1> = match self.config.loss {
            HeadLoss::UnitVector => (pred - unit_rows(targets))
                .powf_scalar(2.0)
                .sum_dim(1)
                .mean(), // [1]
            HeadLoss::CrossEntropy => {
                let logp = burn::tensor::activation::log_softmax(pred, 1); // [b, outputs]
                (logp * targets).sum_dim(1).mean().neg() // [1]
            }
            HeadLoss::Mse => (pred - targets).powf_scalar(2.0).mean(), // [1]
            HeadLoss::Heatmap => {
                return Err(NnError::InvalidConfig(
                    "the heatmap loss trains a stacked hourglass (HourglassTrainer), not the gaze CNN".into(),
                ));
            }
        };
        let grads = GradientsParams::from_grads(loss.backward(), &self.model);
        let lr = self.config.lr_at(self.step);
        self.model = match &mut self.optim {
            GazeOptim::Adam(o) => o.step(lr, self.model.clone(), grads),
            GazeOptim::Sgd(o) => o.step(lr, self.model.clone(), grads),
        };
        self.step += 1;
        scalar(loss)
    }

    /// Unit gaze vectors for a batch of images.
    pub fn predict(&self, images: Tensor<B, 4>) -> Result<Vec<[f32; 3]>, NnError> {
        predict_gaze(&self.model.valid(), images.inner())
    }
}

/// The raw outputs of `net` for `[batch, c, h, w]` images, row-major `[batch, outputs]`
/// (inference backend).
pub fn predict_raw<B: Backend>(
    net: &GazeNet<B>,
    images: Tensor<B, 4>,
) -> Result<Vec<f32>, NnError> {
    Ok(net
        .forward(images)
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()?)
}

/// Unit gaze vectors predicted by `net` for `[batch, 1, h, w]` images (inference backend).
pub fn predict_gaze<B: Backend>(
    net: &GazeNet<B>,
    images: Tensor<B, 4>,
) -> Result<Vec<[f32; 3]>, NnError> {
    let pred = unit_rows(net.forward(images)); // [batch, 3]
    let v = pred.into_data().convert::<f32>().to_vec::<f32>()?;
    Ok(v.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::nn::backend::CpuAutodiffBackend;

    /// Seeded refinement ignores the backend's generator: reseeding or drawing from it between
    /// calls changes nothing; another seed changes the noise, so the output.
    #[test]
    fn refine_seeded_is_independent_of_the_backend_generator() {
        type Inner = <CpuAutodiffBackend as AutodiffBackend>::InnerBackend;
        let device = Default::default();
        let refiner = RefinerConfig::narrow(4)
            .with_blocks(1)
            .with_noise_channels(1)
            .init::<Inner>(&device);
        let x = Tensor::<Inner, 4>::from_data(
            TensorData::new(
                (0..2 * 8 * 12)
                    .map(|i| (i % 9) as f32 / 4.5 - 1.0)
                    .collect::<Vec<f32>>(),
                [2, 1, 8, 12],
            ),
            &device,
        );
        let run = |seed: u64| {
            refine_seeded(&refiner, x.clone(), seed)
                .into_data()
                .to_vec::<f32>()
                .unwrap_or_default()
        };
        crate::nn::seed::<Inner>(&device, 1);
        let a = run(7);
        crate::nn::seed::<Inner>(&device, 2);
        let _ = Tensor::<Inner, 1>::random([99], burn::tensor::Distribution::Default, &device);
        let b = run(7);
        assert_eq!(a, b);
        assert_ne!(a, run(8));
        assert_eq!(a.len(), 2 * 8 * 12);
    }

    type AB = CpuAutodiffBackend;

    /// Smooth "synthetic" eye-like images: a dark disc (pupil) on a gradient, position varying
    /// with `k`. `[c=1, h, w]` values in [-1, 1].
    pub(crate) fn synthetic_image(k: usize, h: usize, w: usize) -> Vec<f32> {
        let cx = w as f32 * (0.3 + 0.4 * ((k * 37 % 100) as f32 / 100.0));
        let cy = h as f32 * (0.35 + 0.3 * ((k * 61 % 100) as f32 / 100.0));
        let r = h as f32 * 0.22;
        let mut out = Vec::with_capacity(h * w);
        for y in 0..h {
            for x in 0..w {
                let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
                let base = 0.4 * (x as f32 / w as f32) - 0.1;
                let v = if d < r { -0.8 } else { base };
                out.push(v);
            }
        }
        out
    }

    /// "Real" images: other eyes of the same family, brighter and lower-contrast, with a faint
    /// grain — a difference a refiner can learn locally and a discriminator can see.
    pub(crate) fn real_image(k: usize, h: usize, w: usize) -> Vec<f32> {
        let mut s = synthetic_image(k + 1000, h, w);
        let mut state = (k as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D);
        for v in s.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let grain = ((state % 1000) as f32 / 1000.0 - 0.5) * 0.06;
            *v = (0.85 * *v + 0.12 + grain).clamp(-1.0, 1.0);
        }
        s
    }

    pub(crate) struct ToySource {
        pub h: usize,
        pub w: usize,
        pub next: usize,
    }

    impl<B: Backend> BatchSource<B> for ToySource {
        fn synthetic(&mut self, n: usize, device: &B::Device) -> Result<Tensor<B, 4>, NnError> {
            let data: Vec<f32> = (0..n)
                .flat_map(|i| synthetic_image(self.next + i, self.h, self.w))
                .collect();
            self.next += n;
            Ok(Tensor::from_data(
                TensorData::new(data, [n, 1, self.h, self.w]),
                device,
            ))
        }
        fn real(&mut self, n: usize, device: &B::Device) -> Result<Tensor<B, 4>, NnError> {
            let data: Vec<f32> = (0..n)
                .flat_map(|i| real_image(self.next + i, self.h, self.w))
                .collect();
            self.next += n;
            Ok(Tensor::from_data(
                TensorData::new(data, [n, 1, self.h, self.w]),
                device,
            ))
        }
    }

    /// R's adversarial loss over `n` consecutive refiner steps on toy batches.
    fn adversarial_losses(
        t: &mut RefinerTrainer<AB>,
        src: &mut ToySource,
        batch: usize,
        n: usize,
    ) -> Vec<f32> {
        let device = Default::default();
        (0..n)
            .map(|_| {
                let s = BatchSource::<AB>::synthetic(src, batch, &device).unwrap();
                t.r_step(s).unwrap().adv_loss.unwrap()
            })
            .collect()
    }

    pub(crate) fn tiny_config() -> TrainConfig {
        TrainConfig::new()
            .with_refiner(RefinerConfig::narrow(8).with_blocks(2))
            .with_discriminator(DiscriminatorConfig::narrow(8))
            .with_image_shape([1, 16, 24])
            .with_batch_size(8)
            .with_pretrain_r_steps(30)
            .with_pretrain_d_steps(10)
            .with_steps(40)
            .with_history_capacity(64)
            .with_seed(7)
    }

    #[test]
    fn schedule_phases() {
        let c = TrainConfig::new()
            .with_pretrain_r_steps(2)
            .with_pretrain_d_steps(1)
            .with_steps(2);
        let phases: Vec<_> = (0..c.total_iterations() + 1).map(|i| c.phase(i)).collect();
        use Phase::*;
        assert_eq!(
            phases,
            vec![
                Some(PretrainRefiner),
                Some(PretrainRefiner),
                Some(PretrainDiscriminator),
                Some(Refiner),
                Some(Refiner),
                Some(Discriminator),
                Some(Refiner),
                Some(Refiner),
                Some(Discriminator),
                None
            ]
        );
        let json = serde_json::to_string(&c).unwrap();
        let back: TrainConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn image_tensor_roundtrip() {
        let device = Default::default();
        let img = GrayImage::from_fn(5, 3, |x, y| image::Luma([(x * 50 + y * 7) as u8]));
        let t =
            gray_to_tensor::<crate::nn::backend::CpuBackend>(&[img.clone(), img.clone()], &device)
                .unwrap();
        assert_eq!(t.dims(), [2, 1, 3, 5]);
        let v = t.clone().into_data().to_vec::<f32>().unwrap();
        assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)));
        assert_eq!(v[0], -1.0);
        let back = tensor_to_gray(t).unwrap();
        assert_eq!(back, vec![img.clone(), img]);
        let other = GrayImage::new(4, 3);
        assert!(
            gray_to_tensor::<crate::nn::backend::CpuBackend>(
                &[GrayImage::new(5, 3), other],
                &device
            )
            .is_err()
        );
    }

    #[test]
    fn same_seed_same_training() {
        let device = Default::default();
        let run = || {
            let mut t = RefinerTrainer::<AB>::new(
                tiny_config()
                    .with_pretrain_r_steps(2)
                    .with_pretrain_d_steps(2),
                &device,
            )
            .unwrap();
            let mut src = ToySource {
                h: 16,
                w: 24,
                next: 0,
            };
            let m: Vec<StepMetrics> = (0..8).map(|i| t.step(i, &mut src).unwrap()).collect();
            let x = BatchSource::<AB>::synthetic(&mut src, 2, &device)
                .unwrap()
                .inner();
            (m, t.refine(x).into_data().to_vec::<f32>().unwrap())
        };
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(run);
            let b = s.spawn(run);
            (a.join().unwrap(), b.join().unwrap())
        });
        assert_eq!(
            a, b,
            "same seed, same metrics and weights, even when run concurrently"
        );
        let other = RefinerTrainer::<AB>::new(tiny_config().with_seed(8), &device).unwrap();
        let x = BatchSource::<AB>::synthetic(
            &mut ToySource {
                h: 16,
                w: 24,
                next: 0,
            },
            2,
            &device,
        )
        .unwrap()
        .inner();
        let first = RefinerTrainer::<AB>::new(tiny_config(), &device).unwrap();
        assert_ne!(
            other.refine(x.clone()).into_data().to_vec::<f32>().unwrap(),
            first.refine(x).into_data().to_vec::<f32>().unwrap()
        );
    }

    /// With `ema_decay`, the output refiner is the running average of the trained weights:
    /// equal to the refiner after pretraining, then `d·ema + (1 − d)·R` after each R step.
    #[test]
    fn ema_refiner_averages_the_adversarial_steps() {
        use crate::nn::backend::CpuBackend;
        let device = Default::default();
        let flat = |r: &Refiner<CpuBackend>| {
            let mut all = Vec::new();
            struct Grab<'a>(&'a mut Vec<f32>);
            impl ModuleVisitor<CpuBackend> for Grab<'_> {
                fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<CpuBackend, D>>) {
                    self.0.extend(p.val().into_data().to_vec::<f32>().unwrap());
                }
            }
            r.visit(&mut Grab(&mut all));
            all
        };
        let cfg = tiny_config()
            .with_pretrain_r_steps(2)
            .with_pretrain_d_steps(1)
            .with_ema_decay(0.75);
        let mut t = RefinerTrainer::<AB>::new(cfg, &device).unwrap();
        let mut src = ToySource {
            h: 16,
            w: 24,
            next: 0,
        };
        for i in 0..3 {
            t.step(i, &mut src).unwrap();
        }
        assert_eq!(flat(&t.output_refiner()), flat(&t.refiner().valid()));
        let before = flat(&t.output_refiner());
        t.step(3, &mut src).unwrap(); // an adversarial refiner step
        let trained = flat(&t.refiner().valid());
        let ema = flat(&t.output_refiner());
        assert_ne!(ema, trained, "the average lags the trained weights");
        for ((e, b), r) in ema.iter().zip(&before).zip(&trained) {
            assert!((e - (0.75 * b + 0.25 * r)).abs() <= 1e-6 * (1.0 + e.abs()));
        }
        assert!(
            TrainConfig::new().with_ema_decay(1.0).validate().is_err(),
            "a decay of 1 would never move"
        );
    }

    /// The history buffer is actually used by D steps: it fills, D samples from it, and it gets
    /// replaced once full.
    #[test]
    fn d_steps_fill_and_use_history() {
        let device = Default::default();
        let cfg = tiny_config().with_history_capacity(12).with_batch_size(8);
        let mut t = RefinerTrainer::<AB>::new(cfg, &device).unwrap();
        let mut src = ToySource {
            h: 16,
            w: 24,
            next: 0,
        };
        let mut used = Vec::new();
        for _ in 0..6 {
            let s = BatchSource::<AB>::synthetic(&mut src, 8, &device).unwrap();
            let r = BatchSource::<AB>::real(&mut src, 8, &device).unwrap();
            let m = t.d_step(s, r).unwrap();
            used.push((m.used_history, m.history_len));
        }
        // b/2 = 4 per step: 4, 8, 12 (full), then replacements keep it at 12.
        assert_eq!(
            used.iter().map(|u| u.1).collect::<Vec<_>>(),
            vec![4, 8, 12, 12, 12, 12]
        );
        assert!(!used[0].0, "empty buffer: all current");
        assert!(
            used[1..].iter().all(|u| u.0),
            "history used once it holds b/2"
        );
        assert_eq!(t.history().counters(), (24, 12));
    }

    /// Instance noise: D's inputs gain N(0, σ²) noise when `d_input_noise` = σ > 0 and are
    /// passed through untouched at 0; out-of-range values are refused.
    #[test]
    fn instance_noise_reaches_the_discriminator_only_when_set() {
        let device = Default::default();
        let x = Tensor::<AB, 4>::zeros([4, 1, 16, 24], &device);
        let off = RefinerTrainer::<AB>::new(tiny_config(), &device).unwrap();
        let same: Vec<f32> = off.d_input(x.clone()).into_data().to_vec().unwrap();
        assert!(same.iter().all(|v| *v == 0.0));
        let on = RefinerTrainer::<AB>::new(tiny_config().with_d_input_noise(0.5), &device).unwrap();
        let v: Vec<f32> = on.d_input(x).into_data().to_vec().unwrap();
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let std = (v.iter().map(|a| (a - mean).powi(2)).sum::<f32>() / v.len() as f32).sqrt();
        assert!(
            mean.abs() < 0.06 && (std - 0.5).abs() < 0.05,
            "{mean} {std}"
        );
        assert!(tiny_config().with_d_input_noise(-0.1).validate().is_err());
        assert!(tiny_config().with_reg_blur(100.0).validate().is_err());
    }

    /// R1 by a finite difference: after the same discriminator steps with `d_r1` on, D's logit
    /// margin moves less under a small change of a real image than without (D is flatter at the
    /// real images) and its loss stays finite; negative weights are refused.
    #[test]
    fn the_r1_penalty_flattens_the_discriminator_at_real_images() {
        let device = Default::default();
        let slope = |gamma: f64| -> (f32, f32) {
            let mut t = RefinerTrainer::<AB>::new(tiny_config().with_d_r1(gamma), &device).unwrap();
            let mut src = ToySource {
                h: 16,
                w: 24,
                next: 0,
            };
            let mut loss = 0.0;
            for _ in 0..30 {
                let s = BatchSource::<AB>::synthetic(&mut src, 8, &device).unwrap();
                let r = BatchSource::<AB>::real(&mut src, 8, &device).unwrap();
                loss = t.d_step(s, r).unwrap().d_loss.unwrap();
            }
            // Mean squared change of the margin per unit step, over a fixed real batch.
            let y = BatchSource::<AB>::real(&mut src, 8, &device)
                .unwrap()
                .inner();
            let d = t.discriminator.valid();
            let margin = |x: Tensor<<AB as AutodiffBackend>::InnerBackend, 4>| {
                let l = d.forward(x); // [8, 2, ph, pw]
                l.clone().narrow(1, CLASS_REFINED, 1) - l.narrow(1, CLASS_REAL, 1)
            };
            let step = 0.05;
            let mut total = 0.0;
            for k in 0..8 {
                let dir = Tensor::<<AB as AutodiffBackend>::InnerBackend, 4>::from_data(
                    TensorData::new(
                        (0..8 * 16 * 24)
                            .map(|i| {
                                if (i * 7 + k * 13) % 5 < 2 {
                                    step
                                } else {
                                    -step
                                }
                            })
                            .collect::<Vec<f32>>(),
                        [8, 1, 16, 24],
                    ),
                    &device,
                );
                let diff = margin(y.clone() + dir) - margin(y.clone()); // [8, 1, ph, pw]
                total += diff.powi_scalar(2).mean().into_scalar() / (step * step);
            }
            (total / 8.0, loss)
        };
        let (free, _) = slope(0.0);
        let (flat, loss) = slope(100.0);
        assert!(loss.is_finite() && loss > 0.0, "{loss}");
        assert!(flat < 0.5 * free, "R1 slope {flat} vs {free} without");
        assert!(tiny_config().with_d_r1(-1.0).validate().is_err());
    }

    /// Detail channels: with `d_highpass` = σ the discriminator sees `[x, gain·(x − G_σ∗x)]`
    /// (twice the channels; a flat image's detail is zero, grain's is not), a config whose
    /// discriminator has the image's channels only is refused, and D learns on them.
    #[test]
    fn the_discriminator_sees_detail_channels_when_asked() {
        let device = Default::default();
        let mut cfg = tiny_config().with_d_highpass(1.0);
        assert!(cfg.validate().is_err(), "D with 1 input channel");
        cfg.discriminator.channels = cfg.discriminator_channels();
        assert_eq!(cfg.discriminator.channels, 2);
        let mut t = RefinerTrainer::<AB>::new(cfg, &device).unwrap();
        let flat = Tensor::<AB, 4>::full([2, 1, 16, 24], 0.3, &device);
        let seen = t.d_input(flat);
        assert_eq!(seen.dims(), [2, 2, 16, 24]);
        let detail: Vec<f32> = seen.narrow(1, 1, 1).into_data().to_vec().unwrap();
        assert!(
            detail.iter().all(|v| v.abs() < 1e-5),
            "flat image has detail"
        );
        let mut src = ToySource {
            h: 16,
            w: 24,
            next: 0,
        };
        let real = BatchSource::<AB>::real(&mut src, 2, &device).unwrap();
        let grain: Vec<f32> = t
            .d_input(real)
            .narrow(1, 1, 1)
            .into_data()
            .to_vec()
            .unwrap();
        let energy = grain.iter().map(|v| v * v).sum::<f32>() / grain.len() as f32;
        assert!(energy > 1e-3, "grain leaves no detail: {energy}");
        let losses: Vec<f32> = (0..15)
            .map(|_| {
                let s = BatchSource::<AB>::synthetic(&mut src, 8, &device).unwrap();
                let r = BatchSource::<AB>::real(&mut src, 8, &device).unwrap();
                t.pretrain_d_step(s, r).unwrap().d_loss.unwrap()
            })
            .collect();
        assert!(
            losses[12..].iter().sum::<f32>() < losses[..3].iter().sum::<f32>(),
            "{losses:?}"
        );
        assert!(tiny_config().with_d_highpass(-1.0).validate().is_err());
    }

    /// With the sensor noise in the self-regularisation (the default) pretraining — only that
    /// loss — trains the noise amplitude down; with `reg_noise` off it leaves it where it
    /// started, and the L1 sees an identity refiner's output as the input itself.
    #[test]
    fn reg_noise_off_leaves_the_noise_amplitude_to_the_discriminator() {
        let device = Default::default();
        let amplitude_bias = |reg_noise: bool| -> (f32, Vec<f32>) {
            let cfg = tiny_config()
                .with_refiner(
                    RefinerConfig::narrow(8)
                        .with_blocks(1)
                        .with_residual(true)
                        .with_noise_scale(0.1),
                )
                .with_pretrain_r_steps(20)
                .with_pretrain_d_steps(0)
                .with_steps(0)
                .with_lambda(8.0)
                .with_reg_noise(reg_noise);
            let mut t = RefinerTrainer::<AB>::new(cfg.clone(), &device).unwrap();
            let mut src = ToySource {
                h: 16,
                w: 24,
                next: 0,
            };
            let reg: Vec<f32> = (0..cfg.pretrain_r_steps)
                .filter_map(|i| t.step(i, &mut src).unwrap().reg_loss)
                .collect();
            let conv = t.refiner().noise_out.as_ref().unwrap();
            let bias: Vec<f32> = conv
                .bias
                .as_ref()
                .unwrap()
                .val()
                .inner()
                .into_data()
                .to_vec()
                .unwrap();
            (bias[0], reg)
        };
        let (with, reg_with) = amplitude_bias(true);
        let (without, reg_without) = amplitude_bias(false);
        assert!(
            with < -0.005,
            "the L1 trains the amplitude down: bias {with}"
        );
        assert_eq!(
            without, 0.0,
            "no force on the amplitude without the noise in the L1"
        );
        assert!(reg_with[0] > 0.1, "the noise costs: {reg_with:?}");
        // The residual refiner starts as the identity, and without its noise the L1 sees none.
        assert!(reg_without.iter().all(|r| *r < 1e-6), "{reg_without:?}");
    }

    /// `train-refiner`'s defaults beyond the paper — mirrored padding, a noise input, the
    /// sensor-noise branch and a blurred self-regularisation — still train: pretraining lowers
    /// the (blurred) self-regularisation, R steps against a pretrained D lower R's adversarial
    /// loss, and a batch refined twice differs only by the drawn noise.
    #[test]
    fn refiner_with_mirrored_padding_noise_branch_and_blurred_reg_learns() {
        let device = Default::default();
        let cfg = tiny_config()
            .with_refiner(
                RefinerConfig::narrow(8)
                    .with_blocks(2)
                    .with_residual(true)
                    .with_noise_channels(1)
                    .with_noise_scale(0.1)
                    .with_reflect_padding(true),
            )
            .with_discriminator(DiscriminatorConfig::narrow(4))
            .with_pretrain_r_steps(30)
            .with_pretrain_d_steps(60)
            .with_steps(0)
            .with_lambda(8.0)
            .with_reg_blur(1.5);
        let mut t = RefinerTrainer::<AB>::new(cfg.clone(), &device).unwrap();
        let mut src = ToySource {
            h: 16,
            w: 24,
            next: 0,
        };
        let log: Vec<StepMetrics> = (0..cfg.pretrain_r_steps + cfg.pretrain_d_steps)
            .map(|i| t.step(i, &mut src).unwrap())
            .collect();
        let reg: Vec<f32> = log.iter().filter_map(|m| m.reg_loss).collect();
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        assert!(
            mean(&reg[reg.len() - 3..]) < 0.95 * mean(&reg[..3]),
            "pretraining lowers the blurred self-regularisation: {reg:?}"
        );
        let adv = adversarial_losses(&mut t, &mut src, cfg.batch_size, 6);
        assert!(
            adv[5] < 0.9 * adv[0],
            "refiner adversarial loss falls: {adv:?}"
        );
        type Cpu = crate::nn::backend::CpuBackend;
        let x: Tensor<Cpu, 4> = BatchSource::<Cpu>::synthetic(&mut src, 4, &device).unwrap();
        let r = t.refiner().valid();
        let a: Vec<f32> = refine_seeded(&r, x.clone(), 1)
            .into_data()
            .to_vec()
            .unwrap();
        let b: Vec<f32> = refine_seeded(&r, x.clone(), 1)
            .into_data()
            .to_vec()
            .unwrap();
        let c: Vec<f32> = refine_seeded(&r, x, 2).into_data().to_vec().unwrap();
        assert_eq!(a, b, "same seed, same noise");
        assert_ne!(a, c, "the noise branch draws per seed");
    }

    /// A short adversarial run on toy data: pretraining teaches R the identity and D to tell
    /// refined from real; R steps against that D lower R's adversarial loss; the alternating
    /// schedule then runs with the history buffer in use; refined images move away from the
    /// inputs but stay close (self-regularisation).
    #[test]
    fn short_adversarial_run_learns() {
        let device = Default::default();
        let seed = 7;
        let cfg = tiny_config()
            .with_discriminator(DiscriminatorConfig::narrow(4))
            .with_pretrain_r_steps(50)
            .with_pretrain_d_steps(60)
            .with_steps(30)
            // carpedm20's λ = 0.5 on per-image sums, in our mean form for 16×24 images and 4×6
            // patches: 0.5 · 384 / 24 = 8. (With λ = 0.5 here the toy refiner drifts 0.2–0.7.)
            .with_lambda(8.0)
            .with_seed(seed);
        let mut t = RefinerTrainer::<AB>::new(cfg.clone(), &device).unwrap();
        let mut src = ToySource {
            h: 16,
            w: 24,
            next: 0,
        };
        let pretrain = cfg.pretrain_r_steps + cfg.pretrain_d_steps;
        let mut log = Vec::new();
        for i in 0..pretrain {
            log.push(t.step(i, &mut src).unwrap());
        }
        let of = |log: &[StepMetrics], p: Phase, f: fn(&StepMetrics) -> Option<f32>| -> Vec<f32> {
            log.iter().filter(|m| m.phase == p).filter_map(f).collect()
        };
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        let pre_r = of(&log, Phase::PretrainRefiner, |m| m.reg_loss);
        assert!(
            mean(&pre_r[pre_r.len() - 3..]) < 0.6 * mean(&pre_r[..3]),
            "pretraining learns identity: {pre_r:?}"
        );
        // D, trained against the fixed pretrained R, goes from chance (≈ 2 ln 2) to separating.
        let pre_d = of(&log, Phase::PretrainDiscriminator, |m| m.d_loss);
        let (d0, d1) = (mean(&pre_d[..3]), mean(&pre_d[pre_d.len() - 3..]));
        assert!(
            (d0 - 2.0 * std::f32::consts::LN_2).abs() < 0.1,
            "D starts near chance: {pre_d:?}"
        );
        assert!(d1 < 0.85 * d0, "D loss falls: {pre_d:?}");

        // R steps against that D lower R's adversarial loss.
        let adv = adversarial_losses(&mut t, &mut src, cfg.batch_size, 4);
        eprintln!(
            "seed {seed}: D loss {d0:.4} -> {d1:.4}; adv loss {:.4} -> {:.4}",
            adv[0], adv[3]
        );
        assert!(
            adv[3] < 0.8 * adv[0],
            "refiner adversarial loss falls: {adv:?}"
        );

        // The alternating schedule: D keeps training, now with half its batch from history.
        for i in pretrain..cfg.total_iterations() {
            let m = t.step(i, &mut src).unwrap();
            assert!(
                m.d_loss.into_iter().chain(m.adv_loss).all(f32::is_finite),
                "{m:?}"
            );
            log.push(m);
        }
        assert!(t.is_done());
        let d_steps: Vec<&StepMetrics> = log
            .iter()
            .filter(|m| m.phase == Phase::Discriminator)
            .collect();
        assert_eq!(d_steps.len() as u64, cfg.steps * cfg.k_d);
        assert!(d_steps.iter().all(|m| m.used_history));

        // Refined differs from synthetic, within a self-regularisation bound.
        let synth = BatchSource::<AB>::synthetic(&mut src, 8, &device)
            .unwrap()
            .inner();
        let refined = t.refine(synth.clone());
        let diff = scalar((refined - synth).abs().mean()).unwrap();
        eprintln!("mean |R(x) - x| = {diff:.4}");
        assert!(diff > 1e-3, "refiner changes its input");
        // The toy real domain is ≈ 0.15 away (mean |Δ|) from the synthetic one.
        assert!(diff < 0.25, "self-regularisation keeps R(x) near x");
    }

    /// A spectrally normalised D still learns to tell the toy domains apart, and R's
    /// adversarial loss falls against it.
    #[test]
    fn spectrally_normalised_discriminator_learns() {
        let device = Default::default();
        let cfg = tiny_config()
            .with_discriminator(DiscriminatorConfig::narrow(4).with_spectral_norm(true))
            .with_pretrain_r_steps(30)
            .with_pretrain_d_steps(60)
            .with_steps(1)
            .with_lambda(8.0)
            .with_seed(7);
        let mut t = RefinerTrainer::<AB>::new(cfg.clone(), &device).unwrap();
        let mut src = ToySource {
            h: 16,
            w: 24,
            next: 0,
        };
        let mut d_loss = Vec::new();
        for i in 0..cfg.pretrain_r_steps + cfg.pretrain_d_steps {
            if let Some(l) = t.step(i, &mut src).unwrap().d_loss {
                d_loss.push(l);
            }
        }
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        let (d0, d1) = (mean(&d_loss[..3]), mean(&d_loss[d_loss.len() - 3..]));
        assert!(d1 < 0.9 * d0, "D loss falls: {d_loss:?}");
        let adv = adversarial_losses(&mut t, &mut src, cfg.batch_size, 4);
        assert!(adv[3] < adv[0], "refiner adversarial loss falls: {adv:?}");
    }

    #[test]
    fn gaze_trainer_learns_toy_mapping() {
        let device = Default::default();
        let net = GazeNetConfig::narrow(8).with_height(24).with_width(32);
        let cfg = GazeTrainConfig::new().with_net(net).with_lr(2e-3);
        let mut t = GazeTrainer::<AB>::new(cfg, &device).unwrap();
        // Gaze = direction of the pupil offset from the centre: a function of the image.
        let (h, w) = (24, 32);
        let batch = |k0: usize| {
            let n = 16;
            let mut imgs = Vec::new();
            let mut gaze = Vec::new();
            for k in k0..k0 + n {
                imgs.extend(synthetic_image(k, h, w));
                let cx = 0.3 + 0.4 * ((k * 37 % 100) as f32 / 100.0) - 0.5;
                let cy = 0.35 + 0.3 * ((k * 61 % 100) as f32 / 100.0) - 0.5;
                gaze.extend([cx, cy, -1.0]);
            }
            (
                Tensor::<AB, 4>::from_data(TensorData::new(imgs, [n, 1, h, w]), &device),
                Tensor::<AB, 2>::from_data(TensorData::new(gaze, [n, 3]), &device),
            )
        };
        let mut losses = Vec::new();
        for s in 0..60 {
            let (x, y) = batch((s % 4) * 16);
            losses.push(t.step(x, y).unwrap());
        }
        let first = losses[..5].iter().sum::<f32>() / 5.0;
        let last = losses[losses.len() - 5..].iter().sum::<f32>() / 5.0;
        eprintln!("gaze loss {first:.4} -> {last:.4}");
        assert!(last < first * 0.5, "gaze loss falls: {losses:?}");
        let (x, _) = batch(0);
        let p = t.predict(x).unwrap();
        assert_eq!(p.len(), 16);
        for v in p {
            let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
            assert!((n - 1.0).abs() < 1e-4);
        }
        assert_eq!(t.step_count(), 60);
    }
}
