//! The whole eye pipeline end to end at toy sizes: every stage's manifest, a report whose
//! numbers parse and whose images load in headless Chromium, refiner kill-and-resume, and the
//! refine stage's one-to-one, deterministic rows.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

use crate::util::{self, ok, output, show, simgan};

/// The demo pipeline shrunk to seconds.
pub(crate) const TINY: &str = r#"
name = "tiny"
[stages.synthetic]
kind = "generate-eyes"
params = { domain = "synthetic", rows = 96, rows_per_shard = 32, seed = 1 }
[stages.real]
kind = "generate-eyes"
params = { domain = "real-like", rows = 96, rows_per_shard = 48, seed = 2, test_fraction = 0.25 }
[stages.refiner]
kind = "train-refiner"
inputs = { synthetic = "synthetic", real = "real" }
params = { width = 4, blocks = 1, d_divisor = 8, batch_size = 8, pretrain_r_steps = 2, pretrain_d_steps = 2, steps = 2, checkpoint_every = 2, history_size = 32, select_judge_steps = 4 }
[stages.refined]
kind = "refine"
inputs = { data = "synthetic", refiner = "refiner" }
params = { batch_size = 16 }
[stages.est-synthetic]
kind = "train-estimator"
inputs = { data = "synthetic" }
params = { divisor = 16, steps = 4, batch_size = 8 }
[stages.est-refined]
kind = "train-estimator"
inputs = { data = "refined" }
params = { divisor = 16, steps = 4, batch_size = 8, ensemble = 2 }
[stages.est-real]
kind = "train-estimator"
inputs = { data = "real" }
params = { divisor = 16, steps = 4, batch_size = 8 }
[stages.score]
kind = "score"
inputs = { test = "real", synthetic = "est-synthetic", refined = "est-refined", real = "est-real", synthetic_data = "synthetic", refined_data = "refined" }
params = { drift_samples = 32 }
[stages.judge]
kind = "judge"
inputs = { real = "real", synthetic = "synthetic", refined = "refined" }
params = { samples = 16, steps = 2, batch_size = 4, divisor = 16 }
[stages.report]
kind = "report"
inputs = { score = "score", judge = "judge", refiner = "refiner", synthetic = "synthetic", refined = "refined", real = "real" }
"#;

const STAGES: [&str; 10] = [
    "synthetic",
    "real",
    "refiner",
    "refined",
    "est-synthetic",
    "est-refined",
    "est-real",
    "score",
    "judge",
    "report",
];

/// The tiny pipeline, run once per test binary: the folder it ran in (removed at exit). The
/// checks that need Python or Chromium are separate tests on the same run.
fn tiny_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let d = util::shared_tempdir();
        let p = util::write(&d.join("tiny.toml"), TINY);
        let out = ok(simgan(&d).args(["run", p.to_str().unwrap()]));
        util::write(&d.join("run.out"), &out);
        d
    })
}

/// The report page of the tiny run.
fn tiny_report_html(d: &Path) -> PathBuf {
    util::artifact(d, "tiny", "report", "report.html").expect("report.html")
}

