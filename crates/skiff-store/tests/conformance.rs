//! The storage contract (see `src/lib.rs`), written once and run against every backend: the
//! embedded one on a real redb file in a temporary folder, Redis on a real `redis-server` that
//! each test starts on its own port. Then the behaviour only one backend has: crash safety and
//! the single-opener lock of the embedded file; hosts sharing a Redis, Redis going away and
//! coming back, a Redis that hangs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::RedisServer;
use skiff_store::{Backend, LIST_PAGE_KEYS, MAX_KEY_BYTES, MAX_VALUE_BYTES, Store, StoreError};
use skiff_store::{EmbeddedBackend, RedisBackend};

/// A backend under test, and what keeps it alive (its folder, its server).
struct Harness {
    backend: Arc<dyn Backend>,
    /// The largest counter the backend holds (Redis' `INCRBY` is signed).
    counter_max: u64,
    _keep: Box<dyn std::any::Any + Send>,
}

fn embedded() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let backend = EmbeddedBackend::open(&dir.path().join("data/kv.redb")).unwrap();
    Harness {
        backend: Arc::new(backend),
        counter_max: u64::MAX,
        _keep: Box::new(dir),
    }
}

fn redis() -> Harness {
    let server = RedisServer::start();
    let backend = RedisBackend::connect(&server.url()).unwrap();
    Harness {
        backend: Arc::new(backend),
        counter_max: i64::MAX as u64,
        _keep: Box::new(server),
    }
}

/// Runs each named contract test against each backend, as `embedded::NAME` and `redis::NAME`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let harness = super::embedded();
                    super::$name(&harness).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let harness = super::redis();
                    super::$name(&harness).await;
                }
            )*
        }
    };
}

conformance!(
    get_set_delete_exists,
    binary_values_round_trip,
    limits_are_refused_with_invalid,
    namespaces_are_isolated,
    list_keys_pages_through_every_key_once,
    increment_counts_from_missing_and_existing,
    increment_refuses_non_counters_and_overflow,
    compare_and_swap_semantics,
    batch_operations,
    concurrent_increments_are_atomic,
);

fn is_invalid<T: std::fmt::Debug>(result: Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Invalid(_)))
}

async fn get_set_delete_exists(h: &Harness) {
    let store = h.backend.open("basic");
    assert_eq!(store.get("k").await.unwrap(), None);
    assert!(!store.exists("k").await.unwrap());

    store.set("k", b"one").await.unwrap();
    assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"one"[..]));
    assert!(store.exists("k").await.unwrap());

    store.set("k", b"two").await.unwrap();
    assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"two"[..]));

    store.delete("k").await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), None);
    assert!(!store.exists("k").await.unwrap());
    // Deleting a missing key is not an error.
    store.delete("k").await.unwrap();

    // Keys are any UTF-8, including the separators the backends use.
    for key in ["", "a:b", "skiff:1:x:y", "ünïcödé ✓", "*?[]\\"] {
        store.set(key, key.as_bytes()).await.unwrap();
        assert_eq!(
            store.get(key).await.unwrap().as_deref(),
            Some(key.as_bytes()),
            "{key:?}"
        );
    }
}

async fn binary_values_round_trip(h: &Harness) {
    let store = h.backend.open("binary");
    let every_byte: Vec<u8> = (0..=255).collect();
    let one_mib: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    for (key, value) in [
        ("empty", &b""[..]),
        ("bytes", &every_byte),
        ("mib", &one_mib),
    ] {
        store.set(key, value).await.unwrap();
        assert_eq!(
            store.get(key).await.unwrap().as_deref(),
            Some(value),
            "{key}"
        );
        assert!(store.exists(key).await.unwrap(), "{key}");
    }
    // An empty value is a present key, not an absent one.
    assert_eq!(store.get("empty").await.unwrap(), Some(Vec::new()));
}

