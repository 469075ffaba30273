//! Checkpoints as bytes: the runner stores them on object storage (local or S3), so nothing
//! here touches the file system.
//!
//! **Bare models** ([`save_refiner`], [`save_discriminator`], [`save_gaze_net`]) are one
//! safetensors file each, readable by PyTorch (`safetensors.torch.load`): tensors are named by
//! burn's module paths (`conv_in.weight`, `blocks.0.conv1.weight`, `fc1.weight` …), convolution
//! weights are `[out, in, kh, kw]` and linear weights are stored PyTorch-style `[out, in]`. The
//! model's config is JSON in the safetensors metadata (`simgan.config`, with `simgan.kind`), so
//! the bytes alone rebuild the model ([`load_refiner`] etc.).
//!
//! **Trainer checkpoints** ([`RefinerTrainer::save_checkpoint`],
//! [`GazeTrainer::save_checkpoint`]) are a small archive ([`TrainerCheckpoint`]) of named
//! entries: the config JSON, the bare-model safetensors above, the optimiser state as burn
//! records (named MessagePack), `state.json` (step counter and the parameter-id maps needed to
//! re-key the optimiser state), and optionally the history buffer (`history.f32`, little-endian
//! f32). Without the history entry a resumed run starts with an empty buffer (D then trains on
//! current refined images only until the buffer holds b/2 again).
//!
//! Randomness on resume: the backend is reseeded and the history buffer's generator is seeded
//! from `(seed, step)`, so a resumed run is deterministic given its checkpoint (it is not the
//! same random stream as an uninterrupted run; the weights and optimiser state are exact).

use std::collections::{BTreeMap, HashMap};

use burn::module::{Module, ParamId};
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::NnError;
use super::history::HistoryBuffer;
use super::hourglass::{HourglassConfig, StackedHourglass};
use super::model::{
    Discriminator, DiscriminatorConfig, GazeNet, GazeNetConfig, Refiner, RefinerConfig,
};
use super::train::{
    GazeOptim, GazeTrainConfig, GazeTrainer, RefinerTrainer, TrainConfig, gaze_optim, history_seed,
};

/// Safetensors metadata key holding the model kind.
pub const META_KIND: &str = "simgan.kind";
/// Safetensors metadata key holding the model config JSON.
pub const META_CONFIG: &str = "simgan.config";
/// `simgan.kind` of a refiner.
pub const KIND_REFINER: &str = "refiner";
/// `simgan.kind` of a discriminator.
pub const KIND_DISCRIMINATOR: &str = "discriminator";
/// `simgan.kind` of a gaze net.
pub const KIND_GAZE_NET: &str = "gaze_net";
/// `simgan.kind` of a stacked hourglass.
pub const KIND_HOURGLASS: &str = "hourglass";

/// Archive kind of a [`RefinerTrainer`] checkpoint.
pub const ARCHIVE_REFINER_TRAINER: &str = "refiner_trainer";
/// Archive kind of a [`GazeTrainer`] checkpoint.
pub const ARCHIVE_GAZE_TRAINER: &str = "gaze_trainer";
/// Entry: the training config JSON.
pub const ENTRY_CONFIG: &str = "config.json";
/// Entry: step counter and parameter-id maps.
pub const ENTRY_STATE: &str = "state.json";
/// Entry: the refiner as a bare-model safetensors (see [`load_refiner`]).
pub const ENTRY_REFINER: &str = "refiner.safetensors";
/// Entry: the discriminator as a bare-model safetensors.
pub const ENTRY_DISCRIMINATOR: &str = "discriminator.safetensors";
/// Entry: the gaze net as a bare-model safetensors.
pub const ENTRY_GAZE_NET: &str = "gaze_net.safetensors";
/// Entry: the moving average of the refiner's weights (when `ema_decay > 0`), as a bare-model
/// safetensors.
pub const ENTRY_REFINER_EMA: &str = "refiner_ema.safetensors";
/// Entry: the refiner's Adam state.
pub const ENTRY_OPTIM_REFINER: &str = "optim_refiner.mpk";
/// Entry: the discriminator's Adam state.
pub const ENTRY_OPTIM_DISCRIMINATOR: &str = "optim_discriminator.mpk";
/// Entry: the gaze net's optimiser state.
pub const ENTRY_OPTIM_GAZE: &str = "optim_gaze.mpk";
/// Entry (optional): the history buffer's images, little-endian f32.
pub const ENTRY_HISTORY: &str = "history.f32";

const MAGIC: &[u8; 8] = b"SIMGANCK";
const FORMAT_VERSION: u32 = 1;

type MpkRecorder = NamedMpkBytesRecorder<FullPrecisionSettings>;

// ---------------------------------------------------------------------------------------------
// Safetensors for bare models
// ---------------------------------------------------------------------------------------------

fn to_json<T: Serialize>(value: &T, what: &'static str) -> Result<String, NnError> {
    serde_json::to_string(value).map_err(|source| NnError::Json { what, source })
}

fn from_json<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T, NnError> {
    serde_json::from_slice(bytes).map_err(|source| NnError::Json { what, source })
}

