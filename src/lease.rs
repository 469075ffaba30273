//! One run per root at a time: a lease built only on create-if-absent.
//!
//! The lease is a sequence of generation objects `_lease/0000000007.json`; the highest generation
//! is the current state. To acquire, a run reads the current generation G and, if it is free
//! (released, expired, or held by a dead process on this host), creates G+1 naming itself —
//! `PutMode::Create` lets exactly one contender win. The holder renews by creating G+2, G+3, …
//! every `ttl/3`; if that create fails, someone took the lease over after it expired and this run
//! has lost it (the runner checks before every commit). Releasing creates a `released` generation.
//! Because only create-if-absent is used, the protocol behaves the same on local disk, in memory
//! and on S3.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::Root;

const DIR: &str = "_lease";

/// One lease generation as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Generation number.
    pub generation: u64,
    /// Run id of the holder.
    pub owner: String,
    /// Host name of the holder.
    pub host: String,
    /// Process id of the holder.
    pub pid: u32,
    /// Unix seconds when this generation expires.
    pub expires_at: u64,
    /// True when the holder released the lease.
    pub released: bool,
    /// What the holder is doing (pipeline name, command).
    pub purpose: String,
}

impl LeaseRecord {
    fn describe(&self) -> String {
        format!("{} (pid {} on {})", self.purpose, self.pid, self.host)
    }

    fn is_free(&self, now: u64, host: &str) -> bool {
        self.released || self.expires_at <= now || (self.host == host && !pid_alive(self.pid))
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        || !std::path::Path::new("/proc/self").exists()
}

fn host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

fn gen_path(generation: u64) -> String {
    format!("{DIR}/{generation:010}.json")
}

/// The current lease generation of a root, if any.
pub fn current(root: &Root) -> Result<Option<LeaseRecord>> {
    let latest = root.list(DIR)?.into_iter().filter_map(|l| {
        let g: u64 = l
            .path
            .rsplit('/')
            .next()?
            .strip_suffix(".json")?
            .parse()
            .ok()?;
        Some(g)
    });
    let Some(g) = latest.max() else {
        return Ok(None);
    };
    let rel = gen_path(g);
    match root.get(&rel)? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::Json {
                path: root.url_of(&rel),
                source,
            }),
        None => Ok(None),
    }
}

/// A held lease; renewed in the background until dropped or released.
pub struct Lease {
    root: Root,
    record: LeaseRecord,
    generation: Arc<AtomicU64>,
    lost: Arc<AtomicBool>,
    stop: Option<mpsc::Sender<()>>,
    renewer: Option<JoinHandle<()>>,
}

impl Lease {
    /// Acquire the root's lease for `ttl`. With `wait`, poll until it is free; otherwise fail at
    /// once naming the holder.
    pub fn acquire(root: &Root, purpose: &str, ttl: Duration, wait: bool) -> Result<Lease> {
        let host = host();
        let pid = std::process::id();
        let owner = format!(
            "{host}:{pid}:{}",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let ttl_s = ttl.as_secs().max(1);
        loop {
            let cur = current(root)?;
            let now = now_s();
            match &cur {
                Some(rec) if !rec.is_free(now, &host) => {
                    if !wait {
                        let expires = chrono::DateTime::from_timestamp(rec.expires_at as i64, 0)
                            .map(|t| t.to_rfc3339())
                            .unwrap_or_default();
                        return Err(Error::LeaseHeld {
                            root: root.url().to_string(),
                            holder: rec.describe(),
                            expires,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
                _ => {}
            }
            let generation = cur.as_ref().map(|r| r.generation + 1).unwrap_or(1);
            let record = LeaseRecord {
                generation,
                owner: owner.clone(),
                host: host.clone(),
                pid,
                expires_at: now + ttl_s,
                released: false,
                purpose: purpose.to_string(),
            };
            let bytes = serde_json::to_vec(&record).map_err(|source| Error::Json {
                path: root.url_of(DIR),
                source,
            })?;
            if root.put_if_absent(&gen_path(generation), bytes)? {
                tracing::debug!(generation, "lease acquired");
                let mut lease = Lease {
                    root: root.clone(),
                    record,
                    generation: Arc::new(AtomicU64::new(generation)),
                    lost: Arc::new(AtomicBool::new(false)),
                    stop: None,
                    renewer: None,
                };
                lease.start_renewer(ttl_s);
                return Ok(lease);
            }
            // Another contender created that generation first: look again.
        }
    }

    fn start_renewer(&mut self, ttl_s: u64) {
        let (tx, rx) = mpsc::channel::<()>();
        let root = self.root.clone();
        let base = self.record.clone();
        let generation = self.generation.clone();
        let lost = self.lost.clone();
        let period = Duration::from_millis(ttl_s * 1000 / 3);
        self.stop = Some(tx);
        self.renewer = Some(std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(period) {
                let g = generation.load(Ordering::SeqCst) + 1;
                let rec = LeaseRecord {
                    generation: g,
                    expires_at: now_s() + ttl_s,
                    ..base.clone()
                };
                let Ok(bytes) = serde_json::to_vec(&rec) else {
                    continue;
                };
                match root.put_if_absent(&gen_path(g), bytes) {
                    Ok(true) => {
                        generation.store(g, Ordering::SeqCst);
                        // Keep the folder small: older generations are history.
                        if g > 2 {
                            let _ = root.delete(&gen_path(g - 2));
                        }
                    }
                    Ok(false) => {
                        lost.store(true, Ordering::SeqCst);
                        tracing::error!("lease on {} was taken over by another run", root.url());
                        return;
                    }
                    Err(e) => tracing::warn!("lease renewal failed (will retry): {e}"),
                }
            }
        }));
    }

    /// Fail if the lease was lost (expired and taken over).
    pub fn check(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(Error::LeaseLost {
                root: self.root.url().to_string(),
                reason: "another run took it over after it expired".into(),
            });
        }
        Ok(())
    }

    /// The run id of this holder.
    pub fn owner(&self) -> &str {
        &self.record.owner
    }

    /// Release the lease (also done, best effort, on drop).
    pub fn release(mut self) -> Result<()> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(h) = self.renewer.take() {
            let _ = h.join();
        }
        if self.lost.load(Ordering::SeqCst) {
            return Ok(());
        }
        let g = self.generation.load(Ordering::SeqCst) + 1;
        let rec = LeaseRecord {
            generation: g,
            released: true,
            expires_at: now_s(),
            ..self.record.clone()
        };
        let bytes = serde_json::to_vec(&rec).map_err(|source| Error::Json {
            path: self.root.url_of(DIR),
            source,
        })?;
        self.root.put_if_absent(&gen_path(g), bytes)?;
        let _ = self.root.delete(&gen_path(g - 1));
        self.lost.store(true, Ordering::SeqCst);
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Err(e) = self.release_inner() {
            tracing::warn!("could not release lease: {e}");
        }
    }
}
