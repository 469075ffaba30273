//! `ingest-images`: any image folder into `image_sample` shards, following the Hugging Face
//! `imagefolder` and torchvision `ImageFolder` conventions.
//!
//! # Layouts
//!
//! The `source` input is a folder or object-store prefix. Its layout is detected in this order:
//!
//! 1. **Metadata file**: a `metadata.jsonl` (one JSON object per line) or `metadata.csv` (a
//!    header row, RFC 4180 quoting) at the top of the source, or inside each split folder. Its
//!    `file_name` column is the image's path relative to the metadata file's folder; every other
//!    column is a label column. Column types are inferred over all rows: integers → `int64`, any
//!    non-integer number → `float32`, strings → `string`, booleans → `bool`, lists of numbers of
//!    one length N → `float32[N]` (of varying lengths → `float32[]`). A missing key or an empty
//!    CSV cell is a null. CSV cells are read as `true`/`false`, integers, decimal numbers and
//!    JSON lists of numbers (`[0.1, 2]`) where they parse as such, else as strings. Every image
//!    must be listed once.
//! 2. **Class folders**: every image is under a subfolder (`<class>/<file>`, deeper nesting
//!    allowed): one `label` column (string) = the first folder's name.
//! 3. **Unlabelled**: every image directly in the folder: no label column (e.g. real images for
//!    the refiner).
//!
//! **Splits**: if the top level has folders named `train`, `test`, `validation`, `valid` or `val`
//! (any case; the last three give split `validation`), those are the splits, every image must be
//! under one, and the layouts above apply inside each split (all splits the same layout; a
//! top-level metadata file may also cover them all, its `file_name`s then starting with the split
//! folder). Otherwise `test_fraction` assigns split `test` to a seeded fraction of the images by
//! a hash of (`seed`, relative path) — stable whatever the listing order or the unit split — and
//! `train` to the rest.
//!
//! **Files**: `.png`, `.jpg`, `.jpeg` (any case) are images; every other file is ignored, except
//! metadata files (which are read only where stated above: one elsewhere is an error). Hidden
//! files and folders and names starting with `_` are ignored.
//!
//! # Rows
//!
//! `id` = the image's path relative to the source without its extension (`train/cat/0001`:
//! stable and unique; two images differing only by extension are an error), `image` = PNG bytes
//! re-encoded after conversion and resize (path `<id>.png`), `source` = the relative path as
//! found, `domain` = the `domain` param, `split`, then the label columns sorted by name.
//!
//! # Params
//!
//! - `domain` (required): `synthetic` or `real`, what these images are.
//! - `channels` (`auto` | `gray` | `rgb`) and `bits` (`auto` | `8` | `16`): the pixel format of
//!   every row; `auto` takes the first image's (in listing order), and every image is converted
//!   to it.
//! - `height`, `width`: resize every image to exactly H×W (triangle filter, no crop); 0 and 0
//!   keep the size, and then every image must have the first image's size.
//! - `test_fraction`, `seed`: the seeded test split (without split folders).
//! - `files_per_shard`: images per shard (one work unit each).
//! - `label`, `task` (`auto` | `classification` | `regression` | `none`): the label column and
//!   task written to the schema metadata (`simgan` key, `{"task", "label"}`). Defaults: `label`
//!   for class folders, else the first label column by name; `auto` picks classification for a
//!   string or int64 label, regression for float32 or float32 lists, none without label columns.
//!   `regression` on an int64 column declares it float32.
//! - `on_error`: `fail` stops with the file (and the metadata line and field) named, committing
//!   nothing; `skip` records every bad input with its reason in the manifest (`skipped`) and
//!   ingests the rest. Bad inputs: an image that does not decode (not an image, truncated), a
//!   size mismatch (without resize), a metadata row without `file_name`, naming a missing file,
//!   listing a file twice or holding a value of the wrong type for its column, and an image no
//!   metadata row lists. A source without images, or whose layout is ambiguous, is always an
//!   error.
//!
//! Planning lists the source, reads the metadata files and decodes the first image (for the
//! `auto` format and the one size); each unit's spec carries its files with their split and
//! label values, and the label columns and format, so neither [`StageKind::output_schema`] nor
//! the units list or parse again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, FixedSizeListArray, Float32Array, Int64Array, ListArray, StringArray,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, FieldRef};
use arrow::record_batch::RecordBatch;
use image::DynamicImage;
use image::imageops::{self, FilterType};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::params::{ParamSpec, ParamType};
use crate::sample::{self, COMMON_COLUMNS, PixelFormat, SampleImage};
use crate::schema::{self, DeclaredSchema};
use crate::stages::{InputKind, InputSpec, StageCtx, StageKind, UnitOutput, UnitSpec};
use crate::storage::Root;

/// The `ingest-images` kind.
pub struct IngestImages;

const INPUTS: &[InputSpec] = &[InputSpec {
    role: "source",
    kind: InputKind::Location,
    required: true,
    doc: "Folder or object-store prefix of the images (class folders, metadata file or flat)",
}];

const PARAMS: &[ParamSpec] = &[
    ParamSpec::required(
        "domain",
        ParamType::Choice(&["synthetic", "real"]),
        "What these images are: synthetic (simulator output) or real",
    ),
    ParamSpec::new(
        "channels",
        ParamType::Choice(&["auto", "gray", "rgb"]),
        "\"auto\"",
        "Pixel channels of every row; auto = the first image's",
    ),
    ParamSpec::new(
        "bits",
        ParamType::Choice(&["auto", "8", "16"]),
        "\"auto\"",
        "Bits per channel of every row; auto = the first image's",
    ),
    ParamSpec::new(
        "height",
        ParamType::Int { min: 0, max: 65535 },
        "0",
        "Resize every image to this height (with width); 0 = keep (all images one size)",
    ),
    ParamSpec::new(
        "width",
        ParamType::Int { min: 0, max: 65535 },
        "0",
        "Resize every image to this width (with height); 0 = keep (all images one size)",
    ),
    ParamSpec::new(
        "test_fraction",
        ParamType::Float { min: 0.0, max: 1.0 },
        "0.0",
        "Without split folders: fraction of images given split = test (seeded hash of the path)",
    ),
    ParamSpec::new(
        "seed",
        ParamType::Int {
            min: 0,
            max: i64::MAX,
        },
        "0",
        "Seed of the test_fraction draw",
    ),
    ParamSpec::new(
        "files_per_shard",
        ParamType::Int {
            min: 1,
            max: 10_000_000,
        },
        "1000",
        "Images per shard (one work unit each)",
    ),
    ParamSpec::new(
        "label",
        ParamType::Str,
        "\"\"",
        "The task's label column; \"\" = label (class folders) or the first metadata column",
    ),
    ParamSpec::new(
        "task",
        ParamType::Choice(&["auto", "classification", "regression", "none"]),
        "\"auto\"",
        "Task recorded in the schema metadata; auto = from the label column's type",
    ),
    ParamSpec::new(
        "on_error",
        ParamType::Choice(&["fail", "skip"]),
        "\"fail\"",
        "Bad input: stop naming the file and field, or skip it and list it in the manifest",
    ),
];

