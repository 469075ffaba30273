//! Storage faults: a small fault-injecting HTTP proxy of our own in front of moto, and the tiny
//! eye pipeline run through it on S3. Each request the proxy sees gets, on a schedule seeded per
//! request number, one of: passed through; HTTP 503 before reaching moto; HTTP 500 after moto
//! applied it (the client cannot tell it happened); connection reset before or after moto
//! applied it; a 1.5 s stall; the response cut off halfway through its body. Every run either
//! completes or fails with a one-line error; reruns resume until the pipeline is done; then every
//! committed version is read back past the proxy and must verify with exactly the right rows.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::util::{self, ok, output, simgan};

/// What the proxy did, by kind.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub requests: u64,
    pub passed: u64,
    pub unavailable_before: u64,
    pub error_after: u64,
    pub reset_before: u64,
    pub reset_after: u64,
    pub slow: u64,
    pub truncated: u64,
}

impl Stats {
    fn faults(&self) -> u64 {
        self.unavailable_before
            + self.error_after
            + self.reset_before
            + self.reset_after
            + self.truncated
    }
}

/// A running proxy: its endpoint and its counters (threads live until the process exits).
pub struct FaultProxy {
    pub endpoint: String,
    stats: Arc<Mutex<Stats>>,
}

impl FaultProxy {
    pub fn stats(&self) -> Stats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Fault {
    Pass,
    UnavailableBefore,
    ErrorAfter,
    ResetBefore,
    ResetAfter,
    Slow,
    Truncated,
}

/// The fault for request `n`: a splitmix64 hash of (seed, n) against the rates.
fn schedule(seed: u64, n: u64, rate: f64) -> Fault {
    let mut z = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let u = (z >> 11) as f64 / (1u64 << 53) as f64;
    if u >= rate {
        return Fault::Pass;
    }
    // Split the fault rate: 30 % 503, 15 % 500-after, 15 % reset-before, 15 % reset-after,
    // 10 % slow, 15 % truncated.
    match u / rate {
        x if x < 0.30 => Fault::UnavailableBefore,
        x if x < 0.45 => Fault::ErrorAfter,
        x if x < 0.60 => Fault::ResetBefore,
        x if x < 0.75 => Fault::ResetAfter,
        x if x < 0.85 => Fault::Slow,
        _ => Fault::Truncated,
    }
}

/// Start a proxy to `upstream` (`http://host:port`) failing about `rate` of the requests.
pub fn start(upstream: &str, seed: u64, rate: f64) -> FaultProxy {
    let upstream = upstream.trim_start_matches("http://").to_string();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let endpoint = format!("http://{}", listener.local_addr().expect("proxy addr"));
    let stats = Arc::new(Mutex::new(Stats::default()));
    let counter = Arc::new(AtomicU64::new(0));
    let s = stats.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (s, up, counter) = (s.clone(), upstream.clone(), counter.clone());
            std::thread::spawn(move || {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let fault = schedule(seed, n, rate);
                let _ = serve(conn, &up, fault, &s);
            });
        }
    });
    FaultProxy { endpoint, stats }
}

/// Reset (RST, not FIN) a connection: SO_LINGER with a zero timeout, then close.
fn reset(conn: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized `linger`.
    unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(conn);
}

/// One request on one connection (the proxy answers `Connection: close`).
fn serve(
    conn: TcpStream,
    upstream: &str,
    fault: Fault,
    stats: &Mutex<Stats>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut head = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(()); // the client closed an idle connection
        }
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        assert!(
            !lower.starts_with("transfer-encoding"),
            "the fault proxy expects sized request bodies: {line}"
        );
        if !lower.starts_with("connection:") {
            head.extend_from_slice(line.as_bytes());
        }
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let count = |f: fn(&mut Stats)| {
        let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
        s.requests += 1;
        f(&mut s);
    };
    let mut conn = conn;
    let status = |conn: &mut TcpStream, code: &str| {
        conn.write_all(
            format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
        )
    };
    match fault {
        Fault::UnavailableBefore => {
            count(|s| s.unavailable_before += 1);
            return status(&mut conn, "503 Service Unavailable");
        }
        Fault::ResetBefore => {
            count(|s| s.reset_before += 1);
            reset(conn);
            return Ok(());
        }
        Fault::Slow => {
            count(|s| s.slow += 1);
            std::thread::sleep(Duration::from_millis(1500));
        }
        _ => {}
    }
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(&head)?;
    up.write_all(&body)?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    match fault {
        Fault::ErrorAfter => {
            count(|s| s.error_after += 1);
            status(&mut conn, "500 Internal Server Error")
        }
        Fault::ResetAfter => {
            count(|s| s.reset_after += 1);
            reset(conn);
            Ok(())
        }
        Fault::Truncated => {
            let body_at = response
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(response.len(), |i| i + 4);
            let body_len = response.len() - body_at;
            if body_len < 2 {
                count(|s| s.passed += 1);
                return conn.write_all(&response);
            }
            count(|s| s.truncated += 1);
            conn.write_all(&response[..body_at + body_len / 2])
        }
        _ => {
            if fault == Fault::Pass {
                count(|s| s.passed += 1);
            }
            conn.write_all(&response)
        }
    }
}

