//! A directory swapped for a symbolic link in the instant between apply resolving a path and
//! writing it cannot redirect the write: apply writes through the handle of the directory it
//! checked, so the file lands in the directory the attacker moved away (still under the
//! root), never where the link points; the next look at the path refuses the link. Needs the
//! `failpoints` feature: `cargo test -p shoal-agent --features failpoints --test swap_during_apply`.
#![cfg(feature = "failpoints")]

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};

use shoal_agent::apply::failpoint::set_hook;
use shoal_agent::apply::{apply, journal_done, observe, ApplyError, Fault};
use shoal_agent::plan::{observed_paths, plan, Manifest};
use shoal_agent::render::{DesiredFile, DesiredState};
use shoal_agent::state::StateDir;

#[test]
fn a_directory_swapped_for_a_link_mid_apply_does_not_redirect_the_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let state = dir.path().join("state");
    let victim = dir.path().join("victim");
    fs::create_dir_all(root.join("home/app/.ssh")).expect("mkdir");
    fs::create_dir_all(&victim).expect("mkdir");
    fs::write(victim.join("authorized_keys"), "the victim's key\n").expect("write");

    let me = tempfile::tempfile()
        .expect("probe")
        .metadata()
        .expect("meta");
    let file = DesiredFile::new(
        "app's key\n",
        0o600,
        me.uid().to_string(),
        me.gid().to_string(),
    )
    .declared_by("base", "files/authorized_keys");
    let desired = DesiredState::from_files([("/home/app/.ssh/authorized_keys", file)]);
    let empty = Manifest::default();
    let state = StateDir::open(&state).expect("lock the state dir");
    let state = state.apply_area();
    let disk = observe(&root, state, observed_paths(&desired, &empty)).expect("observe");
    let plan = plan(&desired, &empty, &disk);

    // After apply resolved the path and before it writes, the owner of /home/app moves .ssh
    // away and links the victim's directory in its place.
    let (ssh, moved) = (root.join("home/app/.ssh"), root.join("home/app/moved"));
    let target = victim.clone();
    set_hook("apply_after_resolve", move || {
        fs::rename(&ssh, &moved).expect("move .ssh away");
        symlink(&target, &ssh).expect("link the victim's directory");
    });
    apply(&plan, &desired, &root, state, 0, 1).expect("apply");
    journal_done(state).expect("journal_done");

    assert_eq!(
        fs::read_to_string(victim.join("authorized_keys")).expect("victim"),
        "the victim's key\n",
        "nothing was written through the link"
    );
    assert_eq!(fs::read_dir(&victim).expect("ls").count(), 1);
    assert_eq!(
        fs::read_to_string(root.join("home/app/moved/authorized_keys")).expect("written"),
        "app's key\n",
        "the write went to the directory apply had checked"
    );

    // The next sync's look at the disk refuses the link, naming it.
    let err = observe(&root, state, observed_paths(&desired, &empty)).expect_err("refused");
    assert!(
        matches!(&err, ApplyError::Observe(fault) if matches!(**fault, Fault::SymlinkInPath { .. })),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains("/home/app/.ssh is a symbolic link"));
}
