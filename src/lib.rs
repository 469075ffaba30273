//! simgan — S+U learning (Shrivastava et al., CVPR 2017) as staged, restartable batch jobs on
//! object storage.
//!
//! The crate is a library with a thin binary (`src/main.rs`). Layout:
//! - [`storage`]: run roots on object storage (local, memory, S3, GCS, Azure) and create-if-absent.
//! - [`pipeline`] and [`params`]: pipeline TOML → validated plan.
//! - [`manifest`], [`shards`], [`schema`]: the on-storage format of a stage version.
//! - [`lease`]: one run per root at a time.
//! - [`runner`]: staleness, execution, resume, commit.
//! - [`stages`]: the stage kinds (one module each) and their registry.
//! - [`eyes`]: eye-gaze domain (generator, UnityEyes, MPIIGaze); [`nn`]: the burn models and loops.

pub mod bench;
pub mod cli;
pub mod dataset;
pub mod error;
pub mod eyes;
pub mod lease;
pub mod manifest;
pub mod nn;
pub mod params;
pub mod pipeline;
pub mod query;
pub mod runner;
pub mod schema;
pub mod shards;
pub mod stages;
pub mod storage;
pub mod submit;

pub use error::{Error, Result};
