//! The runner on real storage with test-only kinds: staleness from manifests, single-stage
//! reruns, resume, leases, validation errors.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, Float32Array, Float64Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use simgan::manifest;
use simgan::params::{ParamSpec, ParamType};
use simgan::pipeline::{Pipeline, PipelineError};
use simgan::runner::{self, RunOptions, State};
use simgan::stages::{InputKind, InputSpec, Registry, StageCtx, StageKind, UnitOutput, UnitSpec};
use simgan::storage::Root;

use crate::util;

/// Test kind: writes `n` rows (step = 0..n) in units of `per` rows, into the train_metrics schema.
struct Numbers;
const NUM_PARAMS: &[ParamSpec] = &[
    ParamSpec::new(
        "n",
        ParamType::Int {
            min: 0,
            max: 1_000_000,
        },
        "10",
        "rows",
    ),
    ParamSpec::new(
        "per",
        ParamType::Int {
            min: 1,
            max: 1_000_000,
        },
        "3",
        "rows per unit",
    ),
    ParamSpec::new(
        "scale",
        ParamType::Float {
            min: 0.0,
            max: 100.0,
        },
        "1.0",
        "value scale",
    ),
];
/// Test kind: sums its input's `loss` column into one row.
struct Sum;
const SUM_INPUTS: &[InputSpec] = &[InputSpec {
    role: "data",
    kind: InputKind::Stage,
    required: true,
    doc: "numbers",
}];

fn metrics_batch(steps: Vec<i64>, loss: Vec<f32>) -> RecordBatch {
    let s = simgan::schema::get("train_metrics").unwrap().arrow.clone();
    let n = steps.len();
    RecordBatch::try_new(
        s,
        vec![
            Arc::new(Int64Array::from(steps)),
            Arc::new(StringArray::from(vec!["test"; n])),
            Arc::new(Float32Array::from(loss)),
            Arc::new(Float32Array::from(vec![None::<f32>; n])),
            Arc::new(Float32Array::from(vec![None::<f32>; n])),
            Arc::new(Float32Array::from(vec![None::<f32>; n])),
            Arc::new(Float32Array::from(vec![None::<f32>; n])),
            Arc::new(Float32Array::from(vec![None::<f32>; n])),
            Arc::new(Float64Array::from(vec![0.0; n])),
        ],
    )
    .unwrap()
}

impl StageKind for Numbers {
    fn name(&self) -> &'static str {
        "numbers"
    }
    fn about(&self) -> &'static str {
        "test"
    }
    fn code_version(&self) -> &'static str {
        "1"
    }
    fn params(&self) -> &'static [ParamSpec] {
        NUM_PARAMS
    }
    fn inputs(&self) -> &'static [InputSpec] {
        &[]
    }
    fn schema(&self) -> &'static str {
        "train_metrics"
    }
    fn plan(&self, ctx: &StageCtx) -> simgan::Result<Vec<UnitSpec>> {
        let n = ctx.params.usize("n")?;
        let per = ctx.params.usize("per")?;
        Ok((0..n.div_ceil(per))
            .map(|i| UnitSpec {
                index: i,
                spec: serde_json::json!({"start": i * per, "end": ((i + 1) * per).min(n)}),
            })
            .collect())
    }
    fn run_unit(
        &self,
        ctx: &StageCtx,
        unit: &UnitSpec,
        out: &mut UnitOutput,
    ) -> simgan::Result<()> {
        let (a, b) = (
            unit.spec["start"].as_i64().unwrap(),
            unit.spec["end"].as_i64().unwrap(),
        );
        let scale = ctx.params.float("scale")? as f32;
        // Failure injection per root: the object `_fail_unit` holds the index of a unit to fail.
        let fail = ctx
            .root
            .get("_fail_unit")?
            .and_then(|b| String::from_utf8_lossy(&b).parse::<usize>().ok());
        if fail == Some(unit.index) {
            return Err(ctx.err("injected failure"));
        }
        out.write(&metrics_batch(
            (a..b).collect(),
            (a..b).map(|i| i as f32 * scale).collect(),
        ))
    }
}