async fn limits_are_refused_with_invalid(h: &Harness) {
    let store = h.backend.open("limits");
    let too_big = vec![7u8; MAX_VALUE_BYTES + 1];
    assert!(is_invalid(store.set("big", &too_big).await));
    assert!(is_invalid(
        store.compare_and_swap("big", None, &too_big).await
    ));
    assert!(is_invalid(store.set_many(&[("big".into(), too_big)]).await));
    assert!(
        !store.exists("big").await.unwrap(),
        "a refused value must not be stored"
    );

    let limit = vec![7u8; MAX_VALUE_BYTES];
    store.set("limit", &limit).await.unwrap();
    assert_eq!(
        store.get("limit").await.unwrap().map(|v| v.len()),
        Some(MAX_VALUE_BYTES)
    );

    let long_key = "k".repeat(MAX_KEY_BYTES + 1);
    assert!(is_invalid(store.set(&long_key, b"v").await));
    assert!(is_invalid(store.get(&long_key).await));
    assert!(is_invalid(store.increment(&long_key, 1).await));
    let longest = "k".repeat(MAX_KEY_BYTES);
    store.set(&longest, b"v").await.unwrap();
    assert!(store.exists(&longest).await.unwrap());

    let error = store
        .set("big", &vec![0; MAX_VALUE_BYTES + 1])
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains(&MAX_VALUE_BYTES.to_string()),
        "{error}"
    );
}

async fn namespaces_are_isolated(h: &Harness) {
    // Pairs that a careless key scheme would mix up: `a:b`+`c` against `a`+`b:c`, and glob
    // characters that would make a listing pattern match other namespaces.
    let spaces = [
        "app1/default",
        "app2/default",
        "a:b",
        "a",
        "a*",
        "ab",
        "[a]",
        "x\\",
    ];
    for ns in spaces {
        let store = h.backend.open(ns);
        store.set("shared", ns.as_bytes()).await.unwrap();
        store.increment("counter", 1).await.unwrap();
    }
    h.backend.open("a:b").set("c", b"from a:b").await.unwrap();
    assert_eq!(h.backend.open("a").get("b:c").await.unwrap(), None);

    for ns in spaces {
        let store = h.backend.open(ns);
        assert_eq!(
            store.get("shared").await.unwrap().as_deref(),
            Some(ns.as_bytes()),
            "{ns}"
        );
        assert_eq!(
            store.get("counter").await.unwrap().as_deref(),
            Some(&b"1"[..]),
            "{ns}"
        );
        let mut keys = list_all(&*store).await;
        keys.sort();
        let expected: &[&str] = if ns == "a:b" {
            &["c", "counter", "shared"]
        } else {
            &["counter", "shared"]
        };
        assert_eq!(keys, expected, "namespace {ns:?}");
    }

    // Two handles on one namespace share it.
    h.backend.open("app1/default").set("x", b"1").await.unwrap();
    assert!(h.backend.open("app1/default").exists("x").await.unwrap());
    assert!(!h.backend.open("app2/default").exists("x").await.unwrap());
    h.backend
        .open("app2/default")
        .delete("shared")
        .await
        .unwrap();
    assert!(
        h.backend
            .open("app1/default")
            .exists("shared")
            .await
            .unwrap()
    );
}

/// Every key of a store, following cursors to the end.
async fn list_all(store: &dyn Store) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor = None;
    for _ in 0..10_000 {
        let page = store.list_keys(cursor).await.unwrap();
        assert!(page.keys.len() <= LIST_PAGE_KEYS);
        keys.extend(page.keys);
        match page.cursor {
            None => return keys,
            next => cursor = next,
        }
    }
    panic!("listing did not end");
}

