//! The one sample layout every image dataset shares, whatever its domain: `id`, `image` (the
//! Hugging Face Image struct `{bytes: PNG, path}`), `source`, `domain`, `split`, then the task's
//! label columns (eyes add `gaze`, `pitch`, …; an image folder adds `label`). The S+U stages read
//! and write only these common columns and carry every other column unchanged.
//!
//! Image height, width, channels (1 = grey, 3 = RGB) and bit depth (8 or 16) come from the PNG
//! bytes, never from constants: [`SampleImage`] holds decoded pixels, [`to_tensor`] /
//! [`from_tensor`] convert a batch to and from `[batch, channels, height, width]` tensors in
//! `[-1, 1]` through the dataset's [`ValueRange`] (by default the bit depth's full range: 8-bit
//! `v / 127.5 − 1`, 16-bit `v / 32767.5 − 1`; a dataset whose values fill only part of it, such
//! as depth maps in millimetres, names its range in the schema metadata, `simgan` key:
//! `{"pixel_range": [lo, hi]}`), and [`Loaded`] is a stage input read into memory: its rows as
//! one Arrow batch (label columns included) beside the decoded images.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryBuilder, BooleanArray, StringArray, StringBuilder,
    StructArray,
};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{DynamicImage, GrayImage, ImageEncoder, RgbImage};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::manifest::Committed;
use crate::nn::NnError;
use crate::storage::Root;

/// Column names every sample schema starts with, in order.
pub const COMMON_COLUMNS: [&str; 5] = ["id", "image", "source", "domain", "split"];

/// Channels and bit depth of a sample image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PixelFormat {
    /// 1 (grey) or 3 (RGB).
    pub channels: u8,
    /// 8 or 16 bits per channel.
    pub bits: u8,
}

impl PixelFormat {
    /// 8-bit grey (eyes).
    pub const GRAY8: PixelFormat = PixelFormat {
        channels: 1,
        bits: 8,
    };
    /// 8-bit RGB.
    pub const RGB8: PixelFormat = PixelFormat {
        channels: 3,
        bits: 8,
    };
    /// 16-bit grey (depth maps).
    pub const GRAY16: PixelFormat = PixelFormat {
        channels: 1,
        bits: 16,
    };
}

impl std::fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = if self.channels == 1 { "grey" } else { "RGB" };
        write!(f, "{}-bit {c}", self.bits)
    }
}

/// The pixel values that map to `[-1, 1]` in the networks: `lo ↦ −1`, `hi ↦ 1`, linear between;
/// written images are clamped to `[lo, hi]` (and to the bit depth) and rounded.
///
/// A *windowed* range (`window: Some(w)`, schema metadata `pixel_window`: depth maps) instead
/// centres every image on its own depth, as hand-pose work normalises a depth crop (DeepPrior++:
/// `(d − centre) / 150 mm`): the centre `c` is the median of the image's non-zero samples
/// ([`ValueRange::centre`]), `c − w ↦ −1`, `c + w ↦ 1` (clamped), and `lo` (no reading, the
/// background) `↦ 1`, as far as the window's back. On the way back a network value
/// ≥ [`BACKGROUND_FROM`] is background (`lo`), any other is `c + t·w` clamped to `(lo, hi]`,
/// with `c` the centre of the image the tensor was made from. So the networks see the hand at
/// full contrast (±150 mm, not 0…1000 mm) and without the frame's absolute distance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValueRange {
    /// Pixel value that maps to −1 (a windowed range: the background value).
    pub lo: f32,
    /// Pixel value that maps to 1 (a windowed range: the largest value written).
    pub hi: f32,
    /// Half-width of the per-image window, in pixel units (`None`: the plain linear map).
    pub window: Option<f32>,
}

/// A windowed range's network values from here up map back to background (the last 2.5 % of
/// the window's depth: 3.75 mm of a 150 mm window).
pub const BACKGROUND_FROM: f32 = 0.95;

impl ValueRange {
    /// The bit depth's whole range (`[0, 255]` or `[0, 65535]`).
    pub fn full(bits: u8) -> ValueRange {
        let hi = if bits == 16 { 65535.0 } else { 255.0 };
        ValueRange {
            lo: 0.0,
            hi,
            window: None,
        }
    }

