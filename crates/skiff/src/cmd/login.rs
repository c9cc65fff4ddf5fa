//! `skiff login` and `skiff logout`: check a token with the server and save it with the
//! server's address in the client config file; forget it again.

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::Args;
use skiff_client::api::{WhoAmI, paths};
use skiff_client::{
    ApiError, CaCert, CaCertFrom, Client, ClientConfig, ClientError, Role, Server, StatusCode,
    Token, TokenFrom, default_config_path,
};

use super::finish;

#[derive(Args)]
pub struct LoginArgs {
    /// The server's management API [default: the one saved before, else
    /// http://127.0.0.1:3001].
    #[arg(long, env = "SKIFF_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// The token to save, a tenant's or the admin token [default: the first line of stdin,
    /// asked for without echo on a terminal].
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Trust the CA in this PEM file for an https:// server whose certificate a private CA
    /// signed (the public CAs stay trusted); saved with the server, so later commands use it
    /// too [default: the one saved with this server before].
    #[arg(long, env = "SKIFF_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

pub async fn login(args: LoginArgs) -> Result<ExitCode> {
    Ok(finish(run_login(args).await))
}

pub fn logout() -> Result<ExitCode> {
    Ok(finish(run_logout()))
}

async fn run_login(args: LoginArgs) -> Result<()> {
    let path = default_config_path().ok_or_else(|| {
        anyhow!(
            "cannot tell where to save the login: none of SKIFF_CONFIG, XDG_CONFIG_HOME and \
             HOME is set; set SKIFF_CONFIG to the file to write"
        )
    })?;
    // A broken file is reported before a token is asked for, and never overwritten.
    let mut config = ClientConfig::load(&path)?.unwrap_or_else(|| ClientConfig::empty(path));
    let mut server = Server::resolve(args.server.as_deref(), Some(&config))?;
    if let Some(path) = args.ca_cert.filter(|path| !path.as_os_str().is_empty()) {
        // Saved as an absolute path: later commands may run in any folder.
        let path = std::path::absolute(&path).unwrap_or(path);
        server = server.with_ca_cert(CaCert::new(path, CaCertFrom::Flag));
    }
    let (value, from) = match args.token {
        Some(value) => (value.trim().to_string(), TokenFrom::Flag),
        None => (read_token_from_stdin().await?, TokenFrom::Stdin),
    };
    if value.is_empty() {
        return Err(anyhow!(
            "the token from {from} is empty; give the token to save (`skiff tenants create NAME` \
             prints a tenant's)"
        ));
    }
    let client = Client::new(server, Some(Token::new(value.clone(), from)), Role::Any)?;
    let kind = token_kind(&client).await?;
    let base = client.server().url();
    let ca_cert = client.server().ca_cert().map(CaCert::path);
    config.set_login(base, &value, ca_cert);
    config.save()?;
    println!("logged in to {base} as {kind}");
    if let Some(path) = ca_cert {
        println!("trusting the CA in {} for it", path.display());
    }
    println!("saved the server and token in {}", config.path().display());
    Ok(())
}

/// Whose token `client` holds, from the server's `GET /v1/whoami`: `admin`, or `tenant NAME`.
async fn token_kind(client: &Client) -> Result<String> {
    let reply = match client.whoami().await {
        Ok(reply) => reply,
        Err(ClientError::Api(refusal)) => {
            return Err(anyhow!(login_refusal(&refusal, client.server().url())));
        }
        Err(err @ ClientError::Transport { .. }) => {
            return Err(anyhow!("{err}; nothing was saved"));
        }
        Err(err) => return Err(err.into()),
    };
    let who: WhoAmI = serde_json::from_slice(reply.body())
        .map_err(|e| anyhow!("the server's answer to {} is not JSON: {e}", paths::WHOAMI))?;
    Ok(match who.tenant {
        Some(tenant) => format!("tenant {tenant}"),
        None => "admin".to_string(),
    })
}

/// Why `skiff login` saved nothing, from a non-2xx answer.
fn login_refusal(refusal: &ApiError, base: &str) -> String {
    if refusal.status() != StatusCode::UNAUTHORIZED {
        return format!("{refusal}\n  help: nothing was saved");
    }
    let message = refusal.detail().map_or_else(
        || refusal.status().to_string(),
        |detail| detail.message.trim_end().to_string(),
    );
    let from = refusal
        .token_from()
        .map(ToString::to_string)
        .unwrap_or_default();
    format!(
        "{message}\n  help: the server at {base} refused the token from {from}; nothing was \
         saved. `skiff tenants create NAME` prints a tenant's token; the admin token is the one \
         `skiff server` was started with"
    )
}

/// The token typed at a prompt (without echo) on a terminal, else the first line of stdin.
async fn read_token_from_stdin() -> Result<String> {
    let token = read_line_prompted("Token: ", true).await?;
    if token.is_empty() {
        return Err(anyhow!(
            "no token on stdin; type it at the prompt, pipe it in (`... | skiff login`), or pass \
             --token TOKEN"
        ));
    }
    Ok(token)
}

/// A line typed after `prompt` on a terminal (without echo if `hidden`), else the first line
/// of stdin; trimmed.
pub(crate) async fn read_line_prompted(prompt: &str, hidden: bool) -> Result<String> {
    let line = if std::io::stdin().is_terminal() {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
        if hidden {
            read_line_without_echo().await?
        } else {
            tokio::task::spawn_blocking(read_stdin_line)
                .await
                .context("reading stdin")??
        }
    } else {
        tokio::task::spawn_blocking(read_stdin_line)
            .await
            .context("reading stdin")??
    };
    Ok(line.trim().to_string())
}

fn read_stdin_line() -> Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read stdin")?;
    Ok(line)
}

#[cfg(unix)]
async fn read_line_without_echo() -> Result<String> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    let shown = tcgetattr(&stdin).context("cannot read the terminal's settings")?;
    let mut hidden = shown.clone();
    hidden.local_modes.remove(LocalModes::ECHO);
    // The Enter that ends the token still moves the cursor to the next line.
    hidden.local_modes.insert(LocalModes::ECHONL);
    tcsetattr(&stdin, OptionalActions::Flush, &hidden)
        .context("cannot turn off the terminal's echo")?;
    let restore = || {
        let _ = tcsetattr(std::io::stdin(), OptionalActions::Now, &shown);
    };
    let line = tokio::select! {
        line = tokio::task::spawn_blocking(read_stdin_line) => line,
        // Ctrl-C would otherwise end the process with the terminal left silent.
        _ = tokio::signal::ctrl_c() => {
            restore();
            eprintln!();
            std::process::exit(130);
        }
    };
    restore();
    line.context("reading stdin")?
}

#[cfg(not(unix))]
async fn read_line_without_echo() -> Result<String> {
    tokio::task::spawn_blocking(read_stdin_line)
        .await
        .context("reading stdin")?
}

fn run_logout() -> Result<()> {
    let Some(path) = default_config_path() else {
        println!(
            "no token saved: none of SKIFF_CONFIG, XDG_CONFIG_HOME and HOME is set, so there is \
             no client config file"
        );
        return Ok(());
    };
    let Some(mut config) = ClientConfig::load(&path)? else {
        println!("no token saved: {} does not exist", path.display());
        return Ok(());
    };
    if !config.remove_token() {
        println!("no token saved in {}", path.display());
        return Ok(());
    }
    config.save()?;
    match config.server() {
        Some(server) => println!(
            "removed the token from {} (the server {server} stays saved)",
            path.display()
        ),
        None => println!("removed the token from {}", path.display()),
    }
    Ok(())
}
