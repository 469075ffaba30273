//! Estimator tasks: what a dataset's label is and how an estimator trained on it is judged.
//!
//! A [`Task`] owns, for one kind of label: reading it from the label column of a sample batch
//! ([`Task::bind`], [`Task::targets`]), the estimator head's size and loss, turning the heads of
//! an ensemble into one prediction ([`Task::combine`]), scoring predictions with the task's
//! metrics and its constant baseline ([`Task::score`], rows in the task's score schema), and the
//! report section ([`Task::report`]). The S+U stages (`train-estimator`, `score`, `report`) are
//! drivers over this trait and know no label semantics.
//!
//! Built in: `gaze` (eyes; [`crate::domains::eyes::task`]), [`Classification`] (class labels as
//! strings or integers; softmax cross-entropy; accuracy, per-class accuracy, confusion matrix;
//! the majority-class baseline) and [`Regression`] (a fixed-length float vector; MSE on
//! standardised targets; mean absolute error per output and overall; the mean-label baseline).
//!
//! Which task a dataset has: the `task` param of `train-estimator` if set, else the dataset's
//! schema metadata (`simgan` key: `{"task": …, "label": …}`, written by the ingesters and
//! generators), else the first task whose default label column the data has.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::Schema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::nn::HeadLoss;
use crate::sample::SampleImage;

mod classification;
mod regression;

pub use classification::Classification;
pub use regression::Regression;

/// A task bound to one training set: what `train-estimator` records in `estimator.json` and
/// `score` reloads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Task name (`gaze`, `classification`, `regression`).
    pub task: String,
    /// The label column.
    pub label: String,
    /// Outputs of the estimator head.
    pub outputs: usize,
    /// Class names in head order (classification).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    /// Per-output mean of the training labels (regression; targets are standardised).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mean: Vec<f32>,
    /// Per-output standard deviation of the training labels (regression).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub std: Vec<f32>,
}

impl TaskSpec {
    /// The binding of estimators written before tasks existed: gaze on the `gaze` column.
    pub fn legacy_gaze() -> TaskSpec {
        TaskSpec {
            task: "gaze".into(),
            label: "gaze".into(),
            outputs: 3,
            classes: vec![],
            mean: vec![],
            std: vec![],
        }
    }
}

/// One estimator's combined predictions, row-major `[rows, outputs]` in the task's prediction
/// space (see [`Task::combine`]).
pub struct Predictions {
    /// Estimator role: synthetic | refined | real.
    pub estimator: String,
    /// What it was trained on (the training set's `domain`).
    pub trained_on: String,
    /// Its task binding.
    pub spec: TaskSpec,
    /// On the test rows.
    pub test: Vec<f32>,
    /// Oracle only: on the synthetic and on the refined version of the drift pairs.
    pub drift: Option<(Vec<f32>, Vec<f32>)>,
}

/// What [`Task::score`] scores.
pub struct ScoreInput<'a> {
    /// The test rows (their label column is the truth).
    pub test: &'a RecordBatch,
    /// Every estimator's predictions.
    pub estimators: &'a [Predictions],
    /// The synthetic rows of the drift pairs (labels), in the order of `Predictions::drift`.
    pub drift_rows: Option<&'a RecordBatch>,
    /// The drift pairs' images: (synthetic, refined), in the order of `drift_rows`, for a task's
    /// direct geometric measure (gaze: the pupil centre).
    pub drift_images: Option<(&'a [SampleImage], &'a [SampleImage])>,
}

/// The output of [`Task::score`].
pub struct Scored {
    /// Per-sample rows in the task's score schema ([`Task::score_schema`]).
    pub rows: RecordBatch,
    /// The aggregate (`summary.json`); the report reads it back with [`Task::report`].
    pub summary: serde_json::Value,
    /// One line per estimator for the log.
    pub log: Vec<String>,
}

/// One figure of the report's machine-readable table (`report_summary` rows).
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// Estimator role or baseline name.
    pub estimator: String,
    /// real-test | synthetic | refined | drift.
    pub eval_set: String,
    /// Metric name (`mean_deg`, `accuracy`, `mae`, …).
    pub metric: String,
    /// Its value.
    pub value: f64,
    /// Samples it was measured on.
    pub n: u64,
}

