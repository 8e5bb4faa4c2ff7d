//! The naming rules for what `shoal.toml` may point at: device paths, repository paths, unit
//! names, owners and modes. Pure string checks; each refusal is a message fragment that reads
//! after the quoted value (`"/etc/./motd" is not normalized; ...`).

use std::path::{Component, Path, PathBuf};

/// Unit types a configuration repository may declare. `.device` and `.scope` units are made
/// by udev and at runtime, never from a unit file, so they are not in the list.
const UNIT_TYPES: &[&str] = &[
    "service",
    "socket",
    "timer",
    "path",
    "mount",
    "automount",
    "swap",
    "target",
    "slice",
];

/// systemd's limit for a unit name (`UNIT_NAME_MAX`).
const UNIT_NAME_MAX: usize = 255;

/// A path on the device: absolute, normalized, not `/`.
pub(crate) fn check_device_path(path: &str) -> Result<PathBuf, String> {
    if path.is_empty() {
        return Err("must not be empty".into());
    }
    if path.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    if path.split('/').any(|c| c == "..") {
        return Err("must not contain \"..\" components".into());
    }
    if !path.starts_with('/') {
        return Err(format!("must be absolute, like \"/{}\"", normalized(path)));
    }
    let clean = format!("/{}", normalized(path));
    if clean == "/" {
        return Err("is the root directory; name a file below it".into());
    }
    if clean != path {
        return Err(format!("is not normalized; write \"{clean}\""));
    }
    Ok(PathBuf::from(path))
}

/// A path inside the repository: relative, normalized, never into `.git`.
pub fn check_repo_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("must not be empty".into());
    }
    if path.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    if path.starts_with('/') {
        return Err("must be relative to the repository root, not absolute".into());
    }
    if path.split('/').any(|c| c == "..") {
        return Err("must stay inside the repository: \"..\" components are not allowed".into());
    }
    let clean = normalized(path);
    if clean != path {
        return Err(format!("is not normalized; write \"{clean}\""));
    }
    // Git refuses to track `.git` in any case; on a plain directory it is the repository's
    // own internals (config, hooks), which are not configuration.
    if path.split('/').any(|c| c.eq_ignore_ascii_case(".git")) {
        return Err("points into git's own \".git\" directory".into());
    }
    Ok(())
}

