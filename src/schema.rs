//! Output schemas: the JSON files in `schemas/` turned into Arrow schemas.
//!
//! A schema file lists fields with a small type language — `string`, `int32`, `int64`,
//! `float32`, `float64`, `bool`, `float32[N]` (fixed-size list), `float32[]` (list) and `image`
//! (the Hugging Face Image struct `{bytes: binary, path: string}`) — plus docs. From it we build
//! the Arrow schema shards are written with, and the `huggingface` schema metadata so `datasets`
//! loads image columns as images. Shards are checked against their declared schema on write and
//! on read ([`check`]). Every Arrow field is declared nullable (see [`assemble`]); `"nullable":
//! true` in a schema file documents which columns may actually hold nulls.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// The schema files shipped with the binary, by name.
const FILES: &[(&str, &str)] = &[
    ("eye_sample", include_str!("../schemas/eye_sample.json")),
    ("image_sample", include_str!("../schemas/image_sample.json")),
    ("class_scores", include_str!("../schemas/class_scores.json")),
    (
        "regression_scores",
        include_str!("../schemas/regression_scores.json"),
    ),
    (
        "train_metrics",
        include_str!("../schemas/train_metrics.json"),
    ),
    ("gaze_scores", include_str!("../schemas/gaze_scores.json")),
    ("hand_sample", include_str!("../schemas/hand_sample.json")),
    ("hand_scores", include_str!("../schemas/hand_scores.json")),
    ("judge_scores", include_str!("../schemas/judge_scores.json")),
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
    let fields: Vec<(&str, &str)> = def
        .fields
        .iter()
        .map(|f| (f.name.as_str(), f.ty.as_str()))
        .collect();
    assemble(def.name, def.version, &fields, HashMap::new())
}

/// Arrow fields and `huggingface` features for `(name, type)` pairs. Every top-level field is
/// declared nullable: `datasets` rebuilds the Arrow schema from the features it finds in the
/// metadata (whose fields are always nullable) and keeps that metadata only when the two match
/// exactly — with non-null fields it silently fell back to plain structs and lost the Image type.
fn assemble(
    name: String,
    version: u32,
    fields: &[(&str, &str)],
    mut metadata: HashMap<String, String>,
) -> std::result::Result<DeclaredSchema, String> {
    let mut arrow_fields = Vec::with_capacity(fields.len());
    let mut features = serde_json::Map::new();
    for (field, ty) in fields {
        let (dt, hf) =
            parse_type(ty).ok_or_else(|| format!("field `{field}`: unknown type `{ty}`"))?;
        arrow_fields.push(Field::new(*field, dt, true));
        features.insert(field.to_string(), hf);
    }
    let hf = json!({"info": {"features": features}});
    metadata.insert("huggingface".to_string(), hf.to_string());
    Ok(DeclaredSchema {
        name,
        version,
        arrow: Arc::new(Schema::new_with_metadata(arrow_fields, metadata)),
    })
}

impl DeclaredSchema {
    /// This schema's fields followed by `extra` `(name, type)` fields (types as in the schema
    /// files: `string`, `int64`, `float32[3]`, …), under a new name, with extra schema metadata
    /// (kept in every shard's footer). Used for datasets whose label columns come from the data,
    /// such as an image folder's.
    pub fn extended(
        &self,
        name: &str,
        extra: &[(&str, &str)],
        metadata: &[(&str, String)],
    ) -> Result<DeclaredSchema> {
        let mut fields: Vec<(String, String)> = Vec::new();
        let hf: Value = self
            .arrow
            .metadata()
            .get("huggingface")
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(Value::Null);
        for f in self.arrow.fields() {
            let ty =
                type_name(f.data_type(), &hf["info"]["features"][f.name()]).ok_or_else(|| {
                    Error::Schema {
                        path: format!("schemas/{}.json", self.name),
                        detail: format!("field `{}` has no schema-file type", f.name()),
                    }
                })?;
            fields.push((f.name().clone(), ty));
        }
        for (n, t) in extra {
            if fields.iter().any(|(f, _)| f == n) {
                return Err(Error::Schema {
                    path: name.to_string(),
                    detail: format!("column `{n}` is declared twice"),
                });
            }
            fields.push((n.to_string(), t.to_string()));
        }
        let pairs: Vec<(&str, &str)> = fields
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let meta = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        assemble(name.to_string(), self.version, &pairs, meta).map_err(|detail| Error::Schema {
            path: name.to_string(),
            detail,
        })
    }

    /// A schema found in data (e.g. an input shard's footer), declared as is.
    pub fn found(name: &str, version: u32, arrow: SchemaRef) -> DeclaredSchema {
        DeclaredSchema {
            name: name.to_string(),
            version,
            arrow,
        }
    }
}

/// The schema-file type of an Arrow type (inverse of [`parse_type`]).
fn type_name(dt: &DataType, hf: &Value) -> Option<String> {
    let scalar = |dt: &DataType| -> Option<&'static str> {
        Some(match dt {
            DataType::Utf8 => "string",
            DataType::Int32 => "int32",
            DataType::Int64 => "int64",
            DataType::Float32 => "float32",
            DataType::Float64 => "float64",
            DataType::Boolean => "bool",
            _ => return None,
        })
    };
    Some(match dt {
        DataType::Struct(_) if hf["_type"] == "Image" => "image".to_string(),
        DataType::List(item) => format!("{}[]", scalar(item.data_type())?),
        DataType::FixedSizeList(item, n) => format!("{}[{n}]", scalar(item.data_type())?),
        other => scalar(other)?.to_string(),
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
