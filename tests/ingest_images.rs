//! `ingest-images` on fixture folders written here with the `image` crate: every layout (class
//! folders, `metadata.jsonl`, `metadata.csv`, unlabelled), split folders and `test_fraction`,
//! pixel formats (RGB, grey, 16-bit grey kept as 16-bit), resize, and every kind of bad input
//! under both `on_error` policies: `fail` names the file and commits nothing; `skip` ingests the
//! good images and lists the bad input, with its reason, in the manifest.

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::{
    Array, BooleanArray, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, StructArray,
};
use arrow::datatypes::{DataType, SchemaRef};
use image::{DynamicImage, GrayImage, ImageBuffer, Luma, Rgb, RgbImage};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};
use simgan::manifest::{self, Committed};
use simgan::pipeline::Pipeline;
use simgan::runner::{self, RunOptions};
use simgan::sample::{self, COMMON_COLUMNS, PixelFormat, Pixels, SampleImage};
use simgan::storage::Root;

use crate::util;

const STAGE: &str = "images";

// ------------------------------------------------------------------------------------------------
// Fixtures
// ------------------------------------------------------------------------------------------------

fn gray(w: u32, h: u32, k: u32) -> DynamicImage {
    DynamicImage::ImageLuma8(GrayImage::from_fn(w, h, |x, y| {
        Luma([((x * 31 + y * 17 + k * 53) % 256) as u8])
    }))
}

fn rgb(w: u32, h: u32, k: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            ((x * 40 + k * 11) % 256) as u8,
            ((y * 50 + k * 7) % 256) as u8,
            ((x * y * 9 + k) % 256) as u8,
        ])
    }))
}

fn gray16(w: u32, h: u32, k: u32) -> ImageBuffer<Luma<u16>, Vec<u16>> {
    ImageBuffer::from_fn(w, h, |x, y| {
        Luma([(x * 4001 + y * 611 + k * 20_000 + 7) as u16])
    })
}

fn write(dir: &Path, rel: &str, bytes: &[u8]) {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, bytes).unwrap();
}

/// Save `img` at `dir/rel` (format from the extension).
fn save(dir: &Path, rel: &str, img: &DynamicImage) {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    img.save(&path)
        .unwrap_or_else(|e| panic!("saving {}: {e}", path.display()));
}

/// The encoded bytes of `img` in `ext` format.
fn encoded(img: &DynamicImage, ext: &str) -> Vec<u8> {
    let tmp = util::tempdir();
    let rel = format!("x.{ext}");
    save(tmp.path(), &rel, img);
    std::fs::read(tmp.path().join(rel)).unwrap()
}

