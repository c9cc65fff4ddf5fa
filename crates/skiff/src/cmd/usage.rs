//! `skiff usage`: what apps used (requests, time, memory, bytes) over a range.

use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Result, anyhow};
use clap::Args;
use skiff_client::api::{UsageFigures, UsageReport, check_name};
use skiff_client::{Role, UsageQuery};
use skiff_manifest::format_size;

use super::format::table;
use super::{ConnectArgs, finish, show};

#[derive(Args)]
pub struct UsageArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The start of the range: a UTC time (`2025-01-31T00:00:00Z`, or a day, `2025-01-31`),
    /// or how long ago (`1h`, `24h`, `7d`) [default: 24 hours before --to].
    #[arg(long, value_name = "TIME", value_parser = parse_when)]
    pub from: Option<SystemTime>,
    /// The end of the range, written the same way [default: now].
    #[arg(long, value_name = "TIME", value_parser = parse_when)]
    pub to: Option<SystemTime>,
    /// One tenant's apps only (with the admin token; a tenant's token sees its own anyway).
    #[arg(long, value_name = "NAME")]
    pub tenant: Option<String>,
}

pub async fn usage(args: UsageArgs) -> Result<ExitCode> {
    Ok(finish(run(args).await))
}

async fn run(args: UsageArgs) -> Result<()> {
    if let Some(tenant) = &args.tenant {
        check_name("tenant", tenant).map_err(|e| anyhow!("--tenant: {e}"))?;
    }
    let client = args.connect.client(Role::Any)?;
    let query = UsageQuery {
        from: args.from,
        to: args.to,
        tenant: args.tenant,
    };
    show(client.usage(&query).await?, args.connect.json, |report| {
        format_usage(&report)
    })
}

/// `--from` and `--to`: a UTC time in RFC 3339, a day (its midnight, UTC), or how long before
/// now (`1h`, `24h`, `7d`).
fn parse_when(text: &str) -> Result<SystemTime, String> {
    when(text, SystemTime::now())
}

fn when(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    let text = text.trim();
    let time = humantime::parse_rfc3339_weak(text)
        .or_else(|_| humantime::parse_rfc3339(&format!("{text}T00:00:00Z")))
        .ok()
        .or_else(|| {
            let ago = humantime::parse_duration(text).ok()?;
            now.checked_sub(ago)
        });
    match time {
        // Times before 1970 cannot be written in RFC 3339 by humantime, nor have usage.
        Some(time) if time >= SystemTime::UNIX_EPOCH => Ok(time),
        _ => Err(format!(
            "`{text}` is neither a UTC time (e.g. 2025-01-31T00:00:00Z, or 2025-01-31) nor how \
             long ago (e.g. 1h, 24h, 7d)"
        )),
    }
}

/// One row per app, then a `TOTAL` row per tenant (app names are lower case, so no app is
/// called that). The TENANT column only when the report holds several tenants; for one, the
/// heading names it.
fn format_usage(report: &UsageReport) -> String {
    let range = format!("from {} to {}", report.from, report.to);
    let one = match report.tenants.as_slice() {
        [] => return format!("no requests {range}\n"),
        [only] => Some(only.tenant.as_str()),
        _ => None,
    };
    let mut out = match one {
        Some(tenant) => format!("Usage of {tenant} {range}\n\n"),
        None => format!("Usage {range}\n\n"),
    };
    let row = |tenant: &str, app: &str, usage: &UsageFigures| {
        let names = match one {
            Some(_) => vec![app.to_string()],
            None => vec![tenant.to_string(), app.to_string()],
        };
        names
            .into_iter()
            .chain(usage_cells(usage))
            .collect::<Vec<_>>()
    };
    let mut rows = Vec::new();
    for total in &report.tenants {
        for app in report.apps.iter().filter(|a| a.tenant == total.tenant) {
            rows.push(row(&app.tenant, &app.app, &app.usage));
        }
        rows.push(row(&total.tenant, "TOTAL", &total.usage));
    }
    let figures = ["REQUESTS", "WALL", "GUEST-CPU", "MEMORY", "IN", "OUT"];
    let names: &[&str] = if one.is_some() {
        &["APP"]
    } else {
        &["TENANT", "APP"]
    };
    let headers: Vec<&str> = names.iter().chain(&figures).copied().collect();
    let right: Vec<bool> = headers.iter().map(|h| figures.contains(h)).collect();
    out.push_str(&table(&headers, &rows, "", &right));
    out
}

/// Requests, wall time, guest CPU time, memory (byte-seconds), bytes in and out, for people.
fn usage_cells(usage: &UsageFigures) -> [String; 6] {
    [
        usage.requests.to_string(),
        format_seconds(usage.wall_seconds),
        format_seconds(usage.guest_cpu_seconds),
        // `as` saturates; a sum of byte-seconds is never negative.
        format!(
            "{}·s",
            format_size(usage.memory_byte_seconds.round() as u64)
        ),
        format_size(usage.bytes_in),
        format_size(usage.bytes_out),
    ]
}

