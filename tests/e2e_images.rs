//! S+U on a non-eye domain from image folders, end to end at toy sizes: class-subfolder PNGs
//! written by the test (rendered with the built-in shapes), `ingest-images` → `train-refiner` →
//! `refine` → three classifiers → `score` → `report`. Checks the generic parts: RGB images of the
//! folder's size through every stage, the `label` column carried through `refine` unchanged,
//! class scores with the majority-class baseline, and a report with the classification section
//! whose images load in headless Chromium.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;
use simgan::domains::images::shapes::{self, CLASSES, ShapeParams};

use crate::util::{self, ok, show, simgan};

/// `root/<split>/<class>/<n>.png` for `n` images of each look (no split folder when `split` is
/// empty).
fn write_folder(root: &Path, split: &str, params: &ShapeParams, seed: u64, n: u64) {
    for i in 0..n {
        let (img, class) = shapes::render(params, seed, i);
        let dir = root.join(split).join(CLASSES[class]);
        std::fs::create_dir_all(&dir).unwrap();
        img.save(dir.join(format!("{i:04}.png"))).unwrap();
    }
}

const PIPELINE: &str = r#"
name = "shapes-tiny"
[stages.generated]
kind = "generate-shapes"
params = { domain = "real-like", rows = 12, size = 24 }
[stages.synthetic]
kind = "ingest-images"
inputs = { source = "SYN" }
params = { domain = "synthetic", files_per_shard = 40 }
[stages.real]
kind = "ingest-images"
inputs = { source = "REAL" }
params = { domain = "real" }
[stages.refiner]
kind = "train-refiner"
inputs = { synthetic = "synthetic", real = "real" }
params = { width = 4, blocks = 1, d_divisor = 8, batch_size = 8, pretrain_r_steps = 2, pretrain_d_steps = 2, steps = 4, history_size = 32, checkpoint_every = 6, select = "judge", select_holdout = 8, select_judge_steps = 3 }
[stages.refined]
kind = "refine"
inputs = { data = "synthetic", refiner = "refiner" }
[stages.est-synthetic]
kind = "train-estimator"
inputs = { data = "synthetic" }
params = { divisor = 16, steps = 4, batch_size = 8 }
[stages.est-refined]
kind = "train-estimator"
inputs = { data = "refined" }
params = { divisor = 16, steps = 4, batch_size = 8 }
[stages.est-real]
kind = "train-estimator"
inputs = { data = "real" }
params = { divisor = 16, steps = 4, batch_size = 8 }
[stages.score]
kind = "score"
inputs = { test = "real", synthetic = "est-synthetic", refined = "est-refined", real = "est-real", synthetic_data = "synthetic", refined_data = "refined" }
params = { drift_samples = 20 }
[stages.judge]
kind = "judge"
inputs = { real = "real", synthetic = "synthetic", refined = "refined" }
params = { samples = 16, steps = 2, batch_size = 4, divisor = 16 }
[stages.report]
kind = "report"
inputs = { score = "score", judge = "judge", refiner = "refiner", synthetic = "synthetic", refined = "refined", real = "real" }
"#;

/// The pipeline on folders made here, run once per test binary: the folder it ran in (removed
/// at exit). The checks that need Python or Chromium are separate tests on the same run.
fn shapes_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let d = util::shared_tempdir();
        let (syn, real) = (d.join("sim"), d.join("camera"));
        write_folder(&syn, "", &ShapeParams::synthetic(24), 1, 100);
        write_folder(&real, "train", &ShapeParams::real_like(24), 2, 60);
        write_folder(&real, "test", &ShapeParams::real_like(24), 3, 40);
        let text = PIPELINE
            .replace("SYN", syn.to_str().unwrap())
            .replace("REAL", real.to_str().unwrap());
        let p = util::write(&d.join("shapes.toml"), &text);
        ok(simgan(&d).args(["run", p.to_str().unwrap()]));
        d
    })
}

/// The report page of the run.
fn report_html(d: &Path) -> PathBuf {
    util::artifact(d, "shapes-tiny", "report", "report.html").expect("report.html")
}

