//! `simgan bench`: the figures the notes report, measured side by side in one process so they can
//! be stated as ratios on a shared, noisy machine. Every section runs real stages on a temporary
//! root (or the S3 root given) — nothing here is used by the pipeline itself.
//!
//! Sections: `train` (burn refiner training iteration and inference vs PyTorch), `refine`
//! (Parquet → Parquet end to end vs compute only), `generate` (images/s per core), `ingest`
//! (UnityEyes 640×480 jpg+json vs a PIL + pyarrow script), `runner` (no-op rerun of a 200-shard
//! pipeline, commit overhead per shard), `verify` (shard reads and `query` with verification on
//! vs off, and `simgan verify`'s hashing rate), `listing` (the source-listing fingerprint of
//! many raw files, local and on the remote root), `hands` (the procedural hand's frames/s, the
//! hand refiner's inference and the stacked hourglass's training step at 64 and 224 px), `host`
//! (`refine` with the identity refiner: the pipeline's own CPU-µs per image, and each host step
//! alone), `gpu` (the device check `ci/gpu-check.sh` runs: CPU vs device, images/s per batch,
//! refine on one and two lanes, one training iteration).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::pipeline::Pipeline;
use crate::runner::{self, RunOptions};
use crate::storage::Root;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Sections to run (see the module docs).
    pub sections: Vec<String>,
    /// Refiner width for `train` and `refine` (64 = paper).
    pub width: usize,
    /// Timed training iterations.
    pub iters: usize,
    /// Rows refined end to end.
    pub refine_rows: usize,
    /// Python with torch, for the PyTorch baseline (skipped if `None`).
    pub torch_python: Option<String>,
    /// Python with PIL + pyarrow, for the ingest baseline (skipped if `None`).
    pub python: Option<String>,
    /// UnityEyes samples for `ingest`.
    pub ingest_files: usize,
    /// Float types `gpu` refines in besides f32 (each compared with the CPU's f32).
    pub precisions: Vec<crate::nn::Precision>,
    /// An extra root (e.g. s3://bucket/bench) for the commit-overhead figure.
    pub remote_root: Option<String>,
    /// Seeds for the `demo` section (one full pipeline run each).
    pub seeds: Vec<u64>,
    /// Pipeline file for the `demo` section.
    pub demo_pipeline: PathBuf,
    /// Raw files for the `listing` section (local disk).
    pub listing_files: usize,
    /// Raw objects for the `listing` section on `remote_root`.
    pub listing_remote_files: usize,
    /// Scratch folder.
    pub scratch: PathBuf,
    /// Device under test for the `gpu` section (`cpu` is its dry run).
    pub device: String,
    /// Inference batch sizes for the `gpu` section.
    pub batches: Vec<usize>,
    /// Images refined on the CPU and on the device, compared, in the `gpu` section.
    pub check_images: usize,
    /// Training batch of the `gpu` section's R + D iteration.
    pub train_batch: usize,
}

/// Median of `reps` timings of `f`, in seconds (each call's result discarded).
fn median_s<T>(reps: usize, mut f: impl FnMut() -> Result<T>) -> Result<f64> {
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        f()?;
        t.push(start.elapsed().as_secs_f64());
    }
    t.sort_by(|a, b| a.total_cmp(b));
    Ok(t[t.len() / 2])
}

fn bench_verify(o: &BenchOptions, rt: &tokio::runtime::Handle) -> Result<Value> {
    let (dir, root) = temp_root(&o.scratch, "verify", rt)?;
    let text = format!(
        "name = \"v\"\n[stages.synthetic]\nkind = \"generate-eyes\"\nparams = {{ domain = \"synthetic\", rows = {}, rows_per_shard = 5000 }}\n",
        o.refine_rows
    );
    run_pipeline(&text, &root)?;
    let committed = crate::manifest::latest(&root, "synthetic")?
        .ok_or_else(|| Error::stage("bench", "no synthetic stage"))?;
    let bytes: u64 = committed.manifest.shards.iter().map(|s| s.bytes).sum();
    let rows = committed.manifest.rows as f64;
    let reps = 5;
    // What every stage reading an input does (refine's prepare, sample::load): fetch + decode.
    let read = |verified: bool| {
        median_s(reps, || {
            for s in &committed.manifest.shards {
                // Unverified: the same direct file read, without the hash.
                let b = match (verified, root.local_path(&s.path)) {
                    (true, _) => crate::shards::fetch(&root, s)?,
                    (false, Some(f)) => {
                        bytes::Bytes::from(std::fs::read(&f).map_err(|source| Error::Io {
                            op: "read",
                            path: f.clone(),
                            source,
                        })?)
                    }
                    (false, None) => root.get_required(&s.path)?,
                };
                crate::shards::read_bytes(b, &s.path, None)?;
            }
            Ok(())
        })
    };
    let (read_on, read_off) = (read(true)?, read(false)?);
    let url = dir.join("synthetic").to_string_lossy().into_owned();
    let sql = "SELECT count(*) AS n, avg(pitch) AS p FROM data";
    let query = |verified: bool| {
        median_s(reps, || {
            let mut ds = crate::dataset::open(&url, rt.clone())?;
            ds.verify = verified;
            crate::query::sql(&ds, sql)
        })
    };
    let (query_on, query_off) = (query(true)?, query(false)?);
    let check = median_s(reps, || crate::verify::version(&root, &committed))?;
    Ok(json!({
        "rows": rows, "shards": committed.manifest.shards.len(), "bytes": bytes,
        "read_decode_rows_per_s": { "verified": rows / read_on, "unverified": rows / read_off, "verified_over_unverified_time": read_on / read_off },
        "query_s": { "sql": sql, "verified": query_on, "unverified_scan_in_place": query_off, "ratio": query_on / query_off },
        "verify_mb_per_s": bytes as f64 / 1e6 / check,
        "peak_rss_mib": peak_rss_mib(),
    }))
}

/// Listing cost of `root` (median of 3): seconds for list + lines + digest.
fn listing_cost(root: &Root) -> Result<(f64, u64)> {
    let mut files = 0;
    let s = median_s(3, || {
        let listed = root.list("")?;
        let (lines, n, b) = crate::manifest::listing_lines(&listed);
        files = n;
        Ok(crate::manifest::SourceListing::of(&lines, n, b))
    })?;
    Ok((s, files))
}

