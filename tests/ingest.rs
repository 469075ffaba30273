//! The ingest stages on fixture folders in the real formats, with every kind of bad input under
//! both `on_error` policies: `fail` names the file and the field and commits nothing; `skip`
//! ingests the good samples and lists every bad input, with its reason, in the manifest.

use std::path::Path;

use simgan::domains::eyes::mpiigaze::{fixture_day_mat, fixture_day_vars, fixture_eye};
use simgan::domains::eyes::unityeyes::{fixture_image, fixture_json, fixture_label};
use simgan::manifest;
use simgan::mat::{MatValue, NumericData, write_mat};
use simgan::pipeline::Pipeline;
use simgan::runner::{self, RunOptions};
use simgan::storage::Root;

use crate::util;

fn write_bytes(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, bytes).unwrap();
}

/// A good UnityEyes sample `stem.jpg` + `stem.json` (640×480).
fn ue_good(dir: &Path, stem: &str, k: usize) {
    let f = k as f32 * 0.1;
    let label = fixture_label(
        [300.0 + 10.0 * f, 240.0],
        90.0,
        simgan::domains::eyes::from_pitch_yaw(0.1 - 0.05 * f, 0.2 - 0.1 * f),
        [0.0, 0.0, 0.0],
    );
    let img = fixture_image(&label, 640, 480);
    img.save(dir.join(format!("{stem}.jpg"))).unwrap();
    write_bytes(
        &dir.join(format!("{stem}.json")),
        fixture_json(&label, 480).as_bytes(),
    );
}

/// The bad UnityEyes inputs: (stem, what is wrong, the file a message must name, a word of the
/// field or problem it must name).
fn ue_bad(dir: &Path) -> Vec<(&'static str, &'static str, &'static str, &'static str)> {
    ue_good(dir, "5", 5);
    let jpg = std::fs::read(dir.join("5.jpg")).unwrap();
    write_bytes(&dir.join("5.jpg"), &jpg[..jpg.len() / 3]); // truncated jpg
    ue_good(dir, "6", 6);
    write_bytes(&dir.join("6.jpg"), b"GIF89a? no, just text"); // not an image
    ue_good(dir, "7", 7);
    write_bytes(&dir.join("7.json"), b"{ \"eye_details\": { "); // malformed JSON
    ue_good(dir, "8", 8);
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("8.json")).unwrap()).unwrap();
    v["eye_details"].as_object_mut().unwrap().remove("look_vec"); // missing key
    write_bytes(&dir.join("8.json"), v.to_string().as_bytes());
    ue_good(dir, "9", 9);
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("9.json")).unwrap()).unwrap();
    v["eye_details"]["look_vec"] = "(NaN, 0, -1, 0.0000)".into(); // NaN gaze
    write_bytes(&dir.join("9.json"), v.to_string().as_bytes());
    ue_good(dir, "10", 10);
    std::fs::remove_file(dir.join("10.json")).unwrap(); // labels missing
    vec![
        ("5", "truncated jpg", "5.jpg", "image"),
        ("6", "not an image", "6.jpg", "image"),
        ("7", "malformed JSON", "7.json", "json"),
        ("8", "missing key", "8.json", "look_vec"),
        ("9", "NaN gaze", "9.json", "look_vec"),
        ("10", "missing labels", "10.json", "missing"),
    ]
}

fn ingest_pipeline(kind: &str, source: &Path, on_error: &str) -> Pipeline {
    let text = format!(
        "name = \"ingest\"\n[stages.eyes]\nkind = \"{kind}\"\ninputs = {{ source = \"{}\" }}\nparams = {{ on_error = \"{on_error}\" }}\n",
        source.display()
    );
    Pipeline::parse(&text, "ingest.toml", &simgan::registry::builtin()).unwrap()
}

fn root_of(dir: &Path) -> Root {
    Root::open(&dir.to_string_lossy(), util::rt().handle().clone()).unwrap()
}

/// `fail`: the run errors naming `file` and `word`, and no version is committed.
fn assert_fails(kind: &str, source: &Path, file: &str, word: &str) {
    let out = util::tempdir();
    let root = root_of(out.path());
    let err = runner::run(
        &ingest_pipeline(kind, source, "fail"),
        &root,
        &RunOptions::default(),
    )
    .err()
    .unwrap_or_else(|| panic!("{kind}: bad input {file} did not fail the run"));
    let msg = format!("{err:#}").to_lowercase();
    assert!(
        msg.contains(&file.to_lowercase()) && msg.contains(&word.to_lowercase()),
        "{kind}: error should name {file} and {word}: {msg}"
    );
    assert!(
        manifest::latest(&root, "eyes").unwrap().is_none(),
        "a failed ingest committed a version"
    );
}

#[test]
fn unityeyes_bad_inputs_fail_naming_the_file_and_field() {
    let all = util::tempdir();
    let cases = ue_bad(all.path());
    for (stem, what, file, word) in cases {
        // One good sample and this one bad sample.
        let src = util::tempdir();
        ue_good(src.path(), "1", 1);
        for ext in ["jpg", "json"] {
            let from = all.path().join(format!("{stem}.{ext}"));
            if from.exists() {
                std::fs::copy(&from, src.path().join(format!("{stem}.{ext}"))).unwrap();
            }
        }
        eprintln!("unityeyes fail case: {what}");
        assert_fails("ingest-unityeyes", src.path(), file, word);
    }
}

