//! simgan — S+U learning (Shrivastava et al., CVPR 2017) as staged, restartable batch jobs on
//! object storage.
//!
//! The crate is a library with a thin binary (`src/main.rs`). Layout:
//! - [`storage`]: run roots on object storage (local, memory, S3, GCS, Azure) and create-if-absent.
//! - [`pipeline`] and [`params`]: pipeline TOML → validated plan.
//! - [`manifest`], [`shards`], [`schema`]: the on-storage format of a stage version; [`verify`]:
//!   stored versions checked against their manifests.
//! - [`lease`]: one run per root at a time.
//! - [`runner`]: staleness, execution, resume, commit.
//! - [`stages`]: the stage-kind interface and the S+U drivers (refiner, refine, estimators,
//!   score, report), which work on any domain's dataset; [`registry`]: the built-in kinds.
//! - [`sample`]: the sample layout every image dataset shares; [`task`]: estimator tasks
//!   (gaze, classification, regression); [`mat`]: the MATLAB v5 reader the ingesters share.
//! - [`domains`]: one folder per domain — [`domains::eyes`] (generator, UnityEyes, MPIIGaze, the
//!   gaze task), [`domains::hands`] (procedural hands, NYU, the hand-pose task),
//!   [`domains::images`] (image folders, procedural shapes).
//! - [`nn`]: the burn models and loops; [`judge`]: the realism judge (a fresh classifier on
//!   held-out images); [`imagestats`]: label-free pixel statistics; [`charts`]: SVG charts;
//!   [`turing`]: the visual Turing test page; [`jpeg`]: grey regions of JPEGs (UnityEyes ingest);
//!   [`resample`]: `image`'s triangle resize for grey images, exactly and fast.
//!
//! The crate error ([`error`]) sits at the bottom: it depends on no stage, pipeline or registry.

pub mod bench;
pub mod charts;
pub mod cli;
pub mod dataset;
pub mod domains;
pub mod error;
pub mod imagestats;
pub mod jpeg;
pub mod judge;
pub mod lease;
pub mod manifest;
pub mod mat;
pub mod nn;
pub mod params;
pub mod pipeline;
pub mod query;
pub mod registry;
pub mod resample;
pub mod runner;
pub mod sample;
pub mod schema;
pub mod shards;
pub mod stages;
pub mod storage;
pub mod submit;
pub mod task;
pub mod turing;
pub mod verify;

pub use error::{Error, Result};