/// A task's part of the report.
#[derive(Debug, Default)]
pub struct Section {
    /// The headline (refined vs synthetic), HTML, if both estimators were scored.
    pub headline: Option<String>,
    /// One short sentence of the headline for the log and the CLI.
    pub headline_text: Option<String>,
    /// Warnings a reader must see before trusting the numbers.
    pub checks: Vec<String>,
    /// Tables and charts (HTML referring to `charts` by file name).
    pub body: String,
    /// Label-preservation paragraph (HTML), if drift was measured.
    pub drift: Option<String>,
    /// SVG files to write beside the page: (file name, document).
    pub charts: Vec<(String, String)>,
    /// The machine-readable table.
    pub figures: Vec<Figure>,
}

/// Image points per row (`[row][point] = (u, v)`), as [`Task::points`] gives them.
pub type Points = Vec<Vec<(f32, f32)>>;

/// An estimator task (see the module docs).
pub trait Task: Send + Sync {
    /// Name used in params and metadata.
    fn name(&self) -> &'static str;
    /// One line for `simgan kinds`.
    fn about(&self) -> &'static str;
    /// The label column used when neither the params nor the data name one.
    fn default_label(&self) -> &'static str;
    /// Whether `schema`'s column `label` has a type this task reads.
    fn accepts(&self, schema: &Schema, label: &str) -> bool;
    /// Bind to the training rows: classes, output count, normalisation.
    fn bind(&self, batch: &RecordBatch, label: &str, what: &str) -> Result<TaskSpec>;
    /// The head's loss.
    fn loss(&self) -> HeadLoss;
    /// Training targets of every row, row-major `[rows, outputs]`.
    fn targets(&self, spec: &TaskSpec, batch: &RecordBatch, what: &str) -> Result<Vec<f32>>;
    /// The raw heads of an ensemble's members (each `[rows, outputs]`) → one prediction per row
    /// in the task's prediction space (unit gaze vector, class probabilities, label units).
    fn combine(&self, spec: &TaskSpec, members: Vec<Vec<f32>>) -> Vec<f32>;
    /// Name of the per-sample score schema in `schemas/`.
    fn score_schema(&self) -> &'static str;
    /// Score every estimator (and the task's constant baseline) on the test rows, and the
    /// oracle's label drift on the pairs.
    fn score(&self, input: &ScoreInput) -> Result<Scored>;
    /// The report section for a `summary.json` written by [`Task::score`].
    fn report(&self, summary: &serde_json::Value) -> Result<Section>;
    /// Image points of every row's label (`[row][point] = (u, v)`, pixel centres at integers)
    /// for sample grids to draw, or `None` if the task's labels are not positions (the default).
    fn points(&self, _batch: &RecordBatch, _label: &str, _what: &str) -> Result<Option<Points>> {
        Ok(None)
    }
}

/// The tasks a registry knows.
#[derive(Clone)]
pub struct Tasks(Arc<Vec<Arc<dyn Task>>>);

impl Tasks {
    /// These tasks (the built-in set is [`crate::registry::tasks`]).
    pub fn new(tasks: Vec<Arc<dyn Task>>) -> Tasks {
        Tasks(Arc::new(tasks))
    }

    /// A task by name.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Task>> {
        self.0.iter().find(|t| t.name() == name)
    }

    /// Task names, for messages and param docs.
    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|t| t.name()).collect()
    }

    /// Which task and label column a dataset has (see the module docs): `task` / `label` from
    /// params (`"auto"` / `""` = not set), else the schema's `simgan` metadata, else the first
    /// task whose default label column the schema has.
    pub fn resolve(
        &self,
        schema: &Schema,
        task: &str,
        label: &str,
        what: &str,
    ) -> Result<(Arc<dyn Task>, String)> {
        let meta: serde_json::Value = schema
            .metadata()
            .get("simgan")
            .and_then(|m| serde_json::from_str(m).ok())
            .unwrap_or(serde_json::Value::Null);
        let bad = |reason: String| Error::Input {
            file: what.to_string(),
            field: "task".into(),
            reason,
        };
        let named = if task != "auto" {
            Some(task)
        } else {
            meta["task"].as_str()
        };
        let chosen = match named {
            Some(t) => Some(
                self.get(t)
                    .ok_or_else(|| {
                        bad(format!(
                            "unknown task `{t}` (known: {})",
                            self.names().join(", ")
                        ))
                    })?
                    .clone(),
            ),
            None => None,
        };
        let label_for = |t: &Arc<dyn Task>| -> String {
            if !label.is_empty() {
                label.to_string()
            } else if meta["task"].as_str() == Some(t.name())
                && let Some(l) = meta["label"].as_str()
            {
                l.to_string()
            } else {
                t.default_label().to_string()
            }
        };
        let (t, l) = match chosen {
            Some(t) => {
                let l = label_for(&t);
                (t, l)
            }
            None => self
                .0
                .iter()
                .map(|t| (t.clone(), label_for(t)))
                .find(|(t, l)| t.accepts(schema, l))
                .ok_or_else(|| {
                    bad(format!(
                        "no task given and none found: set `task` ({}) and `label` on the stage, or ingest with labels",
                        self.names().join(", ")
                    ))
                })?,
        };
        if !t.accepts(schema, &l) {
            let found = schema
                .field_with_name(&l)
                .map(|f| format!("{:?}", f.data_type()))
                .unwrap_or_else(|_| "no such column".into());
            return Err(Error::Input {
                file: what.to_string(),
                field: l.clone(),
                reason: format!("is not a `{}` label ({found})", t.name()),
            });
        }
        Ok((t, l))
    }
}

