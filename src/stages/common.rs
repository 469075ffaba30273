//! Helpers shared by the S+U stages: the device param, training-metrics rows and sample grids.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, Float64Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use image::RgbImage;

use super::StageCtx;
use crate::error::{Error, Result};
use crate::nn::{DeviceSpec, StepMetrics};
use crate::params::{ParamSpec, ParamType};
use crate::sample::SampleImage;

/// The `device` param every compute stage declares.
pub const DEVICE_PARAM: ParamSpec = ParamSpec::new(
    "device",
    ParamType::Str,
    "\"cpu\"",
    "Where to compute: \"cpu\", \"cuda\" or \"cuda:N\" (needs the `cuda` build)",
);

/// The float type a network computes in: f32, or bf16/f16 (tensor cores on a GPU; on the CPU
/// correct but slower). Training with bf16/f16 is mixed precision: weights, optimiser state and
/// losses stay f32.
pub const PRECISION_PARAM: ParamSpec = ParamSpec::new(
    "precision",
    ParamType::Choice(crate::nn::Precision::NAMES),
    "\"f32\"",
    "Float type of the network's computation: \"f32\", \"bf16\" or \"f16\" (tensor cores on a \
     GPU; on the CPU correct but slower); trainers keep f32 weights, optimiser state and losses",
);

/// The `precision` param.
pub fn precision(ctx: &StageCtx) -> Result<crate::nn::Precision> {
    let s = ctx.params.str("precision")?;
    crate::nn::Precision::parse(s).ok_or_else(|| {
        ctx.err(format!(
            "param `precision`: `{s}` is not one of {}",
            crate::nn::Precision::NAMES.join(", ")
        ))
    })
}

/// Parse the `device` param, failing early if this binary cannot use it.
pub fn device(ctx: &StageCtx) -> Result<DeviceSpec> {
    parse_device(ctx, "device", ctx.params.str("device")?)
}

/// Parse one device string of param `param` (`device`, or an entry of `devices`), failing early
/// if this binary cannot use it or the machine lacks it ([`crate::nn::probe`]: the driver, NVRTC,
/// the GPU index), with one line naming what is missing.
pub fn parse_device(ctx: &StageCtx, param: &str, s: &str) -> Result<DeviceSpec> {
    let spec: DeviceSpec = s
        .parse()
        .map_err(|e| ctx.err(format!("param `{param}`: `{s}`: {e}")))?;
    if !spec.is_available() {
        return Err(ctx.err(format!(
            "param `{param}` = \"{s}\" needs a binary built with `--features cuda`"
        )));
    }
    crate::nn::probe(&spec).map_err(|e| ctx.err(format!("param `{param}`: {e}")))?;
    Ok(spec)
}

/// Row-range units for generators: `rows` split into units of `rows_per_shard` (params of the
/// stage), each `{"start", "count"}`; see [`row_range`].
pub fn row_range_units(ctx: &StageCtx) -> Result<Vec<super::UnitSpec>> {
    let rows = ctx.params.usize("rows")?;
    let per = ctx.params.usize("rows_per_shard")?;
    Ok((0..rows.div_ceil(per))
        .map(|u| super::UnitSpec {
            index: u,
            spec: serde_json::json!({"start": u * per, "count": per.min(rows - u * per)}),
        })
        .collect())
}

/// `(start, count)` of a unit made by [`row_range_units`].
pub fn row_range(ctx: &StageCtx, unit: &super::UnitSpec) -> Result<(u64, u64)> {
    let get = |key: &str| {
        unit.spec[key]
            .as_u64()
            .ok_or_else(|| ctx.err(format!("unit spec lacks `{key}`")))
    };
    Ok((get("start")?, get("count")?))
}

