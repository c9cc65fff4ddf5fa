//! The one error type of the crate, rendered like a compiler diagnostic.
//!
//! The rendering is ours, not `annotate-snippets`' or `codespan-reporting`'s. Measured against
//! annotate-snippets 0.12, the shape is the same (`error:`, `-->`, the line with carets,
//! `= help:`), but a [`ManifestError`] travels without its source: it is serialized into API
//! answers and logs with only the line it points at, and its [`Snippet`] is public data. Those
//! crates render from the whole source text, and would trade our bounds (at most
//! [`MAX_QUOTED_CHARS`] of a line, around the column, marked with `…`; messages cut at
//! [`MAX_MESSAGE_CHARS`]) for terminal-width trimming, changing what users see.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::App;

/// A 1-based line and column in the manifest (columns count characters, not bytes).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// Converts a byte offset into `text` to a line and column.
    pub fn from_offset(text: &str, offset: usize) -> Self {
        let offset = floor_char_boundary(text, offset.min(text.len()));
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// The manifest line an error points at, kept so the error can be printed without the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snippet {
    /// The whole line, without its newline.
    pub line_text: String,
    /// How many characters to underline, starting at the error's column (at least 1).
    pub underline: usize,
}

/// Everything wrong with a manifest is reported as one of these: where (file, line, column),
/// which field (a dotted path such as `component.hello.source`), what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", Render(self))]
pub struct ManifestError {
    pub path: PathBuf,
    /// `None` only when there is nothing in the file to point at (e.g. a missing `[app]` table).
    pub location: Option<Location>,
    /// Dotted path of the offending field, e.g. `component.hello.limits.memory`.
    pub field: String,
    pub message: String,
    pub help: Option<String>,
    pub snippet: Option<Snippet>,
}

impl ManifestError {
    /// An error about component number `component` of an already-validated `app`, pointing at
    /// the component's `source` line. Meant for later stages (e.g. the runtime finding that the
    /// source is not a valid component) so that they report in the same shape as the parser.
    ///
    /// `field` may be relative to the component (`"source"`) or a full dotted path.
    pub fn at(
        app: &App,
        component: usize,
        field: &str,
        message: impl Into<String>,
        help: impl Into<Option<String>>,
    ) -> Self {
        let comp = app.components.get(component);
        let field = match comp {
            Some(c) if !field.starts_with("component.") => {
                format!("component.{}.{}", c.id, field)
            }
            _ => field.to_string(),
        };
        let mut message = message.into();
        if !message.contains(&field) {
            message = format!("`{field}`: {message}");
        }
        let location = comp.map(|c| c.source_location);
        // The manifest text is not kept in `App`; re-reading it is fine on this cold path, and
        // the error is still useful without a snippet if the file has gone.
        let snippet = comp.zip(location).and_then(|(comp, loc)| {
            let text = std::fs::read_to_string(&app.manifest_path).ok()?;
            let src = Source {
                text: &text,
                path: &app.manifest_path,
            };
            // Underline the `source` string as the parser's own errors do, found again in the
            // document; if the file has changed since, fall back to the rest of the line.
            if let Some(span) = source_span(&text, &comp.id) {
                let (found, snippet) = src.locate(span);
                if found == loc {
                    return Some(snippet);
                }
            }
            let line_text = text.lines().nth(loc.line - 1)?.to_string();
            let rest: Vec<char> = line_text.chars().skip(loc.column - 1).collect();
            let trailing = rest.iter().rev().take_while(|c| c.is_whitespace()).count();
            Some(Snippet {
                underline: (rest.len() - trailing).max(1),
                line_text,
            })
        });
        ManifestError {
            path: app.manifest_path.clone(),
            location,
            field,
            message,
            help: help.into(),
            snippet,
        }
    }
}

/// Compiler-style rendering: message, `--> file:line:col`, the line with carets, then help.
struct Render<'a>(&'a ManifestError);

impl fmt::Display for Render<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        render(self.0, f)
    }
}

/// The most characters of one manifest line an error quotes. A line may be megabytes long (or
/// not be a manifest at all), and an error is printed, logged and sent back over the network:
/// it shows the part around the column it points at.
pub const MAX_QUOTED_CHARS: usize = 160;

/// The most characters of an error's message or help, which may quote values from the file.
pub const MAX_MESSAGE_CHARS: usize = 2000;

