//! Domains: one folder each, owning its sample schema, its stage kinds (generators, ingesters)
//! and, where it needs one, its estimator task. The S+U stages in [`crate::stages`] work on any
//! domain's dataset; [`crate::registry`] lists every domain's kinds.
//!
//! - [`eyes`]: eye gaze — procedural eyes, UnityEyes, MPIIGaze; the `gaze` task.
//! - [`hands`]: hand pose on depth — the procedural hand; the `hand-pose` task.
//! - [`images`]: any image folder (`ingest-images`) and the built-in procedural shapes
//!   (`generate-shapes`); classification and regression labels.

pub mod eyes;
pub mod hands;
pub mod images;
