//! The generic image domain: any folder of images ([`ingest`], kind `ingest-images`) and the
//! built-in procedural shapes ([`shapes`], kind `generate-shapes` in [`generate`]), both in the
//! common sample layout (`schemas/image_sample.json`) with their label columns after it.
//! Their labels use the generic tasks (`classification`, `regression`; [`crate::task`]).

pub mod generate;
pub mod ingest;
pub mod shapes;
