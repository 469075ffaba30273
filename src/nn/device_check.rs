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
use super::model::Refiner;
use super::precision::{Precision, cast_module};
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
    /// Float types to refine in besides f32 (the correctness images and the inference timing).
    pub precisions: Vec<Precision>,
}

/// One backend's results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceRun {
    /// The refined correctness images, same layout as [`DeviceCheck::images`].
    #[serde(skip)]
    pub refined: Vec<f32>,
    /// `(batch, images/s)` of refiner inference, forward + read-back.
    pub infer_images_per_s: Vec<(usize, f64)>,
    /// The correctness images refined in each of [`DeviceCheck::precisions`] (read back as f32).
    #[serde(skip)]
    pub refined_at: Vec<(Precision, Vec<f32>)>,
    /// `(precision, batch, images/s)` of refiner inference in each of those precisions.
    pub infer_at: Vec<(&'static str, usize, f64)>,
    /// Refiner loss (adversarial + self-regularisation) of the first R step.
    pub r1_loss: f32,
    /// Discriminator loss of the D step after it.
    pub d_loss: f32,
    /// Refiner loss of the second R step (after two updates).
    pub r2_loss: f32,
    /// One R step + one D step at the checkpoint's batch size, ms (after the three above).
    pub train_iter_ms: f64,
    /// `(precision, [R, D, R] losses, iteration ms)`: the same steps from the same weights in
    /// mixed precision, for each of [`DeviceCheck::precisions`].
    pub losses_at: Vec<(&'static str, [f32; 3], f64)>,
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

impl DeviceCheck {
    /// Every correctness image through `refiner` (already in `p`), 256 at a time, as f32.
    fn refine_all<B: burn::tensor::backend::Backend>(
        &self,
        refiner: &Refiner<B>,
        p: Precision,
        device: &B::Device,
    ) -> Result<Vec<f32>, NnError> {
        let n = self.shape[0];
        let per = self.images.len() / n.max(1);
        let mut refined = Vec::with_capacity(self.images.len());
        for start in (0..n).step_by(256) {
            let k = 256.min(n - start);
            let x = Tensor::<B, 4>::from_data(
                TensorData::new(
                    self.images[start * per..(start + k) * per].to_vec(),
                    [k, self.shape[1], self.shape[2], self.shape[3]],
                ),
                device,
            ); // [k, c, h, w]
            let y = p.cast_back(refiner.forward(p.cast(x))); // [k, c, h, w]
            refined.extend(y.into_data().to_vec::<f32>()?);
        }
        Ok(refined)
    }

    /// `(precision, batch, images/s)` of inference at each batch size: the batch is on the
    /// device; forward, then read back (the sync).
    fn infer<B: burn::tensor::backend::Backend>(
        &self,
        refiner: &Refiner<B>,
        p: Precision,
        device: &B::Device,
    ) -> Vec<(&'static str, usize, f64)> {
        let reps = self.reps.max(1);
        self.batches
            .iter()
            .map(|&b| {
                let x = p.cast(tile::<B>(self, b, device)); // [b, c, h, w]
                let _ = refiner.forward(x.clone()).into_data();
                let t = Instant::now();
                for _ in 0..reps {
                    let _ = refiner.forward(x.clone()).into_data();
                }
                (p.name(), b, (b * reps) as f64 / t.elapsed().as_secs_f64())
            })
            .collect()
    }
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
        // Correctness: every image through the refiner, 256 at a time; speed at each batch.
        let refiner = trainer.refiner().valid();
        let refined = self.refine_all(&refiner, Precision::F32, &device)?;
        let infer = self
            .infer(&refiner, Precision::F32, &device)
            .into_iter()
            .map(|(_, b, r)| (b, r))
            .collect();
        let (mut refined_at, mut infer_at) = (Vec::new(), Vec::new());
        for &p in self.precisions.iter().filter(|&&p| p != Precision::F32) {
            let cast = cast_module(refiner.clone(), p);
            refined_at.push((p, self.refine_all(&cast, p, &device)?));
            infer_at.extend(self.infer(&cast, p, &device));
        }
        // Training: R, D, R from the checkpoint's weights (the losses read back are the sync).
        let synthetic = Tensor::<B, 4>::from_inner(tile::<B::InnerBackend>(&self, batch, &device));
        let real = Tensor::<B, 4>::from_inner(
            tile::<B::InnerBackend>(&self, batch, &device).mul_scalar(0.9),
        );
        let loss = |m: &super::StepMetrics, what: &str, v: Option<f32>| {
            v.ok_or_else(|| NnError::InvalidConfig(format!("step {} has no {what}", m.step)))
        };
        let rdr = |t: &mut RefinerTrainer<B>| -> Result<[f32; 3], NnError> {
            let m = t.r_step(synthetic.clone())?;
            let r1 = loss(&m, "refiner loss", m.refiner_loss)?;
            let m = t.d_step(synthetic.clone(), real.clone())?;
            let d = loss(&m, "discriminator loss", m.d_loss)?;
            let m = t.r_step(synthetic.clone())?;
            Ok([r1, d, loss(&m, "refiner loss", m.refiner_loss)?])
        };
        let [r1_loss, d_loss, r2_loss] = rdr(&mut trainer)?;
        let t = Instant::now();
        trainer.r_step(synthetic.clone())?;
        trainer.d_step(synthetic.clone(), real.clone())?;
        let train_iter_ms = t.elapsed().as_secs_f64() * 1e3;
        // The same steps from the same weights in mixed precision, and one iteration's time.
        let mut losses_at = Vec::new();
        for &p in self.precisions.iter().filter(|&&p| p != Precision::F32) {
            let mut t = RefinerTrainer::<B>::load_checkpoint(&self.checkpoint, &device)?;
            t.set_precision(p);
            let losses = rdr(&mut t)?;
            let started = Instant::now();
            t.r_step(synthetic.clone())?;
            t.d_step(synthetic.clone(), real.clone())?;
            losses_at.push((p.name(), losses, started.elapsed().as_secs_f64() * 1e3));
        }
        Ok(DeviceRun {
            refined,
            infer_images_per_s: infer,
            refined_at,
            infer_at,
            r1_loss,
            d_loss,
            r2_loss,
            train_iter_ms,
            losses_at,
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
            precisions: vec![Precision::BF16],
        };
        let a = run_on(&DeviceSpec::Cpu, check.clone())
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        let b = run_on(&DeviceSpec::Cpu, check)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.refined.len(), images.len());
        assert_eq!(a.refined, b.refined);
        // bf16 refines the same images, close to f32 but not equal, and is timed per batch.
        let [(p, low)] = a.refined_at.as_slice() else {
            panic!("one extra precision, got {}", a.refined_at.len());
        };
        assert_eq!((*p, low.len()), (Precision::BF16, images.len()));
        let max = low
            .iter()
            .zip(&a.refined)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(max > 0.0 && max < 0.1, "bf16 vs f32: max |Δ| {max}");
        assert_eq!(
            a.infer_at.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
            vec![("bf16", 2), ("bf16", 8)]
        );
        // Mixed-precision R → D → R from the same weights: losses within a few % of f32's.
        let [(name, losses, ms)] = a.losses_at.as_slice() else {
            panic!("one mixed-precision run, got {}", a.losses_at.len());
        };
        assert_eq!(*name, "bf16");
        for (low, full) in losses.iter().zip([a.r1_loss, a.d_loss, a.r2_loss]) {
            assert!(
                (low - full).abs() <= 0.05 * full.abs(),
                "bf16 {losses:?} vs f32 {:?}",
                [a.r1_loss, a.d_loss, a.r2_loss]
            );
        }
        assert!(*ms > 0.0);
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