#[test]
fn image_folders_through_every_sus_stage_to_a_classification_report() {
    let d = shapes_run();
    let q = |url: &str, sql: &str| -> Value {
        serde_json::from_str(&ok(simgan(d).args(["query", url, sql, "--format", "json"]))).unwrap()
    };
    let show = |url: &str| show(d, url);
    // The synthetic folder: 100 rows, 3 shards, labels from the class folders.
    let m = show("runs/shapes-tiny/synthetic");
    assert_eq!(m["rows"], 100, "{m}");
    assert_eq!(m["shards"].as_array().unwrap().len(), 3);
    let splits = q(
        "runs/shapes-tiny/real",
        "SELECT split, count(*) AS n FROM data GROUP BY split ORDER BY split",
    );
    assert_eq!(
        splits,
        serde_json::json!([{"split": "test", "n": 40}, {"split": "train", "n": 60}])
    );
    // refine carries every column but image and domain unchanged.
    let labels = "SELECT id, label, source, split FROM data ORDER BY id";
    assert_eq!(
        q("runs/shapes-tiny/synthetic", labels),
        q("runs/shapes-tiny/refined", labels)
    );
    // Refined images are RGB at the folder's size.
    let refined = show("runs/shapes-tiny/refined");
    let shard: simgan::shards::ShardInfo =
        serde_json::from_value(refined["shards"][0].clone()).unwrap();
    let batches = simgan::shards::read(
        &util::open(d.join("runs/shapes-tiny").to_str().unwrap()),
        &shard,
        None,
    )
    .unwrap();
    let bytes = simgan::sample::image_bytes(&batches[0], "refined").unwrap();
    let img = simgan::sample::SampleImage::decode(bytes.value(0), "refined").unwrap();
    assert_eq!((img.width, img.height, img.channels), (24, 24, 3));
    // The estimators are classifiers over the five classes.
    let est = show("runs/shapes-tiny/est-synthetic");
    let meta_path = est["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap())
        .find(|p| p.ends_with("estimator.json"))
        .unwrap();
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(d.join("runs/shapes-tiny").join(meta_path)).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["task"]["task"], "classification");
    assert_eq!(
        meta["task"]["classes"].as_array().unwrap().len(),
        CLASSES.len()
    );
    // Class scores: every test image for each estimator and the baseline, plus drift rows.
    let scored = q(
        "runs/shapes-tiny/score",
        "SELECT estimator, eval_set, count(*) AS n FROM data GROUP BY estimator, eval_set ORDER BY estimator, eval_set",
    );
    let n = |est: &str, set: &str| {
        scored
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["estimator"] == est && r["eval_set"] == set)
            .map(|r| r["n"].as_i64().unwrap())
    };
    for est in ["synthetic", "refined", "real", "majority-class"] {
        assert_eq!(n(est, "real-test"), Some(40), "{est}: {scored}");
    }
    assert_eq!(n("real", "drift"), Some(20), "{scored}");
    // The report: accuracy table with the baseline, confusion matrices, drift, loading images.
    let html = std::fs::read_to_string(report_html(d)).unwrap();
    for needle in [
        "id=\"task\">classification",
        "id=\"gain-pct\"",
        "data-estimator=\"majority-class\"",
        "class=\"confusion\"",
        "id=\"drift\"",
        "src=\"samples.png\"",
        "id=\"refiner-select\"",
    ] {
        assert!(html.contains(needle), "report lacks {needle}");
    }
    let acc = q(
        "runs/shapes-tiny/report",
        "SELECT estimator, value FROM data WHERE eval_set = 'real-test' AND metric = 'accuracy' ORDER BY estimator",
    );
    assert_eq!(acc.as_array().unwrap().len(), 4, "{acc}");
    for r in acc.as_array().unwrap() {
        assert!((0.0..=1.0).contains(&r["value"].as_f64().unwrap()), "{r}");
    }
}

