//! The integration-test binary: one module per area, shared fixtures in `util`.

mod util;

mod cli;
mod distributed;
mod e2e;
mod e2e_hands;
mod e2e_images;
mod faults;
mod gpu_check;
mod ingest;
mod ingest_images;
mod ingest_nyu;
mod readme;
mod runner;
mod storage;
mod trust;
