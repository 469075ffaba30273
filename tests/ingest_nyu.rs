//! `ingest-nyu` on a fixture tree in NYU's layout (`train/`, `test/`, `depth_1_NNNNNNN.png` with
//! depth = G·256 + B, a v5 `joint_data.mat` of `[kinect][frame][36][3]` doubles): labels exact,
//! the crop centred on the palm with the hand's depth under a known joint, and a bad PNG, a
//! missing frame and a bad `.mat` named under both `on_error` policies.

use std::path::Path;

use arrow::array::Array;

use simgan::domains::hands::nyu::{EVAL_JOINTS, RAW_JOINTS};
use simgan::manifest;
use simgan::mat::{MatValue, NumericData, write_mat};
use simgan::pipeline::Pipeline;
use simgan::runner::{self, RunOptions};
use simgan::storage::Root;

use crate::util;

/// Raw joint `j` of `frame` (0-based) as u, v, d: a hand at 700 mm around (300 + 5·frame, 240).
fn raw_uvd(frame: usize, j: usize) -> [f64; 3] {
    [
        300.0 + 5.0 * frame as f64 + (j % 6) as f64 * 4.0 - 10.0,
        240.0 - (j / 6) as f64 * 4.0 + 10.0,
        700.0 - j as f64,
    ]
}

/// A `[3][frames][36][3]` array (column-major), kinect k offset by 1000·k.
fn array(frames: usize, f: impl Fn(usize, usize, usize) -> f64) -> MatValue {
    let k = 3;
    let mut data = vec![0f64; k * frames * RAW_JOINTS * 3];
    for c in 0..3 {
        for j in 0..RAW_JOINTS {
            for fr in 0..frames {
                for kk in 0..k {
                    data[kk + k * (fr + frames * (j + RAW_JOINTS * c))] =
                        f(fr, j, c) + 1000.0 * kk as f64;
                }
            }
        }
    }
    MatValue::Numeric {
        dims: vec![k, frames, RAW_JOINTS, 3],
        data: NumericData::F64(data),
    }
}

fn joint_mat(frames: usize) -> Vec<u8> {
    write_mat(
        &[
            (
                "joint_uvd".into(),
                array(frames, |f, j, c| raw_uvd(f, j)[c]),
            ),
            (
                "joint_xyz".into(),
                array(frames, |f, j, c| (f * 100 + j * 3 + c) as f64),
            ),
            (
                "joint_names".into(),
                MatValue::cell_of_strings(
                    &(0..RAW_JOINTS).map(|j| format!("j{j}")).collect::<Vec<_>>(),
                ),
            ),
        ],
        true,
    )
}

