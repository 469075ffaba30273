//! Eye rows ↔ Arrow record batches in the `eye_sample` schema (`schemas/eye_sample.json`), and
//! the PNG encoding of the image column.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, FixedSizeListArray, FixedSizeListBuilder, Float32Array,
    Float32Builder, ListBuilder, StringArray, StringBuilder, StructArray,
};
use arrow::datatypes::{DataType, Field};
use arrow::record_batch::RecordBatch;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{GrayImage, ImageEncoder};

use super::{EyeSample, pitch_yaw};
use crate::error::{Error, Result};

/// One row of the `eye_sample` schema.
#[derive(Debug, Clone, PartialEq)]
pub struct EyeRow {
    /// Stable id.
    pub id: String,
    /// PNG bytes of the 55×35 grayscale image.
    pub png: Vec<u8>,
    /// Unit gaze vector (project convention).
    pub gaze: [f32; 3],
    /// Head (pitch, yaw, roll) in degrees.
    pub head_pose: [f32; 3],
    /// builtin | unityeyes | mpiigaze.
    pub source: String,
    /// synthetic | real | refined.
    pub domain: String,
    /// train | test.
    pub split: String,
    /// Subject id, if known.
    pub person: Option<String>,
    /// Flattened landmarks, if any.
    pub landmarks: Option<Vec<f32>>,
}

impl EyeRow {
    /// Build a row from a sample (encodes the image as PNG).
    pub fn from_sample(
        id: String,
        s: &EyeSample,
        source: &str,
        domain: &str,
        split: &str,
        person: Option<String>,
    ) -> Result<EyeRow> {
        Ok(EyeRow {
            png: encode_png(&s.image, &id)?,
            id,
            gaze: s.gaze,
            head_pose: s.head_pose,
            source: source.to_string(),
            domain: domain.to_string(),
            split: split.to_string(),
            person,
            landmarks: s.landmarks.clone(),
        })
    }

    /// Decode the image.
    pub fn image(&self) -> Result<GrayImage> {
        decode_png(&self.png, &self.id)
    }
}

/// Encode a grayscale image as PNG (fast compression: these are tiny images).
pub fn encode_png(img: &GrayImage, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(img.len() + 128);
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Sub)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::L8,
        )
        .map_err(|source| Error::Image {
            what: what.to_string(),
            source,
        })?;
    Ok(out)
}

/// Decode PNG (or any supported format) bytes to 8-bit grayscale.
pub fn decode_png(bytes: &[u8], what: &str) -> Result<GrayImage> {
    crate::sample::decode_bounded(bytes)
        .map(|i| i.into_luma8())
        .map_err(|source| Error::Image {
            what: what.to_string(),
            source,
        })
}

fn fixed3(values: impl Iterator<Item = [f32; 3]>) -> FixedSizeListArray {
    let mut b = FixedSizeListBuilder::new(Float32Builder::new(), 3)
        .with_field(Arc::new(Field::new("item", DataType::Float32, true)));
    for v in values {
        b.values().append_slice(&v);
        b.append(true);
    }
    b.finish()
}

