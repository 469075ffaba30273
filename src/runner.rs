//! Running a pipeline: deciding from manifests alone what is stale, executing stages unit by unit,
//! resuming interrupted attempts, committing manifests.
//!
//! A stage run writes version N = latest + 1 under `<stage>/vN/`. It first records its attempt
//! (`_attempt.json`: fingerprint and plan digest). Each finished unit writes its shard, then a unit
//! record (`_units/NNNNN.json`, with size and checksum). A rerun after a crash finds the attempt;
//! if the fingerprint and plan match it keeps every unit whose record exists and whose shard still
//! verifies, deletes everything else in the folder, and runs the rest — so every output row is
//! written exactly once. The manifest is committed last, with create-if-absent.
//!
//! Units run one after another, unless the kind asks for a pipeline (`StageKind::read_ahead`,
//! `StageKind::lanes`): then a reader thread prepares units (fetch, decode) at most `read_ahead`
//! ahead through a bounded channel and `lanes` threads run them, each committing its unit record
//! as it finishes; the first error stops the reader, and records already written are kept for
//! the resume.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lease::Lease;
use crate::manifest::{self, Committed, FingerprintParts, InputRef, Manifest, Skipped, Timings};
use crate::pipeline::{Input, Pipeline, Stage};
use crate::shards::{self, ShardInfo};
use crate::stages::{PreparedInput, ResolvedInput, StageCtx, UnitOutput, UnitSpec};
use crate::storage::{Root, redact};
use crate::verify::Damage;

/// Whether a stage's latest version matches what the pipeline asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// The latest version has the expected fingerprint.
    UpToDate,
    /// A version exists but params, code, or inputs changed.
    Stale,
    /// No version exists.
    Missing,
    /// The latest version has the expected fingerprint, but its stored objects no longer match
    /// its manifest (only found with verification on: `--verify`).
    Damaged,
}

/// The status of one stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageStatus {
    /// Stage name.
    pub name: String,
    /// Up to date, stale or missing.
    pub state: State,
    /// Why (empty when up to date).
    pub reason: String,
    /// Latest committed version, if any.
    pub version: Option<u64>,
    /// Rows of the latest version.
    pub rows: Option<u64>,
    /// Units finished / planned of an attempt in progress (e.g. distributed workers), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub units: Option<[usize; 2]>,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Run only these stages, on their existing inputs (`--stage`).
    pub only: Vec<String>,
    /// Run these stages (forced) and everything downstream (`--from`).
    pub from: Vec<String>,
    /// Rerun even if up to date (`--force`).
    pub force: bool,
    /// Print the plan only (`--dry-run`).
    pub dry_run: bool,
    /// Wait for the root's lease instead of failing (`--wait`).
    pub wait: bool,
    /// Lease time-to-live; renewed every third of it.
    pub lease_ttl: Duration,
    /// Show progress bars (when stderr is a terminal).
    pub progress: bool,
    /// Verify the stored objects of up-to-date stages; a damaged one is rebuilt as a new
    /// version (`--verify`).
    pub verify: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            only: vec![],
            from: vec![],
            force: false,
            dry_run: false,
            wait: false,
            lease_ttl: Duration::from_secs(60),
            progress: false,
            verify: false,
        }
    }
}

/// The decision for one stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    /// Stage name.
    pub name: String,
    /// Whether it runs.
    pub run: bool,
    /// Why it runs or is skipped.
    pub reason: String,
    /// It runs because its latest version failed verification.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub damaged: bool,
}

/// What one stage run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageOutcome {
    /// Stage name.
    pub name: String,
    /// Committed version.
    pub version: u64,
    /// Rows written.
    pub rows: u64,
    /// Units reused from an interrupted attempt.
    pub units_reused: usize,
    /// Units run now.
    pub units_run: usize,
    /// Wall seconds.
    pub seconds: f64,
}

/// The result of `run`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunReport {
    /// Per-stage decisions, in order.
    pub plan: Vec<Decision>,
    /// Stages that ran.
    pub ran: Vec<StageOutcome>,
}

/// A stage's inputs: opened, as the fingerprint records them, and each location's listing.
type Inputs = (
    BTreeMap<String, ResolvedInput>,
    BTreeMap<String, InputRef>,
    BTreeMap<String, String>,
);

/// Resolve a stage's inputs from the latest committed manifests (or opened locations). Each
/// location is listed (never read): its listing's digest is part of the fingerprint, so new,
/// removed or rewritten raw files make the stage stale.
fn resolve_inputs(stage: &Stage, root: &Root) -> Result<Inputs> {
    let mut resolved = BTreeMap::new();
    let mut refs = BTreeMap::new();
    let mut listings = BTreeMap::new();
    for (role, input) in &stage.inputs {
        match input {
            Input::Stage(s) => {
                let committed = manifest::latest(root, s)?.ok_or_else(|| Error::InputMissing {
                    stage: stage.name.clone(),
                    input: s.clone(),
                })?;
                refs.insert(
                    role.clone(),
                    InputRef::Stage {
                        stage: s.clone(),
                        version: committed.manifest.version,
                        digest: committed.digest.clone(),
                    },
                );
                resolved.insert(
                    role.clone(),
                    ResolvedInput::Stage {
                        stage: s.clone(),
                        committed: Box::new(committed),
                    },
                );
            }
            Input::Location(loc) => {
                let opened = Root::open(loc, root.runtime().clone())?;
                let (lines, files, bytes) = manifest::listing_lines(&opened.list("")?);
                refs.insert(
                    role.clone(),
                    InputRef::Location {
                        location: redact(loc),
                        listing: Some(manifest::SourceListing::of(&lines, files, bytes)),
                    },
                );
                listings.insert(role.clone(), lines);
                resolved.insert(
                    role.clone(),
                    ResolvedInput::Location {
                        location: redact(loc),
                        root: opened,
                    },
                );
            }
        }
    }
    Ok((resolved, refs, listings))
}

