//! The stage-kind interface, the [`Registry`] type, and the S+U driver kinds (one module each:
//! `train-refiner`, `refine`, `train-estimator`, `score`, `report`), which work on any domain's
//! image dataset. Domain kinds (generators, ingesters) live in [`crate::domains`]; the list of
//! built-in kinds is [`crate::registry`].
//!
//! A kind declares its params, its inputs, its output schema and a code version (part of the
//! fingerprint: bump it when the kind's output changes for the same params). The runner asks it
//! to split its work into units ([`StageKind::plan`]) — each unit writes at most one shard — and
//! runs units one by one ([`StageKind::run_unit`]), so a stage resumes unit by unit and can be
//! spread over workers. A plan must be a pure function of params and inputs. Kinds whose units
//! are worth overlapping (refine) also say how many units to fetch ahead
//! ([`StageKind::read_ahead`], [`StageKind::prepare`]) and on how many lanes to run them
//! ([`StageKind::lanes`], one per device).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::manifest::{Committed, Skipped};
use crate::params::{ParamSpec, Params};
use crate::schema::{self, DeclaredSchema};
use crate::shards::{ShardInfo, ShardWriter};
use crate::storage::Root;

pub mod common;
pub mod judge;
pub mod refine;
pub mod report;
pub mod score;
pub mod train_estimator;
pub mod train_refiner;

/// What an input role accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// The name of another stage in the pipeline.
    Stage,
    /// A path or URL outside the run root.
    Location,
}

/// One declared input of a kind.
#[derive(Debug, Clone)]
pub struct InputSpec {
    /// Key in the stage's `inputs` table.
    pub role: &'static str,
    /// What it accepts.
    pub kind: InputKind,
    /// Whether the pipeline must set it.
    pub required: bool,
    /// One line for docs.
    pub doc: &'static str,
}

/// A resolved input handed to a kind.
#[derive(Debug, Clone)]
pub enum ResolvedInput {
    /// Another stage's latest committed version.
    Stage {
        /// The stage's name.
        stage: String,
        /// Its manifest (boxed: a manifest is large beside the other variant).
        committed: Box<Committed>,
    },
    /// An external location, opened.
    Location {
        /// The location as written (credentials stripped).
        location: String,
        /// The opened location.
        root: Root,
    },
}

/// One unit of work: writes at most one shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitSpec {
    /// Position in the plan; names the shard (`part-{index:05}.parquet`).
    pub index: usize,
    /// Kind-specific description (row range, input files, input shard…).
    pub spec: serde_json::Value,
}

/// What a kind sees while planning and running.
pub struct StageCtx<'a> {
    /// Stage name.
    pub stage: &'a str,
    /// Validated params.
    pub params: &'a Params,
    /// Resolved inputs by role.
    pub inputs: &'a BTreeMap<String, ResolvedInput>,
    /// The run root.
    pub root: &'a Root,
    /// Folder of the version being written, relative to the root.
    pub out_prefix: &'a str,
}

impl StageCtx<'_> {
    /// The committed manifest of a stage input.
    pub fn stage_input(&self, role: &str) -> Result<&Committed> {
        match self.inputs.get(role) {
            Some(ResolvedInput::Stage { committed, .. }) => Ok(committed),
            _ => Err(Error::stage(
                self.stage,
                format!("input `{role}` must name a stage"),
            )),
        }
    }

    /// The opened root of a location input.
    pub fn location_input(&self, role: &str) -> Result<&Root> {
        match self.inputs.get(role) {
            Some(ResolvedInput::Location { root, .. }) => Ok(root),
            _ => Err(Error::stage(
                self.stage,
                format!("input `{role}` must be a path or URL"),
            )),
        }
    }

    /// A scratch folder for this version (e.g. training checkpoints) that survives a crash and
    /// is reused by a resumed attempt with the same fingerprint.
    pub fn scratch(&self) -> Root {
        self.root.sub(&format!("{}/_scratch", self.out_prefix))
    }

    /// Error helper naming this stage.
    pub fn err(&self, reason: impl Into<String>) -> Error {
        Error::stage(self.stage, reason)
    }
}

/// Where a unit writes its rows and artifacts.
pub struct UnitOutput<'a> {
    root: &'a Root,
    prefix: &'a str,
    index: usize,
    declared: &'a DeclaredSchema,
    writer: Option<ShardWriter>,
    pub(crate) artifacts: Vec<ShardInfo>,
    pub(crate) skipped: Vec<Skipped>,
}

impl<'a> UnitOutput<'a> {
    pub(crate) fn new(
        root: &'a Root,
        prefix: &'a str,
        index: usize,
        declared: &'a DeclaredSchema,
    ) -> Self {
        UnitOutput {
            root,
            prefix,
            index,
            declared,
            writer: None,
            artifacts: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// Relative path of this unit's shard.
    pub fn shard_path(&self) -> String {
        format!("{}/part-{:05}.parquet", self.prefix, self.index)
    }

    /// Append rows to this unit's shard (created on first write).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.writer.is_none() {
            self.writer = Some(ShardWriter::create(
                self.root,
                &self.shard_path(),
                self.declared,
            )?);
        }
        match self.writer.as_mut() {
            Some(w) => w.write(batch),
            None => Ok(()),
        }
    }

