//! Plan's promises as scenarios: what a plan says for a given desired state, manifest and
//! disk, as the operator reads it (`Display`) and as `--json` prints it.

use std::path::PathBuf;

use super::*;
use crate::render::{DesiredFile, DesiredState};

fn accounts() -> Accounts {
    let mut accounts = Accounts::default();
    accounts.add_user("root", 0);
    accounts.add_user("app", 1000);
    accounts.add_group("root", 0);
    accounts.add_group("app", 1000);
    accounts
}

/// The disk exactly as `state` declares it (names resolved with [`accounts`]).
fn disk_matching(state: &DesiredState) -> DiskSnapshot {
    let accounts = accounts();
    let files = state
        .files
        .iter()
        .map(|(path, f)| {
            let entry = DiskEntry::File(DiskFile {
                sha256: sha256_hex(&f.content),
                mode: f.mode,
                uid: accounts.uid(&f.owner).unwrap(),
                gid: accounts.gid(&f.group).unwrap(),
            });
            (path.clone(), entry)
        })
        .collect();
    DiskSnapshot {
        files,
        accounts,
        ..Default::default()
    }
}

fn disk_file<'a>(disk: &'a mut DiskSnapshot, path: &str) -> &'a mut DiskFile {
    match disk.files.get_mut(&PathBuf::from(path)) {
        Some(DiskEntry::File(file)) => file,
        other => panic!("{path} is not a file on the test disk: {other:?}"),
    }
}

#[test]
fn create_change_remove_one_line_each() {
    let gen1 = DesiredState::from_files(vec![
        (
            "/etc/motd",
            DesiredFile::new("old\n", 0o600, "root", "root"),
        ),
        ("/etc/old", DesiredFile::new("bye\n", 0o644, "root", "root")),
        (
            "/etc/same",
            DesiredFile::new("same\n", 0o644, "root", "root"),
        ),
        ("/etc/owned", DesiredFile::new("o\n", 0o644, "root", "root")),
    ]);
    let gen2 = DesiredState::from_files(vec![
        (
            "/etc/motd",
            DesiredFile::new("new\n", 0o644, "root", "root"),
        ),
        ("/etc/new", DesiredFile::new("hello\n", 0o640, "app", "app")),
        (
            "/etc/same",
            DesiredFile::new("same\n", 0o644, "root", "root"),
        ),
        ("/etc/owned", DesiredFile::new("o\n", 0o644, "app", "root")),
    ]);
    let plan = plan(&gen2, &Manifest::from_desired(&gen1), &disk_matching(&gen1));
    assert_eq!(
        plan.to_string(),
        "change /etc/motd: content, mode 0600→0644\n\
         create /etc/new (0640 app:app)\n\
         remove /etc/old\n\
         change /etc/owned: owner root:root→app:root\n"
    );
    assert!(!plan.is_empty());
    assert!(plan.drift.is_empty());
}

#[test]
fn no_change_no_drift_is_empty() {
    let gen1 = DesiredState::from_files(vec![(
        "/etc/motd",
        DesiredFile::new("hi\n", 0o644, "root", "root"),
    )]);
    let plan = plan(&gen1, &Manifest::from_desired(&gen1), &disk_matching(&gen1));
    assert!(plan.is_empty());
    assert_eq!(plan.to_string(), "nothing to do\n");
}

#[test]
fn numeric_and_named_owners_that_resolve_alike_are_no_change() {
    let gen1 = DesiredState::from_files(vec![(
        "/etc/motd",
        DesiredFile::new("hi\n", 0o644, "app", "app"),
    )]);
    let gen2 = DesiredState::from_files(vec![(
        "/etc/motd",
        DesiredFile::new("hi\n", 0o644, "1000", "1000"),
    )]);
    let plan = plan(&gen2, &Manifest::from_desired(&gen1), &disk_matching(&gen1));
    assert!(plan.is_empty(), "{plan}");
}

#[test]
fn drift_is_marked_and_corrected() {
    let gen1 = DesiredState::from_files(vec![
        (
            "/etc/edited",
            DesiredFile::new("declared\n", 0o644, "root", "root"),
        ),
        ("/etc/gone", DesiredFile::new("g\n", 0o644, "root", "root")),
        ("/etc/mode", DesiredFile::new("m\n", 0o644, "root", "root")),
        ("/etc/owner", DesiredFile::new("o\n", 0o644, "root", "root")),
        (
            "/etc/replaced",
            DesiredFile::new("r\n", 0o644, "root", "root"),
        ),
        (
            "/etc/motd",
            DesiredFile::new("fine\n", 0o644, "root", "root"),
        ),
    ]);
    let mut disk = disk_matching(&gen1);
    disk_file(&mut disk, "/etc/edited").sha256 = sha256_hex(b"hand edit\n");
    disk.files.remove(&PathBuf::from("/etc/gone"));
    disk_file(&mut disk, "/etc/mode").mode = 0o666;
    disk_file(&mut disk, "/etc/owner").uid = 1000;
    disk.files.insert(
        PathBuf::from("/etc/replaced"),
        DiskEntry::Other(OtherKind::Directory),
    );

    // Same desired state as the current generation: only drift makes work.
    let plan = plan(&gen1, &Manifest::from_desired(&gen1), &disk);
    assert_eq!(
        plan.to_string(),
        "change /etc/edited: content\n\
         change /etc/gone: content\n\
         change /etc/mode: mode 0666→0644\n\
         change /etc/owner: owner app:root→root:root\n\
         change /etc/replaced: content\n\
         drift: /etc/edited edited by hand\n\
         drift: /etc/gone removed by hand\n\
         drift: /etc/mode edited by hand: mode 0644→0666\n\
         drift: /etc/owner edited by hand: owner root:root→app:root\n\
         drift: /etc/replaced replaced by a directory by hand\n"
    );
}

