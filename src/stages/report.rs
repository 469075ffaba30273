//! `report`: one self-contained HTML page (plus its images, beside it in `_artifacts/`) that shows
//! whether refinement helped: sample grid (synthetic | refined | real), refiner and discriminator
//! loss curves, and the task's section ([`crate::task::Task::report`]: the headline, the score
//! table beside the constant baseline, its charts, the checks a reader must see, label drift).
//! With a `judge` input, a realism section: the realism judge's AUCs (synthetic, refined and
//! real against held-out real images; [`super::judge`]), each set's pixel statistics, and a
//! check when refinement left the judge where the synthetic images were.
//! Charts are SVG ([`crate::charts`]); the grids are PNGs: the first samples (synthetic | refined |
//! real) and a larger one of refined images between their synthetic input and their nearest real
//! image. With refined and real inputs, `turing.html` beside the page is the visual Turing test
//! ([`crate::turing`]). The figures are also the stage's shard
//! (`report_summary` schema, one row per estimator, evaluation set and metric) for machines, and
//! `headline.json` (the task, its one-line headline and the checks) is what `simgan run` prints
//! at the end and `simgan report ROOT` prints again ([`Finding`]).

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float32Array, Float64Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;

use super::judge::JudgeReport;
use super::{InputKind, InputSpec, StageCtx, StageKind, UnitOutput, UnitSpec, common};
use crate::charts::{esc, smooth, svg_chart};
use crate::error::{Error, Result};
use crate::params::{ParamSpec, ParamType};
use crate::sample::{self, Pixels, SampleImage};
use crate::task::{Figure, Section, Tasks};
use crate::turing::TuringImage;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;

/// `headline.json`: what a reader of the run's log needs first.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Headline {
    task: String,
    headline: Option<String>,
    checks: Vec<String>,
}

/// What a committed report found: its headline, its checks and where its page is.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    /// The report stage.
    pub stage: String,
    /// Its committed version.
    pub version: u64,
    /// The task the estimators were scored on.
    pub task: Option<String>,
    /// One sentence, e.g. "refined-trained 6.74° vs synthetic-trained 10.15° (-33.6 %)"; `None`
    /// when the run scored no refined and synthetic estimators side by side.
    pub headline: Option<String>,
    /// Warnings a reader must see before trusting the numbers.
    pub checks: Vec<String>,
    /// URL (or path, on a local root) of the HTML page.
    pub page: Option<String>,
    /// When the version was committed (RFC 3339).
    pub finished_at: String,
}

impl Finding {
    /// The finding of `stage`'s latest committed version, if it is a `report` stage's.
    pub fn read(root: &crate::storage::Root, stage: &str) -> Result<Option<Finding>> {
        let Some(c) = crate::manifest::latest(root, stage)? else {
            return Ok(None);
        };
        let m = &c.manifest;
        if m.kind != "report" {
            return Ok(None);
        }
        let artifact = |name: &str| {
            m.artifacts
                .iter()
                .find(|a| a.path.rsplit('/').next() == Some(name))
                .cloned()
        };
        // Reports committed before `headline.json` existed have a page but no headline.
        let headline = match artifact("headline.json") {
            Some(info) => {
                let bytes = crate::shards::fetch(root, &info)?;
                Some(
                    serde_json::from_slice::<Headline>(&bytes).map_err(|source| Error::Json {
                        path: root.url_of(&info.path),
                        source,
                    })?,
                )
            }
            None => None,
        };
        Ok(Some(Finding {
            stage: stage.to_string(),
            version: m.version,
            task: headline.as_ref().map(|h| h.task.clone()),
            headline: headline.as_ref().and_then(|h| h.headline.clone()),
            checks: headline.map(|h| h.checks).unwrap_or_default(),
            page: artifact("report.html").map(|p| root.url_of(&p.path)),
            finished_at: m.timings.finished_at.clone(),
        }))
    }
}

/// The `report` kind.
pub struct Report {
    tasks: Tasks,
}

