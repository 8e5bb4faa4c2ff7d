//! Big payloads for the fetch-bound tests and benchmark: bytes that do not compress, and the
//! disk space a directory takes as `du` counts it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A stream of bytes that do not compress (xorshift64*), a different one for each seed: a blob
/// made of them is as large in a pack on the wire as on disk.
pub struct Incompressible(u64);

impl Incompressible {
    pub fn new(seed: u64) -> Incompressible {
        Incompressible(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// `len` bytes of the stream seeded with `seed`.
    pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut out = vec![0; len];
        Incompressible::new(seed).fill(&mut out);
        out
    }

    /// Fills `buf` with the stream's next bytes (a whole number of 8-byte words is used up).
    pub fn fill(&mut self, buf: &mut [u8]) {
        for word in buf.chunks_mut(8) {
            let x = &mut self.0;
            *x ^= *x >> 12;
            *x ^= *x << 25;
            *x ^= *x >> 27;
            let bytes = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            word.copy_from_slice(&bytes[..word.len()]);
        }
    }
}

/// Disk space under `path` as `du` counts it (allocated blocks, every file and directory).
pub fn disk_usage(path: &Path) -> u64 {
    let meta = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {path:?}: {e}"));
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        let entries = std::fs::read_dir(path).unwrap_or_else(|e| panic!("read_dir {path:?}: {e}"));
        for entry in entries {
            total += disk_usage(&entry.expect("directory entry").path());
        }
    }
    total
}