#[test]
fn the_refiner_is_picked_by_a_held_out_judge() {
    let d = shapes_run();
    let check = util::artifact_json(d, "shapes-tiny", "refiner", "refiner_check.json");
    assert_eq!(check["select"], "judge", "{check}");
    // 8 of each input's train split were kept out of training for the judge.
    assert_eq!(check["holdout"], 8, "{check}");
    assert_eq!(check["chosen"]["refined"]["n"], 8, "{check}");
    // 2 + 2 pretraining iterations, then 4 adversarial rounds of 2 refiner + 1 discriminator
    // steps (16 in all) with a checkpoint every 6: the candidates are the adversarial
    // checkpoints (6, 12) and the end (16), each judged.
    let cands = check["candidates"].as_array().unwrap();
    let steps: Vec<u64> = cands.iter().map(|c| c["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, vec![6, 12, 16], "{check}");
    let aucs: Vec<f64> = cands
        .iter()
        .map(|c| c["judge_auc"].as_f64().unwrap())
        .collect();
    assert!(aucs.iter().all(|a| (0.0..=1.0).contains(a)), "{aucs:?}");
    // The chosen one is the latest within 0.005 (the tie margin) of the lowest AUC.
    let best = aucs.iter().cloned().fold(f64::INFINITY, f64::min);
    let latest_tied = cands
        .iter()
        .rev()
        .find(|c| c["judge_auc"].as_f64().unwrap() <= best + 0.005)
        .unwrap();
    assert_eq!(check["chosen_step"], latest_tied["step"], "{check}");
    assert_eq!(check["judge"]["auc"], latest_tied["judge_auc"], "{check}");
    if aucs.iter().all(|a| *a == best) {
        assert_eq!(check["chosen_step"], 16, "{check}");
    }
}

#[test]
#[ignore = "needs Python with Hugging Face `datasets` (SIMGAN_PYTHON): ci/test.sh installs it"]
fn generated_ingested_and_refined_folders_load_in_hugging_face_datasets() {
    let d = shapes_run();
    // Hugging Face `datasets` loads a generated, an ingested and a refined shard folder with
    // the image column as PIL images and the label as a string.
    let version = |stage: &str| {
        let m = show(d, &format!("runs/shapes-tiny/{stage}"));
        let shard = m["shards"][0]["path"].as_str().unwrap().to_string();
        d.join("runs/shapes-tiny")
            .join(shard)
            .parent()
            .unwrap()
            .to_path_buf()
    };
    let loaded = util::hf_load(&["generated", "synthetic", "refined"].map(version));
    assert_eq!(loaded.len(), 3, "{loaded:?}");
    for (l, rows) in loaded.iter().zip([12, 100, 100]) {
        assert_eq!(l["rows"], rows, "{l}");
        assert_eq!(
            l["image_is_pil"], true,
            "the image column must decode as images: {l}"
        );
        assert_eq!(l["image_mode"], "RGB", "{l}");
        assert_eq!(l["image_size"], serde_json::json!([24, 24]), "{l}");
        assert!(
            l["features"]["image"]
                .as_str()
                .unwrap()
                .starts_with("Image("),
            "{l}"
        );
        assert!(
            CLASSES.contains(&l["values"]["label"].as_str().unwrap()),
            "{l}"
        );
        assert_eq!(l["values"]["split"], "train", "{l}");
    }
    assert_eq!(loaded[2]["values"]["domain"], "refined");
}

#[test]
#[ignore = "needs Chromium (SIMGAN_CHROMIUM): ci/test.sh installs it"]
fn the_classification_report_images_load_in_chromium() {
    let html_file = report_html(shapes_run());
    let html = std::fs::read_to_string(&html_file).unwrap();
    let dom = util::chromium_dom(&html_file);
    let images = html.matches("<img ").count();
    assert_eq!(
        images, 5,
        "samples, losses, accuracy, spectrum, nearest-real grid"
    );
    assert!(html.contains("src=\"nearest.png\""), "nearest-real grid");
    assert!(
        dom.contains(&format!("data-images-loaded=\"{images}/{images}\"")),
        "every image must decode in Chromium; DOM:\n{dom}"
    );
}

/// With a real set that has no labels, the judge runs its plain pairs and says why there are no
/// label-matched ones (in `judge.json`, which the report shows), instead of failing.
#[test]
fn the_judge_skips_label_matching_when_the_real_images_have_no_labels() {
    let dir = util::tempdir();
    let d = dir.path();
    let (syn, real) = (d.join("sim"), d.join("camera"));
    write_folder(&syn, "", &ShapeParams::synthetic(16), 1, 24);
    // Real images straight in the split folders: no class folders, so no label column.
    for (split, seed) in [("train", 2), ("test", 3)] {
        let dir = real.join(split);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..12 {
            let (img, _) = shapes::render(&ShapeParams::real_like(16), seed, i);
            img.save(dir.join(format!("{i:04}.png"))).unwrap();
        }
    }
    let text = format!(
        r#"
name = "unlabelled"
[stages.synthetic]
kind = "ingest-images"
inputs = {{ source = "{}" }}
params = {{ domain = "synthetic" }}
[stages.real]
kind = "ingest-images"
inputs = {{ source = "{}" }}
params = {{ domain = "real" }}
[stages.judge]
kind = "judge"
inputs = {{ real = "real", synthetic = "synthetic" }}
params = {{ samples = 8, steps = 2, batch_size = 4, divisor = 16 }}
"#,
        syn.display(),
        real.display()
    );
    let p = util::write(&d.join("unlabelled.toml"), &text);
    ok(simgan(d).args(["run", p.to_str().unwrap()]));
    let rows: Value = serde_json::from_str(&ok(simgan(d).args([
        "query",
        "runs/unlabelled/judge",
        "SELECT pair FROM data ORDER BY pair",
        "--format",
        "json",
    ])))
    .unwrap();
    let pairs: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pair"].as_str().unwrap())
        .collect();
    assert_eq!(pairs, ["real-vs-real", "synthetic-vs-real"], "{rows}");
    let judge_json = util::artifact(d, "unlabelled", "judge", "judge.json").expect("judge.json");
    let judge: Value = serde_json::from_slice(&std::fs::read(judge_json).unwrap()).unwrap();
    let notes = judge["notes"].to_string();
    assert!(
        notes.contains("no label-matched judge for `synthetic`"),
        "{notes}"
    );
}
