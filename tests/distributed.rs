//! Beyond one machine: workers that coordinate only through the run root, a real single-node
//! Slurm (started by `ci/slurm.sh`), and the printed Kubernetes manifests.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use simgan::domains::eyes::rows::EyeRow;

use crate::util::{self, ok, output, simgan};

const PIPELINE: &str = r#"
name = "dist"
[stages.synthetic]
kind = "generate-eyes"
params = { domain = "synthetic", rows = 400, rows_per_shard = 50, seed = 5 }
[stages.real]
kind = "generate-eyes"
params = { domain = "real-like", rows = 150, rows_per_shard = 50, seed = 6, test_fraction = 0.2 }
"#;

/// Every eye row of a stage's latest version, sorted by id.
fn rows_of(root: &str, stage: &str) -> Vec<EyeRow> {
    let ds =
        simgan::dataset::open(&format!("{root}/{stage}"), util::rt().handle().clone()).unwrap();
    let mut rows = Vec::new();
    for i in 0..ds.shards.len() {
        for b in ds.read(i).unwrap() {
            rows.extend(simgan::domains::eyes::rows::from_batch(&b).unwrap());
        }
    }
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    rows
}

fn versions(root: &Path, stage: &str) -> usize {
    std::fs::read_dir(root.join(stage).join("_manifests"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn workers_run_twice_out_of_order_and_killed_commit_once_with_exact_rows() {
    let dir = util::tempdir();
    let d = dir.path();
    let p = util::write(&d.join("p.toml"), PIPELINE);
    let p = p.to_str().unwrap();
    let worker = |slot: &str| {
        let mut c = simgan(d);
        c.args(["run", p, "--stage", "synthetic", "--worker", slot, "--json"]);
        c
    };
    // Worker 2 first, then worker 0 twice.
    let out: Value = serde_json::from_str(&ok(&mut worker("2/4"))).unwrap();
    assert_eq!(out["UnitsDone"]["ran"], 2, "{out}");
    ok(&mut worker("0/4"));
    let out: Value = serde_json::from_str(&ok(&mut worker("0/4"))).unwrap();
    assert_eq!(
        out["UnitsDone"]["ran"], 0,
        "a rerun worker redoes nothing: {out}"
    );
    // Worker 1 dies after its first unit (abort: no cleanup), then is rerun.
    let crashed = output(worker("1/4").env("SIMGAN_CRASH_AFTER_UNITS", "1"));
    assert!(!crashed.status.success());
    let status: Value = serde_json::from_str(&ok(simgan(d).args(["status", p, "--json"]))).unwrap();
    let synth = status["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "synthetic")
        .unwrap()
        .clone();
    assert_eq!(synth["state"], "missing");
    assert_eq!(
        synth["units"],
        serde_json::json!([5, 8]),
        "distributed progress: {synth}"
    );
    ok(&mut worker("1/4"));
    assert_eq!(
        versions(&d.join("runs/dist"), "synthetic"),
        0,
        "not committed before every unit is done"
    );
    // The last worker commits; a late duplicate of it finds the version committed.
    let out: Value = serde_json::from_str(&ok(&mut worker("3/4"))).unwrap();
    assert_eq!(out["Committed"]["rows"], 400, "{out}");
    let out: Value = serde_json::from_str(&ok(&mut worker("3/4"))).unwrap();
    assert_eq!(out["AlreadyCommitted"]["version"], 1, "{out}");
    assert_eq!(versions(&d.join("runs/dist"), "synthetic"), 1);

    // Same rows as a single-machine run.
    let single = d.join("single");
    ok(simgan(d).args([
        "run",
        p,
        "--root",
        single.to_str().unwrap(),
        "--stage",
        "synthetic",
    ]));
    let a = rows_of(d.join("runs/dist").to_str().unwrap(), "synthetic");
    assert_eq!(a.len(), 400);
    assert_eq!(
        a.iter()
            .map(|r| r.id.as_str())
            .collect::<std::collections::HashSet<_>>()
            .len(),
        400,
        "no duplicate ids"
    );
    assert!(
        a == rows_of(single.to_str().unwrap(), "synthetic"),
        "distributed rows equal a single-machine run"
    );
}

#[test]
fn concurrent_duplicate_workers_commit_exactly_once() {
    let dir = util::tempdir();
    let d = dir.path();
    let p = util::write(&d.join("p.toml"), PIPELINE);
    let children: Vec<_> = ["0/3", "1/3", "2/3", "1/3", "2/3", "0/3"]
        .iter()
        .map(|slot| {
            simgan(d)
                .args([
                    "run",
                    p.to_str().unwrap(),
                    "--stage",
                    "synthetic",
                    "--worker",
                    slot,
                ])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    assert_eq!(versions(&d.join("runs/dist"), "synthetic"), 1);
    let rows = rows_of(d.join("runs/dist").to_str().unwrap(), "synthetic");
    assert_eq!(rows.len(), 400);
    assert_eq!(
        rows.iter()
            .map(|r| r.id.as_str())
            .collect::<std::collections::HashSet<_>>()
            .len(),
        400
    );
}

/// A single-node Slurm started for this test binary, stopped when the process exits.
struct Slurm {
    conf: PathBuf,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/slurm.sh")
}

fn slurm() -> &'static Slurm {
    static SLURM: OnceLock<Slurm> = OnceLock::new();
    SLURM.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("simgan-slurm-{}", std::process::id()));
        let out = std::process::Command::new(script()).args(["start", dir.to_str().unwrap()]).output().expect("ci/slurm.sh");
        assert!(
            out.status.success(),
            "starting Slurm failed (ci/test.sh installs slurmctld, slurmd, slurm-client and munge):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let conf = dir.join("slurm.conf");
        let (d2, c2) = (dir.clone(), conf.clone());
        util::at_exit(move || {
            let _ = std::process::Command::new(script()).args(["stop", d2.to_str().unwrap()]).env("SLURM_CONF", &c2).status();
            let _ = std::fs::remove_dir_all(&d2);
        });
        Slurm { conf }
    })
}

#[test]
#[ignore = "needs Slurm and munge (Debian packages, root): ci/test.sh installs and starts them"]
fn a_pipeline_submitted_to_slurm_equals_a_single_machine_run() {
    let s = slurm();
    let dir = util::tempdir();
    let d = dir.path();
    let p = util::write(&d.join("p.toml"), PIPELINE);
    let root = d.join("slurm-root");
    let mut c = simgan(d);
    c.args([
        "submit",
        p.to_str().unwrap(),
        "--slurm",
        "--workers",
        "4",
        "--root",
        root.to_str().unwrap(),
        "--out",
        d.join("jobs").to_str().unwrap(),
    ]);
    c.env("SLURM_CONF", &s.conf);
    let submitted = ok(&mut c);
    assert_eq!(submitted.lines().count(), 2, "{submitted}");
    let script = std::fs::read_to_string(d.join("jobs/synthetic.sbatch")).unwrap();
    assert!(
        script.contains("#SBATCH --array=0-3") && script.contains("--workers 4"),
        "{script}"
    );

    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let st: Value = serde_json::from_str(&ok(simgan(d).args([
            "status",
            p.to_str().unwrap(),
            "--root",
            root.to_str().unwrap(),
            "--json",
        ])))
        .unwrap();
        if st["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "up-to-date")
        {
            break;
        }
        let logs: Vec<String> = std::fs::read_dir(d.join("jobs/logs"))
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "Slurm jobs did not finish: {st}\nlogs:\n{}",
            logs.join("\n")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let single = d.join("single");
    ok(simgan(d).args([
        "run",
        p.to_str().unwrap(),
        "--root",
        single.to_str().unwrap(),
    ]));
    for stage in ["synthetic", "real"] {
        let a = rows_of(root.to_str().unwrap(), stage);
        assert!(!a.is_empty());
        assert!(
            a == rows_of(single.to_str().unwrap(), stage),
            "{stage}: Slurm rows equal the single-machine run"
        );
    }
    assert_eq!(versions(&root, "synthetic"), 1);
    // Four array tasks wrote logs for the splittable stage.
    let logs = std::fs::read_dir(d.join("jobs/logs"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("synthetic-"))
        .count();
    assert_eq!(logs, 4);
}

#[test]
#[ignore = "needs Python with PyYAML (SIMGAN_PYTHON): ci/test.sh installs it"]
fn kubernetes_manifests_parse_as_yaml_with_the_expected_fields() {
    let dir = util::tempdir();
    let d = dir.path();
    let p = util::write(&d.join("p.toml"), PIPELINE);
    let yaml = ok(simgan(d).args([
        "submit",
        p.to_str().unwrap(),
        "--k8s",
        "--workers",
        "6",
        "--root",
        "s3://bucket/runs/dist",
        "--image",
        "registry.example/simgan:1",
    ]));
    let python = std::env::var("SIMGAN_PYTHON").expect("SIMGAN_PYTHON (set by ci/test.sh)");
    let code = "import sys, json, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))";
    let mut child = std::process::Command::new(python)
        .args(["-c", code])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{yaml}");
    let docs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(docs.len(), 2, "{yaml}");
    for doc in &docs {
        assert_eq!(doc["kind"], "Job");
        assert_eq!(doc["spec"]["completionMode"], "Indexed");
        assert_eq!(doc["spec"]["completions"], 6);
        assert_eq!(doc["spec"]["parallelism"], 6);
        assert!(doc["spec"]["backoffLimitPerIndex"].is_u64());
        let c = &doc["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "registry.example/simgan:1");
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(
            args.windows(2).any(|w| w == ["--workers", "6"])
                && args
                    .windows(2)
                    .any(|w| w == ["--root", "s3://bucket/runs/dist"]),
            "{args:?}"
        );
    }
}
