//! The stacked hourglass pose estimator (Newell et al. 2016), the paper's hand-pose network:
//! [`HourglassConfig`], [`StackedHourglass`], its Gaussian heatmap targets ([`heatmap_targets`]),
//! the arg-max read-out with the quarter-pixel shift ([`readout`]) and [`HourglassTrainer`] (MSE
//! on every stack's heatmaps: intermediate supervision).
//!
//! Layout (REFERENCE.md, "Stacked hourglass"), with the channel width `f` a config value (the
//! original's 256 is for GPUs):
//! - residual module: BN-ReLU-conv1×1 (n/2) → BN-ReLU-conv3×3 (n/2) → BN-ReLU-conv1×1 (n), plus
//!   the input (identity, or conv1×1 when the channel counts differ);
//! - stem: conv7×7 s2 (f/4) BN ReLU → Res(→ f/2) → maxpool 2×2 → Res → Res(→ f): heatmaps are a
//!   quarter of the input's size (64×64 px in → 16×16 maps; 256 → 64);
//! - hourglass(depth): up = Res(x); low = Res(maxpool2(x)) → hourglass(depth − 1) (a Res at the
//!   bottom) → Res; out = up + nearest-upsample(low) to up's size (so sizes that do not halve
//!   evenly, such as 224 px in → 56×56 maps, work: 56 → 28 → 14 → 7 → 3 and back by
//!   nearest-neighbour resizing to the exact size);
//! - per stack: hourglass → Res → conv1×1 BN ReLU (features) → conv1×1 to one map per joint;
//!   between stacks `x + conv1×1(features) + conv1×1(maps)`.
//!
//! Coordinates: pixel centres are at integer coordinates (column u, row v). The stem's 7×7
//! stride-2 SAME convolution pads 2 before, so its output k is centred on input `2k + 1`; the
//! 2×2 pool's cell j covers outputs `2j, 2j + 1`, centred on input `4j + 2`. A joint at input `u`
//! is at heatmap coordinate `(u − 2) / 4` ([`to_heatmap`], [`from_heatmap`]); maps have
//! `⌈h/2⌉/2` rows. Targets are Gaussians of σ = 1 heatmap cell (the original; `sigma`) with peak
//! 1 at the joint's heatmap coordinate. The loss is the mean squared error per stack, summed;
//! `fg_weight` > 1 weights each cell by `1 + (fg_weight − 1)·target` (not in the original: with
//! few training steps a plain MSE on maps that are zero almost everywhere settles on predicting
//! zero everywhere, whose arg-max is noise).

use burn::config::Config;
use burn::module::{AutodiffModule, Module};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer};
use burn::tensor::activation::relu;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Tensor, TensorData};

use super::NnError;
use super::backend::init_seeded;
use super::conv::conv2d;

/// Input pixels per heatmap cell along each axis.
pub const STRIDE: usize = 4;

/// Sizes of a stacked hourglass.
#[derive(Config, Debug, PartialEq)]
pub struct HourglassConfig {
    /// Image channels (1 for depth maps).
    #[config(default = 1)]
    pub channels: usize,
    /// Input height in pixels.
    #[config(default = 64)]
    pub height: usize,
    /// Input width in pixels.
    #[config(default = 64)]
    pub width: usize,
    /// Joints: one heatmap each (14 for the NYU evaluation).
    #[config(default = 14)]
    pub joints: usize,
    /// Feature maps inside the hourglasses (the original: 256).
    #[config(default = 256)]
    pub features: usize,
    /// Hourglasses stacked (the paper's hand estimator: 2).
    #[config(default = 2)]
    pub stacks: usize,
    /// Down-sampling levels per hourglass (the original: 4).
    #[config(default = 4)]
    pub depth: usize,
    /// Width of the target Gaussians in heatmap cells (σ).
    #[config(default = 1.0)]
    pub sigma: f32,
    /// Weight of a cell in the loss is `1 + (fg_weight − 1)·target` (1 = plain MSE, the original).
    #[config(default = 1.0)]
    pub fg_weight: f32,
}

impl HourglassConfig {
    /// `(rows, cols)` of the heatmaps.
    pub fn heatmap_size(&self) -> (usize, usize) {
        (self.height.div_ceil(2) / 2, self.width.div_ceil(2) / 2)
    }