/// Seconds in the unit that reads best: `350 µs`, `12.5 ms`, `3.21 s`, `4.5 min`, `2.0 h`.
/// Each unit ends where its rounding would reach the next one.
// Hand-written: humantime prints every unit at once (`4m 30s 120ms`), too long for a column.
fn format_seconds(seconds: f64) -> String {
    if seconds <= 0.0 {
        "0 s".into()
    } else if seconds < 999.5e-6 {
        format!("{:.0} µs", seconds * 1e6)
    } else if seconds < 0.999_95 {
        format!("{:.1} ms", seconds * 1e3)
    } else if seconds < 59.995 {
        format!("{seconds:.2} s")
    } else if seconds < 3597.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use skiff_client::api::{AppUsage, TenantUsage};

    use super::*;
    use crate::cmd::format::at;

    #[test]
    fn usage_ranges_take_utc_times_days_or_how_long_ago() {
        let now = at("2025-06-08T12:30:00Z");
        assert_eq!(
            when("2025-06-01T10:00:00Z", now),
            Ok(at("2025-06-01T10:00:00Z"))
        );
        assert_eq!(when("2025-06-01", now), Ok(at("2025-06-01T00:00:00Z")));
        assert_eq!(when("1h", now), Ok(at("2025-06-08T11:30:00Z")));
        assert_eq!(when("24h", now), Ok(at("2025-06-07T12:30:00Z")));
        assert_eq!(when(" 7d ", now), Ok(at("2025-06-01T12:30:00Z")));
        for bad in ["yesterday", "2025-06-01T10:00:00+02:00", "", "100000y"] {
            let err = when(bad, now).unwrap_err();
            assert!(err.contains("e.g. 1h, 24h, 7d"), "{bad}: {err}");
        }
        let sent = humantime::format_rfc3339_seconds(when("1h", now).unwrap()).to_string();
        assert_eq!(sent, "2025-06-08T11:30:00Z");
    }

    #[test]
    fn seconds_read_in_the_unit_that_fits() {
        assert_eq!(format_seconds(0.0), "0 s");
        assert_eq!(format_seconds(0.000_35), "350 µs");
        assert_eq!(format_seconds(0.000_999_7), "1.0 ms");
        assert_eq!(format_seconds(0.0125), "12.5 ms");
        assert_eq!(format_seconds(0.999_97), "1.00 s");
        assert_eq!(format_seconds(3.214), "3.21 s");
        assert_eq!(format_seconds(270.0), "4.5 min");
        assert_eq!(format_seconds(7200.0), "2.0 h");
    }

    fn figures(requests: u64, bytes_out: u64) -> UsageFigures {
        UsageFigures {
            requests,
            wall_seconds: 0.0051 * requests as f64,
            guest_cpu_seconds: 0.002 * requests as f64,
            memory_byte_seconds: 1_258_291.0 * requests as f64,
            bytes_in: 0,
            bytes_out,
        }
    }

    fn usage_report(rows: &[(&str, &str, u64, u64)]) -> UsageReport {
        let mut tenants: Vec<TenantUsage> = Vec::new();
        let apps = rows
            .iter()
            .map(|&(tenant, app, requests, out)| {
                let usage = figures(requests, out);
                match tenants.last_mut() {
                    Some(last) if last.tenant == tenant => last.usage.add(&usage),
                    _ => tenants.push(TenantUsage {
                        tenant: tenant.into(),
                        usage,
                    }),
                }
                AppUsage {
                    tenant: tenant.into(),
                    app: app.into(),
                    usage,
                }
            })
            .collect();
        UsageReport {
            from: "2025-06-01T10:00:00Z".into(),
            to: "2025-06-02T10:01:00Z".into(),
            apps,
            tenants,
        }
    }

    #[test]
    fn usage_of_one_tenant_has_no_tenant_column_and_a_total() {
        let report = usage_report(&[("acme", "shop", 4, 4), ("acme", "web", 1200, 1830000)]);
        assert_eq!(
            format_usage(&report),
            "Usage of acme from 2025-06-01T10:00:00Z to 2025-06-02T10:01:00Z\n\
             \n\
             APP    REQUESTS     WALL  GUEST-CPU     MEMORY   IN      OUT\n\
             shop          4  20.4 ms     8.0 ms  4.8 MiB·s  0 B      4 B\n\
             web        1200   6.12 s     2.40 s  1.4 GiB·s  0 B  1.7 MiB\n\
             TOTAL      1204   6.14 s     2.41 s  1.4 GiB·s  0 B  1.7 MiB\n"
        );
    }

    #[test]
    fn usage_of_several_tenants_has_a_tenant_column_and_a_total_each() {
        let report = usage_report(&[("alice", "shop", 4, 4), ("bob", "blog", 1, 1)]);
        let text = format_usage(&report);
        assert!(
            text.starts_with(
                "Usage from 2025-06-01T10:00:00Z to 2025-06-02T10:01:00Z\n\nTENANT  APP    REQUESTS"
            ),
            "{text}"
        );
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip(3)
            .map(|line| {
                line.split("  ")
                    .filter(|c| !c.is_empty())
                    .map(str::trim)
                    .collect()
            })
            .collect();
        let firsts: Vec<(&str, &str, &str)> = rows.iter().map(|r| (r[0], r[1], r[2])).collect();
        assert_eq!(
            firsts,
            [
                ("alice", "shop", "4"),
                ("alice", "TOTAL", "4"),
                ("bob", "blog", "1"),
                ("bob", "TOTAL", "1")
            ]
        );
        let empty = usage_report(&[]);
        assert_eq!(
            format_usage(&empty),
            "no requests from 2025-06-01T10:00:00Z to 2025-06-02T10:01:00Z\n"
        );
    }
}
