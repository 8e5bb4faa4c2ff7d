//! Releases: what binds a commit to the environment it may run in (DESIGN.md, "Environments and
//! releases"). A release is a signed annotated tag made with stock git, published at
//! `refs/shoal/releases/<environment>`, whose `tag` header is `<environment>/<N>` and whose
//! message ends with trailers (`Expires: <RFC 3339 UTC>`, optional `Halt: true`). This module
//! parses such a tag and decides whether a device accepts it ([`decide`]); the clock, the last
//! accepted release and the commit graph are passed in. Pure: no I/O, no git, no clock. The tag's
//! signature is `signature::sshsig::check_tag`'s; whether its commit descends from the applied
//! one and passes `verify` is the agent's (it needs the commit graph).

use std::fmt;

use crate::signature::allowed_signers::{format_utc, unix_time};
use crate::signature::sshsig::split_tag;

/// Where a device following environment `NAME` finds its release: `refs/shoal/releases/NAME`.
pub const RELEASE_REF_PREFIX: &str = "refs/shoal/releases/";

/// The trailer that says until when a release may be applied.
pub const EXPIRES_TRAILER: &str = "Expires";
/// The trailer that stops devices that have not applied the release's commit yet.
pub const HALT_TRAILER: &str = "Halt";

/// The release ref of `environment`.
pub fn release_ref(environment: &str) -> String {
    format!("{RELEASE_REF_PREFIX}{environment}")
}

/// Checks an environment name: it becomes part of a ref and of a tag name, so it is kept to
/// ASCII letters, digits, `.`, `_` and `-`, not starting with `.` or `-`, at most 64 bytes.
pub fn check_environment_name(name: &str) -> Result<(), String> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if name.is_empty()
        || name.len() > 64
        || !valid_chars
        || name.starts_with(['.', '-'])
        || name.ends_with(".lock")
        || name.contains("..")
    {
        return Err(format!(
            "{name:?} is not an environment name: use 1 to 64 ASCII letters, digits, '.', '_' or '-', not starting with '.' or '-'"
        ));
    }
    Ok(())
}

/// A release as a device identifies it: environment and number (`production/42`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReleaseName {
    pub environment: String,
    pub number: u64,
}

impl ReleaseName {
    /// Parses a tag name `environment/N`: N a decimal number from 1, without leading zeros (so
    /// one release has one name).
    pub fn parse(tag_name: &str) -> Result<ReleaseName, ReleaseError> {
        let malformed = || ReleaseError::TagName {
            name: tag_name.to_owned(),
        };
        let (environment, number) = tag_name.rsplit_once('/').ok_or_else(malformed)?;
        check_environment_name(environment).map_err(|_| malformed())?;
        if number.is_empty()
            || number.starts_with('0')
            || !number.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(malformed());
        }
        let number = number.parse::<u64>().map_err(|_| malformed())?;
        Ok(ReleaseName {
            environment: environment.to_owned(),
            number,
        })
    }
}

impl fmt::Display for ReleaseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.environment, self.number)
    }
}

/// A release tag's content, parsed (its signature is checked separately, before any of this is
/// believed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseTag {
    /// The `object` header: the id (hex) of what the tag points at.
    pub object: String,
    /// The `type` header: `commit` for a release; anything else is refused by [`decide`].
    pub object_type: String,
    pub name: ReleaseName,
    /// The tagger time, unix seconds.
    pub tagger_time: i64,
    /// The `Expires:` trailer, unix seconds.
    pub expires: i64,
    /// `Halt: true`.
    pub halt: bool,
}

/// Why a tag is not a well-formed release. The caller adds the tag's id and ref.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    #[error("the tag object is malformed ({problem}); make releases with `shoal-agent release` (or git tag -s)")]
    Malformed { problem: &'static str },
    #[error("the tag is named {name:?}, not `<environment>/<N>` with N a number from 1; make releases with `shoal-agent release`")]
    TagName { name: String },
    #[error("the tag message has no `Expires: <time>` trailer, and a release without an expiry would defeat the freeze defence; make releases with `shoal-agent release --expires 7d`")]
    NoExpiry,
    #[error("the tag message has more than one `{trailer}:` trailer, so which one counts is ambiguous; re-make the release with one")]
    DuplicateTrailer { trailer: &'static str },
    #[error(
        "the `Expires:` trailer {value:?} is not an RFC 3339 UTC time like 2024-05-01T12:00:00Z"
    )]
    BadExpiry { value: String },
    #[error("the `Halt:` trailer {value:?} is neither `true` nor `false`")]
    BadHalt { value: String },
}