const METADATA_FILES: [&str; 2] = ["metadata.jsonl", "metadata.csv"];

const SKIP_HINT: &str = "set on_error = \"skip\" to skip bad inputs";

// ------------------------------------------------------------------------------------------------
// The plan carried by every unit
// ------------------------------------------------------------------------------------------------

/// A label column: its name and schema-file type (`string`, `int64`, `float32[2]`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Column {
    name: String,
    ty: String,
}

/// A bad input found while planning or running: the file (URL), the metadata line if any, the
/// field and the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Bad {
    file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    field: String,
    reason: String,
}

impl Bad {
    /// What the manifest's `skipped` names.
    fn input(&self) -> String {
        match self.line {
            Some(n) => format!("{} line {n}", self.file),
            None => self.file.clone(),
        }
    }

    fn into_error(self) -> Error {
        Error::Input {
            field: match self.line {
                Some(n) => format!("line {n}, {}", self.field),
                None => self.field,
            },
            file: self.file,
            reason: format!("{} ({SKIP_HINT})", self.reason),
        }
    }
}

/// One image of a unit (or, under `skip`, a bad input found while planning).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    /// Path relative to the source: the image, or the metadata file of a bad row.
    path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    split: String,
    /// Label values in column order (null where missing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    labels: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bad: Option<Bad>,
}

impl Entry {
    fn bad(path: String, bad: Bad) -> Entry {
        Entry {
            path,
            split: String::new(),
            labels: Vec::new(),
            bad: Some(bad),
        }
    }
}

/// The size every image must have when there is no resize, and the image it was read from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Reference {
    path: String,
    width: u32,
    height: u32,
}

/// A unit's spec: the stage-wide decisions (repeated in every unit) and its entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct UnitPlan {
    format: PixelFormat,
    /// `[width, height]` every image is resized to.
    #[serde(default)]
    resize: Option<[u32; 2]>,
    #[serde(default)]
    reference: Option<Reference>,
    columns: Vec<Column>,
    task: String,
    #[serde(default)]
    label: String,
    entries: Vec<Entry>,
}

/// The part of a unit's spec the output schema needs.
#[derive(Debug, Deserialize)]
struct PlanHead {
    columns: Vec<Column>,
    task: String,
    #[serde(default)]
    label: String,
}

// ------------------------------------------------------------------------------------------------
// Listing
// ------------------------------------------------------------------------------------------------

/// Hidden files and folders, and names starting with `_`, are not part of the dataset.
fn visible(path: &str) -> bool {
    path.split('/')
        .all(|c| !c.is_empty() && !c.starts_with('.') && !c.starts_with('_'))
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn is_image(path: &str) -> bool {
    let name = file_name(path).to_ascii_lowercase();
    name.ends_with(".png") || name.ends_with(".jpg") || name.ends_with(".jpeg")
}

fn is_metadata(path: &str) -> bool {
    METADATA_FILES.contains(&file_name(path))
}

/// The folder of `path` (`""` at the top, else without the trailing `/`).
fn dir_of(path: &str) -> &str {
    path.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
}

/// The first path component, if the path has a folder.
fn top_folder(path: &str) -> Option<&str> {
    path.split_once('/').map(|(d, _)| d)
}

/// A row id: the relative path without the extension of its file name.
fn id_of(path: &str) -> &str {
    let name_start = path.len() - file_name(path).len();
    match path.rfind('.') {
        Some(dot) if dot > name_start => &path[..dot],
        _ => path,
    }
}

fn split_of_folder(name: &str) -> Option<&'static str> {
    match name.to_ascii_lowercase().as_str() {
        "train" => Some("train"),
        "test" => Some("test"),
        "validation" | "valid" | "val" => Some("validation"),
        _ => None,
    }
}

/// The visible files of the source.
struct Listing {
    images: BTreeSet<String>,
    metadata: Vec<String>,
    /// Every visible file (images, metadata and the ignored rest).
    files: BTreeSet<String>,
}

impl Listing {
    fn read(source: &Root) -> Result<Listing> {
        let mut images = BTreeSet::new();
        let mut metadata = Vec::new();
        let mut files = BTreeSet::new();
        for l in source.list("")? {
            if !visible(&l.path) {
                continue;
            }
            if is_image(&l.path) {
                images.insert(l.path.clone());
            } else if is_metadata(&l.path) {
                metadata.push(l.path.clone());
            }
            files.insert(l.path);
        }
        metadata.sort();
        let ignored = files.len() - images.len() - metadata.len();
        if ignored > 0 {
            tracing::info!(
                source = source.url(),
                ignored,
                "files that are not images ignored"
            );
        }
        Ok(Listing {
            images,
            metadata,
            files,
        })
    }
}

/// Split folders at the top of the source: folder name → split.
fn split_folders(listing: &Listing) -> BTreeMap<String, &'static str> {
    listing
        .images
        .iter()
        .chain(listing.metadata.iter())
        .filter_map(|p| top_folder(p))
        .filter_map(|d| split_of_folder(d).map(|s| (d.to_string(), s)))
        .collect()
}

fn structure_err(source: &Root, rel: &str, field: &str, reason: String) -> Error {
    Error::Input {
        file: source.url_of(rel),
        field: field.to_string(),
        reason,
    }
}

/// With split folders, every image must be under one.
fn check_splits(
    source: &Root,
    listing: &Listing,
    splits: &BTreeMap<String, &'static str>,
) -> Result<()> {
    if splits.is_empty() {
        return Ok(());
    }
    let names = splits.keys().cloned().collect::<Vec<_>>().join(", ");
    for img in &listing.images {
        if !top_folder(img).is_some_and(|d| splits.contains_key(d)) {
            return Err(structure_err(
                source,
                img,
                "split",
                format!(
                    "the source has split folders ({names}) but this image is outside them: move it under a split folder or remove it"
                ),
            ));
        }
    }
    Ok(())
}

