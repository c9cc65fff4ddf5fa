//! `skiff server --cluster`: several real hosts sharing one real `redis-server`, driven with
//! the `skiff` CLI through any of them, each answering on its own data plane.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::host::{ADMIN_TOKEN, Host, http_app};
use common::redis::Redis;
use common::registry::Registry;
use common::{client, fresh_data_dir, guest, signal};

/// How long a change may take to reach every host in these tests: far above what it takes
/// (announcements arrive in milliseconds), for a loaded machine.
const CONVERGENCE_BOUND: Duration = Duration::from_secs(20);

/// Starts host `host-N` of the cluster in `redis`, with a data folder of its own.
fn cluster_host(redis: &Redis, n: usize) -> Host {
    cluster_host_in(redis, n, fresh_data_dir().join("server"), &[])
}

/// Starts host `host-N` of the cluster in `redis`, with data folder `data_dir` and `extra`
/// flags.
fn cluster_host_in(redis: &Redis, n: usize, data_dir: std::path::PathBuf, extra: &[&str]) -> Host {
    let mut args = vec!["--cluster-resync", "1s", "--usage-flush", "200ms"];
    args.extend_from_slice(extra);
    Host::start_in_cluster_at(&redis.url(), n, data_dir, &args)
}

/// Starts `count` hosts of the cluster in `redis` and waits until each is ready.
async fn ready_cluster(redis: &Redis, count: usize) -> Vec<Host> {
    let hosts: Vec<Host> = (1..=count).map(|n| cluster_host(redis, n)).collect();
    for host in &hosts {
        eventually("the host is ready", || async { ready(host).await == 200 }).await;
    }
    hosts
}

async fn ready(host: &Host) -> u16 {
    match client().get(format!("{}/readyz", host.api)).send().await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

/// Waits until `check` holds, failing with `what` once [`CONVERGENCE_BOUND`] has passed.
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    common::eventually(CONVERGENCE_BOUND, what, check).await;
}

/// Waits until `apps inspect` of `app` (through `host`, as `token`) lists `count` hosts.
async fn hosts_listed(host: &Host, token: &str, app: &str, count: usize) {
    let path = format!("/v1/apps/{app}");
    eventually(&format!("{count} hosts are listed for {app}"), || async {
        let (_, info) = host.api(reqwest::Method::GET, &path, Some(token)).await;
        info["cluster"]["hosts"]
            .as_array()
            .is_some_and(|hosts| hosts.len() == count)
    })
    .await;
}

/// Collects the lines `stdout` prints, in the background.
fn follow_lines(stdout: std::process::ChildStdout) -> Arc<std::sync::Mutex<Vec<String>>> {
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let collected = lines.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            collected.lock().unwrap().push(line);
        }
    });
    lines
}

/// Waits until every host answers `expected` for `path` of `app`.
async fn all_answer(hosts: &[Host], app: &str, path: &str, expected: (u16, &str)) {
    for (i, host) in hosts.iter().enumerate() {
        eventually(
            &format!("host {} answers {expected:?} for {app}{path}", i + 1),
            || async {
                let (status, body) = host.get(app, path).await;
                (status, body.as_str()) == expected
            },
        )
        .await;
    }
}