/// Parses a release tag object (as `git cat-file tag` prints it, signature included). The
/// message is what precedes the signature block (git's own split); trailers are read from its
/// last paragraph, keys without regard to case (as git's trailers).
pub fn parse_tag(raw: &[u8]) -> Result<ReleaseTag, ReleaseError> {
    // Unsigned tags have no signature to strip; the signature check refuses them anyway.
    let payload = match split_tag(raw) {
        Ok(signed) => signed.payload,
        Err(_) => raw.to_vec(),
    };
    let text = std::str::from_utf8(&payload).map_err(|_| ReleaseError::Malformed {
        problem: "it is not UTF-8 text",
    })?;
    let (headers, message) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut object = None;
    let mut object_type = None;
    let mut tag = None;
    let mut tagger_time = None;
    for line in headers.lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        let slot = match key {
            "object" => &mut object,
            "type" => &mut object_type,
            "tag" => &mut tag,
            "tagger" => {
                if tagger_time.is_some() {
                    return Err(ReleaseError::Malformed {
                        problem: "it has more than one tagger",
                    });
                }
                tagger_time = Some(time_of_ident(value).ok_or(ReleaseError::Malformed {
                    problem: "the tagger has no time in seconds",
                })?);
                continue;
            }
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(ReleaseError::Malformed {
                problem: "a header appears twice",
            });
        }
    }
    let object = object.ok_or(ReleaseError::Malformed {
        problem: "it has no object header",
    })?;
    if !matches!(object.len(), 40 | 64) || !object.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ReleaseError::Malformed {
            problem: "the object id is not a hexadecimal object id",
        });
    }
    let object_type = object_type.ok_or(ReleaseError::Malformed {
        problem: "it has no type header",
    })?;
    let name = ReleaseName::parse(tag.ok_or(ReleaseError::Malformed {
        problem: "it has no tag header",
    })?)?;
    let tagger_time = tagger_time.ok_or(ReleaseError::Malformed {
        problem: "it has no tagger",
    })?;
    let trailers = Trailers::parse(message)?;
    Ok(ReleaseTag {
        object: object.to_ascii_lowercase(),
        object_type: object_type.to_owned(),
        name,
        tagger_time,
        expires: trailers.expires.ok_or(ReleaseError::NoExpiry)?,
        halt: trailers.halt,
    })
}

/// The unix time in a git identity (`Name <email> 1700000000 +0000`): the number after the
/// last `>`.
fn time_of_ident(ident: &str) -> Option<i64> {
    let after = &ident[ident.rfind('>')? + 1..];
    after.split_whitespace().next()?.parse().ok()
}

struct Trailers {
    expires: Option<i64>,
    halt: bool,
}

impl Trailers {
    /// The `Expires:` and `Halt:` trailers of `message`'s last paragraph. Other trailers
    /// (Signed-off-by, ...) and lines that are not `Key: value` are left alone.
    fn parse(message: &str) -> Result<Trailers, ReleaseError> {
        let trimmed = message.trim_end_matches(['\n', ' ', '\t', '\r']);
        let last = trimmed.rsplit("\n\n").next().unwrap_or("");
        let mut expires = None;
        let mut halt = None;
        for line in last.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if key.eq_ignore_ascii_case(EXPIRES_TRAILER) {
                let time = parse_rfc3339_utc(value).ok_or_else(|| ReleaseError::BadExpiry {
                    value: value.to_owned(),
                })?;
                if expires.replace(time).is_some() {
                    return Err(ReleaseError::DuplicateTrailer {
                        trailer: EXPIRES_TRAILER,
                    });
                }
            } else if key.eq_ignore_ascii_case(HALT_TRAILER) {
                let on = match value {
                    v if v.eq_ignore_ascii_case("true") => true,
                    v if v.eq_ignore_ascii_case("false") => false,
                    _ => {
                        return Err(ReleaseError::BadHalt {
                            value: value.to_owned(),
                        })
                    }
                };
                if halt.replace(on).is_some() {
                    return Err(ReleaseError::DuplicateTrailer {
                        trailer: HALT_TRAILER,
                    });
                }
            }
        }
        Ok(Trailers {
            expires,
            halt: halt.unwrap_or(false),
        })
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339 in UTC, without fractions) as unix seconds.
pub fn parse_rfc3339_utc(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let field = |from: usize, to: usize| -> Option<u32> {
        let s = text.get(from..to)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (year, month, day) = (field(0, 4)?, field(5, 7)?, field(8, 10)?);
    let (hour, minute, second) = (field(11, 13)?, field(14, 16)?, field(17, 19)?);
    unix_time(year, month, day, hour, minute, second)
}

/// Unix seconds as `2024-05-01T12:00:00Z`, the form of the `Expires:` trailer.
pub fn format_rfc3339_utc(time: i64) -> String {
    format_utc(time)
}

/// How long ago an expiry was, in whole days: `less than a day`, `1 day`, `12 days`. Coarse on
/// purpose: the message is the device's recorded result and its report, so a finer figure would
/// make every sync of a stale device a write and a new report; a day's step is one of each.
pub fn format_days(seconds: i64) -> String {
    match seconds.max(0) / 86_400 {
        0 => "less than a day".to_owned(),
        1 => "1 day".to_owned(),
        days => format!("{days} days"),
    }
}

/// The release a device accepted last, as it keeps it with its watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastRelease {
    pub name: ReleaseName,
    /// The tag object's id (hex).
    pub tag: String,
    pub tagger_time: i64,
}

