//! `ingest-unityeyes` and `ingest-mpiigaze`: the paper's datasets into eye shards.
//!
//! Both read from a folder or object-store prefix (the `source` input). Planning only lists
//! (metadata, never contents), so a no-change rerun is decided from manifests. Bad input follows
//! `on_error`: `"fail"` stops with the file and field named; `"skip"` records every skipped input
//! with its reason in the manifest (`skipped`). Nothing is dropped silently.

use std::collections::{BTreeMap, HashSet};

use rayon::prelude::*;
use serde_json::json;

use crate::domains::eyes::mpiigaze::{self, MpiiOptions};
use crate::domains::eyes::rows::{EyeRow, to_batch};
use crate::domains::eyes::unityeyes::{self, CropMode};
use crate::error::{Error, Result};
use crate::params::{ParamSpec, ParamType};
use crate::stages::{InputSpec, StageCtx, StageKind, UnitOutput, UnitSpec};
use crate::storage::Root;

use crate::stages::common::{ON_ERROR, SOURCE, handle, read_input};

// ------------------------------------------------------------------------------------------------
// UnityEyes
// ------------------------------------------------------------------------------------------------

/// The `ingest-unityeyes` kind.
pub struct IngestUnityEyes;

const UE_PARAMS: &[ParamSpec] = &[
    ParamSpec::new(
        "crop",
        ParamType::Choice(&["fixed", "width-relative"]),
        "\"fixed\"",
        "fixed: carpedm20's box around the eyelid centre; width-relative: GazeML's eye-width box",
    ),
    ParamSpec::new(
        "crop_w",
        ParamType::Int { min: 8, max: 4096 },
        "140",
        "Fixed crop width in pixels (carpedm20: 140)",
    ),
    ParamSpec::new(
        "crop_h",
        ParamType::Int { min: 8, max: 4096 },
        "84",
        "Fixed crop height in pixels (carpedm20: 84)",
    ),
    ParamSpec::new(
        "crop_scale",
        ParamType::Float {
            min: 0.1,
            max: 10.0,
        },
        "1.5",
        "Width-relative crop: box width = scale × eye width (GazeML: 1.5)",
    ),
    ParamSpec::new(
        "max_head_angle",
        ParamType::Float {
            min: 0.0,
            max: 180.0,
        },
        "180.0",
        "Keep renders with |head pitch| and |head yaw| ≤ this (GazeML: 20)",
    ),
    ParamSpec::new(
        "files_per_shard",
        ParamType::Int {
            min: 1,
            max: 10_000_000,
        },
        "10000",
        "Samples per shard (one work unit each)",
    ),
    ParamSpec::new(
        "split",
        ParamType::Choice(&["train", "test"]),
        "\"train\"",
        "Split written for every row",
    ),
    ON_ERROR,
];

fn ue_crop(ctx: &StageCtx) -> Result<CropMode> {
    Ok(match ctx.params.str("crop")? {
        "width-relative" => CropMode::WidthRelative {
            scale: ctx.params.float("crop_scale")? as f32,
        },
        _ => CropMode::Fixed {
            w: ctx.params.int("crop_w")? as u32,
            h: ctx.params.int("crop_h")? as u32,
        },
    })
}

/// One UnityEyes sample: its stem, `stem.jpg` and `stem.json` (either may be missing in a broken
/// dataset).
type UePair = (String, Option<String>, Option<String>);

/// Every UnityEyes sample under `source`, in numeric order of the stems.
fn ue_pairs(source: &Root) -> Result<Vec<UePair>> {
    let mut by_stem: BTreeMap<String, (Option<String>, Option<String>)> = BTreeMap::new();
    for l in source.list("")? {
        let name = l.path.rsplit('/').next().unwrap_or(&l.path);
        if let Some(stem) = name.strip_suffix(".jpg") {
            by_stem
                .entry(l.path[..l.path.len() - name.len()].to_string() + stem)
                .or_default()
                .0 = Some(l.path.clone());
        } else if let Some(stem) = name.strip_suffix(".json") {
            by_stem
                .entry(l.path[..l.path.len() - name.len()].to_string() + stem)
                .or_default()
                .1 = Some(l.path.clone());
        }
    }
    let mut pairs: Vec<_> = by_stem
        .into_iter()
        .map(|(stem, (j, s))| (stem, j, s))
        .collect();
    // Numeric order for UnityEyes' 1.jpg, 2.jpg, …; lexical for anything else.
    pairs.sort_by(|a, b| match (a.0.parse::<u64>(), b.0.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.0.cmp(&b.0),
    });
    Ok(pairs)
}