    /// The range a dataset's schema names (`simgan` metadata `pixel_range`, and `pixel_window`
    /// for a windowed one), else the bit depth's whole range. A malformed or empty range
    /// (`hi <= lo`) counts as absent, as does a window that is not positive.
    pub fn of(schema: &Schema, bits: u8) -> ValueRange {
        let meta = schema
            .metadata()
            .get("simgan")
            .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok());
        let named = meta.as_ref().and_then(|v| {
            let r = v.get("pixel_range")?.as_array()?.clone();
            Some((r.first()?.as_f64()? as f32, r.get(1)?.as_f64()? as f32))
        });
        let window = meta
            .as_ref()
            .and_then(|v| v.get("pixel_window")?.as_f64())
            .map(|w| w as f32)
            .filter(|w| w.is_finite() && *w > 0.0);
        match named {
            Some((lo, hi)) if lo.is_finite() && hi.is_finite() && hi > lo => {
                ValueRange { lo, hi, window }
            }
            _ => ValueRange::full(bits),
        }
    }

    /// The value `img` is centred on: for a windowed range the median of its first channel's
    /// samples above `lo` (`lo + window` when it has none), else 0 (unused).
    pub fn centre(self, img: &SampleImage) -> f32 {
        let Some(w) = self.window else { return 0.0 };
        let c = img.channels.max(1) as usize;
        let mut fg: Vec<f32> = match &img.pixels {
            Pixels::U8(p) => p.iter().step_by(c).map(|v| *v as f32).collect(),
            Pixels::U16(p) => p.iter().step_by(c).map(|v| *v as f32).collect(),
        };
        fg.retain(|v| *v > self.lo);
        if fg.is_empty() {
            return self.lo + w;
        }
        let mid = fg.len() / 2;
        let (_, m, _) = fg.select_nth_unstable_by(mid, f32::total_cmp);
        *m
    }

    /// Half the range's width (127.5 for 8-bit: pixel `v` ↦ `v / 127.5 − 1`).
    fn half(self) -> f32 {
        (self.hi - self.lo) / 2.0
    }

    /// Network value of pixel value `v` of an image centred on `c` ([`ValueRange::centre`]).
    fn to_net(self, v: f32, c: f32) -> f32 {
        match self.window {
            None => (v - self.lo) / self.half() - 1.0,
            Some(_) if v <= self.lo => 1.0,
            Some(w) => ((v - c) / w).clamp(-1.0, 1.0),
        }
    }

    /// Pixel value of network value `t` of an image centred on `c` (clamped to the range, not
    /// rounded).
    fn to_pixel(self, t: f32, c: f32) -> f32 {
        match self.window {
            None => (t.clamp(-1.0, 1.0) + 1.0) * self.half() + self.lo,
            Some(_) if t.is_nan() || t >= BACKGROUND_FROM => self.lo,
            // At least one step above `lo`, so rounding cannot turn it into background.
            Some(w) => (c + t.max(-1.0) * w).clamp(self.lo + 1.0, self.hi),
        }
    }
}

/// Pixel values, interleaved (`y, x, channel`).
#[derive(Debug, Clone, PartialEq)]
pub enum Pixels {
    /// 8-bit samples.
    U8(Vec<u8>),
    /// 16-bit samples.
    U16(Vec<u16>),
}

/// A decoded sample image.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// 1 or 3.
    pub channels: u8,
    /// The samples, `width × height × channels` of them.
    pub pixels: Pixels,
}

/// The widest or tallest image any reader decodes (a crafted header cannot make it allocate
/// more): 16384 px.
pub const MAX_IMAGE_SIDE: u32 = 16384;

/// The most memory one image's decoding may allocate: 256 MiB (a 8192×8192 RGB 16-bit image).
pub const MAX_IMAGE_BYTES: u64 = 256 << 20;

/// Decode an image file (format from its bytes) within [`MAX_IMAGE_SIDE`] and
/// [`MAX_IMAGE_BYTES`]; beyond them the error is `image`'s "limits exceeded" with the cause.
pub fn decode_bounded(bytes: &[u8]) -> std::result::Result<DynamicImage, image::ImageError> {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_BYTES);
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format()?;
    reader.limits(limits);
    reader.decode()
}

fn image_err(what: &str, source: image::ImageError) -> Error {
    Error::Image {
        what: what.to_string(),
        source,
    }
}

impl SampleImage {
    /// Channels and bit depth.
    pub fn format(&self) -> PixelFormat {
        PixelFormat {
            channels: self.channels,
            bits: match self.pixels {
                Pixels::U8(_) => 8,
                Pixels::U16(_) => 16,
            },
        }
    }

    /// An 8-bit grey image.
    pub fn from_gray(img: GrayImage) -> SampleImage {
        SampleImage {
            width: img.width(),
            height: img.height(),
            channels: 1,
            pixels: Pixels::U8(img.into_raw()),
        }
    }