impl Report {
    /// The kind, rendering the sections of the tasks in `tasks`.
    pub fn new(tasks: Tasks) -> Report {
        Report { tasks }
    }
}

const INPUTS: &[InputSpec] = &[
    InputSpec {
        role: "score",
        kind: InputKind::Stage,
        required: true,
        doc: "A score stage",
    },
    InputSpec {
        role: "judge",
        kind: InputKind::Stage,
        required: false,
        doc: "A judge stage (the realism section)",
    },
    InputSpec {
        role: "refiner",
        kind: InputKind::Stage,
        required: false,
        doc: "The train-refiner stage (loss curves)",
    },
    InputSpec {
        role: "synthetic",
        kind: InputKind::Stage,
        required: false,
        doc: "Synthetic samples (sample grid)",
    },
    InputSpec {
        role: "refined",
        kind: InputKind::Stage,
        required: false,
        doc: "Refined samples (sample grid)",
    },
    InputSpec {
        role: "real",
        kind: InputKind::Stage,
        required: false,
        doc: "Real samples (sample grid)",
    },
];

const PARAMS: &[ParamSpec] = &[
    ParamSpec::new(
        "turing_images",
        ParamType::Int { min: 0, max: 1000 },
        "50",
        "Refined and as many real images on the visual Turing test page (paper: 50 + 50 per subject; 0 = no page)",
    ),
    ParamSpec::new(
        "nearest_samples",
        ParamType::Int { min: 0, max: 256 },
        "24",
        "Refined images shown beside their synthetic input and their nearest real image (0 = no grid)",
    ),
    ParamSpec::new(
        "seed",
        ParamType::Int {
            min: 0,
            max: i64::MAX,
        },
        "7",
        "Seed for picking the Turing test's images",
    ),
];

/// At most this many rows of an input are read for the Turing page and the nearest-real grid
/// (from its first shards), so a report on 1.2M images reads a few shards, not all.
const POOL: usize = 2000;

/// Up to `limit` rows of sample input `role` (of `split`, if it has any such rows), with ids.
fn pool(
    ctx: &StageCtx,
    role: &str,
    split: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, SampleImage)>> {
    let c = ctx.stage_input(role)?;
    let mut loaded = sample::load_limited(ctx.root, c, split, Some(limit))?;
    if loaded.images.is_empty() && split.is_some() {
        loaded = sample::load_limited(ctx.root, c, None, Some(limit))?;
    }
    let ids = loaded.ids()?;
    let ids: Vec<String> = (0..ids.len()).map(|i| ids.value(i).to_string()).collect();
    let range = loaded.range();
    Ok(ids
        .into_iter()
        .zip(loaded.images.into_iter().map(|i| i.for_view(range)))
        .collect())
}

/// The visual Turing test page: `per_class` refined and as many real images (the real test
/// split where there is one), picked with `seed`.
fn turing(ctx: &StageCtx, per_class: usize, seed: u64) -> Result<Option<(String, usize)>> {
    if per_class == 0 || !(ctx.inputs.contains_key("refined") && ctx.inputs.contains_key("real")) {
        return Ok(None);
    }
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut pick = |mut v: Vec<(String, SampleImage)>, real: bool| -> Vec<TuringImage> {
        v.shuffle(&mut rng);
        v.into_iter()
            .take(per_class)
            .map(|(id, image)| TuringImage { id, real, image })
            .collect()
    };
    let refined = pick(pool(ctx, "refined", None, POOL)?, false);
    let real = pick(pool(ctx, "real", Some("test"), POOL)?, true);
    let n = refined.len().min(real.len());
    if n == 0 {
        return Ok(None);
    }
    let images: Vec<TuringImage> = refined
        .into_iter()
        .take(n)
        .chain(real.into_iter().take(n))
        .collect();
    let title = format!("simgan run, report stage `{}`", ctx.stage);
    Ok(Some((crate::turing::page(&images, &title)?, n)))
}