/// Rows of the `train_metrics` schema (`phase` overrides the phase column, e.g. "estimator").
pub fn metrics_batch(metrics: &[(StepMetrics, f64)], phase: Option<&str>) -> Result<RecordBatch> {
    let schema = crate::schema::get("train_metrics")?.arrow.clone();
    let f = |g: &dyn Fn(&StepMetrics) -> Option<f32>| -> ArrayRef {
        Arc::new(metrics.iter().map(|(m, _)| g(m)).collect::<Float32Array>())
    };
    let loss = |m: &StepMetrics| m.refiner_loss.or(m.d_loss).unwrap_or(f32::NAN);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(
            metrics
                .iter()
                .map(|(m, _)| m.step as i64)
                .collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            metrics
                .iter()
                .map(|(m, _)| phase.unwrap_or_else(|| phase_name(m)))
                .collect::<Vec<_>>(),
        )),
        Arc::new(Float32Array::from(
            metrics.iter().map(|(m, _)| loss(m)).collect::<Vec<_>>(),
        )),
        f(&|m| m.adv_loss),
        f(&|m| m.reg_loss),
        f(&|m| m.d_loss),
        f(&|m| m.d_acc_real),
        f(&|m| m.d_acc_refined),
        Arc::new(Float64Array::from(
            metrics.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
        )),
    ];
    RecordBatch::try_new(schema, columns).map_err(|source| Error::Arrow {
        what: "train metrics".into(),
        source,
    })
}

fn phase_name(m: &StepMetrics) -> &'static str {
    use crate::nn::Phase;
    match m.phase {
        Phase::PretrainRefiner => "pretrain-r",
        Phase::PretrainDiscriminator => "pretrain-d",
        Phase::Refiner => "refiner",
        Phase::Discriminator => "discriminator",
    }
}

/// A PNG grid: one row per image list (e.g. synthetic | refined | real), scaled ×`scale`, in
/// RGB (grey images replicated; 16-bit scaled to 8).
pub fn grid_png(rows: &[&[SampleImage]], scale: u32, what: &str) -> Result<Vec<u8>> {
    grid_png_marked(rows, &[], scale, what)
}

/// Colours of marked points, by the point's place in its list (a hand's 14 joints: two per
/// finger from the little finger to the index, then thumb, wrist and palm).
const MARKS: [[u8; 3]; 7] = [
    [230, 60, 60],
    [240, 160, 40],
    [220, 220, 50],
    [70, 200, 80],
    [60, 140, 240],
    [170, 90, 230],
    [240, 90, 200],
];

/// [`grid_png`] with points drawn on the images: `marks[row][image]` lists an image's points
/// (`u, v` in its pixels, pixel centres at integers), each a 3×3 dot (or one pixel when
/// `scale` is 1) in a colour for its place in the list. Rows and images without marks are drawn
/// plain; points off the image are skipped.
pub fn grid_png_marked(
    rows: &[&[SampleImage]],
    marks: &[crate::task::Points],
    scale: u32,
    what: &str,
) -> Result<Vec<u8>> {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0) as u32;
    let (w, h) = rows
        .iter()
        .flat_map(|r| r.first())
        .map(|i| (i.width, i.height))
        .next()
        .unwrap_or((1, 1));
    let gap = 2;
    let mut out = RgbImage::from_pixel(
        cols * (w * scale + gap) + gap,
        rows.len() as u32 * (h * scale + gap) + gap,
        image::Rgb([255, 255, 255]),
    );
    for (ri, row) in rows.iter().enumerate() {
        for (ci, img) in row.iter().enumerate() {
            let rgb = img.to_rgb8();
            let x0 = gap + ci as u32 * (w * scale + gap);
            let y0 = gap + ri as u32 * (h * scale + gap);
            for (x, y, p) in rgb.enumerate_pixels().filter(|(x, y, _)| *x < w && *y < h) {
                for dy in 0..scale {
                    for dx in 0..scale {
                        out.put_pixel(x0 + x * scale + dx, y0 + y * scale + dy, *p);
                    }
                }
            }
            let points = marks.get(ri).and_then(|m| m.get(ci));
            let n = points.map_or(1, |p| p.len().max(1));
            for (j, (u, v)) in points.into_iter().flatten().enumerate() {
                if !(u.is_finite() && v.is_finite()) {
                    continue;
                }
                let colour = image::Rgb(MARKS[j * MARKS.len() / n]);
                let (cx, cy) = ((u + 0.5) * scale as f32, (v + 0.5) * scale as f32);
                let r = if scale > 1 { 1 } else { 0 };
                for dy in -r..=r {
                    for dx in -r..=r {
                        let (x, y) = (cx.floor() as i64 + dx, cy.floor() as i64 + dy);
                        if (0..(w * scale) as i64).contains(&x)
                            && (0..(h * scale) as i64).contains(&y)
                        {
                            out.put_pixel(x0 + x as u32, y0 + y as u32, colour);
                        }
                    }
                }
            }
        }
    }
    SampleImage::from_rgb(out).encode_png(what)
}

