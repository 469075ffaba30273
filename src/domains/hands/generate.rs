//! `generate-hands`: the built-in procedural hand-pose dataset ([`super::render`]) — depth crops
//! of an articulated hand with its 14 joints, in the synthetic look (exact depth, sharp
//! silhouettes) or the real-like look (a Kinect-style sensor and another pose distribution) — so
//! the paper's second experiment runs with nothing downloaded.
//!
//! Row `i` is [`super::render::render`]`(params, seed, i)`: the output is the same whatever
//! `rows_per_shard` is and however units are spread over workers. Units are row ranges; rows
//! are rendered and PNG-encoded in parallel on rayon. The schema is `hand_sample` with the
//! `simgan` metadata `{"task": "hand-pose", "label": "joints_uvd", "pixel_range": [0,
//! depth_max_mm]}`, plus `"pixel_window": cube_mm / 2` with `network_depth = "cube"`
//! ([`hand_schema`]).

use std::sync::Arc;

use arrow::array::{ArrayRef, FixedSizeListBuilder, Float32Array, Float32Builder, StringArray};
use arrow::record_batch::RecordBatch;
use rayon::prelude::*;

use super::render::{self, Frame, HandParams, Look};
use crate::error::{Error, Result};
use crate::params::{ParamSpec, ParamType};
use crate::sample::image_column;
use crate::schema::DeclaredSchema;
use crate::stages::{InputSpec, StageCtx, StageKind, UnitOutput, UnitSpec};

/// The `generate-hands` kind.
pub struct GenerateHands;

/// How the networks see a depth crop (`generate-hands` and `ingest-nyu`).
pub const NETWORK_DEPTH: ParamSpec = ParamSpec::new(
    "network_depth",
    ParamType::Choice(&["absolute", "cube"]),
    "\"absolute\"",
    "How networks see the stored millimetres (written into the schema as pixel_range / pixel_window): absolute = 0…depth_max_mm ↦ −1…1, the same for every crop; cube = each crop centred on the median of its hand pixels, ± cube_mm/2 ↦ ±1, background +1 (DeepPrior++'s normalisation; the hand at full contrast, but on the demo over 3 seeds no better for the estimators and the refiner learned nothing: see README)",
);

/// The `hand_sample` schema a hand stage writes: its `depth_max_mm`, and the per-image window
/// its `network_depth` asks for (half of `cube_mm`, or none).
pub fn stage_schema(ctx: &StageCtx) -> Result<DeclaredSchema> {
    let window = match ctx.params.str("network_depth")? {
        "absolute" => None,
        _ => Some(ctx.params.float("cube_mm")? as f32 / 2.0),
    };
    hand_schema(ctx.params.float("depth_max_mm")? as f32, window)
}

const PARAMS: &[ParamSpec] = &[
    ParamSpec::required(
        "domain",
        ParamType::Choice(&["synthetic", "real-like"]),
        "Which look to render",
    ),
    ParamSpec::new(
        "rows",
        ParamType::Int {
            min: 1,
            max: 100_000_000,
        },
        "10000",
        "Number of frames",
    ),
    ParamSpec::new(
        "rows_per_shard",
        ParamType::Int {
            min: 1,
            max: 10_000_000,
        },
        "10000",
        "Rows per Parquet shard (one work unit each)",
    ),
    ParamSpec::new(
        "size",
        ParamType::Int { min: 16, max: 512 },
        "64",
        "Crop side in pixels (the paper: 224)",
    ),
    ParamSpec::new(
        "cube_mm",
        ParamType::Float {
            min: 50.0,
            max: 1000.0,
        },
        "300.0",
        "Side of the metric crop cube around the palm, mm",
    ),
    ParamSpec::new(
        "depth_max_mm",
        ParamType::Float {
            min: 100.0,
            max: 65535.0,
        },
        "1000.0",
        "Largest depth stored, mm (network_depth = \"absolute\": the depth the networks see as +1, 0 mm being −1); must exceed the farthest cube face",
    ),
    NETWORK_DEPTH,
    ParamSpec::new(
        "seed",
        ParamType::Int {
            min: 0,
            max: i64::MAX,
        },
        "0",
        "Random seed (poses and sensor)",
    ),
    ParamSpec::added(
        "pair_with",
        ParamType::Choice(&["none", "synthetic", "real-like"]),
        "\"none\"",
        "Ids as that look's stage would write them (`synthetic-SEED-N`). A frame's hand is drawn from a stream of the seed and row alone, so with that stage's seed and pose params this stage renders the same hands in its own look, with the ids `refine` would keep: a perfect refiner's output, paired for the drift check (see pipelines/hand-pose-ceiling.toml)",
    ),
    ParamSpec::new(
        "test_fraction",
        ParamType::Float { min: 0.0, max: 1.0 },
        "0.0",
        "Fraction of rows marked split=test",
    ),
    ParamSpec::new(
        "pose",
        ParamType::Table,
        "{}",
        "Overrides of the pose distribution: grasp_power, roll_deg, tilt_deg, near_mm, far_mm, jitter_deg",
    ),
    ParamSpec::new(
        "sensor",
        ParamType::Table,
        "{}",
        "Overrides of the real-like sensor: noise_mm, bias_mm, quantise (bool), edge_dropout, flying, grazing, holes",
    ),
];

