//! `score`: every gaze estimator on the real test split — angular error per sample as Parquet,
//! aggregated with polars into mean / median error and % within d° for d = 0…20 (`summary.json`).
//!
//! An estimator trained as an ensemble (`train-estimator` `ensemble = k`) predicts the
//! renormalised mean of its members' gaze vectors.
//!
//! Beside the estimators, the constant predictor `mean-gaze` (the test set's mean gaze direction
//! for every image) is scored on the same rows: an estimator close to it learned nothing.
//!
//! Label preservation: with `synthetic_data` and `refined_data` inputs (the same ids before and
//! after refinement), the oracle (the `real` estimator) is run on both versions of each sample;
//! the angle between its two predictions is the gaze drift the refiner introduced (rows with
//! `eval_set = "drift"`), and its errors against the label on each version are rows
//! `eval_set = "synthetic" | "refined"`.

use std::collections::HashMap;

use arrow::array::{ArrayRef, Float32Array, StringArray};
use arrow::record_batch::RecordBatch;
use burn::tensor::backend::AutodiffBackend;
use image::GrayImage;
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::common::{self, DEVICE_PARAM};
use super::train_estimator::member_artifact;
use super::{InputKind, InputSpec, StageCtx, StageKind, UnitOutput, UnitSpec};
use crate::error::{Error, Result};
use crate::eyes::angular_error_deg;
use crate::nn::{self, BackendJob, NnError, gray_to_tensor};
use crate::params::{ParamSpec, ParamType};

/// The `score` kind.
pub struct Score;

/// Estimator roles, in report order.
pub const ESTIMATOR_ROLES: [&str; 3] = ["synthetic", "refined", "real"];

/// The baseline scored beside the estimators: every test image gets the test set's mean gaze.
pub const MEAN_GAZE: &str = "mean-gaze";

const INPUTS: &[InputSpec] = &[
    InputSpec {
        role: "test",
        kind: InputKind::Stage,
        required: true,
        doc: "Real eye stage; its split=test rows are scored",
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
        doc: "Synthetic eyes, for the label-drift check",
    },
    InputSpec {
        role: "refined_data",
        kind: InputKind::Stage,
        required: false,
        doc: "The same eyes refined, for the label-drift check",
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
];

/// Aggregate errors of one estimator on one evaluation set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Estimator role (synthetic | refined | real), or `mean-gaze` for the constant baseline.
    pub estimator: String,
    /// real-test | synthetic | refined | drift.
    pub eval_set: String,
    /// Samples scored.
    pub n: u64,
    /// Mean angular error, degrees.
    pub mean_deg: f64,
    /// Median angular error, degrees.
    pub median_deg: f64,
    /// Standard deviation, degrees.
    pub std_deg: f64,
    /// `within[d]` = % of samples with error ≤ d°, d = 0…20.
    pub within: Vec<f64>,
}

/// Predictions of an estimator — the mean of its ensemble members' unit gaze vectors, renormalised
/// — on each image set.
struct PredictJob<'a> {
    stage: &'a str,
    members: &'a [bytes::Bytes],
    sets: Vec<Vec<GrayImage>>,
}

impl BackendJob for PredictJob<'_> {
    type Output = Result<Vec<Vec<[f32; 3]>>>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let err = |e: NnError| Error::stage(self.stage, e.to_string());
        let nets = self
            .members
            .iter()
            .map(|w| nn::load_gaze_net::<B::InnerBackend>(w, &device).map(|(net, _)| net))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(err)?;
        self.sets
            .iter()
            .map(|images| {
                let mut out = Vec::with_capacity(images.len());
                for chunk in images.chunks(256) {
                    let x = gray_to_tensor::<B::InnerBackend>(chunk, &device).map_err(err)?; // [n, 1, 35, 55]
                    let mut sum = vec![[0f32; 3]; chunk.len()];
                    for net in &nets {
                        let p = nn::train::predict_gaze(net, x.clone()).map_err(err)?;
                        for (acc, p) in sum.iter_mut().zip(p) {
                            for (a, v) in acc.iter_mut().zip(p) {
                                *a += v;
                            }
                        }
                    }
                    out.extend(sum.into_iter().map(unit));
                }
                Ok(out)
            })
            .collect()
    }
}

