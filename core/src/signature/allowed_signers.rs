//! The trust root: parses an OpenSSH `allowed_signers` file into the keys, principals, namespaces
//! and validity windows the agent trusts; rejects (fails closed on) anything it does not fully
//! understand. Does no I/O: the agent reads the file and hands its bytes to
//! [`AllowedSigners::from_bytes`].
//!
//! The format is `ssh-keygen`'s (man ssh-keygen, "ALLOWED SIGNERS"), parsed the way OpenSSH's
//! `sshsig.c` parses it, with these deliberate differences:
//! - only `ssh-ed25519` keys are accepted; any other key type is an error, not a skipped line;
//! - `cert-authority` (trusting SSH certificates) is an error;
//! - times without a `Z` suffix are read as UTC, where OpenSSH reads them as local time (devices
//!   run in UTC; write the `Z` to mean the same thing everywhere);
//! - a malformed line anywhere rejects the whole file, so a typo can never silently drop or
//!   widen trust.

use std::fmt;
use std::path::{Path, PathBuf};

use ssh_key::{Algorithm, HashAlg, PublicKey};

use super::revoked::RevokedKeys;

/// A line of an `allowed_signers` file, for error messages: `path:line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineRef {
    pub path: PathBuf,
    pub line: usize,
}

impl fmt::Display for LineRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)
    }
}

/// Why an `allowed_signers` file cannot be used. Every variant names the file (and line).
#[derive(Debug, thiserror::Error)]
pub enum SignersError {
    /// The file could not be read (`reason`: the operating system's words).
    #[error("cannot load the trust policy: could not read {}: {reason}; every commit is refused until the allowed_signers file can be read", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("{at}: the allowed_signers file is not valid UTF-8; save it as UTF-8 text")]
    NotUtf8 { at: LineRef },
    #[error("{at}: no public key on this line; each line needs `principals [options] ssh-ed25519 <base64-key>`")]
    MissingKey { at: LineRef },
    #[error("{at}: a double quote is not closed; close it or remove the line")]
    UnterminatedQuote { at: LineRef },
    #[error("{at}: key type `{key_type}` is not supported, only ssh-ed25519 keys are trusted; replace it with an ed25519 key (ssh-keygen -t ed25519)")]
    UnsupportedKeyType { at: LineRef, key_type: String },
    #[error("{at}: the ssh-ed25519 key cannot be decoded ({reason}); copy the whole line of the signer's .pub file")]
    InvalidKey { at: LineRef, reason: String },
    #[error("{at}: `cert-authority` (trusting SSH certificates) is unsupported; list each signer's ssh-ed25519 key instead")]
    CertAuthority { at: LineRef },
    #[error("{at}: unknown option `{option}`; supported options are namespaces=\"…\", valid-after=\"…\" and valid-before=\"…\"")]
    UnknownOption { at: LineRef, option: String },
    #[error("{at}: option `{option}` is given more than once; keep one")]
    DuplicateOption { at: LineRef, option: &'static str },
    #[error("{at}: options are malformed near `{near}`; write them comma-separated, without spaces, values in double quotes, e.g. namespaces=\"git\",valid-after=\"20240101Z\"")]
    OptionSyntax { at: LineRef, near: String },
    #[error("{at}: {option}=\"{value}\" is not a valid time; write YYYYMMDD, YYYYMMDDHHMM or YYYYMMDDHHMMSS after 1970, optionally ending in Z (times are UTC)")]
    InvalidTime {
        at: LineRef,
        option: &'static str,
        value: String,
    },
    #[error("{at}: valid-before ({}) is not later than valid-after ({}), so the key would never be trusted; fix the dates or remove the line", format_utc(*.before), format_utc(*.after))]
    EmptyValidity {
        at: LineRef,
        after: i64,
        before: i64,
    },
    #[error("{at}: the principals list has an empty entry; remove the extra comma")]
    EmptyPrincipal { at: LineRef },
    #[error("{at}: every principal is negated (!pattern), so this line can never name a signer; list at least one principal")]
    NoPrincipal { at: LineRef },
}

/// When a key is trusted, as unix seconds (UTC), both ends inclusive like OpenSSH.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Validity {
    pub after: Option<i64>,
    pub before: Option<i64>,
}

