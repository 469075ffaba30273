//! The storage layer's conformance suite, run against memory, local disk and S3 (moto).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use simgan::storage::Root;

use crate::util;

fn conformance(root: &Root) {
    // put / get / size
    assert_eq!(root.get("a/missing").unwrap(), None);
    root.put("a/one.txt", b"hello".to_vec()).unwrap();
    assert_eq!(
        root.get("a/one.txt").unwrap().as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(root.size("a/one.txt").unwrap(), Some(5));
    root.put("a/one.txt", b"replaced".to_vec()).unwrap();
    assert_eq!(
        root.get("a/one.txt").unwrap().as_deref(),
        Some(&b"replaced"[..])
    );

    // create-if-absent
    assert!(root.put_if_absent("a/lock", b"first".to_vec()).unwrap());
    assert!(!root.put_if_absent("a/lock", b"second".to_vec()).unwrap());
    assert_eq!(root.get("a/lock").unwrap().as_deref(), Some(&b"first"[..]));

    // exactly one winner among racing creators
    let wins = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|s| {
        for i in 0..8 {
            let wins = wins.clone();
            let root = root.clone();
            s.spawn(move || {
                if root
                    .put_if_absent("a/race", format!("writer {i}").into_bytes())
                    .unwrap()
                {
                    wins.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(
        wins.load(Ordering::SeqCst),
        1,
        "exactly one create-if-absent must win"
    );

    // listing: recursive and with delimiter
    root.put("a/b/c.txt", b"c".to_vec()).unwrap();
    root.put("z.txt", b"z".to_vec()).unwrap();
    let listed: Vec<String> = root
        .list("a")
        .unwrap()
        .into_iter()
        .map(|l| l.path)
        .collect();
    assert_eq!(listed, vec!["a/b/c.txt", "a/lock", "a/one.txt", "a/race"]);
    assert_eq!(root.list_dirs("").unwrap(), vec!["a"]);
    assert_eq!(root.list_dirs("a").unwrap(), vec!["b"]);

    // a sub-root sees the same objects under a shorter path
    let sub = root.sub("a");
    assert_eq!(sub.get("b/c.txt").unwrap().as_deref(), Some(&b"c"[..]));

    // multipart upload through the buffered writer (> one 8 MiB part): visible only when complete
    let big: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut w = root.writer("big/blob.bin");
    use tokio::io::AsyncWriteExt;
    for chunk in big.chunks(1 << 20) {
        root.runtime().block_on(w.write_all(chunk)).unwrap();
    }
    assert_eq!(
        root.size("big/blob.bin").unwrap(),
        None,
        "an unfinished upload must not be visible"
    );
    root.runtime().block_on(w.shutdown()).unwrap();
    assert_eq!(root.get("big/blob.bin").unwrap().as_deref(), Some(&big[..]));

    // delete (missing is fine) and delete_prefix
    root.delete("z.txt").unwrap();
    root.delete("z.txt").unwrap();
    assert_eq!(root.get("z.txt").unwrap(), None);
    assert_eq!(root.delete_prefix("a").unwrap(), 4);
    assert!(root.list("a").unwrap().is_empty());
}

#[test]
fn conformance_memory() {
    conformance(&util::open(&format!(
        "memory://conformance-{}/p",
        std::process::id()
    )));
}

#[test]
fn conformance_local_disk() {
    let dir = util::tempdir();
    conformance(&util::open(dir.path().to_str().unwrap()));
    // file:// URLs name the same place
    let d2 = util::tempdir();
    conformance(&util::open(&format!("file://{}", d2.path().display())));
}

#[test]
#[ignore = "needs the moto S3 server (SIMGAN_MOTO_SERVER): ci/test.sh installs and starts it"]
fn conformance_s3_on_moto() {
    let bucket = util::s3_bucket();
    conformance(&util::open(&format!("{bucket}/some/prefix")));
}

#[test]
fn open_existing_refuses_a_missing_folder() {
    let dir = util::tempdir();
    let missing = dir.path().join("nope");
    let err = Root::open_existing(missing.to_str().unwrap(), util::rt().handle().clone())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nope") && err.contains("no such folder"),
        "{err}"
    );
}