impl StageKind for Sum {
    fn name(&self) -> &'static str {
        "sum"
    }
    fn about(&self) -> &'static str {
        "test"
    }
    fn code_version(&self) -> &'static str {
        "1"
    }
    fn params(&self) -> &'static [ParamSpec] {
        &[]
    }
    fn inputs(&self) -> &'static [InputSpec] {
        SUM_INPUTS
    }
    fn schema(&self) -> &'static str {
        "train_metrics"
    }
    fn plan(&self, _ctx: &StageCtx) -> simgan::Result<Vec<UnitSpec>> {
        Ok(vec![UnitSpec {
            index: 0,
            spec: serde_json::Value::Null,
        }])
    }
    fn run_unit(
        &self,
        ctx: &StageCtx,
        _unit: &UnitSpec,
        out: &mut UnitOutput,
    ) -> simgan::Result<()> {
        let input = ctx.stage_input("data")?;
        let mut total = 0.0f32;
        for s in &input.manifest.shards {
            for b in simgan::shards::read(ctx.root, s, Some(simgan::schema::get("train_metrics")?))?
            {
                let loss = b
                    .column_by_name("loss")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<Float32Array>()
                    .unwrap();
                total += loss.values().iter().sum::<f32>();
            }
        }
        out.write(&metrics_batch(vec![0], vec![total]))
    }
}

/// Test kind: `numbers` through the runner's pipeline — units prepared `read_ahead` ahead on the
/// reader thread (which checks the bound) and run on `lanes` threads at once.
struct Pipelined {
    /// Units prepared but not yet taken by a lane, and the most ever seen.
    ahead: std::sync::Mutex<(usize, usize)>,
    /// Units running at once, and the most ever seen.
    running: std::sync::Mutex<(usize, usize)>,
}

const PIPE_PARAMS: &[ParamSpec] = &[
    ParamSpec::new(
        "n",
        ParamType::Int {
            min: 0,
            max: 1_000_000,
        },
        "10",
        "rows",
    ),
    ParamSpec::new(
        "per",
        ParamType::Int {
            min: 1,
            max: 1_000_000,
        },
        "3",
        "rows per unit",
    ),
    ParamSpec::new(
        "scale",
        ParamType::Float {
            min: 0.0,
            max: 100.0,
        },
        "1.0",
        "value scale",
    ),
    ParamSpec::new("lanes", ParamType::Int { min: 1, max: 8 }, "3", "lanes"),
    ParamSpec::new(
        "read_ahead",
        ParamType::Int { min: 0, max: 8 },
        "2",
        "read-ahead",
    ),
];

impl StageKind for Pipelined {
    fn name(&self) -> &'static str {
        "pipelined"
    }
    fn about(&self) -> &'static str {
        "test"
    }
    fn code_version(&self) -> &'static str {
        "1"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PIPE_PARAMS
    }
    fn inputs(&self) -> &'static [InputSpec] {
        &[]
    }
    fn schema(&self) -> &'static str {
        "train_metrics"
    }
    fn plan(&self, ctx: &StageCtx) -> simgan::Result<Vec<UnitSpec>> {
        Numbers.plan(ctx)
    }
    fn read_ahead(&self, ctx: &StageCtx) -> simgan::Result<usize> {
        ctx.params.usize("read_ahead")
    }
    fn lanes(&self, ctx: &StageCtx) -> simgan::Result<usize> {
        ctx.params.usize("lanes")
    }
    fn prepare(
        &self,
        _ctx: &StageCtx,
        unit: &UnitSpec,
    ) -> simgan::Result<simgan::stages::PreparedInput> {
        let mut a = self.ahead.lock().unwrap();
        a.0 += 1;
        a.1 = a.1.max(a.0);
        Ok(Box::new(unit.index))
    }
    fn run_prepared(
        &self,
        ctx: &StageCtx,
        unit: &UnitSpec,
        prepared: simgan::stages::PreparedInput,
        _lane: usize,
        out: &mut UnitOutput,
    ) -> simgan::Result<()> {
        self.ahead.lock().unwrap().0 -= 1;
        assert_eq!(*prepared.downcast::<usize>().unwrap(), unit.index);
        {
            let mut r = self.running.lock().unwrap();
            r.0 += 1;
            r.1 = r.1.max(r.0);
        }
        std::thread::sleep(Duration::from_millis(20));
        let res = Numbers.run_unit(ctx, unit, out);
        self.running.lock().unwrap().0 -= 1;
        res
    }
    fn run_unit(
        &self,
        ctx: &StageCtx,
        unit: &UnitSpec,
        out: &mut UnitOutput,
    ) -> simgan::Result<()> {
        Numbers.run_unit(ctx, unit, out)
    }
}

fn registry() -> Registry {
    simgan::registry::builtin()
        .with(Arc::new(Numbers))
        .with(Arc::new(Sum))
}

