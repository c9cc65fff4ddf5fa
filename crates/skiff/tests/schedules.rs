//! Schedules, against the real binary: `skiff up`, `skiff server`, and a cluster of hosts
//! sharing a real Redis. Runs are counted by the guest itself (the state guest's
//! `/schedule/run` sets a key per due time in its store, and counts a due time seen twice),
//! and compared with the due times skiff's own log says it ran: no wall-clock guesses, so a
//! loaded machine changes how long a test waits, never whether it passes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::host::Host;
use common::redis::Redis;
use common::{Server, client, guest};

/// How long a test waits for runs to happen: far more than they take.
const BOUND: Duration = Duration::from_secs(60);

/// An app folder: the state guest as component `job` (routes `/...`, store `default`) with
/// `schedules` (TOML) appended.
fn scheduled_app(name: &str, schedules: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(guest("state-guest"), dir.path().join("job.wasm")).unwrap();
    std::fs::write(
        dir.path().join("skiff.toml"),
        format!(
            "[app]\nname = \"{name}\"\n\n[component.job]\nsource = \"job.wasm\"\n\
             route = \"/...\"\nkey_value_stores = [\"default\"]\n\n{schedules}"
        ),
    )
    .unwrap();
    dir
}

/// An every-second schedule of the guest's `/schedule/run`, sleeping `sleep_ms` in each run.
fn every_second(sleep_ms: u64) -> String {
    format!(
        "[[component.job.schedule]]\ncron = \"* * * * * *\"\n\
         path = \"/schedule/run?store=default&sleep_ms={sleep_ms}\"\n"
    )
}

