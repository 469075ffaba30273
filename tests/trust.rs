//! Trusting a run root, as an outside user would test it: tampered shards caught by every reader
//! and rebuilt by `run --verify`; manifests that point outside their version refused; writers of
//! one version that were replaced or outrun stop without touching it; leftovers of interrupted
//! uploads never reach a committed folder; names that would break a job script refused; an
//! aborted S3 upload leaves no multipart upload behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{self, ok, output, simgan};

const PIPELINE: &str = r#"
name = "trust"
[stages.synthetic]
kind = "generate-eyes"
params = { domain = "synthetic", rows = 60, rows_per_shard = 20, seed = 1 }
[stages.real]
kind = "generate-eyes"
params = { domain = "real-like", rows = 40, rows_per_shard = 40, seed = 2, test_fraction = 0.5 }
"#;

fn setup(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = util::tempdir();
    let p = util::write(&dir.path().join("p.toml"), text);
    (dir, p)
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Run and require failure; returns stderr.
fn fails(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        !out.status.success(),
        "{cmd:?} succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn flip_byte(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0x55;
    std::fs::write(path, b).unwrap();
}

fn edit_manifest(path: &Path, f: impl FnOnce(&mut Value)) {
    let mut m: Value = json(&std::fs::read_to_string(path).unwrap());
    f(&mut m);
    std::fs::write(path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

#[test]
fn a_tampered_shard_is_caught_by_every_reader_and_rebuilt_by_run_verify() {
    let (dir, p) = setup(PIPELINE);
    let (d, p) = (dir.path(), p.to_str().unwrap());
    ok(simgan(d).args(["run", p]));
    let shard = d.join("runs/trust/synthetic/v00000001/part-00001.parquet");
    let size = std::fs::metadata(&shard).unwrap().len();
    flip_byte(&shard);
    assert_eq!(std::fs::metadata(&shard).unwrap().len(), size, "same size");
    let named = |err: &str| {
        assert!(
            err.contains("part-00001.parquet") && err.contains("damaged"),
            "{err}"
        )
    };

    // Readers: query, export, show --verify, and what downstream stages use (sample::load).
    named(&fails(simgan(d).args([
        "query",
        "runs/trust/synthetic",
        "SELECT count(*) AS n FROM data",
    ])));
    named(&fails(simgan(d).args([
        "export",
        "runs/trust/synthetic",
        "--out",
        "exported",
    ])));
    named(&fails(simgan(d).args([
        "show",
        "runs/trust/synthetic",
        "--verify",
    ])));
    let root = util::open(d.join("runs/trust").to_str().unwrap());
    let committed = simgan::manifest::latest(&root, "synthetic")
        .unwrap()
        .unwrap();
    let err = simgan::sample::load(&root, &committed, None)
        .err()
        .expect("downstream read of a damaged shard fails");
    assert!(matches!(err, simgan::error::Error::Damaged { .. }), "{err}");
    named(&err.to_string());
    // An intact stage still reads.
    ok(simgan(d).args(["query", "runs/trust/real", "SELECT count(*) FROM data"]));

    // `verify` over the whole root, as JSON; `status --verify` marks the stage damaged.
    let out = output(simgan(d).args(["verify", "runs/trust", "--json"]));
    assert!(!out.status.success());
    let report = json(&String::from_utf8_lossy(&out.stdout));
    let versions = report["versions"].as_array().unwrap();
    let bad: Vec<&Value> = versions
        .iter()
        .filter(|v| !v["damaged"].as_array().unwrap().is_empty())
        .collect();
    assert_eq!(bad.len(), 1, "{report}");
    assert_eq!(bad[0]["stage"], "synthetic");
    assert_eq!(
        bad[0]["damaged"][0]["path"],
        "synthetic/v00000001/part-00001.parquet"
    );
    let out = output(simgan(d).args(["status", p, "--verify", "--json"]));
    assert!(!out.status.success());
    let status = json(&String::from_utf8_lossy(&out.stdout));
    let state = |name: &str| {
        status["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["state"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(state("synthetic"), "damaged");
    assert_eq!(state("real"), "up-to-date");

    // `run --verify` rebuilds it as a new version; the damaged one is left as it was.
    let out = ok(simgan(d).args(["run", p, "--verify"]));
    assert!(out.contains("synthetic") && out.contains("v2"), "{out}");
    ok(simgan(d).args(["verify", "runs/trust", "--latest"]));
    ok(simgan(d).args(["status", p, "--verify"]));
    let r = json(&ok(simgan(d).args([
        "query",
        "runs/trust/synthetic",
        "SELECT count(*) AS n FROM data",
        "--format",
        "json",
    ])));
    assert_eq!(r[0]["n"], 60);
}

#[test]
fn manifests_that_point_outside_their_version_are_refused() {
    let (dir, p) = setup(PIPELINE);
    let (d, p) = (dir.path(), p.to_str().unwrap());
    ok(simgan(d).args(["run", p]));
    let m1 = d.join("runs/trust/synthetic/_manifests/00000001.json");
    let original = std::fs::read(&m1).unwrap();
    // A file outside the root that a `../` path would reach.
    std::fs::copy(
        d.join("runs/trust/real/v00000001/part-00000.parquet"),
        d.join("outside.parquet"),
    )
    .unwrap();
    for (bad, why) in [
        ("synthetic/v00000001/../../../outside.parquet", "`..`"),
        ("/etc/passwd", "is absolute"),
        (
            "real/v00000001/part-00000.parquet",
            "outside the version's folder",
        ),
    ] {
        std::fs::write(&m1, &original).unwrap();
        edit_manifest(&m1, |m| m["shards"][0]["path"] = bad.into());
        for args in [
            vec!["query", "runs/trust/synthetic", "SELECT count(*) FROM data"],
            vec!["show", "runs/trust/synthetic"],
            vec!["export", "runs/trust/synthetic", "--out", "x"],
        ] {
            let err = fails(simgan(d).args(&args));
            assert!(
                err.contains("refused") && err.contains(why) && err.contains("00000001.json"),
                "{args:?} with {bad}: {err}"
            );
        }
    }
    std::fs::write(&m1, &original).unwrap();

    // A manifest copied to another version's name is refused, and a run does not build on it.
    let m2 = d.join("runs/trust/synthetic/_manifests/00000002.json");
    std::fs::copy(&m1, &m2).unwrap();
    let err = fails(simgan(d).args(["show", "runs/trust/synthetic"]));
    assert!(err.contains("stored as version 2"), "{err}");
    let err = fails(simgan(d).args(["run", p, "--force"]));
    assert!(err.contains("refused"), "{err}");
    let out = output(simgan(d).args(["verify", "runs/trust", "--json"]));
    assert!(!out.status.success());
    let report = json(&String::from_utf8_lossy(&out.stdout));
    assert!(
        report["versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["version"] == 2 && v["refused"].is_string()),
        "{report}"
    );
    std::fs::remove_file(&m2).unwrap();
    ok(simgan(d).args(["verify", "runs/trust"]));

    // A checksum that is not ASCII is shown, not a panic; --verify calls the shard damaged.
    edit_manifest(&m1, |m| {
        m["shards"][0]["checksum"] = "sha256:ééééééééééééééééééééé".into()
    });
    let out = ok(simgan(d).args(["show", "runs/trust/synthetic"]));
    assert!(out.contains("part-00000.parquet"), "{out}");
    let err = fails(simgan(d).args(["show", "runs/trust/synthetic", "--verify"]));
    assert!(err.contains("damaged"), "{err}");
}

/// Start a worker (`--worker 0/1`) of `stage` and stop it (SIGSTOP) once it has recorded a unit.
fn paused_worker(d: &Path, p: &str, stage: &str, set: &str, units: &Path) -> std::process::Child {
    let mut child = simgan(d)
        .args(["run", p, "--stage", stage, "--worker", "0/1", "--set", set])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !units.join("00000.json").exists() {
        assert!(Instant::now() < deadline, "the worker wrote no unit");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the worker ended early"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    signal(&child, "-STOP");
    child
}

fn signal(child: &std::process::Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_replaced_or_outrun_worker_stops_without_touching_the_version() {
    // 40 units, slow enough to pause a worker between them.
    let text = PIPELINE.replace(
        "rows = 60, rows_per_shard = 20",
        "rows = 40000, rows_per_shard = 1000",
    );
    let (dir, p) = setup(&text);
    let (d, p) = (dir.path(), p.to_str().unwrap());
    let v1 = d.join("runs/trust/synthetic/v00000001");

    // 1. A worker with seed 1 is paused; a run with seed 2 replaces its attempt (and crashes
    //    after one unit, so the folder holds the new attempt, uncommitted). The resumed worker
    //    must stop at once.
    let worker = paused_worker(d, p, "synthetic", "synthetic.seed=1", &v1.join("_units"));
    let out = output(
        simgan(d)
            .args([
                "run",
                p,
                "--stage",
                "synthetic",
                "--set",
                "synthetic.seed=2",
            ])
            .env("SIMGAN_CRASH_AFTER_UNITS", "1"),
    );
    assert!(!out.status.success());
    let attempt = std::fs::read(v1.join("_attempt.json")).unwrap();
    signal(&worker, "-CONT");
    let w = worker.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&w.stderr);
    assert!(!w.status.success() && err.contains("was replaced"), "{err}");
    assert_eq!(std::fs::read(v1.join("_attempt.json")).unwrap(), attempt);
    assert_eq!(
        std::fs::read_dir(v1.join("_units")).unwrap().count(),
        1,
        "the replaced worker recorded nothing"
    );
    // The seed-2 run resumes its own attempt and commits version 1.
    let out = ok(simgan(d).args([
        "run",
        p,
        "--stage",
        "synthetic",
        "--set",
        "synthetic.seed=2",
    ]));
    assert!(out.contains("(1 units resumed)"), "{out}");

    // 2. A worker for seed 3 (version 2) is paused; a run with seed 4 commits version 2 first.
    //    The resumed worker must not write into the committed folder.
    let v2 = d.join("runs/trust/synthetic/v00000002");
    let worker = paused_worker(d, p, "synthetic", "synthetic.seed=3", &v2.join("_units"));
    ok(simgan(d).args([
        "run",
        p,
        "--stage",
        "synthetic",
        "--set",
        "synthetic.seed=4",
    ]));
    let listing = |dir: &Path| {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_file())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = listing(&v2);
    signal(&worker, "-CONT");
    let w = worker.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&w.stderr);
    assert!(
        !w.status.success() && err.contains("already committed"),
        "{err}"
    );
    assert!(listing(&v2) == before, "the committed folder changed");
    // Both versions verify, each with its own seed.
    ok(simgan(d).args(["verify", "runs/trust"]));
    for (v, seed) in [(1, 2), (2, 4)] {
        let show = json(&ok(simgan(d).args([
            "show",
            &format!("runs/trust/synthetic@{v}"),
            "--json",
        ])));
        assert_eq!(show["params"]["seed"], seed);
        assert_eq!(show["rows"], 40000);
    }
}

#[test]
#[ignore = "needs Python with pyarrow: ci/test.sh installs it"]
fn leftovers_of_interrupted_writers_never_reach_a_committed_folder() {
    let (dir, p) = setup(PIPELINE);
    let (d, p) = (dir.path(), p.to_str().unwrap());
    let out = output(
        simgan(d)
            .args(["run", p, "--stage", "synthetic"])
            .env("SIMGAN_CRASH_AFTER_UNITS", "1"),
    );
    assert!(!out.status.success());
    let v1 = d.join("runs/trust/synthetic/v00000001");
    // What a writer killed mid-upload leaves (the local store's staging file), and an object of
    // a replaced attempt.
    std::fs::write(v1.join("part-00001.parquet#1"), b"partial").unwrap();
    std::fs::write(v1.join("part-00007.parquet"), b"stray").unwrap();
    ok(simgan(d).args(["run", p]));
    let mut names: Vec<String> = std::fs::read_dir(&v1)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "_attempt.json",
            "_units",
            "part-00000.parquet",
            "part-00001.parquet",
            "part-00002.parquet"
        ]
    );
    // README's folder read with pyarrow.
    let python = std::env::var("SIMGAN_PYTHON").expect("SIMGAN_PYTHON (set by ci/test.sh)");
    let out = ok(Command::new(python).args([
        "-c",
        "import sys, pyarrow.dataset as ds; print(ds.dataset(sys.argv[1], format='parquet').count_rows())",
        v1.to_str().unwrap(),
    ]));
    assert_eq!(out.trim(), "60");
}

#[test]
fn names_that_would_break_a_job_script_are_refused() {
    for (name, why) in [
        ("\"a\\nb\"", "is not allowed"),
        ("\"x y\"", "is not allowed"),
        ("_lease", "must not start with"),
    ] {
        let text = format!(
            "name = \"n\"\n[stages.{name}]\nkind = \"generate-eyes\"\nparams = {{ domain = \"synthetic\", rows = 4 }}\n"
        );
        let (dir, p) = setup(&text);
        let d = dir.path();
        for args in [
            vec!["run", p.to_str().unwrap()],
            vec![
                "submit",
                p.to_str().unwrap(),
                "--slurm",
                "--print",
                "--out",
                "jobs",
            ],
        ] {
            let err = fails(simgan(d).args(&args));
            assert!(err.contains("stage name") && err.contains(why), "{err}");
        }
        assert!(!d.join("jobs").exists());
    }
    let (dir, p) = setup(&PIPELINE.replace("name = \"trust\"", "name = \"a;b\""));
    let err = fails(simgan(dir.path()).args(["status", p.to_str().unwrap()]));
    assert!(err.contains("pipeline name"), "{err}");
}

#[test]
#[ignore = "needs the moto S3 server: ci/test.sh installs it"]
fn s3_tampering_is_caught_and_an_aborted_upload_leaves_no_multipart_upload() {
    use arrow::array::{ArrayRef, Float32Array, Float64Array, Int64Array, StringArray};
    let (dir, p) = setup(PIPELINE);
    let (d, p) = (dir.path(), p.to_str().unwrap());
    let bucket = util::s3_bucket();
    let url = format!("{bucket}/runs/t");
    let env = util::s3_env(util::moto_endpoint());
    let cli = |args: &[&str]| {
        let mut c = simgan(d);
        c.args(args).envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        output(&mut c)
    };
    assert!(cli(&["run", p, "--root", &url]).status.success());
    assert!(cli(&["verify", &url]).status.success());
    // Overwrite one shard on S3 with one byte changed.
    let root = util::open(&url);
    let rel = "synthetic/v00000001/part-00002.parquet";
    let mut bytes = root.get_required(rel).unwrap().to_vec();
    let i = bytes.len() / 2;
    bytes[i] ^= 1;
    root.put(rel, bytes).unwrap();
    let out = cli(&["verify", &url]);
    let err = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && err.contains("part-00002.parquet"),
        "{err}"
    );
    let out = cli(&[
        "query",
        &format!("{url}/synthetic"),
        "SELECT count(*) FROM data",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("damaged"), "{err}");

    // A shard big enough to be a multipart upload (> 8 MiB), aborted: nothing is left on the
    // store, neither the object nor the upload's parts.
    let declared = simgan::schema::get("train_metrics").unwrap();
    let n = 40_000usize;
    let phase: Vec<String> = (0..n)
        .map(|k| {
            format!(
                "{:064x}",
                (k as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
            )
        })
        .collect();
    let f32s = || -> ArrayRef {
        std::sync::Arc::new(Float32Array::from_iter_values((0..n).map(|k| k as f32)))
    };
    let cols: Vec<ArrayRef> = vec![
        std::sync::Arc::new(Int64Array::from_iter_values(0..n as i64)),
        std::sync::Arc::new(StringArray::from(phase)),
        f32s(),
        f32s(),
        f32s(),
        f32s(),
        f32s(),
        f32s(),
        std::sync::Arc::new(Float64Array::from_iter_values((0..n).map(|k| k as f64))),
    ];
    let batch = arrow::record_batch::RecordBatch::try_new(declared.arrow.clone(), cols).unwrap();
    let mut w =
        simgan::shards::ShardWriter::create(&root, "big/part-00000.parquet", declared).unwrap();
    for _ in 0..4 {
        w.write(&batch).unwrap();
    }
    let uploads = || {
        let out = ok(Command::new("curl").args([
            "-sf",
            &format!(
                "{}/{}?uploads",
                util::moto_endpoint(),
                bucket.trim_start_matches("s3://")
            ),
        ]));
        out.matches("<Upload>").count()
    };
    assert_eq!(
        uploads(),
        1,
        "the shard is being written as a multipart upload"
    );
    w.abort();
    assert_eq!(uploads(), 0, "the aborted upload's parts are gone");
    assert!(root.get("big/part-00000.parquet").unwrap().is_none());
}

const SLOW: (&str, &str) = (
    "rows = 60, rows_per_shard = 20",
    "rows = 40000, rows_per_shard = 1000",
);

/// Wait until `file` exists while `child` runs.
fn wait_for(child: &mut std::process::Child, file: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !file.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            file.display()
        );
        assert!(child.try_wait().unwrap().is_none(), "ended early");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_paused_lease_holder_stops_writing_once_it_cannot_prove_its_lease() {
    let (dir, p) = setup(&PIPELINE.replace(SLOW.0, SLOW.1));
    let (d, p) = (dir.path(), p.to_str().unwrap());
    let v1 = d.join("runs/trust/synthetic/v00000001");
    let mut holder = simgan(d)
        .args(["run", p, "--stage", "synthetic", "--lease-ttl", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&mut holder, &v1.join("_units/00000.json"));
    signal(&holder, "-STOP");
    // The lease expires (ttl 2 s, plus the 2 s skew margin); another run takes over and commits.
    let started = Instant::now();
    let out = ok(simgan(d).args(["run", p, "--stage", "synthetic", "--wait"]));
    assert!(out.contains("units resumed"), "{out}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "took over a live lease"
    );
    let committed = std::fs::read(d.join("runs/trust/synthetic/_manifests/00000001.json")).unwrap();
    // The old holder wakes up: it must stop, not write, not commit.
    signal(&holder, "-CONT");
    let h = holder.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&h.stderr);
    assert!(!h.status.success() && err.contains("lease"), "{err}");
    assert_eq!(
        std::fs::read(d.join("runs/trust/synthetic/_manifests/00000001.json")).unwrap(),
        committed
    );
    ok(simgan(d).args(["verify", "runs/trust"]));
    let lease = simgan::lease::current(&util::open(d.join("runs/trust").to_str().unwrap()))
        .unwrap()
        .unwrap();
    assert!(lease.released, "{lease:?}");
}

#[test]
fn a_contender_whose_clock_runs_ahead_does_not_take_a_live_lease() {
    let (dir, p) = setup(PIPELINE);
    let (d, p) = (dir.path(), p.to_str().unwrap());
    let root = util::open(d.join("runs/trust").to_str().unwrap());
    let held =
        simgan::lease::Lease::acquire(&root, "holder", Duration::from_secs(4), false).unwrap();
    // 6 s ahead: past the recorded expiry (at most 4 s away), within the skew margin.
    let out = output(simgan(d).args(["run", p]).env("SIMGAN_CLOCK_OFFSET_S", "6"));
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    held.check().unwrap();
    drop(held);
    ok(simgan(d).args(["run", p]));
}

#[test]
#[ignore = "needs unshare(1) with a new PID namespace (root): the CI machine has both"]
fn a_contender_in_another_pid_namespace_does_not_take_a_live_lease() {
    let (dir, p) = setup(PIPELINE);
    let (d, p) = (dir.path(), p.to_str().unwrap());
    let root = util::open(d.join("runs/trust").to_str().unwrap());
    let held =
        simgan::lease::Lease::acquire(&root, "holder", Duration::from_secs(60), false).unwrap();
    // In a new PID namespace the holder's pid does not exist: that must not read as "dead".
    let out = output(
        Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc"])
            .arg(env!("CARGO_BIN_EXE_simgan"))
            .args(["run", p])
            .current_dir(d)
            .env("RUST_LOG", "warn"),
    );
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    held.check().unwrap();
}

#[test]
fn sigterm_finishes_the_unit_releases_the_lease_and_the_rerun_resumes() {
    let (dir, p) = setup(&PIPELINE.replace(SLOW.0, SLOW.1));
    let (d, p) = (dir.path(), p.to_str().unwrap());
    let v1 = d.join("runs/trust/synthetic/v00000001");
    let mut run = simgan(d)
        .args(["run", p, "--stage", "synthetic"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&mut run, &v1.join("_units/00000.json"));
    signal(&run, "-TERM");
    let r = run.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(143), "{err}");
    assert!(err.contains("stopped by signal 15"), "{err}");
    let lease = simgan::lease::current(&util::open(d.join("runs/trust").to_str().unwrap()))
        .unwrap()
        .unwrap();
    assert!(lease.released, "the lease is released: {lease:?}");
    assert!(!d.join("runs/trust/synthetic/_manifests").exists());
    let done = std::fs::read_dir(v1.join("_units")).unwrap().count();
    assert!((1..40).contains(&done), "{done} units recorded");
    let out = ok(simgan(d).args(["run", p, "--stage", "synthetic"]));
    assert!(out.contains(&format!("({done} units resumed)")), "{out}");
    ok(simgan(d).args(["verify", "runs/trust"]));
}

#[test]
fn new_or_changed_raw_files_make_an_ingest_stale_with_what_changed() {
    let dir = util::tempdir();
    let d = dir.path();
    let raw = d.join("raw");
    let png = |rel: &str, k: u8| {
        let img = image::GrayImage::from_fn(8, 8, |x, y| {
            image::Luma([(x as u8 * 9) ^ (y as u8 * 5) ^ k])
        });
        let path = raw.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        img.save(&path).unwrap();
    };
    for k in 0..4 {
        png(&format!("a/{k}.png"), k);
        png(&format!("b/{k}.png"), k + 100);
    }
    let p = util::write(
        &d.join("p.toml"),
        &format!(
            "name = \"raw\"\n[stages.images]\nkind = \"ingest-images\"\ninputs = {{ source = \"{}\" }}\nparams = {{ domain = \"synthetic\" }}\n",
            raw.display()
        ),
    );
    let p = p.to_str().unwrap();
    ok(simgan(d).args(["run", p]));
    assert!(ok(simgan(d).args(["run", p])).contains("up to date"));
    // Three new files and one rewritten: stale, and `status` says what changed.
    for k in 4..7 {
        png(&format!("a/{k}.png"), k);
    }
    png("b/0.png", 200);
    let status = json(&ok(simgan(d).args(["status", p, "--json"])));
    let reason = status["stages"][0]["reason"].as_str().unwrap();
    assert_eq!(status["stages"][0]["state"], "stale");
    assert!(
        reason.contains("source `source` changed: 3 files added, 1 changed"),
        "{reason}"
    );
    ok(simgan(d).args(["run", p]));
    let r = json(&ok(simgan(d).args([
        "query",
        "runs/raw/images",
        "SELECT count(*) AS n FROM data",
        "--format",
        "json",
    ])));
    assert_eq!(r[0]["n"], 11);
    // A removed file too.
    std::fs::remove_file(raw.join("a/1.png")).unwrap();
    let status = json(&ok(simgan(d).args(["status", p, "--json"])));
    let reason = status["stages"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("1 removed (e.g. `a/1.png` removed)"),
        "{reason}"
    );
}
