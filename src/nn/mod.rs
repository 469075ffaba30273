//! The burn side of simgan: networks, losses, the refiner/discriminator training loop, the
//! history buffer of refined images, the gaze estimator, and their checkpoints.
//!
//! Everything here is generic over burn's `Backend` / `AutodiffBackend` so a stage is written
//! once and runs on the CPU (burn-flex) or, with the crate feature `cuda`, on a GPU; see
//! [`backend`] for choosing the device at run time from a string such as `"cpu"` or `"cuda:0"`.
//!
//! - [`backend`]: backend aliases, [`DeviceSpec`], [`run_on`] / [`BackendJob`], seeding.
//! - [`model`]: [`Refiner`], [`Discriminator`], [`GazeNet`] and their configs (paper sizes and
//!   narrow CPU variants).
//! - [`loss`]: local adversarial loss, self-regularisation, discriminator loss and accuracy.
//! - [`history`]: the paper's buffer of earlier refined images.
//! - [`train`]: [`RefinerTrainer`] (the S+U schedule), [`GazeTrainer`], image ↔ tensor helpers,
//!   inference.
//! - [`hourglass`]: the stacked hourglass pose estimator (hands), its heatmap targets, read-out
//!   and trainer.
//! - [`checkpoint`]: trainer state and bare models to and from bytes (safetensors + JSON).
//! - [`bench`]: CPU timing of the full-size eye refiner.
//! - [`device_check`]: one trainer state and image set on the CPU and on a device, compared
//!   and timed (`simgan bench --sections gpu`).
//! - [`backend::probe`]: whether a device can run here, before any work.
//! - [`precision`]: f16/bf16 inference ([`Precision`], [`cast_module`]).
//!
//! Image convention everywhere: `Tensor<B, 4>` shaped `[batch, channels, height, width]`, values
//! in `[-1, 1]` (u8 grey level `v` ↦ `v / 127.5 − 1`).

pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod conv;
pub mod device_check;
pub mod history;
pub mod hourglass;
pub mod loss;
pub mod model;
pub mod precision;
pub mod train;

pub use backend::{
    BackendJob, CpuAutodiffBackend, CpuBackend, CpuDevice, DeviceSpec, DeviceSpecError,
    init_seeded, probe, run_on, seed, tune_allocator,
};
pub use bench::{BenchReport, bench_cpu};
pub use checkpoint::{
    TrainerCheckpoint, load_discriminator, load_gaze_net, load_hourglass, load_refiner,
    safetensors_metadata, save_discriminator, save_gaze_net, save_hourglass, save_refiner,
};
pub use history::HistoryBuffer;
pub use hourglass::{HourglassConfig, HourglassTrainConfig, HourglassTrainer, StackedHourglass};
pub use model::{
    Discriminator, DiscriminatorConfig, GazeNet, GazeNetConfig, Refiner, RefinerConfig,
};
pub use precision::{Precision, cast_module};
pub use train::{
    BatchSource, GazeOptimizer, GazeTrainConfig, GazeTrainer, HeadLoss, Phase, RefinerTrainer,
    StepMetrics, TrainConfig, gray_to_tensor, predict_gaze, predict_raw, refine, refine_images,
    refine_seeded, seeded_noise, tensor_to_gray,
};

/// Errors of the nn module. Structured so callers can match on them; the sources of burn's own
/// errors are kept as the error source.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// A device string did not parse.
    #[error(transparent)]
    DeviceSpec(#[from] DeviceSpecError),
    /// `cuda` was asked for but the crate was built without the `cuda` feature.
    #[error("device {spec:?} needs the crate feature `cuda`; this binary was built without it")]
    CudaNotCompiled {
        /// The device string that asked for CUDA.
        spec: String,
    },
    /// The device cannot be used on this machine (no driver, no such GPU, no NVRTC), found
    /// by [`probe`] before any work; or the backend failed inside (a panic, caught).
    #[error("device {spec}: {reason}")]
    DeviceUnavailable {
        /// The device asked for.
        spec: String,
        /// What is missing or what failed, in one line.
        reason: String,
    },
    /// A batch or image had a shape this code cannot use.
    #[error("shape error in {context}: {message}")]
    Shape {
        /// Which function found the problem.
        context: &'static str,
        /// What was wrong.
        message: String,
    },
    /// A configuration value is unusable.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// Reading tensor values back to the host failed (wrong element type).
    #[error("reading tensor data back to the host: {0:?}")]
    TensorData(burn::tensor::DataError),
    /// Writing or reading safetensors bytes failed.
    #[error("safetensors for {what}")]
    Safetensors {
        /// Which model's weights.
        what: &'static str,
        /// burn-store's error.
        #[source]
        source: burn::store::SafetensorsStoreError,
    },
    /// The safetensors weights did not fit the model built from the stored config.
    #[error("weights for {what} do not match the model: {message}")]
    WeightsMismatch {
        /// Which model's weights.
        what: &'static str,
        /// Missing / unexpected / mismatched tensors.
        message: String,
    },
    /// A burn record (optimiser state) failed to serialise or deserialise.
    #[error("optimiser record for {what}")]
    Record {
        /// Which optimiser.
        what: &'static str,
        /// burn's recorder error.
        #[source]
        source: burn::record::RecorderError,
    },
    /// JSON (configs, checkpoint metadata) failed to serialise or parse.
    #[error("JSON for {what}: {source}")]
    Json {
        /// Which document.
        what: &'static str,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
    /// A checkpoint blob is malformed (bad magic, truncated, missing entry, wrong kind).
    #[error("malformed checkpoint: {0}")]
    Checkpoint(String),
    /// A [`train::BatchSource`] failed to deliver a batch.
    #[error("batch source failed")]
    Source(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<burn::tensor::DataError> for NnError {
    fn from(e: burn::tensor::DataError) -> Self {
        NnError::TensorData(e)
    }
}

/// Result alias for this module.
pub type Result<T, E = NnError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    /// Errors cross threads and convert into `anyhow::Error` in the runner.
    #[test]
    fn error_is_send_sync_static() {
        fn check<T: Send + Sync + 'static + std::error::Error>() {}
        check::<super::NnError>();
        let e: anyhow::Error = super::NnError::InvalidConfig("x".into()).into();
        assert!(e.to_string().contains("invalid config"));
    }
}