/// A config stored by an earlier simgan: fields added since (burn's `Config` derive has no
/// serde defaults, so a missing field fails to parse) are filled from `defaults`, whose values
/// for them must be the earlier behaviour (every added model/training option defaults to off).
/// Nested configs are filled field by field.
fn config_from_json<T: DeserializeOwned + Serialize>(
    bytes: &[u8],
    defaults: &T,
    what: &'static str,
) -> Result<T, NnError> {
    fn fill(stored: &mut serde_json::Value, defaults: serde_json::Value) {
        if let (Some(s), serde_json::Value::Object(d)) = (stored.as_object_mut(), defaults) {
            for (k, v) in d {
                match s.get_mut(&k) {
                    Some(existing) => fill(existing, v),
                    None => {
                        s.insert(k, v);
                    }
                }
            }
        }
    }
    let mut stored: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|source| NnError::Json { what, source })?;
    let defaults =
        serde_json::to_value(defaults).map_err(|source| NnError::Json { what, source })?;
    fill(&mut stored, defaults);
    serde_json::from_value(stored).map_err(|source| NnError::Json { what, source })
}

fn module_to_safetensors<B: Backend, M: Module<B>>(
    module: &M,
    what: &'static str,
    config_json: String,
) -> Result<Vec<u8>, NnError> {
    let mut store = SafetensorsStore::from_bytes(None)
        .with_to_adapter(BurnToPyTorchAdapter)
        .metadata(META_KIND, what)
        .metadata(META_CONFIG, config_json);
    module
        .save_into(&mut store)
        .map_err(|source| NnError::Safetensors { what, source })?;
    let bytes = store
        .get_bytes()
        .map_err(|source| NnError::Safetensors { what, source })?;
    canonical_safetensors(bytes, what)
}

/// The same safetensors with its JSON header's keys sorted (tensor entries and `__metadata__`
/// alike) and padded with spaces to a multiple of 8 bytes, as the format allows. burn-store
/// writes the header from hash maps, so two saves of identical weights differed in their
/// bytes (and checksums); the data section is unchanged (its offsets are relative to it).
fn canonical_safetensors(bytes: Vec<u8>, what: &'static str) -> Result<Vec<u8>, NnError> {
    fn sorted(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let m: std::collections::BTreeMap<String, serde_json::Value> =
                    m.into_iter().map(|(k, v)| (k, sorted(v))).collect();
                serde_json::Value::Object(m.into_iter().collect())
            }
            other => other,
        }
    }
    let bad = |reason: &str| NnError::Checkpoint(format!("{what} safetensors: {reason}"));
    let n = bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| bad("shorter than its header length"))? as usize;
    let end = 8usize
        .checked_add(n)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| bad("header runs past the end"))?;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes[8..end]).map_err(|source| NnError::Json { what, source })?;
    // serde_json's map keeps insertion order only with its `preserve_order` feature (which a
    // dependency may turn on): write the sorted entries by hand either way.
    let mut text = String::from("{");
    if let serde_json::Value::Object(m) = sorted(header) {
        let entries: std::collections::BTreeMap<String, serde_json::Value> =
            m.into_iter().collect();
        for (i, (k, v)) in entries.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&to_json(k, what)?);
            text.push(':');
            text.push_str(&to_json(v, what)?);
        }
    }
    text.push('}');
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - end);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[end..]);
    Ok(out)
}

fn safetensors_into_module<B: Backend, M: Module<B>>(
    mut module: M,
    bytes: &[u8],
    what: &'static str,
) -> Result<M, NnError> {
    let mut store = SafetensorsStore::from_bytes(Some(bytes.to_vec()))
        .with_from_adapter(PyTorchToBurnAdapter)
        .validate(true)
        .allow_partial(false);
    let result = module
        .load_from(&mut store)
        .map_err(|source| NnError::Safetensors { what, source })?;
    // Batch-norm parameters are stored under PyTorch's names (`weight`, `bias`); the adapter
    // loads them into burn's `gamma`, `beta` but still lists the PyTorch names as unused.
    let burn_paths: std::collections::HashSet<String> = module
        .collect(None, None, false)
        .into_iter()
        .map(|s| s.full_path())
        .collect();
    let renamed = |path: &str| {
        let (stem, leaf) = path.rsplit_once('.').unwrap_or(("", path));
        let burn = match leaf {
            "weight" => "gamma",
            "bias" => "beta",
            _ => return false,
        };
        burn_paths.contains(&format!("{stem}.{burn}"))
    };
    let unused: Vec<&String> = result.unused.iter().filter(|p| !renamed(p)).collect();
    if !result.errors.is_empty() || !result.missing.is_empty() || !unused.is_empty() {
        return Err(NnError::WeightsMismatch {
            what,
            message: format!(
                "errors {:?}, missing {:?}, unused {:?}",
                result.errors, result.missing, unused
            ),
        });
    }
    Ok(module)
}

/// The `__metadata__` map of a safetensors file (parsed from its JSON header).
pub fn safetensors_metadata(bytes: &[u8]) -> Result<BTreeMap<String, String>, NnError> {
    let bad = |m: &str| NnError::Checkpoint(format!("safetensors header: {m}"));
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| bad("shorter than 8 bytes"))?;
    let n = usize::try_from(u64::from_le_bytes(len_bytes))
        .map_err(|_| bad("header length overflows"))?;
    let header = bytes
        .get(8..8usize.saturating_add(n))
        .ok_or_else(|| bad("truncated header"))?;
    #[derive(Deserialize)]
    struct Header {
        #[serde(rename = "__metadata__", default)]
        metadata: BTreeMap<String, String>,
    }
    let h: Header = from_json(header, "safetensors header")?;
    Ok(h.metadata)
}

