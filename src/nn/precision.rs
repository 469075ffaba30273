//! Precision: a network's weights and its input cast to f16 or bf16 at run time (burn's tensors
//! carry their dtype; every backend here dispatches on it), the output cast back to f32. f32 is
//! the default and the reference; what the narrower types cost is measured against it
//! (`simgan bench --sections gpu`: max |Δ| of the refined images, the share of identical 8-bit
//! pixels, the losses of R → D → R steps from the same weights).
//!
//! Inference casts the module ([`cast_module`]). Training is mixed precision: each step runs
//! through a cast copy of the networks, whose gradients flow back through the casts to the f32
//! weights, so the optimiser state and the losses stay f32 (no loss scaling: bf16 has f32's
//! range; f16 may underflow small gradients).
//!
//! On the CPU backend (burn-flex) f16/bf16 are correct but slower than f32 (no half-precision
//! kernels of ours; burn's generic convolution instead of ours): they are there to measure the
//! accuracy cost anywhere. On CUDA they are what tensor cores run at full rate.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor};

/// The float type a network runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    F32,
    F16,
    BF16,
}

impl Precision {
    /// The names the `precision` params accept.
    pub const NAMES: &'static [&'static str] = &["f32", "f16", "bf16"];

    /// From a param value (`f32`, `f16`, `bf16`).
    pub fn parse(s: &str) -> Option<Precision> {
        match s {
            "f32" => Some(Precision::F32),
            "f16" => Some(Precision::F16),
            "bf16" => Some(Precision::BF16),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::BF16 => "bf16",
        }
    }

    pub fn dtype(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::F16 => FloatDType::F16,
            Precision::BF16 => FloatDType::BF16,
        }
    }

    /// `x` in this precision (a no-op for f32 tensors at f32).
    pub fn cast<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Precision::F32 => x,
            p => x.cast(p.dtype()),
        }
    }

    /// `x` back in f32 (a no-op at f32).
    pub fn cast_back<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Precision::F32 => x,
            _ => x.cast(FloatDType::F32),
        }
    }
}

/// Casts every float parameter of a module.
struct CastParams(FloatDType);

impl<B: Backend> ModuleMapper<B> for CastParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let dtype = self.0;
        param.map(|t| t.cast(dtype))
    }
}

/// `module` with every float parameter in `precision` (unchanged for f32).
pub fn cast_module<B: Backend, M: Module<B>>(module: M, precision: Precision) -> M {
    match precision {
        Precision::F32 => module,
        p => module.map(&mut CastParams(p.dtype())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{CpuBackend, RefinerConfig, refine_seeded};
    use burn::tensor::TensorData;

    /// A refiner cast to f16 / bf16 runs on the CPU backend, returns f32 images of the same
    /// shape, and stays close to the f32 output (bf16 keeps 8 bits of mantissa, f16 11).
    #[test]
    fn a_cast_refiner_stays_close_to_f32() {
        let device = Default::default();
        let refiner = RefinerConfig::narrow(4)
            .with_blocks(1)
            .with_noise_channels(1)
            .init::<CpuBackend>(&device);
        let x = Tensor::<CpuBackend, 4>::from_data(
            TensorData::new(
                (0..2 * 12 * 16)
                    .map(|i| ((i * 37) % 101) as f32 / 50.5 - 1.0)
                    .collect::<Vec<f32>>(),
                [2, 1, 12, 16],
            ),
            &device,
        );
        // Parameters are initialised lazily, each clone on its own: initialise them once first.
        let _ = refiner.forward(x.clone());
        let out = |p: Precision| {
            let r = cast_module(refiner.clone(), p);
            let y = p.cast_back(refine_seeded(&r, p.cast(x.clone()), 3));
            assert_eq!(y.dims(), [2, 1, 12, 16]);
            y.into_data().to_vec::<f32>().unwrap_or_default()
        };
        let reference = out(Precision::F32);
        for (p, tolerance) in [(Precision::F16, 0.01), (Precision::BF16, 0.05)] {
            let y = out(p);
            assert_eq!(y.len(), reference.len());
            let max = y
                .iter()
                .zip(&reference)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(max < tolerance, "{}: max |Δ| {max}", p.name());
            assert!(max > 0.0, "{} changed nothing: not cast?", p.name());
        }
        assert_eq!(Precision::parse("bf16"), Some(Precision::BF16));
        assert_eq!(Precision::parse("tf32"), None);
    }
}