#[tokio::test]
async fn a_change_through_any_host_is_served_by_every_host() {
    let redis = Redis::start();
    let hosts = ready_cluster(&redis, 3).await;

    // A tenant created through one host exists on all: its token works everywhere.
    let acme = hosts[0].tenant("acme", &[]);
    for host in &hosts[1..] {
        let who = host.cli_ok(&acme, &["whoami"]);
        assert!(who.contains("acme"), "{who}");
    }
    // A name is one tenant's, whichever host is asked.
    let out = hosts[2].cli(ADMIN_TOKEN, &["tenants", "create", "acme"]);
    assert!(!out.status.success());

    let v1 = http_app(1);
    let v2 = http_app(2);
    hosts[0].deploy_ok(&acme, v1.path(), "hello");
    all_answer(&hosts, "hello", "/env/VERSION", (200, "1")).await;
    hosts[1].deploy_ok(&acme, v2.path(), "hello");
    all_answer(&hosts, "hello", "/env/VERSION", (200, "2")).await;
    hosts[2].cli_ok(&acme, &["apps", "rollback", "hello"]);
    all_answer(&hosts, "hello", "/env/VERSION", (200, "1")).await;
    // Each host reports what it serves: `apps inspect` shows the rollback everywhere.
    eventually("apps inspect shows every host current", || async {
        let out = hosts[1].cli_ok(&acme, &["apps", "inspect", "hello"]);
        out.contains("Hosts (3 of 3 serve revision")
            && ["host-1", "host-2", "host-3"]
                .iter()
                .all(|h| out.contains(h))
    })
    .await;

    // Another tenant can neither take the name nor see the app, through any host.
    let globex = hosts[1].tenant("globex", &[]);
    let out = hosts[2].deploy(&globex, v1.path(), "hello");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("taken"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for host in &hosts {
        let out = host.cli(&globex, &["apps", "inspect", "hello"]);
        assert!(!out.status.success(), "globex sees acme's app");
    }
    hosts[2].deploy_ok(&globex, v2.path(), "other");
    all_answer(&hosts, "other", "/env/VERSION", (200, "2")).await;
    all_answer(&hosts, "hello", "/env/VERSION", (200, "1")).await;

    // `skiff logs` through any host shows the lines of every host, each naming its host;
    // a follower through host 1 sees what a request on host 3 logs.
    for host in &hosts {
        assert_eq!(host.get("hello", "/log").await.0, 200);
    }
    eventually("skiff logs shows every host's lines", || async {
        let out = hosts[0].cli_ok(&acme, &["logs", "hello"]);
        ["host-1", "host-2", "host-3"]
            .iter()
            .all(|h| out.contains(&format!("{h} web")) && out.contains("hello stdout"))
    })
    .await;
    let mut follower = common::skiff()
        .args(["logs", "--follow", "hello"])
        .env("SKIFF_SERVER", &hosts[0].api)
        .env("SKIFF_TOKEN", &acme)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let followed = follow_lines(follower.stdout.take().unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hosts[2].get("hello", "/log").await.0, 200);
    eventually("the follower sees host 3's new line", || async {
        let lines = followed.lock().unwrap().clone();
        lines.iter().filter(|l| l.contains("host-3 web")).count() >= 4
    })
    .await;
    let _ = follower.kill();
    let _ = follower.wait();
    // Another tenant reads no line of it through any host.
    assert!(!hosts[1].cli(&globex, &["logs", "hello"]).status.success());

    // A host that joins later (an empty data folder) serves everything once it is ready.
    let late = cluster_host(&redis, 4);
    eventually("the late host is ready", || async {
        ready(&late).await == 200
    })
    .await;
    assert_eq!(late.get("hello", "/env/VERSION").await, (200, "1".into()));
    assert_eq!(late.get("other", "/env/VERSION").await, (200, "2".into()));

    // A host that stops leaves the list at once (not when its report expires).
    hosts_listed(&hosts[0], &globex, "other", 4).await;
    let pid = late.server.pid().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let mut late = late;
    assert!(late.server.child().wait().unwrap().success());
    let (_, info) = hosts[0]
        .api(reqwest::Method::GET, "/v1/apps/other", Some(&globex))
        .await;
    let listed: Vec<&str> = info["cluster"]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["host-1", "host-2", "host-3"], "{info}");
    let late = cluster_host(&redis, 4);
    eventually("the late host is ready again", || async {
        ready(&late).await == 200
    })
    .await;

    // Delete through one host: gone from all.
    hosts[0].cli_ok(&acme, &["apps", "delete", "hello"]);
    let mut all = hosts;
    all.push(late);
    for (i, host) in all.iter().enumerate() {
        eventually(
            &format!("host {} no longer serves hello", i + 1),
            || async { host.get("hello", "/").await.0 == 404 },
        )
        .await;
    }
    // A revoked token stops working on every host.
    all[3].cli_ok(ADMIN_TOKEN, &["tenants", "revoke-token", "globex"]);
    for host in &all {
        eventually("the revoked token is refused", || async {
            !host.cli(&globex, &["whoami"]).status.success()
        })
        .await;
    }
    assert_eq!(all[0].get("other", "/env/VERSION").await, (200, "2".into()));
}

/// The state guest as app folder, its `default` store granted.
fn counter_app() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(guest("state-guest"), dir.path().join("state.wasm")).unwrap();
    std::fs::write(
        dir.path().join("skiff.toml"),
        "[app]\nname = \"counter\"\n\n[component.c]\nsource = \"state.wasm\"\nroute = \"/...\"\n\
         key_value_stores = [\"default\"]\n",
    )
    .unwrap();
    dir
}

