//! `refine`: every row of a sample stage (any domain) through a trained refiner, into new shards
//! with the input's schema: the refined image in `image` (same size, channels and bit depth),
//! `domain = "refined"`, and every other column — ids, labels, whatever the domain has — carried
//! unchanged.
//!
//! One work unit per input shard, so a killed refine redoes only unfinished shards and workers can
//! split the shards between them. The units form a pipeline (the runner's read-ahead, see
//! [`StageKind::prepare`]): while one shard computes, the next `read_ahead` shards are fetched
//! and their PNGs decoded on rayon on a reader thread (memory: `read_ahead + lanes` shards of
//! decoded images, whatever the dataset size). Within a unit the images go to the device in
//! batches of `batch_size`, each batch's refined images are PNG-encoded on rayon while the next
//! batch computes (double buffering), and rows stream into the output shard, committed as soon as
//! the unit finishes. `devices = ["cuda:0", "cuda:1"]` runs one lane per device, fed from the same
//! reader. The source image is referenced, not copied: same `id`, and the manifest names the input
//! stage version and the refiner version (lineage). `identity = true` skips the network (a
//! benchmark of the pipeline's own cost: `simgan bench --sections host`).

use arrow::record_batch::RecordBatch;
use burn::tensor::backend::AutodiffBackend;
use rayon::prelude::*;
use serde_json::json;

use super::common::{self, DEVICE_PARAM, PRECISION_PARAM};
use super::{InputKind, InputSpec, PreparedInput, StageCtx, StageKind, UnitOutput, UnitSpec};
use crate::error::{Error, Result};
use crate::nn::{self, BackendJob, NnError};
use crate::params::{ParamSpec, ParamType};
use crate::sample::{self, SampleImage};
use crate::schema::DeclaredSchema;

/// The `refine` kind.
#[derive(Default)]
pub struct Refine {
    /// The refiner's weights, fetched once per refiner artifact (not once per shard), keyed by
    /// the artifact's URL and checksum (one registry may serve several roots).
    weights: std::sync::Mutex<Option<(String, bytes::Bytes)>>,
}

impl Refine {
    /// The bytes of the weights artifact (cached: every unit uses the same refiner).
    fn weights(&self, ctx: &StageCtx, artifact: &crate::shards::ShardInfo) -> Result<bytes::Bytes> {
        let key = format!("{} {}", ctx.root.url_of(&artifact.path), artifact.checksum);
        let mut cached = self
            .weights
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((k, b)) = cached.as_ref()
            && *k == key
        {
            return Ok(b.clone());
        }
        let b = crate::shards::fetch(ctx.root, artifact)?;
        *cached = Some((key, b.clone()));
        Ok(b)
    }
}

const INPUTS: &[InputSpec] = &[
    InputSpec {
        role: "data",
        kind: InputKind::Stage,
        required: true,
        doc: "Sample stage to refine (every row, any domain)",
    },
    InputSpec {
        role: "refiner",
        kind: InputKind::Stage,
        required: true,
        doc: "A train-refiner stage",
    },
];

const PARAMS: &[ParamSpec] = &[
    DEVICE_PARAM,
    ParamSpec::new(
        "devices",
        ParamType::StrList,
        "[]",
        "Several devices, one lane each (e.g. [\"cuda:0\", \"cuda:1\"]); empty: `device`",
    ),
    ParamSpec::new(
        "batch_size",
        ParamType::Int {
            min: 1,
            max: 1 << 20,
        },
        "256",
        "Images per device batch",
    ),
    ParamSpec::new(
        "read_ahead",
        ParamType::Int { min: 0, max: 64 },
        "2",
        "Input shards fetched and decoded ahead of the one computing",
    ),
    PRECISION_PARAM,
    ParamSpec::new(
        "identity",
        ParamType::Bool,
        "false",
        "Benchmark mode: skip the network (each batch still goes to the device and back, and \
         every host step runs: fetch, decode, conversion, encode, write), so the stage's time is \
         the pipeline's own cost; the output is the input's images",
    ),
];

/// The devices of the lanes: `devices`, else `[device]`.
fn lane_devices(ctx: &StageCtx) -> Result<Vec<nn::DeviceSpec>> {
    let list = ctx.params.str_list("devices")?;
    if list.is_empty() {
        return Ok(vec![common::device(ctx)?]);
    }
    list.iter()
        .map(|s| common::parse_device(ctx, "devices", s))
        .collect()
}