/// What the device knows when a release is offered.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The device's `[source] environment`.
    pub environment: &'a str,
    /// The release it accepted last, if any.
    pub last: Option<&'a LastRelease>,
    /// The commit (hex) the device applied last (its watermark), if any.
    pub applied: Option<&'a str>,
    /// The device's clock, unix seconds.
    pub now: i64,
}

/// Why a correctly signed release is not accepted. Every variant but [`Refusal::Expired`] is a
/// refusal; an expired release is not an attack but a freeze (or a release bot that stopped),
/// so it is reported as `stale`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the release is {release}, for environment `{}`, but this device follows `{device}`: a release for another environment is never applied here (ask why the server offers it)", release.environment)]
    ForeignEnvironment {
        release: ReleaseName,
        device: String,
    },
    #[error("release {release} points at a {kind}, not a commit; make releases of commits with `shoal-agent release`")]
    NotACommit { release: ReleaseName, kind: String },
    #[error("release {release} is older than {last}, the last release this device accepted (anti-rollback); to go back, release a revert commit as a new number")]
    Older {
        release: ReleaseName,
        last: ReleaseName,
    },
    #[error("release {release} is not the tag {last_tag} this device accepted under that number: a release number is used once; make a new release with the next number")]
    Reused {
        release: ReleaseName,
        last_tag: String,
    },
    #[error("release {release} was tagged at {}, before {} when {last} was tagged: the tagger time never goes backwards (anti-rollback); make a new release", format_utc(*tagger_time), format_utc(*last_tagger_time))]
    TaggedEarlier {
        release: ReleaseName,
        last: ReleaseName,
        tagger_time: i64,
        last_tagger_time: i64,
    },
    #[error("release {release} is halted (Halt: true); devices that have not applied its commit wait for a release without a halt")]
    Halted { release: ReleaseName },
    #[error("release {release} expired at {} ({} ago by this device's clock); the device stays at what it applied: the release bot has stopped re-signing or the server is serving an old release (a freeze); make a fresh release (`shoal-agent release`), and check the device's clock if it is wrong", format_utc(*expires), format_days(now - expires))]
    Expired {
        release: ReleaseName,
        expires: i64,
        now: i64,
    },
}

impl Refusal {
    /// Whether this is a freeze (`stale`), not a refusal.
    pub fn is_stale(&self) -> bool {
        matches!(self, Refusal::Expired { .. })
    }
}

/// Decides whether the device accepts `tag` (whose id is `tag_id`, hex) in `context`. The
/// tag's signature must already have been checked; its commit's descent and signatures are the
/// caller's next step. The checks run from the most to the least grave, so a release that is
/// both foreign and expired is refused as foreign, not reported stale.
pub fn decide(tag: &ReleaseTag, tag_id: &str, context: Context<'_>) -> Result<(), Refusal> {
    let release = tag.name.clone();
    if release.environment != context.environment {
        return Err(Refusal::ForeignEnvironment {
            release,
            device: context.environment.to_owned(),
        });
    }
    if tag.object_type != "commit" {
        return Err(Refusal::NotACommit {
            release,
            kind: tag.object_type.clone(),
        });
    }
    // Numbers and times are compared within one environment: a device moved to another
    // environment starts that one's count, but its commits still must descend from the applied
    // one.
    if let Some(last) = context
        .last
        .filter(|l| l.name.environment == context.environment)
    {
        if release.number < last.name.number {
            return Err(Refusal::Older {
                release,
                last: last.name.clone(),
            });
        }
        if release.number == last.name.number && !tag_id.eq_ignore_ascii_case(&last.tag) {
            return Err(Refusal::Reused {
                release,
                last_tag: last.tag.clone(),
            });
        }
        if tag.tagger_time < last.tagger_time {
            return Err(Refusal::TaggedEarlier {
                release,
                last: last.name.clone(),
                tagger_time: tag.tagger_time,
                last_tagger_time: last.tagger_time,
            });
        }
    }
    if tag.halt && context.applied != Some(tag.object.as_str()) {
        return Err(Refusal::Halted { release });
    }
    if tag.expires <= context.now {
        return Err(Refusal::Expired {
            release,
            expires: tag.expires,
            now: context.now,
        });
    }
    Ok(())
}

/// The message of a release tag as `shoal-agent release` writes it: a subject, then the
/// trailers. Parsed back by [`parse_tag`].
pub fn tag_message(name: &ReleaseName, commit: &str, expires: i64, halt: bool) -> String {
    let mut message = format!(
        "Release {name}\n\nCommit {commit}.\n\n{EXPIRES_TRAILER}: {}\n",
        format_utc(expires)
    );
    if halt {
        message.push_str(&format!("{HALT_TRAILER}: true\n"));
    }
    message
}

#[cfg(test)]
mod tests;