#[tokio::test]
async fn key_value_stores_are_shared_by_every_host_and_counters_stay_exact() {
    let redis = Redis::start();
    let hosts = ready_cluster(&redis, 3).await;
    let acme = hosts[0].tenant("acme", &[]);
    let app = counter_app();
    hosts[0].deploy_ok(&acme, app.path(), "counter");
    all_answer(
        &hosts,
        "counter",
        "/kv/get?store=default&key=hits",
        (404, "missing"),
    )
    .await;

    // 3 hosts × 32 concurrent increments of one key.
    let mut requests = Vec::new();
    for host in &hosts {
        for _ in 0..32 {
            let url = host.server.url("/kv/incr?store=default&key=hits");
            requests.push(tokio::spawn(async move {
                let response = client()
                    .get(url)
                    .header("host", "counter.localhost")
                    .send()
                    .await
                    .unwrap();
                response.status().as_u16()
            }));
        }
    }
    for request in requests {
        assert_eq!(request.await.unwrap(), 200);
    }
    all_answer(
        &hosts,
        "counter",
        "/kv/get?store=default&key=hits",
        (200, "96"),
    )
    .await;

    // Each host counts what it served (its metrics carry its name); the usage any host reports
    // is the sum over all of them.
    let mut served = 0;
    for (i, host) in hosts.iter().enumerate() {
        let metrics = host.scrape(ADMIN_TOKEN, "/metrics").await;
        let line = metrics
            .lines()
            .find(|line| {
                line.starts_with("skiff_usage_requests_total{")
                    && line.contains("app=\"counter\"")
                    && line.contains(&format!("host=\"host-{}\"", i + 1))
            })
            .unwrap_or_else(|| panic!("no request counter of host-{}: {metrics}", i + 1));
        let count: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(count >= 32, "{line}");
        served += count;
    }
    eventually("the cluster's usage sums every host's", || async {
        let (status, report) = hosts[2]
            .api(
                reqwest::Method::GET,
                "/v1/usage?tenant=acme",
                Some(ADMIN_TOKEN),
            )
            .await;
        assert_eq!(status, 200, "{report}");
        let rows = report["apps"].as_array().unwrap();
        let counted = rows
            .iter()
            .find(|row| row["app"] == "counter")
            .map_or(0, |row| row["requests"].as_u64().unwrap());
        assert!(
            counted <= served,
            "usage counted {counted} of {served} requests"
        );
        counted == served
    })
    .await;

    // The name deleted by one tenant and taken by another comes with none of the first one's
    // data.
    hosts[1].cli_ok(&acme, &["apps", "delete", "counter"]);
    let globex = hosts[2].tenant("globex", &[]);
    eventually("the name is free", || async {
        hosts[2]
            .deploy(&globex, app.path(), "counter")
            .status
            .success()
    })
    .await;
    all_answer(
        &hosts,
        "counter",
        "/kv/get?store=default&key=hits",
        (404, "missing"),
    )
    .await;
}

#[tokio::test]
async fn with_redis_down_hosts_serve_refuse_changes_with_503_and_converge_after() {
    let mut redis = Redis::start_persistent();
    let hosts = ready_cluster(&redis, 3).await;
    let acme = hosts[0].tenant("acme", &[]);
    hosts[0].deploy_ok(&acme, http_app(1).path(), "hello");
    all_answer(&hosts, "hello", "/env/VERSION", (200, "1")).await;

    // Load on every host for the whole outage: not one request may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for host in &hosts {
        let url = host.server.url("/env/VERSION");
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let response = client()
                    .get(&url)
                    .header("host", "hello.localhost")
                    .send()
                    .await;
                match response {
                    Ok(response) if response.status() == 200 => ok += 1,
                    Ok(response) => failed.push(response.status().to_string()),
                    Err(err) => failed.push(err.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, failed)
        }));
    }

    redis.stop();
    let outage = Instant::now();
    // Changes are refused, with the code scripts look for, through every host.
    for host in &hosts {
        let out = host.deploy(&acme, http_app(2).path(), "hello");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains("cannot reach the cluster"), "{err}");
        let (status, body) = host
            .api(
                reqwest::Method::POST,
                "/v1/apps/hello/rollback",
                Some(&acme),
            )
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (503, Some("unavailable"))
        );
    }
    let out = hosts[1].cli(ADMIN_TOKEN, &["tenants", "create", "globex"]);
    assert!(!out.status.success());
    // Still ready: the hosts serve what they have.
    for host in &hosts {
        assert_eq!(ready(host).await, 200);
    }
    let left = Duration::from_secs(10).saturating_sub(outage.elapsed());
    tokio::time::sleep(left).await;
    redis.restart();

    // Once Redis is back, a change made through one host reaches all again.
    eventually("a deploy works again", || async {
        hosts[1]
            .deploy(&acme, http_app(2).path(), "hello")
            .status
            .success()
    })
    .await;
    all_answer(&hosts, "hello", "/env/VERSION", (200, "2")).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        let (ok, failed) = task.await.unwrap();
        assert!(
            failed.is_empty(),
            "{} failed requests: {failed:?}",
            failed.len()
        );
        assert!(ok > 10, "only {ok} requests were made");
    }
}