fn config_from_safetensors<C: DeserializeOwned + Serialize>(
    bytes: &[u8],
    kind: &'static str,
    defaults: &C,
) -> Result<C, NnError> {
    let meta = safetensors_metadata(bytes)?;
    match meta.get(META_KIND) {
        Some(k) if k == kind => {}
        other => {
            return Err(NnError::Checkpoint(format!(
                "expected a {kind} safetensors, its {META_KIND} is {other:?}"
            )));
        }
    }
    let json = meta.get(META_CONFIG).ok_or_else(|| {
        NnError::Checkpoint(format!("{kind} safetensors has no {META_CONFIG} metadata"))
    })?;
    config_from_json(json.as_bytes(), defaults, kind)
}

/// A refiner as PyTorch-readable safetensors bytes, its config in the metadata.
pub fn save_refiner<B: Backend>(
    refiner: &Refiner<B>,
    config: &RefinerConfig,
) -> Result<Vec<u8>, NnError> {
    module_to_safetensors(refiner, KIND_REFINER, to_json(config, "refiner config")?)
}

/// Rebuild a refiner (and its config) from [`save_refiner`] bytes.
pub fn load_refiner<B: Backend>(
    bytes: &[u8],
    device: &B::Device,
) -> Result<(Refiner<B>, RefinerConfig), NnError> {
    let config: RefinerConfig =
        config_from_safetensors(bytes, KIND_REFINER, &RefinerConfig::new())?;
    config.validate()?;
    let refiner = safetensors_into_module(config.init::<B>(device), bytes, KIND_REFINER)?;
    Ok((refiner, config))
}

/// A discriminator as safetensors bytes, its config in the metadata.
pub fn save_discriminator<B: Backend>(
    d: &Discriminator<B>,
    config: &DiscriminatorConfig,
) -> Result<Vec<u8>, NnError> {
    module_to_safetensors(
        d,
        KIND_DISCRIMINATOR,
        to_json(config, "discriminator config")?,
    )
}

/// Rebuild a discriminator (and its config) from [`save_discriminator`] bytes.
pub fn load_discriminator<B: Backend>(
    bytes: &[u8],
    device: &B::Device,
) -> Result<(Discriminator<B>, DiscriminatorConfig), NnError> {
    let config: DiscriminatorConfig =
        config_from_safetensors(bytes, KIND_DISCRIMINATOR, &DiscriminatorConfig::new())?;
    config.validate()?;
    let d = safetensors_into_module(config.init::<B>(device), bytes, KIND_DISCRIMINATOR)?;
    Ok((d, config))
}

/// A gaze net as PyTorch-readable safetensors bytes, its config in the metadata.
pub fn save_gaze_net<B: Backend>(
    net: &GazeNet<B>,
    config: &GazeNetConfig,
) -> Result<Vec<u8>, NnError> {
    module_to_safetensors(net, KIND_GAZE_NET, to_json(config, "gaze net config")?)
}

/// Rebuild a gaze net (and its config) from [`save_gaze_net`] bytes.
pub fn load_gaze_net<B: Backend>(
    bytes: &[u8],
    device: &B::Device,
) -> Result<(GazeNet<B>, GazeNetConfig), NnError> {
    let config: GazeNetConfig =
        config_from_safetensors(bytes, KIND_GAZE_NET, &GazeNetConfig::new())?;
    let net = safetensors_into_module(config.init::<B>(device)?, bytes, KIND_GAZE_NET)?;
    Ok((net, config))
}

/// A stacked hourglass as safetensors bytes (batch-norm running statistics included), its config
/// in the metadata.
pub fn save_hourglass<B: Backend>(
    net: &StackedHourglass<B>,
    config: &HourglassConfig,
) -> Result<Vec<u8>, NnError> {
    module_to_safetensors(net, KIND_HOURGLASS, to_json(config, "hourglass config")?)
}

/// Rebuild a stacked hourglass (and its config) from [`save_hourglass`] bytes.
pub fn load_hourglass<B: Backend>(
    bytes: &[u8],
    device: &B::Device,
) -> Result<(StackedHourglass<B>, HourglassConfig), NnError> {
    let config: HourglassConfig =
        config_from_safetensors(bytes, KIND_HOURGLASS, &HourglassConfig::new())?;
    config.validate()?;
    let net = safetensors_into_module(config.init::<B>(device), bytes, KIND_HOURGLASS)?;
    Ok((net, config))
}

// ---------------------------------------------------------------------------------------------
// Optimiser state
// ---------------------------------------------------------------------------------------------

/// Module path → parameter id. Optimiser records are keyed by `ParamId`, which is random per
/// model instance; loading weights into a fresh model keeps the fresh ids, so the record is
/// re-keyed through the paths.
fn param_ids<B: Backend, M: Module<B>>(module: &M) -> BTreeMap<String, u64> {
    module
        .collect(None, None, false)
        .into_iter()
        .filter_map(|s| Some((s.full_path(), s.tensor_id?.val())))
        .collect()
}