/// The metadata files in effect, with the folder each covers (`""` = the whole source).
fn metadata_in_effect(
    source: &Root,
    listing: &Listing,
    splits: &BTreeMap<String, &'static str>,
) -> Result<Vec<(String, String)>> {
    let mut by_dir: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in &listing.metadata {
        let dir = dir_of(m);
        if !(dir.is_empty() || splits.contains_key(dir)) {
            return Err(structure_err(
                source,
                m,
                "metadata",
                "metadata files are read only at the top of the source or of a split folder (train, test, validation): move it or remove it".into(),
            ));
        }
        by_dir.entry(dir.to_string()).or_default().push(m.clone());
    }
    for (dir, files) in &by_dir {
        if files.len() > 1 {
            return Err(structure_err(
                source,
                dir,
                "metadata",
                format!(
                    "both {} are here: keep one",
                    files
                        .iter()
                        .map(|f| file_name(f))
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            ));
        }
    }
    if by_dir.contains_key("") && by_dir.len() > 1 {
        return Err(structure_err(
            source,
            "",
            "metadata",
            "there is a metadata file at the top and in split folders: keep one level".into(),
        ));
    }
    if !by_dir.is_empty() && !by_dir.contains_key("") {
        for dir in splits.keys() {
            if !by_dir.contains_key(dir) {
                let with = by_dir.keys().next().cloned().unwrap_or_default();
                return Err(structure_err(
                    source,
                    dir,
                    "metadata",
                    format!(
                        "split folder `{with}` has a metadata file but `{dir}` has none: give every split folder one, or put one at the top"
                    ),
                ));
            }
        }
    }
    Ok(by_dir
        .into_iter()
        .flat_map(|(dir, files)| files.into_iter().map(move |f| (f, dir.clone())))
        .collect())
}

// ------------------------------------------------------------------------------------------------
// Folder layouts (class folders, unlabelled)
// ------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Metadata,
    Classes,
    Unlabelled,
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layout::Metadata => "metadata file",
            Layout::Classes => "class folders",
            Layout::Unlabelled => "unlabelled images",
        })
    }
}

fn folder_entries(
    source: &Root,
    listing: &Listing,
    splits: &BTreeMap<String, &'static str>,
) -> Result<(Layout, Vec<Column>, Vec<Entry>)> {
    // Scopes: the whole source, or each split folder.
    let scopes: Vec<(String, &'static str)> = if splits.is_empty() {
        vec![(String::new(), "")]
    } else {
        splits.iter().map(|(d, s)| (format!("{d}/"), *s)).collect()
    };
    let mut layout: Option<(Layout, String)> = None;
    let mut entries = Vec::new();
    for (prefix, split) in &scopes {
        let inside: Vec<(&String, &str)> = listing
            .images
            .iter()
            .filter_map(|p| p.strip_prefix(prefix.as_str()).map(|s| (p, s)))
            .collect();
        if inside.is_empty() {
            return Err(structure_err(
                source,
                prefix,
                "split",
                "split folder has no .png, .jpg or .jpeg images".into(),
            ));
        }
        let flat = inside.iter().find(|(_, s)| !s.contains('/'));
        let nested = inside.iter().find(|(_, s)| s.contains('/'));
        let here = match (flat, nested) {
            (Some(f), Some(n)) => {
                return Err(structure_err(
                    source,
                    prefix,
                    "layout",
                    format!(
                        "images both directly in the folder (`{}`) and in subfolders (`{}`): put every image in a class folder, or none",
                        f.0, n.0
                    ),
                ));
            }
            (None, _) => Layout::Classes,
            (Some(_), None) => Layout::Unlabelled,
        };
        match layout.clone() {
            Some((l, at)) if l != here => {
                return Err(structure_err(
                    source,
                    prefix,
                    "layout",
                    format!(
                        "this split has {here} but `{at}` has {l}: give every split the same layout"
                    ),
                ));
            }
            Some(_) => {}
            None => layout = Some((here, prefix.clone())),
        }
        for (path, sub) in inside {
            let labels = match (here, top_folder(sub)) {
                (Layout::Classes, Some(class)) => vec![Value::from(class)],
                _ => Vec::new(),
            };
            entries.push(Entry {
                path: path.clone(),
                split: split.to_string(),
                labels,
                bad: None,
            });
        }
    }
    let layout = layout.map(|(l, _)| l).unwrap_or(Layout::Unlabelled);
    let columns = if layout == Layout::Classes {
        vec![Column {
            name: "label".into(),
            ty: "string".into(),
        }]
    } else {
        Vec::new()
    };
    Ok((layout, columns, entries))
}

// ------------------------------------------------------------------------------------------------
// Metadata files
// ------------------------------------------------------------------------------------------------

/// A metadata row's `(column, value)` pairs, or why the row could not be read.
type Fields = std::result::Result<Vec<(String, Value)>, String>;

/// One row of a metadata file.
struct MetaRow {
    meta: String,
    dir: String,
    line: usize,
    fields: Fields,
}

/// Records of a CSV text (RFC 4180: `"`-quoted fields with `""` escapes, LF or CRLF line ends)
/// with the line each starts on; blank lines are skipped. `Err` holds the line of an unterminated
/// quote.
fn csv_records(text: &str) -> std::result::Result<Vec<(usize, Vec<String>)>, usize> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut record: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut line = 1;
    let mut start = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => quoted = true,
            ',' => record.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                record.push(std::mem::take(&mut field));
                let blank = record.len() == 1 && record[0].trim().is_empty();
                let done = std::mem::take(&mut record);
                if !blank {
                    out.push((start, done));
                }
                line += 1;
                start = line;
            }
            _ => field.push(c),
        }
    }
    if quoted {
        return Err(start);
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        if !(record.len() == 1 && record[0].trim().is_empty()) {
            out.push((start, record));
        }
    }
    Ok(out)
}

/// A CSV cell as a JSON value: empty → null, `true`/`false`, integers, finite decimal numbers,
/// JSON lists, else the text.
fn csv_value(cell: &str) -> Value {
    let t = cell.trim();
    if t.is_empty() {
        return Value::Null;
    }
    if t.eq_ignore_ascii_case("true") {
        return Value::Bool(true);
    }
    if t.eq_ignore_ascii_case("false") {
        return Value::Bool(false);
    }
    let digits = t.trim_start_matches(['+', '-']);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(i) = t.parse::<i64>()
    {
        return Value::from(i);
    }
    if t.bytes().any(|b| b.is_ascii_digit())
        && t.bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
        && let Ok(f) = t.parse::<f64>()
        && f.is_finite()
    {
        return Value::from(f);
    }
    if t.starts_with('[')
        && let Ok(v @ Value::Array(_)) = serde_json::from_str::<Value>(t)
    {
        return v;
    }
    Value::String(cell.to_string())
}

