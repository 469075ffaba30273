//! The three networks of S+U learning and their configs: the refiner R, the local-patch
//! discriminator D, and the gaze-estimation CNN.
//!
//! Sizes follow the paper's appendix (REFERENCE.md, "Networks"). Every size is a config field
//! so the hand variants and the narrow CPU-demo variants are config values, not new code:
//! [`RefinerConfig::eye`], [`RefinerConfig::hand`], [`RefinerConfig::narrow`],
//! [`DiscriminatorConfig::eye`], [`DiscriminatorConfig::hand`],
//! [`DiscriminatorConfig::narrow`], [`GazeNetConfig::eye`], [`GazeNetConfig::narrow`].
//!
//! Decisions the paper leaves open (documented here and made configurable):
//! - The refiner's first convolution is followed by a ReLU, and the refiner ends in `tanh`
//!   (all public code does; images are in `[-1, 1]`).
//! - The discriminator has a LeakyReLU (slope 0.2; 0 gives ReLU) after every layer but the last;
//!   the paper lists none, and without them D is linear. Convolutions and the max-pool use SAME
//!   padding, giving 9×14 patches on 35×55 eyes and 7×7 on 224×224 hands.
//! - The refiner's convolutions pad with zeros (SAME) or, with
//!   [`RefinerConfig::reflect_padding`], by mirroring; its optional sensor-noise branch
//!   ([`RefinerConfig::noise_scale`]) adds learnt-amplitude noise to the output, white or
//!   shaped by a learnt filter ([`RefinerConfig::noise_kernel`]); per-image latent inputs
//!   ([`RefinerConfig::latent_channels`]) let it draw an appearance per image, and a learnt
//!   point-spread function ([`RefinerConfig::psf_kernel`]) filters the image as a camera's
//!   optics would.
//! - The gaze CNN uses ReLU after every convolution and after the hidden fully-connected layer,
//!   with VALID convolutions (so 35×55 flattens to 192×5×10 = 9600).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::{leaky_relu, relu, softplus, tanh};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::NnError;
use super::conv::conv2d;

// ---------------------------------------------------------------------------------------------
// Refiner
// ---------------------------------------------------------------------------------------------

/// Refiner R: conv k₀×k₀ `width` → `blocks` ResNet blocks → conv 1×1 back to the input channels
/// (→ tanh). No stride, no pooling: the output has the input's size.
#[derive(Config, Debug, PartialEq)]
pub struct RefinerConfig {
    /// Image channels in and out (1 for grey eyes and depth hands).
    #[config(default = 1)]
    pub channels: usize,
    /// Feature maps in every layer (paper: 64).
    #[config(default = 64)]
    pub width: usize,
    /// Number of ResNet blocks (paper: 4 for eyes, 10 for hands).
    #[config(default = 4)]
    pub blocks: usize,
    /// Kernel size inside the ResNet blocks (paper: 3).
    #[config(default = 3)]
    pub kernel_size: usize,
    /// Kernel size of the first convolution (paper: 3 for eyes, 7 for hands).
    #[config(default = 3)]
    pub first_kernel_size: usize,
    /// End in `tanh` (keeps outputs in `[-1, 1]`); off gives a linear output.
    #[config(default = true)]
    pub tanh_output: bool,
    /// Residual output: `R(x) = x + conv_out(h)`, leaky-clamped to [−1, 1] (slope 1/100
    /// outside), with `conv_out` initialised to zero, so R starts as the identity and learns
    /// only the change (replaces `tanh`). Not in the paper; it lets a narrow refiner trained for
    /// a few hundred CPU steps keep the pupil and iris intact (see the eye-gaze demo's note).
    #[config(default = false)]
    pub residual: bool,
    /// Extra input channels of standard-normal noise concatenated to the image (0 = the paper's
    /// deterministic refiner). A deterministic R(x) cannot add sensor noise to a noise-free
    /// render; with a noise channel it learns how much noise, and where. Training draws the noise
    /// from the backend's generator; `refine` draws it on the host from a generator seeded per
    /// batch ([`super::train::refine_seeded`]).
    #[config(default = 0)]
    pub noise_channels: usize,
    /// Per-image latent inputs (0 = none, the paper): `k` standard-normal values drawn once per
    /// image, each fed beside the image as a constant map. Noise channels vary per pixel, so
    /// they let R draw texture but not an appearance that varies per *image* — one shot's
    /// blur, noise level or exposure — which a real sensor's images do; a constant map shifts
    /// every unit of the first layer alike and so can switch the whole image's treatment.
    /// Drawn like the noise channels (the value at pixel (0, 0) of their maps). Not in the paper.
    #[config(default = 0)]
    pub latent_channels: usize,
    /// Initial standard deviation of an explicit sensor-noise branch (0 = none): the output
    /// gains `σ(h) ⊙ z′`, where `z′` is one standard-normal map per image channel (drawn beside
    /// the input noise channels, independent of them) and `σ = softplus(conv_1×1(h) +
    /// softplus⁻¹(noise_scale))` a per-pixel, per-channel amplitude whose convolution starts at
    /// zero, so σ starts at `noise_scale` everywhere. Not in the paper. A noise input alone is
    /// not enough: at a refiner that ignores its noise, the expected gradient toward using it is
    /// zero (the loss is symmetric in ±z), so R answers D with deterministic texture instead;
    /// started at a small σ, D's gradient decides whether the noise grows or fades.
    #[config(default = 0.0)]
    pub noise_scale: f64,
    /// Size K of a learnt K×K filter on the sensor-noise branch's maps (1 = none: white noise):
    /// the branch adds `σ(h) ⊙ (k ∗ z′)`, with `k` initialised to a centred delta, so it starts
    /// as the white branch and D's gradient shapes the noise's spectrum — grain, blotches, the
    /// mid-scale unevenness of skin or clutter. A deterministic R(x) cannot draw random texture
    /// (see `noise_scale` for why a noise input is not enough), and white noise has the wrong
    /// spectrum for any texture coarser than a pixel. Only with `noise_scale` > 0. Not in the paper.
    #[config(default = 1)]
    pub noise_kernel: usize,
    /// Size K of a learnt K×K point-spread function on the residual refiner's image path (1 =
    /// none): `R(x) = k ∗ x + Δ(x)` instead of `x + Δ(x)`, with `k` started as a centred delta
    /// (so R still starts as the identity) and the image mirrored at the border for it. A
    /// renderer's images are sharp where a camera's are blurred by its optics; the ResNet can
    /// learn a blur only through its nonlinear residual, one direction among many, where this
    /// filter makes the sensor's blur one linear map that D's gradient moves directly. Only
    /// with `residual`. Not in the paper. (On the eye demo D moved it the other way, to a
    /// sharpening centre-surround filter: docs/eye-demo-tuning.md.)
    #[config(default = 1)]
    pub psf_kernel: usize,
    /// Pad every convolution by mirroring the image (`reflect`) instead of with zeros (SAME).
    /// Zero padding tells every layer where the border is, and a refiner trained against a
    /// discriminator uses that: it draws frames parallel to the edges, which no real image has
    /// and any classifier sees. Not in the paper (which does not say).
    #[config(default = false)]
    pub reflect_padding: bool,
}

impl RefinerConfig {
    /// The paper's eye refiner: 1 channel, 64 maps, 4 blocks, 3×3 kernels.
    pub fn eye() -> Self {
        Self::new()
    }

