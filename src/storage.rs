//! Run roots on object storage.
//!
//! A [`Root`] is a location (local folder, `file://`, `memory://`, `s3://`, `gs://`, `az://`)
//! opened through `object_store`, plus the tokio runtime handle that drives its I/O. Everything
//! above this module is synchronous code (rayon for compute) that calls the blocking methods here;
//! async stays inside this module and the shard writer.
//!
//! Guarantees relied on by the runner (checked by the conformance suite in `tests/storage.rs`
//! against memory, local disk and S3 on moto):
//! - `put` is atomic: readers see the whole object or nothing.
//! - `put_if_absent` succeeds for exactly one of several racing writers (`PutMode::Create`).
//! - listing is consistent with completed writes.
//!
//! Credentials come from the usual environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`) and are
//! never printed: [`Root::url`] is the location as the user wrote it, without query or userinfo.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::buffered::BufWriter;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::runtime::Handle;

use crate::error::{Error, Result};

/// Attempts of an idempotent read (get, head, list) that failed in transit: object_store retries
/// requests that fail with 5xx, timeouts or resets (its `RetryConfig`: up to 10 retries within
/// 3 minutes, exponential backoff from 100 ms), but not a response body cut off mid-stream; reads
/// are tried this many times in all, 250 ms, 500 ms, 1 s apart.
const READ_ATTEMPTS: u32 = 4;