/// A free port on loopback address `ip`.
fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where one host of the HAProxy test listens: an address of its own (127.0.0.N).
#[derive(Clone)]
struct Placement {
    id: String,
    ip: String,
    data: u16,
    api: u16,
    data_dir: std::path::PathBuf,
}

impl Placement {
    fn new(n: usize) -> Placement {
        let ip = format!("127.0.0.{}", n + 1);
        Placement {
            id: format!("host-{n}"),
            data: free_port(&ip),
            api: free_port(&ip),
            ip,
            data_dir: fresh_data_dir().join("server"),
        }
    }

    fn start(&self, redis: &Redis) -> Host {
        let (url, listen, api) = (
            redis.url(),
            format!("{}:{}", self.ip, self.data),
            format!("{}:{}", self.ip, self.api),
        );
        let args = [
            "--cluster",
            &url,
            "--host-id",
            &self.id,
            "--cluster-resync",
            "1s",
            "--listen",
            &listen,
            "--api-listen",
            &api,
            // Long enough for HAProxy's checks (every 200 ms, 2 failures) to see it go.
            "--drain-delay",
            "1s",
        ];
        Host::start_in(self.data_dir.clone(), &args)
    }
}

/// HAProxy in front of the hosts, as a Kubernetes Service and ingress would be: it checks
/// each host's `/readyz` and retries a request that found a host gone on another.
struct Haproxy {
    child: std::process::Child,
    port: u16,
    _config: tempfile::TempDir,
}

