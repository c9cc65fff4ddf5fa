//! {{app-name}}: a job that skiff runs on a schedule (see skiff.toml). Each run is a fresh
//! instance that gets the schedule's `args`; what it prints goes to skiff's log, and a run
//! that exits with a failure is logged as failed.

use std::process::ExitCode;
use std::time::SystemTime;

fn main() -> ExitCode {
    let job = std::env::args().nth(1).unwrap_or_else(|| "manual".to_string());
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    match job.as_str() {
        "tick" | "nightly" | "manual" => {
            println!("{{app-name}}: {job} job ran at unix time {now}");
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("{{app-name}}: no job called `{other}`");
            ExitCode::FAILURE
        }
    }
}