    /// The paper's hand refiner: 1 depth channel, conv 7×7 then 10 blocks of 64 maps.
    pub fn hand() -> Self {
        Self::new().with_blocks(10).with_first_kernel_size(7)
    }

    /// The eye refiner with `width` maps instead of 64 (CPU demos and tests use 8 or 16).
    pub fn narrow(width: usize) -> Self {
        Self::new().with_width(width)
    }

    /// Check that the sizes make a network (all positive, odd kernels for SAME padding).
    pub fn validate(&self) -> Result<(), NnError> {
        if self.channels == 0 || self.width == 0 {
            return Err(NnError::InvalidConfig(format!(
                "refiner: channels and width must be > 0, got {self:?}"
            )));
        }
        if !(0.0..=1.0).contains(&self.noise_scale) {
            return Err(NnError::InvalidConfig(format!(
                "refiner: noise_scale must be in [0, 1], got {}",
                self.noise_scale
            )));
        }
        if self.noise_kernel == 0 || self.noise_kernel.is_multiple_of(2) || self.noise_kernel > 31 {
            return Err(NnError::InvalidConfig(format!(
                "refiner: noise_kernel must be odd and in [1, 31], got {}",
                self.noise_kernel
            )));
        }
        if self.psf_kernel == 0 || self.psf_kernel.is_multiple_of(2) || self.psf_kernel > 31 {
            return Err(NnError::InvalidConfig(format!(
                "refiner: psf_kernel must be odd and in [1, 31], got {}",
                self.psf_kernel
            )));
        }
        if self.psf_kernel > 1 && !self.residual {
            return Err(NnError::InvalidConfig(
                "refiner: psf_kernel > 1 needs the residual output (residual = true)".into(),
            ));
        }
        if self.kernel_size.is_multiple_of(2) || self.first_kernel_size.is_multiple_of(2) {
            return Err(NnError::InvalidConfig(format!(
                "refiner: kernel sizes must be odd to keep the image size, got {} and {}",
                self.first_kernel_size, self.kernel_size
            )));
        }
        Ok(())
    }

    /// Build the refiner with freshly initialised weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Refiner<B> {
        // Reflect padding happens in `forward`, before a VALID convolution.
        let padding = if self.reflect_padding {
            PaddingConfig2d::Valid
        } else {
            PaddingConfig2d::Same
        };
        let same = |cin: usize, cout: usize, k: usize| {
            Conv2dConfig::new([cin, cout], [k, k])
                .with_padding(padding.clone())
                .init(device)
        };
        Refiner {
            conv_in: same(
                self.channels + self.noise_channels + self.latent_channels,
                self.width,
                self.first_kernel_size,
            ),
            blocks: (0..self.blocks)
                .map(|_| ResBlock {
                    conv1: same(self.width, self.width, self.kernel_size),
                    conv2: same(self.width, self.width, self.kernel_size),
                })
                .collect(),
            conv_out: if self.residual {
                Conv2dConfig::new([self.width, self.channels], [1, 1])
                    .with_initializer(burn::nn::Initializer::Zeros)
                    .init(device)
            } else {
                same(self.width, self.channels, 1)
            },
            noise_out: (self.noise_scale > 0.0).then(|| {
                Conv2dConfig::new([self.width, self.channels], [1, 1])
                    .with_initializer(burn::nn::Initializer::Zeros)
                    .init(device)
            }),
            noise_filter: (self.noise_scale > 0.0 && self.noise_kernel > 1).then(|| {
                delta_filter(
                    self.channels,
                    self.noise_kernel,
                    PaddingConfig2d::Same,
                    device,
                )
            }),
            psf: (self.residual && self.psf_kernel > 1).then(|| {
                delta_filter(
                    self.channels,
                    self.psf_kernel,
                    PaddingConfig2d::Valid,
                    device,
                )
            }),
            tanh_output: self.tanh_output,
            residual: self.residual,
            reflect_padding: self.reflect_padding,
            noise_channels: self.noise_channels,
            latent_channels: self.latent_channels,
            // softplus⁻¹(s) = ln(eˢ − 1), so σ = softplus(0 + offset) = s at initialisation.
            noise_offset: self.noise_scale.exp_m1().max(f64::MIN_POSITIVE).ln(),
        }
    }
}

/// A `k×k` convolution over `channels` maps (no bias; `padding` Same, or Valid for a caller
/// that mirrors the border itself) that starts as the identity: a centred delta from each map
/// to itself.
fn delta_filter<B: Backend>(
    channels: usize,
    k: usize,
    padding: PaddingConfig2d,
    device: &B::Device,
) -> Conv2d<B> {
    let mut conv = Conv2dConfig::new([channels, channels], [k, k])
        .with_padding(padding)
        .with_bias(false)
        .init(device);
    let mut w = vec![0f32; channels * channels * k * k];
    for c in 0..channels {
        w[((c * channels + c) * k + k / 2) * k + k / 2] = 1.0;
    }
    conv.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(w, [channels, channels, k, k]),
        device,
    ));
    conv
}

/// One ResNet block: conv → ReLU → conv → add input → ReLU.
#[derive(Module, Debug)]
pub struct ResBlock<B: Backend> {
    /// First convolution.
    pub conv1: Conv2d<B>,
    /// Second convolution.
    pub conv2: Conv2d<B>,
}

impl<B: Backend> ResBlock<B> {
    /// Shapes are preserved: `[batch, width, h, w]` → `[batch, width, h, w]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_padded(x, false)
    }

    /// [`Self::forward`] with the convolutions' input mirrored at the borders first when
    /// `reflect` (the convolutions are then VALID; see [`RefinerConfig::reflect_padding`]).
    pub fn forward_padded(&self, x: Tensor<B, 4>, reflect: bool) -> Tensor<B, 4> {
        let y = relu(conv_padded(&self.conv1, x.clone(), reflect)); // [batch, 64, 35, 55]
        let y = conv_padded(&self.conv2, y, reflect); // [batch, 64, 35, 55]
        relu(x + y) // [batch, 64, 35, 55]
    }
}

/// `conv` on `x`, mirrored by the kernel's half-size at the borders first when `reflect`.
fn conv_padded<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>, reflect: bool) -> Tensor<B, 4> {
    if reflect {
        let [kh, kw] = conv.kernel_size;
        conv2d(conv, reflect_pad(x, kh / 2, kw / 2)) // [batch, c, h, w]
    } else {
        conv2d(conv, x)
    }
}

/// Mirror `x` by `rh` rows and `rw` columns at each border (the edge pixel not repeated, as
/// PyTorch's `ReflectionPad2d`): `[b, c, h, w]` → `[b, c, h + 2rh, w + 2rw]`. An axis shorter
/// than its pad + 1 is padded with zeros instead.
pub fn reflect_pad<B: Backend>(x: Tensor<B, 4>, rh: usize, rw: usize) -> Tensor<B, 4> {
    let pad_axis = |x: Tensor<B, 4>, axis: usize, r: usize| {
        let n = x.dims()[axis];
        if r == 0 {
            return x;
        }
        // A one-wide mirror is its own flip (3×3 kernels): skip the copy.
        let mirror = |t: Tensor<B, 4>| if r > 1 { t.flip([axis as isize]) } else { t };
        let (lo, hi) = if n > r {
            (
                mirror(x.clone().narrow(axis, 1, r)),
                mirror(x.clone().narrow(axis, n - 1 - r, r)),
            )
        } else {
            let mut dims = x.dims();
            dims[axis] = r;
            let z = Tensor::zeros(dims, &x.device());
            (z.clone(), z)
        };
        Tensor::cat(vec![lo, x, hi], axis)
    };
    pad_axis(pad_axis(x, 2, rh), 3, rw)
}