/// The look's parameters with the pipeline's `pose` and `sensor` overrides applied.
pub fn hand_params(ctx: &StageCtx) -> Result<HandParams> {
    let size = ctx.params.usize("size")? as u32;
    let mut p = match ctx.params.str("domain")? {
        "synthetic" => HandParams::synthetic(size),
        _ => HandParams::real_like(size),
    };
    p.cube_mm = ctx.params.float("cube_mm")? as f32;
    for (key, value) in ctx.params.table("pose")? {
        let num = value
            .as_f64()
            .map(|v| v as f32)
            .ok_or_else(|| ctx.err(format!("param `pose`: `{key}` = {value} is not a number")))?;
        let slot = match key.as_str() {
            "grasp_power" => &mut p.pose.grasp_power,
            "roll_deg" => &mut p.pose.roll_deg,
            "tilt_deg" => &mut p.pose.tilt_deg,
            "near_mm" => &mut p.pose.near_mm,
            "far_mm" => &mut p.pose.far_mm,
            "jitter_deg" => &mut p.pose.jitter_deg,
            other => {
                return Err(ctx.err(format!(
                    "param `pose`: unknown knob `{other}` (grasp_power, roll_deg, tilt_deg, near_mm, far_mm, jitter_deg)"
                )));
            }
        };
        *slot = num;
    }
    for (key, value) in ctx.params.table("sensor")? {
        if key == "quantise" {
            p.sensor.quantise = value.as_bool().ok_or_else(|| {
                ctx.err(format!(
                    "param `sensor`: `quantise` = {value} is not true/false"
                ))
            })?;
            continue;
        }
        let num = value
            .as_f64()
            .map(|v| v as f32)
            .ok_or_else(|| ctx.err(format!("param `sensor`: `{key}` = {value} is not a number")))?;
        let slot = match key.as_str() {
            "noise_mm" => &mut p.sensor.noise_mm,
            "bias_mm" => &mut p.sensor.bias_mm,
            "edge_dropout" => &mut p.sensor.edge_dropout,
            "flying" => &mut p.sensor.flying,
            "grazing" => &mut p.sensor.grazing,
            "holes" => &mut p.sensor.holes,
            other => {
                return Err(ctx.err(format!(
                    "param `sensor`: unknown knob `{other}` (noise_mm, bias_mm, quantise, edge_dropout, flying, grazing, holes)"
                )));
            }
        };
        *slot = num;
    }
    if !(p.pose.near_mm > p.cube_mm / 2.0 && p.pose.far_mm >= p.pose.near_mm) {
        return Err(ctx.err(format!(
            "param `pose`: near_mm ({}) must exceed half the cube ({}) and far_mm ({}) must not be nearer",
            p.pose.near_mm,
            p.cube_mm / 2.0,
            p.pose.far_mm
        )));
    }
    let depth_max = ctx.params.float("depth_max_mm")? as f32;
    if depth_max < p.pose.far_mm + p.cube_mm / 2.0 {
        return Err(ctx.err(format!(
            "param `depth_max_mm` ({depth_max}) is nearer than the farthest cube face ({} mm): depths would be clipped",
            p.pose.far_mm + p.cube_mm / 2.0
        )));
    }
    Ok(p)
}

