//! CPU timing of the eye refiner on burn-flex, for the CLI's `bench` command: milliseconds per
//! training iteration (one refiner step + one discriminator step) and refiner inference
//! throughput. Inputs are the toy formula images (the cost does not depend on content).

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::{Tensor, TensorData};

use super::NnError;
use super::backend::{CpuAutodiffBackend, CpuBackend, CpuDevice};
use super::model::{DiscriminatorConfig, RefinerConfig};
use super::train::{RefinerTrainer, TrainConfig};

/// What [`bench_cpu`] measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BenchReport {
    /// Backend name.
    pub backend: String,
    /// Rayon worker threads available.
    pub threads: usize,
    /// Refiner width (64 = the paper's eye refiner).
    pub width: usize,
    /// Training batch size.
    pub batch: usize,
    /// Timed iterations (after one warm-up).
    pub iters: usize,
    /// Mean ms per refiner step (forward, backward, Adam).
    pub r_step_ms: f64,
    /// Mean ms per discriminator step (refine on the inner backend, D forward/backward, Adam).
    pub d_step_ms: f64,
    /// `r_step_ms + d_step_ms`: one full iteration (K_g = K_d = 1).
    pub train_iter_ms: f64,
    /// Inference batch size (4 × `batch`).
    pub infer_batch: usize,
    /// Refined images per second at `infer_batch`.
    pub infer_images_per_s: f64,
}

fn toy_batch(n: usize, h: usize, w: usize, device: &CpuDevice) -> Tensor<CpuBackend, 4> {
    let data: Vec<f32> = (0..n * h * w)
        .map(|i| ((i % 97) as f32 / 48.5) - 1.0)
        .collect();
    Tensor::from_data(TensorData::new(data, [n, 1, h, w]), device)
}

