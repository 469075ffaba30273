//! `train-estimator`: an estimator trained on one labelled sample stage (synthetic, refined, or
//! the real train split as an oracle) for the dataset's task ([`crate::task`]): the input size
//! and channels come from the data, the network, head and loss from the task. Tasks with a head
//! (`gaze`: 3 outputs, Euclidean loss on the unit vector; `classification`: one logit per class,
//! cross-entropy; `regression`: one output per label value, MSE on standardised labels) train the
//! paper's gaze-CNN family; pose tasks (`hand-pose`: heatmap loss) train the stacked hourglass
//! ([`crate::nn::hourglass`], sizes from the `hourglass_*` params).
//!
//! One work unit; same data rules as `train-refiner` (decode once on rayon, seeded sampling,
//! pixel values mapped through the dataset's value range). Output: per-step metrics as the
//! shard, the weights (`gaze_net.safetensors` or `hourglass.safetensors`, config in the
//! metadata) and `estimator.json` (what it was trained on, the network, and the task binding:
//! label column, classes, label normalisation) as artifacts.
//!
//! `ensemble = k` trains k networks on the same data with seeds `seed, seed + 1, …` (member j's
//! weights are `gaze_net-j.safetensors` for j ≥ 1; member 0 stays `gaze_net.safetensors`, so
//! k = 1 is the single estimator); `score` combines the members' predictions as the task says
//! (gaze: the mean unit vector). How well an estimator trained on one domain does on another
//! depends strongly on its initialisation and batch order (on the eye demo, one data set gave
//! 7.5°–12.0° on the real test split over three seeds); the ensemble measures the data, not the
//! draw.

use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::common::{self, DEVICE_PARAM, PRECISION_PARAM};
use super::{InputKind, InputSpec, StageCtx, StageKind, UnitOutput, UnitSpec};
use crate::error::{Error, Result};
use crate::nn::{
    self, BackendJob, GazeNetConfig, GazeOptimizer, GazeTrainConfig, GazeTrainer, HeadLoss,
    HourglassConfig, HourglassTrainConfig, HourglassTrainer, NnError, Phase, StepMetrics,
};
use crate::params::{ParamSpec, ParamType};
use crate::sample::{self, SampleImage, ValueRange};
use crate::task::{TaskSpec, Tasks};

/// The `train-estimator` kind.
pub struct TrainEstimator {
    tasks: Tasks,
}

impl TrainEstimator {
    /// The kind, resolving tasks among `tasks`.
    pub fn new(tasks: Tasks) -> TrainEstimator {
        TrainEstimator { tasks }
    }
}

/// What `estimator.json` holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EstimatorMeta {
    /// The training set's `domain` (synthetic | refined | real).
    pub trained_on: String,
    /// Ensemble members.
    pub members: usize,
    /// The training stage and its version.
    pub data_stage: String,
    /// Its committed version.
    pub data_version: u64,
    /// The task binding (absent in estimators written before tasks: gaze).
    #[serde(default)]
    pub task: Option<TaskSpec>,
    /// The network (absent in estimators written before the hourglass: the CNN).
    #[serde(default)]
    pub network: Network,
    /// The pixel values it saw as `[-1, 1]`, `[lo, hi]` (its training set's; absent in
    /// estimators written before value ranges: the bit depth's full range). `score` reads every
    /// image it scores through this range, so one millimetre means the same to it everywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pixel_range: Option<[f32; 2]>,
    /// Its range's per-image window ([`ValueRange::window`]; absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pixel_window: Option<f32>,
}

const INPUTS: &[InputSpec] = &[InputSpec {
    role: "data",
    kind: InputKind::Stage,
    required: true,
    doc: "Labelled sample stage (split=train rows)",
}];

