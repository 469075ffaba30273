//! Backends and devices: which burn backend a stage runs on, chosen at run time from a string.
//!
//! burn 0.21 picks the backend by *type* (`Refiner<B>`), so a device string has to be turned
//! into a monomorphised call. Stage code implements [`BackendJob`] once, generic over
//! `B: AutodiffBackend`, and [`run_on`] instantiates it for the backend the [`DeviceSpec`]
//! names:
//!
//! - `"cpu"` → [`CpuAutodiffBackend`] = `Autodiff<Flex>` (burn-flex, pure Rust, the fastest
//!   burn CPU backend on these convolutions; see REFERENCE.md).
//! - `"cuda"` / `"cuda:N"` → `Autodiff<Cuda>` on GPU `N` (default 0), only with the crate
//!   feature `cuda`; without it [`run_on`] returns [`NnError::CudaNotCompiled`].
//!
//! Inference-only code can use `B::InnerBackend` inside the job (or `model.valid()`).

use std::fmt;
use std::str::FromStr;

use std::sync::Mutex;

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

use super::NnError;

/// burn-flex, the CPU backend (no autodiff): inference on the CPU.
pub type CpuBackend = Flex;
/// The CPU backend with autodiff: training on the CPU.
pub type CpuAutodiffBackend = Autodiff<Flex>;
/// The CPU device (burn-flex has exactly one).
pub type CpuDevice = burn::backend::flex::FlexDevice;

/// burn-cuda (cubecl-cuda), no autodiff.
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda;
/// burn-cuda with autodiff: training on a GPU.
#[cfg(feature = "cuda")]
pub type CudaAutodiffBackend = Autodiff<burn::backend::Cuda>;
/// A CUDA device (`index` = GPU ordinal).
#[cfg(feature = "cuda")]
pub type CudaDevice = burn::backend::cuda::CudaDevice;

/// Where to run: parsed from `"cpu"`, `"cuda"` (= `"cuda:0"`) or `"cuda:N"`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    /// The CPU (burn-flex).
    #[default]
    Cpu,
    /// CUDA GPU with this ordinal.
    Cuda(usize),
}

/// A device string that is not `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad device {input:?}: expected \"cpu\", \"cuda\" or \"cuda:N\"")]
pub struct DeviceSpecError {
    /// The string that failed to parse.
    pub input: String,
}

impl FromStr for DeviceSpec {
    type Err = DeviceSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || DeviceSpecError {
            input: s.to_string(),
        };
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            _ => {
                let idx = t
                    .strip_prefix("cuda:")
                    .or_else(|| t.strip_prefix("gpu:"))
                    .ok_or_else(bad)?;
                idx.parse::<usize>()
                    .map(DeviceSpec::Cuda)
                    .map_err(|_| bad())
            }
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = DeviceSpecError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(d: DeviceSpec) -> String {
        d.to_string()
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl DeviceSpec {
    /// Whether this binary can run on this device (CUDA needs the `cuda` feature).
    pub fn is_available(&self) -> bool {
        match self {
            DeviceSpec::Cpu => true,
            DeviceSpec::Cuda(_) => cfg!(feature = "cuda"),
        }
    }
}

/// Generic code to run on whichever backend a [`DeviceSpec`] selects.
///
/// Rust has no generic closures, so the job is a value with a generic method:
///
/// ```ignore
/// struct Train { cfg: TrainConfig }
/// impl BackendJob for Train {
///     type Output = Result<Vec<u8>, NnError>;
///     fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
///         let mut t = RefinerTrainer::<B>::new(self.cfg, &device)?;
///         /* ... */
///         t.save_checkpoint(false)
///     }
/// }
/// let bytes = run_on(&"cuda:0".parse()?, Train { cfg })??;
/// ```
pub trait BackendJob {
    /// What the job returns.
    type Output;
    /// Run on backend `B` (an autodiff backend; use `B::InnerBackend` for inference).
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output;
}

/// Run `job` on the backend and device named by `spec`, after [`probe`] found the device usable.
///
/// Errors when the device is not compiled in or not usable here, and (CUDA) when the backend
/// panics inside the job: cubecl reports a driver or compiler failure by panicking on its
/// device thread, and that becomes [`NnError::DeviceUnavailable`] naming the device, not a
/// crash. The job's own errors are in its `Output`.
pub fn run_on<J: BackendJob>(spec: &DeviceSpec, job: J) -> Result<J::Output, NnError> {
    probe(spec)?;
    match spec {
        DeviceSpec::Cpu => Ok(job.run::<CpuAutodiffBackend>(CpuDevice::default())),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(index) => {
            let device = CudaDevice { index: *index };
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                job.run::<CudaAutodiffBackend>(device)
            }))
            .map_err(|payload| NnError::DeviceUnavailable {
                spec: spec.to_string(),
                reason: format!("the CUDA backend failed: {}", panic_message(&payload)),
            })
        }
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => Err(NnError::CudaNotCompiled {
            spec: spec.to_string(),
        }),
    }
}

