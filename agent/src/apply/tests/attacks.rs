//! A local user who owns a directory above a managed file attacks the agent: a symbolic link in
//! a parent (to outside the root, to another user's directory, into the state directory),
//! swapped in after a normal apply (drift correction, rollback), a hard link to a file they do
//! not own. Each is refused with the path and the component at fault, and nothing is written
//! anywhere: not through the link, not under the root.

use std::os::unix::fs::symlink;

use super::*;

/// A directory outside the device root with a file an attacker would like to replace.
fn victim(device: &Device) -> PathBuf {
    let victim = device._dir.path().join("victim/.ssh");
    fs::create_dir_all(&victim).unwrap();
    fs::write(victim.join("authorized_keys"), "the victim's key\n").unwrap();
    victim
}

fn authorized_keys() -> DesiredState {
    desired(vec![(
        "/home/app/.ssh/authorized_keys",
        file("app's key\n", 0o600),
    )])
}

#[test]
fn a_symlinked_parent_is_refused_wherever_it_points() {
    for target in ["outside", "inside"] {
        let mut device = Device::new();
        let victim = victim(&device);
        fs::create_dir_all(device.real("/root/.ssh")).unwrap();
        fs::write(device.real("/root/.ssh/authorized_keys"), "root's key\n").unwrap();
        fs::create_dir_all(device.real("/home/app")).unwrap();
        // The plan is made before the link is there: apply must not trust the walk observe
        // did (a race between the two is the attack too).
        let gen1 = authorized_keys();
        let plan = device.plan(&gen1);
        let link = device.real("/home/app/.ssh");
        match target {
            // To a directory outside the root.
            "outside" => symlink(&victim, &link).unwrap(),
            // To another user's directory inside the root, relatively.
            _ => symlink("../../root/.ssh", &link).unwrap(),
        }
        let before = device.snapshot();

        let expected = format!(
            "refusing to manage /home/app/.ssh/authorized_keys: /home/app/.ssh is a symbolic \
             link ({}), and Shoal follows no symbolic link under the device root, where whoever \
             owns a directory could point it anywhere; replace the link with a real directory \
             (or stop declaring the path) and run sync again",
            link.display()
        );
        let err = observe(&device.root, device.area(), gen1.files.keys()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot read the device's current state: {expected}"),
            "{target}"
        );
        let err = apply(&plan, &gen1, &device.root, device.area(), 0, 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{expected}; the device was left at generation 0"),
            "{target}"
        );
        assert!(matches!(err.fault(), Some(Fault::SymlinkInPath { .. })));
        assert_eq!(
            device.snapshot(),
            before,
            "{target}: nothing under the root changed"
        );
        assert_eq!(
            fs::read_to_string(victim.join("authorized_keys")).unwrap(),
            "the victim's key\n",
            "{target}"
        );
        assert_eq!(fs::read_dir(&victim).unwrap().count(), 1, "{target}");
        assert!(pending(&device.area().journal()).unwrap().is_none());
        device.generation = 0;
    }
}

#[test]
fn a_link_swapped_in_after_an_apply_stops_drift_correction_and_rollback() {
    let mut device = Device::new();
    let victim = victim(&device);
    let gen1 = authorized_keys();
    device.sync(&gen1).unwrap();
    // The owner of /home/app moves the managed directory away and links another in its place.
    fs::rename(device.real("/home/app/.ssh"), device.real("/home/app/old")).unwrap();
    symlink(&victim, device.real("/home/app/.ssh")).unwrap();
    let before = device.snapshot();

    // Drift correction looks first, and refuses.
    let err = observe(&device.root, device.area(), gen1.files.keys()).unwrap_err();
    assert!(
        matches!(&err, ApplyError::Observe(fault) if matches!(**fault, Fault::SymlinkInPath { .. })),
        "{err}"
    );
    // Rolling back to before generation 1 would remove the file: not through the link.
    let err = restore(
        &device.manifest,
        &Manifest::default(),
        &device.root,
        device.area(),
        1,
        2,
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "refusing to manage /home/app/.ssh/authorized_keys: /home/app/.ssh is a symbolic link"
        ),
        "{err}"
    );
    assert_eq!(device.snapshot(), before);
    assert_eq!(
        fs::read_to_string(victim.join("authorized_keys")).unwrap(),
        "the victim's key\n"
    );
}