/// A JPEG (starts with SOI `FF D8`) whose last marker is not EOI `FF D9` (trailing zero padding
/// allowed), as left by an interrupted copy or download.
fn jpeg_truncated(bytes: &[u8]) -> bool {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let end = bytes.len() - bytes.iter().rev().take_while(|&&b| b == 0).count();
    !bytes[..end].ends_with(&[0xFF, 0xD9])
}

/// One UnityEyes render: fetch its two files (storage failures fail the stage), then parse.
fn ue_one(
    source: &Root,
    stem: &str,
    jpg: Option<&str>,
    json: Option<&str>,
    crop: CropMode,
    max_head: f32,
    split: &str,
) -> Result<std::result::Result<Option<EyeRow>, String>> {
    let (Some(jpg), Some(json)) = (jpg, json) else {
        let missing = if jpg.is_none() {
            format!("image `{stem}.jpg` is missing")
        } else {
            format!("labels `{stem}.json` are missing")
        };
        return Ok(Err(format!("{}: {missing}", source.url_of(stem))));
    };
    let img_bytes = match read_input(source, jpg)? {
        Ok(b) => b,
        Err(e) => return Ok(Err(e)),
    };
    let json_bytes = match read_input(source, json)? {
        Ok(b) => b,
        Err(e) => return Ok(Err(e)),
    };
    Ok(ue_parse(
        source,
        stem,
        jpg,
        json,
        &img_bytes,
        &json_bytes,
        crop,
        max_head,
        split,
    ))
}

/// Parse one UnityEyes render's fetched files into a row (`None`: outside the head-pose range).
#[allow(clippy::too_many_arguments)]
fn ue_parse(
    source: &Root,
    stem: &str,
    jpg: &str,
    json: &str,
    img_bytes: &[u8],
    json_bytes: &[u8],
    crop: CropMode,
    max_head: f32,
    split: &str,
) -> std::result::Result<Option<EyeRow>, String> {
    if jpeg_truncated(img_bytes) {
        // The decoder fills a truncated scan with grey instead of failing: refuse it here.
        return Err(format!(
            "{}: image: truncated JPEG (no end-of-image marker)",
            source.url_of(jpg)
        ));
    }
    // The label first (it needs only the render's height), so a render outside the head-pose
    // range is never decoded; a JPEG then decodes only its crop box.
    let image_err = |e: String| format!("{}: image: {e}", source.url_of(jpg));
    let jpeg = img_bytes.starts_with(&[0xFF, 0xD8]);
    let decoded = if jpeg {
        None
    } else {
        Some(unityeyes::decode_gray(img_bytes).map_err(image_err)?)
    };
    let height = match &decoded {
        Some(img) => img.height(),
        None => {
            crate::jpeg::size(img_bytes)
                .map_err(|e| image_err(e.to_string()))?
                .height
        }
    };
    let label = unityeyes::parse_json(json_bytes, height)
        .map_err(|e| format!("{}: {e}", source.url_of(json)))?;
    if label.head_pose[0].abs() > max_head || label.head_pose[1].abs() > max_head {
        return Ok(None);
    }
    let sample = match &decoded {
        Some(img) => unityeyes::to_sample(img, &label, crop),
        None => unityeyes::to_sample_jpeg(img_bytes, &label, crop),
    }
    .map_err(|e| format!("{}: {e}", source.url_of(jpg)))?;
    let id = format!("unityeyes-{}", stem.replace('/', "-"));
    EyeRow::from_sample(id, &sample, "unityeyes", "synthetic", split, None)
        .map(Some)
        .map_err(|e| e.to_string())
}

