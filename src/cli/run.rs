//! `simgan run` (ending with what its report stages found), `simgan status` and `simgan report`.

use std::time::Duration;

use clap::Args;

use super::{PipelineArgs, parse_secs};
use crate::runner::{self, RunOptions, State, WorkerOutcome, WorkerSlot};
use crate::stages::report::Finding;

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    target: PipelineArgs,
    /// Run only this stage on its existing inputs (repeatable).
    #[arg(long = "stage", value_name = "STAGE")]
    only: Vec<String>,
    /// Run this stage (forced) and everything downstream (repeatable).
    #[arg(long, value_name = "STAGE", conflicts_with = "only")]
    from: Vec<String>,
    /// Rerun even if up to date.
    #[arg(long)]
    force: bool,
    /// Print the plan and why each stage would run; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Wait for another run on the same root to finish instead of failing.
    #[arg(long)]
    wait: bool,
    /// Lease time-to-live in seconds (renewed every third of it).
    #[arg(long, value_parser = parse_secs, default_value = "60")]
    lease_ttl: Duration,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Check the stored objects of up-to-date stages against their manifests (reads every
    /// byte); a damaged stage is rebuilt as a new version, and everything downstream reruns.
    #[arg(long)]
    verify: bool,
    /// Distributed worker: process unit share I of N of the one `--stage` (no root lease; the
    /// last worker to finish commits the manifest). Also read from SLURM_ARRAY_TASK_ID /
    /// SLURM_ARRAY_TASK_COUNT or JOB_COMPLETION_INDEX with `--workers N`.
    #[arg(long, value_name = "I/N", value_parser = parse_slot, requires = "only")]
    worker: Option<WorkerSlot>,
    /// Number of workers, with the index taken from SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX.
    #[arg(long, value_name = "N", requires = "only", conflicts_with = "worker")]
    workers: Option<usize>,
    /// Only commit the `--stage`'s manifest if every unit is done (a finalize step after workers).
    #[arg(long, requires = "only", conflicts_with_all = ["worker", "workers"])]
    finalize: bool,
}

fn parse_slot(s: &str) -> Result<WorkerSlot, String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("`{s}`: expected I/N, e.g. 0/4"))?;
    let slot: usize = i.parse().map_err(|e| format!("`{s}`: {e}"))?;
    let count: usize = n.parse().map_err(|e| format!("`{s}`: {e}"))?;
    if count == 0 || slot >= count {
        return Err(format!("`{s}`: need 0 <= I < N"));
    }
    Ok(WorkerSlot { slot, count })
}

/// The worker slot from flags or the scheduler's environment.
fn worker_slot(a: &RunArgs) -> anyhow::Result<Option<WorkerSlot>> {
    if let Some(w) = a.worker {
        return Ok(Some(w));
    }
    let env = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
    };
    let slurm = match env("SLURM_ARRAY_TASK_ID") {
        Some(i) => {
            let min = env("SLURM_ARRAY_TASK_MIN").unwrap_or(0);
            Some(i.checked_sub(min).ok_or_else(|| {
                anyhow::anyhow!("SLURM_ARRAY_TASK_ID {i} is below SLURM_ARRAY_TASK_MIN {min}")
            })?)
        }
        None => None,
    };
    let index = slurm.or_else(|| env("JOB_COMPLETION_INDEX"));
    match (a.workers, index) {
        (Some(count), Some(slot)) if slot < count => Ok(Some(WorkerSlot { slot, count })),
        (Some(count), Some(slot)) => {
            anyhow::bail!("worker index {slot} from the environment is not below --workers {count}")
        }
        (Some(_), None) => anyhow::bail!(
            "--workers needs SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX in the environment (or use --worker I/N)"
        ),
        (None, _) => Ok(None),
    }
}

