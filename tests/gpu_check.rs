//! `ci/gpu-check.sh --device cpu`: the prepared GPU check's dry run, so the script and the bench
//! sections it calls cannot rot on machines without a GPU. Runs the real script with the built
//! binary and reads its JSON back.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

#[test]
fn the_gpu_check_dry_run_passes_every_step_on_the_cpu() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().join("out");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/gpu-check.sh");
    let status = Command::new("bash")
        .arg(&script)
        .args(["--device", "cpu", "--bin", env!("CARGO_BIN_EXE_simgan")])
        .arg("--out")
        .arg(&out)
        .env("TMPDIR", dir.path())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(status.status.success(), "{stderr}");
    let text =
        std::fs::read_to_string(out.join("gpu-check.json")).unwrap_or_else(|e| panic!("{e}"));
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(doc["probe"]["exit"], 0, "{text}");
    assert!(
        doc["probe"]["output"]
            .as_str()
            .unwrap_or_default()
            .starts_with("cpu: burn-flex")
    );
    let gpu = &doc["gpu"]["output"]["gpu"];
    assert!(
        doc["gpu"]["command"]
            .as_str()
            .unwrap_or_default()
            .contains("--sections gpu")
    );
    // The CPU against itself: bit-identical refinements and losses.
    assert_eq!(gpu["correctness"]["identical_8bit_share"], 1.0, "{text}");
    assert_eq!(gpu["correctness"]["max_abs_diff"], 0.0);
    assert_eq!(
        gpu["correctness"]["losses_cpu"],
        gpu["correctness"]["losses_device"]
    );
    assert_eq!(gpu["correctness"]["values"], 32 * 35 * 55);
    for lanes in ["refine_one_lane", "refine_two_lanes"] {
        assert_eq!(gpu[lanes]["rows"], 2000.0, "{text}");
        assert!(gpu[lanes]["rows_per_s"].as_f64().unwrap_or(0.0) > 0.0);
    }
    // bf16 and f16 on the CPU against its f32: close (one grey level at most on this small
    // refiner), not equal, and timed.
    let precisions = gpu["precisions"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = precisions
        .iter()
        .filter_map(|p| p["precision"].as_str())
        .collect();
    assert_eq!(names, vec!["bf16", "f16"], "{text}");
    for p in &precisions {
        assert!(p["max_8bit_levels"].as_u64().unwrap_or(99) <= 2, "{p}");
        assert!(
            p["identical_8bit_share"].as_f64().unwrap_or(0.0) > 0.5,
            "{p}"
        );
        assert!(p["max_abs_diff"].as_f64().unwrap_or(0.0) > 0.0, "{p}");
        assert_eq!(p["infer_images_per_s"].as_array().map(Vec::len), Some(2));
        // Mixed-precision training steps from the same weights: close to the CPU's f32 losses.
        let rel = p["losses_rel_diff_vs_cpu_f32"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(rel.len(), 3, "{p}");
        assert!(
            rel.iter().all(|r| r.as_f64().is_some_and(|r| r < 0.05)),
            "{p}"
        );
    }
    let batches: Vec<u64> = gpu["infer_images_per_s"]
        .as_array()
        .map(|a| a.iter().filter_map(|b| b["batch"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(batches, vec![16, 64]);
    assert!(gpu["train_iter_ms"]["device"].as_f64().unwrap_or(0.0) > 0.0);
    let host = &doc["host"]["output"]["host"];
    assert!(
        host["one_lane"]["cpu_us_per_row"].as_f64().unwrap_or(0.0) > 0.0,
        "{text}"
    );
    assert!(host["steps_cpu_us_per_image_one_thread"]["png_decode"].is_number());
    assert!(doc["torch"]["skipped"].is_string());
}