/// Pixel values of an image in [0, 1], for nearest-neighbour search.
fn unit_pixels(img: &SampleImage) -> Vec<f32> {
    match &img.pixels {
        Pixels::U8(p) => p.iter().map(|&v| f32::from(v) / 255.0).collect(),
        Pixels::U16(p) => p.iter().map(|&v| f32::from(v) / 65535.0).collect(),
    }
}

/// The first `n` refined images, each between its synthetic input (above) and the real
/// training image nearest to it in pixel space (below), in blocks of 8 columns.
fn nearest_grid(ctx: &StageCtx, n: usize) -> Result<Option<Vec<u8>>> {
    if n == 0
        || !["synthetic", "refined", "real"]
            .iter()
            .all(|r| ctx.inputs.contains_key(*r))
    {
        return Ok(None);
    }
    let refined = pool(ctx, "refined", None, n)?;
    let synthetic: std::collections::HashMap<String, SampleImage> =
        pool(ctx, "synthetic", None, POOL.max(4 * n))?
            .into_iter()
            .collect();
    let real = pool(ctx, "real", Some("train"), POOL)?;
    let real_px: Vec<Vec<f32>> = real.iter().map(|(_, i)| unit_pixels(i)).collect();
    let mut triples = Vec::new();
    for (id, r) in &refined {
        let Some(s) = synthetic.get(id) else { continue };
        let rp = unit_pixels(r);
        let nearest = real_px
            .iter()
            .enumerate()
            .filter(|(_, p)| p.len() == rp.len())
            .map(|(k, p)| {
                (
                    k,
                    p.iter()
                        .zip(&rp)
                        .map(|(a, b)| (a - b) * (a - b))
                        .sum::<f32>(),
                )
            })
            .min_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((k, _)) = nearest {
            triples.push((s.clone(), r.clone(), real[k].1.clone()));
        }
    }
    if triples.is_empty() {
        return Ok(None);
    }
    let mut rows: Vec<Vec<SampleImage>> = Vec::new();
    for block in triples.chunks(8) {
        rows.push(block.iter().map(|t| t.0.clone()).collect());
        rows.push(block.iter().map(|t| t.1.clone()).collect());
        rows.push(block.iter().map(|t| t.2.clone()).collect());
    }
    let refs: Vec<&[SampleImage]> = rows.iter().map(|r| r.as_slice()).collect();
    common::grid_png(&refs, 3, "nearest-real grid").map(Some)
}

/// Loss and accuracy curves from a train-refiner stage's metrics.
fn loss_curves(ctx: &StageCtx) -> Result<Option<(String, String)>> {
    if !ctx.inputs.contains_key("refiner") {
        return Ok(None);
    }
    let c = ctx.stage_input("refiner")?;
    let mut series: Vec<(&str, Vec<(f64, f64)>)> = vec![
        ("refiner adversarial", vec![]),
        ("self-regularisation", vec![]),
        ("discriminator", vec![]),
    ];
    let mut acc: Vec<(&str, Vec<(f64, f64)>)> =
        vec![("D acc. real", vec![]), ("D acc. refined", vec![])];
    for s in &c.manifest.shards {
        for b in crate::shards::read(ctx.root, s, Some(crate::schema::get("train_metrics")?))? {
            let step = b
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| ctx.err("metrics.step"))?;
            let f = |i: usize| {
                b.column(i)
                    .as_any()
                    .downcast_ref::<Float32Array>()
                    .ok_or_else(|| ctx.err("metrics column"))
            };
            let (adv, reg, dl, ar, af) = (f(3)?, f(4)?, f(5)?, f(6)?, f(7)?);
            for i in 0..b.num_rows() {
                let x = step.value(i) as f64;
                for (k, arr) in [adv, reg, dl].into_iter().enumerate() {
                    if arr.is_valid(i) {
                        series[k].1.push((x, arr.value(i) as f64));
                    }
                }
                for (k, arr) in [ar, af].into_iter().enumerate() {
                    if arr.is_valid(i) {
                        acc[k].1.push((x, arr.value(i) as f64));
                    }
                }
            }
        }
    }
    let sm = |v: Vec<(&str, Vec<(f64, f64)>)>| {
        v.into_iter()
            .map(|(n, p)| (n.to_string(), smooth(&p, 10)))
            .collect::<Vec<_>>()
    };
    Ok(Some((
        svg_chart(
            "Refiner and discriminator losses (moving average of 10)",
            "iteration",
            "loss",
            &sm(series),
        ),
        svg_chart(
            "Discriminator accuracy per patch (moving average of 10)",
            "iteration",
            "accuracy",
            &sm(acc),
        ),
    )))
}