/// Where a version keeps the listing of its location input `role` (gzipped text).
fn listing_path(prefix: &str, role: &str) -> String {
    format!("{prefix}/_source/{role}.tsv.gz")
}

/// The listing a committed version recorded for `role`, if it has one.
fn recorded_listing(root: &Root, m: &Manifest, role: &str) -> Result<Option<String>> {
    use std::io::Read;
    let rel = listing_path(&m.data_prefix, role);
    let Some(info) = m.artifacts.iter().find(|a| a.path == rel) else {
        return Ok(None);
    };
    let gz = shards::fetch(root, info)?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .map_err(|source| Error::Input {
            file: root.url_of(&rel),
            field: "listing".into(),
            reason: source.to_string(),
        })?;
    Ok(Some(text))
}

/// Explain why `latest` does not match the expected parts (a location's change from the listing
/// the version recorded: files added, removed, changed).
fn stale_reason(
    root: &Root,
    latest: &Manifest,
    stage: &Stage,
    refs: &BTreeMap<String, InputRef>,
    listings: &BTreeMap<String, String>,
) -> String {
    if latest.kind != stage.kind.name() {
        return format!("kind changed ({} → {})", latest.kind, stage.kind.name());
    }
    if latest.code_version != stage.kind.code_version() {
        return format!(
            "code version changed ({} → {})",
            latest.code_version,
            stage.kind.code_version()
        );
    }
    let params = stage.params.to_json();
    if latest.params != params {
        let mut keys: Vec<String> = Vec::new();
        if let (Some(a), Some(b)) = (latest.params.as_object(), params.as_object()) {
            for (k, v) in b {
                if a.get(k) != Some(v) {
                    keys.push(k.clone());
                }
            }
            keys.extend(a.keys().filter(|k| !b.contains_key(*k)).cloned());
        }
        return format!("params changed: {}", keys.join(", "));
    }
    for (role, r) in refs {
        match (latest.inputs.get(role), r) {
            (
                Some(InputRef::Stage {
                    stage: s0,
                    version: v0,
                    ..
                }),
                InputRef::Stage {
                    stage: s1,
                    version: v1,
                    ..
                },
            ) if s0 == s1 && v0 != v1 => {
                return format!("input `{role}` has a new version ({s1} v{v0} → v{v1})");
            }
            (
                Some(InputRef::Location {
                    location: l0,
                    listing: Some(_),
                }),
                InputRef::Location { location: l1, .. },
            ) if l0 == l1 && latest.inputs.get(role) != Some(r) => {
                let old = recorded_listing(root, latest, role).ok().flatten();
                let diff = match (old, listings.get(role)) {
                    (Some(old), Some(new)) => manifest::listing_diff(&old, new),
                    _ => "listing differs".into(),
                };
                return format!("source `{role}` changed: {diff}");
            }
            (old, new) if old != Some(new) => return format!("input `{role}` changed"),
            _ => {}
        }
    }
    "fingerprint differs".into()
}

/// Decide, from manifests alone (and, with `opts.verify`, the stored objects of up-to-date
/// stages), what `run` would do.
pub fn plan(pipeline: &Pipeline, root: &Root, opts: &RunOptions) -> Result<Vec<Decision>> {
    plan_with(pipeline, root, opts, &[])
}

/// [`plan`], with `rebuild` stages treated as damaged without verifying them again.
fn plan_with(
    pipeline: &Pipeline,
    root: &Root,
    opts: &RunOptions,
    rebuild: &[String],
) -> Result<Vec<Decision>> {
    let selected: Vec<String> = if !opts.from.is_empty() {
        pipeline.downstream_of(&opts.from)?
    } else if !opts.only.is_empty() {
        opts.only
            .iter()
            .map(|s| pipeline.stage(s).map(|st| st.name.clone()))
            .collect::<Result<_, _>>()?
    } else {
        pipeline.stages.iter().map(|s| s.name.clone()).collect()
    };
    let mut will_run: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for stage in &pipeline.stages {
        if !selected.contains(&stage.name) {
            continue;
        }
        let forced = opts.force || opts.from.contains(&stage.name);
        let upstream_rerun = stage
            .upstream()
            .find(|u| will_run.iter().any(|w| w == u))
            .map(str::to_string);
        let verify = opts.verify && !forced && !rebuild.contains(&stage.name);
        let (run, reason, damaged) = if let Some(u) = upstream_rerun {
            (true, format!("upstream `{u}` reruns"), false)
        } else {
            match status_of(stage, root, verify)? {
                (State::UpToDate, _) if forced => (true, "forced".to_string(), false),
                (State::UpToDate, _) if rebuild.contains(&stage.name) => {
                    (true, "damaged (found before the lease)".to_string(), true)
                }
                (State::UpToDate, _) => (false, "up to date".to_string(), false),
                (state, reason) => (true, reason, state == State::Damaged),
            }
        };
        if run {
            will_run.push(stage.name.clone());
        }
        out.push(Decision {
            name: stage.name.clone(),
            run,
            reason,
            damaged,
        });
    }
    Ok(out)
}

