//! `judge`: is the refined set realistic to a classifier that never took part in training? A
//! fresh CNN per pair ([`crate::judge`], its own seed, apart from the refiner's discriminator) is
//! trained to tell a set from held-out real images and scored on halves it never saw:
//! synthetic vs real (the reference: what refinement starts from), refined vs real (the
//! result), and real vs real (the floor: the real set's train split against its test split, two
//! draws of one distribution). "Real" is the real stage's test split, which neither the refiner
//! nor its discriminator saw. Every set is capped at `samples` images (seeded draw).
//!
//! A refiner keeps labels, so where the synthetic labels are distributed otherwise than the real
//! ones (wider gaze ranges, other poses) even a perfect refiner's output differs from the real
//! set in *content*, and a judge sees that. The label-matched pairs (`match_labels`) remove it:
//! from the whole synthetic / refined set, the image whose label is nearest each real image's
//! ([`crate::task::label_match`]) — the judge then sees only the look.
//!
//! Output: one `judge_scores` row per pair, and `judge.json` (the verdicts, each set's pixel
//! statistics, [`crate::imagestats::ImageStats`], and its radially averaged power spectrum) for
//! the report.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray, UInt32Array};
use arrow::record_batch::RecordBatch;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;

use super::common::{self, DEVICE_PARAM};
use super::{InputKind, InputSpec, StageCtx, StageKind, UnitOutput, UnitSpec};
use crate::error::{Error, Result};
use crate::imagestats::{ImageStats, radial_spectrum};
use crate::judge::{JudgeConfig, Verdict};
use crate::params::{ParamSpec, ParamType};
use crate::sample::{self, SampleImage};
use crate::task::{Tasks, label_match, paired_targets};

/// The `judge` kind.
pub struct Judge {
    tasks: Tasks,
}

impl Judge {
    /// The kind, reading labels (for the label-matched pairs) with the tasks in `tasks`.
    pub fn new(tasks: Tasks) -> Judge {
        Judge { tasks }
    }
}

const INPUTS: &[InputSpec] = &[
    InputSpec {
        role: "real",
        kind: InputKind::Stage,
        required: true,
        doc: "Real samples: the test split is the judge's real set; the train split gives the real-vs-real floor",
    },
    InputSpec {
        role: "synthetic",
        kind: InputKind::Stage,
        required: false,
        doc: "Synthetic samples (the reference pair)",
    },
    InputSpec {
        role: "refined",
        kind: InputKind::Stage,
        required: false,
        doc: "Refined samples (the pair that matters)",
    },
];

const PARAMS: &[ParamSpec] = &[
    DEVICE_PARAM,
    ParamSpec::new(
        "samples",
        ParamType::Int {
            min: 4,
            max: 1 << 30,
        },
        "1000",
        "Images drawn from each set (half train the judge, half test it)",
    ),
    ParamSpec::new(
        "steps",
        ParamType::Int {
            min: 1,
            max: 1 << 30,
        },
        "300",
        "Training steps of each judge",
    ),
    ParamSpec::new(
        "batch_size",
        ParamType::Int { min: 2, max: 4096 },
        "32",
        "Images per step, half from each set",
    ),
    ParamSpec::new(
        "divisor",
        ParamType::Int { min: 1, max: 64 },
        "4",
        "Judge CNN channels ÷ this (the estimator family; 1 = the paper's gaze net)",
    ),
    ParamSpec::new(
        "match_labels",
        ParamType::Bool,
        "true",
        "Also judge label-matched pairs (`synthetic-vs-real-matched`, `refined-vs-real-matched`): from the whole set, the images whose labels are nearest those of the real draw, so the judge sees the look and not a difference of label distribution (a refiner keeps labels, so it cannot close that one). Needs labels on the real test split; skipped with a note otherwise",
    ),
    ParamSpec::new(
        "seed",
        ParamType::Int {
            min: 0,
            max: i64::MAX,
        },
        "7",
        "Seed of the draws, the halves and the judges' weights",
    ),
];

