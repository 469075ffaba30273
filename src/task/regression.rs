//! The `regression` task: a fixed-length float vector per image (a `float32`/`float64` column,
//! or a fixed-size or variable list of them with one length across the dataset).
//!
//! Targets are standardised per output with the training rows' mean and standard deviation
//! (kept in the task binding, so predictions come back in label units); the head is trained with
//! mean squared error; an ensemble predicts the mean of its members. Scores: mean absolute error
//! per output and overall, and RMSE, beside the constant mean-label predictor (the test split's
//! mean label for every image). Label drift: the oracle's mean absolute change between a
//! synthetic image and its refinement.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Float32Builder, Float64Array, ListArray,
    ListBuilder, RecordBatch,
};
use arrow::datatypes::{DataType, Schema};
use serde::{Deserialize, Serialize};

use super::{
    Figure, LEARNED_FRACTION, ScoreInput, ScoreKeys, Scored, Section, Task, TaskSpec, esc,
};
use crate::error::{Error, Result};
use crate::nn::HeadLoss;

/// The `regression` task.
pub struct Regression;

/// The constant baseline scored beside the estimators.
pub const MEAN_LABEL: &str = "mean-label";

/// Errors of one estimator on one evaluation set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionSummary {
    /// Estimator role or [`MEAN_LABEL`].
    pub estimator: String,
    /// real-test | synthetic | refined | drift.
    pub eval_set: String,
    /// Samples.
    pub n: u64,
    /// Mean absolute error over samples and outputs.
    pub mae: f64,
    /// Mean absolute error per output.
    pub mae_per_output: Vec<f64>,
    /// Root mean squared error over samples and outputs.
    pub rmse: f64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Summary {
    task: String,
    label: String,
    outputs: usize,
    rows: Vec<RegressionSummary>,
}

fn is_float(dt: &DataType) -> bool {
    matches!(dt, DataType::Float32 | DataType::Float64)
}

/// Every row's label vector (one length for all rows).
fn labels(batch: &RecordBatch, label: &str, what: &str) -> Result<(Vec<f32>, usize)> {
    let bad = |field: String, reason: String| Error::Input {
        file: what.to_string(),
        field,
        reason,
    };
    let col = batch
        .column_by_name(label)
        .ok_or_else(|| bad(label.into(), "no such column".into()))?;
    let ids = super::string_col(batch, "id")?;
    let floats = |a: &dyn Array| -> Option<Vec<f32>> {
        if let Some(f) = a.as_any().downcast_ref::<Float32Array>() {
            return (f.null_count() == 0).then(|| f.values().to_vec());
        }
        a.as_any()
            .downcast_ref::<Float64Array>()
            .filter(|f| f.null_count() == 0)
            .map(|f| f.values().iter().map(|v| *v as f32).collect())
    };
    let mut out = Vec::new();
    let mut len = None;
    for i in 0..batch.num_rows() {
        let row = |reason: &str| {
            bad(
                format!("row `{}` column `{label}`", ids.value(i)),
                reason.into(),
            )
        };
        if !col.is_valid(i) {
            return Err(row("null label"));
        }
        let v: Vec<f32> = if let Some(l) = col.as_any().downcast_ref::<FixedSizeListArray>() {
            floats(l.value(i).as_ref()).ok_or_else(|| row("not a list of floats"))?
        } else if let Some(l) = col.as_any().downcast_ref::<ListArray>() {
            floats(l.value(i).as_ref()).ok_or_else(|| row("not a list of floats"))?
        } else {
            floats(col.slice(i, 1).as_ref()).ok_or_else(|| row("not a float"))?
        };
        if v.iter().any(|x| !x.is_finite()) {
            return Err(row("label is not finite"));
        }
        match len {
            None => len = Some(v.len()),
            Some(n) if n != v.len() => {
                return Err(row(&format!(
                    "has {} values, the first row has {n}: regression labels need one length",
                    v.len()
                )));
            }
            _ => {}
        }
        out.extend(v);
    }
    Ok((out, len.unwrap_or(0)))
}

fn mean_std(values: &[f32], k: usize) -> (Vec<f32>, Vec<f32>) {
    let n = (values.len() / k.max(1)).max(1) as f64;
    let mut mean = vec![0f64; k];
    for row in values.chunks_exact(k) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += *v as f64 / n;
        }
    }
    let mut var = vec![0f64; k];
    for row in values.chunks_exact(k) {
        for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (*v as f64 - m).powi(2) / n;
        }
    }
    (
        mean.iter().map(|m| *m as f32).collect(),
        var.iter().map(|v| (v.sqrt() as f32).max(1e-6)).collect(),
    )
}

