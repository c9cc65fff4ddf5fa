//! Variables: app-level `[variables]` (with a default, or `required`, optionally `secret`) and
//! the component variables a guest reads through `wasi:config/store`, whose values are
//! templates over the app's variables (`"Bearer {{ api_token }}"`).
//!
//! Values are not known here: they come from providers (environment, files, the operator's
//! runtime config) when the runtime loads the app. The manifest only checks that every
//! template names a declared variable, so a typo is an error at `skiff up`, not a surprise at
//! request time.

/// An app-level variable.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Variable {
    pub name: String,
    /// Used when no provider gives a value.
    pub default: Option<String>,
    /// Loading fails when no provider gives a value.
    pub required: bool,
    /// Never logged, never shown in error messages.
    pub secret: bool,
}

/// A component variable's value: literal text and references to app variables.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Part {
    Literal(String),
    Variable(String),
}

/// Why a `variables` value is not a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `at` is the byte offset of the `{{` in the value.
    #[error("`{{{{` at byte {at} is never closed with `}}}}`")]
    Unclosed { at: usize },
    #[error(
        "`{{{{ {name} }}}}` does not name a variable (names are lowercase letters, digits and \
         `_`, starting with a letter)"
    )]
    NotAName { name: String },
}

impl Template {
    /// Parses `text`, where `{{ name }}` refers to the app variable `name` and `{{{{`... no
    /// escapes are needed in practice: a lone `{` or `}` is literal text.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                return Err(TemplateError::Unclosed {
                    at: text.len() - rest.len() + open,
                });
            };
            let name = after[..close].trim();
            if !is_variable_name(name) {
                return Err(TemplateError::NotAName { name: name.into() });
            }
            parts.push(Part::Variable(name.to_string()));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// The app variables this template reads.
    pub fn references(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            Part::Variable(name) => Some(name.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// The text with every reference replaced by its value; `None` if `value_of` has none.
    pub fn render<'v>(&self, value_of: impl Fn(&str) -> Option<&'v str>) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Variable(name) => out.push_str(value_of(name)?),
            }
        }
        Some(out)
    }
}

/// Variable names (app and component): `[a-z][a-z0-9_]*`. One spelling everywhere, so that
/// `SKIFF_VAR_API_TOKEN` maps to `api_token` without guessing.
pub fn is_variable_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 64
}

/// Key-value store labels: `[a-z0-9][a-z0-9_-]*`, at most 64 characters.
pub fn is_store_label(label: &str) -> bool {
    label.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && label
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && label.len() <= 64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_render() {
        let t = Template::parse("Bearer {{ api_token }} for {{region}}!").unwrap();
        assert_eq!(t.references().collect::<Vec<_>>(), ["api_token", "region"]);
        let value = |name: &str| match name {
            "api_token" => Some("t0k"),
            "region" => Some("eu"),
            _ => None,
        };
        assert_eq!(t.render(value).unwrap(), "Bearer t0k for eu!");
        assert_eq!(
            Template::parse("{{ missing }}").unwrap().render(value),
            None
        );
        assert_eq!(
            Template::parse("plain { text }")
                .unwrap()
                .render(value)
                .unwrap(),
            "plain { text }"
        );
        assert_eq!(
            Template::parse("a {{ open").unwrap_err().to_string(),
            "`{{` at byte 2 is never closed with `}}`"
        );
        assert_eq!(
            Template::parse("{{ Bad-Name }}").unwrap_err().to_string(),
            "`{{ Bad-Name }}` does not name a variable (names are lowercase letters, digits and \
             `_`, starting with a letter)"
        );
    }

    #[test]
    fn names_and_labels() {
        assert!(is_variable_name("api_token2"));
        assert!(!is_variable_name("API_TOKEN"));
        assert!(!is_variable_name("2x"));
        assert!(is_store_label("default"));
        assert!(is_store_label("user-sessions_2"));
        assert!(!is_store_label("Default"));
        assert!(!is_store_label(""));
    }
}