/// State and reason of one stage against the current manifests of its inputs; with `verify`, an
/// up-to-date stage's stored objects are checked too.
fn status_of(stage: &Stage, root: &Root, verify: bool) -> Result<(State, String)> {
    let latest = manifest::latest(root, &stage.name)?;
    let (refs, listings) = match resolve_inputs(stage, root) {
        Ok((_, refs, listings)) => (refs, listings),
        Err(Error::InputMissing { input, .. }) => {
            let state = if latest.is_some() {
                State::Stale
            } else {
                State::Missing
            };
            return Ok((state, format!("input stage `{input}` has no version yet")));
        }
        Err(e) => return Err(e),
    };
    let params = stage.params.to_json();
    let parts = FingerprintParts {
        kind: stage.kind.name(),
        code_version: stage.kind.code_version(),
        params: &params,
        inputs: &refs,
    };
    Ok(match latest {
        None => (State::Missing, "never run".into()),
        Some(c) if c.manifest.fingerprint == parts.fingerprint() => {
            let check = if verify {
                Some(crate::verify::version(root, &c)?)
            } else {
                None
            };
            match check {
                Some(check) if !check.ok() => (
                    State::Damaged,
                    format!(
                        "latest version v{} is {}",
                        c.manifest.version,
                        check.summary()
                    ),
                ),
                _ => (State::UpToDate, String::new()),
            }
        }
        Some(c) => (
            State::Stale,
            stale_reason(root, &c.manifest, stage, &refs, &listings),
        ),
    })
}

/// The status of every stage; a stage downstream of a stale, missing or damaged one is stale
/// too. With `verify`, up-to-date stages' stored objects are checked against their manifests.
pub fn status(pipeline: &Pipeline, root: &Root, verify: bool) -> Result<Vec<StageStatus>> {
    let opts = RunOptions {
        verify,
        ..RunOptions::default()
    };
    let decisions = plan(pipeline, root, &opts)?;
    let mut out = Vec::new();
    for d in decisions {
        let latest = manifest::latest(root, &d.name)?;
        let state = match (&latest, d.run) {
            (_, false) => State::UpToDate,
            (None, true) => State::Missing,
            (Some(_), true) if d.damaged => State::Damaged,
            (Some(_), true) => State::Stale,
        };
        let reason = if d.run { d.reason } else { String::new() };
        let name = d.name.clone();
        out.push(StageStatus {
            name: d.name,
            state,
            reason,
            version: latest.as_ref().map(|c| c.manifest.version),
            rows: latest.as_ref().map(|c| c.manifest.rows),
            units: if state == State::UpToDate {
                None
            } else {
                attempt_progress(root, &name)?.map(|(d, t)| [d, t])
            },
        });
    }
    Ok(out)
}

/// Run a pipeline on a root: take the lease, run what the plan says, release.
pub fn run(pipeline: &Pipeline, root: &Root, opts: &RunOptions) -> Result<RunReport> {
    let decisions = plan(pipeline, root, opts)?;
    let mut report = RunReport {
        plan: decisions.clone(),
        ran: vec![],
    };
    if opts.dry_run || decisions.iter().all(|d| !d.run) {
        return Ok(report);
    }
    let lease = Lease::acquire(
        root,
        &format!("simgan run {}", pipeline.name),
        opts.lease_ttl,
        opts.wait,
    )?;
    // Re-plan under the lease: another run may have committed while we waited. Stages found
    // damaged are not verified a second time.
    let damaged: Vec<String> = decisions
        .iter()
        .filter(|d| d.damaged)
        .map(|d| d.name.clone())
        .collect();
    let unverified = RunOptions {
        verify: false,
        ..opts.clone()
    };
    let decisions = plan_with(pipeline, root, &unverified, &damaged)?;
    report.plan = decisions.clone();
    for d in decisions.iter().filter(|d| d.run) {
        let stage = pipeline.stage(&d.name)?;
        tracing::info!(stage = %stage.name, reason = %d.reason, "running stage");
        let outcome = run_stage(stage, root, Some(&lease), opts.progress)?;
        tracing::info!(stage = %stage.name, version = outcome.version, rows = outcome.rows, seconds = outcome.seconds, "stage committed");
        report.ran.push(outcome);
    }
    lease.release()?;
    Ok(report)
}

/// `_attempt.json`: the work a version folder is being written for, and which attempt at it.
/// Every writer of the folder (a run, each worker, a finalize step) adopts one attempt and checks,
/// before each unit and before the commit, that the folder still holds exactly that attempt
/// ([`Prepared::guard`]); a writer whose attempt was replaced stops without writing again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Attempt {
    fingerprint: String,
    plan_digest: String,
    units: usize,
    /// Random id of this attempt (a new one whenever a writer starts the folder over).
    #[serde(default)]
    token: String,
}