    /// Check the sizes: positive, even feature counts, an input of at least 8×8 whose heatmap
    /// survives `depth` halvings.
    pub fn validate(&self) -> Result<(), NnError> {
        let bad = |m: String| Err(NnError::InvalidConfig(format!("hourglass: {m}")));
        if self.channels == 0 || self.joints == 0 || self.stacks == 0 || self.depth == 0 {
            return bad(format!("sizes must be > 0, got {self:?}"));
        }
        if self.features < 8 || !self.features.is_multiple_of(4) {
            return bad(format!(
                "features must be a multiple of 4 and ≥ 8, got {}",
                self.features
            ));
        }
        let (h, w) = self.heatmap_size();
        if (h.min(w) >> self.depth) == 0 {
            return bad(format!(
                "input {}×{} gives {h}×{w} heatmaps, too small for {} halvings (needs ≥ {} px per side)",
                self.width,
                self.height,
                self.depth,
                STRIDE << self.depth
            ));
        }
        if !(self.sigma.is_finite() && self.sigma > 0.0) {
            return bad(format!("sigma must be > 0, got {}", self.sigma));
        }
        if !(self.fg_weight.is_finite() && self.fg_weight >= 1.0) {
            return bad(format!("fg_weight must be ≥ 1, got {}", self.fg_weight));
        }
        Ok(())
    }

    /// Build the network with freshly initialised weights. Call [`Self::validate`] first.
    pub fn init<B: Backend>(&self, device: &B::Device) -> StackedHourglass<B> {
        let f = self.features;
        let res = |cin: usize, cout: usize| Residual::new(cin, cout, device);
        let conv1 =
            |cin: usize, cout: usize| Conv2dConfig::new([cin, cout], [1, 1]).init::<B>(device);
        let stacks = (0..self.stacks)
            .map(|s| Stack {
                hourglass: Hourglass::new(self.depth, f, device),
                res: res(f, f),
                features: conv1(f, f),
                bn: BatchNormConfig::new(f).init(device),
                maps: conv1(f, self.joints),
                merge: (s + 1 < self.stacks).then(|| Merge {
                    features: conv1(f, f),
                    maps: conv1(self.joints, f),
                }),
            })
            .collect();
        StackedHourglass {
            stem: Conv2dConfig::new([self.channels, f / 4], [7, 7])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Same)
                .init(device),
            stem_bn: BatchNormConfig::new(f / 4).init(device),
            stem_res1: res(f / 4, f / 2),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            stem_res2: res(f / 2, f / 2),
            stem_res3: res(f / 2, f),
            stacks,
        }
    }
}

/// Batch normalisation of `[batch, c, h, w]` with `bn`'s parameters and running statistics —
/// burn's `BatchNorm::forward` computed in a layout burn-flex broadcasts fast: per-channel values
/// are repeated over the batch (`[batch, c, 1]`, a few hundred floats) so every broadcast is
/// along the contiguous last axis. (burn's own, with a `[1, c, 1, 1]` operand, walks the
/// tensor element by element: 45 ms for a `[32, 8, 32, 32]` batch norm forward + backward.)
/// Training (autodiff backend): batch statistics, running statistics updated with `bn.momentum`;
/// inference: the running statistics.
pub fn batch_norm<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    let device = x.device();
    let x = x.reshape([b, c, h * w]); // [b, c, hw]
    let per_batch = |t: Tensor<B, 1>| t.reshape([1, c, 1]).repeat_dim(0, b); // [b, c, 1]
    let (centered, var) = if B::ad_enabled(&device) {
        let mean = x.clone().mean_dim(2).mean_dim(0); // [1, c, 1]
        let centered = x - mean.clone().repeat_dim(0, b); // [b, c, hw]
        let var = centered.clone().square().mean_dim(2).mean_dim(0); // [1, c, 1]
        let m = bn.momentum;
        let running_mean = bn
            .running_mean
            .value_sync()
            .to_device(&device)
            .mul_scalar(1.0 - m)
            + mean.detach().reshape([c]).mul_scalar(m);
        let running_var = bn
            .running_var
            .value_sync()
            .to_device(&device)
            .mul_scalar(1.0 - m)
            + var.clone().detach().reshape([c]).mul_scalar(m);
        bn.running_mean.update(running_mean.detach());
        bn.running_var.update(running_var.detach());
        (centered, var.reshape([c]))
    } else {
        let mean = bn.running_mean.value().to_device(&device);
        let var = bn.running_var.value().to_device(&device);
        (x - per_batch(mean), var)
    };
    let scale = var.add_scalar(bn.epsilon).sqrt().recip() * bn.gamma.val(); // [c]
    let y = centered * per_batch(scale) + per_batch(bn.beta.val()); // [b, c, hw]
    y.reshape([b, c, h, w])
}