/// One input shard, fetched and decoded: its rows (every column) and their images.
struct ShardInput {
    rows: Vec<RecordBatch>,
    images: Vec<SampleImage>,
    /// The pixel values the networks see as `[-1, 1]` (the input schema's).
    range: sample::ValueRange,
}

/// Refine decoded images in batches on one backend.
struct RefineJob<'a> {
    stage: &'a str,
    weights: &'a [u8],
    images: Vec<SampleImage>,
    range: sample::ValueRange,
    batch_size: usize,
    /// Seed of this unit's noise (from the input shard's checksum).
    seed: u64,
    /// Skip the network (the `identity` param).
    identity: bool,
    /// The refiner's float type on the device (the `precision` param).
    precision: nn::Precision,
}

impl BackendJob for RefineJob<'_> {
    type Output = Result<Vec<Vec<u8>>>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let err = |e: NnError| Error::stage(self.stage, e.to_string());
        let refiner = match self.identity {
            true => None,
            false => Some(nn::cast_module(
                nn::load_refiner::<B::InnerBackend>(self.weights, &device)
                    .map_err(err)?
                    .0,
                self.precision,
            )),
        };
        let mut pngs: Vec<Vec<u8>> = Vec::with_capacity(self.images.len());
        let mut pending: Option<Vec<SampleImage>> = None;
        let bits = self.images.first().map(|i| i.format().bits).unwrap_or(8);
        for (k, chunk) in self.images.chunks(self.batch_size).enumerate() {
            // A refiner with noise inputs gets them from a generator seeded per batch from the
            // unit's seed (drawn on the host, per image), so a shard refines the same way every
            // time, after a resume, on any lane or device.
            let batch_seed = self.seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let x =
                sample::to_tensor::<B::InnerBackend>(chunk, self.range, &device).map_err(err)?;
            // [batch, c, h, w], computed lazily by the device
            let y = match &refiner {
                Some(r) => {
                    let p = self.precision;
                    let y = nn::refine_seeded(r, p.cast(x), batch_seed);
                    p.cast_back(y)
                }
                None => x,
            };
            // Encode the previous batch on rayon while this one computes.
            let (encoded, refined) = rayon::join(
                || {
                    pending.take().map(|imgs| {
                        imgs.par_iter()
                            .map(|i| i.encode_png("refined image"))
                            .collect::<Result<Vec<_>>>()
                    })
                },
                || sample::from_tensor(y, bits, self.range, chunk).map_err(err),
            );
            if let Some(e) = encoded {
                pngs.extend(e?);
            }
            pending = Some(refined?);
        }
        if let Some(imgs) = pending {
            pngs.extend(
                imgs.par_iter()
                    .map(|i| i.encode_png("refined image"))
                    .collect::<Result<Vec<_>>>()?,
            );
        }
        Ok(pngs)
    }
}