impl StageKind for GenerateHands {
    fn name(&self) -> &'static str {
        "generate-hands"
    }
    fn about(&self) -> &'static str {
        "Render the procedural hand-pose dataset (16-bit depth crops, 14 joints; synthetic or real-like look)"
    }
    fn code_version(&self) -> &'static str {
        "1"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn inputs(&self) -> &'static [InputSpec] {
        &[]
    }
    fn schema(&self) -> &'static str {
        "hand_sample"
    }
    fn output_schema(&self, ctx: &StageCtx, _units: &[UnitSpec]) -> Result<DeclaredSchema> {
        stage_schema(ctx)
    }
    fn splittable(&self) -> bool {
        true
    }

    fn plan(&self, ctx: &StageCtx) -> Result<Vec<UnitSpec>> {
        crate::stages::common::row_range_units(ctx)
    }

    fn run_unit(&self, ctx: &StageCtx, unit: &UnitSpec, out: &mut UnitOutput) -> Result<()> {
        let (start, count) = crate::stages::common::row_range(ctx, unit)?;
        let params = hand_params(ctx)?;
        let seed = ctx.params.int("seed")? as u64;
        let test_fraction = ctx.params.float("test_fraction")?;
        let domain = match params.look {
            Look::Synthetic => "synthetic",
            Look::RealLike => "real",
        };
        // The id prefix: the paired look's, when there is one.
        let id_prefix = match ctx.params.str("pair_with")? {
            "synthetic" => "synthetic",
            "real-like" => "real",
            _ => domain,
        };
        let schema = stage_schema(ctx)?;
        for chunk_start in (start..start + count).step_by(4096) {
            let chunk_end = (chunk_start + 4096).min(start + count);
            let rows: Vec<(String, Vec<u8>, bool, Frame)> = (chunk_start..chunk_end)
                .into_par_iter()
                .map(|i| {
                    let frame = render::render(&params, seed, i);
                    let id = format!("{id_prefix}-{seed}-{i:08}");
                    let png = frame.png(&id)?;
                    let test = crate::stages::common::is_test_row(seed, i, test_fraction);
                    Ok((id, png, test, frame))
                })
                .collect::<Result<_>>()?;
            out.write(&frames_batch(&schema, &rows, domain, None, None)?)?;
        }
        Ok(())
    }
}

/// Rows `(id, png, is_test, frame)` as a `hand_sample` batch: `split` for every row if given
/// (else test / train from the flag), `sources` per row if given (else `builtin`).
pub(crate) fn frames_batch(
    schema: &DeclaredSchema,
    rows: &[(String, Vec<u8>, bool, Frame)],
    domain: &str,
    split: Option<&str>,
    sources: Option<&[&str]>,
) -> Result<RecordBatch> {
    let n = rows.len();
    let s = |v: Vec<&str>| -> ArrayRef { Arc::new(StringArray::from(v)) };
    let list = |len: i32, get: &dyn Fn(&Frame) -> Vec<f32>| -> ArrayRef {
        let mut b = FixedSizeListBuilder::new(Float32Builder::new(), len);
        for r in rows {
            b.values().append_slice(&get(&r.3));
            b.append(true);
        }
        Arc::new(b.finish())
    };
    let columns: Vec<ArrayRef> = vec![
        s(rows.iter().map(|r| r.0.as_str()).collect()),
        image_column(
            rows.iter().map(|r| r.1.as_slice()),
            rows.iter().map(|r| r.0.as_str()),
        ),
        s(sources
            .map(<[&str]>::to_vec)
            .unwrap_or_else(|| vec!["builtin"; n])),
        s(vec![domain; n]),
        s(rows
            .iter()
            .map(|r| split.unwrap_or(if r.2 { "test" } else { "train" }))
            .collect()),
        list(42, &|f| f.joints_uvd.to_vec()),
        list(42, &|f| f.joints_xyz.to_vec()),
        list(3, &|f| f.center_uvd.to_vec()),
        list(4, &|f| f.crop_box.to_vec()),
        Arc::new(Float32Array::from(
            rows.iter()
                .map(|r| {
                    let f = &r.3;
                    // The cube side, from the box: w px = cube · fx / z.
                    (f.crop_box[2] - f.crop_box[0]) * f.center_uvd[2] / render::FX
                })
                .collect::<Vec<_>>(),
        )),
    ];
    RecordBatch::try_new(schema.arrow.clone(), columns).map_err(|source| Error::Arrow {
        what: "hand rows".into(),
        source,
    })
}

/// The `hand_sample` schema with the task and the depth range the networks see: 0 (background)
/// … `depth_max_mm`, and with `window` each crop centred on its own depth
/// ([`crate::sample::ValueRange`]).
pub fn hand_schema(depth_max_mm: f32, window: Option<f32>) -> Result<DeclaredSchema> {
    let mut meta = serde_json::json!({
        "task": "hand-pose",
        "label": "joints_uvd",
        "pixel_range": [0.0, depth_max_mm],
    });
    if let Some(w) = window {
        meta["pixel_window"] = serde_json::json!(w);
    }
    crate::schema::get("hand_sample")?.extended("hand_sample", &[], &[("simgan", meta.to_string())])
}