    /// An 8-bit RGB image.
    pub fn from_rgb(img: RgbImage) -> SampleImage {
        SampleImage {
            width: img.width(),
            height: img.height(),
            channels: 3,
            pixels: Pixels::U8(img.into_raw()),
        }
    }

    /// Keep grey as grey and colour as RGB (alpha dropped), 16-bit as 16-bit.
    pub fn from_dynamic(img: DynamicImage) -> SampleImage {
        let (width, height) = (img.width(), img.height());
        let (channels, pixels) = match img {
            DynamicImage::ImageLuma8(i) => (1, Pixels::U8(i.into_raw())),
            DynamicImage::ImageLumaA8(_) => (1, Pixels::U8(img.into_luma8().into_raw())),
            DynamicImage::ImageLuma16(i) => (1, Pixels::U16(i.into_raw())),
            DynamicImage::ImageLumaA16(_) => (1, Pixels::U16(img.into_luma16().into_raw())),
            DynamicImage::ImageRgb16(i) => (3, Pixels::U16(i.into_raw())),
            DynamicImage::ImageRgba16(_) => (3, Pixels::U16(img.into_rgb16().into_raw())),
            other => (3, Pixels::U8(other.into_rgb8().into_raw())),
        };
        SampleImage {
            width,
            height,
            channels,
            pixels,
        }
    }

    /// Convert to `format` (grey ↔ RGB by luma / replication, 8 ↔ 16 bits by scaling).
    pub fn convert(self, format: PixelFormat) -> SampleImage {
        if self.format() == format {
            return self;
        }
        let dynamic = self.to_dynamic();
        let converted = match (format.channels, format.bits) {
            (1, 8) => DynamicImage::ImageLuma8(dynamic.into_luma8()),
            (1, _) => DynamicImage::ImageLuma16(dynamic.into_luma16()),
            (_, 8) => DynamicImage::ImageRgb8(dynamic.into_rgb8()),
            _ => DynamicImage::ImageRgb16(dynamic.into_rgb16()),
        };
        SampleImage::from_dynamic(converted)
    }

    /// The same pixels as an `image` crate image.
    pub fn to_dynamic(&self) -> DynamicImage {
        let (w, h) = (self.width, self.height);
        let fallback = || DynamicImage::new_luma8(w, h);
        match (&self.pixels, self.channels) {
            (Pixels::U8(p), 1) => GrayImage::from_raw(w, h, p.clone())
                .map(DynamicImage::ImageLuma8)
                .unwrap_or_else(fallback),
            (Pixels::U8(p), _) => RgbImage::from_raw(w, h, p.clone())
                .map(DynamicImage::ImageRgb8)
                .unwrap_or_else(fallback),
            (Pixels::U16(p), 1) => image::ImageBuffer::from_raw(w, h, p.clone())
                .map(DynamicImage::ImageLuma16)
                .unwrap_or_else(fallback),
            (Pixels::U16(p), _) => image::ImageBuffer::from_raw(w, h, p.clone())
                .map(DynamicImage::ImageRgb16)
                .unwrap_or_else(fallback),
        }
    }

    /// 8-bit grey view (sample grids, statistics): luma of RGB, 16-bit scaled to 8.
    pub fn to_gray8(&self) -> GrayImage {
        match (&self.pixels, self.channels) {
            (Pixels::U8(p), 1) => GrayImage::from_raw(self.width, self.height, p.clone())
                .unwrap_or_else(|| GrayImage::new(self.width, self.height)),
            _ => self.to_dynamic().into_luma8(),
        }
    }

