//! The configuration capability (`wasi:config/store`): a component reads its own variables,
//! as the manifest's templates render them from the app variables at load. Nothing else is
//! visible: not other components' variables, not the app variables themselves.
//!
//! At load, the app variables get their values from the first provider that has one (the
//! environment, the runtime config's variables file, its `[variables]` table, the manifest's
//! default); each component's templates are then rendered into its grant.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use skiff_manifest::{App, Component, RuntimeConfigFile};
use wasmtime::component::Linker;

use super::{Capability, CapabilityCtx, Ctx, HasCapability, LoadContext};
use crate::error::{LoadError, LoadErrorKind};

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "skiff:host/config",
        imports: { default: async | trappable },
    });
}
use bindings::wasi::config::store;

/// Prefix of the environment variables that give app variables their values:
/// `SKIFF_VAR_API_TOKEN` is `api_token`.
pub const VARIABLE_ENV_PREFIX: &str = "SKIFF_VAR_";

pub(crate) struct Config;

impl Capability for Config {
    /// The values of the app's variables.
    type AppGrant = HashMap<String, String>;
    type Grant = ConfigGrant;
    type Instance = ConfigGrant;

    fn app_grant(load: &LoadContext<'_>) -> Result<Self::AppGrant, LoadError> {
        resolve_variables(load.app, load.runtime_config, load.variables_from_env)
    }

    fn grant(
        values: &HashMap<String, String>,
        _: &LoadContext<'_>,
        component: &Component,
    ) -> Result<ConfigGrant, LoadError> {
        Ok(render(component, values))
    }

    fn instance(grant: &ConfigGrant, _: &super::InstanceIdentity) -> ConfigGrant {
        grant.clone()
    }
}

pub(crate) fn add_to_linker<T: HasCapability<ConfigGrant> + Send + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    store::add_to_linker::<T, Ctx<ConfigGrant>>(linker, T::capability)
}

/// A component's variables with their values, shared by all its instances.
#[derive(Clone, Default)]
pub(crate) struct ConfigGrant {
    values: Arc<[(String, String)]>,
}

impl std::fmt::Debug for ConfigGrant {
    /// Names only: values may be secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.values.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("ConfigGrant")
            .field("names", &names)
            .finish()
    }
}

impl store::Host for CapabilityCtx<'_, ConfigGrant> {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, store::Error>> {
        let value = self
            .state
            .values
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| value.clone());
        Ok(Ok(value))
    }

    async fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, store::Error>> {
        Ok(Ok(self.state.values.to_vec()))
    }
}

/// The values of an app's variables, from the first provider that has one: the environment
/// (`SKIFF_VAR_<NAME>`), the runtime config's variables file, its `[variables]` table, and
/// last the manifest's default. A required variable without a value is a load error naming it
/// and where to give it; secret values are never shown. `from_env` off skips the environment.
fn resolve_variables(
    app: &App,
    config: &RuntimeConfigFile,
    from_env: bool,
) -> Result<HashMap<String, String>, LoadError> {
    let file_values = match &config.variables_file {
        Some(path) => read_variables_file(path).map_err(|err| {
            LoadError::new(
                &app.manifest_path,
                LoadErrorKind::Variables {
                    reason: err.to_string(),
                },
            )
        })?,
        None => HashMap::new(),
    };
    let mut values = HashMap::new();
    for variable in &app.variables {
        let env_name = format!(
            "{VARIABLE_ENV_PREFIX}{}",
            variable.name.to_ascii_uppercase()
        );
        let value = std::env::var(&env_name)
            .ok()
            .filter(|_| from_env)
            .or_else(|| file_values.get(&variable.name).cloned())
            .or_else(|| {
                config
                    .variables
                    .iter()
                    .find(|(name, _)| *name == variable.name)
                    .map(|(_, value)| value.clone())
            })
            .or_else(|| variable.default.clone());
        match value {
            Some(value) => {
                values.insert(variable.name.clone(), value);
            }
            None if variable.required => {
                let name = &variable.name;
                let reason = if from_env {
                    format!(
                        "the required variable `{name}` has no value; set the environment \
                         variable {env_name}, or give it under [variables] in the runtime \
                         config (--runtime-config)"
                    )
                } else {
                    format!(
                        "the required variable `{name}` has no value; this host takes no values \
                         from its environment: give `{name}` a default in skiff.toml"
                    )
                };
                return Err(LoadError::new(
                    &app.manifest_path,
                    LoadErrorKind::Variables { reason },
                ));
            }
            // Optional and unset: templates that use it are left out (see `render`).
            None => {}
        }
    }
    Ok(values)
}

/// A component's variables rendered from the app's values. A template that uses an optional
/// variable without a value is left out, so the guest sees it as unset.
fn render(component: &Component, values: &HashMap<String, String>) -> ConfigGrant {
    let rendered = component
        .variables
        .iter()
        .filter_map(|(name, template)| {
            let value = template.render(|var| values.get(var).map(String::as_str))?;
            Some((name.clone(), value))
        })
        .collect();
    ConfigGrant { values: rendered }
}

/// Why the runtime config's variables file gave no values.
#[derive(Debug, thiserror::Error)]
enum VariablesFileError {
    #[error("cannot read the variables file {}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// Only the parser's message: its snippet would print the line, which may hold a secret.
    #[error("the variables file {} is not TOML of `name = \"value\"` lines: {message}", path.display())]
    NotToml {
        path: std::path::PathBuf,
        message: String,
    },
}

/// A variables file: TOML of `name = "value"`.
fn read_variables_file(path: &Path) -> Result<HashMap<String, String>, VariablesFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| VariablesFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| VariablesFileError::NotToml {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    })
}