fn parse_metadata(source: &Root, meta: &str, dir: &str) -> Result<Vec<MetaRow>> {
    let bytes = source.get_required(meta)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| Error::Input {
        file: source.url_of(meta),
        field: "text".into(),
        reason: format!("not UTF-8: {e}"),
    })?;
    let row = |line: usize, fields: Fields| MetaRow {
        meta: meta.to_string(),
        dir: dir.to_string(),
        line,
        fields,
    };
    let mut rows = Vec::new();
    if meta.ends_with(".jsonl") {
        for (i, l) in text.lines().enumerate() {
            let l = l.trim();
            if l.is_empty() {
                continue;
            }
            let fields: Fields = match serde_json::from_str::<Value>(l) {
                Ok(Value::Object(map)) => Ok(map.into_iter().collect()),
                Ok(other) => Err(format!("is {}, not a JSON object", kind_name(&other))),
                Err(e) => Err(format!("malformed JSON: {e}")),
            };
            rows.push(row(i + 1, fields));
        }
        return Ok(rows);
    }
    let records = csv_records(text).map_err(|line| Error::Input {
        file: source.url_of(meta),
        field: format!("line {line}"),
        reason: "unterminated quoted field".into(),
    })?;
    let mut records = records.into_iter();
    let Some((_, header)) = records.next() else {
        return Err(Error::Input {
            file: source.url_of(meta),
            field: "header".into(),
            reason: "empty file: the first line must name the columns (file_name, …)".into(),
        });
    };
    let header: Vec<String> = header.iter().map(|h| h.trim().to_string()).collect();
    let mut seen = BTreeSet::new();
    for h in &header {
        if h.is_empty() || !seen.insert(h.as_str()) {
            return Err(Error::Input {
                file: source.url_of(meta),
                field: "header".into(),
                reason: format!("column name `{h}` is empty or repeated"),
            });
        }
    }
    if !seen.contains("file_name") {
        return Err(Error::Input {
            file: source.url_of(meta),
            field: "file_name".into(),
            reason: format!(
                "the header has no `file_name` column (found: {})",
                header.join(", ")
            ),
        });
    }
    for (line, cells) in records {
        let fields: Fields = if cells.len() != header.len() {
            Err(format!(
                "has {} fields, the header has {}",
                cells.len(),
                header.len()
            ))
        } else {
            Ok(header
                .iter()
                .zip(&cells)
                .map(|(h, c)| {
                    let v = if h == "file_name" {
                        Value::String(c.trim().to_string())
                    } else {
                        csv_value(c)
                    };
                    (h.clone(), v)
                })
                .collect())
        };
        rows.push(row(line, fields));
    }
    Ok(rows)
}

/// The value families a label column can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Number,
    Bool,
    Text,
    Vector,
}

impl Family {
    fn of(v: &Value) -> Option<Family> {
        match v {
            Value::Number(_) => Some(Family::Number),
            Value::Bool(_) => Some(Family::Bool),
            Value::String(_) => Some(Family::Text),
            Value::Array(items) if items.iter().all(Value::is_number) => Some(Family::Vector),
            _ => None,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Family::Number => "numbers",
            Family::Bool => "booleans",
            Family::Text => "strings",
            Family::Vector => "lists of numbers",
        }
    }
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(items) if items.iter().all(Value::is_number) => "a list of numbers",
        Value::Array(_) => "a list of non-numbers",
        Value::Object(_) => "an object",
    }
}

/// `dir` joined with a metadata `file_name`; `Err` if it leaves the folder.
fn resolve_name(dir: &str, name: &str) -> std::result::Result<String, String> {
    let name = name.trim().trim_start_matches("./");
    if name.starts_with('/') || name.contains('\\') || name.contains("://") {
        return Err(format!(
            "`{name}` must be a path relative to the metadata file's folder"
        ));
    }
    let parts: Vec<&str> = name.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(format!(
            "`{name}` must be a plain relative path (no empty, `.` or `..` parts)"
        ));
    }
    Ok(if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    })
}

/// A row that named an existing image, before its values are type-checked.
struct Candidate {
    path: String,
    split: &'static str,
    meta: String,
    line: usize,
    values: Vec<(String, Value)>,
}

