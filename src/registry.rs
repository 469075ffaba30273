//! The built-in stage kinds and tasks: the one list a new domain adds its kinds to.
//!
//! Adding a domain: a folder under `src/domains/` with its kinds (and, if it needs a task the
//! project does not have, its [`crate::task::Task`]), one `pub mod` line in
//! `src/domains/mod.rs`, and its kinds listed here.

use std::sync::Arc;

use crate::domains::{eyes, hands, images};
use crate::stages::{self, Registry};
use crate::task::Tasks;

/// The tasks estimators can be trained for.
pub fn tasks() -> Tasks {
    Tasks::new(vec![
        Arc::new(eyes::task::Gaze),
        Arc::new(hands::task::HandPose),
        Arc::new(crate::task::Classification),
        Arc::new(crate::task::Regression),
    ])
}

/// Every built-in kind.
pub fn builtin() -> Registry {
    let tasks = tasks();
    Registry::new(vec![
        // Eye gaze (the paper's first experiment).
        Arc::new(eyes::generate::GenerateEyes),
        Arc::new(eyes::ingest::IngestUnityEyes),
        Arc::new(eyes::ingest::IngestMpiiGaze),
        // Hand pose on depth (the paper's second experiment).
        Arc::new(hands::generate::GenerateHands),
        Arc::new(hands::ingest::IngestNyu),
        // Any image folder, and the built-in procedural shapes.
        Arc::new(images::ingest::IngestImages),
        Arc::new(images::generate::GenerateShapes),
        // The S+U drivers, on any domain's dataset.
        Arc::new(stages::train_refiner::TrainRefiner),
        Arc::new(stages::refine::Refine::default()),
        Arc::new(stages::train_estimator::TrainEstimator::new(tasks.clone())),
        Arc::new(stages::score::Score::new(tasks.clone())),
        Arc::new(stages::judge::Judge::new(tasks.clone())),
        Arc::new(stages::report::Report::new(tasks)),
    ])
}