/// A 640×480 depth PNG: background at 2500 mm, a 60×60 px block at 650 mm around the palm.
fn depth_png(path: &Path, frame: usize) {
    let palm = raw_uvd(frame, 32);
    let img = image::RgbImage::from_fn(640, 480, |u, v| {
        let d: u16 = if (u as f64 - palm[0]).abs() < 30.0 && (v as f64 - palm[1]).abs() < 30.0 {
            650
        } else {
            2500
        };
        image::Rgb([77, (d >> 8) as u8, (d & 0xFF) as u8])
    });
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

/// train: frames 1, 2, 4 good, 3 a broken PNG, 5 in the .mat without a PNG; test: 2 good.
fn fixture(root: &Path) {
    for k in [1, 2, 3, 4] {
        depth_png(&root.join(format!("train/depth_1_{k:07}.png")), k - 1);
    }
    std::fs::write(root.join("train/depth_1_0000003.png"), b"\x89PNG broken").unwrap();
    std::fs::write(root.join("train/joint_data.mat"), joint_mat(5)).unwrap();
    for k in [1, 2] {
        depth_png(&root.join(format!("test/depth_1_{k:07}.png")), k - 1);
    }
    std::fs::write(root.join("test/joint_data.mat"), joint_mat(2)).unwrap();
}

fn pipeline(source: &Path, on_error: &str) -> Pipeline {
    let text = format!(
        "name = \"nyu\"\n[stages.hands]\nkind = \"ingest-nyu\"\ninputs = {{ source = \"{}\" }}\nparams = {{ size = 32, on_error = \"{on_error}\", frames_per_shard = 2 }}\n",
        source.display()
    );
    Pipeline::parse(&text, "nyu.toml", &simgan::registry::builtin()).unwrap()
}

fn root_of(dir: &Path) -> Root {
    Root::open(&dir.to_string_lossy(), util::rt().handle().clone()).unwrap()
}

#[test]
fn nyu_frames_become_hand_crops_with_exact_labels_and_named_bad_inputs() {
    let src = util::tempdir();
    fixture(src.path());
    let out = util::tempdir();
    let root = root_of(out.path());
    runner::run(&pipeline(src.path(), "skip"), &root, &RunOptions::default()).unwrap();
    let c = manifest::latest(&root, "hands").unwrap().unwrap();
    assert_eq!(c.manifest.rows, 5, "3 good train frames, 2 test frames");
    let reasons: Vec<String> = c
        .manifest
        .skipped
        .iter()
        .map(|s| format!("{} {}", s.input, s.reason))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:#?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("depth_1_0000003.png") && r.contains("image")),
        "{reasons:#?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("depth_1_0000005.png") && r.contains("not found")),
        "{reasons:#?}"
    );
    // Read the rows back.
    let mut rows = Vec::new();
    for s in &c.manifest.shards {
        rows.extend(simgan::shards::read(&root, s, None).unwrap());
    }
    let batch = arrow::compute::concat_batches(&rows[0].schema(), &rows).unwrap();
    let col = |name: &str| batch.column_by_name(name).unwrap().clone();
    let ids = col("id");
    let ids = ids
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .unwrap();
    let i = (0..ids.len())
        .find(|&i| ids.value(i) == "nyu-train-depth_1_0000002")
        .unwrap();
    let list = |name: &str| -> Vec<f32> {
        let c = col(name);
        let l = c
            .as_any()
            .downcast_ref::<arrow::array::FixedSizeListArray>()
            .unwrap();
        l.value(i)
            .as_any()
            .downcast_ref::<arrow::array::Float32Array>()
            .unwrap()
            .values()
            .to_vec()
    };
    let (uvd, xyz) = (list("joints_uvd"), list("joints_xyz"));
    // xyz: exactly the .mat's values of the 14 evaluated joints, frame 2 (0-based 1), kinect 1.
    for (k, &j) in EVAL_JOINTS.iter().enumerate() {
        for c in 0..3 {
            assert_eq!(xyz[3 * k + c], (100 + j * 3 + c) as f32);
        }
    }
    // The palm (evaluated joint 13, raw 32) is the crop's centre; depth kept in mm.
    assert!(
        (uvd[39] - 15.5).abs() < 1e-3 && (uvd[40] - 15.5).abs() < 1e-3,
        "{uvd:?}"
    );
    assert_eq!(uvd[41], raw_uvd(1, 32)[2] as f32);
    // Joint 0 (raw 0) in crop px: its frame offset from the palm ÷ (box / 32).
    let center = list("crop_center");
    let bx = list("crop_box");
    let step = (bx[2] - bx[0]) / 32.0;
    let want_u = 15.5 + (raw_uvd(1, 0)[0] as f32 - center[0]) / step;
    assert!((uvd[0] - want_u).abs() < 1e-3, "{} vs {want_u}", uvd[0]);
    // Under the palm the crop holds the hand's 650 mm; the 2500 mm background is outside the
    // cube: 0. The image is a 16-bit grey PNG of the stage's size.
    let images = simgan::sample::image_bytes(&batch, "nyu").unwrap();
    let img = simgan::sample::SampleImage::decode(images.value(i), "nyu").unwrap();
    assert_eq!(
        (img.width, img.height, img.format()),
        (32, 32, simgan::sample::PixelFormat::GRAY16)
    );
    let simgan::sample::Pixels::U16(px) = &img.pixels else {
        panic!("not 16-bit")
    };
    assert_eq!(px[16 * 32 + 16], 650);
    assert_eq!(px[0], 0);
    let splits = col("split");
    let splits = splits
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .unwrap();
    assert_eq!((0..5).filter(|&k| splits.value(k) == "test").count(), 2);

    // `fail`: the broken PNG is named and nothing is committed.
    let out = util::tempdir();
    let root = root_of(out.path());
    let err = runner::run(&pipeline(src.path(), "fail"), &root, &RunOptions::default())
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(err.contains("depth_1_0000003.png"), "{err}");
    assert!(manifest::latest(&root, "hands").unwrap().is_none());

    // A bad .mat: named (train repaired first: frame 3 a good PNG, no frame 5 in its .mat).
    depth_png(&src.path().join("train/depth_1_0000003.png"), 2);
    std::fs::write(src.path().join("train/joint_data.mat"), joint_mat(4)).unwrap();
    std::fs::write(
        src.path().join("test/joint_data.mat"),
        b"MATLAB 5.0 MAT-file, truncated",
    )
    .unwrap();
    let out = util::tempdir();
    let root = root_of(out.path());
    let err = runner::run(&pipeline(src.path(), "fail"), &root, &RunOptions::default())
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(err.contains("test/joint_data.mat"), "{err}");
}
