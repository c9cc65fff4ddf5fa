//! `skiff apps list|inspect|rollback|delete`.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Result;
use clap::Subcommand;
use skiff_client::Role;
use skiff_client::api::{AppInfo, AppList, AppStatus, LimitsInfo};
use skiff_manifest::format_size;

use super::format::{format_age, format_ms, route_url, table};
use super::{ConnectArgs, NamedArgs, finish, show};

#[derive(Subcommand)]
pub enum AppsCommand {
    /// The apps deployed, one line each.
    List {
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// One app: versions, routes, components and their limits.
    Inspect(NamedArgs),
    /// Make the version before the live one live again.
    Rollback(NamedArgs),
    /// Stop serving an app and remove its versions.
    Delete(NamedArgs),
}

pub async fn apps(command: AppsCommand) -> Result<ExitCode> {
    Ok(finish(run(command).await))
}

async fn run(command: AppsCommand) -> Result<()> {
    match command {
        AppsCommand::List { connect } => {
            let client = connect.client(Role::Tenant)?;
            show(client.apps().await?, connect.json, |list| {
                format_app_list(&list, SystemTime::now())
            })
        }
        AppsCommand::Inspect(NamedArgs { connect, name }) => {
            let client = connect.client(Role::Tenant)?;
            show(client.app(&name).await?, connect.json, |info| {
                format_app_info(&info, SystemTime::now())
            })
        }
        AppsCommand::Rollback(NamedArgs { connect, name }) => {
            let client = connect.client(Role::Tenant)?;
            show(client.rollback(&name).await?, connect.json, |info| {
                format!(
                    "{}: version {} is live again\n",
                    info.summary.name, info.summary.version
                )
            })
        }
        AppsCommand::Delete(NamedArgs { connect, name }) => {
            let client = connect.client(Role::Tenant)?;
            client.delete_app(&name).await?;
            // The server answers 204 with no body, so `--json` has nothing to print; the exit
            // code says it worked.
            if !connect.json {
                println!("deleted {name}");
            }
            Ok(())
        }
    }
}

fn status_text(status: AppStatus) -> &'static str {
    match status {
        AppStatus::Live => "live",
        AppStatus::Idle => "idle",
    }
}

