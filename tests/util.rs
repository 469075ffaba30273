//! Test fixtures: temp folders, a moto S3 server on 127.0.0.1 started once per test binary, a
//! shared tokio runtime, and a builder for `simgan` CLI invocations.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use simgan::storage::Root;

/// One tokio runtime for all tests' storage I/O.
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// A fresh temp folder (deleted on drop).
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("simgan-test-")
        .tempdir()
        .expect("temp dir")
}

/// A temp folder shared by several tests of this binary (a fixture built once), removed when
/// the process exits.
pub fn shared_tempdir() -> PathBuf {
    let dir = tempdir().keep();
    let d = dir.clone();
    at_exit(move || {
        let _ = std::fs::remove_dir_all(&d);
    });
    dir
}

struct Moto {
    endpoint: String,
}

/// Commands run when the test process exits (statics are never dropped, so services started
/// once per test binary are stopped from an `atexit` hook).
static AT_EXIT: std::sync::Mutex<Vec<Box<dyn FnOnce() + Send>>> = std::sync::Mutex::new(Vec::new());

extern "C" fn run_at_exit() {
    let hooks = std::mem::take(&mut *AT_EXIT.lock().unwrap_or_else(|p| p.into_inner()));
    for hook in hooks {
        hook();
    }
}

/// Run `f` when the test process exits.
pub fn at_exit(f: impl FnOnce() + Send + 'static) {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    // SAFETY: registering a plain extern "C" function with the C runtime.
    REGISTER.call_once(|| unsafe {
        libc::atexit(run_at_exit);
    });
    AT_EXIT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Box::new(f));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The endpoint of a moto S3 server started for this test binary. Set `SIMGAN_MOTO_SERVER` to
/// the `moto_server` executable (ci/test.sh does); without it the S3 tests fail, by design.
pub fn moto_endpoint() -> &'static str {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    let moto = MOTO.get_or_init(|| {
        let bin = std::env::var("SIMGAN_MOTO_SERVER").unwrap_or_else(|_| {
            panic!("SIMGAN_MOTO_SERVER is not set: run the tests with ci/test.sh, which installs moto and sets it")
        });
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        let mut child = child;
        at_exit(move || {
            let _ = child.kill();
            let _ = child.wait();
        });
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start on {endpoint}");
            std::thread::sleep(Duration::from_millis(100));
        }
        // SAFETY-free: tests set the S3 environment once, before any S3 root is opened.
        for (k, v) in s3_env(&endpoint) {
            // SAFETY: set while holding the OnceLock initialiser; every reader opens roots after this.
            unsafe { std::env::set_var(k, v) };
        }
        Moto { endpoint }
    });
    &moto.endpoint
}

/// The environment that points object_store (and the CLI) at moto.
pub fn s3_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT", endpoint.to_string()),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
    ]
}

/// A fresh, empty bucket on moto; returns `s3://bucket`.
pub fn s3_bucket() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let endpoint = moto_endpoint();
    let name = format!(
        "simgan-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let status = Command::new("curl")
        .args(["-sf", "-X", "PUT", &format!("{endpoint}/{name}")])
        .stdout(Stdio::null())
        .status()
        .expect("curl");
    assert!(status.success(), "creating bucket {name} on moto");
    format!("s3://{name}")
}

/// Open a root on the shared runtime.
pub fn open(location: &str) -> Root {
    Root::open(location, rt().handle().clone()).unwrap_or_else(|e| panic!("open {location}: {e}"))
}

/// A `simgan` command with a clean environment for logs.
pub fn simgan(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_simgan"));
    c.current_dir(dir)
        .env_remove("SIMGAN_CRASH_AFTER_UNITS")
        .env("RUST_LOG", "warn");
    c
}

/// Run a command, returning its output; panics with stderr if it fails to start.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// `simgan show URL --json` run in `dir`, parsed.
pub fn show(dir: &Path, url: &str) -> serde_json::Value {
    serde_json::from_str(&ok(simgan(dir).args(["show", url, "--json"]))).unwrap()
}

/// The artifact named `name` (its file name) of stage `stage`'s latest version in run `run`
/// under `dir/runs`, if the stage wrote one.
pub fn artifact(dir: &Path, run: &str, stage: &str, name: &str) -> Option<PathBuf> {
    let m = show(dir, &format!("runs/{run}/{stage}"));
    m["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap())
        .find(|p| p.rsplit('/').next() == Some(name))
        .map(|p| dir.join("runs").join(run).join(p))
}

/// The JSON artifact `name` of the newest version of `stage` in `runs/<run>` under `dir`.
pub fn artifact_json(dir: &Path, run: &str, stage: &str, name: &str) -> serde_json::Value {
    let path =
        artifact(dir, run, stage, name).unwrap_or_else(|| panic!("{stage} has no artifact {name}"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Run and require success, returning stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Write a file, creating parents.
pub fn write(path: &Path, text: &str) -> PathBuf {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
    path.to_path_buf()
}

/// The DOM of a page after headless Chromium loaded it (images decoded, scripts run).
pub fn chromium_dom(page: &Path) -> String {
    let chromium = std::env::var("SIMGAN_CHROMIUM")
        .expect("SIMGAN_CHROMIUM (set by ci/test.sh, which installs Debian's chromium)");
    let profile = tempdir();
    let out = output(Command::new(chromium).args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        &format!("--user-data-dir={}", profile.path().display()),
        "--virtual-time-budget=5000",
        "--dump-dom",
        &format!("file://{}", page.display()),
    ]));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The report's Turing test page answered by `ci/turing_click.py` in headless Chromium through
/// ChromeDriver (`strategy`: real | refined | keys-real): what the page showed at the end.
pub fn turing_click(page: &Path, strategy: &str) -> serde_json::Value {
    let python = std::env::var("SIMGAN_PYTHON").expect("SIMGAN_PYTHON (set by ci/test.sh)");
    let out = ok(Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/turing_click.py"))
        .arg(page)
        .arg(strategy));
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Hugging Face `datasets` loading each shard folder (`ci/hf_load.py`): one JSON report each.
pub fn hf_load(folders: &[PathBuf]) -> Vec<serde_json::Value> {
    let python = std::env::var("SIMGAN_PYTHON")
        .expect("SIMGAN_PYTHON (set by ci/test.sh, whose venv has `datasets`)");
    let hf_home = tempdir();
    let out = ok(Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/hf_load.py"))
        .args(folders)
        .env("HF_HOME", hf_home.path())
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HUB_OFFLINE", "1"));
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}
