//! What the container's rootfs holds, and running it: an app (a manifest) served on the Pod's
//! network, or one component, served or run as a command.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use containerd_shim_wasm::sandbox::context::{RuntimeContext, Source};
use skiff_manifest::{App, Component};
use skiff_runtime::{CommandOptions, CommandOutcome, Runtime, RuntimeConfig, WasiGrant};

use crate::node_cache;
use crate::pod::{self, PodSettings};

/// Where `skiff push --image` puts the manifest, and its image's entrypoint.
const ROOT_MANIFEST: &str = "/skiff.toml";

/// Requests served at once by a component that sets no `limits.max_concurrency`; with the
/// others', what the instance pool is sized for.
const DEFAULT_CONCURRENCY: u32 = 100;

/// What the runtime spec says about the process: its argv (the entrypoint first) and
/// environment.
pub struct ContainerSpec {
    args: Vec<String>,
    envs: Vec<String>,
    /// The image has Wasm layers (a CNCF Wasm artifact) instead of a rootfs.
    wasm_layers: bool,
}

impl ContainerSpec {
    pub fn of(ctx: &impl RuntimeContext) -> ContainerSpec {
        ContainerSpec {
            args: ctx.args().to_vec(),
            envs: ctx.envs().to_vec(),
            wasm_layers: matches!(ctx.entrypoint().source, Source::Oci(_)),
        }
    }
}

#[derive(Debug)]
pub enum Workload {
    /// An app: its manifest.
    App(PathBuf),
    /// One `wasi:http` component, served on every path.
    HttpComponent(PathBuf),
    /// One `wasi:cli` command (component or core module), run to its exit code with the
    /// container's arguments.
    Command(PathBuf),
}

impl Workload {
    /// The manifest or component the container runs: its entrypoint, which `skiff push
    /// --image` makes `/skiff.toml`, and a Pod's `command` (or `ctr run IMAGE ID ARGS`)
    /// replaces, e.g. with a `.wasm` command of the image.
    pub fn find(spec: &ContainerSpec) -> Result<Workload> {
        if spec.wasm_layers {
            bail!(
                "this image is a Wasm artifact (Wasm layers, no rootfs); skiff runs container \
                 images: push the app with `skiff push --image REF FOLDER`"
            );
        }
        let Some(entrypoint) = spec.args.first() else {
            if Path::new(ROOT_MANIFEST).is_file() {
                refuse_system_path(Path::new(ROOT_MANIFEST), "the manifest")?;
                return Ok(Workload::App(PathBuf::from(ROOT_MANIFEST)));
            }
            bail!(
                "the image has no entrypoint and no {ROOT_MANIFEST}: push an app with `skiff \
                 push --image REF FOLDER`"
            );
        };
        // The process starts in `/`, so a relative entrypoint is relative to the root.
        let path = Path::new("/").join(entrypoint);
        if !path.is_file() {
            bail!(
                "the entrypoint {entrypoint} is no file in the image: give {ROOT_MANIFEST} (the \
                 default of `skiff push --image`) or the path of a .wasm file in it"
            );
        }
        refuse_system_path(&path, "the entrypoint")?;
        if path.extension().is_some_and(|e| e == "toml") {
            return Ok(Workload::App(path));
        }
        match component_kind(&path)? {
            Some(kind) => Ok(kind),
            None => bail!(
                "the entrypoint {entrypoint} is neither a skiff manifest (.toml) nor a Wasm file"
            ),
        }
    }
}

/// Whether the file at `path` is a Wasm file, and which kind of workload it is: a component
/// exporting `wasi:http/incoming-handler` (or WASI 0.3's `wasi:http/handler`) is served,
/// anything else (a `wasi:cli` component, a
/// core module) is run as a command. `None`: not Wasm at all.
fn component_kind(path: &Path) -> Result<Option<Workload>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if !wasmparser::Parser::is_component(&bytes) {
        return Ok(wasmparser::Parser::is_core_wasm(&bytes).then(|| Workload::Command(path.into())));
    }
    for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
        let payload =
            payload.with_context(|| format!("{} is no valid component", path.display()))?;
        if let wasmparser::Payload::ComponentExportSection(exports) = payload {
            for export in exports {
                let export =
                    export.with_context(|| format!("{} is no valid component", path.display()))?;
                // WASIp2's handler, or WASI 0.3's.
                if export.name.name.starts_with("wasi:http/incoming-handler@")
                    || export.name.name.starts_with("wasi:http/handler@0.3")
                {
                    return Ok(Some(Workload::HttpComponent(path.into())));
                }
            }
        }
    }
    Ok(Some(Workload::Command(path.into())))
}