/// The refiner network R (see [`RefinerConfig`]).
#[derive(Module, Debug)]
pub struct Refiner<B: Backend> {
    /// First convolution (channels → width).
    pub conv_in: Conv2d<B>,
    /// The ResNet blocks.
    pub blocks: Vec<ResBlock<B>>,
    /// Final 1×1 convolution (width → channels).
    pub conv_out: Conv2d<B>,
    /// The sensor-noise amplitude's 1×1 convolution (width → channels), when
    /// [`RefinerConfig::noise_scale`] > 0.
    pub noise_out: Option<Conv2d<B>>,
    /// The learnt filter on the sensor-noise maps (channels → channels, K×K), when
    /// [`RefinerConfig::noise_kernel`] > 1.
    pub noise_filter: Option<Conv2d<B>>,
    /// The learnt point-spread function on the image path (channels → channels, K×K, VALID
    /// after mirroring), when [`RefinerConfig::psf_kernel`] > 1.
    pub psf: Option<Conv2d<B>>,
    /// Whether the output goes through tanh.
    #[module(skip)]
    pub tanh_output: bool,
    /// Whether the output is the leaky-clamped `x + Δ` (see [`RefinerConfig::residual`]).
    #[module(skip)]
    pub residual: bool,
    /// Whether convolutions pad by mirroring (see [`RefinerConfig::reflect_padding`]).
    #[module(skip)]
    pub reflect_padding: bool,
    /// Noise channels drawn and concatenated to the input (see [`RefinerConfig::noise_channels`]).
    #[module(skip)]
    pub noise_channels: usize,
    /// Per-image latent maps fed to the first layer (see [`RefinerConfig::latent_channels`]).
    #[module(skip)]
    pub latent_channels: usize,
    /// softplus⁻¹ of the initial noise amplitude, added before the softplus.
    #[module(skip)]
    pub noise_offset: f64,
}

impl<B: Backend> Refiner<B> {
    /// Refine a batch; shape comments are for the eye refiner on 35×55 images. Noise channels
    /// (if any) are drawn from the backend's generator (training); see [`Self::forward_noise`].
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_noise(x, None)
    }

    /// Standard-normal maps one forward pass draws per image: the input noise channels, the
    /// latent channels (only pixel (0, 0) of each is used), then one per image channel for the
    /// sensor-noise branch (if any).
    pub fn noise_maps(&self) -> usize {
        let branch = self
            .noise_out
            .as_ref()
            .map(|c| c.weight.dims()[0])
            .unwrap_or(0);
        self.inputs() + branch
    }

    /// Noise and latent maps concatenated to the image.
    fn inputs(&self) -> usize {
        self.noise_channels + self.latent_channels
    }

    /// [`Self::forward`] with the noise maps given (`[batch, noise_maps, h, w]`, see
    /// [`Self::noise_maps`]; `None`: drawn from the backend's generator). Inference passes noise
    /// from its own seeded generator ([`super::train::refine_seeded`]), so the output does not
    /// depend on which lane, thread or device ran the batch.
    pub fn forward_noise(&self, x: Tensor<B, 4>, noise: Option<Tensor<B, 4>>) -> Tensor<B, 4> {
        self.forward_split(x, noise, false).0
    }

    /// [`Self::forward_noise`], and with `clean` also the same output without the sensor-noise
    /// branch's term (`None` when there is no branch or `clean` is false): what the
    /// self-regularisation compares when sensor noise is to cost nothing
    /// ([`super::train::TrainConfig::reg_noise`]).
    pub fn forward_split(
        &self,
        x: Tensor<B, 4>,
        noise: Option<Tensor<B, 4>>,
        clean: bool,
    ) -> (Tensor<B, 4>, Option<Tensor<B, 4>>) {
        // x: [batch, 1, 35, 55]
        let maps = self.noise_maps();
        let z = (maps > 0).then(|| {
            let [b, _, h, w] = x.dims();
            let z = noise.unwrap_or_else(|| {
                Tensor::random(
                    [b, maps, h, w],
                    burn::tensor::Distribution::Normal(0.0, 1.0),
                    &x.device(),
                )
            }); // [batch, noise + latent + 1, 35, 55]
            // In x's float type (bf16/f16 computation: `nn::precision`).
            if z.dtype() == x.dtype() {
                z
            } else {
                z.cast(burn::tensor::FloatDType::from(x.dtype()))
            }
        });
        let input = match &z {
            Some(z) if self.inputs() > 0 => {
                let [b, _, h, w] = x.dims();
                let mut parts = vec![x.clone()];
                if self.noise_channels > 0 {
                    parts.push(z.clone().narrow(1, 0, self.noise_channels)); // [batch, noise, 35, 55]
                }
                if self.latent_channels > 0 {
                    let latent = z
                        .clone()
                        .narrow(1, self.noise_channels, self.latent_channels)
                        .narrow(2, 0, 1)
                        .narrow(3, 0, 1); // [batch, latent, 1, 1]
                    parts.push(latent.expand([b, self.latent_channels, h, w])); // [batch, latent, 35, 55]
                }
                Tensor::cat(parts, 1) // [batch, 1 + noise + latent, 35, 55]
            }
            _ => x.clone(),
        };
        let reflect = self.reflect_padding;
        let mut h = relu(conv_padded(&self.conv_in, input, reflect)); // [batch, 64, 35, 55]
        for block in &self.blocks {
            h = block.forward_padded(h, reflect); // [batch, 64, 35, 55]
        }
        let out = conv2d(&self.conv_out, h.clone()); // [batch, 1, 35, 55]
        let mut sensor = None;
        if let (Some(conv), Some(z)) = (&self.noise_out, z) {
            let c = maps - self.inputs();
            let sigma = softplus(conv2d(conv, h).add_scalar(self.noise_offset), 1.0); // [batch, 1, 35, 55]
            let z = z.narrow(1, self.inputs(), c); // [batch, 1, 35, 55]
            let z = match &self.noise_filter {
                Some(filter) => conv2d(filter, z), // [batch, 1, 35, 55]
                None => z,
            };
            sensor = Some(sigma * z); // [batch, 1, 35, 55]
        }
        let base = match (&self.psf, self.residual) {
            (Some(psf), true) => Some(conv_padded(psf, x, true)), // [batch, 1, 35, 55]
            (None, true) => Some(x),
            (_, false) => None,
        };
        let finish = |out: Tensor<B, 4>| match &base {
            // A leaky clamp: identity inside [−1, 1], slope 1/100 outside. A hard clamp has no
            // gradient once saturated: a refiner that overshot to black (real-like eyes are
            // darker) stayed black for the rest of the run, with neither D nor the
            // self-regularisation able to pull it back. Outputs are clamped when stored.
            Some(base) => {
                let v = base.clone() + out; // [batch, 1, 35, 55]
                let inside = v.clone().clamp(-1.0, 1.0);
                inside.clone() + (v - inside).mul_scalar(LEAK) // [batch, 1, 35, 55]
            }
            None if self.tanh_output => tanh(out), // [batch, 1, 35, 55]
            None => out,
        };
        match sensor {
            Some(sensor) => {
                let clean = clean.then(|| finish(out.clone())); // [batch, 1, 35, 55]
                (finish(out + sensor), clean)
            }
            None => (finish(out), None),
        }
    }
}

