//! The `classification` task: one class label per image (a string or integer column).
//!
//! Classes are the sorted distinct labels of the training rows (integers sorted numerically);
//! the head has one logit per class, trained with softmax cross-entropy on one-hot targets; an
//! ensemble predicts the mean of its members' softmax probabilities. Scores: accuracy, per-class
//! accuracy (recall) and the confusion matrix on the real test split, beside the constant
//! majority-class predictor (the test split's most frequent class for every image). Label drift:
//! the share of synthetic images whose oracle class changes when refined.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Schema};
use serde::{Deserialize, Serialize};

use super::{
    Figure, LEARNED_FRACTION, Predictions, ScoreInput, ScoreKeys, Scored, Section, Task, TaskSpec,
    cell_string, esc,
};
use crate::error::{Error, Result};
use crate::nn::HeadLoss;

/// The `classification` task.
pub struct Classification;

/// The constant baseline scored beside the estimators.
pub const MAJORITY: &str = "majority-class";

/// Accuracy of one estimator on one evaluation set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassSummary {
    /// Estimator role or [`MAJORITY`].
    pub estimator: String,
    /// real-test | synthetic | refined | drift.
    pub eval_set: String,
    /// Samples.
    pub n: u64,
    /// Share of correct predictions, 0–1 (drift: share of unchanged oracle classes).
    pub accuracy: f64,
    /// Per true class: share predicted correctly.
    pub per_class: BTreeMap<String, f64>,
    /// `confusion[i][j]`: samples of true class `classes[i]` predicted as `classes[j]`.
    pub confusion: Vec<Vec<u64>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Summary {
    task: String,
    label: String,
    classes: Vec<String>,
    rows: Vec<ClassSummary>,
}

fn labels(batch: &RecordBatch, label: &str, what: &str) -> Result<Vec<String>> {
    let col = batch.column_by_name(label).ok_or_else(|| Error::Input {
        file: what.to_string(),
        field: label.to_string(),
        reason: "no such column".into(),
    })?;
    let ids = super::string_col(batch, "id")?;
    (0..batch.num_rows())
        .map(|i| {
            cell_string(col.as_ref(), i).ok_or_else(|| Error::Input {
                file: what.to_string(),
                field: format!("row `{}` column `{label}`", ids.value(i)),
                reason: "null or not a string/integer class label".into(),
            })
        })
        .collect()
}

fn argmax(p: &[f32]) -> usize {
    p.iter()
        .enumerate()
        .fold(
            (0, f32::MIN),
            |(bi, bv), (i, v)| {
                if *v > bv { (i, *v) } else { (bi, bv) }
            },
        )
        .0
}

/// Accumulates one (estimator, eval_set) group.
struct Group {
    n: u64,
    correct: u64,
    confusion: Vec<Vec<u64>>,
}

fn summarize(rows: &[(String, String, String, String)], classes: &[String]) -> Vec<ClassSummary> {
    let index: BTreeMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
    for (est, set, truth, pred) in rows {
        let g = groups.entry((est.clone(), set.clone())).or_insert(Group {
            n: 0,
            correct: 0,
            confusion: vec![vec![0; classes.len()]; classes.len()],
        });
        g.n += 1;
        g.correct += (truth == pred) as u64;
        if let (Some(&i), Some(&j)) = (index.get(truth.as_str()), index.get(pred.as_str())) {
            g.confusion[i][j] += 1;
        }
    }
    groups
        .into_iter()
        .map(|((estimator, eval_set), g)| {
            let per_class = classes
                .iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let total: u64 = g.confusion[i].iter().sum();
                    (total > 0).then(|| (c.clone(), g.confusion[i][i] as f64 / total as f64))
                })
                .collect();
            ClassSummary {
                estimator,
                eval_set,
                n: g.n,
                accuracy: if g.n > 0 {
                    g.correct as f64 / g.n as f64
                } else {
                    f64::NAN
                },
                per_class,
                confusion: g.confusion,
            }
        })
        .collect()
}

