//! Path globs of `[[rule]] paths`: matched against repository paths (`/`-separated, relative, as
//! git lists them). `*` and `?` stay within one path component, `[abc]`, `[a-z]`, `[!a]` match one
//! character, and a whole component `**` matches any number of components (none included), as in
//! gitignore and most CI path filters. Anything else is a literal character.

use std::fmt;

/// A parsed glob; `Display` gives it back as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// `**`: zero or more whole components.
    AnyComponents,
    /// A component pattern.
    Component(Vec<Token>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `?`
    AnyChar,
    /// `*`
    AnyChars,
    /// `[...]`: (ranges, negated)
    Class(Vec<(char, char)>, bool),
}

impl Glob {
    /// Parses `text`; the error says what is wrong and how to write it.
    pub fn parse(text: &str) -> Result<Glob, String> {
        if text.is_empty() {
            return Err("an empty pattern matches nothing; remove it".into());
        }
        if text.starts_with('/') {
            return Err(
                "patterns are repository paths, relative to its root; remove the leading `/`"
                    .into(),
            );
        }
        if text.ends_with('/') {
            return Err(format!(
                "a pattern names files, not directories; write `{text}**` for everything under it"
            ));
        }
        let mut segments = Vec::new();
        for component in text.split('/') {
            match component {
                "" => return Err("`//` (an empty path component); write one `/`".into()),
                "." | ".." => {
                    return Err(format!(
                        "`{component}` is not a repository path component; write the path from the repository root"
                    ))
                }
                "**" => segments.push(Segment::AnyComponents),
                _ if component.contains("**") => {
                    return Err(format!(
                        "`**` must be a whole path component (`a/**/b`), not part of `{component}`; use `*` within a component"
                    ))
                }
                _ => segments.push(Segment::Component(parse_component(component)?)),
            }
        }
        Ok(Glob {
            text: text.to_owned(),
            segments,
        })
    }

    /// Whether the repository path `path` (`a/b/c`) matches.
    pub fn matches(&self, path: &str) -> bool {
        let components: Vec<&str> = path.split('/').collect();
        match_segments(&self.segments, &components)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn parse_component(component: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = component.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '?' => tokens.push(Token::AnyChar),
            '*' => tokens.push(Token::AnyChars),
            '[' => {
                let negated = matches!(chars.peek(), Some('!' | '^'));
                if negated {
                    chars.next();
                }
                let mut ranges = Vec::new();
                let mut closed = false;
                let mut first = true;
                while let Some(c) = chars.next() {
                    if c == ']' && !first {
                        closed = true;
                        break;
                    }
                    first = false;
                    if chars.peek() == Some(&'-') {
                        chars.next();
                        match chars.next() {
                            Some(']') => {
                                ranges.push((c, c));
                                ranges.push(('-', '-'));
                                closed = true;
                                break;
                            }
                            Some(end) if end >= c => ranges.push((c, end)),
                            Some(end) => {
                                return Err(format!(
                                    "the range `{c}-{end}` in `{component}` is backwards; write `{end}-{c}`"
                                ))
                            }
                            None => break,
                        }
                    } else {
                        ranges.push((c, c));
                    }
                }
                if !closed {
                    return Err(format!(
                        "`[` in `{component}` is not closed; close the class with `]`"
                    ));
                }
                tokens.push(Token::Class(ranges, negated));
            }
            '\\' => {
                return Err(format!(
                    "`\\` in `{component}`: escapes are not supported; match the character with `?` or a class like `[*]`"
                ))
            }
            c => tokens.push(Token::Literal(c)),
        }
    }
    Ok(tokens)
}

fn match_segments(segments: &[Segment], components: &[&str]) -> bool {
    match segments.split_first() {
        None => components.is_empty(),
        Some((Segment::AnyComponents, rest)) => {
            (0..=components.len()).any(|skip| match_segments(rest, &components[skip..]))
        }
        Some((Segment::Component(tokens), rest)) => match components.split_first() {
            Some((first, others)) => {
                let chars: Vec<char> = first.chars().collect();
                match_tokens(tokens, &chars) && match_segments(rest, others)
            }
            None => false,
        },
    }
}

fn match_tokens(tokens: &[Token], chars: &[char]) -> bool {
    match tokens.split_first() {
        None => chars.is_empty(),
        Some((Token::AnyChars, rest)) => {
            (0..=chars.len()).any(|skip| match_tokens(rest, &chars[skip..]))
        }
        Some((token, rest)) => match chars.split_first() {
            Some((&c, others)) => {
                let one = match token {
                    Token::Literal(l) => *l == c,
                    Token::AnyChar => true,
                    Token::Class(ranges, negated) => {
                        ranges.iter().any(|&(a, b)| a <= c && c <= b) != *negated
                    }
                    Token::AnyChars => unreachable!("handled above"),
                };
                one && match_tokens(rest, others)
            }
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_like_gitignore_globs() {
        let cases: &[(&str, &str, bool)] = &[
            ("profiles/sensor/**", "profiles/sensor/a.toml", true),
            ("profiles/sensor/**", "profiles/sensor/deep/er/x", true),
            ("profiles/sensor/**", "profiles/sensorx/a", false),
            ("profiles/sensor/**", "profiles/sensor", true),
            ("files/*.conf", "files/a.conf", true),
            ("files/*.conf", "files/sub/a.conf", false),
            ("**/*.service", "units/a.service", true),
            ("**/*.service", "a.service", true),
            ("units/?.service", "units/ab.service", false),
            ("units/[a-c]*.service", "units/b1.service", true),
            ("units/[!a-c]*.service", "units/b1.service", false),
            ("shoal.toml", "shoal.toml", true),
            ("shoal.toml", "x/shoal.toml", false),
            ("a/**/b", "a/b", true),
            ("a/**/b", "a/x/y/b", true),
        ];
        for (glob, path, expected) in cases {
            assert_eq!(
                Glob::parse(glob).unwrap().matches(path),
                *expected,
                "{glob} against {path}"
            );
        }
    }

    #[test]
    fn invalid_globs_say_how_to_write_them() {
        let cases = [
            ("", "an empty pattern matches nothing; remove it"),
            ("/etc/x", "patterns are repository paths, relative to its root; remove the leading `/`"),
            ("files/", "a pattern names files, not directories; write `files/**` for everything under it"),
            ("a//b", "`//` (an empty path component); write one `/`"),
            ("../x", "`..` is not a repository path component; write the path from the repository root"),
            ("a**", "`**` must be a whole path component (`a/**/b`), not part of `a**`; use `*` within a component"),
            ("files/[ab", "`[` in `[ab` is not closed; close the class with `]`"),
            ("[z-a]", "the range `z-a` in `[z-a]` is backwards; write `a-z`"),
            ("a\\*", "`\\` in `a\\*`: escapes are not supported; match the character with `?` or a class like `[*]`"),
        ];
        for (glob, message) in cases {
            assert_eq!(Glob::parse(glob).unwrap_err(), message, "{glob:?}");
        }
    }
}