fn pipeline(n: i64, scale: f64) -> Pipeline {
    let text = format!(
        r#"
name = "test"
[stages.a]
kind = "numbers"
params = {{ n = {n}, per = 3 }}
[stages.b]
kind = "numbers"
params = {{ n = 4, scale = {scale} }}
[stages.total]
kind = "sum"
inputs = {{ data = "b" }}
"#
    );
    Pipeline::parse(&text, "test.toml", &registry()).unwrap()
}

fn states(p: &Pipeline, root: &Root) -> Vec<(String, State)> {
    runner::status(p, root, false)
        .unwrap()
        .into_iter()
        .map(|s| (s.name, s.state))
        .collect()
}

fn staleness_cycle(root: &Root) {
    let p = pipeline(10, 1.0);
    assert!(states(&p, root).iter().all(|(_, s)| *s == State::Missing));
    let r = runner::run(&p, root, &RunOptions::default()).unwrap();
    assert_eq!(
        r.ran.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
        vec!["a", "b", "total"]
    );
    assert_eq!(r.ran[0].rows, 10);
    assert!(states(&p, root).iter().all(|(_, s)| *s == State::UpToDate));

    // A second run skips every stage.
    let r = runner::run(&p, root, &RunOptions::default()).unwrap();
    assert!(r.ran.is_empty() && r.plan.iter().all(|d| !d.run));

    // A param change marks that stage and its downstream stale, nothing upstream or beside.
    let p2 = pipeline(10, 2.0);
    let st = runner::status(&p2, root, false).unwrap();
    assert_eq!(
        st.iter()
            .map(|s| (s.name.as_str(), s.state))
            .collect::<Vec<_>>(),
        vec![
            ("a", State::UpToDate),
            ("b", State::Stale),
            ("total", State::Stale)
        ]
    );
    assert!(
        st[1].reason.contains("params changed: scale"),
        "{}",
        st[1].reason
    );
    assert!(st[2].reason.contains("upstream `b`"), "{}", st[2].reason);
    let r = runner::run(&p2, root, &RunOptions::default()).unwrap();
    assert_eq!(
        r.ran.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
        vec!["b", "total"]
    );
    let total = manifest::latest(root, "total").unwrap().unwrap();
    assert_eq!(total.manifest.version, 2);
    assert!(matches!(
        &total.manifest.inputs["data"],
        manifest::InputRef::Stage { version: 2, .. }
    ));
    let batches = simgan::shards::read(root, &total.manifest.shards[0], None).unwrap();
    let sum = batches[0]
        .column_by_name("loss")
        .unwrap()
        .as_any()
        .downcast_ref::<Float32Array>()
        .unwrap()
        .value(0);
    assert_eq!(sum, 2.0 * (1 + 2 + 3) as f32);

    // --stage runs only that stage on its existing inputs; --force reruns an up-to-date stage.
    let only = RunOptions {
        only: vec!["total".into()],
        force: true,
        ..Default::default()
    };
    let r = runner::run(&p2, root, &only).unwrap();
    assert_eq!(
        r.ran.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
        vec!["total"]
    );
    // --from runs the stage and everything downstream.
    let from = RunOptions {
        from: vec!["b".into()],
        ..Default::default()
    };
    let r = runner::run(&p2, root, &from).unwrap();
    assert_eq!(
        r.ran.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
        vec!["b", "total"]
    );
    // --dry-run plans without running.
    let dry = RunOptions {
        force: true,
        dry_run: true,
        ..Default::default()
    };
    let r = runner::run(&p2, root, &dry).unwrap();
    assert!(r.ran.is_empty() && r.plan.iter().all(|d| d.run));
    assert_eq!(manifest::versions(root, "a").unwrap(), vec![1]);
}

#[test]
fn staleness_and_reruns_on_local_disk() {
    let dir = util::tempdir();
    staleness_cycle(&util::open(dir.path().to_str().unwrap()));
}

#[test]
#[ignore = "needs the moto S3 server (SIMGAN_MOTO_SERVER): ci/test.sh installs and starts it"]
fn staleness_and_reruns_on_s3() {
    let bucket = util::s3_bucket();
    staleness_cycle(&util::open(&format!("{bucket}/runs/test")));
}

