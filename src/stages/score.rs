//! `score`: every estimator on the real test split, for the estimators' task ([`crate::task`]):
//! per-sample rows in the task's score schema (`gaze_scores`, `class_scores`,
//! `regression_scores`) and the task's aggregate as `summary.json` (gaze: mean / median error and
//! % within d°; classification: accuracy, per-class accuracy, confusion matrix; regression: MAE
//! per output and overall), beside the task's constant baseline (mean gaze, majority class,
//! mean label) on the same rows: an estimator close to it learned nothing.
//!
//! An estimator trained as an ensemble (`train-estimator` `ensemble = k`) predicts what its task
//! makes of the members' heads (gaze: the renormalised mean unit vector; classes: the mean
//! softmax; regression: the mean).
//!
//! Label preservation: with `synthetic_data` and `refined_data` inputs (the same ids before and
//! after refinement), the oracle (the `real` estimator) is run on both versions of each sample;
//! how far its two predictions differ is the label drift the refiner introduced (rows with
//! `eval_set = "drift"`), and its errors against the label on each version are rows
//! `eval_set = "synthetic" | "refined"`. With `match_labels` (the default) the pairs are the
//! synthetic rows whose labels are nearest those of the real test rows
//! ([`crate::task::label_match`]): the oracle was trained on the real label distribution, and
//! outside it (a synthetic set's wider gaze range) it misreads even a perfectly refined image —
//! on the eye demo's perfect refiner (`pipelines/eye-gaze-ceiling.toml`) the unmatched drift is
//! 4.6–5.2°. Without labels on the test rows, or with `match_labels = false`, the pairs are the
//! first `drift_samples` synthetic rows that were refined.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, UInt32Array};
use burn::tensor::backend::AutodiffBackend;

use super::common::{self, DEVICE_PARAM};
use super::train_estimator::{EstimatorMeta, Network, member_artifact};
use super::{InputKind, InputSpec, StageCtx, StageKind, UnitOutput, UnitSpec};
use crate::error::{Error, Result};
use crate::nn::{self, BackendJob, NnError};
use crate::params::{ParamSpec, ParamType};
use crate::sample::{self, SampleImage, ValueRange};
use crate::schema::DeclaredSchema;
use crate::task::{Predictions, ScoreInput, Task, TaskSpec, Tasks, label_match, paired_targets};

/// The `score` kind.
pub struct Score {
    tasks: Tasks,
}

impl Score {
    /// The kind, scoring with the tasks in `tasks`.
    pub fn new(tasks: Tasks) -> Score {
        Score { tasks }
    }
}

/// Estimator roles, in report order.
pub const ESTIMATOR_ROLES: [&str; 3] = ["synthetic", "refined", "real"];

const INPUTS: &[InputSpec] = &[
    InputSpec {
        role: "test",
        kind: InputKind::Stage,
        required: true,
        doc: "Real sample stage; its split=test rows are scored",
    },
    InputSpec {
        role: "synthetic",
        kind: InputKind::Stage,
        required: false,
        doc: "Estimator trained on synthetic data",
    },
    InputSpec {
        role: "refined",
        kind: InputKind::Stage,
        required: false,
        doc: "Estimator trained on refined data",
    },
    InputSpec {
        role: "real",
        kind: InputKind::Stage,
        required: false,
        doc: "Oracle estimator trained on real data",
    },
    InputSpec {
        role: "synthetic_data",
        kind: InputKind::Stage,
        required: false,
        doc: "Synthetic samples, for the label-drift check",
    },
    InputSpec {
        role: "refined_data",
        kind: InputKind::Stage,
        required: false,
        doc: "The same samples refined, for the label-drift check",
    },
];

const PARAMS: &[ParamSpec] = &[
    DEVICE_PARAM,
    ParamSpec::new(
        "drift_samples",
        ParamType::Int {
            min: 0,
            max: 1 << 30,
        },
        "1000",
        "Samples used for the label-drift check",
    ),
    ParamSpec::new(
        "match_labels",
        ParamType::Bool,
        "true",
        "Label-drift pairs: the synthetic rows whose labels are nearest those of the real test rows (where the oracle was trained), not the first ones",
    ),
];

