//! The repository's trust policy, `.shoal/policy.toml`: who (principals and their ssh-ed25519
//! keys) may change which paths (`[[rule]]`, first match decides, no match needs `[root]`), with
//! how many approvals (thresholds), and who may release each environment. Parsing is strict — an
//! unknown key, an unknown principal, a threshold of zero or above the principal count, an invalid
//! glob, a key shared by two principals is an error naming the line — and the decisions
//! ([`Policy::requirement`], [`Requirement::decide`]) are pure: the agent reads the file and the
//! commits and hands over bytes, paths and principals. Does no I/O.

mod glob;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, PublicKey};
use toml::Spanned;

pub use glob::Glob;

/// Where the policy lives in the repository.
pub const POLICY_PATH: &str = ".shoal/policy.toml";

const SUPPORTED_VERSION: i64 = 1;

/// Why a policy file cannot be used. `origin` names the file (and the commit it was read from);
/// `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{origin}:{line}: {message} (TOML syntax)")]
    Syntax {
        origin: String,
        line: usize,
        message: String,
    },
    #[error("{origin}:{line}: {message}")]
    Structure {
        origin: String,
        line: usize,
        message: String,
    },
    #[error("{origin}: `version` is missing; the first line of a policy is `version = 1`")]
    MissingVersion { origin: String },
    #[error("{origin}:{line}: policy version {found} is not supported by this agent (it reads version 1); upgrade the agent before the policy")]
    Version {
        origin: String,
        line: usize,
        found: String,
    },
    #[error("{origin}:{line}: the key of principal `{principal}` cannot be read ({reason}); paste the whole line of the signer's .pub file")]
    InvalidKey {
        origin: String,
        line: usize,
        principal: String,
        reason: String,
    },
    #[error("{origin}:{line}: principal `{principal}` has a `{key_type}` key; only ssh-ed25519 keys are trusted (ssh-keygen -t ed25519)")]
    NotEd25519 {
        origin: String,
        line: usize,
        principal: String,
        key_type: String,
    },
    #[error("{origin}:{line}: the key of principal `{principal}` is also `{other}`'s; a key belongs to one principal, so that its signature counts for one")]
    SharedKey {
        origin: String,
        line: usize,
        principal: String,
        other: String,
    },
    #[error("{origin}:{line}: principal `{principal}` has no key; give it at least one ssh-ed25519 key, or remove it")]
    NoKey {
        origin: String,
        line: usize,
        principal: String,
    },
    #[error("{origin}:{line}: {role} names `{name}`, which is not in [principals]; add it there or fix the name")]
    UnknownPrincipal {
        origin: String,
        line: usize,
        role: String,
        name: String,
    },
    #[error("{origin}:{line}: {role} names `{name}` twice; a principal counts once, list it once")]
    RepeatedPrincipal {
        origin: String,
        line: usize,
        role: String,
        name: String,
    },
    #[error("{origin}:{line}: {role} names no principal; list at least one")]
    NoPrincipals {
        origin: String,
        line: usize,
        role: String,
    },
    #[error("{origin}:{line}: {role} has threshold 0, which would let anyone (even an unsigned commit's author) through; use at least 1")]
    ThresholdZero {
        origin: String,
        line: usize,
        role: String,
    },
    #[error("{origin}:{line}: {role} has threshold {threshold} but only {count} principal(s), so nothing could ever be approved; lower the threshold or add principals")]
    ThresholdTooHigh {
        origin: String,
        line: usize,
        role: String,
        threshold: u64,
        count: usize,
    },
    #[error("{origin}:{line}: {role}: invalid path pattern `{glob}`: {reason}")]
    InvalidGlob {
        origin: String,
        line: usize,
        role: String,
        glob: String,
        reason: String,
    },
    #[error("{origin}:{line}: {role} has no paths; list the globs it governs, e.g. paths = [\"profiles/sensor/**\"]")]
    NoPaths {
        origin: String,
        line: usize,
        role: String,
    },
    #[error("{origin}:{line}: a second {what} named `{name}`; names must be unique")]
    DuplicateName {
        origin: String,
        line: usize,
        what: &'static str,
        name: String,
    },
    #[error("{origin}:{line}: {role}: max_age {reason}")]
    InvalidMaxAge {
        origin: String,
        line: usize,
        role: String,
        reason: String,
    },
}