impl Validity {
    pub fn contains(&self, time: i64) -> bool {
        self.after.is_none_or(|after| time >= after)
            && self.before.is_none_or(|before| time <= before)
    }
}

impl fmt::Display for Validity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.after, self.before) {
            (Some(after), Some(before)) => {
                write!(f, "from {} to {}", format_utc(after), format_utc(before))
            }
            (Some(after), None) => write!(f, "from {} on", format_utc(after)),
            (None, Some(before)) => write!(f, "until {}", format_utc(before)),
            (None, None) => f.write_str("at any time"),
        }
    }
}

/// One line of the file: who (principals), which key, for what (namespaces), when (validity).
#[derive(Debug, Clone)]
pub struct AllowedSigner {
    line: usize,
    principals: Vec<String>,
    namespaces: Option<String>,
    validity: Validity,
    key: PublicKey,
}

impl AllowedSigner {
    /// The line of the file this entry comes from.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The principal patterns as written (`*`, `?` wildcards; `!` negates).
    pub fn principals(&self) -> &[String] {
        &self.principals
    }

    /// The name reported for a signature by this key: the first principal that is not a
    /// negation. Parsing guarantees there is one.
    pub fn principal(&self) -> &str {
        self.principals
            .iter()
            .find(|p| !p.starts_with('!'))
            .map_or("", String::as_str)
    }

    pub fn key(&self) -> &PublicKey {
        &self.key
    }

    /// The key's fingerprint as `ssh-keygen -l` prints it: `SHA256:…`.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }

    /// Whether signatures in `namespace` are allowed: no `namespaces=` option allows all,
    /// otherwise the pattern list must match (and no `!` pattern may).
    pub fn allows_namespace(&self, namespace: &str) -> bool {
        self.namespaces
            .as_deref()
            .is_none_or(|patterns| pattern_list_matches(namespace, patterns))
    }

    pub fn validity(&self) -> Validity {
        self.validity
    }
}

/// The parsed trust root, entries in file order.
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    origin: PathBuf,
    entries: Vec<AllowedSigner>,
    /// `[trust] revoked_keys`: keys refused whatever the entries say.
    revoked: Option<RevokedKeys>,
}

impl AllowedSigners {
    /// Parses the bytes of the file at `path` (named in errors).
    pub fn from_bytes(bytes: Vec<u8>, path: &Path) -> Result<Self, SignersError> {
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            SignersError::NotUtf8 {
                at: LineRef {
                    path: path.to_owned(),
                    line,
                },
            }
        })?;
        Self::parse(&text, path)
    }

    /// Parses `text`; `origin` is only used to name the file in errors and messages.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, SignersError> {
        let mut entries = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let at = LineRef {
                path: origin.to_owned(),
                line: index + 1,
            };
            if let Some(entry) = parse_line(line, &at)? {
                entries.push(entry);
            }
        }
        Ok(AllowedSigners {
            origin: origin.to_owned(),
            entries,
            revoked: None,
        })
    }

    /// These signers, with every key in `revoked` refused whatever the entries say.
    pub fn with_revoked(mut self, revoked: RevokedKeys) -> Self {
        self.revoked = Some(revoked);
        self
    }

    /// The revocation file in force, if any.
    pub fn revoked(&self) -> Option<&RevokedKeys> {
        self.revoked.as_ref()
    }

    /// The file the entries came from.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    pub fn entries(&self) -> &[AllowedSigner] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

const WHITESPACE: [char; 3] = [' ', '\t', '\r'];