/// Raw heads of every ensemble member on each image set: `out[set][member]` is row-major
/// `[images, outputs]`.
struct PredictJob<'a> {
    stage: &'a str,
    network: Network,
    members: &'a [bytes::Bytes],
    /// Each set's images with the value range they are read through.
    sets: Vec<(&'a [SampleImage], ValueRange)>,
}

/// A loaded ensemble member.
enum Net<B: burn::tensor::backend::Backend> {
    Cnn(Box<nn::GazeNet<B>>),
    Hourglass(Box<nn::StackedHourglass<B>>),
}

impl BackendJob for PredictJob<'_> {
    type Output = Result<Vec<Vec<Vec<f32>>>>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let err = |e: NnError| Error::stage(self.stage, e.to_string());
        let nets = self
            .members
            .iter()
            .map(|w| match self.network {
                Network::Cnn => nn::load_gaze_net::<B::InnerBackend>(w, &device)
                    .map(|(net, _)| Net::Cnn(Box::new(net))),
                Network::Hourglass => nn::load_hourglass::<B::InnerBackend>(w, &device)
                    .map(|(net, _)| Net::Hourglass(Box::new(net))),
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(err)?;
        self.sets
            .iter()
            .map(|(images, range)| {
                let mut out = vec![Vec::new(); nets.len()];
                for chunk in images.chunks(256) {
                    let x = sample::to_tensor::<B::InnerBackend>(chunk, *range, &device)
                        .map_err(err)?; // [n, c, h, w]
                    for (o, net) in out.iter_mut().zip(&nets) {
                        let pred = match net {
                            Net::Cnn(n) => nn::predict_raw(n, x.clone()), // [n, outputs]
                            Net::Hourglass(n) => nn::hourglass::predict_joints(n, x.clone()), // [n, joints · 2]
                        };
                        o.extend(pred.map_err(err)?);
                    }
                }
                Ok(out)
            })
            .collect()
    }
}

/// One estimator input: its members' weights and what `estimator.json` says.
struct Estimator {
    members: Vec<bytes::Bytes>,
    meta: Option<EstimatorMeta>,
}

/// An estimator input's member weights (ensemble order) and its `estimator.json`.
fn estimator(ctx: &StageCtx, role: &str, weights: bool) -> Result<Option<Estimator>> {
    if !ctx.inputs.contains_key(role) {
        return Ok(None);
    }
    let c = ctx.stage_input(role)?;
    let find = |suffix: &str| {
        c.manifest
            .artifacts
            .iter()
            .find(|a| a.path.ends_with(suffix))
    };
    let meta = match find("/estimator.json") {
        Some(m) => {
            let b = crate::shards::fetch(ctx.root, m)?;
            Some(
                serde_json::from_slice::<EstimatorMeta>(&b).map_err(|source| Error::Json {
                    path: ctx.root.url_of(&m.path),
                    source,
                })?,
            )
        }
        None => None,
    };
    let network = meta.as_ref().map(|m| m.network).unwrap_or_default();
    let mut members = Vec::new();
    for j in 0.. {
        let name = member_artifact(network, j);
        match find(&format!("/{name}")) {
            Some(w) if weights => members.push(crate::shards::fetch(ctx.root, w)?),
            Some(_) => {}
            None => {
                if j == 0 {
                    return Err(ctx.err(format!("input `{role}` has no {name}")));
                }
                break;
            }
        }
        if !weights {
            break;
        }
    }
    Ok(Some(Estimator { members, meta }))
}

impl Score {
    /// The task binding of an estimator; estimators written before tasks existed are gaze.
    fn spec(&self, e: &Estimator) -> TaskSpec {
        e.meta
            .as_ref()
            .and_then(|m| m.task.clone())
            .unwrap_or_else(TaskSpec::legacy_gaze)
    }

