//! Beyond one machine: a pipeline as scheduler jobs that coordinate only through the run root.
//!
//! Every job runs `simgan run P --root R --stage S` in worker mode (no root lease; the last worker
//! to finish commits the manifest exactly once, see [`crate::runner::run_worker`]). Splittable
//! stages (generate, ingest, refine) become Slurm job arrays / Kubernetes Indexed Jobs of
//! `workers` tasks; the others are single tasks (`--worker 0/1`). Slurm jobs are chained with
//! `--dependency=afterok:…` along the stages' inputs; a stage whose `device` param names CUDA
//! asks for a GPU.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::pipeline::{Pipeline, Stage};

/// How the jobs are written.
#[derive(Debug, Clone)]
pub struct SubmitOptions {
    /// Pipeline file as the jobs should reference it (absolute is safest).
    pub pipeline_file: PathBuf,
    /// Run root every job uses.
    pub root: String,
    /// The `simgan` executable the jobs run.
    pub simgan: String,
    /// Array size for splittable stages.
    pub workers: usize,
    /// Extra `#SBATCH` lines (e.g. `--partition=gpu`).
    pub sbatch_extra: Vec<String>,
    /// Folder for job logs.
    pub log_dir: PathBuf,
    /// `--set STAGE.PARAM=VALUE` overrides every job passes on.
    pub overrides: Vec<String>,
}

fn needs_gpu(stage: &Stage) -> bool {
    stage
        .params
        .str("device")
        .is_ok_and(|d| d.starts_with("cuda"))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn run_command(o: &SubmitOptions, stage: &Stage, worker_arg: &str) -> String {
    let sets: String = o
        .overrides
        .iter()
        .map(|s| format!(" --set {}", shell_quote(s)))
        .collect();
    format!(
        "{} run {} --root {} --stage {} {worker_arg}{sets} --log-format json",
        shell_quote(&o.simgan),
        shell_quote(&o.pipeline_file.to_string_lossy()),
        shell_quote(&o.root),
        shell_quote(&stage.name)
    )
}

/// One sbatch script per stage, in dependency order: `(stage name, script text, upstream names)`.
pub fn slurm_scripts(p: &Pipeline, o: &SubmitOptions) -> Vec<(String, String, Vec<String>)> {
    p.stages
        .iter()
        .map(|stage| {
            let split = stage.kind.splittable() && o.workers > 1;
            let mut s = String::from("#!/bin/bash\n");
            let _ = writeln!(s, "#SBATCH --job-name=simgan-{}-{}", p.name, stage.name);
            if split {
                let _ = writeln!(s, "#SBATCH --array=0-{}", o.workers - 1);
                let _ = writeln!(
                    s,
                    "#SBATCH --output={}/{}-%A_%a.out",
                    o.log_dir.display(),
                    stage.name
                );
            } else {
                let _ = writeln!(
                    s,
                    "#SBATCH --output={}/{}-%j.out",
                    o.log_dir.display(),
                    stage.name
                );
            }
            let _ = writeln!(s, "#SBATCH --ntasks=1");
            if needs_gpu(stage) {
                let _ = writeln!(s, "#SBATCH --gres=gpu:1");
            }
            for extra in &o.sbatch_extra {
                let _ = writeln!(s, "#SBATCH {extra}");
            }
            let _ = writeln!(s, "set -euo pipefail");
            let worker = if split {
                format!("--workers {}", o.workers)
            } else {
                "--worker 0/1".to_string()
            };
            let _ = writeln!(s, "exec {}", run_command(o, stage, &worker));
            (
                stage.name.clone(),
                s,
                stage.upstream().map(str::to_string).collect(),
            )
        })
        .collect()
}

/// What goes unquoted into `#SBATCH` lines (sbatch reads a directive up to the end of its line
/// and splits it at blanks) must be one plain word: the log folder and each extra line are
/// refused if they hold a line break, and the log folder if it holds a blank or a quote. Names
/// are checked when the pipeline is loaded.
fn check_directives(o: &SubmitOptions) -> Result<()> {
    let log_dir = o.log_dir.to_string_lossy();
    if log_dir
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\'')
    {
        return Err(Error::Input {
            file: log_dir.escape_debug().to_string(),
            field: "log folder".into(),
            reason: "a blank, quote or control character cannot be written in an #SBATCH line"
                .into(),
        });
    }
    if let Some(x) = o.sbatch_extra.iter().find(|x| x.contains(['\n', '\r'])) {
        return Err(Error::Input {
            file: "--sbatch".into(),
            field: x.escape_debug().to_string(),
            reason: "an #SBATCH line cannot hold a line break".into(),
        });
    }
    Ok(())
}