#[test]
fn a_hand_edit_that_matches_the_new_state_is_drift_without_work() {
    let gen1 = DesiredState::from_files(vec![(
        "/etc/motd",
        DesiredFile::new("old\n", 0o644, "root", "root"),
    )]);
    let gen2 = DesiredState::from_files(vec![(
        "/etc/motd",
        DesiredFile::new("new\n", 0o644, "root", "root"),
    )]);
    let plan = plan(&gen2, &Manifest::from_desired(&gen1), &disk_matching(&gen2));
    assert!(plan.actions.is_empty());
    assert_eq!(plan.to_string(), "drift: /etc/motd edited by hand\n");
    assert!(!plan.is_empty(), "drift alone is worth reporting");
}

#[test]
fn create_over_existing_things_says_what_happens() {
    let gen1 = DesiredState::from_files(vec![
        (
            "/etc/issue",
            DesiredFile::new("managed\n", 0o644, "root", "root"),
        ),
        (
            "/etc/blocked",
            DesiredFile::new("b\n", 0o644, "root", "root"),
        ),
        ("/etc/link", DesiredFile::new("l\n", 0o644, "root", "root")),
    ]);
    let mut disk = DiskSnapshot {
        accounts: accounts(),
        ..Default::default()
    };
    disk.files.insert(
        "/etc/issue".into(),
        DiskEntry::File(DiskFile {
            sha256: sha256_hex(b"distro\n"),
            mode: 0o644,
            uid: 0,
            gid: 0,
        }),
    );
    disk.files.insert(
        "/etc/blocked".into(),
        DiskEntry::Other(OtherKind::Directory),
    );
    disk.files
        .insert("/etc/link".into(), DiskEntry::Other(OtherKind::Symlink));
    let plan = plan(&gen1, &Manifest::default(), &disk);
    assert_eq!(
        plan.to_string(),
        "create /etc/blocked (0644 root:root): a directory is in the way\n\
         create /etc/issue (0644 root:root), taking over the file already there (saved for rollback)\n\
         create /etc/link (0644 root:root): a symbolic link is in the way\n"
    );
    assert!(plan.drift.is_empty(), "unmanaged paths never drift");
}

#[test]
fn json_for_the_cli() {
    let gen1 = DesiredState::from_files(vec![
        (
            "/etc/motd",
            DesiredFile::new("old\n", 0o600, "root", "root"),
        ),
        ("/etc/old", DesiredFile::new("bye\n", 0o644, "root", "root")),
    ]);
    let gen2 = DesiredState::from_files(vec![
        (
            "/etc/motd",
            DesiredFile::new("new\n", 0o644, "root", "root"),
        ),
        ("/etc/new", DesiredFile::new("hello\n", 0o640, "app", "app")),
    ]);
    let mut disk = disk_matching(&gen1);
    disk_file(&mut disk, "/etc/motd").uid = 1000;
    let plan = plan(&gen2, &Manifest::from_desired(&gen1), &disk);
    let json = serde_json::to_string_pretty(&plan).unwrap();
    assert_eq!(
        json,
        r#"{
  "actions": [
    {
      "action": "change",
      "path": "/etc/motd",
      "content": true,
      "mode": {
        "from": "0600",
        "to": "0644"
      },
      "owner": {
        "from": "app:root",
        "to": "root:root"
      }
    },
    {
      "action": "create",
      "path": "/etc/new",
      "mode": "0640",
      "owner": "app",
      "group": "app",
      "existing": null
    },
    {
      "action": "remove",
      "path": "/etc/old"
    }
  ],
  "drift": [
    {
      "path": "/etc/motd",
      "drift": "edited",
      "content": false,
      "mode": null,
      "owner": {
        "from": "root:root",
        "to": "app:root"
      }
    }
  ]
}"#
    );
}

#[test]
fn manifest_json_round_trips_with_octal_modes() {
    let gen = DesiredState::from_files(vec![(
        "/etc/motd",
        DesiredFile::new("hi\n", 0o4755, "root", "app"),
    )]);
    let manifest = Manifest::from_desired(&gen);
    let json = serde_json::to_string(&manifest).unwrap();
    assert_eq!(
        json,
        format!(
            r#"{{"files":{{"/etc/motd":{{"sha256":"{}","mode":"4755","owner":"root","group":"app"}}}}}}"#,
            sha256_hex(b"hi\n")
        )
    );
    let back: Manifest = serde_json::from_str(&json).unwrap();
    assert_eq!(back, manifest);
    let bad = json.replace("4755", "999");
    let err = serde_json::from_str::<Manifest>(&bad).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(r#"invalid value: string "999", expected an octal mode like "0644""#),
        "{err}"
    );
}

#[test]
fn observed_paths_cover_desired_and_current() {
    let gen1 = DesiredState::from_files(vec![(
        "/etc/a",
        DesiredFile::new("a", 0o644, "root", "root"),
    )]);
    let gen2 = DesiredState::from_files(vec![(
        "/etc/b",
        DesiredFile::new("b", 0o644, "root", "root"),
    )]);
    let paths = observed_paths(&gen2, &Manifest::from_desired(&gen1));
    assert_eq!(
        paths.into_iter().collect::<Vec<_>>(),
        vec![PathBuf::from("/etc/a"), PathBuf::from("/etc/b")]
    );
}