/// Slope of the residual refiner's output beyond [−1, 1] (see [`Refiner::forward`]).
const LEAK: f64 = 0.01;

// ---------------------------------------------------------------------------------------------
// Discriminator
// ---------------------------------------------------------------------------------------------

/// Local discriminator D: conv(k1, s1) c1 → conv(k2, s2) c2 → maxpool(kp, sp) → conv(k3, s3) c3
/// → conv 1×1 c4 → conv 1×1 2, SAME padding, LeakyReLU between layers. The output is a map of
/// two-class logits, one per image patch: class [`super::loss::CLASS_REAL`] and class
/// [`super::loss::CLASS_REFINED`].
#[derive(Config, Debug, PartialEq)]
pub struct DiscriminatorConfig {
    /// Image channels.
    #[config(default = 1)]
    pub channels: usize,
    /// First conv: output maps (eye 96).
    #[config(default = 96)]
    pub conv1_channels: usize,
    /// First conv: kernel (eye 3, hand 7).
    #[config(default = 3)]
    pub conv1_kernel: usize,
    /// First conv: stride (eye 2, hand 4).
    #[config(default = 2)]
    pub conv1_stride: usize,
    /// Second conv: output maps (64).
    #[config(default = 64)]
    pub conv2_channels: usize,
    /// Second conv: kernel (eye 3, hand 5).
    #[config(default = 3)]
    pub conv2_kernel: usize,
    /// Second conv: stride (2).
    #[config(default = 2)]
    pub conv2_stride: usize,
    /// Max-pool kernel (3).
    #[config(default = 3)]
    pub pool_kernel: usize,
    /// Max-pool stride (eye 1, hand 2).
    #[config(default = 1)]
    pub pool_stride: usize,
    /// Third conv: output maps (32).
    #[config(default = 32)]
    pub conv3_channels: usize,
    /// Third conv: kernel (3).
    #[config(default = 3)]
    pub conv3_kernel: usize,
    /// Third conv: stride (eye 1, hand 2).
    #[config(default = 1)]
    pub conv3_stride: usize,
    /// The 1×1 conv before the logits: output maps (32).
    #[config(default = 32)]
    pub conv4_channels: usize,
    /// LeakyReLU negative slope between layers; 0 gives ReLU.
    #[config(default = 0.2)]
    pub leaky_slope: f64,
    /// Spectral normalisation (Miyato et al. 2018): every convolution's weight, as an
    /// `out × (in·k·k)` matrix, divided by its largest singular value, so D is 1-Lipschitz per
    /// layer and cannot answer a small change of the image with a large change of its logits.
    #[config(default = false)]
    pub spectral_norm: bool,
}

impl DiscriminatorConfig {
    /// The paper's eye discriminator (9×14 patches on 35×55).
    pub fn eye() -> Self {
        Self::new()
    }

    /// The paper's hand discriminator: conv7×7 s4 96 → conv5×5 s2 64 → maxpool3×3 s2 →
    /// conv3×3 s2 32 → conv1×1 32 → conv1×1 2 (7×7 patches on 224×224).
    pub fn hand() -> Self {
        Self::new()
            .with_conv1_kernel(7)
            .with_conv1_stride(4)
            .with_conv2_kernel(5)
            .with_pool_stride(2)
            .with_conv3_stride(2)
    }

    /// The eye discriminator with every channel count divided by `divisor` (at least 2 maps).
    pub fn narrow(divisor: usize) -> Self {
        Self::new().divided(divisor)
    }

    /// This discriminator with the paper's channel counts (96, 64, 32, 32) divided by
    /// `divisor` (at least 2 maps each).
    pub fn divided(self, divisor: usize) -> Self {
        let d = divisor.max(1);
        let c = |n: usize| (n / d).max(2);
        self.with_conv1_channels(c(96))
            .with_conv2_channels(c(64))
            .with_conv3_channels(c(32))
            .with_conv4_channels(c(32))
    }

    /// The patch grid `(rows, cols)` D produces for an `height × width` image (SAME padding:
    /// every strided layer maps n to ⌈n / stride⌉).
    pub fn patch_grid(&self, height: usize, width: usize) -> (usize, usize) {
        let strides = [
            self.conv1_stride,
            self.conv2_stride,
            self.pool_stride,
            self.conv3_stride,
        ];
        strides.iter().fold((height, width), |(h, w), s| {
            (h.div_ceil((*s).max(1)), w.div_ceil((*s).max(1)))
        })
    }

    /// Check that all sizes are positive.
    pub fn validate(&self) -> Result<(), NnError> {
        let sizes = [
            self.channels,
            self.conv1_channels,
            self.conv1_kernel,
            self.conv1_stride,
            self.conv2_channels,
            self.conv2_kernel,
            self.conv2_stride,
            self.pool_kernel,
            self.pool_stride,
            self.conv3_channels,
            self.conv3_kernel,
            self.conv3_stride,
            self.conv4_channels,
        ];
        if sizes.contains(&0) {
            return Err(NnError::InvalidConfig(format!(
                "discriminator: all sizes must be > 0, got {self:?}"
            )));
        }
        Ok(())
    }

    /// Build the discriminator with freshly initialised weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Discriminator<B> {
        let conv = |cin: usize, cout: usize, k: usize, s: usize| {
            Conv2dConfig::new([cin, cout], [k, k])
                .with_stride([s, s])
                .with_padding(PaddingConfig2d::Same)
                .init(device)
        };
        Discriminator {
            conv1: conv(
                self.channels,
                self.conv1_channels,
                self.conv1_kernel,
                self.conv1_stride,
            ),
            conv2: conv(
                self.conv1_channels,
                self.conv2_channels,
                self.conv2_kernel,
                self.conv2_stride,
            ),
            pool: MaxPool2dConfig::new([self.pool_kernel, self.pool_kernel])
                .with_strides([self.pool_stride, self.pool_stride])
                .with_padding(PaddingConfig2d::Same)
                .init(),
            conv3: conv(
                self.conv2_channels,
                self.conv3_channels,
                self.conv3_kernel,
                self.conv3_stride,
            ),
            conv4: conv(self.conv3_channels, self.conv4_channels, 1, 1),
            conv_out: conv(self.conv4_channels, 2, 1, 1),
            leaky_slope: self.leaky_slope,
            spectral_norm: self.spectral_norm,
        }
    }
}

/// The local discriminator D (see [`DiscriminatorConfig`]).
#[derive(Module, Debug)]
pub struct Discriminator<B: Backend> {
    /// conv 3×3 s2 96.
    pub conv1: Conv2d<B>,
    /// conv 3×3 s2 64.
    pub conv2: Conv2d<B>,
    /// maxpool 3×3 s1.
    pub pool: MaxPool2d,
    /// conv 3×3 32.
    pub conv3: Conv2d<B>,
    /// conv 1×1 32.
    pub conv4: Conv2d<B>,
    /// conv 1×1 2: the patch logits.
    pub conv_out: Conv2d<B>,
    /// LeakyReLU slope (0 = ReLU).
    #[module(skip)]
    pub leaky_slope: f64,
    /// Spectrally normalised convolutions ([`DiscriminatorConfig::spectral_norm`]).
    #[module(skip)]
    pub spectral_norm: bool,
}

