//! The configuration capability (`wasi:config/store`): a component reads its own variables,
//! as the manifest's templates render them from the app variables at load. Nothing else is
//! visible: not other components' variables, not the app variables themselves.

use std::sync::Arc;

use super::state_bindings::wasi::config::store;
use crate::host::Host;

/// A component's variables with their values, shared by all its instances.
#[derive(Clone, Default)]
pub struct ConfigGrant {
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

impl ConfigGrant {
    pub fn new(values: Vec<(String, String)>) -> Self {
        ConfigGrant {
            values: values.into(),
        }
    }
}

impl store::Host for Host {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, store::Error>> {
        let value = self
            .config
            .values
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| value.clone());
        Ok(Ok(value))
    }

    async fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, store::Error>> {
        Ok(Ok(self.config.values.to_vec()))
    }
}
