//! Stage-version manifests: the atomic commit point of a stage's output.
//!
//! Layout under a run root (documented in README.md):
//! ```text
//! <stage>/_manifests/00000003.json     manifest of version 3 (created with create-if-absent)
//! <stage>/v00000003/part-00000.parquet shards of version 3 (one per work unit)
//! <stage>/v00000003/_artifacts/…       non-tabular outputs (weights, PNGs, HTML)
//! <stage>/v00000003/_units/00000.json  per-unit commit records (resume, distributed workers)
//! <stage>/v00000003/_attempt.json      fingerprint + plan of the attempt that writes version 3
//! ```
//! A version exists iff its manifest exists; the manifest is written after every shard it lists,
//! so a reader that finds it finds every shard whole. The latest version of a stage is the
//! highest-numbered manifest. Whether a stage is up to date is decided from manifests alone.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::shards::ShardInfo;
use crate::storage::Root;

/// Current manifest format version.
pub const FORMAT: u32 = 1;

/// An input as recorded in a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum InputRef {
    /// Another stage's committed version.
    Stage {
        stage: String,
        version: u64,
        digest: String,
    },
    /// An external location (path or URL, credentials stripped), with what it held when the
    /// stage ran.
    Location {
        location: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        listing: Option<SourceListing>,
    },
}

/// A location input's content, summarised from one listing (never by reading the files): new,
/// removed, resized or rewritten files change `digest`, so the stage becomes stale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceListing {
    /// Objects listed.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
    /// `sha256:<hex>` over the sorted `path \t size \t ETag-or-mtime` lines.
    pub digest: String,
}

impl SourceListing {
    /// Summarise listing lines (as [`listing_lines`] writes them).
    pub fn of(lines: &str, files: u64, bytes: u64) -> SourceListing {
        SourceListing {
            files,
            bytes,
            digest: crate::shards::checksum(lines.as_bytes()),
        }
    }
}

/// The listing of a location as text, one `path \t size \t tag` line per object (sorted), with
/// the object count and total bytes.
pub fn listing_lines(listed: &[crate::storage::Listed]) -> (String, u64, u64) {
    let mut text = String::with_capacity(listed.len() * 64);
    let mut bytes = 0u64;
    for l in listed {
        bytes += l.size;
        text.push_str(&l.path);
        text.push('\t');
        text.push_str(&l.size.to_string());
        text.push('\t');
        text.push_str(&l.tag);
        text.push('\n');
    }
    (text, listed.len() as u64, bytes)
}

/// What changed between two listings (as [`listing_lines`] writes them): "3 files added, 1
/// removed, 2 changed (e.g. `a/b.png` added)".
pub fn listing_diff(old: &str, new: &str) -> String {
    let parse = |t: &str| -> BTreeMap<String, String> {
        t.lines()
            .filter_map(|l| {
                let (p, rest) = l.split_once('\t')?;
                Some((p.to_string(), rest.to_string()))
            })
            .collect()
    };
    let (a, b) = (parse(old), parse(new));
    let mut example: Option<String> = None;
    let (mut added, mut removed, mut changed) = (0usize, 0usize, 0usize);
    for (p, v) in &b {
        match a.get(p) {
            None => {
                added += 1;
                example.get_or_insert_with(|| format!("`{p}` added"));
            }
            Some(w) if w != v => {
                changed += 1;
                example.get_or_insert_with(|| format!("`{p}` changed"));
            }
            _ => {}
        }
    }
    for p in a.keys().filter(|p| !b.contains_key(*p)) {
        removed += 1;
        example.get_or_insert_with(|| format!("`{p}` removed"));
    }
    let plural = |n: usize| if n == 1 { "file" } else { "files" };
    let mut parts = Vec::new();
    if added > 0 {
        parts.push(format!("{added} {} added", plural(added)));
    }
    if removed > 0 {
        parts.push(format!("{removed} removed"));
    }
    if changed > 0 {
        parts.push(format!("{changed} changed"));
    }
    match example {
        Some(e) => format!("{} (e.g. {e})", parts.join(", ")),
        None => "listing differs".into(),
    }
}

/// An input row the stage skipped under `on_error = "skip"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    /// The file or object (and row, if any).
    pub input: String,
    /// Why it was skipped (names the field).
    pub reason: String,
}

