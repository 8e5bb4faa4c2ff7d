//! Templating of `template = true` files: `{{ device.id }}` and `{{ labels.NAME }}`, nothing
//! else. An unknown variable or a missing label is an error, never an empty string, because a
//! config file silently missing a value is worse than a refused commit.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("line {line}: not UTF-8 text; templates must be text (set template = false for binary files)")]
    NotUtf8 { line: usize },
    #[error("line {line}: \"{{{{\" is not closed by \"}}}}\" on the same line (a file that needs a literal \"{{{{\" cannot be a template; set template = false)")]
    Unclosed { line: usize },
    #[error("line {line}: unknown variable \"{name}\"; templates know only {{{{ device.id }}}} and {{{{ labels.NAME }}}}")]
    UnknownVariable { line: usize, name: String },
    #[error("line {line}: device \"{device_id}\" has no label \"{label}\" (used as {{{{ labels.{label} }}}}); add it to `labels` in the device's agent.toml, or stop using it in this template")]
    MissingLabel {
        line: usize,
        label: String,
        device_id: String,
    },
}

/// A template checked for syntax and variable names, ready to be expanded for any device.
#[derive(Debug)]
pub(crate) struct Template<'a> {
    pieces: Vec<Piece<'a>>,
}

#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    DeviceId,
    Label { name: &'a str, line: usize },
}

impl<'a> Template<'a> {
    /// Checks everything that does not depend on the device: UTF-8, closed braces, known
    /// variables. Done for every profile, matched or not, so a broken template is a broken
    /// commit for the whole fleet.
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Self, TemplateError> {
        let text = std::str::from_utf8(bytes).map_err(|e| TemplateError::NotUtf8 {
            line: line_at(bytes, e.valid_up_to()),
        })?;
        let mut pieces = Vec::new();
        let mut rest = text;
        let mut line = 1;
        while let Some(open) = rest.find("{{") {
            let (before, after_open) = (&rest[..open], &rest[open + 2..]);
            line += before.matches('\n').count();
            pieces.push(Piece::Text(before));
            let line_end = after_open.find('\n').unwrap_or(after_open.len());
            let close = after_open[..line_end]
                .find("}}")
                .ok_or(TemplateError::Unclosed { line })?;
            let name = after_open[..close].trim();
            let label = name
                .strip_prefix("labels.")
                .filter(|l| !l.is_empty() && !l.contains(char::is_whitespace));
            pieces.push(match label {
                _ if name == "device.id" => Piece::DeviceId,
                Some(label) => Piece::Label { name: label, line },
                None => {
                    return Err(TemplateError::UnknownVariable {
                        line,
                        name: name.to_owned(),
                    })
                }
            });
            rest = &after_open[close + 2..];
        }
        pieces.push(Piece::Text(rest));
        Ok(Template { pieces })
    }

    pub(crate) fn expand(
        &self,
        device_id: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<u8>, TemplateError> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::DeviceId => out.push_str(device_id),
                Piece::Label { name, line } => {
                    let value = labels
                        .get(*name)
                        .ok_or_else(|| TemplateError::MissingLabel {
                            line: *line,
                            label: (*name).to_owned(),
                            device_id: device_id.to_owned(),
                        })?;
                    out.push_str(value);
                }
            }
        }
        Ok(out.into_bytes())
    }
}

fn line_at(bytes: &[u8], offset: usize) -> usize {
    1 + bytes[..offset].iter().filter(|b| **b == b'\n').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(text: &str) -> Result<String, TemplateError> {
        let labels = BTreeMap::from([
            ("site".to_string(), "berlin".to_string()),
            ("role".to_string(), "gateway".to_string()),
        ]);
        let bytes = Template::parse(text.as_bytes())?.expand("gw-0042", &labels)?;
        Ok(String::from_utf8(bytes).unwrap())
    }

    #[test]
    fn substitutes_device_id_and_labels_with_optional_spaces() {
        assert_eq!(
            expand("Welcome to {{ device.id }} at {{labels.site}} ({{   labels.role\t}}).\n"),
            Ok("Welcome to gw-0042 at berlin (gateway).\n".into())
        );
        assert_eq!(
            expand("no variables }} here"),
            Ok("no variables }} here".into())
        );
        assert_eq!(expand(""), Ok("".into()));
        assert_eq!(
            expand("{{device.id}}{{device.id}}"),
            Ok("gw-0042gw-0042".into())
        );
    }

    #[test]
    fn errors_name_the_variable_and_the_line() {
        let cases = [
            (
                "a\nb\nhost = {{ device.name }}\n",
                "line 3: unknown variable \"device.name\"; templates know only {{ device.id }} and {{ labels.NAME }}",
            ),
            (
                "{{ labels. }}",
                "line 1: unknown variable \"labels.\"; templates know only {{ device.id }} and {{ labels.NAME }}",
            ),
            (
                "{{ if x }}",
                "line 1: unknown variable \"if x\"; templates know only {{ device.id }} and {{ labels.NAME }}",
            ),
            (
                "ok\n\nsite = {{ labels.region }}",
                "line 3: device \"gw-0042\" has no label \"region\" (used as {{ labels.region }}); add it to `labels` in the device's agent.toml, or stop using it in this template",
            ),
            (
                "x\n{{ device.id\n}}",
                "line 2: \"{{\" is not closed by \"}}\" on the same line (a file that needs a literal \"{{\" cannot be a template; set template = false)",
            ),
            (
                "{{ device.id }} {{",
                "line 1: \"{{\" is not closed by \"}}\" on the same line (a file that needs a literal \"{{\" cannot be a template; set template = false)",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(expand(text).unwrap_err().to_string(), expected, "{text:?}");
        }
    }

    #[test]
    fn binary_input_is_refused_with_its_line() {
        let err = Template::parse(b"one\ntwo \xff\n").unwrap_err();
        assert_eq!(err, TemplateError::NotUtf8 { line: 2 });
        assert_eq!(
            err.to_string(),
            "line 2: not UTF-8 text; templates must be text (set template = false for binary files)"
        );
    }
}