/// The text of a caught panic.
#[cfg(feature = "cuda")]
fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Probes already made in this process (a device is checked once, not once per batch).
static PROBED: Mutex<Vec<(DeviceSpec, Result<String, String>)>> = Mutex::new(Vec::new());

/// Check that `spec` can run here, before any work, and describe it in one line: the CPU
/// backend and its threads; for CUDA the GPU's name, compute capability, memory, driver and
/// NVRTC versions. A CUDA device fails with [`NnError::DeviceUnavailable`] naming what is
/// missing — the driver library (`libcuda.so`), NVRTC (`libnvrtc.so`), or the GPU index — found
/// by asking the driver directly, without starting the backend (whose own failures are
/// panics). Results are cached per process.
pub fn probe(spec: &DeviceSpec) -> Result<String, NnError> {
    let mut cache = PROBED.lock().unwrap_or_else(|p| p.into_inner());
    let result = match cache.iter().find(|(s, _)| s == spec) {
        Some((_, r)) => r.clone(),
        None => {
            let r = match spec {
                DeviceSpec::Cpu => Ok(format!(
                    "cpu: burn-flex, {} threads",
                    rayon::current_num_threads()
                )),
                #[cfg(feature = "cuda")]
                DeviceSpec::Cuda(index) => probe_cuda(*index),
                #[cfg(not(feature = "cuda"))]
                DeviceSpec::Cuda(_) => {
                    return Err(NnError::CudaNotCompiled {
                        spec: spec.to_string(),
                    });
                }
            };
            cache.push((*spec, r.clone()));
            r
        }
    };
    result.map_err(|reason| NnError::DeviceUnavailable {
        spec: spec.to_string(),
        reason,
    })
}

/// The CUDA probe: dynamic-loading checks first (cudarc panics on a missing library), then
/// driver calls that return errors.
#[cfg(feature = "cuda")]
fn probe_cuda(index: usize) -> Result<String, String> {
    use cudarc::driver::{result, sys};
    let driver = |what: &'static str| move |e: result::DriverError| format!("{what}: {e:?}");
    // SAFETY: only tries to open the shared library by its usual names.
    if !unsafe { sys::is_culib_present() } {
        return Err(
            "the NVIDIA driver library (libcuda.so) was not found: no driver on this machine, \
             or the container was started without GPU access"
                .into(),
        );
    }
    // SAFETY: as above, for NVRTC (cubecl compiles its kernels with it at run time).
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(
            "NVRTC (libnvrtc.so, part of the CUDA toolkit) was not found: install the toolkit \
             or add its lib64 folder to LD_LIBRARY_PATH"
                .into(),
        );
    }
    result::init().map_err(driver("cuInit"))?;
    let count = result::device::get_count().map_err(driver("cuDeviceGetCount"))?;
    let count = usize::try_from(count).unwrap_or(0);
    if index >= count {
        return Err(format!(
            "no GPU with index {index}: the driver sees {count} (CUDA_VISIBLE_DEVICES may hide some)"
        ));
    }
    let ordinal = i32::try_from(index).map_err(|_| format!("GPU index {index} is too large"))?;
    let dev = result::device::get(ordinal).map_err(driver("cuDeviceGet"))?;
    let name = result::device::get_name(dev).map_err(driver("cuDeviceGetName"))?;
    use sys::CUdevice_attribute::{
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR as MAJOR,
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR as MINOR,
    };
    // SAFETY: `dev` came from `cuDeviceGet` above.
    let (major, minor, memory) = unsafe {
        (
            result::device::get_attribute(dev, MAJOR).map_err(driver("compute capability"))?,
            result::device::get_attribute(dev, MINOR).map_err(driver("compute capability"))?,
            result::device::total_mem(dev).map_err(driver("cuDeviceTotalMem"))?,
        )
    };
    let mut driver_version = 0;
    // SAFETY: writes one int.
    unsafe { sys::cuDriverGetVersion(&mut driver_version) }
        .result()
        .map_err(driver("cuDriverGetVersion"))?;
    let (mut nv_major, mut nv_minor) = (0, 0);
    // SAFETY: writes two ints.
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut nv_major, &mut nv_minor) }
        .result()
        .map_err(|e| format!("nvrtcVersion: {e:?}"))?;
    Ok(format!(
        "cuda:{index}: {name}, sm_{major}{minor}, {:.0} GiB, driver {}.{}, NVRTC {nv_major}.{nv_minor}",
        memory as f64 / (1u64 << 30) as f64,
        driver_version / 1000,
        driver_version % 1000 / 10
    ))
}

