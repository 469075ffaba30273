//! `simgan export` and `simgan query`.

use std::path::PathBuf;

use clap::Args;

use crate::{dataset, query};

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Dataset: <root>/<stage>[@VERSION], a manifest, or a folder of .parquet files.
    url: String,
    /// Number of rows to export.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Output folder (created).
    #[arg(long)]
    out: PathBuf,
    /// Do not check the shards against the manifest's sizes and checksums.
    #[arg(long)]
    no_verify: bool,
}

pub fn export(a: ExportArgs, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let mut ds = dataset::open(&a.url, rt.handle().clone())?;
    ds.verify = !a.no_verify;
    let n = query::export_samples(&ds, a.limit, &a.out)?;
    println!("exported {n} images and labels.csv to {}", a.out.display());
    Ok(())
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Dataset: <root>/<stage>[@VERSION], a manifest, or a folder of .parquet files.
    url: String,
    /// SQL; the table is `data`, e.g. "SELECT split, count(*) FROM data GROUP BY split".
    sql: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Do not check the shards against the manifest's sizes and checksums (local shards are
    /// then scanned in place, with row-group pruning).
    #[arg(long)]
    no_verify: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

pub fn query(a: QueryArgs, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    use polars::prelude::*;
    let mut ds = dataset::open(&a.url, rt.handle().clone())?;
    ds.verify = !a.no_verify;
    let mut df = query::sql(&ds, &a.sql)?;
    let mut out = std::io::stdout().lock();
    match a.format {
        Format::Table => {
            // Image bytes make unreadable tables: show their size instead.
            println!("{df}");
        }
        Format::Csv => CsvWriter::new(&mut out)
            .include_header(true)
            .finish(&mut df)?,
        Format::Json => {
            let cols = df
                .get_column_names()
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>();
            let mut rows = Vec::with_capacity(df.height());
            for i in 0..df.height() {
                let mut obj = serde_json::Map::new();
                for (c, name) in df.columns().iter().zip(&cols) {
                    let v = c.get(i)?;
                    let json = match v {
                        AnyValue::Null => serde_json::Value::Null,
                        AnyValue::Boolean(b) => b.into(),
                        AnyValue::String(s) => s.into(),
                        AnyValue::StringOwned(s) => s.to_string().into(),
                        v => match v.extract::<f64>() {
                            Some(f) if v.is_integer() => serde_json::Value::from(f as i64),
                            Some(f) => serde_json::Value::from(f),
                            None => v.to_string().into(),
                        },
                    };
                    obj.insert(name.clone(), json);
                }
                rows.push(serde_json::Value::Object(obj));
            }
            println!("{}", serde_json::to_string(&rows)?);
        }
    }
    Ok(())
}