/// `principals [options] keytype base64 [comment]`; `None` for blank and comment lines.
fn parse_line(line: &str, at: &LineRef) -> Result<Option<AllowedSigner>, SignersError> {
    let rest = line.trim_start_matches(WHITESPACE);
    if rest.is_empty() || rest.starts_with('#') {
        return Ok(None);
    }
    let (principals, rest) = take_principals(rest, at)?;
    let rest = rest.trim_start_matches(WHITESPACE);
    if rest.is_empty() {
        return Err(SignersError::MissingKey { at: at.clone() });
    }
    // OpenSSH tries to read a key first and falls back to options; an options field always
    // has a `=` or is the `cert-authority` flag, a key type never does.
    let first = rest.split(WHITESPACE).next().unwrap_or("");
    let (options, rest) = if first.contains('=') || starts_with_ignore_case(first, "cert-authority")
    {
        let (field, rest) = take_options(rest, at)?;
        (
            parse_options(field, at)?,
            rest.trim_start_matches(WHITESPACE),
        )
    } else {
        (Options::default(), rest)
    };
    let key = parse_key(rest, at)?;
    Ok(Some(AllowedSigner {
        line: at.line,
        principals,
        namespaces: options.namespaces,
        validity: options.validity,
        key,
    }))
}

/// The principals field: one token, or a double-quoted string that may contain spaces
/// (OpenSSH's `strdelimw`). Returns the comma-separated patterns and the rest of the line.
fn take_principals<'l>(
    line: &'l str,
    at: &LineRef,
) -> Result<(Vec<String>, &'l str), SignersError> {
    let end = line.find([' ', '\t', '\r', '"']).unwrap_or(line.len());
    let (field, rest) = if line[end..].starts_with('"') {
        let quoted = &line[end + 1..];
        let close = quoted
            .find('"')
            .ok_or_else(|| SignersError::UnterminatedQuote { at: at.clone() })?;
        (
            format!("{}{}", &line[..end], &quoted[..close]),
            &quoted[close + 1..],
        )
    } else {
        (line[..end].to_owned(), &line[end..])
    };
    let principals: Vec<String> = field.split(',').map(str::to_owned).collect();
    if principals.iter().any(|p| p.is_empty() || p == "!") {
        return Err(SignersError::EmptyPrincipal { at: at.clone() });
    }
    if principals.iter().all(|p| p.starts_with('!')) {
        return Err(SignersError::NoPrincipal { at: at.clone() });
    }
    Ok((principals, rest))
}

/// The options field runs to the first whitespace outside double quotes
/// (OpenSSH's `sshkey_advance_past_options`).
fn take_options<'l>(line: &'l str, at: &LineRef) -> Result<(&'l str, &'l str), SignersError> {
    let bytes = line.as_bytes();
    let mut quoted = false;
    let mut i = 0;
    while i < bytes.len() && (quoted || !matches!(bytes[i], b' ' | b'\t')) {
        if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'"') {
            i += 1;
        } else if bytes[i] == b'"' {
            quoted = !quoted;
        }
        i += 1;
    }
    if quoted {
        return Err(SignersError::UnterminatedQuote { at: at.clone() });
    }
    // `i` stops only at an ASCII byte or the end, so it is a char boundary.
    Ok(line.split_at(i))
}

#[derive(Default)]
struct Options {
    namespaces: Option<String>,
    validity: Validity,
}

/// `opt[,opt...]` as OpenSSH's `sshsigopt_parse` reads it: names are case-insensitive,
/// values are double-quoted.
fn parse_options(field: &str, at: &LineRef) -> Result<Options, SignersError> {
    let mut options = Options::default();
    let mut rest = field;
    loop {
        if starts_with_ignore_case(rest, "cert-authority") {
            return Err(SignersError::CertAuthority { at: at.clone() });
        } else if let Some(value) = strip_option(rest, "namespaces") {
            let (patterns, after) = dequote(value, at)?;
            if options.namespaces.replace(patterns).is_some() {
                return Err(duplicate(at, "namespaces"));
            }
            rest = after;
        } else if let Some(value) = strip_option(rest, "valid-after") {
            let (time, after) = dequote_time(value, "valid-after", at)?;
            if options.validity.after.replace(time).is_some() {
                return Err(duplicate(at, "valid-after"));
            }
            rest = after;
        } else if let Some(value) = strip_option(rest, "valid-before") {
            let (time, after) = dequote_time(value, "valid-before", at)?;
            if options.validity.before.replace(time).is_some() {
                return Err(duplicate(at, "valid-before"));
            }
            rest = after;
        } else {
            let name = rest.split([',', '=']).next().unwrap_or(rest);
            return Err(SignersError::UnknownOption {
                at: at.clone(),
                option: name.to_owned(),
            });
        }
        if rest.is_empty() {
            break;
        }
        match rest.strip_prefix(',') {
            Some(next) if !next.is_empty() => rest = next,
            _ => {
                return Err(SignersError::OptionSyntax {
                    at: at.clone(),
                    near: rest.to_owned(),
                })
            }
        }
    }
    if let Validity {
        after: Some(after),
        before: Some(before),
    } = options.validity
    {
        if before <= after {
            return Err(SignersError::EmptyValidity {
                at: at.clone(),
                after,
                before,
            });
        }
    }
    Ok(options)
}

