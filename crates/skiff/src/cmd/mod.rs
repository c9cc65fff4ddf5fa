//! The client commands (`deploy`, `apps`, `tenants`, `logs`, `usage`, `login`, `logout`,
//! `whoami`): each file parses its arguments, calls a `skiff server`'s management API through
//! `skiff-client`, and prints a table for people, or the server's JSON with `--json`.

use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::Args;
use serde::de::DeserializeOwned;
use skiff_client::{Client, Reply, Role};

pub mod apps;
pub mod deploy;
mod format;
pub mod login;
pub mod logs;
mod progress;
pub mod tenants;
pub mod usage;
pub mod whoami;

pub(crate) use format::route_url;

/// Where the server is and who we are; flags win over the environment, which wins over the
/// config file `skiff login` writes.
#[derive(Args, Clone)]
pub struct ConnectArgs {
    /// The server's management API [default: the one `skiff login` saved, else
    /// http://127.0.0.1:3001].
    // No clap default: it would hide whether the config file should be asked.
    #[arg(long, env = "SKIFF_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// The bearer token (a tenant's; for `tenants`, the admin token, also read from
    /// SKIFF_ADMIN_TOKEN; for `usage`, either, SKIFF_ADMIN_TOKEN when SKIFF_TOKEN is unset);
    /// without one, the token `skiff login` saved.
    #[arg(
        long,
        env = "SKIFF_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Print the server's JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A connection and the app or tenant a command is about.
#[derive(Args)]
pub struct NamedArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    pub name: String,
}

impl ConnectArgs {
    /// The client for a command that needs `role`'s token.
    fn client(&self, role: Role) -> Result<Client> {
        Ok(Client::from_env(
            role,
            self.server.as_deref(),
            self.token.as_deref(),
        )?)
    }
}

// Each command prints its own failure and answers exit code 1, rather than handing an error to
// main: a manifest report (local or from the server) must be printed verbatim, without the
// `error: ` prefix main would put in front of its own `error: `.

/// Exit code 0, or the error printed and exit code 1.
pub fn finish(outcome: Result<()>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", render_error(&err));
            ExitCode::FAILURE
        }
    }
}

/// `error: ` and the message, unless the message is already a full report that starts so
/// (a manifest error, from our own check or from the server's).
fn render_error(err: &anyhow::Error) -> String {
    let text = format!("{err:#}");
    if text.starts_with("error:") || text.starts_with("error[") {
        text
    } else {
        format!("error: {text}")
    }
}

/// Prints an answer: as it came (re-indented) with `--json`, else decoded and formatted by
/// `human`.
fn show<T: DeserializeOwned>(
    reply: Reply<T>,
    json: bool,
    human: impl FnOnce(T) -> String,
) -> Result<()> {
    let text = if json {
        pretty_json(reply.body())?
    } else {
        human(reply.decode()?)
    };
    print!("{text}");
    Ok(())
}

/// The server's JSON, indented for people, with its fields in the order the server sent them
/// (a `serde_json::Value` would sort them).
fn pretty_json(body: &[u8]) -> Result<String> {
    let mut out = Vec::new();
    let mut reader = serde_json::Deserializer::from_slice(body);
    let mut writer = serde_json::Serializer::pretty(&mut out);
    serde_transcode::transcode(&mut reader, &mut writer)
        .and_then(|()| reader.end())
        .map_err(|e| anyhow!("the server's answer is not JSON ({e})"))?;
    let mut text = String::from_utf8(out).context("serde_json wrote text that is not UTF-8")?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_that_start_with_error_print_as_they_are() {
        let report = "error: unknown field `sorce` in [component.hello]\n --> skiff.toml:7:1\n  |";
        assert_eq!(render_error(&anyhow!(report)), report);
        assert_eq!(
            render_error(&anyhow!("app `x` not found")),
            "error: app `x` not found"
        );
    }

    #[test]
    fn json_keeps_the_servers_field_order() {
        let text = pretty_json(br#"{"name":"hello","version":2,"app_version":"0.1.0"}"#).unwrap();
        assert_eq!(
            text,
            "{\n  \"name\": \"hello\",\n  \"version\": 2,\n  \"app_version\": \"0.1.0\"\n}\n"
        );
        assert!(pretty_json(b"{\"a\":1} x").is_err());
    }
}