impl Attempt {
    /// Whether two attempts write the same work (they may share units).
    fn same_work(&self, other: &Attempt) -> bool {
        self.fingerprint == other.fingerprint
            && self.plan_digest == other.plan_digest
            && self.units == other.units
    }
}

/// A fresh attempt id: 128 random bits as hex.
fn new_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct UnitRecord {
    index: usize,
    shard: Option<ShardInfo>,
    artifacts: Vec<ShardInfo>,
    skipped: Vec<Skipped>,
}

fn unit_record_path(prefix: &str, index: usize) -> String {
    format!("{prefix}/_units/{index:05}.json")
}

/// Whether a unit record's outputs are all present and intact.
fn unit_verifies(root: &Root, rec: &UnitRecord) -> Result<bool> {
    for info in rec.shard.iter().chain(rec.artifacts.iter()) {
        if !shards::verify(root, info)? {
            tracing::warn!(path = %info.path, "recorded output no longer verifies; the unit reruns");
            return Ok(false);
        }
    }
    Ok(true)
}

fn read_json<T: for<'de> Deserialize<'de>>(root: &Root, rel: &str) -> Result<Option<T>> {
    match root.get(rel)? {
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|source| Error::Json {
                path: root.url_of(rel),
                source,
            }),
        None => Ok(None),
    }
}

fn put_json<T: Serialize>(root: &Root, rel: &str, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| Error::Json {
        path: root.url_of(rel),
        source,
    })?;
    root.put(rel, bytes)
}

/// Crash injection for tests: abort the process (no destructors, like kill -9) after this many
/// units of a stage have been committed. Read from `SIMGAN_CRASH_AFTER_UNITS`.
fn crash_after_units() -> Option<usize> {
    std::env::var("SIMGAN_CRASH_AFTER_UNITS").ok()?.parse().ok()
}