/// A principal: a name and the keys that sign as it (a rotation adds the new key first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub keys: Vec<PublicKey>,
}

/// Who may do something, and how many of them must sign or approve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub principals: BTreeSet<String>,
    pub threshold: usize,
}

/// `[[environment]]`: who may sign its releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    pub name: String,
    pub release: BTreeSet<String>,
    pub max_age: Option<Duration>,
}

/// `[[rule]]`: the paths it governs and the role that may change them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub paths: Vec<Glob>,
    pub role: Role,
}

/// A parsed, checked `.shoal/policy.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    principals: Vec<Principal>,
    root: Role,
    environments: Vec<Environment>,
    rules: Vec<Rule>,
}

/// What a change to one path needs: a rule's role, or the root's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement<'p> {
    /// The first rule whose paths match.
    Rule(&'p Rule),
    /// No rule matches (or the path is the policy itself): the root.
    Root(&'p Role),
}

/// A requirement's verdict for a set of signing principals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `rule "NAME"` or `root`.
    pub by: String,
    /// Which of the signers belong to the role, in name order.
    pub counted: Vec<String>,
    pub threshold: usize,
    /// The role's principals, for the advice.
    pub role: Vec<String>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.counted.len() >= self.threshold
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counted = if self.counted.is_empty() {
            "none of them".to_owned()
        } else {
            self.counted.join(", ")
        };
        write!(
            f,
            "{} needs {} of [{}], has {} ({counted})",
            self.by,
            self.threshold,
            self.role.join(", "),
            self.counted.len()
        )
    }
}

impl Requirement<'_> {
    /// Which of `signers` (principal names: the commit's signer and its approvers, each once)
    /// count for this requirement, and whether they reach its threshold.
    pub fn decide(&self, signers: &BTreeSet<String>) -> Decision {
        let (by, role) = match self {
            Requirement::Rule(rule) => (format!("rule \"{}\"", rule.name), &rule.role),
            Requirement::Root(role) => ("root".to_owned(), *role),
        };
        Decision {
            by,
            counted: signers
                .iter()
                .filter(|s| role.principals.contains(*s))
                .cloned()
                .collect(),
            threshold: role.threshold,
            role: role.principals.iter().cloned().collect(),
        }
    }
}

impl Role {
    /// The requirement this role makes, for the bootstrap root (allowed_signers).
    pub fn requirement(&self) -> Requirement<'_> {
        Requirement::Root(self)
    }
}

impl Policy {
    /// Parses and checks the policy `text`; `origin` (e.g. `.shoal/policy.toml at commit 4f3c…`)
    /// names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let origin = origin.to_owned();
        let table: toml::Table = toml::from_str(text).map_err(|e| PolicyError::Syntax {
            origin: origin.clone(),
            line: e.span().map_or(1, |span| line_of(text, span.start)),
            message: e.message().trim_end().to_owned(),
        })?;
        match table.get("version") {
            None => return Err(PolicyError::MissingVersion { origin }),
            Some(toml::Value::Integer(SUPPORTED_VERSION)) => {}
            Some(other) => {
                return Err(PolicyError::Version {
                    line: key_line(text, "version"),
                    origin,
                    found: other.to_string(),
                })
            }
        }
        let raw: RawPolicy = toml::from_str(text).map_err(|e| PolicyError::Structure {
            origin: origin.clone(),
            line: e.span().map_or(1, |span| line_of(text, span.start)),
            message: e.message().trim_end().to_owned(),
        })?;
        Checker {
            text,
            origin: &origin,
        }
        .check(raw)
    }

    pub fn principals(&self) -> &[Principal] {
        &self.principals
    }

    pub fn root(&self) -> &Role {
        &self.root
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn environments(&self) -> &[Environment] {
        &self.environments
    }

    pub fn environment(&self, name: &str) -> Option<&Environment> {
        self.environments.iter().find(|e| e.name == name)
    }

    /// The principal a key signs as, if the policy lists it.
    pub fn principal_of(&self, key: &KeyData) -> Option<&str> {
        self.principals
            .iter()
            .find(|p| p.keys.iter().any(|k| k.key_data() == key))
            .map(|p| p.name.as_str())
    }

    /// What a change to `path` needs: the policy file itself always needs the root; otherwise the
    /// first rule with a matching pattern, or the root when none matches.
    pub fn requirement(&self, path: &str) -> Requirement<'_> {
        if path == POLICY_PATH {
            return Requirement::Root(&self.root);
        }
        self.rules
            .iter()
            .find(|rule| rule.paths.iter().any(|glob| glob.matches(path)))
            .map_or(Requirement::Root(&self.root), Requirement::Rule)
    }

    /// The policy's keys as an OpenSSH `allowed_signers` text (namespace `git`, one line per key,
    /// the principal's name first), for the signature checks.
    pub fn allowed_signers_text(&self) -> String {
        let mut text = String::new();
        for principal in &self.principals {
            for key in &principal.keys {
                if let Ok(line) = key.to_openssh() {
                    let key = line
                        .split_whitespace()
                        .take(2)
                        .collect::<Vec<_>>()
                        .join(" ");
                    text.push_str(&format!("{} namespaces=\"git\" {key}\n", principal.name));
                }
            }
        }
        text
    }
}

