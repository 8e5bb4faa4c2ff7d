//! The blob store's own promises: one pack per transaction, loose blobs of the older layout
//! still served, pruning that drops and rewrites packs without losing a live blob, and damage
//! that fails a read (naming the pack) rather than returning other bytes.

use std::collections::BTreeSet;

use super::*;
use crate::plan::sha256_hex;

fn area(dir: &Path) -> ApplyArea<'_> {
    ApplyArea::for_tests(dir)
}

/// Stores `contents` in one transaction's pack.
fn store_batch(dir: &Path, contents: &[&[u8]]) {
    let mut store = blobs::BlobStore::open(area(dir)).unwrap();
    for content in contents {
        store.put(&sha256_hex(content), content).unwrap();
    }
    store.sync().unwrap();
}

fn files_in(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn packs_in(dir: &Path) -> Vec<String> {
    files_in(dir)
        .into_iter()
        .filter(|name| name.starts_with("pack-"))
        .collect()
}

fn read(dir: &Path, content: &[u8]) -> Result<Vec<u8>, Fault> {
    blobs::BlobStore::open(area(dir))
        .unwrap()
        .read(&sha256_hex(content))
}

#[test]
fn a_transaction_stores_its_blobs_in_one_pack_and_reads_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let contents: Vec<Vec<u8>> = (0..50)
        .map(|i| format!("file {i}\n").into_bytes())
        .collect();
    let refs: Vec<&[u8]> = contents.iter().map(Vec::as_slice).collect();
    store_batch(dir.path(), &refs);
    assert_eq!(packs_in(dir.path()).len(), 1, "{:?}", files_in(dir.path()));
    assert_eq!(files_in(dir.path()).len(), 1, "no temp file is left");
    for content in &refs {
        assert_eq!(read(dir.path(), content).unwrap(), *content);
    }
    // Already stored: a second transaction with the same contents writes nothing.
    store_batch(dir.path(), &refs);
    assert_eq!(packs_in(dir.path()).len(), 1);
}

#[test]
fn loose_blobs_of_the_older_layout_are_read_and_pruned() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("blobs")).unwrap();
    for content in [&b"old kept\n"[..], b"old dropped\n"] {
        fs::write(dir.path().join("blobs").join(sha256_hex(content)), content).unwrap();
    }
    assert_eq!(read(dir.path(), b"old kept\n").unwrap(), b"old kept\n");
    let kept = sha256_hex(b"old kept\n");
    let live = BTreeSet::from([kept.as_str()]);
    let mut store = blobs::BlobStore::open(area(dir.path())).unwrap();
    assert_eq!(store.prune(&live).unwrap(), 1);
    assert_eq!(files_in(dir.path()), BTreeSet::from([kept.clone()]));
}

#[test]
fn prune_drops_dead_packs_and_rewrites_mostly_dead_ones() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<Vec<u8>> = (0..10).map(|i| vec![b'a' + i as u8; 1000]).collect();
    let refs: Vec<&[u8]> = big.iter().map(Vec::as_slice).collect();
    store_batch(dir.path(), &refs); // generation 1: ten files
    store_batch(dir.path(), &[b"gen 2 only\n"]);
    let first_packs = packs_in(dir.path());
    assert_eq!(first_packs.len(), 2);

    // Only one of generation 1's ten blobs is live (a tenth of its pack), and nothing of
    // generation 2's: the first pack is rewritten to hold that one, the second removed.
    let keep = sha256_hex(refs[3]);
    let live = BTreeSet::from([keep.as_str()]);
    let mut store = blobs::BlobStore::open(area(dir.path())).unwrap();
    assert_eq!(store.prune(&live).unwrap(), 10);
    let after = packs_in(dir.path());
    assert_eq!(after.len(), 1);
    assert!(!first_packs.contains(&after[0]), "a new pack replaced both");
    assert!(
        fs::metadata(dir.path().join("blobs").join(&after[0]))
            .unwrap()
            .len()
            < 2000
    );
    assert_eq!(read(dir.path(), refs[3]).unwrap(), refs[3]);
    assert!(read(dir.path(), refs[4]).is_err());

    // A pack with most of its content live is kept as it is.
    let mut store = blobs::BlobStore::open(area(dir.path())).unwrap();
    assert_eq!(store.prune(&live).unwrap(), 0);
    assert_eq!(packs_in(dir.path()), after);
}