#[test]
fn tiny_pipeline_end_to_end_with_a_report() {
    let d = tiny_run();
    for stage in STAGES {
        let m = show(d, &format!("runs/tiny/{stage}"));
        assert_eq!(m["version"], 1, "{stage}");
    }
    // The run ends with its answer: the headline and where the report is; `simgan report`
    // says it again, also as JSON.
    let out = std::fs::read_to_string(d.join("run.out")).unwrap();
    let page = "runs/tiny/report/v00000001/_artifacts/report.html";
    assert!(
        out.contains("tiny on ./runs/tiny: 10 stages ran in")
            && out.contains("report (gaze): refined-trained ")
            && out.contains(&format!("  report: ./{page}")),
        "{out}"
    );
    let again = ok(simgan(d).args(["report", "runs/tiny"]));
    assert!(
        again.contains("report (gaze): refined-trained ") && again.contains(page),
        "{again}"
    );
    let findings: Value =
        serde_json::from_str(&ok(simgan(d).args(["report", "runs/tiny", "--json"]))).unwrap();
    assert_eq!(findings[0]["stage"], "report", "{findings}");
    assert_eq!(findings[0]["task"], "gaze", "{findings}");
    assert!(
        findings[0]["headline"]
            .as_str()
            .unwrap()
            .starts_with("refined-trained"),
        "{findings}"
    );
    assert!(
        std::path::Path::new(findings[0]["page"].as_str().unwrap()).is_absolute()
            || d.join(findings[0]["page"].as_str().unwrap()).is_file(),
        "{findings}"
    );
    let none = output(simgan(d).args(["report", "runs/tiny", "--stage", "score"]));
    assert!(
        !none.status.success()
            && String::from_utf8_lossy(&none.stderr).contains("has no committed report version"),
        "{none:?}"
    );
    // An ensemble of two: both members' weights, and one metrics row per step of each.
    let est = show(d, "runs/tiny/est-refined");
    let names: Vec<&str> = est["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap().rsplit('/').next().unwrap())
        .collect();
    assert!(
        names.contains(&"gaze_net.safetensors") && names.contains(&"gaze_net-1.safetensors"),
        "{names:?}"
    );
    assert_eq!(est["rows"], 8, "{est}");
    // The refined set has the synthetic rows one to one, same ids and labels, other pixels.
    let q = |url: &str, sql: &str| -> Value {
        serde_json::from_str(&ok(simgan(d).args(["query", url, sql, "--format", "json"]))).unwrap()
    };
    let labels = "SELECT id, pitch, yaw, split FROM data ORDER BY id";
    assert_eq!(
        q("runs/tiny/synthetic", labels),
        q("runs/tiny/refined", labels)
    );
    let domains = q(
        "runs/tiny/refined",
        "SELECT domain, count(*) AS n FROM data GROUP BY domain",
    );
    assert_eq!(domains, serde_json::json!([{"domain": "refined", "n": 96}]));

    // Report: every estimator's numbers parse; the HTML names them and its images load.
    let report = show(d, "runs/tiny/report");
    // One row per estimator, evaluation set and metric.
    let metric = |m: &str| {
        q(
            "runs/tiny/report",
            &format!(
                "SELECT estimator, value AS {m} FROM data WHERE eval_set = 'real-test' AND metric = '{m}' ORDER BY estimator"
            ),
        )
    };
    let (means, withins) = (metric("mean_deg"), metric("within_7"));
    let rows: Vec<Value> = means
        .as_array()
        .unwrap()
        .iter()
        .zip(withins.as_array().unwrap())
        .map(|(m, w)| {
            assert_eq!(m["estimator"], w["estimator"]);
            serde_json::json!({"estimator": m["estimator"], "mean_deg": m["mean_deg"], "within_7": w["within_7"]})
        })
        .collect();
    // The three estimators and the constant mean-gaze predictor they are checked against.
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(rows[0]["estimator"], "mean-gaze");
    for r in &rows {
        let mean = r["mean_deg"].as_f64().unwrap();
        let within = r["within_7"].as_f64().unwrap();
        assert!(
            mean > 0.0 && mean < 180.0 && (0.0..=100.0).contains(&within),
            "{r}"
        );
    }
    assert_eq!(report["version"], 1, "{report}");
    let html = std::fs::read_to_string(tiny_report_html(d)).unwrap();
    for needle in [
        "id=\"gain-pct\"",
        "data-estimator=\"refined\"",
        "src=\"samples.png\"",
        "src=\"losses.svg\"",
        "id=\"drift\"",
        "11.2",
        "id=\"checks\"",
        "id=\"realism\"",
        "data-pair=\"refined-vs-real\"",
        "id=\"pixel-stats\"",
        "src=\"spectrum.svg\"",
        "id=\"pupil\"",
        "src=\"nearest.png\"",
        "href=\"turing.html\"",
    ] {
        assert!(html.contains(needle), "report lacks {needle}");
    }
    // The pupil measure: per pair in the score table (pixels), aggregated in the report.
    let pupil = q(
        "runs/tiny/score",
        "SELECT eval_set, count(*) AS n, min(error_px) AS lo, max(error_px) AS hi, count(error_deg) AS deg FROM data WHERE estimator = 'pupil-centre' GROUP BY eval_set ORDER BY eval_set",
    );
    let sets: Vec<&str> = pupil
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["eval_set"].as_str().unwrap())
        .collect();
    assert_eq!(
        sets,
        ["pupil-refined", "pupil-shift", "pupil-synthetic"],
        "{pupil}"
    );
    for r in pupil.as_array().unwrap() {
        let n = r["n"].as_i64().unwrap();
        // Most of the 32 drift pairs have a visible pupil; distances are pixels inside the eye.
        assert!((16..=32).contains(&n), "{r}");
        assert!(
            r["lo"].as_f64().unwrap() >= 0.0 && r["hi"].as_f64().unwrap() < 30.0,
            "{r}"
        );
        assert_eq!(r["deg"], 0, "pupil rows carry no angle: {r}");
    }
    let shift = q(
        "runs/tiny/report",
        "SELECT value FROM data WHERE estimator = 'pupil-centre' AND eval_set = 'pupil-shift' AND metric = 'mean_px'",
    );
    assert!(shift[0]["value"].as_f64().unwrap() >= 0.0, "{shift}");
    // The realism judge: the three pairs, each AUC a probability, also in the report's figures.
    let judged = q(
        "runs/tiny/judge",
        "SELECT pair, auc, n_test FROM data ORDER BY pair",
    );
    let pairs: Vec<&str> = judged
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pair"].as_str().unwrap())
        .collect();
    // Besides the three pairs, the label-matched ones (the real test split has gaze labels).
    assert_eq!(
        pairs,
        [
            "real-vs-real",
            "refined-vs-real",
            "refined-vs-real-matched",
            "synthetic-vs-real",
            "synthetic-vs-real-matched"
        ],
        "{judged}"
    );
    for r in judged.as_array().unwrap() {
        assert!((0.0..=1.0).contains(&r["auc"].as_f64().unwrap()), "{r}");
        assert_eq!(r["n_test"], 16, "{r}");
    }
    let figures = q(
        "runs/tiny/report",
        "SELECT count(*) AS n FROM data WHERE estimator = 'judge' AND metric = 'auc'",
    );
    assert_eq!(figures, serde_json::json!([{"n": 5}]), "{figures}");
    // The warning box appears exactly when an estimator is within 10 % of predicting the mean
    // gaze (in this tiny run, a few dozen training steps: all of them are).
    let base = rows[0]["mean_deg"].as_f64().unwrap();
    let unlearned = rows[1..]
        .iter()
        .any(|r| r["mean_deg"].as_f64().unwrap() >= 0.9 * base);
    assert_eq!(
        html.contains("predicting the mean gaze"),
        unlearned,
        "mean-gaze check out of step with the numbers: {rows:?}"
    );
}

