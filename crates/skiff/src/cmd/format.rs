//! What several commands print the same way: tables, durations, ages, route URLs, quotas.

use std::time::{Duration, SystemTime};

use comfy_table::{CellAlignment, Table, presets};
use skiff_client::api::Quotas;
use skiff_manifest::format_size;

/// Left-aligned columns two spaces apart, each line starting with `indent`; no trailing
/// spaces. The columns whose entry in `right` is true are aligned to the right (figures).
pub fn table(headers: &[&str], rows: &[Vec<String>], indent: &str, right: &[bool]) -> String {
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_header(headers)
        .add_rows(rows);
    for (i, column) in table.column_iter_mut().enumerate() {
        // One space on each side of a cell but the first: two between columns, none in front.
        column.set_padding((u16::from(i > 0), 1));
        if right.get(i).copied().unwrap_or(false) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut out = String::new();
    for line in table.lines() {
        out.push_str(indent);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Milliseconds as the manifest writes durations: `30s`, `250ms`, `5m`, `1m 30s`.
pub fn format_ms(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

/// How long ago an RFC 3339 time was, e.g. `5m ago`; the text itself if it cannot be read (a
/// time in an offset other than `Z`, which this server does not send).
pub fn format_age(rfc3339: &str, now: SystemTime) -> String {
    let Ok(then) = humantime::parse_rfc3339_weak(rfc3339) else {
        return rfc3339.to_string();
    };
    let Ok(age) = now.duration_since(then) else {
        // A clock a little behind the server's.
        return "just now".into();
    };
    let secs = age.as_secs();
    match secs {
        0..=9 => "just now".into(),
        10..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// Where a route is served, as `skiff up` and `skiff deploy` show it: `/api/...` becomes
/// `URL/api (wildcard)`.
pub fn route_url(app_url: &str, route: &str) -> String {
    let wildcard = if route.ends_with("...") {
        " (wildcard)"
    } else {
        ""
    };
    let path = route.trim_end_matches("...").trim_end_matches('/');
    let path = if path.is_empty() { "/" } else { path };
    format!("{}{path}{wildcard}", app_url.trim_end_matches('/'))
}

pub fn format_quotas(q: &Quotas) -> String {
    format!(
        "{} apps, {} of code, {} on disk, {} requests in flight, {} memory and {} timeout per \
         component",
        q.max_apps,
        format_size(q.max_code_bytes),
        format_size(q.max_disk_bytes),
        q.max_in_flight,
        format_size(q.max_memory_bytes),
        format_ms(q.max_timeout_ms)
    )
}

/// An RFC 3339 time, for tests.
#[cfg(test)]
pub fn at(rfc3339: &str) -> SystemTime {
    humantime::parse_rfc3339_weak(rfc3339).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_without_trailing_spaces() {
        let rows = vec![
            vec!["hello".to_string(), "1".into(), "x".into()],
            vec!["a".to_string(), "12345".into(), "".into()],
        ];
        assert_eq!(
            table(&["NAME", "VERSION", "URL"], &rows, "", &[]),
            "NAME   VERSION  URL\n\
             hello  1        x\n\
             a      12345\n"
        );
        assert_eq!(
            table(&["A", "B"], &[vec!["é".into(), "z".into()]], "  ", &[]),
            "  A  B\n  é  z\n"
        );
        assert_eq!(
            table(
                &["N", "FIGURE"],
                &[vec!["a".into(), "12".into()]],
                "",
                &[false, true]
            ),
            "N  FIGURE\n\
             a      12\n"
        );
    }

    #[test]
    fn sizes_and_durations_read_like_the_manifest() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1000), "1000 B");
        assert_eq!(format_size(1024), "1 KiB");
        assert_eq!(format_size(128 << 20), "128 MiB");
        assert_eq!(format_size(1_258_291), "1.2 MiB");
        assert_eq!(format_size(3 << 30), "3 GiB");
        assert_eq!(format_ms(30_000), "30s");
        assert_eq!(format_ms(250), "250ms");
        assert_eq!(format_ms(300_000), "5m");
        assert_eq!(format_ms(90_000), "1m 30s");
    }

    #[test]
    fn ages_are_relative_to_now() {
        let now = at("2025-06-01T12:00:00Z");
        assert_eq!(format_age("2025-06-01T11:59:58.123Z", now), "just now");
        assert_eq!(format_age("2025-06-01T11:59:30Z", now), "30s ago");
        assert_eq!(format_age("2025-06-01T11:55:00Z", now), "5m ago");
        assert_eq!(format_age("2025-06-01T09:00:00Z", now), "3h ago");
        assert_eq!(format_age("2025-05-30T12:00:00Z", now), "2d ago");
        assert_eq!(format_age("2025-06-01T12:00:05Z", now), "just now");
        assert_eq!(format_age("yesterday", now), "yesterday");
    }

    #[test]
    fn route_urls_read_like_skiff_up() {
        let url = "http://hello.localhost:3000/";
        assert_eq!(
            route_url(url, "/..."),
            "http://hello.localhost:3000/ (wildcard)"
        );
        assert_eq!(
            route_url(url, "/api/..."),
            "http://hello.localhost:3000/api (wildcard)"
        );
        assert_eq!(
            route_url(url, "/health"),
            "http://hello.localhost:3000/health"
        );
    }
}