/// Power iterations per forward for the spectral norm: from a fixed start vector each time (no
/// state to checkpoint), enough for the largest singular value of D's small weight matrices to
/// settle to well under 1 %.
const SPECTRAL_ITERATIONS: usize = 12;

/// The largest singular value σ of `weight` (`[out, in, k, k]` as an `out × in·k·k` matrix),
/// differentiable w.r.t. the weight: the singular vectors u, v come from power iteration on the
/// detached weight, then `σ = uᵀ W v` (the gradient of σ is `u vᵀ`, as in Miyato et al.).
pub(crate) fn spectral_sigma<B: Backend>(weight: Tensor<B, 4>) -> Tensor<B, 1> {
    let [out, cin, kh, kw] = weight.dims();
    let w = weight.reshape([out, cin * kh * kw]); // [out, n]
    let wd = w.clone().detach();
    let device = w.device();
    let normalise = |t: Tensor<B, 2>| {
        let norm = t.clone().powi_scalar(2).sum().sqrt().add_scalar(1e-12); // [1]
        t / norm.unsqueeze::<2>()
    };
    let mut v = normalise(Tensor::<B, 2>::ones([cin * kh * kw, 1], &device)); // [n, 1]
    let mut u = normalise(wd.clone().matmul(v.clone())); // [out, 1]
    for _ in 0..SPECTRAL_ITERATIONS {
        v = normalise(wd.clone().transpose().matmul(u.clone())); // [n, 1]
        u = normalise(wd.clone().matmul(v.clone())); // [out, 1]
    }
    u.transpose().matmul(w).matmul(v).reshape([1]) // [1]
}

/// `conv` applied with its weight divided by the weight's spectral norm: `(conv(x) − b) / σ + b`
/// (the same as convolving with `W / σ`, without a second weight tensor).
fn conv2d_spectral<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let sigma = spectral_sigma(conv.weight.val()); // [1]
    let y = conv2d(conv, x); // [b, c_out, h, w]
    let inv = sigma.recip().reshape([1, 1, 1, 1]); // [1, 1, 1, 1]
    match &conv.bias {
        Some(b) => {
            let [c] = b.dims();
            let b = b.val().reshape([1, c, 1, 1]); // [1, c_out, 1, 1]
            (y - b.clone()) * inv + b
        }
        None => y * inv,
    }
}

impl<B: Backend> Discriminator<B> {
    /// Patch logits; shape comments are for the eye D on 35×55 images.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let act = |t: Tensor<B, 4>| leaky_relu(t, self.leaky_slope);
        let conv = |c: &Conv2d<B>, t: Tensor<B, 4>| {
            if self.spectral_norm {
                conv2d_spectral(c, t)
            } else {
                conv2d(c, t)
            }
        };
        // x: [batch, 1, 35, 55]
        let h = act(conv(&self.conv1, x)); // [batch, 96, 18, 28]
        let h = act(conv(&self.conv2, h)); // [batch, 64, 9, 14]
        let h = self.pool.forward(h); // [batch, 64, 9, 14]
        let h = act(conv(&self.conv3, h)); // [batch, 32, 9, 14]
        let h = act(conv(&self.conv4, h)); // [batch, 32, 9, 14]
        conv(&self.conv_out, h) // [batch, 2, 9, 14]
    }
}

// ---------------------------------------------------------------------------------------------
// Gaze estimator
// ---------------------------------------------------------------------------------------------

/// Gaze CNN: conv3×3 c1 → conv3×3 c2 → conv3×3 c3 → maxpool 3×3 s2 → conv3×3 c4 → conv3×3 c5
/// → maxpool 2×2 s2 → FC `hidden` → FC 3. VALID convolutions; the flatten size is computed
/// from `height × width` (192×5×10 = 9600 for 35×55).
#[derive(Config, Debug, PartialEq)]
pub struct GazeNetConfig {
    /// Image channels.
    #[config(default = 1)]
    pub channels: usize,
    /// Input height (35 for eyes).
    #[config(default = 35)]
    pub height: usize,
    /// Input width (55 for eyes).
    #[config(default = 55)]
    pub width: usize,
    /// Maps of the five convolutions (paper: 32, 32, 64, 80, 192).
    #[config(default = "[32, 32, 64, 80, 192]")]
    pub conv_channels: [usize; 5],
    /// Hidden fully-connected size (paper: 1000).
    #[config(default = 1000)]
    pub hidden: usize,
    /// Outputs of the last layer: 3 for a gaze vector, the class count for a classifier, the
    /// label length for a regressor.
    #[config(default = 3)]
    pub outputs: usize,
    /// SAME instead of VALID padding in the five convolutions (inputs smaller than 19×19).
    #[config(default = false)]
    pub same_padding: bool,
    /// Average-pool the last feature maps to this `[rows, cols]` grid before the FC layers
    /// (large inputs: keeps the first FC layer small); `None` flattens them as they are.
    #[config(default = "None")]
    pub pool_grid: Option<[usize; 2]>,
}

impl GazeNetConfig {
    /// The paper's gaze CNN for 35×55 eyes.
    pub fn eye() -> Self {
        Self::new()
    }

    /// Channel counts and hidden size divided by `divisor` (CPU demos).
    pub fn narrow(divisor: usize) -> Self {
        let d = divisor.max(1);
        let c = Self::new().conv_channels.map(|n| (n / d).max(2));
        Self::new()
            .with_conv_channels(c)
            .with_hidden((1000 / d).max(8))
    }

    /// The paper's net for `channels × height × width` inputs with `outputs` outputs, channels
    /// and hidden size ÷ `divisor`: VALID convolutions from 19×19 up (SAME below, down to 8×8),
    /// and the last feature maps average-pooled to at most 8×8 cells (≤ 64) when larger — on
    /// 35×55 eyes (5×10 cells) this is exactly [`Self::narrow`].
    pub fn for_input(
        channels: usize,
        height: usize,
        width: usize,
        outputs: usize,
        divisor: usize,
    ) -> Self {
        let mut cfg = Self::narrow(divisor)
            .with_channels(channels)
            .with_height(height)
            .with_width(width)
            .with_outputs(outputs);
        if height.min(width) < 19 {
            cfg = cfg.with_same_padding(true);
        }
        if let Some((h, w)) = cfg.conv_grid()
            && h * w > 64
        {
            cfg = cfg.with_pool_grid(Some([h.min(8), w.min(8)]));
        }
        cfg
    }

    /// Spatial size after the convolutions and pools, before any `pool_grid`.
    fn conv_grid(&self) -> Option<(usize, usize)> {
        let shrink = if self.same_padding { 0 } else { 1 };
        let f = |n: usize| -> Option<usize> {
            let n = n.checked_sub(6 * shrink)?; // three 3×3 convs
            let n = n.checked_sub(3)? / 2 + 1; // maxpool 3×3 s2
            let n = n.checked_sub(4 * shrink)?; // two 3×3 convs
            let n = n.checked_sub(2)? / 2 + 1; // maxpool 2×2 s2
            (n > 0).then_some(n)
        };
        Some((f(self.height)?, f(self.width)?))
    }

