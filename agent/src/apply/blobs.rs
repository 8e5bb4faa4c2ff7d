//! The content-addressed blob store `state_dir/blobs/`: every generation's file contents and
//! every file Shoal saved before overwriting it, so any of them can be restored offline.
//!
//! A transaction's new blobs go into **one pack file**, `pack-<id>.pack`: the contents one after
//! another, then an index (hash, offset, length of each) and a trailer ([`PACK_MAGIC`] at both
//! ends). The pack is written under a temp name without a flush, made durable by one `syncfs`
//! (together with the journal's content), and only then renamed into place
//! ([`BlobStore::sync`]), so a pack under its final name is always complete. One file per
//! transaction rather than one per blob: writeback costs the disk, and the CPU of whoever
//! flushes, per file written, and apply already writes every managed file once.
//! Blobs stored one file each (`<sha256>`, the layout before packs) are still read and pruned.
//! Every read checks the content against its hash, so a damaged pack or index can make a
//! restore fail, never restore the wrong bytes. Pruning drops a pack none of whose blobs is
//! needed and rewrites one that is mostly dead ([`BlobStore::prune`]). Nothing here touches
//! managed paths.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ssh_key::sha2::{Digest, Sha256};

use super::error::Fault;
use super::failpoint::fail_point;
use super::file::Dir;
use super::file::Located;
use crate::paths::{self, PathError};
use crate::plan::{hex, is_sha256_hex, sha256_hex};
use crate::state::ApplyArea;

/// First and last 8 bytes of a pack.
pub(crate) const PACK_MAGIC: &[u8; 8] = b"SHOALPK1";
const PACK_PREFIX: &str = "pack-";
const PACK_SUFFIX: &str = ".pack";
const TEMP_SUFFIX: &str = ".tmp";
/// The pack being written: swept like every other leftover temp file.
const PACK_TEMP: &str = ".pack-new.tmp";
/// An index entry: the hash in hex, then offset and length (little-endian u64).
const ENTRY_LEN: usize = 64 + 8 + 8;
/// After the index: its offset, its entry count, the magic.
const TRAILER_LEN: usize = 8 + 8 + 8;

/// A pack's index: each blob's offset and length in the pack.
type Entries = BTreeMap<String, (u64, u64)>;

/// Where a stored blob's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// `blobs/<sha256>`, a file of its own.
    Loose,
    /// In `packs[pack]`, `len` bytes from `offset`.
    Packed { pack: usize, offset: u64, len: u64 },
}

struct Pack {
    name: OsString,
    /// Bytes of content it holds, dead or alive (what pruning weighs).
    content_len: u64,
}

/// The pack of this transaction, until [`BlobStore::sync`] publishes it.
struct Writing {
    file: File,
    end: u64,
    entries: Entries,
}

pub(crate) struct BlobStore {
    dir: PathBuf,
    handle: Dir,
    places: BTreeMap<String, Place>,
    packs: Vec<Pack>,
    writing: Option<Writing>,
}