#[test]
fn the_state_directory_is_refused_by_identity_not_by_name() {
    let mut device = Device::new();
    // The state directory inside the root, as on a device (root = "/").
    device.state = device.real("/var/lib/shoal");
    fs::create_dir_all(&device.state).unwrap();
    fs::write(device.state.join("hold"), "").unwrap();

    let into_state = desired(vec![("/var/lib/shoal/hold", file("1\n", 0o644))]);
    let err = observe(&device.root, device.area(), into_state.files.keys()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot read the device's current state: refusing to manage /var/lib/shoal/hold: \
             /var/lib/shoal is the agent's own state directory {}; a configuration repository \
             may not write the agent's state: declare the file elsewhere",
            device.state.display()
        )
    );

    // Under another name: a bind mount of the state directory (needs root to mount).
    if !require_root("bind-mounting the state directory under another name") {
        return;
    }
    fs::create_dir_all(device.real("/srv/elsewhere")).unwrap();
    let _mount = Mount::bind(&device.state, &device.real("/srv/elsewhere"));
    let renamed = desired(vec![("/srv/elsewhere/hold", file("1\n", 0o644))]);
    let err = observe(&device.root, device.area(), renamed.files.keys()).unwrap_err();
    assert!(
        err.to_string().contains(
            "refusing to manage /srv/elsewhere/hold: /srv/elsewhere is the agent's own state directory"
        ),
        "{err}"
    );
    assert_eq!(fs::read_to_string(device.state.join("hold")).unwrap(), "");
}

#[test]
fn a_hard_link_at_a_declared_path_is_neither_replaced_nor_saved() {
    let device = Device::new();
    // A file the attacker does not own, linked into a directory they do (same file system).
    let secret = device._dir.path().join("secret");
    fs::write(&secret, "root's secret\n").unwrap();
    fs::create_dir_all(device.real("/home/app")).unwrap();
    fs::hard_link(&secret, device.real("/home/app/config")).unwrap();
    let before = device.snapshot();

    let gen1 = desired(vec![("/home/app/config", file("app config\n", 0o644))]);
    let plan = device.plan(&gen1);
    assert_eq!(
        plan.to_string(),
        "create /home/app/config (0644 root:root): a file with more than one hard link is in the way\n"
            .replace("root:root", &format!("{}:{}", me().0, me().1))
    );
    let err = apply(&plan, &gen1, &device.root, device.area(), 0, 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} is a file with more than one hard link, but generation 1 declares a regular \
             file at /home/app/config; remove it (or stop declaring the file) and run sync \
             again; the device was left at generation 0",
            device.real("/home/app/config").display()
        )
    );
    assert_eq!(device.snapshot(), before);
    assert_eq!(fs::read_to_string(&secret).unwrap(), "root's secret\n");
    assert!(
        !device.stored(b"root's secret\n"),
        "the linked file was not copied into the blob store"
    );
}

#[test]
fn recovery_does_not_follow_a_link_swapped_in_after_a_crash() {
    let device = Device::new();
    let victim = victim(&device);
    let gen1 = authorized_keys();
    let plan = device.plan(&gen1);
    // The apply finished but generation 1 was never recorded (a crash): recovery must undo it.
    apply(&plan, &gen1, &device.root, device.area(), 0, 1).unwrap();
    fs::rename(device.real("/home/app/.ssh"), device.real("/home/app/old")).unwrap();
    symlink(&victim, device.real("/home/app/.ssh")).unwrap();
    let before = device.snapshot();

    let err = recover(&device.root, device.area(), |_| false).unwrap_err();
    assert!(
        err.to_string().contains(
            "refusing to manage /home/app/.ssh/authorized_keys: /home/app/.ssh is a symbolic link"
        ),
        "{err}"
    );
    assert!(matches!(err, ApplyError::RecoveryFailed { .. }), "{err}");
    assert!(
        pending(&device.area().journal()).unwrap().is_some(),
        "the journal is kept for a retry"
    );
    assert_eq!(device.snapshot(), before, "nothing under the root changed");
    assert_eq!(
        fs::read_to_string(victim.join("authorized_keys")).unwrap(),
        "the victim's key\n",
        "nothing was removed through the link"
    );
}