#[test]
fn unityeyes_skip_lists_every_bad_input_in_the_manifest() {
    let src = util::tempdir();
    for k in 1..=4 {
        ue_good(src.path(), &k.to_string(), k);
    }
    let cases = ue_bad(src.path());
    let out = util::tempdir();
    let root = root_of(out.path());
    runner::run(
        &ingest_pipeline("ingest-unityeyes", src.path(), "skip"),
        &root,
        &RunOptions::default(),
    )
    .unwrap();
    let c = manifest::latest(&root, "eyes").unwrap().unwrap();
    assert_eq!(c.manifest.rows, 4, "the four good samples are ingested");
    assert_eq!(
        c.manifest.skipped.len(),
        cases.len(),
        "{:#?}",
        c.manifest.skipped
    );
    for (_, what, file, word) in cases {
        let s = c
            .manifest
            .skipped
            .iter()
            .find(|s| s.input.ends_with(&format!("/{file}")) || s.reason.contains(file))
            .unwrap_or_else(|| panic!("{what}: {file} not in skipped {:#?}", c.manifest.skipped));
        assert!(
            s.reason.to_lowercase().contains(&word.to_lowercase()),
            "{what}: reason should name {word}: {}",
            s.reason
        );
    }
    // The good rows read back by a second reader (arrow-rs) with their labels.
    let mut ids = Vec::new();
    for shard in &c.manifest.shards {
        for b in simgan::shards::read(&root, shard, None).unwrap() {
            ids.extend(
                simgan::domains::eyes::rows::from_batch(&b)
                    .unwrap()
                    .into_iter()
                    .map(|r| r.id),
            );
        }
    }
    ids.sort();
    assert_eq!(
        ids,
        ["unityeyes-1", "unityeyes-2", "unityeyes-3", "unityeyes-4"]
    );
}

/// `vars` with every eye's `image` replaced by a 30×50 array (wrong size).
fn with_wrong_image_size(mut vars: Vec<(String, MatValue)>) -> Vec<(String, MatValue)> {
    fn fix(v: &mut MatValue) {
        match v {
            MatValue::Struct { fields, .. } => {
                for (name, values) in fields.iter_mut() {
                    for value in values.iter_mut() {
                        if name == "image" {
                            let n = value.dims()[0];
                            *value = MatValue::Numeric {
                                dims: vec![n, 30, 50],
                                data: NumericData::U8(vec![128; n * 30 * 50]),
                            };
                        } else {
                            fix(value);
                        }
                    }
                }
            }
            MatValue::Cell { items, .. } => items.iter_mut().for_each(fix),
            _ => {}
        }
    }
    vars.iter_mut().for_each(|(_, v)| fix(v));
    vars
}

/// The bad MPIIGaze day files: (day, what is wrong, field word the message must name).
fn mpii_bad(person_dir: &Path) -> Vec<(&'static str, &'static str, &'static str)> {
    let good = fixture_day_mat(3, 3, 7);
    write_bytes(&person_dir.join("day02.mat"), &good[..good.len() / 2]); // corrupt .mat
    let (left, mut right) = (fixture_eye(3, 1), fixture_eye(3, 2));
    right.gaze[1][2] = f64::NAN;
    write_bytes(
        &person_dir.join("day03.mat"),
        &write_mat(&fixture_day_vars(&left, &right, None), true),
    ); // NaN gaze
    let vars = with_wrong_image_size(fixture_day_vars(
        &fixture_eye(2, 3),
        &fixture_eye(2, 4),
        None,
    ));
    write_bytes(&person_dir.join("day04.mat"), &write_mat(&vars, false)); // wrong image size
    vec![
        ("day02", "corrupt .mat", "mat"),
        ("day03", "NaN gaze", "gaze"),
        ("day04", "wrong image size", "image"),
    ]
}

#[test]
fn mpiigaze_bad_inputs_fail_naming_the_file_and_field() {
    let all = util::tempdir();
    let cases = mpii_bad(all.path());
    for (day, what, word) in cases {
        let src = util::tempdir();
        let p = src.path().join("Data/Normalized/p00");
        write_bytes(&p.join("day01.mat"), &fixture_day_mat(2, 2, 11));
        std::fs::copy(
            all.path().join(format!("{day}.mat")),
            p.join(format!("{day}.mat")),
        )
        .unwrap();
        eprintln!("mpiigaze fail case: {what}");
        assert_fails(
            "ingest-mpiigaze",
            src.path(),
            &format!("p00/{day}.mat"),
            word,
        );
    }
}

#[test]
fn mpiigaze_skip_lists_every_bad_day_file_in_the_manifest() {
    let src = util::tempdir();
    let p = src.path().join("Data/Normalized/p00");
    write_bytes(&p.join("day01.mat"), &fixture_day_mat(3, 2, 11));
    let cases = mpii_bad(&p);
    let out = util::tempdir();
    let root = root_of(out.path());
    runner::run(
        &ingest_pipeline("ingest-mpiigaze", src.path(), "skip"),
        &root,
        &RunOptions::default(),
    )
    .unwrap();
    let c = manifest::latest(&root, "eyes").unwrap().unwrap();
    assert_eq!(c.manifest.rows, 5, "both eyes of the good day file");
    assert_eq!(
        c.manifest.skipped.len(),
        cases.len(),
        "{:#?}",
        c.manifest.skipped
    );
    for (day, what, word) in cases {
        let s = c
            .manifest
            .skipped
            .iter()
            .find(|s| s.input.ends_with(&format!("p00/{day}.mat")))
            .unwrap_or_else(|| panic!("{what}: {day} not in skipped {:#?}", c.manifest.skipped));
        assert!(
            s.reason.to_lowercase().contains(word),
            "{what}: reason should name {word}: {}",
            s.reason
        );
    }
}