/// The residual module: BN-ReLU-1×1(n/2) → BN-ReLU-3×3(n/2) → BN-ReLU-1×1(n), plus the skip.
#[derive(Module, Debug)]
pub struct Residual<B: Backend> {
    bn1: BatchNorm<B>,
    conv1: Conv2d<B>,
    bn2: BatchNorm<B>,
    conv2: Conv2d<B>,
    bn3: BatchNorm<B>,
    conv3: Conv2d<B>,
    /// 1×1 convolution on the skip when the channel counts differ.
    skip: Option<Conv2d<B>>,
}

impl<B: Backend> Residual<B> {
    fn new(cin: usize, cout: usize, device: &B::Device) -> Self {
        let mid = (cout / 2).max(1);
        let conv = |i: usize, o: usize, k: usize| {
            Conv2dConfig::new([i, o], [k, k])
                .with_padding(PaddingConfig2d::Same)
                .init(device)
        };
        Residual {
            bn1: BatchNormConfig::new(cin).init(device),
            conv1: conv(cin, mid, 1),
            bn2: BatchNormConfig::new(mid).init(device),
            conv2: conv(mid, mid, 3),
            bn3: BatchNormConfig::new(mid).init(device),
            conv3: conv(mid, cout, 1),
            skip: (cin != cout).then(|| conv(cin, cout, 1)),
        }
    }

    /// `[batch, cin, h, w]` → `[batch, cout, h, w]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = conv2d(&self.conv1, relu(batch_norm(&self.bn1, x.clone()))); // [b, n/2, h, w]
        let h = conv2d(&self.conv2, relu(batch_norm(&self.bn2, h))); // [b, n/2, h, w]
        let h = conv2d(&self.conv3, relu(batch_norm(&self.bn3, h))); // [b, n, h, w]
        let skip = match &self.skip {
            Some(c) => conv2d(c, x), // [b, n, h, w]
            None => x,
        };
        h + skip // [b, n, h, w]
    }
}

/// One level of an hourglass: the full-size branch, the residual after the pool, and the one
/// after the level below.
#[derive(Module, Debug)]
pub struct Level<B: Backend> {
    up: Residual<B>,
    down: Residual<B>,
    after: Residual<B>,
}

/// An hourglass of `levels.len()` levels (the recursion unrolled: level 0 is the outermost),
/// with `bottom` at the smallest size.
#[derive(Module, Debug)]
pub struct Hourglass<B: Backend> {
    levels: Vec<Level<B>>,
    bottom: Residual<B>,
    pool: MaxPool2d,
}

impl<B: Backend> Hourglass<B> {
    fn new(depth: usize, f: usize, device: &B::Device) -> Self {
        let res = || Residual::new(f, f, device);
        Hourglass {
            levels: (0..depth)
                .map(|_| Level {
                    up: res(),
                    down: res(),
                    after: res(),
                })
                .collect(),
            bottom: res(),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
        }
    }

    /// `[batch, f, h, w]` → `[batch, f, h, w]`; shape comments for 16×16 in, depth 4.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        // Down: keep each level's full-size branch and size.
        let mut ups = Vec::with_capacity(self.levels.len());
        let mut h = x; // [b, f, 16, 16]
        for level in &self.levels {
            let [_, _, rows, cols] = h.dims();
            ups.push((level.up.forward(h.clone()), [rows, cols])); // [b, f, 16, 16]
            h = level.down.forward(self.pool.forward(h)); // [b, f, 8, 8]
        }
        let mut low = self.bottom.forward(h); // [b, f, 1, 1]
        // Up: innermost level first.
        for (level, (up, size)) in self.levels.iter().zip(ups).rev() {
            let l = level.after.forward(low); // [b, f, 1, 1]
            let l = interpolate(l, size, InterpolateOptions::new(InterpolateMode::Nearest)); // [b, f, 2, 2]
            low = up + l; // [b, f, 2, 2]
        }
        low // [b, f, 16, 16]
    }
}

/// The 1×1 convolutions feeding a stack's output back into the next stack.
#[derive(Module, Debug)]
pub struct Merge<B: Backend> {
    features: Conv2d<B>,
    maps: Conv2d<B>,
}

/// One stack: hourglass, residual, features, heatmaps.
#[derive(Module, Debug)]
pub struct Stack<B: Backend> {
    hourglass: Hourglass<B>,
    res: Residual<B>,
    features: Conv2d<B>,
    bn: BatchNorm<B>,
    maps: Conv2d<B>,
    merge: Option<Merge<B>>,
}

/// The stacked hourglass (see [`HourglassConfig`]).
#[derive(Module, Debug)]
pub struct StackedHourglass<B: Backend> {
    stem: Conv2d<B>,
    stem_bn: BatchNorm<B>,
    stem_res1: Residual<B>,
    pool: MaxPool2d,
    stem_res2: Residual<B>,
    stem_res3: Residual<B>,
    stacks: Vec<Stack<B>>,
}