/// Wall-clock timings of the run that produced a version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// RFC 3339 start time.
    pub started_at: String,
    /// RFC 3339 commit time.
    pub finished_at: String,
    /// Seconds spent by this run (resumed units excluded).
    pub wall_s: f64,
    /// Units whose shards were reused from an interrupted attempt.
    pub units_reused: usize,
    /// Units run by this attempt.
    pub units_run: usize,
}

/// The manifest of one stage version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version.
    pub format: u32,
    /// Stage name in the pipeline.
    pub stage: String,
    /// Stage kind.
    pub kind: String,
    /// Version number (1-based, per stage).
    pub version: u64,
    /// Hash of kind, code version, params and inputs.
    pub fingerprint: String,
    /// The kind's code version.
    pub code_version: String,
    /// Resolved params (defaults included).
    pub params: Value,
    /// Inputs by role.
    pub inputs: BTreeMap<String, InputRef>,
    /// Declared output schema name and version, e.g. `eye_sample@1`.
    pub schema: String,
    /// Folder of this version's shards, relative to the run root.
    pub data_prefix: String,
    /// Every shard, in unit order.
    pub shards: Vec<ShardInfo>,
    /// Non-tabular outputs.
    #[serde(default)]
    pub artifacts: Vec<ShardInfo>,
    /// Inputs skipped under `on_error = "skip"`.
    #[serde(default)]
    pub skipped: Vec<Skipped>,
    /// Total rows over all shards.
    pub rows: u64,
    /// Timings of the producing run.
    pub timings: Timings,
    /// simgan version that wrote it.
    pub simgan_version: String,
}

/// Everything a fingerprint is computed from; stored piecewise in the manifest so staleness can
/// be explained.
#[derive(Debug, Clone, PartialEq)]
pub struct FingerprintParts<'a> {
    /// Stage kind.
    pub kind: &'a str,
    /// The kind's code version.
    pub code_version: &'a str,
    /// Resolved params.
    pub params: &'a Value,
    /// Inputs by role.
    pub inputs: &'a BTreeMap<String, InputRef>,
}

impl FingerprintParts<'_> {
    /// `sha256:<hex>` over the canonical JSON of the parts.
    pub fn fingerprint(&self) -> String {
        let doc = serde_json::json!({
            "kind": self.kind,
            "code_version": self.code_version,
            "params": self.params,
            "inputs": self.inputs,
        });
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(doc.to_string().as_bytes()))
        )
    }
}

/// Relative path of a version's manifest.
pub fn manifest_path(stage: &str, version: u64) -> String {
    format!("{stage}/_manifests/{version:08}.json")
}

/// Relative folder of a version's data.
pub fn data_prefix(stage: &str, version: u64) -> String {
    format!("{stage}/v{version:08}")
}

/// A manifest read from storage together with the digest of its bytes.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// `sha256:<hex>` of the manifest's bytes (what downstream fingerprints use).
    pub digest: String,
}

/// Parse manifest bytes read from `name`.
pub fn parse(bytes: &[u8], name: &str) -> Result<Committed> {
    let manifest: Manifest = serde_json::from_slice(bytes).map_err(|source| Error::Json {
        path: name.to_string(),
        source,
    })?;
    Ok(Committed {
        manifest,
        digest: crate::shards::checksum(bytes),
    })
}