impl StageKind for IngestUnityEyes {
    fn name(&self) -> &'static str {
        "ingest-unityeyes"
    }
    fn about(&self) -> &'static str {
        "UnityEyes renders (N.jpg + N.json) → 55×35 eye shards"
    }
    /// 2: only the crop box is decoded, by libjpeg-turbo (1 decoded the whole render with
    /// zune-jpeg; the two IDCTs can differ by one grey level).
    fn code_version(&self) -> &'static str {
        "2"
    }
    fn params(&self) -> &'static [ParamSpec] {
        UE_PARAMS
    }
    fn inputs(&self) -> &'static [InputSpec] {
        SOURCE
    }
    fn schema(&self) -> &'static str {
        "eye_sample"
    }

    fn splittable(&self) -> bool {
        true
    }

    fn plan(&self, ctx: &StageCtx) -> Result<Vec<UnitSpec>> {
        let pairs = ue_pairs(ctx.location_input("source")?)?;
        if pairs.is_empty() {
            return Err(ctx.err(format!(
                "no .jpg/.json files under {}",
                ctx.location_input("source")?.url()
            )));
        }
        let per = ctx.params.usize("files_per_shard")?;
        Ok(pairs
            .chunks(per)
            .enumerate()
            .map(|(i, c)| UnitSpec {
                index: i,
                spec: json!({ "files": c }),
            })
            .collect())
    }

    fn run_unit(&self, ctx: &StageCtx, unit: &UnitSpec, out: &mut UnitOutput) -> Result<()> {
        let source = ctx.location_input("source")?;
        let files: Vec<(String, Option<String>, Option<String>)> =
            serde_json::from_value(unit.spec["files"].clone())
                .map_err(|e| ctx.err(format!("unit spec: {e}")))?;
        let crop = ue_crop(ctx)?;
        let max_head = ctx.params.float("max_head_angle")? as f32;
        let split = ctx.params.str("split")?;
        let skip = ctx.params.str("on_error")? == "skip";
        // Bounded memory: fetch and decode 512 samples at a time, in parallel.
        for chunk in files.chunks(512) {
            let results: Vec<_> = chunk
                .par_iter()
                .map(|(stem, jpg, json)| {
                    ue_one(
                        source,
                        stem,
                        jpg.as_deref(),
                        json.as_deref(),
                        crop,
                        max_head,
                        split,
                    )
                })
                .collect::<Result<_>>()?;
            let mut rows = Vec::with_capacity(results.len());
            for ((stem, _, _), r) in chunk.iter().zip(results) {
                if let Some(Some(row)) = handle(ctx, out, skip, &source.url_of(stem), r)? {
                    rows.push(row);
                }
            }
            if !rows.is_empty() {
                out.write(&to_batch(&rows)?)?;
            }
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------------
// MPIIGaze
// ------------------------------------------------------------------------------------------------

/// The `ingest-mpiigaze` kind.
pub struct IngestMpiiGaze;

const MPII_PARAMS: &[ParamSpec] = &[
    ParamSpec::new(
        "flip_right",
        ParamType::Bool,
        "true",
        "Mirror right eyes into left-eye form (image flipped, gaze x and yaw negated)",
    ),
    ParamSpec::new(
        "eval_subset",
        ParamType::Bool,
        "false",
        "Keep only the samples of `Evaluation Subset/sample list for eye image/pXX.txt`",
    ),
    ParamSpec::new(
        "test_persons",
        ParamType::StrList,
        "[]",
        "Persons (e.g. [\"p00\"]) whose rows get split = test; the rest are train",
    ),
    ON_ERROR,
];

const EVAL_DIR: &str = "Evaluation Subset/sample list for eye image";

impl StageKind for IngestMpiiGaze {
    fn name(&self) -> &'static str {
        "ingest-mpiigaze"
    }
    fn about(&self) -> &'static str {
        "MPIIGaze Data/Normalized/pXX/dayYY.mat → 55×35 eye shards (one shard per person)"
    }
    fn code_version(&self) -> &'static str {
        "1"
    }
    fn params(&self) -> &'static [ParamSpec] {
        MPII_PARAMS
    }
    fn inputs(&self) -> &'static [InputSpec] {
        SOURCE
    }
    fn schema(&self) -> &'static str {
        "eye_sample"
    }

    fn splittable(&self) -> bool {
        true
    }

    fn plan(&self, ctx: &StageCtx) -> Result<Vec<UnitSpec>> {
        let source = ctx.location_input("source")?;
        let mut persons: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for l in source.list("Data/Normalized")? {
            let parts: Vec<&str> = l.path.split('/').collect();
            if let [.., "Normalized", person, file] = parts.as_slice()
                && file.ends_with(".mat")
            {
                persons
                    .entry(person.to_string())
                    .or_default()
                    .push(l.path.clone());
            }
        }
        if persons.is_empty() {
            return Err(ctx.err(format!(
                "no Data/Normalized/pXX/dayYY.mat files under {}",
                source.url()
            )));
        }
        Ok(persons
            .into_iter()
            .enumerate()
            .map(|(i, (p, files))| UnitSpec {
                index: i,
                spec: json!({ "person": p, "files": files }),
            })
            .collect())
    }

    fn run_unit(&self, ctx: &StageCtx, unit: &UnitSpec, out: &mut UnitOutput) -> Result<()> {
        let source = ctx.location_input("source")?;
        let person = unit.spec["person"]
            .as_str()
            .ok_or_else(|| ctx.err("unit spec lacks `person`"))?
            .to_string();
        let files: Vec<String> = serde_json::from_value(unit.spec["files"].clone())
            .map_err(|e| ctx.err(format!("unit spec: {e}")))?;
        let opts = MpiiOptions {
            flip_right: ctx.params.bool("flip_right")?,
        };
        let skip = ctx.params.str("on_error")? == "skip";
        let split = if ctx.params.str_list("test_persons")?.contains(&person) {
            "test"
        } else {
            "train"
        };
        let keep: Option<HashSet<(String, String, String)>> = if ctx.params.bool("eval_subset")? {
            let rel = format!("{EVAL_DIR}/{person}.txt");
            let text = source.get_required(&rel)?;
            let list = mpiigaze::parse_eval_list(&String::from_utf8_lossy(&text)).map_err(|e| {
                Error::Input {
                    file: source.url_of(&rel),
                    field: "line".into(),
                    reason: e.to_string(),
                }
            })?;
            Some(
                list.into_iter()
                    .map(|(d, f, e)| (d, f, e.as_str().to_string()))
                    .collect(),
            )
        } else {
            None
        };
        let parsed: Vec<(
            String,
            std::result::Result<Vec<mpiigaze::MpiiSample>, String>,
        )> = files
            .par_iter()
            .map(|f| {
                let day = f
                    .rsplit('/')
                    .next()
                    .unwrap_or(f)
                    .trim_end_matches(".mat")
                    .to_string();
                let r = read_input(source, f)?.and_then(|b| {
                    mpiigaze::parse_day(&b, &person, &day, &opts)
                        .map_err(|e| format!("{}: {e}", source.url_of(f)))
                });
                Ok((f.clone(), r))
            })
            .collect::<Result<_>>()?;
        for (file, r) in parsed {
            let Some(samples) = handle(ctx, out, skip, &source.url_of(&file), r)? else {
                continue;
            };
            let rows: Vec<EyeRow> = samples
                .par_iter()
                .filter(|s| match (&keep, &s.filename) {
                    (None, _) => true,
                    (Some(k), Some(f)) => {
                        k.contains(&(s.day.clone(), f.clone(), s.eye.as_str().to_string()))
                    }
                    (Some(_), None) => false,
                })
                .map(|s| {
                    let id = format!("mpiigaze-{}-{}-{:04}-{}", s.person, s.day, s.index, s.eye);
                    EyeRow::from_sample(
                        id,
                        &s.sample,
                        "mpiigaze",
                        "real",
                        split,
                        Some(s.person.clone()),
                    )
                })
                .collect::<Result<_>>()?;
            if !rows.is_empty() {
                out.write(&to_batch(&rows)?)?;
            }
        }
        Ok(())
    }
}
