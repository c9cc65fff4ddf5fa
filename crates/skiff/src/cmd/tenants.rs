//! `skiff tenants create|list|set-quotas|rotate-token|revoke-token|delete` (the admin's; a
//! tenant may rotate or revoke its own token).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, anyhow};
use clap::{Args, Subcommand};
use skiff_client::Role;
use skiff_client::api::{CreateTenant, QuotaOverrides, TenantCreated, TenantList, check_name};
use skiff_manifest::format_size;

use super::format::{format_ms, format_quotas, table};
use super::{ConnectArgs, NamedArgs, finish, show};

#[derive(Subcommand)]
pub enum TenantsCommand {
    /// Create a tenant; its token is printed alone on the last line.
    Create {
        #[command(flatten)]
        connect: ConnectArgs,
        #[command(flatten)]
        quotas: QuotaArgs,
        name: String,
    },
    /// The tenants, with their quotas and app counts.
    List {
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Change some of a tenant's quotas; those not given stay as they are. A lower in-flight
    /// ceiling applies at once, the others from the tenant's next deploy.
    SetQuotas {
        #[command(flatten)]
        connect: ConnectArgs,
        #[command(flatten)]
        quotas: QuotaArgs,
        name: String,
    },
    /// Give a tenant a new token, printed alone on the last line; the old one stops working
    /// at once. A tenant's own token may rotate itself.
    RotateToken(NamedArgs),
    /// Take a tenant's token away: nothing is done as the tenant until `rotate-token` gives it
    /// a new one. Its apps keep serving. A tenant's own token may revoke itself.
    RevokeToken(NamedArgs),
    /// Delete a tenant: its token stops working, and its data goes. A tenant that still has
    /// apps is deleted only with --with-apps, which deletes them too.
    Delete {
        #[command(flatten)]
        connect: ConnectArgs,
        /// Also delete the tenant's apps.
        #[arg(long)]
        with_apps: bool,
        name: String,
    },
}

/// A new tenant's quotas; each one left out takes the server's default.
#[derive(Args, Clone, Default)]
pub struct QuotaArgs {
    /// Apps the tenant may have deployed at once.
    #[arg(long, value_name = "N")]
    pub max_apps: Option<u32>,
    /// Total size of the Wasm components of all its live apps, e.g. `256MiB`.
    #[arg(long, value_name = "SIZE", value_parser = skiff_manifest::parse_memory)]
    pub max_code_size: Option<u64>,
    /// Requests of all its apps running at once; more get 503.
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<u32>,
    /// Highest `limits.memory` one of its components may ask for, e.g. `256MiB`.
    #[arg(long, value_name = "SIZE", value_parser = skiff_manifest::parse_memory)]
    pub max_memory: Option<u64>,
    /// Highest `limits.timeout` one of its components may ask for, e.g. `60s`.
    #[arg(long, value_name = "DURATION", value_parser = crate::single::parse_timeout)]
    pub max_timeout: Option<Duration>,
    /// Bytes on disk of all its apps (every version kept, writable files, key-value data),
    /// e.g. `2GiB`.
    #[arg(long, value_name = "SIZE", value_parser = skiff_manifest::parse_memory)]
    pub max_disk: Option<u64>,
}

impl QuotaArgs {
    fn overrides(&self) -> QuotaOverrides {
        QuotaOverrides {
            max_apps: self.max_apps,
            max_code_bytes: self.max_code_size,
            max_in_flight: self.max_in_flight,
            max_memory_bytes: self.max_memory,
            max_timeout_ms: self
                .max_timeout
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            max_disk_bytes: self.max_disk,
        }
    }
}

pub async fn tenants(command: TenantsCommand) -> Result<ExitCode> {
    Ok(finish(run(command).await))
}

async fn run(command: TenantsCommand) -> Result<()> {
    // The name first: a bad one is reported before the config file is read.
    match &command {
        TenantsCommand::List { .. } => {}
        TenantsCommand::Create { name, .. }
        | TenantsCommand::SetQuotas { name, .. }
        | TenantsCommand::RotateToken(NamedArgs { name, .. })
        | TenantsCommand::RevokeToken(NamedArgs { name, .. })
        | TenantsCommand::Delete { name, .. } => {
            check_name("tenant", name).map_err(|e| anyhow!(e))?;
        }
    }
    match command {
        TenantsCommand::Create {
            connect,
            quotas,
            name,
        } => {
            let client = connect.client(Role::Admin)?;
            let body = CreateTenant {
                name,
                quotas: quotas.overrides(),
            };
            show(
                client.create_tenant(&body).await?,
                connect.json,
                |created| format_tenant_created(&created),
            )
        }
        TenantsCommand::List { connect } => {
            let client = connect.client(Role::Admin)?;
            show(client.tenants().await?, connect.json, |list| {
                format_tenant_list(&list)
            })
        }
        TenantsCommand::SetQuotas {
            connect,
            quotas,
            name,
        } => {
            let client = connect.client(Role::Admin)?;
            let reply = client.set_quotas(&name, &quotas.overrides()).await?;
            show(reply, connect.json, |tenant| {
                format!(
                    "tenant {}\n  quotas: {}\n",
                    tenant.name,
                    format_quotas(&tenant.quotas)
                )
            })
        }
        TenantsCommand::RotateToken(NamedArgs { connect, name }) => {
            let client = connect.client(Role::Any)?;
            show(client.rotate_token(&name).await?, connect.json, |issued| {
                format!(
                    "New token of tenant {} (shown only now; the old one no longer works):\n{}\n",
                    issued.name, issued.token
                )
            })
        }
        TenantsCommand::RevokeToken(NamedArgs { connect, name }) => {
            let client = connect.client(Role::Any)?;
            client.revoke_token(&name).await?;
            if !connect.json {
                println!(
                    "revoked the token of tenant {name}; `skiff tenants rotate-token {name}` \
                     gives it a new one"
                );
            }
            Ok(())
        }
        TenantsCommand::Delete {
            connect,
            with_apps,
            name,
        } => {
            let client = connect.client(Role::Admin)?;
            client.delete_tenant(&name, with_apps).await?;
            if !connect.json {
                println!("deleted tenant {name}");
            }
            Ok(())
        }
    }
}

/// Scripts take the token with `tail -n1`: it must stay alone on the last line.
fn format_tenant_created(created: &TenantCreated) -> String {
    format!(
        "Created tenant {}\n  quotas: {}\nIts token (shown only now; the tenant passes it as \
         --token or SKIFF_TOKEN):\n{}\n",
        created.name,
        format_quotas(&created.quotas),
        created.token
    )
}

fn format_tenant_list(list: &TenantList) -> String {
    if list.tenants.is_empty() {
        return "no tenants; create one with `skiff tenants create NAME`\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .tenants
        .iter()
        .map(|t| {
            let q = &t.quotas;
            vec![
                t.name.clone(),
                format!("{}/{}", t.apps, q.max_apps),
                format_size(q.max_code_bytes),
                q.max_in_flight.to_string(),
                format_size(q.max_memory_bytes),
                format_ms(q.max_timeout_ms),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "APPS",
            "MAX-CODE",
            "MAX-IN-FLIGHT",
            "MAX-MEMORY",
            "MAX-TIMEOUT",
        ],
        &rows,
        "",
        &[],
    )
}

#[cfg(test)]
mod tests {
    use skiff_client::api::{Quotas, TenantSummary};

    use super::*;

    #[test]
    fn a_new_tenants_token_is_alone_on_the_last_line() {
        let created = TenantCreated {
            name: "acme".into(),
            token: "skt_secret".into(),
            quotas: Quotas::default(),
        };
        let text = format_tenant_created(&created);
        assert_eq!(text.lines().last(), Some("skt_secret"));
        assert!(text.ends_with("\nskt_secret\n"));
        assert!(
            text.contains(
                "100 apps, 512 MiB of code, 10 GiB on disk, 1000 requests in flight, 512 MiB \
                 memory and 5m timeout"
            ),
            "{text}"
        );
    }

    #[test]
    fn tenant_lists_show_use_against_quota() {
        let list = TenantList {
            tenants: vec![TenantSummary {
                name: "acme".into(),
                quotas: Quotas::default(),
                apps: 3,
            }],
        };
        assert_eq!(
            format_tenant_list(&list),
            "NAME  APPS   MAX-CODE  MAX-IN-FLIGHT  MAX-MEMORY  MAX-TIMEOUT\n\
             acme  3/100  512 MiB   1000           512 MiB     5m\n"
        );
        assert!(format_tenant_list(&TenantList { tenants: vec![] }).contains("tenants create"));
    }

    #[test]
    fn quota_flags_become_overrides() {
        let args = QuotaArgs {
            max_code_size: Some(256 << 20),
            max_timeout: Some(Duration::from_secs(60)),
            ..QuotaArgs::default()
        };
        assert_eq!(
            args.overrides(),
            QuotaOverrides {
                max_code_bytes: Some(256 << 20),
                max_timeout_ms: Some(60_000),
                ..QuotaOverrides::default()
            }
        );
    }
}