async fn list_keys_pages_through_every_key_once(h: &Harness) {
    let empty = h.backend.open("nothing-here");
    let page = empty.list_keys(None).await.unwrap();
    assert!(page.keys.is_empty());
    assert_eq!(page.cursor, None);

    let store = h.backend.open("many");
    let count = LIST_PAGE_KEYS * 2 + LIST_PAGE_KEYS / 2;
    let all: Vec<String> = (0..count).map(|i| format!("key-{i:05}")).collect();
    for chunk in all.chunks(500) {
        let entries: Vec<(String, Vec<u8>)> =
            chunk.iter().map(|k| (k.clone(), b"v".to_vec())).collect();
        store.set_many(&entries).await.unwrap();
    }
    // Keys of a neighbouring namespace must not leak into the listing.
    h.backend
        .open("many2")
        .set("key-99999", b"v")
        .await
        .unwrap();

    let mut pages = 0;
    let mut listed = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.list_keys(cursor).await.unwrap();
        assert!(
            page.keys.len() <= LIST_PAGE_KEYS,
            "page of {}",
            page.keys.len()
        );
        pages += 1;
        listed.extend(page.keys);
        cursor = page.cursor;
        if cursor.is_none() {
            break;
        }
        assert!(pages < 100, "listing did not end");
    }
    assert!(pages >= 3, "{count} keys came in {pages} pages");
    let unique: HashSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "a key was listed twice");
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    assert_eq!(listed_sorted, all);
}

async fn increment_counts_from_missing_and_existing(h: &Harness) {
    let store = h.backend.open("counters");
    assert_eq!(store.increment("hits", 1).await.unwrap(), 1);
    assert_eq!(store.increment("hits", 41).await.unwrap(), 42);
    assert_eq!(store.increment("hits", 0).await.unwrap(), 42);
    // Counters are decimal text, so `get` reads them the same on every backend.
    assert_eq!(
        store.get("hits").await.unwrap().as_deref(),
        Some(&b"42"[..])
    );

    store.set("preset", b"5000").await.unwrap();
    assert_eq!(store.increment("preset", 1).await.unwrap(), 5001);
    assert_eq!(store.increment("fresh", 7).await.unwrap(), 7);
}

async fn increment_refuses_non_counters_and_overflow(h: &Harness) {
    let store = h.backend.open("bad-counters");
    for value in [
        &b"abc"[..],
        b"",
        b"-5",
        b"+5",
        b"007",
        b" 5",
        b"1.5",
        b"\xff",
    ] {
        store.set("c", value).await.unwrap();
        let result = store.increment("c", 1).await;
        assert!(
            is_invalid(result.clone()),
            "{:?} gave {result:?}",
            String::from_utf8_lossy(value)
        );
        assert_eq!(
            store.get("c").await.unwrap().as_deref(),
            Some(value),
            "a refused increment changed the value"
        );
    }

    let max = h.counter_max;
    store
        .set("near-max", (max - 1).to_string().as_bytes())
        .await
        .unwrap();
    assert_eq!(store.increment("near-max", 1).await.unwrap(), max);
    assert!(is_invalid(store.increment("near-max", 1).await));
    assert_eq!(
        store.get("near-max").await.unwrap(),
        Some(max.to_string().into_bytes())
    );

    // One step to the largest counter from nothing; one past what the backend can add.
    assert_eq!(store.increment("big-step", max).await.unwrap(), max);
    if max < u64::MAX {
        assert!(is_invalid(store.increment("too-big-step", max + 1).await));
        assert!(!store.exists("too-big-step").await.unwrap());
    }
}

