//! Finding a dataset from a URL a user types: a stage folder (its latest version), a stage at a
//! given version (`<root>/<stage>@3`), a manifest file, or any folder of `*.parquet` files.
//! Used by `show`, `export` and `query`, and by readers of stage outputs.

use tokio::runtime::Handle;

use crate::error::{Error, Result};
use crate::manifest::{self, Committed};
use crate::storage::Root;

/// A dataset located on storage.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The root the shard paths are relative to.
    pub root: Root,
    /// The manifest, when the URL named a stage version.
    pub committed: Option<Committed>,
    /// Shard paths relative to `root`, in order.
    pub shards: Vec<String>,
    /// Whether shard reads are checked against the manifest's sizes and checksums (on unless a
    /// caller turns it off; a folder without a manifest has nothing to check against).
    pub verify: bool,
}

impl Dataset {
    /// Whether reads of this dataset are verified (a committed version, verification on).
    pub fn verified(&self) -> bool {
        self.verify && self.committed.is_some()
    }

    /// The bytes of shard `i`, checked against the manifest's size and sha256 when
    /// [`Dataset::verified`] (a damaged shard is an error naming it).
    pub fn fetch(&self, i: usize) -> Result<bytes::Bytes> {
        let path = self.shards.get(i).ok_or_else(|| Error::Location {
            location: self.root.url().to_string(),
            reason: format!("no shard {i}"),
        })?;
        match &self.committed {
            Some(c) if self.verify => match c.manifest.shards.get(i) {
                Some(info) => crate::shards::fetch(&self.root, info),
                None => self.root.get_required(path),
            },
            _ => self.root.get_required(path),
        }
    }

    /// The record batches of shard `i` (see [`Dataset::fetch`]).
    pub fn read(&self, i: usize) -> Result<Vec<arrow::record_batch::RecordBatch>> {
        let url = self
            .root
            .url_of(self.shards.get(i).map_or("", String::as_str));
        crate::shards::read_bytes(self.fetch(i)?, &url, None)
    }
}

fn split_parent(url: &str) -> Option<(&str, &str)> {
    let trimmed = url.trim_end_matches('/');
    let (parent, last) = trimmed.rsplit_once('/')?;
    if parent.is_empty() || parent.ends_with(':') || parent.ends_with(":/") {
        return None;
    }
    Some((parent, last))
}

/// Open the dataset a URL names.
pub fn open(url: &str, rt: Handle) -> Result<Dataset> {
    let bad = |reason: &str| Error::Location {
        location: crate::storage::redact(url),
        reason: reason.to_string(),
    };
    let (base, version) = match url.rsplit_once('@') {
        Some((b, v)) if !v.contains('/') => (
            b,
            Some(
                v.parse::<u64>()
                    .map_err(|_| bad("version after @ must be a number"))?,
            ),
        ),
        _ => (url, None),
    };
    // A manifest file: <root>/<stage>/_manifests/NNNNNNNN.json
    if let Some(stripped) = base.strip_suffix(".json") {
        let (manifests_dir, file) =
            split_parent(stripped).ok_or_else(|| bad("not a manifest path"))?;
        let (stage_dir, m) =
            split_parent(manifests_dir).ok_or_else(|| bad("not a manifest path"))?;
        let (root_url, stage) =
            split_parent(stage_dir).ok_or_else(|| bad("not a manifest path"))?;
        if m != "_manifests" {
            return Err(bad("a manifest lives in <stage>/_manifests/"));
        }
        let v: u64 = file
            .parse()
            .map_err(|_| bad("manifest file name must be its version number"))?;
        let root = Root::open_existing(root_url, rt)?;
        let committed = manifest::read(&root, stage, v)?.ok_or_else(|| bad("no such manifest"))?;
        return Ok(from_manifest(root, committed));
    }
    // A stage folder with manifests.
    if let Some((root_url, stage)) = split_parent(base)
        && let Ok(root) = Root::open_existing(root_url, rt.clone())
    {
        let versions = manifest::versions(&root, stage)?;
        if !versions.is_empty() {
            let v = version.unwrap_or(versions[versions.len() - 1]);
            let committed = manifest::read(&root, stage, v)?
                .ok_or_else(|| bad(&format!("stage `{stage}` has no version {v}")))?;
            return Ok(from_manifest(root, committed));
        }
    }
    if version.is_some() {
        return Err(bad("no stage manifests found here"));
    }
    // Any folder of parquet files.
    let root = Root::open_existing(base, rt)?;
    let shards: Vec<String> = root
        .list("")?
        .into_iter()
        .map(|l| l.path)
        .filter(|p| p.ends_with(".parquet") && !p.contains("/_"))
        .collect();
    if shards.is_empty() {
        return Err(bad("no stage manifest and no .parquet files here"));
    }
    Ok(Dataset {
        root,
        committed: None,
        shards,
        verify: true,
    })
}

fn from_manifest(root: Root, committed: Committed) -> Dataset {
    let shards = committed
        .manifest
        .shards
        .iter()
        .map(|s| s.path.clone())
        .collect();
    Dataset {
        root,
        committed: Some(committed),
        shards,
        verify: true,
    }
}

/// The committed dataset of a stage input (for kinds reading their inputs).
pub fn of_stage(root: &Root, committed: &Committed) -> Dataset {
    from_manifest(root.clone(), committed.clone())
}
