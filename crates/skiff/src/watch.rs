//! `skiff up --watch`: watches the files each component's build names (`[component.X.build]
//! watch`), the manifest, and the sources of components that skiff does not build; after a
//! change (debounced) it runs the builds the change calls for, checks the manifest, and hands
//! back the app to load in place of the one serving. A failed build or a broken manifest is
//! told and waited out: the app that was serving goes on serving.
//!
//! The OS tells of changes (inotify) under folders only, never under a whole app folder:
//! each pattern is watched from its literal prefix (`src/**/*.rs` from `src/`), so the build's
//! own output (`target/`, `node_modules/`) is neither watched nor matched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use notify::{RecursiveMode, Watcher};
use skiff_manifest::{App, ComponentBuild};
use tokio::sync::mpsc;

use crate::build::run_build;

/// How long the files must stay quiet before a change is acted on: an editor's save, or a
/// `git checkout`, is many events.
const DEBOUNCE: Duration = Duration::from_millis(200);

pub struct Watch {
    /// Absolute.
    manifest: PathBuf,
    builds: Vec<ComponentBuild>,
    /// Each build's `watch` patterns, matched against paths relative to its workdir.
    patterns: Vec<GlobSet>,
    /// The sources of components without a build: someone else's build writes them.
    sources: Vec<PathBuf>,
    watcher: notify::RecommendedWatcher,
    /// Folders watched now, and how.
    watched: BTreeMap<PathBuf, RecursiveMode>,
    changes: mpsc::UnboundedReceiver<PathBuf>,
}

/// What a batch of changed files calls for.
#[derive(Default)]
struct Change {
    manifest: bool,
    /// Indexes into `Watch::builds`, in order.
    builds: Vec<usize>,
    sources: bool,
    /// One of the files, to tell the user.
    example: Option<PathBuf>,
}

impl Change {
    fn matters(&self) -> bool {
        self.manifest || self.sources || !self.builds.is_empty()
    }
}

impl Watch {
    /// Starts watching for the app at `manifest` (a local file).
    pub fn start(manifest: &Path) -> Result<Watch> {
        let manifest = std::path::absolute(manifest)
            .with_context(|| format!("cannot resolve `{}`", manifest.display()))?;
        let (send, changes) = mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else {
                return;
            };
            // Reading a file (the manifest, a build reading its sources) is not a change.
            if matches!(event.kind, notify::EventKind::Access(_)) {
                return;
            }
            for path in event.paths {
                let _ = send.send(path);
            }
        })
        .context("cannot watch files (inotify)")?;
        let builds = skiff_manifest::load_builds(&manifest)?;
        let mut watch = Watch {
            manifest,
            patterns: Vec::new(),
            builds: Vec::new(),
            sources: Vec::new(),
            watcher,
            watched: BTreeMap::new(),
            changes,
        };
        watch.set_builds(builds);
        Ok(watch)
    }

    /// Runs every build and reads the manifest; after a failure, waits for a change and tries
    /// again, until both work.
    pub async fn first_app(&mut self) -> App {
        loop {
            let all: Vec<usize> = (0..self.builds.len()).collect();
            if self.run_builds(&all).await
                && let Some(app) = self.load()
            {
                return app;
            }
            eprintln!("Waiting for a change to try again...");
            let change = self.next_change().await;
            if change.manifest {
                self.reread_builds();
            }
        }
    }

    /// Waits for the next change that calls for a rebuild or a reload, runs the builds it
    /// calls for, and returns the app as the manifest now says. Failures are told and waited
    /// out.
    pub async fn next_app(&mut self) -> App {
        loop {
            let change = self.next_change().await;
            if let Some(file) = &change.example {
                eprintln!("Changed: {}", self.shown(file));
            }
            if change.manifest {
                self.reread_builds();
            }
            if self.run_builds(&change.builds).await
                && let Some(app) = self.load()
            {
                return app;
            }
        }
    }

    /// Runs the builds numbered `which`, in order, stopping at the first that fails (told).
    async fn run_builds(&mut self, which: &[usize]) -> bool {
        for &index in which {
            let Some(build) = self.builds.get(index) else {
                continue;
            };
            if let Err(err) = run_build(build).await {
                crate::report(&err);
                return false;
            }
        }
        true
    }

    /// The manifest, checked; an error is told.
    fn load(&mut self) -> Option<App> {
        match skiff_manifest::load(&self.manifest) {
            Ok(app) => {
                let built: Vec<&str> = self.builds.iter().map(|b| b.component.as_str()).collect();
                self.sources = app
                    .components
                    .iter()
                    .filter(|c| !built.contains(&c.id.as_str()))
                    .map(|c| c.source.clone())
                    .collect();
                self.rewatch();
                Some(app)
            }
            Err(err) => {
                crate::report(&err.into());
                None
            }
        }
    }

    /// The builds as the manifest says now (it changed); on an error, the old ones stay.
    fn reread_builds(&mut self) {
        match skiff_manifest::load_builds(&self.manifest) {
            Ok(builds) => self.set_builds(builds),
            Err(err) => crate::report(&err.into()),
        }
    }

    fn set_builds(&mut self, builds: Vec<ComponentBuild>) {
        self.patterns = builds.iter().map(patterns_of).collect();
        self.builds = builds;
        self.rewatch();
    }

    /// Watches the folders the manifest, the builds' patterns and the sources need, and no
    /// longer those they do not.
    fn rewatch(&mut self) {
        let mut wanted: BTreeMap<PathBuf, RecursiveMode> = BTreeMap::new();
        let mut want = |dir: PathBuf, mode: RecursiveMode| {
            let entry = wanted.entry(dir).or_insert(mode);
            if mode == RecursiveMode::Recursive {
                *entry = mode;
            }
        };
        if let Some(dir) = self.manifest.parent() {
            want(dir.to_path_buf(), RecursiveMode::NonRecursive);
        }
        for build in &self.builds {
            for pattern in &build.watch {
                let (dir, mode) = root_of(&build.workdir, pattern);
                want(dir, mode);
            }
        }
        for source in &self.sources {
            if let Some(dir) = source.parent() {
                want(dir.to_path_buf(), RecursiveMode::NonRecursive);
            }
        }
        let stale: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|(dir, mode)| wanted.get(*dir) != Some(mode))
            .map(|(dir, _)| dir.clone())
            .collect();
        for dir in stale {
            let _ = self.watcher.unwatch(&dir);
            self.watched.remove(&dir);
        }
        for (dir, mode) in wanted {
            if self.watched.contains_key(&dir) {
                continue;
            }
            match self.watcher.watch(&dir, mode) {
                Ok(()) => {
                    self.watched.insert(dir, mode);
                }
                Err(err) => eprintln!(
                    "warning: cannot watch `{}` ({err}); changes there go unseen",
                    dir.display()
                ),
            }
        }
    }

    /// The next batch of changes that matters, once the files have been quiet for
    /// [`DEBOUNCE`].
    async fn next_change(&mut self) -> Change {
        loop {
            let Some(first) = self.changes.recv().await else {
                // The watcher is gone: nothing will change any more.
                return std::future::pending().await;
            };
            let mut paths = vec![first];
            while let Ok(Some(path)) = tokio::time::timeout(DEBOUNCE, self.changes.recv()).await {
                paths.push(path);
            }
            let change = self.classify(&paths);
            if change.matters() {
                return change;
            }
        }
    }

    fn classify(&self, paths: &[PathBuf]) -> Change {
        let mut change = Change::default();
        for path in paths {
            let mut matters = false;
            if *path == self.manifest {
                change.manifest = true;
                matters = true;
            }
            for (index, build) in self.builds.iter().enumerate() {
                let hit = path
                    .strip_prefix(&build.workdir)
                    .is_ok_and(|relative| self.patterns[index].is_match(relative));
                if hit && !change.builds.contains(&index) {
                    change.builds.push(index);
                }
                matters |= hit;
            }
            if self.sources.contains(path) {
                change.sources = true;
                matters = true;
            }
            if matters && change.example.is_none() {
                change.example = Some(path.clone());
            }
        }
        change.builds.sort_unstable();
        change
    }

    /// `path` relative to the manifest's folder when it is under it.
    fn shown(&self, path: &Path) -> String {
        self.manifest
            .parent()
            .and_then(|dir| path.strip_prefix(dir).ok())
            .unwrap_or(path)
            .display()
            .to_string()
    }
}

