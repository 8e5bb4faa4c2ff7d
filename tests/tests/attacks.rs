//! The agent under attack by a local unprivileged user, and on a device that cannot take a
//! write, end to end with real signed repositories and the real `shoal-agent`: a symbolic link
//! in a parent of a declared path (to outside the root, into the agent's state directory,
//! swapped in after an apply), a hard link to a file the user does not own, a full and a
//! read-only file system. Each is refused or failed with the path and cause named, leaves
//! every file and the agent's state as they were, and — being the device's fault, not the
//! commit's — the same commit converges once the device is fixed.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use shoal_e2e::{require_root, Mount, Sandbox, MOTD_MANIFEST};

/// The kit's `MOTD_MANIFEST` (`/etc/motd` from `motd`) and the app's authorized keys (0600).
fn manifest() -> String {
    format!(
        "{MOTD_MANIFEST}\n  [[profile.file]]\n  path = \"/home/app/.ssh/authorized_keys\"\n  \
         source = \"files/authorized_keys\"\n  mode = \"0600\"\n"
    )
}

/// The repository's files: `manifest` with `motd` and the app's key.
fn push(s: &Sandbox, manifest: &str, motd: &str) -> String {
    s.push(
        &[
            ("shoal.toml", manifest),
            ("motd", motd),
            ("files/authorized_keys", "ssh-ed25519 AAAA app\n"),
        ],
        motd,
    )
}

/// A sandbox device with `/home/app`, the unprivileged user's home.
fn scene() -> Option<Sandbox> {
    let s = Sandbox::new()?;
    std::fs::create_dir_all(s.root("/home/app")).expect("mkdir /home/app");
    Some(s)
}

/// A directory outside the root holding a file the attacker wants replaced.
fn victim(s: &Sandbox) -> PathBuf {
    let victim = s.dir.path().join("victim/.ssh");
    std::fs::create_dir_all(&victim).expect("mkdir victim");
    std::fs::write(victim.join("authorized_keys"), "the victim's key\n").expect("write");
    victim
}

/// Every file of the agent's state directory but the mirror (a cache) and the status file a
/// failed sync writes, with its content: "the state is intact" made checkable.
fn agent_state(s: &Sandbox) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    walk(&s.device.state_dir(), &s.device.state_dir(), &mut files);
    files.retain(|(path, _)| {
        !path.starts_with("mirror.git")
            && path != Path::new("last-result.json")
            && path != Path::new("lock")
    });
    files
}

fn walk(base: &Path, dir: &Path, files: &mut Vec<(PathBuf, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.map(|e| e.expect("entry").path()).collect();
    entries.sort();
    for path in entries {
        let relative = path.strip_prefix(base).expect("under base").to_owned();
        if path.is_dir() {
            walk(base, &path, files);
        } else {
            files.push((relative, std::fs::read(&path).unwrap_or_default()));
        }
    }
}

fn assert_victim_intact(victim: &Path) {
    assert_eq!(
        std::fs::read_to_string(victim.join("authorized_keys")).expect("victim's file"),
        "the victim's key\n",
        "nothing was written through the link"
    );
    assert_eq!(std::fs::read_dir(victim).expect("ls").count(), 1);
}

#[test]
fn a_symlinked_parent_is_refused_and_the_same_commit_converges_once_it_is_gone() {
    let Some(s) = scene() else { return };
    let victim = victim(&s);
    symlink(&victim, s.root("/home/app/.ssh")).expect("the user's link");
    let commit = push(&s, &manifest(), "hello\n");

    s.device.sync().expect(
        1,
        "cannot read the device's current state: refusing to manage \
             /home/app/.ssh/authorized_keys: /home/app/.ssh is a symbolic link",
    );
    assert_victim_intact(&victim);
    assert!(!s.root("/etc/motd").exists(), "the commit fails as a whole");
    let status = s.status();
    assert_eq!(status["generation"], serde_json::Value::Null);
    assert_eq!(status["last_result"]["status"], "failed");

    // Not a bad commit: once the link is replaced by a real directory, the same commit applies.
    std::fs::remove_file(s.root("/home/app/.ssh")).expect("rm link");
    std::fs::create_dir(s.root("/home/app/.ssh")).expect("mkdir");
    s.device
        .sync()
        .expect(0, &format!("commit {commit} signed by operator@example"));
    assert_eq!(
        std::fs::read_to_string(s.root("/home/app/.ssh/authorized_keys")).expect("applied"),
        "ssh-ed25519 AAAA app\n"
    );
    assert_victim_intact(&victim);
}

#[test]
fn a_link_into_the_state_directory_cannot_write_the_agents_state() {
    let Some(s) = scene() else { return };
    push(
        &s,
        manifest()
            .replace("authorized_keys\"\n  source", "hold\"\n  source")
            .as_str(),
        "one\n",
    );
    // A first sync creates the state directory; the declared file's parent does not exist yet.
    std::fs::create_dir_all(s.device.state_dir()).expect("state dir");
    symlink(s.device.state_dir(), s.root("/home/app/.ssh")).expect("the user's link");

    s.device.sync().expect(
        1,
        "refusing to manage /home/app/.ssh/hold: /home/app/.ssh is a symbolic link",
    );
    assert!(
        !s.device.state_dir().join("hold").exists(),
        "no hold was written"
    );
    assert_eq!(s.status()["hold"], serde_json::Value::Null);
}

#[test]
fn a_link_swapped_in_after_an_apply_stops_drift_correction_and_rollback() {
    let Some(s) = scene() else { return };
    push(&s, &manifest(), "one\n");
    s.device.sync().expect(0, "applied generation 1");
    push(&s, &manifest(), "two\n");
    s.device.sync().expect(0, "applied generation 2");
    let victim = victim(&s);
    let state = agent_state(&s);

    // The owner of /home/app moves the managed directory away and links another in.
    std::fs::rename(s.root("/home/app/.ssh"), s.root("/home/app/moved")).expect("mv");
    symlink(&victim, s.root("/home/app/.ssh")).expect("the user's link");
    s.device
        .sync()
        .expect(1, "cannot read the device's current state")
        .expect(1, "/home/app/.ssh is a symbolic link");
    s.device
        .agent(&["rollback"])
        .expect(1, "/home/app/.ssh is a symbolic link");
    assert_victim_intact(&victim);
    assert_eq!(agent_state(&s), state, "the agent's state is as it was");
    assert_eq!(
        std::fs::read_to_string(s.root("/etc/motd")).expect("motd"),
        "two\n",
        "no file moved"
    );
}

#[test]
fn a_hard_link_to_a_file_the_user_does_not_own_is_not_replaced_or_saved() {
    let Some(s) = scene() else { return };
    let secret = s.root("/etc/shadow");
    std::fs::create_dir_all(secret.parent().expect("parent")).expect("mkdir");
    std::fs::write(&secret, "root:secret\n").expect("write");
    std::fs::create_dir_all(s.root("/home/app/.ssh")).expect("mkdir");
    std::fs::hard_link(&secret, s.root("/home/app/.ssh/authorized_keys")).expect("ln");
    let commit = push(&s, &manifest(), "hello\n");

    s.device
        .sync()
        .expect(1, &format!("applying commit {commit} failed"))
        .expect(1, "authorized_keys is a file with more than one hard link");
    assert_eq!(
        std::fs::read_to_string(&secret).expect("secret"),
        "root:secret\n"
    );
    let blobs = s.device.state_dir().join("blobs");
    let saved = std::fs::read_dir(&blobs)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                // Loose blobs and packs alike: no stored file holds the secret's bytes.
                .any(|e| {
                    std::fs::read(e.path()).is_ok_and(|bytes| {
                        bytes
                            .windows(b"root:secret\n".len())
                            .any(|w| w == b"root:secret\n")
                    })
                })
        })
        .unwrap_or(false);
    assert!(!saved, "the linked file was not copied into the blob store");
}

