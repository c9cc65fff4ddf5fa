//! Schedules: `[[component.<id>.schedule]]`, a cron pattern (five fields, or six with leading
//! seconds), an IANA time zone (UTC by default), the request path an HTTP component is called
//! at (or the arguments a command component runs with), and what to do when a run is still going when the next one is due. Checked here like
//! every other field, so a pattern that does not parse, a zone that does not exist or a pattern
//! that never fires (`0 0 30 2 *`) is a manifest error naming `component.<id>.schedule[<i>]`.
//!
//! [`CronTimes`] is the evaluated form the scheduler asks for due times; it takes and returns
//! `SystemTime`, so no caller needs the cron or calendar crates.

use std::str::FromStr;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::component::ComponentCx;
use crate::raw::RawSchedule;
use crate::toml_error::closest;
use crate::{Location, ManifestError};

/// The most schedules one app may have, over all its components. Each schedule may start a
/// run every second, and a run is a sandbox with the component's full limits: an app with a
/// thousand every-second schedules would take a host's workers from every other app. Runs
/// also count against the component's `max_concurrency` and its tenant's in-flight quota.
pub const MAX_SCHEDULES_PER_APP: usize = 32;

/// The longest schedule `path`, in bytes: it becomes a request target and a log field.
pub const MAX_SCHEDULE_PATH: usize = 1024;

/// One `[[component.<id>.schedule]]` entry, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Index into [`crate::App::components`].
    pub component: usize,
    /// Its position among the component's schedules, as in `component.<id>.schedule[<index>]`.
    pub index: usize,
    /// The pattern as written, e.g. `0 30 2 * * *`.
    pub cron: String,
    /// An IANA zone name, e.g. `Europe/Paris`; `UTC` when not written.
    pub timezone: String,
    /// For an HTTP component, the path (and query) it is called at, starting with `/`.
    pub path: Option<String>,
    /// For a command component (`wasi:cli/run`), its arguments after the program name.
    #[serde(default)]
    pub args: Vec<String>,
    pub overlap: Overlap,
    /// Where the entry is written, for errors found later.
    pub location: Location,
}

/// What happens when a run is due while the schedule's previous run is still going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overlap {
    /// The due run does not happen; it is counted as skipped.
    #[default]
    Skip,
    /// The due run starts beside the one still going.
    Allow,
}

impl Overlap {
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Allow => "allow",
        }
    }
}

impl Schedule {
    /// The evaluated pattern in its zone. Validation made it once already; this fails only for
    /// a `Schedule` built or stored by other means.
    pub fn times(&self) -> Result<CronTimes, String> {
        CronTimes::new(&self.cron, &self.timezone)
    }
}

/// A cron pattern in a time zone, ready to give due times.
#[derive(Debug, Clone)]
pub struct CronTimes {
    cron: Cron,
    zone: Tz,
}

impl CronTimes {
    /// Parses `pattern` (five fields, or six with leading seconds; no year field) in `zone`.
    pub fn new(pattern: &str, zone: &str) -> Result<CronTimes, String> {
        let zone = Tz::from_str(zone).map_err(|_| format!("unknown time zone `{zone}`"))?;
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(pattern)
            .map_err(|e| e.to_string())?;
        Ok(CronTimes { cron, zone })
    }

    /// The first due time strictly after `after`, or `None` if the pattern never fires again.
    /// Due times are whole seconds.
    pub fn next_after(&self, after: SystemTime) -> Option<SystemTime> {
        let after: DateTime<Utc> = after.into();
        let local = after.with_timezone(&self.zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| SystemTime::from(t.with_timezone(&Utc)))
    }

    /// The next `n` due times after `after`.
    pub fn upcoming(&self, after: SystemTime, n: usize) -> Vec<SystemTime> {
        let mut out = Vec::with_capacity(n);
        let mut at = after;
        while out.len() < n {
            match self.next_after(at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
            }
        }
        out
    }
}

