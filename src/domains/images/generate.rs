//! `generate-shapes`: the built-in procedural shapes dataset ([`super::shapes`]) — one of five
//! shapes per RGB image, labelled with its class name (`label`, task `classification`) — in
//! the synthetic look (flat colours, what a simple renderer draws) or the real-like look (the
//! same kind of scenes through a camera model: clutter, uneven light, colour cast, lower
//! contrast, blur, sensor noise), so the S+U pipeline runs on a non-eye domain with nothing
//! downloaded.
//!
//! Row `i` is [`super::shapes::render`]`(params, seed, i)`: the output is the same whatever
//! `rows_per_shard` is and however units are spread over workers. Units are row ranges; rows are
//! rendered and PNG-encoded in parallel on rayon.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::record_batch::RecordBatch;
use rayon::prelude::*;
use serde_json::json;

use super::shapes::{self, CLASSES, Look, ShapeParams};
use crate::error::{Error, Result};
use crate::params::{ParamSpec, ParamType};
use crate::sample::{SampleImage, image_column};
use crate::schema::DeclaredSchema;
use crate::stages::{InputSpec, StageCtx, StageKind, UnitOutput, UnitSpec};

/// The `generate-shapes` kind.
pub struct GenerateShapes;

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
        "Number of images",
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
        ParamType::Int { min: 16, max: 128 },
        "32",
        "Image side in pixels (square RGB)",
    ),
    ParamSpec::new(
        "seed",
        ParamType::Int {
            min: 0,
            max: i64::MAX,
        },
        "0",
        "Random seed (scenes and appearance)",
    ),
    ParamSpec::added(
        "pair_with",
        ParamType::Choice(&["none", "synthetic", "real-like"]),
        "\"none\"",
        "Ids as that look's stage would write them (`synthetic-SEED-N`). A sample's scene is a function of the seed and row alone, so with that stage's seed this stage renders the same scenes in its own look, with the ids `refine` would keep: a perfect refiner's output, paired for the drift check (see pipelines/images-ceiling.toml)",
    ),
    ParamSpec::new(
        "test_fraction",
        ParamType::Float { min: 0.0, max: 1.0 },
        "0.0",
        "Fraction of rows marked split=test",
    ),
    ParamSpec::new(
        "render",
        ParamType::Table,
        "{}",
        "Overrides of the real-like look's knobs: blur_sigma, noise_sigma, texture, lighting, tint ([r, g, b]), contrast",
    ),
];

/// The look's parameters with the pipeline's `render` overrides applied.
fn shape_params(ctx: &StageCtx) -> Result<ShapeParams> {
    let size = ctx.params.usize("size")? as u32;
    let mut p = match ctx.params.str("domain")? {
        "synthetic" => ShapeParams::synthetic(size),
        _ => ShapeParams::real_like(size),
    };
    for (key, value) in ctx.params.table("render")? {
        let bad = || ctx.err(format!("param `render`: `{key}` = {value} is not a number"));
        let num = || value.as_f64().map(|v| v as f32).ok_or_else(bad);
        match key.as_str() {
            "blur_sigma" => p.blur_sigma = num()?,
            "noise_sigma" => p.noise_sigma = num()?,
            "texture" => p.texture = num()?,
            "lighting" => p.lighting = num()?,
            "contrast" => p.contrast = num()?,
            "tint" => {
                let v: Vec<f32> = value
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_f64())
                            .map(|x| x as f32)
                            .collect()
                    })
                    .unwrap_or_default();
                p.tint = v.try_into().map_err(|_| {
                    ctx.err("param `render`: `tint` must be three numbers [r, g, b]")
                })?;
            }
            other => {
                return Err(ctx.err(format!(
                    "param `render`: unknown knob `{other}` (blur_sigma, noise_sigma, texture, lighting, tint, contrast)"
                )));
            }
        }
    }
    Ok(p)
}

impl StageKind for GenerateShapes {
    fn name(&self) -> &'static str {
        "generate-shapes"
    }
    fn about(&self) -> &'static str {
        "Render the procedural shapes dataset (5 classes, RGB; synthetic or real-like look)"
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
    /// `image_sample` plus `label` (string).
    fn schema(&self) -> &'static str {
        "image_sample"
    }
    fn output_schema(&self, _ctx: &StageCtx, _units: &[UnitSpec]) -> Result<DeclaredSchema> {
        shapes_schema()
    }
    fn splittable(&self) -> bool {
        true
    }

    fn plan(&self, ctx: &StageCtx) -> Result<Vec<UnitSpec>> {
        crate::stages::common::row_range_units(ctx)
    }

    fn run_unit(&self, ctx: &StageCtx, unit: &UnitSpec, out: &mut UnitOutput) -> Result<()> {
        let (start, count) = crate::stages::common::row_range(ctx, unit)?;
        let params = shape_params(ctx)?;
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
        let schema = shapes_schema()?;
        for chunk_start in (start..start + count).step_by(4096) {
            let chunk_end = (chunk_start + 4096).min(start + count);
            let rows: Vec<(String, Vec<u8>, &str, &str)> = (chunk_start..chunk_end)
                .into_par_iter()
                .map(|i| {
                    let (img, class) = shapes::render(&params, seed, i);
                    let id = format!("{id_prefix}-{seed}-{i:08}");
                    let png = SampleImage::from_rgb(img).encode_png(&id)?;
                    let split = if crate::stages::common::is_test_row(seed, i, test_fraction) {
                        "test"
                    } else {
                        "train"
                    };
                    Ok((id, png, CLASSES[class % CLASSES.len()], split))
                })
                .collect::<Result<_>>()?;
            let n = rows.len();
            let s = |v: Vec<&str>| -> ArrayRef { Arc::new(StringArray::from(v)) };
            let columns: Vec<ArrayRef> = vec![
                s(rows.iter().map(|r| r.0.as_str()).collect()),
                image_column(
                    rows.iter().map(|r| r.1.as_slice()),
                    rows.iter().map(|r| r.0.as_str()),
                ),
                s(vec!["builtin"; n]),
                s(vec![domain; n]),
                s(rows.iter().map(|r| r.3).collect()),
                s(rows.iter().map(|r| r.2).collect()),
            ];
            let batch = RecordBatch::try_new(schema.arrow.clone(), columns).map_err(|source| {
                Error::Arrow {
                    what: "shape rows".into(),
                    source,
                }
            })?;
            out.write(&batch)?;
        }
        Ok(())
    }
}

/// The shapes schema: the common columns, `label` (the class name), task classification.
pub fn shapes_schema() -> Result<DeclaredSchema> {
    crate::schema::get("image_sample")?.extended(
        "image_sample",
        &[("label", "string")],
        &[(
            "simgan",
            json!({"task": "classification", "label": "label"}).to_string(),
        )],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_declares_the_task_and_the_label() {
        let s = shapes_schema().unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = s.arrow.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "image", "source", "domain", "split", "label"]);
        let meta: serde_json::Value =
            serde_json::from_str(&s.arrow.metadata()["simgan"]).unwrap_or_default();
        assert_eq!(meta["task"], "classification");
    }
}