/// The signal that asked this process to stop (0: none). Set by [`interrupt`].
static INTERRUPT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Ask every stage run of this process to stop before its next unit (a SIGTERM or SIGINT
/// handler calls this): units already running finish and record themselves, the run fails with
/// [`Error::Interrupted`], and the lease is released on the way out.
pub fn interrupt(signal: i32) {
    INTERRUPT.store(signal, std::sync::atomic::Ordering::SeqCst);
}

/// The signal passed to [`interrupt`], if any.
pub fn interrupted() -> Option<i32> {
    match INTERRUPT.load(std::sync::atomic::Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Everything a stage run derives before running units.
struct Prepared<'a> {
    stage: &'a Stage,
    root: &'a Root,
    /// The root's lease, when this writer holds one (a run; workers hold none).
    lease: Option<&'a Lease>,
    inputs: BTreeMap<String, ResolvedInput>,
    refs: BTreeMap<String, InputRef>,
    /// Listings of the location inputs, by role (recorded with the version).
    listings: BTreeMap<String, String>,
    params: serde_json::Value,
    fingerprint: String,
    declared: crate::schema::DeclaredSchema,
    latest: Option<Committed>,
    version: u64,
    prefix: String,
    units: Vec<UnitSpec>,
    attempt: Attempt,
    started: Instant,
    started_at: String,
}

impl<'a> Prepared<'a> {
    fn new(stage: &'a Stage, root: &'a Root) -> Result<Prepared<'a>> {
        let started = Instant::now();
        let started_at = chrono::Utc::now().to_rfc3339();
        let (inputs, refs, listings) = resolve_inputs(stage, root)?;
        let params = stage.params.to_json();
        let kind = stage.kind.as_ref();
        let fingerprint = FingerprintParts {
            kind: kind.name(),
            code_version: kind.code_version(),
            params: &params,
            inputs: &refs,
        }
        .fingerprint();
        let latest = manifest::latest(root, &stage.name)?;
        let version = latest.as_ref().map(|c| c.manifest.version).unwrap_or(0) + 1;
        let prefix = manifest::data_prefix(&stage.name, version);
        // The plan, then the output schema (which may depend on it).
        let (units, declared) = {
            let ctx = StageCtx {
                stage: &stage.name,
                params: &stage.params,
                inputs: &inputs,
                root,
                out_prefix: &prefix,
            };
            let units = kind.plan(&ctx)?;
            let declared = kind.output_schema(&ctx, &units)?;
            (units, declared)
        };
        let mut p = Prepared {
            stage,
            root,
            lease: None,
            inputs,
            refs,
            listings,
            params,
            fingerprint,
            declared,
            latest,
            version,
            prefix,
            units,
            attempt: Attempt {
                fingerprint: String::new(),
                plan_digest: String::new(),
                units: 0,
                token: String::new(),
            },
            started,
            started_at,
        };
        let plan_bytes = serde_json::to_vec(&p.units).map_err(|source| Error::Json {
            path: stage.name.clone(),
            source,
        })?;
        p.attempt = Attempt {
            fingerprint: p.fingerprint.clone(),
            plan_digest: shards::checksum(&plan_bytes),
            units: p.units.len(),
            token: new_token(),
        };
        Ok(p)
    }

    fn ctx(&self) -> StageCtx<'_> {
        StageCtx {
            stage: &self.stage.name,
            params: &self.stage.params,
            inputs: &self.inputs,
            root: self.root,
            out_prefix: &self.prefix,
        }
    }

    fn attempt_rel(&self) -> String {
        format!("{}/_attempt.json", self.prefix)
    }

    /// Whether this writer may still write into its version folder: the version is not committed
    /// and the folder's attempt is the one this writer adopted. Checked before every unit, before
    /// a unit's shard becomes visible, before its record, and before the commit.
    fn guard(&self) -> Result<()> {
        if let Some(l) = self.lease {
            l.check()?;
        }
        let manifest_rel = manifest::manifest_path(&self.stage.name, self.version);
        if self.root.size(&manifest_rel)?.is_some() {
            return Err(Error::AlreadyCommitted {
                stage: self.stage.name.clone(),
                version: self.version,
                manifest: self.root.url_of(&manifest_rel),
            });
        }
        let replaced = |reason: &str| Error::AttemptReplaced {
            stage: self.stage.name.clone(),
            prefix: self.root.url_of(&self.prefix),
            reason: reason.to_string(),
        };
        match read_json::<Attempt>(self.root, &self.attempt_rel())? {
            Some(a) if a == self.attempt => Ok(()),
            Some(a) if a.same_work(&self.attempt) => {
                Err(replaced("a new attempt at the same work"))
            }
            Some(_) => Err(replaced("an attempt with other params, inputs or plan")),
            None => Err(replaced("its attempt record is gone")),
        }
    }

    /// Units whose recorded objects no longer match their records (another writer replaced a
    /// shard after its record was written), with what is wrong with the first object of each.
    fn damaged_units(&self, records: &BTreeMap<usize, UnitRecord>) -> Result<Vec<(usize, Damage)>> {
        use rayon::prelude::*;
        let objects: Vec<(usize, &ShardInfo)> = records
            .values()
            .flat_map(|r| {
                r.shard
                    .iter()
                    .chain(r.artifacts.iter())
                    .map(|o| (r.index, o))
            })
            .collect();
        let found: Vec<Option<(usize, Damage)>> = objects
            .par_iter()
            .map(|(i, info)| {
                Ok(shards::check(self.root, info)?.map(|detail| {
                    (
                        *i,
                        Damage {
                            path: info.path.clone(),
                            detail,
                        },
                    )
                }))
            })
            .collect::<Result<_>>()?;
        let mut out: Vec<(usize, Damage)> = Vec::new();
        for (i, d) in found.into_iter().flatten() {
            if !out.iter().any(|(j, _)| *j == i) {
                out.push((i, d));
            }
        }
        Ok(out)
    }

    /// Remove what is in the version folder but in no record: partial uploads of interrupted
    /// writers (object-store staging files included), objects of a replaced attempt. Keeps the
    /// records, the attempt and `_scratch/`.
    fn remove_unrecorded(&self, records: &BTreeMap<usize, UnitRecord>) -> Result<()> {
        let prefix = &self.prefix;
        let keep: std::collections::HashSet<String> = records
            .values()
            .flat_map(|r| {
                r.shard
                    .iter()
                    .chain(r.artifacts.iter())
                    .map(|s| s.path.clone())
                    .chain([unit_record_path(prefix, r.index)])
            })
            .chain([self.attempt_rel()])
            .collect();
        let scratch = format!("{prefix}/_scratch/");
        for obj in self.root.list(prefix)? {
            if !keep.contains(&obj.path) && !obj.path.starts_with(&scratch) {
                self.root.delete(&obj.path)?;
            }
        }
        let staged = self.root.remove_staging(prefix)?;
        if staged > 0 {
            tracing::info!(stage = %self.stage.name, files = staged, "removed partial uploads left by an interrupted writer");
        }
        Ok(())
    }

    /// Whether the latest committed version already is this work.
    fn already_committed(&self) -> bool {
        self.latest
            .as_ref()
            .is_some_and(|c| c.manifest.fingerprint == self.fingerprint)
    }

    /// Run one unit and commit its record.
    fn run_unit(&self, unit: &UnitSpec) -> Result<UnitRecord> {
        self.record_unit(unit, |ctx, out| self.stage.kind.run_unit(ctx, unit, out))
    }

    /// Let `work` write a unit's output, then finish its shard and commit its record.
    fn record_unit(
        &self,
        unit: &UnitSpec,
        work: impl FnOnce(&StageCtx, &mut UnitOutput) -> Result<()>,
    ) -> Result<UnitRecord> {
        if let Some(signal) = interrupted() {
            return Err(Error::Interrupted {
                signal,
                stage: self.stage.name.clone(),
            });
        }
        self.guard()?;
        let ctx = self.ctx();
        let mut out = UnitOutput::new(self.root, &self.prefix, unit.index, &self.declared);
        // A failed unit, or a writer that lost its attempt meanwhile, aborts its upload: nothing
        // becomes visible at the shard's path.
        if let Err(e) = work(&ctx, &mut out).and_then(|()| self.guard()) {
            out.abort();
            return Err(e);
        }
        let (shard, artifacts, skipped) = out.finish()?;
        let rec = UnitRecord {
            index: unit.index,
            shard,
            artifacts,
            skipped,
        };
        self.guard()?;
        put_json(self.root, &unit_record_path(&self.prefix, unit.index), &rec)?;
        Ok(rec)
    }

    /// Run `units` and hand each finished record to `on_done` (on this thread, in completion
    /// order). Kinds with read-ahead get their inputs prepared on a separate thread, at most
    /// `read_ahead` units ahead, and run on `lanes` threads; the first error stops the pipeline
    /// (units already running finish; their records are kept for the resume).
    fn run_units(
        &self,
        units: &[&UnitSpec],
        mut on_done: impl FnMut(UnitRecord) -> Result<()>,
    ) -> Result<()> {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Mutex, mpsc};

        let ctx = self.ctx();
        let kind = self.stage.kind.as_ref();
        let read_ahead = kind.read_ahead(&ctx)?;
        let lanes = kind.lanes(&ctx)?.max(1);
        if read_ahead == 0 && lanes == 1 {
            for unit in units {
                on_done(self.run_unit(unit)?)?;
            }
            return Ok(());
        }
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let (prep_tx, prep_rx) =
                mpsc::sync_channel::<(usize, Result<PreparedInput>)>(read_ahead);
            let (done_tx, done_rx) = mpsc::channel::<Result<UnitRecord>>();
            let (stop, ctx) = (&stop, &ctx);
            scope.spawn(move || {
                for (i, unit) in units.iter().enumerate() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // A send fails once every lane has stopped: nothing left to feed.
                    if prep_tx.send((i, kind.prepare(ctx, unit))).is_err() {
                        break;
                    }
                }
            });
            // Lanes own the receiver: when the last one exits, the reader's next send fails.
            let prep_rx = std::sync::Arc::new(Mutex::new(prep_rx));
            for lane in 0..lanes {
                let (prep_rx, done_tx) = (prep_rx.clone(), done_tx.clone());
                scope.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let next = match prep_rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => break,
                        };
                        let Ok((i, prepared)) = next else { break };
                        let rec = prepared.and_then(|p| self.run_prepared_unit(units[i], p, lane));
                        let failed = rec.is_err();
                        if done_tx.send(rec).is_err() || failed {
                            stop.store(true, Ordering::Relaxed);
                            break;
                        }
                    }
                });
            }
            drop(done_tx);
            let mut first_error = None;
            for rec in done_rx {
                if first_error.is_some() {
                    continue; // drain: lanes finish what they started
                }
                if let Err(e) = rec.and_then(&mut on_done) {
                    stop.store(true, Ordering::Relaxed);
                    first_error = Some(e);
                }
            }
            first_error.map_or(Ok(()), Err)
        })
    }

    /// [`Prepared::run_unit`] for a unit whose input was prepared ahead, on `lane`.
    fn run_prepared_unit(
        &self,
        unit: &UnitSpec,
        prepared: PreparedInput,
        lane: usize,
    ) -> Result<UnitRecord> {
        self.record_unit(unit, |ctx, out| {
            self.stage.kind.run_prepared(ctx, unit, prepared, lane, out)
        })
    }

    /// A unit's record, if it exists; its object paths must lie inside this version's folder.
    fn record(&self, index: usize) -> Result<Option<UnitRecord>> {
        let rel = unit_record_path(&self.prefix, index);
        let Some(rec) = read_json::<UnitRecord>(self.root, &rel)? else {
            return Ok(None);
        };
        for info in rec.shard.iter().chain(rec.artifacts.iter()) {
            manifest::check_inside(&self.prefix, &info.path).map_err(|why| Error::BadManifest {
                manifest: self.root.url_of(&rel),
                reason: format!("object path `{}` {why}", info.path.escape_debug()),
            })?;
        }
        Ok(Some(rec))
    }

    /// The verified record of a unit, if it finished.
    fn finished(&self, index: usize) -> Result<Option<UnitRecord>> {
        match self.record(index)? {
            Some(rec) if unit_verifies(self.root, &rec)? => Ok(Some(rec)),
            _ => Ok(None),
        }
    }

    /// Assemble the manifest from every unit's record and commit it (create-if-absent). The
    /// caller has checked every record's objects ([`Prepared::damaged_units`]); the folder is
    /// cleared of unrecorded objects and, on local disk, synced before the manifest appears.
    fn commit(
        &self,
        records: BTreeMap<usize, UnitRecord>,
        reused: usize,
        run_count: usize,
    ) -> Result<StageOutcome> {
        self.guard()?;
        self.remove_unrecorded(&records)?;
        let mut artifacts = Vec::new();
        for (role, lines) in &self.listings {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            let rel = listing_path(&self.prefix, role);
            let io = |source| Error::Io {
                op: "compress listing",
                path: rel.clone().into(),
                source,
            };
            gz.write_all(lines.as_bytes()).map_err(io)?;
            let bytes = gz.finish().map_err(io)?;
            artifacts.push(ShardInfo {
                path: rel.clone(),
                rows: 0,
                bytes: bytes.len() as u64,
                checksum: shards::checksum(&bytes),
            });
            self.root.put(&rel, bytes)?;
        }
        self.root.sync_local(&self.prefix)?;
        let mut shards_out = Vec::new();
        let mut skipped = Vec::new();
        for rec in records.into_values() {
            shards_out.extend(rec.shard);
            artifacts.extend(rec.artifacts);
            skipped.extend(rec.skipped);
        }
        let rows = shards_out.iter().map(|s| s.rows).sum();
        let kind = self.stage.kind.as_ref();
        let manifest = Manifest {
            format: manifest::FORMAT,
            stage: self.stage.name.clone(),
            kind: kind.name().to_string(),
            version: self.version,
            fingerprint: self.fingerprint.clone(),
            code_version: kind.code_version().to_string(),
            params: self.params.clone(),
            inputs: self.refs.clone(),
            schema: format!("{}@{}", self.declared.name, self.declared.version),
            data_prefix: self.prefix.clone(),
            shards: shards_out,
            artifacts,
            skipped,
            rows,
            timings: Timings {
                started_at: self.started_at.clone(),
                finished_at: chrono::Utc::now().to_rfc3339(),
                wall_s: self.started.elapsed().as_secs_f64(),
                units_reused: reused,
                units_run: run_count,
            },
            simgan_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        manifest::commit(self.root, &manifest)?;
        Ok(StageOutcome {
            name: self.stage.name.clone(),
            version: self.version,
            rows,
            units_reused: reused,
            units_run: run_count,
            seconds: self.started.elapsed().as_secs_f64(),
        })
    }
}

