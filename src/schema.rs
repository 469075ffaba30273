//! Output schemas: the JSON files in `schemas/` turned into Arrow schemas.
//!
//! A schema file lists fields with a small type language — `string`, `int32`, `int64`,
//! `float32`, `float64`, `bool`, `float32[N]` (fixed-size list), `float32[]` (list) and `image`
//! (the Hugging Face Image struct `{bytes: binary, path: string}`) — plus docs. From it we build
//! the Arrow schema shards are written with, and the `huggingface` schema metadata so `datasets`
//! loads image columns as images. Shards are checked against their declared schema on write and
//! on read ([`check`]).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// The schema files shipped with the binary, by name.
const FILES: &[(&str, &str)] = &[
    ("eye_sample", include_str!("../schemas/eye_sample.json")),
    (
        "train_metrics",
        include_str!("../schemas/train_metrics.json"),
    ),
    ("gaze_scores", include_str!("../schemas/gaze_scores.json")),
    (
        "report_summary",
        include_str!("../schemas/report_summary.json"),
    ),
];

#[derive(Debug, Deserialize)]
struct FileDef {
    name: String,
    version: u32,
    fields: Vec<FieldDef>,
}

#[derive(Debug, Deserialize)]
struct FieldDef {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    nullable: bool,
}

/// A declared output schema.
#[derive(Debug, Clone)]
pub struct DeclaredSchema {
    /// Schema name (the file stem in `schemas/`).
    pub name: String,
    /// Schema version from the file.
    pub version: u32,
    /// The Arrow schema, with the `huggingface` metadata attached.
    pub arrow: SchemaRef,
}

fn image_struct() -> DataType {
    DataType::Struct(Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]))
}

fn parse_type(ty: &str) -> Option<(DataType, Value)> {
    let scalar = |t: &str| -> Option<(DataType, &'static str)> {
        Some(match t {
            "string" => (DataType::Utf8, "string"),
            "int32" => (DataType::Int32, "int32"),
            "int64" => (DataType::Int64, "int64"),
            "float32" => (DataType::Float32, "float32"),
            "float64" => (DataType::Float64, "float64"),
            "bool" => (DataType::Boolean, "bool"),
            _ => return None,
        })
    };
    if ty == "image" {
        return Some((image_struct(), json!({"_type": "Image"})));
    }
    if let Some(inner) = ty.strip_suffix("[]") {
        let (dt, hf) = scalar(inner)?;
        let item = Arc::new(Field::new("item", dt, true));
        return Some((
            DataType::List(item),
            json!({"feature": {"dtype": hf, "_type": "Value"}, "_type": "Sequence"}),
        ));
    }
    if let Some((inner, n)) = ty.strip_suffix(']').and_then(|t| t.split_once('[')) {
        let (dt, hf) = scalar(inner)?;
        let n: i32 = n.parse().ok()?;
        let item = Arc::new(Field::new("item", dt, true));
        return Some((
            DataType::FixedSizeList(item, n),
            json!({"feature": {"dtype": hf, "_type": "Value"}, "length": n, "_type": "Sequence"}),
        ));
    }
    let (dt, hf) = scalar(ty)?;
    Some((dt, json!({"dtype": hf, "_type": "Value"})))
}

fn build(text: &str) -> std::result::Result<DeclaredSchema, String> {
    let def: FileDef = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut fields = Vec::with_capacity(def.fields.len());
    let mut features = serde_json::Map::new();
    for f in &def.fields {
        let (dt, hf) = parse_type(&f.ty)
            .ok_or_else(|| format!("field `{}`: unknown type `{}`", f.name, f.ty))?;
        fields.push(Field::new(&f.name, dt, f.nullable));
        features.insert(f.name.clone(), hf);
    }
    let hf = json!({"info": {"features": features}});
    let metadata = HashMap::from([("huggingface".to_string(), hf.to_string())]);
    Ok(DeclaredSchema {
        name: def.name,
        version: def.version,
        arrow: Arc::new(Schema::new_with_metadata(fields, metadata)),
    })
}