impl<B: Backend> StackedHourglass<B> {
    /// Every stack's heatmaps; shape comments for 64×64 inputs, f = 32, 14 joints.
    pub fn forward(&self, x: Tensor<B, 4>) -> Vec<Tensor<B, 4>> {
        // x: [b, 1, 64, 64]
        let h = relu(batch_norm(&self.stem_bn, conv2d(&self.stem, x))); // [b, 8, 32, 32]
        let h = self.stem_res1.forward(h); // [b, 16, 32, 32]
        let h = self.pool.forward(h); // [b, 16, 16, 16]
        let h = self.stem_res2.forward(h); // [b, 16, 16, 16]
        let mut h = self.stem_res3.forward(h); // [b, 32, 16, 16]
        let mut out = Vec::with_capacity(self.stacks.len());
        for stack in &self.stacks {
            let y = stack.res.forward(stack.hourglass.forward(h.clone())); // [b, 32, 16, 16]
            let feats = relu(batch_norm(&stack.bn, conv2d(&stack.features, y))); // [b, 32, 16, 16]
            let maps = conv2d(&stack.maps, feats.clone()); // [b, 14, 16, 16]
            if let Some(m) = &stack.merge {
                h = h + conv2d(&m.features, feats) + conv2d(&m.maps, maps.clone()); // [b, 32, 16, 16]
            }
            out.push(maps);
        }
        out
    }
}

/// Input coordinate → heatmap coordinate (see the module docs).
pub fn to_heatmap(u: f32) -> f32 {
    (u - 2.0) / STRIDE as f32
}

/// Heatmap coordinate → input coordinate.
pub fn from_heatmap(h: f32) -> f32 {
    h * STRIDE as f32 + 2.0
}

/// Gaussian targets `[batch, joints, rows, cols]` (row-major) for joints given as input
/// coordinates, row-major `[batch, joints, 2]` (u, v). A non-finite joint gets an all-zero map.
pub fn heatmap_targets(
    joints_uv: &[f32],
    joints: usize,
    rows: usize,
    cols: usize,
    sigma: f32,
) -> Vec<f32> {
    let batch = joints_uv.len() / (2 * joints).max(1);
    let mut out = vec![0f32; batch * joints * rows * cols];
    if rows * cols == 0 {
        return out;
    }
    let inv = 1.0 / (2.0 * sigma * sigma);
    let reach = (3.0 * sigma).ceil() as i64;
    let far = (reach + rows.max(cols) as i64) as f32;
    for (k, map) in out.chunks_exact_mut(rows * cols).enumerate() {
        let (u, v) = (joints_uv[2 * k], joints_uv[2 * k + 1]);
        let (x, y) = (to_heatmap(u), to_heatmap(v));
        // Non-finite, or too far outside the map to touch it: an all-zero map.
        if !(x.abs() <= far && y.abs() <= far) {
            continue;
        }
        let (cx, cy) = (x.round() as i64, y.round() as i64);
        for r in (cy - reach).max(0)..=(cy + reach).min(rows as i64 - 1) {
            for c in (cx - reach).max(0)..=(cx + reach).min(cols as i64 - 1) {
                let d2 = (c as f32 - x).powi(2) + (r as f32 - y).powi(2);
                map[r as usize * cols + c as usize] = (-d2 * inv).exp();
            }
        }
    }
    out
}

/// Joints from heatmaps `[batch, joints, rows, cols]` (row-major values): the arg-max cell of each
/// map, moved 0.25 cell toward the higher of its two neighbours on each axis, as input
/// coordinates; row-major `[batch, joints, 2]` (u, v).
pub fn readout(maps: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let plane = rows * cols;
    if plane == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(2 * maps.len() / plane.max(1));
    for map in maps.chunks_exact(plane) {
        let (mut best, mut at) = (f32::NEG_INFINITY, 0);
        for (i, &v) in map.iter().enumerate() {
            if v > best {
                (best, at) = (v, i);
            }
        }
        let (r, c) = (at / cols, at % cols);
        let shift = |lo: Option<f32>, hi: Option<f32>| match (lo, hi) {
            (Some(a), Some(b)) if b > a => 0.25,
            (Some(a), Some(b)) if a > b => -0.25,
            _ => 0.0,
        };
        let dx = shift(
            c.checked_sub(1).map(|c| map[r * cols + c]),
            (c + 1 < cols).then(|| map[r * cols + c + 1]),
        );
        let dy = shift(
            r.checked_sub(1).map(|r| map[r * cols + c]),
            (r + 1 < rows).then(|| map[(r + 1) * cols + c]),
        );
        out.push(from_heatmap(c as f32 + dx));
        out.push(from_heatmap(r as f32 + dy));
    }
    out
}