const PARAMS: &[ParamSpec] = &[
    DEVICE_PARAM,
    PRECISION_PARAM,
    ParamSpec::new(
        "divisor",
        ParamType::Int { min: 1, max: 64 },
        "4",
        "CNN tasks: channels and hidden size ÷ this (1 = paper: 32,32,64,80,192 / 1000); the hourglass: hourglass_features",
    ),
    ParamSpec::new(
        "task",
        ParamType::Str,
        "\"auto\"",
        "gaze | classification | regression; auto: the dataset's (its `simgan` metadata, else the first task whose label column it has)",
    ),
    ParamSpec::new(
        "label",
        ParamType::Str,
        "\"\"",
        "Label column; empty: the dataset's, else the task's default (gaze, label, target)",
    ),
    ParamSpec::new(
        "optimizer",
        ParamType::Choice(&["adam", "sgd"]),
        "\"adam\"",
        "CNN tasks: optimiser (paper: SGD lr 0.001); the hourglass uses Adam",
    ),
    ParamSpec::new(
        "lr",
        ParamType::Float {
            min: 1e-9,
            max: 1.0,
        },
        "0.001",
        "Learning rate",
    ),
    ParamSpec::new(
        "batch_size",
        ParamType::Int { min: 1, max: 65536 },
        "64",
        "Images per step (paper: 512)",
    ),
    ParamSpec::new(
        "steps",
        ParamType::Int {
            min: 1,
            max: 1 << 40,
        },
        "600",
        "Training steps",
    ),
    ParamSpec::new(
        "lr_schedule",
        ParamType::Choice(&["cosine", "constant"]),
        "\"cosine\"",
        "cosine: decay lr to lr/20 over `steps` (steadier final scores); constant: the paper's",
    ),
    ParamSpec::new(
        "seed",
        ParamType::Int {
            min: 0,
            max: i64::MAX,
        },
        "7",
        "Seed for initialisation and sampling",
    ),
    ParamSpec::new(
        "hourglass_features",
        ParamType::Int { min: 8, max: 1024 },
        "32",
        "Pose tasks: feature maps inside the stacked hourglass (multiple of 4; the original: 256)",
    ),
    ParamSpec::new(
        "hourglass_stacks",
        ParamType::Int { min: 1, max: 8 },
        "2",
        "Pose tasks: hourglasses stacked (the paper's hand estimator: 2)",
    ),
    ParamSpec::new(
        "hourglass_depth",
        ParamType::Int { min: 1, max: 6 },
        "4",
        "Pose tasks: halvings per hourglass (needs images of at least 4·2^depth px)",
    ),
    ParamSpec::new(
        "hourglass_sigma",
        ParamType::Float {
            min: 0.1,
            max: 16.0,
        },
        "1.0",
        "Pose tasks: σ of the target Gaussians in heatmap cells (the original: 1)",
    ),
    ParamSpec::new(
        "hourglass_fg_weight",
        ParamType::Float {
            min: 1.0,
            max: 1000.0,
        },
        "1.0",
        "Pose tasks: loss weight 1 + (w − 1)·target per heatmap cell (1 = plain MSE, the original; more keeps a short run from predicting all-zero maps)",
    ),
    ParamSpec::new(
        "ensemble",
        ParamType::Int { min: 1, max: 32 },
        "1",
        "Networks trained (seeds seed, seed+1, …); score averages their predictions",
    ),
];

/// The estimator network a task trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The paper's gaze-CNN family with the task's head (`gaze_net*.safetensors`).
    #[default]
    Cnn,
    /// The stacked hourglass on heatmaps (`hourglass*.safetensors`): pose tasks.
    Hourglass,
}

impl Network {
    /// The network for a task's head loss.
    pub fn for_loss(loss: HeadLoss) -> Network {
        match loss {
            HeadLoss::Heatmap => Network::Hourglass,
            _ => Network::Cnn,
        }
    }
}

/// Artifact name of ensemble member `j`'s weights.
pub fn member_artifact(network: Network, j: usize) -> String {
    let stem = match network {
        Network::Cnn => "gaze_net",
        Network::Hourglass => "hourglass",
    };
    if j == 0 {
        format!("{stem}.safetensors")
    } else {
        format!("{stem}-{j}.safetensors")
    }
}

struct Trained {
    metrics: Vec<(StepMetrics, f64)>,
    weights: Vec<u8>,
}

/// Which network one member trains, with its run config.
#[derive(Clone)]
enum NetRun {
    Cnn(GazeTrainConfig),
    Hourglass(HourglassTrainConfig),
}

struct EstimatorJob<'a> {
    stage: &'a str,
    run: NetRun,
    seed: u64,
    batch_size: usize,
    range: ValueRange,
    images: &'a [SampleImage],
    /// Row-major `[rows, outputs]` training targets.
    targets: &'a [f32],
    outputs: usize,
    steps: u64,
    /// The CNN's float type (the `precision` param; the hourglass trains in f32 only).
    precision: nn::Precision,
}

/// One of the two trainers behind [`EstimatorJob`].
enum AnyTrainer<B: AutodiffBackend> {
    Cnn(Box<GazeTrainer<B>>),
    Hourglass(Box<HourglassTrainer<B>>),
}