fn rekey<V, R>(
    record: R,
    saved: &BTreeMap<String, u64>,
    fresh: &BTreeMap<String, u64>,
    what: &'static str,
) -> Result<R, NnError>
where
    R: IntoIterator<Item = (ParamId, V)> + FromIterator<(ParamId, V)>,
{
    if saved.len() != fresh.len() || saved.keys().any(|k| !fresh.contains_key(k)) {
        return Err(NnError::WeightsMismatch {
            what,
            message: format!(
                "optimiser parameter paths differ: saved {:?}, model {:?}",
                saved.keys(),
                fresh.keys()
            ),
        });
    }
    let map: HashMap<u64, u64> = saved
        .iter()
        .filter_map(|(path, id)| Some((*id, *fresh.get(path)?)))
        .collect();
    record
        .into_iter()
        .map(|(id, v)| {
            map.get(&id.val())
                .map(|new| (ParamId::from(*new), v))
                .ok_or_else(|| NnError::WeightsMismatch {
                    what,
                    message: format!("optimiser state for unknown parameter id {id}"),
                })
        })
        .collect()
}

fn save_optim<B: AutodiffBackend, M: burn::module::AutodiffModule<B>, O: Optimizer<M, B>>(
    optim: &O,
    what: &'static str,
) -> Result<Vec<u8>, NnError> {
    Recorder::<B>::record(&MpkRecorder::default(), optim.to_record(), ())
        .map_err(|source| NnError::Record { what, source })
}

fn load_optim<B, M, O, V>(
    optim: O,
    bytes: &[u8],
    saved_ids: &BTreeMap<String, u64>,
    module: &M,
    device: &B::Device,
    what: &'static str,
) -> Result<O, NnError>
where
    B: AutodiffBackend,
    M: burn::module::AutodiffModule<B>,
    O: Optimizer<M, B>,
    O::Record: IntoIterator<Item = (ParamId, V)> + FromIterator<(ParamId, V)>,
{
    let record: O::Record = Recorder::<B>::load(&MpkRecorder::default(), bytes.to_vec(), device)
        .map_err(|source| NnError::Record { what, source })?;
    let record = rekey(record, saved_ids, &param_ids::<B, M>(module), what)?;
    Ok(optim.load_record(record))
}

// ---------------------------------------------------------------------------------------------
// Archive
// ---------------------------------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct ArchiveHeader {
    kind: String,
    entries: Vec<ArchiveEntry>,
}

#[derive(Serialize, Deserialize)]
struct ArchiveEntry {
    name: String,
    len: u64,
}

/// A trainer checkpoint: a kind and named byte entries (see the `ENTRY_*` constants).
///
/// Layout: `b"SIMGANCK"`, format version (u32 LE), header length (u64 LE), header JSON
/// `{"kind": …, "entries": [{"name": …, "len": …}, …]}`, then the entries' bytes in order.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerCheckpoint {
    /// [`ARCHIVE_REFINER_TRAINER`] or [`ARCHIVE_GAZE_TRAINER`].
    pub kind: String,
    /// Entry name → bytes.
    pub entries: BTreeMap<String, Vec<u8>>,
}

impl TrainerCheckpoint {
    /// Serialise to one blob.
    pub fn to_bytes(&self) -> Result<Vec<u8>, NnError> {
        let header = ArchiveHeader {
            kind: self.kind.clone(),
            entries: self
                .entries
                .iter()
                .map(|(n, b)| ArchiveEntry {
                    name: n.clone(),
                    len: b.len() as u64,
                })
                .collect(),
        };
        let header = serde_json::to_vec(&header).map_err(|source| NnError::Json {
            what: "checkpoint header",
            source,
        })?;
        let total: usize = self.entries.values().map(Vec::len).sum();
        let mut out = Vec::with_capacity(20 + header.len() + total);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&header);
        for b in self.entries.values() {
            out.extend_from_slice(b);
        }
        Ok(out)
    }

    /// Parse a blob written by [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, NnError> {
        let bad = |m: String| NnError::Checkpoint(m);
        if bytes.get(..8) != Some(MAGIC.as_slice()) {
            return Err(bad("not a simgan checkpoint (bad magic)".into()));
        }
        let version = bytes
            .get(8..12)
            .and_then(|s| s.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| bad("truncated".into()))?;
        if version != FORMAT_VERSION {
            return Err(bad(format!(
                "format version {version}, this build reads {FORMAT_VERSION}"
            )));
        }
        let hlen = bytes
            .get(12..20)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| bad("truncated".into()))?;
        let hlen = usize::try_from(hlen).map_err(|_| bad("header length overflows".into()))?;
        let header = bytes
            .get(20..20usize.saturating_add(hlen))
            .ok_or_else(|| bad("truncated header".into()))?;
        let header: ArchiveHeader = from_json(header, "checkpoint header")?;
        let mut pos = 20 + hlen;
        let mut entries = BTreeMap::new();
        for e in header.entries {
            let len =
                usize::try_from(e.len).map_err(|_| bad(format!("entry {} too large", e.name)))?;
            let end = pos
                .checked_add(len)
                .ok_or_else(|| bad(format!("entry {} too large", e.name)))?;
            let data = bytes
                .get(pos..end)
                .ok_or_else(|| bad(format!("entry {} truncated", e.name)))?;
            entries.insert(e.name, data.to_vec());
            pos = end;
        }
        if pos != bytes.len() {
            return Err(bad(format!("{} trailing bytes", bytes.len() - pos)));
        }
        Ok(Self {
            kind: header.kind,
            entries,
        })
    }

    /// An entry's bytes, or a [`NnError::Checkpoint`] naming the missing entry.
    pub fn entry(&self, name: &str) -> Result<&[u8], NnError> {
        self.entries.get(name).map(Vec::as_slice).ok_or_else(|| {
            NnError::Checkpoint(format!("{} checkpoint has no entry {name:?}", self.kind))
        })
    }

    fn expect_kind(&self, kind: &str) -> Result<(), NnError> {
        if self.kind != kind {
            return Err(NnError::Checkpoint(format!(
                "expected a {kind} checkpoint, got {}",
                self.kind
            )));
        }
        Ok(())
    }

    /// The step counter stored in the checkpoint.
    pub fn step(&self) -> Result<u64, NnError> {
        let s: StateJson = from_json(self.entry(ENTRY_STATE)?, "checkpoint state")?;
        Ok(s.step)
    }
}

