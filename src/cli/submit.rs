//! `simgan submit`: the pipeline as Slurm jobs (written and submitted) or Kubernetes Indexed
//! Job manifests (printed).

use std::path::PathBuf;

use clap::Args;

use super::PipelineArgs;
use crate::submit::{self, SubmitOptions};

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    target: PipelineArgs,
    /// Write sbatch scripts and submit them with `sbatch --parsable` (afterok chains).
    #[arg(long, required_unless_present = "k8s", conflicts_with = "k8s")]
    slurm: bool,
    /// Print Kubernetes Indexed Job manifests (YAML) for the splittable stages.
    #[arg(long)]
    k8s: bool,
    /// Only write the scripts (Slurm); print their paths.
    #[arg(long)]
    print: bool,
    /// Array size / completions for splittable stages.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Where the sbatch scripts go.
    #[arg(long, default_value = "slurm")]
    out: PathBuf,
    /// Extra #SBATCH options, e.g. --sbatch=--partition=gpu (repeatable).
    #[arg(long = "sbatch", value_name = "OPTION", allow_hyphen_values = true)]
    sbatch_extra: Vec<String>,
    /// Container image (Kubernetes).
    #[arg(long, default_value = "simgan:latest")]
    image: String,
    /// The simgan executable the jobs run (default: this one; in a container: "simgan").
    #[arg(long)]
    simgan: Option<String>,
    /// Kubernetes backoffLimitPerIndex.
    #[arg(long, default_value_t = 2)]
    backoff_per_index: u32,
}

pub fn submit(a: SubmitArgs, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let (pipeline, root) = a.target.load(rt)?;
    anyhow::ensure!(a.workers >= 1, "--workers must be at least 1");
    let pipeline_file = std::fs::canonicalize(&a.target.pipeline)?;
    let simgan = match a.simgan {
        Some(s) => s,
        None if a.k8s => "simgan".to_string(),
        None => std::env::current_exe()?.to_string_lossy().into_owned(),
    };
    let root_url = if root.url().contains("://") {
        root.url().to_string()
    } else {
        std::fs::canonicalize(root.url())?
            .to_string_lossy()
            .into_owned()
    };
    let out = std::path::absolute(&a.out)?;
    let opts = SubmitOptions {
        pipeline_file,
        root: root_url,
        simgan,
        workers: a.workers,
        sbatch_extra: a.sbatch_extra,
        log_dir: out.join("logs"),
        overrides: a.target.overrides.clone(),
    };
    if a.k8s {
        print!(
            "{}",
            submit::k8s_manifests(&pipeline, &opts, &a.image, a.backoff_per_index)
        );
        return Ok(());
    }
    let scripts = submit::write_slurm(&pipeline, &opts, &out)?;
    if a.print {
        for (name, path, _) in &scripts {
            println!("{name:<20} {}", path.display());
        }
        return Ok(());
    }
    for (name, id) in submit::submit_slurm(&scripts)? {
        println!("{name:<20} {id}");
    }
    Ok(())
}