/// Look up a declared schema by name.
pub fn get(name: &str) -> Result<&'static DeclaredSchema> {
    static ALL: OnceLock<Vec<std::result::Result<DeclaredSchema, String>>> = OnceLock::new();
    let all = ALL.get_or_init(|| FILES.iter().map(|(_, text)| build(text)).collect());
    for ((file, _), parsed) in FILES.iter().zip(all) {
        if *file == name {
            return parsed.as_ref().map_err(|e| Error::Schema {
                path: format!("schemas/{file}.json"),
                detail: e.clone(),
            });
        }
    }
    Err(Error::Schema {
        path: format!("schemas/{name}.json"),
        detail: "no such schema".into(),
    })
}

/// Check that `found` has the declared fields with the declared types, in order.
/// Metadata and nullability of nested items are not compared.
pub fn check(declared: &DeclaredSchema, found: &Schema, path: &str) -> Result<()> {
    let want = declared.arrow.fields();
    let got = found.fields();
    let names = |fs: &Fields| {
        fs.iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if want.len() != got.len() {
        return Err(Error::Schema {
            path: path.into(),
            detail: format!(
                "expected columns [{}] ({}), found [{}]",
                names(want),
                declared.name,
                names(got)
            ),
        });
    }
    for (w, g) in want.iter().zip(got.iter()) {
        if w.name() != g.name() || !same_type(w.data_type(), g.data_type()) {
            return Err(Error::Schema {
                path: path.into(),
                detail: format!(
                    "column `{}`: expected {} {:?}, found {} {:?}",
                    w.name(),
                    w.name(),
                    w.data_type(),
                    g.name(),
                    g.data_type()
                ),
            });
        }
        if !w.is_nullable() && g.is_nullable() && g.data_type() != w.data_type() {
            return Err(Error::Schema {
                path: path.into(),
                detail: format!("column `{}` must not be nullable", w.name()),
            });
        }
    }
    Ok(())
}

fn same_type(a: &DataType, b: &DataType) -> bool {
    match (a, b) {
        (DataType::List(x), DataType::List(y)) | (DataType::LargeList(x), DataType::List(y)) => {
            same_type(x.data_type(), y.data_type())
        }
        (DataType::FixedSizeList(x, n), DataType::FixedSizeList(y, m)) => {
            n == m && same_type(x.data_type(), y.data_type())
        }
        (DataType::Struct(x), DataType::Struct(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|(f, g)| f.name() == g.name() && same_type(f.data_type(), g.data_type()))
        }
        (DataType::Binary, DataType::LargeBinary)
        | (DataType::Utf8, DataType::LargeUtf8)
        | (DataType::Utf8, DataType::Utf8View) => true,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_schema_parses() {
        for (name, _) in FILES {
            let s = get(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!s.arrow.fields().is_empty());
            let hf: Value =
                serde_json::from_str(&s.arrow.metadata()["huggingface"]).unwrap_or(Value::Null);
            assert_eq!(
                hf["info"]["features"].as_object().map(|o| o.len()),
                Some(s.arrow.fields().len())
            );
        }
    }

    #[test]
    fn eye_schema_has_hf_image_and_fixed_gaze() {
        let s = get("eye_sample").unwrap_or_else(|e| panic!("{e}"));
        let hf: Value =
            serde_json::from_str(&s.arrow.metadata()["huggingface"]).unwrap_or(Value::Null);
        assert_eq!(hf["info"]["features"]["image"]["_type"], "Image");
        assert_eq!(hf["info"]["features"]["gaze"]["length"], 3);
        assert!(matches!(
            s.arrow
                .field_with_name("gaze")
                .map(|f| f.data_type().clone()),
            Ok(DataType::FixedSizeList(_, 3))
        ));
    }

    #[test]
    fn check_names_the_column() {
        let s = get("train_metrics").unwrap_or_else(|e| panic!("{e}"));
        let other = Schema::new(vec![Field::new("step", DataType::Utf8, false)]);
        let err = check(s, &other, "x.parquet")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("x.parquet") && err.contains("expected columns"),
            "{err}"
        );
    }
}
