//! `ingest-nyu`: the NYU hand pose dataset ([`super::nyu`]) into `hand_sample` shards — the real
//! depth frames (`source_maps = "real"`) or NYU's synthetic renders of the same poses
//! (`"synth"`, the paper's synthetic set), one Kinect's view, cropped to a metric cube around the
//! palm and resized.
//!
//! Planning only lists each split folder (`train/`, `test/`): frame numbers come from the depth
//! PNGs' names, and units are ranges of `frames_per_shard` frame numbers from 1 to the highest
//! listed. A unit reads its split's `joint_data.mat` and its frames. Bad input follows
//! `on_error` and is named by file: an undecodable PNG, a frame number with no PNG (a gap in the
//! listing, or frames the `.mat` has beyond the last PNG), a PNG with no joints in the `.mat`, an
//! unreadable `.mat` (every frame of the unit).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use serde_json::json;

use super::generate::{NETWORK_DEPTH, frames_batch, stage_schema};
use super::nyu::{self, NyuJoints};
use super::render::Frame;
use crate::error::Result;
use crate::params::{ParamSpec, ParamType};
use crate::schema::DeclaredSchema;
use crate::stages::common::{ON_ERROR, SOURCE, handle, read_input};
use crate::stages::{InputSpec, StageCtx, StageKind, UnitOutput, UnitSpec};
use crate::storage::Root;

/// The `ingest-nyu` kind.
pub struct IngestNyu;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::new(
        "source_maps",
        ParamType::Choice(&["real", "synth"]),
        "\"real\"",
        "real: the Kinect depth frames (depth_K_*.png, domain real); synth: NYU's renders of the same poses (synthdepth_K_*.png, domain synthetic)",
    ),
    ParamSpec::new(
        "kinect",
        ParamType::Int { min: 1, max: 3 },
        "1",
        "Which camera (1 = the frontal view the evaluation uses)",
    ),
    ParamSpec::new(
        "splits",
        ParamType::StrList,
        "[\"train\", \"test\"]",
        "Split folders to read; each becomes the rows' split",
    ),
    ParamSpec::new(
        "size",
        ParamType::Int { min: 16, max: 512 },
        "224",
        "Crop side in pixels (the paper: 224; smaller for CPU runs)",
    ),
    ParamSpec::new(
        "cube_mm",
        ParamType::Float {
            min: 50.0,
            max: 1000.0,
        },
        "300.0",
        "Side of the metric crop cube around the palm joint, mm",
    ),
    ParamSpec::new(
        "depth_max_mm",
        ParamType::Float {
            min: 100.0,
            max: 65535.0,
        },
        "2000.0",
        "Largest depth stored, mm (network_depth = \"absolute\": the depth the networks see as +1, 0 mm being −1); a frame whose cube reaches past it is bad input",
    ),
    NETWORK_DEPTH,
    ParamSpec::new(
        "max_frames",
        ParamType::Int {
            min: 0,
            max: 100_000_000,
        },
        "0",
        "Read only the first N frames of each split (0 = all)",
    ),
    ParamSpec::new(
        "frames_per_shard",
        ParamType::Int {
            min: 1,
            max: 10_000_000,
        },
        "4000",
        "Frames per Parquet shard (one work unit each)",
    ),
    ON_ERROR,
];

/// The file name prefix of the chosen depth maps.
fn prefix(ctx: &StageCtx) -> Result<String> {
    let maps = match ctx.params.str("source_maps")? {
        "synth" => "synthdepth",
        _ => "depth",
    };
    Ok(format!("{maps}_{}_", ctx.params.int("kinect")?))
}

/// Frame number of `name` if it is `<prefix>NNNNNNN.png` (exactly seven digits, NYU's).
fn frame_number(name: &str, prefix: &str) -> Option<u64> {
    name.strip_prefix(prefix)?
        .strip_suffix(".png")
        .filter(|d| d.len() == 7 && d.bytes().all(|b| b.is_ascii_digit()))?
        .parse()
        .ok()
}

/// A split's parsed `joint_data.mat` (NYU train's is ≈ 190 MB of f64), shared by the units of
/// the split that run in this process: keyed by the object's URL, size and version tag, so a
/// changed file is read again. The two most recently used splits are kept.
type JointCache = Vec<((String, u64, String), Arc<NyuJoints>)>;
static JOINTS: Mutex<JointCache> = Mutex::new(Vec::new());