impl BlobStore {
    /// Opens the store, creating it if needed (mode 0700: blobs may hold secrets), and reads
    /// every pack's index. A pack whose index cannot be read is left alone and named in a
    /// warning: its blobs count as missing, which fails only a restore that needs them.
    pub(crate) fn open(area: ApplyArea<'_>) -> Result<Self, Fault> {
        let dir = area.blobs();
        if !dir.is_dir() {
            paths::create_dir_all(&dir)?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| PathError::new("set permissions of", &dir, e))?;
            paths::sync_dir(area.dir())?;
        }
        let mut store = BlobStore {
            handle: Dir::open_trusted(&dir, "open the blob store")?,
            dir,
            places: BTreeMap::new(),
            packs: Vec::new(),
            writing: None,
        };
        for name in names(&store.dir)? {
            if is_sha256_hex(&name) {
                store.places.insert(name, Place::Loose);
            } else if name.starts_with(PACK_PREFIX) && name.ends_with(PACK_SUFFIX) {
                let name = OsString::from(name);
                match store.read_index(&name) {
                    Ok((entries, content_len)) => store.add_pack(name, entries, content_len),
                    Err(e) => {
                        tracing::warn!(pack = %store.dir.join(&name).display(), error = %e, "ignoring a blob pack whose index is unreadable");
                    }
                }
            }
        }
        Ok(store)
    }

    fn add_pack(&mut self, name: OsString, entries: Entries, len: u64) {
        let pack = self.packs.len();
        self.packs.push(Pack {
            name,
            content_len: len,
        });
        for (sha256, (offset, len)) in entries {
            self.places
                .entry(sha256)
                .or_insert(Place::Packed { pack, offset, len });
        }
    }

    /// Where blob `sha256` would be as a file of its own (to name a missing one). Hashes come
    /// from our own JSON files: anything that is not a hash is refused rather than joined into
    /// a path.
    pub(crate) fn path(&self, sha256: &str) -> Result<PathBuf, Fault> {
        self.check(sha256)?;
        Ok(self.dir.join(sha256))
    }

    fn check(&self, sha256: &str) -> Result<(), Fault> {
        if !is_sha256_hex(sha256) {
            return Err(Fault::CorruptState {
                path: self.dir.clone(),
                reason: format!("{sha256:?} is not a sha256 blob name"),
            });
        }
        Ok(())
    }

    /// Whether blob `sha256` is stored (or about to be, by the next [`BlobStore::sync`]).
    pub(crate) fn contains(&self, sha256: &str) -> Result<bool, Fault> {
        self.check(sha256)?;
        Ok(self.places.contains_key(sha256)
            || self
                .writing
                .as_ref()
                .is_some_and(|w| w.entries.contains_key(sha256)))
    }

    /// Stores `content` (whose hash the caller computed) unless it is already there.
    pub(crate) fn put(&mut self, sha256: &str, content: &[u8]) -> Result<(), Fault> {
        if self.contains(sha256)? {
            return Ok(());
        }
        let temp = self.dir.join(PACK_TEMP);
        let writing = self.writing()?;
        writing
            .file
            .write_all(content)
            .map_err(|e| Fault::from(PathError::new("write", &temp, e)).about_state())?;
        writing.add(sha256, content.len() as u64);
        Ok(())
    }

    /// Copies the file at `located` into the store, checking that it still hashes to `sha256`
    /// (it was hashed a moment ago; an edit in between must not go unnoticed).
    pub(crate) fn put_copy_of(&mut self, sha256: &str, located: &Located) -> Result<(), Fault> {
        if self.contains(sha256)? {
            return Ok(());
        }
        let temp = self.dir.join(PACK_TEMP);
        let mut input = located.open_read()?;
        let writing = self.writing()?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0; 64 * 1024];
        let mut len = 0u64;
        let copied = (|| loop {
            let n = input
                .read(&mut buf)
                .map_err(|e| PathError::new("read", &located.real, e))?;
            if n == 0 {
                return Ok(());
            }
            hasher.update(&buf[..n]);
            writing
                .file
                .write_all(&buf[..n])
                .map_err(|e| Fault::from(PathError::new("write", &temp, e)).about_state())?;
            len += n as u64;
        })();
        let copied = copied.and_then(|()| match hex(&hasher.finalize()) == sha256 {
            true => Ok(()),
            false => Err(Fault::ChangedWhileSaving {
                path: located.real.clone(),
            }),
        });
        if let Err(fault) = copied {
            // Keep the pack's content exactly what its index will say.
            writing
                .file
                .set_len(writing.end)
                .and_then(|()| {
                    io::Seek::seek(&mut writing.file, io::SeekFrom::Start(writing.end)).map(drop)
                })
                .map_err(|e| PathError::new("truncate", &temp, e))?;
            return Err(fault);
        }
        writing.add(sha256, len);
        Ok(())
    }

    /// Reads a blob and checks its hash: a blob restored to a device must be the one named.
    pub(crate) fn read(&self, sha256: &str) -> Result<Vec<u8>, Fault> {
        self.check(sha256)?;
        let (content, place) = match self.places.get(sha256) {
            None => {
                let path = self.path(sha256)?;
                let e = io::Error::from(io::ErrorKind::NotFound);
                return Err(PathError::new("read", &path, e).into());
            }
            Some(Place::Loose) => {
                let path = self.path(sha256)?;
                (paths::read(&path)?, path)
            }
            Some(&Place::Packed { pack, offset, len }) => {
                let name = &self.packs[pack].name;
                let path = self.dir.join(name);
                let file = self.handle.open_read(name)?;
                let mut content = vec![0; usize::try_from(len).unwrap_or(usize::MAX)];
                file.read_exact_at(&mut content, offset)
                    .map_err(|e| PathError::new("read", &path, e))?;
                (content, path)
            }
        };
        let actual = sha256_hex(&content);
        if actual != sha256 {
            return Err(Fault::CorruptBlob {
                sha256: sha256.to_owned(),
                place,
                actual,
            });
        }
        Ok(content)
    }

    /// Whether the next [`BlobStore::sync`] runs a `syncfs` that also makes what was written
    /// in `dir` durable: blobs are waiting, and `dir` is on the blobs' file system.
    pub(crate) fn will_sync_filesystem_of(&self, dir: &Dir) -> bool {
        self.writing.is_some() && self.handle.id().same_device(&dir.id())
    }

    /// Makes every blob added since the last call durable, then publishes them: the pack's
    /// index and trailer written, one `syncfs` for the whole batch (its data and inode on
    /// disk), the pack renamed into place, one fsync of the directory. It runs before the
    /// journal, the first thing that refers to them, is put in place. A crash before the
    /// rename leaves a temp file, which `recover` sweeps; after it, complete blobs nothing
    /// refers to yet.
    pub(crate) fn sync(&mut self) -> Result<(), Fault> {
        let Some(mut writing) = self.writing.take() else {
            return Ok(());
        };
        let temp = self.dir.join(PACK_TEMP);
        let index = index_bytes(&writing.entries, writing.end);
        writing
            .file
            .write_all(&index)
            .map_err(|e| Fault::from(PathError::new("write", &temp, e)).about_state())?;
        drop(writing.file);
        self.handle
            .sync_filesystem()
            .map_err(|e| Fault::Io(e).about_state())?;
        fail_point!("apply_after_blobs_syncfs");
        let name = OsString::from(format!(
            "{PACK_PREFIX}{}{PACK_SUFFIX}",
            &sha256_hex(&index)[..32]
        ));
        self.handle
            .publish(OsStr::new(PACK_TEMP), &name)
            .map_err(|e| Fault::Io(e).about_state())?;
        self.handle.sync().map_err(|e| Fault::Io(e).about_state())?;
        let content_len = writing.end - PACK_MAGIC.len() as u64;
        self.add_pack(name, writing.entries, content_len);
        Ok(())
    }

    /// Removes temp files left by a crash while storing blobs. Run at every start, so it only
    /// lists the directory: no pack's index is read.
    pub(crate) fn sweep(area: ApplyArea<'_>) -> Result<(), Fault> {
        let dir = area.blobs();
        let handle = Dir::open_trusted(&dir, "open the blob store")?;
        for name in names(&dir)? {
            if name.starts_with('.') && name.ends_with(TEMP_SUFFIX) {
                handle.remove(OsStr::new(&name))?;
            }
        }
        Ok(())
    }

    /// Keeps only the blobs in `live`; returns how many others it dropped. A pack none of
    /// whose blobs is live is removed; one whose live blobs are less than half its content is
    /// rewritten: its live blobs (read and checked) go into a new pack, made durable and
    /// published before the old one is removed, so a crash in between leaves both (the next
    /// prune removes the old one, all of whose blobs then live in the new pack).
    pub(crate) fn prune(&mut self, live: &BTreeSet<&str>) -> Result<usize, Fault> {
        let dead: Vec<String> = self
            .places
            .keys()
            .filter(|sha256| !live.contains(sha256.as_str()))
            .cloned()
            .collect();
        // Per pack: the live bytes of the blobs it is where they are read from.
        let mut live_len = vec![0u64; self.packs.len()];
        for (sha256, place) in &self.places {
            if let Place::Packed { pack, len, .. } = place {
                if live.contains(sha256.as_str()) {
                    live_len[*pack] += len;
                }
            }
        }
        let rewrite: Vec<usize> = (0..self.packs.len())
            .filter(|&pack| live_len[pack] > 0 && live_len[pack] * 2 < self.packs[pack].content_len)
            .collect();
        let moving: Vec<String> = self
            .places
            .iter()
            .filter(|(sha256, place)| {
                live.contains(sha256.as_str())
                    && matches!(place, Place::Packed { pack, .. } if rewrite.contains(pack))
            })
            .map(|(sha256, _)| sha256.clone())
            .collect();
        for sha256 in &moving {
            let content = self.read(sha256)?;
            self.places.remove(sha256);
            self.put(sha256, &content)?;
        }
        self.sync()?;
        let mut removed_any = false;
        for sha256 in &dead {
            if self.places.remove(sha256) == Some(Place::Loose) {
                self.check(sha256)?;
                self.handle.remove(OsStr::new(sha256))?;
                removed_any = true;
            }
        }
        let used: BTreeSet<usize> = self
            .places
            .values()
            .filter_map(|place| match place {
                Place::Packed { pack, .. } => Some(*pack),
                Place::Loose => None,
            })
            .collect();
        for (index, pack) in self.packs.iter().enumerate() {
            if !used.contains(&index) {
                self.handle.remove(&pack.name)?;
                removed_any = true;
            }
        }
        if removed_any {
            self.handle.sync()?;
        }
        Ok(dead.len())
    }

    /// The index of a published pack: each blob's offset and length, checked to lie within
    /// the pack's content; and how many bytes of content it holds.
    fn read_index(&self, name: &OsStr) -> Result<(Entries, u64), String> {
        let file = self.handle.open_read(name).map_err(|e| e.to_string())?;
        let size = file.metadata().map_err(|e| e.to_string())?.len();
        let bad = |what: &str| format!("{what} (pack of {size} bytes)");
        if size < (PACK_MAGIC.len() + TRAILER_LEN) as u64 {
            return Err(bad("too short"));
        }
        let mut head = [0u8; 8];
        let mut trailer = [0u8; TRAILER_LEN];
        file.read_exact_at(&mut head, 0)
            .and_then(|()| file.read_exact_at(&mut trailer, size - TRAILER_LEN as u64))
            .map_err(|e| e.to_string())?;
        if &head != PACK_MAGIC || &trailer[16..] != PACK_MAGIC {
            return Err(bad("no pack magic"));
        }
        let index_at = u64_at(&trailer, 0);
        let count = u64_at(&trailer, 8);
        let index_len = count
            .checked_mul(ENTRY_LEN as u64)
            .filter(|len| index_at.checked_add(*len) == Some(size - TRAILER_LEN as u64))
            .filter(|_| index_at >= PACK_MAGIC.len() as u64)
            .ok_or_else(|| bad("index out of bounds"))?;
        let mut index = vec![0u8; usize::try_from(index_len).map_err(|e| e.to_string())?];
        file.read_exact_at(&mut index, index_at)
            .map_err(|e| e.to_string())?;
        let mut entries = BTreeMap::new();
        for entry in index.chunks_exact(ENTRY_LEN) {
            let sha256 = std::str::from_utf8(&entry[..64])
                .ok()
                .filter(|s| is_sha256_hex(s))
                .ok_or_else(|| bad("an index entry is not a sha256"))?;
            let (offset, len) = (u64_at(entry, 64), u64_at(entry, 72));
            if offset < PACK_MAGIC.len() as u64 || offset.checked_add(len) > Some(index_at) {
                return Err(bad("an index entry points outside the content"));
            }
            entries.insert(sha256.to_owned(), (offset, len));
        }
        Ok((entries, index_at - PACK_MAGIC.len() as u64))
    }

    /// The pack this transaction writes into, created (with its magic) on the first blob.
    fn writing(&mut self) -> Result<&mut Writing, Fault> {
        if self.writing.is_none() {
            let temp = self.dir.join(PACK_TEMP);
            let mut file = self
                .handle
                .create_temp(OsStr::new(PACK_TEMP))
                .map_err(|e| Fault::Io(e).about_state())?;
            file.write_all(PACK_MAGIC)
                .map_err(|e| Fault::from(PathError::new("write", &temp, e)).about_state())?;
            self.writing = Some(Writing {
                file,
                end: PACK_MAGIC.len() as u64,
                entries: BTreeMap::new(),
            });
        }
        Ok(self.writing.as_mut().expect("created above"))
    }
}

impl Writing {
    fn add(&mut self, sha256: &str, len: u64) {
        self.entries.insert(sha256.to_owned(), (self.end, len));
        self.end += len;
    }
}

/// The index and trailer that end a pack whose content ends at `end`.
fn index_bytes(entries: &Entries, end: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_LEN + TRAILER_LEN);
    for (sha256, (offset, len)) in entries {
        out.extend_from_slice(sha256.as_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
    }
    out.extend_from_slice(&end.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    out.extend_from_slice(PACK_MAGIC);
    out
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

fn names(dir: &Path) -> Result<Vec<String>, Fault> {
    let entries = fs::read_dir(dir).map_err(|e| PathError::new("list", dir, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| PathError::new("list", dir, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}
