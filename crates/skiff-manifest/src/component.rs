//! Component-level rules: `[component.<id>]`'s source (a Wasm component, by its header),
//! environment, file mounts, outbound hosts, stores, variables and limits.

use std::io::Read;
use std::ops::Range;
use std::path::{Component as PathPart, Path, PathBuf};

use toml::Spanned;

use crate::error::Source;
use crate::raw::{OrderedMap, RawComponent, RawFile, RawMemory};
use crate::refs::{InternalCall, internal_component};
use crate::toml_error::{closest, join_key, underscored};
use crate::units::{TimeoutError, parse_memory, parse_timeout};
use crate::variables::{Template, Variable, is_store_label, is_variable_name};
use crate::{Component, FileMount, HostPattern, Limits, Location, ManifestError, Paths};

pub(crate) struct ComponentCx<'a> {
    pub(crate) src: &'a Source<'a>,
    pub(crate) base_dir: &'a Path,
    /// Where the paths it names may lead.
    pub(crate) paths: Paths,
    pub(crate) id: &'a str,
    pub(crate) span: Range<usize>,
    pub(crate) app_variables: &'a [Variable],
}

impl ComponentCx<'_> {
    fn field(&self, rest: &str) -> String {
        format!("component.{}.{rest}", self.id)
    }

    /// [`Source::field_error`], for the checks of this component and of its triggers.
    pub(crate) fn err(
        &self,
        span: Range<usize>,
        field: &str,
        message: impl std::fmt::Display,
        help: impl Into<String>,
    ) -> ManifestError {
        self.src.field_error(span, field, message, help)
    }

    /// The component, and the in-process calls it is granted (`http://ID.skiff.internal`), to
    /// check once all components are known.
    pub(crate) fn build(
        &self,
        comp: RawComponent,
    ) -> Result<(Component, Vec<InternalCall>), ManifestError> {
        // Checked, not kept: only `skiff build` runs it (see `crate::build`).
        let built = match comp.build {
            Some(build) => {
                crate::build::check(self.src, self.id, build)?;
                true
            }
            None => false,
        };
        let (source, source_span) = self.source(comp.source, built)?;
        let environment = self.environment(comp.environment)?;
        let files = self.files(comp.files.unwrap_or_default())?;
        let (allowed_outbound_hosts, calls) =
            self.hosts(comp.allowed_outbound_hosts.unwrap_or_default())?;
        let key_value_stores = self.store_labels(comp.key_value_stores.unwrap_or_default())?;
        let variables = self.variables(comp.variables)?;
        let limits = match comp.limits {
            Some(l) => self.limits(l.into_inner())?,
            None => Limits::default(),
        };
        let publish = self.publish(comp.publish.unwrap_or_default())?;
        let component = Component {
            id: self.id.to_string(),
            source,
            source_location: Location::from_offset(self.src.text, source_span.start),
            environment,
            files,
            allowed_outbound_hosts,
            key_value_stores,
            variables,
            limits,
            publish,
        };
        Ok((component, calls))
    }

    fn store_labels(&self, labels: Vec<Spanned<String>>) -> Result<Vec<String>, ManifestError> {
        let mut out: Vec<String> = Vec::with_capacity(labels.len());
        for (i, label) in labels.into_iter().enumerate() {
            let field = format!("{}[{i}]", self.field("key_value_stores"));
            if !is_store_label(label.get_ref()) {
                return Err(self.err(
                    label.span(),
                    &field,
                    format!("`{}` is not a valid store label", label.get_ref()),
                    "use lowercase letters, digits, `-` and `_`, e.g. \"default\" or \"sessions\"",
                ));
            }
            if out.contains(label.get_ref()) {
                return Err(self.err(
                    label.span(),
                    &field,
                    format!("`{}` is listed twice", label.get_ref()),
                    "list each store once",
                ));
            }
            out.push(label.into_inner());
        }
        Ok(out)
    }

    fn variables(
        &self,
        raw: Option<OrderedMap<Spanned<String>>>,
    ) -> Result<Vec<(String, Template)>, ManifestError> {
        let mut out = Vec::new();
        for (name, value) in raw.map(|m| m.0).unwrap_or_default() {
            let field = join_key(&self.field("variables"), name.get_ref());
            if !is_variable_name(name.get_ref()) {
                return Err(self.err(
                    name.span(),
                    &field,
                    format!("`{}` is not a valid variable name", name.get_ref()),
                    "use lowercase letters, digits and `_`, starting with a letter, e.g. `api_url`",
                ));
            }
            let template = Template::parse(value.get_ref()).map_err(|why| {
                self.err(
                    value.span(),
                    &field,
                    why,
                    "refer to an app variable as `{{ name }}`",
                )
            })?;
            if let Some(unknown) = template
                .references()
                .find(|r| !self.app_variables.iter().any(|v| v.name == *r))
            {
                let declared: Vec<&str> =
                    self.app_variables.iter().map(|v| v.name.as_str()).collect();
                let help = match closest(unknown, &declared) {
                    Some(near) => format!(
                        "did you mean `{near}`? App variables are declared under [variables]"
                    ),
                    None => format!(
                        "declare it under [variables], e.g.\n[variables]\n{unknown} = {{ default = \"...\" }}"
                    ),
                };
                return Err(self.err(
                    value.span(),
                    &field,
                    format!("refers to `{unknown}`, which is not an app variable"),
                    help,
                ));
            }
            out.push((name.into_inner(), template));
        }
        Ok(out)
    }

    /// `built`: the component has a `build` table, which is how its source is made.
    fn source(
        &self,
        source: Option<Spanned<String>>,
        built: bool,
    ) -> Result<(PathBuf, Range<usize>), ManifestError> {
        let field = self.field("source");
        let Some(source) = source else {
            return Err(self.err(
                self.span.clone(),
                &field,
                format!("component `{}` has no `source`", self.id),
                format!(
                    "add the path of its Wasm component, e.g. source = \"{}.wasm\"",
                    self.id
                ),
            ));
        };
        let span = source.span();
        let rel = source.into_inner();
        if rel.trim().is_empty() {
            return Err(self.err(
                span,
                &field,
                "is empty",
                format!("e.g. source = \"{}.wasm\"", self.id),
            ));
        }
        self.paths.check(self.src, span.clone(), &field, &rel)?;
        let path = self.base_dir.join(&rel);
        let mut header = [0u8; 8];
        // Looked at before it is opened: opening a FIFO waits for a writer, for ever, and a
        // hostile manifest on a server may name one of the server's.
        let read = std::fs::metadata(&path).and_then(|meta| {
            if meta.is_dir() {
                return Err(std::io::Error::other("is a directory"));
            }
            if !meta.is_file() {
                return Err(std::io::Error::other("is not a regular file"));
            }
            let mut f = std::fs::File::open(&path)?;
            let mut n = 0;
            while n < header.len() {
                match f.read(&mut header[n..])? {
                    0 => break,
                    k => n += k,
                }
            }
            Ok(n)
        });
        let n = match read {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let help = if built {
                    "run `skiff build` first: the component's `build` command makes it (or fix \
                     the path, which is relative to the manifest's folder)"
                } else {
                    "build it first, e.g. `cargo build --target wasm32-wasip2 --release`, or fix the path (it is relative to the manifest's folder)"
                };
                return Err(self.err(
                    span,
                    &field,
                    format!("`{}` does not exist", path.display()),
                    help,
                ));
            }
            Err(e) => {
                return Err(self.err(
                    span,
                    &field,
                    format!("cannot read `{}`: {e}", path.display()),
                    "point `source` at a readable .wasm file",
                ));
            }
        };
        if n < 8 || &header[..4] != b"\0asm" {
            return Err(self.err(
                span,
                &field,
                format!("`{}` is not a WebAssembly file (it does not start with `\\0asm`)", path.display()),
                "point `source` at the compiled .wasm component, not at source code or a text (.wat) file",
            ));
        }
        // Bytes 4..8 are version and layer: layer 0 is a core module, layer 1 a component.
        // Any component version is let through; the runtime reports versions it cannot load.
        if header[6..8] != [1, 0] {
            return Err(self.err(
                span,
                &field,
                format!("`{}` is a core WebAssembly module, not a component", path.display()),
                "build it for `wasm32-wasip2` (e.g. `cargo build --target wasm32-wasip2 --release`), or wrap it with `wasm-tools component new`",
            ));
        }
        Ok((path, span))
    }

    fn environment(
        &self,
        env: Option<crate::raw::OrderedMap<String>>,
    ) -> Result<Vec<(String, String)>, ManifestError> {
        let mut out = Vec::new();
        for (key, value) in env.map(|m| m.0).unwrap_or_default() {
            let field = join_key(&self.field("environment"), key.get_ref());
            let k = key.get_ref();
            let valid = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                let suggestion = underscored(k, char::to_ascii_uppercase);
                let suggestion = if suggestion.starts_with(|c: char| c.is_ascii_digit()) {
                    format!("_{suggestion}")
                } else {
                    suggestion
                };
                return Err(self.err(
                    key.span(),
                    &field,
                    format!("`{k}` is not a valid environment variable name"),
                    format!("use letters, digits and `_`, not starting with a digit, e.g. `{suggestion}`"),
                ));
            }
            out.push((key.into_inner(), value));
        }
        Ok(out)
    }

    fn files(&self, files: Vec<Spanned<RawFile>>) -> Result<Vec<FileMount>, ManifestError> {
        let mut mounts: Vec<FileMount> = Vec::with_capacity(files.len());
        for (i, entry) in files.into_iter().enumerate() {
            let entry_field = format!("{}[{i}]", self.field("files"));
            let entry_span = entry.span();
            let (host_rel, host_span, host_field, guest, writable) = match entry.into_inner() {
                RawFile::Short(s) => {
                    let guest = self.shorthand_guest(&s, entry_span.clone(), &entry_field)?;
                    (s, entry_span.clone(), entry_field.clone(), guest, false)
                }
                RawFile::Full(t) => {
                    let Some(source) = t.source else {
                        return Err(self.err(
                            entry_span,
                            &format!("{entry_field}.source"),
                            "missing `source` (the host folder or file to mount)",
                            "e.g. { source = \"data\", destination = \"/data\" }",
                        ));
                    };
                    let Some(dest) = t.destination else {
                        return Err(self.err(
                            entry_span,
                            &format!("{entry_field}.destination"),
                            "missing `destination` (where the guest sees the files)",
                            format!(
                                "e.g. {{ source = {:?}, destination = \"/data\" }}",
                                source.get_ref()
                            ),
                        ));
                    };
                    let dest_field = format!("{entry_field}.destination");
                    let guest = self.guest_path(dest.get_ref(), dest.span(), &dest_field)?;
                    let span = source.span();
                    (
                        source.into_inner(),
                        span,
                        format!("{entry_field}.source"),
                        guest,
                        t.writable.unwrap_or(false),
                    )
                }
            };
            if host_rel.trim().is_empty() {
                return Err(self.err(
                    host_span,
                    &host_field,
                    "the host path is empty",
                    "name a folder or file relative to skiff.toml",
                ));
            }
            self.paths
                .check(self.src, host_span.clone(), &host_field, &host_rel)?;
            let host = self.base_dir.join(&host_rel);
            if !host.exists() {
                return Err(self.err(
                    host_span,
                    &host_field,
                    format!("`{}` does not exist", host.display()),
                    "create it, or fix the path (it is relative to the manifest's folder)",
                ));
            }
            if let Some(prev) = mounts.iter().find(|m| m.guest == guest) {
                return Err(self.err(
                    host_span,
                    &host_field,
                    format!(
                        "`{guest}` is already mounted from `{}`",
                        prev.host.display()
                    ),
                    "give each mount its own destination",
                ));
            }
            mounts.push(FileMount {
                host,
                guest,
                writable,
            });
        }
        Ok(mounts)
    }

    /// `"static"` mounts at `/static`, so it must be a plain relative path.
    fn shorthand_guest(
        &self,
        s: &str,
        span: Range<usize>,
        field: &str,
    ) -> Result<String, ManifestError> {
        let path = Path::new(s);
        let mut parts = Vec::new();
        for part in path.components() {
            match part {
                PathPart::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
                PathPart::CurDir => {}
                _ => {
                    return Err(self.err(
                        span,
                        field,
                        format!("the shorthand `{s}` must be a relative path inside the app folder (no `..`, not absolute)"),
                        format!("use the long form to choose where it appears: {{ source = {s:?}, destination = \"/data\" }}"),
                    ));
                }
            }
        }
        Ok(format!("/{}", parts.join("/")))
    }

    fn guest_path(
        &self,
        dest: &str,
        span: Range<usize>,
        field: &str,
    ) -> Result<String, ManifestError> {
        if !dest.starts_with('/') {
            return Err(self.err(
                span,
                field,
                format!("`{dest}` is not an absolute path"),
                format!(
                    "guest paths start with `/`, e.g. \"/{}\"",
                    dest.trim_start_matches("./")
                ),
            ));
        }
        if dest.split('/').any(|seg| seg == "..") {
            return Err(self.err(
                span,
                field,
                format!("`{dest}` contains `..`"),
                "write the destination without `..`, e.g. \"/data\"",
            ));
        }
        let trimmed = dest.trim_end_matches('/');
        Ok(if trimmed.is_empty() {
            "/".into()
        } else {
            trimmed.to_string()
        })
    }

    /// The patterns, and those that name one component (`http://ID.skiff.internal`) with
    /// where they are written.
    fn hosts(
        &self,
        hosts: Vec<Spanned<String>>,
    ) -> Result<(Vec<HostPattern>, Vec<InternalCall>), ManifestError> {
        let mut patterns = Vec::with_capacity(hosts.len());
        let mut calls = Vec::new();
        for (i, h) in hosts.into_iter().enumerate() {
            let field = format!("{}[{i}]", self.field("allowed_outbound_hosts"));
            let pattern = HostPattern::parse(h.get_ref())
                .map_err(|e| self.err(h.span(), &field, e.message, e.help))?;
            if let Some(id) = internal_component(&pattern) {
                calls.push(InternalCall {
                    field,
                    id: id.to_string(),
                    span: h.span(),
                    written: h.into_inner(),
                });
            }
            patterns.push(pattern);
        }
        Ok((patterns, calls))
    }

    /// A count that must not be zero, where zero would make the component useless.
    fn positive<T: Copy + Default + PartialEq>(
        &self,
        value: Option<Spanned<T>>,
        field: &str,
        why_not_zero: &str,
        help: &str,
    ) -> Result<Option<T>, ManifestError> {
        match value {
            None => Ok(None),
            Some(n) if *n.get_ref() == T::default() => {
                Err(self.err(n.span(), &self.field(field), why_not_zero, help))
            }
            Some(n) => Ok(Some(*n.get_ref())),
        }
    }

    fn limits(&self, limits: crate::raw::RawLimits) -> Result<Limits, ManifestError> {
        let memory = match limits.memory {
            None => None,
            Some(m) => {
                let field = self.field("limits.memory");
                let parsed = match m.get_ref() {
                    RawMemory::Bytes(n) if *n > 0 => Ok(*n as u64),
                    RawMemory::Bytes(n) => Err(format!("`{n}` bytes is not a usable memory limit")),
                    RawMemory::Text(t) => parse_memory(t).map_err(|e| e.to_string()),
                };
                Some(parsed.map_err(|why| {
                    self.err(m.span(), &field, why, "write bytes as a number, or a size with a unit (B, KB, KiB, MB, MiB, GB, GiB), e.g. \"64MiB\"")
                })?)
            }
        };
        let timeout = match limits.timeout {
            None => None,
            Some(t) => {
                let field = self.field("limits.timeout");
                let help = "write a duration with a unit, e.g. \"250ms\", \"5s\" or \"2m\"";
                match parse_timeout(t.get_ref()) {
                    Ok(d) => Some(d),
                    Err(TimeoutError::TooLong) => {
                        return Err(self.err(
                            t.span(),
                            &field,
                            format!(
                                "`{}` is longer than the longest request timeout, 24h",
                                t.get_ref()
                            ),
                            "write a duration of at most \"24h\", e.g. \"5s\" or \"10m\"",
                        ));
                    }
                    Err(TimeoutError::Zero) => {
                        return Err(self.err(
                            t.span(),
                            &field,
                            "a timeout of zero would fail every request",
                            help,
                        ));
                    }
                    Err(TimeoutError::NotADuration(e)) => {
                        return Err(self.err(
                            t.span(),
                            &field,
                            format!("`{}` is not a duration ({e})", t.get_ref()),
                            help,
                        ));
                    }
                }
            }
        };
        let max_concurrency = self.positive(
            limits.max_concurrency,
            "limits.max_concurrency",
            "a concurrency limit of zero would refuse every request",
            "give the number of requests this component may serve at once, e.g. 50",
        )?;
        let fuel = self.positive(
            limits.fuel,
            "limits.fuel",
            "a fuel budget of zero would stop every request before it starts",
            "give about as many Wasm instructions as one request may run, e.g. fuel = 5_000_000_000",
        )?;
        let requests_per_instance = self.positive(
            limits.requests_per_instance,
            "limits.requests_per_instance",
            "an instance that may serve no request could never answer",
            "write 1 for a fresh instance per request (the default), or more to reuse one, e.g. requests_per_instance = 100",
        )?;
        Ok(Limits {
            memory,
            timeout,
            max_concurrency,
            fuel,
            requests_per_instance,
        })
    }
}