async fn compare_and_swap_semantics(h: &Harness) {
    let store = h.backend.open("cas");
    // Absent expected, key absent: swaps (create-if-absent).
    assert!(store.compare_and_swap("k", None, b"v1").await.unwrap());
    assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"v1"[..]));
    // Absent expected, key present: no swap.
    assert!(!store.compare_and_swap("k", None, b"v2").await.unwrap());
    // Wrong current value: no swap, value kept.
    assert!(
        !store
            .compare_and_swap("k", Some(b"nope"), b"v2")
            .await
            .unwrap()
    );
    assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"v1"[..]));
    // Right current value: swaps.
    assert!(
        store
            .compare_and_swap("k", Some(b"v1"), b"v2")
            .await
            .unwrap()
    );
    assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"v2"[..]));
    // Expecting a value on a missing key: no swap, key stays absent.
    assert!(
        !store
            .compare_and_swap("missing", Some(b"v"), b"x")
            .await
            .unwrap()
    );
    assert!(!store.exists("missing").await.unwrap());
    // An empty value is present, and differs from absent.
    store.set("empty", b"").await.unwrap();
    assert!(!store.compare_and_swap("empty", None, b"x").await.unwrap());
    assert!(
        store
            .compare_and_swap("empty", Some(b""), b"\x00binary\xff")
            .await
            .unwrap()
    );
    assert_eq!(
        store.get("empty").await.unwrap().as_deref(),
        Some(&b"\x00binary\xff"[..])
    );
}

async fn batch_operations(h: &Harness) {
    let store = h.backend.open("batch");
    let entries: Vec<(String, Vec<u8>)> = (0..10)
        .map(|i| (format!("k{i}"), format!("v{i}").into_bytes()))
        .collect();
    store.set_many(&entries).await.unwrap();

    let wanted: Vec<String> = ["k3", "missing", "k0", "k9"].map(String::from).to_vec();
    let values = store.get_many(&wanted).await.unwrap();
    assert_eq!(
        values,
        vec![
            Some(b"v3".to_vec()),
            None,
            Some(b"v0".to_vec()),
            Some(b"v9".to_vec())
        ]
    );

    let doomed: Vec<String> = ["k0", "k1", "never-there"].map(String::from).to_vec();
    store.delete_many(&doomed).await.unwrap();
    assert!(!store.exists("k0").await.unwrap());
    assert!(!store.exists("k1").await.unwrap());
    assert!(store.exists("k2").await.unwrap());

    // Empty batches are fine and do nothing.
    assert_eq!(
        store.get_many(&[]).await.unwrap(),
        Vec::<Option<Vec<u8>>>::new()
    );
    store.set_many(&[]).await.unwrap();
    store.delete_many(&[]).await.unwrap();
    assert_eq!(list_all(&*store).await.len(), 8);
}

/// 50 tasks each add 1 a hundred times: any lost update shows as a total under 5000.
async fn concurrent_increments_are_atomic(h: &Harness) {
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = h.backend.open("race");
            tokio::spawn(async move {
                for _ in 0..100 {
                    store.increment("counter", 1).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        h.backend
            .open("race")
            .get("counter")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"5000"[..])
    );
}

// ---- Embedded only ----

#[test]
fn embedded_second_opener_gets_a_clear_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.redb");
    let first = EmbeddedBackend::open(&path).unwrap();
    let error = EmbeddedBackend::open(&path).unwrap_err();
    let StoreError::Unavailable(message) = &error else {
        panic!("{error:?}")
    };
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("another process"), "{message}");

    // Once the first is gone, the file opens again.
    drop(first);
    EmbeddedBackend::open(&path).unwrap();
}

#[tokio::test]
async fn embedded_data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.redb");
    {
        let backend = EmbeddedBackend::open(&path).unwrap();
        backend.open("ns").set("k", b"kept").await.unwrap();
        backend.open("ns").increment("n", 3).await.unwrap();
    }
    let backend = EmbeddedBackend::open(&path).unwrap();
    assert_eq!(
        backend.open("ns").get("k").await.unwrap().as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(backend.open("ns").increment("n", 1).await.unwrap(), 4);
}