/// Whether a failed request may succeed if repeated (not a definite answer from the store).
pub fn transient(e: &object_store::Error) -> bool {
    !matches!(
        e,
        object_store::Error::NotFound { .. }
            | object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. }
            | object_store::Error::NotModified { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::InvalidPath { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::NotImplemented { .. }
            | object_store::Error::UnknownConfigurationKey { .. }
    )
}

/// Run an idempotent read, repeating it (with backoff) while it fails in transit.
pub fn retry_read<T>(
    mut read: impl FnMut() -> std::result::Result<T, object_store::Error>,
) -> std::result::Result<T, object_store::Error> {
    let mut attempt = 1;
    loop {
        match read() {
            Err(e) if attempt < READ_ATTEMPTS && transient(&e) => {
                tracing::debug!(attempt, error = %e, "read failed in transit; retrying");
                std::thread::sleep(std::time::Duration::from_millis(125 << attempt));
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// One listed object, relative to the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Path relative to the root, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// What changes when the object's content is replaced: its ETag where the store has one,
    /// else its last-modified time (RFC 3339).
    pub tag: String,
}

/// A run root (or any other location) on object storage.
#[derive(Clone)]
pub struct Root {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
    rt: Handle,
    /// The folder behind the root when it is on local disk (for fsync and staging files).
    local: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Root").field("url", &self.url).finish()
    }
}

/// Named in-process memory stores, so `memory://name` means the same store for one process.
fn memory_store(name: &str) -> Arc<dyn ObjectStore> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    let stores = STORES.get_or_init(Default::default);
    let mut guard = match stores.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    guard
        .entry(name.to_string())
        .or_insert_with(|| Arc::new(InMemory::new()))
        .clone()
}

/// Whether `s` looks like a location (URL or path) rather than a stage name.
pub fn is_location(s: &str) -> bool {
    s.contains("://")
        || s.starts_with('/')
        || s.starts_with("./")
        || s.starts_with("../")
        || s == "."
}

impl Root {
    /// Open a location: a plain path or `file://` (created if missing), `memory://NAME/prefix`,
    /// `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`.
    pub fn open(location: &str, rt: Handle) -> Result<Root> {
        Root::open_inner(location, rt, true)
    }

    /// Open a location for reading: like [`Root::open`] but a missing local folder is an error.
    pub fn open_existing(location: &str, rt: Handle) -> Result<Root> {
        Root::open_inner(location, rt, false)
    }

    fn open_inner(location: &str, rt: Handle, create: bool) -> Result<Root> {
        let bad = |reason: String| Error::Location {
            location: redact(location),
            reason,
        };
        let mut local = None;
        let (store, prefix): (Arc<dyn ObjectStore>, Path) = if let Some(rest) =
            location.strip_prefix("memory://")
        {
            let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            (memory_store(name), Path::from(prefix))
        } else if location.contains("://") && !location.starts_with("file://") {
            let url = url::Url::parse(location).map_err(|e| bad(e.to_string()))?;
            let bucket = url
                .host_str()
                .ok_or_else(|| bad("missing bucket".into()))?
                .to_string();
            let prefix = Path::from(url.path().trim_start_matches('/'));
            let store: Arc<dyn ObjectStore> = match url.scheme() {
                "s3" | "s3a" => {
                    let mut b =
                        object_store::aws::AmazonS3Builder::from_env().with_bucket_name(&bucket);
                    if std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v == "true" || v == "1") {
                        b = b.with_allow_http(true);
                    }
                    Arc::new(b.build().map_err(|e| bad(e.to_string()))?)
                }
                "gs" => Arc::new(
                    object_store::gcp::GoogleCloudStorageBuilder::from_env()
                        .with_bucket_name(&bucket)
                        .build()
                        .map_err(|e| bad(e.to_string()))?,
                ),
                "az" | "abfs" | "abfss" => Arc::new(
                    object_store::azure::MicrosoftAzureBuilder::from_env()
                        .with_container_name(&bucket)
                        .build()
                        .map_err(|e| bad(e.to_string()))?,
                ),
                other => {
                    return Err(bad(format!(
                        "unsupported scheme `{other}` (use a path, file://, memory://, s3://, gs:// or az://)"
                    )));
                }
            };
            (store, prefix)
        } else {
            let path = location.strip_prefix("file://").unwrap_or(location);
            let dir = std::path::PathBuf::from(if path.is_empty() { "." } else { path });
            if !create && !dir.is_dir() {
                return Err(bad("no such folder".into()));
            }
            std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
                op: "create run root",
                path: dir.clone(),
                source,
            })?;
            let dir = dir.canonicalize().map_err(|source| Error::Io {
                op: "resolve run root",
                path: dir.clone(),
                source,
            })?;
            let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                .map_err(|e| bad(e.to_string()))?;
            local = Some(dir.clone());
            (Arc::new(fs.with_automatic_cleanup(true)), Path::default())
        };
        Ok(Root {
            store,
            prefix,
            url: redact(location),
            rt,
            local,
        })
    }

    /// The location as given, without credentials or query parameters.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The runtime handle driving this root's I/O.
    pub fn runtime(&self) -> &Handle {
        &self.rt
    }

    /// The underlying store and the absolute object path of `rel`.
    pub fn raw(&self, rel: &str) -> (Arc<dyn ObjectStore>, Path) {
        (self.store.clone(), self.path(rel))
    }

    /// A sub-root: the same store with `rel` appended to the prefix.
    pub fn sub(&self, rel: &str) -> Root {
        Root {
            store: self.store.clone(),
            prefix: self.path(rel),
            url: join_url(&self.url, rel),
            rt: self.rt.clone(),
            local: self.local_path(rel),
        }
    }

    /// The URL of `rel` under this root, for messages and manifests.
    pub fn url_of(&self, rel: &str) -> String {
        join_url(&self.url, rel)
    }

    fn path(&self, rel: &str) -> Path {
        let rel = rel.trim_matches('/');
        if rel.is_empty() {
            return self.prefix.clone();
        }
        let mut parts: Vec<String> = self
            .prefix
            .parts()
            .map(|p| p.as_ref().to_string())
            .collect();
        parts.extend(rel.split('/').filter(|s| !s.is_empty()).map(str::to_string));
        Path::from_iter(parts)
    }

    fn rel_of(&self, p: &Path) -> String {
        let full = p.as_ref();
        let pre = self.prefix.as_ref();
        if pre.is_empty() {
            full.to_string()
        } else {
            full.strip_prefix(pre)
                .unwrap_or(full)
                .trim_start_matches('/')
                .to_string()
        }
    }

    /// Write `bytes` at `rel`, replacing what is there (atomic).
    pub fn put(&self, rel: &str, bytes: impl Into<Bytes>) -> Result<()> {
        let p = self.path(rel);
        let payload = PutPayload::from_bytes(bytes.into());
        self.rt
            .block_on(self.store.put(&p, payload))
            .map(|_| ())
            .map_err(|e| Error::storage("put", self.url_of(rel), e))
    }

    /// Write `bytes` at `rel` only if nothing is there. `Ok(false)` if it already existed.
    ///
    /// object_store repeats a conditional put answered with a 5xx but not one whose connection
    /// failed (it may have been applied), so this repeats those, up to [`READ_ATTEMPTS`] times.
    /// When a create finds the object already there with exactly these bytes, an earlier attempt
    /// of this very call landed and its answer was lost: it counts as created.
    pub fn put_if_absent(&self, rel: &str, bytes: impl Into<Bytes>) -> Result<bool> {
        let p = self.path(rel);
        let bytes: Bytes = bytes.into();
        let mut attempt = 1;
        loop {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            let put = self
                .store
                .put_opts(&p, PutPayload::from_bytes(bytes.clone()), opts);
            match self.rt.block_on(put) {
                Ok(_) => return Ok(true),
                Err(object_store::Error::AlreadyExists { .. })
                | Err(object_store::Error::Precondition { .. }) => {
                    // object_store itself repeats a create answered with a 5xx: a lost
                    // attempt may be ours at any attempt number.
                    return Ok(self.get(rel)?.is_some_and(|there| there == bytes));
                }
                Err(e) if attempt < READ_ATTEMPTS && transient(&e) => {
                    tracing::debug!(attempt, error = %e, "conditional put failed in transit; retrying");
                    std::thread::sleep(std::time::Duration::from_millis(125 << attempt));
                    attempt += 1;
                }
                Err(e) => return Err(Error::storage("create", self.url_of(rel), e)),
            }
        }
    }

    /// Read the object at `rel`; `Ok(None)` if it does not exist. On local disk the file is
    /// read on the calling thread (the local store hands every open and every read to tokio's
    /// blocking pool: two thread switches per file, a third of UnityEyes ingest's CPU).
    pub fn get(&self, rel: &str) -> Result<Option<Bytes>> {
        if let Some(file) = self.local_path(rel) {
            use std::io::ErrorKind;
            return match std::fs::read(&file) {
                Ok(b) => Ok(Some(Bytes::from(b))),
                // A folder is no object, as for the local store.
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::IsADirectory) => {
                    Ok(None)
                }
                Err(source) => Err(Error::Io {
                    op: "read",
                    path: file,
                    source,
                }),
            };
        }
        let p = self.path(rel);
        let fut = || async {
            match self.store.get(&p).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        };
        retry_read(|| self.rt.block_on(fut()))
            .map_err(|e| Error::storage("get", self.url_of(rel), e))
    }

    /// Read the object at `rel`, failing if it is missing.
    pub fn get_required(&self, rel: &str) -> Result<Bytes> {
        self.get(rel)?.ok_or_else(|| Error::Input {
            file: self.url_of(rel),
            field: "object".into(),
            reason: "not found".into(),
        })
    }

    /// Size of the object at `rel`, or `None` if it does not exist.
    pub fn size(&self, rel: &str) -> Result<Option<u64>> {
        Ok(self.version_tag(rel)?.map(|(size, _)| size))
    }

    /// Size and version tag (the store's ETag, else its modification time) of the object at
    /// `rel`, or `None` if it does not exist: what a cache of the object's parsed contents keys
    /// on.
    pub fn version_tag(&self, rel: &str) -> Result<Option<(u64, String)>> {
        let p = self.path(rel);
        match retry_read(|| self.rt.block_on(self.store.head(&p))) {
            Ok(m) => {
                let tag = m.e_tag.unwrap_or_else(|| m.last_modified.to_rfc3339());
                Ok(Some((m.size, tag)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::storage("head", self.url_of(rel), e)),
        }
    }

    /// Delete the object at `rel` (missing is not an error).
    pub fn delete(&self, rel: &str) -> Result<()> {
        let p = self.path(rel);
        match self.rt.block_on(self.store.delete(&p)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::storage("delete", self.url_of(rel), e)),
        }
    }

    /// Every object under `rel` (recursive), sorted by path.
    pub fn list(&self, rel: &str) -> Result<Vec<Listed>> {
        let p = self.path(rel);
        let prefix = if p.as_ref().is_empty() {
            None
        } else {
            Some(&p)
        };
        let metas: Vec<_> = retry_read(|| {
            self.rt
                .block_on(self.store.list(prefix).try_collect::<Vec<_>>())
        })
        .map_err(|e| Error::storage("list", self.url_of(rel), e))?;
        let mut out: Vec<Listed> = metas
            .into_iter()
            .map(|m| Listed {
                path: self.rel_of(&m.location),
                size: m.size,
                tag: m
                    .e_tag
                    .clone()
                    .unwrap_or_else(|| m.last_modified.to_rfc3339()),
            })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// The immediate "sub-directory" names under `rel` (list with delimiter), sorted.
    pub fn list_dirs(&self, rel: &str) -> Result<Vec<String>> {
        let p = self.path(rel);
        let prefix = if p.as_ref().is_empty() {
            None
        } else {
            Some(&p)
        };
        let res = retry_read(|| self.rt.block_on(self.store.list_with_delimiter(prefix)))
            .map_err(|e| Error::storage("list", self.url_of(rel), e))?;
        let mut out: Vec<String> = res
            .common_prefixes
            .iter()
            .filter_map(|d| d.filename().map(str::to_string))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Delete every object under `rel`.
    pub fn delete_prefix(&self, rel: &str) -> Result<usize> {
        let listed = self.list(rel)?;
        for l in &listed {
            self.delete(&l.path)?;
        }
        Ok(listed.len())
    }

    /// The local file or folder behind `rel`, when the root is on local disk. `None` too for a
    /// `rel` with a `.` or `..` segment: the object store encodes those as names, so they never
    /// leave the root, and a plain path join must not either.
    pub fn local_path(&self, rel: &str) -> Option<std::path::PathBuf> {
        let mut p = self.local.clone()?;
        let parts: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
        if parts.iter().any(|s| *s == "." || *s == "..") {
            return None;
        }
        p.extend(parts);
        Some(p)
    }

    /// Delete the staging files of interrupted uploads under `rel` (local disk only: the local
    /// store stages a multipart upload as `NAME#N` beside its target, lists nothing of it, and
    /// leaves it behind when the writer is killed). Returns how many were removed.
    pub fn remove_staging(&self, rel: &str) -> Result<usize> {
        let Some(dir) = self.local_path(rel) else {
            return Ok(0);
        };
        let mut removed = 0;
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            let entries = match std::fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(Error::Io {
                        op: "list",
                        path: d,
                        source,
                    });
                }
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(path);
                    continue;
                }
                let name = entry.file_name();
                let staged = name
                    .to_str()
                    .and_then(|n| n.rsplit_once('#'))
                    .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                if staged {
                    match std::fs::remove_file(&path) {
                        Ok(()) => removed += 1,
                        // Gone meanwhile: a concurrent writer finished (renamed) its upload, or
                        // another remover got there first. Either way it is not left behind.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(source) => {
                            return Err(Error::Io {
                                op: "remove staging file",
                                path: path.clone(),
                                source,
                            });
                        }
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Flush every file under `rel` and the folders holding them to disk (local disk only), so
    /// that what a manifest committed afterwards names survives a power loss.
    pub fn sync_local(&self, rel: &str) -> Result<()> {
        let Some(dir) = self.local_path(rel) else {
            return Ok(());
        };
        fn io(op: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error {
            let path = path.to_path_buf();
            move |source| Error::Io { op, path, source }
        }
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            let entries = match std::fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(io("list", &d)(source)),
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(path);
                } else {
                    match std::fs::File::open(&path).and_then(|f| f.sync_all()) {
                        Ok(()) => {}
                        // Gone since the listing: a concurrent writer's staging file, renamed
                        // into its object (which is synced where it now is, if listed) or
                        // removed; nothing a manifest names.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(source) => return Err(io("fsync", &path)(source)),
                    }
                }
            }
            std::fs::File::open(&d)
                .and_then(|f| f.sync_all())
                .map_err(io("fsync", &d))?;
        }
        Ok(())
    }

    /// A buffered writer for `rel`: small objects are one PUT, large ones a multipart upload.
    /// The object becomes visible only when the writer is shut down successfully.
    pub fn writer(&self, rel: &str) -> BufWriter {
        BufWriter::with_capacity(self.store.clone(), self.path(rel), 8 * 1024 * 1024)
    }
}

