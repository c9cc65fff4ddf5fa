//! `skiff server`: the multi-tenant host. The work is in the `skiff-server` crate; this
//! module reads the flags and the admin token, and prints where it listens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use skiff_runtime::{Runtime, RuntimeConfig};
use skiff_server::api::Quotas;
use skiff_server::{AdminAuth, PlatformConfig, ServerOptions};

use crate::up::HttpArgs;

#[derive(Args)]
pub struct ServerArgs {
    /// Address of the data plane (the apps' traffic); port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Address of the management API; keep it on loopback or a private network.
    #[arg(long, default_value = "127.0.0.1:3001")]
    api_listen: SocketAddr,
    /// Serve the management API over HTTPS only, with this certificate (PEM: the server's
    /// certificate, then any intermediates). Needs --api-tls-key. The files are read again
    /// when they change (renewals need no restart).
    #[arg(
        long,
        value_name = "FILE",
        env = "SKIFF_API_TLS_CERT",
        requires = "api_tls_key"
    )]
    api_tls_cert: Option<PathBuf>,
    /// The private key of --api-tls-cert (PEM: PKCS#8, PKCS#1 or SEC1; RSA, ECDSA or
    /// Ed25519), unencrypted.
    #[arg(
        long,
        value_name = "FILE",
        env = "SKIFF_API_TLS_KEY",
        requires = "api_tls_cert"
    )]
    api_tls_key: Option<PathBuf>,
    /// Folder for apps, tenants, their key-value data and compiled code
    /// [default: the data folder's `server` subfolder].
    #[arg(long = "data", value_name = "DIR")]
    data: Option<PathBuf>,
    /// Apps are served at NAME.DOMAIN.
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// Also serve app NAME at /NAME/... when the host name names no app (for clients that
    /// cannot set a Host header); the app sees the path below /NAME, and the prefix in the
    /// `skiff-base-path` header.
    #[arg(long)]
    path_routing: bool,
    /// Read the admin token from this file instead of SKIFF_ADMIN_TOKEN.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Run without an admin token, for development on this machine: calls without a token
    /// act as the admin, and as the tenant `dev` on app routes. Loopback addresses only.
    #[arg(long)]
    insecure_dev: bool,
    /// Largest bundle a deploy may upload, e.g. `64MiB`.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = skiff_manifest::parse_memory)]
    max_bundle_size: u64,
    /// Longest a deploy's upload may take; a client that sends nothing for a tenth of it (at
    /// most 30 s) is cut off sooner. A tenant uploads one deploy at a time.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = crate::single::parse_timeout)]
    upload_timeout: Duration,
    /// Drop an app from memory after this long without requests (its compiled code stays
    /// cached; the next request maps it back in milliseconds).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = crate::single::parse_timeout)]
    idle_unload: Duration,
    /// Requests a tenant created without its own quota may have in flight at once, across all
    /// its apps [default: a quarter of --max-instances, so that no one tenant takes every
    /// instance the host has].
    #[arg(long, value_name = "N")]
    default_max_in_flight: Option<u32>,
    /// Versions kept per app, besides the live one, for rollbacks.
    #[arg(long, value_name = "N", default_value_t = 5)]
    keep_versions: usize,
    /// Meter fuel, so that apps may set `limits.fuel` (costs some speed for every guest).
    #[arg(long)]
    fuel: bool,
    /// Let apps reach private networks and this machine where their manifests name them.
    /// Off, every app reaches public addresses only, so that no tenant can call this
    /// server's management API or the operator's internal services.
    #[arg(long)]
    allow_private_outbound: bool,
    /// Let tenants deploy apps from this registry (`skiff deploy --from`): HOST[:PORT], or
    /// HOST[:PORT]/PREFIX for the repositories under a prefix. Repeatable; none by default.
    /// The server pulls with the registry login of the user it runs as (docker's config), so
    /// allow only what every tenant may deploy.
    #[arg(long = "allow-registry", value_name = "HOST[:PORT][/PREFIX]")]
    allow_registries: Vec<String>,
    /// Reach this registry over plain HTTP, or accept its certificate unverified (registries
    /// on this machine may use plain HTTP without it). Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registries: Vec<String>,
    /// How often minutes of usage that have ended are written to the data folder (they are
    /// also written at shutdown). For tests; the default suits billing.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::single::parse_timeout, hide = true)]
    usage_flush: Duration,
    /// How often every tenant's disk use is measured against its quota (a tenant over it has
    /// its apps' writes refused until it is under). For tests; the default suits a host.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::single::parse_timeout, hide = true)]
    disk_check_interval: Duration,
    /// Join a cluster of hosts that share tenants, apps and bundles in this Redis
    /// (`redis://[:PASSWORD@]HOST[:PORT][/DB]`, `rediss://` for TLS): any host serves any app,
    /// and a change made through one reaches all. The data folder is then only this host's
    /// cache.
    #[arg(
        long,
        value_name = "URL",
        env = "SKIFF_CLUSTER",
        hide_env_values = true
    )]
    cluster: Option<String>,
    /// Keep the cluster's deployed bundles in this OCI registry repository
    /// (`HOST[:PORT]/PATH`, each bundle tagged with its id) instead of its Redis, which then
    /// holds only records. Every host needs the same value and a registry login that may push,
    /// pull and delete there (`skiff registry login`).
    #[arg(
        long,
        value_name = "HOST[:PORT]/PATH",
        env = "SKIFF_CLUSTER_BUNDLES",
        requires = "cluster"
    )]
    cluster_bundles: Option<String>,
    /// Keep apps' queues in this Redis (`redis://[:PASSWORD@]HOST[:PORT][/DB]`), as Redis
    /// Streams, instead of `queues.redb` in the data folder [default on a cluster host: the
    /// cluster's Redis].
    #[arg(long, value_name = "URL", env = "SKIFF_QUEUES", hide_env_values = true)]
    queues: Option<String>,
    /// Most messages one queue may hold, waiting and being handled; publishing to a full
    /// queue fails until its consumers catch up [default: 100000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    queue_max_depth: Option<u64>,
    /// Most bytes of messages one tenant's queues may hold together, dead letters included,
    /// e.g. `1GiB`; publishing past it fails until its consumers catch up, so no tenant takes
    /// the memory (Redis) or disk of the others [default: 256MiB].
    #[arg(long, value_name = "SIZE", value_parser = skiff_manifest::parse_memory)]
    queue_max_bytes: Option<u64>,
    /// This host's name in the cluster (in `apps inspect` and metrics) [default: the
    /// machine's host name, which is the Pod's name on Kubernetes].
    #[arg(long, value_name = "NAME", env = "SKIFF_HOST_ID")]
    host_id: Option<String>,
    /// How often a cluster host checks that it has applied the cluster's newest change,
    /// catching up from the change log on any announcement it missed.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::single::parse_timeout, hide = true)]
    cluster_resync: Duration,
    /// Once asked to stop, go on serving this long while /readyz says not ready, so that load
    /// balancers stop sending requests first (on Kubernetes a preStop hook does this).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = crate::single::parse_delay)]
    drain_delay: Duration,
    #[command(flatten)]
    http: HttpArgs,
}