/// The components of `path` without empty and `.` components, joined by `/`.
fn normalized(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// A systemd unit file name such as `telemetry.service` or `getty@tty1.service`.
pub(crate) fn check_unit_name(unit: &str) -> Result<(), String> {
    if unit.is_empty() {
        return Err("must not be empty".into());
    }
    if unit.contains('/') {
        return Err("must be a unit name like \"telemetry.service\", not a path".into());
    }
    if unit.starts_with('-') {
        // `systemctl start -H.service` reads it as an option (-H: another host); the agent
        // passes names after `--` too, but a name systemctl could misread is refused outright.
        return Err("must not start with \"-\" (systemctl would read it as an option)".into());
    }
    if unit.len() > UNIT_NAME_MAX {
        return Err(format!("is longer than {UNIT_NAME_MAX} bytes"));
    }
    let suffixes = UNIT_TYPES
        .iter()
        .map(|t| format!(".{t}"))
        .collect::<Vec<_>>()
        .join(", ");
    let Some((prefix, kind)) = unit.rsplit_once('.') else {
        return Err(format!("needs a unit type suffix: one of {suffixes}"));
    };
    if !UNIT_TYPES.contains(&kind) {
        return Err(format!(
            "has the unknown unit type \".{kind}\"; use one of {suffixes}"
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c);
    if prefix.is_empty() || !prefix.chars().all(allowed) {
        return Err(
            "is not a valid unit name: use letters, digits and \":-_.\\@\" before the type suffix"
                .into(),
        );
    }
    match prefix.split_once('@') {
        None => Ok(()),
        Some(("", _)) => Err("is not a valid unit name: nothing before \"@\"".into()),
        Some((_, instance)) if instance.contains('@') => {
            Err("is not a valid unit name: more than one \"@\"".into())
        }
        Some((template, "")) => Err(format!(
            "is a template unit, which cannot be enabled or started as it is; declare an instance, like \"{template}@name.{kind}\""
        )),
        Some(_) => Ok(()),
    }
}

/// A user or group as `chown` takes it: a name or a numeric id.
pub(crate) fn check_account(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name.starts_with('-')
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ':' || c == '/');
    if bad {
        return Err(
            "is not a user or group name; write a name like \"root\" or a numeric id".into(),
        );
    }
    Ok(())
}

/// A file mode written as 3 or 4 octal digits (`"644"`, `"0644"`, `"4755"`).
pub(crate) fn parse_mode(text: &str) -> Option<u32> {
    let digits_ok = matches!(text.len(), 3 | 4) && text.bytes().all(|b| (b'0'..=b'7').contains(&b));
    if !digits_ok {
        return None;
    }
    u32::from_str_radix(text, 8).ok()
}

/// `path` with `.` and `..` resolved lexically; used for the state directory, which comes from
/// the agent's config rather than from the repository and may not be normalized.
pub(crate) fn lexically_normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_paths() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("/etc/motd", Ok("/etc/motd")),
            (
                "/etc/systemd/system/x.conf",
                Ok("/etc/systemd/system/x.conf"),
            ),
            ("", Err("must not be empty")),
            ("etc/motd", Err("must be absolute, like \"/etc/motd\"")),
            ("./etc/motd", Err("must be absolute, like \"/etc/motd\"")),
            ("/", Err("is the root directory; name a file below it")),
            ("//", Err("is the root directory; name a file below it")),
            ("/.", Err("is the root directory; name a file below it")),
            ("/etc/../shadow", Err("must not contain \"..\" components")),
            ("/etc/..", Err("must not contain \"..\" components")),
            ("/etc/./motd", Err("is not normalized; write \"/etc/motd\"")),
            ("/etc//motd", Err("is not normalized; write \"/etc/motd\"")),
            ("//etc/motd", Err("is not normalized; write \"/etc/motd\"")),
            ("/etc/motd/", Err("is not normalized; write \"/etc/motd\"")),
            ("/etc/motd/.", Err("is not normalized; write \"/etc/motd\"")),
            ("/etc/mo\0td", Err("contains a NUL byte")),
        ];
        for (path, expected) in cases {
            let got = check_device_path(path);
            match expected {
                Ok(p) => assert_eq!(got, Ok(PathBuf::from(p)), "{path:?}"),
                Err(m) => assert_eq!(got, Err(m.to_string()), "{path:?}"),
            }
        }
    }

    #[test]
    fn repo_paths() {
        let cases: &[(&str, Result<(), &str>)] = &[
            ("files/motd", Ok(())),
            ("shoal.toml", Ok(())),
            ("files/.gitkeep", Ok(())),
            ("", Err("must not be empty")),
            (
                "/etc/shadow",
                Err("must be relative to the repository root, not absolute"),
            ),
            (
                "../../etc/shadow",
                Err("must stay inside the repository: \"..\" components are not allowed"),
            ),
            (
                "files/../../x",
                Err("must stay inside the repository: \"..\" components are not allowed"),
            ),
            (
                "./files/motd",
                Err("is not normalized; write \"files/motd\""),
            ),
            (
                "files//motd",
                Err("is not normalized; write \"files/motd\""),
            ),
            (
                "files/motd/",
                Err("is not normalized; write \"files/motd\""),
            ),
            (
                ".git/config",
                Err("points into git's own \".git\" directory"),
            ),
            (
                "sub/.GIT/hooks/x",
                Err("points into git's own \".git\" directory"),
            ),
            ("a\0b", Err("contains a NUL byte")),
        ];
        for (path, expected) in cases {
            assert_eq!(
                check_repo_path(path),
                expected.map_err(str::to_string),
                "{path:?}"
            );
        }
    }

    #[test]
    fn unit_names() {
        for ok in [
            "telemetry.service",
            "backup.timer",
            "getty@tty1.service",
            "var-lib-data.mount",
            "sshd.socket",
            "my_app-2.path",
        ] {
            assert_eq!(check_unit_name(ok), Ok(()), "{ok}");
        }
        let all = ".service, .socket, .timer, .path, .mount, .automount, .swap, .target, .slice";
        let cases = [
            ("telemetry", format!("needs a unit type suffix: one of {all}")),
            (
                "telemetry.conf",
                format!("has the unknown unit type \".conf\"; use one of {all}"),
            ),
            (
                "-H.service",
                "must not start with \"-\" (systemctl would read it as an option)".to_string(),
            ),
            (
                "units/telemetry.service",
                "must be a unit name like \"telemetry.service\", not a path".to_string(),
            ),
            (
                "tele metry.service",
                "is not a valid unit name: use letters, digits and \":-_.\\@\" before the type suffix"
                    .to_string(),
            ),
            (
                ".service",
                "is not a valid unit name: use letters, digits and \":-_.\\@\" before the type suffix"
                    .to_string(),
            ),
            (
                "getty@.service",
                "is a template unit, which cannot be enabled or started as it is; declare an instance, like \"getty@name.service\"".to_string(),
            ),
            (
                "@x.service",
                "is not a valid unit name: nothing before \"@\"".to_string(),
            ),
            (
                "a@b@c.service",
                "is not a valid unit name: more than one \"@\"".to_string(),
            ),
            ("", "must not be empty".to_string()),
        ];
        for (unit, expected) in cases {
            assert_eq!(check_unit_name(unit), Err(expected), "{unit:?}");
        }
        let long = format!("{}.service", "a".repeat(250));
        assert_eq!(
            check_unit_name(&long),
            Err("is longer than 255 bytes".into())
        );
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0644"), Some(0o644));
        assert_eq!(parse_mode("644"), Some(0o644));
        assert_eq!(parse_mode("4755"), Some(0o4755));
        assert_eq!(parse_mode("0999"), None);
        assert_eq!(parse_mode("64"), None);
        assert_eq!(parse_mode("00644"), None);
        assert_eq!(parse_mode("+644"), None);
        assert_eq!(parse_mode("rw-r--r--"), None);
    }

    #[test]
    fn accounts() {
        assert_eq!(check_account("root"), Ok(()));
        assert_eq!(check_account("1000"), Ok(()));
        assert_eq!(check_account("systemd-network"), Ok(()));
        for bad in ["", "root:root", "-x", "a b", "a/b"] {
            assert!(check_account(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn state_dir_is_normalized_lexically() {
        assert_eq!(
            lexically_normal(Path::new("/etc/shoal/../../var/lib/./shoal/")),
            Path::new("/var/lib/shoal")
        );
    }
}