fn jsonl(rows: &[Value]) -> String {
    rows.iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

// ------------------------------------------------------------------------------------------------
// Running and reading back
// ------------------------------------------------------------------------------------------------

fn pipeline(source: &Path, params: &str) -> Pipeline {
    let text = format!(
        "name = \"images\"\n[stages.{STAGE}]\nkind = \"ingest-images\"\ninputs = {{ source = \"{}\" }}\nparams = {{ {params} }}\n",
        source.display()
    );
    Pipeline::parse(&text, "images.toml", &simgan::registry::builtin())
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Run the ingest into a fresh root: the root's folder (deleted on drop), the root and the
/// outcome (the error as `{:#}`).
fn ingest(source: &Path, params: &str) -> (tempfile::TempDir, Root, Result<(), String>) {
    let out = util::tempdir();
    let root = util::open(&out.path().to_string_lossy());
    let result = runner::run(&pipeline(source, params), &root, &RunOptions::default())
        .map(|_| ())
        .map_err(|e| format!("{e:#}"));
    (out, root, result)
}

/// Every row of the committed version, through the public readers.
struct Ingested {
    committed: Committed,
    /// The schema as written in the first shard's footer (metadata included).
    schema: SchemaRef,
    /// Every row, in shard order.
    batch: RecordBatch,
    /// Row of each id.
    index: BTreeMap<String, usize>,
}

impl Ingested {
    fn ids(&self) -> Vec<String> {
        self.index.keys().cloned().collect()
    }

    fn row(&self, id: &str) -> usize {
        *self
            .index
            .get(id)
            .unwrap_or_else(|| panic!("no row `{id}` in {:?}", self.ids()))
    }

    fn string(&self, column: &str, id: &str) -> String {
        sample::strings(&self.batch, column, "rows")
            .unwrap()
            .value(self.row(id))
            .to_string()
    }

    fn image(&self, id: &str) -> SampleImage {
        let bytes = sample::image_bytes(&self.batch, "rows").unwrap();
        SampleImage::decode(bytes.value(self.row(id)), id).unwrap()
    }

    fn column<T: Array + 'static>(&self, name: &str) -> &T {
        self.batch
            .column_by_name(name)
            .unwrap_or_else(|| panic!("no column `{name}`"))
            .as_any()
            .downcast_ref::<T>()
            .unwrap_or_else(|| panic!("column `{name}` has another type"))
    }

    fn column_type(&self, name: &str) -> DataType {
        self.schema
            .field_with_name(name)
            .unwrap_or_else(|e| panic!("{e}"))
            .data_type()
            .clone()
    }

    fn column_names(&self) -> Vec<String> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    /// The `simgan` schema metadata (task and label), if any.
    fn simgan(&self) -> Option<Value> {
        self.schema
            .metadata()
            .get("simgan")
            .map(|m| serde_json::from_str(m).unwrap())
    }

    fn splits(&self) -> BTreeMap<String, String> {
        self.index
            .keys()
            .map(|id| (id.clone(), self.string("split", id)))
            .collect()
    }
}

fn read_back(root: &Root) -> Ingested {
    let committed = manifest::latest(root, STAGE)
        .unwrap()
        .expect("a committed version");
    let mut batches = Vec::new();
    for shard in &committed.manifest.shards {
        batches.extend(simgan::shards::read(root, shard, None).unwrap());
    }
    let first = committed.manifest.shards.first().expect("a shard");
    let footer = ParquetRecordBatchReaderBuilder::try_new(root.get_required(&first.path).unwrap())
        .unwrap()
        .schema()
        .clone();
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let ids = sample::strings(&batch, "id", "rows").unwrap();
    let index: BTreeMap<String, usize> = (0..batch.num_rows())
        .map(|i| (ids.value(i).to_string(), i))
        .collect();
    assert_eq!(index.len(), batch.num_rows(), "ids are unique");
    Ingested {
        committed,
        schema: footer,
        batch,
        index,
    }
}

fn ingest_ok(source: &Path, params: &str) -> Ingested {
    let (_out, root, result) = ingest(source, params);
    result.unwrap_or_else(|e| panic!("ingest with {{ {params} }} failed: {e}"));
    read_back(&root)
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ------------------------------------------------------------------------------------------------
// Layouts
// ------------------------------------------------------------------------------------------------

#[test]
fn class_folders_in_split_folders_label_each_image_by_its_folder() {
    let src = util::tempdir();
    let d = src.path();
    save(d, "test/cat/0.png", &rgb(8, 6, 0)); // first in listing order: RGB
    save(d, "train/cat/0.png", &gray(8, 6, 1));
    save(d, "train/cat/1.png", &rgb(8, 6, 2));
    save(d, "train/dog/0.jpg", &gray(8, 6, 3));
    save(d, "train/dog/1.jpeg", &rgb(8, 6, 4));
    std::fs::rename(d.join("train/dog/1.jpeg"), d.join("train/dog/1.JPEG")).unwrap();
    save(d, "val/dog/2.png", &gray(8, 6, 5));
    // Ignored: not images, hidden, or named with a leading underscore (none of them decodes).
    write(d, "README.txt", b"about this dataset");
    write(d, "train/cat/notes.txt", b"notes");
    write(d, "train/cat/.hidden.png", b"not an image");
    write(d, "train/_draft.png", b"not an image");

    let got = ingest_ok(d, "domain = \"synthetic\"");
    assert_eq!(
        got.ids(),
        strs(&[
            "test/cat/0",
            "train/cat/0",
            "train/cat/1",
            "train/dog/0",
            "train/dog/1",
            "val/dog/2"
        ])
    );
    let expect = [
        ("test/cat/0", "test", "cat", "test/cat/0.png"),
        ("train/cat/0", "train", "cat", "train/cat/0.png"),
        ("train/cat/1", "train", "cat", "train/cat/1.png"),
        ("train/dog/0", "train", "dog", "train/dog/0.jpg"),
        ("train/dog/1", "train", "dog", "train/dog/1.JPEG"),
        ("val/dog/2", "validation", "dog", "val/dog/2.png"),
    ];
    let paths = got
        .column::<StructArray>("image")
        .column_by_name("path")
        .and_then(|c| {
            c.as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .cloned()
        })
        .unwrap();
    for (id, split, label, source) in expect {
        assert_eq!(got.string("split", id), split, "{id}");
        assert_eq!(got.string("label", id), label, "{id}");
        assert_eq!(got.string("source", id), source, "{id}");
        assert_eq!(got.string("domain", id), "synthetic", "{id}");
        assert_eq!(paths.value(got.row(id)), format!("{id}.png"));
        let img = got.image(id);
        assert_eq!(
            (img.width, img.height, img.format()),
            (8, 6, PixelFormat::RGB8),
            "{id}: every image converted to the first image's format"
        );
    }
    assert_eq!(
        got.column_names(),
        strs(&["id", "image", "source", "domain", "split", "label"])
    );
    assert_eq!(got.column_type("label"), DataType::Utf8);
    assert_eq!(
        got.simgan(),
        Some(json!({"task": "classification", "label": "label"}))
    );
    assert_eq!(got.committed.manifest.rows, 6);
    assert!(got.committed.manifest.skipped.is_empty());
}

#[test]
fn metadata_jsonl_infers_label_types_and_test_fraction_is_stable() {
    let src = util::tempdir();
    let d = src.path();
    let mut rows = Vec::new();
    for i in 0..30u32 {
        save(d, &format!("img/{i:02}.png"), &gray(6, 4, i));
        // Integers and non-integers mixed: float32.
        let angle: Value = if i % 3 == 0 {
            json!(i)
        } else {
            json!(f64::from(i) + 0.5)
        };
        let xy: Vec<f64> = vec![f64::from(i), -1.0];
        let file_name = format!("img/{i:02}.png");
        let name = format!("n{i}");
        let flag = i % 2 == 0;
        let mut row = json!({
            "file_name": file_name,
            "angle": angle,
            "count": i,
            "flag": flag,
            "name": name,
            "xy": xy,
        });
        if i == 1 {
            row["file_name"] = json!("./img/01.png");
        }
        if i == 7 {
            row.as_object_mut().unwrap().remove("name");
        }
        rows.push(row);
    }
    let mut text = jsonl(&rows);
    text.insert(0, '\n'); // a blank line is not a row
    write(d, "metadata.jsonl", text.as_bytes());

    let got = ingest_ok(d, "domain = \"real\", test_fraction = 0.3, seed = 7");
    assert_eq!(got.committed.manifest.rows, 30);
    assert!(got.committed.manifest.skipped.is_empty());
    assert_eq!(
        got.column_names(),
        strs(&[
            "id", "image", "source", "domain", "split", "angle", "count", "flag", "name", "xy"
        ])
    );
    assert_eq!(got.column_type("angle"), DataType::Float32);
    assert_eq!(got.column_type("count"), DataType::Int64);
    assert_eq!(got.column_type("flag"), DataType::Boolean);
    assert_eq!(got.column_type("name"), DataType::Utf8);
    assert!(
        matches!(got.column_type("xy"), DataType::FixedSizeList(_, 2)),
        "{:?}",
        got.column_type("xy")
    );
    // The first label column by name is the label; a float column means regression.
    assert_eq!(
        got.simgan(),
        Some(json!({"task": "regression", "label": "angle"}))
    );

    let (r3, r4, r7) = (got.row("img/03"), got.row("img/04"), got.row("img/07"));
    let angle = got.column::<Float32Array>("angle");
    assert_eq!((angle.value(r3), angle.value(r4)), (3.0, 4.5));
    assert_eq!(got.column::<Int64Array>("count").value(r4), 4);
    assert!(got.column::<BooleanArray>("flag").value(r4));
    assert!(!got.column::<BooleanArray>("flag").value(r3));
    assert_eq!(got.string("name", "img/03"), "n3");
    assert!(
        sample::strings(&got.batch, "name", "rows")
            .unwrap()
            .is_null(r7),
        "a missing key is a null"
    );
    let xy = got.column::<FixedSizeListArray>("xy").value(r3);
    let xy = xy.as_any().downcast_ref::<Float32Array>().unwrap();
    assert_eq!(xy.values().to_vec(), vec![3.0, -1.0]);
    assert_eq!(got.string("source", "img/01"), "img/01.png");
    assert_eq!(got.string("domain", "img/01"), "real");
    assert_eq!(got.image("img/05").format(), PixelFormat::GRAY8);

    let splits = got.splits();
    let tests = splits.values().filter(|s| *s == "test").count();
    assert!(
        splits.values().all(|s| s == "train" || s == "test"),
        "{splits:?}"
    );
    assert!((1..30).contains(&tests), "about 30 % test: {splits:?}");

    // The draw depends on (seed, path) only: another unit split gives the same splits.
    let again = ingest_ok(
        d,
        "domain = \"real\", test_fraction = 0.3, seed = 7, files_per_shard = 7",
    );
    assert_eq!(again.committed.manifest.shards.len(), 5);
    assert_eq!(again.splits(), splits);
}

#[test]
fn metadata_csv_in_split_folders_with_label_and_task_params() {
    let src = util::tempdir();
    let d = src.path();
    save(d, "train/a.png", &gray(5, 5, 1));
    save(d, "train/b.png", &gray(5, 5, 2));
    save(d, "train/sub/c.png", &gray(5, 5, 3));
    save(d, "test/d.png", &gray(5, 5, 4));
    write(
        d,
        "train/metadata.csv",
        b"file_name,kind,score\r\na.png,\"big, red\",3\r\nb.png,small,1\r\nsub/c.png,\"say \"\"hi\"\"\",2\r\n",
    );
    write(
        d,
        "test/metadata.csv",
        b"file_name,score,kind\nd.png,5,tiny\n",
    );

    let got = ingest_ok(
        d,
        "domain = \"synthetic\", label = \"score\", task = \"classification\"",
    );
    assert_eq!(
        got.ids(),
        strs(&["test/d", "train/a", "train/b", "train/sub/c"])
    );
    assert_eq!(got.string("split", "test/d"), "test");
    assert_eq!(got.string("split", "train/sub/c"), "train");
    assert_eq!(got.string("source", "train/sub/c"), "train/sub/c.png");
    assert_eq!(got.string("kind", "train/a"), "big, red");
    assert_eq!(got.string("kind", "train/sub/c"), "say \"hi\"");
    assert_eq!(got.string("kind", "test/d"), "tiny");
    let score = got.column::<Int64Array>("score");
    assert_eq!(
        (
            score.value(got.row("train/a")),
            score.value(got.row("test/d"))
        ),
        (3, 5)
    );
    assert_eq!(got.column_type("kind"), DataType::Utf8);
    assert_eq!(got.column_type("score"), DataType::Int64);
    assert_eq!(
        got.simgan(),
        Some(json!({"task": "classification", "label": "score"}))
    );

    // Regression on an integer column declares it float32.
    let reg = ingest_ok(
        d,
        "domain = \"synthetic\", label = \"score\", task = \"regression\"",
    );
    assert_eq!(reg.column_type("score"), DataType::Float32);
    assert_eq!(
        reg.column::<Float32Array>("score")
            .value(reg.row("train/b")),
        1.0
    );
    assert_eq!(
        reg.simgan(),
        Some(json!({"task": "regression", "label": "score"}))
    );

    // A label that is not a column, and a task its type does not fit, name the param.
    let (_o, _r, err) = ingest(d, "domain = \"synthetic\", label = \"nope\"");
    let err = err.err().unwrap_or_default();
    assert!(err.contains("nope") && err.contains("label"), "{err}");
    let (_o, _r, err) = ingest(
        d,
        "domain = \"synthetic\", label = \"kind\", task = \"regression\"",
    );
    let err = err.err().unwrap_or_default();
    assert!(err.contains("kind") && err.contains("regression"), "{err}");
}

#[test]
fn unlabelled_folder_has_only_the_common_columns_and_no_task() {
    let src = util::tempdir();
    let d = src.path();
    save(d, "a.png", &gray(7, 5, 1));
    save(d, "b.jpg", &gray(7, 5, 2));
    save(d, "c.png", &rgb(7, 5, 3));

    let got = ingest_ok(d, "domain = \"real\"");
    assert_eq!(got.ids(), strs(&["a", "b", "c"]));
    assert_eq!(got.column_names(), strs(&COMMON_COLUMNS));
    assert_eq!(got.simgan(), None, "no label columns: no task metadata");
    for id in ["a", "b", "c"] {
        let img = got.image(id);
        assert_eq!(
            (img.width, img.height, img.format()),
            (7, 5, PixelFormat::GRAY8),
            "{id}"
        );
        assert_eq!(got.string("split", id), "train");
        assert_eq!(got.string("domain", id), "real");
    }
    // The grey PNG's pixels survive unchanged.
    assert_eq!(got.image("a"), SampleImage::from_dynamic(gray(7, 5, 1)));

    let (_o, root, err) = ingest(d, "domain = \"real\", task = \"classification\"");
    let err = err.err().unwrap_or_default();
    assert!(err.contains("no label columns"), "{err}");
    assert!(manifest::latest(&root, STAGE).unwrap().is_none());
}

#[test]
fn sixteen_bit_grey_png_stays_sixteen_bit() {
    let src = util::tempdir();
    let d = src.path();
    let (a, b) = (gray16(6, 4, 0), gray16(6, 4, 1));
    save(d, "a.png", &DynamicImage::ImageLuma16(a.clone()));
    save(d, "b.png", &DynamicImage::ImageLuma16(b.clone()));
    save(d, "c.png", &gray(6, 4, 9)); // 8-bit: converted to the first image's 16 bits

    let got = ingest_ok(d, "domain = \"real\"");
    for (id, want) in [("a", a), ("b", b)] {
        let img = got.image(id);
        assert_eq!(img.format(), PixelFormat::GRAY16, "{id}");
        assert_eq!((img.width, img.height), (6, 4));
        assert_eq!(
            img.pixels,
            Pixels::U16(want.into_raw()),
            "{id}: values survive"
        );
    }
    assert_eq!(got.image("c").format(), PixelFormat::GRAY16);

    let eight = ingest_ok(d, "domain = \"real\", bits = \"8\"");
    assert_eq!(eight.image("a").format(), PixelFormat::GRAY8);
}

#[test]
fn channels_bits_and_resize_apply_to_every_image() {
    let src = util::tempdir();
    let d = src.path();
    save(d, "a.png", &rgb(12, 8, 1));
    save(d, "b.png", &gray(9, 9, 2));
    save(d, "c.jpg", &rgb(20, 10, 3));

    let got = ingest_ok(
        d,
        "domain = \"synthetic\", channels = \"gray\", height = 6, width = 10",
    );
    for id in ["a", "b", "c"] {
        let img = got.image(id);
        assert_eq!(
            (img.width, img.height, img.format()),
            (10, 6, PixelFormat::GRAY8),
            "{id}"
        );
    }

    let got = ingest_ok(
        d,
        "domain = \"synthetic\", channels = \"rgb\", bits = \"16\", height = 3, width = 4",
    );
    let rgb16 = PixelFormat {
        channels: 3,
        bits: 16,
    };
    for id in ["a", "b", "c"] {
        let img = got.image(id);
        assert_eq!((img.width, img.height, img.format()), (4, 3, rgb16), "{id}");
    }

    let (_o, _r, err) = ingest(d, "domain = \"synthetic\", height = 6");
    let err = err.err().unwrap_or_default();
    assert!(err.contains("width"), "{err}");
}

// ------------------------------------------------------------------------------------------------
// Bad inputs
// ------------------------------------------------------------------------------------------------

/// g0.png and g1.png, 8×6 grey, directly in the folder.
fn unlabelled_good(d: &Path) {
    save(d, "g0.png", &gray(8, 6, 0));
    save(d, "g1.png", &gray(8, 6, 1));
}

/// g0.png and g1.png listed in metadata.jsonl with a string label, then `extra` rows.
fn metadata_good(d: &Path, extra: &[Value]) {
    unlabelled_good(d);
    let mut rows = vec![
        json!({"file_name": "g0.png", "label": "a"}),
        json!({"file_name": "g1.png", "label": "b"}),
    ];
    rows.extend(extra.iter().cloned());
    write(d, "metadata.jsonl", jsonl(&rows).as_bytes());
}

/// One bad input on top of two good images.
struct Case {
    what: &'static str,
    setup: fn(&Path),
    /// What the error and the skipped entry must name.
    file: &'static str,
    /// Words the error and the skipped entry (input and reason) must contain.
    words: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            what: "truncated PNG",
            setup: |d| {
                unlabelled_good(d);
                let png = encoded(&gray(8, 6, 5), "png");
                write(d, "bad.png", &png[..png.len() / 2]);
            },
            file: "bad.png",
            words: &["truncated"],
        },
        Case {
            what: "truncated JPEG",
            setup: |d| {
                unlabelled_good(d);
                let jpg = encoded(&gray(8, 6, 5), "jpg");
                write(d, "bad.jpg", &jpg[..jpg.len() / 3]);
            },
            file: "bad.jpg",
            words: &["truncated"],
        },
        Case {
            what: "not an image",
            setup: |d| {
                unlabelled_good(d);
                write(d, "bad.png", b"GIF89a? no, just text");
            },
            file: "bad.png",
            words: &["decode"],
        },
        Case {
            what: "size mismatch",
            setup: |d| {
                unlabelled_good(d);
                save(d, "odd.png", &gray(7, 5, 2));
            },
            file: "odd.png",
            words: &["7×5", "8×6", "height", "width"],
        },
        Case {
            what: "metadata row without file_name",
            setup: |d| metadata_good(d, &[json!({"label": "c"})]),
            file: "metadata.jsonl",
            words: &["line 3", "file_name"],
        },
        Case {
            what: "metadata row naming a missing file",
            setup: |d| metadata_good(d, &[json!({"file_name": "gone.png", "label": "c"})]),
            file: "metadata.jsonl",
            words: &["line 3", "gone.png", "not found"],
        },
        Case {
            what: "metadata value of the wrong type",
            setup: |d| {
                save(d, "g2.png", &gray(8, 6, 2));
                metadata_good(d, &[json!({"file_name": "g2.png", "label": 3})]);
            },
            file: "metadata.jsonl",
            words: &["line 3", "label", "string"],
        },
        Case {
            what: "image no metadata row lists",
            setup: |d| {
                save(d, "g2.png", &gray(8, 6, 2));
                metadata_good(d, &[]);
            },
            file: "g2.png",
            words: &["not listed"],
        },
    ]
}