/// Sample grid: the first eight synthetic samples, the same ids refined, eight real ones; where
/// the rows' task has positions for labels (hand joints), they are drawn on each image (a
/// refined row carries its synthetic row's labels, so its marks show where the labels say the
/// joints still are).
fn sample_grid(ctx: &StageCtx, tasks: &Tasks) -> Result<Option<Vec<u8>>> {
    use crate::task::Points as Marks;
    let first = |role: &str| -> Result<(Vec<SampleImage>, Marks)> {
        if !ctx.inputs.contains_key(role) {
            return Ok((vec![], vec![]));
        }
        let c = ctx.stage_input(role)?;
        let Some(s) = c.manifest.shards.first() else {
            return Ok((vec![], vec![]));
        };
        let url = ctx.root.url_of(&s.path);
        let batches = crate::shards::read(ctx.root, s, None)?;
        let Some(b) = batches.first() else {
            return Ok((vec![], vec![]));
        };
        let bytes = sample::image_bytes(b, &url)?;
        let bits = match bytes.is_empty() {
            true => 8,
            false => SampleImage::decode(bytes.value(0), &url)?.format().bits,
        };
        let range = sample::ValueRange::of(&b.schema(), bits);
        let n = b.num_rows().min(8);
        let images = (0..n)
            .map(|i| SampleImage::decode(bytes.value(i), &url).map(|s| s.for_view(range)))
            .collect::<Result<_>>()?;
        // Marks are a picture's extra: rows whose labels do not read as positions get none.
        let marks = tasks
            .resolve(&b.schema(), "auto", "", &url)
            .ok()
            .and_then(|(task, label)| task.points(&b.slice(0, n), &label, &url).ok())
            .flatten()
            .unwrap_or_default();
        Ok((images, marks))
    };
    let lists: Vec<(Vec<SampleImage>, Marks)> = ["synthetic", "refined", "real"]
        .iter()
        .map(|r| first(r))
        .collect::<Result<_>>()?;
    let (lists, marks): (Vec<Vec<SampleImage>>, Vec<Marks>) =
        lists.into_iter().filter(|(l, _)| !l.is_empty()).unzip();
    if lists.is_empty() {
        return Ok(None);
    }
    let refs: Vec<&[SampleImage]> = lists.iter().map(Vec::as_slice).collect();
    common::grid_png_marked(&refs, &marks, 3, "report sample grid").map(Some)
}

/// JSON artifact `name` of the stage behind input `role`: `None` if the report has no such
/// input or (with `required` false) the stage wrote no such artifact.
fn input_json<T: serde::de::DeserializeOwned>(
    ctx: &StageCtx,
    role: &str,
    name: &str,
    required: bool,
) -> Result<Option<T>> {
    if !ctx.inputs.contains_key(role) {
        return Ok(None);
    }
    let c = ctx.stage_input(role)?;
    let suffix = format!("/{name}");
    let Some(a) = c
        .manifest
        .artifacts
        .iter()
        .find(|a| a.path.ends_with(&suffix))
    else {
        if required {
            return Err(ctx.err(format!(
                "input `{role}` (stage `{}`) has no {name}",
                c.manifest.stage
            )));
        }
        return Ok(None);
    };
    let b = crate::shards::fetch(ctx.root, a)?;
    serde_json::from_slice(&b)
        .map(Some)
        .map_err(|source| Error::Json {
            path: ctx.root.url_of(&a.path),
            source,
        })
}