#[derive(Serialize, Deserialize)]
struct StateJson {
    format_version: u32,
    step: u64,
    /// Module path → ParamId per model (keys of the optimiser records).
    param_ids: BTreeMap<String, BTreeMap<String, u64>>,
    /// Images in the `history.f32` entry, when present.
    history_len: Option<usize>,
}

fn ids_of<'a>(state: &'a StateJson, model: &str) -> Result<&'a BTreeMap<String, u64>, NnError> {
    state
        .param_ids
        .get(model)
        .ok_or_else(|| NnError::Checkpoint(format!("state.json has no parameter ids for {model}")))
}

impl<B: AutodiffBackend> RefinerTrainer<B> {
    /// The whole trainer state as one blob (see [`TrainerCheckpoint`]). With
    /// `include_history` the history buffer's images are stored too (`capacity × c × h × w × 4`
    /// bytes at most); without, a resumed run starts with an empty buffer.
    pub fn save_checkpoint(&self, include_history: bool) -> Result<Vec<u8>, NnError> {
        let mut entries = BTreeMap::new();
        entries.insert(
            ENTRY_CONFIG.to_string(),
            to_json(&self.config, "train config")?.into_bytes(),
        );
        entries.insert(
            ENTRY_REFINER.to_string(),
            save_refiner(&self.refiner, &self.config.refiner)?,
        );
        entries.insert(
            ENTRY_DISCRIMINATOR.to_string(),
            save_discriminator(&self.discriminator, &self.config.discriminator)?,
        );
        if let Some(ema) = &self.ema {
            entries.insert(
                ENTRY_REFINER_EMA.to_string(),
                save_refiner(ema, &self.config.refiner)?,
            );
        }
        entries.insert(
            ENTRY_OPTIM_REFINER.to_string(),
            save_optim(&self.optim_r, "refiner")?,
        );
        entries.insert(
            ENTRY_OPTIM_DISCRIMINATOR.to_string(),
            save_optim(&self.optim_d, "discriminator")?,
        );
        let mut history_len = None;
        if include_history {
            let flat = self.history.as_flat();
            entries.insert(
                ENTRY_HISTORY.to_string(),
                flat.iter().flat_map(|v| v.to_le_bytes()).collect(),
            );
            history_len = Some(self.history.len());
        }
        let state = StateJson {
            format_version: FORMAT_VERSION,
            step: self.step,
            param_ids: BTreeMap::from([
                (KIND_REFINER.to_string(), param_ids::<B, _>(&self.refiner)),
                (
                    KIND_DISCRIMINATOR.to_string(),
                    param_ids::<B, _>(&self.discriminator),
                ),
            ]),
            history_len,
        };
        entries.insert(
            ENTRY_STATE.to_string(),
            to_json(&state, "checkpoint state")?.into_bytes(),
        );
        TrainerCheckpoint {
            kind: ARCHIVE_REFINER_TRAINER.into(),
            entries,
        }
        .to_bytes()
    }

    /// Resume a trainer from [`Self::save_checkpoint`] bytes on `device`.
    pub fn load_checkpoint(bytes: &[u8], device: &B::Device) -> Result<Self, NnError> {
        let ckpt = TrainerCheckpoint::from_bytes(bytes)?;
        ckpt.expect_kind(ARCHIVE_REFINER_TRAINER)?;
        let config: TrainConfig = config_from_json(
            ckpt.entry(ENTRY_CONFIG)?,
            &TrainConfig::new(),
            "train config",
        )?;
        config.validate()?;
        let state: StateJson = from_json(ckpt.entry(ENTRY_STATE)?, "checkpoint state")?;
        let (refiner, _) = load_refiner::<B>(ckpt.entry(ENTRY_REFINER)?, device)?;
        let (discriminator, _) = load_discriminator::<B>(ckpt.entry(ENTRY_DISCRIMINATOR)?, device)?;
        let optim_r = load_optim(
            config.adam_config().init(),
            ckpt.entry(ENTRY_OPTIM_REFINER)?,
            ids_of(&state, KIND_REFINER)?,
            &refiner,
            device,
            "refiner",
        )?;
        let optim_d = load_optim(
            config.adam_config().init(),
            ckpt.entry(ENTRY_OPTIM_DISCRIMINATOR)?,
            ids_of(&state, KIND_DISCRIMINATOR)?,
            &discriminator,
            device,
            "discriminator",
        )?;
        let mut history = HistoryBuffer::new(
            config.history_capacity,
            config.image_shape,
            history_seed(config.seed, state.step),
        );
        if let Some(raw) = ckpt.entries.get(ENTRY_HISTORY) {
            if raw.len() % 4 != 0 {
                return Err(NnError::Checkpoint(format!(
                    "history entry has {} bytes, not whole f32s",
                    raw.len()
                )));
            }
            let flat: Vec<f32> = raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            history.restore(flat)?;
        }
        // A checkpoint written before the average existed restarts it from the refiner.
        let ema = match (config.ema_decay > 0.0, ckpt.entries.get(ENTRY_REFINER_EMA)) {
            (false, _) => None,
            (true, Some(bytes)) => Some(load_refiner::<B::InnerBackend>(bytes, device)?.0),
            (true, None) => Some(burn::module::AutodiffModule::valid(&refiner)),
        };
        B::seed(device, config.seed ^ state.step);
        Ok(Self {
            config,
            ema,
            refiner,
            discriminator,
            optim_r,
            optim_d,
            history,
            step: state.step,
            device: device.clone(),
            precision: super::Precision::F32,
        })
    }
}