    /// Spatial size of the features feeding the first FC layer, `(rows, cols)`, or `None` when
    /// the input is too small for the convolutions and pools.
    pub fn feature_grid(&self) -> Option<(usize, usize)> {
        let (h, w) = self.conv_grid()?;
        match self.pool_grid {
            Some([ph, pw]) if ph > 0 && pw > 0 => Some((ph.min(h), pw.min(w))),
            _ => Some((h, w)),
        }
    }

    /// Length of the flattened features feeding the first FC layer (9600 for the paper's net).
    pub fn flatten_size(&self) -> Option<usize> {
        self.feature_grid()
            .map(|(h, w)| h * w * self.conv_channels[4])
    }

    /// Check the sizes (positive, input large enough).
    pub fn validate(&self) -> Result<(), NnError> {
        if self.channels == 0
            || self.hidden == 0
            || self.outputs == 0
            || self.conv_channels.contains(&0)
        {
            return Err(NnError::InvalidConfig(format!(
                "gaze net: sizes must be > 0, got {self:?}"
            )));
        }
        if self.feature_grid().is_none() {
            return Err(NnError::InvalidConfig(format!(
                "gaze net: input {}×{} is too small for its convolutions and pools (min 19×19, or 8×8 with SAME padding)",
                self.height, self.width
            )));
        }
        Ok(())
    }

    /// Build the gaze net with freshly initialised weights. Call [`Self::validate`] first.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<GazeNet<B>, NnError> {
        self.validate()?;
        let flatten = self.flatten_size().unwrap_or(1);
        let [c1, c2, c3, c4, c5] = self.conv_channels;
        let padding = if self.same_padding {
            PaddingConfig2d::Same
        } else {
            PaddingConfig2d::Valid
        };
        let conv = |cin: usize, cout: usize| {
            Conv2dConfig::new([cin, cout], [3, 3])
                .with_padding(padding.clone())
                .init(device)
        };
        let pool_grid = match (self.pool_grid, self.feature_grid()) {
            (Some(_), Some((h, w))) => Some(AdaptiveAvgPool2dConfig::new([h, w]).init()),
            _ => None,
        };
        Ok(GazeNet {
            conv1: conv(self.channels, c1),
            conv2: conv(c1, c2),
            conv3: conv(c2, c3),
            pool1: MaxPool2dConfig::new([3, 3]).with_strides([2, 2]).init(),
            conv4: conv(c3, c4),
            conv5: conv(c4, c5),
            pool2: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            pool_grid,
            fc1: LinearConfig::new(flatten, self.hidden).init(device),
            fc2: LinearConfig::new(self.hidden, self.outputs).init(device),
        })
    }
}

/// The gaze-estimation CNN (see [`GazeNetConfig`]). Output: an unnormalised 3-D gaze vector.
#[derive(Module, Debug)]
pub struct GazeNet<B: Backend> {
    /// conv 3×3 32.
    pub conv1: Conv2d<B>,
    /// conv 3×3 32.
    pub conv2: Conv2d<B>,
    /// conv 3×3 64.
    pub conv3: Conv2d<B>,
    /// maxpool 3×3 s2.
    pub pool1: MaxPool2d,
    /// conv 3×3 80.
    pub conv4: Conv2d<B>,
    /// conv 3×3 192.
    pub conv5: Conv2d<B>,
    /// maxpool 2×2 s2.
    pub pool2: MaxPool2d,
    /// Adaptive average pool to `GazeNetConfig::pool_grid` (large inputs only).
    pub pool_grid: Option<AdaptiveAvgPool2d>,
    /// FC 9600 → 1000.
    pub fc1: Linear<B>,
    /// FC 1000 → 3.
    pub fc2: Linear<B>,
}

impl<B: Backend> GazeNet<B> {
    /// Gaze vectors (not normalised); shape comments are for the paper's net on 35×55.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        // x: [batch, 1, 35, 55]
        let h = relu(conv2d(&self.conv1, x)); // [batch, 32, 33, 53]
        let h = relu(conv2d(&self.conv2, h)); // [batch, 32, 31, 51]
        let h = relu(conv2d(&self.conv3, h)); // [batch, 64, 29, 49]
        let h = self.pool1.forward(h); // [batch, 64, 14, 24]
        let h = relu(conv2d(&self.conv4, h)); // [batch, 80, 12, 22]
        let h = relu(conv2d(&self.conv5, h)); // [batch, 192, 10, 20]
        let h = self.pool2.forward(h); // [batch, 192, 5, 10]
        let h = match &self.pool_grid {
            Some(p) => p.forward(h), // [batch, 192, ≤8, ≤8] (large inputs only)
            None => h,
        };
        let h: Tensor<B, 2> = h.flatten(1, 3); // [batch, 9600]
        let h = relu(self.fc1.forward(h)); // [batch, 1000]
        self.fc2.forward(h) // [batch, outputs]: 3 for gaze
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::backend::{CpuBackend, init_seeded};

    type B = CpuBackend;

    /// σ of known matrices, its gradient `u vᵀ`, and a spectrally normalised D whose every
    /// layer has unit spectral norm whatever its initial weights.
    #[test]
    fn spectral_norm_is_the_largest_singular_value() {
        type Ad = crate::nn::backend::CpuAutodiffBackend;
        let device = Default::default();
        // [[2, 1], [1, 3]] (as a [2, 1, 1, 2] weight): σ = (5 + √5) / 2.
        let w =
            Tensor::<Ad, 4>::from_floats([[[[2.0, 1.0]]], [[[1.0, 3.0]]]], &device).require_grad();
        let sigma = spectral_sigma(w.clone());
        let s = sigma.clone().inner().into_scalar();
        let want = (5.0 + 5f32.sqrt()) / 2.0;
        assert!((s - want).abs() < 1e-3 * want, "σ {s} vs {want}");
        // dσ/dW = u vᵀ with u = v the top eigenvector of this symmetric matrix.
        let grads = sigma.backward();
        let g = w
            .grad(&grads)
            .map(|g| g.into_data().to_vec::<f32>().unwrap_or_default());
        let g = g.unwrap_or_default();
        let (a, b) = (0.5257f32, 0.8507f32); // unit eigenvector of the larger eigenvalue
        for (got, want) in g.iter().zip([a * a, a * b, a * b, b * b]) {
            assert!((got - want).abs() < 2e-3, "grad {g:?}");
        }
        // A diagonal 3 × 4 matrix: σ = its largest entry.
        let mut d = vec![0f32; 12];
        d[0] = 0.5;
        d[5] = -4.0;
        d[10] = 2.0;
        let w = Tensor::<B, 4>::from_data(burn::tensor::TensorData::new(d, [3, 4, 1, 1]), &device);
        let s = spectral_sigma(w).into_scalar();
        assert!((s - 4.0).abs() < 1e-3, "σ {s}");
        // Every layer of a normalised D, scaled up 10×, still maps with gain ≤ 1 + tolerance.
        let dcfg = DiscriminatorConfig::narrow(8).with_spectral_norm(true);
        let disc = init_seeded::<B, _>(&device, 5, || dcfg.init::<B>(&device));
        for conv in [
            &disc.conv1,
            &disc.conv2,
            &disc.conv3,
            &disc.conv4,
            &disc.conv_out,
        ] {
            let w = conv.weight.val() * 10.0;
            let sigma = spectral_sigma(w.clone()).into_scalar();
            let normalised = spectral_sigma(w / sigma).into_scalar();
            assert!((normalised - 1.0).abs() < 1e-2, "σ(W/σ) = {normalised}");
        }
        let x = Tensor::<B, 4>::ones([2, 1, 35, 55], &device);
        assert_eq!(disc.forward(x).dims(), [2, 2, 9, 14]);
    }