    /// Store a non-tabular output under `_artifacts/NAME` (atomic put).
    pub fn artifact(&mut self, name: &str, bytes: impl Into<Bytes>) -> Result<()> {
        let bytes: Bytes = bytes.into();
        let rel = format!("{}/_artifacts/{name}", self.prefix);
        let info = ShardInfo {
            path: rel.clone(),
            rows: 0,
            bytes: bytes.len() as u64,
            checksum: crate::shards::checksum(&bytes),
        };
        self.root.put(&rel, bytes)?;
        self.artifacts.retain(|a| a.path != rel);
        self.artifacts.push(info);
        Ok(())
    }

    /// Record an input skipped under `on_error = "skip"`.
    pub fn skip(&mut self, input: impl Into<String>, reason: impl Into<String>) {
        self.skipped.push(Skipped {
            input: input.into(),
            reason: reason.into(),
        });
    }

    /// Abort the shard's upload, if one was started (a failed or stopped unit).
    pub(crate) fn abort(self) {
        if let Some(w) = self.writer {
            w.abort();
        }
    }

    /// Finish the shard (if any rows were written).
    pub(crate) fn finish(self) -> Result<(Option<ShardInfo>, Vec<ShardInfo>, Vec<Skipped>)> {
        let shard = match self.writer {
            Some(w) => Some(w.finish()?),
            None => None,
        };
        Ok((shard, self.artifacts, self.skipped))
    }
}

/// A stage kind. Implementations live one per module in `src/stages/`.
pub trait StageKind: Send + Sync {
    /// The `kind` string used in pipelines.
    fn name(&self) -> &'static str;
    /// One line describing the kind.
    fn about(&self) -> &'static str;
    /// Bump when the output changes for the same params and inputs.
    fn code_version(&self) -> &'static str;
    /// Declared params.
    fn params(&self) -> &'static [ParamSpec];
    /// Declared inputs.
    fn inputs(&self) -> &'static [InputSpec];
    /// Name of the output schema in `schemas/` (for kinds whose schema depends on their input
    /// or data, what [`StageKind::output_schema`] builds on, described in its docs).
    fn schema(&self) -> &'static str;
    /// The schema this stage's shards are written with, once its plan is known. Default: the
    /// file named by [`StageKind::schema`]. Kinds whose columns come from the data (an image
    /// folder's labels, `refine` carrying its input's columns) build it here.
    fn output_schema(&self, _ctx: &StageCtx, _units: &[UnitSpec]) -> Result<DeclaredSchema> {
        schema::get(self.schema()).cloned()
    }
    /// Split the work into units; must be deterministic for the same params and inputs.
    fn plan(&self, ctx: &StageCtx) -> Result<Vec<UnitSpec>>;
    /// Run one unit.
    fn run_unit(&self, ctx: &StageCtx, unit: &UnitSpec, out: &mut UnitOutput) -> Result<()>;
    /// Whether the units are worth spreading over workers (array jobs); single-unit kinds say no.
    fn splittable(&self) -> bool {
        false
    }
    /// How many units the runner prepares ahead of the one running (bounded read-ahead, on a
    /// separate thread). 0 (the default) runs units strictly one after another with
    /// [`StageKind::run_unit`].
    fn read_ahead(&self, _ctx: &StageCtx) -> Result<usize> {
        Ok(0)
    }
    /// Units run at once, each on its own lane (e.g. one per device), fed from the one read-ahead
    /// queue. Default 1.
    fn lanes(&self, _ctx: &StageCtx) -> Result<usize> {
        Ok(1)
    }
    /// Fetch and decode a unit's input (I/O-bound work the runner overlaps with earlier units).
    fn prepare(&self, _ctx: &StageCtx, _unit: &UnitSpec) -> Result<PreparedInput> {
        Ok(Box::new(()))
    }
    /// Run a unit on `lane` with what [`StageKind::prepare`] returned. Default: `run_unit`.
    fn run_prepared(
        &self,
        ctx: &StageCtx,
        unit: &UnitSpec,
        _prepared: PreparedInput,
        _lane: usize,
        out: &mut UnitOutput,
    ) -> Result<()> {
        self.run_unit(ctx, unit, out)
    }
}

/// A unit's input fetched ahead of time by [`StageKind::prepare`] (the kind downcasts it).
pub type PreparedInput = Box<dyn std::any::Any + Send>;

/// The set of kinds a pipeline may use.
#[derive(Clone)]
pub struct Registry {
    kinds: Vec<Arc<dyn StageKind>>,
}

impl Registry {
    /// A registry of exactly these kinds (the built-in set is [`crate::registry::builtin`]).
    pub fn new(kinds: Vec<Arc<dyn StageKind>>) -> Registry {
        Registry { kinds }
    }

    /// Add a kind (tests register their own).
    pub fn with(mut self, kind: Arc<dyn StageKind>) -> Registry {
        self.kinds.retain(|k| k.name() != kind.name());
        self.kinds.push(kind);
        self
    }

    /// Find a kind by name.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn StageKind>> {
        self.kinds.iter().find(|k| k.name() == name)
    }

    /// All kind names.
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.name()).collect()
    }

    /// All kinds.
    pub fn all(&self) -> &[Arc<dyn StageKind>] {
        &self.kinds
    }
}