fn render(e: &ManifestError, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    writeln!(f, "error: {}", bounded(&e.message, MAX_MESSAGE_CHARS))?;
    let width = e.location.map_or(1, |l| l.line.to_string().len());
    let pad = " ".repeat(width);
    match e.location {
        Some(loc) => write!(f, "{pad} --> {}:{loc}", e.path.display())?,
        None => write!(f, "{pad} --> {}", e.path.display())?,
    }
    if let (Some(loc), Some(snippet)) = (e.location, &e.snippet) {
        let (text, column, underline) =
            quoted_window(&snippet.line_text, loc.column, snippet.underline);
        // Keep tabs as tabs so the carets line up with the text above them.
        let indent: String = text
            .chars()
            .take(column - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        write!(
            f,
            "\n{pad}  |\n {line} | {text}\n{pad}  | {indent}{carets}",
            line = loc.line,
            carets = "^".repeat(underline.max(1)),
        )?;
    }
    if let Some(help) = &e.help {
        let help = bounded(help, MAX_MESSAGE_CHARS);
        let mut lines = help.lines();
        if let Some(first) = lines.next() {
            write!(f, "\n{pad}  = help: {first}")?;
        }
        for line in lines {
            write!(f, "\n{pad}          {line}")?;
        }
    }
    Ok(())
}

/// At most [`MAX_QUOTED_CHARS`] of `line` around `column` (1-based), with `…` where text was
/// left out; returns the text, the column and the underline length within it.
fn quoted_window(line: &str, column: usize, underline: usize) -> (String, usize, usize) {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= MAX_QUOTED_CHARS {
        return (line.to_string(), column, underline);
    }
    let at = (column - 1).min(chars.len());
    let start = at.saturating_sub(MAX_QUOTED_CHARS / 4);
    let end = (start + MAX_QUOTED_CHARS).min(chars.len());
    let mut text = String::new();
    if start > 0 {
        text.push('…');
    }
    text.extend(&chars[start..end]);
    if end < chars.len() {
        text.push('…');
    }
    let column = at - start + 1 + usize::from(start > 0);
    (text, column, underline.min(end.saturating_sub(at)).max(1))
}

/// `text`, cut after `max` characters with a note saying so.
fn bounded(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => text.into(),
        Some((cut, _)) => format!(
            "{}… (cut; {} more characters)",
            &text[..cut],
            text[cut..].chars().count()
        )
        .into(),
    }
}

/// Builds errors against one manifest text, turning byte spans into locations and snippets.
pub(crate) struct Source<'a> {
    pub text: &'a str,
    pub path: &'a Path,
}

impl Source<'_> {
    pub fn error(
        &self,
        span: Option<Range<usize>>,
        field: impl Into<String>,
        message: impl Into<String>,
        help: impl Into<Option<String>>,
    ) -> ManifestError {
        let (location, snippet) = match span {
            Some(span) => {
                let (loc, snip) = self.locate(span);
                (Some(loc), Some(snip))
            }
            None => (None, None),
        };
        ManifestError {
            path: self.path.to_path_buf(),
            location,
            field: field.into(),
            message: message.into(),
            help: help.into(),
            snippet,
        }
    }

    /// An error at `span` about `field` of a component's or an upstream's table, its message
    /// led by the field's name so that it reads alone (in a log line, an API answer).
    pub fn field_error(
        &self,
        span: Range<usize>,
        field: &str,
        message: impl fmt::Display,
        help: impl Into<String>,
    ) -> ManifestError {
        self.error(
            Some(span),
            field,
            format!("`{field}`: {message}"),
            help.into(),
        )
    }

    fn locate(&self, span: Range<usize>) -> (Location, Snippet) {
        let text = self.text;
        let start = floor_char_boundary(text, span.start.min(text.len()));
        let end = floor_char_boundary(text, span.end.clamp(start, text.len()));
        let location = Location::from_offset(text, start);
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line_text = text[line_start..line_end].trim_end_matches('\r');
        // A multi-line span (e.g. an array) is underlined to the end of its first line only.
        let underline = text[start..end.min(line_end)].trim_end().chars().count();
        (
            location,
            Snippet {
                line_text: line_text.to_string(),
                underline: underline.max(1),
            },
        )
    }
}

/// The span of the value of `component.<id>.source` in a manifest, however it is written
/// (`[component.id]` table, dotted keys or inline table).
fn source_span(text: &str, id: &str) -> Option<Range<usize>> {
    fn get<'t, 'i>(table: &'t DeTable<'i>, key: &str) -> Option<&'t Spanned<DeValue<'i>>> {
        table
            .iter()
            .find(|(k, _)| k.get_ref() == key)
            .map(|(_, v)| v)
    }
    fn table<'t, 'i>(value: &'t Spanned<DeValue<'i>>) -> Option<&'t DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => None,
        }
    }
    let doc = DeTable::parse(text).ok()?;
    let components = table(get(doc.get_ref(), "component")?)?;
    let source = get(table(get(components, id)?)?, "source")?;
    Some(source.span())
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod bounds {
    use super::*;

    #[test]
    fn a_long_line_is_quoted_around_its_column_and_no_further() {
        let secret = "SECRET=".repeat(10_000);
        let text = format!("[app]\nname = {secret}\n");
        let err = crate::parse(&text, Path::new("skiff.toml")).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.len() < MAX_QUOTED_CHARS * 4 + MAX_MESSAGE_CHARS * 3,
            "{shown}"
        );
        assert!(shown.contains('…'), "{shown}");
        // The carets still point under the quoted text.
        let (text, column, underline) = quoted_window(&"x".repeat(1000), 500, 3);
        assert_eq!(text.chars().count(), MAX_QUOTED_CHARS + 2);
        assert_eq!(text.chars().nth(column - 1), Some('x'));
        assert_eq!(underline, 3);
    }

    #[test]
    fn long_messages_are_cut() {
        let text = "é".repeat(MAX_MESSAGE_CHARS + 10);
        let cut = bounded(&text, MAX_MESSAGE_CHARS);
        assert!(cut.starts_with(&"é".repeat(MAX_MESSAGE_CHARS)));
        assert!(cut.ends_with("(cut; 10 more characters)"), "{cut}");
        assert_eq!(bounded("short", 10), "short");
    }
}