/// Build a record batch in the `eye_sample` schema.
pub fn to_batch(rows: &[EyeRow]) -> Result<RecordBatch> {
    let schema = crate::schema::get("eye_sample")?.arrow.clone();
    let strings = |f: &dyn Fn(&EyeRow) -> Option<&str>| -> ArrayRef {
        let mut b = StringBuilder::new();
        for r in rows {
            b.append_option(f(r));
        }
        Arc::new(b.finish())
    };
    let image = crate::sample::image_column(
        rows.iter().map(|r| r.png.as_slice()),
        rows.iter().map(|r| r.id.as_str()),
    );
    let (pitch, yaw): (Vec<f32>, Vec<f32>) = rows.iter().map(|r| pitch_yaw(r.gaze)).unzip();
    let mut lm = ListBuilder::new(Float32Builder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::Float32,
        true,
    )));
    for r in rows {
        match &r.landmarks {
            Some(v) => {
                lm.values().append_slice(v);
                lm.append(true);
            }
            None => lm.append(false),
        }
    }
    let columns: Vec<ArrayRef> = vec![
        strings(&|r| Some(&r.id)),
        image,
        Arc::new(fixed3(rows.iter().map(|r| r.gaze))),
        Arc::new(Float32Array::from(pitch)),
        Arc::new(Float32Array::from(yaw)),
        Arc::new(fixed3(rows.iter().map(|r| r.head_pose))),
        strings(&|r| Some(&r.source)),
        strings(&|r| Some(&r.domain)),
        strings(&|r| Some(&r.split)),
        strings(&|r| r.person.as_deref()),
        Arc::new(lm.finish()),
    ];
    RecordBatch::try_new(schema, columns).map_err(|source| Error::Arrow {
        what: "eye rows".into(),
        source,
    })
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| Error::Schema {
            path: "eye rows".into(),
            detail: format!("column `{name}` missing or of the wrong type"),
        })
}

fn read3(a: &FixedSizeListArray, i: usize, name: &str) -> Result<[f32; 3]> {
    let v = a.value(i);
    let f = v
        .as_any()
        .downcast_ref::<Float32Array>()
        .filter(|f| f.len() == 3)
        .ok_or_else(|| Error::Schema {
            path: "eye rows".into(),
            detail: format!("column `{name}` row {i}: expected 3 float32"),
        })?;
    Ok([f.value(0), f.value(1), f.value(2)])
}

/// Read rows back from a batch in the `eye_sample` schema.
pub fn from_batch(batch: &RecordBatch) -> Result<Vec<EyeRow>> {
    let id = column::<StringArray>(batch, "id")?;
    let image = column::<StructArray>(batch, "image")?;
    let bytes = image
        .column_by_name("bytes")
        .and_then(|c| c.as_any().downcast_ref::<BinaryArray>())
        .ok_or_else(|| Error::Schema {
            path: "eye rows".into(),
            detail: "image.bytes missing".into(),
        })?;
    let gaze = column::<FixedSizeListArray>(batch, "gaze")?;
    let head = column::<FixedSizeListArray>(batch, "head_pose")?;
    let source = column::<StringArray>(batch, "source")?;
    let domain = column::<StringArray>(batch, "domain")?;
    let split = column::<StringArray>(batch, "split")?;
    let person = column::<StringArray>(batch, "person")?;
    let landmarks = column::<arrow::array::ListArray>(batch, "landmarks")?;
    (0..batch.num_rows())
        .map(|i| {
            Ok(EyeRow {
                id: id.value(i).to_string(),
                png: bytes.value(i).to_vec(),
                gaze: read3(gaze, i, "gaze")?,
                head_pose: read3(head, i, "head_pose")?,
                source: source.value(i).to_string(),
                domain: domain.value(i).to_string(),
                split: split.value(i).to_string(),
                person: person.is_valid(i).then(|| person.value(i).to_string()),
                landmarks: landmarks.is_valid(i).then(|| {
                    let v = landmarks.value(i);
                    v.as_any()
                        .downcast_ref::<Float32Array>()
                        .map(|f| f.values().to_vec())
                        .unwrap_or_default()
                }),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_through_a_batch() {
        let img = GrayImage::from_fn(55, 35, |x, y| image::Luma([(x * 3 + y) as u8]));
        let s = EyeSample {
            image: img.clone(),
            gaze: [0.1, -0.2, -0.97],
            head_pose: [1.0, 2.0, 3.0],
            landmarks: Some(vec![1.0, 2.0]),
        };
        let a = EyeRow::from_sample("a".into(), &s, "builtin", "synthetic", "train", None)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut b = a.clone();
        b.id = "b".into();
        b.person = Some("p01".into());
        b.landmarks = None;
        let batch = to_batch(&[a.clone(), b.clone()]).unwrap_or_else(|e| panic!("{e}"));
        let back = from_batch(&batch).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, vec![a.clone(), b]);
        assert_eq!(back[0].image().ok(), Some(img));
    }
}