    /// The one task every estimator input was trained for.
    fn task(&self, ctx: &StageCtx) -> Result<Arc<dyn Task>> {
        let mut name: Option<String> = None;
        for role in ESTIMATOR_ROLES {
            if let Some(e) = estimator(ctx, role, false)? {
                let t = self.spec(&e).task;
                match &name {
                    Some(n) if *n != t => {
                        return Err(ctx.err(format!(
                            "estimators of different tasks: `{n}` and `{t}` (input `{role}`)"
                        )));
                    }
                    _ => name = Some(t),
                }
            }
        }
        let name = name.ok_or_else(|| {
            ctx.err("no estimator inputs: set at least one of synthetic, refined, real")
        })?;
        self.tasks.get(&name).cloned().ok_or_else(|| {
            ctx.err(format!(
                "unknown task `{name}` (known: {})",
                self.tasks.names().join(", ")
            ))
        })
    }
}

/// The drift pairs: up to `n` synthetic rows whose ids were refined (label-matched to the first
/// `n` rows of `test` when `matched` and both carry labels), with the refined images in the same
/// order.
fn drift_pairs(
    ctx: &StageCtx,
    n: usize,
    matched: Option<(&Tasks, &RecordBatch)>,
) -> Result<Option<(sample::Loaded, Vec<SampleImage>)>> {
    if !(ctx.inputs.contains_key("synthetic_data") && ctx.inputs.contains_key("refined_data")) {
        return Ok(None);
    }
    let synth = sample::load(ctx.root, ctx.stage_input("synthetic_data")?, None)?;
    let refined = sample::load(ctx.root, ctx.stage_input("refined_data")?, None)?;
    let rids = refined.ids()?;
    let by_id: HashMap<&str, usize> = (0..rids.len()).map(|i| (rids.value(i), i)).collect();
    let sids = synth.ids()?;
    // (synthetic row, refined row) of every refined sample.
    let both: Vec<(u32, usize)> = (0..sids.len())
        .filter_map(|i| by_id.get(sids.value(i)).map(|&j| (i as u32, j)))
        .collect();
    let first_n = || both.iter().take(n).copied().collect::<Vec<_>>();
    let chosen = match matched {
        Some((tasks, test)) if !both.is_empty() => {
            // Usually every synthetic row was refined: then the pool is the batch itself (no
            // copy of its image column).
            let pool = if both.len() == synth.batch.num_rows() {
                synth.batch.clone()
            } else {
                let pool_idx = UInt32Array::from(both.iter().map(|p| p.0).collect::<Vec<_>>());
                arrow::compute::take_record_batch(&synth.batch, &pool_idx).map_err(|source| {
                    Error::Arrow {
                        what: "drift pairs".into(),
                        source,
                    }
                })?
            };
            let anchor = test.slice(0, n.min(test.num_rows()));
            match paired_targets(tasks, &anchor, &pool, "score: drift pairs") {
                Ok((a, p, dim)) => label_match(&a, &p, dim)
                    .into_iter()
                    .map(|k| both[k])
                    .collect(),
                Err(e) => {
                    tracing::info!(stage = ctx.stage, reason = %e, "drift pairs not label-matched");
                    first_n()
                }
            }
        }
        _ => first_n(),
    };
    let take: Vec<u32> = chosen.iter().map(|p| p.0).collect();
    let refined_images: Vec<SampleImage> =
        chosen.iter().map(|p| refined.images[p.1].clone()).collect();
    let idx = UInt32Array::from(take.clone());
    let batch =
        arrow::compute::take_record_batch(&synth.batch, &idx).map_err(|source| Error::Arrow {
            what: "drift pairs".into(),
            source,
        })?;
    let images = take
        .iter()
        .map(|&i| synth.images[i as usize].clone())
        .collect();
    Ok(Some((sample::Loaded { batch, images }, refined_images)))
}