#[test]
#[ignore = "needs the moto S3 server (SIMGAN_MOTO_SERVER): ci/test.sh installs and starts it"]
fn the_eye_pipeline_on_a_faulty_store_completes_or_fails_clearly_and_resumes_exactly() {
    let proxy = start(util::moto_endpoint(), 7, 0.3);
    let bucket = util::s3_bucket();
    let root = format!("{bucket}/faulty");
    let dir = util::tempdir();
    let d = dir.path();
    let p = util::write(&d.join("tiny.toml"), crate::e2e::TINY);
    let p = p.to_str().unwrap();
    let through = util::s3_env(&proxy.endpoint);
    let mut failures = Vec::new();
    let mut done = false;
    for _ in 0..20 {
        let out = output(
            simgan(d)
                .args(["run", p, "--root", &root])
                .envs(through.iter().map(|(k, v)| (*k, v.as_str()))),
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !err.contains("panicked"),
            "a panic under storage faults:\n{err}"
        );
        if out.status.success() {
            done = true;
            break;
        }
        let line = err
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_else(|| panic!("a failed run without an error line:\n{err}"))
            .to_string();
        failures.push(line);
    }
    let stats = proxy.stats();
    eprintln!(
        "fault proxy: {stats:?}; runs failed before completing: {}\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(done, "no run completed in 20 tries: {failures:#?}");
    assert!(
        stats.faults() > 20,
        "the proxy injected too few faults: {stats:?}"
    );

    // Read back past the proxy: every version verifies, with exactly the right rows.
    let direct = util::s3_env(util::moto_endpoint());
    let cli = |args: &[&str]| {
        let mut c = simgan(d);
        c.args(args)
            .envs(direct.iter().map(|(k, v)| (*k, v.as_str())));
        ok(&mut c)
    };
    cli(&["verify", &root]);
    let status: Value =
        serde_json::from_str(&cli(&["status", p, "--root", &root, "--json"])).unwrap();
    for s in status["stages"].as_array().unwrap() {
        assert_eq!(s["state"], "up-to-date", "{s}");
    }
    for (stage, rows) in [("synthetic", 96), ("real", 96), ("refined", 96)] {
        let r: Value = serde_json::from_str(&cli(&[
            "query",
            &format!("{root}/{stage}"),
            "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM data",
            "--format",
            "json",
        ]))
        .unwrap();
        assert_eq!(
            (r[0]["n"].as_u64(), r[0]["ids"].as_u64()),
            (Some(rows), Some(rows)),
            "{stage}"
        );
    }
}

#[test]
#[ignore = "needs the moto S3 server (SIMGAN_MOTO_SERVER): ci/test.sh installs and starts it"]
fn storage_faults_are_never_skipped_as_bad_input() {
    let proxy = start(util::moto_endpoint(), 11, 0.3);
    let bucket = util::s3_bucket();
    let raw = util::open(&format!("{bucket}/raw"));
    let n = 60;
    for k in 0..n {
        let img = image::GrayImage::from_fn(8, 8, |x, y| image::Luma([(x * 7 + y * 3 + k) as u8]));
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        raw.put(&format!("c{}/{k}.png", k % 2), png).unwrap();
    }
    let dir = util::tempdir();
    let d = dir.path();
    let p = util::write(
        &d.join("p.toml"),
        &format!(
            "name = \"raw\"\n[stages.images]\nkind = \"ingest-images\"\ninputs = {{ source = \"{bucket}/raw\" }}\nparams = {{ domain = \"synthetic\", on_error = \"skip\", files_per_shard = 8 }}\n"
        ),
    );
    let p = p.to_str().unwrap();
    let root = format!("{bucket}/runs");
    let through = util::s3_env(&proxy.endpoint);
    let mut done = false;
    for _ in 0..20 {
        let out = output(
            simgan(d)
                .args(["run", p, "--root", &root])
                .envs(through.iter().map(|(k, v)| (*k, v.as_str()))),
        );
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
        if out.status.success() {
            done = true;
            break;
        }
    }
    assert!(done, "no run completed");
    eprintln!("fault proxy: {:?}", proxy.stats());
    let direct = util::s3_env(util::moto_endpoint());
    let mut c = simgan(d);
    c.args(["show", &format!("{root}/images"), "--json"])
        .envs(direct.iter().map(|(k, v)| (*k, v.as_str())));
    let m: Value = serde_json::from_str(&ok(&mut c)).unwrap();
    assert_eq!(m["skipped"], serde_json::json!([]), "{}", m["skipped"]);
    assert_eq!(m["rows"], n);
}