impl<B: AutodiffBackend> GazeTrainer<B> {
    /// The whole trainer state (network, optimiser, step) as one blob.
    pub fn save_checkpoint(&self) -> Result<Vec<u8>, NnError> {
        let mut entries = BTreeMap::new();
        entries.insert(
            ENTRY_CONFIG.to_string(),
            to_json(&self.config, "gaze train config")?.into_bytes(),
        );
        entries.insert(
            ENTRY_GAZE_NET.to_string(),
            save_gaze_net(&self.model, &self.config.net)?,
        );
        let optim = match &self.optim {
            GazeOptim::Adam(o) => save_optim(o, "gaze net")?,
            GazeOptim::Sgd(o) => save_optim(o, "gaze net")?,
        };
        entries.insert(ENTRY_OPTIM_GAZE.to_string(), optim);
        let state = StateJson {
            format_version: FORMAT_VERSION,
            step: self.step,
            param_ids: BTreeMap::from([(
                KIND_GAZE_NET.to_string(),
                param_ids::<B, _>(&self.model),
            )]),
            history_len: None,
        };
        entries.insert(
            ENTRY_STATE.to_string(),
            to_json(&state, "checkpoint state")?.into_bytes(),
        );
        TrainerCheckpoint {
            kind: ARCHIVE_GAZE_TRAINER.into(),
            entries,
        }
        .to_bytes()
    }