impl BackendJob for EstimatorJob<'_> {
    type Output = Result<Trained>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let err = |e: NnError| Error::stage(self.stage, e.to_string());
        nn::seed::<B>(&device, self.seed);
        let mut trainer = match &self.run {
            NetRun::Cnn(cfg) => AnyTrainer::Cnn(Box::new({
                let mut t = GazeTrainer::<B>::new(cfg.clone(), &device).map_err(err)?;
                t.set_precision(self.precision);
                t
            })),
            NetRun::Hourglass(cfg) => AnyTrainer::Hourglass(Box::new(
                HourglassTrainer::<B>::new(cfg.clone(), &device).map_err(err)?,
            )),
        };
        let mut rng = SmallRng::seed_from_u64(self.seed);
        let b = self.batch_size.min(self.images.len());
        let k = self.outputs;
        let mut metrics = Vec::with_capacity(self.steps as usize);
        for step in 0..self.steps {
            let t = Instant::now();
            let idx: Vec<usize> = (0..b)
                .map(|_| rng.random_range(0..self.images.len()))
                .collect();
            let imgs: Vec<SampleImage> = idx.iter().map(|&i| self.images[i].clone()).collect();
            let x = sample::to_tensor::<B>(&imgs, self.range, &device).map_err(err)?; // [b, c, h, w]
            let targets: Vec<f32> = idx
                .iter()
                .flat_map(|&i| self.targets[i * k..(i + 1) * k].iter().copied())
                .collect();
            let loss = match &mut trainer {
                AnyTrainer::Cnn(t) => {
                    let y = Tensor::<B, 2>::from_data(TensorData::new(targets, [b, k]), &device); // [b, outputs]
                    t.step(x, y).map_err(err)?
                }
                AnyTrainer::Hourglass(t) => t.step(x, &targets).map_err(err)?,
            };
            let m = StepMetrics {
                step,
                phase: Phase::Refiner,
                adv_loss: None,
                reg_loss: None,
                refiner_loss: Some(loss),
                d_loss: None,
                d_acc_real: None,
                d_acc_refined: None,
                used_history: false,
                history_len: 0,
            };
            metrics.push((m, t.elapsed().as_secs_f64()));
        }
        let weights = match (&trainer, &self.run) {
            (AnyTrainer::Cnn(t), NetRun::Cnn(cfg)) => nn::save_gaze_net(t.model(), &cfg.net),
            (AnyTrainer::Hourglass(t), NetRun::Hourglass(cfg)) => {
                nn::save_hourglass(t.model(), &cfg.net)
            }
            _ => Err(NnError::InvalidConfig("trainer and network differ".into())),
        }
        .map_err(err)?;
        Ok(Trained { metrics, weights })
    }
}

