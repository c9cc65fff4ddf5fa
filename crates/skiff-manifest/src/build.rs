//! `[component.<id>.build]`: how a developer's machine makes a component's `source` (`skiff
//! build`, `skiff up --watch`). Hosts never run it: [`crate::load`] only checks it, and
//! [`load_builds`] reads it without requiring that any `source` exists yet, since making them
//! is what the builds are for.

use std::path::{Component as PathPart, Path, PathBuf};

use toml::Spanned;

use crate::error::Source;
use crate::raw::{RawBuild, RawManifest};
use crate::toml_error::toml_error;
use crate::{ManifestError, manifest_error_reading};

/// One component's build: a shell command run in `workdir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentBuild {
    /// The component's id.
    pub component: String,
    /// Run with `sh -c` (`cmd /C` on Windows).
    pub command: String,
    /// The manifest's folder joined with `workdir` as written (the manifest's folder when
    /// unset).
    pub workdir: PathBuf,
    /// Glob patterns, relative to `workdir`, of the files whose change calls for this build
    /// again under `skiff up --watch`.
    pub watch: Vec<String>,
    /// The component's `source` (the file the build makes), joined with the manifest's
    /// folder; `None` when the manifest does not say.
    pub source: Option<PathBuf>,
}

/// Reads the manifest at `path` and returns each component's build, in file order. Only what
/// the builds need is checked (the TOML, and each `build` table); [`crate::load`] checks the
/// rest once they have run.
pub fn load_builds(path: &Path) -> Result<Vec<ComponentBuild>, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|e| manifest_error_reading(path, &e))?;
    let src = Source { text: &text, path };
    let raw: RawManifest = toml::from_str(&text).map_err(|e| toml_error(&src, &e))?;
    let manifest_path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let base_dir = manifest_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut builds = Vec::new();
    for (id, component) in raw.component.map(|m| m.0).unwrap_or_default() {
        let mut component = component.into_inner();
        let Some(build) = component.build.take() else {
            continue;
        };
        let checked = check(&src, id.get_ref(), build)?;
        builds.push(ComponentBuild {
            component: id.into_inner(),
            command: checked.command,
            workdir: base_dir.join(checked.workdir),
            watch: checked.watch,
            source: component.source.map(|s| base_dir.join(s.into_inner())),
        });
    }
    Ok(builds)
}

/// A `build` table's fields, checked; `workdir` still relative.
pub(crate) struct CheckedBuild {
    pub command: String,
    pub workdir: PathBuf,
    pub watch: Vec<String>,
}

/// Checks `[component.<id>.build]`: a command, a relative `workdir`, valid `watch` globs.
pub(crate) fn check(
    src: &Source,
    id: &str,
    build: Spanned<RawBuild>,
) -> Result<CheckedBuild, ManifestError> {
    let span = build.span();
    let build = build.into_inner();
    let field = |rest: &str| format!("component.{id}.build.{rest}");
    let Some(command) = build.command else {
        return Err(src.field_error(
            span,
            &field("command"),
            "the build has no `command`",
            "add the command that makes the component, e.g. command = \"cargo build --target \
             wasm32-wasip2 --release\"",
        ));
    };
    if command.get_ref().trim().is_empty() {
        return Err(src.field_error(
            command.span(),
            &field("command"),
            "is empty",
            "write the command that makes the component, or remove the `build` table",
        ));
    }
    let workdir = match build.workdir {
        None => PathBuf::new(),
        Some(dir) => {
            let path = PathBuf::from(dir.get_ref());
            if dir.get_ref().trim().is_empty()
                || path.is_absolute()
                || dir.get_ref().starts_with('/')
            {
                return Err(src.field_error(
                    dir.span(),
                    &field("workdir"),
                    format!("`{}` is not a relative path", dir.get_ref()),
                    "give the folder relative to the manifest's folder, e.g. workdir = \"api\"",
                ));
            }
            path
        }
    };
    let mut watch = Vec::new();
    for (i, pattern) in build.watch.unwrap_or_default().into_iter().enumerate() {
        let at = field(&format!("watch[{i}]"));
        let text = pattern.get_ref();
        if text.trim().is_empty() || Path::new(text).is_absolute() || text.starts_with('/') {
            return Err(src.field_error(
                pattern.span(),
                &at,
                format!("`{text}` is not a relative glob pattern"),
                "give files relative to the build's workdir, e.g. \"src/**/*.rs\"",
            ));
        }
        if Path::new(text)
            .components()
            .any(|part| matches!(part, PathPart::ParentDir))
        {
            return Err(src.field_error(
                pattern.span(),
                &at,
                format!("`{text}` leaves the build's workdir (`..`)"),
                "watch files inside the workdir; set `workdir` to a higher folder if the build \
                 reads files there",
            ));
        }
        if let Err(err) = globset::GlobBuilder::new(text)
            .literal_separator(true)
            .build()
        {
            return Err(src.field_error(
                pattern.span(),
                &at,
                format!("`{text}` is not a valid glob pattern: {}", err.kind()),
                "use `*` within a folder name, `**` across folders, e.g. \"src/**/*.rs\"",
            ));
        }
        watch.push(pattern.into_inner());
    }
    Ok(CheckedBuild {
        command: command.into_inner(),
        workdir,
        watch,
    })
}