#[test]
fn a_failed_unit_commits_nothing_and_the_rerun_reuses_finished_units() {
    let dir = util::tempdir();
    let root = util::open(dir.path().to_str().unwrap());
    let p = pipeline(10, 1.0);
    let stage = p.stage("a").unwrap();
    root.put("_fail_unit", b"2".to_vec()).unwrap();
    let err = runner::run_stage(stage, &root, None, false)
        .unwrap_err()
        .to_string();
    root.delete("_fail_unit").unwrap();
    assert!(
        err.contains("injected failure") && err.contains("`a`"),
        "{err}"
    );
    assert!(
        manifest::versions(&root, "a").unwrap().is_empty(),
        "a failed stage must not commit"
    );
    let out = runner::run_stage(stage, &root, None, false).unwrap();
    assert_eq!((out.units_reused, out.units_run, out.rows), (2, 2, 10));
    let m = manifest::latest(&root, "a").unwrap().unwrap().manifest;
    let mut steps = Vec::new();
    for s in &m.shards {
        assert!(simgan::shards::verify(&root, s).unwrap());
        for b in simgan::shards::read(&root, s, None).unwrap() {
            steps.extend(
                b.column_by_name("step")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .iter()
                    .copied(),
            );
        }
    }
    assert_eq!(
        steps,
        (0..10).collect::<Vec<_>>(),
        "every row exactly once, in order"
    );
}

/// Every `step` of a committed stage, in shard order, with each shard's checksum verified.
fn committed_steps(root: &Root, stage: &str) -> Vec<i64> {
    let m = manifest::latest(root, stage).unwrap().unwrap().manifest;
    let mut steps = Vec::new();
    for s in &m.shards {
        assert!(simgan::shards::verify(root, s).unwrap());
        for b in simgan::shards::read(root, s, None).unwrap() {
            let col = b.column_by_name("step").unwrap();
            let col = col.as_any().downcast_ref::<Int64Array>().unwrap();
            steps.extend(col.values().iter().copied());
        }
    }
    steps
}

#[test]
fn pipelined_units_run_on_lanes_with_bounded_read_ahead_and_resume_exactly() {
    let dir = util::tempdir();
    let root = util::open(dir.path().to_str().unwrap());
    let kind = Arc::new(Pipelined {
        ahead: std::sync::Mutex::new((0, 0)),
        running: std::sync::Mutex::new((0, 0)),
    });
    let registry = simgan::registry::builtin().with(kind.clone());
    let text = "name = \"t\"\n[stages.p]\nkind = \"pipelined\"\nparams = { n = 60, per = 2, lanes = 3, read_ahead = 2 }\n";
    let p = Pipeline::parse(text, "t.toml", &registry).unwrap();
    let stage = p.stage("p").unwrap();

    // A failing unit stops the pipeline: nothing is committed, finished units are kept.
    root.put("_fail_unit", b"17".to_vec()).unwrap();
    let err = runner::run_stage(stage, &root, None, false)
        .unwrap_err()
        .to_string();
    root.delete("_fail_unit").unwrap();
    assert!(err.contains("injected failure"), "{err}");
    assert!(manifest::versions(&root, "p").unwrap().is_empty());

    // Units prepared for the failed run and never taken are dropped: count afresh.
    *kind.ahead.lock().unwrap() = (0, 0);
    *kind.running.lock().unwrap() = (0, 0);
    let out = runner::run_stage(stage, &root, None, false).unwrap();
    assert_eq!(out.units_reused + out.units_run, 30);
    assert!(out.units_reused >= 10, "finished units are reused: {out:?}");
    assert_eq!(out.rows, 60);
    let mut steps = committed_steps(&root, "p");
    steps.sort();
    assert_eq!(steps, (0..60).collect::<Vec<_>>(), "every row exactly once");
    let (ahead, running) = (kind.ahead.lock().unwrap().1, kind.running.lock().unwrap().1);
    // Prepared-but-not-running units: the channel's `read_ahead`, plus one in each lane's hand
    // and one the reader is sending.
    assert!(ahead <= 2 + 3 + 1, "read-ahead unbounded: {ahead}");
    assert!(
        (2..=3).contains(&running),
        "lanes: {running} units ran at once"
    );
}

#[test]
fn a_corrupted_finished_shard_is_redone_on_resume() {
    let dir = util::tempdir();
    let root = util::open(dir.path().to_str().unwrap());
    let p = pipeline(10, 1.0);
    let stage = p.stage("a").unwrap();
    root.put("_fail_unit", b"3".to_vec()).unwrap();
    let _ = runner::run_stage(stage, &root, None, false).unwrap_err();
    root.delete("_fail_unit").unwrap();
    root.put("a/v00000001/part-00001.parquet", b"garbage".to_vec())
        .unwrap();
    let out = runner::run_stage(stage, &root, None, false).unwrap();
    assert_eq!((out.units_reused, out.units_run, out.rows), (2, 2, 10));
}

