//! `simgan show`, `simgan ls`, `simgan verify` and `simgan kinds`.

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
    /// Check every shard and artifact against the manifest (size, sha256); exit 1 if damaged.
    #[arg(long)]
    verify: bool,
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
    let check = if a.verify {
        Some(crate::verify::version(&ds.root, &c)?)
    } else {
        None
    };
    let m = &c.manifest;
    let fail_if_damaged = || match &check {
        Some(ch) if !ch.ok() => Err(anyhow::anyhow!(
            "{}@{}: {}",
            m.stage,
            m.version,
            ch.summary()
        )),
        _ => Ok(()),
    };
    if a.json {
        let mut v = serde_json::to_value(m)?;
        if let Some(ch) = &check {
            v["verify"] = serde_json::to_value(ch)?;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return fail_if_damaged();
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
            s.checksum
                .chars()
                .take(23)
                .collect::<String>()
                .escape_debug()
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
    if let Some(ch) = &check {
        println!("verify      {}", ch.summary());
        for d in ch.damaged.iter().skip(1) {
            println!("  damaged {}: {}", d.path, d.detail);
        }
    }
    fail_if_damaged()
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A run root.
    root: String,
    /// Only each stage's latest version (default: every committed version).
    #[arg(long)]
    latest: bool,
    /// JSON output: {"root", "versions": [{"stage","version","objects","bytes","damaged"}]}.
    #[arg(long)]
    json: bool,
}

/// `simgan verify ROOT`: every committed version's objects against its manifest; exit 1 if any
/// is damaged or refused.
pub fn verify(a: VerifyArgs, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let root = Root::open_existing(&a.root, rt.handle().clone())?;
    let checks = crate::verify::root(&root, a.latest)?;
    let bad: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok())
        .map(|c| format!("{}@{}", c.stage, c.version))
        .collect();
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "root": root.url(), "versions": checks })
            )?
        );
    } else {
        for c in &checks {
            println!("{:<20} v{:<4} {}", c.stage, c.version, c.summary());
            for d in c.damaged.iter().skip(1) {
                println!("  damaged {}: {}", d.path, d.detail);
            }
        }
        println!("{} versions checked, {} damaged", checks.len(), bad.len());
    }
    if bad.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("damaged versions under {}: {}", root.url(), bad.join(", "))
    }
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