/// Where the server keeps its state and code, and the runtime it runs on.
pub struct Folders {
    pub data_dir: Option<PathBuf>,
    /// `--cache-dir` as given; unset, the code cache lives in the server's data folder.
    pub cache_dir: Option<PathBuf>,
    pub no_cache: bool,
}

pub async fn run(
    mut config: RuntimeConfig,
    folders: Folders,
    args: ServerArgs,
) -> Result<ExitCode> {
    let admin = admin_auth(&args)?;
    let data_dir = match (args.data.clone(), folders.data_dir) {
        (Some(dir), _) => dir,
        (None, Some(dir)) => dir.join("server"),
        (None, None) => bail!("skiff has no data folder (no $HOME): give one with --data DIR"),
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data folder {}", data_dir.display()))?;
    let data_dir = std::path::absolute(&data_dir)?;
    config.data_dir = Some(data_dir.clone());
    config.cache_dir = match (folders.no_cache, folders.cache_dir) {
        (true, _) => None,
        (false, Some(dir)) => Some(dir),
        (false, None) => Some(data_dir.join("cache")),
    };
    config.fuel = args.fuel;
    // Other people's apps run here: the operator's environment and networks are not theirs.
    config.variables_from_env = false;
    config.allow_private_outbound = args.allow_private_outbound;
    let platform = args.platform_config(data_dir, config.max_instances);
    let runtime = Runtime::new(config).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let mut options = ServerOptions::new(admin, platform);
    options.listen = args.listen;
    options.api_listen = args.api_listen;
    options.api_tls = match (&args.api_tls_cert, &args.api_tls_key) {
        (Some(cert), Some(key)) => Some(skiff_server::ApiTlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        // clap holds the two flags together.
        _ => None,
    };
    options.http_limits = args.http.limits();
    options.shutdown_grace = args.http.shutdown_grace();
    options.path_routing = args.path_routing;
    options.drain_delay = args.drain_delay;
    options.cluster = args.cluster_options()?;
    // Schedules' due times are leased in the cluster's Redis, so each runs on one host.
    if let (Some(url), Some(cluster)) = (&args.cluster, &options.cluster) {
        let leases = skiff_cluster::RedisLeases::new(url, &cluster.host_id)
            .map_err(|err| anyhow::anyhow!("--cluster (or SKIFF_CLUSTER): {err}"))?;
        options.schedule_leases = Some(std::sync::Arc::new(leases));
    }
    let server = skiff_server::bind(runtime, options).await?;
    let data = server.data_addr()?;
    let api = server.api_url()?;
    // Scripts wait for these lines: they are printed only once both sockets listen.
    println!("Serving http://{data}");
    println!("Management API {api}");
    println!(
        "Apps are served at http://NAME.{}:{}/",
        args.domain.trim_matches('.'),
        data.port()
    );
    if let Some(cluster) = server.platform().cluster() {
        println!(
            "Cluster host `{}` on {}, bundles in {}",
            cluster.host_id,
            cluster.state.describe(),
            cluster.bundles.location()
        );
    }
    server.serve(skiff_http::termination_signal()).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

impl ServerArgs {
    /// The cluster this host joins, if `--cluster` names one.
    fn cluster_options(&self) -> Result<Option<skiff_server::cluster::ClusterOptions>> {
        let Some(url) = &self.cluster else {
            return Ok(None);
        };
        let state = skiff_cluster::RedisState::new(url)
            .map_err(|err| anyhow::anyhow!("--cluster (or SKIFF_CLUSTER): {err}"))?;
        let host_id = match &self.host_id {
            Some(id) => id.clone(),
            None => host_name()?,
        };
        check_host_id(&host_id)?;
        let state = std::sync::Arc::new(state);
        let bundles: std::sync::Arc<dyn skiff_server::cluster::BundleStore> =
            match &self.cluster_bundles {
                None => state.clone(),
                Some(repository) => std::sync::Arc::new(
                    skiff_cluster::RegistryBundles::new(
                        repository,
                        self.max_bundle_size,
                        self.insecure_registries.clone(),
                    )
                    .map_err(|err| anyhow::anyhow!("--cluster-bundles: {err}"))?,
                ),
            };
        Ok(Some(skiff_server::cluster::ClusterOptions {
            state,
            bundles,
            host_id,
            resync: self.cluster_resync,
            // Apps' stores are shared through the cluster's Redis too, unless the operator's
            // runtime config places a label elsewhere.
            store_url: Some(url.clone()),
        }))
    }

    /// The platform's settings from the flags, its state in `data_dir`.
    fn platform_config(&self, data_dir: PathBuf, max_instances: u32) -> PlatformConfig {
        let mut platform = PlatformConfig::new(data_dir);
        platform.domain = self.domain.trim_matches('.').to_ascii_lowercase();
        platform.max_bundle_bytes = self.max_bundle_size;
        platform.keep_versions = self.keep_versions;
        platform.default_quotas = Quotas {
            max_in_flight: self
                .default_max_in_flight
                .unwrap_or(max_instances / 4)
                .max(1),
            ..Quotas::default()
        };
        platform.idle_unload = Some(self.idle_unload);
        platform.usage_flush = self.usage_flush;
        platform.upload_timeout = self.upload_timeout;
        platform.disk_check = self.disk_check_interval;
        platform.registries = skiff_server::RegistryPolicy::new(
            self.allow_registries.clone(),
            self.insecure_registries.clone(),
        );
        platform.queues_url = self.queues.clone();
        platform.queue_max_depth = self.queue_max_depth;
        platform.queue_max_bytes = self.queue_max_bytes;
        platform
    }
}

/// A host's name goes into Redis keys, metrics labels and `apps inspect`: printable, no
/// spaces, and as long as a DNS name at most.
fn check_host_id(id: &str) -> Result<()> {
    let printable = id.chars().all(|c| c.is_ascii_graphic());
    if id.is_empty() || id.len() > 253 || !printable {
        bail!(
            "the cluster host name {id:?} is not usable: give --host-id (or SKIFF_HOST_ID) of 1 \
             to 253 printable characters without spaces, e.g. the Pod's name"
        );
    }
    Ok(())
}

/// The machine's host name (the Pod's name on Kubernetes).
fn host_name() -> Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_string())
        .unwrap_or_default();
    if name.is_empty() {
        bail!("cannot tell this machine's host name: name this host with --host-id NAME");
    }
    Ok(name)
}

/// The admin token from `--admin-token-file` or `SKIFF_ADMIN_TOKEN`, or none with
/// `--insecure-dev` (which `skiff_server::bind` holds to loopback).
fn admin_auth(args: &ServerArgs) -> Result<AdminAuth> {
    if args.insecure_dev {
        tracing::warn!("--insecure-dev: the management API needs no token");
        return Ok(AdminAuth::InsecureDev);
    }
    let (token, from) = match &args.admin_token_file {
        Some(file) => (
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read --admin-token-file {}", file.display()))?,
            format!("the file {}", file.display()),
        ),
        None => match std::env::var("SKIFF_ADMIN_TOKEN") {
            Ok(token) => (token, "SKIFF_ADMIN_TOKEN".to_string()),
            Err(_) => bail!(
                "skiff server needs an admin token, to create tenants: set SKIFF_ADMIN_TOKEN \
                 (e.g. `export SKIFF_ADMIN_TOKEN=$(openssl rand -hex 32)`) or give \
                 --admin-token-file FILE; for a quick try on this machine only, use \
                 --insecure-dev"
            ),
        },
    };
    AdminAuth::token(&token).map_err(|err| anyhow::anyhow!("the admin token from {from} {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        server: ServerArgs,
    }

    #[test]
    fn host_ids_are_printable_names() {
        assert!(check_host_id("skiff-server-7d9c-x2k").is_ok());
        for bad in ["", "two words", "tab\there", &"x".repeat(254)] {
            let err = check_host_id(bad).unwrap_err().to_string();
            assert!(err.contains("--host-id"), "{err}");
        }
    }

    /// The library's defaults are the flags' defaults: a host built without the CLI runs as
    /// `skiff server` does.
    #[test]
    fn the_flags_default_to_the_platforms_defaults() {
        let args = Cli::parse_from(["skiff"]).server;
        let dir = PathBuf::from("/data");
        let from_flags = args.platform_config(dir.clone(), 4000);
        let mut defaults = PlatformConfig::new(dir);
        // The one default the CLI works out: a quarter of the host's instances per tenant.
        defaults.default_quotas.max_in_flight = 1000;
        assert_eq!(from_flags, defaults);
        let options = ServerOptions::new(AdminAuth::InsecureDev, defaults);
        assert_eq!(
            (args.listen, args.api_listen, args.path_routing),
            (options.listen, options.api_listen, options.path_routing)
        );
        assert_eq!(args.http.limits(), options.http_limits);
        assert_eq!(args.http.shutdown_grace(), options.shutdown_grace);
    }
}