/// Joints predicted by `net` for `[batch, c, h, w]` images: its last stack read out, row-major
/// `[batch, joints, 2]` input coordinates (inference backend).
pub fn predict_joints<B: Backend>(
    net: &StackedHourglass<B>,
    images: Tensor<B, 4>,
) -> Result<Vec<f32>, NnError> {
    let maps = net
        .forward(images)
        .pop()
        .ok_or_else(|| NnError::InvalidConfig("hourglass has no stacks".into()))?; // [b, J, H, W]
    let [_, _, rows, cols] = maps.dims();
    let values = maps.into_data().convert::<f32>().to_vec::<f32>()?;
    Ok(readout(&values, rows, cols))
}

/// A hourglass training run.
#[derive(Config, Debug, PartialEq)]
pub struct HourglassTrainConfig {
    /// Network sizes.
    pub net: HourglassConfig,
    /// Learning rate (Adam; the original uses RMSprop 2.5e-4).
    #[config(default = 1e-3)]
    pub lr: f64,
    /// Seed for weight initialisation.
    #[config(default = 42)]
    pub seed: u64,
    /// Cosine decay from `lr` to `lr / 20` over this many steps (0 = constant).
    #[config(default = 0)]
    pub decay_steps: u64,
}

/// The hourglass with its optimiser.
pub struct HourglassTrainer<B: AutodiffBackend> {
    config: HourglassTrainConfig,
    model: StackedHourglass<B>,
    optim: OptimizerAdaptor<Adam, StackedHourglass<B>, B>,
    step: u64,
}

impl<B: AutodiffBackend> HourglassTrainer<B> {
    /// A fresh, seeded network and optimiser.
    pub fn new(config: HourglassTrainConfig, device: &B::Device) -> Result<Self, NnError> {
        config.net.validate()?;
        if !config.lr.is_finite() || config.lr <= 0.0 {
            return Err(NnError::InvalidConfig(format!(
                "hourglass lr must be > 0, got {}",
                config.lr
            )));
        }
        let model = init_seeded::<B, _>(device, config.seed, || config.net.init::<B>(device));
        Ok(HourglassTrainer {
            optim: AdamConfig::new().init(),
            model,
            step: 0,
            config,
        })
    }

    /// The network (`.valid()` for inference).
    pub fn model(&self) -> &StackedHourglass<B> {
        &self.model
    }

    /// The run's configuration.
    pub fn config(&self) -> &HourglassTrainConfig {
        &self.config
    }

    /// One step on images `[batch, c, h, w]` and their joints (row-major `[batch, joints, 2]`
    /// input coordinates); returns the loss before the update: the mean squared heatmap error,
    /// summed over the stacks.
    pub fn step(&mut self, images: Tensor<B, 4>, joints_uv: &[f32]) -> Result<f32, NnError> {
        let net = &self.config.net;
        let [b, c, h, w] = images.dims();
        if b == 0
            || [c, h, w] != [net.channels, net.height, net.width]
            || joints_uv.len() != b * net.joints * 2
        {
            return Err(NnError::Shape {
                context: "HourglassTrainer::step",
                message: format!(
                    "images [{b}, {c}, {h}, {w}] with {} joint values; expected [b, {}, {}, {}] with b × {} × 2",
                    joints_uv.len(),
                    net.channels,
                    net.height,
                    net.width,
                    net.joints
                ),
            });
        }
        let device = images.device();
        let (rows, cols) = net.heatmap_size();
        let targets = heatmap_targets(joints_uv, net.joints, rows, cols, net.sigma);
        let weights = (net.fg_weight > 1.0).then(|| {
            let w: Vec<f32> = targets
                .iter()
                .map(|t| 1.0 + (net.fg_weight - 1.0) * t)
                .collect();
            Tensor::<B, 4>::from_data(TensorData::new(w, [b, net.joints, rows, cols]), &device)
        }); // [b, J, H, W]
        let targets = Tensor::<B, 4>::from_data(
            TensorData::new(targets, [b, net.joints, rows, cols]),
            &device,
        ); // [b, J, H, W]
        let mut loss: Option<Tensor<B, 1>> = None;
        for maps in self.model.forward(images) {
            let sq = (maps - targets.clone()).square(); // [b, J, H, W]
            let l = match &weights {
                Some(w) => (sq * w.clone()).mean(),
                None => sq.mean(),
            }; // [1]
            loss = Some(match loss {
                Some(total) => total + l,
                None => l,
            });
        }
        let loss = loss.ok_or_else(|| NnError::InvalidConfig("hourglass has no stacks".into()))?;
        let value = loss.clone().into_data().convert::<f32>().to_vec::<f32>()?;
        let grads = GradientsParams::from_grads(loss.backward(), &self.model);
        let lr = super::train::cosine_lr(self.config.lr, self.config.decay_steps, self.step);
        self.model = self.optim.step(lr, self.model.clone(), grads);
        self.step += 1;
        Ok(value.first().copied().unwrap_or(f32::NAN))
    }

