//! Reads the device's user and group names (`root`'s `/etc/passwd` and `/etc/group`, then the
//! host's for names the root lacks) so owners can be declared by name. Read-only.

use std::path::{Path, PathBuf};

use crate::paths::{self, PathError};
use crate::plan::Accounts;

/// The files names are looked up in, most specific first (one entry when `root` is `/`).
pub(crate) fn sources(root: &Path, file: &str) -> Vec<PathBuf> {
    let on_device = root.join("etc").join(file);
    let on_host = Path::new("/etc").join(file);
    if on_device == on_host {
        vec![on_device]
    } else {
        vec![on_device, on_host]
    }
}

pub(crate) fn load(root: &Path) -> Result<Accounts, PathError> {
    let mut accounts = Accounts::default();
    for source in sources(root, "passwd") {
        for (name, id) in entries(&source)? {
            accounts.add_user(&name, id);
        }
    }
    for source in sources(root, "group") {
        for (name, id) in entries(&source)? {
            accounts.add_group(&name, id);
        }
    }
    Ok(accounts)
}

/// `name:password:id:…` lines; a missing file has none. Lines that do not parse (comments,
/// NIS `+` entries) are skipped: they cannot name an id.
fn entries(path: &Path) -> Result<Vec<(String, u32)>, PathError> {
    let Some(text) = paths::read_optional(path)? else {
        return Ok(Vec::new());
    };
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?.trim();
            let id = fields.nth(1)?.trim().parse().ok()?;
            (!name.is_empty() && !name.starts_with(['#', '+', '-'])).then(|| (name.to_owned(), id))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_names_win_and_the_host_fills_the_gaps() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(
            root.path().join("etc/passwd"),
            "# comment\nroot:x:0:0:root:/root:/bin/sh\napp:x:4321:4321::/:/bin/false\n+nis\n",
        )
        .unwrap();
        std::fs::write(root.path().join("etc/group"), "app:x:4322:\n").unwrap();
        let accounts = load(root.path()).unwrap();
        assert_eq!(accounts.uid("app"), Some(4321));
        assert_eq!(accounts.gid("app"), Some(4322));
        assert_eq!(accounts.uid("root"), Some(0));
        assert_eq!(accounts.uid("1234"), Some(1234), "numeric ids are allowed");
        assert_eq!(accounts.uid("+nis"), None);
        assert_eq!(accounts.uid("no-such-user-anywhere"), None);
        assert_eq!(accounts.describe(4321, 4322), "app:app");
        assert_eq!(accounts.describe(0, 999_999), "root:999999");
    }
}