#[test]
fn bad_inputs_fail_naming_the_file_and_commit_nothing() {
    for case in cases() {
        let src = util::tempdir();
        (case.setup)(src.path());
        let (_out, root, result) = ingest(src.path(), "domain = \"real\", on_error = \"fail\"");
        let err = result
            .err()
            .unwrap_or_else(|| panic!("{}: the run did not fail", case.what));
        let msg = err.to_lowercase();
        assert!(
            msg.contains(case.file),
            "{}: the error should name {}: {err}",
            case.what,
            case.file
        );
        for word in case.words {
            assert!(
                msg.contains(&word.to_lowercase()),
                "{}: the error should say `{word}`: {err}",
                case.what
            );
        }
        assert!(
            manifest::latest(&root, STAGE).unwrap().is_none(),
            "{}: a failed ingest committed a version",
            case.what
        );
    }
}

#[test]
fn bad_inputs_are_skipped_and_listed_in_the_manifest() {
    for case in cases() {
        let src = util::tempdir();
        (case.setup)(src.path());
        let (_out, root, result) = ingest(src.path(), "domain = \"real\", on_error = \"skip\"");
        result.unwrap_or_else(|e| panic!("{}: {e}", case.what));
        let got = read_back(&root);
        assert_eq!(
            got.ids(),
            strs(&["g0", "g1"]),
            "{}: the good rows",
            case.what
        );
        let skipped = &got.committed.manifest.skipped;
        assert_eq!(skipped.len(), 1, "{}: {skipped:#?}", case.what);
        let s = &skipped[0];
        assert!(
            s.input.contains(case.file),
            "{}: skipped input should name {}: {s:?}",
            case.what,
            case.file
        );
        let text = format!("{} {}", s.input, s.reason).to_lowercase();
        for word in case.words {
            assert!(
                text.contains(&word.to_lowercase()),
                "{}: skipped entry should say `{word}`: {s:?}",
                case.what
            );
        }
    }
}

#[test]
fn a_folder_without_images_or_with_an_ambiguous_layout_is_always_an_error() {
    let empty = util::tempdir();
    write(empty.path(), "README.txt", b"nothing here");
    write(empty.path(), ".hidden.png", b"ignored");
    let mixed = util::tempdir();
    save(mixed.path(), "top.png", &gray(4, 4, 0));
    save(mixed.path(), "cat/1.png", &gray(4, 4, 1));
    for on_error in ["fail", "skip"] {
        let params = format!("domain = \"real\", on_error = \"{on_error}\"");
        let (_o, root, result) = ingest(empty.path(), &params);
        let err = result.err().unwrap_or_default();
        let location = empty.path().to_string_lossy().to_string();
        assert!(
            err.contains(&location) && err.contains("no .png"),
            "{on_error}: the error should name {location}: {err}"
        );
        assert!(manifest::latest(&root, STAGE).unwrap().is_none());

        let (_o, root, result) = ingest(mixed.path(), &params);
        let err = result.err().unwrap_or_default();
        assert!(
            err.contains("top.png") && err.contains("cat/1.png"),
            "{on_error}: {err}"
        );
        assert!(manifest::latest(&root, STAGE).unwrap().is_none());
    }
}