/// Mean, median, std and % within d° per (estimator, eval_set), with polars.
pub fn summarize(df: DataFrame) -> Result<Vec<Summary>> {
    let mut aggs = vec![
        col("error_deg").count().cast(DataType::UInt64).alias("n"),
        col("error_deg")
            .cast(DataType::Float64)
            .mean()
            .alias("mean"),
        col("error_deg")
            .cast(DataType::Float64)
            .median()
            .alias("median"),
        col("error_deg")
            .cast(DataType::Float64)
            .std(1)
            .fill_null(lit(0.0))
            .alias("std"),
    ];
    for d in 0..=20 {
        aggs.push(
            (col("error_deg")
                .lt_eq(lit(d as f32))
                .cast(DataType::Float64)
                .mean()
                * lit(100.0))
            .alias(format!("within_{d}")),
        );
    }
    let out = df
        .lazy()
        .group_by([col("estimator"), col("eval_set")])
        .agg(aggs)
        .sort(["estimator", "eval_set"], SortMultipleOptions::default())
        .collect()?;
    let s = |name: &str| out.column(name).and_then(|c| c.str().cloned());
    let f = |name: &str| out.column(name).and_then(|c| c.f64().cloned());
    let (est, set, n) = (
        s("estimator")?,
        s("eval_set")?,
        out.column("n")?.u64()?.clone(),
    );
    let (mean, median, std) = (f("mean")?, f("median")?, f("std")?);
    let within: Vec<Float64Chunked> = (0..=20)
        .map(|d| f(&format!("within_{d}")))
        .collect::<PolarsResult<_>>()?;
    Ok((0..out.height())
        .map(|i| Summary {
            estimator: est.get(i).unwrap_or_default().to_string(),
            eval_set: set.get(i).unwrap_or_default().to_string(),
            n: n.get(i).unwrap_or(0),
            mean_deg: mean.get(i).unwrap_or(f64::NAN),
            median_deg: median.get(i).unwrap_or(f64::NAN),
            std_deg: std.get(i).unwrap_or(f64::NAN),
            within: within
                .iter()
                .map(|w| w.get(i).unwrap_or(f64::NAN))
                .collect(),
        })
        .collect())
}

/// One scored row.
struct Row {
    estimator: String,
    trained_on: String,
    eval_set: &'static str,
    id: String,
    error: f32,
}

fn batch(rows: &[Row]) -> Result<RecordBatch> {
    let schema = crate::schema::get("gaze_scores")?.arrow.clone();
    let s = |f: &dyn Fn(&Row) -> &str| -> ArrayRef {
        std::sync::Arc::new(rows.iter().map(|r| Some(f(r))).collect::<StringArray>())
    };
    let cols: Vec<ArrayRef> = vec![
        s(&|r| &r.estimator),
        s(&|r| &r.trained_on),
        s(&|r| r.eval_set),
        s(&|r| &r.id),
        std::sync::Arc::new(Float32Array::from(
            rows.iter().map(|r| r.error).collect::<Vec<_>>(),
        )),
    ];
    RecordBatch::try_new(schema, cols).map_err(|source| Error::Arrow {
        what: "gaze scores".into(),
        source,
    })
}

/// `v / |v|` (the mean of unit vectors is shorter than 1); a zero vector stays zero.
fn unit(v: [f32; 3]) -> [f32; 3] {
    let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    if n > 0.0 {
        [v[0] / n, v[1] / n, v[2] / n]
    } else {
        v
    }
}

/// An estimator input's member weights (ensemble order) and what it was trained on.
fn estimator_weights(ctx: &StageCtx, role: &str) -> Result<Option<(Vec<bytes::Bytes>, String)>> {
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
    let mut members = Vec::new();
    for j in 0.. {
        match find(&format!("/{}", member_artifact(j))) {
            Some(w) => members.push(ctx.root.get_required(&w.path)?),
            None => break,
        }
    }
    if members.is_empty() {
        return Err(ctx.err(format!("input `{role}` has no gaze_net.safetensors")));
    }
    let trained_on = match find("/estimator.json") {
        Some(m) => {
            let b = ctx.root.get_required(&m.path)?;
            let v: serde_json::Value =
                serde_json::from_slice(&b).map_err(|source| Error::Json {
                    path: m.path.clone(),
                    source,
                })?;
            v["trained_on"].as_str().unwrap_or(role).to_string()
        }
        None => role.to_string(),
    };
    Ok(Some((members, trained_on)))
}