/// A build's `watch` patterns as one set. `*` stays within a folder name, as in a shell.
fn patterns_of(build: &ComponentBuild) -> GlobSet {
    let mut set = GlobSetBuilder::new();
    for pattern in &build.watch {
        // The manifest checked each pattern already.
        if let Ok(glob) = GlobBuilder::new(pattern).literal_separator(true).build() {
            set.add(glob);
        }
    }
    set.build().unwrap_or_else(|_| GlobSet::empty())
}

/// The folder to watch for `pattern` (relative to `workdir`), and whether below it too: the
/// pattern's literal prefix, recursively when what follows crosses folders.
fn root_of(workdir: &Path, pattern: &str) -> (PathBuf, RecursiveMode) {
    let parts: Vec<&str> = pattern.split('/').filter(|p| !p.is_empty()).collect();
    let literal = parts
        .iter()
        .take_while(|part| !part.contains(['*', '?', '[', '{']))
        .count();
    if literal == parts.len() {
        // A file named outright: its folder.
        let folder = parts[..parts.len().saturating_sub(1)].join("/");
        return (workdir.join(folder), RecursiveMode::NonRecursive);
    }
    let rest = &parts[literal..];
    let mode = if rest.len() > 1 || rest.iter().any(|p| p.contains("**")) {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    (workdir.join(parts[..literal].join("/")), mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_watched_from_their_literal_folder() {
        let dir = Path::new("/app");
        let cases = [
            ("src/**/*.rs", "/app/src", RecursiveMode::Recursive),
            ("Cargo.toml", "/app", RecursiveMode::NonRecursive),
            ("*.py", "/app", RecursiveMode::NonRecursive),
            ("wit/**/*.wit", "/app/wit", RecursiveMode::Recursive),
            ("lib/*/mod.rs", "/app/lib", RecursiveMode::Recursive),
            (
                "static/index.html",
                "/app/static",
                RecursiveMode::NonRecursive,
            ),
            ("**", "/app", RecursiveMode::Recursive),
        ];
        for (pattern, folder, mode) in cases {
            assert_eq!(
                root_of(dir, pattern),
                (PathBuf::from(folder), mode),
                "{pattern}"
            );
        }
    }

    #[test]
    fn a_star_stays_within_a_folder() {
        let build = ComponentBuild {
            component: "x".into(),
            command: "true".into(),
            workdir: "/app".into(),
            watch: vec!["*.py".into(), "src/**/*.rs".into()],
            source: None,
        };
        let set = patterns_of(&build);
        assert!(set.is_match("app.py"));
        assert!(!set.is_match("__pycache__/app.cpython-312.py"));
        assert!(set.is_match("src/lib.rs"));
        assert!(set.is_match("src/a/b/c.rs"));
        assert!(!set.is_match("target/src/lib.rs"));
    }
}
