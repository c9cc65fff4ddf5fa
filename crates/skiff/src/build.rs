//! `skiff build`: runs each component's `[component.X.build] command` in its workdir, with the
//! tool's own output on the terminal, then loads the app as `skiff up` would (every source a
//! component skiff can serve, every grant resolvable), so a build that "worked" but made
//! something unservable is caught here. `skiff up --watch` runs the same builds.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus};

use anyhow::{Context, Result, bail};
use clap::Args;
use skiff_manifest::{App, ComponentBuild};
use skiff_runtime::{LoadOptions, RuntimeConfig};

use crate::up;

#[derive(Args)]
pub struct BuildArgs {
    /// Build only this component (repeatable); all that have a `build` table by default.
    #[arg(long = "component", short = 'c', value_name = "ID")]
    components: Vec<String>,
    /// The app manifest, or the folder holding its skiff.toml.
    #[arg(default_value = "skiff.toml")]
    manifest: PathBuf,
}

pub async fn build(config: RuntimeConfig, args: BuildArgs) -> Result<ExitCode> {
    let path = skiff_manifest::manifest_in(&args.manifest);
    let builds = skiff_manifest::load_builds(&path)?;
    for id in &args.components {
        if !builds.iter().any(|b| &b.component == id) {
            let known: Vec<&str> = builds.iter().map(|b| b.component.as_str()).collect();
            bail!(
                "no component `{id}` with a `build` table in {} (those with one: {})",
                path.display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        }
    }
    let chosen = builds
        .iter()
        .filter(|b| args.components.is_empty() || args.components.contains(&b.component));
    for build in chosen {
        run_build(build).await?;
    }
    let app = check_app(config, &path).await?;
    let next = if app.routes.is_empty() && app.schedules.is_empty() && app.consumers.is_empty() {
        // Nothing to serve: commands, for `skiff run`.
        let shown = app
            .components
            .first()
            .map(|c| {
                c.source
                    .strip_prefix(std::env::current_dir().unwrap_or_default())
                    .unwrap_or(&c.source)
                    .display()
                    .to_string()
            })
            .unwrap_or_default();
        format!("run it with `skiff run {shown}`")
    } else if args.manifest == Path::new("skiff.toml") {
        "serve it with `skiff up`".to_string()
    } else {
        format!("serve it with `skiff up {}`", args.manifest.display())
    };
    eprintln!(
        "Finished: app `{}` loads ({} component{}); {next}",
        app.name,
        app.components.len(),
        if app.components.len() == 1 { "" } else { "s" },
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs one component's build to its end, its output going straight to the terminal. An error
/// names the component, the command and how it ended.
pub async fn run_build(build: &ComponentBuild) -> Result<()> {
    let id = &build.component;
    if !build.workdir.is_dir() {
        bail!(
            "component `{id}`: its build's workdir `{}` is not a folder (`workdir` is relative \
             to the manifest's folder)",
            build.workdir.display()
        );
    }
    eprintln!("Building component `{id}`: {}", build.command);
    let status = shell(&build.command)
        .current_dir(&build.workdir)
        .kill_on_drop(true)
        .status()
        .await
        .with_context(|| format!("component `{id}`: cannot start its build command"))?;
    if !status.success() {
        bail!(
            "component `{id}`: the build command `{}` {} (its output is above)",
            build.command,
            how_it_ended(status)
        );
    }
    if let Some(source) = &build.source
        && !source.is_file()
    {
        bail!(
            "component `{id}`: the build command succeeded but made no `{}` (the component's \
             `source`): point `source` at the file the build writes",
            source.display()
        );
    }
    Ok(())
}

fn shell(command: &str) -> tokio::process::Command {
    let mut process = tokio::process::Command::new("sh");
    process.arg("-c").arg(command);
    process
}

fn how_it_ended(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("failed with exit code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => format!("failed ({status})"),
    }
}

/// Loads the app at `manifest` as `skiff up` would, compiling every component (into the code
/// cache, so the next `skiff up` starts at once), without serving it. Its key-value stores
/// are opened in a folder of its own that is removed after, so checking touches no data.
pub async fn check_app(mut config: RuntimeConfig, manifest: &Path) -> Result<App> {
    let app = skiff_manifest::load(manifest)?;
    // A required variable's value is the operator's to give when the app runs, not the
    // build's: checking gives an empty one to those that have none here. Appended last to the
    // runtime config's table, it loses to every real provider (the environment, the variables
    // file, an earlier entry of the table), and a required variable has no default.
    for variable in app.variables.iter().filter(|variable| variable.required) {
        config
            .runtime_config
            .variables
            .push((variable.name.clone(), String::new()));
    }
    let scratch = tempfile::tempdir().context("cannot make a temporary folder")?;
    config.data_dir = Some(scratch.path().to_path_buf());
    config.fuel = app.uses_fuel();
    let runtime = up::new_runtime(config)?;
    let loaded = skiff_http::load_app(&runtime, app, LoadOptions::default(), true)
        .await
        .map_err(up::start_error)?;
    Ok(loaded.app().as_ref().clone())
}