/// Committed version numbers of a stage, ascending.
pub fn versions(root: &Root, stage: &str) -> Result<Vec<u64>> {
    let mut out: Vec<u64> = root
        .list(&format!("{stage}/_manifests/"))?
        .iter()
        .filter_map(|l| {
            l.path
                .rsplit('/')
                .next()?
                .strip_suffix(".json")?
                .parse()
                .ok()
        })
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// Read one committed version, refusing a manifest that does not belong where it is stored or
/// that names objects outside its version folder (see [`validate`]).
pub fn read(root: &Root, stage: &str, version: u64) -> Result<Option<Committed>> {
    let rel = manifest_path(stage, version);
    match root.get(&rel)? {
        Some(bytes) => {
            let name = root.url_of(&rel);
            let committed = parse(&bytes, &name)?;
            validate(&committed.manifest, stage, version, &name)?;
            Ok(Some(committed))
        }
        None => Ok(None),
    }
}

/// Check that a manifest read from `<stage>/_manifests/<version>.json` (named `name` in errors)
/// is that version's: its body's stage, version and data folder match the location, and every
/// shard and artifact path is a plain relative path inside the data folder (no `..`, no
/// absolute path, no empty or `.` component, no backslash or control character). A reader that
/// trusts a manifest only after this check cannot be sent outside the version it asked for.
pub fn validate(m: &Manifest, stage: &str, version: u64, name: &str) -> Result<()> {
    let refuse = |reason: String| Error::BadManifest {
        manifest: name.to_string(),
        reason,
    };
    if m.stage != stage {
        return Err(refuse(format!(
            "its body names stage `{}`, but it is stored under stage `{stage}`",
            m.stage
        )));
    }
    if m.version != version {
        return Err(refuse(format!(
            "its body names version {}, but it is stored as version {version}",
            m.version
        )));
    }
    let prefix = data_prefix(stage, version);
    if m.data_prefix != prefix {
        return Err(refuse(format!(
            "data_prefix `{}` is not this version's folder `{prefix}`",
            m.data_prefix
        )));
    }
    for info in m.shards.iter().chain(m.artifacts.iter()) {
        check_inside(&prefix, &info.path)
            .map_err(|why| refuse(format!("object path `{}` {why}", info.path.escape_debug())))?;
    }
    Ok(())
}

/// `Ok` when `path` is a plain relative path strictly inside the folder `prefix`; else why not.
pub fn check_inside(prefix: &str, path: &str) -> std::result::Result<(), &'static str> {
    if path.starts_with('/') {
        return Err("is absolute");
    }
    if path.chars().any(|c| c == '\\' || c.is_control()) {
        return Err("has a backslash or a control character");
    }
    if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err("has an empty, `.` or `..` component");
    }
    match path.strip_prefix(prefix) {
        Some(rest) if rest.len() > 1 && rest.starts_with('/') => Ok(()),
        _ => Err("is outside the version's folder"),
    }
}

/// The latest committed version of a stage, if any.
pub fn latest(root: &Root, stage: &str) -> Result<Option<Committed>> {
    match versions(root, stage)?.last() {
        Some(&v) => read(root, stage, v),
        None => Ok(None),
    }
}

/// Commit a manifest with create-if-absent. Returns its digest, or an error if that version
/// already exists (another writer committed it).
pub fn commit(root: &Root, manifest: &Manifest) -> Result<String> {
    let rel = manifest_path(&manifest.stage, manifest.version);
    let bytes = serde_json::to_vec_pretty(manifest).map_err(|source| Error::Json {
        path: root.url_of(&rel),
        source,
    })?;
    let digest = crate::shards::checksum(&bytes);
    if root.put_if_absent(&rel, bytes)? {
        Ok(digest)
    } else {
        Err(Error::AlreadyCommitted {
            stage: manifest.stage.clone(),
            version: manifest.version,
            manifest: root.url_of(&rel),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths_must_stay_inside_the_version_folder() {
        let p = "gen/v00000001";
        assert!(check_inside(p, "gen/v00000001/part-00000.parquet").is_ok());
        assert!(check_inside(p, "gen/v00000001/_artifacts/a.png").is_ok());
        for bad in [
            "/etc/passwd",
            "gen/v00000001/../../other/v00000001/part-00000.parquet",
            "../x.parquet",
            "gen/v00000002/part-00000.parquet",
            "gen/v00000001",
            "gen/v00000001/",
            "gen/v00000001//x",
            "gen/v00000001/./x",
            "gen/v000000011/x",
            "gen/v00000001/a\\..\\b",
            "gen/v00000001/a\nb",
        ] {
            assert!(check_inside(p, bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn fingerprint_changes_with_each_part() {
        let params = serde_json::json!({"a": 1});
        let inputs = BTreeMap::new();
        let base = FingerprintParts {
            kind: "k",
            code_version: "1",
            params: &params,
            inputs: &inputs,
        };
        let f0 = base.fingerprint();
        assert_eq!(f0, base.clone().fingerprint());
        let p2 = serde_json::json!({"a": 2});
        assert_ne!(
            f0,
            FingerprintParts {
                params: &p2,
                ..base.clone()
            }
            .fingerprint()
        );
        assert_ne!(
            f0,
            FingerprintParts {
                code_version: "2",
                ..base.clone()
            }
            .fingerprint()
        );
        let mut i2 = BTreeMap::new();
        i2.insert(
            "x".to_string(),
            InputRef::Location {
                location: "/d".into(),
                listing: None,
            },
        );
        assert_ne!(
            f0,
            FingerprintParts {
                inputs: &i2,
                ..base
            }
            .fingerprint()
        );
    }
}