/// The joints of `rel` under `source`, from [`JOINTS`] or read and parsed (then cached);
/// `Err(reason)` for a missing or bad file (not cached: every unit names it).
fn split_joints(
    source: &crate::storage::Root,
    rel: &str,
) -> Result<std::result::Result<Arc<NyuJoints>, String>> {
    let url = source.url_of(rel);
    let Some((size, tag)) = source.version_tag(rel)? else {
        return Ok(Err(format!("{url}: not found")));
    };
    let key = (url.clone(), size, tag);
    let cached = |cache: &JointCache| {
        cache
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, j)| j.clone())
    };
    if let Some(j) = JOINTS.lock().ok().and_then(|c| cached(&c)) {
        return Ok(Ok(j));
    }
    let parsed = read_input(source, rel)?
        .and_then(|b| nyu::parse_joints(&b).map_err(|e| format!("{url}: {e}")))
        .map(Arc::new);
    if let (Ok(j), Ok(mut cache)) = (&parsed, JOINTS.lock()) {
        cache.retain(|(k, _)| *k != key);
        cache.push((key, j.clone()));
        if cache.len() > 2 {
            cache.remove(0);
        }
    }
    Ok(parsed)
}

/// One frame: read its PNG (storage failures fail the stage), decode, crop.
#[allow(clippy::too_many_arguments)]
fn one_frame(
    source: &Root,
    rel: &str,
    joints: &NyuJoints,
    kinect: usize,
    k: u64,
    size: u32,
    cube: f32,
    depth_max: f32,
) -> Result<std::result::Result<Frame, String>> {
    let url = source.url_of(rel);
    if k == 0 || k as usize > joints.frames {
        return Ok(Err(format!(
            "{url}: frame {k} has no joints in joint_data.mat ({} frames)",
            joints.frames
        )));
    }
    let png = match read_input(source, rel)? {
        Ok(b) => b,
        Err(e) => return Ok(Err(e)),
    };
    let (uvd, xyz) = joints.eval_joints(kinect, k as usize - 1);
    let back = uvd[3 * super::render::PALM + 2] + cube / 2.0;
    if back > depth_max {
        return Ok(Err(format!(
            "{url}: the palm is at {} mm, so the crop cube reaches {back} mm, beyond depth_max_mm = {depth_max}",
            uvd[3 * super::render::PALM + 2]
        )));
    }
    Ok(nyu::decode_depth(&png)
        .and_then(|(w, h, d)| nyu::crop(&d, w, h, &uvd, &xyz, size, cube))
        .map_err(|e| format!("{url}: {e}")))
}

