//! One run per root at a time: a lease built only on create-if-absent and listing.
//!
//! The lease is a sequence of generation objects `_lease/0000000007.json`; the highest generation
//! is the current state. To acquire, a run reads the current generation G and, if it is free
//! (released, expired, or held by a dead process of this very machine and PID namespace),
//! creates G+1 naming itself — `PutMode::Create` lets exactly one contender win. The holder
//! renews by creating G+2, G+3, … every `ttl/3`. Releasing creates a `released` generation.
//! Because only create-if-absent and listing are used, the protocol behaves the same on local
//! disk, in memory and on S3.
//!
//! Fencing (why a holder that was paused, partitioned or outrun cannot keep writing):
//! - **Generation numbers are monotonic and a renewal counts only if it is the highest.** Old
//!   generations are compacted (the holder deletes its own older ones), so a stale holder's
//!   create-if-absent on a compacted number can succeed; right after every renewal the holder
//!   lists the folder, and if any generation is higher than the one it just wrote, it has lost the
//!   lease (it deletes its stray generation and stops). This is chosen over one object with a
//!   conditional update (ETag `If-Match`) because create-if-absent is the one conditional write
//!   that local disk, memory and every S3-compatible store implement alike.
//! - **A holder proves its hold by its own clock, not the store's.** [`Lease::check`] fails once
//!   more than `ttl` has passed on the holder's monotonic clock since the last renewal that
//!   succeeded (measured from when it was sent): a holder stopped with SIGSTOP, or cut off from the
//!   store, stops writing before any contender may take over. The runner checks before every
//!   unit and before every commit.
//! - **Clock skew margin.** A contender takes an expired lease only `ttl` after its recorded
//!   expiry, so contenders whose wall clocks run up to `ttl` ahead of the holder's cannot take a
//!   live lease.
//! - **Holder identity** is a random token; "dead holder on this machine" (taken over at once, so
//!   a rerun after kill -9 need not wait) requires the same host name, boot id and PID namespace
//!   and a process with that pid and start time to be gone. A contender in another PID namespace
//!   (a container) waits for expiry instead.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    /// The holder's ttl in seconds (contenders wait this long again past `expires_at`: the
    /// clock-skew margin). 0 in records written before it existed.
    #[serde(default)]
    pub ttl_s: u64,
    /// The holder's machine and PID namespace (`<boot id>/<pid namespace>`), when known.
    #[serde(default)]
    pub process_space: String,
    /// The holder's process start time (clock ticks since boot), when known.
    #[serde(default)]
    pub start_time: u64,
}

impl LeaseRecord {
    fn describe(&self) -> String {
        format!("{} (pid {} on {})", self.purpose, self.pid, self.host)
    }

    fn is_free(&self, now: u64, host: &str) -> bool {
        self.released
            || self.expires_at.saturating_add(self.ttl_s) <= now
            || (self.host == host && self.holder_is_gone())
    }

    /// Whether the holder is known to be dead: it ran in this machine's boot and PID namespace
    /// and no process with its pid and start time exists.
    fn holder_is_gone(&self) -> bool {
        let Some(space) = process_space() else {
            return false;
        };
        if self.process_space.is_empty() || self.process_space != space {
            return false;
        }
        start_time(self.pid) != Some(self.start_time)
    }
}

/// Wall-clock Unix seconds. `SIMGAN_CLOCK_OFFSET_S` (tests only) shifts this process's clock, to
/// play a contender whose clock runs ahead.
fn now_s() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let offset: i64 = std::env::var("SIMGAN_CLOCK_OFFSET_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    now.saturating_add_signed(offset)
}

/// `<boot id>/<pid namespace>` of this process (Linux), or `None` where /proc does not tell.
fn process_space() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some(format!("{}/{}", boot.trim(), ns.display()))
}

/// Start time (clock ticks after boot, field 22 of `/proc/PID/stat`) of a live process.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold blanks: count after the last `)`.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

fn gen_path(generation: u64) -> String {
    format!("{DIR}/{generation:010}.json")
}