/// Time the eye refiner of `width` maps (and the paper's eye discriminator) on 35×55 images:
/// `iters` training iterations at `batch` and `iters` inference batches of `4 × batch`.
pub fn bench_cpu(width: usize, batch: usize, iters: usize) -> Result<BenchReport, NnError> {
    let device = Default::default();
    let (h, w) = (35, 55);
    let batch = batch.max(2);
    let iters = iters.max(1);
    let cfg = TrainConfig::new()
        .with_refiner(RefinerConfig::narrow(width))
        .with_discriminator(DiscriminatorConfig::eye())
        .with_batch_size(batch)
        .with_history_capacity(batch * 4);
    let mut trainer = RefinerTrainer::<CpuAutodiffBackend>::new(cfg, &device)?;
    let synth = Tensor::<CpuAutodiffBackend, 4>::from_inner(toy_batch(batch, h, w, &device));
    let real = Tensor::<CpuAutodiffBackend, 4>::from_inner(
        toy_batch(batch, h, w, &device).mul_scalar(0.9),
    );

    trainer.r_step(synth.clone())?;
    trainer.d_step(synth.clone(), real.clone())?;
    let (mut r_ms, mut d_ms) = (0.0, 0.0);
    for _ in 0..iters {
        let t0 = Instant::now();
        trainer.r_step(synth.clone())?; // syncs: reads the losses back
        r_ms += t0.elapsed().as_secs_f64() * 1e3;
        let t0 = Instant::now();
        trainer.d_step(synth.clone(), real.clone())?;
        d_ms += t0.elapsed().as_secs_f64() * 1e3;
    }

    let refiner = trainer.refiner().valid();
    let infer_batch = 4 * batch;
    let x = toy_batch(infer_batch, h, w, &device);
    let _ = refiner.forward(x.clone()).into_data();
    let t0 = Instant::now();
    for _ in 0..iters {
        let _ = refiner.forward(x.clone()).into_data();
    }
    let infer_s = t0.elapsed().as_secs_f64();

    Ok(BenchReport {
        backend: "flex (burn 0.21, CPU)".into(),
        threads: rayon::current_num_threads(),
        width,
        batch,
        iters,
        r_step_ms: r_ms / iters as f64,
        d_step_ms: d_ms / iters as f64,
        train_iter_ms: (r_ms + d_ms) / iters as f64,
        infer_batch,
        infer_images_per_s: (infer_batch * iters) as f64 / infer_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_runs_tiny() {
        let r = bench_cpu(4, 2, 1).unwrap();
        assert!(r.train_iter_ms > 0.0 && r.infer_images_per_s > 0.0);
        assert_eq!(r.infer_batch, 8);
    }

    /// The real measurement: `cargo test --lib nn::bench::tests::probe_bench_full_eye -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement probe, run by hand (see its doc comment)"]
    fn probe_bench_full_eye() {
        let r = bench_cpu(64, 64, 3).unwrap();
        eprintln!("{}", serde_json::to_string_pretty(&r).unwrap());
    }

    /// The CPU-demo refiner width (16) at batch 16: `... probe_bench_demo_width -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement probe, run by hand (see its doc comment)"]
    fn probe_bench_demo_width() {
        let r = bench_cpu(16, 16, 5).unwrap();
        eprintln!("{}", serde_json::to_string_pretty(&r).unwrap());
    }
}

#[cfg(test)]
mod probe_conv {
    use super::*;
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;

    /// The refiner's 64→64 3×3 layer at batch 64 on 35×55: burn's forward, burn's forward +
    /// backward, [`crate::nn::conv::conv2d`]'s forward + backward, and each of our kernels.
    /// `cargo test --lib nn::bench::probe_conv -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement probe, run by hand (see its doc comment)"]
    fn probe_conv() {
        let device: CpuDevice = Default::default();
        let (n, c, h, w) = (64, 64, 35, 55);
        let conv = Conv2dConfig::new([c, c], [3, 3])
            .with_padding(PaddingConfig2d::Same)
            .init::<CpuAutodiffBackend>(&device);
        let data: Vec<f32> = (0..n * c * h * w)
            .map(|i| ((i % 97) as f32 / 48.5) - 1.0)
            .collect();
        let x_in: Tensor<CpuBackend, 4> =
            Tensor::from_data(TensorData::new(data, [n, c, h, w]), &device);
        let flops = 2.0 * (n * c * c * 9 * h * w) as f64;
        let inner = conv.valid();
        let _ = inner.forward(x_in.clone()).into_data();
        let t0 = Instant::now();
        for _ in 0..3 {
            let _ = inner.forward(x_in.clone()).into_data();
        }
        let f = t0.elapsed().as_secs_f64() / 3.0;
        eprintln!("fwd: {:.1} ms  {:.1} GFLOP/s", f * 1e3, flops / f / 1e9);
        type Ad = CpuAutodiffBackend;
        let fwd_bwd = |label: &str, forward: &dyn Fn(Tensor<Ad, 4>) -> Tensor<Ad, 4>| {
            for _ in 0..2 {
                let x = Tensor::<Ad, 4>::from_inner(x_in.clone()).require_grad();
                let t0 = Instant::now();
                let g = forward(x.clone()).sum().backward();
                let _ = x.grad(&g).map(|t| t.into_data());
                let _ = conv.weight.grad(&g).map(|t| t.into_data());
                let fb = t0.elapsed().as_secs_f64();
                eprintln!(
                    "{label} fwd+bwd: {:.1} ms  ({:.1} GFLOP/s for 3x fwd flops)",
                    fb * 1e3,
                    3.0 * flops / fb / 1e9
                );
            }
        };
        fwd_bwd("burn", &|x| conv.forward(x));
        fwd_bwd("ours", &|x| crate::nn::conv::conv2d(&conv, x));
        let conv_nb = Conv2dConfig::new([c, c], [3, 3])
            .with_padding(PaddingConfig2d::Same)
            .with_bias(false)
            .init::<CpuAutodiffBackend>(&device);
        fwd_bwd("ours without bias", &|x| {
            crate::nn::conv::conv2d(&conv_nb, x)
        });
        {
            let xs: Vec<f32> = x_in.clone().into_data().into_vec().unwrap_or_default();
            let ws: Vec<f32> = inner
                .weight
                .val()
                .into_data()
                .into_vec()
                .unwrap_or_default();
            for tile in [usize::MAX, crate::nn::conv::TILE_FLOATS] {
                for _ in 0..2 {
                    let (f, bx, bw) =
                        crate::nn::conv::probe::time_kernels(&xs, &ws, [n, c, c, h, w], tile);
                    eprintln!(
                        "ours, tile {tile}: forward {f:.1} ms ({:.1} GFLOP/s)  x grad {bx:.1} ms  \
                         w grad {bw:.1} ms",
                        flops / f / 1e6
                    );
                }
            }
        }
        // split the backward
        let gy: Tensor<CpuBackend, 4> = inner.forward(x_in.clone()).ones_like();
        let wt = inner.weight.val();
        let opts = burn::tensor::ops::ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        use burn::tensor::TensorPrimitive;
        let t0 = Instant::now();
        let gx = <CpuBackend as burn::tensor::ops::ModuleOps<CpuBackend>>::conv2d_x_backward(
            x_in.clone().into_primitive().tensor(),
            wt.clone().into_primitive().tensor(),
            gy.clone().into_primitive().tensor(),
            opts.clone(),
        );
        let _ = Tensor::<CpuBackend, 4>::from_primitive(TensorPrimitive::Float(gx)).into_data();
        eprintln!("x_backward: {:.1} ms", t0.elapsed().as_secs_f64() * 1e3);
        let t0 = Instant::now();
        let gw = <CpuBackend as burn::tensor::ops::ModuleOps<CpuBackend>>::conv2d_weight_backward(
            x_in.clone().into_primitive().tensor(),
            wt.into_primitive().tensor(),
            gy.into_primitive().tensor(),
            opts,
        );
        let _ = Tensor::<CpuBackend, 4>::from_primitive(TensorPrimitive::Float(gw)).into_data();
        eprintln!("w_backward: {:.1} ms", t0.elapsed().as_secs_f64() * 1e3);
    }
}
