//! `judge`: is the refined set realistic to a classifier that never took part in training? A
//! fresh CNN per pair ([`crate::judge`], its own seed, apart from the refiner's discriminator) is
//! trained to tell a set from held-out real images and scored on halves it never saw:
//! synthetic vs real (the reference: what refinement starts from), refined vs real (the
//! result), and real vs real (the floor: the real set's train split against its test split, two
//! draws of one distribution). "Real" is the real stage's test split, which neither the refiner
//! nor its discriminator saw. Every set is capped at `samples` images (seeded draw).
//!
//! Output: one `judge_scores` row per pair, and `judge.json` (the verdicts, each set's pixel
//! statistics, [`crate::imagestats::ImageStats`], and its radially averaged power spectrum) for
//! the report.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
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

/// The `judge` kind.
pub struct Judge;

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
}

/// Bands of the power spectra in `judge.json`.
pub const SPECTRUM_BINS: usize = 16;

/// At most `n` of `images`, drawn with `seed`.
fn draw(mut images: Vec<SampleImage>, n: usize, seed: u64) -> Vec<SampleImage> {
    if images.len() > n {
        images.shuffle(&mut SmallRng::seed_from_u64(seed));
        images.truncate(n);
    }
    images
}

impl StageKind for Judge {
    fn name(&self) -> &'static str {
        "judge"
    }
    fn about(&self) -> &'static str {
        "Realism judge: fresh classifiers told synthetic, refined and real images apart on held-out halves (ROC AUC; real vs real is the floor)"
    }
    fn code_version(&self) -> &'static str {
        "1"
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
        let real = draw(real_test.images, n, seed);
        let real_train = draw(
            sample::load(ctx.root, real_stage, Some("train"))?.images,
            n,
            seed + 1,
        );
        if real.len() < 4 {
            return Err(ctx.err(format!(
                "input `real` (stage `{}`) has {} split=test images; the judge needs at least 4",
                real_stage.manifest.stage,
                real.len()
            )));
        }
        let mut sets: Vec<(&str, Vec<SampleImage>)> = Vec::new();
        for (k, role) in ["synthetic", "refined"].into_iter().enumerate() {
            if ctx.inputs.contains_key(role) {
                let loaded = sample::load(ctx.root, ctx.stage_input(role)?, None)?;
                sets.push((role, draw(loaded.images, n, seed + 2 + k as u64)));
            }
        }
        if real_train.len() >= 4 {
            sets.push(("real", real_train));
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
        };
        for (name, images) in &sets {
            if images.len() < 4 {
                return Err(ctx.err(format!(
                    "input `{name}` has {} images; the judge needs at least 4",
                    images.len()
                )));
            }
            tracing::info!(stage = ctx.stage, set = %name, images = images.len(), real = real.len(), "training judge");
            let verdict = crate::judge::judge(&device, &real, images, &cfg)
                .map_err(|e| ctx.err(format!("judge {name} vs real: {e}")))?;
            tracing::info!(stage = ctx.stage, pair = %format!("{name}-vs-real"), auc = verdict.auc, accuracy = verdict.accuracy, "judged");
            report.pairs.push((format!("{name}-vs-real"), verdict));
            if *name != "real" {
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