pub fn run(a: RunArgs, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let (pipeline, root) = a.target.load(rt)?;
    let slot = worker_slot(&a)?;
    if slot.is_some() || a.finalize {
        let [name] = a.only.as_slice() else {
            anyhow::bail!("worker mode runs exactly one --stage")
        };
        let stage = pipeline.stage(name)?;
        let outcome = runner::run_worker(stage, &root, slot)?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&outcome)?);
            return Ok(());
        }
        match outcome {
            WorkerOutcome::Committed(o) => println!(
                "{:<20} v{} {} rows committed ({} units by this worker)",
                o.name, o.version, o.rows, o.units_run
            ),
            WorkerOutcome::AlreadyCommitted { version } => {
                println!("{name:<20} v{version} already committed")
            }
            WorkerOutcome::UnitsDone { done, total, ran } => {
                println!("{name:<20} {done}/{total} units done ({ran} by this worker)")
            }
        }
        return Ok(());
    }
    let opts = RunOptions {
        only: a.only,
        from: a.from,
        force: a.force,
        dry_run: a.dry_run,
        wait: a.wait,
        lease_ttl: a.lease_ttl,
        progress: !a.json,
        verify: a.verify,
    };
    let started = std::time::Instant::now();
    let report = runner::run(&pipeline, &root, &opts)?;
    // What the run's report stages found: those it ran or found up to date (a report left out
    // by `--stage` may describe older inputs; none on a dry run, which committed nothing).
    let mut findings = Vec::new();
    if !a.dry_run {
        for stage in pipeline.stages.iter().filter(|s| s.kind.name() == "report") {
            if report.plan.iter().any(|d| d.name == stage.name) {
                findings.extend(Finding::read(&root, &stage.name)?);
            }
        }
    }
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["findings"] = serde_json::to_value(&findings)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if a.dry_run {
        println!("plan for {} on {}:", pipeline.name, root.url());
        for d in &report.plan {
            println!(
                "  {:<20} {:<5} {}",
                d.name,
                if d.run { "run" } else { "skip" },
                d.reason
            );
        }
        return Ok(());
    }
    for d in report.plan.iter().filter(|d| !d.run) {
        println!("{:<20} up to date", d.name);
    }
    for r in &report.ran {
        let resumed = if r.units_reused > 0 {
            format!(" ({} units resumed)", r.units_reused)
        } else {
            String::new()
        };
        println!(
            "{:<20} v{} {} rows in {:.1}s{resumed}",
            r.name, r.version, r.rows, r.seconds
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let fresh = report.plan.len() - report.ran.len();
    if report.ran.is_empty() {
        println!(
            "\n{} on {}: nothing to do, all {fresh} stages current",
            pipeline.name,
            root.url()
        );
    } else {
        let current = if fresh > 0 {
            format!(", {fresh} were current")
        } else {
            String::new()
        };
        println!(
            "\n{} on {}: {} stages ran in {}{current}",
            pipeline.name,
            root.url(),
            report.ran.len(),
            super::human_secs(seconds),
        );
    }
    for f in &findings {
        print_finding(f);
    }
    Ok(())
}

/// A report's headline, checks and page, as `run` ends and `simgan report` prints them.
pub(super) fn print_finding(f: &Finding) {
    let what = f.task.as_deref().unwrap_or("report");
    match &f.headline {
        Some(h) => println!("{} ({what}): {h}", f.stage),
        None => println!(
            "{} ({what}): no headline (the run did not score refined- and synthetic-trained estimators side by side)",
            f.stage
        ),
    }
    for c in &f.checks {
        println!("  check: {c}");
    }
    if let Some(page) = &f.page {
        println!("  report: {page}");
    }
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Run root (a path or URL, as for `run --root`).
    root: String,
    /// Only this report stage (default: every stage whose latest version is a report).
    #[arg(long)]
    stage: Option<String>,
    /// JSON: [{"stage","version","task","headline","checks","page","finished_at"}].
    #[arg(long)]
    json: bool,
}

/// `simgan report ROOT`: what a finished run's report stages found, again.
pub fn report(a: ReportArgs, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let root = crate::storage::Root::open_existing(&a.root, rt.handle().clone())?;
    let stages = match &a.stage {
        Some(s) => vec![s.clone()],
        None => root
            .list_dirs("")?
            .into_iter()
            .filter(|d| !d.starts_with('_'))
            .collect(),
    };
    let mut findings = Vec::new();
    for stage in &stages {
        findings.extend(Finding::read(&root, stage)?);
    }
    if findings.is_empty() {
        match &a.stage {
            Some(s) => anyhow::bail!("{}: `{s}` has no committed report version", root.url()),
            None => anyhow::bail!("{}: no stage has a committed report version", root.url()),
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&findings)?);
        return Ok(());
    }
    for f in &findings {
        println!("{} v{} ({})", f.stage, f.version, f.finished_at);
        print_finding(f);
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    target: PipelineArgs,
    /// JSON for schedulers: {"stages":[{"name","state","reason",…}]}.
    #[arg(long)]
    json: bool,
    /// Also check up-to-date stages' stored objects against their manifests (reads every
    /// byte); a damaged stage shows as `damaged` and the command exits 1.
    #[arg(long)]
    verify: bool,
}

pub fn status(a: StatusArgs, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let (pipeline, root) = a.target.load(rt)?;
    let stages = runner::status(&pipeline, &root, a.verify)?;
    let damaged: Vec<&str> = stages
        .iter()
        .filter(|s| s.state == State::Damaged)
        .map(|s| s.name.as_str())
        .collect();
    let fail_if_damaged = || {
        if damaged.is_empty() {
            Ok(())
        } else {
            Err(anyhow::anyhow!(
                "damaged: {} (rebuild with `simgan run … --verify`)",
                damaged.join(", ")
            ))
        }
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "pipeline": pipeline.name, "root": root.url(), "stages": stages })
            )?
        );
        return fail_if_damaged();
    }
    for s in &stages {
        let state = match s.state {
            State::UpToDate => "up-to-date",
            State::Stale => "stale",
            State::Missing => "missing",
            State::Damaged => "damaged",
        };
        let version = s.version.map(|v| format!("v{v}")).unwrap_or_default();
        let units = s
            .units
            .map(|[d, t]| format!(" ({d}/{t} units done)"))
            .unwrap_or_default();
        println!(
            "{:<20} {:<11} {:<6} {}{units}",
            s.name, state, version, s.reason
        );
    }
    fail_if_damaged()
}