/// Join a location and a relative path with one `/`.
fn join_url(base: &str, rel: &str) -> String {
    let rel = rel.trim_matches('/');
    if rel.is_empty() {
        base.to_string()
    } else {
        format!("{}/{}", base.trim_end_matches('/'), rel)
    }
}

/// Strip userinfo and query from a URL-like location so it can be printed and stored.
pub fn redact(location: &str) -> String {
    match url::Url::parse(location) {
        Ok(mut u) if u.scheme().len() > 1 => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string().trim_end_matches('/').to_string()
        }
        _ => location.trim_end_matches('/').to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_drops_credentials_and_query() {
        assert_eq!(redact("s3://KEY:SECRET@bucket/p?x=1"), "s3://bucket/p");
        assert_eq!(redact("./runs/x/"), "./runs/x");
    }

    /// On local disk `get` reads the file directly: present, missing and folder as the object
    /// store answers them, and a `..` segment never reaches outside the root.
    #[test]
    fn local_reads_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let inside = dir.path().join("root");
        std::fs::create_dir_all(inside.join("sub")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(inside.join("sub/a.bin"), b"inside").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("secret"), b"outside").unwrap_or_else(|e| panic!("{e}"));
        let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
        let root = Root::open(&inside.to_string_lossy(), rt.handle().clone())
            .unwrap_or_else(|e| panic!("{e}"));
        let get = |rel: &str| root.get(rel).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(get("sub/a.bin").as_deref(), Some(&b"inside"[..]));
        assert_eq!(get("sub/missing.bin"), None);
        assert_eq!(get("sub"), None, "a folder is no object");
        assert_eq!(get("../secret"), None, "`..` is a name, not the parent");
        assert_eq!(root.local_path("sub/../../secret"), None);
    }

    #[test]
    fn locations_are_told_from_stage_names() {
        assert!(is_location("s3://b/x") && is_location("/data") && is_location("./d"));
        assert!(!is_location("synthetic"));
    }
}