impl Haproxy {
    fn start(hosts: &[Placement]) -> Haproxy {
        let port = free_port("127.0.0.1");
        let mut config = format!(
            "global\n  maxconn 4096\n\
             defaults\n  mode http\n  timeout connect 1s\n  timeout client 10s\n  \
             timeout server 10s\n  retries 3\n  option redispatch 1\n  \
             retry-on conn-failure empty-response response-timeout\n\
             frontend apps\n  bind 127.0.0.1:{port}\n  default_backend hosts\n\
             backend hosts\n  balance roundrobin\n  option httpchk GET /readyz\n  \
             default-server inter 200ms fall 2 rise 2\n"
        );
        for host in hosts {
            config.push_str(&format!(
                "  server {} {}:{} check port {}\n",
                host.id, host.ip, host.data, host.api
            ));
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("haproxy.cfg");
        std::fs::write(&file, config).unwrap();
        let child = std::process::Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("haproxy is needed for this test: apt-get install -y haproxy");
        common::wait_for_port(port, "haproxy");
        Haproxy {
            child,
            port,
            _config: dir,
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Clients sending requests through HAProxy until stopped; each returns what it saw.
fn load_through(
    proxy: &Haproxy,
    app: &str,
    clients: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(u32, Vec<String>)>> {
    (0..clients)
        .map(|_| {
            let url = format!("http://127.0.0.1:{}/env/VERSION", proxy.port);
            let (app, stop) = (format!("{app}.localhost"), stop.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match client().get(&url).header("host", &app).send().await {
                        Ok(response) if response.status() == 200 => ok += 1,
                        Ok(response) => failed.push(response.status().to_string()),
                        Err(err) => failed.push(err.to_string()),
                    }
                }
                (ok, failed)
            })
        })
        .collect()
}

/// Without HAProxy's retries this test sees hundreds of 503s (tried): the retries and the
/// hosts' readiness are what make it pass.
#[tokio::test]
async fn behind_haproxy_a_host_killed_or_stopped_under_load_fails_no_request() {
    let redis = Redis::start();
    let places: Vec<Placement> = (1..=3).map(Placement::new).collect();
    let mut hosts: Vec<Host> = places.iter().map(|place| place.start(&redis)).collect();
    for host in &hosts {
        eventually("the host is ready", || async { ready(host).await == 200 }).await;
    }
    let proxy = Haproxy::start(&places);
    let acme = hosts[0].tenant("acme", &[]);
    hosts[0].deploy_ok(&acme, http_app(1).path(), "hello");
    all_answer(&hosts, "hello", "/env/VERSION", (200, "1")).await;

    let stop = Arc::new(AtomicBool::new(false));
    let load = load_through(&proxy, "hello", 8, &stop);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // kill -9 of one host: requests it had are retried elsewhere, and checks take it out.
    hosts[1].server.child().kill().unwrap();
    hosts[1].server.child().wait().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // It comes back (same addresses, same data folder) and catches up with a deploy made
    // while it was away.
    hosts[0].deploy_ok(&acme, http_app(2).path(), "hello");
    hosts[1] = places[1].start(&redis);
    all_answer(&hosts, "hello", "/env/VERSION", (200, "2")).await;

    // A graceful stop: not ready first, so HAProxy stops sending before the host stops.
    let pid = hosts[2].server.pid().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let exited = hosts[2].server.child().wait().unwrap();
    assert!(exited.success(), "{exited:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;

    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for task in load {
        let (n, errors) = task.await.unwrap();
        ok += n;
        failed.extend(errors);
    }
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        ok as usize + failed.len()
    );
    assert!(ok > 100, "only {ok} requests were made");
}

/// Runs `deploys` (host, token, folder, app name) at the same moment; returns whether each
/// succeeded, and its stderr.
fn deploy_together(deploys: &[(&Host, &str, &std::path::Path, &str)]) -> Vec<(bool, String)> {
    let barrier = std::sync::Barrier::new(deploys.len());
    std::thread::scope(|scope| {
        let handles: Vec<_> = deploys
            .iter()
            .map(|(host, token, folder, name)| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    let out = host.deploy(token, folder, name);
                    (
                        out.status.success(),
                        String::from_utf8_lossy(&out.stderr).into_owned(),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[tokio::test]
async fn racing_changes_through_different_hosts_never_both_win() {
    let redis = Redis::start();
    let hosts = ready_cluster(&redis, 2).await;
    let acme = hosts[0].tenant("acme", &[]);
    let globex = hosts[0].tenant("globex", &["--max-apps", "1"]);
    let (v1, v2) = (http_app(1), http_app(2));

    // Two versions of one app at once, through two hosts: both land, one after the other.
    let results = deploy_together(&[
        (&hosts[0], &acme, v1.path(), "race"),
        (&hosts[1], &acme, v2.path(), "race"),
    ]);
    assert!(results.iter().all(|(ok, _)| *ok), "{results:?}");
    let info = hosts[1].cli_ok(&acme, &["apps", "inspect", "race"]);
    assert!(info.contains("Versions"), "{info}");
    let (_, body) = hosts[0]
        .api(reqwest::Method::GET, "/v1/apps/race", Some(&acme))
        .await;
    let versions: Vec<u64> = body["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [2, 1], "{body}");
    let live = hosts[0].get("race", "/env/VERSION").await.1;
    all_answer(&hosts, "race", "/env/VERSION", (200, &live)).await;

    // One new name, two tenants, two hosts: exactly one gets it.
    let results = deploy_together(&[
        (&hosts[0], &acme, v1.path(), "contested"),
        (&hosts[1], &globex, v1.path(), "contested"),
    ]);
    assert_eq!(
        results.iter().filter(|(ok, _)| *ok).count(),
        1,
        "{results:?}"
    );
    let loser = results.iter().find(|(ok, _)| !ok).unwrap();
    assert!(loser.1.contains("taken"), "{loser:?}");

    // A tenant allowed one app deploys two new ones through two hosts: one is refused.
    let results = deploy_together(&[
        (&hosts[0], &globex, v1.path(), "first"),
        (&hosts[1], &globex, v2.path(), "second"),
    ]);
    let (won, lost): (Vec<_>, Vec<_>) = results.iter().partition(|(ok, _)| *ok);
    // globex may own `contested` already, in which case both are refused.
    assert!(won.len() <= 1, "{results:?}");
    assert!(
        lost.iter().all(|(_, err)| err.contains("max_apps")),
        "{results:?}"
    );
    let (_, list) = hosts[1]
        .api(reqwest::Method::GET, "/v1/apps", Some(&globex))
        .await;
    assert_eq!(list["apps"].as_array().unwrap().len(), 1, "{list}");

    // A tenant whose disk holds one app's versions (the http guest is 156 KB) deploys two
    // through two hosts: one is refused, whichever host checked last.
    let initech = hosts[0].tenant("initech", &["--max-disk", "250KiB"]);
    let results = deploy_together(&[
        (&hosts[0], &initech, v1.path(), "one"),
        (&hosts[1], &initech, v2.path(), "two"),
    ]);
    let (won, lost): (Vec<_>, Vec<_>) = results.iter().partition(|(ok, _)| *ok);
    assert_eq!(won.len(), 1, "{results:?}");
    assert!(lost[0].1.contains("max_disk_bytes"), "{results:?}");
}

#[tokio::test]
async fn a_redis_that_lost_its_data_stops_no_app() {
    // Without persistence: a restart comes back empty, as a misconfigured Redis would.
    let mut redis = Redis::start();
    let hosts = ready_cluster(&redis, 2).await;
    let acme = hosts[0].tenant("acme", &[]);
    hosts[0].deploy_ok(&acme, http_app(1).path(), "hello");
    all_answer(&hosts, "hello", "/env/VERSION", (200, "1")).await;

    redis.restart();
    for host in &hosts {
        eventually("the host says Redis lost its state", || async {
            host.server.logs().contains("has lost its state")
        })
        .await;
    }
    // Every resync since has found the same, and the apps and tenants stay.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for host in &hosts {
        assert_eq!(host.get("hello", "/env/VERSION").await, (200, "1".into()));
        assert!(host.cli_ok(&acme, &["whoami"]).contains("acme"));
    }
}

#[tokio::test]
async fn a_host_that_missed_announcements_catches_up_from_the_change_log() {
    let redis = Redis::start();
    let hosts = ready_cluster(&redis, 2).await;
    let acme = hosts[0].tenant("acme", &[]);
    hosts[0].deploy_ok(&acme, http_app(1).path(), "hello");
    all_answer(&hosts, "hello", "/env/VERSION", (200, "1")).await;
    // Reading everything starts with every tenant (HVALS); a catch-up reads the changed apps.
    let full_reads = redis.calls("hvals");
    let log_reads = redis.calls("xrange");

    // Host 2 is frozen and its subscription cut while two changes are made: their
    // announcements never reach it.
    let frozen = hosts[1].server.pid();
    signal(frozen, "STOP");
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    hosts[0].deploy_ok(&acme, http_app(2).path(), "hello");
    hosts[0].deploy_ok(&acme, http_app(3).path(), "other");
    signal(frozen, "CONT");
    all_answer(&hosts, "hello", "/env/VERSION", (200, "2")).await;
    all_answer(&hosts, "other", "/env/VERSION", (200, "3")).await;
    assert_eq!(
        redis.calls("hvals"),
        full_reads,
        "no host read everything to catch up"
    );
    assert!(redis.calls("xrange") > log_reads, "the change log was read");
    eventually("apps inspect shows both hosts current", || async {
        let out = hosts[0].cli_ok(&acme, &["apps", "inspect", "other"]);
        out.contains("Hosts (2 of 2 serve revision")
    })
    .await;

    // Once the log no longer reaches back to what host 2 applied, it reads everything, and
    // converges all the same.
    signal(frozen, "STOP");
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    hosts[0].deploy_ok(&acme, http_app(4).path(), "hello");
    hosts[0].cli_ok(&acme, &["apps", "delete", "other"]);
    redis.cli(&["XTRIM", "skiff:c:change-log", "MAXLEN", "0"]);
    signal(frozen, "CONT");
    all_answer(&hosts, "hello", "/env/VERSION", (200, "4")).await;
    eventually("the deleted app is gone from host 2", || async {
        hosts[1].get("other", "/env/VERSION").await.0 == 404
    })
    .await;
    assert!(redis.calls("hvals") > full_reads, "host 2 read everything");
    assert!(
        hosts[1]
            .server
            .logs()
            .contains("no longer reaches back to revision"),
        "{}",
        hosts[1].server.logs()
    );
}

#[tokio::test]
async fn a_tenant_deleted_with_its_apps_leaves_no_files_on_any_host() {
    let redis = Redis::start();
    let mut hosts = ready_cluster(&redis, 3).await;
    let acme = hosts[0].tenant("acme", &[]);
    let app = http_app(1);
    std::fs::create_dir(app.path().join("data")).unwrap();
    let manifest = app.path().join("skiff.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("files = [{ source = \"data\", destination = \"/data\", writable = true }]\n");
    std::fs::write(&manifest, text).unwrap();
    hosts[0].deploy_ok(&acme, app.path(), "hello");
    // Every host loads the app (its bundle unpacked there) and writes into its folder.
    for host in &hosts {
        eventually("the host serves hello", || async {
            host.get("hello", "/write?path=/data/mine").await.0 == 200
        })
        .await;
        assert!(host.data_dir.join("tenants/acme/apps/hello").is_dir());
    }

    // Host 3 is away while the tenant is deleted.
    let away = hosts.pop().unwrap();
    let away_data = away.data_dir.clone();
    drop(away);
    hosts[1].cli_ok(ADMIN_TOKEN, &["tenants", "delete", "acme", "--with-apps"]);
    // Its apps' writable folders go at once (their bundles a minute later, once requests
    // still running on them are surely done).
    for (i, host) in hosts.iter().enumerate() {
        eventually(
            &format!("host {} keeps no folder of acme", i + 1),
            || async {
                std::fs::read_dir(host.data_dir.join("tenants"))
                    .unwrap()
                    .next()
                    .is_none()
            },
        )
        .await;
    }

    // Back, it removes what was deleted meanwhile before it is ready: folders and bundles.
    hosts.push(cluster_host_in(&redis, 3, away_data, &[]));
    eventually("host 3 is ready again", || async {
        ready(&hosts[2]).await == 200
    })
    .await;
    for folder in ["tenants", "bundles"] {
        let left: Vec<_> = std::fs::read_dir(hosts[2].data_dir.join(folder))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "host 3 kept {left:?}");
    }

    // A new tenant of that name starts afresh, on every host.
    let acme = hosts[0].tenant("acme", &[]);
    for host in &hosts {
        assert_eq!(host.get("hello", "/").await.0, 404);
    }
    assert!(!hosts[0].cli_ok(&acme, &["apps", "list"]).contains("hello"));
    hosts[0].deploy_ok(&acme, http_app(2).path(), "hello");
    all_answer(&hosts, "hello", "/env/VERSION", (200, "2")).await;
}

#[tokio::test]
async fn with_bundles_in_a_registry_redis_holds_only_records() {
    let redis = Redis::start();
    let registry = Registry::plain();
    let repository = format!("{}/skiff/bundles", registry.addr);
    let extra = ["--cluster-bundles", repository.as_str()];
    let hosts: Vec<Host> = (1..=2)
        .map(|n| cluster_host_in(&redis, n, fresh_data_dir().join("server"), &extra))
        .collect();
    for host in &hosts {
        eventually("the host is ready", || async { ready(host).await == 200 }).await;
    }
    let acme = hosts[0].tenant("acme", &[]);
    // Host 2 has never seen the code: it pulls the bundle from the registry.
    hosts[0].deploy_ok(&acme, http_app(1).path(), "hello");
    all_answer(&hosts, "hello", "/env/VERSION", (200, "1")).await;
    assert_eq!(redis.cli(&["KEYS", "skiff:c:bundle:*"]).trim(), "");
    assert!(
        registry
            .log()
            .contains("GET /v2/skiff/bundles/manifests/hello-"),
        "{}",
        registry.log()
    );

    // Versions past the 5 kept for rollbacks leave the registry too.
    for version in 2..=8 {
        hosts[version % 2].deploy_ok(&acme, http_app(version as u32).path(), "hello");
    }
    all_answer(&hosts, "hello", "/env/VERSION", (200, "8")).await;
    let tags_url = format!("http://{}/v2/skiff/bundles/tags/list", registry.addr);
    eventually("the registry holds only the versions kept", || async {
        let tags: serde_json::Value = client()
            .get(&tags_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tags["tags"].as_array().map_or(0, Vec::len) == 6
    })
    .await;
    hosts[1].cli_ok(&acme, &["apps", "rollback", "hello"]);
    all_answer(&hosts, "hello", "/env/VERSION", (200, "7")).await;
    assert_eq!(redis.cli(&["KEYS", "skiff:c:bundle:*"]).trim(), "");
}