impl ComponentCx<'_> {
    /// The component's schedules; `component` is its index in the app, `taken` how many
    /// schedules earlier components have (for the per-app cap).
    pub(crate) fn schedules(
        &self,
        raw: Vec<Spanned<RawSchedule>>,
        component: usize,
        taken: usize,
    ) -> Result<Vec<Schedule>, ManifestError> {
        let mut out = Vec::with_capacity(raw.len());
        for (index, entry) in raw.into_iter().enumerate() {
            let field = format!("component.{}.schedule[{index}]", self.id);
            let span = entry.span();
            if taken + index >= MAX_SCHEDULES_PER_APP {
                return Err(self.err(
                    span,
                    &field,
                    format!("the app has more than {MAX_SCHEDULES_PER_APP} schedules"),
                    format!("an app may have at most {MAX_SCHEDULES_PER_APP} schedules; let one schedule do several jobs (e.g. one component that checks what is due)"),
                ));
            }
            let location = Location::from_offset(self.src.text, span.start);
            let entry = entry.into_inner();
            let Some(cron) = entry.cron else {
                return Err(self.err(
                    span,
                    &format!("{field}.cron"),
                    "missing `cron` (when the schedule runs)",
                    "e.g. cron = \"0 30 2 * * *\" (seconds minutes hours day month weekday; the seconds field is optional)",
                ));
            };
            let timezone = match entry.timezone {
                None => "UTC".to_string(),
                Some(zone) => {
                    if Tz::from_str(zone.get_ref()).is_err() {
                        let names: Vec<&str> =
                            chrono_tz::TZ_VARIANTS.iter().map(|z| z.name()).collect();
                        let help = match closest(zone.get_ref(), &names) {
                            Some(near) => format!("did you mean \"{near}\"?"),
                            None => "use an IANA zone name such as \"UTC\", \"Europe/Paris\" or \"America/New_York\"".to_string(),
                        };
                        return Err(self.err(
                            zone.span(),
                            &format!("{field}.timezone"),
                            format!("`{}` is not a known time zone", zone.get_ref()),
                            help,
                        ));
                    }
                    zone.into_inner()
                }
            };
            let cron_field = format!("{field}.cron");
            let times = CronTimes::new(cron.get_ref(), &timezone).map_err(|why| {
                self.err(
                    cron.span(),
                    &cron_field,
                    format!("`{}` is not a valid cron pattern: {why}", cron.get_ref()),
                    "write five fields (minute hour day month weekday), or six with leading seconds, e.g. \"*/10 * * * * *\" for every ten seconds or \"0 30 2 * * *\" for 02:30:00 daily",
                )
            })?;
            if times.next_after(SystemTime::now()).is_none() {
                return Err(self.err(
                    cron.span(),
                    &cron_field,
                    format!("`{}` never fires (no date matches it)", cron.get_ref()),
                    "check the day and month fields: e.g. day 30 of month 2 does not exist; \"0 0 L 2 *\" is the last day of February",
                ));
            }
            let path = match entry.path {
                None => None,
                Some(path) => {
                    let p = path.get_ref();
                    let why = if !p.starts_with('/') {
                        Some("does not start with `/`")
                    } else if p.len() > MAX_SCHEDULE_PATH {
                        Some("is longer than 1024 bytes")
                    } else if !p.chars().all(|c| c.is_ascii_graphic()) || p.contains('#') {
                        Some("may contain only printable ASCII characters without spaces or `#`")
                    } else {
                        None
                    };
                    if let Some(why) = why {
                        let fixed = format!("/{}", p.trim().trim_start_matches('/'));
                        return Err(self.err(
                            path.span(),
                            &format!("{field}.path"),
                            format!("`{p}` {why}"),
                            format!("write the request path the run calls, percent-encoded, e.g. path = \"{fixed}\""),
                        ));
                    }
                    Some(path.into_inner())
                }
            };
            let overlap = match entry.overlap {
                None => Overlap::default(),
                Some(o) => match o.get_ref().as_str() {
                    "skip" => Overlap::Skip,
                    "allow" => Overlap::Allow,
                    other => {
                        let help = match closest(other, &["skip", "allow"]) {
                            Some(near) => format!("did you mean \"{near}\"? (\"skip\" or \"allow\")"),
                            None => "write \"skip\" (the default: a run still going makes the next one skip) or \"allow\" (runs may overlap)".to_string(),
                        };
                        return Err(self.err(
                            o.span(),
                            &format!("{field}.overlap"),
                            format!("`{other}` is not an overlap policy"),
                            help,
                        ));
                    }
                },
            };
            out.push(Schedule {
                component,
                index,
                cron: cron.into_inner(),
                timezone,
                path,
                args: entry.args.unwrap_or_default(),
                overlap,
                location,
            });
        }
        Ok(out)
    }
}