impl StageKind for Score {
    fn name(&self) -> &'static str {
        "score"
    }
    fn about(&self) -> &'static str {
        "Score gaze estimators on the real test split (angular error, % within d°, label drift)"
    }
    fn code_version(&self) -> &'static str {
        "3"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn inputs(&self) -> &'static [InputSpec] {
        INPUTS
    }
    fn schema(&self) -> &'static str {
        "gaze_scores"
    }

    fn plan(&self, _ctx: &StageCtx) -> Result<Vec<UnitSpec>> {
        Ok(vec![UnitSpec {
            index: 0,
            spec: serde_json::Value::Null,
        }])
    }

    fn run_unit(&self, ctx: &StageCtx, _unit: &UnitSpec, out: &mut UnitOutput) -> Result<()> {
        let device = common::device(ctx)?;
        let test_rows = common::read_eye_rows(ctx, ctx.stage_input("test")?, Some("test"))?;
        if test_rows.is_empty() {
            return Err(ctx
                .err("input `test` has no split=test rows (set test_fraction on the real stage)"));
        }
        let test_images = common::decode_all(&test_rows)?;
        // Label-drift pairs: the same ids before and after refinement.
        let drift_n = ctx.params.usize("drift_samples")?;
        let pairs = match (
            ctx.inputs.contains_key("synthetic_data"),
            ctx.inputs.contains_key("refined_data"),
        ) {
            (true, true) => {
                let synth = common::read_eye_rows(ctx, ctx.stage_input("synthetic_data")?, None)?;
                let refined: HashMap<String, crate::eyes::rows::EyeRow> =
                    common::read_eye_rows(ctx, ctx.stage_input("refined_data")?, None)?
                        .into_iter()
                        .map(|r| (r.id.clone(), r))
                        .collect();
                let mut s = Vec::new();
                let mut r = Vec::new();
                for row in synth
                    .into_iter()
                    .filter(|x| refined.contains_key(&x.id))
                    .take(drift_n)
                {
                    if let Some(rr) = refined.get(&row.id) {
                        r.push(rr.clone());
                    }
                    s.push(row);
                }
                Some((s, r))
            }
            _ => None,
        };
        let pair_images = match &pairs {
            Some((s, r)) => Some((common::decode_all(s)?, common::decode_all(r)?)),
            None => None,
        };
        let mut rows = Vec::new();
        for role in ESTIMATOR_ROLES {
            let Some((members, trained_on)) = estimator_weights(ctx, role)? else {
                continue;
            };
            let mut sets = vec![test_images.clone()];
            let oracle_drift = role == "real" && pair_images.is_some();
            if let (true, Some((si, ri))) = (oracle_drift, &pair_images) {
                sets.push(si.clone());
                sets.push(ri.clone());
            }
            let preds = nn::run_on(
                &device,
                PredictJob {
                    stage: ctx.stage,
                    members: &members,
                    sets,
                },
            )??;
            for (row, p) in test_rows.iter().zip(&preds[0]) {
                rows.push(Row {
                    estimator: role.into(),
                    trained_on: trained_on.clone(),
                    eval_set: "real-test",
                    id: row.id.clone(),
                    error: angular_error_deg(*p, row.gaze),
                });
            }
            if let (true, Some((s, r))) = (oracle_drift, &pairs) {
                for (i, (srow, rrow)) in s.iter().zip(r).enumerate() {
                    let (ps, pr) = (preds[1][i], preds[2][i]);
                    rows.push(Row {
                        estimator: role.into(),
                        trained_on: trained_on.clone(),
                        eval_set: "synthetic",
                        id: srow.id.clone(),
                        error: angular_error_deg(ps, srow.gaze),
                    });
                    rows.push(Row {
                        estimator: role.into(),
                        trained_on: trained_on.clone(),
                        eval_set: "refined",
                        id: rrow.id.clone(),
                        error: angular_error_deg(pr, rrow.gaze),
                    });
                    rows.push(Row {
                        estimator: role.into(),
                        trained_on: trained_on.clone(),
                        eval_set: "drift",
                        id: srow.id.clone(),
                        error: angular_error_deg(ps, pr),
                    });
                }
            }
        }
        if rows.is_empty() {
            return Err(
                ctx.err("no estimator inputs: set at least one of synthetic, refined, real")
            );
        }
        // The constant predictor: the test set's mean gaze direction for every image. An
        // estimator near its error has not learned anything from the images.
        let mean = test_rows.iter().fold([0f32; 3], |acc, r| {
            [acc[0] + r.gaze[0], acc[1] + r.gaze[1], acc[2] + r.gaze[2]]
        });
        for row in &test_rows {
            rows.push(Row {
                estimator: MEAN_GAZE.into(),
                trained_on: "constant: the test set's mean gaze direction".into(),
                eval_set: "real-test",
                id: row.id.clone(),
                error: angular_error_deg(mean, row.gaze),
            });
        }
        let b = batch(&rows)?;
        out.write(&b)?;
        let df = DataFrame::new_infer_height(vec![
            Column::new(
                "estimator".into(),
                rows.iter().map(|r| r.estimator.clone()).collect::<Vec<_>>(),
            ),
            Column::new(
                "eval_set".into(),
                rows.iter()
                    .map(|r| r.eval_set.to_string())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "error_deg".into(),
                rows.iter().map(|r| r.error).collect::<Vec<_>>(),
            ),
        ])?;
        let summary = summarize(df)?;
        for s in summary.iter().filter(|s| s.eval_set == "real-test") {
            tracing::info!(estimator = %s.estimator, mean_deg = s.mean_deg, within_7 = s.within[7], "scored");
        }
        let json = serde_json::to_vec_pretty(&summary).map_err(|source| Error::Json {
            path: "summary.json".into(),
            source,
        })?;
        out.artifact("summary.json", json)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{CpuBackend, DeviceSpec, GazeNetConfig};

    #[test]
    fn an_ensemble_predicts_the_normalised_mean_of_its_members() {
        let device = Default::default();
        let cfg = GazeNetConfig::narrow(16);
        let net = |seed| {
            let g = nn::init_seeded::<CpuBackend, _>(&device, seed, || {
                cfg.init::<CpuBackend>(&device).ok()
            })
            .unwrap();
            bytes::Bytes::from(nn::save_gaze_net(&g, &cfg).unwrap())
        };
        let (a, b) = (net(1), net(2));
        let images: Vec<GrayImage> = (0..5u8)
            .map(|k| {
                GrayImage::from_fn(55, 35, |x, y| {
                    image::Luma([(x * 3 + y * 5) as u8 ^ (k * 40)])
                })
            })
            .collect();
        let predict = |members: &[bytes::Bytes]| {
            let job = PredictJob {
                stage: "t",
                members,
                sets: vec![images.clone()],
            };
            nn::run_on(&DeviceSpec::Cpu, job)
                .unwrap()
                .unwrap()
                .remove(0)
        };
        let (pa, pb) = (
            predict(std::slice::from_ref(&a)),
            predict(std::slice::from_ref(&b)),
        );
        assert_ne!(pa, pb, "two seeds, two networks");
        // An ensemble of one network twice is that network.
        for (x, y) in predict(&[a.clone(), a.clone()]).iter().zip(&pa) {
            for k in 0..3 {
                assert!((x[k] - y[k]).abs() < 1e-6, "{x:?} vs {y:?}");
            }
        }
        // Two networks: the mean of their unit vectors, made unit again.
        for ((e, x), y) in predict(&[a, b]).iter().zip(&pa).zip(&pb) {
            let m = unit([x[0] + y[0], x[1] + y[1], x[2] + y[2]]);
            let norm = (e[0] * e[0] + e[1] * e[1] + e[2] * e[2]).sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "unit length, got {norm}");
            for k in 0..3 {
                assert!((e[k] - m[k]).abs() < 1e-5, "{e:?} vs {m:?}");
            }
        }
    }

    #[test]
    fn summary_matches_hand_computed_values() {
        // errors 1, 2, 3, 10 for one estimator; 5 for another
        let df = DataFrame::new_infer_height(vec![
            Column::new("estimator".into(), vec!["a", "a", "a", "a", "b"]),
            Column::new("eval_set".into(), vec!["real-test"; 5]),
            Column::new("error_deg".into(), vec![1.0f32, 2.0, 3.0, 10.0, 5.0]),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let s = summarize(df).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.len(), 2);
        let a = &s[0];
        assert_eq!((a.estimator.as_str(), a.n), ("a", 4));
        assert!((a.mean_deg - 4.0).abs() < 1e-9);
        assert!((a.median_deg - 2.5).abs() < 1e-9);
        assert_eq!(a.within[0], 0.0);
        assert_eq!(a.within[1], 25.0);
        assert_eq!(a.within[3], 75.0);
        assert_eq!(a.within[9], 75.0);
        assert_eq!(a.within[10], 100.0);
        assert_eq!(s[1].within[5], 100.0);
        assert_eq!(s[1].within[4], 0.0);
    }
}