impl StageKind for Refine {
    fn name(&self) -> &'static str {
        "refine"
    }
    fn about(&self) -> &'static str {
        "Refine every image of a sample stage with a trained refiner (other columns carried)"
    }
    /// 3: noise channels drawn on the host from a per-batch seeded generator (2 drew them from
    /// the backend's process-wide one, which concurrent lanes could interleave).
    fn code_version(&self) -> &'static str {
        "3"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn inputs(&self) -> &'static [InputSpec] {
        INPUTS
    }
    /// The input's own schema (read from its first shard), whatever the domain.
    fn schema(&self) -> &'static str {
        "the `data` input's"
    }

    fn output_schema(&self, ctx: &StageCtx, _units: &[UnitSpec]) -> Result<DeclaredSchema> {
        let data = ctx.stage_input("data")?;
        let first = data
            .manifest
            .shards
            .first()
            .ok_or_else(|| ctx.err("input `data` has no shards"))?;
        let batches = crate::shards::read(ctx.root, first, None)?;
        let schema = batches
            .first()
            .map(|b| b.schema())
            .ok_or_else(|| ctx.err(format!("input shard `{}` has no rows", first.path)))?;
        sample::check_common(&schema, &ctx.root.url_of(&first.path))?;
        let (name, version) = data
            .manifest
            .schema
            .split_once('@')
            .map(|(n, v)| (n.to_string(), v.parse().unwrap_or(1)))
            .unwrap_or_else(|| (data.manifest.schema.clone(), 1));
        Ok(DeclaredSchema::found(&name, version, schema))
    }

    fn splittable(&self) -> bool {
        true
    }

    fn read_ahead(&self, ctx: &StageCtx) -> Result<usize> {
        ctx.params.usize("read_ahead")
    }

    fn lanes(&self, ctx: &StageCtx) -> Result<usize> {
        Ok(lane_devices(ctx)?.len())
    }

    fn prepare(&self, ctx: &StageCtx, unit: &UnitSpec) -> Result<PreparedInput> {
        let shard = unit.spec["shard"]
            .as_str()
            .ok_or_else(|| ctx.err("unit spec lacks `shard`"))?;
        let url = ctx.root.url_of(shard);
        // The input shard as its manifest recorded it (size and sha256 checked as it streams).
        let data = ctx.stage_input("data")?;
        let info = data
            .manifest
            .shards
            .get(unit.index)
            .filter(|s| s.path == shard)
            .ok_or_else(|| {
                ctx.err(format!(
                    "unit {} names `{shard}`, which is not input shard {}",
                    unit.index, unit.index
                ))
            })?;
        let rows = crate::shards::read(ctx.root, info, None)?;
        let mut images = Vec::new();
        for batch in &rows {
            sample::check_common(&batch.schema(), &url)?;
            let ids = sample::strings(batch, "id", &url)?;
            let bytes = sample::image_bytes(batch, &url)?;
            images.par_extend(
                (0..batch.num_rows())
                    .into_par_iter()
                    .map(|i| {
                        SampleImage::decode(
                            bytes.value(i),
                            &format!("{url} row `{}`", ids.value(i)),
                        )
                    })
                    .collect::<Result<Vec<_>>>()?,
            );
        }
        let bits = images.first().map(|i| i.format().bits).unwrap_or(8);
        let range = match rows.first() {
            Some(b) => sample::ValueRange::of(&b.schema(), bits),
            None => sample::ValueRange::full(bits),
        };
        Ok(Box::new(ShardInput {
            rows,
            images,
            range,
        }))
    }

    fn run_prepared(
        &self,
        ctx: &StageCtx,
        unit: &UnitSpec,
        prepared: PreparedInput,
        lane: usize,
        out: &mut UnitOutput,
    ) -> Result<()> {
        let input = prepared
            .downcast::<ShardInput>()
            .map_err(|_| ctx.err("prepared input is not a decoded shard"))?;
        let ShardInput {
            rows,
            images,
            range,
        } = *input;
        let devices = lane_devices(ctx)?;
        let device = devices
            .get(lane)
            .ok_or_else(|| ctx.err(format!("no device for lane {lane}")))?;
        let refiner = ctx.stage_input("refiner")?;
        let weights_path = refiner
            .manifest
            .artifacts
            .iter()
            .find(|a| a.path.ends_with("/refiner.safetensors"))
            .ok_or_else(|| {
                ctx.err(format!(
                    "input `refiner` (stage {}) has no refiner.safetensors artifact",
                    refiner.manifest.stage
                ))
            })?;
        let weights = self.weights(ctx, weights_path)?;
        let seed = unit.spec["seed"].as_u64().unwrap_or(unit.index as u64);
        let job = RefineJob {
            stage: ctx.stage,
            weights: &weights,
            images,
            range,
            batch_size: ctx.params.usize("batch_size")?,
            seed,
            identity: ctx.params.bool("identity")?,
            precision: common::precision(ctx)?,
        };
        let pngs = nn::run_on(device, job)??;
        let mut at = 0;
        for batch in &rows {
            let n = batch.num_rows();
            let mine = pngs
                .get(at..at + n)
                .ok_or_else(|| ctx.err("the refiner returned fewer images than it was given"))?;
            out.write(&sample::with_images(batch, mine, "refined")?)?;
            at += n;
        }
        Ok(())
    }

    fn plan(&self, ctx: &StageCtx) -> Result<Vec<UnitSpec>> {
        let data = ctx.stage_input("data")?;
        Ok(data
            .manifest
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| UnitSpec {
                index: i,
                // The noise seed comes from the shard's content, not its position.
                spec: json!({
                    "shard": s.path,
                    "rows": s.rows,
                    "seed": u64::from_str_radix(s.checksum.trim_start_matches("sha256:").get(..16).unwrap_or(""), 16).unwrap_or(i as u64),
                }),
            })
            .collect())
    }

    fn run_unit(&self, ctx: &StageCtx, unit: &UnitSpec, out: &mut UnitOutput) -> Result<()> {
        let prepared = self.prepare(ctx, unit)?;
        self.run_prepared(ctx, unit, prepared, 0, out)
    }
}
