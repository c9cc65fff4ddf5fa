//! `skiff deploy`: check the manifest here, pack the folder, upload it with a progress line,
//! and print where the new version is served. With `--from REF`, the server pulls the app
//! from a registry instead.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use clap::Args;
use skiff_client::api::{AppInfo, DeployFrom, check_name};
use skiff_client::{Role, StatusCode};

use super::format::route_url;
use super::progress::{Phase, Progress};
use super::{ConnectArgs, finish, pretty_json};

#[derive(Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The app's name on the server [default: the name in skiff.toml].
    #[arg(long)]
    pub name: Option<String>,
    /// Deploy an app the server pulls from a registry (HOST[:PORT]/REPOSITORY[:TAG], pushed
    /// with `skiff push`) instead of uploading a folder. The server must allow that registry
    /// (`skiff server --allow-registry`).
    #[arg(long, value_name = "REF", conflicts_with = "folder")]
    pub from: Option<String>,
    /// The app folder (holding skiff.toml), or the manifest itself.
    #[arg(default_value = ".")]
    pub folder: PathBuf,
}

pub async fn deploy(args: DeployArgs) -> Result<ExitCode> {
    Ok(finish(run(args).await))
}

async fn run(args: DeployArgs) -> Result<()> {
    let client = args.connect.client(Role::Tenant)?;
    if let Some(from) = args.from {
        // Checked here too, so that a typo needs no server to be told.
        skiff_oci::ImageRef::parse(&from)?;
        eprintln!("Asking the server to pull {from}");
        let request = DeployFrom {
            from,
            name: args.name,
        };
        let reply = client.deploy_from(&request).await?;
        return print_deployed(reply, args.connect.json);
    }
    let manifest = skiff_manifest::manifest_in(&args.folder);
    // The manifest first: a mistake in it is the likeliest failure, and needs no server.
    let name = {
        let manifest = manifest.clone();
        let given_name = args.name.clone();
        tokio::task::spawn_blocking(move || app_name(&manifest, given_name))
            .await
            .context("reading the manifest")??
    };
    // Then something cheap of the server: an unreachable server or a refused token is reported
    // before a big folder is packed, and before an upload the server would cut off.
    client.apps().await?;

    let progress = Progress::start(std::io::stderr().is_terminal());
    progress.set(Phase::Packing);
    // No context in front of a pack error: a manifest report must print as it is, starting
    // with `error:`.
    let bundle = tokio::task::spawn_blocking(move || {
        skiff_server::bundle::pack(&manifest).map_err(|e| anyhow!("{e}"))
    })
    .await
    .context("packing the app")??;

    progress.set(Phase::Uploading {
        total: bundle.bytes.len() as u64,
        files: bundle.files,
    });
    let sent = progress.clone();
    let outcome = client
        .deploy(&name, Bytes::from(bundle.bytes), move |n| sent.sent(n))
        .await;
    progress.finish();
    print_deployed(outcome?, args.connect.json)
}

fn print_deployed(reply: skiff_client::Reply<AppInfo>, json: bool) -> Result<()> {
    if json {
        print!("{}", pretty_json(reply.body())?);
        return Ok(());
    }
    let info = reply
        .decode()
        .context("the server deployed the app; `skiff apps list` shows it")?;
    print!(
        "{}",
        format_deployed(&info, reply.status() == StatusCode::CREATED)
    );
    Ok(())
}

/// The app's name on the server: `--name`, else `[app] name` from the manifest, which is read
/// (blocking) and checked in full, so that a bad manifest gets the report `skiff up` prints.
fn app_name(manifest: &Path, given_name: Option<String>) -> Result<String> {
    let app = skiff_manifest::load(manifest)?;
    match given_name {
        Some(name) => {
            check_name("app", &name).map_err(|e| anyhow!("--name: {e}"))?;
            Ok(name)
        }
        None => {
            check_name("app", &app.name).map_err(|e| {
                anyhow!(
                    "{e}; change `[app] name` in {} or pass --name",
                    manifest.display()
                )
            })?;
            Ok(app.name)
        }
    }
}

/// `Deployed NAME version V (new|updated)`, the URL, then one line per route.
fn format_deployed(info: &AppInfo, new: bool) -> String {
    let s = &info.summary;
    let mut out = format!(
        "Deployed {} version {} ({})\n{}\n",
        s.name,
        s.version,
        if new { "new" } else { "updated" },
        s.url
    );
    if !info.routes.is_empty() {
        out.push_str("Routes:\n");
        for route in &info.routes {
            let _ = writeln!(
                out,
                "  {}: {}",
                route.served_by(),
                route_url(&s.url, &route.route)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use skiff_client::api::{AppStatus, AppSummary, RouteInfo};

    use super::*;

    #[test]
    fn a_deploy_prints_version_url_and_routes() {
        let info = AppInfo {
            summary: AppSummary {
                name: "hello".into(),
                version: 2,
                app_version: "0.1.0".into(),
                url: "http://hello.localhost:3000/".into(),
                deployed_at: "2025-06-01T10:00:00.000Z".into(),
                status: AppStatus::Live,
            },
            tenant: "acme".into(),
            routes: vec![RouteInfo {
                route: "/...".into(),
                component: "hello".into(),
                upstream: false,
                middleware: Vec::new(),
            }],
            components: vec![],
            versions: vec![],
            cluster: None,
            schedules: Vec::new(),
            consumers: Vec::new(),
        };
        assert_eq!(
            format_deployed(&info, false),
            "Deployed hello version 2 (updated)\n\
             http://hello.localhost:3000/\n\
             Routes:\n  hello: http://hello.localhost:3000/ (wildcard)\n"
        );
        assert!(format_deployed(&info, true).starts_with("Deployed hello version 2 (new)\n"));
    }
}