fn duplicate(at: &LineRef, option: &'static str) -> SignersError {
    SignersError::DuplicateOption {
        at: at.clone(),
        option,
    }
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len()
        && text.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// `name=` (name case-insensitive) → the text after the `=`.
fn strip_option<'t>(text: &'t str, name: &str) -> Option<&'t str> {
    if starts_with_ignore_case(text, name) {
        text[name.len()..].strip_prefix('=')
    } else {
        None
    }
}

/// A double-quoted value (`\"` stands for `"`) → (value, text after the closing quote).
fn dequote<'t>(text: &'t str, at: &LineRef) -> Result<(String, &'t str), SignersError> {
    let Some(inner) = text.strip_prefix('"') else {
        return Err(SignersError::OptionSyntax {
            at: at.clone(),
            near: text.to_owned(),
        });
    };
    let mut value = String::new();
    let mut chars = inner.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &inner[i + 1..])),
            '\\' if inner[i + 1..].starts_with('"') => {
                chars.next();
                value.push('"');
            }
            c => value.push(c),
        }
    }
    Err(SignersError::UnterminatedQuote { at: at.clone() })
}

fn dequote_time<'t>(
    text: &'t str,
    option: &'static str,
    at: &LineRef,
) -> Result<(i64, &'t str), SignersError> {
    let (value, rest) = dequote(text, at)?;
    match parse_time(&value) {
        Some(time) => Ok((time, rest)),
        None => Err(SignersError::InvalidTime {
            at: at.clone(),
            option,
            value,
        }),
    }
}

/// `YYYYMMDD[HHMM[SS]]`, optionally followed by `Z` or `UTC` (OpenSSH's `parse_absolute_time`),
/// as unix seconds. Without a suffix OpenSSH uses local time; we use UTC (see the module doc).
/// Times at or before the epoch are refused, as OpenSSH does (0 means "unset" there).
fn parse_time(text: &str) -> Option<i64> {
    let digits = if text.len() > 1 && text.ends_with(['Z', 'z']) {
        &text[..text.len() - 1]
    } else if text.len() > 3
        && text.is_char_boundary(text.len() - 3)
        && text[text.len() - 3..].eq_ignore_ascii_case("utc")
    {
        &text[..text.len() - 3]
    } else {
        text
    };
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // All ASCII digits, so every slice below is in bounds and parses.
    let field = |from: usize, to: usize| digits.get(from..to).and_then(|s| s.parse::<u32>().ok());
    let year = field(0, 4)?;
    let month = field(4, 6)?;
    let day = field(6, 8)?;
    let (hour, minute, second) = match digits.len() {
        8 => (0, 0, 0),
        12 => (field(8, 10)?, field(10, 12)?, 0),
        _ => (field(8, 10)?, field(10, 12)?, field(12, 14)?),
    };
    let time = unix_time(year, month, day, hour, minute, second)?;
    (time > 0).then_some(time)
}

