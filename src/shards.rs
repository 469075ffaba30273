//! Parquet shards on object storage: writing (parquet's async writer over object_store's
//! multipart `BufWriter`, hashed as it streams) and reading back with a schema check.
//!
//! Shard layout choices for image rows (~1–3 KB of PNG each): snappy for the label columns (PNG
//! bytes do not compress further), row groups of [`ROW_GROUP_ROWS`] rows (tens of MB, well under
//! the 100–300 MB the Hugging Face viewer accepts, and what bounds the writer's memory), one shard
//! per work unit. The checksum is `sha256:<hex>` of the object's bytes as uploaded.

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::buffered::BufWriter;
use parquet::arrow::AsyncArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::async_writer::AsyncFileWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};
use crate::schema::{self, DeclaredSchema};
use crate::storage::Root;

/// Rows per Parquet row group for image rows.
pub const ROW_GROUP_ROWS: usize = 8192;

/// A written object: where, how big, and its checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Path relative to the run root.
    pub path: String,
    /// Number of rows (0 for non-tabular artifacts).
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// `sha256:<hex>` of the bytes.
    pub checksum: String,
}

/// `sha256:<hex>` of a byte slice.
pub fn checksum(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Streams parquet bytes into a multipart upload while hashing them.
struct HashingUpload {
    inner: BufWriter,
    hasher: Sha256,
    bytes: u64,
}

impl AsyncFileWriter for HashingUpload {
    fn write(&mut self, bs: Bytes) -> BoxFuture<'_, parquet::errors::Result<()>> {
        self.hasher.update(&bs);
        self.bytes += bs.len() as u64;
        async move {
            self.inner.write_all(&bs).await?;
            Ok(())
        }
        .boxed()
    }

    fn complete(&mut self) -> BoxFuture<'_, parquet::errors::Result<()>> {
        async move {
            self.inner.shutdown().await?;
            Ok(())
        }
        .boxed()
    }
}

/// The Parquet column paths of the binary leaves among `fields` (inside structs too).
fn binary_leaves(fields: &arrow::datatypes::Fields, prefix: &[String]) -> Vec<Vec<String>> {
    use arrow::datatypes::DataType;
    let mut out = Vec::new();
    for f in fields {
        let mut path = prefix.to_vec();
        path.push(f.name().clone());
        match f.data_type() {
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => out.push(path),
            DataType::Struct(children) => out.extend(binary_leaves(children, &path)),
            _ => {}
        }
    }
    out
}

/// Writes one Parquet shard. Nothing is visible at `path` until [`ShardWriter::finish`]
/// succeeds; dropping the writer aborts the upload.
pub struct ShardWriter {
    root: Root,
    rel: String,
    declared: DeclaredSchema,
    writer: AsyncArrowWriter<HashingUpload>,
    rows: u64,
}

impl ShardWriter {
    /// Start a shard at `rel` (relative to `root`) with a declared schema.
    pub fn create(root: &Root, rel: &str, declared: &DeclaredSchema) -> Result<ShardWriter> {
        // Schema metadata (`huggingface` features, the `simgan` task) as footer key-values, where
        // pyarrow, polars and `datasets` look for them.
        let mut kv: Vec<KeyValue> = declared
            .arrow
            .metadata()
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
            .collect();
        kv.sort_by(|a, b| a.key.cmp(&b.key));
        let mut props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_key_value_metadata(Some(kv))
            .set_created_by(format!("simgan {}", env!("CARGO_PKG_VERSION")));
        // Binary columns hold encoded files (PNG, weights), each unique: no dictionary (its
        // interner hashed every image for a dictionary that cannot help).
        for path in binary_leaves(declared.arrow.fields(), &[]) {
            props = props.set_column_dictionary_enabled(ColumnPath::new(path), false);
        }
        let props = props.build();
        let upload = HashingUpload {
            inner: root.writer(rel),
            hasher: Sha256::new(),
            bytes: 0,
        };
        let writer = AsyncArrowWriter::try_new(upload, declared.arrow.clone(), Some(props))
            .map_err(|source| Error::Parquet {
                path: root.url_of(rel),
                source,
            })?;
        Ok(ShardWriter {
            root: root.clone(),
            rel: rel.to_string(),
            declared: declared.clone(),
            writer,
            rows: 0,
        })
    }