/// Write the sbatch scripts into `dir`; returns their paths in dependency order.
pub fn write_slurm(
    p: &Pipeline,
    o: &SubmitOptions,
    dir: &Path,
) -> Result<Vec<(String, PathBuf, Vec<String>)>> {
    check_directives(o)?;
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        op: "create",
        path: dir.to_path_buf(),
        source,
    })?;
    std::fs::create_dir_all(&o.log_dir).map_err(|source| Error::Io {
        op: "create",
        path: o.log_dir.clone(),
        source,
    })?;
    slurm_scripts(p, o)
        .into_iter()
        .map(|(name, text, deps)| {
            let path = dir.join(format!("{name}.sbatch"));
            std::fs::write(&path, text).map_err(|source| Error::Io {
                op: "write",
                path: path.clone(),
                source,
            })?;
            Ok((name, path, deps))
        })
        .collect()
}

/// Submit written scripts with `sbatch --parsable`, chaining `afterok` dependencies.
/// Returns `(stage, job id)` in submission order.
pub fn submit_slurm(scripts: &[(String, PathBuf, Vec<String>)]) -> Result<Vec<(String, String)>> {
    let mut ids: Vec<(String, String)> = Vec::new();
    for (name, path, deps) in scripts {
        let dep_ids: Vec<&str> = deps
            .iter()
            .filter_map(|d| ids.iter().find(|(n, _)| n == d).map(|(_, id)| id.as_str()))
            .collect();
        let mut cmd = std::process::Command::new("sbatch");
        cmd.arg("--parsable");
        if !dep_ids.is_empty() {
            cmd.arg(format!("--dependency=afterok:{}", dep_ids.join(":")));
            cmd.arg("--kill-on-invalid-dep=yes");
        }
        cmd.arg(path);
        let out = cmd.output().map_err(|source| Error::Io {
            op: "run sbatch for",
            path: path.clone(),
            source,
        })?;
        if !out.status.success() {
            return Err(Error::stage(
                name,
                format!(
                    "sbatch failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        let id = String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(';')
            .next()
            .unwrap_or_default()
            .to_string();
        if id.is_empty() {
            return Err(Error::stage(name, "sbatch printed no job id"));
        }
        ids.push((name.clone(), id));
    }
    Ok(ids)
}

/// Kubernetes Indexed Job manifests (YAML) for the splittable stages.
pub fn k8s_manifests(
    p: &Pipeline,
    o: &SubmitOptions,
    image: &str,
    backoff_per_index: u32,
) -> String {
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let mut y = String::new();
    for stage in p.stages.iter().filter(|s| s.kind.splittable()) {
        let name = format!("simgan-{}-{}", p.name, stage.name)
            .to_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-");
        let mut args = vec![
            "run".to_string(),
            o.pipeline_file.to_string_lossy().into_owned(),
            "--root".into(),
            o.root.clone(),
            "--stage".into(),
            stage.name.clone(),
            "--workers".into(),
            o.workers.to_string(),
            "--log-format".into(),
            "json".into(),
        ];
        for o in &o.overrides {
            args.extend(["--set".to_string(), o.clone()]);
        }
        let _ = writeln!(y, "---");
        let _ = writeln!(
            y,
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {}\n  labels:\n    app: simgan\n    simgan/stage: {}",
            q(&name),
            q(&stage.name)
        );
        let _ = writeln!(
            y,
            "spec:\n  completionMode: Indexed\n  completions: {0}\n  parallelism: {0}\n  backoffLimitPerIndex: {backoff_per_index}\n  maxFailedIndexes: {0}",
            o.workers
        );
        let _ = writeln!(
            y,
            "  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: simgan\n          image: {}",
            q(image)
        );
        let _ = writeln!(y, "          command: [{}]", q(&o.simgan));
        let _ = writeln!(
            y,
            "          args: [{}]",
            args.iter().map(|a| q(a)).collect::<Vec<_>>().join(", ")
        );
        if needs_gpu(stage) {
            let _ = writeln!(
                y,
                "          resources:\n            limits:\n              nvidia.com/gpu: 1"
            );
        }
    }
    y
}