/// Every generation number in the lease folder, ascending.
fn generations(root: &Root) -> Result<Vec<u64>> {
    let mut out: Vec<u64> = root
        .list(DIR)?
        .into_iter()
        .filter_map(|l| {
            l.path
                .rsplit('/')
                .next()?
                .strip_suffix(".json")?
                .parse()
                .ok()
        })
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// The current lease generation of a root, if any.
pub fn current(root: &Root) -> Result<Option<LeaseRecord>> {
    let Some(&g) = generations(root)?.last() else {
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
    /// Milliseconds after `epoch` at which the last successful renewal was sent.
    renewed_ms: Arc<AtomicU64>,
    epoch: Instant,
    ttl: Duration,
    stop: Option<mpsc::Sender<()>>,
    renewer: Option<JoinHandle<()>>,
}

impl Lease {
    /// Acquire the root's lease for `ttl`. With `wait`, poll until it is free; otherwise fail at
    /// once naming the holder.
    pub fn acquire(root: &Root, purpose: &str, ttl: Duration, wait: bool) -> Result<Lease> {
        let host = host();
        let pid = std::process::id();
        let owner = format!("{host}:{pid}:{:032x}", rand::random::<u128>());
        let space = process_space().unwrap_or_default();
        let started = start_time(pid).unwrap_or(0);
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
                ttl_s,
                process_space: space.clone(),
                start_time: started,
            };
            let sent = Instant::now();
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
                    renewed_ms: Arc::new(AtomicU64::new(0)),
                    epoch: sent,
                    ttl: Duration::from_secs(ttl_s),
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
        let renewed_ms = self.renewed_ms.clone();
        let epoch = self.epoch;
        let period = Duration::from_millis(ttl_s * 1000 / 3);
        self.stop = Some(tx);
        self.renewer = Some(std::thread::spawn(move || {
            let taken_over = |why: &str| {
                lost.store(true, Ordering::SeqCst);
                tracing::error!("lease on {} was lost: {why}", root.url());
            };
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(period) {
                let g = generation.load(Ordering::SeqCst) + 1;
                let sent = epoch.elapsed();
                let rec = LeaseRecord {
                    generation: g,
                    expires_at: now_s() + ttl_s,
                    ..base.clone()
                };
                let Ok(bytes) = serde_json::to_vec(&rec) else {
                    continue;
                };
                match root.put_if_absent(&gen_path(g), bytes) {
                    Ok(true) => {}
                    Ok(false) => return taken_over("another run took it over after it expired"),
                    Err(e) => {
                        tracing::warn!("lease renewal failed (will retry): {e}");
                        continue;
                    }
                }
                // The renewal counts only if nothing higher exists: a compacted number that a
                // paused holder re-created is below the new holder's generations.
                match generations(&root) {
                    Ok(all) if all.last() == Some(&g) => {
                        generation.store(g, Ordering::SeqCst);
                        renewed_ms.store(
                            u64::try_from(sent.as_millis()).unwrap_or(u64::MAX),
                            Ordering::SeqCst,
                        );
                        // Keep the folder small: this holder's older generations are history.
                        for old in all.iter().filter(|&&o| o + 2 <= g) {
                            let _ = root.delete(&gen_path(*old));
                        }
                    }
                    Ok(_) => {
                        let _ = root.delete(&gen_path(g));
                        return taken_over("another run holds a higher generation");
                    }
                    Err(e) => tracing::warn!("lease renewal not confirmed (will retry): {e}"),
                }
            }
        }));
    }

    /// Fail unless this holder can prove it still holds the lease: not taken over, and less
    /// than `ttl` (on this process's monotonic clock) since the last successful renewal was sent.
    pub fn check(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(Error::LeaseLost {
                root: self.root.url().to_string(),
                reason: "another run took it over after it expired".into(),
            });
        }
        let renewed = Duration::from_millis(self.renewed_ms.load(Ordering::SeqCst));
        let since = self.epoch.elapsed().saturating_sub(renewed);
        if since >= self.ttl {
            return Err(Error::LeaseLost {
                root: self.root.url().to_string(),
                reason: format!(
                    "no renewal confirmed for {:.1} s (ttl {} s): this run was paused or cut off from the store",
                    since.as_secs_f64(),
                    self.ttl.as_secs()
                ),
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
