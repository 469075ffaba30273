//! The device check `simgan bench --sections gpu` runs (and `ci/gpu-check.sh` around it): the
//! same trainer state and the same images on the CPU and on the device under test, compared,
//! and the device's compute-only speed. Generic over the backend, so the CPU build runs it with
//! `--device cpu` (CI's dry run: the code cannot rot where no GPU is).
//!
//! One [`DeviceCheck`] job runs on one backend and returns a [`DeviceRun`]: the refined
//! correctness images (read back as floats), refiner inference images/s per batch size (forward
//! and read-back of a batch already on the device), the losses of R → D → R steps from the
//! checkpoint's weights (the second R step's losses depend on the first steps' gradients, so
//! equal losses there mean equal gradients within the tolerance that carries), and the time of
//! one R + D training iteration.

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};

use super::NnError;
use super::backend::BackendJob;
use super::train::RefinerTrainer;

/// What to run on one backend.
#[derive(Debug, Clone)]
pub struct DeviceCheck {
    /// [`RefinerTrainer::save_checkpoint`] bytes (made on the CPU): every run starts from them.
    pub checkpoint: Vec<u8>,
    /// The correctness images, `[n, c, h, w]` values in `[-1, 1]`.
    pub images: Vec<f32>,
    /// Their shape.
    pub shape: [usize; 4],
    /// Batch sizes for the inference timing.
    pub batches: Vec<usize>,
    /// Timed repetitions per batch size (after one warm-up).
    pub reps: usize,
}

/// One backend's results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceRun {
    /// The refined correctness images, same layout as [`DeviceCheck::images`].
    #[serde(skip)]
    pub refined: Vec<f32>,
    /// `(batch, images/s)` of refiner inference, forward + read-back.
    pub infer_images_per_s: Vec<(usize, f64)>,
    /// Refiner loss (adversarial + self-regularisation) of the first R step.
    pub r1_loss: f32,
    /// Discriminator loss of the D step after it.
    pub d_loss: f32,
    /// Refiner loss of the second R step (after two updates).
    pub r2_loss: f32,
    /// One R step + one D step at the checkpoint's batch size, ms (after the three above).
    pub train_iter_ms: f64,
}

/// The images `[k, c, h, w]` made from the first `k` of `images` (repeated when `k > n`).
fn tile<B: burn::tensor::backend::Backend>(
    c: &DeviceCheck,
    k: usize,
    device: &B::Device,
) -> Tensor<B, 4> {
    let [n, ch, h, w] = c.shape;
    let per = ch * h * w;
    let data: Vec<f32> = (0..k)
        .flat_map(|i| {
            let at = (i % n.max(1)) * per;
            c.images[at..at + per].iter().copied()
        })
        .collect();
    Tensor::from_data(TensorData::new(data, [k, ch, h, w]), device)
}

impl BackendJob for DeviceCheck {
    type Output = Result<DeviceRun, NnError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let [n, _, _, _] = self.shape;
        if n == 0 || self.images.len() != self.shape.iter().product::<usize>() {
            return Err(NnError::Shape {
                context: "device_check",
                message: format!(
                    "{} values for images of shape {:?}",
                    self.images.len(),
                    self.shape
                ),
            });
        }
        let mut trainer = RefinerTrainer::<B>::load_checkpoint(&self.checkpoint, &device)?;
        let batch = trainer.config().batch_size;
        // Correctness: every image through the refiner, 256 at a time.
        let refiner = trainer.refiner().valid();
        let mut refined = Vec::with_capacity(self.images.len());
        for start in (0..n).step_by(256) {
            let k = 256.min(n - start);
            let per = self.images.len() / n;
            let x = Tensor::<B::InnerBackend, 4>::from_data(
                TensorData::new(
                    self.images[start * per..(start + k) * per].to_vec(),
                    [k, self.shape[1], self.shape[2], self.shape[3]],
                ),
                &device,
            );
            refined.extend(refiner.forward(x).into_data().to_vec::<f32>()?); // [k, c, h, w]
        }
        // Inference speed: the batch is on the device; forward, then read back (the sync).
        let mut infer = Vec::new();
        for &b in &self.batches {
            let x = tile::<B::InnerBackend>(&self, b, &device);
            let _ = refiner.forward(x.clone()).into_data();
            let t = Instant::now();
            for _ in 0..self.reps.max(1) {
                let _ = refiner.forward(x.clone()).into_data();
            }
            let s = t.elapsed().as_secs_f64();
            infer.push((b, (b * self.reps.max(1)) as f64 / s));
        }
        // Training: R, D, R from the checkpoint's weights (the losses read back are the sync).
        let synthetic = Tensor::<B, 4>::from_inner(tile::<B::InnerBackend>(&self, batch, &device));
        let real = Tensor::<B, 4>::from_inner(
            tile::<B::InnerBackend>(&self, batch, &device).mul_scalar(0.9),
        );
        let loss = |m: &super::StepMetrics, what: &str, v: Option<f32>| {
            v.ok_or_else(|| NnError::InvalidConfig(format!("step {} has no {what}", m.step)))
        };
        let m = trainer.r_step(synthetic.clone())?;
        let r1_loss = loss(&m, "refiner loss", m.refiner_loss)?;
        let m = trainer.d_step(synthetic.clone(), real.clone())?;
        let d_loss = loss(&m, "discriminator loss", m.d_loss)?;
        let m = trainer.r_step(synthetic.clone())?;
        let r2_loss = loss(&m, "refiner loss", m.refiner_loss)?;
        let t = Instant::now();
        trainer.r_step(synthetic.clone())?;
        trainer.d_step(synthetic, real)?;
        let train_iter_ms = t.elapsed().as_secs_f64() * 1e3;
        Ok(DeviceRun {
            refined,
            infer_images_per_s: infer,
            r1_loss,
            d_loss,
            r2_loss,
            train_iter_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{CpuAutodiffBackend, DeviceSpec, RefinerConfig, TrainConfig, run_on};

    /// Two runs of one check on the CPU agree exactly, refine every image and lower nothing
    /// they should not: the losses are finite and the timings positive.
    #[test]
    fn the_check_runs_on_the_cpu_and_repeats_exactly() {
        let cfg = TrainConfig::new()
            .with_refiner(RefinerConfig::narrow(4))
            .with_batch_size(4)
            .with_history_capacity(16);
        let trainer = RefinerTrainer::<CpuAutodiffBackend>::new(cfg, &Default::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let checkpoint = trainer
            .save_checkpoint(false)
            .unwrap_or_else(|e| panic!("{e}"));
        let shape = [6, 1, 35, 55];
        let images: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|i| (i % 17) as f32 / 8.5 - 1.0)
            .collect();
        let check = DeviceCheck {
            checkpoint,
            images: images.clone(),
            shape,
            batches: vec![2, 8],
            reps: 1,
        };
        let a = run_on(&DeviceSpec::Cpu, check.clone())
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        let b = run_on(&DeviceSpec::Cpu, check)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.refined.len(), images.len());
        assert_eq!(a.refined, b.refined);
        assert_eq!(
            (a.r1_loss, a.d_loss, a.r2_loss),
            (b.r1_loss, b.d_loss, b.r2_loss)
        );
        assert!(a.r1_loss.is_finite() && a.d_loss.is_finite() && a.r2_loss.is_finite());
        assert_eq!(a.infer_images_per_s.len(), 2);
        assert!(a.infer_images_per_s.iter().all(|(_, v)| *v > 0.0));
        assert!(a.train_iter_ms > 0.0);
    }
}