/// Runs the container's workload; the container's exit status.
pub async fn run(spec: ContainerSpec) -> Result<i32> {
    let settings = PodSettings::from_env(&spec.envs)?;
    install_logger(&settings.log_filter);
    let workload = Workload::find(&spec)?;
    let budget = pod::guest_memory_budget(&settings);
    match budget {
        Some(budget) => tracing::info!("the container's memory limit leaves guests {budget} bytes"),
        None => tracing::info!("the container has no memory limit"),
    }
    let mut config = RuntimeConfig::default();
    config.cache_dir = node_cache::path_in_container();
    // A file of the cache kept open or mapped would be a way back to it (see `node_cache`).
    config.map_cached_code = false;
    // Nothing the Pod's spec does not say: the shim's own environment is containerd's.
    config.variables_from_env = false;
    if let Some(budget) = budget {
        config.default_memory = Some(config.default_memory.map_or(budget, |m| m.min(budget)));
    }
    match workload {
        Workload::Command(path) => {
            // A command compiles as it starts its guest: no moment between the two to close
            // the cache, so it compiles without it.
            config.cache_dir = None;
            node_cache::close();
            run_command(config, &path, spec.args, settings, budget).await
        }
        Workload::App(manifest) => {
            let app = skiff_manifest::load(&manifest)?;
            refuse_system_paths(&app)?;
            config.runtime_config.variables = settings.variables.clone();
            serve(config, within_budget(app, budget), settings, true).await
        }
        Workload::HttpComponent(path) => {
            let mut component = Component::of_file(path);
            component.environment = settings.guest_env.clone();
            let app = App::of_one_component(component);
            serve(config, within_budget(app, budget), settings, false).await
        }
    }
}

/// `app` with no component's memory cap above `budget`.
fn within_budget(mut app: App, budget: Option<u64>) -> App {
    for component in &mut app.components {
        if let (Some(budget), Some(memory)) = (budget, component.limits.memory)
            && memory > budget
        {
            tracing::warn!(
                "component {}: limits.memory is more than the container may use; capped at \
                 {budget} bytes",
                component.id
            );
            component.limits.memory = Some(budget);
        }
    }
    app
}

/// The instances `app` may have at once: its components' concurrency added up.
fn instances_for(app: &App) -> u32 {
    app.components
        .iter()
        .map(|c| c.limits.max_concurrency.unwrap_or(DEFAULT_CONCURRENCY))
        .fold(0u32, u32::saturating_add)
        .clamp(1, 10_000)
}

/// The folders of a container that the kernel and the runtime fill. What is in them is the
/// shim's own process (whose environment is containerd's) and the node's devices, never the
/// app's.
const SYSTEM_FOLDERS: [&str; 3] = ["/proc", "/sys", "/dev"];

/// The app's folder is the container's root here, so "inside the app", which the manifest
/// checks, holds the system folders too: an image could grant `files = ["proc"]`, or make its
/// manifest or a component a symlink to `/proc/self/environ` and read it back in an error.
fn refuse_system_paths(app: &App) -> Result<()> {
    for component in &app.components {
        let what = format!("component {}: source", component.id);
        refuse_system_path(&component.source, &what)?;
        for mount in &component.files {
            let what = format!("component {}: files", component.id);
            refuse_system_path(&mount.host, &what)?;
        }
    }
    Ok(())
}

