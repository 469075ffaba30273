//! Checking stored versions against their manifests: every shard and artifact of a committed
//! version streamed through sha256 and compared, with its size, to what the manifest recorded.
//! Used by `simgan verify` (a whole root), `show --verify` (one version), and `status --verify` /
//! `run --verify` (a damaged latest version makes its stage stale, and a run rebuilds it as a new
//! version; committed versions are never rewritten).

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::manifest::{self, Committed};
use crate::storage::Root;

/// One object that does not match its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Damage {
    /// Path relative to the root.
    pub path: String,
    /// What does not match (missing, size, sha256).
    pub detail: String,
}

/// The check of one committed version.
#[derive(Debug, Clone, Serialize)]
pub struct VersionCheck {
    /// Stage name.
    pub stage: String,
    /// Version number.
    pub version: u64,
    /// Shards and artifacts checked.
    pub objects: usize,
    /// Bytes read.
    pub bytes: u64,
    /// Objects that do not match (empty when the version is intact).
    pub damaged: Vec<Damage>,
    /// Why the manifest itself was refused (malformed, or naming paths outside its folder).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

impl VersionCheck {
    /// Whether every object matched and the manifest was sound.
    pub fn ok(&self) -> bool {
        self.damaged.is_empty() && self.refused.is_none()
    }

    /// One line for people: `intact` or what is wrong, first damaged object named.
    pub fn summary(&self) -> String {
        if let Some(r) = &self.refused {
            return format!("manifest refused: {r}");
        }
        match self.damaged.first() {
            None => format!("intact ({} objects, {} bytes)", self.objects, self.bytes),
            Some(d) => format!(
                "damaged: {} of {} objects fail verification (first: {}: {})",
                self.damaged.len(),
                self.objects,
                d.path,
                d.detail
            ),
        }
    }
}

/// Check every shard and artifact of one committed version (objects in parallel).
pub fn version(root: &Root, committed: &Committed) -> Result<VersionCheck> {
    let m = &committed.manifest;
    let objects: Vec<&crate::shards::ShardInfo> =
        m.shards.iter().chain(m.artifacts.iter()).collect();
    let found: Vec<Option<Damage>> = objects
        .par_iter()
        .map(|info| {
            Ok(crate::shards::check(root, info)?.map(|detail| Damage {
                path: info.path.clone(),
                detail,
            }))
        })
        .collect::<Result<_>>()?;
    Ok(VersionCheck {
        stage: m.stage.clone(),
        version: m.version,
        objects: objects.len(),
        bytes: objects.iter().map(|o| o.bytes).sum(),
        damaged: found.into_iter().flatten().collect(),
        refused: None,
    })
}

/// Check the committed versions of every stage under a root (`latest_only`: each stage's
/// latest). A manifest that cannot be read or is refused is reported, not an error; storage
/// failures are errors.
pub fn root(root: &Root, latest_only: bool) -> Result<Vec<VersionCheck>> {
    let mut out = Vec::new();
    for stage in root
        .list_dirs("")?
        .into_iter()
        .filter(|d| !d.starts_with('_'))
    {
        let mut versions = manifest::versions(root, &stage)?;
        if latest_only && versions.len() > 1 {
            versions.drain(..versions.len() - 1);
        }
        for v in versions {
            match manifest::read(root, &stage, v) {
                Ok(Some(c)) => out.push(version(root, &c)?),
                Ok(None) => {}
                Err(e @ (Error::BadManifest { .. } | Error::Json { .. })) => {
                    out.push(VersionCheck {
                        stage: stage.clone(),
                        version: v,
                        objects: 0,
                        bytes: 0,
                        damaged: vec![],
                        refused: Some(e.to_string()),
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(out)
}