/// The refiner's statistics check (`refiner_check.json` of the train-refiner input), if any.
fn refiner_check(ctx: &StageCtx) -> Result<Option<serde_json::Value>> {
    input_json(ctx, "refiner", "refiner_check.json", false)
}

/// The judge stage's `judge.json`, if the report has a `judge` input.
fn judge_report(ctx: &StageCtx) -> Result<Option<JudgeReport>> {
    input_json(ctx, "judge", "judge.json", true)
}

/// The realism section: the judge's AUCs beside the reference and the floor, each set's pixel
/// statistics, the figures, and the check that refinement changed what a classifier sees.
fn realism(j: &JudgeReport, sec: &mut Section) {
    let pair = |p: &str| j.pairs.iter().find(|(n, _)| n == p).map(|(_, v)| *v);
    let mut h = String::from(
        "<h2>Realism</h2><p>A fresh classifier (the realism judge, not the refiner's discriminator) was trained to tell each set from held-out real images and scored on halves it never saw. ROC AUC 0.5: it cannot tell them apart; 1.0: it always can. Real vs real (two halves of the real set) is the floor. The <i>-matched</i> pairs compare the real images with the synthetic / refined images whose labels are nearest theirs: a refiner keeps labels, so where the synthetic label distribution differs from the real one (wider gaze ranges, other poses) only these pairs measure the look alone.</p><table id=\"realism\"><tr><th>pair</th><th>AUC</th><th>accuracy (%)</th><th>train / test images</th></tr>",
    );
    for (name, v) in &j.pairs {
        let _ = write!(
            h,
            "<tr data-pair=\"{}\"><td>{}</td><td>{:.3}</td><td>{:.1}</td><td>{} / {}</td></tr>",
            esc(name),
            esc(name),
            v.auc,
            100.0 * v.accuracy,
            v.n_train,
            v.n_test
        );
        for (metric, value) in [("auc", v.auc), ("accuracy", v.accuracy)] {
            sec.figures.push(Figure {
                estimator: "judge".into(),
                eval_set: name.clone(),
                metric: metric.into(),
                value,
                n: v.n_test as u64,
            });
        }
    }
    h.push_str("</table>");
    for note in &j.notes {
        let _ = write!(h, "<p class=\"note\">{}</p>", esc(note));
    }
    h.push_str("<table id=\"pixel-stats\"><tr><th>images</th><th>n</th><th>mean</th><th>std</th><th>sharpness (RMS Laplacian)</th><th>noise σ</th></tr>");
    for (name, s) in &j.stats {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td></tr>",
            esc(name),
            s.n,
            s.mean,
            s.std,
            s.sharpness,
            s.noise
        );
    }
    h.push_str("</table>");
    if !j.spectra.is_empty() {
        let bins = j.spectra[0].1.len().max(1);
        let series: Vec<(String, Vec<(f64, f64)>)> = j
            .spectra
            .iter()
            .map(|(name, bands)| {
                let pts = bands
                    .iter()
                    .enumerate()
                    .filter_map(|(k, p)| p.map(|p| ((k as f64 + 0.5) * 0.5 / bins as f64, p)))
                    .collect();
                (name.clone(), pts)
            })
            .collect();
        sec.charts.push((
            "spectrum.svg".into(),
            svg_chart(
                "Radially averaged power spectrum",
                "frequency (cycles/pixel)",
                "log10 power",
                &series,
            ),
        ));
        h.push_str("<p><img src=\"spectrum.svg\" alt=\"power spectra\" id=\"spectrum\"></p>");
    }
    // Refinement that leaves the judge where the synthetic images were changed nothing a
    // classifier sees (within 0.02 AUC, when the synthetic images are told apart at all); on
    // the label-matched pairs when there are any (they see the look alone).
    let matched = (
        pair("synthetic-vs-real-matched"),
        pair("refined-vs-real-matched"),
    );
    let (pairs, which) = match matched {
        (Some(s), Some(r)) => ((Some(s), Some(r)), " (label-matched pairs)"),
        _ => ((pair("synthetic-vs-real"), pair("refined-vs-real")), ""),
    };
    if let (Some(syn), Some(refined)) = pairs
        && syn.auc >= 0.75
        && refined.auc >= syn.auc - 0.02
    {
        sec.checks.push(format!(
            "Refinement did not change what a classifier sees: the realism judge tells refined from real images as easily as synthetic ones (AUC {:.3} vs {:.3}{which}).",
            refined.auc, syn.auc
        ));
    }
    sec.body = format!("{h}{}", sec.body);
}