fn format_app_list(list: &AppList, now: SystemTime) -> String {
    if list.apps.is_empty() {
        return "no apps deployed; deploy one with `skiff deploy FOLDER`\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .apps
        .iter()
        .map(|app| {
            vec![
                app.name.clone(),
                app.version.to_string(),
                app.app_version.clone(),
                status_text(app.status).into(),
                format_age(&app.deployed_at, now),
                app.url.clone(),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "VERSION",
            "APP-VERSION",
            "STATUS",
            "DEPLOYED",
            "URL",
        ],
        &rows,
        "",
        &[],
    )
}

fn format_app_info(info: &AppInfo, now: SystemTime) -> String {
    let s = &info.summary;
    let mut out = String::new();
    let _ = writeln!(out, "{}", s.name);
    let _ = writeln!(out, "  tenant:   {}", info.tenant);
    let _ = writeln!(out, "  url:      {}", s.url);
    let _ = writeln!(out, "  status:   {}", status_text(s.status));
    let _ = writeln!(
        out,
        "  live:     version {} (app version {}), deployed {} ({})",
        s.version,
        s.app_version,
        s.deployed_at,
        format_age(&s.deployed_at, now)
    );

    out.push_str("\nRoutes:\n");
    if info.routes.is_empty() {
        out.push_str("  none\n");
    } else {
        let rows: Vec<Vec<String>> = info
            .routes
            .iter()
            .map(|r| vec![r.route.clone(), r.served_by(), route_url(&s.url, &r.route)])
            .collect();
        out.push_str(&table(&["ROUTE", "COMPONENT", "URL"], &rows, "  ", &[]));
    }

    out.push_str("\nComponents:\n");
    let rows: Vec<Vec<String>> = info
        .components
        .iter()
        .map(|c| {
            let [memory, timeout, concurrency, fuel] = limit_cells(&c.limits);
            vec![
                c.id.clone(),
                c.source.clone(),
                format_size(c.code_bytes),
                memory,
                timeout,
                concurrency,
                fuel,
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "ID",
            "SOURCE",
            "CODE",
            "MEMORY",
            "TIMEOUT",
            "CONCURRENCY",
            "FUEL",
        ],
        &rows,
        "  ",
        &[],
    ));

    out.push_str("\nVersions (newest first, * = live):\n");
    let rows: Vec<Vec<String>> = info
        .versions
        .iter()
        .map(|v| {
            vec![
                if v.live { "*" } else { "" }.into(),
                v.version.to_string(),
                v.app_version.clone(),
                v.deployed_at.clone(),
                format_age(&v.deployed_at, now),
                v.source
                    .as_ref()
                    .map(|s| format!("{} ({})", s.reference, s.digest))
                    .unwrap_or_else(|| "upload".into()),
            ]
        })
        .collect();
    out.push_str(&table(
        &["", "VERSION", "APP-VERSION", "DEPLOYED", "AGE", "FROM"],
        &rows,
        "  ",
        &[],
    ));
    for schedule in &info.schedules {
        out.push_str(&format!(
            "\nSchedule component.{}.schedule[{}]: `{}` ({}){}, overlap {}, {} skipped\n",
            schedule.component,
            schedule.index,
            schedule.cron,
            schedule.timezone,
            match &schedule.path {
                Some(path) => format!(" POST {path}"),
                None if !schedule.args.is_empty() => format!(" args {:?}", schedule.args),
                None => String::new(),
            },
            schedule.overlap,
            schedule.skipped,
        ));
        out.push_str(&format!("  next: {}\n", schedule.next.join(", ")));
        if schedule.last.is_empty() {
            out.push_str("  no runs yet\n");
        } else {
            let rows: Vec<Vec<String>> = schedule
                .last
                .iter()
                .map(|r| {
                    vec![
                        r.due.clone(),
                        r.host.clone(),
                        r.outcome.clone(),
                        match (r.status, r.exit_code) {
                            (Some(status), _) => status.to_string(),
                            (None, Some(code)) => format!("exit {code}"),
                            (None, None) => "-".into(),
                        },
                        format_ms(r.duration_ms),
                        r.error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            out.push_str(&table(
                &["DUE", "HOST", "OUTCOME", "STATUS", "TOOK", "ERROR"],
                &rows,
                "  ",
                &[],
            ));
        }
    }
    if !info.consumers.is_empty() {
        out.push_str("\nQueue consumers:\n");
        let count = |n: Option<u64>| n.map_or_else(|| "?".to_string(), |n| n.to_string());
        let rows: Vec<Vec<String>> = info
            .consumers
            .iter()
            .map(|c| {
                vec![
                    c.queue.clone(),
                    c.component.clone(),
                    match &c.path {
                        Some(path) => format!("POST {path}"),
                        None => "wasi:messaging".to_string(),
                    },
                    c.concurrency.to_string(),
                    c.max_attempts.to_string(),
                    format_ms(c.retry_after_ms),
                    count(c.messages),
                    format!("{} in {}", count(c.dead), c.dead_letter),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "QUEUE",
                "COMPONENT",
                "HOW",
                "AT-ONCE",
                "ATTEMPTS",
                "RETRY-AFTER",
                "MESSAGES",
                "DEAD",
            ],
            &rows,
            "  ",
            &[],
        ));
    }
    if let Some(cluster) = &info.cluster {
        let serving = cluster.hosts.iter().filter(|h| h.converged).count();
        out.push_str(&format!(
            "\nHosts ({serving} of {} serve revision {}):\n",
            cluster.hosts.len(),
            cluster.revision
        ));
        let rows: Vec<Vec<String>> = cluster
            .hosts
            .iter()
            .map(|h| {
                let current = if h.skipped {
                    "no: not served (see the host's log)"
                } else if h.converged {
                    "yes"
                } else {
                    "not yet"
                };
                vec![
                    h.host.clone(),
                    h.revision.map_or_else(|| "-".into(), |r| r.to_string()),
                    current.into(),
                    h.applied.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            &["HOST", "REVISION", "CURRENT", "APPLIED-UP-TO"],
            &rows,
            "  ",
            &[],
        ));
    }
    out
}

/// Memory, timeout, concurrency and fuel, for people; `none` where there is no limit.
fn limit_cells(limits: &LimitsInfo) -> [String; 4] {
    let none = || "none".to_string();
    [
        limits.memory_bytes.map_or_else(none, format_size),
        format_ms(limits.timeout_ms),
        limits.max_concurrency.map_or_else(none, |n| n.to_string()),
        limits.fuel.map_or_else(none, |n| n.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use skiff_client::api::{AppSummary, ComponentInfo, RouteInfo, VersionInfo};

    use super::*;
    use crate::cmd::format::at;

    fn summary(name: &str, version: u64) -> AppSummary {
        AppSummary {
            name: name.into(),
            version,
            app_version: "0.1.0".into(),
            url: format!("http://{name}.localhost:3000/"),
            deployed_at: "2025-06-01T10:00:00.000Z".into(),
            status: AppStatus::Live,
        }
    }

    #[test]
    fn limits_read_like_the_manifest() {
        let limits = LimitsInfo {
            memory_bytes: Some(128 << 20),
            timeout_ms: 30_000,
            max_concurrency: None,
            fuel: Some(1000),
            requests_per_instance: None,
        };
        assert_eq!(limit_cells(&limits), ["128 MiB", "30s", "none", "1000"]);
    }

    #[test]
    fn app_lists_are_tables_or_a_hint() {
        let now = at("2025-06-01T10:05:00Z");
        let empty = AppList { apps: vec![] };
        assert!(format_app_list(&empty, now).contains("skiff deploy FOLDER"));
        let mut idle = summary("a", 12);
        idle.status = AppStatus::Idle;
        let list = AppList {
            apps: vec![summary("hello", 1), idle],
        };
        assert_eq!(
            format_app_list(&list, now),
            "NAME   VERSION  APP-VERSION  STATUS  DEPLOYED  URL\n\
             hello  1        0.1.0        live    5m ago    http://hello.localhost:3000/\n\
             a      12       0.1.0        idle    5m ago    http://a.localhost:3000/\n"
        );
    }

    #[test]
    fn inspect_shows_limits_and_marks_the_live_version() {
        let now = at("2025-06-01T10:05:00Z");
        let info = AppInfo {
            summary: summary("hello", 2),
            tenant: "acme".into(),
            routes: vec![RouteInfo {
                route: "/api/...".into(),
                component: "api".into(),
                upstream: false,
                middleware: Vec::new(),
            }],
            components: vec![ComponentInfo {
                id: "api".into(),
                source: "api.wasm".into(),
                code_bytes: 2 << 20,
                limits: LimitsInfo {
                    memory_bytes: Some(128 << 20),
                    timeout_ms: 30_000,
                    max_concurrency: None,
                    fuel: None,
                    requests_per_instance: None,
                },
            }],
            versions: vec![
                VersionInfo {
                    version: 3,
                    app_version: "0.3.0".into(),
                    deployed_at: "2025-06-01T10:04:00Z".into(),
                    live: false,
                    source: Some(skiff_client::api::VersionSource {
                        reference: "registry.example.com/hello:v3".into(),
                        digest: "sha256:abc".into(),
                    }),
                },
                VersionInfo {
                    version: 2,
                    app_version: "0.1.0".into(),
                    deployed_at: "2025-06-01T10:00:00.000Z".into(),
                    live: true,
                    source: None,
                },
            ],
            cluster: None,
            schedules: Vec::new(),
            consumers: Vec::new(),
        };
        let text = format_app_info(&info, now);
        assert!(text.starts_with("hello\n  tenant:   acme\n"), "{text}");
        assert!(
            text.contains("  live:     version 2 (app version 0.1.0), deployed 2025-06-01T10:00:00.000Z (5m ago)"),
            "{text}"
        );
        assert!(
            text.contains("  /api/...  api        http://hello.localhost:3000/api (wildcard)\n"),
            "{text}"
        );
        assert!(
            text.contains("  api  api.wasm  2 MiB  128 MiB  30s      none         none\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "     3        0.3.0        2025-06-01T10:04:00Z      1m ago  \
                 registry.example.com/hello:v3 (sha256:abc)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  *  2        0.1.0        2025-06-01T10:00:00.000Z  5m ago  upload\n"),
            "{text}"
        );
    }
}