/// The due times (unix seconds) of the runs of `schedule` (`TENANT/APP/COMPONENT/INDEX`) that
/// the log says ended with `outcome` (`done`, `failed`, or `skipped` for skipped ones).
fn logged(logs: &str, schedule: &str, outcome: &str) -> BTreeSet<u64> {
    let marker = match outcome {
        "skipped" => "skipped: the previous run is still going",
        "done" => "scheduled run done",
        _ => "scheduled run failed",
    };
    logs.lines()
        .filter(|line| line.contains(marker))
        .filter(|line| line.contains(&format!("schedule={schedule} ")))
        .filter_map(|line| {
            let due = line.split("due=").nth(1)?;
            due.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

/// The due times the guest recorded in its store (through `get`, a GET on the app).
async fn recorded<F, Fut>(get: F) -> (BTreeSet<u64>, bool)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = (u16, String)>,
{
    let (status, keys) = get("/kv/list?store=default".into()).await;
    assert_eq!(status, 200, "{keys}");
    let dues = keys
        .lines()
        .filter_map(|k| k.strip_prefix("due:"))
        .map(|t| {
            humantime::parse_rfc3339(t)
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
        })
        .collect();
    let (status, _) = get("/kv/get?store=default&key=duplicates".into()).await;
    (dues, status == 200)
}

/// Waits until `check` holds, failing with `what` once [`BOUND`] has passed.
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    common::eventually(BOUND, what, check).await;
}

fn consecutive(dues: &BTreeSet<u64>) -> bool {
    match (dues.first(), dues.last()) {
        (Some(first), Some(last)) => last - first + 1 == dues.len() as u64,
        _ => true,
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn skiff_up_runs_each_due_time_exactly_once() {
    let dir = scheduled_app("ticks", &every_second(0));
    let server = Server::start(&["up", dir.path().join("skiff.toml").to_str().unwrap()]);
    assert!(
        server
            .stdout_lines
            .iter()
            .any(|l| l.contains("job: * * * * * * (UTC) POST /schedule/run")),
        "{:?}",
        server.stdout_lines
    );
    let schedule = "/ticks/job/0";
    eventually("five runs are logged", || async {
        logged(&server.logs(), schedule, "done").len() >= 5
    })
    .await;
    // What the log said before the store is read was recorded by the guest; what the guest
    // recorded, the log says (once the run has ended) was run.
    let before = logged(&server.logs(), schedule, "done");
    let on = &server;
    let (recorded, duplicates) = recorded(|path| async move { common::get(on, &path).await }).await;
    eventually("every recorded run is logged", || async {
        logged(&server.logs(), schedule, "done").is_superset(&recorded)
    })
    .await;
    assert!(before.is_subset(&recorded), "{before:?} vs {recorded:?}");
    assert!(!duplicates, "a due time ran twice");
    // Every second from the first run to the last ran, once each: as many runs as due times.
    assert!(
        consecutive(&recorded),
        "a due time was missed: {recorded:?}"
    );
    assert!(recorded.len() >= 5);
    // Runs are requests with the scheduler's headers: a client cannot send them.
    let forged = [
        ("skiff-trigger", "schedule"),
        ("skiff-scheduled-time", "2000-01-01T00:00:00Z"),
    ];
    let mut request = client().post(server.url("/schedule/run?store=default"));
    for (name, value) in forged {
        request = request.header(name, value);
    }
    let status = request.send().await.unwrap().status();
    assert_eq!(status, 400, "a client passed for the scheduler");
}

#[tokio::test]
async fn a_run_still_going_makes_the_next_due_times_skip_and_counts_them() {
    // Each run takes 2.5 s of an every-second schedule.
    let dir = scheduled_app("slow", &every_second(2500));
    let server = Server::start(&[
        "up",
        "--metrics-listen",
        "127.0.0.1:0",
        dir.path().join("skiff.toml").to_str().unwrap(),
    ]);
    let metrics = server
        .stdout_lines
        .iter()
        .find_map(|l| l.strip_prefix("Metrics "))
        .unwrap()
        .to_string();
    let schedule = "/slow/job/0";
    eventually("two runs end and four due times are skipped", || async {
        let logs = server.logs();
        logged(&logs, schedule, "done").len() >= 2 && logged(&logs, schedule, "skipped").len() >= 4
    })
    .await;
    let logs = server.logs();
    let (ran, skipped) = (
        logged(&logs, schedule, "done"),
        logged(&logs, schedule, "skipped"),
    );
    // No two runs overlapped: runs are at least two seconds apart (each skipped what was due
    // while it went on), and every due time between the first and last run either ran or was
    // skipped.
    let ran_list: Vec<u64> = ran.iter().copied().collect();
    for pair in ran_list.windows(2) {
        assert!(pair[1] - pair[0] >= 2, "runs overlapped: {ran_list:?}");
    }
    let first = *ran.first().unwrap();
    let last = *ran.last().unwrap();
    for due in first..=last {
        assert!(
            ran.contains(&due) || skipped.contains(&due),
            "due time {due} neither ran nor was skipped: {ran:?} {skipped:?}"
        );
    }
    // The count is a metric.
    let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
    let count: u64 = text
        .lines()
        .find(|l| l.starts_with("skiff_schedule_runs_total{") && l.contains("outcome=\"skipped\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no skipped count in:\n{text}"));
    assert!(count >= skipped.len() as u64, "{count} < {skipped:?}");
    // Runs are counted with requests too, under their schedule.
    assert!(
        text.contains("route=\"schedule[0]\",status=\"2xx\""),
        "{text}"
    );
}

#[tokio::test]
async fn a_command_component_runs_on_its_schedule_with_its_limits() {
    command_runs_on_its_schedule("cli-guest", &["exit", "3"], 3).await;
}

/// The same with a WASI 0.3 command (`wasi:cli/run@0.3`), whose `run` returning `err` is
/// exit status 1.
#[tokio::test]
async fn a_wasi_0_3_command_component_runs_on_its_schedule_with_its_limits() {
    command_runs_on_its_schedule("cli-p3-guest", &["fail"], 1).await;
}

/// Three every-second schedules of the command guest `guest`: `args tick-from-schedule`
/// (done), `failing` (ends with `exit_code`) and `spin` (stopped at the 300 ms limit).
async fn command_runs_on_its_schedule(guest_name: &str, failing: &[&str], exit_code: i32) {
    let manifest = format!(
        "[app]\nname = \"cmd\"\n\n[component.job]\nsource = \"{}\"\n\n\
         [component.job.limits]\ntimeout = \"300ms\"\n\n\
         [[component.job.schedule]]\ncron = \"* * * * * *\"\nargs = [\"args\", \"tick-from-schedule\"]\n\n\
         [[component.job.schedule]]\ncron = \"* * * * * *\"\nargs = {failing:?}\n\n\
         [[component.job.schedule]]\ncron = \"* * * * * *\"\nargs = [\"spin\"]\n",
        guest(guest_name).display()
    );
    let dir = common::app_dir(&[("skiff.toml", &manifest)]);
    let server = Server::start(&["up", dir.path().join("skiff.toml").to_str().unwrap()]);
    eventually("each schedule ran twice", || async {
        let logs = server.logs();
        logged(&logs, "/cmd/job/0", "done").len() >= 2
            && logged(&logs, "/cmd/job/1", "failed").len() >= 2
            && logged(&logs, "/cmd/job/2", "failed").len() >= 2
    })
    .await;
    let logs = server.logs();
    // Its output goes to the log, tagged like a request's.
    assert!(
        logs.lines()
            .any(|l| l.contains("tick-from-schedule") && l.contains("component=job")),
        "{logs}"
    );
    // An exit code other than 0 is a failed run; so is one stopped at its time limit.
    let exited = format!("exit_code={exit_code}");
    assert!(
        logs.lines()
            .any(|l| l.contains("schedule=/cmd/job/1 ") && l.contains(&exited)),
        "{logs}"
    );
    assert!(logged(&logs, "/cmd/job/1", "done").is_empty(), "{logs}");
    assert!(logged(&logs, "/cmd/job/2", "done").is_empty(), "{logs}");
}

#[tokio::test]
async fn with_overlap_allowed_runs_overlap() {
    // Each run takes 2.5 s of an every-second schedule, and may overlap the next.
    let dir = scheduled_app(
        "overlapping",
        &format!("{}overlap = \"allow\"\n", every_second(2500)),
    );
    let server = Server::start(&["up", dir.path().join("skiff.toml").to_str().unwrap()]);
    let schedule = "/overlapping/job/0";
    eventually("four runs end", || async {
        logged(&server.logs(), schedule, "done").len() >= 4
    })
    .await;
    let logs = server.logs();
    let ran = logged(&logs, schedule, "done");
    assert!(logged(&logs, schedule, "skipped").is_empty(), "{logs}");
    // Every second ran, though each run outlasted it.
    assert!(consecutive(&ran), "{ran:?}");
}

#[tokio::test]
async fn skiff_server_runs_deployed_schedules_shows_them_and_stops_them() {
    let host = Host::start();
    let acme = host.tenant("acme", &[]);
    // One schedule that works, one that calls a path the guest answers 404.
    let dir = scheduled_app(
        "cron",
        &format!(
            "{}\n[[component.job.schedule]]\ncron = \"*/2 * * * * *\"\npath = \"/nope\"\n\
             timezone = \"Europe/Paris\"\n",
            every_second(0)
        ),
    );
    host.deploy_ok(&acme, dir.path(), "cron");
    eventually("runs are recorded", || async {
        let (_, info) = host
            .api(reqwest::Method::GET, "/v1/apps/cron", Some(&acme))
            .await;
        let schedules = info["schedules"].as_array().cloned().unwrap_or_default();
        schedules.len() == 2
            && schedules[0]["last"]
                .as_array()
                .is_some_and(|l| l.len() >= 3)
            && schedules[1]["last"]
                .as_array()
                .is_some_and(|l| !l.is_empty())
    })
    .await;
    let (_, info) = host
        .api(reqwest::Method::GET, "/v1/apps/cron", Some(&acme))
        .await;
    let ok = &info["schedules"][0];
    assert_eq!(ok["cron"], "* * * * * *");
    assert_eq!(ok["timezone"], "UTC");
    assert_eq!(ok["overlap"], "skip");
    // The next three due times, one second apart.
    let next: Vec<u64> = ok["next"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            humantime::parse_rfc3339(t.as_str().unwrap())
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
        })
        .collect();
    assert_eq!(next.len(), 3);
    assert_eq!((next[1] - next[0], next[2] - next[1]), (1, 1));
    let last = &ok["last"][0];
    assert_eq!(last["outcome"], "ok", "{info:#}");
    assert_eq!(last["status"], 200);
    assert_eq!(last["host"], "local");
    // The path the guest does not know: every run recorded as failed, with its status.
    let failing = &info["schedules"][1];
    assert_eq!(failing["timezone"], "Europe/Paris");
    for run in failing["last"].as_array().unwrap() {
        assert_eq!(run["outcome"], "failed", "{failing:#}");
        assert_eq!(run["status"], 404);
    }
    // The CLI shows the same.
    let out = host.cli_ok(&acme, &["apps", "inspect", "cron"]);
    assert!(
        out.contains("Schedule component.job.schedule[0]: `* * * * * *` (UTC) POST /schedule/run"),
        "{out}"
    );
    assert!(out.contains("next: "), "{out}");
    assert!(out.contains("failed"), "{out}");
    // The guest counted its runs, each due time once.
    let on = &host;
    let (recorded, duplicates) = recorded(|path| async move { on.get("cron", &path).await }).await;
    assert!(!duplicates);
    assert!(consecutive(&recorded), "{recorded:?}");

    // A redeploy without schedules stops them; nothing runs once it is live.
    let plain = scheduled_app("cron", "");
    host.deploy_ok(&acme, plain.path(), "cron");
    let logs = host.server.wait_for_log("schedules stopped app=acme/cron");
    assert!(logs.contains("schedules stopped"), "{logs}");
    let stopped_at = now_secs();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let late: Vec<u64> = logged(&host.server.logs(), "acme/cron/job/0", "done")
        .into_iter()
        .filter(|due| *due > stopped_at)
        .collect();
    assert!(late.is_empty(), "runs after the redeploy: {late:?}");
    let (_, info) = host
        .api(reqwest::Method::GET, "/v1/apps/cron", Some(&acme))
        .await;
    assert!(info.get("schedules").is_none(), "{info:#}");

    // A rollback to the scheduled version starts them again, a delete stops them for good.
    host.cli_ok(&acme, &["apps", "rollback", "cron"]);
    eventually("the rollback's schedules run", || async {
        let logs = host.server.logs();
        logs.matches("schedules started app=acme/cron").count() == 2
            && logged(&logs, "acme/cron/job/0", "done")
                .iter()
                .any(|due| *due > stopped_at + 3)
    })
    .await;
    host.cli_ok(&acme, &["apps", "delete", "cron"]);
    eventually("the delete stops them", || async {
        host.server
            .logs()
            .matches("schedules stopped app=acme/cron")
            .count()
            == 2
    })
    .await;
}

#[tokio::test]
async fn a_tenant_full_of_schedules_does_not_starve_another() {
    let host = Host::start();
    // The most schedules an app may have, every second, each run taking 1.5 s, on a tenant
    // that may run two requests at once.
    let greedy = host.tenant("greedy", &["--max-in-flight", "2"]);
    let mut schedules = String::new();
    for _ in 0..32 {
        schedules.push_str(&every_second(1500));
    }
    let dir = scheduled_app("storm", &schedules);
    host.deploy_ok(&greedy, dir.path(), "storm");
    let neighbour = host.tenant("neighbour", &[]);
    host.deploy_ok(&neighbour, scheduled_app("calm", "").path(), "calm");
    // Once the storm is on (runs refused by greedy's quota are recorded as failed, 503) ...
    eventually("the storm's runs are refused past its quota", || async {
        let (_, info) = host
            .api(reqwest::Method::GET, "/v1/apps/storm", Some(&greedy))
            .await;
        info["schedules"].as_array().is_some_and(|schedules| {
            schedules.iter().any(|s| {
                s["last"]
                    .as_array()
                    .is_some_and(|runs| runs.iter().any(|r| r["status"] == 503))
            })
        })
    })
    .await;
    // ... the other tenant's app answers every request.
    for _ in 0..50 {
        let (status, body) = host.get("calm", "/kv/get?store=default&key=x").await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body, "missing");
    }
}

/// Starts host `host-N` of the cluster in `redis`.
fn cluster_host(redis: &Redis, n: usize) -> Host {
    Host::start_in_cluster(&redis.url(), n, &["--cluster-resync", "1s"])
}

/// Due times of `schedule` each host's log says it ran.
fn ran_by_host(hosts: &[&Host], schedule: &str) -> Vec<BTreeSet<u64>> {
    hosts
        .iter()
        .map(|h| logged(&h.server.logs(), schedule, "done"))
        .collect()
}

#[tokio::test]
async fn a_cluster_runs_each_due_time_on_exactly_one_host_and_survives_kill_9() {
    let redis = Redis::start();
    let mut hosts: Vec<Host> = (1..=3).map(|n| cluster_host(&redis, n)).collect();
    for host in &hosts {
        host.wait_until_ready().await;
    }
    let acme = hosts[0].tenant("acme", &[]);
    let dir = scheduled_app("tick", &every_second(0));
    hosts[0].deploy_ok(&acme, dir.path(), "tick");
    let schedule = "acme/tick/job/0";

    // Ten due times run, spread over the hosts as their leases fall.
    eventually("ten runs are logged", || async {
        let all: Vec<&Host> = hosts.iter().collect();
        ran_by_host(&all, schedule)
            .iter()
            .map(BTreeSet::len)
            .sum::<usize>()
            >= 10
    })
    .await;
    let check = |hosts: &[&Host], recorded: &BTreeSet<u64>| {
        let ran = ran_by_host(hosts, schedule);
        let mut union = BTreeSet::new();
        for (i, dues) in ran.iter().enumerate() {
            for due in dues {
                assert!(
                    union.insert(*due),
                    "due time {due} ran twice (again on host {i}): {ran:?}"
                );
            }
        }
        union.is_superset(recorded)
    };
    let all: Vec<&Host> = hosts.iter().collect();
    let on = &hosts[1];
    let (recorded_now, duplicates) =
        recorded(|path| async move { on.get("tick", &path).await }).await;
    assert!(!duplicates, "a due time ran twice");
    eventually("every recorded run is logged by one host", || async {
        check(&all, &recorded_now)
    })
    .await;
    assert!(
        consecutive(&recorded_now),
        "a due time was missed: {recorded_now:?}"
    );
    // Any host's inspect shows the last runs, each naming the host that ran it.
    let (_, info) = hosts[2]
        .api(reqwest::Method::GET, "/v1/apps/tick", Some(&acme))
        .await;
    let last = info["schedules"][0]["last"].as_array().unwrap();
    assert!(last.len() >= 5, "{info:#}");
    assert!(
        last.iter()
            .all(|r| r["host"].as_str().unwrap().starts_with("host-")),
        "{info:#}"
    );

    // kill -9 of a host: the schedule goes on on the others, still once per due time.
    let killed_at = now_secs();
    hosts[0].server.child().kill().unwrap();
    hosts[0].server.child().wait().unwrap();
    let survivors: Vec<&Host> = hosts[1..].iter().collect();
    eventually("five runs after the kill", || async {
        ran_by_host(&survivors, schedule)
            .iter()
            .flatten()
            .filter(|due| **due > killed_at + 1)
            .count()
            >= 5
    })
    .await;
    let on = &hosts[1];
    let (recorded_later, duplicates) =
        recorded(|path| async move { on.get("tick", &path).await }).await;
    assert!(!duplicates, "a due time ran twice");
    let after_kill: BTreeSet<u64> = recorded_later
        .iter()
        .copied()
        .filter(|due| *due > killed_at + 1)
        .collect();
    assert!(after_kill.len() >= 5, "{recorded_later:?}");
    // The survivors ran every due time after the kill, once each (the killed host's runs
    // before it are in its own log, which went with it: they are checked above).
    let survivors_ran: BTreeSet<u64> = ran_by_host(&survivors, schedule)
        .into_iter()
        .flatten()
        .filter(|due| *due > killed_at + 1)
        .collect();
    eventually("every recorded run after the kill is logged", || async {
        let ran: BTreeSet<u64> = ran_by_host(&survivors, schedule)
            .into_iter()
            .flatten()
            .collect();
        ran.is_superset(&after_kill)
    })
    .await;
    assert!(survivors_ran.is_subset(&recorded_later));
    assert!(
        consecutive(&after_kill),
        "a due time was missed after the kill: {after_kill:?}"
    );
}

#[tokio::test]
async fn the_scheduled_job_example_runs_and_reports() {
    let example = common::repo_root().join("examples/scheduled-job");
    let server = Server::start(&["up", example.to_str().unwrap()]);
    eventually("the example's job ran", || async {
        let (status, body) = common::get(&server, "/").await;
        status == 200 && !body.contains("ran 0 time(s)")
    })
    .await;
    let (_, body) = common::get(&server, "/").await;
    assert!(body.contains("last due time 20"), "{body}");
    // Only the scheduler starts the job.
    let status = client()
        .post(server.url("/jobs/tick"))
        .header("skiff-trigger", "schedule")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 403);
}