/// `judge.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct JudgeReport {
    /// (pair, verdict), in `judge_scores` order.
    pub pairs: Vec<(String, Verdict)>,
    /// Pixel statistics of each set the judge saw: (set, stats).
    pub stats: Vec<(String, ImageStats)>,
    /// Radially averaged power spectrum of each set ([`crate::imagestats::radial_spectrum`],
    /// [`SPECTRUM_BINS`] bands of log10 power up to ½ cycle/pixel): (set, bands).
    #[serde(default)]
    pub spectra: Vec<(String, Vec<Option<f64>>)>,
    /// Why a label-matched pair is missing, if one is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Bands of the power spectra in `judge.json`.
pub const SPECTRUM_BINS: usize = 16;

/// At most `n` of `len` row indices, drawn with `seed` (all of them, in order, if `len ≤ n`).
fn draw(len: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..len).collect();
    if len > n {
        idx.shuffle(&mut SmallRng::seed_from_u64(seed));
        idx.truncate(n);
    }
    idx
}

/// The images at `idx`.
fn pick(images: &[SampleImage], idx: &[usize]) -> Vec<SampleImage> {
    idx.iter().map(|&i| images[i].clone()).collect()
}

/// The rows of `batch` at `idx`.
fn take_rows(batch: &RecordBatch, idx: &[usize], what: &str) -> Result<RecordBatch> {
    let idx = UInt32Array::from(idx.iter().map(|&i| i as u32).collect::<Vec<_>>());
    arrow::compute::take_record_batch(batch, &idx).map_err(|source| Error::Arrow {
        what: what.to_string(),
        source,
    })
}

