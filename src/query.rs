//! Reading datasets back with polars: SQL over a stage's shards (local or on object storage) and
//! export of eye rows to PNG + CSV.
//!
//! Local shards are scanned by path, so polars prunes columns and row groups (statistics) as it
//! reads the files. Remote shards are fetched through our own object_store (one client, the
//! run's credentials) into memory buffers and scanned from there: projection and row-group
//! pruning still apply to decoding, but every byte of the selected shards crosses the network.

use std::path::Path;

use polars::prelude::*;

use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::eyes::rows;

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
    let local_dir = local_folder(ds.root.url());
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
            for s in &ds.shards {
                bufs.push(ds.root.get_required(s)?.to_vec().into());
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

/// Export the first `limit` eye rows as `<id>.png` files plus `labels.csv` into `out`.
/// Returns the number of rows written.
pub fn export_eyes(ds: &Dataset, limit: usize, out: &Path) -> Result<usize> {
    std::fs::create_dir_all(out).map_err(|source| Error::Io {
        op: "create export folder",
        path: out.to_path_buf(),
        source,
    })?;
    let declared = crate::schema::get("eye_sample")?;
    let mut labels: Vec<rows::EyeRow> = Vec::new();
    'shards: for shard in &ds.shards {
        for batch in crate::shards::read(&ds.root, shard, Some(declared))? {
            for row in rows::from_batch(&batch)? {
                if labels.len() >= limit {
                    break 'shards;
                }
                let file = out.join(format!("{}.png", sanitize(&row.id)));
                std::fs::write(&file, &row.png).map_err(|source| Error::Io {
                    op: "write",
                    path: file.clone(),
                    source,
                })?;
                labels.push(row);
            }
        }
    }
    let col = |name: &str, f: &dyn Fn(&rows::EyeRow) -> f32| {
        Column::new(name.into(), labels.iter().map(f).collect::<Vec<f32>>())
    };
    let mut df = DataFrame::new_infer_height(vec![
        Column::new(
            "id".into(),
            labels.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        ),
        Column::new(
            "file".into(),
            labels
                .iter()
                .map(|r| format!("{}.png", sanitize(&r.id)))
                .collect::<Vec<_>>(),
        ),
        col("gaze_x", &|r| r.gaze[0]),
        col("gaze_y", &|r| r.gaze[1]),
        col("gaze_z", &|r| r.gaze[2]),
        col("pitch", &|r| crate::eyes::pitch_yaw(r.gaze).0),
        col("yaw", &|r| crate::eyes::pitch_yaw(r.gaze).1),
        col("head_pitch", &|r| r.head_pose[0]),
        col("head_yaw", &|r| r.head_pose[1]),
        col("head_roll", &|r| r.head_pose[2]),
        Column::new(
            "domain".into(),
            labels.iter().map(|r| r.domain.clone()).collect::<Vec<_>>(),
        ),
        Column::new(
            "split".into(),
            labels.iter().map(|r| r.split.clone()).collect::<Vec<_>>(),
        ),
    ])?;
    let csv = out.join("labels.csv");
    let mut f = std::fs::File::create(&csv).map_err(|source| Error::Io {
        op: "create",
        path: csv.clone(),
        source,
    })?;
    CsvWriter::new(&mut f)
        .include_header(true)
        .finish(&mut df)?;
    Ok(labels.len())
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