    /// A residual refiner pushed past −1 (an eye refined to black) still gets a gradient: the
    /// leaky clamp lets it come back, where a hard clamp left it stuck.
    #[test]
    fn saturated_residual_refiner_still_learns() {
        type Ad = crate::nn::backend::CpuAutodiffBackend;
        let device = Default::default();
        let cfg = RefinerConfig::narrow(4)
            .with_blocks(1)
            .with_residual(true)
            .with_noise_channels(0);
        let r = init_seeded::<Ad, _>(&device, 3, || cfg.init::<Ad>(&device));
        let x = Tensor::<Ad, 4>::full([2, 1, 6, 8], -3.0, &device);
        let y = r.forward(x);
        let values = y.clone().inner().into_data().to_vec::<f32>().unwrap();
        assert!(
            values.iter().all(|v| (*v + 1.02).abs() < 1e-5),
            "{values:?}"
        );
        let grads = y.sum().backward();
        let bias = r.conv_out.bias.as_ref().unwrap().grad(&grads).unwrap();
        let g = bias.into_data().to_vec::<f32>().unwrap();
        // d(Σ y)/d(bias) = 0.01 per output pixel (2 × 6 × 8 = 96 of them).
        assert!((g[0] - 0.96).abs() < 1e-4, "{g:?}");
    }

    /// The noise branch starts as `x + noise_scale · z′` (Δ and the amplitude's convolution
    /// are zero-initialised) with one map z′ per image channel after the input noise, and its
    /// amplitude gets a gradient from a loss that wants less noise.
    #[test]
    fn noise_branch_starts_at_its_scale_and_learns() {
        type Ad = crate::nn::backend::CpuAutodiffBackend;
        let device = Default::default();
        let cfg = RefinerConfig::narrow(4)
            .with_blocks(1)
            .with_residual(true)
            .with_noise_channels(1)
            .with_noise_scale(0.05)
            .with_channels(3);
        cfg.validate().unwrap();
        let r = init_seeded::<Ad, _>(&device, 3, || cfg.init::<Ad>(&device));
        assert_eq!(r.noise_maps(), 4);
        let zs = crate::nn::seeded_noise(1, 4 * 64, 9);
        let z = Tensor::<Ad, 4>::from_data(
            burn::tensor::TensorData::new(zs.clone(), [1, 4, 8, 8]),
            &device,
        );
        let x = Tensor::<Ad, 4>::zeros([1, 3, 8, 8], &device);
        let y = r.forward_noise(x.clone(), Some(z.clone())); // [1, 3, 8, 8]
        let got = y.inner().into_data().to_vec::<f32>().unwrap();
        for (g, w) in got.iter().zip(&zs[64..]) {
            assert!((g - 0.05 * w).abs() < 1e-6, "{g} vs {}", 0.05 * w);
        }
        // Σ y² falls as the amplitude's bias falls: its gradient is positive.
        let grads = r.forward_noise(x, Some(z)).powi_scalar(2).sum().backward();
        let conv = r.noise_out.as_ref().unwrap();
        let g = conv.bias.as_ref().unwrap().grad(&grads).unwrap();
        assert!(
            g.into_data()
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .all(|v| *v > 0.0)
        );
        // Without input noise the branch draws its own maps only.
        let plain = cfg.with_noise_channels(0).init::<Ad>(&device);
        assert_eq!(plain.noise_maps(), 3);
    }

    /// Latent channels are one value per image and map: only pixel (0, 0) of their noise maps
    /// counts, and changing an image's latent changes that image's whole output and no other.
    #[test]
    fn latent_channels_draw_one_value_per_image() {
        let device = Default::default();
        let cfg = RefinerConfig::narrow(4)
            .with_blocks(1)
            .with_noise_channels(1)
            .with_latent_channels(2);
        let r = init_seeded::<B, _>(&device, 3, || cfg.init::<B>(&device));
        assert_eq!(r.noise_maps(), 3);
        let (b, maps, h, w) = (2, 3, 6, 8);
        let zs = crate::nn::seeded_noise(b, maps * h * w, 9);
        let at = |i: usize, m: usize, y: usize, x: usize| ((i * maps + m) * h + y) * w + x;
        let xs = crate::nn::seeded_noise(b, h * w, 8);
        let run = |z: &[f32]| -> Vec<f32> {
            let x = Tensor::<B, 4>::from_data(TensorData::new(xs.clone(), [b, 1, h, w]), &device);
            let z =
                Tensor::<B, 4>::from_data(TensorData::new(z.to_vec(), [b, maps, h, w]), &device);
            r.forward_noise(x, Some(z)).into_data().to_vec().unwrap()
        };
        let base = run(&zs);
        // Latent maps away from pixel (0, 0): ignored.
        let mut off = zs.clone();
        for m in 1..maps {
            off[at(0, m, 3, 5)] += 2.0;
            off[at(1, m, 0, 1)] -= 2.0;
        }
        assert_eq!(run(&off), base);
        // Image 0's first latent at (0, 0): all of image 0 changes, image 1 does not.
        let mut moved = zs.clone();
        moved[at(0, 1, 0, 0)] += 2.0;
        let out = run(&moved);
        let per_image = h * w;
        let changed = (0..per_image)
            .filter(|&i| (out[i] - base[i]).abs() > 1e-6)
            .count();
        assert!(
            changed > per_image * 9 / 10,
            "{changed} of {per_image} changed"
        );
        assert_eq!(out[per_image..], base[per_image..]);
    }

    /// The point-spread function starts as a delta (the residual refiner is still the identity),
    /// and Adam steps toward a Gaussian-blurred copy of the input lower the loss; an even size, or one
    /// without the residual output, is refused.
    #[test]
    fn psf_starts_as_the_identity_and_learns_a_blur() {
        use burn::optim::{AdamConfig, GradientsParams, Optimizer};
        type Ad = crate::nn::backend::CpuAutodiffBackend;
        let device = Default::default();
        let cfg = RefinerConfig::narrow(4)
            .with_blocks(1)
            .with_residual(true)
            .with_psf_kernel(5);
        cfg.validate().unwrap();
        assert!(cfg.clone().with_psf_kernel(4).validate().is_err());
        assert!(cfg.clone().with_residual(false).validate().is_err());
        let mut r = init_seeded::<Ad, _>(&device, 3, || cfg.init::<Ad>(&device));
        let (b, h, w) = (4, 12, 16);
        let xs: Vec<f32> = crate::nn::seeded_noise(b, h * w, 5)
            .iter()
            .map(|v| (0.3 * v).clamp(-0.9, 0.9)) // inside the leaky clamp
            .collect();
        let x = Tensor::<Ad, 4>::from_data(TensorData::new(xs.clone(), [b, 1, h, w]), &device);
        // The target: the input through a camera-like blur.
        let target = crate::nn::loss::gaussian_blur(x.clone(), 0.8).detach(); // [4, 1, 12, 16]
        let y: Vec<f32> = r.forward(x.clone()).inner().into_data().to_vec().unwrap();
        for (g, want) in y.iter().zip(&xs) {
            assert!((g - want).abs() < 1e-6, "{g} vs {want}");
        }
        let loss = |r: &Refiner<Ad>| {
            (r.forward(x.clone()) - target.clone())
                .powi_scalar(2)
                .mean()
        };
        let before = loss(&r).into_scalar();
        let mut optim = AdamConfig::new().init();
        for _ in 0..30 {
            let grads = GradientsParams::from_grads(loss(&r).backward(), &r);
            r = optim.step(0.01, r, grads);
        }
        let after = loss(&r).into_scalar();
        assert!(after < before * 0.5, "loss {before} -> {after}");
        // The filter moved off the delta: it learnt a spread, not only the residual.
        let k: Vec<f32> = r
            .psf
            .as_ref()
            .unwrap()
            .weight
            .val()
            .inner()
            .into_data()
            .to_vec()
            .unwrap();
        assert!(k[12] < 0.99 && k[7] > 0.01, "{k:?}");
    }