fn metadata_entries(
    source: &Root,
    listing: &Listing,
    splits: &BTreeMap<String, &'static str>,
    metas: &[(String, String)],
) -> Result<(Layout, Vec<Column>, Vec<Entry>)> {
    let mut rows = Vec::new();
    for (meta, dir) in metas {
        rows.extend(parse_metadata(source, meta, dir)?);
    }
    let mut entries: Vec<Entry> = Vec::new();
    let mut claimed: BTreeMap<String, (String, usize)> = BTreeMap::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    for row in rows {
        let meta_url = source.url_of(&row.meta);
        let bad = |field: &str, reason: String| {
            Entry::bad(
                row.meta.clone(),
                Bad {
                    file: meta_url.clone(),
                    line: Some(row.line),
                    field: field.to_string(),
                    reason,
                },
            )
        };
        let fields = match row.fields {
            Ok(f) => f,
            Err(reason) => {
                entries.push(bad("row", reason));
                continue;
            }
        };
        let mut name = None;
        let mut values = Vec::new();
        for (k, v) in fields {
            if k == "file_name" {
                name = Some(v);
            } else if COMMON_COLUMNS.contains(&k.as_str()) {
                return Err(Error::Input {
                    file: meta_url,
                    field: format!("line {}, `{k}`", row.line),
                    reason: format!(
                        "`{k}` is a column every sample has ({}): rename the label column",
                        COMMON_COLUMNS.join(", ")
                    ),
                });
            } else {
                values.push((k, v));
            }
        }
        let name = match name {
            Some(Value::String(s)) if !s.trim().is_empty() => s,
            None | Some(Value::Null) => {
                entries.push(bad(
                    "`file_name`",
                    "missing: every row needs `file_name`, the image's path relative to the metadata file's folder".into(),
                ));
                continue;
            }
            Some(Value::String(_)) => {
                entries.push(bad("`file_name`", "is empty".into()));
                continue;
            }
            Some(other) => {
                entries.push(bad(
                    "`file_name`",
                    format!("is {}, not a path", kind_name(&other)),
                ));
                continue;
            }
        };
        let path = match resolve_name(&row.dir, &name) {
            Ok(p) => p,
            Err(reason) => {
                entries.push(bad("`file_name`", reason));
                continue;
            }
        };
        if !listing.images.contains(&path) {
            let reason = if listing.files.contains(&path) {
                format!("`{name}` is not a .png, .jpg or .jpeg image")
            } else {
                format!("`{name}` not found ({})", source.url_of(&path))
            };
            entries.push(bad("`file_name`", reason));
            continue;
        }
        let split = if splits.is_empty() {
            ""
        } else {
            match top_folder(&path).and_then(|d| splits.get(d)) {
                Some(s) => *s,
                None => {
                    entries.push(bad(
                        "`file_name`",
                        format!("`{name}` is not under a split folder"),
                    ));
                    continue;
                }
            }
        };
        if let Some((m, l)) = claimed.get(&path) {
            entries.push(bad(
                "`file_name`",
                format!(
                    "`{name}` is already listed on line {l} of {}",
                    source.url_of(m)
                ),
            ));
            continue;
        }
        claimed.insert(path.clone(), (row.meta.clone(), row.line));
        candidates.push(Candidate {
            path,
            split,
            meta: row.meta,
            line: row.line,
            values,
        });
    }

    // Each column's family comes from its first value (rows in file order); a row with a value
    // of another family is bad and does not count towards any column.
    let mut families: BTreeMap<String, (Family, String, usize)> = BTreeMap::new();
    let mut good: Vec<Candidate> = Vec::new();
    for c in candidates {
        let mut tentative: Vec<(String, Family)> = Vec::new();
        let mut problem: Option<(String, String)> = None;
        for (k, v) in &c.values {
            if v.is_null() {
                continue;
            }
            let Some(f) = Family::of(v) else {
                problem = Some((
                    k.clone(),
                    format!(
                        "is {}; label values must be strings, numbers, booleans or lists of numbers",
                        kind_name(v)
                    ),
                ));
                break;
            };
            match families.get(k) {
                Some((g, m, l)) if *g != f => {
                    problem = Some((
                        k.clone(),
                        format!(
                            "is {}, but column `{k}` holds {} (from line {l} of {})",
                            kind_name(v),
                            g.describe(),
                            source.url_of(m)
                        ),
                    ));
                    break;
                }
                Some(_) => {}
                None => tentative.push((k.clone(), f)),
            }
        }
        if let Some((field, reason)) = problem {
            entries.push(Entry::bad(
                c.path.clone(),
                Bad {
                    file: source.url_of(&c.meta),
                    line: Some(c.line),
                    field: format!("`{field}`"),
                    reason,
                },
            ));
            continue;
        }
        for (k, f) in tentative {
            families.insert(k, (f, c.meta.clone(), c.line));
        }
        good.push(c);
    }

    // Column types from the good rows (sorted by name).
    let mut names: BTreeSet<String> = BTreeSet::new();
    for c in &good {
        names.extend(c.values.iter().map(|(k, _)| k.clone()));
    }
    let mut columns: Vec<Column> = Vec::with_capacity(names.len());
    for name in names {
        let mut any_float = false;
        let mut lengths: BTreeSet<usize> = BTreeSet::new();
        for c in &good {
            for (k, v) in &c.values {
                if *k != name || v.is_null() {
                    continue;
                }
                if v.is_number() && v.as_i64().is_none() {
                    any_float = true;
                }
                if let Some(a) = v.as_array() {
                    lengths.insert(a.len());
                }
            }
        }
        let ty = match families.get(&name).map(|f| f.0) {
            None | Some(Family::Text) => "string".to_string(),
            Some(Family::Bool) => "bool".to_string(),
            Some(Family::Number) if any_float => "float32".to_string(),
            Some(Family::Number) => "int64".to_string(),
            Some(Family::Vector) => match lengths.iter().next() {
                Some(&n) if lengths.len() == 1 && n > 0 => format!("float32[{n}]"),
                _ => "float32[]".to_string(),
            },
        };
        columns.push(Column { name, ty });
    }

    for c in good {
        let labels = columns
            .iter()
            .map(|col| {
                c.values
                    .iter()
                    .find(|(k, _)| *k == col.name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or(Value::Null)
            })
            .collect();
        entries.push(Entry {
            path: c.path,
            split: c.split.to_string(),
            labels,
            bad: None,
        });
    }

    // Every image must be listed.
    for img in &listing.images {
        if claimed.contains_key(img) {
            continue;
        }
        let covering = metas
            .iter()
            .filter(|(_, dir)| dir.is_empty() || img.starts_with(&format!("{dir}/")))
            .map(|(m, _)| source.url_of(m))
            .next()
            .unwrap_or_default();
        entries.push(Entry::bad(
            img.clone(),
            Bad {
                file: source.url_of(img),
                line: None,
                field: "metadata".into(),
                reason: format!(
                    "not listed in {covering}: every image needs a row whose `file_name` names it"
                ),
            },
        ));
    }
    Ok((Layout::Metadata, columns, entries))
}

// ------------------------------------------------------------------------------------------------
// Task and label
// ------------------------------------------------------------------------------------------------

/// The task and label column recorded in the schema metadata (`("none", "")` for none).
fn resolve_task(
    ctx: &StageCtx,
    task: &str,
    label: &str,
    layout: Layout,
    columns: &mut [Column],
) -> Result<(String, String)> {
    let names = || {
        columns
            .iter()
            .map(|c| format!("{} ({})", c.name, c.ty))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(first) = columns.first().map(|c| c.name.clone()) else {
        return match task {
            "auto" | "none" if label.is_empty() => Ok(("none".into(), String::new())),
            "auto" | "none" => Err(ctx.err(format!(
                "param `label` = \"{label}\", but the source has no label columns ({layout})"
            ))),
            t => Err(ctx.err(format!(
                "param `task` = \"{t}\", but the source has no label columns ({layout}): use class folders or a metadata file, or set task = \"none\""
            ))),
        };
    };
    let chosen = if label.is_empty() {
        first
    } else {
        label.to_string()
    };
    let known = names();
    let Some(col) = columns.iter_mut().find(|c| c.name == chosen) else {
        return Err(ctx.err(format!(
            "param `label` = \"{chosen}\" is not a label column of the source (label columns: {known})"
        )));
    };
    if task == "none" {
        return Ok(("none".into(), String::new()));
    }
    let classes = col.ty == "string" || col.ty == "int64";
    let numeric = col.ty == "float32" || col.ty.starts_with("float32[");
    let resolved = match task {
        "auto" | "classification" if classes => "classification",
        "auto" | "regression" if numeric => "regression",
        "regression" if col.ty == "int64" => {
            col.ty = "float32".into();
            "regression"
        }
        "auto" => {
            return Err(ctx.err(format!(
                "label column `{chosen}` is {}: no task reads it; set `label` to another column ({known}) or task = \"none\"",
                col.ty
            )));
        }
        t => {
            return Err(ctx.err(format!(
                "task = \"{t}\" cannot use label column `{chosen}` ({}): classification needs string or int64 labels, regression float32 or float32 lists",
                col.ty
            )));
        }
    };
    Ok((resolved.into(), chosen))
}

// ------------------------------------------------------------------------------------------------
// Images
// ------------------------------------------------------------------------------------------------

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
/// The `IEND` chunk type and its CRC: the last 8 bytes of a complete PNG.
const PNG_IEND: [u8; 8] = [0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82];

/// The length of `bytes` without trailing zero padding.
fn unpadded(bytes: &[u8]) -> &[u8] {
    let end = bytes.len() - bytes.iter().rev().take_while(|&&b| b == 0).count();
    &bytes[..end]
}

/// A PNG that does not end with its `IEND` chunk, as left by an interrupted copy.
fn png_truncated(bytes: &[u8]) -> bool {
    bytes.starts_with(&PNG_SIGNATURE) && !unpadded(bytes).ends_with(&PNG_IEND)
}

/// A JPEG (starts with SOI `FF D8`) whose last marker is not EOI `FF D9`: the decoder would fill
/// the missing scan with grey instead of failing.
fn jpeg_truncated(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8]) && !unpadded(bytes).ends_with(&[0xFF, 0xD9])
}