#[tokio::test]
async fn embedded_cursors_resume_after_the_last_key() {
    let h = embedded();
    let store = h.backend.open("resume");
    let all: Vec<String> = (0..LIST_PAGE_KEYS + 10)
        .map(|i| format!("k{i:05}"))
        .collect();
    let entries: Vec<(String, Vec<u8>)> = all.iter().map(|k| (k.clone(), Vec::new())).collect();
    store.set_many(&entries).await.unwrap();

    let first = store.list_keys(None).await.unwrap();
    assert_eq!(first.keys, all[..LIST_PAGE_KEYS]);
    // Deleting keys already listed must not make the next page skip any.
    let listed: Vec<String> = first.keys[..100].to_vec();
    store.delete_many(&listed).await.unwrap();
    let second = store.list_keys(first.cursor).await.unwrap();
    assert_eq!(second.keys, all[LIST_PAGE_KEYS..]);
    assert_eq!(second.cursor, None);

    // A cursor the backend does not remember (here a bare offset, as after a restart) is an
    // offset from the start of the namespace, never an error.
    let by_offset = store.list_keys(Some(5)).await.unwrap();
    assert_eq!(by_offset.keys[0], all[105]);
    // Another namespace's cursor is not a position here.
    let elsewhere = h
        .backend
        .open("other")
        .list_keys(first.cursor)
        .await
        .unwrap();
    assert!(elsewhere.keys.is_empty());
}

/// Not a test: the writer that `embedded_kill_9_keeps_acknowledged_writes` runs in a child
/// process (this same test binary) and kills. It prints each write after it was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "helper process for embedded_kill_9_keeps_acknowledged_writes"]
async fn durability_child_writer() {
    let Some(path) = std::env::var_os("SKIFF_STORE_DURABILITY_DB") else {
        return;
    };
    let backend = EmbeddedBackend::open(std::path::Path::new(&path)).unwrap();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = backend.open("durable");
            tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("w{w}-{i}");
                    let value = format!("value of {key} {}", "x".repeat(i % 200));
                    store.set(&key, value.as_bytes()).await.unwrap();
                    println!("ACK {key} {value}");
                    let n = store.increment("acks", 1).await.unwrap();
                    println!("COUNT {n}");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
}

#[tokio::test]
async fn embedded_kill_9_keeps_acknowledged_writes() {
    use std::io::BufRead;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.redb");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "durability_child_writer",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SKIFF_STORE_DURABILITY_DB", &path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());

    let mut acked = Vec::new();
    let mut max_count = 0u64;
    let mut killed = false;
    let mut line = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        // A line cut short by the kill was never fully acknowledged.
        let Some(line) = line.strip_suffix('\n') else {
            break;
        };
        // The harness may print its own text before the first line of ours.
        if let Some((_, rest)) = line.split_once("ACK ") {
            let (key, value) = rest.split_once(' ').unwrap();
            acked.push((key.to_owned(), value.to_owned()));
            if acked.len() == 1 {
                // While the writer process holds the file, this process cannot open it.
                let error = EmbeddedBackend::open(&path).unwrap_err();
                let StoreError::Unavailable(message) = &error else {
                    panic!("{error:?}")
                };
                assert!(message.contains("another process"), "{message}");
            }
        } else if let Some((_, n)) = line.split_once("COUNT ") {
            max_count = max_count.max(n.parse().unwrap());
        }
        // Kill mid-load, while all eight writers are busy; keep reading what it printed.
        if !killed && (acked.len() >= 400 || std::time::Instant::now() > deadline) {
            child.kill().unwrap();
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    assert!(
        killed,
        "the writer exited by itself ({status}) after {} writes",
        acked.len()
    );
    assert!(
        acked.len() >= 400,
        "only {} writes acknowledged before the deadline",
        acked.len()
    );

    let backend = EmbeddedBackend::open(&path).unwrap();
    let store = backend.open("durable");
    for (key, value) in &acked {
        let stored = store.get(key).await.unwrap();
        assert_eq!(
            stored.as_deref(),
            Some(value.as_bytes()),
            "acknowledged {key} lost or wrong after kill -9"
        );
    }
    let count: u64 = String::from_utf8(store.get("acks").await.unwrap().unwrap())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        count >= max_count,
        "counter {count} below the acknowledged {max_count}"
    );
}