    /// Joints predicted for `[batch, c, h, w]` images by the current weights.
    pub fn predict(&self, images: Tensor<B, 4>) -> Result<Vec<f32>, NnError> {
        predict_joints(&self.model.valid(), images.inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::backend::{CpuAutodiffBackend, CpuBackend};

    fn tiny() -> HourglassConfig {
        HourglassConfig::new()
            .with_height(32)
            .with_width(32)
            .with_joints(3)
            .with_features(8)
            .with_depth(2)
    }

    #[test]
    fn shapes_per_stack_and_odd_sizes() {
        let device = Default::default();
        let cfg = tiny();
        cfg.validate().unwrap_or_else(|e| panic!("{e}"));
        let net = init_seeded::<CpuBackend, _>(&device, 1, || cfg.init::<CpuBackend>(&device));
        let out = net.forward(Tensor::zeros([2, 1, 32, 32], &device));
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].dims(), [2, 3, 8, 8]);
        // Sizes that are not multiples of 4: 63 px → 32 → 16×16 maps, like the real output.
        let ragged = cfg.clone().with_height(63).with_width(63).with_stacks(1);
        let net = init_seeded::<CpuBackend, _>(&device, 1, || ragged.init::<CpuBackend>(&device));
        assert_eq!(ragged.heatmap_size(), (16, 16));
        assert_eq!(
            net.forward(Tensor::zeros([1, 1, 63, 63], &device))[0].dims(),
            [1, 3, 16, 16]
        );
        // 56 px in (the paper's 224 ÷ 4): 14×14 maps, halved to 7 and 3 and resized back.
        let odd = cfg.clone().with_height(56).with_width(56).with_stacks(1);
        odd.validate().unwrap_or_else(|e| panic!("{e}"));
        let net = init_seeded::<CpuBackend, _>(&device, 1, || odd.init::<CpuBackend>(&device));
        assert_eq!(
            net.forward(Tensor::zeros([1, 1, 56, 56], &device))[0].dims(),
            [1, 3, 14, 14]
        );
        assert!(
            tiny().with_depth(4).validate().is_err(),
            "8×8 maps cannot halve 4 times"
        );
    }

    /// A heatmap whose Gaussian is centred between cells reads out to the joint within the
    /// quarter-pixel shift's resolution.
    #[test]
    fn a_known_peak_reads_out_to_its_joint() {
        let (rows, cols) = (16, 16);
        let joints = [21.0f32, 37.0, 6.0, 50.3];
        let maps = heatmap_targets(&joints, 2, rows, cols, 1.0);
        // The peak cell of joint 0: u = 21 → 4.875 cells, v = 37 → 8.875.
        let peak = (0..rows * cols)
            .max_by(|&a, &b| maps[a].total_cmp(&maps[b]))
            .unwrap_or(0);
        assert_eq!((peak / cols, peak % cols), (9, 5));
        let back = readout(&maps, rows, cols);
        for (got, want) in back.iter().zip(joints) {
            // One cell is 4 px; the arg-max ± 0.25 cell is within 0.25 cell (1 px) + rounding.
            assert!((got - want).abs() <= 1.6, "{back:?} vs {joints:?}");
        }
        // Exactly on a cell centre: no shift.
        let at = heatmap_targets(&[from_heatmap(3.0), from_heatmap(7.0)], 1, rows, cols, 1.0);
        assert_eq!(
            readout(&at, rows, cols),
            vec![from_heatmap(3.0), from_heatmap(7.0)]
        );
    }

