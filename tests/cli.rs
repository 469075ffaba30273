//! The `simgan` binary end to end on the built-in eye generator: runs, reruns, status/show/ls
//! JSON, crash and resume (abort and kill -9), the lease from another process, S3 roots, and the
//! shards read back by polars (`query`) and by pyarrow.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{self, ok, output, simgan};

const PIPELINE: &str = r#"
name = "eyes-tiny"
[stages.synthetic]
kind = "generate-eyes"
params = { domain = "synthetic", rows = 60, rows_per_shard = 20, seed = 1 }
[stages.real]
kind = "generate-eyes"
params = { domain = "real-like", rows = 40, rows_per_shard = 40, seed = 2, test_fraction = 0.5 }
"#;

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = util::tempdir();
    let p = util::write(&dir.path().join("pipelines/tiny.toml"), PIPELINE);
    (dir, p)
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn query(dir: &Path, url: &str, sql: &str) -> Value {
    json(&ok(
        simgan(dir).args(["query", url, sql, "--format", "json"])
    ))
}

#[test]
fn run_rerun_status_show_ls_query_export() {
    let (dir, p) = setup();
    let d = dir.path();
    let out = ok(simgan(d).args(["run", p.to_str().unwrap()]));
    assert!(
        out.contains("synthetic") && out.contains("60 rows"),
        "{out}"
    );
    // The default root is ./runs/<pipeline name>.
    assert!(
        d.join("runs/eyes-tiny/synthetic/_manifests/00000001.json")
            .is_file()
    );

    let again = ok(simgan(d).args(["run", p.to_str().unwrap()]));
    assert_eq!(again.matches("up to date").count(), 2, "{again}");
    assert!(
        again.contains("eyes-tiny on ./runs/eyes-tiny: nothing to do, all 2 stages current"),
        "{again}"
    );

    let status = json(&ok(simgan(d).args([
        "status",
        p.to_str().unwrap(),
        "--json",
    ])));
    let stages = status["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2);
    for s in stages {
        assert_eq!(s["state"], "up-to-date");
        assert!(s["name"].is_string() && s["reason"].is_string());
    }

    let show = json(&ok(simgan(d).args([
        "show",
        "runs/eyes-tiny/synthetic",
        "--json",
    ])));
    assert_eq!(
        (
            show["stage"].as_str(),
            show["version"].as_u64(),
            show["rows"].as_u64()
        ),
        (Some("synthetic"), Some(1), Some(60))
    );
    let shards = show["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 3);
    for s in shards {
        let path = d.join("runs/eyes-tiny").join(s["path"].as_str().unwrap());
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, s["bytes"].as_u64().unwrap());
        assert_eq!(
            simgan::shards::checksum(&bytes),
            s["checksum"].as_str().unwrap()
        );
        assert_eq!(s["rows"].as_u64(), Some(20));
    }
    assert!(show["fingerprint"].as_str().unwrap().starts_with("sha256:"));

    let ls = json(&ok(simgan(d).args(["ls", "runs/eyes-tiny", "--json"])));
    let names: Vec<&str> = ls["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["real", "synthetic"]);

    // polars reads the shards: counts, distinct ids, the split, the gaze labels.
    let r = query(
        d,
        "runs/eyes-tiny/real",
        "SELECT split, count(*) AS n, count(DISTINCT id) AS ids FROM data GROUP BY split ORDER BY split",
    );
    let rows = r.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{r}");
    assert_eq!(
        rows.iter().map(|x| x["n"].as_i64().unwrap()).sum::<i64>(),
        40
    );
    assert_eq!(
        rows.iter().map(|x| x["ids"].as_i64().unwrap()).sum::<i64>(),
        40
    );
    let r = query(
        d,
        "runs/eyes-tiny/synthetic",
        "SELECT min(pitch) AS lo, max(pitch) AS hi FROM data WHERE domain = 'synthetic'",
    );
    assert!(r[0]["lo"].as_f64().unwrap() < r[0]["hi"].as_f64().unwrap());

    // export: PNGs + labels.csv
    let ex = d.join("export");
    ok(simgan(d).args([
        "export",
        "runs/eyes-tiny/synthetic",
        "--limit",
        "7",
        "--out",
        ex.to_str().unwrap(),
    ]));
    let csv = std::fs::read_to_string(ex.join("labels.csv")).unwrap();
    assert_eq!(csv.lines().count(), 8, "{csv}");
    let first_png = ex.join(csv.lines().nth(1).unwrap().split(',').nth(1).unwrap());
    let img = image::open(&first_png).unwrap_or_else(|e| panic!("{}: {e}", first_png.display()));
    assert_eq!((img.width(), img.height()), (55, 35));

    // A param change makes exactly that stage stale, with the reason.
    let changed = util::write(
        &dir.path().join("pipelines/tiny2.toml"),
        &PIPELINE.replace("rows = 40,", "rows = 41,"),
    );
    let status = json(&ok(simgan(d).args([
        "status",
        changed.to_str().unwrap(),
        "--root",
        "runs/eyes-tiny",
        "--json",
    ])));
    let st: Vec<(&str, &str)> = status["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["state"].as_str().unwrap()))
        .collect();
    assert_eq!(st, vec![("real", "stale"), ("synthetic", "up-to-date")]);
    assert!(
        status["stages"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("rows")
    );
}

fn verify_exact(d: &Path, stage_url: &str, rows: u64) {
    let show = json(&ok(simgan(d).args(["show", stage_url, "--json"])));
    assert_eq!(show["rows"].as_u64(), Some(rows));
    let root = util::open(d.join("runs/eyes-tiny").to_str().unwrap());
    for s in show["shards"].as_array().unwrap() {
        let info: simgan::shards::ShardInfo = serde_json::from_value(s.clone()).unwrap();
        assert!(
            simgan::shards::verify(&root, &info).unwrap(),
            "checksum of {}",
            info.path
        );
    }
    let r = query(
        d,
        stage_url,
        "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM data",
    );
    assert_eq!(
        (r[0]["n"].as_u64(), r[0]["ids"].as_u64()),
        (Some(rows), Some(rows)),
        "exact rows, no duplicates"
    );
}

#[test]
fn crash_before_commit_leaves_no_version_and_resume_is_exact() {
    let (dir, p) = setup();
    let d = dir.path();
    // Abort (no destructors, like kill -9) after 2 of 3 units of the first stage that runs.
    let out = output(
        simgan(d)
            .args(["run", p.to_str().unwrap(), "--stage", "synthetic"])
            .env("SIMGAN_CRASH_AFTER_UNITS", "2"),
    );
    assert!(!out.status.success());
    assert!(
        !d.join("runs/eyes-tiny/synthetic/_manifests").exists(),
        "no visible version after a crash"
    );
    let status = json(&ok(simgan(d).args([
        "status",
        p.to_str().unwrap(),
        "--json",
    ])));
    assert_eq!(status["stages"][1]["state"], "missing");
    // Crash after the last unit, between the shards and the manifest commit: still nothing visible.
    let out = output(
        simgan(d)
            .args(["run", p.to_str().unwrap(), "--stage", "synthetic"])
            .env("SIMGAN_CRASH_AFTER_UNITS", "1"),
    );
    assert!(!out.status.success());
    assert!(!d.join("runs/eyes-tiny/synthetic/_manifests").exists());
    // The rerun (the dead holder's lease is taken over at once: same host, dead pid) resumes.
    let out = ok(simgan(d).args(["run", p.to_str().unwrap()]));
    assert!(out.contains("(3 units resumed)"), "{out}");
    verify_exact(d, "runs/eyes-tiny/synthetic", 60);
}

#[test]
fn kill_9_mid_stage_then_resume() {
    let dir = util::tempdir();
    let d = dir.path();
    let text = PIPELINE.replace(
        "rows = 60, rows_per_shard = 20",
        "rows = 6000, rows_per_shard = 100",
    );
    let p = util::write(&d.join("pipelines/big.toml"), &text);
    let mut child = simgan(d)
        .args(["run", p.to_str().unwrap(), "--stage", "synthetic"])
        .spawn()
        .unwrap();
    let marker = d.join("runs/eyes-tiny/synthetic/v00000001/_units/00003.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "stage did not progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "run finished before it could be killed; make it bigger"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGKILL: no chance to clean up or release the lease.
    let status = std::process::Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = child.wait();
    assert!(!d.join("runs/eyes-tiny/synthetic/_manifests").exists());
    let out = ok(simgan(d).args(["run", p.to_str().unwrap(), "--stage", "synthetic"]));
    assert!(out.contains("units resumed"), "{out}");
    verify_exact(d, "runs/eyes-tiny/synthetic", 6000);
}

#[test]
fn a_second_run_on_a_locked_root_exits_at_once_naming_the_holder() {
    let (dir, p) = setup();
    let d = dir.path();
    let root = util::open(d.join("runs/eyes-tiny").to_str().unwrap());
    let held =
        simgan::lease::Lease::acquire(&root, "nightly refine", Duration::from_secs(60), false)
            .unwrap();
    let started = Instant::now();
    let out = output(simgan(d).args(["run", p.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(75));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nightly refine") && err.contains(&std::process::id().to_string()),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(held);
    ok(simgan(d).args(["run", p.to_str().unwrap()]));
}

#[test]
#[ignore = "needs the moto S3 server and Python with pyarrow: ci/test.sh installs both"]
fn runs_against_s3_and_pyarrow_reads_the_shards_with_hf_metadata() {
    let (dir, p) = setup();
    let d = dir.path();
    let bucket = util::s3_bucket();
    let root = format!("{bucket}/runs/tiny");
    let env = util::s3_env(util::moto_endpoint());
    let run = |args: &[&str]| {
        let mut c = simgan(d);
        c.args(args).envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        ok(&mut c)
    };
    run(&["run", p.to_str().unwrap(), "--root", &root]);
    let status = json(&run(&[
        "status",
        p.to_str().unwrap(),
        "--root",
        &root,
        "--json",
    ]));
    assert!(
        status["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "up-to-date")
    );
    let r: Value = json(&run(&[
        "query",
        &format!("{root}/synthetic"),
        "SELECT count(*) AS n FROM data WHERE split = 'train'",
        "--format",
        "json",
    ]));
    assert_eq!(r[0]["n"].as_u64(), Some(60));

    // A second reader: pyarrow, straight from S3, checks the schema, the HF metadata, the images.
    let show = json(&run(&["show", &format!("{root}/synthetic"), "--json"]));
    let keys: Vec<String> = show["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("runs/tiny/{}", s["path"].as_str().unwrap()))
        .collect();
    let python = std::env::var("SIMGAN_PYTHON").expect("SIMGAN_PYTHON (set by ci/test.sh)");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/read_back.py");
    let mut c = std::process::Command::new(python);
    c.arg(script)
        .arg(bucket.trim_start_matches("s3://"))
        .args(&keys)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let out = ok(&mut c);
    let report = json(&out);
    assert_eq!(report["rows"].as_u64(), Some(60));
    assert_eq!(report["image_size"], serde_json::json!([55, 35]));
    assert_eq!(report["hf_image_type"], "Image");
    let ids: HashSet<&str> = report["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 60);
}