/// Run one stage to a committed version (resuming an interrupted attempt when possible).
pub fn run_stage(
    stage: &Stage,
    root: &Root,
    lease: Option<&Lease>,
    progress: bool,
) -> Result<StageOutcome> {
    let mut p = Prepared::new(stage, root)?;
    p.lease = lease;
    let prefix = p.prefix.clone();
    let attempt_rel = p.attempt_rel();
    let previous: Option<Attempt> = read_json(root, &attempt_rel)?;

    // Which units already finished in an interrupted attempt of the same work.
    let mut records: BTreeMap<usize, UnitRecord> = BTreeMap::new();
    match previous {
        Some(prev) if prev.same_work(&p.attempt) => {
            // Adopt it: workers still running on it keep their share.
            p.attempt.token = prev.token;
            if p.attempt.token.is_empty() {
                p.attempt.token = new_token();
                put_json(root, &attempt_rel, &p.attempt)?;
            }
            for unit in &p.units {
                if let Some(rec) = p.finished(unit.index)? {
                    records.insert(unit.index, rec);
                }
            }
            // Delete everything that is not a verified unit's output (partial uploads, stale
            // records).
            p.remove_unrecorded(&records)?;
            tracing::info!(stage = %stage.name, version = p.version, reused = records.len(), total = p.units.len(), "resuming interrupted attempt");
        }
        previous => {
            if previous.is_some() {
                tracing::info!(stage = %stage.name, version = p.version, "replacing an attempt with other params or inputs (its writers stop at their next unit)");
            }
            // The new attempt first, so writers of the old one stop before anything is deleted.
            put_json(root, &attempt_rel, &p.attempt)?;
            for obj in root.list(&format!("{prefix}/"))? {
                if obj.path != attempt_rel {
                    root.delete(&obj.path)?;
                }
            }
            root.remove_staging(&prefix)?;
        }
    }
    let reused = records.len();
    let p = p;

    let bar = progress_bar(progress, &stage.name, p.units.len() as u64, reused as u64);
    let mut run_count = 0usize;
    if let Some(l) = lease {
        l.check()?;
    }
    let todo: Vec<&UnitSpec> = p
        .units
        .iter()
        .filter(|u| !records.contains_key(&u.index))
        .collect();
    let mut todo = todo;
    // Every record's objects are checked before the commit; a unit whose shard was replaced
    // after its record was written (a writer of an older attempt finishing late) runs again.
    for round in 0.. {
        p.run_units(&todo, |rec| {
            records.insert(rec.index, rec);
            run_count += 1;
            bar.inc(1);
            if crash_after_units().is_some_and(|n| run_count >= n) {
                eprintln!("SIMGAN_CRASH_AFTER_UNITS: aborting after {run_count} units");
                std::process::abort();
            }
            match lease {
                Some(l) => l.check(),
                None => Ok(()),
            }
        })?;
        let damaged = p.damaged_units(&records)?;
        let Some((_, first)) = damaged.first() else {
            break;
        };
        if round == 2 {
            return Err(Error::Damaged {
                path: root.url_of(&first.path),
                detail: format!(
                    "{} (changed after its unit record was written, three times: is another writer on {}?)",
                    first.detail,
                    root.url_of(&prefix)
                ),
            });
        }
        tracing::warn!(stage = %stage.name, units = damaged.len(), path = %first.path, detail = %first.detail, "recorded outputs changed after their records; those units run again");
        for (i, _) in &damaged {
            records.remove(i);
            root.delete(&unit_record_path(&prefix, *i))?;
        }
        todo = p
            .units
            .iter()
            .filter(|u| damaged.iter().any(|(i, _)| *i == u.index))
            .collect();
    }
    bar.finish_and_clear();
    if let Some(l) = lease {
        l.check()?;
    }
    p.commit(records, reused, run_count)
}