    /// The noise branch's K×K filter starts as a delta (the output is the white branch's, map
    /// for map), gets a gradient off its centre, so it can shape the noise's spectrum; an even or
    /// zero size is refused, and without the branch there is no filter.
    #[test]
    fn noise_filter_starts_white_and_learns_a_spectrum() {
        type Ad = crate::nn::backend::CpuAutodiffBackend;
        let device = Default::default();
        let white = RefinerConfig::narrow(4)
            .with_blocks(1)
            .with_residual(true)
            .with_noise_scale(0.05);
        let cfg = white.clone().with_noise_kernel(5);
        cfg.validate().unwrap();
        let r = init_seeded::<Ad, _>(&device, 3, || cfg.init::<Ad>(&device));
        let r0 = init_seeded::<Ad, _>(&device, 3, || white.init::<Ad>(&device));
        assert_eq!(r.noise_maps(), 1);
        let zs = crate::nn::seeded_noise(1, 144, 9);
        let z = Tensor::<Ad, 4>::from_data(TensorData::new(zs, [1, 1, 12, 12]), &device);
        let x = Tensor::<Ad, 4>::zeros([1, 1, 12, 12], &device);
        let y: Vec<f32> = r
            .forward_noise(x.clone(), Some(z.clone()))
            .inner()
            .into_data()
            .to_vec()
            .unwrap();
        let y0: Vec<f32> = r0
            .forward_noise(x.clone(), Some(z.clone()))
            .inner()
            .into_data()
            .to_vec()
            .unwrap();
        for (a, b) in y.iter().zip(&y0) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        // Smoothing the output (a loss on its neighbour differences) pulls weight off the centre.
        let out = r.forward_noise(x, Some(z)); // [1, 1, 12, 12]
        let dx = out.clone().narrow(3, 1, 11) - out.narrow(3, 0, 11);
        let grads = dx.powi_scalar(2).sum().backward();
        let g: Vec<f32> = r
            .noise_filter
            .as_ref()
            .unwrap()
            .weight
            .grad(&grads)
            .unwrap()
            .into_data()
            .to_vec()
            .unwrap();
        assert!(
            g.iter().enumerate().any(|(i, v)| i != 12 && v.abs() > 1e-6),
            "{g:?}"
        );
        assert!(white.clone().with_noise_kernel(4).validate().is_err());
        assert!(white.clone().with_noise_kernel(0).validate().is_err());
        let off = RefinerConfig::narrow(4)
            .with_noise_kernel(5)
            .init::<Ad>(&device);
        assert!(off.noise_filter.is_none());
    }

    /// Reflect padding mirrors without repeating the edge (PyTorch's `ReflectionPad2d`), and a
    /// refiner built with it keeps the image size, for the eye and the hand kernels.
    #[test]
    fn reflect_padding_mirrors_and_keeps_size() {
        let device = Default::default();
        let x = Tensor::<B, 4>::from_floats([[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]]], &device);
        let y: Vec<f32> = reflect_pad(x, 1, 2).into_data().to_vec().unwrap();
        #[rustfmt::skip]
        let want = [
            6.0, 5.0, 4.0, 5.0, 6.0, 5.0, 4.0,
            3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0,
            6.0, 5.0, 4.0, 5.0, 6.0, 5.0, 4.0,
            3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0,
        ];
        assert_eq!(y, want);
        for first in [3, 7] {
            let cfg = RefinerConfig::narrow(4)
                .with_blocks(2)
                .with_first_kernel_size(first)
                .with_reflect_padding(true);
            let r = init_seeded::<B, _>(&device, 1, || cfg.init::<B>(&device));
            let out = r.forward(Tensor::zeros([2, 1, 12, 15], &device));
            assert_eq!(out.dims(), [2, 1, 12, 15]);
        }
    }

    #[test]
    fn refiner_keeps_shape_and_range() {
        let device = Default::default();
        let r = init_seeded::<B, _>(&device, 1, || RefinerConfig::narrow(8).init::<B>(&device));
        let x = Tensor::<B, 4>::zeros([2, 1, 35, 55], &device);
        let y = r.forward(x);
        assert_eq!(y.dims(), [2, 1, 35, 55]);
        let hand = init_seeded::<B, _>(&device, 1, || {
            RefinerConfig::hand().with_width(4).init::<B>(&device)
        });
        assert_eq!(hand.blocks.len(), 10);
        assert_eq!(hand.conv_in.kernel_size, [7, 7]);
        assert_eq!(
            hand.forward(Tensor::zeros([1, 1, 20, 24], &device)).dims(),
            [1, 1, 20, 24]
        );
    }

    #[test]
    fn discriminator_patch_grids() {
        let device = Default::default();
        let cfg = DiscriminatorConfig::narrow(8);
        assert_eq!(cfg.patch_grid(35, 55), (9, 14));
        let d = init_seeded::<B, _>(&device, 1, || cfg.init::<B>(&device));
        assert_eq!(
            d.forward(Tensor::zeros([3, 1, 35, 55], &device)).dims(),
            [3, 2, 9, 14]
        );
        let hand = DiscriminatorConfig::hand();
        assert_eq!(hand.patch_grid(224, 224), (7, 7));
        let dh = init_seeded::<B, _>(&device, 1, || {
            DiscriminatorConfig::hand()
                .with_conv1_channels(4)
                .with_conv2_channels(4)
                .init::<B>(&device)
        });
        assert_eq!(
            dh.forward(Tensor::zeros([1, 1, 224, 224], &device)).dims(),
            [1, 2, 7, 7]
        );
    }

    #[test]
    fn gaze_net_flatten_size() {
        assert_eq!(GazeNetConfig::eye().flatten_size(), Some(9600));
        let cfg = GazeNetConfig::narrow(8).with_height(36).with_width(60);
        let device = Default::default();
        let net = init_seeded::<B, _>(&device, 1, || cfg.init::<B>(&device).ok()).unwrap();
        assert_eq!(
            net.forward(Tensor::zeros([2, 1, 36, 60], &device)).dims(),
            [2, 3]
        );
        assert!(GazeNetConfig::new().with_height(10).validate().is_err());
    }
}