/// Unix seconds of a UTC date and time, `None` unless it is a real one (month 1-12, the
/// month's days, 00:00:00-23:59:59; no leap second).
pub(crate) fn unix_time(
    year: u32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
) -> Option<i64> {
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    Some(days * 86_400 + i64::from(hour * 3600 + minute * 60 + second))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    // Both results are small and positive by construction (1..=31, 1..=12).
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Unix seconds as `2024-01-31T12:00:00Z`, for messages.
pub(crate) fn format_utc(time: i64) -> String {
    let (year, month, day) = civil_from_days(time.div_euclid(86_400));
    let seconds = time.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// `keytype base64 [comment]`; only ssh-ed25519.
fn parse_key(text: &str, at: &LineRef) -> Result<PublicKey, SignersError> {
    let mut fields = text.split(WHITESPACE).filter(|f| !f.is_empty());
    let (Some(key_type), Some(base64)) = (fields.next(), fields.next()) else {
        return Err(SignersError::MissingKey { at: at.clone() });
    };
    if key_type != Algorithm::Ed25519.as_str() {
        return Err(SignersError::UnsupportedKeyType {
            at: at.clone(),
            key_type: key_type.to_owned(),
        });
    }
    let invalid = |reason: String| SignersError::InvalidKey {
        at: at.clone(),
        reason,
    };
    let mut key = PublicKey::from_openssh(&format!("{key_type} {base64}"))
        .map_err(|e| invalid(e.to_string()))?;
    // from_openssh checks the blob's own type name against `key_type`; check again so a
    // future ssh-key release that stops doing so cannot widen what we trust.
    if key.algorithm() != Algorithm::Ed25519 {
        return Err(invalid(format!(
            "the key data is {}, not ssh-ed25519",
            key.algorithm()
        )));
    }
    key.set_comment("");
    Ok(key)
}

/// OpenSSH's `match_pattern_list`: true when some pattern of the comma-separated `list`
/// matches `text` and no negated (`!`) pattern does. Case-sensitive.
fn pattern_list_matches(text: &str, list: &str) -> bool {
    let mut matched = false;
    for pattern in list.split(',') {
        match pattern.strip_prefix('!') {
            Some(negated) if pattern_matches(text.as_bytes(), negated.as_bytes()) => return false,
            Some(_) => {}
            None => matched |= pattern_matches(text.as_bytes(), pattern.as_bytes()),
        }
    }
    matched
}

/// Glob match of the whole `text`: `*` any run of bytes, `?` exactly one byte.
fn pattern_matches(text: &[u8], pattern: &[u8]) -> bool {
    let (mut t, mut p) = (0, 0);
    // Where the last `*` was and the text position it currently stands for.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBgqO+3I2d03iDv9TQDFHM7SLcu01mVRXsHh8aF7k2H9";
    const ALICE_FINGERPRINT: &str = "SHA256:OykyBtLi1EZgTlVp/+Cvn+PT8RYKrV36kENg0L9Zzjk";
    const BOB: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINlR/RhYivPvCY8KMdS91n5vpsWxahN38Vsz2SwkFSdZ";
    const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC9krbSFjxuPV29Y7E01jsddqMjULuEmr3RMVjHdVWL/osKAh9OozdpBpv/0yY9QOllMbiT1fSJVBolVbi2DhgJXa5ugQTqnwY41x2GMXqww3r+Z8GWKKgDnC57bfROHBt2KevWbm0zbNK2mDvGykk2TRQV2b1xCFSjK9dxcyMVMw==";
    const ORIGIN: &str = "/etc/shoal/allowed_signers";

    fn parse(text: &str) -> Result<AllowedSigners, SignersError> {
        AllowedSigners::parse(text, Path::new(ORIGIN))
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(signers) => panic!("expected an error, parsed {} entries", signers.len()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_principals_options_key_and_comment() {
        let text = format!(
            "# fleet signers\n\n  \nalice@example.com,ops-* namespaces=\"git,file\",valid-after=\"20240101\",VALID-BEFORE=\"203001020304Z\" {ALICE} alice laptop\n\"bob smith\" {BOB}\r\n"
        );
        let signers = parse(&text).unwrap();
        assert_eq!(signers.len(), 2);
        assert_eq!(signers.origin(), Path::new(ORIGIN));

        let alice = &signers.entries()[0];
        assert_eq!(alice.line(), 4);
        assert_eq!(alice.principals(), ["alice@example.com", "ops-*"]);
        assert_eq!(alice.principal(), "alice@example.com");
        assert_eq!(alice.fingerprint(), ALICE_FINGERPRINT);
        assert!(alice.allows_namespace("git"));
        assert!(alice.allows_namespace("file"));
        assert!(!alice.allows_namespace("gitx"));
        assert_eq!(
            alice.validity().to_string(),
            "from 2024-01-01T00:00:00Z to 2030-01-02T03:04:00Z"
        );

        let bob = &signers.entries()[1];
        assert_eq!(bob.line(), 5);
        assert_eq!(bob.principals(), ["bob smith"]);
        assert!(
            bob.allows_namespace("git"),
            "no namespaces= allows every namespace"
        );
        assert_eq!(bob.validity(), Validity::default());
    }

    #[test]
    fn empty_and_comment_only_files_have_no_entries() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("# nobody yet\n   # still nobody\n\n")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn namespace_patterns_follow_openssh_matching() {
        let entry = |namespaces: &str| {
            let signers = parse(&format!("a namespaces=\"{namespaces}\" {ALICE}")).unwrap();
            signers.entries()[0].clone()
        };
        assert!(entry("g?t").allows_namespace("git"));
        assert!(entry("*").allows_namespace("git"));
        assert!(entry("file,g*").allows_namespace("git"));
        assert!(
            !entry("*,!git").allows_namespace("git"),
            "a negated match wins"
        );
        assert!(
            !entry("!file").allows_namespace("git"),
            "negations alone allow nothing"
        );
        assert!(!entry("GIT").allows_namespace("git"), "case-sensitive");
        assert!(!entry("").allows_namespace("git"));
        assert!(entry("a*b*c").allows_namespace("aXbYbZc"));
        assert!(!entry("a*b*c").allows_namespace("aXbYbZ"));
    }

    #[test]
    fn times_are_utc_with_or_without_suffix() {
        assert_eq!(parse_time("19700102"), Some(86_400));
        assert_eq!(parse_time("20240229Z"), Some(1_709_164_800));
        assert_eq!(parse_time("20240229utc"), Some(1_709_164_800));
        assert_eq!(
            parse_time("202402291230"),
            Some(1_709_164_800 + 12 * 3600 + 30 * 60)
        );
        assert_eq!(
            parse_time("20240229123059Z"),
            Some(1_709_164_800 + 12 * 3600 + 30 * 60 + 59)
        );
        for bad in [
            "19700101",
            "2023022",
            "20230229",
            "20231301",
            "20230100",
            "202301012400",
            "20230101235960",
            "2023-01-01",
            "20230101ZZ",
            "Z",
            "",
            "+2023010",
            "２０２３０１０１",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
        for time in [1, 86_399, 951_782_400, 1_709_164_800, 4_102_444_800] {
            let text = format_utc(time).replace(['-', 'T', ':'], "");
            assert_eq!(parse_time(&text), Some(time), "{text}");
        }
    }

    #[test]
    fn validity_is_inclusive() {
        let window = Validity {
            after: Some(100),
            before: Some(200),
        };
        assert!(!window.contains(99));
        assert!(window.contains(100));
        assert!(window.contains(200));
        assert!(!window.contains(201));
        assert!(Validity::default().contains(i64::MIN));
    }

    #[test]
    fn cert_authority_is_unsupported() {
        assert_eq!(
            error(&format!("# CA\n*@example.com cert-authority {ALICE}")),
            "/etc/shoal/allowed_signers:2: `cert-authority` (trusting SSH certificates) is unsupported; list each signer's ssh-ed25519 key instead"
        );
        assert!(matches!(
            parse(&format!("a namespaces=\"git\",Cert-Authority {ALICE}")),
            Err(SignersError::CertAuthority { .. })
        ));
    }

    #[test]
    fn other_key_types_are_rejected_not_skipped() {
        assert_eq!(
            error(&format!("alice {ALICE}\nops {RSA}")),
            "/etc/shoal/allowed_signers:2: key type `ssh-rsa` is not supported, only ssh-ed25519 keys are trusted; replace it with an ed25519 key (ssh-keygen -t ed25519)"
        );
        assert!(matches!(
            parse("ops namespaces=\"git\" sk-ssh-ed25519@openssh.com AAAA"),
            Err(SignersError::UnsupportedKeyType { key_type, .. }) if key_type == "sk-ssh-ed25519@openssh.com"
        ));
    }

    #[test]
    fn malformed_lines_name_file_line_and_fix() {
        let rsa_blob = RSA.split(' ').nth(1).unwrap();
        let cases: &[(&str, &str)] = &[
            (
                "alice",
                "/etc/shoal/allowed_signers:1: no public key on this line; each line needs `principals [options] ssh-ed25519 <base64-key>`",
            ),
            (
                "alice namespaces=\"git\"",
                "/etc/shoal/allowed_signers:1: no public key on this line; each line needs `principals [options] ssh-ed25519 <base64-key>`",
            ),
            (
                "alice ssh-ed25519",
                "/etc/shoal/allowed_signers:1: no public key on this line; each line needs `principals [options] ssh-ed25519 <base64-key>`",
            ),
            (
                "\"alice ssh-ed25519 AAAA",
                "/etc/shoal/allowed_signers:1: a double quote is not closed; close it or remove the line",
            ),
            (
                "alice namespaces=\"git ssh-ed25519 AAAA",
                "/etc/shoal/allowed_signers:1: a double quote is not closed; close it or remove the line",
            ),
            (
                "alice ssh-ed25519 AAAAnot-base64",
                "/etc/shoal/allowed_signers:1: the ssh-ed25519 key cannot be decoded (Base64 encoding error: invalid Base64 encoding); copy the whole line of the signer's .pub file",
            ),
            (
                "alice namespace=\"git\" ssh-ed25519 AAAA",
                "/etc/shoal/allowed_signers:1: unknown option `namespace`; supported options are namespaces=\"…\", valid-after=\"…\" and valid-before=\"…\"",
            ),
            (
                "alice namespaces=\"git\",namespaces=\"file\" ssh-ed25519 AAAA",
                "/etc/shoal/allowed_signers:1: option `namespaces` is given more than once; keep one",
            ),
            (
                "alice namespaces=git ssh-ed25519 AAAA",
                "/etc/shoal/allowed_signers:1: options are malformed near `git`; write them comma-separated, without spaces, values in double quotes, e.g. namespaces=\"git\",valid-after=\"20240101Z\"",
            ),
            (
                "alice namespaces=\"git\", ssh-ed25519 AAAA",
                "/etc/shoal/allowed_signers:1: options are malformed near `,`; write them comma-separated, without spaces, values in double quotes, e.g. namespaces=\"git\",valid-after=\"20240101Z\"",
            ),
            (
                "alice valid-after=\"2024-01-01\" ssh-ed25519 AAAA",
                "/etc/shoal/allowed_signers:1: valid-after=\"2024-01-01\" is not a valid time; write YYYYMMDD, YYYYMMDDHHMM or YYYYMMDDHHMMSS after 1970, optionally ending in Z (times are UTC)",
            ),
            (
                "alice valid-after=\"20250101\",valid-before=\"20240101\" ssh-ed25519 AAAA",
                "/etc/shoal/allowed_signers:1: valid-before (2024-01-01T00:00:00Z) is not later than valid-after (2025-01-01T00:00:00Z), so the key would never be trusted; fix the dates or remove the line",
            ),
            (
                "alice,,bob ssh-ed25519 AAAA",
                "/etc/shoal/allowed_signers:1: the principals list has an empty entry; remove the extra comma",
            ),
            (
                "!mallory ssh-ed25519 AAAA",
                "/etc/shoal/allowed_signers:1: every principal is negated (!pattern), so this line can never name a signer; list at least one principal",
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(error(line), *expected, "line: {line}");
        }
        // An RSA blob labelled ssh-ed25519 must not slip through as some other key type.
        assert!(matches!(
            parse(&format!("alice ssh-ed25519 {rsa_blob}")),
            Err(SignersError::InvalidKey { .. })
        ));
    }
}