/// Refuses `path` if it is the root, or is or leads (through symlinks) into a system folder.
fn refuse_system_path(path: &Path, what: &str) -> Result<()> {
    let real = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let system = SYSTEM_FOLDERS.iter().any(|dir| real.starts_with(dir));
    if real == Path::new("/") || system {
        bail!(
            "{what} {} is {}, which in a container holds /proc, /sys and /dev, not the app's \
             files; name the app's own files and folders (e.g. files = [\"static\"])",
            path.display(),
            if real == path {
                "the root or in it".to_string()
            } else {
                format!("a link to {}", real.display())
            },
        );
    }
    Ok(())
}

async fn serve(
    mut config: RuntimeConfig,
    app: App,
    settings: PodSettings,
    from_manifest: bool,
) -> Result<i32> {
    // Refused rather than ignored: messages would pile up with nobody told.
    if let Some(consume) = app.consumers.first() {
        let component = app
            .components
            .get(consume.component)
            .map_or("", |c| c.id.as_str());
        bail!(
            "component `{component}` consumes the queue `{}`, but a pod runs no queue consumers \
             yet: run the app on `skiff server` or `skiff up`, or remove its \
             `[component.{component}.consume]` table",
            consume.queue
        );
    }
    config.max_instances = instances_for(&app);
    let standalone = skiff_http::Standalone {
        listen: settings.listen,
        metrics_listen: settings.metrics_listen,
        limits: skiff_http::HttpLimits::default(),
        shutdown_grace: settings.shutdown_grace,
        from_manifest,
        // A pod's app has no queues yet: publishing fails as unavailable.
        queues: None,
    };
    let started = standalone
        .start(config, app)
        .await
        .map_err(|err| match err {
            skiff_http::StartError::Manifest(err) => anyhow::Error::from(*err),
            other => anyhow::Error::from(other),
        })?;
    // Every component is compiled and mapped; no guest has run yet.
    node_cache::close();
    let addr = started.local_addr()?;
    tracing::info!(
        app = %started.app().name,
        "serving http://{addr}{}",
        match started.metrics_addr() {
            Some(metrics) => format!(", metrics http://{metrics}/metrics"),
            None => String::new(),
        }
    );
    started.serve(skiff_http::termination_signal()).await?;
    tracing::info!("stopped");
    Ok(0)
}

async fn run_command(
    config: RuntimeConfig,
    path: &Path,
    args: Vec<String>,
    settings: PodSettings,
    budget: Option<u64>,
) -> Result<i32> {
    let runtime = Runtime::new(config).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let mut options = CommandOptions::default();
    options.args = args;
    let mut grant = WasiGrant::default();
    grant.env = settings.guest_env;
    options.grant = grant;
    options.max_memory = budget;
    tokio::select! {
        outcome = runtime.run_command(path, options) => match outcome? {
            CommandOutcome::Exited(code) => Ok(code),
            CommandOutcome::Trapped(reason) => {
                eprintln!("error: {} trapped: {reason}", path.display());
                Ok(skiff_runtime::TRAP_EXIT_CODE)
            }
        },
        // As process 1 the kernel delivers SIGTERM only to a handler: without this the
        // command would run on until SIGKILL.
        () = skiff_http::termination_signal() => Ok(128 + 15),
    }
}

/// Log lines on the container's stderr, where `kubectl logs` reads them.
fn install_logger(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn paths_into_the_containers_system_folders_are_refused_also_through_links() {
        let dir = tempfile::tempdir().unwrap();
        let environ = dir.path().join("skiff.toml");
        std::os::unix::fs::symlink("/proc/self/environ", &environ).unwrap();
        let err = refuse_system_path(&environ, "the manifest")
            .unwrap_err()
            .to_string();
        assert!(err.contains("a link to /proc/"), "{err}");
        let root = dir.path().join("everything");
        std::os::unix::fs::symlink("/", &root).unwrap();
        let err = refuse_system_path(&root, "files").unwrap_err().to_string();
        assert!(err.contains("a link to /"), "{err}");
        for path in ["/", "/proc/1/environ", "/dev/sda", "/sys/kernel"] {
            assert!(
                refuse_system_path(Path::new(path), "files").is_err(),
                "{path}"
            );
        }
        let plain = dir.path().join("web.wasm");
        std::fs::write(&plain, "\0asm").unwrap();
        refuse_system_path(&plain, "source").unwrap();
        refuse_system_path(dir.path(), "files").unwrap();
    }
}
