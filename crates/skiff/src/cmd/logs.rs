//! `skiff logs [--follow] NAME`: an app's guest output, one line each.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use skiff_client::Role;
use skiff_client::api::LogLine;

use super::{ConnectArgs, finish};

#[derive(Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Keep printing new lines as they come.
    #[arg(long, short)]
    pub follow: bool,
    /// Lines from the past to print first.
    #[arg(long, default_value_t = 100)]
    pub tail: u32,
    pub name: String,
}

pub async fn logs(args: LogsArgs) -> Result<ExitCode> {
    Ok(finish(run(args).await))
}

async fn run(args: LogsArgs) -> Result<()> {
    let client = args.connect.client(Role::Tenant)?;
    let json = args.connect.json;
    let stream = async {
        let mut lines = client.logs(&args.name, args.follow, args.tail).await?;
        let mut stdout = std::io::stdout();
        // `None`: the server ended the stream (the end of the tail without --follow, or the
        // server stopping).
        while let Some(line) = lines.next_line().await? {
            let text = if json {
                String::from_utf8_lossy(&line).into_owned()
            } else {
                format_log_bytes(&line)
            };
            if let Err(err) = writeln!(stdout, "{text}") {
                // `skiff logs app | head` closes the pipe: that is the reader being done, not
                // a failure.
                if err.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(());
                }
                return Err(err).context("cannot write to stdout");
            }
        }
        Ok(())
    };
    tokio::select! {
        outcome = stream => outcome,
        // Ctrl-C is how `--follow` is meant to end: stop quietly, dropping the connection.
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// One NDJSON line for people; a line that is not a [`LogLine`] is shown as it came rather
/// than lost.
fn format_log_bytes(line: &[u8]) -> String {
    match serde_json::from_slice::<LogLine>(line) {
        Ok(log) => format_log_line(&log),
        Err(_) => String::from_utf8_lossy(line).into_owned(),
    }
}

/// `TIME component [request N] stream: message`; a wasi:logging line shows its level too
/// (`log warn:`).
fn format_log_line(log: &LogLine) -> String {
    let level = log
        .level
        .as_deref()
        .map(|l| format!(" {l}"))
        .unwrap_or_default();
    // The server's own notices (e.g. "lines skipped") belong to no component or request.
    let source = if log.component.is_empty() {
        String::new()
    } else {
        format!(" {} [request {}]", log.component, log.request_id)
    };
    // On a cluster, the host whose guest wrote it.
    let host = log
        .host
        .as_deref()
        .map(|host| format!(" {host}"))
        .unwrap_or_default();
    format!(
        "{}{host}{source} {}{level}: {}",
        log.time,
        log.stream,
        log.message.trim_end_matches(['\n', '\r'])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_for_people() {
        let mut line = LogLine {
            time: "2025-06-01T10:00:00.123Z".into(),
            app: "hello".into(),
            component: "api".into(),
            request_id: 7,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            stream: "stdout".into(),
            level: None,
            message: "hi\n".into(),
            host: None,
        };
        assert_eq!(
            format_log_line(&line),
            "2025-06-01T10:00:00.123Z api [request 7] stdout: hi"
        );
        line.stream = "log".into();
        line.level = Some("warn".into());
        let json = serde_json::to_vec(&line).unwrap();
        assert_eq!(
            format_log_bytes(&json),
            "2025-06-01T10:00:00.123Z api [request 7] log warn: hi"
        );
        assert_eq!(format_log_bytes(b"not json"), "not json");
        line.component = String::new();
        line.stream = "skiff".into();
        line.message = "3 lines skipped".into();
        assert_eq!(
            format_log_line(&line),
            "2025-06-01T10:00:00.123Z skiff warn: 3 lines skipped"
        );
        line.host = Some("host-2".into());
        assert_eq!(
            format_log_line(&line),
            "2025-06-01T10:00:00.123Z host-2 skiff warn: 3 lines skipped"
        );
    }
}
