//! `Mount`: a file system a test mounted (a small tmpfs, a bind mount made read-only), unmounted
//! when dropped, also when the test fails; only ever the test's own mount point.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::command::run;

/// A mount the test made on `target`; dropping it unmounts it (lazily if it is busy).
/// Mounting needs root: guard the test with [`require_root`](crate::require_root).
#[derive(Debug)]
pub struct Mount(PathBuf);

impl Mount {
    /// `mount ARGS… target`, e.g. `&["-t", "tmpfs", "-o", "size=64k", "tmpfs"]`.
    pub fn new(args: &[&str], target: &Path) -> Mount {
        run(Command::new("mount").args(args).arg(target));
        Mount(target.to_owned())
    }

    /// A tmpfs of `size` (`mount -o size=`) on `target`: a small, fillable file system.
    pub fn tmpfs(target: &Path, size: &str) -> Mount {
        Mount::new(
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
            target,
        )
    }

    /// `source` bind-mounted on `target` (the same directory under another name).
    pub fn bind(source: &Path, target: &Path) -> Mount {
        run(Command::new("mount").arg("--bind").arg(source).arg(target));
        Mount(target.to_owned())
    }

    /// `target` bind-mounted on itself, then made read-only: a read-only directory on a file
    /// system that stays writable beneath it.
    pub fn read_only(target: &Path) -> Mount {
        let mount = Mount::bind(target, target);
        mount.remount_read_only();
        mount
    }

    /// Makes this bind mount read-only (only our own bind mount is remounted, never the file
    /// system beneath it).
    pub fn remount_read_only(&self) {
        run(Command::new("mount")
            .args(["-o", "remount,ro,bind"])
            .arg(&self.0));
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.0).status();
        if !matches!(unmounted, Ok(status) if status.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}