    /// The image for people to look at (grids, statistics, the Turing page): 8-bit, with
    /// `range` stretched to 0…255 when it is not the bit depth's full range (depth maps in mm:
    /// 0 = background black, the far end of the range white; a windowed range: background
    /// black, the image's window from far, dark grey 32, to near, white); otherwise unchanged.
    pub fn for_view(self, range: ValueRange) -> SampleImage {
        let bits = self.format().bits;
        if range == ValueRange::full(bits) {
            return self;
        }
        let c = range.centre(&self);
        let stretch = |v: f32| match range.window {
            None => ((range.to_net(v, c).clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8,
            Some(_) if v <= range.lo => 0,
            Some(_) => (32.0 + (1.0 - range.to_net(v, c)) * 111.5).round() as u8,
        };
        let pixels = match &self.pixels {
            Pixels::U8(p) => p.iter().map(|v| stretch(*v as f32)).collect(),
            Pixels::U16(p) => p.iter().map(|v| stretch(*v as f32)).collect(),
        };
        SampleImage {
            pixels: Pixels::U8(pixels),
            ..self
        }
    }

    /// 8-bit RGB view (sample grids).
    pub fn to_rgb8(&self) -> RgbImage {
        self.to_dynamic().into_rgb8()
    }

    /// Decode PNG (or JPEG) bytes within [`MAX_IMAGE_SIDE`] and [`MAX_IMAGE_BYTES`]; `what`
    /// names the sample in errors.
    pub fn decode(bytes: &[u8], what: &str) -> Result<SampleImage> {
        decode_bounded(bytes)
            .map(SampleImage::from_dynamic)
            .map_err(|e| image_err(what, e))
    }

    /// Encode as PNG in its own format (fast compression; 16-bit PNGs are big-endian, as the
    /// format requires).
    pub fn encode_png(&self, what: &str) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.width as usize * self.height as usize + 128);
        let encoder =
            PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Sub);
        let (w, h) = (self.width, self.height);
        let result = match (&self.pixels, self.channels) {
            (Pixels::U8(p), 1) => encoder.write_image(p, w, h, image::ExtendedColorType::L8),
            (Pixels::U8(p), _) => encoder.write_image(p, w, h, image::ExtendedColorType::Rgb8),
            (Pixels::U16(p), c) => {
                let bytes: Vec<u8> = p.iter().flat_map(|v| v.to_ne_bytes()).collect();
                let ty = if c == 1 {
                    image::ExtendedColorType::L16
                } else {
                    image::ExtendedColorType::Rgb16
                };
                encoder.write_image(&bytes, w, h, ty)
            }
        };
        result.map_err(|e| image_err(what, e))?;
        Ok(out)
    }
}

/// `round()` of a value in `[0, 2²²)`, without a libm call (x86-64's baseline has no rounding
/// instruction, so `f32::round` is a function call per pixel); NaN stays NaN.
#[inline]
fn round_non_negative(x: f32) -> f32 {
    // Adding and removing 2²³ rounds to nearest, ties to even (exact for 0 ≤ x < 2²²); a tie
    // that went down goes up instead, as `round` does. Branch-free, so the loops vectorise.
    const SHIFT: f32 = 8_388_608.0;
    let even = (x + SHIFT) - SHIFT;
    even + f32::from(u8::from(x - even == 0.5))
}

/// Images of one size and format → `[n, channels, height, width]`, `range` mapped to `[-1, 1]`.
/// Images convert in parallel (rayon); 8-bit samples through a 256-entry table per image.
pub fn to_tensor<B: Backend>(
    images: &[SampleImage],
    range: ValueRange,
    device: &B::Device,
) -> std::result::Result<Tensor<B, 4>, NnError> {
    let shape_err = |message: String| NnError::Shape {
        context: "sample::to_tensor",
        message,
    };
    let first = images
        .first()
        .ok_or_else(|| shape_err("no images".into()))?;
    let (w, h, c) = (
        first.width as usize,
        first.height as usize,
        first.channels as usize,
    );
    let format = first.format();
    if let Some((i, img)) = images.iter().enumerate().find(|(_, img)| {
        (img.width as usize, img.height as usize) != (w, h) || img.format() != format
    }) {
        return Err(shape_err(format!(
            "image {i} is {}×{} {}, image 0 is {w}×{h} {format}",
            img.width,
            img.height,
            img.format()
        )));
    }
    let plane = w * h;
    let mut data = vec![0f32; images.len() * c * plane];
    data.par_chunks_exact_mut(c * plane)
        .zip(images.par_iter())
        .for_each(|(out, img)| {
            let centre = range.centre(img);
            match &img.pixels {
                Pixels::U8(p) => {
                    let table: [f32; 256] = std::array::from_fn(|v| range.to_net(v as f32, centre));
                    if c == 1 {
                        for (o, v) in out.iter_mut().zip(p) {
                            *o = table[*v as usize];
                        }
                    } else {
                        // Interleaved (pixel, channel) → planar (channel, pixel).
                        for (k, px) in p.chunks_exact(c).enumerate() {
                            for (ch, v) in px.iter().enumerate() {
                                out[ch * plane + k] = table[*v as usize];
                            }
                        }
                    }
                }
                Pixels::U16(p) => {
                    for (k, px) in p.chunks_exact(c).enumerate() {
                        for (ch, v) in px.iter().enumerate() {
                            out[ch * plane + k] = range.to_net(*v as f32, centre);
                        }
                    }
                }
            }
        });
    Ok(Tensor::from_data(
        TensorData::new(data, [images.len(), c, h, w]),
        device,
    ))
}