/// The label targets of two sample sets under one binding of their task (bound on `pool`, the
/// set matched from): `(anchor targets, pool targets, outputs)`, row-major. For matching sets by
/// label ([`label_match`]); an error when either set lacks a label the task reads.
pub fn paired_targets(
    tasks: &Tasks,
    anchor: &RecordBatch,
    pool: &RecordBatch,
    what: &str,
) -> Result<(Vec<f32>, Vec<f32>, usize)> {
    let (task, label) = tasks.resolve(&pool.schema(), "auto", "", what)?;
    let spec = task.bind(pool, &label, what)?;
    let a = task.targets(&spec, anchor, what)?;
    let p = task.targets(&spec, pool, what)?;
    let k = spec.outputs.max(1);
    if a.len() != anchor.num_rows() * k || p.len() != pool.num_rows() * k {
        return Err(Error::Input {
            file: what.to_string(),
            field: label,
            reason: "label targets do not have one value per output and row".into(),
        });
    }
    Ok((a, p, k))
}

/// For each row of `anchor` (row-major `[rows, dim]` label vectors), in order, the nearest row of
/// `pool` not taken yet (Euclidean, each dimension scaled by the anchor's standard deviation so
/// no output dominates by its units): a subset of `pool` whose label distribution follows the
/// anchor's. Anchor rows past the pool's size get no match, so the result has
/// `min(anchor rows, pool rows)` distinct indices.
pub fn label_match(anchor: &[f32], pool: &[f32], dim: usize) -> Vec<usize> {
    let dim = dim.max(1);
    let n = anchor.len() / dim;
    let m = pool.len() / dim;
    let mut scale = vec![1f32; dim];
    if n > 1 {
        for (d, s) in scale.iter_mut().enumerate() {
            let col = anchor.chunks_exact(dim).map(|r| r[d] as f64);
            let mean = col.clone().sum::<f64>() / n as f64;
            let var = col.map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
            if var > 1e-12 {
                *s = (1.0 / var.sqrt()) as f32;
            }
        }
    }
    let mut taken = vec![false; m];
    let mut out = Vec::with_capacity(n.min(m));
    for a in anchor.chunks_exact(dim).take(m) {
        let mut best: Option<(usize, f32)> = None;
        for (j, p) in pool.chunks_exact(dim).enumerate() {
            if taken[j] {
                continue;
            }
            let d2: f32 = a
                .iter()
                .zip(p)
                .zip(&scale)
                .map(|((x, y), s)| ((x - y) * s).powi(2))
                .sum();
            if best.is_none_or(|(_, b)| d2 < b) {
                best = Some((j, d2));
            }
        }
        if let Some((j, _)) = best {
            taken[j] = true;
            out.push(j);
        }
    }
    out
}

/// A string column of `batch`, named for errors.
pub(crate) fn string_col<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    crate::sample::strings(batch, name, "task rows")
}

/// The `estimator, trained_on, eval_set, id` columns every score schema starts with.
pub(crate) struct ScoreKeys {
    estimator: Vec<String>,
    trained_on: Vec<String>,
    eval_set: Vec<String>,
    id: Vec<String>,
}