#[test]
fn a_crash_between_a_rewrite_and_the_old_packs_removal_is_tidied_by_the_next_prune() {
    let dir = tempfile::tempdir().unwrap();
    store_batch(dir.path(), &[b"one\n", b"two\n"]);
    let pack = packs_in(dir.path()).remove(0);
    // What such a crash leaves: the same blobs in two packs.
    let blobs = dir.path().join("blobs");
    fs::copy(blobs.join(&pack), blobs.join("pack-0copy.pack")).unwrap();
    let (one, two) = (sha256_hex(b"one\n"), sha256_hex(b"two\n"));
    let live = BTreeSet::from([one.as_str(), two.as_str()]);
    let mut store = blobs::BlobStore::open(area(dir.path())).unwrap();
    assert_eq!(store.prune(&live).unwrap(), 0);
    assert_eq!(packs_in(dir.path()).len(), 1);
    assert_eq!(read(dir.path(), b"one\n").unwrap(), b"one\n");
    assert_eq!(read(dir.path(), b"two\n").unwrap(), b"two\n");
}

#[test]
fn a_damaged_pack_fails_the_read_naming_it_and_never_returns_other_bytes() {
    let dir = tempfile::tempdir().unwrap();
    store_batch(dir.path(), &[b"first content\n", b"second content\n"]);
    let pack = dir
        .path()
        .join("blobs")
        .join(packs_in(dir.path()).remove(0));
    let mut bytes = fs::read(&pack).unwrap();
    let at = bytes
        .windows(b"second".len())
        .position(|w| w == b"second")
        .unwrap();
    bytes[at] = b'S';
    fs::write(&pack, &bytes).unwrap();

    assert_eq!(
        read(dir.path(), b"first content\n").unwrap(),
        b"first content\n"
    );
    let err = read(dir.path(), b"second content\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the saved content {} in {} is corrupt (it hashes to {}); that content cannot be \
             restored offline: sync from the repository instead",
            sha256_hex(b"second content\n"),
            pack.display(),
            sha256_hex(b"Second content\n"),
        )
    );

    // A pack whose trailer is gone is ignored as a whole: its blobs are missing, the store
    // still opens and stores new ones.
    bytes.truncate(bytes.len() - 3);
    fs::write(&pack, &bytes).unwrap();
    assert!(read(dir.path(), b"first content\n").is_err());
    store_batch(dir.path(), &[b"first content\n"]);
    assert_eq!(
        read(dir.path(), b"first content\n").unwrap(),
        b"first content\n"
    );
}

#[test]
fn recover_sweeps_a_pack_a_crash_left_half_written_and_the_store_ignores_it() {
    let dir = tempfile::tempdir().unwrap();
    store_batch(dir.path(), &[b"kept\n"]);
    // A crash before the rename: the pack's temp file, its index never written.
    fs::write(dir.path().join("blobs/.pack-new.tmp"), b"SHOALPK1half").unwrap();
    assert_eq!(read(dir.path(), b"kept\n").unwrap(), b"kept\n");
    let root = dir.path().join("root");
    fs::create_dir_all(&root).unwrap();
    assert!(recover(&root, area(dir.path()), |_| false)
        .unwrap()
        .is_none());
    assert_eq!(files_in(dir.path()).len(), 1, "{:?}", files_in(dir.path()));
    assert_eq!(read(dir.path(), b"kept\n").unwrap(), b"kept\n");
}
