//! The registry commands (`push`, `pull`, `registry login`/`logout`) and what lets `run`,
//! `serve` and `up` take a registry reference where they take a path: the work is
//! `skiff-oci`'s; this file parses, prints and picks folders.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use skiff_oci::{
    Artifact, Cache, Credential, CredentialStore, ImageRef, Local, PullSource, Pulled,
    RegistryOptions,
};

/// How to reach the registry a reference names.
#[derive(Args, Clone, Default)]
pub struct RegistryArgs {
    /// Allow plain HTTP, or a certificate that does not verify, for the registry named here
    /// (registries on this machine may use plain HTTP without it).
    #[arg(long)]
    pub insecure: bool,
}

impl RegistryArgs {
    fn options(&self, registry: &str) -> RegistryOptions {
        let insecure = self.insecure.then(|| registry.to_string());
        RegistryOptions::new().insecure(insecure)
    }
}

#[derive(Args)]
pub struct PushArgs {
    /// Where to push: HOST[:PORT]/REPOSITORY[:TAG], e.g. localhost:5000/hello:v1.
    reference: String,
    /// The app folder (or its manifest), or a single .wasm component.
    #[arg(default_value = ".")]
    path: PathBuf,
    /// Push an ordinary container image (platform wasi/wasm) for containerd and the skiff
    /// shim: its one rootfs layer holds the app folder (entrypoint /skiff.toml), or the single
    /// component (entrypoint /NAME.wasm).
    #[arg(long)]
    image: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args)]
pub struct PullArgs {
    /// What to pull: HOST[:PORT]/REPOSITORY[:TAG] or ...@sha256:DIGEST.
    reference: String,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Subcommand)]
pub enum RegistryCommand {
    /// Check a user name and password with a registry and save them where docker, podman
    /// and oras read them ($DOCKER_CONFIG/config.json, else ~/.docker/config.json).
    Login(LoginArgs),
    /// Forget the saved login for a registry.
    Logout {
        /// The registry, HOST[:PORT].
        registry: String,
    },
}

#[derive(Args)]
pub struct LoginArgs {
    /// The registry, HOST[:PORT].
    registry: String,
    /// The user name [default: asked for on a terminal].
    #[arg(long, short)]
    username: Option<String>,
    /// Read the password (or token) from the first line of stdin, never from a flag, so it
    /// stays out of the shell history. Without it, the password is asked for on a terminal.
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    registry_args: RegistryArgs,
}

/// Where pulled artifacts are kept: `oci/` in the data folder. Not in the cache folder: that
/// holds compiled code, which no folder grant may reach, and a pulled app's `files` mounts
/// are granted from where it was pulled to.
pub fn pull_cache(data_dir: Option<&Path>) -> Result<Cache> {
    let root = data_dir
        .map(Path::to_path_buf)
        .or_else(skiff_runtime::default_data_dir)
        .ok_or_else(|| {
            anyhow!(
                "cannot tell where to keep pulled apps: none of SKIFF_DATA_DIR, XDG_DATA_HOME \
                 and HOME is set; pass --data-dir"
            )
        })?;
    Ok(Cache::new(root.join("oci")))
}

pub async fn push(args: PushArgs, cache: &Cache) -> Result<ExitCode> {
    let reference = ImageRef::parse(&args.reference)?;
    let is_wasm = args.path.is_file() && args.path.extension().is_some_and(|e| e == "wasm");
    let artifact = if is_wasm {
        if args.image {
            Artifact::component_image(&args.path)?
        } else {
            Artifact::component(&args.path)?
        }
    } else {
        let manifest = skiff_manifest::manifest_in(&args.path);
        // A manifest report prints as it is, without context in front.
        let built = if args.image {
            Artifact::image(&manifest)
        } else {
            Artifact::app(&manifest)
        };
        built.map_err(manifest_report)?
    };
    let options = args.registry.options(reference.registry());
    let pushed = skiff_oci::push(&reference, &artifact, &options, cache).await?;
    let mounted = if pushed.mounted > 0 {
        format!(", {} mounted from other repositories", pushed.mounted)
    } else {
        String::new()
    };
    eprintln!(
        "Pushed {} blobs ({}); {} were already there{mounted}; {} in all",
        pushed.uploaded,
        skiff_manifest::format_size(pushed.uploaded_bytes),
        pushed.reused,
        skiff_manifest::format_size(pushed.total_bytes),
    );
    // The last line is the pinned reference, for scripts: `REF=$(skiff push ... | tail -1)`.
    println!("{}", pushed.pinned);
    Ok(ExitCode::SUCCESS)
}

pub async fn pull(args: PullArgs, cache: &Cache) -> Result<ExitCode> {
    let reference = ImageRef::parse(&args.reference)?;
    let pulled = fetch(&reference, &args.registry, cache).await?;
    let (what, path) = match &pulled.local {
        Local::App { manifest } => ("app", manifest.parent().unwrap_or(manifest)),
        Local::Component { wasm } => ("component", wasm.as_path()),
    };
    eprintln!("Pulled {what} into {}", path.display());
    println!("{}", reference.with_digest(&pulled.digest));
    Ok(ExitCode::SUCCESS)
}