/// `docs/tools/pixel_features.py` (README: what a classifier uses) reads the stages of a run
/// through their manifests and scores each statistic: the synthetic eyes' brightness alone
/// separates them from the real-like test split.
#[test]
#[ignore = "needs Python with numpy, pyarrow and Pillow (SIMGAN_PYTHON): ci/test.sh installs them"]
fn pixel_features_tool_reads_a_run_and_scores_each_statistic() {
    let d = tiny_run();
    let python = std::env::var("SIMGAN_PYTHON").expect("SIMGAN_PYTHON (set by ci/test.sh)");
    let root = d.join("runs/tiny");
    let out = ok(std::process::Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/tools/pixel_features.py"))
        .arg(&root)
        .arg(root.join("synthetic"))
        .arg(root.join("refined")));
    // Per set: its name, then `  STAT AUC a   mean x / real y` lines.
    let mut sets: Vec<(String, Vec<(String, f64)>)> = Vec::new();
    for line in out.lines() {
        match line.strip_prefix("  ") {
            Some(stat) => {
                let f: Vec<&str> = stat.split_whitespace().collect();
                assert_eq!(f.get(1), Some(&"AUC"), "{line}");
                let auc: f64 = f[2].parse().unwrap_or_else(|e| panic!("{e}: {line}"));
                assert!((0.5..=1.0).contains(&auc), "{line}");
                sets.last_mut()
                    .expect("a set line first")
                    .1
                    .push((f[0].to_string(), auc));
            }
            None => sets.push((line.to_string(), Vec::new())),
        }
    }
    assert_eq!(sets.len(), 2, "{out}");
    assert!(sets.iter().all(|(_, stats)| stats.len() == 16), "{out}");
    let synthetic_mean = sets[0].1.iter().find(|(k, _)| k == "mean").map(|s| s.1);
    assert!(synthetic_mean.is_some_and(|a| a >= 0.9), "{out}");
}