/// Seed the backend's random generator (parameter initialisation, `Tensor::random`).
///
/// burn-flex keeps one process-wide seeded `StdRng`, and burn initialises parameters lazily (on
/// first use), so seeding alone is only deterministic in a single-threaded program. For
/// reproducible models use [`init_seeded`]. Our own randomness (history sampling) uses
/// separately seeded `rand` generators.
pub fn seed<B: Backend>(device: &B::Device, seed: u64) {
    B::seed(device, seed);
}

static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Build a module with parameters drawn from the backend RNG seeded with `seed`, reproducibly:
/// holds a process-wide lock while seeding, building and materialising every (lazily
/// initialised) parameter, so concurrent [`init_seeded`] calls cannot interleave their draws.
/// (Code that draws from the backend RNG without this function can still interfere.)
pub fn init_seeded<B: Backend, M: Module<B>>(
    device: &B::Device,
    seed: u64,
    build: impl FnOnce() -> M,
) -> M {
    // A poisoned lock only means another init panicked; the guarded data is `()`.
    let _guard = INIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    B::seed(device, seed);
    let module = build();
    module.visit(&mut Materialise);
    module
}

/// Touches every float parameter so lazy initialisers run now.
struct Materialise;

impl<B: Backend> ModuleVisitor<B> for Materialise {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

/// Keep glibc's allocator from handing every freed activation back to the kernel.
///
/// A training step allocates and frees tensors of up to ~32 MB (the eye refiner's 64 maps at
/// batch 64); by default glibc serves them with `mmap` or trims the heap after each free, so the
/// next step page-faults the same memory in again (under `perf`, ~9 % of a step was in the
/// kernel, mostly page faults). Raising the mmap and trim thresholds keeps that memory in the
/// heap. Measured with `simgan bench --sections train --width 64 --iters 2`: peak RSS 641 MiB
/// instead of 677–797 MiB; the iteration time changed by less than the run-to-run noise. Call
/// once, before threads start; a no-op on other platforms.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called at startup before other threads.
    unsafe {
        // 32 MiB is glibc's largest allowed mmap threshold on 64-bit.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_strings() {
        assert_eq!("cpu".parse::<DeviceSpec>(), Ok(DeviceSpec::Cpu));
        assert_eq!(" CPU ".parse::<DeviceSpec>(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(3)));
        let err = "cuda:x".parse::<DeviceSpec>().unwrap_err();
        assert_eq!(err.input, "cuda:x");
        assert!(err.to_string().contains("\"cuda:x\""));
        assert!("tpu".parse::<DeviceSpec>().is_err());
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
        let json = serde_json::to_string(&DeviceSpec::Cuda(1)).unwrap();
        assert_eq!(json, "\"cuda:1\"");
        assert_eq!(
            serde_json::from_str::<DeviceSpec>(&json).unwrap(),
            DeviceSpec::Cuda(1)
        );
    }

    struct Sum;
    impl BackendJob for Sum {
        type Output = f32;
        fn run<B: AutodiffBackend>(self, device: B::Device) -> f32 {
            let t = Tensor::<B, 1>::from_floats([1.0, 2.0, 3.0], &device);
            use burn::tensor::ElementConversion;
            t.sum().into_scalar().elem::<f32>()
        }
    }

    #[test]
    fn probe_describes_the_cpu_and_names_a_missing_cuda() {
        let cpu = probe(&DeviceSpec::Cpu).unwrap_or_else(|e| panic!("{e}"));
        assert!(cpu.starts_with("cpu: burn-flex"), "{cpu}");
        let cuda = probe(&DeviceSpec::Cuda(7)).map_err(|e| e.to_string());
        #[cfg(not(feature = "cuda"))]
        assert!(matches!(cuda, Err(e) if e.contains("feature `cuda`")));
        // With the feature, on a machine without that GPU: one line naming what is missing.
        #[cfg(feature = "cuda")]
        if let Err(e) = cuda {
            assert!(e.starts_with("device cuda:7: "), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn runs_generic_job_on_cpu() {
        assert_eq!(run_on(&DeviceSpec::Cpu, Sum).unwrap(), 6.0);
        #[cfg(not(feature = "cuda"))]
        assert!(matches!(
            run_on(&DeviceSpec::Cuda(0), Sum),
            Err(NnError::CudaNotCompiled { .. })
        ));
    }
}
