//! Reading datasets back: SQL over a stage's shards with polars (local or on object storage) and
//! export of any sample dataset's rows to PNG + CSV.
//!
//! Shards of a committed version are verified as they are read: each is fetched once through our
//! own object_store (one client, the run's credentials), its size and sha256 checked against the
//! manifest while it streams in, and scanned from memory (projection and row-group pruning still
//! apply to decoding). With verification off (`--no-verify`) local shards are scanned by path, so
//! polars prunes columns and row groups as it reads the files; remote ones are still fetched
//! whole. A folder of `.parquet` files without a manifest has nothing to verify against.

use std::path::Path;

use polars::prelude::*;

use crate::dataset::Dataset;
use crate::error::{Error, Result};

/// A lazy frame over every shard of a dataset.
pub fn scan(ds: &Dataset) -> Result<LazyFrame> {
    // Shards are plain files, not hive-partitioned folders.
    let hive_options = HiveOptions {
        enabled: Some(false),
        ..Default::default()
    };
    let args = ScanArgsParquet {
        use_statistics: true,
        hive_options,
        ..Default::default()
    };
    // Local shards are scanned in place unless they must be verified: a verified read hashes
    // every byte anyway, so it reads each shard once into memory and scans that.
    let local_dir = local_folder(ds.root.url()).filter(|_| !ds.verified());
    let sources = match local_dir {
        Some(dir) => {
            let paths: Vec<PlRefPath> = ds
                .shards
                .iter()
                .map(|s| PlRefPath::new(dir.join(s).to_string_lossy().as_ref()))
                .collect();
            ScanSources::Paths(paths.into())
        }
        None => {
            let mut bufs: Vec<polars_buffer::Buffer<u8>> = Vec::with_capacity(ds.shards.len());
            for i in 0..ds.shards.len() {
                bufs.push(ds.fetch(i)?.to_vec().into());
            }
            ScanSources::Buffers(bufs.into())
        }
    };
    Ok(LazyFrame::scan_parquet_sources(sources, args)?)
}

/// The local folder behind a root URL, if it is on local disk.
fn local_folder(url: &str) -> Option<std::path::PathBuf> {
    if url.contains("://") && !url.starts_with("file://") {
        return None;
    }
    let p = url.strip_prefix("file://").unwrap_or(url);
    std::fs::canonicalize(p).ok()
}

/// Run SQL over a dataset; the table is called `data`.
pub fn sql(ds: &Dataset, query: &str) -> Result<DataFrame> {
    let mut ctx = polars::sql::SQLContext::new();
    ctx.register("data", scan(ds)?);
    Ok(ctx.execute(query)?.collect()?)
}

/// Export the first `limit` rows of a sample dataset (any domain) as `<id>.png` files plus
/// `labels.csv`: `id`, `file`, then every other column but `image` (fixed-size lists as
/// `name_0, name_1, …`; variable lists as `;`-joined values). Returns the rows written.
pub fn export_samples(ds: &Dataset, limit: usize, out: &Path) -> Result<usize> {
    std::fs::create_dir_all(out).map_err(|source| Error::Io {
        op: "create export folder",
        path: out.to_path_buf(),
        source,
    })?;
    let mut header: Option<Vec<String>> = None;
    let mut lines: Vec<String> = Vec::new();
    'shards: for (si, shard) in ds.shards.iter().enumerate() {
        let url = ds.root.url_of(shard);
        for batch in ds.read(si)? {
            crate::sample::check_common(&batch.schema(), &url)?;
            let ids = crate::sample::strings(&batch, "id", &url)?;
            let bytes = crate::sample::image_bytes(&batch, &url)?;
            let schema = batch.schema();
            let others: Vec<usize> = (0..schema.fields().len())
                .filter(|&i| schema.field(i).name() != "id" && schema.field(i).name() != "image")
                .collect();
            if header.is_none() {
                let mut h = vec!["id".to_string(), "file".to_string()];
                for &c in &others {
                    let f = schema.field(c);
                    match f.data_type() {
                        arrow::datatypes::DataType::FixedSizeList(_, n) => {
                            h.extend((0..*n).map(|k| format!("{}_{k}", f.name())))
                        }
                        _ => h.push(f.name().clone()),
                    }
                }
                header = Some(h);
            }
            for i in 0..batch.num_rows() {
                if lines.len() >= limit {
                    break 'shards;
                }
                let id = ids.value(i);
                let file_name = format!("{}.png", sanitize(id));
                let file = out.join(&file_name);
                std::fs::write(&file, bytes.value(i)).map_err(|source| Error::Io {
                    op: "write",
                    path: file.clone(),
                    source,
                })?;
                let mut cells = vec![csv_cell(id), csv_cell(&file_name)];
                for &c in &others {
                    cells.extend(
                        cell_values(batch.column(c).as_ref(), i)
                            .iter()
                            .map(|v| csv_cell(v)),
                    );
                }
                lines.push(cells.join(","));
            }
        }
    }
    let csv = out.join("labels.csv");
    let mut text = header.unwrap_or_default().join(",");
    text.push('\n');
    for l in &lines {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(&csv, text).map_err(|source| Error::Io {
        op: "write",
        path: csv.clone(),
        source,
    })?;
    Ok(lines.len())
}

/// The text of one cell (a fixed-size list gives one value per element).
fn cell_values(col: &dyn arrow::array::Array, row: usize) -> Vec<String> {
    use arrow::array::{Array, FixedSizeListArray, ListArray};
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let fmt = |a: &dyn Array, i: usize| -> String {
        if !a.is_valid(i) {
            return String::new();
        }
        ArrayFormatter::try_new(a, &FormatOptions::default())
            .map(|f| f.value(i).to_string())
            .unwrap_or_default()
    };
    if let Some(l) = col.as_any().downcast_ref::<FixedSizeListArray>() {
        let v = l.value(row);
        return (0..v.len()).map(|k| fmt(v.as_ref(), k)).collect();
    }
    if let Some(l) = col.as_any().downcast_ref::<ListArray>() {
        if !l.is_valid(row) {
            return vec![String::new()];
        }
        let v = l.value(row);
        return vec![
            (0..v.len())
                .map(|k| fmt(v.as_ref(), k))
                .collect::<Vec<_>>()
                .join(";"),
        ];
    }
    vec![fmt(col, row)]
}

/// A CSV field, quoted when it needs to be.
fn csv_cell(v: &str) -> String {
    if v.contains([',', '"', '\n']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

/// A file-name-safe version of an id.
fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