    /// Resume a gaze trainer from [`Self::save_checkpoint`] bytes on `device`.
    pub fn load_checkpoint(bytes: &[u8], device: &B::Device) -> Result<Self, NnError> {
        let ckpt = TrainerCheckpoint::from_bytes(bytes)?;
        ckpt.expect_kind(ARCHIVE_GAZE_TRAINER)?;
        let config: GazeTrainConfig = config_from_json(
            ckpt.entry(ENTRY_CONFIG)?,
            &GazeTrainConfig::new(),
            "gaze train config",
        )?;
        let state: StateJson = from_json(ckpt.entry(ENTRY_STATE)?, "checkpoint state")?;
        let (model, _) = load_gaze_net::<B>(ckpt.entry(ENTRY_GAZE_NET)?, device)?;
        let ids = ids_of(&state, KIND_GAZE_NET)?;
        let raw = ckpt.entry(ENTRY_OPTIM_GAZE)?;
        let optim = match gaze_optim::<B>(&config) {
            GazeOptim::Adam(o) => {
                GazeOptim::Adam(load_optim(o, raw, ids, &model, device, "gaze net")?)
            }
            GazeOptim::Sgd(o) => {
                GazeOptim::Sgd(load_optim(o, raw, ids, &model, device, "gaze net")?)
            }
        };
        B::seed(device, config.seed ^ state.step);
        Ok(Self {
            config,
            model,
            optim,
            step: state.step,
            device: device.clone(),
            precision: super::Precision::F32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::backend::{CpuAutodiffBackend, CpuBackend};
    use crate::nn::train::BatchSource;
    use crate::nn::train::tests::{ToySource, tiny_config};
    use burn::module::AutodiffModule;
    use burn::tensor::Tensor;

    type AB = CpuAutodiffBackend;

    /// Two saves of the same weights are the same bytes (sorted, padded header), and they load.
    #[test]
    fn saving_is_byte_stable() {
        let device = Default::default();
        let cfg = RefinerConfig::narrow(4).with_blocks(1);
        let r = crate::nn::backend::init_seeded::<CpuBackend, _>(&device, 3, || {
            cfg.init::<CpuBackend>(&device)
        });
        let saves: Vec<Vec<u8>> = (0..4).map(|_| save_refiner(&r, &cfg).unwrap()).collect();
        assert!(saves.windows(2).all(|w| w[0] == w[1]), "saves differ");
        let n = u64::from_le_bytes(saves[0][..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        let header: serde_json::Value = serde_json::from_slice(&saves[0][8..8 + n]).unwrap();
        assert!(header["__metadata__"][META_CONFIG].is_string(), "{header}");
        let (back, back_cfg) = load_refiner::<CpuBackend>(&saves[0], &device).unwrap();
        assert_eq!(back_cfg, cfg);
        assert_eq!(save_refiner(&back, &back_cfg).unwrap(), saves[0]);
    }

    /// A config written before options were added (here: mirrored padding, spectral norm,
    /// instance noise) loads, with those options at their defaults (off); a config with a field
    /// of the wrong type still fails, naming the document.
    #[test]
    fn configs_from_before_an_option_existed_load() {
        let cfg = tiny_config();
        let mut old = serde_json::to_value(&cfg).unwrap();
        let o = old.as_object_mut().unwrap();
        o.remove("d_input_noise");
        o["refiner"]
            .as_object_mut()
            .unwrap()
            .remove("reflect_padding");
        o["discriminator"]
            .as_object_mut()
            .unwrap()
            .remove("spectral_norm");
        let bytes = serde_json::to_vec(&old).unwrap();
        assert!(from_json::<TrainConfig>(&bytes, "train config").is_err());
        let loaded: TrainConfig =
            config_from_json(&bytes, &TrainConfig::new(), "train config").unwrap();
        assert_eq!(loaded, cfg);
        o_bad(&mut old);
        let bad = serde_json::to_vec(&old).unwrap();
        let e = config_from_json(&bad, &TrainConfig::new(), "train config").unwrap_err();
        assert!(e.to_string().contains("train config"), "{e}");

        fn o_bad(v: &mut serde_json::Value) {
            v["batch_size"] = serde_json::json!("many");
        }
    }

    fn bits(t: Tensor<CpuBackend, 4>) -> Vec<u32> {
        t.into_data()
            .to_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(f32::to_bits)
            .collect()
    }

    #[test]
    fn trainer_checkpoint_roundtrip_is_exact() {
        let device = Default::default();
        let cfg = tiny_config()
            .with_pretrain_r_steps(3)
            .with_pretrain_d_steps(2)
            .with_ema_decay(0.5);
        let mut t = RefinerTrainer::<AB>::new(cfg.clone(), &device).unwrap();
        let mut src = ToySource {
            h: 16,
            w: 24,
            next: 0,
        };
        for i in 0..8 {
            t.step(i, &mut src).unwrap();
        }
        let bytes = t.save_checkpoint(true).unwrap();
        let mut u = RefinerTrainer::<AB>::load_checkpoint(&bytes, &device).unwrap();
        assert_eq!(u.step_count(), 8);
        assert_eq!(u.config(), t.config());
        assert_eq!(u.history().as_flat(), t.history().as_flat());

        let x: Tensor<CpuBackend, 4> =
            BatchSource::<CpuBackend>::synthetic(&mut src, 4, &device).unwrap();
        assert_eq!(
            bits(t.refine(x.clone())),
            bits(u.refine(x.clone())),
            "refiner (weight average) outputs bit-identical"
        );
        assert_eq!(
            bits(t.refiner().valid().forward(x.clone())),
            bits(u.refiner().valid().forward(x.clone())),
            "trained refiner outputs bit-identical"
        );

        // The optimiser state came back too: one more identical R step gives identical weights.
        let s = BatchSource::<AB>::synthetic(&mut src, 8, &device).unwrap();
        t.r_step(s.clone()).unwrap();
        u.r_step(s).unwrap();
        assert_eq!(
            bits(t.refine(x.clone())),
            bits(u.refine(x.clone())),
            "Adam state restored"
        );
        let before = bits(u.refine(x.clone()));
        let s = BatchSource::<AB>::synthetic(&mut src, 8, &device).unwrap();
        u.r_step(s).unwrap();
        assert_ne!(
            before,
            bits(u.refine(x)),
            "the resumed refiner still trains"
        );

        // Bare refiner from the checkpoint entry, on the plain CPU backend.
        let ckpt = TrainerCheckpoint::from_bytes(&bytes).unwrap();
        assert_eq!(ckpt.step().unwrap(), 8);
        let (bare, bare_cfg) =
            load_refiner::<CpuBackend>(ckpt.entry(ENTRY_REFINER).unwrap(), &device).unwrap();
        assert_eq!(bare_cfg, cfg.refiner);
        let y: Tensor<CpuBackend, 4> =
            BatchSource::<CpuBackend>::synthetic(&mut src, 2, &device).unwrap();
        let reloaded = RefinerTrainer::<AB>::load_checkpoint(&bytes, &device).unwrap();
        assert_eq!(
            bits(bare.forward(y.clone())),
            bits(reloaded.refiner().valid().forward(y.clone()))
        );
        let (ema, _) =
            load_refiner::<CpuBackend>(ckpt.entry(ENTRY_REFINER_EMA).unwrap(), &device).unwrap();
        assert_eq!(bits(ema.forward(y.clone())), bits(reloaded.refine(y)));

        // Without history: empty buffer on resume.
        let nohist =
            RefinerTrainer::<AB>::load_checkpoint(&t.save_checkpoint(false).unwrap(), &device)
                .unwrap();
        assert!(nohist.history().is_empty());
    }

    #[test]
    fn bare_models_roundtrip_and_metadata() {
        let device = Default::default();
        let cfg = RefinerConfig::narrow(4).with_blocks(1);
        let r =
            crate::nn::init_seeded::<CpuBackend, _>(&device, 1, || cfg.init::<CpuBackend>(&device));
        let bytes = save_refiner(&r, &cfg).unwrap();
        let meta = safetensors_metadata(&bytes).unwrap();
        assert_eq!(meta.get(META_KIND).map(String::as_str), Some(KIND_REFINER));
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
        assert_eq!(header["conv_in.weight"]["dtype"], "F32");
        assert_eq!(
            header["conv_in.weight"]["shape"],
            serde_json::json!([4, 1, 3, 3])
        );
        assert_eq!(
            header["blocks.0.conv2.bias"]["shape"],
            serde_json::json!([4])
        );
        let (r2, cfg2) = load_refiner::<CpuBackend>(&bytes, &device).unwrap();
        assert_eq!(cfg2, cfg);
        let x = Tensor::<CpuBackend, 4>::ones([1, 1, 6, 7], &device).mul_scalar(0.3);
        assert_eq!(bits(r.forward(x.clone())), bits(r2.forward(x)));
        assert!(matches!(
            load_discriminator::<CpuBackend>(&bytes, &device),
            Err(NnError::Checkpoint(_))
        ));
        assert!(load_refiner::<CpuBackend>(&bytes[..bytes.len() - 3], &device).is_err());
        assert!(matches!(
            TrainerCheckpoint::from_bytes(b"nonsense"),
            Err(NnError::Checkpoint(_))
        ));

        // A refiner with a noise branch: its amplitude convolution is stored and loaded (set
        // to non-zero weights here; it starts at zero) and the noise given decides the output.
        // Its noise filter too (random weights instead of the initial delta).
        let ncfg = cfg
            .clone()
            .with_noise_channels(1)
            .with_noise_scale(0.03)
            .with_noise_kernel(3);
        let mut n = crate::nn::init_seeded::<CpuBackend, _>(&device, 2, || {
            ncfg.init::<CpuBackend>(&device)
        });
        n.noise_out = Some(burn::nn::conv::Conv2dConfig::new([4, 1], [1, 1]).init(&device));
        n.noise_filter = Some(
            burn::nn::conv::Conv2dConfig::new([1, 1], [3, 3])
                .with_padding(burn::nn::PaddingConfig2d::Same)
                .with_bias(false)
                .init(&device),
        );
        let nbytes = save_refiner(&n, &ncfg).unwrap();
        let header_len = u64::from_le_bytes(nbytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&nbytes[8..8 + header_len]).unwrap();
        assert_eq!(
            header["noise_out.weight"]["shape"],
            serde_json::json!([1, 4, 1, 1])
        );
        assert_eq!(
            header["noise_filter.weight"]["shape"],
            serde_json::json!([1, 1, 3, 3])
        );
        let (n2, ncfg2) = load_refiner::<CpuBackend>(&nbytes, &device).unwrap();
        assert_eq!(ncfg2, ncfg);
        let z = Tensor::<CpuBackend, 4>::ones([1, 2, 6, 7], &device).mul_scalar(-0.7);
        let x = Tensor::<CpuBackend, 4>::ones([1, 1, 6, 7], &device).mul_scalar(0.3);
        assert_eq!(
            bits(n.forward_noise(x.clone(), Some(z.clone()))),
            bits(n2.forward_noise(x, Some(z)))
        );

        // Gaze net: linear weights stored PyTorch-style [out, in].
        let gcfg = GazeNetConfig::narrow(16).with_height(24).with_width(32);
        let g = crate::nn::init_seeded::<CpuBackend, _>(&device, 1, || {
            gcfg.init::<CpuBackend>(&device).ok()
        })
        .unwrap();
        let gbytes = save_gaze_net(&g, &gcfg).unwrap();
        let header_len = u64::from_le_bytes(gbytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&gbytes[8..8 + header_len]).unwrap();
        assert_eq!(
            header["fc2.weight"]["shape"],
            serde_json::json!([3, gcfg.hidden])
        );
        let (g2, _) = load_gaze_net::<CpuBackend>(&gbytes, &device).unwrap();
        let gx = Tensor::<CpuBackend, 4>::ones([2, 1, 24, 32], &device);
        let a: Vec<f32> = g.forward(gx.clone()).into_data().to_vec().unwrap();
        let b: Vec<f32> = g2.forward(gx).into_data().to_vec().unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn gaze_trainer_checkpoint_roundtrip() {
        let device = Default::default();
        let net = GazeNetConfig::narrow(16).with_height(24).with_width(32);
        let mut t = GazeTrainer::<AB>::new(GazeTrainConfig::new().with_net(net), &device).unwrap();
        let x = Tensor::<AB, 4>::ones([4, 1, 24, 32], &device).mul_scalar(0.1);
        let y = Tensor::<AB, 2>::ones([4, 3], &device);
        t.step(x.clone(), y.clone()).unwrap();
        let bytes = t.save_checkpoint().unwrap();
        let mut u = GazeTrainer::<AB>::load_checkpoint(&bytes, &device).unwrap();
        assert_eq!(u.step_count(), 1);
        let lt = t.step(x.clone(), y.clone()).unwrap();
        let lu = u.step(x.clone(), y).unwrap();
        assert_eq!(lt.to_bits(), lu.to_bits());
        assert_eq!(t.predict(x.clone()).unwrap(), u.predict(x).unwrap());
        let _ = u.model().valid();
    }
}