// The file's shape. `deny_unknown_fields` everywhere: a misspelt `treshold` silently ignored
// would be a rule that lets one signer through where the operator wrote two.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[allow(dead_code)] // checked from the table first
    version: i64,
    #[serde(default)]
    principals: BTreeMap<String, Spanned<Keys>>,
    root: Spanned<RawRole>,
    #[serde(default)]
    environment: Vec<Spanned<RawEnvironment>>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Keys {
    One(String),
    Several(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    principals: Vec<Spanned<String>>,
    threshold: Spanned<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvironment {
    name: Spanned<String>,
    release: Vec<Spanned<String>>,
    max_age: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    paths: Spanned<Vec<Spanned<String>>>,
    principals: Vec<Spanned<String>>,
    threshold: Option<Spanned<i64>>,
}

struct Checker<'t> {
    text: &'t str,
    origin: &'t str,
}

impl Checker<'_> {
    fn line<T>(&self, spanned: &Spanned<T>) -> usize {
        line_of(self.text, spanned.span().start)
    }

    fn check(&self, raw: RawPolicy) -> Result<Policy, PolicyError> {
        let origin = || self.origin.to_owned();
        let mut principals: Vec<Principal> = Vec::new();
        for (name, keys) in &raw.principals {
            let line = self.line(keys);
            let texts = match keys.get_ref() {
                Keys::One(text) => vec![text.clone()],
                Keys::Several(texts) => texts.clone(),
            };
            if texts.is_empty() {
                return Err(PolicyError::NoKey {
                    origin: origin(),
                    line,
                    principal: name.clone(),
                });
            }
            let mut parsed = Vec::new();
            for text in texts {
                let key =
                    PublicKey::from_openssh(text.trim()).map_err(|e| PolicyError::InvalidKey {
                        origin: origin(),
                        line,
                        principal: name.clone(),
                        reason: e.to_string(),
                    })?;
                if key.algorithm() != Algorithm::Ed25519 {
                    return Err(PolicyError::NotEd25519 {
                        origin: origin(),
                        line,
                        principal: name.clone(),
                        key_type: key.algorithm().to_string(),
                    });
                }
                let owner = principals
                    .iter()
                    .find(|p| p.keys.iter().any(|k| k.key_data() == key.key_data()))
                    .map(|p| p.name.clone())
                    .or_else(|| {
                        parsed
                            .iter()
                            .any(|k: &PublicKey| k.key_data() == key.key_data())
                            .then(|| name.clone())
                    });
                if let Some(other) = owner {
                    return Err(PolicyError::SharedKey {
                        origin: origin(),
                        line,
                        principal: name.clone(),
                        other,
                    });
                }
                parsed.push(key);
            }
            principals.push(Principal {
                name: name.clone(),
                keys: parsed,
            });
        }
        let known: BTreeSet<&str> = principals.iter().map(|p| p.name.as_str()).collect();

        let root_raw = raw.root.get_ref();
        let root = self.role(
            "[root]",
            self.line(&raw.root),
            &root_raw.principals,
            Some(&root_raw.threshold),
            &known,
        )?;

        let mut environments: Vec<Environment> = Vec::new();
        for spanned in &raw.environment {
            let env = spanned.get_ref();
            let name = env.name.get_ref().clone();
            let what = format!("environment \"{name}\"");
            if environments.iter().any(|e| e.name == name) {
                return Err(PolicyError::DuplicateName {
                    origin: origin(),
                    line: self.line(&env.name),
                    what: "[[environment]]",
                    name,
                });
            }
            let release = self.role(&what, self.line(spanned), &env.release, None, &known)?;
            let max_age = match &env.max_age {
                None => None,
                Some(text) => Some(crate::duration::parse_duration(text.get_ref()).map_err(
                    |reason| PolicyError::InvalidMaxAge {
                        origin: origin(),
                        line: self.line(text),
                        role: what.clone(),
                        reason,
                    },
                )?),
            };
            if max_age == Some(Duration::ZERO) {
                return Err(PolicyError::InvalidMaxAge {
                    origin: origin(),
                    line: env.max_age.as_ref().map_or(1, |t| self.line(t)),
                    role: what,
                    reason: "of 0 would refuse every release; write e.g. \"72h\"".into(),
                });
            }
            environments.push(Environment {
                name,
                release: release.principals,
                max_age,
            });
        }

        let mut rules: Vec<Rule> = Vec::new();
        for spanned in &raw.rule {
            let rule = spanned.get_ref();
            let name = rule.name.get_ref().clone();
            let what = format!("rule \"{name}\"");
            if rules.iter().any(|r| r.name == name) {
                return Err(PolicyError::DuplicateName {
                    origin: origin(),
                    line: self.line(&rule.name),
                    what: "[[rule]]",
                    name,
                });
            }
            if rule.paths.get_ref().is_empty() {
                return Err(PolicyError::NoPaths {
                    origin: origin(),
                    line: self.line(&rule.paths),
                    role: what,
                });
            }
            let mut paths = Vec::new();
            for glob in rule.paths.get_ref() {
                paths.push(Glob::parse(glob.get_ref()).map_err(|reason| {
                    PolicyError::InvalidGlob {
                        origin: origin(),
                        line: self.line(glob),
                        role: what.clone(),
                        glob: glob.get_ref().clone(),
                        reason,
                    }
                })?);
            }
            let role = self.role(
                &what,
                self.line(spanned),
                &rule.principals,
                rule.threshold.as_ref(),
                &known,
            )?;
            rules.push(Rule { name, paths, role });
        }
        Ok(Policy {
            principals,
            root,
            environments,
            rules,
        })
    }

    /// Principals named by a role must be known and listed once; the threshold (default 1) must
    /// be between 1 and their number.
    fn role(
        &self,
        what: &str,
        line: usize,
        names: &[Spanned<String>],
        threshold: Option<&Spanned<i64>>,
        known: &BTreeSet<&str>,
    ) -> Result<Role, PolicyError> {
        let origin = || self.origin.to_owned();
        if names.is_empty() {
            return Err(PolicyError::NoPrincipals {
                origin: origin(),
                line,
                role: what.to_owned(),
            });
        }
        let mut principals = BTreeSet::new();
        for name in names {
            let text = name.get_ref();
            if !known.contains(text.as_str()) {
                return Err(PolicyError::UnknownPrincipal {
                    origin: origin(),
                    line: self.line(name),
                    role: what.to_owned(),
                    name: text.clone(),
                });
            }
            if !principals.insert(text.clone()) {
                return Err(PolicyError::RepeatedPrincipal {
                    origin: origin(),
                    line: self.line(name),
                    role: what.to_owned(),
                    name: text.clone(),
                });
            }
        }
        let (value, at) = match threshold {
            Some(t) => (*t.get_ref(), self.line(t)),
            None => (1, line),
        };
        if value <= 0 {
            return Err(PolicyError::ThresholdZero {
                origin: origin(),
                line: at,
                role: what.to_owned(),
            });
        }
        let count = principals.len();
        let threshold = usize::try_from(value).unwrap_or(usize::MAX);
        if threshold > count {
            return Err(PolicyError::ThresholdTooHigh {
                origin: origin(),
                line: at,
                role: what.to_owned(),
                threshold: value.unsigned_abs(),
                count,
            });
        }
        Ok(Role {
            principals,
            threshold,
        })
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).unwrap_or(text).matches('\n').count() + 1
}

/// The line a top-level `key =` is on (for errors found in the table, which has no spans).
fn key_line(text: &str, key: &str) -> usize {
    text.lines()
        .position(|line| {
            line.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(1, |i| i + 1)
}
