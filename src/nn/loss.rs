//! The losses of S+U learning and the discriminator's accuracy.
//!
//! The discriminator outputs, per image, a `[2, h, w]` map of logits, one pair per patch.
//! Class [`CLASS_REFINED`] (= 1) means "refined/synthetic", class [`CLASS_REAL`] (= 0) "real";
//! the paper's D(·), the probability of *refined*, is the softmax of class 1.
//!
//! - D loss `L_D = −log D(x̃) − log(1 − D(y))` = CE(D(x̃), refined) + CE(D(y), real).
//! - Refiner adversarial loss `−log(1 − D(R(x)))` = CE(D(R(x)), real).
//! - Self-regularisation `λ · mean |ψ(R(x)) − ψ(x)|`, ψ = identity or a Gaussian blur
//!   ([`self_regularization_loss`]).
//!
//! Reductions: every cross-entropy is the **mean** over all patches and the batch (the paper
//! sums; a mean keeps the loss scale independent of the patch grid and batch size), and the
//! self-regularisation is the mean over pixels and batch. Note what this does to λ: public code
//! that sums both terms per image (carpedm20: λ = 0.5, 9×14 patches, 35×55 pixels) corresponds
//! to λ ≈ 0.5 · 1925 / 126 ≈ 7.6 in this mean form (hence `TrainConfig`'s default of 7.5).

use burn::tensor::Tensor;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;

use super::NnError;

/// Logit index of "real" in D's output.
pub const CLASS_REAL: usize = 0;
/// Logit index of "refined" (synthetic) in D's output.
pub const CLASS_REFINED: usize = 1;

/// Cross-entropy of a `[batch, 2, h, w]` patch-logit map against one target class for every
/// patch, averaged over patches and batch. Returns a one-element tensor.
pub fn patch_cross_entropy<B: Backend>(logits: Tensor<B, 4>, class: usize) -> Tensor<B, 1> {
    let logp = log_softmax(logits, 1); // [batch, 2, h, w]
    logp.narrow(1, class, 1).mean().neg() // [1]
}

/// The refiner's local adversarial loss: every patch of D(R(x)) should look real.
pub fn refiner_adversarial_loss<B: Backend>(d_logits_refined: Tensor<B, 4>) -> Tensor<B, 1> {
    patch_cross_entropy(d_logits_refined, CLASS_REAL)
}

/// Self-regularisation `λ · mean |ψ(R(x)) − ψ(x)|`: ψ = identity (the paper's v1) when
/// `blur_sigma` is 0, else ψ = a Gaussian blur of σ = `blur_sigma` pixels ([`gaussian_blur`]).
///
/// With ψ = identity every pixel of sensor noise or camera blur the refiner adds costs its full
/// L1, so a refiner learns the global tone (cheap per pixel, large for D) and little of the
/// texture. A blurred ψ (the paper allows any feature transform ψ) constrains what a label
/// depends on, the image's content at the scale of a few pixels, and leaves zero-mean
/// high-frequency changes (noise, blur, grain) nearly free: i.i.d. noise is attenuated by
/// ≈ 1 / (2√π σ) under a σ-px blur. ψ is linear, so this is `λ · mean |G_σ ∗ (R(x) − x)|`.
pub fn self_regularization_loss<B: Backend>(
    refined: Tensor<B, 4>,
    synthetic: Tensor<B, 4>,
    lambda: f64,
    blur_sigma: f64,
) -> Tensor<B, 1> {
    let diff = refined - synthetic; // [b, c, h, w]
    let diff = if blur_sigma > 0.0 {
        gaussian_blur(diff, blur_sigma) // [b, c, h, w]
    } else {
        diff
    };
    diff.abs().mean().mul_scalar(lambda) // [1]
}

/// Taps of a normalised 1-D Gaussian of σ `sigma`, radius ⌈3σ⌉.
fn gaussian_taps(sigma: f64) -> Vec<f64> {
    let r = (3.0 * sigma).ceil() as i64;
    let w: Vec<f64> = (-r..=r)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f64 = w.iter().sum();
    w.into_iter().map(|v| v / sum).collect()
}

/// Separable Gaussian blur of σ `sigma` px over the last two axes, normalised at the borders
/// (each output is the weighted mean of the pixels its kernel covers inside the image, so a
/// constant image stays constant). Differentiable; built from slices, so it runs on any backend.
pub fn gaussian_blur<B: Backend>(x: Tensor<B, 4>, sigma: f64) -> Tensor<B, 4> {
    let taps = gaussian_taps(sigma);
    let [b, c, h, w] = x.dims();
    let ones = Tensor::<B, 4>::ones([1, 1, h, w], &x.device()); // [1, 1, h, w]
    let blur = |t: Tensor<B, 4>| blur_axis(blur_axis(t, 2, &taps), 3, &taps);
    let norm = blur(ones); // [1, 1, h, w]
    blur(x).div(norm.expand([b, c, h, w])) // [b, c, h, w]
}

/// One 1-D pass of `taps` along `axis` with zero padding.
fn blur_axis<B: Backend>(x: Tensor<B, 4>, axis: usize, taps: &[f64]) -> Tensor<B, 4> {
    let r = taps.len() / 2;
    let dims = x.dims();
    let n = dims[axis];
    let mut pad_dims = dims;
    pad_dims[axis] = r;
    let zeros = Tensor::<B, 4>::zeros(pad_dims, &x.device());
    let padded = Tensor::cat(vec![zeros.clone(), x, zeros], axis); // n + 2r along axis
    taps.iter()
        .enumerate()
        .map(|(k, &t)| padded.clone().narrow(axis, k, n).mul_scalar(t))
        .reduce(|a, b| a + b)
        .unwrap_or_else(|| padded.narrow(axis, r, n)) // no taps: unreachable for sigma > 0
}

