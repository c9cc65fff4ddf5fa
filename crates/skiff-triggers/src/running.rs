//! The apps a trigger runs tasks for (a schedule's timer, a consumer's reader), by tenant and
//! name: a new version's tasks replace the old one's, and an app taken away stops its tasks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use skiff_http::HttpApp;
use tokio::task::JoinHandle;

/// The apps whose tasks run, by `<tenant>/<app>`.
#[derive(Default)]
pub(crate) struct RunningApps {
    apps: Mutex<HashMap<String, Running>>,
}

/// One app's tasks. Dropping it stops them; work they started goes on (it holds the app).
struct Running {
    app: Arc<HttpApp>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl RunningApps {
    /// Runs the tasks `start` makes for `app` under `tenant`, instead of those of the app's
    /// earlier version, if any. Giving the same loaded app again changes nothing (`start` is
    /// not called). Returns whether the tasks were started.
    pub(crate) fn set(
        &self,
        tenant: &str,
        app: &Arc<HttpApp>,
        start: impl FnOnce() -> Vec<JoinHandle<()>>,
    ) -> bool {
        let key = app_key(tenant, &app.loaded().app().name);
        let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        if apps.get(&key).is_some_and(|r| Arc::ptr_eq(&r.app, app)) {
            return false;
        }
        let running = Running {
            app: app.clone(),
            tasks: start(),
        };
        // The old version's tasks stop as it is dropped here.
        apps.insert(key, running);
        true
    }

    /// Stops the tasks of `tenant`'s app `name`; returns the app if it was running.
    pub(crate) fn remove(&self, tenant: &str, name: &str) -> Option<Arc<HttpApp>> {
        let mut apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        apps.remove(&app_key(tenant, name))
            .map(|running| running.app.clone())
    }

    /// The apps whose tasks run, as `(tenant, app)`.
    pub(crate) fn list(&self) -> Vec<(String, String)> {
        let apps = self.apps.lock().unwrap_or_else(|e| e.into_inner());
        apps.keys()
            .filter_map(|k| k.split_once('/'))
            .map(|(t, a)| (t.to_string(), a.to_string()))
            .collect()
    }
}

pub(crate) fn app_key(tenant: &str, app: &str) -> String {
    format!("{tenant}/{app}")
}
