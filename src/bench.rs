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
//! hand refiner's inference and the stacked hourglass's training step at 64 and 224 px).

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
    /// Sections to run (train, refine, generate, ingest, runner, demo, scale).
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

fn bench_ingest(o: &BenchOptions, rt: &tokio::runtime::Handle) -> Result<Value> {
    use crate::domains::eyes::unityeyes::{fixture_image, fixture_json, fixture_label};
    let src = o.scratch.join("unityeyes");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src).map_err(|source| Error::Io {
        op: "create",
        path: src.clone(),
        source,
    })?;
    for i in 0..o.ingest_files {
        let f = i as f32 / o.ingest_files as f32;
        let label = fixture_label(
            [300.0 + 40.0 * f, 240.0 - 20.0 * f],
            90.0,
            crate::domains::eyes::from_pitch_yaw(0.2 * f - 0.1, 0.3 - 0.6 * f),
            [0.0, 0.0, 0.0],
        );
        let img = fixture_image(&label, 640, 480);
        let path = src.join(format!("{}.jpg", i + 1));
        img.save(&path).map_err(|source| Error::Image {
            what: path.display().to_string(),
            source,
        })?;
        let jpath = src.join(format!("{}.json", i + 1));
        std::fs::write(&jpath, fixture_json(&label, 480)).map_err(|source| Error::Io {
            op: "write",
            path: jpath.clone(),
            source,
        })?;
    }
    let (_dir, root) = temp_root(&o.scratch, "ingest", rt)?;
    let text = format!(
        "name = \"i\"\n[stages.ue]\nkind = \"ingest-unityeyes\"\ninputs = {{ source = \"{}\" }}\n",
        src.display()
    );
    let (_, r) = run_pipeline(&text, &root)?;
    let ours = o.ingest_files as f64 / stage_seconds(&r, "ue");
    let mut v = json!({ "files": o.ingest_files, "threads": threads(), "simgan_images_per_s": ours, "simgan_images_per_s_per_core": ours / threads() as f64 });
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
            other => {
                return Err(Error::stage(
                    "bench",
                    format!(
                        "unknown section `{other}` (train, refine, generate, ingest, runner, demo, scale, verify, listing, hands)"
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