fn bench_listing(o: &BenchOptions, rt: &tokio::runtime::Handle) -> Result<Value> {
    let (dir, root) = temp_root(&o.scratch, "listing", rt)?;
    // Class-folder layout, 1,000 files per folder, each a few bytes (a listing never reads them).
    for i in 0..o.listing_files {
        let sub = dir.join(format!("c{:05}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&sub).map_err(|source| Error::Io {
                op: "create",
                path: sub.clone(),
                source,
            })?;
        }
        let f = sub.join(format!("{i:08}.png"));
        std::fs::write(&f, b"x").map_err(|source| Error::Io {
            op: "write",
            path: f.clone(),
            source,
        })?;
    }
    let (local_s, files) = listing_cost(&root)?;
    let mut v = json!({ "local": { "files": files, "seconds": local_s, "us_per_file": local_s * 1e6 / files.max(1) as f64 } });
    if let Some(r) = &o.remote_root {
        let remote = Root::open(r, rt.clone())?.sub("listing");
        remote.delete_prefix("")?;
        for i in 0..o.listing_remote_files {
            remote.put(&format!("c{:05}/{i:08}.png", i / 1000), &b"x"[..])?;
        }
        let (s, n) = listing_cost(&remote)?;
        v["remote"] = json!({ "root": remote.url(), "files": n, "seconds": s, "us_per_file": s * 1e6 / n.max(1) as f64 });
    }
    Ok(v)
}

fn temp_root(scratch: &Path, name: &str, rt: &tokio::runtime::Handle) -> Result<(PathBuf, Root)> {
    let dir = scratch.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let root = Root::open(&dir.to_string_lossy(), rt.clone())?;
    Ok((dir, root))
}

fn run_pipeline(text: &str, root: &Root) -> Result<(f64, runner::RunReport)> {
    let p = Pipeline::parse(text, "bench.toml", &crate::registry::builtin())?;
    let t = Instant::now();
    let r = runner::run(&p, root, &RunOptions::default())?;
    Ok((t.elapsed().as_secs_f64(), r))
}

fn stage_seconds(r: &runner::RunReport, name: &str) -> f64 {
    r.ran
        .iter()
        .find(|o| o.name == name)
        .map(|o| o.seconds)
        .unwrap_or(f64::NAN)
}