pub async fn registry(command: RegistryCommand) -> Result<ExitCode> {
    let store = CredentialStore::default_location().ok_or_else(|| {
        anyhow!("cannot tell where docker's config is: neither DOCKER_CONFIG nor HOME is set")
    })?;
    match command {
        RegistryCommand::Login(args) => {
            let registry = registry_name(&args.registry)?;
            let username = match args.username {
                Some(name) => name,
                None => crate::cmd::login::read_line_prompted("Username: ", false).await?,
            };
            let secret = if args.password_stdin {
                crate::cmd::login::read_line_prompted("", false).await?
            } else {
                crate::cmd::login::read_line_prompted("Password: ", true).await?
            };
            if username.is_empty() || secret.is_empty() {
                bail!("give a user name and a password (or token); nothing was saved");
            }
            let credential = Credential { username, secret };
            let options = args.registry_args.options(&registry);
            skiff_oci::check_login(&registry, &credential, &options)
                .await
                .map_err(|e| anyhow!("{e}; nothing was saved"))?;
            store.save(&registry, &credential)?;
            eprintln!("Login Succeeded: saved in {}", store.path().display());
        }
        RegistryCommand::Logout { registry } => {
            let registry = registry_name(&registry)?;
            if store.remove(&registry)? {
                eprintln!(
                    "Removed the login for {registry} from {}",
                    store.path().display()
                );
            } else {
                eprintln!("No login for {registry} in {}", store.path().display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `host[:port]`, also from a URL someone pasted.
fn registry_name(text: &str) -> Result<String> {
    let bare = text
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    if bare.is_empty() || bare.contains('/') {
        bail!("`{text}` is not a registry; write HOST[:PORT], e.g. ghcr.io or localhost:5000");
    }
    Ok(bare.to_string())
}

/// If `arg` is not a path on disk but names a registry, pulls it (or finds it in the cache).
pub async fn pulled_if_reference(
    arg: &Path,
    registry: &RegistryArgs,
    cache: &Cache,
) -> Result<Option<Pulled>> {
    let Some(text) = arg.to_str() else {
        return Ok(None);
    };
    if arg.exists() || !skiff_oci::names_a_registry(text) {
        return Ok(None);
    }
    let reference = ImageRef::parse(text)?;
    fetch(&reference, registry, cache).await.map(Some)
}

async fn fetch(reference: &ImageRef, registry: &RegistryArgs, cache: &Cache) -> Result<Pulled> {
    let options = registry.options(reference.registry());
    let pulled = skiff_oci::pull(reference, cache, &options).await?;
    match &pulled.source {
        PullSource::Registry => {
            tracing::info!("pulled {reference} ({})", pulled.digest)
        }
        PullSource::Cache => tracing::debug!("{reference} ({}) is cached", pulled.digest),
        PullSource::CacheOffline { error } => tracing::warn!(
            "{error}; using {} that {reference} resolved to before",
            pulled.digest
        ),
    }
    Ok(pulled)
}

/// The component file a pulled artifact is, for `run` and `serve`.
pub fn component_of(pulled: &Pulled, arg: &Path, up_instead: &str) -> Result<PathBuf> {
    match &pulled.local {
        Local::Component { wasm } => Ok(wasm.clone()),
        Local::App { .. } => Err(anyhow!(
            "{} is an app, not a single component; {up_instead}",
            arg.display()
        )),
    }
}

/// Gives each writable `files` mount of a pulled app a copy of its own for this run, so a
/// guest never writes into the cache (whose entries must stay what their digest says). Like
/// a container's writable layer, the copy starts from the artifact's content every time.
pub fn private_writable_mounts(app: &mut skiff_manifest::App) -> Result<Option<tempfile::TempDir>> {
    if !app
        .components
        .iter()
        .any(|c| c.files.iter().any(|m| m.writable))
    {
        return Ok(None);
    }
    let scratch = tempfile::Builder::new()
        .prefix("skiff-writable-")
        .tempdir()
        .context("cannot make a folder for the app's writable mounts")?;
    let mut n = 0;
    for component in &mut app.components {
        for mount in component.files.iter_mut().filter(|m| m.writable) {
            let copy = scratch.path().join(n.to_string());
            n += 1;
            copy_tree(&mount.host, &copy)
                .with_context(|| format!("cannot copy the writable mount `{}`", mount.guest))?;
            tracing::info!(
                "writable mount `{}` of `{}` starts from the pulled content and is dropped at exit",
                mount.guest,
                component.id
            );
            mount.host = copy;
        }
    }
    Ok(Some(scratch))
}

/// Copies files and folders (a pulled app holds nothing else; anything else is refused rather
/// than followed).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(from)?;
    if meta.is_file() {
        std::fs::copy(from, to)?;
        return Ok(());
    }
    if !meta.is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is neither a file nor a folder",
            from.display()
        )));
    }
    std::fs::create_dir(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        copy_tree(&entry.path(), &to.join(entry.file_name()))?;
    }
    Ok(())
}

/// A manifest's report stays a `ManifestError`, which `main` prints as it is (it starts with
/// `error:` itself).
fn manifest_report(err: skiff_oci::OciError) -> anyhow::Error {
    match err {
        skiff_oci::OciError::Pack(skiff_server::bundle::BundleError::Manifest(report)) => {
            report.into()
        }
        other => other.into(),
    }
}