/// Which share of a stage's units a worker processes: units with `index % count == slot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSlot {
    /// This worker's index, `0..count`.
    pub slot: usize,
    /// Number of workers.
    pub count: usize,
}

/// What a distributed worker achieved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WorkerOutcome {
    /// This worker finished the last unit and committed the manifest.
    Committed(StageOutcome),
    /// The stage's latest version already is this work (committed by another worker or run).
    AlreadyCommitted { version: u64 },
    /// This worker's units are done; others are still running.
    UnitsDone {
        done: usize,
        total: usize,
        ran: usize,
    },
}

/// Run one worker's share of a stage. Workers coordinate only through the run root: the first
/// creates the attempt record (create-if-absent), each commits its units' records, and whoever
/// sees every unit finished commits the manifest (create-if-absent, so exactly once). A worker
/// may be rerun or run twice: finished units are skipped, and a unit redone writes the same
/// shard path. `slot = None` only tries to commit (a finalize step).
pub fn run_worker(stage: &Stage, root: &Root, slot: Option<WorkerSlot>) -> Result<WorkerOutcome> {
    let mut p = Prepared::new(stage, root)?;
    if p.already_committed() {
        return Ok(WorkerOutcome::AlreadyCommitted {
            version: p.version - 1,
        });
    }
    let attempt_rel = p.attempt_rel();
    let bytes = serde_json::to_vec_pretty(&p.attempt).map_err(|source| Error::Json {
        path: root.url_of(&attempt_rel),
        source,
    })?;
    if !root.put_if_absent(&attempt_rel, bytes)? {
        match read_json::<Attempt>(root, &attempt_rel)? {
            // Join the attempt another writer started.
            Some(existing) if existing.same_work(&p.attempt) => p.attempt = existing,
            _ => {
                return Err(Error::stage(
                    &stage.name,
                    format!(
                        "{} holds an attempt with other params, inputs or plan; finish it, or delete that folder to start over",
                        root.url_of(&p.prefix)
                    ),
                ));
            }
        }
    }
    let p = p;
    let mut ran = 0;
    if let Some(w) = slot {
        let mut todo = Vec::new();
        for unit in p.units.iter().filter(|u| u.index % w.count == w.slot) {
            if p.finished(unit.index)?.is_none() {
                todo.push(unit);
            }
        }
        let done = p.run_units(&todo, |_| {
            ran += 1;
            if crash_after_units().is_some_and(|n| ran >= n) {
                eprintln!("SIMGAN_CRASH_AFTER_UNITS: aborting after {ran} units");
                std::process::abort();
            }
            Ok(())
        });
        if let Err(e) = done {
            return committed_meanwhile(&p, e);
        }
    }
    // Commit if every unit is done (by anyone).
    let mut records = BTreeMap::new();
    for unit in &p.units {
        match p.record(unit.index)? {
            Some(rec) => {
                records.insert(unit.index, rec);
            }
            None => {
                return Ok(WorkerOutcome::UnitsDone {
                    done: records.len(),
                    total: p.units.len(),
                    ran,
                });
            }
        }
    }
    // Every recorded object must still be what its record says (size and sha256); a damaged
    // unit's record is dropped so that rerunning its worker redoes it.
    if let Some((i, d)) = p.damaged_units(&records)?.into_iter().next() {
        root.delete(&unit_record_path(&p.prefix, i))?;
        return Err(Error::Damaged {
            path: root.url_of(&d.path),
            detail: format!(
                "{}; it no longer matches the record of unit {i}, which was dropped: rerun that unit's worker",
                d.detail
            ),
        });
    }
    let reused = p.units.len() - ran;
    match p.commit(records, reused, ran) {
        Ok(outcome) => Ok(WorkerOutcome::Committed(outcome)),
        Err(e) => committed_meanwhile(&p, e),
    }
}