impl StageKind for IngestNyu {
    fn name(&self) -> &'static str {
        "ingest-nyu"
    }
    fn about(&self) -> &'static str {
        "Ingest the NYU hand pose dataset (real or synthetic depth, one Kinect) as metric hand crops with 14 joints"
    }
    fn code_version(&self) -> &'static str {
        "1"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn inputs(&self) -> &'static [InputSpec] {
        SOURCE
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
        let source = ctx.location_input("source")?;
        let prefix = prefix(ctx)?;
        let per = ctx.params.int("frames_per_shard")? as u64;
        let max_frames = ctx.params.int("max_frames")? as u64;
        let mut units = Vec::new();
        for split in ctx.params.str_list("splits")? {
            let mut last: BTreeMap<u64, ()> = BTreeMap::new();
            for l in source.list(&split)? {
                let name = l.path.rsplit('/').next().unwrap_or(&l.path);
                if let Some(k) = frame_number(name, &prefix) {
                    last.insert(k, ());
                }
            }
            let Some((&top, _)) = last.iter().next_back() else {
                return Err(ctx.err(format!(
                    "no {prefix}NNNNNNN.png frames under {}",
                    source.url_of(&split)
                )));
            };
            let top = if max_frames > 0 {
                top.min(max_frames)
            } else {
                top
            };
            let mut first = 1;
            while first <= top {
                let end = (first + per - 1).min(top);
                units.push(UnitSpec {
                    index: units.len(),
                    spec: json!({
                        "split": split,
                        "first": first,
                        "last": end,
                        // The unit covering the highest listed frame also accounts for frames
                        // the .mat has beyond it.
                        "tail": end == top && max_frames == 0,
                    }),
                });
                first = end + 1;
            }
        }
        Ok(units)
    }

    fn run_unit(&self, ctx: &StageCtx, unit: &UnitSpec, out: &mut UnitOutput) -> Result<()> {
        let source = ctx.location_input("source")?;
        let field = |k: &str| {
            unit.spec[k]
                .as_u64()
                .ok_or_else(|| ctx.err(format!("unit spec lacks `{k}`")))
        };
        let split = unit.spec["split"]
            .as_str()
            .ok_or_else(|| ctx.err("unit spec lacks `split`"))?
            .to_string();
        let (first, last) = (field("first")?, field("last")?);
        let skip = ctx.params.str("on_error")? == "skip";
        let prefix = prefix(ctx)?;
        let kinect = ctx.params.usize("kinect")? - 1;
        let size = ctx.params.usize("size")? as u32;
        let cube = ctx.params.float("cube_mm")? as f32;
        let depth_max = ctx.params.float("depth_max_mm")? as f32;
        let domain = match ctx.params.str("source_maps")? {
            "synth" => "synthetic",
            _ => "real",
        };
        let mat_rel = format!("{split}/joint_data.mat");
        let joints = split_joints(source, &mat_rel)?;
        let joints = match joints {
            Ok(j) if kinect < j.kinects => j,
            Ok(j) => {
                let reason = format!(
                    "{}: has {} kinects, `kinect` = {} asked for",
                    source.url_of(&mat_rel),
                    j.kinects,
                    kinect + 1
                );
                // Every frame of the unit is lost with its labels.
                handle::<()>(ctx, out, skip, &source.url_of(&mat_rel), Err(reason))?;
                return Ok(());
            }
            Err(reason) => {
                handle::<()>(ctx, out, skip, &source.url_of(&mat_rel), Err(reason))?;
                return Ok(());
            }
        };
        let mut numbers: Vec<u64> = (first..=last).collect();
        if unit.spec["tail"].as_bool().unwrap_or(false) {
            numbers.extend(last + 1..=joints.frames as u64);
        }
        let schema = stage_schema(ctx)?;
        for chunk in numbers.chunks(1024) {
            let done: Vec<(String, String, std::result::Result<Frame, String>)> = chunk
                .par_iter()
                .map(|&k| {
                    let rel = format!("{split}/{prefix}{k:07}.png");
                    let r = one_frame(source, &rel, &joints, kinect, k, size, cube, depth_max)?;
                    let id = format!("nyu-{split}-{prefix}{k:07}");
                    Ok((id, rel, r))
                })
                .collect::<Result<_>>()?;
            let mut rows: Vec<(String, Vec<u8>, bool, Frame)> = Vec::with_capacity(done.len());
            let mut sources = Vec::with_capacity(done.len());
            for (id, rel, r) in done {
                let url = source.url_of(&rel);
                let Some(frame) = handle(ctx, out, skip, &url, r)? else {
                    continue;
                };
                let png = frame.png(&id)?;
                rows.push((id, png, split == "test", frame));
                sources.push(url);
            }
            if !rows.is_empty() {
                let sources: Vec<&str> = sources.iter().map(String::as_str).collect();
                out.write(&frames_batch(
                    &schema,
                    &rows,
                    domain,
                    Some(&split),
                    Some(&sources),
                )?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mat::{MatValue, NumericData, write_mat};

    fn joint_mat(frames: usize) -> Vec<u8> {
        let array = || MatValue::Numeric {
            dims: vec![1, frames, 36, 3],
            data: NumericData::F64(vec![1.0; frames * 36 * 3]),
        };
        write_mat(
            &[("joint_uvd".into(), array()), ("joint_xyz".into(), array())],
            false,
        )
    }

    /// The units of a split share one parse of its `joint_data.mat`; a changed file is parsed
    /// again; a missing one is named, not cached.
    #[test]
    fn split_joints_are_parsed_once_per_file_version() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = Root::open(dir.path().to_str().unwrap_or_default(), rt.handle().clone())
            .unwrap_or_else(|e| panic!("{e}"));
        let get = |rel: &str| {
            split_joints(&root, rel)
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|e| panic!("{e}"))
        };
        root.put("train/joint_data.mat", joint_mat(2))
            .unwrap_or_else(|e| panic!("{e}"));
        let (a, b) = (get("train/joint_data.mat"), get("train/joint_data.mat"));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.frames, 2);
        root.put("train/joint_data.mat", joint_mat(3))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(get("train/joint_data.mat").frames, 3);
        let missing = split_joints(&root, "test/joint_data.mat").unwrap_or_else(|e| panic!("{e}"));
        assert!(missing.is_err_and(|e| e.contains("test/joint_data.mat: not found")));
    }
}