#[test]
fn a_full_or_read_only_file_system_fails_the_sync_without_marking_the_commit_bad() {
    if !require_root("mounting a small tmpfs and a read-only bind mount") {
        return;
    }
    let Some(s) = scene() else { return };
    push(&s, &manifest(), "one\n");
    s.device.sync().expect(0, "applied generation 1");

    // /srv/data is a 64 KiB tmpfs, already full; the next commit declares a file there.
    let data = s.root("/srv/data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let full = Mount::tmpfs(&data, "64k");
    let _ = std::fs::write(data.join("filler"), vec![0u8; 128 * 1024]);
    let manifest =
        manifest() + "\n  [[profile.file]]\n  path = \"/srv/data/app.conf\"\n  source = \"motd\"\n";
    let commit = push(&s, &manifest, "two\n");
    s.device
        .sync()
        .expect(
            1,
            &format!("applying commit {commit} failed because of the device"),
        )
        .expect(
            1,
            "no space left on device while writing /srv/data/app.conf",
        );
    assert_eq!(
        std::fs::read_to_string(s.root("/etc/motd")).expect("motd"),
        "one\n"
    );
    assert_eq!(s.status()["last_result"]["status"], "failed");
    assert_eq!(s.status()["generation"], 1);

    // Read-only instead of full: the same commit, the same verdict.
    drop(full);
    std::fs::remove_dir_all(&data).expect("rm");
    std::fs::create_dir_all(&data).expect("mkdir");
    let read_only = Mount::read_only(&data);
    s.device
        .sync()
        .expect(
            1,
            &format!("applying commit {commit} failed because of the device"),
        )
        .expect(1, "is on a read-only filesystem");
    assert_eq!(
        std::fs::read_to_string(s.root("/etc/motd")).expect("motd"),
        "one\n"
    );

    // Fixed: the same commit is not "recorded as bad"; it applies.
    drop(read_only);
    s.device
        .sync()
        .expect(0, &format!("commit {commit} signed by operator@example"));
    assert_eq!(
        std::fs::read_to_string(s.root("/etc/motd")).expect("motd"),
        "two\n"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("app.conf")).expect("app.conf"),
        "two\n"
    );
}

#[test]
fn a_unit_name_systemctl_would_read_as_an_option_is_refused_at_render() {
    let Some(s) = scene() else { return };
    let manifest =
        manifest() + "\n  [[profile.service]]\n  unit = \"-H.service\"\n  source = \"motd\"\n";
    let commit = push(&s, &manifest, "hello\n");
    s.device
        .sync()
        .expect(1, &format!("commit {commit} cannot be rendered"))
        .expect(
            1,
            "must not start with \"-\" (systemctl would read it as an option)",
        );
    assert!(!s.root("/etc/motd").exists(), "nothing was applied");
}