/// The statistics table of a refiner check.
fn refiner_html(check: &serde_json::Value) -> String {
    let mut h = String::from(
        "<h2>Refiner</h2><table id=\"refiner-stats\"><tr><th>images</th><th>mean</th><th>std</th><th>sharpness (RMS Laplacian)</th><th>noise σ</th></tr>",
    );
    for set in ["synthetic", "refined", "real"] {
        let st = &check["chosen"][set];
        let f = |k: &str| st[k].as_f64().unwrap_or(f64::NAN);
        let _ = write!(
            h,
            "<tr data-set=\"{set}\"><td>{set}</td><td>{:.3}</td><td>{:.3}</td><td>{:.4}</td><td>{:.4}</td></tr>",
            f("mean"),
            f("std"),
            f("sharpness").sqrt(),
            f("noise")
        );
    }
    let _ = write!(
        h,
        "</table><p>Grey levels in [0, 1], means over {} probe images. The refiner moves its inputs by <b>{:.3}</b> on average (mean |R(x) − x|). Output refiner: <code>{}</code> (select = {}), step {}; distance to the real statistics {:.2} (0 = matches real, 1 = no closer than synthetic).</p>",
        check["chosen"]["refined"]["n"],
        check["chosen"]["drift"].as_f64().unwrap_or(f64::NAN),
        match check["select"].as_str() {
            Some("stats") => "closest to real statistics",
            Some("judge") => "least told from real by a held-out judge",
            _ => "last",
        },
        esc(check["select"].as_str().unwrap_or("last")),
        check["chosen_step"],
        check["distance"].as_f64().unwrap_or(f64::NAN)
    );
    if let Some(note) = check["select_note"].as_str() {
        let _ = write!(h, "<p class=\"note\">{}</p>", esc(note));
    }
    if check["select"] == "judge" {
        let cands = check["candidates"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let _ = write!(
            h,
            "<table id=\"refiner-select\"><tr><th>step</th><th>held-out judge AUC (refined vs real)</th><th>statistics distance</th><th>drift</th><th>collapsed</th></tr>"
        );
        for c in cands {
            let chosen = c["step"] == check["chosen_step"];
            let _ = write!(
                h,
                "<tr{}><td>{}</td><td>{:.3}</td><td>{:.2}</td><td>{:.3}</td><td>{}</td></tr>",
                if chosen { " class=\"chosen\"" } else { "" },
                c["step"],
                c["judge_auc"].as_f64().unwrap_or(f64::NAN),
                c["distance"].as_f64().unwrap_or(f64::NAN),
                c["drift"].as_f64().unwrap_or(f64::NAN),
                esc(c["collapse"].as_str().unwrap_or("—"))
            );
        }
        let _ = write!(
            h,
            "</table><p>Each candidate's judge trained on half of {} held-out synthetic images (refined) and as many held-out real ones, and was scored on the other half (0.5 = cannot tell); the lowest AUC of the candidates that did not collapse is the output.</p>",
            check["holdout"]
        );
    }
    h
}

/// The machine-readable table (`report_summary` rows).
fn summary_batch(figures: &[Figure]) -> Result<RecordBatch> {
    let schema = crate::schema::get("report_summary")?.arrow.clone();
    let s = |f: &dyn Fn(&Figure) -> &str| -> ArrayRef {
        Arc::new(StringArray::from(figures.iter().map(f).collect::<Vec<_>>()))
    };
    let cols: Vec<ArrayRef> = vec![
        s(&|f| &f.estimator),
        s(&|f| &f.eval_set),
        s(&|f| &f.metric),
        Arc::new(Float64Array::from(
            figures.iter().map(|f| f.value).collect::<Vec<_>>(),
        )),
        Arc::new(Int64Array::from(
            figures.iter().map(|f| f.n as i64).collect::<Vec<_>>(),
        )),
    ];
    RecordBatch::try_new(schema, cols).map_err(|source| Error::Arrow {
        what: "report summary".into(),
        source,
    })
}

/// Which of the page's images and links were written beside it.
struct Extras {
    grid: bool,
    curves: bool,
    nearest: bool,
    /// Images per class on the Turing page, if there is one.
    turing: Option<usize>,
}

/// The HTML page: headline, checks, samples, the task's section, training curves, drift.
fn html(task: &str, sec: &Section, extras: &Extras, ctx: &StageCtx) -> String {
    let mut h = String::new();
    h.push_str("<!doctype html><html><head><meta charset=\"utf-8\"><title>simgan report</title><style>body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}th{background:#f4f4f4}td:first-child{text-align:left}img{max-width:100%;border:1px solid #ddd}.gain{font-size:1.3em}.warn{background:#fff4e5;border:1px solid #f0a040;padding:4px 12px}</style></head><body>");
    let _ = write!(
        h,
        "<h1>SimGAN report</h1><p>Run root <code>{}</code>, stage <code>{}</code>, task <code id=\"task\">{}</code>.</p>",
        esc(ctx.root.url()),
        esc(ctx.stage),
        esc(task)
    );
    if let Some(headline) = &sec.headline {
        h.push_str(headline);
    }
    if sec.checks.is_empty() {
        h.push_str("<p id=\"checks\">Checks passed: every estimator beats the constant baseline and refinement improved on synthetic training.</p>");
    } else {
        h.push_str(
            "<div id=\"checks\" class=\"warn\"><b>Read the numbers below with care:</b><ul>",
        );
        for w in &sec.checks {
            let _ = write!(h, "<li>{}</li>", esc(w));
        }
        h.push_str("</ul></div>");
    }
    if extras.grid {
        h.push_str("<h2>Samples</h2><p>Rows: synthetic | the same images refined | real. Where labels are positions (hand joints) they are drawn as dots, coloured by joint; the refined row shows its synthetic labels, so a dot off its joint there is label drift.</p><img id=\"samples\" src=\"samples.png\" alt=\"sample grid\">");
    }
    if let Some(n) = extras.turing {
        let _ = write!(
            h,
            "<p>Judge for yourself: the <a id=\"turing\" href=\"turing.html\">visual Turing test</a> shows {n} refined and {n} real images one at a time in random order and ends with your accuracy and its p-value against chance (the paper: people told refined from real eyes 517 times in 1,000; raw synthetic ones 162 in 200).</p>"
        );
    }
    h.push_str(&sec.body);
    if extras.nearest {
        h.push_str("<h2>Refined images and their nearest real image</h2><p>In blocks of three rows: synthetic | the same images refined | the real training image nearest to each refined one (Euclidean distance of the pixels). A refiner that copies real images would show twins in the last two rows; one that changed nothing, refined images unlike any real one.</p><img id=\"nearest\" src=\"nearest.png\" alt=\"refined images beside their nearest real images\">");
    }
    if extras.curves {
        h.push_str("<h2>Training</h2><img id=\"losses\" src=\"losses.svg\" alt=\"loss curves\"><img id=\"accuracy\" src=\"accuracy.svg\" alt=\"discriminator accuracy\">");
    }
    if let Some(d) = &sec.drift {
        h.push_str("<h2>Label preservation</h2>");
        h.push_str(d);
    }
    // Marks how many images decoded (read by the headless-browser test and handy when debugging).
    h.push_str("<script>window.addEventListener('load',function(){var i=[].slice.call(document.images);document.body.setAttribute('data-images-loaded',i.filter(function(x){return x.complete&&x.naturalWidth>0}).length+'/'+i.length)})</script>");
    h.push_str("</body></html>");
    h
}

impl StageKind for Report {
    fn name(&self) -> &'static str {
        "report"
    }
    fn about(&self) -> &'static str {
        "Write the HTML report: samples, losses, the task's scores and baseline, label drift"
    }
    fn code_version(&self) -> &'static str {
        "6"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn inputs(&self) -> &'static [InputSpec] {
        INPUTS
    }
    fn schema(&self) -> &'static str {
        "report_summary"
    }

    fn plan(&self, _ctx: &StageCtx) -> Result<Vec<UnitSpec>> {
        Ok(vec![UnitSpec {
            index: 0,
            spec: serde_json::Value::Null,
        }])
    }

    fn run_unit(&self, ctx: &StageCtx, _unit: &UnitSpec, out: &mut UnitOutput) -> Result<()> {
        let score = ctx.stage_input("score")?;
        let art = score
            .manifest
            .artifacts
            .iter()
            .find(|a| a.path.ends_with("/summary.json"))
            .ok_or_else(|| ctx.err("input `score` has no summary.json"))?;
        let bytes = crate::shards::fetch(ctx.root, art)?;
        let summary: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|source| Error::Json {
                path: ctx.root.url_of(&art.path),
                source,
            })?;
        // summary.json of score stages before tasks: a bare list of gaze summaries.
        let summary = match summary {
            serde_json::Value::Array(rows) => serde_json::json!({"task": "gaze", "rows": rows}),
            other => other,
        };
        let name = summary["task"].as_str().unwrap_or("gaze").to_string();
        let task = self.tasks.get(&name).ok_or_else(|| {
            ctx.err(format!(
                "score input has task `{name}`, which this binary does not know"
            ))
        })?;
        let mut sec = task.report(&summary)?;
        let check = refiner_check(ctx)?;
        if let Some(c) = &check {
            if let Some(why) = c["collapse"].as_str() {
                sec.checks
                    .push(format!("The refiner looks collapsed: {why}."));
            }
            sec.body = format!("{}{}", refiner_html(c), sec.body);
        }
        if let Some(j) = judge_report(ctx)? {
            realism(&j, &mut sec);
        }
        for (file, svg) in &sec.charts {
            out.artifact(file, svg.clone())?;
        }
        let curves = loss_curves(ctx)?;
        if let Some((losses, acc)) = &curves {
            out.artifact("losses.svg", losses.clone())?;
            out.artifact("accuracy.svg", acc.clone())?;
        }
        let grid = sample_grid(ctx, &self.tasks)?;
        if let Some(png) = &grid {
            out.artifact("samples.png", png.clone())?;
        }
        let nearest = nearest_grid(ctx, ctx.params.usize("nearest_samples")?)?;
        if let Some(png) = &nearest {
            out.artifact("nearest.png", png.clone())?;
        }
        let turing = turing(
            ctx,
            ctx.params.usize("turing_images")?,
            ctx.params.int("seed")? as u64,
        )?;
        if let Some((page, _)) = &turing {
            out.artifact("turing.html", page.clone())?;
        }
        let extras = Extras {
            grid: grid.is_some(),
            curves: curves.is_some(),
            nearest: nearest.is_some(),
            turing: turing.as_ref().map(|t| t.1),
        };
        for w in &sec.checks {
            tracing::warn!(stage = ctx.stage, "{w}");
        }
        if let Some(line) = &sec.headline_text {
            tracing::info!(stage = ctx.stage, task = %name, "{line}");
        }
        out.artifact("report.html", html(&name, &sec, &extras, ctx))?;
        let headline = Headline {
            task: name.clone(),
            headline: sec.headline_text.clone(),
            checks: sec.checks.clone(),
        };
        let headline = serde_json::to_vec_pretty(&headline).map_err(|source| Error::Json {
            path: "headline.json".into(),
            source,
        })?;
        out.artifact("headline.json", headline)?;
        out.write(&summary_batch(&sec.figures)?)?;
        Ok(())
    }
}
