//! `generate-eyes`: the built-in procedural eye dataset (see [`crate::domains::eyes::render`]), so the
//! whole pipeline runs with nothing downloaded.
//!
//! Row `i` is rendered from its own RNG seeded by `(seed, domain, i)`, so the output is the same
//! whatever `rows_per_shard` is and however units are spread over workers. Units are row ranges;
//! rows are rendered and PNG-encoded in parallel on rayon.

use rand::SeedableRng;
use rand::rngs::SmallRng;
use rayon::prelude::*;

use crate::domains::eyes::render::{Domain, RenderConfig, render};
use crate::domains::eyes::rows::{EyeRow, to_batch};
use crate::error::Result;
use crate::params::{ParamSpec, ParamType};
use crate::stages::{InputSpec, StageCtx, StageKind, UnitOutput, UnitSpec};

/// The `generate-eyes` kind.
pub struct GenerateEyes;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::required(
        "domain",
        ParamType::Choice(&["synthetic", "real-like"]),
        "Which domain to render",
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
        "seed",
        ParamType::Int {
            min: 0,
            max: i64::MAX,
        },
        "0",
        "Random seed",
    ),
    ParamSpec::new(
        "test_fraction",
        ParamType::Float { min: 0.0, max: 1.0 },
        "0.0",
        "Fraction of rows marked split=test",
    ),
    ParamSpec::added(
        "pair_with",
        ParamType::Choice(&["none", "synthetic", "real-like"]),
        "\"none\"",
        "Draw row i's eye (geometry and labels) as that domain's stage with this seed would, in this stage's look, with that stage's ids: with its seed and pose ranges, the same eyes as that stage, i.e. what a perfect refiner would output (see pipelines/eye-gaze-ceiling.toml)",
    ),
    ParamSpec::new(
        "render",
        ParamType::Table,
        "{}",
        "Overrides of the domain preset's knobs (fields of eyes::render::RenderConfig), e.g. { noise_std = 0.05 }",
    ),
];

/// Row `i`'s RNG seed: a SplitMix64 mix of the stage seed, the domain and the row index.
fn row_seed(seed: u64, domain: Domain, i: u64) -> u64 {
    let mut z = seed ^ (i.wrapping_mul(0x9E37_79B9_7F4A_7C15)) ^ ((domain as u64) << 61);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A domain's `domain` column value and id prefix.
fn label(domain: Domain) -> &'static str {
    match domain {
        Domain::Synthetic => "synthetic",
        Domain::RealLike => "real",
    }
}

/// Whether row `i` belongs to the test split (deterministic, independent of the row's image).
fn is_test(seed: u64, i: u64, fraction: f64) -> bool {
    let h = row_seed(seed ^ 0x7E57, Domain::Synthetic, i);
    (h >> 11) as f64 / (1u64 << 53) as f64 <= fraction && fraction > 0.0
}

/// The domain preset with the pipeline's overrides applied, validated.
pub fn render_config(
    domain: Domain,
    overrides: &serde_json::Map<String, serde_json::Value>,
) -> std::result::Result<RenderConfig, String> {
    let mut doc = overrides.clone();
    doc.insert("domain".into(), serde_json::Value::from(domain.as_str()));
    let cfg: RenderConfig =
        serde_json::from_value(serde_json::Value::Object(doc)).map_err(|e| e.to_string())?;
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

impl StageKind for GenerateEyes {
    fn name(&self) -> &'static str {
        "generate-eyes"
    }
    fn about(&self) -> &'static str {
        "Render a procedural eye dataset (synthetic or real-like domain)"
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
        "eye_sample"
    }

    fn splittable(&self) -> bool {
        true
    }

    fn plan(&self, ctx: &StageCtx) -> Result<Vec<UnitSpec>> {
        crate::stages::common::row_range_units(ctx)
    }

    fn run_unit(&self, ctx: &StageCtx, unit: &UnitSpec, out: &mut UnitOutput) -> Result<()> {
        let (start, count) = crate::stages::common::row_range(ctx, unit)?;
        let domain: Domain = ctx
            .params
            .str("domain")?
            .parse()
            .map_err(|e| ctx.err(format!("param `domain`: {e}")))?;
        let seed = ctx.params.int("seed")? as u64;
        let test_fraction = ctx.params.float("test_fraction")?;
        let cfg = render_config(domain, ctx.params.table("render")?)
            .map_err(|e| ctx.err(format!("param `render`: {e}")))?;
        // Rows are drawn from (and named after) the paired domain's stream when there is one.
        let stream: Domain = match ctx.params.str("pair_with")? {
            "none" => domain,
            other => other
                .parse()
                .map_err(|e| ctx.err(format!("param `pair_with`: {e}")))?,
        };
        let domain_label = label(domain);
        let id_label = label(stream);
        // Render in chunks so memory stays bounded for large units.
        for chunk_start in (start..start + count).step_by(4096) {
            let chunk_end = (chunk_start + 4096).min(start + count);
            let rows: Vec<EyeRow> = (chunk_start..chunk_end)
                .into_par_iter()
                .map(|i| {
                    let mut rng = SmallRng::seed_from_u64(row_seed(seed, stream, i));
                    let sample = render(&cfg, &mut rng);
                    let split = if is_test(seed, i, test_fraction) {
                        "test"
                    } else {
                        "train"
                    };
                    EyeRow::from_sample(
                        format!("{id_label}-{seed}-{i:08}"),
                        &sample,
                        "builtin",
                        domain_label,
                        split,
                        None,
                    )
                })
                .collect::<Result<_>>()?;
            out.write(&to_batch(&rows)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_split_fraction_is_close() {
        let n = 20_000;
        let t = (0..n).filter(|&i| is_test(3, i, 0.25)).count() as f64 / n as f64;
        assert!((t - 0.25).abs() < 0.02, "{t}");
        assert_eq!((0..1000).filter(|&i| is_test(3, i, 0.0)).count(), 0);
    }

    /// `pair_with`: a real-like row drawn from the synthetic stream, with the synthetic pose
    /// ranges, is the same eye (labels and landmarks) in the real-like look.
    #[test]
    fn paired_rows_are_the_same_eyes_in_another_look() {
        let pose: serde_json::Map<String, serde_json::Value> = serde_json::json!({
            "gaze_pitch": [-30, 30], "gaze_yaw": [-40, 40], "head_pitch": [-15, 15],
            "head_yaw": [-15, 15], "head_roll": [-6, 6]
        })
        .as_object()
        .cloned()
        .unwrap_or_default();
        let synth = render_config(Domain::Synthetic, &serde_json::Map::new()).unwrap();
        let real = render_config(Domain::RealLike, &pose).unwrap();
        for i in 0..50 {
            let seed = row_seed(1001, Domain::Synthetic, i);
            let a = render(&synth, &mut SmallRng::seed_from_u64(seed));
            let b = render(&real, &mut SmallRng::seed_from_u64(seed));
            assert_eq!(a.gaze, b.gaze, "row {i}");
            assert_eq!(a.head_pose, b.head_pose, "row {i}");
            assert_eq!(a.landmarks, b.landmarks, "row {i}");
            assert_ne!(a.image, b.image, "row {i}: the look must differ");
        }
        // Unpaired, the real-like stream draws other eyes.
        let own = render(
            &real,
            &mut SmallRng::seed_from_u64(row_seed(1001, Domain::RealLike, 0)),
        );
        let synth0 = render(
            &synth,
            &mut SmallRng::seed_from_u64(row_seed(1001, Domain::Synthetic, 0)),
        );
        assert_ne!(own.gaze, synth0.gaze);
    }
}