/// `[n, channels, height, width]` in `[-1, 1]` → images of `bits` bits, `[-1, 1]` mapped back to
/// `range` (clamped, rounded). `sources` are the images the tensor was made from, in order: a
/// windowed range maps image `i` back around the centre of `sources[i]` (other ranges ignore
/// them). Images convert in parallel (rayon).
pub fn from_tensor<B: Backend>(
    tensor: Tensor<B, 4>,
    bits: u8,
    range: ValueRange,
    sources: &[SampleImage],
) -> std::result::Result<Vec<SampleImage>, NnError> {
    let [n, c, h, w] = tensor.dims();
    if range.window.is_some() && sources.len() != n {
        return Err(NnError::Shape {
            context: "sample::from_tensor",
            message: format!(
                "a windowed range needs the {n} source images, got {}",
                sources.len()
            ),
        });
    }
    if c != 1 && c != 3 {
        return Err(NnError::Shape {
            context: "sample::from_tensor",
            message: format!("expected 1 or 3 channels, got {c}"),
        });
    }
    let data = tensor.into_data().convert::<f32>();
    let values = data.as_slice::<f32>()?;
    let plane = h * w;
    let top = ValueRange::full(bits).hi;
    Ok(values
        .par_chunks_exact(c * plane)
        .take(n)
        .enumerate()
        .map(|(i, chunk)| {
            let centre = sources.get(i).map_or(0.0, |s| range.centre(s));
            let level = |v: f32| round_non_negative(range.to_pixel(v, centre).clamp(0.0, top));
            // Planar (channel, pixel) → interleaved (pixel, channel).
            let interleaved = |k: usize| chunk[(k % c) * plane + k / c];
            let pixels = match (bits, c, range.window) {
                (16, _, _) => Pixels::U16(
                    (0..c * plane)
                        .map(|k| level(interleaved(k)) as u16)
                        .collect(),
                ),
                // The plain linear map on grey, written out so that it vectorises: the same
                // arithmetic as `to_pixel`.
                (_, 1, None) => {
                    let (half, lo) = (range.half(), range.lo);
                    Pixels::U8(
                        chunk
                            .iter()
                            .map(|t| {
                                let v = (t.clamp(-1.0, 1.0) + 1.0) * half + lo;
                                round_non_negative(v.clamp(0.0, top)) as u8
                            })
                            .collect(),
                    )
                }
                (_, 1, Some(_)) => Pixels::U8(chunk.iter().map(|v| level(*v) as u8).collect()),
                _ => Pixels::U8(
                    (0..c * plane)
                        .map(|k| level(interleaved(k)) as u8)
                        .collect(),
                ),
            };
            SampleImage {
                width: w as u32,
                height: h as u32,
                channels: c as u8,
                pixels,
            }
        })
        .collect())
}

/// The Hugging Face Image struct column `{bytes, path}` for PNGs named `<id>.png`.
pub fn image_column<'a>(
    pngs: impl Iterator<Item = &'a [u8]>,
    ids: impl Iterator<Item = &'a str>,
) -> ArrayRef {
    let mut bytes = BinaryBuilder::new();
    let mut paths = StringBuilder::new();
    for (png, id) in pngs.zip(ids) {
        bytes.append_value(png);
        paths.append_value(format!("{id}.png"));
    }
    Arc::new(StructArray::new(
        vec![
            Field::new("bytes", DataType::Binary, true),
            Field::new("path", DataType::Utf8, true),
        ]
        .into(),
        vec![
            Arc::new(bytes.finish()) as ArrayRef,
            Arc::new(paths.finish()) as ArrayRef,
        ],
        None,
    ))
}

fn schema_err(what: &str, detail: String) -> Error {
    Error::Schema {
        path: what.to_string(),
        detail,
    }
}

/// A string column of a sample batch.
pub fn strings<'a>(batch: &'a RecordBatch, name: &str, what: &str) -> Result<&'a StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| schema_err(what, format!("column `{name}` missing or not a string")))
}

/// The PNG bytes of the `image` column.
pub fn image_bytes<'a>(batch: &'a RecordBatch, what: &str) -> Result<&'a BinaryArray> {
    batch
        .column_by_name("image")
        .and_then(|c| c.as_any().downcast_ref::<StructArray>())
        .and_then(|s| s.column_by_name("bytes"))
        .and_then(|c| c.as_any().downcast_ref::<BinaryArray>())
        .ok_or_else(|| schema_err(what, "column `image` is not a {bytes, path} struct".into()))
}

