//! The command line: clap definitions and one function per subcommand. Nothing below this module
//! knows about the CLI; `main.rs` only calls [`main`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::Error;
use crate::pipeline::Pipeline;
use crate::storage::Root;

mod bench;
mod data;
mod inspect;
mod run;
mod submit;

/// simgan — make simulated training images look real (SimGAN), as staged jobs on object storage.
#[derive(Debug, Parser)]
#[command(name = "simgan", version, about, max_term_width = 100)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// More logging (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run what is stale or missing, in dependency order.
    Run(run::RunArgs),
    /// Each stage: up-to-date / stale (with the reason) / missing.
    Status(run::StatusArgs),
    /// What a finished run found: each report's headline, checks and page.
    Report(run::ReportArgs),
    /// A stage's manifest and shard summary (URL: <root>/<stage>[@VERSION] or a manifest .json).
    Show(inspect::ShowArgs),
    /// The stages and versions under a run root.
    Ls(inspect::LsArgs),
    /// Check every committed version under a root against its manifest (sizes, sha256).
    Verify(inspect::VerifyArgs),
    /// Write the first N rows of a dataset as PNGs plus a labels CSV.
    Export(data::ExportArgs),
    /// SQL over a dataset's shards with polars (the table is called `data`).
    Query(data::QueryArgs),
    /// Submit the pipeline to Slurm (job arrays, afterok chains) or print Kubernetes Indexed Jobs.
    Submit(submit::SubmitArgs),
    /// Measure throughput and check devices (sections: see `simgan bench --help`) as JSON.
    Bench(bench::BenchArgs),
    /// The stage kinds, their inputs and params.
    Kinds,
    /// Check that devices can run here (CUDA: driver, NVRTC, the GPU index) and describe them.
    Probe(bench::ProbeArgs),
}

/// Pipeline file and root, shared by `run` and `status`.
#[derive(Debug, Args)]
struct PipelineArgs {
    /// Pipeline definition (TOML).
    pipeline: PathBuf,
    /// Run root: a path, file://, s3://, gs://, az:// or memory:// (default: the pipeline's
    /// `root`, else ./runs/<pipeline name>).
    #[arg(long, env = "SIMGAN_ROOT")]
    root: Option<String>,
    /// Override a param: `STAGE.PARAM=VALUE` (VALUE as TOML, else a string), e.g.
    /// `--set refiner.seed=2`. Repeatable; changes staleness like an edit of the file would.
    #[arg(long = "set", value_name = "STAGE.PARAM=VALUE")]
    overrides: Vec<String>,
}

impl PipelineArgs {
    fn load(&self, rt: &tokio::runtime::Runtime) -> anyhow::Result<(Pipeline, Root)> {
        let pipeline =
            Pipeline::load_with(&self.pipeline, &crate::registry::builtin(), &self.overrides)?;
        let location = self
            .root
            .clone()
            .or_else(|| pipeline.root.clone())
            .unwrap_or_else(|| format!("./runs/{}", pipeline.name));
        let root = Root::open(&location, rt.handle().clone())?;
        Ok((pipeline, root))
    }
}

fn init_logging(cli: &Cli) {
    let default = match cli.verbose {
        0 => "warn,simgan=info",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match cli.log_format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the I/O runtime")
}

/// Exit codes: 0 success, 1 failure, 2 usage error (clap), 75 (EX_TEMPFAIL) when the root is
/// locked by another run — a scheduler may retry later — and 143 / 130 after SIGTERM / SIGINT.
fn exit_code(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        match cause.downcast_ref::<Error>() {
            Some(Error::LeaseHeld { .. }) => return ExitCode::from(75),
            Some(Error::Interrupted { signal, .. }) => {
                return ExitCode::from(u8::try_from(128 + signal).unwrap_or(1));
            }
            _ => {}
        }
    }
    ExitCode::from(1)
}

/// SIGTERM (schedulers' stop) and SIGINT (Ctrl-C): the first asks the runs of this process to
/// stop before their next unit (the lease is released, exit 128 + signal: 143 or 130); a second
/// exits at once.
fn stop_on_signals(rt: &tokio::runtime::Runtime) {
    use tokio::signal::unix::{SignalKind, signal};
    rt.spawn(async {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        loop {
            let sig = tokio::select! {
                _ = term.recv() => libc::SIGTERM,
                _ = int.recv() => libc::SIGINT,
            };
            if crate::runner::interrupted().is_some() {
                std::process::exit(128 + sig);
            }
            eprintln!(
                "simgan: signal {sig}: stopping after the units in progress (again to exit at once)"
            );
            crate::runner::interrupt(sig);
        }
    });
}

/// Parse arguments, run the command, print a one-line summary on failure.
pub fn main() -> ExitCode {
    // Die quietly on a closed pipe (`simgan query … | head`) instead of panicking in println!.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    crate::nn::tune_allocator();
    let cli = Cli::parse();
    init_logging(&cli);
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            exit_code(&err)
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let rt = runtime()?;
    match cli.command {
        Command::Run(a) => {
            stop_on_signals(&rt);
            run::run(a, &rt)
        }
        Command::Status(a) => run::status(a, &rt),
        Command::Report(a) => run::report(a, &rt),
        Command::Show(a) => inspect::show(a, &rt),
        Command::Ls(a) => inspect::ls(a, &rt),
        Command::Verify(a) => inspect::verify(a, &rt),
        Command::Export(a) => data::export(a, &rt),
        Command::Query(a) => data::query(a, &rt),
        Command::Submit(a) => submit::submit(a, &rt),
        Command::Probe(a) => bench::probe(a),
        Command::Bench(a) => bench::bench(a, &rt),
        Command::Kinds => {
            inspect::kinds();
            Ok(())
        }
    }
}

/// Seconds as people read them: `42.1 s`, `6 min 54 s`.
fn human_secs(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1} s")
    } else {
        let whole = s.round() as u64;
        format!("{} min {} s", whole / 60, whole % 60)
    }
}

/// Lease TTL parsing for `--lease-ttl` (seconds).
fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|e| format!("`{s}`: {e}"))
}
