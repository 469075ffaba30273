//! Pipeline definitions: `pipelines/*.toml` → a validated [`Pipeline`] in dependency order.
//!
//! ```toml
//! name = "eye-gaze-demo"
//! root = "./runs/eye-gaze-demo"      # optional; --root overrides
//!
//! [stages.synthetic]
//! kind = "generate-eyes"
//! params = { domain = "synthetic", rows = 2000 }
//!
//! [stages.refiner]
//! kind = "train-refiner"
//! inputs = { synthetic = "synthetic", real = "real" }   # stage names, or paths/URLs
//! ```
//! Everything is checked before anything runs; errors name the stage and the key.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Deserialize;

use crate::params::{ParamProblem, Params};
use crate::stages::{InputKind, Registry, StageKind};
use crate::storage::is_location;

pub use crate::error::PipelineError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    name: String,
    #[serde(default)]
    root: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    stages: BTreeMap<String, RawStage>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    kind: String,
    #[serde(default)]
    params: toml::Table,
    #[serde(default)]
    inputs: BTreeMap<String, String>,
}

/// A stage input after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Another stage of the pipeline.
    Stage(String),
    /// A path or URL.
    Location(String),
}

/// Apply one `STAGE.PARAM=VALUE` override to the raw pipeline.
fn apply_override(raw: &mut RawPipeline, text: &str) -> Result<(), PipelineError> {
    let bad = |reason: &str| PipelineError::BadOverride {
        text: text.to_string(),
        reason: reason.to_string(),
    };
    let (path, value) = text
        .split_once('=')
        .ok_or_else(|| bad("expected STAGE.PARAM=VALUE"))?;
    let (stage, key) = path
        .trim()
        .split_once('.')
        .ok_or_else(|| bad("expected STAGE.PARAM=VALUE"))?;
    let known = raw.stages.keys().cloned().collect::<Vec<_>>().join(", ");
    let rs = raw
        .stages
        .get_mut(stage)
        .ok_or_else(|| bad(&format!("no stage `{stage}` (stages: {known})")))?;
    let value = value.trim();
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    rs.params.insert(key.to_string(), parsed);
    Ok(())
}

/// A validated stage.
#[derive(Clone)]
pub struct Stage {
    /// Name (the TOML table key).
    pub name: String,
    /// Its kind.
    pub kind: Arc<dyn StageKind>,
    /// Validated params.
    pub params: Params,
    /// Inputs by role.
    pub inputs: BTreeMap<String, Input>,
}

impl Stage {
    /// Names of the stages this one reads.
    pub fn upstream(&self) -> impl Iterator<Item = &str> {
        self.inputs.values().filter_map(|i| match i {
            Input::Stage(s) => Some(s.as_str()),
            Input::Location(_) => None,
        })
    }
}

/// A validated pipeline; `stages` is in dependency order (ties by name).
#[derive(Clone)]
pub struct Pipeline {
    /// Pipeline name.
    pub name: String,
    /// Root from the file, if set.
    pub root: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Stages in dependency order.
    pub stages: Vec<Stage>,
}

impl Pipeline {
    /// Read and validate a pipeline file.
    pub fn load(path: &std::path::Path, registry: &Registry) -> Result<Pipeline, PipelineError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PipelineError::Read {
            file: file.clone(),
            reason: e.to_string(),
        })?;
        Pipeline::parse(&text, &file, registry)
    }

    /// Validate a pipeline from TOML text (`file` is used in messages).
    pub fn parse(text: &str, file: &str, registry: &Registry) -> Result<Pipeline, PipelineError> {
        Pipeline::parse_with(text, file, registry, &[])
    }

    /// [`Pipeline::load`] with param overrides `STAGE.PARAM=VALUE` applied before validation
    /// (the CLI's `--set`). VALUE is read as a TOML value (`3`, `0.5`, `true`, `["cpu"]`,
    /// `{ blur = 0.2 }`), else taken as a string.
    pub fn load_with(
        path: &std::path::Path,
        registry: &Registry,
        overrides: &[String],
    ) -> Result<Pipeline, PipelineError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PipelineError::Read {
            file: file.clone(),
            reason: e.to_string(),
        })?;
        Pipeline::parse_with(&text, &file, registry, overrides)
    }

    /// [`Pipeline::parse`] with overrides (see [`Pipeline::load_with`]).
    pub fn parse_with(
        text: &str,
        file: &str,
        registry: &Registry,
        overrides: &[String],
    ) -> Result<Pipeline, PipelineError> {
        let mut raw: RawPipeline = toml::from_str(text).map_err(|e| PipelineError::Parse {
            file: file.to_string(),
            reason: e.to_string(),
        })?;
        for o in overrides {
            apply_override(&mut raw, o)?;
        }
        check_name("pipeline", &raw.name)?;
        for name in raw.stages.keys() {
            check_name("stage", name)?;
        }
        let mut stages = BTreeMap::new();
        for (name, rs) in &raw.stages {
            stages.insert(
                name.clone(),
                validate_stage(name, rs, &raw.stages, registry)?,
            );
        }
        let order = topo_order(&stages)?;
        let stages = order
            .into_iter()
            .filter_map(|n| stages.remove(&n))
            .collect();
        Ok(Pipeline {
            name: raw.name,
            root: raw.root,
            description: raw.description,
            stages,
        })
    }

    /// A stage by name.
    pub fn stage(&self, name: &str) -> Result<&Stage, PipelineError> {
        self.stages
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| PipelineError::NoSuchStage(name.to_string()))
    }

    /// `names` and every stage downstream of them, in dependency order.
    pub fn downstream_of(&self, names: &[String]) -> Result<Vec<String>, PipelineError> {
        let mut set: BTreeSet<String> = BTreeSet::new();
        for n in names {
            set.insert(self.stage(n)?.name.clone());
        }
        for s in &self.stages {
            if s.upstream().any(|u| set.contains(u)) {
                set.insert(s.name.clone());
            }
        }
        Ok(self
            .stages
            .iter()
            .filter(|s| set.contains(&s.name))
            .map(|s| s.name.clone())
            .collect())
    }
}

