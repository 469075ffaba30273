//! README's commands, run: every `simgan …` line of its `sh` blocks is executed, in order, in a
//! folder holding a toy-sized `pipelines/eye-gaze-demo.toml` (the demo's stage names, seconds of
//! work), so a renamed stage, flag or param in README fails here. The demo commands run
//! with `--dry-run` (their full runs are `simgan bench --sections demo`). Lines that need an
//! object store, a scheduler's environment, or minutes of work are listed in [`skipped`] with
//! the reason, and the test asserts that nothing else was left out.

use std::path::Path;
use std::process::Command;

use crate::util::{self, output};

/// The `sh` blocks' command lines (comments and continuation-only lines dropped).
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let mut out = Vec::new();
    let mut in_sh = false;
    for line in readme.lines() {
        let t = line.trim();
        if let Some(lang) = t.strip_prefix("```") {
            in_sh = !in_sh && lang == "sh";
            continue;
        }
        if !in_sh || t.is_empty() || t.starts_with('#') {
            continue;
        }
        // A trailing `# comment` (two spaces or more before it, as README aligns them).
        let cmd = match t.find("  #") {
            Some(i) => t[..i].trim_end(),
            None => t,
        };
        out.push(cmd.to_string());
    }
    out
}

/// The command without its optional flags written as ` [--flag]` (run as the plain command).
fn without_optional(cmd: &str) -> String {
    let mut s = cmd.to_string();
    while let Some(i) = s.find(" [--") {
        match s[i..].find(']') {
            Some(j) => s.replace_range(i..i + j + 1, ""),
            None => break,
        }
    }
    s
}

/// Why a README command is not run here, or `None` if it is.
fn skipped(cmd: &str) -> Option<&'static str> {
    if cmd.contains("--workers") || cmd.contains("--worker ") || cmd.contains("--finalize") {
        return Some("worker mode on a store shared by workers (tests/distributed.rs)");
    }
    if cmd.contains("s3://") || cmd.contains("--root …") {
        return Some("an object store root (the S3 paths are tested against moto elsewhere)");
    }
    if cmd.starts_with("simgan bench") || cmd.starts_with("cargo test --lib") {
        return Some("a benchmark or probe: minutes of work, not a test");
    }
    if cmd == "ci/test.sh" || cmd == "cargo test" {
        return Some("a test command (CI runs ci/test.sh; this test runs inside both)");
    }
    None
}

#[test]
fn every_cheap_readme_command_runs() {
    let dir = util::tempdir();
    let d = dir.path();
    // e2e's toy pipeline has the demo's stage names; here it carries the demo's name.
    let tiny = crate::e2e::TINY.replace("name = \"tiny\"", "name = \"eye-gaze-demo\"");
    assert!(tiny.contains("name = \"eye-gaze-demo\""));
    util::write(&d.join("pipelines/eye-gaze-demo.toml"), &tiny);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for demo in ["images-demo.toml", "hand-pose-demo.toml"] {
        std::fs::copy(
            repo.join("pipelines").join(demo),
            d.join("pipelines").join(demo),
        )
        .expect("copy a demo pipeline");
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_simgan"))
        .parent()
        .expect("binary folder")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (mut ran, mut left) = (Vec::new(), Vec::new());
    for cmd in readme_commands() {
        if let Some(why) = skipped(&cmd) {
            left.push(format!("{cmd}  ({why})"));
            continue;
        }
        // `cargo run -- X` is `simgan X`; the demos are planned, not run (see the module docs).
        let line = match cmd.strip_prefix("cargo run -- ") {
            Some(rest) => format!("simgan {rest} --dry-run"),
            None => without_optional(&cmd.replace(" P ", " pipelines/eye-gaze-demo.toml ")),
        };
        assert!(
            line.starts_with("simgan "),
            "README command not covered by this test (add it or a reason to skip it): {cmd}"
        );
        let out = output(
            Command::new("sh")
                .args(["-c", &line])
                .current_dir(d)
                .env("PATH", &path)
                .env("RUST_LOG", "warn"),
        );
        assert!(
            out.status.success(),
            "README command failed: {line}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The first command runs the (tiny) main job, which the rest inspect.
        if ran.is_empty() {
            let first = output(
                Command::new("sh")
                    .args(["-c", "simgan run pipelines/eye-gaze-demo.toml"])
                    .current_dir(d)
                    .env("PATH", &path)
                    .env("RUST_LOG", "warn"),
            );
            assert!(
                first.status.success(),
                "{}",
                String::from_utf8_lossy(&first.stderr)
            );
        }
        ran.push(line);
    }
    assert!(ran.len() >= 12, "ran only {ran:?}");
    println!(
        "ran {} README commands; skipped:\n{}",
        ran.len(),
        left.join("\n")
    );
}