    /// [`batch_norm`] computes what burn's `BatchNorm::forward` does: outputs, gradients and
    /// running statistics, in training and in inference.
    #[test]
    fn batch_norm_matches_burns() {
        type Ad = CpuAutodiffBackend;
        let device = Default::default();
        let bn_ours = BatchNormConfig::new(3).init::<Ad>(&device);
        let bn_burn = BatchNormConfig::new(3).init::<Ad>(&device);
        let x = Tensor::<Ad, 4>::random(
            [4, 3, 5, 6],
            burn::tensor::Distribution::Normal(2.0, 3.0),
            &device,
        )
        .require_grad();
        let w = Tensor::<Ad, 4>::random([4, 3, 5, 6], burn::tensor::Distribution::Default, &device);
        let ours = batch_norm(&bn_ours, x.clone());
        let theirs = bn_burn.forward(x.clone());
        let v = |t: Tensor<Ad, 4>| t.inner().into_data().to_vec::<f32>().unwrap_or_default();
        let close = |a: Vec<f32>, b: Vec<f32>| {
            assert_eq!(a.len(), b.len());
            for (p, q) in a.iter().zip(&b) {
                assert!((p - q).abs() < 1e-4 * (1.0 + q.abs()), "{p} vs {q}");
            }
        };
        close(v(ours.clone()), v(theirs.clone()));
        let g1 = (ours * w.clone()).sum().backward();
        let g2 = (theirs * w).sum().backward();
        let gx = |g: &<Ad as AutodiffBackend>::Gradients| {
            x.grad(g)
                .map(|t| t.into_data().to_vec::<f32>().unwrap_or_default())
                .unwrap_or_default()
        };
        close(gx(&g1), gx(&g2));
        let stats = |bn: &BatchNorm<Ad>| {
            let mut s = bn
                .running_mean
                .value()
                .into_data()
                .to_vec::<f32>()
                .unwrap_or_default();
            s.extend(
                bn.running_var
                    .value()
                    .into_data()
                    .to_vec::<f32>()
                    .unwrap_or_default(),
            );
            s
        };
        close(stats(&bn_ours), stats(&bn_burn));
        let (a, b) = (bn_ours.valid(), bn_burn.valid());
        let xi = x.inner();
        let vi = |t: Tensor<CpuBackend, 4>| t.into_data().to_vec::<f32>().unwrap_or_default();
        close(vi(batch_norm(&a, xi.clone())), vi(b.forward(xi)));
    }

    /// Saved and loaded weights (batch-norm statistics included) predict exactly the same joints.
    #[test]
    fn weights_round_trip_through_safetensors() {
        type Ad = CpuAutodiffBackend;
        let device = Default::default();
        let cfg = HourglassTrainConfig::new(tiny());
        let mut trainer =
            HourglassTrainer::<Ad>::new(cfg.clone(), &device).unwrap_or_else(|e| panic!("{e}"));
        let x =
            Tensor::<Ad, 4>::random([4, 1, 32, 32], burn::tensor::Distribution::Default, &device);
        let uv: Vec<f32> = (0..4 * 3 * 2).map(|k| (k * 5 % 30) as f32).collect();
        for _ in 0..3 {
            trainer
                .step(x.clone(), &uv)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let bytes = crate::nn::save_hourglass(&trainer.model().valid(), &cfg.net)
            .unwrap_or_else(|e| panic!("{e}"));
        let (back, back_cfg) = crate::nn::load_hourglass::<CpuBackend>(&bytes, &device)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back_cfg, cfg.net);
        let a = trainer.predict(x.clone()).unwrap_or_default();
        let b = predict_joints(&back, x.inner()).unwrap_or_default();
        assert_eq!(a, b);
        let maps = |n: &StackedHourglass<CpuBackend>, x: Tensor<CpuBackend, 4>| {
            n.forward(x)
                .pop()
                .map(|t| t.into_data().to_vec::<f32>().unwrap_or_default())
                .unwrap_or_default()
        };
        let x2 = Tensor::<CpuBackend, 4>::ones([1, 1, 32, 32], &device);
        assert_eq!(maps(&trainer.model().valid(), x2.clone()), maps(&back, x2));
    }

    /// A short run on images whose one bright dot is the joint lowers the loss.
    #[test]
    fn short_training_lowers_the_loss() {
        type Ad = CpuAutodiffBackend;
        let device = Default::default();
        let cfg = HourglassTrainConfig::new(tiny().with_joints(1).with_stacks(1)).with_lr(3e-3);
        let mut trainer =
            HourglassTrainer::<Ad>::new(cfg, &device).unwrap_or_else(|e| panic!("{e}"));
        let batch = |k: usize| {
            let mut px = vec![-1f32; 8 * 32 * 32];
            let mut uv = Vec::new();
            for i in 0..8 {
                let (u, v) = (4 + (k * 7 + i * 5) % 24, 4 + (k * 3 + i * 11) % 24);
                for dy in 0..2 {
                    for dx in 0..2 {
                        px[i * 1024 + (v + dy) * 32 + u + dx] = 1.0;
                    }
                }
                uv.extend([u as f32 + 0.5, v as f32 + 0.5]);
            }
            (
                Tensor::<Ad, 4>::from_data(TensorData::new(px, [8, 1, 32, 32]), &device),
                uv,
            )
        };
        let mut losses = Vec::new();
        for k in 0..60 {
            let (x, uv) = batch(k);
            losses.push(trainer.step(x, &uv).unwrap_or(f32::NAN));
        }
        let first: f32 = losses[..5].iter().sum::<f32>() / 5.0;
        let last: f32 = losses[55..].iter().sum::<f32>() / 5.0;
        assert!(last < 0.5 * first, "loss {first} → {last}");
    }
}