impl ScoreKeys {
    pub(crate) fn new() -> ScoreKeys {
        ScoreKeys {
            estimator: Vec::new(),
            trained_on: Vec::new(),
            eval_set: Vec::new(),
            id: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, estimator: &str, trained_on: &str, eval_set: &str, id: &str) {
        self.estimator.push(estimator.to_string());
        self.trained_on.push(trained_on.to_string());
        self.eval_set.push(eval_set.to_string());
        self.id.push(id.to_string());
    }

    pub(crate) fn len(&self) -> usize {
        self.id.len()
    }

    /// The estimator column so far (for aggregating before the batch is built).
    pub(crate) fn estimator_column(&self) -> Vec<String> {
        self.estimator.clone()
    }

    /// The eval_set column so far.
    pub(crate) fn eval_set_column(&self) -> Vec<String> {
        self.eval_set.clone()
    }

    /// The four key columns, then `rest`, as a batch of schema `schema`.
    pub(crate) fn batch(self, schema: &str, rest: Vec<ArrayRef>) -> Result<RecordBatch> {
        let declared = crate::schema::get(schema)?;
        let s = |v: Vec<String>| -> ArrayRef { Arc::new(StringArray::from(v)) };
        let mut cols = vec![
            s(self.estimator),
            s(self.trained_on),
            s(self.eval_set),
            s(self.id),
        ];
        cols.extend(rest);
        RecordBatch::try_new(declared.arrow.clone(), cols).map_err(|source| Error::Arrow {
            what: schema.to_string(),
            source,
        })
    }
}

/// `row` of a column as a string, whatever its scalar type (class labels may be ints).
pub(crate) fn cell_string(col: &dyn Array, row: usize) -> Option<String> {
    use arrow::array::{Int32Array, Int64Array};
    if !col.is_valid(row) {
        return None;
    }
    let any = col.as_any();
    if let Some(a) = any.downcast_ref::<StringArray>() {
        return Some(a.value(row).to_string());
    }
    if let Some(a) = any.downcast_ref::<Int64Array>() {
        return Some(a.value(row).to_string());
    }
    any.downcast_ref::<Int32Array>()
        .map(|a| a.value(row).to_string())
}

/// A task's summary as the `summary.json` document.
pub(crate) fn to_summary<T: Serialize>(summary: &T) -> Result<serde_json::Value> {
    serde_json::to_value(summary).map_err(|source| Error::Json {
        path: "summary.json".into(),
        source,
    })
}

/// A `summary.json` document read back as the task's summary type.
pub(crate) fn from_summary<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Result<T> {
    T::deserialize(v).map_err(|source| Error::Json {
        path: "summary.json".into(),
        source,
    })
}

/// HTML escape.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The warning for an estimator no better than the constant baseline (error-like metric:
/// lower is better; "within 10 %" = at least 0.9 × the baseline's).
pub(crate) const LEARNED_FRACTION: f64 = 0.9;

#[cfg(test)]
mod tests {
    use super::label_match;

    #[test]
    fn label_match_follows_the_anchor_distribution() {
        // Pool: labels 0..100 on one output; anchor: only labels near 10 and 90.
        let pool: Vec<f32> = (0..100).map(|v| v as f32).collect();
        let anchor = [10.2, 89.6, 10.1, 90.4];
        let m = label_match(&anchor, &pool, 1);
        assert_eq!(m.len(), 4);
        let labels: Vec<f32> = m.iter().map(|&j| pool[j]).collect();
        // Nearest first, then the nearest not taken.
        assert_eq!(labels, vec![10.0, 90.0, 11.0, 91.0]);
        // Every index distinct; a pool smaller than the anchor matches what it can.
        let small = label_match(&anchor, &[0.0, 100.0], 1);
        assert_eq!(small.len(), 2);
        assert_ne!(small[0], small[1]);
        // Each output is scaled by the anchor's spread: a unit on the tight output costs more.
        let pool2 = [0.0, 5.0, 1.0, 0.0];
        let anchor2 = [0.0, 0.0, 0.0, 10.0, 0.0, 20.0]; // output 0 constant (scale 1), output 1 spread 8.2
        let pick = label_match(&anchor2[..2], &pool2, 2);
        assert_eq!(
            pick,
            vec![1],
            "anchor (0, 0): (1, 0) is nearer than (0, 5) on raw units"
        );
        let scaled = label_match(&anchor2, &pool2, 2);
        assert_eq!(
            scaled[0], 0,
            "with output 1 scaled by 1/8.2, (0, 5) is nearer than (1, 0)"
        );
    }
}