#[test]
#[ignore = "needs the moto S3 server (SIMGAN_MOTO_SERVER): ci/test.sh installs and starts it"]
fn leases_admit_one_run_and_expired_ones_are_taken_over() {
    use simgan::lease::Lease;
    let bucket = util::s3_bucket();
    let root = util::open(&format!("{bucket}/leases"));
    let ttl = Duration::from_secs(30);
    // Racing acquirers: exactly one wins.
    let winners: Vec<Lease> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| Lease::acquire(&root, "racer", ttl, false).ok()))
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(winners.len(), 1, "exactly one concurrent run proceeds");
    let err = Lease::acquire(&root, "second", ttl, false)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("racer") && err.contains(&std::process::id().to_string()),
        "names the holder: {err}"
    );

    // --wait: the second run proceeds once the first releases.
    let holder = winners.into_iter().next().unwrap();
    let waiter = std::thread::spawn({
        let root = root.clone();
        move || Lease::acquire(&root, "waiter", ttl, true).map(|l| l.owner().to_string())
    });
    std::thread::sleep(Duration::from_millis(800));
    holder.release().unwrap();
    assert!(waiter.join().unwrap().is_ok());

    // An expired lease (a crashed holder on another host) is taken over.
    let stale = simgan::lease::LeaseRecord {
        generation: 100,
        owner: "elsewhere:1:1".into(),
        host: "some-other-host".into(),
        pid: 1,
        expires_at: 1,
        released: false,
        purpose: "crashed run".into(),
        ttl_s: 30,
        process_space: String::new(),
        start_time: 0,
    };
    root.put(
        "_lease/0000000100.json",
        serde_json::to_vec(&stale).unwrap(),
    )
    .unwrap();
    let l = Lease::acquire(&root, "taker", ttl, false).unwrap();
    assert_eq!(
        simgan::lease::current(&root).unwrap().unwrap().generation,
        101
    );
    l.check().unwrap();
}

#[test]
fn validation_errors_name_the_stage_and_key() {
    let reg = registry();
    let cases: &[(&str, &str)] = &[
        (
            "[stages.x]\nkind = \"nope\"",
            "stage `x`: unknown kind `nope`",
        ),
        (
            "[stages.x]\nkind = \"numbers\"\nparams = { m = 1 }",
            "stage `x`: unknown param `m`",
        ),
        (
            "[stages.x]\nkind = \"numbers\"\nparams = { n = \"ten\" }",
            "stage `x`: param `n`: expected integer",
        ),
        (
            "[stages.x]\nkind = \"sum\"",
            "stage `x`: missing required input `data`",
        ),
        (
            "[stages.x]\nkind = \"sum\"\ninputs = { data = \"y\" }",
            "input `data` refers to unknown stage `y`",
        ),
        (
            "[stages.x]\nkind = \"sum\"\ninputs = { data = \"./d\" }",
            "input `data` must be a stage name",
        ),
        (
            "[stages.x]\nkind = \"sum\"\ninputs = { dat = \"x\" }",
            "stage `x`: unknown input `dat`",
        ),
        (
            "[stages.x]\nkind = \"sum\"\ninputs = { data = \"y\" }\n[stages.y]\nkind = \"sum\"\ninputs = { data = \"x\" }",
            "cycle between stages: x → y",
        ),
        (
            "[stages.x]\nkind = \"generate-eyes\"",
            "stage `x`: missing required param `domain`",
        ),
        (
            "[stages.x]\nkind = \"generate-eyes\"\nparams = { domain = \"mars\" }",
            "param `domain`: expected one of",
        ),
        ("stages = 3", "test.toml"),
    ];
    for (body, want) in cases {
        let text = format!("name = \"t\"\n{body}\n");
        let err: PipelineError = Pipeline::parse(&text, "test.toml", &reg)
            .err()
            .unwrap_or_else(|| panic!("{body} must not validate"));
        assert!(
            err.to_string().contains(want),
            "{body}\n→ {err}\nwanted: {want}"
        );
    }
}

#[test]
fn shipped_pipelines_validate() {
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines")).unwrap() {
        let path = entry.unwrap().path();
        let p = Pipeline::load(&path, &simgan::registry::builtin())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(p.stages.len() >= 2, "{}", path.display());
    }
}
