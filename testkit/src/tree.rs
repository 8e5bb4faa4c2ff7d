//! A directory tree as data, to compare a device root before and after: every file (content,
//! mode, owner), directory and symbolic link by its path from the root (`/etc/motd`).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// One entry of a [`Tree`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File {
        content: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Dir,
    Symlink(PathBuf),
}

/// Entries by path from the root, `/`-prefixed.
pub type Tree = BTreeMap<String, Node>;

/// Everything under `root` (not following links), by path from it.
pub fn snapshot(root: &Path) -> Tree {
    let mut tree = Tree::new();
    walk(root, root, &mut tree);
    tree
}

fn walk(root: &Path, dir: &Path, tree: &mut Tree) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = format!("/{}", path.strip_prefix(root).unwrap().display());
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_symlink() {
            tree.insert(name, Node::Symlink(fs::read_link(&path).unwrap()));
        } else if meta.is_dir() {
            tree.insert(name, Node::Dir);
            walk(root, &path, tree);
        } else {
            let node = Node::File {
                content: fs::read(&path).unwrap(),
                mode: meta.permissions().mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
            };
            tree.insert(name, node);
        }
    }
}
