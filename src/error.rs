//! The library's error type. Every variant names what failed (the object, the stage, the file
//! and field) so a one-line summary at the CLI edge is enough to act on.

use std::path::PathBuf;

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in simgan's library code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A run root or input URL could not be understood or opened.
    #[error("invalid location `{location}`: {reason}")]
    Location { location: String, reason: String },

    /// An object-store request failed.
    #[error("storage {op} `{path}`: {source}")]
    Storage {
        op: &'static str,
        path: String,
        #[source]
        source: object_store::Error,
    },

    /// A local file could not be read or written.
    #[error("{op} `{}`: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The pipeline definition is invalid (the message names the stage and key).
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),

    /// A JSON document on storage (manifest, unit record, lease) is malformed.
    #[error("malformed JSON in `{path}`: {source}")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },

    /// Reading or writing a Parquet shard failed.
    #[error("parquet `{path}`: {source}")]
    Parquet {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },

    /// Building or converting Arrow data failed.
    #[error("arrow data for `{what}`: {source}")]
    Arrow {
        what: String,
        #[source]
        source: arrow::error::ArrowError,
    },

    /// Data does not match the declared schema.
    #[error("schema mismatch in `{path}`: {detail}")]
    Schema { path: String, detail: String },

    /// A shard's bytes no longer match the checksum recorded when it was written.
    #[error("checksum mismatch for `{path}`: recorded {expected}, found {found}")]
    Checksum {
        path: String,
        expected: String,
        found: String,
    },

    /// Another run holds the root's lease.
    #[error(
        "root `{root}` is locked by {holder} (lease expires {expires}); retry later or pass --wait"
    )]
    LeaseHeld {
        root: String,
        holder: String,
        expires: String,
    },

    /// This run lost its lease (it expired and another run took over).
    #[error("lease on `{root}` was lost: {reason}")]
    LeaseLost { root: String, reason: String },

    /// A stage's input has no committed version yet.
    #[error("stage `{stage}`: input `{input}` has no committed version; run it first")]
    InputMissing { stage: String, input: String },

    /// Bad user data: the file (or object), the field and what was wrong.
    #[error("{file}: {field}: {reason}")]
    Input {
        file: String,
        field: String,
        reason: String,
    },

    /// A stage kind failed for a reason of its own.
    #[error("stage `{stage}`: {reason}")]
    Stage { stage: String, reason: String },

    /// The burn models or training loops failed.
    #[error(transparent)]
    Nn(#[from] crate::nn::NnError),

    /// A polars query failed.
    #[error("query: {0}")]
    Query(#[from] polars::error::PolarsError),

    /// Image encoding or decoding failed.
    #[error("image `{what}`: {source}")]
    Image {
        what: String,
        #[source]
        source: image::ImageError,
    },
}

impl Error {
    /// Shorthand for a storage error.
    pub fn storage(
        op: &'static str,
        path: impl std::fmt::Display,
        source: object_store::Error,
    ) -> Self {
        Error::Storage {
            op,
            path: path.to_string(),
            source,
        }
    }

    /// Shorthand for a stage-specific failure.
    pub fn stage(stage: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Stage {
            stage: stage.into(),
            reason: reason.into(),
        }
    }
}