fn validate_stage(
    name: &str,
    rs: &RawStage,
    all: &BTreeMap<String, RawStage>,
    registry: &Registry,
) -> Result<Stage, PipelineError> {
    let kind = registry
        .get(&rs.kind)
        .ok_or_else(|| PipelineError::UnknownKind {
            stage: name.into(),
            kind: rs.kind.clone(),
            known: registry.names().join(", "),
        })?;
    let params = Params::resolve(name, kind.params(), &rs.params).map_err(|p| match p {
        ParamProblem::Unknown { key, known } => PipelineError::UnknownParam {
            stage: name.into(),
            key,
            known: known.join(", "),
        },
        ParamProblem::Mistyped { key, reason } => PipelineError::BadParam {
            stage: name.into(),
            key,
            reason,
        },
        ParamProblem::Missing { key } => PipelineError::MissingParam {
            stage: name.into(),
            key,
        },
    })?;
    let specs = kind.inputs();
    let mut inputs = BTreeMap::new();
    for (role, value) in &rs.inputs {
        let spec =
            specs
                .iter()
                .find(|s| s.role == role)
                .ok_or_else(|| PipelineError::UnknownInput {
                    stage: name.into(),
                    role: role.clone(),
                    known: specs.iter().map(|s| s.role).collect::<Vec<_>>().join(", "),
                })?;
        let input = match (spec.kind, is_location(value)) {
            (InputKind::Stage, false) => {
                if !all.contains_key(value) {
                    return Err(PipelineError::UnknownStage {
                        stage: name.into(),
                        role: role.clone(),
                        target: value.clone(),
                    });
                }
                Input::Stage(value.clone())
            }
            (InputKind::Location, true) => Input::Location(value.clone()),
            (InputKind::Stage, true) => {
                return Err(PipelineError::InputType {
                    stage: name.into(),
                    role: role.clone(),
                    expected: "a stage name",
                    value: value.clone(),
                });
            }
            (InputKind::Location, false) => {
                return Err(PipelineError::InputType {
                    stage: name.into(),
                    role: role.clone(),
                    expected: "a path or URL (./dir, /dir, s3://…)",
                    value: value.clone(),
                });
            }
        };
        inputs.insert(role.clone(), input);
    }
    if let Some(missing) = specs
        .iter()
        .find(|s| s.required && !inputs.contains_key(s.role))
    {
        return Err(PipelineError::MissingInput {
            stage: name.into(),
            role: missing.role.into(),
        });
    }
    Ok(Stage {
        name: name.to_string(),
        kind: kind.clone(),
        params,
        inputs,
    })
}

/// Pipeline and stage names become folder names, job names and log file names: letters, digits,
/// `_`, `.` and `-` only, not starting with `_` (reserved for the root's own folders) or `.`.
fn check_name(what: &'static str, name: &str) -> Result<(), PipelineError> {
    let bad = |reason: &str| PipelineError::BadName {
        what,
        name: name.escape_debug().to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(bad(&format!(
            "`{}` is not allowed (use letters, digits, `_`, `.`, `-`)",
            c.escape_debug()
        )));
    }
    if name.starts_with('_') || name.starts_with('.') {
        return Err(bad("must not start with `_` or `.`"));
    }
    Ok(())
}

/// Kahn's algorithm, ties broken by name; a leftover set is a cycle.
fn topo_order(stages: &BTreeMap<String, Stage>) -> Result<Vec<String>, PipelineError> {
    let mut done: Vec<String> = Vec::new();
    let mut left: BTreeSet<&str> = stages.keys().map(String::as_str).collect();
    while !left.is_empty() {
        let ready: Vec<&str> = left
            .iter()
            .copied()
            .filter(|n| stages[*n].upstream().all(|u| done.iter().any(|d| d == u)))
            .collect();
        if ready.is_empty() {
            return Err(PipelineError::Cycle(
                left.iter().copied().collect::<Vec<_>>().join(" → "),
            ));
        }
        for n in ready {
            left.remove(n);
            done.push(n.to_string());
        }
    }
    Ok(done)
}