/// A worker's error, unless it only means that another writer committed this very work. A
/// committer removes what no record names (a duplicate worker's upload in flight among them, which
/// then fails) just before it writes the manifest: when every unit already has a record, the
/// manifest is given two seconds to appear.
fn committed_meanwhile(p: &Prepared, e: Error) -> Result<WorkerOutcome> {
    let all_recorded = p
        .units
        .iter()
        .all(|u| matches!(p.record(u.index), Ok(Some(_))));
    let tries = if all_recorded { 40 } else { 1 };
    for attempt in 0..tries {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        if let Some(c) = manifest::read(p.root, &p.stage.name, p.version)?
            && c.manifest.fingerprint == p.fingerprint
        {
            return Ok(WorkerOutcome::AlreadyCommitted { version: p.version });
        }
    }
    Err(e)
}

/// Progress of an uncommitted attempt of a stage: (units with records, units planned).
pub fn attempt_progress(root: &Root, stage: &str) -> Result<Option<(usize, usize)>> {
    let version = manifest::versions(root, stage)?
        .last()
        .copied()
        .unwrap_or(0)
        + 1;
    let prefix = manifest::data_prefix(stage, version);
    let Some(attempt) = read_json::<Attempt>(root, &format!("{prefix}/_attempt.json"))? else {
        return Ok(None);
    };
    let done = root.list(&format!("{prefix}/_units"))?.len();
    Ok(Some((done, attempt.units)))
}

/// A progress bar over units; hidden unless asked for and stderr is a terminal.
fn progress_bar(enabled: bool, stage: &str, total: u64, done: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !enabled || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total)
        .with_position(done)
        .with_message(stage.to_string());
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:>16} [{bar:30}] {pos}/{len} units {elapsed_precise} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