fn image_bad(source: &Root, path: &str, reason: String) -> Bad {
    Bad {
        file: source.url_of(path),
        line: None,
        field: "image".into(),
        reason,
    }
}

/// Fetch and decode one image. A storage failure (after object_store's retries) is the outer
/// error and fails the stage; a missing or undecodable file is the inner one, bad input.
fn fetch_decode(source: &Root, path: &str) -> Result<std::result::Result<SampleImage, Bad>> {
    Ok(match source.get(path)? {
        Some(bytes) => decode_checked(source, path, &bytes),
        None => Err(image_bad(source, path, "not found".into())),
    })
}

/// Decode fetched image bytes, refusing truncated files.
fn decode_checked(
    source: &Root,
    path: &str,
    bytes: &[u8],
) -> std::result::Result<SampleImage, Bad> {
    let url = source.url_of(path);
    if png_truncated(bytes) {
        return Err(image_bad(
            source,
            path,
            "truncated PNG (it does not end with an IEND chunk)".into(),
        ));
    }
    if jpeg_truncated(bytes) {
        return Err(image_bad(
            source,
            path,
            "truncated JPEG (no end-of-image marker)".into(),
        ));
    }
    SampleImage::decode(bytes, &url).map_err(|e| {
        let reason = match e {
            Error::Image { source: err, .. } => format!("does not decode: {err}"),
            other => format!("does not decode: {other}"),
        };
        image_bad(source, path, reason)
    })
}

/// Exactly `width × height` (triangle filter, no crop), in the image's own format.
fn resized(img: SampleImage, width: u32, height: u32) -> SampleImage {
    if (img.width, img.height) == (width, height) {
        return img;
    }
    let filter = FilterType::Triangle;
    let out = match img.to_dynamic() {
        DynamicImage::ImageLuma8(b) => {
            DynamicImage::ImageLuma8(crate::resample::resize_triangle(&b, width, height))
        }
        DynamicImage::ImageRgb8(b) => {
            DynamicImage::ImageRgb8(imageops::resize(&b, width, height, filter))
        }
        DynamicImage::ImageLuma16(b) => {
            DynamicImage::ImageLuma16(imageops::resize(&b, width, height, filter))
        }
        DynamicImage::ImageRgb16(b) => {
            DynamicImage::ImageRgb16(imageops::resize(&b, width, height, filter))
        }
        other => other.resize_exact(width, height, filter),
    };
    SampleImage::from_dynamic(out)
}

/// One entry → its PNG in the stage's format and size.
fn load_one(
    source: &Root,
    plan: &UnitPlan,
    e: &Entry,
) -> Result<std::result::Result<Vec<u8>, Bad>> {
    if let Some(b) = &e.bad {
        return Ok(Err(b.clone()));
    }
    Ok(match fetch_decode(source, &e.path)? {
        Ok(img) => convert_one(source, plan, e, img),
        Err(bad) => Err(bad),
    })
}

/// A decoded entry → its PNG in the stage's format and size.
fn convert_one(
    source: &Root,
    plan: &UnitPlan,
    e: &Entry,
    img: SampleImage,
) -> std::result::Result<Vec<u8>, Bad> {
    if plan.resize.is_none()
        && let Some(r) = &plan.reference
        && (img.width, img.height) != (r.width, r.height)
    {
        return Err(image_bad(
            source,
            &e.path,
            format!(
                "is {}×{}, but the first image ({}) is {}×{}: every image must have one size; set the `height` and `width` params to resize them all",
                img.width,
                img.height,
                source.url_of(&r.path),
                r.width,
                r.height
            ),
        ));
    }
    let img = img.convert(plan.format);
    let img = match plan.resize {
        Some([w, h]) => resized(img, w, h),
        None => img,
    };
    img.encode_png(&source.url_of(&e.path))
        .map_err(|err| image_bad(source, &e.path, format!("cannot encode as PNG: {err}")))
}

// ------------------------------------------------------------------------------------------------
// Rows
// ------------------------------------------------------------------------------------------------

/// The label value of a row that has none.
static NULL: Value = Value::Null;

fn arrow_err(source: arrow::error::ArrowError) -> Error {
    Error::Arrow {
        what: "ingested image rows".into(),
        source,
    }
}

/// A label column of the declared type from the rows' JSON values.
fn label_array<'a>(
    dt: &DataType,
    name: &str,
    values: impl Iterator<Item = &'a Value>,
) -> Result<ArrayRef> {
    let values: Vec<&Value> = values.collect();
    let list = |item: &FieldRef, fixed: Option<i32>| -> Result<ArrayRef> {
        let mut flat: Vec<f32> = Vec::new();
        let mut lengths = Vec::with_capacity(values.len());
        let mut valid = Vec::with_capacity(values.len());
        for v in &values {
            let items = v.as_array();
            let ok = match (items, fixed) {
                (Some(a), Some(n)) => a.len() == n as usize,
                (Some(_), None) => true,
                (None, _) => false,
            };
            let n = match (ok, items, fixed) {
                (true, Some(a), _) => {
                    flat.extend(a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN) as f32));
                    a.len()
                }
                (_, _, Some(n)) => {
                    flat.extend(std::iter::repeat_n(0.0, n as usize));
                    n as usize
                }
                _ => 0,
            };
            lengths.push(n);
            valid.push(ok);
        }
        let nulls = if valid.iter().all(|v| *v) {
            None
        } else {
            Some(NullBuffer::from(valid))
        };
        let flat: ArrayRef = Arc::new(Float32Array::from(flat));
        let array: ArrayRef = match fixed {
            Some(n) => Arc::new(
                FixedSizeListArray::try_new(item.clone(), n, flat, nulls).map_err(arrow_err)?,
            ) as ArrayRef,
            None => Arc::new(
                ListArray::try_new(
                    item.clone(),
                    OffsetBuffer::from_lengths(lengths),
                    flat,
                    nulls,
                )
                .map_err(arrow_err)?,
            ) as ArrayRef,
        };
        Ok(array)
    };
    Ok(match dt {
        DataType::Utf8 => {
            Arc::new(values.iter().map(|v| v.as_str()).collect::<StringArray>()) as ArrayRef
        }
        DataType::Int64 => Arc::new(Int64Array::from(
            values.iter().map(|v| v.as_i64()).collect::<Vec<_>>(),
        )) as ArrayRef,
        DataType::Float32 => Arc::new(Float32Array::from(
            values
                .iter()
                .map(|v| v.as_f64().map(|x| x as f32))
                .collect::<Vec<_>>(),
        )) as ArrayRef,
        DataType::Boolean => Arc::new(BooleanArray::from(
            values.iter().map(|v| v.as_bool()).collect::<Vec<_>>(),
        )) as ArrayRef,
        DataType::FixedSizeList(item, n) => list(item, Some(*n))?,
        DataType::List(item) => list(item, None)?,
        other => {
            return Err(Error::Schema {
                path: "ingest-images".into(),
                detail: format!("label column `{name}`: unsupported type {other:?}"),
            });
        }
    })
}