impl StageKind for Score {
    fn name(&self) -> &'static str {
        "score"
    }
    fn about(&self) -> &'static str {
        "Score estimators on the real test split with their task's metrics, baseline and label drift"
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
    /// The estimators' task's score schema.
    fn schema(&self) -> &'static str {
        "the task's (gaze_scores | class_scores | regression_scores | hand_scores)"
    }

    fn output_schema(&self, ctx: &StageCtx, _units: &[UnitSpec]) -> Result<DeclaredSchema> {
        crate::schema::get(self.task(ctx)?.score_schema()).cloned()
    }

    fn plan(&self, _ctx: &StageCtx) -> Result<Vec<UnitSpec>> {
        Ok(vec![UnitSpec {
            index: 0,
            spec: serde_json::Value::Null,
        }])
    }

    fn run_unit(&self, ctx: &StageCtx, _unit: &UnitSpec, out: &mut UnitOutput) -> Result<()> {
        let device = common::device(ctx)?;
        let task = self.task(ctx)?;
        let test = sample::load(ctx.root, ctx.stage_input("test")?, Some("test"))?;
        if test.images.is_empty() {
            return Err(ctx
                .err("input `test` has no split=test rows (set test_fraction on the real stage)"));
        }
        let matched = ctx
            .params
            .bool("match_labels")?
            .then_some((&self.tasks, &test.batch));
        let pairs = drift_pairs(ctx, ctx.params.usize("drift_samples")?, matched)?;
        let mut predictions = Vec::new();
        for role in ESTIMATOR_ROLES {
            let Some(e) = estimator(ctx, role, true)? else {
                continue;
            };
            let spec = self.spec(&e);
            let trained_on = e
                .meta
                .as_ref()
                .map(|m| m.trained_on.clone())
                .unwrap_or_else(|| role.to_string());
            // Every set through the range the estimator was trained with (older estimators: each
            // set's own, which for 8-bit data is the same full range).
            let trained = e.meta.as_ref().and_then(|m| {
                m.pixel_range.map(|[lo, hi]| ValueRange {
                    lo,
                    hi,
                    window: m.pixel_window,
                })
            });
            let mut sets: Vec<(&[SampleImage], ValueRange)> =
                vec![(&test.images, trained.unwrap_or_else(|| test.range()))];
            let oracle_drift = role == "real" && pairs.is_some();
            if let (true, Some((s, r))) = (oracle_drift, &pairs) {
                // The refined rows carry the synthetic schema, so both read through one range.
                let range = trained.unwrap_or_else(|| s.range());
                sets.push((&s.images, range));
                sets.push((r, range));
            }
            let mut raw = nn::run_on(
                &device,
                PredictJob {
                    stage: ctx.stage,
                    network: e.meta.as_ref().map(|m| m.network).unwrap_or_default(),
                    members: &e.members,
                    sets,
                },
            )??
            .into_iter();
            let mut next = || {
                raw.next()
                    .map(|m| task.combine(&spec, m))
                    .unwrap_or_default()
            };
            let test_pred = next();
            let drift = oracle_drift.then(|| (next(), next()));
            predictions.push(Predictions {
                estimator: role.to_string(),
                trained_on,
                spec,
                test: test_pred,
                drift,
            });
        }
        let scored = task.score(&ScoreInput {
            test: &test.batch,
            estimators: &predictions,
            drift_rows: pairs.as_ref().map(|(s, _)| &s.batch),
            drift_images: pairs
                .as_ref()
                .map(|(s, r)| (s.images.as_slice(), r.as_slice())),
        })?;
        out.write(&scored.rows)?;
        for line in &scored.log {
            tracing::info!(stage = ctx.stage, task = task.name(), "scored {line}");
        }
        let json = serde_json::to_vec_pretty(&scored.summary).map_err(|source| Error::Json {
            path: "summary.json".into(),
            source,
        })?;
        out.artifact("summary.json", json)?;
        Ok(())
    }
}
