//! Per-operation latency of the key-value backends: `get`, `set` and `increment` on the embedded
//! backend (a redb file in a temporary folder) and on Redis (a `redis-server` this program starts
//! on a free loopback port), through the same `Store` API the runtime uses. Run it with
//! `bench/kv/run.sh`.
//!
//! Each backend's rows are set against a baseline measured in the same run, on the same machine:
//! for the embedded backend one 4 KiB append to a log file plus `fdatasync` in the same folder
//! (the floor of a durable write), for Redis one `PING` round trip (the floor of any Redis
//! call). The "x base" column is the operation's median over the baseline's median.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

#[path = "../tests/common/mod.rs"]
mod common;

use std::future::Future;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use skiff_store::{Backend, Store};
use skiff_store::{EmbeddedBackend, RedisBackend};

/// Sequential calls per measured operation (after as many warm-up calls as a tenth of this).
const ROUNDS: usize = 2000;
/// Writers in the concurrent rows, and calls each makes.
const WRITERS: usize = 64;
const WRITES_EACH: usize = 50;

struct Row {
    backend: &'static str,
    op: String,
    stats: Stats,
    baseline: Option<Duration>,
}

#[derive(Clone, Copy)]
struct Stats {
    median: Duration,
    p99: Duration,
    per_second: f64,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let embedded = EmbeddedBackend::open(&dir.path().join("kv.redb")).unwrap();
        let file = Arc::new(std::fs::File::create(dir.path().join("baseline")).unwrap());
        let base = measure(ROUNDS / 4, |i| {
            let file = file.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    // Appending, as a log does: the file grows, so the sync must also make its
                    // new size durable, as a database commit must. (Rewriting one block in place
                    // can be far cheaper on some disks, and no database commits that way.)
                    let record = [(i % 251) as u8; 4096];
                    let end = file.metadata().unwrap().len();
                    file.write_all_at(&record, end).unwrap();
                    file.sync_data().unwrap();
                })
                .await
                .unwrap();
            }
        })
        .await;
        rows.push(Row {
            backend: "embedded",
            op: "baseline: 4 KiB log append + fdatasync".into(),
            stats: base,
            baseline: None,
        });
        backend_rows(&mut rows, "embedded", &embedded, base.median).await;

        let server = common::RedisServer::start();
        let client = ::redis::Client::open(server.url()).unwrap();
        let connection = client.get_multiplexed_async_connection().await.unwrap();
        let base = measure(ROUNDS, |_| {
            let mut connection = connection.clone();
            async move {
                let _: String = ::redis::cmd("PING")
                    .query_async(&mut connection)
                    .await
                    .unwrap();
            }
        })
        .await;
        rows.push(Row {
            backend: "redis",
            op: "baseline: PING round trip".into(),
            stats: base,
            baseline: None,
        });
        let redis = RedisBackend::connect(&server.url()).unwrap();
        backend_rows(&mut rows, "redis", &redis, base.median).await;
    });
    print_table(&rows);
}

async fn backend_rows(
    rows: &mut Vec<Row>,
    name: &'static str,
    backend: &dyn Backend,
    baseline: Duration,
) {
    let store = backend.open("bench");
    let value = vec![0x5a_u8; 100];
    store.set("existing", &value).await.unwrap();

    let mut push = |op: &str, stats| {
        rows.push(Row {
            backend: name,
            op: op.into(),
            stats,
            baseline: Some(baseline),
        })
    };
    let s = store.clone();
    push(
        "get (100 B value)",
        measure(ROUNDS, |_| {
            let s = s.clone();
            async move {
                s.get("existing").await.unwrap().unwrap();
            }
        })
        .await,
    );
    let s = store.clone();
    let v = value.clone();
    push(
        "set (100 B value)",
        measure(ROUNDS / 4, |i| {
            let (s, v) = (s.clone(), v.clone());
            async move { s.set(&format!("key-{i}"), &v).await.unwrap() }
        })
        .await,
    );
    let s = store.clone();
    push(
        "increment",
        measure(ROUNDS / 4, |_| {
            let s = s.clone();
            async move {
                s.increment("counter", 1).await.unwrap();
            }
        })
        .await,
    );
    push(
        &format!("set, {WRITERS} writers at once"),
        concurrent_sets(&store, &value).await,
    );
}

/// Times `rounds` sequential calls of `op(i)`.
async fn measure<F, Fut>(rounds: usize, mut op: F) -> Stats
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    for i in 0..rounds / 10 {
        op(usize::MAX - i).await;
    }
    let started = Instant::now();
    let mut times = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let start = Instant::now();
        op(i).await;
        times.push(start.elapsed());
    }
    stats(times, started.elapsed())
}

/// Many writers at once: each call's latency, and the calls per second all together.
async fn concurrent_sets(store: &Arc<dyn Store>, value: &[u8]) -> Stats {
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            let value = value.to_vec();
            tokio::spawn(async move {
                let mut times = Vec::with_capacity(WRITES_EACH);
                for i in 0..WRITES_EACH {
                    let start = Instant::now();
                    store.set(&format!("w{w}-{i}"), &value).await.unwrap();
                    times.push(start.elapsed());
                }
                times
            })
        })
        .collect();
    let mut times = Vec::new();
    for writer in writers {
        times.extend(writer.await.unwrap());
    }
    stats(times, started.elapsed())
}

fn stats(mut times: Vec<Duration>, wall: Duration) -> Stats {
    let calls = times.len();
    times.sort();
    Stats {
        median: times[calls / 2],
        p99: times[(calls * 99 / 100).min(calls - 1)],
        per_second: calls as f64 / wall.as_secs_f64(),
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "| backend  | operation                              |    median |       p99 |    ops/s | x base |"
    );
    println!(
        "|----------|----------------------------------------|-----------|-----------|----------|--------|"
    );
    for row in rows {
        let ratio = row.baseline.map_or("-".to_owned(), |base| {
            format!("{:.2}", row.stats.median.as_secs_f64() / base.as_secs_f64())
        });
        println!(
            "| {:<8} | {:<38} | {:>9} | {:>9} | {:>8.0} | {:>6} |",
            row.backend,
            row.op,
            micros(row.stats.median),
            micros(row.stats.p99),
            row.stats.per_second,
            ratio
        );
    }
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}