#[cfg(test)]
mod probe {
    use super::*;
    use crate::nn::backend::CpuAutodiffBackend;

    fn time<F: FnMut()>(what: &str, mut f: F) {
        f();
        let s = std::time::Instant::now();
        for _ in 0..3 {
            f();
        }
        println!("{what}: {:.1} ms", s.elapsed().as_secs_f64() * 1000.0 / 3.0);
    }

    #[test]
    #[ignore = "a measurement, not a test"]
    fn probe_hourglass_parts() {
        type Ad = CpuAutodiffBackend;
        let device = Default::default();
        let x = || {
            Tensor::<Ad, 4>::random(
                [32, 8, 32, 32],
                burn::tensor::Distribution::Default,
                &device,
            )
            .require_grad()
        };
        let bn = BatchNormConfig::new(8).init::<Ad>(&device);
        time("burn bn fwd+bwd [32,8,32,32]", || {
            let _ = bn.forward(x()).sum().backward();
        });
        time("our bn fwd+bwd [32,8,32,32]", || {
            let _ = batch_norm(&bn, x()).sum().backward();
        });
        let res = Residual::<Ad>::new(8, 16, &device);
        time("residual 8→16 fwd+bwd", || {
            let _ = res.forward(x()).sum().backward();
        });
        let conv = Conv2dConfig::new([8, 8], [3, 3])
            .with_padding(PaddingConfig2d::Same)
            .init::<Ad>(&device);
        time("conv3x3 8→8 fwd+bwd", || {
            let _ = conv2d(&conv, x()).sum().backward();
        });
        let pool = MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init();
        time("maxpool fwd+bwd", || {
            let _ = pool.forward(x()).sum().backward();
        });
        time("interpolate fwd+bwd", || {
            let y = interpolate(
                x(),
                [64, 64],
                InterpolateOptions::new(InterpolateMode::Nearest),
            );
            let _ = y.sum().backward();
        });
        time("relu fwd+bwd", || {
            let _ = relu(x()).sum().backward();
        });
        let stem = Conv2dConfig::new([1, 8], [7, 7])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Same)
            .init::<Ad>(&device);
        let xi = || {
            Tensor::<Ad, 4>::random(
                [32, 1, 64, 64],
                burn::tensor::Distribution::Default,
                &device,
            )
            .require_grad()
        };
        time("stem conv7x7 s2 fwd+bwd", || {
            let _ = conv2d(&stem, xi()).sum().backward();
        });
    }

    /// Step time of the demo-size hourglass (by hand: `cargo test --lib probe_hourglass -- --ignored --nocapture`).
    #[test]
    #[ignore = "a measurement, not a test"]
    fn probe_hourglass_step() {
        type Ad = CpuAutodiffBackend;
        let device = Default::default();
        for (f, stacks, depth, b) in [
            (32, 2, 4, 32),
            (32, 1, 4, 32),
            (32, 2, 2, 32),
            (32, 2, 4, 64),
            (16, 2, 4, 32),
        ] {
            let net = HourglassConfig::new()
                .with_features(f)
                .with_stacks(stacks)
                .with_depth(depth);
            let mut t = HourglassTrainer::<Ad>::new(HourglassTrainConfig::new(net), &device)
                .unwrap_or_else(|e| panic!("{e}"));
            let x = Tensor::<Ad, 4>::random(
                [b, 1, 64, 64],
                burn::tensor::Distribution::Default,
                &device,
            );
            let uv: Vec<f32> = (0..b * 14 * 2).map(|k| (k * 7 % 60) as f32).collect();
            t.step(x.clone(), &uv).unwrap_or_default();
            let s = std::time::Instant::now();
            for _ in 0..3 {
                t.step(x.clone(), &uv).unwrap_or_default();
            }
            println!(
                "f={f} stacks={stacks} depth={depth} batch={b}: {:.0} ms/step",
                s.elapsed().as_secs_f64() * 1000.0 / 3.0
            );
        }
    }
}