impl StageKind for Judge {
    fn name(&self) -> &'static str {
        "judge"
    }
    fn about(&self) -> &'static str {
        "Realism judge: fresh classifiers told synthetic, refined and real images apart on held-out halves (ROC AUC; real vs real is the floor)"
    }
    fn code_version(&self) -> &'static str {
        "2"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn inputs(&self) -> &'static [InputSpec] {
        INPUTS
    }
    fn schema(&self) -> &'static str {
        "judge_scores"
    }

    fn plan(&self, _ctx: &StageCtx) -> Result<Vec<UnitSpec>> {
        Ok(vec![UnitSpec {
            index: 0,
            spec: serde_json::Value::Null,
        }])
    }

    fn run_unit(&self, ctx: &StageCtx, _unit: &UnitSpec, out: &mut UnitOutput) -> Result<()> {
        let device = common::device(ctx)?;
        let n = ctx.params.usize("samples")?;
        let seed = ctx.params.int("seed")? as u64;
        let real_stage = ctx.stage_input("real")?;
        let real_test = sample::load(ctx.root, real_stage, Some("test"))?;
        let range = real_test.range();
        let cfg = JudgeConfig {
            steps: ctx.params.int("steps")? as u64,
            batch_size: ctx.params.usize("batch_size")?,
            divisor: ctx.params.usize("divisor")?,
            seed,
            range: Some(range),
            ..JudgeConfig::default()
        };
        let real_idx = draw(real_test.images.len(), n, seed);
        let real = pick(&real_test.images, &real_idx);
        let real_rows = take_rows(&real_test.batch, &real_idx, "judge: real draw")?;
        let real_train = sample::load(ctx.root, real_stage, Some("train"))?.images;
        let real_train = pick(&real_train, &draw(real_train.len(), n, seed + 1));
        if real.len() < 4 {
            return Err(ctx.err(format!(
                "input `real` (stage `{}`) has {} split=test images; the judge needs at least 4",
                real_stage.manifest.stage,
                real.len()
            )));
        }
        let match_labels = ctx.params.bool("match_labels")?;
        let mut notes = Vec::new();
        // (pair set name, images, whether to keep its statistics)
        let mut sets: Vec<(String, Vec<SampleImage>, bool)> = Vec::new();
        for (k, role) in ["synthetic", "refined"].into_iter().enumerate() {
            if !ctx.inputs.contains_key(role) {
                continue;
            }
            let stage = ctx.stage_input(role)?;
            let loaded = sample::load(ctx.root, stage, None)?;
            let idx = draw(loaded.images.len(), n, seed + 2 + k as u64);
            sets.push((role.to_string(), pick(&loaded.images, &idx), true));
            if !match_labels {
                continue;
            }
            let what = format!("judge: labels of `{role}` and the real test split");
            match paired_targets(&self.tasks, &real_rows, &loaded.batch, &what) {
                Ok((anchor, pool, dim)) => {
                    let idx = label_match(&anchor, &pool, dim);
                    sets.push((format!("{role}-matched"), pick(&loaded.images, &idx), false));
                }
                Err(e) => {
                    tracing::info!(stage = ctx.stage, set = role, reason = %e, "no label-matched judge");
                    notes.push(format!("no label-matched judge for `{role}`: {e}"));
                }
            }
        }
        if real_train.len() >= 4 {
            sets.push(("real".to_string(), real_train, true));
        }
        // Statistics on the images as people see them (a depth range stretched to 8 bits).
        let view = |v: &[SampleImage]| -> Vec<SampleImage> {
            v.iter().map(|i| i.clone().for_view(range)).collect()
        };
        let real_view = view(&real);
        let mut report = JudgeReport {
            pairs: Vec::new(),
            stats: vec![("real".to_string(), ImageStats::of(&real_view))],
            spectra: vec![(
                "real".to_string(),
                radial_spectrum(&real_view, SPECTRUM_BINS),
            )],
            notes,
        };
        for (name, images, keep_stats) in &sets {
            if images.len() < 4 {
                return Err(ctx.err(format!(
                    "input `{name}` has {} images; the judge needs at least 4",
                    images.len()
                )));
            }
            tracing::info!(stage = ctx.stage, set = %name, images = images.len(), real = real.len(), "training judge");
            let verdict = crate::judge::judge(&device, &real, images, &cfg)
                .map_err(|e| ctx.err(format!("judge {name} vs real: {e}")))?;
            let pair = match name.strip_suffix("-matched") {
                Some(base) => format!("{base}-vs-real-matched"),
                None => format!("{name}-vs-real"),
            };
            tracing::info!(stage = ctx.stage, pair = %pair, auc = verdict.auc, accuracy = verdict.accuracy, "judged");
            report.pairs.push((pair, verdict));
            if *keep_stats && name != "real" {
                let v = view(images);
                report.stats.push((name.to_string(), ImageStats::of(&v)));
                report
                    .spectra
                    .push((name.to_string(), radial_spectrum(&v, SPECTRUM_BINS)));
            }
        }
        let json = serde_json::to_vec_pretty(&report).map_err(|source| Error::Json {
            path: "judge.json".into(),
            source,
        })?;
        out.artifact("judge.json", json)?;
        out.write(&scores_batch(&report.pairs)?)?;
        Ok(())
    }
}

fn scores_batch(pairs: &[(String, Verdict)]) -> Result<RecordBatch> {
    let schema = crate::schema::get("judge_scores")?.arrow.clone();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(
            pairs.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from(
            pairs.iter().map(|p| p.1.auc).collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from(
            pairs.iter().map(|p| p.1.accuracy).collect::<Vec<_>>(),
        )),
        Arc::new(Int64Array::from(
            pairs.iter().map(|p| p.1.n_train as i64).collect::<Vec<_>>(),
        )),
        Arc::new(Int64Array::from(
            pairs.iter().map(|p| p.1.n_test as i64).collect::<Vec<_>>(),
        )),
    ];
    RecordBatch::try_new(schema, cols).map_err(|source| Error::Arrow {
        what: "judge scores".into(),
        source,
    })
}