/// (target, prediction) pairs per (estimator, evaluation set).
type Groups = BTreeMap<(String, String), Vec<(Vec<f32>, Vec<f32>)>>;

fn summarize(groups: Groups) -> Vec<RegressionSummary> {
    groups
        .into_iter()
        .map(|((estimator, eval_set), pairs)| {
            let k = pairs.first().map(|p| p.0.len()).unwrap_or(0);
            let n = pairs.len() as f64;
            let mut per = vec![0f64; k];
            let mut sq = 0f64;
            for (t, p) in &pairs {
                for (j, (a, b)) in t.iter().zip(p).enumerate() {
                    per[j] += (a - b).abs() as f64 / n;
                    sq += ((a - b) as f64).powi(2);
                }
            }
            let cells = (n * k as f64).max(1.0);
            RegressionSummary {
                estimator,
                eval_set,
                n: pairs.len() as u64,
                mae: per.iter().sum::<f64>() / k.max(1) as f64,
                mae_per_output: per,
                rmse: (sq / cells).sqrt(),
            }
        })
        .collect()
}

impl Task for Regression {
    fn name(&self) -> &'static str {
        "regression"
    }
    fn about(&self) -> &'static str {
        "A fixed-length float vector per image; mean absolute error per output and overall"
    }
    fn default_label(&self) -> &'static str {
        "target"
    }
    fn accepts(&self, schema: &Schema, label: &str) -> bool {
        schema
            .field_with_name(label)
            .is_ok_and(|f| match f.data_type() {
                DataType::FixedSizeList(item, _) | DataType::List(item) => {
                    is_float(item.data_type())
                }
                other => is_float(other),
            })
    }

    fn bind(&self, batch: &RecordBatch, label: &str, what: &str) -> Result<TaskSpec> {
        let (values, k) = labels(batch, label, what)?;
        if k == 0 {
            return Err(Error::Input {
                file: what.to_string(),
                field: label.to_string(),
                reason: "no training rows or empty label vectors".into(),
            });
        }
        let (mean, std) = mean_std(&values, k);
        Ok(TaskSpec {
            task: self.name().into(),
            label: label.into(),
            outputs: k,
            classes: vec![],
            mean,
            std,
        })
    }

    fn loss(&self) -> HeadLoss {
        HeadLoss::Mse
    }

    fn targets(&self, spec: &TaskSpec, batch: &RecordBatch, what: &str) -> Result<Vec<f32>> {
        let (mut values, k) = labels(batch, &spec.label, what)?;
        if k != spec.outputs {
            return Err(Error::Input {
                file: what.to_string(),
                field: spec.label.clone(),
                reason: format!(
                    "labels have {k} values, the estimator has {} outputs",
                    spec.outputs
                ),
            });
        }
        for row in values.chunks_exact_mut(k) {
            for ((v, m), s) in row.iter_mut().zip(&spec.mean).zip(&spec.std) {
                *v = (*v - m) / s;
            }
        }
        Ok(values)
    }

    fn combine(&self, spec: &TaskSpec, members: Vec<Vec<f32>>) -> Vec<f32> {
        let k = spec.outputs.max(1);
        let m = members.len().max(1) as f32;
        let mut out = vec![0f32; members.first().map(Vec::len).unwrap_or(0)];
        for raw in &members {
            for (acc, row) in out.chunks_exact_mut(k).zip(raw.chunks_exact(k)) {
                for (j, (a, v)) in acc.iter_mut().zip(row).enumerate() {
                    let (mu, sd) = (
                        spec.mean.get(j).copied().unwrap_or(0.0),
                        spec.std.get(j).copied().unwrap_or(1.0),
                    );
                    *a += (v * sd + mu) / m;
                }
            }
        }
        out
    }

    fn score_schema(&self) -> &'static str {
        "regression_scores"
    }

    fn score(&self, input: &ScoreInput) -> Result<Scored> {
        let first = input.estimators.first().ok_or_else(|| Error::Stage {
            stage: "score".into(),
            reason: "no estimators".into(),
        })?;
        let label = first.spec.label.clone();
        let (truth, k) = labels(input.test, &label, "test rows")?;
        let ids = super::string_col(input.test, "id")?;
        let mut keys = ScoreKeys::new();
        let mut target = ListBuilder::new(Float32Builder::new());
        let mut predicted = ListBuilder::new(Float32Builder::new());
        let mut abs = Vec::new();
        let mut groups = Groups::new();
        let mut push = |keys: &mut ScoreKeys,
                        est: &str,
                        on: &str,
                        set: &str,
                        id: &str,
                        t: &[f32],
                        p: &[f32]| {
            keys.push(est, on, set, id);
            target.values().append_slice(t);
            target.append(true);
            predicted.values().append_slice(p);
            predicted.append(true);
            abs.push(
                t.iter().zip(p).map(|(a, b)| (a - b).abs()).sum::<f32>() / t.len().max(1) as f32,
            );
            groups
                .entry((est.to_string(), set.to_string()))
                .or_default()
                .push((t.to_vec(), p.to_vec()));
        };
        for p in input.estimators {
            if p.spec.outputs != k {
                return Err(Error::Stage {
                    stage: "score".into(),
                    reason: format!(
                        "estimator `{}` has {} outputs, the test labels {k}",
                        p.estimator, p.spec.outputs
                    ),
                });
            }
            for (i, (t, pr)) in truth
                .chunks_exact(k)
                .zip(p.test.chunks_exact(k))
                .enumerate()
            {
                push(
                    &mut keys,
                    &p.estimator,
                    &p.trained_on,
                    "real-test",
                    ids.value(i),
                    t,
                    pr,
                );
            }
            if let (Some((s, r)), Some(rows)) = (&p.drift, input.drift_rows) {
                let (dl, _) = labels(rows, &label, "drift rows")?;
                let dids = super::string_col(rows, "id")?;
                for (i, ((sr, rr), t)) in s
                    .chunks_exact(k)
                    .zip(r.chunks_exact(k))
                    .zip(dl.chunks_exact(k))
                    .enumerate()
                {
                    let id = dids.value(i);
                    push(
                        &mut keys,
                        &p.estimator,
                        &p.trained_on,
                        "synthetic",
                        id,
                        t,
                        sr,
                    );
                    push(&mut keys, &p.estimator, &p.trained_on, "refined", id, t, rr);
                    push(&mut keys, &p.estimator, &p.trained_on, "drift", id, sr, rr);
                }
            }
        }
        let (mean, _) = mean_std(&truth, k);
        for (i, t) in truth.chunks_exact(k).enumerate() {
            push(
                &mut keys,
                MEAN_LABEL,
                "constant: the test split's mean label",
                "real-test",
                ids.value(i),
                t,
                &mean,
            );
        }
        let rows_n = keys.len();
        let rest: Vec<ArrayRef> = vec![
            Arc::new(target.finish()),
            Arc::new(predicted.finish()),
            Arc::new(Float32Array::from(abs)),
        ];
        debug_assert_eq!(rows_n, rest[2].len());
        let rows = keys.batch(self.score_schema(), rest)?;
        let summary = summarize(groups);
        let log = summary
            .iter()
            .filter(|s| s.eval_set == "real-test")
            .map(|s| format!("{}: MAE {:.4} (n = {})", s.estimator, s.mae, s.n))
            .collect();
        let summary = super::to_summary(&Summary {
            task: self.name().into(),
            label,
            outputs: k,
            rows: summary,
        })?;
        Ok(Scored { rows, summary, log })
    }

    fn report(&self, summary: &serde_json::Value) -> Result<Section> {
        let s: Summary = super::from_summary(summary)?;
        let test = |role: &str| {
            s.rows
                .iter()
                .find(|r| r.estimator == role && r.eval_set == "real-test")
        };
        let mut sec = Section::default();
        if let (Some(syn), Some(re)) = (test("synthetic"), test("refined")) {
            let gain = 100.0 * (syn.mae - re.mae) / syn.mae;
            sec.headline = Some(format!(
                "<p class=\"gain\" id=\"gain\">Refined-trained regressor: mean absolute error <b>{:.4}</b> on real test images vs <b>{:.4}</b> for the synthetic-trained one — <b id=\"gain-pct\">{gain:.1}%</b> lower.</p>",
                re.mae, syn.mae
            ));
            sec.headline_text = Some(format!(
                "refined-trained MAE {:.4} vs synthetic-trained {:.4} ({:+.1} %)",
                re.mae, syn.mae, -gain
            ));
            if re.mae >= syn.mae {
                sec.checks.push(format!("The refined-trained regressor (MAE {:.4}) is not better than the synthetic-trained one ({:.4}): refinement did not help on this run.", re.mae, syn.mae));
            }
        }
        if let Some(base) = test(MEAN_LABEL) {
            for role in ["synthetic", "refined", "real"] {
                if let Some(r) = test(role).filter(|r| r.mae >= LEARNED_FRACTION * base.mae) {
                    sec.checks.push(format!("The {role}-trained regressor (MAE {:.4}) is within 10% of predicting the mean label for every image ({:.4}): what it learned does not carry over to these test images.", r.mae, base.mae));
                }
            }
        }
        let b = &mut sec.body;
        let _ = write!(
            b,
            "<h2>Error on the real test set (label `{}`)</h2><table id=\"errors\"><tr><th>trained on</th><th>n</th><th>MAE</th><th>RMSE</th>",
            esc(&s.label)
        );
        for j in 0..s.outputs {
            let _ = write!(b, "<th>MAE[{j}]</th>");
        }
        b.push_str("</tr>");
        for role in ["synthetic", "refined", "real", MEAN_LABEL] {
            if let Some(r) = test(role) {
                let _ = write!(
                    b,
                    "<tr data-estimator=\"{0}\"><td>{0}</td><td>{1}</td><td class=\"mae\">{2:.4}</td><td>{3:.4}</td>",
                    esc(role),
                    r.n,
                    r.mae,
                    r.rmse
                );
                for v in &r.mae_per_output {
                    let _ = write!(b, "<td>{v:.4}</td>");
                }
                b.push_str("</tr>");
            }
        }
        b.push_str("</table>");
        let orc = |set: &str| {
            s.rows
                .iter()
                .find(|r| r.estimator == "real" && r.eval_set == set)
        };
        if let Some(d) = orc("drift") {
            sec.drift = Some(format!(
                "<p id=\"drift\">The oracle (trained on real) predicts on synthetic images and on the same images refined: its predictions move by <b>{:.4}</b> on average (mean absolute change, n = {}), the label drift the refiner introduced.</p>",
                d.mae, d.n
            ));
        }
        for r in &s.rows {
            sec.figures.push(Figure {
                estimator: r.estimator.clone(),
                eval_set: r.eval_set.clone(),
                metric: "mae".into(),
                value: r.mae,
                n: r.n,
            });
        }
        Ok(sec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Predictions;
    use arrow::array::StringArray;
    use arrow::datatypes::Field;

    fn batch(values: &[[f32; 2]]) -> RecordBatch {
        let ids: ArrayRef = Arc::new(StringArray::from(
            (0..values.len())
                .map(|i| format!("r{i}"))
                .collect::<Vec<_>>(),
        ));
        let mut b = arrow::array::FixedSizeListBuilder::new(Float32Builder::new(), 2);
        for v in values {
            b.values().append_slice(v);
            b.append(true);
        }
        let col: ArrayRef = Arc::new(b.finish());
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("target", col.data_type().clone(), true),
        ]));
        RecordBatch::try_new(schema, vec![ids, col]).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn targets_are_standardised_and_predictions_come_back_in_label_units() {
        let b = batch(&[[1.0, 10.0], [3.0, 30.0]]);
        assert!(Regression.accepts(&b.schema(), "target"));
        let spec = Regression
            .bind(&b, "target", "t")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.mean, vec![2.0, 20.0]);
        let t = Regression
            .targets(&spec, &b, "t")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t, vec![-1.0, -1.0, 1.0, 1.0]);
        assert_eq!(
            Regression.combine(&spec, vec![t.clone(), t]),
            vec![1.0, 10.0, 3.0, 30.0]
        );
    }

    #[test]
    fn mae_per_output_and_the_mean_label_baseline() {
        let test = batch(&[[0.0, 0.0], [2.0, 4.0]]);
        let spec = Regression
            .bind(&test, "target", "t")
            .unwrap_or_else(|e| panic!("{e}"));
        let est = Predictions {
            estimator: "real".into(),
            trained_on: "real".into(),
            spec,
            test: vec![1.0, 0.0, 2.0, 2.0],
            drift: None,
        };
        let scored = Regression
            .score(&ScoreInput {
                test: &test,
                estimators: &[est],
                drift_rows: None,
                drift_images: None,
            })
            .unwrap_or_else(|e| panic!("{e}"));
        let s: Summary = serde_json::from_value(scored.summary).unwrap_or_else(|e| panic!("{e}"));
        let real = s
            .rows
            .iter()
            .find(|r| r.estimator == "real")
            .unwrap_or_else(|| panic!("no row"));
        assert_eq!(real.mae_per_output, vec![0.5, 1.0]);
        assert!((real.mae - 0.75).abs() < 1e-9);
        let base = s
            .rows
            .iter()
            .find(|r| r.estimator == MEAN_LABEL)
            .unwrap_or_else(|| panic!("no baseline"));
        assert_eq!(base.mae_per_output, vec![1.0, 2.0]);
        assert_eq!(scored.rows.num_rows(), 4);
    }
}
