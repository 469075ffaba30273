//! `simgan show`, `simgan ls` and `simgan kinds`.

use clap::Args;

use crate::dataset;
use crate::manifest;
use crate::stages::InputKind;
use crate::storage::Root;

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// <root>/<stage>, <root>/<stage>@VERSION, or a manifest .json URL.
    url: String,
    /// Print the manifest as JSON.
    #[arg(long)]
    json: bool,
}

pub fn show(a: ShowArgs, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let ds = dataset::open(&a.url, rt.handle().clone())?;
    let Some(c) = ds.committed else {
        anyhow::bail!(
            "{} is a folder of {} parquet files without a stage manifest",
            a.url,
            ds.shards.len()
        );
    };
    let m = &c.manifest;
    if a.json {
        println!("{}", serde_json::to_string_pretty(m)?);
        return Ok(());
    }
    println!("stage       {} ({})", m.stage, m.kind);
    println!("version     {}  (digest {})", m.version, c.digest);
    println!("fingerprint {}", m.fingerprint);
    println!("schema      {}", m.schema);
    println!("data        {}", ds.root.url_of(&m.data_prefix));
    println!(
        "rows        {} in {} shards, {} bytes",
        m.rows,
        m.shards.len(),
        m.shards.iter().map(|s| s.bytes).sum::<u64>()
    );
    println!(
        "written     {} .. {} ({:.1}s, {} units run, {} resumed) by simgan {}",
        m.timings.started_at,
        m.timings.finished_at,
        m.timings.wall_s,
        m.timings.units_run,
        m.timings.units_reused,
        m.simgan_version
    );
    for (role, input) in &m.inputs {
        println!("input       {role} = {}", serde_json::to_string(input)?);
    }
    println!("params      {}", m.params);
    for s in m.shards.iter().take(10) {
        println!(
            "  {:<48} {:>9} rows {:>12} bytes {}",
            s.path,
            s.rows,
            s.bytes,
            &s.checksum[..s.checksum.len().min(23)]
        );
    }
    if m.shards.len() > 10 {
        println!("  … {} more shards", m.shards.len() - 10);
    }
    for s in &m.artifacts {
        println!("  artifact {:<39} {:>12} bytes", s.path, s.bytes);
    }
    if !m.skipped.is_empty() {
        println!("skipped     {} inputs:", m.skipped.len());
        for s in &m.skipped {
            println!("  {}: {}", s.input, s.reason);
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// A run root.
    root: String,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

pub fn ls(a: LsArgs, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let root = Root::open_existing(&a.root, rt.handle().clone())?;
    let mut rows = Vec::new();
    for stage in root
        .list_dirs("")?
        .into_iter()
        .filter(|d| !d.starts_with('_'))
    {
        let versions = manifest::versions(&root, &stage)?;
        let latest = match versions.last() {
            Some(&v) => manifest::read(&root, &stage, v)?,
            None => None,
        };
        rows.push(serde_json::json!({
            "stage": stage,
            "versions": versions,
            "kind": latest.as_ref().map(|c| c.manifest.kind.clone()),
            "rows": latest.as_ref().map(|c| c.manifest.rows),
            "finished_at": latest.as_ref().map(|c| c.manifest.timings.finished_at.clone()),
        }));
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "root": root.url(), "stages": rows })
            )?
        );
        return Ok(());
    }
    for r in &rows {
        let versions = r["versions"].as_array().map(|v| v.len()).unwrap_or(0);
        println!(
            "{:<20} {:<16} {:>3} versions  latest {:>10} rows  {}",
            r["stage"].as_str().unwrap_or(""),
            r["kind"].as_str().unwrap_or("-"),
            versions,
            r["rows"]
                .as_u64()
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            r["finished_at"]
                .as_str()
                .unwrap_or("(no committed version)")
        );
    }
    Ok(())
}

pub fn kinds() {
    for k in crate::registry::builtin().all() {
        println!(
            "{} (code v{}, schema {}): {}",
            k.name(),
            k.code_version(),
            k.schema(),
            k.about()
        );
        for i in k.inputs() {
            let what = match i.kind {
                InputKind::Stage => "stage",
                InputKind::Location => "path/URL",
            };
            println!(
                "  input {:<18} {what}{}  {}",
                i.role,
                if i.required { "" } else { ", optional" },
                i.doc
            );
        }
        for p in k.params() {
            let default = p
                .default
                .map(|d| format!(" = {d}"))
                .unwrap_or_else(|| " (required)".into());
            println!(
                "  param {:<18} {}{default}  {}",
                p.name,
                p.ty.describe(),
                p.doc
            );
        }
    }
    println!("\ntasks (train-estimator `task`; score and report follow the estimators'):");
    let tasks = crate::registry::tasks();
    for name in tasks.names() {
        if let Some(t) = tasks.get(name) {
            println!(
                "  {name:<16} label `{}` by default  {}",
                t.default_label(),
                t.about()
            );
        }
    }
}
