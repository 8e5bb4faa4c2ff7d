//! Render over real trees: commits made with the real `git` (the kit's `ConfigRepo`) and their
//! checkouts, read through the agent's git and directory trees; symlinks are never followed.

use std::path::Path;

use shoal_testkit::{ConfigRepo, MOTD_MANIFEST};

use super::tree::{DirTree, GitTree};
use super::*;

fn gateway() -> DeviceIdentity {
    let labels = [("role", "gateway"), ("site", "berlin")];
    DeviceIdentity::new("gw-0042", labels, "/var/lib/shoal")
}

/// A git repository made with the real `git` (the kit's `ConfigRepo`, isolated from the host's
/// git config); the symlinks point outside the repository, as an attacker's commit would.
fn git_repo(files: &[(&str, &str)], symlinks: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let repo = ConfigRepo::init(dir.path());
    for (path, content) in files {
        repo.write(path, content);
    }
    for (path, target) in symlinks {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, path).unwrap();
    }
    repo.commit_unsigned("config");
    dir
}

fn head_tree(repo: &gix::Repository) -> GitTree<'_> {
    let head = repo.head_id().unwrap().detach();
    GitTree::at_commit(repo, head).unwrap()
}

fn open(dir: &Path) -> gix::Repository {
    gix::open_opts(dir, gix::open::Options::isolated()).unwrap()
}

#[test]
fn a_real_git_commit_renders_and_its_symlinks_are_never_followed() {
    let manifest = format!(
        "{MOTD_MANIFEST}  template = true\n\
         [[profile.file]]\npath = \"/usr/local/bin/hello\"\nsource = \"bin/hello\"\nmode = \"0755\"\n"
    );
    let dir = git_repo(
        &[
            (MANIFEST, &manifest),
            ("motd", "This is {{ device.id }}.\n"),
            ("bin/hello", "#!/bin/sh\necho hello\n"),
        ],
        &[("files/evil", "/etc/passwd"), ("linked", "/etc")],
    );
    let repo = open(dir.path());
    let git_tree = head_tree(&repo);
    let from_git = shoal_core::render::render(&git_tree, &gateway()).unwrap();
    assert_eq!(
        from_git.summary(),
        "0644 root:root /etc/motd  (base)\n0755 root:root /usr/local/bin/hello  (base)\n"
    );
    assert_eq!(
        from_git.files[Path::new("/etc/motd")].content,
        b"This is gw-0042.\n"
    );

    let dir_tree = DirTree::new(dir.path());
    assert_eq!(
        shoal_core::render::render(&dir_tree, &gateway()).unwrap(),
        from_git,
        "a commit and its checkout render the same"
    );

    for tree in [&git_tree as &dyn RepoTree, &dir_tree] {
        assert_eq!(
            tree.read_file("files/evil"),
            Err(TreeError::Symlink {
                path: "files/evil".into()
            })
        );
        assert_eq!(
            tree.read_file("linked/passwd"),
            Err(TreeError::Symlink {
                path: "linked".into()
            })
        );
        assert_eq!(
            tree.read_file("files"),
            Err(TreeError::NotAFile { what: "directory" })
        );
        assert_eq!(tree.read_file("files/nope"), Err(TreeError::NotFound));
        assert_eq!(tree.read_file("motd/x"), Err(TreeError::NotFound));
        assert_eq!(
            tree.read_file("../outside"),
            Err(TreeError::Other(
                "\"../outside\" must stay inside the repository: \"..\" components are not allowed; Shoal reads only paths inside the repository".into()
            ))
        );
        assert_eq!(
            tree.read_file(".git/config"),
            Err(TreeError::Other(
                "\".git/config\" points into git's own \".git\" directory; Shoal reads only paths inside the repository".into()
            ))
        );
    }
}

#[test]
fn a_committed_symlink_as_a_source_is_a_render_error() {
    let manifest = format!(
        "{MOTD_MANIFEST}[[profile]]\nname = \"gateways\"\nmatch = {{ labels = {{ role = \"gateway\" }} }}\n\
         [[profile.file]]\npath = \"/etc/passwd\"\nsource = \"files/evil\"\n"
    );
    let dir = git_repo(
        &[(MANIFEST, &manifest), ("motd", "hi\n")],
        &[("files/evil", "../../../../../../etc/passwd")],
    );
    let repo = open(dir.path());
    let expected = "shoal.toml: profile \"gateways\", file #1: source \"files/evil\": \"files/evil\" is a symlink, and Shoal reads only regular files from the repository (symlink escape)";
    let sensor = DeviceIdentity::new("sensor-1", [("role", "sensor")], "/var/lib/shoal");
    for tree in [
        &head_tree(&repo) as &dyn RepoTree,
        &DirTree::new(dir.path()),
    ] {
        assert_eq!(
            shoal_core::render::render(tree, &gateway())
                .unwrap_err()
                .to_string(),
            expected
        );
        assert_eq!(
            shoal_core::render::render(tree, &sensor)
                .unwrap_err()
                .to_string(),
            expected
        );
    }
}

#[test]
fn a_directory_as_a_source_is_a_render_error() {
    // The kit's manifest, with `motd` a directory.
    let dir = git_repo(&[(MANIFEST, MOTD_MANIFEST), ("motd/x", "hi\n")], &[]);
    let repo = open(dir.path());
    assert_eq!(
        shoal_core::render::render(&head_tree(&repo), &gateway()).unwrap_err().to_string(),
        "shoal.toml: profile \"base\", file #1: source \"motd\": is a directory, not a regular file"
    );
}