// ---- Redis only ----

/// Two hosts (two backends, two connections) share one store, and split the increments.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_two_hosts_share_a_store() {
    let server = RedisServer::start();
    let host_a = RedisBackend::connect(&server.url()).unwrap();
    let host_b = RedisBackend::connect(&server.url()).unwrap();

    host_a
        .open("shop/default")
        .set("greeting", b"hi")
        .await
        .unwrap();
    assert_eq!(
        host_b
            .open("shop/default")
            .get("greeting")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"hi"[..])
    );

    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = if i % 2 == 0 {
                host_a.open("shop/default")
            } else {
                host_b.open("shop/default")
            };
            tokio::spawn(async move {
                for _ in 0..100 {
                    store.increment("visits", 1).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    for host in [&host_a, &host_b] {
        assert_eq!(
            host.open("shop/default")
                .get("visits")
                .await
                .unwrap()
                .as_deref(),
            Some(&b"5000"[..])
        );
    }
}

/// Redis goes away and comes back: operations fail with `Unavailable` (and do not hang) while it
/// is down, then work again through the same backend, with no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_then_back_reconnects_by_itself() {
    let mut server = RedisServer::start();
    let backend = RedisBackend::connect(&server.url()).unwrap();
    let store = backend.open("ns");
    store.set("k", b"before").await.unwrap();

    server.stop();
    for _ in 0..3 {
        let result = tokio::time::timeout(Duration::from_secs(15), store.get("k"))
            .await
            .expect("an operation hung while Redis was down");
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
    }
    let result = tokio::time::timeout(Duration::from_secs(15), store.increment("n", 1))
        .await
        .expect("an operation hung while Redis was down");
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );

    server.restart();
    // The server restarted empty (no persistence): writes must land in the new one.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        match store.set("k", b"after").await {
            Ok(()) => break,
            Err(StoreError::Unavailable(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the backend did not come back with Redis: {e}"),
        }
    }
    assert_eq!(
        store.get("k").await.unwrap().as_deref(),
        Some(&b"after"[..])
    );
    assert_eq!(store.increment("n", 1).await.unwrap(), 1);
}

/// A Redis that stops answering (frozen with SIGSTOP) costs a request its timeout, not forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_that_hangs_times_out() {
    let server = RedisServer::start();
    let backend = RedisBackend::connect(&server.url())
        .unwrap()
        .with_timeout(Duration::from_millis(500));
    let store = backend.open("ns");
    store.set("k", b"v").await.unwrap();

    server.pause();
    let result = tokio::time::timeout(Duration::from_secs(10), store.get("k"))
        .await
        .expect("an operation hung on a frozen Redis");
    let Err(StoreError::Unavailable(message)) = &result else {
        panic!("{result:?}")
    };
    assert!(
        message.contains("did not answer") || message.contains("timed out"),
        "{message}"
    );

    server.resume();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.get("k").await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery after Redis resumed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
}

/// With a password in the URL: the right one works; a wrong one fails without showing it.
#[tokio::test]
async fn redis_password_never_appears_in_errors() {
    let server = RedisServer::start_with(&["--requirepass", "right-horse-battery"]);
    let port = server.port();

    let good =
        RedisBackend::connect(&format!("redis://:right-horse-battery@127.0.0.1:{port}/0")).unwrap();
    good.open("ns").set("k", b"v").await.unwrap();

    let bad = RedisBackend::connect(&format!(
        "redis://default:wrong-staple-secret@127.0.0.1:{port}/0"
    ))
    .unwrap();
    let error = bad.open("ns").get("k").await.unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    let shown = format!("{error} {error:?} {bad:?}");
    assert!(!shown.contains("wrong-staple-secret"), "{shown}");
    assert!(shown.contains(&format!("127.0.0.1:{port}")), "{shown}");
}
