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
    Pipeline(#[from] PipelineError),

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

    /// A stored object no longer matches the size or sha256 its manifest (or unit record)
    /// recorded: it was changed, truncated or removed after it was committed.
    #[error(
        "`{path}` is damaged: {detail}; rebuild its version with `simgan run … --verify` (or check it with `simgan verify`)"
    )]
    Damaged { path: String, detail: String },

    /// A manifest that cannot be trusted: a shard or artifact path outside its version folder,
    /// or a body whose stage or version differs from where it is stored.
    #[error("manifest `{manifest}` refused: {reason}")]
    BadManifest { manifest: String, reason: String },

    /// The version a writer was writing has been committed (by another writer, or earlier).
    #[error("stage `{stage}`: version {version} is already committed ({manifest})")]
    AlreadyCommitted {
        stage: String,
        version: u64,
        manifest: String,
    },

    /// Another writer replaced this writer's attempt at a version (other params, a new run); this
    /// writer stopped without writing into the version folder again.
    #[error(
        "stage `{stage}`: the attempt writing `{prefix}` was replaced by another writer ({reason}); this writer stopped"
    )]
    AttemptReplaced {
        stage: String,
        prefix: String,
        reason: String,
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

    /// The process was asked to stop (SIGTERM, SIGINT); finished units are recorded for the
    /// resume.
    #[error(
        "stage `{stage}`: stopped by signal {signal}; finished units are kept, rerun to resume"
    )]
    Interrupted { signal: i32, stage: String },

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

/// Why a pipeline definition is invalid.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The file could not be read.
    #[error("cannot read pipeline `{file}`: {reason}")]
    Read { file: String, reason: String },
    /// The TOML is malformed or has unknown top-level keys.
    #[error("pipeline `{file}`: {reason}")]
    Parse { file: String, reason: String },
    /// A stage uses a kind that does not exist.
    #[error("stage `{stage}`: unknown kind `{kind}` (known: {known})")]
    UnknownKind {
        stage: String,
        kind: String,
        known: String,
    },
    /// A `--set` override is malformed or names no stage.
    #[error("override `{text}`: {reason}")]
    BadOverride { text: String, reason: String },
    /// A stage sets a param its kind does not declare.
    #[error("stage `{stage}`: unknown param `{key}` (known: {known})")]
    UnknownParam {
        stage: String,
        key: String,
        known: String,
    },
    /// A param has the wrong type or is out of range.
    #[error("stage `{stage}`: param `{key}`: {reason}")]
    BadParam {
        stage: String,
        key: String,
        reason: String,
    },
    /// A required param is absent.
    #[error("stage `{stage}`: missing required param `{key}`")]
    MissingParam { stage: String, key: String },
    /// A stage sets an input role its kind does not declare.
    #[error("stage `{stage}`: unknown input `{role}` (known: {known})")]
    UnknownInput {
        stage: String,
        role: String,
        known: String,
    },
    /// A required input is absent.
    #[error("stage `{stage}`: missing required input `{role}`")]
    MissingInput { stage: String, role: String },
    /// An input names a stage that is not in the pipeline.
    #[error("stage `{stage}`: input `{role}` refers to unknown stage `{target}`")]
    UnknownStage {
        stage: String,
        role: String,
        target: String,
    },
    /// An input is a location where a stage is expected, or the reverse.
    #[error("stage `{stage}`: input `{role}` must be {expected}, got `{value}`")]
    InputType {
        stage: String,
        role: String,
        expected: &'static str,
        value: String,
    },
    /// A pipeline or stage name that cannot be a folder, job or file name.
    #[error("{what} name `{name}`: {reason}")]
    BadName {
        what: &'static str,
        name: String,
        reason: String,
    },
    /// The stages' inputs form a cycle.
    #[error("cycle between stages: {0}")]
    Cycle(String),
    /// `--stage`/`--from` named a stage that is not in the pipeline.
    #[error("no stage `{0}` in this pipeline")]
    NoSuchStage(String),
}
