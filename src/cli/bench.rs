//! `simgan bench`: the benchmark figures (see `crate::bench`), as JSON on stdout.

use std::path::PathBuf;

use clap::Args;

use crate::bench::{self, BenchOptions};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Sections: train, refine, generate, ingest, runner, demo, scale, verify, listing, hands,
    /// host, gpu (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "generate,runner,refine,train"
    )]
    sections: Vec<String>,
    /// Refiner width for train/refine (64 = the paper's eye refiner).
    #[arg(long, default_value_t = 64)]
    width: usize,
    /// Timed training iterations.
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// Rows for the refine and scale sections.
    #[arg(long, default_value_t = 10_000)]
    refine_rows: usize,
    /// Python with torch for the PyTorch baseline.
    #[arg(long)]
    torch_python: Option<String>,
    /// Python with PIL + pyarrow for the ingest baseline.
    #[arg(long)]
    python: Option<String>,
    /// UnityEyes fixtures for the ingest section.
    #[arg(long, default_value_t = 500)]
    ingest_files: usize,
    /// Also measure commit overhead on this root (e.g. s3://bucket/bench).
    #[arg(long)]
    remote_root: Option<String>,
    /// Seeds for the demo section (one full run of the demo pipeline each).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    seeds: Vec<u64>,
    /// Pipeline for the demo section.
    #[arg(long, default_value = "pipelines/eye-gaze-demo.toml")]
    demo_pipeline: PathBuf,
    /// Raw files for the listing section (local disk).
    #[arg(long, default_value_t = 100_000)]
    listing_files: usize,
    /// Raw objects for the listing section on --remote-root.
    #[arg(long, default_value_t = 10_000)]
    listing_remote_files: usize,
    /// Scratch folder (deleted first).
    #[arg(long, default_value = "/tmp/simgan-bench")]
    scratch: PathBuf,
    /// Device under test for the gpu section ("cuda:0"; "cpu" is its dry run).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Inference batch sizes for the gpu section.
    #[arg(long, value_delimiter = ',', default_value = "256,1024,4096")]
    batches: Vec<usize>,
    /// Images refined on the CPU and on the device and compared (gpu section).
    #[arg(long, default_value_t = 1024)]
    check_images: usize,
    /// Batch of the gpu section's training iteration.
    #[arg(long, default_value_t = 512)]
    train_batch: usize,
    /// Float types the gpu section refines in (f32 always; each other one is compared with the
    /// CPU's f32 and timed).
    #[arg(long, value_delimiter = ',', default_value = "f32,bf16,f16")]
    precisions: Vec<String>,
}

/// `simgan probe`: whether each device can run here, one line each.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Devices ("cpu", "cuda", "cuda:N").
    #[arg(default_value = "cpu")]
    devices: Vec<String>,
}

/// Print each device's line; fail on the first that cannot run, naming what is missing.
pub fn probe(a: ProbeArgs) -> anyhow::Result<()> {
    for d in &a.devices {
        let spec: crate::nn::DeviceSpec = d.parse()?;
        println!("{}", crate::nn::probe(&spec)?);
    }
    Ok(())
}

pub fn bench(a: BenchArgs, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let precisions = a
        .precisions
        .iter()
        .map(|p| {
            crate::nn::Precision::parse(p).ok_or_else(|| {
                anyhow::anyhow!(
                    "--precisions: `{p}` is not one of {}",
                    crate::nn::Precision::NAMES.join(", ")
                )
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let o = BenchOptions {
        sections: a.sections,
        width: a.width,
        iters: a.iters,
        refine_rows: a.refine_rows,
        torch_python: a.torch_python,
        python: a.python,
        ingest_files: a.ingest_files,
        remote_root: a.remote_root,
        seeds: a.seeds,
        demo_pipeline: a.demo_pipeline,
        listing_files: a.listing_files,
        listing_remote_files: a.listing_remote_files,
        scratch: a.scratch,
        device: a.device,
        batches: a.batches,
        check_images: a.check_images,
        train_batch: a.train_batch,
        precisions,
    };
    let report = bench::run(&o, rt.handle())?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
