//! What is actually on the device for the paths a plan looks at, as plain data: taken by
//! `apply::observe`, read here without any I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::manifest::octal_mode;

/// The disk at the paths of a desired state and of the current manifest, plus the device's
/// user and group names so ownership can be compared without reading `/etc/passwd` here.
/// A path missing from `files` is treated as [`DiskEntry::Missing`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskSnapshot {
    pub files: BTreeMap<PathBuf, DiskEntry>,
    pub accounts: Accounts,
    /// For regular files observe hashed, what lets apply recognise the same file again with
    /// one `stat` instead of reading it (not every file has one; plan only passes them on).
    pub stamps: BTreeMap<PathBuf, FileStamp>,
}

impl DiskSnapshot {
    pub fn entry(&self, path: &Path) -> &DiskEntry {
        self.files.get(path).unwrap_or(&DiskEntry::Missing)
    }
}

/// What one path is on disk (the path itself, symbolic links not followed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskEntry {
    Missing,
    File(DiskFile),
    /// Something that is not a regular file: a directory, a symbolic link, a socket…
    Other(OtherKind),
}

/// A regular file's content hash and metadata. Also how apply records a file it saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskFile {
    pub sha256: String,
    /// Permission bits including setuid/setgid/sticky (`& 0o7777`).
    #[serde(with = "octal_mode")]
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A regular file as observe read it: its content hash and what changes whenever its content
/// does (identity, size, modification and change times). Apply trusts `sha256` only while a
/// fresh `stat` gives the same other fields; `apply::observe` decides when a stamp may be
/// taken at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp {
    pub sha256: String,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    /// (seconds, nanoseconds)
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

/// The kind of a non-regular file found where a file is (or was) declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OtherKind {
    Directory,
    Symlink,
    /// A socket, FIFO or device node.
    Special,
    /// A regular file with more than one hard link (another name for it may be anywhere).
    HardLinked,
}

impl fmt::Display for OtherKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OtherKind::Directory => "directory",
            OtherKind::Symlink => "symbolic link",
            OtherKind::Special => "special file",
            OtherKind::HardLinked => "file with more than one hard link",
        })
    }
}

/// User and group names of the device (its `root`'s `/etc/passwd` and `/etc/group`, falling
/// back to the host's for names the root does not define).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounts {
    users: BTreeMap<String, u32>,
    groups: BTreeMap<String, u32>,
}

impl Accounts {
    /// Adds a user unless the name is already known: load the most specific source first.
    pub fn add_user(&mut self, name: &str, uid: u32) {
        self.users.entry(name.to_owned()).or_insert(uid);
    }

    /// Adds a group unless the name is already known.
    pub fn add_group(&mut self, name: &str, gid: u32) {
        self.groups.entry(name.to_owned()).or_insert(gid);
    }

    /// The uid for an owner as declared: a user name, else a numeric id (as chown(1) does).
    pub fn uid(&self, owner: &str) -> Option<u32> {
        self.users.get(owner).copied().or_else(|| numeric(owner))
    }

    /// The gid for a group as declared: a group name, else a numeric id.
    pub fn gid(&self, group: &str) -> Option<u32> {
        self.groups.get(group).copied().or_else(|| numeric(group))
    }

    /// `user:group` for ids found on disk, by name where one is known.
    pub fn describe(&self, uid: u32, gid: u32) -> String {
        let user = name_of(&self.users, uid).map_or_else(|| uid.to_string(), str::to_owned);
        let group = name_of(&self.groups, gid).map_or_else(|| gid.to_string(), str::to_owned);
        format!("{user}:{group}")
    }
}

fn numeric(spec: &str) -> Option<u32> {
    if spec.is_empty() || !spec.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    spec.parse().ok()
}

fn name_of(names: &BTreeMap<String, u32>, id: u32) -> Option<&str> {
    // Several names can share an id; prefer the conventional one for 0, else the first.
    if id == 0 && names.get("root") == Some(&0) {
        return Some("root");
    }
    names
        .iter()
        .find(|(_, &known)| known == id)
        .map(|(name, _)| name.as_str())
}