fn to_batch(
    declared: &DeclaredSchema,
    columns: &[Column],
    domain: &str,
    rows: &[(&Entry, Vec<u8>)],
) -> Result<RecordBatch> {
    let ids: Vec<&str> = rows.iter().map(|(e, _)| id_of(&e.path)).collect();
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(ids.iter().copied())) as ArrayRef,
        sample::image_column(
            rows.iter().map(|(_, png)| png.as_slice()),
            ids.iter().copied(),
        ),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(e, _)| e.path.as_str()),
        )) as ArrayRef,
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            domain,
            rows.len(),
        ))) as ArrayRef,
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(e, _)| e.split.as_str()),
        )) as ArrayRef,
    ];
    for (k, col) in columns.iter().enumerate() {
        let field = declared
            .arrow
            .field_with_name(&col.name)
            .map_err(arrow_err)?;
        arrays.push(label_array(
            field.data_type(),
            &col.name,
            rows.iter().map(|(e, _)| e.labels.get(k).unwrap_or(&NULL)),
        )?);
    }
    RecordBatch::try_new(declared.arrow.clone(), arrays).map_err(arrow_err)
}

/// Apply the `on_error` policy to a bad input.
fn handle(ctx: &StageCtx, out: &mut UnitOutput, skip: bool, bad: Bad) -> Result<()> {
    if !skip {
        return Err(bad.into_error());
    }
    let input = bad.input();
    let reason = format!("{}: {}", bad.field, bad.reason);
    tracing::warn!(stage = ctx.stage, input = %input, %reason, "skipped bad input");
    out.skip(input, reason);
    Ok(())
}

/// Uniform in `[0, 1)` from (seed, relative path): the `test_fraction` draw.
fn draw(seed: i64, path: &str) -> f64 {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update([0u8]);
    h.update(path.as_bytes());
    let digest = h.finalize();
    let x = digest
        .iter()
        .take(8)
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    (x >> 11) as f64 / (1u64 << 53) as f64
}

// ------------------------------------------------------------------------------------------------
// The kind
// ------------------------------------------------------------------------------------------------