impl StageKind for TrainEstimator {
    fn name(&self) -> &'static str {
        "train-estimator"
    }
    fn about(&self) -> &'static str {
        "Train the paper's gaze-CNN family on a labelled sample stage for its task (gaze, classification, regression)"
    }
    fn code_version(&self) -> &'static str {
        "2"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn inputs(&self) -> &'static [InputSpec] {
        INPUTS
    }
    fn schema(&self) -> &'static str {
        "train_metrics"
    }

    fn plan(&self, _ctx: &StageCtx) -> Result<Vec<UnitSpec>> {
        Ok(vec![UnitSpec {
            index: 0,
            spec: serde_json::Value::Null,
        }])
    }

    fn run_unit(&self, ctx: &StageCtx, _unit: &UnitSpec, out: &mut UnitOutput) -> Result<()> {
        let device = common::device(ctx)?;
        let data = ctx.stage_input("data")?;
        let what = format!("stage `{}`", data.manifest.stage);
        let loaded = sample::load(ctx.root, data, Some("train"))?;
        if loaded.images.is_empty() {
            return Err(ctx.err("input `data` has no split=train rows"));
        }
        let (task, label) = self.tasks.resolve(
            &loaded.batch.schema(),
            ctx.params.str("task")?,
            ctx.params.str("label")?,
            &what,
        )?;
        let spec = task.bind(&loaded.batch, &label, &what)?;
        let targets = task.targets(&spec, &loaded.batch, &what)?;
        let domains = sample::strings(&loaded.batch, "domain", &what)?;
        let trained_on = domains.value(0).to_string();
        let range = loaded.range();
        let images = loaded.images;
        let (c, h, w) = (
            images[0].channels as usize,
            images[0].height as usize,
            images[0].width as usize,
        );
        let steps = ctx.params.int("steps")? as u64;
        let decay = match ctx.params.str("lr_schedule")? {
            "cosine" => steps,
            _ => 0,
        };
        let lr = ctx.params.float("lr")?;
        let seed = ctx.params.int("seed")? as u64;
        let network = Network::for_loss(task.loss());
        let run = match network {
            Network::Cnn => {
                let optimizer = match ctx.params.str("optimizer")? {
                    "sgd" => GazeOptimizer::Sgd,
                    _ => GazeOptimizer::Adam,
                };
                let net =
                    GazeNetConfig::for_input(c, h, w, spec.outputs, ctx.params.usize("divisor")?);
                net.validate()
                    .map_err(|e| ctx.err(format!("estimator for {w}×{h} images: {e}")))?;
                NetRun::Cnn(
                    GazeTrainConfig::new()
                        .with_net(net)
                        .with_loss(task.loss())
                        .with_optimizer(optimizer)
                        .with_lr(lr)
                        .with_batch_size(ctx.params.usize("batch_size")?)
                        .with_seed(seed)
                        .with_decay_steps(decay),
                )
            }
            Network::Hourglass => {
                let net = HourglassConfig::new()
                    .with_channels(c)
                    .with_height(h)
                    .with_width(w)
                    .with_joints(spec.outputs / 2)
                    .with_features(ctx.params.usize("hourglass_features")?)
                    .with_stacks(ctx.params.usize("hourglass_stacks")?)
                    .with_depth(ctx.params.usize("hourglass_depth")?)
                    .with_sigma(ctx.params.float("hourglass_sigma")? as f32)
                    .with_fg_weight(ctx.params.float("hourglass_fg_weight")? as f32);
                net.validate()
                    .map_err(|e| ctx.err(format!("estimator for {w}×{h} images: {e}")))?;
                NetRun::Hourglass(
                    HourglassTrainConfig::new(net)
                        .with_lr(lr)
                        .with_seed(seed)
                        .with_decay_steps(decay),
                )
            }
        };
        let precision = common::precision(ctx)?;
        if matches!(run, NetRun::Hourglass(_)) && precision != nn::Precision::F32 {
            return Err(ctx.err(format!(
                "param `precision`: the stacked hourglass trains in f32 only, not {}",
                precision.name()
            )));
        }
        let members = ctx.params.usize("ensemble")?;
        let mut metrics = Vec::with_capacity(members * steps as usize);
        let mut weights = Vec::with_capacity(members);
        for j in 0..members {
            tracing::info!(stage = ctx.stage, rows = images.len(), task = task.name(), network = ?network, trained_on = %trained_on, steps, member = j, members, "training estimator");
            let member_seed = seed + j as u64;
            let run = match &run {
                NetRun::Cnn(cfg) => NetRun::Cnn(cfg.clone().with_seed(member_seed)),
                NetRun::Hourglass(cfg) => NetRun::Hourglass(cfg.clone().with_seed(member_seed)),
            };
            let trained = nn::run_on(
                &device,
                EstimatorJob {
                    stage: ctx.stage,
                    run,
                    seed: member_seed,
                    batch_size: ctx.params.usize("batch_size")?,
                    range,
                    images: &images,
                    targets: &targets,
                    outputs: spec.outputs,
                    steps,
                    precision,
                },
            )??;
            // One metrics row per step of every member: member j's steps follow member j−1's.
            metrics.extend(trained.metrics.into_iter().map(|(mut m, s)| {
                m.step += j as u64 * steps;
                (m, s)
            }));
            weights.push(trained.weights);
        }
        out.write(&common::metrics_batch(&metrics, Some("estimator"))?)?;
        for (j, w) in weights.into_iter().enumerate() {
            out.artifact(&member_artifact(network, j), w)?;
        }
        let meta = EstimatorMeta {
            trained_on,
            members,
            data_stage: data.manifest.stage.clone(),
            data_version: data.manifest.version,
            task: Some(spec),
            network,
            pixel_range: Some([range.lo, range.hi]),
            pixel_window: range.window,
        };
        let json = serde_json::to_vec_pretty(&meta).map_err(|source| Error::Json {
            path: "estimator.json".into(),
            source,
        })?;
        out.artifact("estimator.json", json)?;
        Ok(())
    }
}