/// Peak resident memory of this process so far, in MiB (Linux `VmHWM`).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn python_json(python: &str, args: &[String]) -> Result<Value> {
    let out = std::process::Command::new(python)
        .args(args)
        .output()
        .map_err(|source| Error::Io {
            op: "run",
            path: PathBuf::from(python),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::stage(
            "bench",
            format!(
                "{python} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|source| Error::Json {
        path: format!("{python} output"),
        source,
    })
}

fn threads() -> usize {
    rayon::current_num_threads()
}

fn bench_train(o: &BenchOptions) -> Result<Value> {
    let burn = crate::nn::bench_cpu(o.width, 64, o.iters)?;
    let mut v = json!({ "burn": burn });
    if let Some(py) = &o.torch_python {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/torch_refiner.py");
        let args = [
            script.to_string_lossy().into_owned(),
            "--width".into(),
            o.width.to_string(),
            "--iters".into(),
            o.iters.to_string(),
            "--threads".into(),
            threads().to_string(),
        ];
        let torch = python_json(py, &args)?;
        let t_ms = torch["train_iter_ms"].as_f64().unwrap_or(f64::NAN);
        let t_ips = torch["infer_images_per_s"].as_f64().unwrap_or(f64::NAN);
        v["torch"] = torch;
        v["speed_vs_torch"] = json!({ "train": t_ms / burn.train_iter_ms, "inference": burn.infer_images_per_s / t_ips });
    }
    Ok(v)
}

fn bench_refine(o: &BenchOptions, rt: &tokio::runtime::Handle) -> Result<Value> {
    let (_dir, root) = temp_root(&o.scratch, "refine", rt)?;
    let text = format!(
        r#"name = "bench-refine"
[stages.synthetic]
kind = "generate-eyes"
params = {{ domain = "synthetic", rows = {rows}, rows_per_shard = 2500, seed = 1 }}
[stages.real]
kind = "generate-eyes"
params = {{ domain = "real-like", rows = 64, seed = 2 }}
[stages.refiner]
kind = "train-refiner"
inputs = {{ synthetic = "synthetic", real = "real" }}
params = {{ width = {w}, pretrain_r_steps = 1, pretrain_d_steps = 0, steps = 0 }}
[stages.refined]
kind = "refine"
inputs = {{ data = "synthetic", refiner = "refiner" }}
params = {{ batch_size = 256 }}
"#,
        rows = o.refine_rows,
        w = o.width
    );
    let (_, r) = run_pipeline(&text, &root)?;
    let e2e = stage_seconds(&r, "refined");
    // Compute only: the same images, already decoded, through the same refiner.
    let committed = crate::manifest::latest(&root, "synthetic")?
        .ok_or_else(|| Error::stage("bench", "no synthetic stage"))?;
    let refiner = crate::manifest::latest(&root, "refiner")?
        .ok_or_else(|| Error::stage("bench", "no refiner"))?;
    let weights_path = refiner
        .manifest
        .artifacts
        .iter()
        .find(|a| a.path.ends_with("refiner.safetensors"))
        .ok_or_else(|| Error::stage("bench", "no weights"))?;
    let weights = crate::shards::fetch(&root, weights_path)?;
    let images = crate::sample::load(&root, &committed, None)?.images;
    let device = Default::default();
    let (model, _) = crate::nn::load_refiner::<crate::nn::CpuBackend>(&weights, &device)?;
    let t = Instant::now();
    let mut n = 0.0;
    for chunk in images.chunks(256) {
        let range = crate::sample::ValueRange::full(8);
        let x = crate::sample::to_tensor::<crate::nn::CpuBackend>(chunk, range, &device)?;
        n +=
            crate::sample::from_tensor(crate::nn::refine(&model, x), 8, range, chunk)?.len() as f64;
    }
    let compute = t.elapsed().as_secs_f64();
    Ok(json!({
        "rows": o.refine_rows, "width": o.width, "batch": 256,
        "end_to_end_images_per_s": n / e2e, "compute_only_images_per_s": n / compute,
        "io_overhead_fraction": 1.0 - compute / e2e,
        "peak_rss_mib": peak_rss_mib(),
    }))
}

fn bench_generate(o: &BenchOptions, rt: &tokio::runtime::Handle) -> Result<Value> {
    let mut v = json!({ "threads": threads() });
    for domain in ["synthetic", "real-like"] {
        let (_dir, root) = temp_root(&o.scratch, &format!("gen-{domain}"), rt)?;
        let text = format!(
            "name = \"g\"\n[stages.g]\nkind = \"generate-eyes\"\nparams = {{ domain = \"{domain}\", rows = 20000, rows_per_shard = 5000 }}\n"
        );
        let (_, r) = run_pipeline(&text, &root)?;
        let ips = 20000.0 / stage_seconds(&r, "g");
        v[domain] = json!({ "images_per_s": ips, "images_per_s_per_core": ips / threads() as f64 });
    }
    Ok(v)
}

/// Hands: the procedural hand's frames/s, the hand refiner's inference rate and the stacked
/// hourglass's training step, at the demo's size and at the paper's 224×224 (one batch).
fn bench_hands(o: &BenchOptions, rt: &tokio::runtime::Handle) -> Result<Value> {
    use crate::nn::{
        CpuAutodiffBackend, CpuBackend, HourglassConfig, HourglassTrainConfig, HourglassTrainer,
        RefinerConfig, init_seeded,
    };
    use burn::tensor::{Distribution, Tensor};
    let mut v = json!({ "threads": threads() });
    let rows = 20000;
    for domain in ["synthetic", "real-like"] {
        let (_dir, root) = temp_root(&o.scratch, &format!("hands-{domain}"), rt)?;
        let text = format!(
            "name = \"h\"\n[stages.g]\nkind = \"generate-hands\"\nparams = {{ domain = \"{domain}\", rows = {rows}, rows_per_shard = 5000 }}\n"
        );
        let (_, r) = run_pipeline(&text, &root)?;
        let fps = rows as f64 / stage_seconds(&r, "g");
        v["generate"][domain] = json!({ "size": 64, "frames_per_s": fps, "frames_per_s_per_core": fps / threads() as f64 });
    }
    let device = Default::default();
    let nn_err = |e: crate::nn::NnError| Error::stage("bench", e.to_string());
    // Refiner inference: the demo's (train-refiner defaults) at 64 px, the paper's at 224 px.
    for (name, cfg, size, batch) in [
        (
            "demo_64",
            RefinerConfig::narrow(16)
                .with_residual(true)
                .with_noise_channels(1),
            64,
            64,
        ),
        ("paper_224", RefinerConfig::hand(), 224, 8),
    ] {
        let r = init_seeded::<CpuBackend, _>(&device, 1, || cfg.init::<CpuBackend>(&device));
        let x =
            Tensor::<CpuBackend, 4>::random([batch, 1, size, size], Distribution::Default, &device);
        let s = median_s(3, || {
            crate::nn::refine(&r, x.clone())
                .into_data()
                .to_vec::<f32>()
                .map_err(|e| Error::stage("bench", format!("{e:?}")))
        })?;
        v["refiner_inference"][name] =
            json!({ "size": size, "batch": batch, "images_per_s": batch as f64 / s });
    }
    // Hourglass training step: the demo's (16 maps, 64 px, batch 32), and the paper's width at
    // 224 px (one batch of 4).
    for (name, features, size, batch, reps) in
        [("demo_64", 16, 64, 32, 3), ("paper_224", 256, 224, 4, 1)]
    {
        let net = HourglassConfig::new()
            .with_features(features)
            .with_height(size)
            .with_width(size);
        let mut t =
            HourglassTrainer::<CpuAutodiffBackend>::new(HourglassTrainConfig::new(net), &device)
                .map_err(nn_err)?;
        let x = Tensor::<CpuAutodiffBackend, 4>::random(
            [batch, 1, size, size],
            Distribution::Default,
            &device,
        );
        let uv: Vec<f32> = (0..batch * 28).map(|k| (k * 7 % size) as f32).collect();
        t.step(x.clone(), &uv).map_err(nn_err)?;
        let s = median_s(reps, || t.step(x.clone(), &uv).map_err(nn_err))?;
        v["hourglass_step"][name] = json!({ "size": size, "features": features, "stacks": 2, "batch": batch, "ms_per_step": s * 1e3, "images_per_s": batch as f64 / s });
    }
    Ok(v)
}

/// A 640×480 render for the ingest bench: skin tone with low-frequency shading and per-pixel
/// noise (so the JPEG's entropy-coded data is as dense as a textured render's, not a flat
/// fixture's), an eye (sclera, iris, pupil) at the label's margin centre; saved at quality 75.
fn textured_render(
    label: &crate::domains::eyes::unityeyes::UnityEyesLabel,
    (w, h): (u32, u32),
    seed: u64,
) -> image::RgbImage {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n = label.interior_margin.len().max(1) as f32;
    let c = label
        .interior_margin
        .iter()
        .fold([0.0, 0.0], |a, p| [a[0] + p[0] / n, a[1] + p[1] / n]);
    let phase: f32 = rng.random_range(0.0..std::f32::consts::TAU);
    image::RgbImage::from_fn(w, h, |x, y| {
        let (xf, yf) = (x as f32, y as f32);
        let mut v =
            150.0 + 25.0 * (xf / 97.0 + phase).sin() * (yf / 71.0).cos() + 15.0 * yf / h as f32;
        let (dx, dy) = (xf - c[0], yf - c[1]);
        if (dx / 60.0).powi(2) + (dy / 25.0).powi(2) < 1.0 {
            let r2 = dx * dx + dy * dy;
            v = if r2 < 64.0 {
                20.0
            } else if r2 < 400.0 {
                80.0
            } else {
                222.0
            };
        }
        let noise: f32 = rng.random_range(-6.0..6.0);
        let p = |k: f32| (k * (v + noise)).clamp(0.0, 255.0) as u8;
        image::Rgb([p(1.05), p(0.85), p(0.75)])
    })
}

/// UnityEyes ingest: `ingest_files` textured 640×480 renders (+ JSON) through `ingest-unityeyes`
/// (all threads, per core) and through `benches/pil_ingest.py` (PIL + pyarrow, one core); then on
/// one thread, per render, the crop from the decoded crop box only (what the stage does) against
/// the previous path (the whole render decoded to grey by zune-jpeg, cropped, resized by
/// `image`): µs each, and how far the two 55×35 crops differ (the landmarks are the same
/// computation on the same label).
fn bench_ingest(o: &BenchOptions, rt: &tokio::runtime::Handle) -> Result<Value> {
    use crate::domains::eyes::unityeyes::{
        CropMode, crop_eye, crop_eye_jpeg, fixture_json, fixture_label,
    };
    let src = o.scratch.join("unityeyes");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src).map_err(|source| Error::Io {
        op: "create",
        path: src.clone(),
        source,
    })?;
    let mut renders = Vec::with_capacity(o.ingest_files);
    for i in 0..o.ingest_files {
        let f = i as f32 / o.ingest_files as f32;
        let label = fixture_label(
            [300.0 + 40.0 * f, 240.0 - 20.0 * f],
            90.0,
            crate::domains::eyes::from_pitch_yaw(0.2 * f - 0.1, 0.3 - 0.6 * f),
            [0.0, 0.0, 0.0],
        );
        let img = textured_render(&label, (640, 480), i as u64);
        let mut jpg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 75)
            .encode_image(&img)
            .map_err(|source| Error::Image {
                what: format!("bench render {}", i + 1),
                source,
            })?;
        for (path, bytes) in [
            (src.join(format!("{}.jpg", i + 1)), jpg.clone()),
            (
                src.join(format!("{}.json", i + 1)),
                fixture_json(&label, 480).into_bytes(),
            ),
        ] {
            std::fs::write(&path, bytes).map_err(|source| Error::Io {
                op: "write",
                path: path.clone(),
                source,
            })?;
        }
        renders.push((jpg, label));
    }
    let (_dir, root) = temp_root(&o.scratch, "ingest", rt)?;
    let text = format!(
        "name = \"i\"\n[stages.ue]\nkind = \"ingest-unityeyes\"\ninputs = {{ source = \"{}\" }}\n",
        src.display()
    );
    let (_, r) = run_pipeline(&text, &root)?;
    let ours = o.ingest_files as f64 / stage_seconds(&r, "ue");
    let kb = renders.iter().map(|(j, _)| j.len()).sum::<usize>() as f64
        / renders.len().max(1) as f64
        / 1024.0;
    let mut v = json!({ "files": o.ingest_files, "render_kb": kb, "threads": threads(), "simgan_images_per_s": ours, "simgan_images_per_s_per_core": ours / threads() as f64 });
    // One thread: the crop-box decode against the whole-render decode it replaced.
    let mode = CropMode::CARPEDM20;
    let bench_err = |reason: String| Error::Stage {
        stage: "bench ingest".into(),
        reason,
    };
    let image_err = |what: &str| {
        let what = what.to_string();
        move |e: crate::domains::eyes::unityeyes::UnityEyesError| bench_err(format!("{what}: {e}"))
    };
    let n = renders.len().max(1);
    let region = us_per_image(n, || {
        renders
            .iter()
            .map(|(j, l)| crop_eye_jpeg(j, l, mode).map_err(image_err("crop box")))
            .collect::<Result<Vec<_>>>()
    })?;
    // The decode alone (the crop box's grey pixels, before the resize to 55×35).
    let decode_only = us_per_image(n, || {
        renders
            .iter()
            .map(|(j, l)| {
                let b = crate::domains::eyes::unityeyes::crop_box(l, mode)
                    .map_err(image_err("crop box"))?;
                let region = (b.x0.max(0) as u32, b.y0.max(0) as u32, b.w, b.h);
                crate::jpeg::gray_region(j, region, crate::sample::MAX_IMAGE_SIDE)
                    .map_err(|e| bench_err(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    // The path it replaced, as it was: the whole render decoded, cropped, resized by `image`.
    let whole = us_per_image(n, || {
        renders
            .iter()
            .map(|(j, l)| {
                let img = zune_gray(j).map_err(bench_err)?;
                let b = crate::domains::eyes::unityeyes::crop_box(l, mode)
                    .map_err(image_err("whole render"))?;
                let crop = img.crop_imm(b.x0 as u32, b.y0 as u32, b.w, b.h).to_luma8();
                Ok(image::imageops::resize(
                    &crop,
                    crate::domains::eyes::EYE_W,
                    crate::domains::eyes::EYE_H,
                    image::imageops::FilterType::Triangle,
                ))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let (mut max_diff, mut same, mut pixels, mut landmarks_equal) = (0u8, 0usize, 0usize, true);
    for (j, l) in &renders {
        let (a, la) = crop_eye_jpeg(j, l, mode).map_err(image_err("crop box"))?;
        let img = zune_gray(j).map_err(bench_err)?;
        let (b, lb) = crop_eye(&img, l, mode).map_err(image_err("whole render"))?;
        landmarks_equal &= la == lb;
        for (p, q) in a.as_raw().iter().zip(b.as_raw()) {
            max_diff = max_diff.max(p.abs_diff(*q));
            same += usize::from(p == q);
            pixels += 1;
        }
    }
    v["one_thread_us_per_render"] = json!({ "crop_box_decode": region, "of_which_decode": decode_only, "whole_render_decode": whole, "speedup": whole / region });
    v["crop_vs_whole_render"] = json!({ "max_abs_diff": max_diff, "identical_share": same as f64 / pixels.max(1) as f64, "landmarks_equal": landmarks_equal });
    if let Some(py) = &o.python {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/pil_ingest.py");
        let out = o.scratch.join("pil.parquet");
        let res = python_json(
            py,
            &[
                script.to_string_lossy().into_owned(),
                src.to_string_lossy().into_owned(),
                out.to_string_lossy().into_owned(),
            ],
        )?;
        let theirs = res["images_per_s"].as_f64().unwrap_or(f64::NAN);
        v["python_pil_images_per_s_one_core"] = json!(theirs);
        v["speedup_per_core"] = json!(ours / threads() as f64 / theirs);
    }
    Ok(v)
}

/// The whole render decoded to grey by zune-jpeg (luma only): UnityEyes ingest's decoder before
/// it decoded only the crop box.
fn zune_gray(bytes: &[u8]) -> std::result::Result<image::DynamicImage, String> {
    let options = zune_core::options::DecoderOptions::default()
        .jpeg_set_out_colorspace(zune_core::colorspace::ColorSpace::Luma);
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(
        zune_core::bytestream::ZCursor::new(bytes),
        options,
    );
    let pixels = dec.decode().map_err(|e| format!("{e:?}"))?;
    let info = dec.info().ok_or("JPEG without a frame header")?;
    image::GrayImage::from_raw(u32::from(info.width), u32::from(info.height), pixels)
        .map(image::DynamicImage::ImageLuma8)
        .ok_or_else(|| "JPEG decoded to a buffer of the wrong size".to_string())
}

/// Scale proof: `refine_rows` built-in synthetic rows (10,000 per shard) through a minimal
/// refiner (`width` maps, one ResNet block, trained for one step on a separate 256-row set) end
/// to end, so the figure is the pipeline's own per-row cost. Run it once per size, each in its
/// own process, to compare peak memory across sizes.
fn bench_scale(o: &BenchOptions, rt: &tokio::runtime::Handle) -> Result<Value> {
    let (_dir, root) = temp_root(&o.scratch, "scale", rt)?;
    let text = format!(
        r#"name = "bench-scale"
[stages.synthetic]
kind = "generate-eyes"
params = {{ domain = "synthetic", rows = {rows}, rows_per_shard = 10000, seed = 1 }}
[stages.train-synthetic]
kind = "generate-eyes"
params = {{ domain = "synthetic", rows = 256, seed = 3 }}
[stages.real]
kind = "generate-eyes"
params = {{ domain = "real-like", rows = 256, seed = 2 }}
[stages.refiner]
kind = "train-refiner"
inputs = {{ synthetic = "train-synthetic", real = "real" }}
params = {{ width = {w}, blocks = 1, pretrain_r_steps = 1, pretrain_d_steps = 0, steps = 0 }}
[stages.refined]
kind = "refine"
inputs = {{ data = "synthetic", refiner = "refiner" }}
"#,
        rows = o.refine_rows,
        w = o.width
    );
    let (_, r) = run_pipeline(&text, &root)?;
    let refine_s = stage_seconds(&r, "refined");
    let generate_s = stage_seconds(&r, "synthetic");
    let rows = o.refine_rows as f64;
    Ok(json!({
        "rows": o.refine_rows, "width": o.width, "blocks": 1, "rows_per_shard": 10000,
        "refine_s": refine_s, "refine_rows_per_s": rows / refine_s,
        "refine_us_per_row": refine_s / rows * 1e6,
        "generate_s": generate_s, "generate_rows_per_s": rows / generate_s,
        "peak_rss_mib": peak_rss_mib(),
    }))
}

/// CPU seconds (user + system) this process has used so far.
fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one `rusage` into the pointer it is given.
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } == 0;
    if !ok {
        return f64::NAN;
    }
    // SAFETY: initialised by the successful call above.
    let u = unsafe { usage.assume_init() };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    s(u.ru_utime) + s(u.ru_stime)
}

/// Median CPU-µs per image of `f` over `images` (one thread), 3 repetitions.
fn us_per_image<T>(images: usize, f: impl FnMut() -> Result<T>) -> Result<f64> {
    Ok(median_s(3, f)? / images as f64 * 1e6)
}

/// The host side of `refine`, without the model: `refine_rows` built-in 35×55 eyes (10,000 per
/// shard) through `refine` with `identity = true` (every batch still becomes a tensor on the
/// device and comes back), on one lane and on two, with the wall time and the CPU time the
/// process spent (all threads); then each host step alone on one thread, per image.
fn bench_host(o: &BenchOptions, rt: &tokio::runtime::Handle) -> Result<Value> {
    let (_dir, root) = temp_root(&o.scratch, "host", rt)?;
    let base = format!(
        r#"name = "bench-host"
[stages.synthetic]
kind = "generate-eyes"
params = {{ domain = "synthetic", rows = {rows}, rows_per_shard = 10000, seed = 1 }}
[stages.train-synthetic]
kind = "generate-eyes"
params = {{ domain = "synthetic", rows = 64, seed = 3 }}
[stages.real]
kind = "generate-eyes"
params = {{ domain = "real-like", rows = 64, seed = 2 }}
[stages.refiner]
kind = "train-refiner"
inputs = {{ synthetic = "train-synthetic", real = "real" }}
params = {{ width = 4, blocks = 1, pretrain_r_steps = 1, pretrain_d_steps = 0, steps = 0 }}
"#,
        rows = o.refine_rows
    );
    run_pipeline(&base, &root)?;
    let rows = o.refine_rows as f64;
    let mut v = json!({ "rows": o.refine_rows, "rows_per_shard": 10000, "threads": threads() });
    for (name, devices) in [
        ("one_lane", "[\"cpu\"]"),
        ("two_lanes", "[\"cpu\", \"cpu\"]"),
    ] {
        let text = format!(
            "{base}[stages.{name}]\nkind = \"refine\"\ninputs = {{ data = \"synthetic\", refiner = \"refiner\" }}\nparams = {{ identity = true, devices = {devices} }}\n"
        );
        let cpu = cpu_seconds();
        let (_, r) = run_pipeline(&text, &root)?;
        let cpu = cpu_seconds() - cpu;
        let wall = stage_seconds(&r, name);
        v[name] = json!({
            "wall_s": wall, "rows_per_s": rows / wall,
            "cpu_s": cpu, "cpu_us_per_row": cpu / rows * 1e6,
        });
    }
    // Each host step alone, one thread, over the first shard's images.
    let committed = crate::manifest::latest(&root, "synthetic")?
        .ok_or_else(|| Error::stage("bench", "no synthetic stage"))?;
    let shard = committed
        .manifest
        .shards
        .first()
        .ok_or_else(|| Error::stage("bench", "no synthetic shard"))?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| Error::stage("bench", e.to_string()))?;
    let steps = pool.install(|| -> Result<Value> {
        let bytes = crate::shards::fetch(&root, shard)?;
        let n = shard.rows as usize;
        let fetch = us_per_image(n, || crate::shards::fetch(&root, shard))?;
        let decode_parquet = us_per_image(n, || {
            crate::shards::read_bytes(bytes.clone(), &shard.path, None)
        })?;
        let batches = crate::shards::read_bytes(bytes.clone(), &shard.path, None)?;
        let pngs: Vec<Vec<u8>> = batches
            .iter()
            .map(|b| {
                let col = crate::sample::image_bytes(b, &shard.path)?;
                Ok((0..b.num_rows())
                    .map(|i| col.value(i).to_vec())
                    .collect::<Vec<_>>())
            })
            .collect::<Result<Vec<_>>>()?
            .concat();
        let decode = || {
            pngs.iter()
                .map(|p| crate::sample::SampleImage::decode(p, "bench"))
                .collect::<Result<Vec<_>>>()
        };
        let decode_png = us_per_image(n, decode)?;
        let images = decode()?;
        let range = crate::sample::ValueRange::full(8);
        let plane = images.first().map_or(0, |i| (i.width * i.height) as usize);
        let device = Default::default();
        let tensor = || {
            images
                .chunks(256)
                .map(|c| crate::sample::to_tensor::<crate::nn::CpuBackend>(c, range, &device))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(Error::from)
        };
        let to_tensor = us_per_image(n, tensor)?;
        let tensors = tensor()?;
        let from_tensor = us_per_image(n, || {
            tensors
                .iter()
                .zip(images.chunks(256))
                .map(|(t, c)| crate::sample::from_tensor(t.clone(), 8, range, c))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(Error::from)
        })?;
        // A refiner's noise channel (one map per image), as `refine` draws it.
        let noise = us_per_image(n, || Ok(crate::nn::seeded_noise(n, plane, 1)))?;
        let encode_png = us_per_image(n, || {
            images
                .iter()
                .map(|i| i.encode_png("bench"))
                .collect::<Result<Vec<_>>>()
        })?;
        let encoded = images
            .iter()
            .map(|i| i.encode_png("bench"))
            .collect::<Result<Vec<_>>>()?;
        let schema = batches
            .first()
            .map(|b| b.schema())
            .ok_or_else(|| Error::stage("bench", "empty synthetic shard"))?;
        let declared = crate::schema::DeclaredSchema::found("eye_sample", 1, schema);
        let write_parquet = us_per_image(n, || {
            let mut w = crate::shards::ShardWriter::create(&root, "steps/out.parquet", &declared)?;
            let mut at = 0;
            for b in &batches {
                let k = b.num_rows();
                let mine = encoded.get(at..at + k).unwrap_or_default();
                w.write(&crate::sample::with_images(b, mine, "refined")?)?;
                at += k;
            }
            w.finish()
        })?;
        Ok(json!({
            "fetch_verified": fetch, "parquet_decode": decode_parquet, "png_decode": decode_png,
            "to_tensor": to_tensor, "from_tensor": from_tensor, "png_encode": encode_png,
            "noise_channel": noise,
            "rows_to_parquet": write_parquet,
        }))
    })?;
    v["steps_cpu_us_per_image_one_thread"] = steps;
    v["peak_rss_mib"] = json!(peak_rss_mib());
    Ok(v)
}

/// The device check (`ci/gpu-check.sh` runs it; `--device cpu` is its dry run): (a) the probe;
/// (b) one trainer state (the paper's eye refiner at `width`, its discriminator, batch
/// `train_batch`) and `check_images` generated eyes on the CPU and on `device`, compared — max
/// |Δ| of the refined values, share of identical 8-bit pixels, the R → D → R losses; (c) refiner
/// inference images/s at each of `batches` on the device; (d) `refine` end to end on
/// `refine_rows` generated eyes, one lane and two lanes on the device; (f) one R + D iteration
/// at `train_batch`. (e), PyTorch, is the script's: it runs `benches/torch_refiner.py` beside.
fn bench_gpu(o: &BenchOptions, rt: &tokio::runtime::Handle) -> Result<Value> {
    use crate::nn::device_check::DeviceCheck;
    let device: crate::nn::DeviceSpec = o
        .device
        .parse()
        .map_err(|e| Error::stage("bench", format!("--device: {e}")))?;
    let probe = crate::nn::probe(&device)?;
    let mut v = json!({ "device": device.to_string(), "probe": probe, "width": o.width,
        "train_batch": o.train_batch, "check_images": o.check_images });
    // (d) first: it generates the images (b) uses.
    let (_dir, root) = temp_root(&o.scratch, "gpu", rt)?;
    let base = format!(
        r#"name = "bench-gpu"
[stages.synthetic]
kind = "generate-eyes"
params = {{ domain = "synthetic", rows = {rows}, rows_per_shard = 10000, seed = 1 }}
[stages.train-synthetic]
kind = "generate-eyes"
params = {{ domain = "synthetic", rows = 256, seed = 3 }}
[stages.real]
kind = "generate-eyes"
params = {{ domain = "real-like", rows = 256, seed = 2 }}
[stages.refiner]
kind = "train-refiner"
inputs = {{ synthetic = "train-synthetic", real = "real" }}
params = {{ width = {w}, pretrain_r_steps = 1, pretrain_d_steps = 0, steps = 0 }}
"#,
        rows = o.refine_rows.max(o.check_images),
        w = o.width
    );
    let (generate_s, _) = run_pipeline(&base, &root)?;
    v["generate_s"] = json!(generate_s);
    let batch = o.batches.iter().copied().max().unwrap_or(256);
    for (name, lanes) in [("refine_one_lane", 1), ("refine_two_lanes", 2)] {
        let devices = vec![format!("\"{device}\""); lanes].join(", ");
        let text = format!(
            "{base}[stages.{name}]\nkind = \"refine\"\ninputs = {{ data = \"synthetic\", refiner = \"refiner\" }}\nparams = {{ devices = [{devices}], batch_size = {batch} }}\n"
        );
        let cpu = cpu_seconds();
        let (_, r) = run_pipeline(&text, &root)?;
        let cpu = cpu_seconds() - cpu;
        let wall = stage_seconds(&r, name);
        let rows = o.refine_rows.max(o.check_images) as f64;
        v[name] = json!({ "rows": rows, "batch_size": batch, "wall_s": wall,
            "rows_per_s": rows / wall, "cpu_us_per_row": cpu / rows * 1e6 });
    }
    // (b), (c), (f): one checkpoint, the CPU as the reference.
    let committed = crate::manifest::latest(&root, "synthetic")?
        .ok_or_else(|| Error::stage("bench", "no synthetic stage"))?;
    let mut images =
        crate::sample::load_limited(&root, &committed, None, Some(o.check_images))?.images;
    images.truncate(o.check_images);
    let range = crate::sample::ValueRange::full(8);
    let cpu_device = crate::nn::CpuDevice::default();
    let x = crate::sample::to_tensor::<crate::nn::CpuBackend>(&images, range, &cpu_device)?;
    let shape = x.dims();
    let values = x
        .into_data()
        .to_vec::<f32>()
        .map_err(crate::nn::NnError::from)?;
    let cfg = crate::nn::TrainConfig::new()
        .with_refiner(crate::nn::RefinerConfig::narrow(o.width))
        .with_batch_size(o.train_batch)
        .with_history_capacity(o.train_batch * 4);
    let trainer =
        crate::nn::RefinerTrainer::<crate::nn::CpuAutodiffBackend>::new(cfg, &cpu_device)?;
    let check = DeviceCheck {
        checkpoint: trainer.save_checkpoint(false)?,
        images: values,
        shape,
        batches: o.batches.clone(),
        reps: 3,
        precisions: o.precisions.clone(),
    };
    let reference = crate::nn::run_on(
        &crate::nn::DeviceSpec::Cpu,
        DeviceCheck {
            batches: Vec::new(),
            precisions: Vec::new(),
            ..check.clone()
        },
    )??;
    let run = crate::nn::run_on(&device, check)??;
    // Against the CPU's f32 refinement: max |Δ| of the values, identical 8-bit pixels, and the
    // largest 8-bit difference.
    let compare = |refined: &[f32]| {
        let to8 = |t: f32| ((t.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
        let (mut max_abs, mut same8, mut max_levels) = (0f32, 0usize, 0u8);
        for (a, b) in reference.refined.iter().zip(refined) {
            max_abs = max_abs.max((a - b).abs());
            let (p, q) = (to8(*a), to8(*b));
            same8 += usize::from(p == q);
            max_levels = max_levels.max(p.abs_diff(q));
        }
        json!({ "max_abs_diff": max_abs,
            "identical_8bit_share": same8 as f64 / refined.len().max(1) as f64,
            "max_8bit_levels": max_levels })
    };
    let f32_vs_cpu = compare(&run.refined);
    let rel = |a: f32, b: f32| ((a - b).abs() / a.abs().max(1e-12)) as f64;
    v["correctness"] = json!({
        "images": o.check_images, "values": run.refined.len(),
        "max_abs_diff": f32_vs_cpu["max_abs_diff"],
        "identical_8bit_share": f32_vs_cpu["identical_8bit_share"],
        "max_8bit_levels": f32_vs_cpu["max_8bit_levels"],
        "losses_cpu": [reference.r1_loss, reference.d_loss, reference.r2_loss],
        "losses_device": [run.r1_loss, run.d_loss, run.r2_loss],
        "losses_rel_diff": [rel(reference.r1_loss, run.r1_loss), rel(reference.d_loss, run.d_loss), rel(reference.r2_loss, run.r2_loss)],
    });
    v["infer_images_per_s"] = json!(
        run.infer_images_per_s
            .iter()
            .map(|(b, r)| json!({ "batch": b, "images_per_s": r }))
            .collect::<Vec<_>>()
    );
    // Each narrower precision on the device against the CPU's f32, and its inference speed.
    v["precisions"] = json!(
        run.refined_at
            .iter()
            .map(|(p, refined)| {
                let mut c = compare(refined);
                c["precision"] = json!(p.name());
                if let Some((_, l, ms)) = run.losses_at.iter().find(|r| r.0 == p.name()) {
                    let cpu = [reference.r1_loss, reference.d_loss, reference.r2_loss];
                    c["losses_device"] = json!(l);
                    c["losses_rel_diff_vs_cpu_f32"] =
                        json!((0..3).map(|i| rel(cpu[i], l[i])).collect::<Vec<_>>());
                    c["train_iter_ms"] = json!(ms);
                }
                c["infer_images_per_s"] = json!(
                    run.infer_at
                        .iter()
                        .filter(|r| r.0 == p.name())
                        .map(|r| json!({ "batch": r.1, "images_per_s": r.2 }))
                        .collect::<Vec<_>>()
                );
                c
            })
            .collect::<Vec<_>>()
    );
    v["train_iter_ms"] = json!({ "device": run.train_iter_ms, "cpu": reference.train_iter_ms });
    v["peak_rss_mib"] = json!(peak_rss_mib());
    Ok(v)
}

/// The task's headline figure on the real test split per estimator role (gaze: mean error in
/// degrees; classification: accuracy; regression: MAE), from the report's `report_summary`
/// shard, and the metric's name.
/// Also the realism judge's AUC per pair, when the pipeline has a judge, and the label
/// preservation figures (the oracle's drift, the pupil shift) when it scores drift pairs.
type DemoFigures = (
    String,
    serde_json::Map<String, Value>,
    serde_json::Map<String, Value>,
    serde_json::Map<String, Value>,
);

fn demo_errors(root: &Root) -> Result<DemoFigures> {
    use arrow::array::{Array, Float64Array, StringArray};
    let committed = crate::manifest::latest(root, "report")?
        .ok_or_else(|| Error::stage("bench", "the demo pipeline has no `report` stage"))?;
    let mut out = serde_json::Map::new();
    let mut judge = serde_json::Map::new();
    let mut labels = serde_json::Map::new();
    let mut name = String::new();
    for s in &committed.manifest.shards {
        for b in crate::shards::read(root, s, Some(crate::schema::get("report_summary")?))? {
            let col = |name: &str| b.column_by_name(name).cloned();
            let (Some(est), Some(set), Some(metric), Some(value)) = (
                col("estimator"),
                col("eval_set"),
                col("metric"),
                col("value"),
            ) else {
                continue;
            };
            let (Some(est), Some(set), Some(metric), Some(value)) = (
                est.as_any().downcast_ref::<StringArray>(),
                set.as_any().downcast_ref::<StringArray>(),
                metric.as_any().downcast_ref::<StringArray>(),
                value.as_any().downcast_ref::<Float64Array>(),
            ) else {
                continue;
            };
            // The task's headline metric: gaze error, classification accuracy, regression MAE,
            // hand joint error (px).
            for i in 0..b.num_rows() {
                if est.value(i) == "judge" && metric.value(i) == "auc" && !value.is_null(i) {
                    judge.insert(set.value(i).to_string(), json!(value.value(i)));
                }
                let label_figure = match (est.value(i), set.value(i), metric.value(i)) {
                    ("real", "drift", m) => Some(format!("oracle_drift_{m}")),
                    ("pupil-centre", "pupil-shift", m @ ("mean_px" | "std_px")) => {
                        Some(format!("pupil_shift_{m}"))
                    }
                    _ => None,
                };
                if let (Some(k), false) = (label_figure, value.is_null(i)) {
                    labels.insert(k, json!(value.value(i)));
                }
                let headline =
                    matches!(metric.value(i), "mean_deg" | "accuracy" | "mae" | "mean_px");
                // Hands: the paper's figure beside the headline error.
                if set.value(i) == "real-test"
                    && matches!(metric.value(i), "within_5px" | "within_5px_224")
                    && !value.is_null(i)
                {
                    out.insert(
                        format!("{}:{}", est.value(i), metric.value(i)),
                        json!(value.value(i)),
                    );
                }
                if set.value(i) == "real-test" && headline && !value.is_null(i) {
                    out.insert(est.value(i).to_string(), json!(value.value(i)));
                    name = metric.value(i).to_string();
                }
            }
        }
    }
    Ok((name, out, judge, labels))
}

/// The README's main job once per seed (every stage with a `seed` param gets a seed derived
/// from it): wall time and the real-test error of each estimator, with the refined-vs-synthetic
/// gain.
fn bench_demo(o: &BenchOptions, rt: &tokio::runtime::Handle) -> Result<Value> {
    let registry = crate::registry::builtin();
    let text = std::fs::read_to_string(&o.demo_pipeline).map_err(|source| Error::Io {
        op: "read",
        path: o.demo_pipeline.clone(),
        source,
    })?;
    let file = o.demo_pipeline.display().to_string();
    let base = Pipeline::parse(&text, &file, &registry)?;
    let mut runs = Vec::new();
    for &seed in &o.seeds {
        // Every stage with a seed gets one derived from `seed`; the estimators all share one
        // (the same initialisation and batch order for synthetic, refined and real data, so
        // their difference measures the data, not the draw).
        let overrides: Vec<String> = base
            .stages
            .iter()
            .enumerate()
            .filter(|(_, st)| st.kind.params().iter().any(|p| p.name == "seed"))
            .map(|(i, st)| {
                let k = if st.kind.name() == "train-estimator" {
                    99
                } else {
                    i as u64
                };
                format!("{}.seed={}", st.name, seed * 1000 + k)
            })
            .collect();
        let p = Pipeline::parse_with(&text, &file, &registry, &overrides)?;
        let (_dir, root) = temp_root(&o.scratch, &format!("demo-seed-{seed}"), rt)?;
        let t = Instant::now();
        let r = runner::run(&p, &root, &RunOptions::default())?;
        let wall = t.elapsed().as_secs_f64();
        let (metric, errors, judge, labels) = demo_errors(&root)?;
        let get = |k: &str| errors.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        // As errors (lower is better): accuracy becomes the error rate.
        let error = |v: f64| if metric == "accuracy" { 1.0 - v } else { v };
        let (syn, refd) = (error(get("synthetic")), error(get("refined")));
        let stages: serde_json::Map<String, Value> = r
            .ran
            .iter()
            .map(|o| (o.name.clone(), json!(o.seconds)))
            .collect();
        runs.push(json!({
            "seed": seed, "wall_s": wall, "stage_s": stages, "metric": metric, "real_test": errors,
            "judge_auc": judge, "label_preservation": labels,
            // Relative error reduction of refined- over synthetic-trained (error rate for accuracy).
            "refined_gain_vs_synthetic": 1.0 - refd / syn,
        }));
    }
    let gains: Vec<f64> = runs
        .iter()
        .filter_map(|r| r["refined_gain_vs_synthetic"].as_f64())
        .collect();
    let walls: Vec<f64> = runs.iter().filter_map(|r| r["wall_s"].as_f64()).collect();
    Ok(json!({
        "pipeline": file, "threads": threads(), "runs": runs,
        "min_gain": gains.iter().cloned().fold(f64::INFINITY, f64::min),
        "max_wall_s": walls.iter().cloned().fold(0.0, f64::max),
        "peak_rss_mib": peak_rss_mib(),
    }))
}

fn bench_runner(o: &BenchOptions, rt: &tokio::runtime::Handle) -> Result<Value> {
    let text = "name = \"r\"\n[stages.many]\nkind = \"generate-eyes\"\nparams = { domain = \"synthetic\", rows = 200, rows_per_shard = 1 }\n[stages.more]\nkind = \"generate-eyes\"\nparams = { domain = \"real-like\", rows = 200, rows_per_shard = 1 }\n";
    let mut v = json!({});
    let mut roots = vec![("local".to_string(), temp_root(&o.scratch, "runner", rt)?.1)];
    if let Some(r) = &o.remote_root {
        roots.push(("remote".to_string(), Root::open(r, rt.clone())?));
    }
    for (name, root) in roots {
        let (first, report) = run_pipeline(text, &root)?;
        let units: usize = report.ran.iter().map(|o| o.units_run).sum();
        let (noop, again) = run_pipeline(text, &root)?;
        if !again.ran.is_empty() {
            return Err(Error::stage("bench", "the no-op rerun ran stages"));
        }
        v[name] = json!({ "shards": units, "first_run_s": first, "per_shard_ms": first * 1e3 / units as f64, "noop_rerun_s": noop, "root": root.url() });
    }
    Ok(v)
}

/// Run the selected sections; returns one JSON document.
pub fn run(o: &BenchOptions, rt: &tokio::runtime::Handle) -> Result<Value> {
    let mut out = json!({ "threads": threads(), "cpu": cpu_model() });
    for s in &o.sections {
        let t = Instant::now();
        let v = match s.as_str() {
            "train" => bench_train(o)?,
            "refine" => bench_refine(o, rt)?,
            "generate" => bench_generate(o, rt)?,
            "ingest" => bench_ingest(o, rt)?,
            "runner" => bench_runner(o, rt)?,
            "demo" => bench_demo(o, rt)?,
            "scale" => bench_scale(o, rt)?,
            "verify" => bench_verify(o, rt)?,
            "listing" => bench_listing(o, rt)?,
            "hands" => bench_hands(o, rt)?,
            "host" => bench_host(o, rt)?,
            "gpu" => bench_gpu(o, rt)?,
            other => {
                return Err(Error::stage(
                    "bench",
                    format!(
                        "unknown section `{other}` (train, refine, generate, ingest, runner, demo, scale, verify, listing, hands, host, gpu)"
                    ),
                ));
            }
        };
        tracing::info!(section = %s, seconds = t.elapsed().as_secs_f64(), "bench section done");
        out[s.as_str()] = v;
    }
    out["peak_rss_mib"] = json!(peak_rss_mib());
    Ok(out)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default()
}
