//! `report`: one self-contained HTML page (plus its images, beside it in `_artifacts/`) that shows
//! whether refinement helped: sample grid (synthetic | refined | real), refiner and discriminator
//! loss curves, % within d° curves per estimator, the error table next to the paper's, and the
//! label drift. Charts are SVG files written here (no plotting dependency); the grid is a PNG.
//! The table is also the stage's shard (`report_summary` schema) for machines.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float32Array, Float64Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;

use super::score::{ESTIMATOR_ROLES, MEAN_GAZE, Summary};
use super::{InputKind, InputSpec, StageCtx, StageKind, UnitOutput, UnitSpec, common};
use crate::error::{Error, Result};
use crate::params::ParamSpec;

/// The `report` kind.
pub struct Report;

const INPUTS: &[InputSpec] = &[
    InputSpec {
        role: "score",
        kind: InputKind::Stage,
        required: true,
        doc: "A score stage",
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
        doc: "Synthetic eyes (sample grid)",
    },
    InputSpec {
        role: "refined",
        kind: InputKind::Stage,
        required: false,
        doc: "Refined eyes (sample grid)",
    },
    InputSpec {
        role: "real",
        kind: InputKind::Stage,
        required: false,
        doc: "Real eyes (sample grid)",
    },
];

/// The paper's numbers (arXiv v1): Table 3 mean error (°) and Table 2 % within 7°.
const PAPER: &[(&str, &str, &str)] = &[
    ("synthetic", "11.2", "62.3"),
    ("refined", "7.8", "69.4"),
    ("real", "13.9 (UT Multiview)", "—"),
];

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// A line chart as a standalone SVG document.
pub fn svg_chart(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> String {
    let (w, h, ml, mr, mt, mb) = (640.0, 360.0, 60.0, 150.0, 30.0, 45.0);
    let pts = series
        .iter()
        .flat_map(|(_, p)| p.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if (x1 - x0).abs() < 1e-12 {
        x1 = x0 + 1.0;
    }
    if (y1 - y0).abs() < 1e-12 {
        y1 = y0 + 1.0;
    }
    let sx = |x: f64| ml + (x - x0) / (x1 - x0) * (w - ml - mr);
    let sy = |y: f64| h - mb - (y - y0) / (y1 - y0) * (h - mt - mb);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{ml}" y="18" font-size="14">{}</text>"#,
        esc(title)
    );
    let _ = write!(
        s,
        r#"<line x1="{ml}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
        h - mb,
        w - mr,
        h - mb
    );
    let _ = write!(
        s,
        r#"<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{}" stroke="black"/>"#,
        h - mb
    );
    for i in 0..=4 {
        let (fx, fy) = (
            x0 + (x1 - x0) * i as f64 / 4.0,
            y0 + (y1 - y0) * i as f64 / 4.0,
        );
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            sx(fx),
            h - mb + 15.0,
            fmt_num(fx)
        );
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            ml - 4.0,
            sy(fy) + 4.0,
            fmt_num(fy)
        );
        let _ = write!(
            s,
            r##"<line x1="{ml}" y1="{0}" x2="{1}" y2="{0}" stroke="#eee"/>"##,
            sy(fy),
            w - mr
        );
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (ml + w - mr) / 2.0,
        h - 8.0,
        esc(xlabel)
    );
    let _ = write!(
        s,
        r#"<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">{}</text>"#,
        (mt + h - mb) / 2.0,
        (mt + h - mb) / 2.0,
        esc(ylabel)
    );
    for (i, (name, p)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let path: Vec<String> = p
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{}"/>"#,
            path.join(" ")
        );
        let ly = mt + 16.0 * i as f64;
        let _ = write!(
            s,
            r#"<line x1="{0}" y1="{ly}" x2="{1}" y2="{ly}" stroke="{c}" stroke-width="3"/><text x="{2}" y="{3}">{4}</text>"#,
            w - mr + 8.0,
            w - mr + 28.0,
            w - mr + 32.0,
            ly + 4.0,
            esc(name)
        );
    }
    s.push_str("</svg>");
    s
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Moving average over `k` points, for readable loss curves.
fn smooth(points: &[(f64, f64)], k: usize) -> Vec<(f64, f64)> {
    let k = k.max(1);
    points
        .iter()
        .enumerate()
        .map(|(i, &(x, _))| {
            let lo = i.saturating_sub(k - 1);
            let w = &points[lo..=i];
            (x, w.iter().map(|p| p.1).sum::<f64>() / w.len() as f64)
        })
        .collect()
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
        for b in crate::shards::read(
            ctx.root,
            &s.path,
            Some(crate::schema::get("train_metrics")?),
        )? {
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

/// Sample grid: the first eight synthetic ids, the same ids refined, eight real eyes.
fn sample_grid(ctx: &StageCtx) -> Result<Option<Vec<u8>>> {
    let first = |role: &str| -> Result<Option<Vec<crate::eyes::rows::EyeRow>>> {
        if !ctx.inputs.contains_key(role) {
            return Ok(None);
        }
        let c = ctx.stage_input(role)?;
        let Some(s) = c.manifest.shards.first() else {
            return Ok(None);
        };
        let batches =
            crate::shards::read(ctx.root, &s.path, Some(crate::schema::get("eye_sample")?))?;
        let rows = match batches.first() {
            Some(b) => crate::eyes::rows::from_batch(b)?,
            None => vec![],
        };
        Ok(Some(rows.into_iter().take(8).collect()))
    };
    let lists: Vec<Vec<image::GrayImage>> = ["synthetic", "refined", "real"]
        .iter()
        .map(|r| first(r).and_then(|rows| common::decode_all(&rows.unwrap_or_default())))
        .collect::<Result<_>>()?;
    if lists.iter().all(|l| l.is_empty()) {
        return Ok(None);
    }
    let refs: Vec<&[image::GrayImage]> = lists
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| l.as_slice())
        .collect();
    common::grid_png(&refs, 3, "report sample grid").map(Some)
}

fn summary_batch(summary: &[Summary]) -> Result<RecordBatch> {
    let schema = crate::schema::get("report_summary")?.arrow.clone();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(
            summary
                .iter()
                .map(|s| s.estimator.as_str())
                .collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            summary
                .iter()
                .map(|s| s.eval_set.as_str())
                .collect::<Vec<_>>(),
        )),
        Arc::new(Int64Array::from(
            summary.iter().map(|s| s.n as i64).collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from(
            summary.iter().map(|s| s.mean_deg).collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from(
            summary.iter().map(|s| s.median_deg).collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from(
            summary.iter().map(|s| s.within[7]).collect::<Vec<_>>(),
        )),
    ];
    RecordBatch::try_new(schema, cols).map_err(|source| Error::Arrow {
        what: "report summary".into(),
        source,
    })
}

/// The HTML page.
/// An estimator whose mean error is above this fraction of the constant predictor's has not
/// learned from the images.
const LEARNED_FRACTION: f64 = 0.9;

/// What a reader should know before trusting the numbers: estimators that did not beat the
/// constant mean-gaze predictor, and a refined-trained estimator no better than the synthetic
/// one. Empty when all is well.
pub fn checks(summary: &[Summary]) -> Vec<String> {
    let test = |role: &str| {
        summary
            .iter()
            .find(|s| s.estimator == role && s.eval_set == "real-test")
    };
    let mut out = Vec::new();
    if let Some(base) = test(MEAN_GAZE) {
        for role in ESTIMATOR_ROLES {
            if let Some(s) = test(role).filter(|s| s.mean_deg >= LEARNED_FRACTION * base.mean_deg) {
                out.push(format!(
                    "The {role}-trained estimator ({:.2}°) is within 10% of predicting the mean gaze for every image ({:.2}°): what it learned does not carry over to these test eyes (for the real-trained oracle: it failed to train, and the label-drift figure means little).",
                    s.mean_deg, base.mean_deg
                ));
            }
        }
    }
    if let (Some(s), Some(r)) = (test("synthetic"), test("refined"))
        && r.mean_deg >= s.mean_deg
    {
        out.push(format!(
            "The refined-trained estimator ({:.2}°) is not better than the synthetic-trained one ({:.2}°): refinement did not help on this run (see the sample grid and the discriminator's accuracy).",
            r.mean_deg, s.mean_deg
        ));
    }
    out
}

fn html(summary: &[Summary], has_grid: bool, has_curves: bool, ctx: &StageCtx) -> String {
    let test: Vec<&Summary> = ESTIMATOR_ROLES
        .iter()
        .filter_map(|r| {
            summary
                .iter()
                .find(|s| s.estimator == *r && s.eval_set == "real-test")
        })
        .collect();
    let mut h = String::new();
    h.push_str("<!doctype html><html><head><meta charset=\"utf-8\"><title>simgan report</title><style>body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}th{background:#f4f4f4}td:first-child{text-align:left}img{max-width:100%;border:1px solid #ddd}.gain{font-size:1.3em}.warn{background:#fff4e5;border:1px solid #f0a040;padding:4px 12px}</style></head><body>");
    let _ = write!(
        h,
        "<h1>SimGAN report</h1><p>Run root <code>{}</code>, stage <code>{}</code>.</p>",
        esc(ctx.root.url()),
        esc(ctx.stage)
    );
    let get = |r: &str| test.iter().find(|s| s.estimator == r);
    if let (Some(s), Some(r)) = (get("synthetic"), get("refined")) {
        let gain = 100.0 * (s.mean_deg - r.mean_deg) / s.mean_deg;
        let _ = write!(
            h,
            "<p class=\"gain\" id=\"gain\">Refined-trained estimator: <b>{:.2}°</b> mean error on real test eyes vs <b>{:.2}°</b> for the synthetic-trained one — <b id=\"gain-pct\">{gain:.1}%</b> lower (paper, Table 3: 11.2° → 7.8°, 30% lower).</p>",
            r.mean_deg, s.mean_deg
        );
    }
    let warnings = checks(summary);
    if warnings.is_empty() {
        h.push_str("<p id=\"checks\">Checks passed: every estimator beats the constant mean-gaze predictor and refinement lowered the error.</p>");
    } else {
        h.push_str(
            "<div id=\"checks\" class=\"warn\"><b>Read the numbers below with care:</b><ul>",
        );
        for w in &warnings {
            let _ = write!(h, "<li>{}</li>", esc(w));
        }
        h.push_str("</ul></div>");
    }
    if has_grid {
        h.push_str("<h2>Samples</h2><p>Rows: synthetic | the same images refined | real.</p><img id=\"samples\" src=\"samples.png\" alt=\"sample grid\">");
    }
    h.push_str("<h2>Gaze error on the real test set</h2><table id=\"errors\"><tr><th>trained on</th><th>n</th><th>mean (°)</th><th>median (°)</th><th>within 7° (%)</th><th>paper mean (°)</th><th>paper within 7° (%)</th></tr>");
    for s in &test {
        let paper = PAPER
            .iter()
            .find(|p| p.0 == s.estimator)
            .map(|p| (p.1, p.2))
            .unwrap_or(("—", "—"));
        let _ = write!(
            h,
            "<tr data-estimator=\"{0}\"><td>{0}</td><td>{1}</td><td class=\"mean\">{2:.2}</td><td>{3:.2}</td><td class=\"within7\">{4:.1}</td><td>{5}</td><td>{6}</td></tr>",
            esc(&s.estimator),
            s.n,
            s.mean_deg,
            s.median_deg,
            s.within[7],
            paper.0,
            paper.1
        );
    }
    h.push_str("</table><p>Paper: Shrivastava et al. 2017, MPIIGaze (Table 3 mean error; Table 2 % within 7°, 62.3 → 69.4). Our numbers are on the built-in procedural domains unless the pipeline ingests UnityEyes and MPIIGaze.</p>");
    h.push_str(
        "<h2>% within d°</h2><img id=\"within\" src=\"within.svg\" alt=\"within d curves\">",
    );
    if has_curves {
        h.push_str("<h2>Training</h2><img id=\"losses\" src=\"losses.svg\" alt=\"loss curves\"><img id=\"accuracy\" src=\"accuracy.svg\" alt=\"discriminator accuracy\">");
    }
    let drift = summary.iter().find(|s| s.eval_set == "drift");
    let orc = |set: &str| {
        summary
            .iter()
            .find(|s| s.estimator == "real" && s.eval_set == set)
    };
    if let Some(d) = drift {
        let _ = write!(
            h,
            "<h2>Label preservation</h2><p id=\"drift\">The oracle (trained on real) predicts gaze on synthetic images and on the same images refined: predictions differ by <b>{:.2}° ± {:.2}°</b> (mean ± std, n = {}), the gaze drift the refiner introduced. The paper reports the refiner moves the pupil 1.1 ± 0.8 px (of ≈ 55 px).",
            d.mean_deg, d.std_deg, d.n
        );
        if let (Some(a), Some(b)) = (orc("synthetic"), orc("refined")) {
            let _ = write!(
                h,
                " Oracle error against the synthetic labels: {:.2}° on synthetic images, {:.2}° on refined images.",
                a.mean_deg, b.mean_deg
            );
        }
        h.push_str("</p>");
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
        "Write the HTML report: samples, losses, errors vs the paper, label drift"
    }
    fn code_version(&self) -> &'static str {
        "2"
    }
    fn params(&self) -> &'static [ParamSpec] {
        &[]
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
        let bytes = ctx.root.get_required(&art.path)?;
        let summary: Vec<Summary> =
            serde_json::from_slice(&bytes).map_err(|source| Error::Json {
                path: ctx.root.url_of(&art.path),
                source,
            })?;
        let within: Vec<(String, Vec<(f64, f64)>)> = ESTIMATOR_ROLES
            .iter()
            .filter_map(|r| {
                summary
                    .iter()
                    .find(|s| s.estimator == *r && s.eval_set == "real-test")
            })
            .map(|s| {
                (
                    format!("trained on {}", s.estimator),
                    s.within
                        .iter()
                        .enumerate()
                        .map(|(d, v)| (d as f64, *v))
                        .collect(),
                )
            })
            .collect();
        out.artifact(
            "within.svg",
            svg_chart(
                "Real test eyes within d° of the true gaze",
                "d (degrees)",
                "% of test images",
                &within,
            ),
        )?;
        let curves = loss_curves(ctx)?;
        if let Some((losses, acc)) = &curves {
            out.artifact("losses.svg", losses.clone())?;
            out.artifact("accuracy.svg", acc.clone())?;
        }
        let grid = sample_grid(ctx)?;
        if let Some(png) = &grid {
            out.artifact("samples.png", png.clone())?;
        }
        for w in checks(&summary) {
            tracing::warn!(stage = ctx.stage, "{w}");
        }
        out.artifact(
            "report.html",
            html(&summary, grid.is_some(), curves.is_some(), ctx),
        )?;
        out.write(&summary_batch(&summary)?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(estimator: &str, mean_deg: f64) -> Summary {
        Summary {
            estimator: estimator.into(),
            eval_set: "real-test".into(),
            n: 10,
            mean_deg,
            median_deg: mean_deg,
            std_deg: 1.0,
            within: vec![0.0; 21],
        }
    }

    #[test]
    fn checks_flag_unlearned_estimators_and_a_refinement_that_did_not_help() {
        let good = [
            row("synthetic", 10.0),
            row("refined", 8.0),
            row("real", 5.0),
            row(MEAN_GAZE, 20.0),
        ];
        assert!(checks(&good).is_empty());

        let bad = [
            row("synthetic", 10.0),
            row("refined", 12.0),
            row("real", 19.0),
            row(MEAN_GAZE, 20.0),
        ];
        let w = checks(&bad);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("real-trained") && w[0].contains("19.00°"));
        assert!(w[1].contains("not better") && w[1].contains("12.00°"));
        // Without the baseline (an older score stage) only the comparison is checked.
        assert_eq!(checks(&bad[..3]).len(), 1);
    }
}
