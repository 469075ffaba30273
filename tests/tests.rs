//! The integration-test binary: one module per area, shared fixtures in `util`.

mod util;

mod cli;
mod distributed;
mod e2e;
mod ingest;
mod runner;
mod storage;