impl Task for Classification {
    fn name(&self) -> &'static str {
        "classification"
    }
    fn about(&self) -> &'static str {
        "One class label per image (string or integer); accuracy, per-class accuracy, confusion matrix"
    }
    fn default_label(&self) -> &'static str {
        "label"
    }
    fn accepts(&self, schema: &Schema, label: &str) -> bool {
        schema.field_with_name(label).is_ok_and(|f| {
            matches!(
                f.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Int64 | DataType::Int32
            )
        })
    }

    fn bind(&self, batch: &RecordBatch, label: &str, what: &str) -> Result<TaskSpec> {
        let values = labels(batch, label, what)?;
        let numeric = batch
            .column_by_name(label)
            .is_some_and(|c| matches!(c.data_type(), DataType::Int64 | DataType::Int32));
        let mut classes: Vec<String> = values.clone();
        classes.sort();
        classes.dedup();
        if numeric {
            classes.sort_by_key(|c| c.parse::<i64>().unwrap_or(i64::MAX));
        }
        if classes.len() < 2 {
            return Err(Error::Input {
                file: what.to_string(),
                field: label.to_string(),
                reason: format!(
                    "a classifier needs at least 2 classes, the training rows have {:?}",
                    classes
                ),
            });
        }
        Ok(TaskSpec {
            task: self.name().into(),
            label: label.into(),
            outputs: classes.len(),
            classes,
            mean: vec![],
            std: vec![],
        })
    }

    fn loss(&self) -> HeadLoss {
        HeadLoss::CrossEntropy
    }

    fn targets(&self, spec: &TaskSpec, batch: &RecordBatch, what: &str) -> Result<Vec<f32>> {
        let values = labels(batch, &spec.label, what)?;
        let ids = super::string_col(batch, "id")?;
        let k = spec.classes.len();
        let mut out = vec![0f32; values.len() * k];
        for (i, v) in values.iter().enumerate() {
            let c = spec
                .classes
                .iter()
                .position(|c| c == v)
                .ok_or_else(|| Error::Input {
                    file: what.to_string(),
                    field: format!("row `{}` column `{}`", ids.value(i), spec.label),
                    reason: format!("class `{v}` is not one of {:?}", spec.classes),
                })?;
            out[i * k + c] = 1.0;
        }
        Ok(out)
    }

    fn combine(&self, spec: &TaskSpec, members: Vec<Vec<f32>>) -> Vec<f32> {
        let k = spec.outputs.max(1);
        let m = members.len().max(1) as f32;
        let mut out = vec![0f32; members.first().map(Vec::len).unwrap_or(0)];
        for raw in &members {
            for (acc, logits) in out.chunks_exact_mut(k).zip(raw.chunks_exact(k)) {
                let max = logits.iter().cloned().fold(f32::MIN, f32::max);
                let exp: Vec<f32> = logits.iter().map(|v| (v - max).exp()).collect();
                let sum: f32 = exp.iter().sum();
                for (a, e) in acc.iter_mut().zip(exp) {
                    *a += e / sum / m;
                }
            }
        }
        out
    }

    fn score_schema(&self) -> &'static str {
        "class_scores"
    }

    fn score(&self, input: &ScoreInput) -> Result<Scored> {
        let first = input.estimators.first().ok_or_else(|| Error::Stage {
            stage: "score".into(),
            reason: "no estimators".into(),
        })?;
        let label = first.spec.label.clone();
        let truth = labels(input.test, &label, "test rows")?;
        let ids = super::string_col(input.test, "id")?;
        let mut keys = ScoreKeys::new();
        let (mut lab, mut pred, mut correct, mut conf) = (vec![], vec![], vec![], vec![]);
        let mut groups = Vec::new();
        let mut push = |keys: &mut ScoreKeys,
                        est: &str,
                        on: &str,
                        set: &str,
                        id: &str,
                        t: &str,
                        p: &str,
                        c: f32| {
            keys.push(est, on, set, id);
            lab.push(t.to_string());
            pred.push(p.to_string());
            correct.push(t == p);
            conf.push(c);
            groups.push((
                est.to_string(),
                set.to_string(),
                t.to_string(),
                p.to_string(),
            ));
        };
        let class_of = |p: &Predictions, row: &[f32]| -> (String, f32) {
            let j = argmax(row);
            (
                p.spec.classes.get(j).cloned().unwrap_or_default(),
                row.get(j).copied().unwrap_or(0.0),
            )
        };
        let mut log = Vec::new();
        for p in input.estimators {
            let k = p.spec.outputs.max(1);
            for (i, row) in p.test.chunks_exact(k).enumerate() {
                let (c, conf_v) = class_of(p, row);
                push(
                    &mut keys,
                    &p.estimator,
                    &p.trained_on,
                    "real-test",
                    ids.value(i),
                    &truth[i],
                    &c,
                    conf_v,
                );
            }
            if let (Some((s, r)), Some(rows)) = (&p.drift, input.drift_rows) {
                let dl = labels(rows, &label, "drift rows")?;
                let dids = super::string_col(rows, "id")?;
                for (i, (sr, rr)) in s.chunks_exact(k).zip(r.chunks_exact(k)).enumerate() {
                    let (cs, vs) = class_of(p, sr);
                    let (cr, vr) = class_of(p, rr);
                    let id = dids.value(i);
                    push(
                        &mut keys,
                        &p.estimator,
                        &p.trained_on,
                        "synthetic",
                        id,
                        &dl[i],
                        &cs,
                        vs,
                    );
                    push(
                        &mut keys,
                        &p.estimator,
                        &p.trained_on,
                        "refined",
                        id,
                        &dl[i],
                        &cr,
                        vr,
                    );
                    push(
                        &mut keys,
                        &p.estimator,
                        &p.trained_on,
                        "drift",
                        id,
                        &cs,
                        &cr,
                        vr,
                    );
                }
            }
        }
        // The majority class of the test split, for every test image.
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for t in &truth {
            *counts.entry(t.as_str()).or_default() += 1;
        }
        let majority = counts
            .iter()
            .max_by_key(|(c, n)| (**n, std::cmp::Reverse(*c)))
            .map(|(c, _)| c.to_string())
            .unwrap_or_default();
        let share =
            counts.get(majority.as_str()).copied().unwrap_or(0) as f32 / truth.len().max(1) as f32;
        for (i, t) in truth.iter().enumerate() {
            push(
                &mut keys,
                MAJORITY,
                "constant: the test split's most frequent class",
                "real-test",
                ids.value(i),
                t,
                &majority,
                share,
            );
        }
        let mut classes: Vec<String> = first.spec.classes.clone();
        for t in &truth {
            if !classes.contains(t) {
                classes.push(t.clone());
            }
        }
        let summary = summarize(&groups, &classes);
        for s in summary.iter().filter(|s| s.eval_set == "real-test") {
            log.push(format!(
                "{}: accuracy {:.1} % (n = {})",
                s.estimator,
                100.0 * s.accuracy,
                s.n
            ));
        }
        let rest: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(lab)),
            Arc::new(StringArray::from(pred)),
            Arc::new(BooleanArray::from(correct)),
            Arc::new(Float32Array::from(conf)),
        ];
        let rows = keys.batch(self.score_schema(), rest)?;
        let summary = super::to_summary(&Summary {
            task: self.name().into(),
            label,
            classes,
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
            let pts = 100.0 * (re.accuracy - syn.accuracy);
            sec.headline = Some(format!(
                "<p class=\"gain\" id=\"gain\">Refined-trained classifier: <b>{:.1} %</b> accuracy on real test images vs <b>{:.1} %</b> for the synthetic-trained one — <b id=\"gain-pct\">{pts:+.1}</b> points.</p>",
                100.0 * re.accuracy,
                100.0 * syn.accuracy
            ));
            sec.headline_text = Some(format!(
                "refined-trained {:.1} % vs synthetic-trained {:.1} % accuracy ({pts:+.1} points)",
                100.0 * re.accuracy,
                100.0 * syn.accuracy
            ));
        }
        if let Some(base) = test(MAJORITY) {
            for role in ["synthetic", "refined", "real"] {
                if let Some(r) = test(role)
                    .filter(|r| (1.0 - r.accuracy) >= LEARNED_FRACTION * (1.0 - base.accuracy))
                {
                    sec.checks.push(format!(
                        "The {role}-trained classifier ({:.1} %) is within 10% of the error of predicting the most frequent class for every image ({:.1} %): what it learned does not carry over to these test images.",
                        100.0 * r.accuracy, 100.0 * base.accuracy
                    ));
                }
            }
        }
        if let (Some(syn), Some(re)) = (test("synthetic"), test("refined"))
            && re.accuracy <= syn.accuracy
        {
            sec.checks.push(format!(
                "The refined-trained classifier ({:.1} %) is not better than the synthetic-trained one ({:.1} %): refinement did not help on this run.",
                100.0 * re.accuracy, 100.0 * syn.accuracy
            ));
        }
        let b = &mut sec.body;
        let _ = write!(
            b,
            "<h2>Accuracy on the real test set</h2><table id=\"errors\"><tr><th>trained on</th><th>n</th><th>accuracy (%)</th>"
        );
        for c in &s.classes {
            let _ = write!(b, "<th>{}</th>", esc(c));
        }
        b.push_str("</tr>");
        for role in ["synthetic", "refined", "real", MAJORITY] {
            if let Some(r) = test(role) {
                let _ = write!(
                    b,
                    "<tr data-estimator=\"{0}\"><td>{0}</td><td>{1}</td><td class=\"accuracy\">{2:.1}</td>",
                    esc(role),
                    r.n,
                    100.0 * r.accuracy
                );
                for c in &s.classes {
                    match r.per_class.get(c) {
                        Some(a) => {
                            let _ = write!(b, "<td>{:.1}</td>", 100.0 * a);
                        }
                        None => b.push_str("<td>—</td>"),
                    }
                }
                b.push_str("</tr>");
            }
        }
        b.push_str("</table><p>Per-class columns: share of that class's test images classified correctly (%).</p>");
        for role in ["synthetic", "refined", "real"] {
            if let Some(r) = test(role) {
                let _ = write!(
                    b,
                    "<h3>Confusion matrix, trained on {}</h3><table class=\"confusion\" data-estimator=\"{0}\"><tr><th>true \\ predicted</th>",
                    esc(role)
                );
                for c in &s.classes {
                    let _ = write!(b, "<th>{}</th>", esc(c));
                }
                b.push_str("</tr>");
                for (i, c) in s.classes.iter().enumerate() {
                    let _ = write!(b, "<tr><td>{}</td>", esc(c));
                    for v in r.confusion.get(i).into_iter().flatten() {
                        let _ = write!(b, "<td>{v}</td>");
                    }
                    b.push_str("</tr>");
                }
                b.push_str("</table>");
            }
        }
        let orc = |set: &str| {
            s.rows
                .iter()
                .find(|r| r.estimator == "real" && r.eval_set == set)
        };
        if let Some(d) = orc("drift") {
            let mut p = format!(
                "<p id=\"drift\">The oracle (trained on real) classifies synthetic images and the same images refined: its class changes on <b>{:.1} %</b> of them (n = {}), the label drift the refiner introduced.",
                100.0 * (1.0 - d.accuracy),
                d.n
            );
            if let (Some(a), Some(b)) = (orc("synthetic"), orc("refined")) {
                let _ = write!(
                    p,
                    " Oracle accuracy against the synthetic labels: {:.1} % on synthetic images, {:.1} % on refined images.",
                    100.0 * a.accuracy,
                    100.0 * b.accuracy
                );
            }
            p.push_str("</p>");
            sec.drift = Some(p);
        }
        for r in &s.rows {
            sec.figures.push(Figure {
                estimator: r.estimator.clone(),
                eval_set: r.eval_set.clone(),
                metric: "accuracy".into(),
                value: r.accuracy,
                n: r.n,
            });
        }
        Ok(sec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::Field;

    fn batch(labels: ArrayRef) -> RecordBatch {
        let n = labels.len();
        let ids: ArrayRef = Arc::new(StringArray::from(
            (0..n).map(|i| format!("r{i}")).collect::<Vec<_>>(),
        ));
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("label", labels.data_type().clone(), true),
        ]));
        RecordBatch::try_new(schema, vec![ids, labels]).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn integer_classes_sort_numerically_and_targets_are_one_hot() {
        let b = batch(Arc::new(Int64Array::from(vec![10, 2, 10, 1])));
        let spec = Classification
            .bind(&b, "label", "t")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.classes, vec!["1", "2", "10"]);
        let t = Classification
            .targets(&spec, &b, "t")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&t[..3], &[0.0, 0.0, 1.0]);
        assert_eq!(&t[3..6], &[0.0, 1.0, 0.0]);
    }

    #[test]
    fn one_class_is_refused_and_unknown_test_classes_are_named() {
        let one = batch(Arc::new(StringArray::from(vec!["a", "a"])));
        let err = Classification
            .bind(&one, "label", "data")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("at least 2 classes"), "{err}");
        let two = batch(Arc::new(StringArray::from(vec!["a", "b"])));
        let spec = Classification
            .bind(&two, "label", "data")
            .unwrap_or_else(|e| panic!("{e}"));
        let other = batch(Arc::new(StringArray::from(vec!["a", "c"])));
        let err = Classification
            .targets(&spec, &other, "data")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("row `r1`") && err.contains("class `c`"),
            "{err}"
        );
    }

    #[test]
    fn ensemble_averages_probabilities_and_scores_match_hand_counts() {
        let spec = TaskSpec {
            task: "classification".into(),
            label: "label".into(),
            outputs: 2,
            classes: vec!["a".into(), "b".into()],
            mean: vec![],
            std: vec![],
        };
        // Member 1 says a, a; member 2 says b strongly for row 1.
        let p = Classification.combine(
            &spec,
            vec![vec![1.0, 0.0, 1.0, 0.0], vec![1.0, 0.0, 0.0, 5.0]],
        );
        assert!(p[0] > p[1] && p[3] > p[2], "{p:?}");
        assert!((p[0] + p[1] - 1.0).abs() < 1e-6);
        let test = batch(Arc::new(StringArray::from(vec!["a", "b", "b"])));
        let est = Predictions {
            estimator: "synthetic".into(),
            trained_on: "synthetic".into(),
            spec: spec.clone(),
            test: vec![0.9, 0.1, 0.8, 0.2, 0.3, 0.7],
            drift: None,
        };
        let scored = Classification
            .score(&ScoreInput {
                test: &test,
                estimators: &[est],
                drift_rows: None,
                drift_images: None,
            })
            .unwrap_or_else(|e| panic!("{e}"));
        let s: Summary = serde_json::from_value(scored.summary).unwrap_or_else(|e| panic!("{e}"));
        let syn = s
            .rows
            .iter()
            .find(|r| r.estimator == "synthetic")
            .unwrap_or_else(|| panic!("no row"));
        assert!((syn.accuracy - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(syn.confusion, vec![vec![1, 0], vec![1, 1]]);
        assert_eq!(syn.per_class.get("b"), Some(&0.5));
        let maj = s
            .rows
            .iter()
            .find(|r| r.estimator == MAJORITY)
            .unwrap_or_else(|| panic!("no baseline"));
        assert!(
            (maj.accuracy - 2.0 / 3.0).abs() < 1e-9,
            "majority is b: 2 of 3"
        );
        assert_eq!(scored.rows.num_rows(), 6);
        let sec = Classification
            .report(&serde_json::to_value(&s).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            sec.checks.iter().any(|c| c.contains("most frequent class")),
            "{:?}",
            sec.checks
        );
    }
}