    /// Append a batch; its schema must match the declared one.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        schema::check(
            &self.declared,
            &batch.schema(),
            &self.root.url_of(&self.rel),
        )?;
        let batch = batch
            .clone()
            .with_schema(self.declared.arrow.clone())
            .map_err(|source| Error::Arrow {
                what: self.root.url_of(&self.rel),
                source,
            })?;
        self.root
            .runtime()
            .block_on(self.writer.write(&batch))
            .map_err(|source| Error::Parquet {
                path: self.root.url_of(&self.rel),
                source,
            })?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Give up on this shard: the upload is aborted (a multipart upload's parts are deleted on
    /// the store; the local store's staging file is removed), so nothing appears at its path.
    pub fn abort(self) {
        let rt = self.root.runtime().clone();
        let mut upload = self.writer.into_inner();
        if let Err(e) = rt.block_on(upload.inner.abort()) {
            tracing::warn!(path = %self.root.url_of(&self.rel), error = %e, "could not abort the upload");
        }
    }

    /// Finish the file and complete the upload; the object becomes visible atomically.
    pub fn finish(mut self) -> Result<ShardInfo> {
        let rt = self.root.runtime().clone();
        rt.block_on(self.writer.finish())
            .map_err(|source| Error::Parquet {
                path: self.root.url_of(&self.rel),
                source,
            })?;
        let upload = self.writer.into_inner();
        Ok(ShardInfo {
            path: self.rel,
            rows: self.rows,
            bytes: upload.bytes,
            checksum: format!("sha256:{}", hex::encode(upload.hasher.finalize())),
        })
    }
}

/// Read a committed shard, verified against its record (see [`fetch`]); check its schema (when
/// `declared` is given) and return its batches.
pub fn read(
    root: &Root,
    info: &ShardInfo,
    declared: Option<&DeclaredSchema>,
) -> Result<Vec<RecordBatch>> {
    let bytes = fetch(root, info)?;
    read_bytes(bytes, &root.url_of(&info.path), declared)
}

/// Decode Parquet bytes already in memory (see [`read`]).
pub fn read_bytes(
    bytes: Bytes,
    name: &str,
    declared: Option<&DeclaredSchema>,
) -> Result<Vec<RecordBatch>> {
    let perr = |source| Error::Parquet {
        path: name.to_string(),
        source,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(perr)?;
    if let Some(d) = declared {
        schema::check(d, builder.schema(), name)?;
    }
    // The footer's schema carries the schema metadata (`huggingface`, the `simgan` task); the
    // decoded batches do not, so they get it back here.
    let schema = builder.schema().clone();
    let reader = builder.with_batch_size(4096).build().map_err(perr)?;
    let arrow_err = |source| Error::Arrow {
        what: name.to_string(),
        source,
    };
    reader
        .map(|b| {
            let b = b.map_err(arrow_err)?;
            if b.schema().metadata() == schema.metadata() {
                return Ok(b);
            }
            let with_meta = std::sync::Arc::new(arrow::datatypes::Schema::new_with_metadata(
                b.schema().fields().clone(),
                schema.metadata().clone(),
            ));
            b.with_schema(with_meta).map_err(arrow_err)
        })
        .collect()
}

/// The bytes of the object `info` records, checked as they stream in: the size before the body
/// is read, the sha256 over the chunks as they arrive (one pass, no second read). A missing,
/// resized or changed object is [`Error::Damaged`], naming it.
pub fn fetch(root: &Root, info: &ShardInfo) -> Result<Bytes> {
    stream_checked(root, info, true)?.map_err(|detail| Error::Damaged {
        path: root.url_of(&info.path),
        detail,
    })
}

/// Whether the object `info` records is intact: `Ok(None)` when it is, `Ok(Some(why))` when it
/// is missing, resized or changed. Streams the object without keeping it.
pub fn check(root: &Root, info: &ShardInfo) -> Result<Option<String>> {
    Ok(stream_checked(root, info, false)?.err())
}

/// Stream `info`'s object through sha256, keeping the bytes when `keep`. The outer error is a
/// storage failure; the inner one what does not match.
fn stream_checked(
    root: &Root,
    info: &ShardInfo,
    keep: bool,
) -> Result<std::result::Result<Bytes, String>> {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    if let Some(file) = root.local_path(&info.path) {
        return local_checked(&file, info, keep);
    }
    let (store, path) = root.raw(&info.path);
    let fut = || async {
        let got = match store.get(&path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => {
                return Ok(Err("missing (recorded, but not in storage)".to_string()));
            }
            Err(e) => return Err(e),
        };
        if got.meta.size != info.bytes {
            return Ok(Err(format!(
                "{} bytes in storage, {} recorded",
                got.meta.size, info.bytes
            )));
        }
        let mut hasher = Sha256::new();
        let mut buf = if keep {
            bytes::BytesMut::with_capacity(usize::try_from(info.bytes).unwrap_or(0))
        } else {
            bytes::BytesMut::new()
        };
        let mut stream = got.into_stream();
        let mut seen = 0u64;
        while let Some(chunk) = stream.try_next().await? {
            hasher.update(&chunk);
            seen += chunk.len() as u64;
            if keep {
                buf.extend_from_slice(&chunk);
            }
        }
        let found = format!("sha256:{}", hex::encode(hasher.finalize()));
        if seen != info.bytes {
            return Ok(Err(format!("read {seen} bytes, {} recorded", info.bytes)));
        }
        if found != info.checksum {
            return Ok(Err(format!(
                "sha256 differs from the recorded one (recorded {}, found {found})",
                info.checksum.escape_debug()
            )));
        }
        Ok(Ok(buf.freeze()))
    };
    crate::storage::retry_read(|| root.runtime().block_on(fut()))
        .map_err(|e| Error::storage("get", root.url_of(&info.path), e))
}

/// [`stream_checked`] for a file on local disk: read in 1 MiB blocks straight from the file
/// (object_store's local stream reads 8 KiB per blocking task, ~6× slower for this).
fn local_checked(
    file: &std::path::Path,
    info: &ShardInfo,
    keep: bool,
) -> Result<std::result::Result<Bytes, String>> {
    use std::io::Read;
    let io = |source| Error::Io {
        op: "read",
        path: file.to_path_buf(),
        source,
    };
    let mut f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Err("missing (recorded, but not in storage)".to_string()));
        }
        Err(e) => return Err(io(e)),
    };
    let size = f.metadata().map_err(io)?.len();
    if size != info.bytes {
        return Ok(Err(format!(
            "{size} bytes in storage, {} recorded",
            info.bytes
        )));
    }
    let mut hasher = Sha256::new();
    let mut out = Vec::with_capacity(if keep {
        usize::try_from(size).unwrap_or(0)
    } else {
        0
    });
    let mut block = vec![0u8; 1 << 20];
    let mut seen = 0u64;
    loop {
        let n = f.read(&mut block).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&block[..n]);
        seen += n as u64;
        if keep {
            out.extend_from_slice(&block[..n]);
        }
    }
    let found = format!("sha256:{}", hex::encode(hasher.finalize()));
    if seen != info.bytes {
        return Ok(Err(format!("read {seen} bytes, {} recorded", info.bytes)));
    }
    if found != info.checksum {
        return Ok(Err(format!(
            "sha256 differs from the recorded one (recorded {}, found {found})",
            info.checksum.escape_debug()
        )));
    }
    Ok(Ok(Bytes::from(out)))
}