/// The `source` input of an ingester.
pub const SOURCE: &[super::InputSpec] = &[super::InputSpec {
    role: "source",
    kind: super::InputKind::Location,
    required: true,
    doc: "Folder or object-store prefix of the raw dataset",
}];

/// The `on_error` param of an ingester.
pub const ON_ERROR: ParamSpec = ParamSpec::new(
    "on_error",
    ParamType::Choice(&["fail", "skip"]),
    "\"fail\"",
    "Bad input: stop naming the file and field, or skip it and list it in the manifest",
);

/// Apply the `on_error` policy to one input's outcome: `Ok(None)` for an input skipped (and
/// recorded in the manifest), an error naming the input under `"fail"`.
pub fn handle<T>(
    ctx: &StageCtx,
    out: &mut super::UnitOutput,
    skip: bool,
    file: &str,
    r: std::result::Result<T, String>,
) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(reason) if skip => {
            tracing::warn!(stage = ctx.stage, file, %reason, "skipped bad input");
            out.skip(file, reason);
            Ok(None)
        }
        // The reason already names the file (and the field, for label errors).
        Err(reason) => Err(Error::stage(
            ctx.stage,
            format!("{reason} (set on_error = \"skip\" to skip bad inputs; input {file})"),
        )),
    }
}

/// Read an input file: a storage failure (after object_store's retries) is the outer error and
/// fails the stage; a file gone missing is the inner one, bad input.
pub fn read_input(
    source: &crate::storage::Root,
    rel: &str,
) -> Result<std::result::Result<bytes::Bytes, String>> {
    Ok(source
        .get(rel)?
        .ok_or_else(|| format!("{}: not found", source.url_of(rel))))
}

/// Whether row `i` of a seeded generator belongs to the test split: a SplitMix64 hash of seed
/// and index below `fraction` (independent of the row's content and of how rows are sharded).
pub fn is_test_row(seed: u64, i: u64, fraction: f64) -> bool {
    let mut z = (seed ^ 0x7E57_5EED).wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    fraction > 0.0 && (z >> 11) as f64 / (1u64 << 53) as f64 <= fraction
}

#[cfg(test)]
mod split_tests {
    use super::is_test_row;

    #[test]
    fn test_split_fraction_is_close() {
        let n = 20_000;
        let t = (0..n).filter(|&i| is_test_row(3, i, 0.25)).count() as f64 / n as f64;
        assert!((t - 0.25).abs() < 0.02, "{t}");
        assert_eq!((0..1000).filter(|&i| is_test_row(3, i, 0.0)).count(), 0);
    }
}

#[cfg(test)]
mod grid_tests {
    use super::{MARKS, grid_png_marked};
    use crate::sample::SampleImage;

    /// A point lands on its pixel (scaled, centred), coloured by its place in the list; points
    /// off the image and images without marks are left alone.
    #[test]
    fn marks_are_drawn_on_their_pixels() {
        let img = SampleImage::from_gray(image::GrayImage::new(4, 4));
        let rows = [&[img.clone(), img.clone()][..], &[img][..]];
        let marks = vec![vec![vec![(1.0, 2.0), (3.0, 0.0), (-9.0, 40.0)]], vec![]];
        let png = grid_png_marked(&rows, &marks, 3, "test grid").unwrap_or_default();
        let grid = SampleImage::decode(&png, "test grid")
            .unwrap_or_else(|e| panic!("{e}"))
            .to_rgb8();
        let (gap, side) = (2, 4 * 3);
        // Point 0 of 3 gets colour 0; point 1 colour 7 * 1 / 3 = 2; 3×3 dots around the centre.
        let at = |x: u32, y: u32| grid.get_pixel(gap + x, gap + y).0;
        assert_eq!(at(4, 7), MARKS[0]);
        assert_eq!(at(3, 6), MARKS[0]);
        assert_eq!(at(10, 1), MARKS[2]);
        assert_eq!(at(0, 0), [0, 0, 0]);
        // The second image of row 0 and the image of row 1 are plain.
        let plain = |x0: u32, y0: u32| {
            (0..side).all(|y| (0..side).all(|x| grid.get_pixel(x0 + x, y0 + y).0 == [0, 0, 0]))
        };
        assert!(plain(gap + side + gap, gap));
        assert!(plain(gap, gap + side + gap));
    }
}
