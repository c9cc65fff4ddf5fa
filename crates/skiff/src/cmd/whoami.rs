//! `skiff whoami`: whose token this is on a server.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use skiff_client::Role;
use skiff_client::api::WhoAmI;

use super::format::format_quotas;
use super::{ConnectArgs, finish, show};

#[derive(Args)]
pub struct WhoamiArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub async fn whoami(args: WhoamiArgs) -> Result<ExitCode> {
    Ok(finish(run(args).await))
}

async fn run(args: WhoamiArgs) -> Result<()> {
    let client = args.connect.client(Role::Any)?;
    let server = client.server().url();
    show(client.whoami().await?, args.connect.json, |who| {
        format_whoami(&who, server)
    })
}

fn format_whoami(who: &WhoAmI, server: &str) -> String {
    match (&who.tenant, &who.quotas) {
        (Some(tenant), Some(quotas)) => format!(
            "tenant {tenant} on {server}\n  quotas: {}\n",
            format_quotas(quotas)
        ),
        _ => format!("the admin of {server}\n"),
    }
}