#[test]
#[ignore = "needs Python with Hugging Face `datasets` (SIMGAN_PYTHON): ci/test.sh installs it"]
fn tiny_pipeline_shards_load_in_hugging_face_datasets() {
    let d = tiny_run();
    // Hugging Face `datasets` loads the eye shards with the image as a PIL image and the gaze
    // as a list of three floats.
    let shard = show(d, "runs/tiny/refined")["shards"][0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let folder = d
        .join("runs/tiny")
        .join(shard)
        .parent()
        .unwrap()
        .to_path_buf();
    let hf = util::hf_load(&[folder]).remove(0);
    assert_eq!(hf["image_is_pil"], true, "{hf}");
    assert_eq!(hf["image_mode"], "L", "{hf}");
    assert_eq!(hf["image_size"], serde_json::json!([55, 35]), "{hf}");
    let gaze = hf["values"]["gaze"].as_array().unwrap();
    assert!(gaze.len() == 3 && gaze.iter().all(Value::is_f64), "{hf}");
    assert!(
        hf["values"]["pitch"].is_f64() && hf["values"]["domain"] == "refined",
        "{hf}"
    );
}

#[test]
#[ignore = "needs Chromium (SIMGAN_CHROMIUM): ci/test.sh installs it"]
fn tiny_pipeline_report_images_load_in_chromium() {
    let html_file = tiny_report_html(tiny_run());
    let html = std::fs::read_to_string(&html_file).unwrap();
    let dom = util::chromium_dom(&html_file);
    let images = html.matches("<img ").count();
    assert_eq!(
        images, 6,
        "samples, % within d, losses, accuracy, spectrum, nearest real"
    );
    assert!(
        dom.contains(&format!("data-images-loaded=\"{images}/{images}\"")),
        "every image must decode in Chromium; DOM:\n{dom}"
    );
}

/// The report's Turing test page, driven in Chromium by a script that clicks one answer.
fn turing_session(strategy: &str) -> Value {
    let html_file = tiny_report_html(tiny_run());
    util::turing_click(&html_file.with_file_name("turing.html"), strategy)
}

#[test]
#[ignore = "needs Chromium and ChromeDriver (SIMGAN_CHROMIUM): ci/test.sh installs them"]
fn a_subject_who_always_answers_real_scores_chance_on_the_turing_page() {
    // The page shows as many refined as real images: every real test image of the tiny run
    // (about a quarter of 96), so an always-"real" (or always-"refined") subject is right on half.
    for strategy in ["real", "refined", "keys-real"] {
        let r = turing_session(strategy);
        let n = r["total"].as_i64().unwrap();
        assert!(n >= 16 && n % 2 == 0 && r["clicks"] == n, "{r}");
        assert_eq!(r["correct"], n / 2, "{strategy}: {r}");
        assert_eq!(r["accuracy"], 50.0, "{r}");
        assert_eq!(r["p_value"], 1.0, "{r}");
        assert_eq!(
            r["progress_first"][0],
            "Image 1 of ".to_string() + &n.to_string(),
            "{r}"
        );
        assert_eq!(r["progress_last"][0], format!("Image {n} of {n}"), "{r}");
        // The downloadable answers: one per image, each image once, half of them real.
        let a = &r["answers"];
        assert_eq!(
            (a["correct"].as_i64(), a["total"].as_i64()),
            (Some(n / 2), Some(n)),
            "{a}"
        );
        let answers = a["answers"].as_array().unwrap();
        let answer = if strategy == "refined" {
            "refined"
        } else {
            "real"
        };
        assert!(answers.iter().all(|x| x["answer"] == answer), "{a}");
        let ids: std::collections::BTreeSet<&str> =
            answers.iter().map(|x| x["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len() as i64, n, "every image shown once: {a}");
        let real = answers.iter().filter(|x| x["truth"] == "real").count() as i64;
        assert_eq!(real, n / 2, "{a}");
        for x in answers {
            assert_eq!(x["correct"], x["truth"] == x["answer"], "{x}");
        }
    }
}

#[test]
fn a_killed_refiner_training_resumes_from_its_checkpoint() {
    let dir = util::tempdir();
    let d = dir.path();
    let p = util::write(&d.join("tiny.toml"), TINY);
    let p = p.to_str().unwrap();
    ok(simgan(d).args(["run", p, "--stage", "synthetic", "--stage", "real"]));
    // Abort right after the third checkpoint (iteration 6 of 10), the first one after the
    // pretraining, so the held-out judge has measured one candidate.
    let crashed = output(
        simgan(d)
            .args(["run", p, "--stage", "refiner"])
            .env("SIMGAN_CRASH_AFTER_CHECKPOINTS", "3"),
    );
    assert!(!crashed.status.success());
    let resumed = output(
        simgan(d)
            .args(["run", p, "--stage", "refiner"])
            .env("RUST_LOG", "info"),
    );
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let log = String::from_utf8_lossy(&resumed.stderr);
    assert!(
        log.contains("resuming training from checkpoint") && log.contains("step=6"),
        "{log}"
    );
    // The selection kept the candidate measured before the crash, and measured the rest once.
    let check = util::artifact_json(d, "tiny", "refiner", "refiner_check.json");
    assert_eq!(check["select"], "judge", "{check}");
    let steps: Vec<u64> = check["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![6, 8, 10], "{check}");
    let steps: Value = serde_json::from_str(&ok(simgan(d).args([
        "query",
        "runs/tiny/refiner",
        "SELECT step, count(*) AS n FROM data GROUP BY step ORDER BY step",
        "--format",
        "json",
    ])))
    .unwrap();
    let steps = steps.as_array().unwrap();
    assert_eq!(steps.len(), 10, "every iteration exactly once: {steps:?}");
    assert!(
        steps
            .iter()
            .enumerate()
            .all(|(i, s)| s["step"] == i && s["n"] == 1),
        "{steps:?}"
    );
}

#[test]
fn a_refiner_with_too_few_images_for_its_judge_keeps_the_last_and_says_why() {
    let dir = util::tempdir();
    let d = dir.path();
    // 21 real training images (the rest of 24 is the seeded test split): fewer than the 32 that
    // `select = "judge"` (the default) needs.
    let text = TINY.replace(
        "rows = 96, rows_per_shard = 48, seed = 2",
        "rows = 24, rows_per_shard = 24, seed = 2",
    );
    let p = util::write(&d.join("tiny.toml"), &text);
    let p = p.to_str().unwrap();
    ok(simgan(d).args([
        "run",
        p,
        "--stage",
        "synthetic",
        "--stage",
        "real",
        "--stage",
        "refiner",
    ]));
    let check = util::artifact_json(d, "tiny", "refiner", "refiner_check.json");
    assert_eq!(check["select"], "last", "{check}");
    assert_eq!(check["chosen_step"], 10, "{check}");
    let note = check["select_note"].as_str().unwrap();
    assert!(
        note.contains("needs at least 32") && note.contains("synthetic 96, real 21"),
        "{note}"
    );
}

#[test]
fn refining_twice_gives_identical_shards_and_a_new_refiner_makes_refine_stale() {
    let dir = util::tempdir();
    let d = dir.path();
    let p = util::write(&d.join("tiny.toml"), TINY);
    let p = p.to_str().unwrap();
    ok(simgan(d).args(["run", p, "--stage", "synthetic", "--stage", "real"]));
    ok(simgan(d).args(["run", p, "--stage", "refiner"]));
    ok(simgan(d).args(["run", p, "--stage", "refined"]));
    ok(simgan(d).args(["run", p, "--stage", "refined", "--force"]));
    let v1 = show(d, "runs/tiny/refined@1");
    let v2 = show(d, "runs/tiny/refined@2");
    let sums = |m: &Value| {
        m["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["checksum"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        sums(&v1),
        sums(&v2),
        "the same refiner on the same shard gives byte-identical output on CPU"
    );
    let status =
        |args: &[&str]| -> Value { serde_json::from_str(&ok(simgan(d).args(args))).unwrap() };
    let st = status(&["status", p, "--json"]);
    let state = |st: &Value, n: &str| {
        st["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(state(&st, "refined"), "up-to-date");
    // Two lanes at once (the refiner has a noise channel: each batch's noise comes from its own
    // seeded generator, not the backend's shared one, which the lanes would interleave): still
    // the same bytes.
    ok(simgan(d).args([
        "run",
        p,
        "--stage",
        "refined",
        "--set",
        r#"refined.devices=["cpu", "cpu"]"#,
    ]));
    let v3 = show(d, "runs/tiny/refined@3");
    assert_eq!(sums(&v1), sums(&v3), "two lanes refine as one does");
    // bf16 weights and images: a new version, every row, other bytes (the images moved by a
    // grey level here and there), and again the same bytes when rerun.
    for _ in 0..2 {
        ok(simgan(d).args([
            "run",
            p,
            "--stage",
            "refined",
            "--force",
            "--set",
            r#"refined.precision="bf16""#,
        ]));
    }
    let (v4, v5) = (
        show(d, "runs/tiny/refined@4"),
        show(d, "runs/tiny/refined@5"),
    );
    assert_eq!(v4["rows"], v1["rows"]);
    assert_ne!(sums(&v1), sums(&v4), "bf16 changed nothing: not cast?");
    assert_eq!(sums(&v4), sums(&v5), "bf16 refines the same way twice");
    // Mixed-precision training: the refiner (R and D in bf16) and a gaze estimator (f16) train
    // and commit, with the precision in their manifests.
    ok(simgan(d).args([
        "run",
        p,
        "--stage",
        "refiner",
        "--stage",
        "est-synthetic",
        "--force",
        "--set",
        r#"refiner.precision="bf16""#,
        "--set",
        r#"est-synthetic.precision="f16""#,
    ]));
    assert_eq!(
        show(d, "runs/tiny/refiner@2")["params"]["precision"],
        "bf16"
    );
    assert_eq!(
        show(d, "runs/tiny/est-synthetic@1")["params"]["precision"],
        "f16"
    );
    // The new refiner version makes `refined` stale; the data stages stay up to date.
    let st = status(&["status", p, "--json"]);
    assert_eq!(state(&st, "refined"), "stale");
    assert_eq!(state(&st, "synthetic"), "up-to-date");
}