impl StageKind for IngestImages {
    fn name(&self) -> &'static str {
        "ingest-images"
    }
    fn about(&self) -> &'static str {
        "Image folder (class folders, metadata.jsonl/csv or unlabelled; split folders) → image_sample shards"
    }
    fn code_version(&self) -> &'static str {
        "1"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn inputs(&self) -> &'static [InputSpec] {
        INPUTS
    }
    /// `image_sample`, extended with the source's label columns and the `simgan` task metadata
    /// (see [`StageKind::output_schema`]).
    fn schema(&self) -> &'static str {
        "image_sample"
    }

    fn splittable(&self) -> bool {
        true
    }

    fn output_schema(&self, ctx: &StageCtx, units: &[UnitSpec]) -> Result<DeclaredSchema> {
        let base = schema::get("image_sample")?;
        let Some(first) = units.first() else {
            return Ok(base.clone());
        };
        let head = PlanHead::deserialize(&first.spec)
            .map_err(|e| ctx.err(format!("unit {} spec: {e}", first.index)))?;
        let extra: Vec<(&str, &str)> = head
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.ty.as_str()))
            .collect();
        let metadata = if head.task == "none" {
            Vec::new()
        } else {
            vec![(
                "simgan",
                json!({"task": head.task, "label": head.label}).to_string(),
            )]
        };
        base.extended("image_sample", &extra, &metadata)
    }

    fn plan(&self, ctx: &StageCtx) -> Result<Vec<UnitSpec>> {
        let source = ctx.location_input("source")?;
        let channels = ctx.params.str("channels")?;
        let bits = ctx.params.str("bits")?;
        let resize = match (ctx.params.int("width")?, ctx.params.int("height")?) {
            (0, 0) => None,
            (w, h) if w > 0 && h > 0 => Some([w as u32, h as u32]),
            (w, h) => {
                return Err(ctx.err(format!(
                    "params `height` = {h} and `width` = {w}: set both to resize, or neither"
                )));
            }
        };
        let test_fraction = ctx.params.float("test_fraction")?;
        let seed = ctx.params.int("seed")?;
        let per = ctx.params.usize("files_per_shard")?.max(1);
        let skip = ctx.params.str("on_error")? == "skip";

        let listing = Listing::read(source)?;
        if listing.images.is_empty() {
            return Err(Error::Input {
                file: source.url().to_string(),
                field: "source".into(),
                reason: "no .png, .jpg or .jpeg images here (hidden files and names starting with `_` are ignored)".into(),
            });
        }
        let splits = split_folders(&listing);
        if !splits.is_empty() && test_fraction > 0.0 {
            return Err(ctx.err(format!(
                "param `test_fraction` = {test_fraction}, but {} has split folders ({}), which give the splits: remove test_fraction",
                source.url(),
                splits.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        check_splits(source, &listing, &splits)?;
        let metas = metadata_in_effect(source, &listing, &splits)?;
        let (layout, mut columns, mut entries) = if metas.is_empty() {
            folder_entries(source, &listing, &splits)?
        } else {
            metadata_entries(source, &listing, &splits, &metas)?
        };

        // Ids must be unique (a.png and a.jpg would share one).
        entries.sort_by(|a, b| {
            a.path.cmp(&b.path).then_with(|| {
                a.bad
                    .as_ref()
                    .and_then(|x| x.line)
                    .cmp(&b.bad.as_ref().and_then(|x| x.line))
            })
        });
        let mut ids: BTreeMap<String, String> = BTreeMap::new();
        for e in entries.iter_mut().filter(|e| e.bad.is_none()) {
            let id = id_of(&e.path).to_string();
            if let Some(other) = ids.get(&id) {
                e.bad = Some(image_bad(
                    source,
                    &e.path,
                    format!(
                        "its id `{id}` (path without extension) is also that of {}: rename one",
                        source.url_of(other)
                    ),
                ));
            } else {
                ids.insert(id, e.path.clone());
            }
        }
        if !skip && let Some(bad) = entries.iter().find_map(|e| e.bad.clone()) {
            return Err(bad.into_error());
        }
        for e in entries
            .iter_mut()
            .filter(|e| e.bad.is_none() && e.split.is_empty())
        {
            e.split = if draw(seed, &e.path) < test_fraction {
                "test".into()
            } else {
                "train".into()
            };
        }

        let (task, label) = resolve_task(
            ctx,
            ctx.params.str("task")?,
            ctx.params.str("label")?,
            layout,
            &mut columns,
        )?;

        // The first image (in listing order) that decodes gives the `auto` format and the one size.
        let mut first: Option<(String, SampleImage)> = None;
        if channels == "auto" || bits == "auto" || resize.is_none() {
            for e in entries.iter().filter(|e| e.bad.is_none()) {
                match fetch_decode(source, &e.path)? {
                    Ok(img) => {
                        first = Some((e.path.clone(), img));
                        break;
                    }
                    // Skipped (with its reason) when its unit runs.
                    Err(_) if skip => continue,
                    Err(bad) => return Err(bad.into_error()),
                }
            }
        }
        let found = first
            .as_ref()
            .map(|(_, img)| img.format())
            .unwrap_or(PixelFormat::GRAY8);
        let format = PixelFormat {
            channels: match channels {
                "gray" => 1,
                "rgb" => 3,
                _ => found.channels,
            },
            bits: match bits {
                "8" => 8,
                "16" => 16,
                _ => found.bits,
            },
        };
        let reference = match (resize, &first) {
            (None, Some((path, img))) => Some(Reference {
                path: path.clone(),
                width: img.width,
                height: img.height,
            }),
            _ => None,
        };
        tracing::info!(
            stage = ctx.stage,
            source = source.url(),
            %layout,
            images = entries.iter().filter(|e| e.bad.is_none()).count(),
            bad = entries.iter().filter(|e| e.bad.is_some()).count(),
            %format,
            "planned image ingest"
        );

        entries
            .chunks(per)
            .enumerate()
            .map(|(index, chunk)| {
                let plan = UnitPlan {
                    format,
                    resize,
                    reference: reference.clone(),
                    columns: columns.clone(),
                    task: task.clone(),
                    label: label.clone(),
                    entries: chunk.to_vec(),
                };
                serde_json::to_value(&plan)
                    .map(|spec| UnitSpec { index, spec })
                    .map_err(|e| ctx.err(format!("unit {index} spec: {e}")))
            })
            .collect()
    }

    fn run_unit(&self, ctx: &StageCtx, unit: &UnitSpec, out: &mut UnitOutput) -> Result<()> {
        let source = ctx.location_input("source")?;
        let plan = UnitPlan::deserialize(&unit.spec)
            .map_err(|e| ctx.err(format!("unit {} spec: {e}", unit.index)))?;
        let declared = self.output_schema(ctx, std::slice::from_ref(unit))?;
        let skip = ctx.params.str("on_error")? == "skip";
        let domain = ctx.params.str("domain")?;
        // Bounded memory: fetch, decode and re-encode 256 images at a time, in parallel.
        for chunk in plan.entries.chunks(256) {
            let results: Vec<std::result::Result<Vec<u8>, Bad>> = chunk
                .par_iter()
                .map(|e| load_one(source, &plan, e))
                .collect::<Result<_>>()?;
            let mut rows: Vec<(&Entry, Vec<u8>)> = Vec::with_capacity(chunk.len());
            for (e, r) in chunk.iter().zip(results) {
                match r {
                    Ok(png) => rows.push((e, png)),
                    Err(bad) => handle(ctx, out, skip, bad)?,
                }
            }
            if !rows.is_empty() {
                out.write(&to_batch(&declared, &plan.columns, domain, &rows)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_records_handle_quotes_crlf_and_blank_lines() {
        let text =
            "file_name,kind\r\na.png,\"big, red\"\r\n\r\nb.png,\"say \"\"hi\"\"\nthere\"\nc.png,x";
        let recs = csv_records(text).unwrap_or_default();
        assert_eq!(recs.len(), 4);
        assert_eq!(
            recs[1],
            (2, vec!["a.png".to_string(), "big, red".to_string()])
        );
        assert_eq!(recs[2].0, 4);
        assert_eq!(recs[2].1[1], "say \"hi\"\nthere");
        assert_eq!(recs[3], (6, vec!["c.png".to_string(), "x".to_string()]));
        assert_eq!(csv_records("a,\"b\n"), Err(1));
    }

    #[test]
    fn csv_cells_are_typed() {
        assert_eq!(csv_value(""), Value::Null);
        assert_eq!(csv_value("True"), Value::Bool(true));
        assert_eq!(csv_value("-12"), Value::from(-12));
        assert_eq!(csv_value("0.5"), Value::from(0.5));
        assert_eq!(csv_value("1e3"), Value::from(1000.0));
        assert_eq!(csv_value("[1, 2.5]"), json!([1, 2.5]));
        assert_eq!(csv_value("nan"), Value::from("nan"));
        assert_eq!(csv_value("007x"), Value::from("007x"));
    }

    #[test]
    fn ids_paths_and_names() {
        assert_eq!(id_of("train/cat/0001.png"), "train/cat/0001");
        assert_eq!(id_of("a.b/c"), "a.b/c");
        assert_eq!(id_of("x.tar.jpeg"), "x.tar");
        assert!(visible("cat/1.png") && !visible("cat/.x.png") && !visible("_tmp/1.png"));
        assert!(is_image("A.JPG") && is_image("b.jpeg") && !is_image("c.gif"));
        assert_eq!(
            resolve_name("train", "./cat/1.png"),
            Ok("train/cat/1.png".to_string())
        );
        assert!(resolve_name("", "../x.png").is_err() && resolve_name("", "/x.png").is_err());
        assert_eq!(split_of_folder("Val"), Some("validation"));
        assert_eq!(split_of_folder("cats"), None);
    }

    #[test]
    fn truncation_is_detected() {
        let img = SampleImage::from_gray(image::GrayImage::from_fn(9, 7, |x, y| {
            image::Luma([(x * 20 + y) as u8])
        }));
        let png = img.encode_png("t").unwrap_or_default();
        assert!(!png_truncated(&png));
        assert!(png_truncated(&png[..png.len() - 3]));
        assert!(jpeg_truncated(&[0xFF, 0xD8, 0x00, 0x12]));
        assert!(!jpeg_truncated(&[0xFF, 0xD8, 0x12, 0xFF, 0xD9, 0, 0]));
    }

    #[test]
    fn draw_is_uniform_and_depends_on_seed_and_path() {
        let n = 20_000;
        let t = (0..n)
            .filter(|i| draw(3, &format!("img/{i}.png")) < 0.25)
            .count() as f64
            / n as f64;
        assert!((t - 0.25).abs() < 0.02, "{t}");
        assert_ne!(draw(1, "a.png"), draw(2, "a.png"));
        assert_eq!(draw(1, "a.png"), draw(1, "a.png"));
    }

    #[test]
    fn resize_is_exact_and_keeps_the_format() {
        let img = SampleImage::from_gray(image::GrayImage::new(9, 7)).convert(PixelFormat::GRAY16);
        let r = resized(img, 4, 3);
        assert_eq!((r.width, r.height, r.format()), (4, 3, PixelFormat::GRAY16));
    }
}