/// The discriminator loss on refined and real batches: CE(refined → refined) + CE(real → real).
pub fn discriminator_loss<B: Backend>(
    d_logits_refined: Tensor<B, 4>,
    d_logits_real: Tensor<B, 4>,
) -> Tensor<B, 1> {
    patch_cross_entropy(d_logits_refined, CLASS_REFINED)
        + patch_cross_entropy(d_logits_real, CLASS_REAL)
}

/// Fraction of patches of a `[batch, 2, h, w]` logit map classified as `class` (argmax; a tie
/// counts as wrong). Reads the map back to the host.
pub fn patch_accuracy<B: Backend>(logits: Tensor<B, 4>, class: usize) -> Result<f32, NnError> {
    let [_, c, _, _] = logits.dims();
    if c != 2 || class > 1 {
        return Err(NnError::Shape {
            context: "patch_accuracy",
            message: format!(
                "expected 2 logit channels and class 0/1, got {c} channels, class {class}"
            ),
        });
    }
    let target = logits.clone().narrow(1, class, 1); // [batch, 1, h, w]
    let other = logits.narrow(1, 1 - class, 1); // [batch, 1, h, w]
    let correct: Vec<f32> = target
        .greater(other)
        .float()
        .into_data()
        .convert::<f32>()
        .to_vec()?;
    if correct.is_empty() {
        return Ok(0.0);
    }
    Ok(correct.iter().sum::<f32>() / correct.len() as f32)
}

/// A one-element loss tensor as `f32` (a host sync).
pub fn scalar<B: Backend>(t: Tensor<B, 1>) -> Result<f32, NnError> {
    let v = t.into_data().convert::<f32>().to_vec::<f32>()?;
    v.first().copied().ok_or(NnError::Shape {
        context: "scalar",
        message: "empty tensor".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::backend::CpuBackend;
    use burn::tensor::TensorData;

    type B = CpuBackend;

    fn logits(real: f32, refined: f32) -> Tensor<B, 4> {
        let device = Default::default();
        // two patches per image, one image: channel 0 = real logit, channel 1 = refined logit
        Tensor::<B, 1>::from_floats([real, real, refined, refined], &device).reshape([1, 2, 1, 2])
    }

    #[test]
    fn cross_entropy_matches_formula() {
        let l = logits(0.0, 0.0);
        let ce = scalar(patch_cross_entropy(l, CLASS_REAL)).unwrap();
        assert!((ce - std::f32::consts::LN_2).abs() < 1e-6);
        // confident "refined": CE for refined small, for real large
        let l = logits(-5.0, 5.0);
        assert!(scalar(patch_cross_entropy(l.clone(), CLASS_REFINED)).unwrap() < 1e-3);
        assert!(scalar(patch_cross_entropy(l.clone(), CLASS_REAL)).unwrap() > 9.0);
        assert_eq!(patch_accuracy(l.clone(), CLASS_REFINED).unwrap(), 1.0);
        assert_eq!(patch_accuracy(l, CLASS_REAL).unwrap(), 0.0);
    }

    #[test]
    fn self_reg_is_lambda_mean_abs() {
        let device = Default::default();
        let a = Tensor::<B, 4>::from_floats([[[[1.0, -1.0], [0.5, 0.0]]]], &device);
        let b = Tensor::<B, 4>::zeros([1, 1, 2, 2], &device);
        let r = scalar(self_regularization_loss(a, b, 2.0, 0.0)).unwrap();
        assert!((r - 2.0 * 2.5 / 4.0).abs() < 1e-6);
    }

    #[test]
    fn blurred_self_reg_keeps_offsets_and_forgives_noise() {
        let device = Default::default();
        let (h, w) = (20, 24);
        let zero = Tensor::<B, 4>::zeros([2, 1, h, w], &device);
        // A constant offset costs the same through the blur (borders normalised).
        let offset = zero.clone().add_scalar(0.3);
        let plain = scalar(self_regularization_loss(
            offset.clone(),
            zero.clone(),
            1.0,
            0.0,
        ))
        .unwrap();
        let blurred = scalar(self_regularization_loss(offset, zero.clone(), 1.0, 1.5)).unwrap();
        assert!(
            (plain - 0.3).abs() < 1e-5 && (blurred - 0.3).abs() < 1e-4,
            "{plain} {blurred}"
        );
        // A ±0.3 checkerboard (the highest frequency) costs 0.3 per pixel plainly, ~0 blurred.
        let board: Vec<f32> = (0..2 * h * w)
            .map(|i| {
                if (i % w + (i / w) % h) % 2 == 0 {
                    0.3
                } else {
                    -0.3
                }
            })
            .collect();
        let board = Tensor::<B, 4>::from_data(TensorData::new(board, [2, 1, h, w]), &device);
        let plain = scalar(self_regularization_loss(
            board.clone(),
            zero.clone(),
            1.0,
            0.0,
        ))
        .unwrap();
        let blurred = scalar(self_regularization_loss(board, zero, 1.0, 1.5)).unwrap();
        assert!((plain - 0.3).abs() < 1e-5, "{plain}");
        assert!(
            blurred < 0.02,
            "a checkerboard through a 1.5 px blur costs {blurred}"
        );
    }
}