/// Verify that the object at `info.path` still has the recorded size and checksum.
pub fn verify(root: &Root, info: &ShardInfo) -> Result<bool> {
    Ok(check(root, info)?.is_none())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use parquet::basic::Encoding;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    use super::*;

    /// Encoded files (the image struct's `bytes`) are written without a dictionary; the other
    /// columns keep parquet's default one. Read back by parquet's own file reader.
    #[test]
    fn binary_columns_are_written_without_a_dictionary() {
        let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = Root::open(dir.path().to_str().unwrap_or_default(), rt.handle().clone())
            .unwrap_or_else(|e| panic!("{e}"));
        let ids: Vec<String> = (0..50).map(|i| format!("r{i}")).collect();
        let pngs: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 64]).collect();
        let image = crate::sample::image_column(
            pngs.iter().map(|p| p.as_slice()),
            ids.iter().map(|s| s.as_str()),
        );
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("image", image.data_type().clone(), true),
        ]));
        let id: ArrayRef = Arc::new(StringArray::from(ids.clone()));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![id, image]).unwrap_or_else(|e| panic!("{e}"));
        let declared = DeclaredSchema::found("t", 1, schema);
        let mut w =
            ShardWriter::create(&root, "t/s.parquet", &declared).unwrap_or_else(|e| panic!("{e}"));
        w.write(&batch).unwrap_or_else(|e| panic!("{e}"));
        w.finish().unwrap_or_else(|e| panic!("{e}"));
        let file =
            std::fs::File::open(dir.path().join("t/s.parquet")).unwrap_or_else(|e| panic!("{e}"));
        let reader = SerializedFileReader::new(file).unwrap_or_else(|e| panic!("{e}"));
        let group = reader.metadata().row_group(0);
        let dictionary = |path: &str| {
            let col = group
                .columns()
                .iter()
                .find(|c| c.column_path().string() == path)
                .unwrap_or_else(|| panic!("no column {path}"));
            col.dictionary_page_offset().is_some()
                || col.encodings().any(|e| e == Encoding::RLE_DICTIONARY)
        };
        assert!(!dictionary("image.bytes"));
        assert!(dictionary("image.path"));
        assert!(dictionary("id"));
    }
}
