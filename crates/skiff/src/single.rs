//! `skiff serve FILE.wasm`: one component, no manifest. It becomes an app of one component
//! that answers every path, so it runs through the very same path as `skiff up`.

use std::path::Path;

use anyhow::{Result, bail};
use skiff_manifest::{App, Component, Limits, Location, Route, RoutePattern};

pub fn app_for_component(file: &Path) -> Result<App> {
    if !file.is_file() {
        bail!(
            "{}: no such file; give the path of a wasi:http component (.wasm)",
            file.display()
        );
    }
    let source = std::path::absolute(file)?;
    let id = component_id(&source);
    let base_dir = source.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(App {
        name: id.clone(),
        version: "0.0.0".into(),
        description: None,
        manifest_path: source.clone(),
        base_dir,
        components: vec![Component {
            id,
            source,
            source_location: Location { line: 1, column: 1 },
            environment: Vec::new(),
            files: Vec::new(),
            allowed_outbound_hosts: Vec::new(),
            limits: Limits::default(),
        }],
        routes: vec![Route {
            pattern: RoutePattern::Prefix(String::new()),
            as_written: "/...".into(),
            component: 0,
        }],
    })
}

/// A readable id from the file name, in the manifest's id alphabet, for log lines.
fn component_id(source: &Path) -> String {
    let stem = source
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let id: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    if id.is_empty() {
        "component".into()
    } else {
        id
    }
}