/// Check that a schema starts with the common sample columns.
pub fn check_common(schema: &Schema, what: &str) -> Result<()> {
    for name in COMMON_COLUMNS {
        if schema.field_with_name(name).is_err() {
            return Err(schema_err(
                what,
                format!(
                    "not a sample dataset: column `{name}` is missing (sample datasets have {})",
                    COMMON_COLUMNS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Replace the `image` column with new PNGs and set `domain` (every other column unchanged).
pub fn with_images(batch: &RecordBatch, pngs: &[Vec<u8>], domain: &str) -> Result<RecordBatch> {
    let ids = strings(batch, "id", "sample rows")?;
    let image = image_column(
        pngs.iter().map(|p| p.as_slice()),
        (0..ids.len()).map(|i| ids.value(i)),
    );
    let domain: ArrayRef = Arc::new(StringArray::from(vec![domain; batch.num_rows()]));
    let schema = batch.schema();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| match f.name().as_str() {
            "image" => image.clone(),
            "domain" => domain.clone(),
            _ => c.clone(),
        })
        .collect();
    RecordBatch::try_new(schema, columns).map_err(|source| Error::Arrow {
        what: "refined rows".into(),
        source,
    })
}

/// A stage input read into memory: its rows (one batch, every column) and their images.
pub struct Loaded {
    /// The rows, in manifest shard order.
    pub batch: RecordBatch,
    /// The decoded images, one per row.
    pub images: Vec<SampleImage>,
}

impl Loaded {
    /// Row ids.
    pub fn ids(&self) -> Result<&StringArray> {
        strings(&self.batch, "id", "sample rows")
    }

    /// The pixel format of the images (of the first; [`load`] checks they agree).
    pub fn format(&self) -> Option<PixelFormat> {
        self.images.first().map(SampleImage::format)
    }

    /// The pixel values that map to `[-1, 1]` (see [`ValueRange::of`]).
    pub fn range(&self) -> ValueRange {
        let bits = self.format().map(|f| f.bits).unwrap_or(8);
        ValueRange::of(&self.batch.schema(), bits)
    }
}

/// Read the rows of a committed sample stage (only `split` if given), decode their images on
/// rayon, and check that every image has the same size and format.
pub fn load(root: &Root, committed: &Committed, split: Option<&str>) -> Result<Loaded> {
    load_limited(root, committed, split, None)
}

/// [`load`], but with `limit`, only the first `limit` rows (of `split`), reading shards in
/// manifest order only until there are enough.
pub fn load_limited(
    root: &Root,
    committed: &Committed,
    split: Option<&str>,
    limit: Option<usize>,
) -> Result<Loaded> {
    let stage = &committed.manifest.stage;
    // Each shard's batches, filtered to `split`; concatenated once, below.
    let read_shard = |s: &crate::shards::ShardInfo| -> Result<Vec<RecordBatch>> {
        let url = root.url_of(&s.path);
        let batches = crate::shards::read(root, s, None)?;
        if let Some(first) = batches.first() {
            check_common(&first.schema(), &url)?;
        }
        let Some(split) = split else {
            return Ok(batches);
        };
        batches
            .iter()
            .map(|b| {
                let col = strings(b, "split", &url)?;
                let mask: BooleanArray = (0..col.len())
                    .map(|i| Some(col.is_valid(i) && col.value(i) == split))
                    .collect();
                arrow::compute::filter_record_batch(b, &mask).map_err(|source| Error::Arrow {
                    what: url.clone(),
                    source,
                })
            })
            .collect()
    };
    let shards = &committed.manifest.shards;
    let per_shard: Vec<RecordBatch> = match limit {
        None => shards
            .par_iter()
            .map(read_shard)
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect(),
        Some(limit) => {
            let mut out = Vec::new();
            let mut rows = 0;
            for s in shards {
                if rows >= limit {
                    break;
                }
                for b in read_shard(s)? {
                    let take = b.num_rows().min(limit - rows);
                    rows += take;
                    out.push(b.slice(0, take));
                }
            }
            out
        }
    };
    let schema = match per_shard.first() {
        Some(b) => b.schema(),
        None => Arc::new(Schema::empty()),
    };
    let batch =
        arrow::compute::concat_batches(&schema, &per_shard).map_err(|source| Error::Arrow {
            what: format!("stage `{stage}`"),
            source,
        })?;
    if batch.num_rows() == 0 {
        return Ok(Loaded {
            batch,
            images: Vec::new(),
        });
    }
    let ids = strings(&batch, "id", stage)?;
    let bytes = image_bytes(&batch, stage)?;
    let images: Vec<SampleImage> = (0..batch.num_rows())
        .into_par_iter()
        .map(|i| {
            SampleImage::decode(
                bytes.value(i),
                &format!("stage `{stage}` row `{}`", ids.value(i)),
            )
        })
        .collect::<Result<_>>()?;
    let (w, h, f) = (images[0].width, images[0].height, images[0].format());
    if let Some((i, img)) = images
        .iter()
        .enumerate()
        .find(|(_, m)| (m.width, m.height, m.format()) != (w, h, f))
    {
        return Err(Error::Input {
            file: format!("stage `{stage}`"),
            field: format!("row `{}` image", ids.value(i)),
            reason: format!(
                "is {}×{} {}, the first row's is {w}×{h} {f}: every image of a dataset must have one size and format (resize at ingest)",
                img.width,
                img.height,
                img.format()
            ),
        });
    }
    Ok(Loaded { batch, images })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::CpuBackend;

    fn rgb16() -> SampleImage {
        SampleImage {
            width: 3,
            height: 2,
            channels: 3,
            pixels: Pixels::U16((0..18).map(|v| v * 3000 + 7).collect()),
        }
    }

    #[test]
    fn png_round_trip_keeps_size_channels_and_depth() {
        let gray = SampleImage::from_gray(GrayImage::from_fn(5, 4, |x, y| {
            image::Luma([(x * 40 + y) as u8])
        }));
        for img in [gray, rgb16()] {
            let png = img.encode_png("t").unwrap_or_default();
            let back = SampleImage::decode(&png, "t").unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back, img);
        }
    }

    /// The branch-free rounding is `f32::round` on every value a pixel can take, ties included
    /// (grey 8-bit through the plain map lands on .5 for network 0).
    #[test]
    fn round_non_negative_is_round() {
        let mut values: Vec<f32> = (0..=65535 * 4).map(|k| k as f32 / 4.0).collect();
        values.extend([0.49999997, 1.4999999, 127.49999, 65534.5, 0.0, 1e-30]);
        let mut x = 0.1f32;
        for _ in 0..100_000 {
            x = (x * 1.618_034 + 0.37) % 65535.0;
            values.push(x);
        }
        for v in values {
            assert_eq!(round_non_negative(v), v.round(), "{v}");
        }
        assert!(round_non_negative(f32::NAN).is_nan());
        // The grey fast path: every 8-bit level and the midpoints between them.
        let range = ValueRange::full(8);
        let t: Vec<f32> = (0..=510).map(|k| k as f32 / 255.0 - 1.0).collect();
        let tensor = Tensor::<CpuBackend, 4>::from_data(
            TensorData::new(t.clone(), [1, 1, 1, t.len()]),
            &Default::default(),
        );
        let back = from_tensor(tensor, 8, range, &[]).unwrap_or_default();
        let expect: Vec<u8> = t
            .iter()
            .map(|v| range.to_pixel(*v, 0.0).clamp(0.0, 255.0).round() as u8)
            .collect();
        assert_eq!(
            back.first().map(|i| i.pixels.clone()),
            Some(Pixels::U8(expect))
        );
    }

    #[test]
    fn tensor_round_trip_is_exact_and_planar() {
        let device = Default::default();
        for img in [rgb16(), rgb16().convert(PixelFormat::RGB8)] {
            let range = ValueRange::full(img.format().bits);
            let t = to_tensor::<CpuBackend>(&[img.clone(), img.clone()], range, &device)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(t.dims(), [2, 3, 2, 3]);
            // Channel 0 of pixel (0, 0) is the first sample; channel 1 is the second.
            let v = t.clone().into_data().to_vec::<f32>().unwrap_or_default();
            let half = range.hi / 2.0;
            let first = |k: usize| match &img.pixels {
                Pixels::U8(p) => p[k] as f32,
                Pixels::U16(p) => p[k] as f32,
            };
            assert!((v[0] - (first(0) / half - 1.0)).abs() < 1e-6);
            assert!((v[6] - (first(1) / half - 1.0)).abs() < 1e-6);
            let back = from_tensor(t, img.format().bits, range, &[]).unwrap_or_default();
            assert_eq!(back, vec![img.clone(), img]);
        }
    }

    /// A depth map in millimetres with its range named in the schema: 0 ↦ −1, 1000 ↦ 1, and
    /// back to the same millimetres; values beyond the range are clamped on write.
    #[test]
    fn named_range_maps_depth_and_back() {
        let meta = std::collections::HashMap::from([(
            "simgan".to_string(),
            r#"{"task": "hand-pose", "pixel_range": [0, 1000]}"#.to_string(),
        )]);
        let schema = Schema::new_with_metadata(Vec::<Field>::new(), meta);
        let range = ValueRange::of(&schema, 16);
        assert_eq!(
            range,
            ValueRange {
                lo: 0.0,
                hi: 1000.0,
                window: None
            }
        );
        assert_eq!(ValueRange::of(&Schema::empty(), 16), ValueRange::full(16));
        let img = SampleImage {
            width: 4,
            height: 1,
            channels: 1,
            pixels: Pixels::U16(vec![0, 500, 731, 1000]),
        };
        let device = Default::default();
        let t = to_tensor::<CpuBackend>(std::slice::from_ref(&img), range, &device)
            .unwrap_or_else(|e| panic!("{e}"));
        let v = t.clone().into_data().to_vec::<f32>().unwrap_or_default();
        assert!((v[0] + 1.0).abs() < 1e-6 && v[1].abs() < 1e-6 && (v[3] - 1.0).abs() < 1e-6);
        assert_eq!(
            from_tensor(t, 16, range, &[]).unwrap_or_default(),
            vec![img]
        );
        let over = Tensor::<CpuBackend, 4>::full([1, 1, 1, 1], 3.0, &device);
        let back = from_tensor(over, 16, range, &[]).unwrap_or_default();
        assert_eq!(back[0].pixels, Pixels::U16(vec![1000]));
    }

    /// A windowed range: each image centred on the median of its non-zero depths, ± window
    /// ↦ ±1, background ↦ +1; back to the same millimetres around the source image's centre,
    /// values from `BACKGROUND_FROM` up to background, in-window values never to 0.
    #[test]
    fn windowed_range_centres_each_image() {
        let meta = std::collections::HashMap::from([(
            "simgan".to_string(),
            r#"{"pixel_range": [0, 1000], "pixel_window": 150}"#.to_string(),
        )]);
        let range = ValueRange::of(&Schema::new_with_metadata(Vec::<Field>::new(), meta), 16);
        assert_eq!(range.window, Some(150.0));
        let depth = |p: Vec<u16>| SampleImage {
            width: p.len() as u32,
            height: 1,
            channels: 1,
            pixels: Pixels::U16(p),
        };
        // Medians 600 and 900: the same offsets from each centre give the same values.
        let a = depth(vec![0, 450, 600, 675, 0]);
        let b = depth(vec![0, 750, 900, 975, 0]);
        assert_eq!((range.centre(&a), range.centre(&b)), (600.0, 900.0));
        assert_eq!(range.centre(&depth(vec![0, 0])), 150.0);
        let device = Default::default();
        let images = [a.clone(), b.clone()];
        let t = to_tensor::<CpuBackend>(&images, range, &device).unwrap_or_else(|e| panic!("{e}"));
        let v = t.clone().into_data().to_vec::<f32>().unwrap_or_default();
        let want = [1.0, -1.0, 0.0, 0.5, 1.0];
        for (got, want) in v.iter().zip(want.iter().chain(want.iter())) {
            assert!((got - want).abs() < 1e-6, "{v:?}");
        }
        assert_eq!(
            from_tensor(t, 16, range, &images).unwrap_or_default(),
            images.to_vec()
        );
        // Near the window's back → background; far in front → clamped to the window's face,
        // never to 0 (background).
        let t = Tensor::<CpuBackend, 4>::from_data(
            TensorData::new(vec![0.96f32, 0.9, -5.0], [1, 1, 1, 3]),
            &device,
        );
        let small = depth(vec![0, 100, 0]);
        let back =
            from_tensor(t.clone(), 16, range, std::slice::from_ref(&small)).unwrap_or_default();
        assert_eq!(back[0].pixels, Pixels::U16(vec![0, 235, 1]));
        // Without the sources a windowed range cannot map back.
        assert!(from_tensor(t, 16, range, &[]).is_err());
    }

    #[test]
    fn mixed_sizes_are_refused() {
        let a = SampleImage::from_gray(GrayImage::new(4, 4));
        let b = SampleImage::from_gray(GrayImage::new(5, 4));
        let err = to_tensor::<CpuBackend>(&[a, b], ValueRange::full(8), &Default::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("image 1 is 5×4"), "{err}");
    }
}
